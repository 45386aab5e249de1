//! A session's turns, as the turn machine ([`confab_dialog::turn::TurnFlow`])
//! decides them: this file only carries its asks out (a log read, the external
//! stages, a commit through the group committer, an action through the action
//! runner, a dead letter) and feeds the results back. The simulator drives the
//! same machine; the order that makes turns durable is documented there.

use super::{Failure, SessionActorState, unavailable};
use crate::committer::CommitError;
use crate::stages::StageInput;
use crate::{Reply, SessionAnswer, SessionAsk, SessionInfo, TurnError, TurnOutcome, now_ms};
use confab_core::session::{ActionOutcome, Event};
use confab_core::{MessageId, Seq};
use confab_dialog::actions::idempotency_key;
use confab_dialog::turn::{
    Ask, Committed, Replied, TurnFailure, TurnFlow, TurnInput, apply_committed,
};
use confab_store::{DeadLetter, StoreError};
use std::sync::Arc;
use tracing::Instrument;

/// Log events read per page when a replay looks for an earlier success.
const REPLAY_SCAN_PAGE: usize = 512;

impl SessionActorState {
    pub(super) async fn turn(
        &mut self,
        message_id: MessageId,
        text: String,
    ) -> Result<TurnOutcome, Failure> {
        let flow = TurnFlow::turn(self.uid.clone(), self.epoch, message_id, text);
        let replied = self.run_flow(flow).await?.ok_or_else(not_loaded)?;
        let sensitive = self.shared.dialog.sensitive();
        Ok(TurnOutcome {
            ack_seq: replied.ack_seq,
            duplicate: replied.duplicate,
            reply: Reply::masked(replied, &sensitive),
        })
    }

    /// The loaded session, with an action found pending closed first (after
    /// a load, or after a turn whose action could not be closed).
    pub(super) async fn ready(&mut self) -> Result<&confab_core::session::SessionState, Failure> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.pending_action().is_some())
        {
            self.run_flow(TurnFlow::settle(self.uid.clone(), self.epoch))
                .await?;
        }
        self.session.as_ref().ok_or_else(|| {
            Failure::Turn(TurnError::Internal(
                "the session is not loaded: retry".into(),
            ))
        })
    }

    /// The session's memory, for a read (`hello`, `resume`, `session show`):
    /// the pending action closed, and this node's ownership proved at its
    /// epoch by the store's fence, so that no newer owner has written since
    /// (a node whose ring is stale is refused, and the reader retries).
    async fn read(&mut self) -> Result<&confab_core::session::SessionState, Failure> {
        self.run_flow(TurnFlow::read(self.uid.clone(), self.epoch))
            .await?;
        self.session.as_ref().ok_or_else(not_loaded)
    }

    /// Runs a turn flow to its end: its first answer (`None` for a settle
    /// that succeeded).
    async fn run_flow(&mut self, mut flow: TurnFlow) -> Result<Option<Replied>, Failure> {
        let shared = Arc::clone(&self.shared);
        let uid = self.uid.clone();
        let choose = |version: Option<&str>| shared.dialog.choose(uid.as_str(), version).pipeline;
        // The dialog's own work (intent, slots, reply) between the asks.
        let mut step = tracing::info_span!("dialog")
            .in_scope(|| flow.start(now_ms(), &mut self.session, &choose));
        let mut answer = None;
        loop {
            if answer.is_none() {
                answer = step.answer.take();
            }
            let Some(ask) = step.ask.take() else {
                break;
            };
            let span = ask_span(&ask);
            let input = self.carry_out_ask(ask).instrument(span).await;
            step = tracing::info_span!("dialog")
                .in_scope(|| flow.handle(now_ms(), &mut self.session, &choose, input));
        }
        match answer {
            None => Ok(None),
            Some(Ok(replied)) => Ok(Some(replied)),
            Some(Err(failure)) => Err(self.failure(failure)),
        }
    }

    /// Carries out one ask of the turn machine; its result.
    async fn carry_out_ask(&mut self, ask: Ask) -> TurnInput {
        let shared = Arc::clone(&self.shared);
        let uid = self.uid.clone();
        match ask {
            Ask::ReadEvent { seq } => {
                let page = shared
                    .store
                    .events_after(&uid, Seq(seq.0.saturating_sub(1)), 1)
                    .await;
                TurnInput::Event(
                    page.map(|page| page.into_iter().find(|e| e.seq == seq))
                        .map_err(|e| e.to_string()),
                )
            }
            Ask::Stage {
                point,
                text,
                intent,
                slots,
            } => {
                let masked = slots.map(|slots| shared.dialog.masked(&slots));
                let input = StageInput {
                    uid: uid.as_str(),
                    text: &text,
                    intent: intent.as_deref(),
                    slots: masked.as_ref(),
                };
                TurnInput::Staged(shared.stages.run(point, input).await)
            }
            Ask::Commit { events } => TurnInput::Committed(self.commit(events).await),
            Ask::Confirm { epoch } => {
                // Timed on the monotonic clock: a wall clock stepped back
                // would make a late answer look fresh.
                let asked = std::time::Instant::now();
                let result = match shared.store.claim(&uid, epoch).await {
                    Ok(_) => Committed::Ok,
                    Err(e @ StoreError::Fenced { .. }) => Committed::Fenced(e.to_string()),
                    Err(e) => Committed::Failed(e.to_string()),
                };
                let took_ms = u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX);
                TurnInput::Confirmed { result, took_ms }
            }
            Ask::RunAction { pending, key } => {
                let chosen = shared.dialog.choose(uid.as_str(), Some(&pending.policy));
                let spec = chosen.actions.get(&pending.action);
                let outcome = shared
                    .actions
                    .run(spec, &pending.action, &key, uid.as_str(), &pending.args)
                    .await;
                TurnInput::Acted(outcome)
            }
            Ask::DeadLetter {
                pending,
                reason,
                attempts,
            } => {
                let entry = DeadLetter {
                    id: 0,
                    uid: uid.clone(),
                    seq: pending.requested,
                    action: pending.action,
                    args: pending.args,
                    reason,
                    attempts,
                    created_ms: now_ms(),
                };
                let stored = shared.store.dead_letter(&entry).await;
                if stored.is_ok() {
                    metrics::counter!("confab_dlq_entries_total").increment(1);
                    crate::publish_dlq_depth(shared.store.as_ref()).await;
                }
                TurnInput::DeadLettered(stored.map(|_| ()).map_err(|e| e.to_string()))
            }
        }
    }

    /// Commits events through the group committer; how it ended.
    async fn commit(&mut self, events: Vec<confab_core::session::RecordedEvent>) -> Committed {
        // Taken before the events go: counted once the commit is confirmed.
        let counted = confab_core::stats::Counted::of(&events);
        match self.shared.committer.commit(events).await {
            Ok(()) => {
                self.shared.stats.add(&counted);
                Committed::Ok
            }
            Err(e @ CommitError::Overloaded { .. }) => {
                tracing::debug!(uid = %self.uid, error = %e, "commit not tried");
                Committed::NotTried(e.to_string())
            }
            Err(CommitError::Store(StoreError::Conflict { .. })) => {
                tracing::warn!(uid = %self.uid, "commit conflicts with the log; session will reload");
                Committed::Conflict
            }
            Err(CommitError::Store(e @ StoreError::Fenced { .. })) => {
                Committed::Fenced(e.to_string())
            }
            Err(CommitError::Store(e)) => {
                tracing::warn!(uid = %self.uid, error = %e, "commit failed; session will reload");
                Committed::Failed(e.to_string())
            }
        }
    }

    /// The session's failure for what the turn machine answered.
    fn failure(&self, failure: TurnFailure) -> Failure {
        match failure {
            TurnFailure::Rejected(reason) => {
                metrics::counter!("confab_inputs_rejected_total").increment(1);
                Failure::Turn(TurnError::Rejected(reason))
            }
            TurnFailure::NotRecorded(why) => Failure::Turn(TurnError::Unavailable(why)),
            TurnFailure::Overloaded(why) => Failure::Turn(TurnError::Overloaded(why)),
            TurnFailure::Unfinished(why) => Failure::Turn(TurnError::Internal(format!(
                "the turn is recorded but its action is not finished ({why}): retry with the same id"
            ))),
            TurnFailure::Fenced(why) => Failure::Fenced(why),
            TurnFailure::Diverged(why) => {
                crate::invariant::violated(crate::invariant::LOG_APPLIES, &why);
                Failure::Turn(TurnError::Internal(
                    "the session's memory disagreed with its log; it reloads: retry with the same id".into(),
                ))
            }
            TurnFailure::Internal(why) => Failure::Turn(TurnError::Internal(why)),
        }
    }

    /// Commits events made outside a turn (a replayed dead letter's success)
    /// and applies them to memory, as the turn machine does.
    async fn commit_outside_turn(
        &mut self,
        events: Vec<confab_core::session::RecordedEvent>,
    ) -> Result<(), Failure> {
        let committed = self.commit(events.clone()).await;
        apply_committed(&self.uid, &mut self.session, &events, &committed)
            .map_err(|failure| self.failure(failure))
    }

    /// Answers a request that is not a turn.
    pub(super) async fn request(&mut self, ask: SessionAsk) -> Result<SessionAnswer, Failure> {
        let node = self.shared.config.node_id.clone();
        match ask {
            SessionAsk::Hello => {
                let session = self.read().await?;
                Ok(SessionAnswer::Hello(SessionInfo {
                    last_seq: session.seq(),
                    node,
                }))
            }
            SessionAsk::Show => {
                self.read().await?;
                let session = self.session.as_ref().ok_or_else(not_loaded)?;
                let chosen = self.shared.dialog.choose(self.uid.as_str(), None);
                Ok(SessionAnswer::Show(confab_proto::admin::SessionView {
                    uid: self.uid.to_string(),
                    seq: session.seq().0,
                    owner: node.to_string(),
                    epoch: self.epoch.0,
                    slots: self.shared.dialog.masked(session.slots()),
                    last_intent: session.last_intent().map(str::to_owned),
                    policy: chosen.pipeline.policy().version().to_owned(),
                    pending_action: session.pending_action().map(|p| p.action.clone()),
                }))
            }
            SessionAsk::Replay(entry) => self.replay(entry).await,
        }
    }

    /// Runs a dead-lettered action again under its key; on success records it
    /// and takes the entry out of the queue.
    async fn replay(&mut self, entry: DeadLetter) -> Result<SessionAnswer, Failure> {
        let shared = Arc::clone(&self.shared);
        let uid = self.uid.clone();
        self.ready().await?;
        let (requested_policy, succeeded) = self.scan_for_success(&entry).await?;
        if succeeded {
            self.resolve(entry.id).await?;
            return Ok(SessionAnswer::Replayed {
                ok: true,
                message: "its success was already recorded; not run again".into(),
            });
        }
        let chosen = shared
            .dialog
            .choose(uid.as_str(), requested_policy.as_deref());
        let key = idempotency_key(uid.as_str(), entry.seq.0);
        let outcome = shared
            .actions
            .run(
                chosen.actions.get(&entry.action),
                &entry.action,
                &key,
                uid.as_str(),
                &entry.args,
            )
            .await;
        match outcome {
            ActionOutcome::Succeeded(result) => {
                let session = self.session.as_ref().ok_or_else(not_loaded)?;
                let event = session
                    .record_replayed_success(
                        &uid,
                        self.epoch,
                        now_ms(),
                        entry.seq,
                        &entry.action,
                        result,
                    )
                    .ok_or_else(|| {
                        Failure::Turn(TurnError::Internal("a turn is open: retry".into()))
                    })?;
                self.commit_outside_turn(vec![event]).await?;
                self.resolve(entry.id).await?;
                Ok(SessionAnswer::Replayed {
                    ok: true,
                    message: format!("{} succeeded under key {key}", entry.action),
                })
            }
            ActionOutcome::Failed { reason, attempts } => {
                let again = DeadLetter {
                    reason: reason.clone(),
                    attempts: entry.attempts.saturating_add(attempts),
                    ..entry
                };
                shared
                    .store
                    .dead_letter(&again)
                    .await
                    .map_err(|e| unavailable(&e))?;
                Ok(SessionAnswer::Replayed {
                    ok: false,
                    message: format!("failed again after {attempts} attempts: {reason}"),
                })
            }
        }
    }

    /// Takes a dead letter out of the queue (its success is recorded).
    async fn resolve(&self, id: u64) -> Result<(), Failure> {
        let store = &self.shared.store;
        store
            .resolve_dead_letter(id, now_ms())
            .await
            .map_err(|e| unavailable(&e))?;
        crate::publish_dlq_depth(store.as_ref()).await;
        Ok(())
    }

    /// The policy of the entry's `action_requested` event, and whether the
    /// log already records the action's success.
    async fn scan_for_success(
        &self,
        entry: &DeadLetter,
    ) -> Result<(Option<String>, bool), Failure> {
        let store = &self.shared.store;
        let mut cursor = Seq(entry.seq.0.saturating_sub(1));
        let mut policy = None;
        loop {
            let page = store
                .events_after(&self.uid, cursor, REPLAY_SCAN_PAGE)
                .await
                .map_err(|e| unavailable(&e))?;
            for event in &page {
                match &event.event {
                    Event::ActionRequested { policy: p, .. } if event.seq == entry.seq => {
                        policy = Some(p.clone());
                    }
                    Event::ActionSucceeded { requested, .. } if *requested == entry.seq => {
                        return Ok((policy, true));
                    }
                    _ => {}
                }
            }
            match page.last() {
                Some(last) if page.len() == REPLAY_SCAN_PAGE => cursor = last.seq,
                _ => return Ok((policy, false)),
            }
        }
    }
}

fn not_loaded() -> Failure {
    Failure::Turn(TurnError::Internal(
        "the session's state was dropped: retry with the same id".into(),
    ))
}

/// A span for one of the turn machine's asks: what a trace shows of a turn on
/// its owner (the stages, the commit, the action, the fence).
fn ask_span(ask: &Ask) -> tracing::Span {
    match ask {
        Ask::ReadEvent { seq } => tracing::info_span!("read event", seq = seq.0),
        Ask::Stage { point, .. } => tracing::info_span!("stage", point = ?point),
        Ask::Commit { events } => tracing::info_span!("commit", events = events.len()),
        Ask::Confirm { epoch } => tracing::info_span!("confirm ownership", epoch = epoch.0),
        Ask::RunAction { pending, .. } => {
            tracing::info_span!("action", action = %pending.action)
        }
        Ask::DeadLetter { pending, .. } => {
            tracing::info_span!("dead letter", action = %pending.action)
        }
    }
}
