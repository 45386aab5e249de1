//! The SessionSupervisor: the shell of the node's side of the handoff
//! protocol ([`confab_core::handoff::Node`]), which decides; the supervisor
//! spawns, passivates, hands off and restarts SessionActors as it says.
//!
//! It is the only place that maps a uid to its actor, so there is never more than
//! one resident SessionActor per uid on a node (it publishes the map in
//! `residents::Residents`, through which a turn for a resident session reaches the
//! actor without passing here):
//! - a turn for a uid with no actor spawns one if the machine admits it (its
//!   state loads lazily, from what the old owner sent if anything came);
//! - a turn for a session with `session_queue_max` turns queued gets `overloaded`;
//! - a session idle for `passivate_after` with nothing queued is removed from the
//!   map, then told to snapshot and stop, so no turn can reach it afterwards;
//! - a session that fails (a panic) is removed; its next turn spawns a fresh
//!   actor that rebuilds from the durable tier. No other session is touched.

use crate::handoff::{Arrived, HANDOFF_WAIT, config_of, mono_ms};
pub use crate::messages::SupervisorMsg;
use crate::residents::{Resident, Residents};
use crate::session_actor::{Activity, SessionActor, SessionArgs, SessionMsg};
use crate::wire::{Expect, HandoffState};
use crate::{Runtime, Shared, TurnError};
use base64::Engine as _;
use confab_core::Uid;
use confab_core::handoff::{self, Admit, Arrival, HandOff, Start};
use confab_core::ring::Ring;
use confab_store::StoredSnapshot;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Snapshots written per transaction on shutdown.
const SHUTDOWN_SNAPSHOTS_PER_BATCH: usize = 500;

/// The supervisor actor.
pub struct SessionSupervisor;

/// Its arguments.
pub struct SupervisorArgs {
    pub(crate) shared: Arc<Shared>,
    /// Where the resident sessions are published (this supervisor alone
    /// writes it).
    pub(crate) residents: Arc<Residents>,
}

/// Its state.
pub struct SupervisorState {
    shared: Arc<Shared>,
    /// The node's side of the handoff: it decides what is resident, what
    /// starts from what, and what a ring change moves.
    node: handoff::Node<Vec<u8>>,
    /// The actors of the resident sessions, in uid order; the same as
    /// `residents`, which other tasks read.
    sessions: BTreeMap<Uid, Resident>,
    residents: Arc<Residents>,
    /// The actors of sessions a ring moved away that wait their turn to hand
    /// off (the machine paces the handoff; no turn is routed to them).
    leaving: BTreeMap<Uid, Resident>,
    /// The actors told to hand off, until they stop (at most `handoff_max`).
    handing: BTreeMap<Uid, Resident>,
    by_actor: BTreeMap<ActorId, Uid>,
    stopping: bool,
    /// Sessions whose actor may wait for its state from the old owner.
    awaiting: BTreeMap<Uid, oneshot::Sender<Option<Vec<u8>>>>,
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
        let node = handoff::Node::new(
            args.shared.config.node_id.clone(),
            config_of(&args.shared.config),
        );
        Ok(SupervisorState {
            shared: args.shared,
            node,
            sessions: BTreeMap::new(),
            residents: args.residents,
            leaving: BTreeMap::new(),
            handing: BTreeMap::new(),
            by_actor: BTreeMap::new(),
            stopping: false,
            awaiting: BTreeMap::new(),
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
                let uid = turn.uid.clone();
                let (resident, started) = match state.resident(&myself, &uid, true).await {
                    Ok(resident) => resident,
                    Err(e) => {
                        let _ = turn.reply.send(Err(e));
                        return Ok(());
                    }
                };
                // The bound the direct delivery keeps, by the same
                // compare-and-swap: a turn delivered meanwhile counts.
                if !resident.activity.count_in(state.residents.config()) {
                    let limit = state.residents.config().queue_max;
                    let _ = turn.reply.send(Err(queue_full(&uid, limit)));
                    return Ok(());
                }
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::Turn(turn))) =
                    resident.actor.cast(SessionMsg::Turn(turn))
                {
                    let _ = turn.reply.send(Err(TurnError::Internal(
                        "the session stopped: retry with the same id".into(),
                    )));
                }
                if started {
                    state.publish(uid, resident);
                }
            }
            SupervisorMsg::Request(request) => {
                if state.stopping {
                    let _ = request.reply.send(Err(shutting_down()));
                    return Ok(());
                }
                let uid = request.uid.clone();
                match state.resident(&myself, &uid, false).await {
                    Ok((resident, started)) => {
                        let _ = resident.actor.cast(SessionMsg::Request(request));
                        if started {
                            state.publish(uid, resident);
                        }
                    }
                    Err(e) => {
                        let _ = request.reply.send(Err(e));
                    }
                }
            }
            SupervisorMsg::Sweep => {
                state.passivate_idle();
                state.node.expire(mono_ms());
                state.awaiting.retain(|_, waiting| !waiting.is_closed());
            }
            SupervisorMsg::Announce { ring, reply } => {
                state.announce(&ring);
                let _ = reply.send(());
            }
            SupervisorMsg::RingChanged => state.hand_off_moved(),
            SupervisorMsg::Expect(expect) => state.node.expect(mono_ms(), expect.uids),
            SupervisorMsg::Arrived { states, reply } => {
                let taken = states
                    .into_iter()
                    .map(|arrived| match arrived {
                        Some(arrived) if !state.stopping => {
                            state.arrived(arrived.uid, arrived.epoch, arrived.snapshot)
                        }
                        _ => false,
                    })
                    .collect();
                let _ = reply.send(taken);
            }
            SupervisorMsg::Fenced { uid, actor } => state.fenced(&uid, actor),
            SupervisorMsg::Resident { reply } => {
                let _ = reply.send(state.sessions.len());
            }
            SupervisorMsg::Actors { reply } => {
                let _ = reply.send(state.by_actor.len());
            }
            SupervisorMsg::Shutdown { reply } => {
                state.stopping = true;
                // Every later turn comes here, and is refused.
                state.residents.clear();
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

fn queue_full(uid: &Uid, limit: usize) -> TurnError {
    TurnError::Overloaded(format!(
        "session {uid} has {limit} turns queued, its limit: wait for replies before sending more"
    ))
}

impl SupervisorState {
    /// The uid's resident session, spawned if the machine starts one here
    /// (then `true`: it is published for direct delivery once the message
    /// that started it is queued, [`Self::publish`]); `counted`: a turn,
    /// bounded by the session's queue (a request is not).
    async fn resident(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        uid: &Uid,
        counted: bool,
    ) -> Result<(Resident, bool), TurnError> {
        let queued = match self.sessions.get(uid) {
            Some(r) if counted => r.activity.queued.load(Ordering::Acquire),
            _ => 0,
        };
        let ring = self.shared.ring();
        let started = match self.node.admit(mono_ms(), &ring, uid, queued) {
            // The machine noted the time itself: the activity holds what
            // it does not see.
            Admit::Deliver => false,
            Admit::Start(start) => {
                if let Err(e) = self.spawn(myself, uid, start).await {
                    self.node.forget(uid);
                    return Err(e);
                }
                true
            }
            Admit::Moved(owner) => {
                let owner = owner.map_or_else(|| "no node".to_owned(), |o| o.to_string());
                return Err(TurnError::Unavailable(format!(
                    "session {uid} has just moved to {owner}: retry with the same id"
                )));
            }
            Admit::Overloaded(handoff::Limit::Queue(limit)) => return Err(queue_full(uid, limit)),
            Admit::Overloaded(handoff::Limit::Resident(limit)) => {
                return Err(TurnError::Overloaded(format!(
                    "node holds {limit} sessions, its limit: retry later or on another node"
                )));
            }
        };
        let resident = self
            .sessions
            .get(uid)
            .ok_or_else(|| TurnError::Internal(format!("session {uid} has no actor: retry")))?;
        Ok((resident.clone(), started))
    }

    /// Spawns the uid's session actor, starting from `start`.
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        uid: &Uid,
        start: Start<Vec<u8>>,
    ) -> Result<(), TurnError> {
        let activity = Arc::new(Activity::default());
        let state_rx = matches!(start, Start::Awaiting { .. }).then(|| {
            let (tx, rx) = oneshot::channel();
            self.awaiting.insert(uid.clone(), tx);
            rx
        });
        let args = SessionArgs {
            uid: uid.clone(),
            shared: Arc::clone(&self.shared),
            activity: Arc::clone(&activity),
            supervisor: myself.clone(),
            start,
            state_rx,
        };
        let (actor, _) = Actor::spawn_linked(None, SessionActor, args, myself.get_cell())
            .await
            .map_err(|e| TurnError::Internal(format!("cannot start session {uid}: {e}")))?;
        self.by_actor.insert(actor.get_id(), uid.clone());
        // Published once the message that started it is queued to it, so
        // that no turn delivered directly goes ahead of that one.
        self.sessions
            .insert(uid.clone(), Resident { actor, activity });
        self.publish_resident();
        Ok(())
    }

    /// `uid`'s session is resident: turns for it are delivered to `resident`.
    fn insert(&mut self, uid: Uid, resident: Resident) {
        self.publish(uid.clone(), resident.clone());
        self.sessions.insert(uid, resident);
    }

    /// Turns for `uid` may reach `resident` without passing here (none once
    /// the node is stopping: they come here and are refused).
    fn publish(&self, uid: Uid, resident: Resident) {
        if !self.stopping {
            self.residents.insert(uid, resident);
        }
    }

    /// The session's actor `actor` was fenced by a newer owner: no turn is
    /// routed to it any more, and it retires behind the turns already routed
    /// to it. Wherever it is: resident, waiting to hand off (it has nothing
    /// to hand over now, and its place in the queue goes to the next), or
    /// handing off (its place goes to the next once it has stopped,
    /// [`Self::forget`]); ignored, the last two lingered for good, the last
    /// holding one of the `handoff_max` places.
    fn fenced(&mut self, uid: &Uid, actor: ActorId) {
        let is_this = |r: &Resident| r.actor.get_id() == actor;
        let retiring = if self.sessions.get(uid).is_some_and(is_this) {
            self.node.forget(uid);
            let resident = self.remove(uid);
            self.publish_resident();
            resident
        } else if self.leaving.get(uid).is_some_and(is_this) {
            self.node.stopped_waiting(uid);
            self.leaving.remove(uid)
        } else {
            self.handing.get(uid).filter(|r| is_this(r)).cloned()
        };
        if let Some(resident) = retiring {
            let _ = resident.actor.cast(SessionMsg::Retire);
        }
    }

    /// `uid`'s session is resident no more: no turn is delivered to its actor
    /// from now on (a message told to the actor after this comes after every
    /// turn delivered to it).
    fn remove(&mut self, uid: &Uid) -> Option<Resident> {
        self.residents.remove(uid);
        self.sessions.remove(uid)
    }

    /// Drops the map entry of a stopped actor, if it is still the uid's actor;
    /// a session that was handing off lets the next one go, one that waited
    /// to waits no more.
    fn forget(&mut self, actor: ActorId) -> Option<Uid> {
        let uid = self.by_actor.remove(&actor)?;
        let is_this = |r: &Resident| r.actor.get_id() == actor;
        if self.sessions.get(&uid).is_some_and(is_this) {
            self.remove(&uid);
            self.node.forget(&uid);
            self.publish_resident();
        } else if self.leaving.get(&uid).is_some_and(is_this) {
            self.leaving.remove(&uid);
            self.node.stopped_waiting(&uid);
        } else {
            if self.handing.get(&uid).is_some_and(is_this) {
                self.handing.remove(&uid);
            }
            let next = self.node.handed(&uid);
            self.tell_hand_off(next);
        }
        Some(uid)
    }

    fn passivate_idle(&mut self) {
        let idle_ms =
            u64::try_from(self.shared.config.passivate_after.as_millis()).unwrap_or(u64::MAX);
        let sessions = &self.sessions;
        let idle = self.node.idle(mono_ms(), idle_ms, |uid| {
            sessions
                .get(uid)
                .map_or_else(Default::default, |r| r.activity.read())
        });
        self.passivate(idle);
    }

    /// The ring in force changed: the machine says which resident sessions
    /// leave, and which of them hand off now; each actor told, behind the
    /// turns already queued to it, hands its state to its new owner and stops,
    /// and lets the next one go ([`Self::forget`]).
    fn hand_off_moved(&mut self) {
        let ring = self.shared.ring();
        let shared = Arc::clone(&self.shared);
        let started = std::time::Instant::now();
        let sessions = &self.sessions;
        let adopted = self.node.adopt(
            &ring,
            |o| shared.peer(o).is_some(),
            |uid| sessions.get(uid).map_or(0, |r| r.activity.read().last),
        );
        for uid in adopted.back {
            if let Some(resident) = self.leaving.remove(&uid) {
                self.insert(uid, resident);
            }
        }
        // Removed first: a later turn is forwarded, never reaches these actors.
        // One pass in uid order (`left` is sorted), merged into `leaving` at
        // once: every turn to this node waits while this runs.
        let mut left = adopted.left.iter().peekable();
        let mut moved: BTreeMap<Uid, Resident> = self
            .sessions
            .extract_if(.., |uid, _| {
                while left.next_if(|l| *l < uid).is_some() {}
                left.next_if(|l| *l == uid).is_some()
            })
            .collect();
        for uid in moved.keys() {
            self.residents.remove(uid);
        }
        self.leaving.append(&mut moved);
        let telling = adopted.hand_off.len();
        self.tell_hand_off(adopted.hand_off);
        self.publish_resident();
        if !adopted.left.is_empty() {
            let reason = self.shared.drain.move_reason();
            info!(sessions = adopted.left.len(), now = telling, epoch = %ring.epoch(), reason, took_ms = started.elapsed().as_millis() as u64, "ring changed; handing moved sessions off");
            metrics::counter!("confab_migrations_total", "reason" => reason)
                .increment(adopted.left.len() as u64);
        }
    }

    /// Tells each session's actor to hand off; one whose actor is gone lets
    /// the next one go at once.
    fn tell_hand_off(&mut self, handoffs: Vec<HandOff>) {
        // In the machine's order: the sessions talked to last are told first.
        let mut handoffs = std::collections::VecDeque::from(handoffs);
        while let Some(HandOff { uid, to, epoch }) = handoffs.pop_front() {
            match self.leaving.remove(&uid) {
                Some(resident) => {
                    let _ = resident.actor.cast(SessionMsg::HandOff { to, epoch });
                    self.handing.insert(uid, resident);
                }
                None => handoffs.extend(self.node.handed(&uid)),
            }
        }
    }

    /// Before this node routes by `ring`: tells each new owner which of the
    /// sessions resident here it will receive, so that it holds their turns
    /// for the state instead of loading them from the durable tier. Sent
    /// before any turn is forwarded by `ring` (the link to a node is ordered).
    fn announce(&self, ring: &Ring) {
        let shared = &self.shared;
        let started = std::time::Instant::now();
        let expects = self.node.announce(ring, |o| shared.peer(o).is_some());
        let computed = started.elapsed();
        let sessions: usize = expects.iter().map(|e| e.uids.len()).sum();
        for expect in expects {
            let Some(peer) = shared.peer(&expect.to) else {
                continue;
            };
            let expect = crate::wire::Expect {
                epoch: expect.epoch,
                uids: expect.uids,
            };
            let _ = peer.cast(crate::wire::PeerMsg::Expect(crate::wire::Wire(expect)));
        }
        if sessions > 0 {
            info!(sessions, epoch = %ring.epoch(), computed_ms = computed.as_millis() as u64, took_ms = started.elapsed().as_millis() as u64, "announced the sessions the ring moves to their new owners");
        }
    }

    /// A moved session's state arrived: the machine keeps it for the
    /// session's next turn, offers it to the actor waiting for it, or refuses
    /// it. Whether it was taken.
    fn arrived(&mut self, uid: Uid, epoch: confab_core::Epoch, state: Option<Vec<u8>>) -> bool {
        let ring = self.shared.ring();
        match self
            .node
            .arrived(mono_ms(), &ring, uid.clone(), epoch, state)
        {
            Arrival::Refused => false,
            Arrival::Kept => true,
            Arrival::Offer(state) => self
                .awaiting
                .remove(&uid)
                .is_some_and(|waiting| waiting.send(state).is_ok()),
        }
    }

    fn passivate(&mut self, uids: Vec<Uid>) {
        for uid in uids {
            if let Some(resident) = self.remove(&uid) {
                // Removed first: a later turn spawns a new actor, never reaches this one.
                let _ = resident.actor.cast(SessionMsg::Passivate);
            }
        }
        self.publish_resident();
    }

    async fn snapshot_all(&mut self) -> Result<usize, TurnError> {
        let mut snapshots: Vec<StoredSnapshot> = Vec::new();
        for resident in self.sessions.values().chain(self.leaving.values()) {
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
        let leaving = std::mem::take(&mut self.leaving).into_values();
        for resident in std::mem::take(&mut self.sessions)
            .into_values()
            .chain(leaving)
        {
            resident.actor.stop(Some("node shutdown".into()));
        }
        self.node.clear();
        self.publish_resident();
        info!(snapshots = snapshots.len(), "resident sessions snapshotted");
        Ok(snapshots.len())
    }

    fn publish_resident(&self) {
        let resident = self.sessions.len() as u64;
        self.shared
            .cluster
            .resident
            .store(resident, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("confab_sessions_resident").set(resident as f64);
    }
}

impl Runtime {
    /// Another node is about to hand these sessions here.
    pub(crate) fn expect(&self, expect: Expect) {
        let _ = self.supervisor.cast(SupervisorMsg::Expect(expect));
    }

    /// Moved sessions' states arrived; for each, whether it was taken.
    pub(crate) async fn states_arrived(&self, batch: Vec<HandoffState>) -> Vec<bool> {
        let count = batch.len();
        // A state that does not decode is refused (its session loads from the
        // durable tier); `None` stands for it here.
        let states: Vec<Option<Arrived>> = batch
            .into_iter()
            .map(|handoff| {
                let state = match handoff.snapshot {
                    None => None,
                    Some(text) => Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .ok()?,
                    ),
                };
                Some(Arrived {
                    uid: handoff.uid,
                    epoch: handoff.epoch,
                    snapshot: state,
                })
            })
            .collect();
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::Arrived { states, reply },
                Some(HANDOFF_WAIT),
            )
            .await
        {
            Ok(CallResult::Success(taken)) => taken,
            _ => vec![false; count],
        }
    }
}
