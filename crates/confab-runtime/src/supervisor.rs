//! The SessionSupervisor: spawns, bounds, passivates and restarts SessionActors.
//!
//! It is the only place that maps a uid to its actor, so there is never more than
//! one SessionActor per uid on a node:
//! - a turn for a uid with no actor spawns one (its state loads lazily);
//! - a turn for a session with `session_queue_max` turns queued gets `overloaded`;
//! - a session idle for `passivate_after` with nothing queued is removed from the
//!   map, then told to snapshot and stop, so no turn can reach it afterwards;
//! - a session that fails (a panic) is removed; its next turn spawns a fresh
//!   actor that rebuilds from the durable tier. No other session is touched.

use crate::handoff::{HANDOFF_WAIT, Incoming};
use crate::session_actor::{SessionActor, SessionArgs, SessionMsg};
use crate::{SessionRequest, Shared, TurnError, TurnRequest};
use confab_core::ring::Ring;
use confab_core::{NodeId, Uid};
use confab_store::StoredSnapshot;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

/// Snapshots written per transaction on shutdown.
const SHUTDOWN_SNAPSHOTS_PER_BATCH: usize = 500;

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// A turn for a local session.
    Turn(TurnRequest),
    /// A request to a local session that is not a turn.
    Request(SessionRequest),
    /// Passivate the sessions idle for too long (sent by a timer).
    Sweep,
    /// This ring is about to be adopted: announce the sessions it moves to
    /// their new owners; the answer comes once the announcements are sent.
    Announce {
        /// The coming ring.
        ring: Arc<Ring>,
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// The ring changed: hand the sessions this node no longer owns to their
    /// new owners ([`crate::handoff`]).
    RingChanged,
    /// Another node is about to hand these sessions here.
    Expect(crate::cluster::Expect),
    /// Moved sessions' states arrived (`None`: one that did not decode); the
    /// answer says, for each, whether it was taken.
    Arrived {
        /// The states, in the order they came.
        states: Vec<Option<crate::handoff::Arrived>>,
        /// For each, whether it was taken.
        reply: RpcReplyPort<Vec<bool>>,
    },
    /// A session was fenced by a newer owner: stop routing to it, and retire it
    /// once the turns already routed to it are answered.
    Fenced {
        /// Whose session.
        uid: Uid,
        /// Its actor.
        actor: ActorId,
    },
    /// How many sessions are resident.
    Resident {
        /// Where the count goes.
        reply: RpcReplyPort<usize>,
    },
    /// How many session actors are alive (resident, or stopping after a
    /// passivation or a move).
    Actors {
        /// Where the count goes.
        reply: RpcReplyPort<usize>,
    },
    /// Snapshot every resident session, stop them, and refuse new turns.
    Shutdown {
        /// How many snapshots were written.
        reply: RpcReplyPort<Result<usize, TurnError>>,
    },
}

// Local only: not serializable, never announced to other nodes.
impl ractor::Message for SupervisorMsg {}

/// The supervisor actor.
pub struct SessionSupervisor;

/// Its arguments.
pub struct SupervisorArgs {
    pub(crate) shared: Arc<Shared>,
}

struct Resident {
    actor: ActorRef<SessionMsg>,
    queued: Arc<AtomicUsize>,
    last_turn: Instant,
}

/// Its state.
pub struct SupervisorState {
    shared: Arc<Shared>,
    sessions: BTreeMap<Uid, Resident>,
    by_actor: BTreeMap<ActorId, Uid>,
    stopping: bool,
    /// Sessions another node announced it hands here, until when to wait.
    expected: BTreeMap<Uid, Instant>,
    /// Sessions whose actor waits for its state from the old owner.
    awaiting: BTreeMap<Uid, oneshot::Sender<Option<Vec<u8>>>>,
    /// States handed here for sessions with no actor yet: the actor starts
    /// from one on the session's next turn (kept for `passivate_after`).
    arrived: BTreeMap<Uid, (Option<Vec<u8>>, Instant)>,
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let sweep_every = (args.shared.config.passivate_after / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        myself.send_interval(sweep_every, || SupervisorMsg::Sweep);
        Ok(SupervisorState {
            shared: args.shared,
            sessions: BTreeMap::new(),
            by_actor: BTreeMap::new(),
            stopping: false,
            expected: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            arrived: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Turn(turn) => {
                if state.stopping {
                    let _ = turn.reply.send(Err(shutting_down()));
                    return Ok(());
                }
                let limit = state.shared.config.session_queue_max;
                let resident = match state.resident(&myself, &turn.uid).await {
                    Ok(resident) => resident,
                    Err(e) => {
                        let _ = turn.reply.send(Err(e));
                        return Ok(());
                    }
                };
                if resident.queued.load(Ordering::Acquire) >= limit {
                    let _ = turn.reply.send(Err(TurnError::Overloaded(format!(
                        "session {} has {limit} turns queued, its limit: wait for replies before sending more",
                        turn.uid
                    ))));
                    return Ok(());
                }
                resident.queued.fetch_add(1, Ordering::AcqRel);
                resident.last_turn = Instant::now();
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::Turn(turn))) =
                    resident.actor.cast(SessionMsg::Turn(turn))
                {
                    let _ = turn.reply.send(Err(TurnError::Internal(
                        "the session stopped: retry with the same id".into(),
                    )));
                }
            }
            SupervisorMsg::Request(request) => {
                if state.stopping {
                    let _ = request.reply.send(Err(shutting_down()));
                    return Ok(());
                }
                match state.resident(&myself, &request.uid).await {
                    Ok(resident) => {
                        let _ = resident.actor.cast(SessionMsg::Request(request));
                    }
                    Err(e) => {
                        let _ = request.reply.send(Err(e));
                    }
                }
            }
            SupervisorMsg::Sweep => {
                state.passivate_idle();
                state.forget_stale_handoffs();
            }
            SupervisorMsg::Announce { ring, reply } => {
                state.announce(&ring);
                let _ = reply.send(());
            }
            SupervisorMsg::RingChanged => state.hand_off_moved(),
            SupervisorMsg::Expect(expect) => state.expect(expect),
            SupervisorMsg::Arrived { states, reply } => {
                let taken = states
                    .into_iter()
                    .map(|arrived| match arrived {
                        Some((uid, epoch, bytes)) if !state.stopping => {
                            state.arrived(uid, epoch, bytes)
                        }
                        _ => false,
                    })
                    .collect();
                let _ = reply.send(taken);
            }
            SupervisorMsg::Fenced { uid, actor } => {
                if state
                    .sessions
                    .get(&uid)
                    .is_some_and(|r| r.actor.get_id() == actor)
                    && let Some(resident) = state.sessions.remove(&uid)
                {
                    // Behind every turn routed to it so far; none is routed after.
                    let _ = resident.actor.cast(SessionMsg::Retire);
                    state.publish_resident();
                }
            }
            SupervisorMsg::Resident { reply } => {
                let _ = reply.send(state.sessions.len());
            }
            SupervisorMsg::Actors { reply } => {
                let _ = reply.send(state.by_actor.len());
            }
            SupervisorMsg::Shutdown { reply } => {
                state.stopping = true;
                let _ = reply.send(state.snapshot_all().await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Overrides ractor's default, which stops the supervisor when a child dies.
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(uid) = state.forget(cell.get_id()) {
                    metrics::counter!("confab_session_restarts_total").increment(1);
                    warn!(uid = %uid, error = %error, "session failed; it restarts from its durable state on its next turn");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

fn shutting_down() -> TurnError {
    TurnError::Unavailable("the node is shutting down: reconnect to another node".into())
}

impl SupervisorState {
    /// The uid's resident session, spawned if there is none.
    async fn resident(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        uid: &Uid,
    ) -> Result<&mut Resident, TurnError> {
        if !self.sessions.contains_key(uid) {
            // Routed here by a ring this node has just left behind: the
            // session's owner is another node now.
            if let Some(owner) = self
                .shared
                .ring()
                .owner(uid)
                .filter(|o| **o != self.shared.config.node_id)
            {
                return Err(TurnError::Unavailable(format!(
                    "session {uid} has just moved to {owner}: retry with the same id"
                )));
            }
            // Checked before an arrived state or an expectation is used up.
            let limit = self.shared.config.resident_sessions_max;
            if self.sessions.len() >= limit {
                return Err(TurnError::Overloaded(format!(
                    "node holds {limit} sessions, its limit: retry later or on another node"
                )));
            }
            let expected = self.expected.remove(uid);
            let incoming = match (self.arrived.remove(uid), expected) {
                (Some((state, _)), _) => Incoming::Arrived(state),
                (None, Some(deadline)) if deadline > Instant::now() => {
                    let (tx, rx) = oneshot::channel();
                    self.awaiting.insert(uid.clone(), tx);
                    Incoming::Awaiting(rx, deadline)
                }
                _ => Incoming::Nothing,
            };
            self.spawn(myself, uid, incoming).await?;
        }
        Ok(self.sessions.get_mut(uid).expect("spawned above"))
    }

    /// Spawns the uid's session actor, starting from `incoming`.
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        uid: &Uid,
        incoming: Incoming,
    ) -> Result<(), TurnError> {
        let queued = Arc::new(AtomicUsize::new(0));
        let args = SessionArgs {
            uid: uid.clone(),
            shared: Arc::clone(&self.shared),
            queued: Arc::clone(&queued),
            supervisor: myself.clone(),
            incoming,
        };
        let (actor, _) = Actor::spawn_linked(None, SessionActor, args, myself.get_cell())
            .await
            .map_err(|e| TurnError::Internal(format!("cannot start session {uid}: {e}")))?;
        self.by_actor.insert(actor.get_id(), uid.clone());
        self.sessions.insert(
            uid.clone(),
            Resident {
                actor,
                queued,
                last_turn: Instant::now(),
            },
        );
        self.publish_resident();
        Ok(())
    }

    /// Drops the map entry of a stopped actor, if it is still the uid's actor.
    fn forget(&mut self, actor: ActorId) -> Option<Uid> {
        let uid = self.by_actor.remove(&actor)?;
        if self
            .sessions
            .get(&uid)
            .is_some_and(|r| r.actor.get_id() == actor)
        {
            self.sessions.remove(&uid);
            self.publish_resident();
        }
        Some(uid)
    }

    fn passivate_idle(&mut self) {
        let idle_after = self.shared.config.passivate_after;
        let now = Instant::now();
        let idle: Vec<Uid> = self
            .sessions
            .iter()
            .filter(|(_, r)| {
                r.queued.load(Ordering::Acquire) == 0
                    && now.duration_since(r.last_turn) >= idle_after
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        self.passivate(idle);
    }

    /// Hands every session this node no longer owns to its new owner: the
    /// owner is told which to expect, then each actor, behind the turns already
    /// queued to it, sends its state there and stops.
    fn hand_off_moved(&mut self) {
        let ring = self.shared.ring();
        let me = &self.shared.config.node_id;
        // States that arrived for sessions the ring now gives elsewhere are
        // dropped: their new owner loads them from the durable tier.
        self.arrived.retain(|uid, _| ring.owner(uid) == Some(me));
        let moved = self.moved(&ring);
        if moved.is_empty() {
            return;
        }
        let count: usize = moved.values().map(Vec::len).sum();
        let reason = self.shared.drain.move_reason();
        info!(sessions = count, epoch = %ring.epoch(), reason, "ring changed; handing moved sessions off");
        metrics::counter!("confab_migrations_total", "reason" => reason).increment(count as u64);
        for (owner, uids) in moved {
            let linked = owner
                .as_ref()
                .is_some_and(|o| self.shared.peer(o).is_some());
            for uid in uids {
                if let Some(resident) = self.sessions.remove(&uid) {
                    // Removed first: a later turn is forwarded, never reaches this actor.
                    let to = owner.clone().filter(|_| linked);
                    let _ = resident.actor.cast(SessionMsg::HandOff {
                        to,
                        epoch: ring.epoch(),
                    });
                }
            }
        }
        self.publish_resident();
    }

    /// The resident sessions `ring` gives to other nodes, by new owner (`None`:
    /// the ring is empty).
    fn moved(&self, ring: &Ring) -> BTreeMap<Option<NodeId>, Vec<Uid>> {
        let me = &self.shared.config.node_id;
        let mut moved: BTreeMap<Option<NodeId>, Vec<Uid>> = BTreeMap::new();
        for uid in self.sessions.keys() {
            let owner = ring.owner(uid);
            if owner != Some(me) {
                moved.entry(owner.cloned()).or_default().push(uid.clone());
            }
        }
        moved
    }

    /// Before this node routes by `ring`: tells each new owner which of the
    /// sessions resident here it will receive, so that it holds their turns
    /// for the state instead of loading them from the durable tier. Sent
    /// before any turn is forwarded by `ring` (the link to a node is ordered).
    fn announce(&self, ring: &Ring) {
        for (owner, uids) in self.moved(ring) {
            let Some(peer) = owner.as_ref().and_then(|o| self.shared.peer(o)) else {
                continue;
            };
            let expect = crate::cluster::Expect {
                epoch: ring.epoch(),
                uids,
            };
            let _ = peer.cast(crate::cluster::PeerMsg::Expect(crate::cluster::Wire(
                expect,
            )));
        }
    }

    /// Notes the sessions another node is about to hand here (bounded by the
    /// resident limit: past it, they load from the durable tier).
    fn expect(&mut self, expect: crate::cluster::Expect) {
        let deadline = Instant::now() + HANDOFF_WAIT;
        let room = self
            .shared
            .config
            .resident_sessions_max
            .saturating_sub(self.expected.len());
        for uid in expect.uids.into_iter().take(room) {
            if !self.sessions.contains_key(&uid) {
                self.expected.insert(uid, deadline);
            }
        }
    }

    /// A moved session's state arrived: handed to the actor waiting for it, or
    /// a new actor starts from it. Refused if this node's ring, at that epoch
    /// or later, gives the session to another node, or if it already loaded
    /// the session from the durable tier.
    fn arrived(&mut self, uid: Uid, epoch: confab_core::Epoch, state: Option<Vec<u8>>) -> bool {
        // A state sent at an epoch this node has not adopted yet is taken: the
        // sender's newer ring gives the session here, and no turn reaches it
        // before this node routes by that ring.
        let ring = self.shared.ring();
        if ring.epoch() >= epoch && ring.owner(&uid) != Some(&self.shared.config.node_id) {
            return false;
        }
        self.expected.remove(&uid);
        if let Some(waiting) = self.awaiting.remove(&uid) {
            return waiting.send(state).is_ok();
        }
        if self.sessions.contains_key(&uid)
            || self.arrived.len() >= self.shared.config.resident_sessions_max
        {
            return false;
        }
        // No actor is spawned for it now: thousands of states arrive at once
        // when a node joins or drains, and most sessions are idle.
        self.arrived.insert(uid, (state, Instant::now()));
        true
    }

    /// Drops expectations whose time ran out and waits that ended.
    fn forget_stale_handoffs(&mut self) {
        let now = Instant::now();
        self.expected.retain(|_, deadline| *deadline > now);
        self.awaiting.retain(|_, waiting| !waiting.is_closed());
        let keep = self.shared.config.passivate_after;
        self.arrived
            .retain(|_, (_, at)| now.duration_since(*at) < keep);
    }

    fn passivate(&mut self, uids: Vec<Uid>) {
        for uid in uids {
            if let Some(resident) = self.sessions.remove(&uid) {
                // Removed first: a later turn spawns a new actor, never reaches this one.
                let _ = resident.actor.cast(SessionMsg::Passivate);
            }
        }
        self.publish_resident();
    }

    async fn snapshot_all(&mut self) -> Result<usize, TurnError> {
        let mut snapshots: Vec<StoredSnapshot> = Vec::new();
        for resident in self.sessions.values() {
            let taken = resident
                .actor
                .call(
                    |reply| SessionMsg::TakeSnapshot { reply },
                    Some(self.shared.config.turn_timeout),
                )
                .await;
            if let Ok(CallResult::Success(Some(snapshot))) = taken {
                snapshots.push(snapshot);
            }
        }
        for batch in snapshots.chunks(SHUTDOWN_SNAPSHOTS_PER_BATCH) {
            self.shared
                .store
                .write_snapshots(batch)
                .await
                .map_err(|e| TurnError::Unavailable(format!("shutdown snapshots: {e}")))?;
        }
        for resident in std::mem::take(&mut self.sessions).into_values() {
            resident.actor.stop(Some("node shutdown".into()));
        }
        self.publish_resident();
        info!(snapshots = snapshots.len(), "resident sessions snapshotted");
        Ok(snapshots.len())
    }

    fn publish_resident(&self) {
        metrics::gauge!("confab_sessions_resident").set(self.sessions.len() as f64);
    }
}
