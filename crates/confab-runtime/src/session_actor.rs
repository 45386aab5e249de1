//! The SessionActor: one per resident uid, local to its node.
//!
//! It loads its state lazily, on its first message, from the latest snapshot plus
//! the events after it, so that spawning costs nothing and a load failure answers
//! one turn with `unavailable` instead of killing the actor. A turn's events are
//! applied to the state only after the committer reports them committed; if a
//! commit fails, the state is dropped and reloaded from the durable tier on the
//! next message, so memory never runs ahead of the log.
//!
//! Its life is decided by the core's session machine
//! ([`confab_core::handoff::Session`]), the one the simulator runs: whether to
//! wait for the old owner's state, when to claim (only where the ring in force
//! names this node), one turn at a time in order, what to do when fenced, and
//! how to leave (hand off or passivate). The actor carries its outputs out:
//! the claim and load, the turn itself, the state to the outbox, the final
//! snapshot. If the store says a newer epoch owns the session
//! ([`StoreError::Fenced`]), on load or on commit, the session answers
//! `unavailable` and retires: a stale owner never writes again.
//!
//! A turn whose policy calls an action is committed in two steps (see
//! [`confab_core::session`]): the request, then the action's outcome with the
//! reply. A session that loads with an action still pending (its owner crashed
//! or was fenced in between) runs it again under the same idempotency key and
//! closes the turn before it serves anything else (`session_actor/turn.rs`).
//!
//! Snapshots are taken every `snapshot_every_events` events or
//! `snapshot_every` after the first unsnapshotted event, whichever comes first,
//! and handed to the batch writer ([`crate::snapshotter`]); on passivation and
//! shutdown they are written before the session stops.

mod turn;

use crate::handoff::{instant_at, mono_ms};
use crate::messages::SupervisorMsg;
use crate::{EVENTS_PAGE_MAX, SessionRequest, Shared, TurnError, TurnRequest, now_ms};
use confab_core::handoff::{
    Claimed, Phase, Refusal, Served, Session, SessionInput, SessionOutput, Start,
};
use confab_core::session::{SessionState, Snapshot, SnapshotDue, SnapshotPolicy, SnapshotRef};
use confab_core::{Seq, Uid};
use confab_store::{StoreError, StoredSnapshot};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::oneshot;
use tracing::{Instrument, info_span, warn};

/// Messages to a SessionActor.
pub enum SessionMsg {
    /// One user turn (its uid is this session's).
    Turn(TurnRequest),
    /// A request that is not a turn (hello, show, replay a dead letter).
    Request(SessionRequest),
    /// The snapshot to write on shutdown, if the state changed since the last one.
    TakeSnapshot {
        /// Where the snapshot goes.
        reply: RpcReplyPort<Option<StoredSnapshot>>,
    },
    /// Write a snapshot and stop: the session has been idle.
    Passivate,
    /// Write a snapshot if the state changed: `snapshot_every` has passed.
    SnapshotDue,
    /// Stop: the session was fenced, and the supervisor, which no longer routes
    /// turns here, has sent this after every turn it had routed.
    Retire,
    /// The ring moved the session: send its state to `to` (if it is
    /// connected), write a snapshot, and stop. Sent behind every turn routed here.
    HandOff {
        /// The new owner.
        to: Option<confab_core::NodeId>,
        /// The epoch it owns the session at.
        epoch: confab_core::Epoch,
    },
}

// Local only: not serializable, never announced to other nodes.
impl ractor::Message for SessionMsg {}

/// What the session machine queues: a turn, or a request that is not one.
pub(crate) enum Work {
    /// A turn, and when its caller stops waiting, on the machines' clock (ms).
    Turn(TurnRequest, u64),
    Request(SessionRequest),
}

/// The session machine refuses a turn that reaches the head of its queue
/// after its caller stopped waiting.
impl confab_core::handoff::Deadline for Work {
    fn deadline_ms(&self) -> Option<u64> {
        match self {
            // Its caller on this node timed out and closed its port.
            Work::Turn(turn, _) if turn.reply.is_closed() => Some(0),
            Work::Turn(_, deadline) => Some(*deadline),
            Work::Request(_) => None,
        }
    }
}

/// What the shell counts of one resident session: whoever delivers a turn
/// counts it up (`residents`, the supervisor), the actor counts it down.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Turns queued to it (waiting and in flight): counted up when one is
    /// delivered, down by the actor when one is answered.
    pub(crate) queued: AtomicUsize,
    /// When it was last given a turn or a request directly, without the
    /// supervisor (`handoff::mono_ms`; 0: never): the node's machine notes
    /// the ones it admits itself.
    pub(crate) last: AtomicU64,
}

impl Activity {
    /// As the node's machine reads it.
    pub(crate) fn read(&self) -> confab_core::handoff::Activity {
        confab_core::handoff::Activity {
            queued: self.queued.load(Ordering::Acquire),
            last: self.last.load(Ordering::Relaxed),
        }
    }

    /// Given something now.
    pub(crate) fn touch(&self) {
        self.last.fetch_max(mono_ms(), Ordering::Relaxed);
    }

    /// Counts one more turn queued, if `config` lets the session take it
    /// ([`HandoffConfig::delivers`]); compare-and-swap, so two tasks
    /// delivering at once never pass the bound together.
    pub(crate) fn count_in(&self, config: &confab_core::handoff::HandoffConfig) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                config.delivers(queued).then_some(queued + 1)
            })
            .is_ok()
    }
}

/// The actor.
pub struct SessionActor;

/// What the supervisor gives a new SessionActor.
pub struct SessionArgs {
    pub(crate) uid: Uid,
    pub(crate) shared: Arc<Shared>,
    /// Turns queued for this session: whoever delivers one counts up, the
    /// actor counts down.
    pub(crate) activity: Arc<Activity>,
    /// The supervisor, told when the session is fenced.
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    /// What the session starts from, as the node's machine decided.
    pub(crate) start: Start<Vec<u8>>,
    /// Where the old owner's state comes, if it is awaited.
    pub(crate) state_rx: Option<oneshot::Receiver<Option<Vec<u8>>>>,
}

/// The actor's state.
pub struct SessionActorState {
    uid: Uid,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    /// The session machine: it decides, the actor carries out.
    life: Session<Work, Vec<u8>>,
    /// `None` until loaded, and again after a failed commit.
    session: Option<SessionState>,
    /// The seq of the last snapshot taken (handed to the writer, or written) or read.
    snapshot_seq: Seq,
    /// The seq of the last snapshot known to be stored: read at load, or written
    /// (the batch writer raises it). Passivation and shutdown write a snapshot
    /// when the state is past it, whatever was handed over before.
    stored_seq: Arc<AtomicU64>,
    /// The ring epoch this session was claimed at, when it loaded.
    epoch: confab_core::Epoch,
    /// Whether a `SnapshotDue` timer is pending.
    snapshot_timer: bool,
    /// Why a newer owner fenced the session, once it did. Every later turn
    /// gets `unavailable` at once until the actor retires.
    fenced: Option<String>,
    /// Why the last load failed.
    load_error: Option<String>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Where the old owner's state comes, while it is awaited.
    state_rx: Option<oneshot::Receiver<Option<Vec<u8>>>>,
    /// Whether the session came from another node (counted once it loads).
    moving: bool,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let moving = !matches!(args.start, Start::Durable);
        let life = Session::new(
            args.uid.clone(),
            args.shared.config.node_id.clone(),
            args.start,
            crate::handoff::config_of(&args.shared.config),
        );
        Ok(SessionActorState {
            uid: args.uid,
            shared: args.shared,
            activity: args.activity,
            life,
            session: None,
            snapshot_seq: Seq(0),
            stored_seq: Arc::default(),
            epoch: confab_core::Epoch(0),
            snapshot_timer: false,
            fenced: None,
            load_error: None,
            supervisor: args.supervisor,
            state_rx: args.state_rx,
            moving,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Work that may await (a claim, a turn, a handoff) runs in a future of
        // its own, boxed: the actor's task keeps only a pointer between
        // messages, not room for the largest turn (a resident session's
        // memory is mostly its idle actor).
        let input = match message {
            SessionMsg::Turn(turn) => {
                debug_assert_eq!(turn.uid, state.uid, "a turn reached another uid's session");
                // The time its caller still waits, carried to the machine's clock.
                let left = turn
                    .deadline
                    .saturating_duration_since(std::time::Instant::now());
                let deadline = mono_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX / 2);
                SessionInput::Turn(Work::Turn(turn, deadline))
            }
            SessionMsg::Request(request) => SessionInput::Turn(Work::Request(request)),
            SessionMsg::Passivate => SessionInput::Passivate,
            SessionMsg::HandOff { to, epoch } => SessionInput::HandOff { to, epoch },
            SessionMsg::Retire => {
                myself.stop(Some("fenced".into()));
                return Ok(());
            }
            SessionMsg::SnapshotDue => {
                state.snapshot_timer = false;
                state.offer_snapshot();
                return Ok(());
            }
            SessionMsg::TakeSnapshot { reply } => {
                let _ = reply.send(state.final_snapshot());
                return Ok(());
            }
        };
        Box::pin(state.drive(&myself, input)).await;
        Ok(())
    }
}

/// Why a turn failed, as the session sees it before answering.
enum Failure {
    /// A newer epoch owns the session: this actor must stop (why).
    Fenced(String),
    /// Anything else.
    Turn(TurnError),
}

impl From<TurnError> for Failure {
    fn from(e: TurnError) -> Self {
        Failure::Turn(e)
    }
}

fn unavailable(e: &StoreError) -> Failure {
    match e {
        StoreError::Fenced { .. } => Failure::Fenced(e.to_string()),
        e => Failure::Turn(TurnError::Unavailable(format!(
            "the durable tier failed ({e}); the turn is not done: retry with the same id"
        ))),
    }
}

impl SessionActorState {
    /// Feeds `input` to the session machine and carries out what it says, and
    /// what follows from the results, until it waits for the next message.
    async fn drive(&mut self, myself: &ActorRef<SessionMsg>, input: SessionInput<Work, Vec<u8>>) {
        let mut todo: VecDeque<SessionOutput<Work, Vec<u8>>> = self.step(input).into();
        loop {
            while let Some(output) = todo.pop_front() {
                if let Some(result) = self.carry_out(myself, output).await {
                    todo.extend(self.step(result));
                }
            }
            // The machine waits for the old owner's state: so does the actor
            // (turns behind this one wait in its mailbox, bounded by the
            // supervisor's per-session limit).
            let Phase::AwaitingState { until } = *self.life.phase() else {
                return;
            };
            let arrived = match self.state_rx.take() {
                Some(rx) => tokio::time::timeout_at(instant_at(until), rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            let ring = self.shared.ring();
            let outputs = match arrived {
                Some(state) => self
                    .life
                    .handle(mono_ms(), &ring, SessionInput::State(state)),
                None => self.life.handle_timeout(until.max(mono_ms()), &ring),
            };
            todo.extend(outputs);
        }
    }

    fn step(&mut self, input: SessionInput<Work, Vec<u8>>) -> Vec<SessionOutput<Work, Vec<u8>>> {
        let ring = self.shared.ring();
        self.life.handle(mono_ms(), &ring, input)
    }

    /// Carries out one output; returns the machine's next input, if the
    /// output has a result to feed back.
    async fn carry_out(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        output: SessionOutput<Work, Vec<u8>>,
    ) -> Option<SessionInput<Work, Vec<u8>>> {
        match output {
            SessionOutput::Claim { epoch, state } => {
                // Judged by the ring the claim was decided on (a newer one may
                // have been swapped in since).
                let ring = self.shared.ring();
                if ring.epoch() == epoch
                    && ring.owner(&self.uid) != Some(&self.shared.config.node_id)
                {
                    crate::invariant::violated(
                        crate::invariant::CLAIM_ON_RING,
                        &format!("{} claims at epoch {epoch} off the ring", self.uid),
                    );
                }
                let result = self.claim_and_load(epoch, state).await;
                Some(SessionInput::Claimed { epoch, result })
            }
            SessionOutput::Serve(work) => {
                if self.session.is_none() {
                    crate::invariant::violated(
                        crate::invariant::SERVED_LOADED,
                        &format!("{}: served with no state", self.uid),
                    );
                }
                Some(SessionInput::Served(self.serve(myself, work).await))
            }
            SessionOutput::Refuse { turn, refusal } => {
                if refusal == Refusal::CallerGone {
                    metrics::counter!("confab_turns_abandoned_total").increment(1);
                }
                let error = self.refusal(&refusal);
                self.refuse(turn, error);
                None
            }
            SessionOutput::SendState { to, epoch } => {
                Some(SessionInput::Taken(self.send_state(&to, epoch).await))
            }
            SessionOutput::WriteSnapshot { deferred: true } => {
                // The new owner holds the state: the snapshot goes through
                // the batch writer (dropped as fenced once the new owner
                // has claimed the session), not one write per session.
                if let Some(snapshot) = self.final_snapshot() {
                    self.shared
                        .snapshotter
                        .offer(snapshot, Arc::clone(&self.stored_seq));
                }
                None
            }
            SessionOutput::WriteSnapshot { deferred: false } => {
                // Passivated, or the new owner loads it from the durable
                // tier: faster from a fresh snapshot.
                self.write_final_snapshot().await;
                None
            }
            SessionOutput::Stop => {
                if self.life.phase() == &Phase::Fenced {
                    self.retire(myself);
                } else {
                    myself.stop(Some("left".into()));
                }
                None
            }
        }
    }

    /// Runs one turn or request on the loaded session and answers it; how it
    /// ended, for the machine.
    async fn serve(&mut self, myself: &ActorRef<SessionMsg>, work: Work) -> Served {
        let served = match work {
            Work::Turn(turn, _) => {
                let TurnRequest {
                    message_id,
                    text,
                    reply,
                    permit,
                    span: parent,
                    ..
                } = turn;
                let span = info_span!(
                    parent: &parent,
                    "session turn",
                    uid = %self.uid,
                    message_id = %message_id,
                    node = %self.shared.config.node_id,
                    epoch = self.epoch.0,
                );
                let outcome = self.turn(message_id, text).instrument(span).await;
                let (served, answer) = self.settle(outcome);
                self.turn_answered();
                let _ = reply.send(answer);
                // The node's in-flight slot is free once the turn is answered.
                drop(permit);
                served
            }
            Work::Request(request) => {
                let SessionRequest {
                    ask, reply, permit, ..
                } = request;
                let span = info_span!("request", uid = %self.uid);
                let outcome = self.request(ask).instrument(span).await;
                let (served, answer) = self.settle(outcome);
                let _ = reply.send(answer);
                drop(permit);
                served
            }
        };
        if self.session.is_some() {
            self.snapshot_on_schedule(myself).await;
        }
        served
    }

    /// How a served piece of work ended for the machine, and its answer.
    fn settle<T>(&mut self, outcome: Result<T, Failure>) -> (Served, Result<T, TurnError>) {
        match outcome {
            Ok(done) => (Served::Done, Ok(done)),
            Err(Failure::Fenced(e)) => {
                self.session = None;
                if self.fenced.is_none() {
                    warn!(uid = %self.uid, error = %e, "a newer owner holds the session; retiring");
                    metrics::counter!("confab_sessions_fenced_total").increment(1);
                    self.fenced = Some(e);
                }
                (Served::Fenced, Err(self.moved()))
            }
            Err(Failure::Turn(e)) if self.session.is_none() => (Served::Reload, Err(e)),
            Err(Failure::Turn(e)) => (Served::Done, Err(e)),
        }
    }

    /// Answers refused work with `error`; a turn frees its slot in the
    /// session's queue and the node's in-flight permit.
    fn refuse(&self, work: Work, error: TurnError) {
        match work {
            Work::Turn(turn, _) => {
                self.turn_answered();
                let _ = turn.reply.send(Err(error));
            }
            Work::Request(request) => {
                let _ = request.reply.send(Err(error));
            }
        }
    }

    /// One turn queued here is answered.
    fn turn_answered(&self) {
        let queued = &self.activity.queued;
        let before = queued.fetch_sub(1, Ordering::AcqRel);
        if before == 0 {
            queued.store(0, Ordering::Release);
            crate::invariant::violated(
                crate::invariant::TURNS_CONSERVED,
                &format!("{}: a turn answered that was never queued", self.uid),
            );
        }
    }

    /// The client's error for a refused turn.
    fn refusal(&self, refusal: &Refusal) -> TurnError {
        match refusal {
            Refusal::Moved(owner) => {
                let owner = owner
                    .as_ref()
                    .map_or_else(|| "no node".to_owned(), ToString::to_string);
                TurnError::Unavailable(format!(
                    "session {} has moved to {owner}: retry with the same id",
                    self.uid
                ))
            }
            Refusal::Fenced => self.moved(),
            Refusal::LoadFailed => TurnError::Unavailable(format!(
                "the durable tier failed ({}); the turn is not done: retry with the same id",
                self.load_error
                    .as_deref()
                    .unwrap_or("while loading the session")
            )),
            Refusal::CallerGone => TurnError::Overloaded(
                "the caller stopped waiting before the session reached this turn: nothing was recorded, retry with the same id".into(),
            ),
        }
    }

    /// A newer owner fenced the session: the supervisor stops routing here,
    /// then sends `Retire` behind the turns it already routed (they get
    /// `moved()`).
    fn retire(&self, myself: &ActorRef<SessionMsg>) {
        let _ = self.supervisor.cast(SupervisorMsg::Fenced {
            uid: self.uid.clone(),
            actor: myself.get_id(),
        });
    }

    /// Claims the session at `epoch` and loads it, from the old owner's
    /// `state` plus the later events if one came, else from the durable tier.
    async fn claim_and_load(
        &mut self,
        epoch: confab_core::Epoch,
        state: Option<Vec<u8>>,
    ) -> Claimed {
        self.epoch = epoch;
        let from_state = state.is_some();
        match self.load(state).await {
            Ok((session, snapshot_seq)) => {
                if std::mem::take(&mut self.moving) {
                    let source = if from_state {
                        "old_owner"
                    } else {
                        "durable_tier"
                    };
                    metrics::counter!("confab_handoffs_total", "state_from" => source).increment(1);
                }
                if session.pending_action().is_some() {
                    warn!(uid = %self.uid, "an action was left pending; running it again under its key");
                    metrics::counter!("confab_actions_resumed_total").increment(1);
                }
                self.session = Some(session);
                self.snapshot_seq = snapshot_seq;
                self.stored_seq.store(snapshot_seq.0, Ordering::Release);
                self.load_error = None;
                Claimed::Loaded
            }
            Err(e @ StoreError::Fenced { .. }) => {
                if self.fenced.is_none() {
                    warn!(uid = %self.uid, error = %e, "a newer owner holds the session; retiring");
                    metrics::counter!("confab_sessions_fenced_total").increment(1);
                    self.fenced = Some(e.to_string());
                }
                Claimed::Fenced
            }
            Err(e) => {
                self.load_error = Some(e.to_string());
                Claimed::Failed
            }
        }
    }

    /// Claims the session at the node's epoch, then rebuilds its state from the
    /// old owner's state if it `arrived` (and checks out), else from the latest
    /// usable snapshot, plus the events after it.
    async fn load(&self, arrived: Option<Vec<u8>>) -> Result<(SessionState, Seq), StoreError> {
        let store = &self.shared.store;
        store.claim(&self.uid, self.epoch).await?;
        if let Some(state) = arrived.and_then(|bytes| self.verified(&bytes)) {
            let page = store
                .events_after(&self.uid, state.seq(), EVENTS_PAGE_MAX)
                .await?;
            return self.apply_log(state, page).await;
        }
        let log = store.load(&self.uid, EVENTS_PAGE_MAX).await?;
        let (session, page) = match log.snapshot.map(|s| self.verified(&s.bytes)) {
            None => (SessionState::default(), log.events),
            Some(Some(state)) => (state, log.events),
            Some(None) => (
                SessionState::default(),
                store
                    .events_after(&self.uid, Seq(0), EVENTS_PAGE_MAX)
                    .await?,
            ),
        };
        self.apply_log(session, page).await
    }

    /// `session` with `page` and every later event of the log applied; the seq
    /// it started from is the snapshot's.
    async fn apply_log(
        &self,
        mut session: SessionState,
        mut page: Vec<confab_core::session::RecordedEvent>,
    ) -> Result<(SessionState, Seq), StoreError> {
        let store = &self.shared.store;
        let snapshot_seq = session.seq();
        loop {
            for event in &page {
                session.apply(event).map_err(|e| {
                    StoreError::Corrupt(format!("log of {} does not replay: {e}", self.uid))
                })?;
            }
            if page.len() < EVENTS_PAGE_MAX {
                break;
            }
            page = store
                .events_after(&self.uid, session.seq(), EVENTS_PAGE_MAX)
                .await?;
        }
        Ok((session, snapshot_seq))
    }

    /// The snapshot's state if its checksum holds and it is this session's; a
    /// refused snapshot is counted and logged.
    fn verified(&self, bytes: &[u8]) -> Option<SessionState> {
        let ring = self.shared.config.ring.get();
        let refused = match Snapshot::open(
            bytes,
            &self.uid,
            &ring,
            Some(&self.shared.config.snapshot_key),
        ) {
            Ok(snapshot) => return Some(snapshot.state),
            Err(e) => e.to_string(),
        };
        metrics::counter!("confab_snapshot_checksum_failures_total").increment(1);
        warn!(uid = %self.uid, reason = %refused, "snapshot refused; rebuilding from events");
        None
    }

    fn moved(&self) -> TurnError {
        TurnError::Unavailable(format!(
            "this node no longer owns the session ({}); nothing was recorded: retry with the same id",
            self.fenced.as_deref().unwrap_or("fenced")
        ))
    }

    /// After a committed turn: a snapshot now if enough events piled up since the
    /// last one, else a timer for `snapshot_every` if none is pending.
    async fn snapshot_on_schedule(&mut self, myself: &ActorRef<SessionMsg>) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let policy = SnapshotPolicy {
            every_events: self.shared.config.snapshot_every_events,
            every_ms: u64::try_from(self.shared.config.snapshot_every.as_millis())
                .unwrap_or(u64::MAX),
        };
        match policy.after_commit(session.seq(), self.snapshot_seq, self.snapshot_timer) {
            SnapshotDue::Now => self.offer_snapshot(),
            SnapshotDue::After(ms) => {
                self.snapshot_timer = true;
                // Jittered, so that sessions started together do not all
                // snapshot in the same second.
                let due = confab_store::jittered(std::time::Duration::from_millis(ms));
                myself.send_after(due, || SessionMsg::SnapshotDue);
            }
            SnapshotDue::Nothing => {}
        }
    }

    /// Hands a snapshot to the batch writer if the state changed since the last
    /// one; if its queue is full, the next turn or timer tries again.
    fn offer_snapshot(&mut self) {
        let previous = self.snapshot_seq;
        if let Some(snapshot) = self.snapshot_if_changed()
            && !self
                .shared
                .snapshotter
                .offer(snapshot, Arc::clone(&self.stored_seq))
        {
            self.snapshot_seq = previous;
        }
    }

    /// On passivation: writes a snapshot if the state is past the last one
    /// stored. A failure is logged: the events are durable, a snapshot only saves
    /// replay time. (A fenced snapshot is dropped by the store without an error.)
    async fn write_final_snapshot(&mut self) {
        let Some(snapshot) = self.final_snapshot() else {
            return;
        };
        match self.shared.store.write_snapshots(&[snapshot]).await {
            Ok(()) => metrics::counter!("confab_snapshot_writes_total").increment(1),
            Err(e) => warn!(uid = %self.uid, error = %e, "snapshot not written"),
        }
    }

    /// Sends the session's state to its new owner and waits for its answer
    /// (bounded by [`crate::handoff::HANDOFF_WAIT`]): whether it was taken. A
    /// refusal or silence only means the new owner loads it from the durable tier.
    async fn send_state(&mut self, to: &confab_core::NodeId, epoch: confab_core::Epoch) -> bool {
        let Some(outbox) = self.shared.cluster.handoff_outbox.get().cloned() else {
            return false;
        };
        let snapshot = self
            .take_snapshot()
            .map(|s| crate::handoff::encode(&s.bytes));
        let handoff = crate::wire::HandoffState {
            uid: self.uid.clone(),
            epoch,
            snapshot,
        };
        let (done, taken) = tokio::sync::oneshot::channel();
        // A full outbox is a refusal: the new owner loads from the durable tier.
        let taken = outbox.try_send((to.clone(), handoff, done)).is_ok()
            && matches!(
                tokio::time::timeout(crate::handoff::HANDOFF_WAIT, taken).await,
                Ok(Ok(true))
            );
        if taken {
            // From this node's adoption of the ring to the new owner holding the state.
            let since = *self
                .shared
                .cluster
                .ring_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let reason = self.shared.drain.move_reason();
            metrics::histogram!("confab_migration_seconds", "reason" => reason)
                .record(since.elapsed().as_secs_f64());
        } else {
            warn!(uid = %self.uid, to = %to, "the new owner did not take the state; it loads the session from the durable tier");
        }
        taken
    }

    /// A snapshot if the state is past the last one taken.
    fn snapshot_if_changed(&mut self) -> Option<StoredSnapshot> {
        let session = self.session.as_ref()?;
        if session.seq() <= self.snapshot_seq {
            return None;
        }
        self.take_snapshot()
    }

    /// A snapshot if the state is past the last one stored: one handed to the
    /// writer may still be queued, or may have failed.
    fn final_snapshot(&mut self) -> Option<StoredSnapshot> {
        let session = self.session.as_ref()?;
        if session.seq().0 <= self.stored_seq.load(Ordering::Acquire) {
            return None;
        }
        self.take_snapshot()
    }

    fn take_snapshot(&mut self) -> Option<StoredSnapshot> {
        let session = self.session.as_ref()?;
        // Never empty: the key manager starts the node with version 1 at least.
        let ring = self.shared.config.ring.get();
        let key = ring.current().ok()?;
        let at_ms = now_ms();
        // Borrowed: the state is encoded where it lies, not copied first.
        let snapshot = SnapshotRef::new(&self.uid, at_ms, self.epoch, session);
        let bytes = snapshot.seal(key, crate::sealed::random_nonce());
        self.snapshot_seq = session.seq();
        Some(StoredSnapshot {
            uid: self.uid.clone(),
            seq: self.snapshot_seq,
            at_ms,
            epoch: self.epoch,
            bytes,
        })
    }
}
