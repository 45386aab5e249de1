//! [`Runtime`], the node's handle: it starts the actors, bounds the turns in
//! flight and turns every outcome into a metric.

use crate::actions::ActionRunner;
use crate::dialog::Dialog;
use crate::stages::Stages;
use crate::{
    EVENTS_PAGE_MAX, Reply, RuntimeConfig, SessionAnswer, SessionAsk, SessionInfo, SessionRequest,
    Shared, TurnError, TurnOutcome, TurnRequest, handoff, publish_dlq_depth, wire,
};
use confab_core::{Epoch, MessageId, NodeId, Seq, Uid};
use confab_store::{DeadLetter, Store};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::committer::{CommitSettings, Committer};
use crate::messages::SupervisorMsg;
use crate::router::{Router, RouterMsg};
use crate::shared::ClusterView;
use crate::snapshotter::Snapshotter;
use crate::supervisor::{SessionSupervisor, SupervisorArgs};

/// How often `confab_dlq_depth` is read again from the store.
const DLQ_DEPTH_EVERY: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the store's ping before it calls the store
/// unreachable.
const READY_PING_MAX: Duration = Duration::from_secs(1);

/// A dead-letter replay may take this many turn timeouts: the action runs
/// with all its retries.
const REPLAY_TIMEOUT_TURNS: u32 = 10;

fn unexpected(answer: &SessionAnswer) -> TurnError {
    TurnError::Internal(format!("the session answered another request: {answer:?}"))
}

/// The node's runtime, as the gateway holds it. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    router: Router,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    inflight: Arc<Semaphore>,
    pub(crate) shared: Arc<Shared>,
}

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An actor failed to spawn.
    #[error("cannot spawn {actor}: {reason}")]
    Spawn {
        /// Which actor.
        actor: &'static str,
        /// Why.
        reason: String,
    },
}

impl Runtime {
    /// Starts the node's actors and the committer on the current tokio runtime.
    pub async fn start(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        dialog: Dialog,
    ) -> Result<Self, StartError> {
        let sensitive_from = dialog.clone();
        let store: Arc<dyn Store> = Arc::new(crate::sealed::SealedStore::new(
            store,
            config.ring.clone(),
            Arc::new(move || crate::sealed::SensitiveSlots::new(sensitive_from.sensitive())),
        ));
        let committer = Committer::start(
            Arc::clone(&store),
            CommitSettings {
                batch_events_max: config.batch_events_max,
                batch_delay_max: config.batch_delay_max,
                queue_max: config.inflight_turns_max,
                concurrency: config.commit_concurrency,
                retries: config.commit_retries,
                wait_max: config.commit_wait_max,
                // A tenth of the turn's time is left for the session to answer.
                give_up_after: config.turn_timeout.mul_f64(0.9),
            },
        );
        let snapshotter = Snapshotter::start(Arc::clone(&store), config.resident_sessions_max);
        // The split in force before the first turn, not one poll later.
        dialog.poll(store.as_ref()).await;
        dialog.spawn_polling(Arc::clone(&store));
        let shared = Arc::new(Shared {
            snapshotter,
            actions: ActionRunner::new(config.actions.clone()),
            stages: Stages::from_config(&config.stages),
            cluster: ClusterView::new(confab_core::ring::Ring::new(
                config.epoch,
                [config.node_id.clone()],
            )),
            drain: Default::default(),
            stats: crate::stats::StatsCell::new(config.stats_names_max),
            config,
            store,
            committer,
            dialog,
        });
        let _ = shared.cluster.handoff_outbox.set(handoff::start_outbox(
            &shared,
            shared.config.resident_sessions_max,
        ));
        publish_dlq_depth(shared.store.as_ref()).await;
        // Other nodes on the store change the queue too: refresh the gauge.
        {
            let store = Arc::clone(&shared.store);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(DLQ_DEPTH_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    publish_dlq_depth(store.as_ref()).await;
                }
            });
        }
        let residents = Arc::new(crate::residents::Residents::new(handoff::config_of(
            &shared.config,
        )));
        let (supervisor, _) = Actor::spawn(
            None,
            SessionSupervisor,
            SupervisorArgs {
                shared: Arc::clone(&shared),
                residents: Arc::clone(&residents),
            },
        )
        .await
        .map_err(|e| StartError::Spawn {
            actor: "session supervisor",
            reason: e.to_string(),
        })?;
        let router = Router::new(Arc::clone(&shared), supervisor.clone(), residents);
        metrics::gauge!("confab_ring_epoch").set(shared.ring().epoch().0 as f64);
        crate::reencrypt::start(Arc::clone(&shared), shared.config.reencrypt_per_s);
        Ok(Self {
            router,
            supervisor,
            inflight: Arc::new(Semaphore::new(shared.config.inflight_turns_max)),
            shared,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.config.node_id
    }

    /// One user turn: recorded durably, then answered. A message id seen before
    /// gets the original outcome again and records nothing.
    pub async fn turn(
        &self,
        uid: Uid,
        message_id: MessageId,
        text: String,
    ) -> Result<TurnOutcome, TurnError> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "turn",
            uid = %uid,
            message_id = %message_id,
            node = %self.node_id(),
            epoch = self.ring().epoch().0,
            seq = tracing::field::Empty,
            policy = tracing::field::Empty,
            intent = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let result = self
            .turn_inner(uid, message_id, text, None, self.shared.config.turn_timeout)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(done) if done.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        span.record("outcome", outcome);
        self.shared
            .cluster
            .turns_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(done) = &result {
            span.record("seq", done.ack_seq.0);
            span.record("policy", done.reply.policy.as_str());
            span.record("intent", done.reply.intent.as_str());
        }
        metrics::counter!("confab_turns_total", "outcome" => outcome).increment(1);
        metrics::histogram!("confab_turn_latency_seconds").record(started.elapsed().as_secs_f64());
        if let Ok(done) = &result
            && !done.duplicate
        {
            metrics::counter!(
                "confab_intents_total",
                "intent" => done.reply.intent.clone(),
                "policy" => done.reply.policy.clone()
            )
            .increment(1);
        }
        result
    }

    async fn turn_inner(
        &self,
        uid: Uid,
        message_id: MessageId,
        text: String,
        forwarded: Option<(Epoch, u8)>,
        budget: Duration,
    ) -> Result<TurnOutcome, TurnError> {
        let permit = self.inflight_permit()?;
        let now = Instant::now();
        // A timeout too large for the clock is as good as none.
        let deadline = now
            .checked_add(budget)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let result = self
            .ask_within(budget, |reply| {
                RouterMsg::Turn(TurnRequest {
                    uid,
                    message_id,
                    text,
                    reply,
                    permit,
                    forwarded,
                    span: tracing::Span::current(),
                    deadline,
                })
            })
            .await;
        self.record_depth();
        result?
    }

    /// One of the node's in-flight slots, or `overloaded`.
    fn inflight_permit(&self) -> Result<OwnedSemaphorePermit, TurnError> {
        let permit = Arc::clone(&self.inflight)
            .try_acquire_owned()
            .map_err(|_| {
                TurnError::Overloaded(format!(
                    "node has {} requests in flight, its limit: retry with backoff",
                    self.shared.config.inflight_turns_max
                ))
            })?;
        self.record_depth();
        Ok(permit)
    }

    fn record_depth(&self) {
        let depth = self.shared.config.inflight_turns_max - self.inflight.available_permits();
        metrics::gauge!("confab_mailbox_depth").set(depth as f64);
    }

    /// Activates the session and tells where it stands.
    pub async fn hello(&self, uid: Uid) -> Result<SessionInfo, TurnError> {
        match self.request(uid, SessionAsk::Hello).await? {
            SessionAnswer::Hello(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The session as ops may see it (sensitive slots masked).
    pub async fn show(&self, uid: Uid) -> Result<confab_proto::admin::SessionView, TurnError> {
        match self.request(uid, SessionAsk::Show).await? {
            SessionAnswer::Show(view) => Ok(view),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a dead-lettered action again, through its session (which records
    /// the success and takes the entry out of the queue).
    pub async fn replay(&self, entry: DeadLetter) -> Result<(bool, String), TurnError> {
        let uid = entry.uid.clone();
        match self.request(uid, SessionAsk::Replay(entry)).await? {
            SessionAnswer::Replayed { ok, message } => Ok((ok, message)),
            other => Err(unexpected(&other)),
        }
    }

    async fn request(&self, uid: Uid, ask: SessionAsk) -> Result<SessionAnswer, TurnError> {
        self.request_routed(uid, ask, None).await
    }

    /// A turn another node routed here (the peer actor's entry).
    pub(crate) async fn turn_routed(
        &self,
        uid: Uid,
        message_id: MessageId,
        text: String,
        forwarded: (Epoch, u8),
        budget_ms: u64,
        trace: &crate::trace_context::TraceContext,
    ) -> Result<TurnOutcome, TurnError> {
        // The caller's remaining wait, never more than this node's own.
        let own = self.shared.config.turn_timeout;
        let budget = match budget_ms {
            0 => own,
            ms => Duration::from_millis(ms).min(own),
        };
        let span = tracing::info_span!(
            "owner turn",
            uid = %uid,
            message_id = %message_id,
            node = %self.node_id(),
            epoch = forwarded.0.0,
            hops = forwarded.1,
        );
        trace.continue_in(&span);
        self.turn_inner(uid, message_id, text, Some(forwarded), budget)
            .instrument(span)
            .await
    }

    /// A request another node routed here, or a local one (`None`).
    pub(crate) async fn request_routed(
        &self,
        uid: Uid,
        ask: SessionAsk,
        forwarded: Option<(Epoch, u8)>,
    ) -> Result<SessionAnswer, TurnError> {
        let permit = self.inflight_permit()?;
        let timeout = match ask {
            SessionAsk::Replay(_) => self.shared.config.turn_timeout * REPLAY_TIMEOUT_TURNS,
            _ => self.shared.config.turn_timeout,
        };
        self.ask_within(timeout, |reply| {
            RouterMsg::Request(SessionRequest {
                uid,
                ask,
                reply,
                permit,
                forwarded,
            })
        })
        .await?
    }

    /// The node's dialog: policy versions, reload, canary.
    pub fn dialog(&self) -> &Dialog {
        &self.shared.dialog
    }

    /// The node's store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The ring epoch the node routes at.
    pub fn epoch(&self) -> Epoch {
        self.shared.ring().epoch()
    }

    /// The ring the node routes by.
    pub fn ring(&self) -> Arc<confab_core::ring::Ring> {
        self.shared.ring()
    }

    /// The member table as this node last saw it (`None` without a cluster).
    pub fn members(&self) -> Option<confab_core::membership::MemberTable> {
        self.shared.cluster.members()
    }

    /// Asks membership to take `node` out of the member table. Only a member
    /// declared down can be removed (a live one is drained instead); the
    /// removal is proposed at once and lands once the table's compare-and-set
    /// does (read the table to follow it).
    pub fn remove_member(&self, node: &NodeId) -> Result<(), String> {
        use confab_core::membership::{Input, Status};
        let Some(table) = self.members() else {
            return Err("this node runs without a cluster".into());
        };
        let me = self.node_id();
        let isolated = self
            .shared
            .cluster
            .isolated
            .load(std::sync::atomic::Ordering::Relaxed);
        if table.members.get(me) != Some(&Status::Up) || isolated {
            return Err(format!(
                "{me} cannot decide a removal now (it is not up, or cut off from the majority): ask another node"
            ));
        }
        match table.members.get(node) {
            None => return Err(format!("{node} is not a member of the cluster")),
            Some(Status::Down) => {}
            Some(status) => {
                return Err(format!(
                    "{node} is {}, not down: only a member declared down can be removed (drain a live one: `confabctl nodes drain {node}`)",
                    format!("{status:?}").to_lowercase()
                ));
            }
        }
        let membership = self
            .shared
            .cluster
            .membership
            .get()
            .ok_or("membership is not running on this node")?;
        membership
            .try_send(Input::Remove(node.clone()))
            .map_err(|e| format!("membership is busy, try again: {e}"))
    }

    pub(crate) fn set_membership_input(
        &self,
        tx: tokio::sync::mpsc::Sender<confab_core::membership::Input>,
    ) {
        let _ = self.shared.cluster.membership.set(tx);
    }

    pub(crate) fn set_members(&self, table: Option<confab_core::membership::MemberTable>) {
        *self
            .shared
            .cluster
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner()) = table;
    }

    pub(crate) fn set_peers(
        &self,
        peers: std::collections::BTreeMap<NodeId, ActorRef<wire::PeerMsg>>,
    ) {
        *self
            .shared
            .cluster
            .peers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = peers;
    }

    pub(crate) fn peer(&self, node: &NodeId) -> Option<ActorRef<wire::PeerMsg>> {
        self.shared.peer(node)
    }

    /// Whether this node has a live link to `node`'s peer actor.
    pub fn is_connected(&self, node: &NodeId) -> bool {
        self.shared.peer(node).is_some()
    }

    /// This node's load now.
    pub fn load(&self) -> crate::wire::MemberLoad {
        let permits_max = self.shared.config.inflight_turns_max;
        crate::wire::MemberLoad {
            sessions_resident: self
                .shared
                .cluster
                .resident
                .load(std::sync::atomic::Ordering::Relaxed),
            inflight_turns: permits_max.saturating_sub(self.inflight.available_permits()) as u64,
            turns_total: self
                .shared
                .cluster
                .turns_total
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A member's load: this node's own now, another's as its last heartbeat
    /// gave it (`None` before the first).
    pub fn member_load(&self, node: &NodeId) -> Option<crate::wire::MemberLoad> {
        if node == self.node_id() {
            return Some(self.load());
        }
        self.shared
            .cluster
            .loads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied()
    }

    pub(crate) fn record_load(&self, node: &NodeId, load: crate::wire::MemberLoad) {
        self.shared
            .cluster
            .loads
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), load);
    }

    /// Adopts a new ring (membership changed): turns are routed by it from now
    /// on, and sessions this node no longer owns are handed to their new
    /// owners ([`crate::handoff`]).
    pub async fn set_ring(&self, ring: confab_core::ring::Ring) {
        metrics::gauge!("confab_ring_epoch").set(ring.epoch().0 as f64);
        metrics::gauge!("confab_ring_members").set(ring.members().count() as f64);
        let ring = Arc::new(ring);
        let epoch = ring.epoch();
        let asked = std::time::Instant::now();
        let _ = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Announce {
                    ring: Arc::clone(&ring),
                    reply,
                },
                Some(handoff::HANDOFF_WAIT),
            )
            .await;
        *self
            .shared
            .cluster
            .ring
            .write()
            .unwrap_or_else(|e| e.into_inner()) = ring;
        *self
            .shared
            .cluster
            .ring_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        tracing::info!(epoch = %epoch, announced_after_ms = asked.elapsed().as_millis() as u64, "routing by the new ring");
        let _ = self.supervisor.cast(SupervisorMsg::RingChanged);
    }

    /// Every reply of `uid` with a seq above `after`, up to `limit`, in seq order,
    /// read from the durable tier (every reply sent was committed first).
    pub async fn replies_after(
        &self,
        uid: &Uid,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Reply>, TurnError> {
        let mut replies = Vec::new();
        let mut cursor = after;
        while replies.len() < limit {
            let page = self
                .shared
                .store
                .events_after(uid, cursor, EVENTS_PAGE_MAX)
                .await
                .map_err(|e| TurnError::Unavailable(e.to_string()))?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            let sensitive = self.shared.dialog.sensitive();
            replies.extend(page.iter().filter_map(|e| Reply::from_event(e, &sensitive)));
            if page.len() < EVENTS_PAGE_MAX {
                break;
            }
        }
        replies.truncate(limit);
        Ok(replies)
    }

    /// Whether the node can serve (`/readyz`): it is on the ring, linked to its other
    /// members and not cut off from their majority, its actors and committer
    /// run and its durable tier answers.
    pub async fn ready(&self) -> bool {
        let running = |status| status == ractor::ActorStatus::Running;
        // On the ring, and linked to every other member of it: a turn for any
        // uid can be served or forwarded.
        let ring = self.ring();
        let me = self.node_id();
        let in_ring = ring.members().any(|m| m == me);
        let linked = ring.members().all(|m| m == me || self.is_connected(m));
        in_ring
            && linked
            && !self.shared.is_isolated()
            && running(self.supervisor.get_status())
            && self.shared.committer.is_running()
            // Bounded: a store that does not answer (a locked file, a MySQL
            // that stalls) is an unreachable one, and the probe answers.
            && tokio::time::timeout(READY_PING_MAX, self.shared.store.ping())
                .await
                .is_ok_and(|ping| ping.is_ok())
    }

    /// Sessions resident in memory.
    pub async fn resident(&self) -> usize {
        self.supervisor
            .call(|reply| SupervisorMsg::Resident { reply }, None)
            .await
            .ok()
            .and_then(|r| match r {
                CallResult::Success(n) => Some(n),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Session actors alive on the node: the resident ones and those still
    /// writing their final snapshot after a passivation or a move.
    /// `None` if the supervisor does not answer within the turn timeout.
    pub async fn session_actors(&self) -> Option<usize> {
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::Actors { reply },
                Some(self.shared.config.turn_timeout),
            )
            .await
        {
            Ok(CallResult::Success(n)) => Some(n),
            _ => None,
        }
    }

    /// Snapshots every resident session and stops the actors; returns how many
    /// sessions were snapshotted. Turns arriving afterwards get `unavailable`.
    pub async fn shutdown(&self) -> Result<usize, TurnError> {
        let written = match self
            .supervisor
            .call(|reply| SupervisorMsg::Shutdown { reply }, None)
            .await
        {
            Ok(CallResult::Success(written)) => written,
            Ok(_) | Err(_) => {
                return Err(TurnError::Internal(
                    "session supervisor is gone; snapshots were not written".into(),
                ));
            }
        }?;
        self.supervisor.stop(None);
        // A clean stop gives the id back: the node may start again at once,
        // at another address too.
        if let Some(held) = self.shared.cluster.id_lease.get() {
            crate::identity::release(self.store().as_ref(), self.node_id(), held).await;
        }
        Ok(written)
    }

    async fn ask_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, TurnError>>) -> RouterMsg,
    ) -> Result<Result<T, TurnError>, TurnError> {
        let (reply, answer) = ractor::concurrency::oneshot();
        self.router.route(build((reply, timeout).into()));
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => Ok(result),
            Err(_elapsed) => Err(TurnError::Internal(format!(
                "no answer within {} ms; the turn may still be recorded: retry with the same id",
                timeout.as_millis()
            ))),
            Ok(Err(_dropped)) => Err(TurnError::Internal(
                "the session failed while handling the turn: retry with the same id".into(),
            )),
        }
    }
}
