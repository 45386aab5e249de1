//! The node links and membership: one cluster-visible peer actor per node on
//! ractor_cluster, and the core's [`Membership`] machine driven against the
//! member table in the durable store.
//!
//! - **Links.** A [`NodeServer`] on the configured address and port, cookie
//!   authenticated, in transitive mode (a node dialled through a seed learns and
//!   dials the others). ractor_cluster does not reconnect: every node
//!   publishes its address in the store, and dials every member it has no
//!   link to there (down ones too), with backoff, for ever
//!   ([`confab_core::links::Dialer`] decides whom and when).
//! - **Peers.** Each node's [`PeerActor`] joins the process group
//!   [`PEERS_GROUP`] under the name `confab.peer.<node id>`; the members' peer
//!   refs are read back from the group (sorted by node id) into the runtime,
//!   where the Router finds them. Session actors stay local.
//! - **Membership.** The member table is a setting of the durable store
//!   (`cluster.members`), changed only by compare-and-set; heartbeats go peer to
//!   peer. When the machine adopts a new ring, the runtime routes by it and
//!   hands the sessions it no longer owns to their new owners
//!   ([`crate::handoff`]); a new owner claims the new epoch before it serves,
//!   which fences the old owner. A node being drained ([`crate::drain`]) leaves
//!   the table once its last session actor stopped.

use crate::Runtime;
pub use crate::cluster_error::ClusterError;
use crate::wire::DrainState;
pub use crate::wire::{
    DrainAsk, Expect, HandoffState, Heartbeat, PeerMsg, RemoteAnswer, RemoteRequest, RemoteTurn,
    Wire,
};
use confab_core::links::{DialConfig, Dialer, Known};
use confab_core::membership::{Input, MemberTable, Membership, MembershipConfig, Output, Status};
use confab_core::ring::Ring;
use confab_core::{Epoch, NodeId};
use confab_store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::NodeServer;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The process group every node's peer actor joins.
pub const PEERS_GROUP: &str = "confab.peers";
/// The store setting holding the member table.
pub const MEMBERS_SETTING: &str = "cluster.members";
/// How often the peers are read back from the process group.
const PEERS_EVERY: Duration = Duration::from_millis(100);
/// How often, at most, a draining node looks whether its last session moved.
const DRAIN_POLL_MS: u64 = 20;
/// Heartbeats and store answers queued for the membership machine, at most.
const MEMBERSHIP_QUEUE_MAX: usize = 1024;
/// The largest frame accepted from a peer (every node must use the same).
pub const FRAME_BYTES_MAX: u64 = 16 << 20;

/// The peer actor: the entry point of other nodes.
pub struct PeerActor;

/// Its state.
pub struct PeerState {
    runtime: Runtime,
    heartbeats: mpsc::Sender<Input>,
}

impl Actor for PeerActor {
    type Msg = PeerMsg;
    type State = PeerState;
    type Arguments = PeerState;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PeerState,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(PEERS_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PeerMsg::Turn(Wire(turn), port) => {
                let runtime = state.runtime.clone();
                tokio::spawn(async move {
                    let result = runtime
                        .turn_routed(
                            turn.uid,
                            turn.message_id,
                            turn.text,
                            (turn.epoch, turn.hops),
                            turn.budget_ms,
                            &turn.trace,
                        )
                        .await;
                    let _ = port.send(Wire(result));
                });
            }
            PeerMsg::Request(Wire(request), port) => {
                let runtime = state.runtime.clone();
                tokio::spawn(async move {
                    let result = runtime
                        .request_routed(
                            request.uid,
                            request.ask,
                            Some((request.epoch, request.hops)),
                        )
                        .await;
                    let _ = port.send(Wire(result));
                });
            }
            PeerMsg::Expect(Wire(expect)) => state.runtime.expect(expect),
            PeerMsg::Handoff(Wire(handoff), port) => {
                let runtime = state.runtime.clone();
                tokio::spawn(async move {
                    let _ = port.send(Wire(runtime.states_arrived(handoff).await));
                });
            }
            PeerMsg::Drain(Wire(ask), port) => {
                let runtime = state.runtime.clone();
                tokio::spawn(async move {
                    let result = match ask {
                        DrainAsk::Start => runtime.drain().await,
                        DrainAsk::Progress => Ok(runtime.drain_progress().await),
                    };
                    let _ = port.send(Wire(result));
                });
            }
            // Read from memory under one short lock: answered in place.
            PeerMsg::Stats(Wire(_), port) => {
                let _ = port.send(Wire(state.runtime.local_stats()));
            }
            PeerMsg::Heartbeat(Wire(beat)) => {
                state.runtime.record_load(&beat.from, beat.load);
                let _ = state.heartbeats.try_send(Input::Heartbeat {
                    from: beat.from,
                    epoch: beat.epoch,
                });
            }
        }
        Ok(())
    }
}

/// Where and how a node links to the others.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The address the cluster port binds.
    pub bind: IpAddr,
    /// The cluster port.
    pub port: u16,
    /// Members of a running cluster, `HOST:PORT`.
    pub seeds: Vec<String>,
    /// The shared secret of the cookie handshake.
    pub cookie: String,
    /// Heartbeats and failure detection.
    pub membership: MembershipConfig,
    /// Mutual TLS between nodes, if set ([`crate::cluster_tls`]).
    pub tls: Option<crate::cluster_tls::TlsFiles>,
    /// The address other nodes dial this one at, `HOST:PORT` (with TLS, the
    /// host its certificate names).
    pub advertise: String,
}

/// Starts the links, the peer actor and the membership machine.
pub async fn start(runtime: &Runtime, config: ClusterConfig) -> Result<(), ClusterError> {
    let me = runtime.node_id().clone();
    // Not on the ring (and not ready) until membership has joined it.
    runtime.set_ring(Ring::new(Epoch(0), [])).await;
    // ractor_cluster dials transitively learned peers without TLS: a TLS
    // cluster is isolated, and every node dials every member itself.
    let tls = config
        .tls
        .as_ref()
        .map(crate::cluster_tls::load)
        .transpose()?;
    let (encryption, mode) = match &tls {
        Some(tls) => (
            ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor.clone()),
            ractor_cluster::node::NodeConnectionMode::Isolated,
        ),
        None => (
            ractor_cluster::IncomingEncryptionMode::Raw,
            ractor_cluster::node::NodeConnectionMode::Transitive,
        ),
    };
    // With TLS, the cluster port is this node's own listener (a handshake per
    // task, with a timeout): ractor_cluster's does the handshake inside its
    // accept loop, where one silent connection would block every other. Its
    // own listener is left on an ephemeral loopback port nobody dials.
    let (listen_addr, listen_port) = match &tls {
        Some(_) => (IpAddr::from([127, 0, 0, 1]), 0),
        None => (config.bind, config.port),
    };
    let server = NodeServer::new(
        listen_port,
        config.cookie.clone(),
        me.to_string(),
        config.bind.to_string(),
        Some(encryption),
        Some(mode),
    )
    .with_listen_addr(listen_addr)
    .with_max_inbound_frame_size(FRAME_BYTES_MAX);
    let listen_err = |e: &dyn std::fmt::Display| ClusterError::Listen {
        port: config.port,
        reason: e.to_string(),
    };
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| listen_err(&e))?;
    if let Some(tls) = &tls {
        crate::cluster_tls::listen(server.clone(), config.bind, config.port, tls.clone())
            .await
            .map_err(|e| listen_err(&e))?;
    }
    // The cluster port is this node's now: a node of this id that was dialled
    // there is gone, and one dialled elsewhere must not be alive.
    let incarnation = {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system gives randomness");
        u64::from_le_bytes(bytes)
    };
    crate::identity::claim(runtime.store(), &me, &config.advertise, incarnation).await?;
    let held = std::sync::Arc::new(crate::identity::Held::new(&config.advertise, incarnation));
    let _ = runtime
        .shared
        .cluster
        .id_lease
        .set(std::sync::Arc::clone(&held));
    tokio::spawn(crate::identity::renew(
        std::sync::Arc::clone(runtime.store()),
        me.clone(),
        held,
    ));
    // Every node publishes where it is dialled: the others dial it there
    // whenever they have no link to it.
    crate::cluster_tls::publish_address(runtime.store().as_ref(), &me, &config.advertise).await?;
    let (heartbeats, inputs) = mpsc::channel(MEMBERSHIP_QUEUE_MAX);
    runtime.set_membership_input(heartbeats.clone());
    Actor::spawn(
        Some(format!("confab.peer.{me}")),
        PeerActor,
        PeerState {
            runtime: runtime.clone(),
            heartbeats: heartbeats.clone(),
        },
    )
    .await
    .map_err(|e| listen_err(&e))?;
    info!(node = %me, port = config.port, seeds = ?config.seeds, "cluster links up");
    tokio::spawn(refresh_peers(runtime.clone()));
    tokio::spawn(reconnect(
        runtime.clone(),
        server,
        config.seeds.clone(),
        tls,
    ));
    tokio::spawn(drive_membership(runtime.clone(), config.membership, inputs));
    Ok(())
}

/// Reads the peer actors back from the process group, sorted by node id.
async fn refresh_peers(runtime: Runtime) {
    let me = runtime.node_id().clone();
    let mut every = tokio::time::interval(PEERS_EVERY);
    loop {
        every.tick().await;
        let mut peers = BTreeMap::new();
        for cell in ractor::pg::get_members(&PEERS_GROUP.to_owned()) {
            let Some(node) = cell
                .get_name()
                .and_then(|n| n.strip_prefix("confab.peer.").map(str::to_owned))
                .and_then(|n| NodeId::new(n).ok())
            else {
                continue;
            };
            if node != me {
                peers.insert(node, ActorRef::<PeerMsg>::from(cell));
            }
        }
        runtime.set_peers(peers);
    }
}

/// Dials, as the core's [`Dialer`] decides, every member of the table with
/// no link (a member declared down too: it may be alive behind a healed
/// partition) at its published address, with backoff, for ever; and the seeds
/// while no member is linked.
async fn reconnect(
    runtime: Runtime,
    server: ActorRef<ractor_cluster::NodeServerMessage>,
    seeds: Vec<String>,
    tls: Option<crate::cluster_tls::NodeTls>,
) {
    let started = Instant::now();
    let now = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let config = DialConfig::default();
    let tick = Duration::from_millis(config.tick_ms);
    let mut dialer = Dialer::new(runtime.node_id().clone(), config);
    let mut every = tokio::time::interval(tick);
    loop {
        every.tick().await;
        let table = runtime.members();
        let me = runtime.node_id();
        // Linked: an authenticated transport session, even before the peer's
        // actor shows in the process group. Dialling a member already linked
        // would open a second session, and ractor_cluster keeps one of the
        // two: the other closes with whatever it carried (handoff batches).
        let sessions = transport_links(&server, tick).await;
        let linked = |id: &NodeId| sessions.contains(id) || runtime.is_connected(id);
        let missing = table
            .as_ref()
            .is_some_and(|t| t.members.keys().any(|id| id != me && !linked(id)));
        let book = if missing {
            crate::cluster_tls::addresses(runtime.store().as_ref()).await
        } else {
            BTreeMap::new()
        };
        let known = Known {
            table: table.as_ref(),
            addresses: &book,
            seeds: &seeds,
        };
        for target in dialer.due(now(), known, linked) {
            let dial = crate::cluster_tls::dial(&server, &target, tls.as_ref());
            let linked = match tokio::time::timeout(tick, dial).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    warn!(peer = %target, error = %e, "cannot reach a member");
                    false
                }
                Err(_) => {
                    warn!(peer = %target, "a member did not answer in time");
                    false
                }
            };
            dialer.dialed(now(), &target, linked);
        }
    }
}

/// The nodes this one has an authenticated cluster session with (ractor_cluster
/// names a node `<node id>@<host>`).
async fn transport_links(
    server: &ActorRef<ractor_cluster::NodeServerMessage>,
    timeout: Duration,
) -> std::collections::BTreeSet<NodeId> {
    let Ok(sessions) = ractor::call_t!(
        server,
        ractor_cluster::NodeServerMessage::GetSessions,
        timeout.as_millis() as u64
    ) else {
        return Default::default();
    };
    sessions
        .values()
        .filter_map(|s| s.peer_name.as_ref())
        .filter_map(|peer| peer.name.split('@').next())
        .filter_map(|id| NodeId::new(id).ok())
        .collect()
}

/// Runs the core's membership machine: store I/O, heartbeats, ring changes.
async fn drive_membership(
    runtime: Runtime,
    config: MembershipConfig,
    mut inputs: mpsc::Receiver<Input>,
) {
    let started = Instant::now();
    let now = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let store_timeout = Duration::from_millis(config.store_timeout_ms);
    let mut machine = Membership::new(runtime.node_id().clone(), config);
    machine.handle(now(), Input::Start);
    let mut drained = false;
    loop {
        while let Some(output) = machine.poll_output() {
            let answer = match output {
                Output::ReadTable => Some(
                    match tokio::time::timeout(
                        store_timeout,
                        read_members(runtime.store().as_ref()),
                    )
                    .await
                    {
                        Ok(Ok(table)) => Input::TableRead(table),
                        _ => Input::StoreFailed,
                    },
                ),
                Output::Cas { expected, table } => Some(
                    match tokio::time::timeout(
                        store_timeout,
                        cas_members(runtime.store().as_ref(), expected, &table),
                    )
                    .await
                    {
                        Ok(Ok((applied, table))) => Input::CasDone { applied, table },
                        _ => Input::StoreFailed,
                    },
                ),
                Output::Heartbeat { to, epoch } => {
                    if let Some(peer) = runtime.peer(&to) {
                        let beat = Heartbeat {
                            from: runtime.node_id().clone(),
                            epoch,
                            load: runtime.load(),
                        };
                        let _ = peer.cast(PeerMsg::Heartbeat(Wire(beat)));
                    }
                    None
                }
                Output::RingChanged { epoch, nodes } => {
                    info!(epoch = %epoch, nodes = ?nodes, "ring changed");
                    runtime.set_members(machine.table().cloned());
                    runtime.set_ring(Ring::new(epoch, nodes)).await;
                    None
                }
                Output::Left => {
                    info!("left the cluster");
                    runtime.shared.drain.set_left();
                    None
                }
            };
            if let Some(input) = answer {
                machine.handle(now(), input);
            }
        }
        runtime.set_members(machine.table().cloned());
        let unheard: std::collections::BTreeSet<NodeId> = machine
            .table()
            .map(|table| {
                table
                    .members
                    .keys()
                    .filter(|node| !machine.hears(node, now()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        *runtime
            .shared
            .cluster
            .unheard
            .write()
            .unwrap_or_else(|e| e.into_inner()) = unheard;
        let isolated = !machine.serving(now());
        if runtime
            .shared
            .cluster
            .isolated
            .swap(isolated, std::sync::atomic::Ordering::AcqRel)
            != isolated
        {
            if isolated {
                warn!(
                    "cut off from the majority of the members up: serving nothing until it hears them"
                );
            } else {
                info!("hears the majority of the members up again: serving");
            }
        }
        // A draining node off the ring leaves once its last session actor stopped.
        if !drained
            && runtime.shared.drain.state() == DrainState::Draining
            && machine.status() == Some(Status::Draining)
            && runtime.session_actors().await == Some(0)
        {
            drained = true;
            runtime.shared.drain.set_moved();
            machine.handle(now(), Input::Drained);
            continue;
        }
        // While the node drains, its sessions' departure is looked at more often:
        // the node closes its connections as soon as the last one moved.
        let most = if drained || runtime.shared.drain.state() == DrainState::Serving {
            100
        } else {
            DRAIN_POLL_MS
        };
        let wait = machine
            .poll_timeout()
            .map_or(Duration::from_millis(most), |at| {
                Duration::from_millis(at.saturating_sub(now()).min(most))
            });
        tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => machine.handle(now(), input),
                None => return,
            },
            () = tokio::time::sleep(wait) => machine.handle_timeout(now()),
        }
    }
}

/// The member table, from the store's settings (version = revision).
async fn read_members(store: &dyn Store) -> Result<MemberTable, confab_store::StoreError> {
    match store.setting(MEMBERS_SETTING).await? {
        None => Ok(MemberTable::default()),
        Some(setting) => serde_json::from_str(&setting.body).map_err(|e| {
            confab_store::StoreError::Corrupt(format!("the member table does not decode: {e}"))
        }),
    }
}

/// Stores `table` if the stored version is still `expected`; the table stored now.
async fn cas_members(
    store: &dyn Store,
    expected: u64,
    table: &MemberTable,
) -> Result<(bool, MemberTable), confab_store::StoreError> {
    debug_assert_eq!(
        table.version,
        expected + 1,
        "a proposal follows its version"
    );
    let body = serde_json::to_string(table).expect("member tables serialize");
    if store.put_setting(MEMBERS_SETTING, expected, &body).await? {
        return Ok((true, table.clone()));
    }
    Ok((false, read_members(store).await?))
}
