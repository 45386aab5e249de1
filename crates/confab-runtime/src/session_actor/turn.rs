//! A session's turns: dedupe, filter, external stages, policy, actions, commit.
//!
//! The order is the durability argument:
//! 1. a turn that calls no action is three events committed at once;
//! 2. an action turn commits `received, understood, action_requested` **before**
//!    the action runs, so a crash after the action started always leaves the
//!    request in the log, with the key the next attempt reuses;
//! 3. the action's outcome and the reply are committed together, so the
//!    action is never run again once its success is recorded;
//! 4. an action that fails past its retries is put in the dead-letter queue
//!    **before** its failure is recorded (the queue is keyed by the action's
//!    key: putting it twice leaves one entry), so no failure is ever lost.
//!
//! Memory changes only after a commit; a failed commit drops the state, and the
//! next message reloads it from the log.

use super::{Failure, SessionActorState, unavailable};
use crate::committer::CommitError;
use crate::stages::{StageInput, StagePoint};
use crate::{Reply, SessionAnswer, SessionAsk, SessionInfo, TurnError, TurnOutcome, now_ms};
use confab_core::session::{ActionOutcome, Duplicate, Event, RecordedEvent, ReplyDecision};
use confab_core::{MessageId, Seq};
use confab_dialog::actions::idempotency_key;
use confab_dialog::{Decision, TurnContext};
use confab_store::{DeadLetter, StoreError};
use std::sync::Arc;
use tracing::warn;

/// Log events read per page when a replay looks for an earlier success.
const REPLAY_SCAN_PAGE: usize = 512;

impl SessionActorState {
    pub(super) async fn turn(
        &mut self,
        message_id: MessageId,
        text: String,
    ) -> Result<TurnOutcome, Failure> {
        let uid = self.uid.clone();
        let shared = Arc::clone(&self.shared);
        self.ready().await?;
        if let Some(done) = self.duplicate(&message_id).await? {
            return Ok(done);
        }
        let chosen = shared.dialog.choose(uid.as_str(), None);
        let now = now_ms();
        let filtered = match chosen.pipeline.filter().filter(&text) {
            Ok(filtered) => filtered,
            Err(rejection) => {
                self.audit_rejection(message_id, &rejection.reason, &text, now)
                    .await;
                return Err(Failure::Turn(TurnError::Rejected(rejection.reason)));
            }
        };
        let stage_input = StageInput {
            uid: uid.as_str(),
            text: &filtered,
            intent: None,
            slots: None,
        };
        let staged = shared
            .stages
            .run(StagePoint::BeforeNlu, stage_input)
            .await
            .map_err(stage_failed)?;
        // What a stage returned passes the filter too, unless it is unchanged.
        let text = if staged == filtered {
            staged
        } else {
            match chosen.pipeline.filter().filter(&staged) {
                Ok(text) => text,
                Err(rejection) => {
                    self.audit_rejection(message_id, &rejection.reason, &staged, now)
                        .await;
                    return Err(Failure::Turn(TurnError::Rejected(rejection.reason)));
                }
            }
        };
        let session = self.session.as_ref().ok_or_else(not_loaded)?;
        let ctx = TurnContext {
            state: session,
            now_ms: now,
        };
        let policy = chosen.pipeline.policy();
        let understanding = policy.understand(ctx, &text);
        match policy.decide(ctx, &text, &understanding) {
            Decision::Reply(mut decision) => {
                let mut slots = session.slots().clone();
                slots.extend(decision.slots_filled.clone());
                decision.reply_text = self
                    .after_reply(&decision.reply_text, &decision.intent, &slots)
                    .await?;
                let session = self.session.as_ref().ok_or_else(not_loaded)?;
                let events = session.record_turn(&uid, self.epoch, now, message_id, text, decision);
                self.commit(events.to_vec()).await?;
                let sensitive = shared.dialog.sensitive();
                let reply = Reply::from_event(&events[2], &sensitive)
                    .expect("the third event is the reply");
                Ok(TurnOutcome {
                    ack_seq: events[0].seq,
                    reply,
                    duplicate: false,
                })
            }
            Decision::Action(action) => {
                let events =
                    session.record_action_turn(&uid, self.epoch, now, message_id, text, action);
                self.commit(events.to_vec()).await?;
                // From here the turn is recorded (and its action may have run):
                // a failure is `internal`, never `unavailable` ("not recorded").
                let reply = self.finish_pending().await.map_err(outcome_unknown)?;
                Ok(TurnOutcome {
                    ack_seq: events[0].seq,
                    reply: Reply::from_event(&reply, &shared.dialog.sensitive())
                        .expect("finish_pending gives the reply"),
                    duplicate: false,
                })
            }
        }
    }

    /// The original outcome of a message id seen before, if it was.
    async fn duplicate(&self, message_id: &MessageId) -> Result<Option<TurnOutcome>, Failure> {
        let uid = &self.uid;
        let session = self.session.as_ref().ok_or_else(not_loaded)?;
        match session.duplicate(message_id) {
            Some(Duplicate::Recent(turn)) => Ok(Some(TurnOutcome {
                ack_seq: turn.turn_seq,
                reply: Reply {
                    message_id: turn.message_id.clone(),
                    seq: turn.reply_seq,
                    text: turn.reply_text.clone(),
                    intent: turn.intent.clone(),
                    slots: self.shared.dialog.masked(&turn.slots),
                    policy: turn.policy.clone(),
                },
                duplicate: true,
            })),
            Some(Duplicate::Logged(processed)) => {
                let page = self
                    .shared
                    .store
                    .events_after(uid, Seq(processed.reply_seq.0 - 1), 1)
                    .await
                    .map_err(|e| unavailable(&e))?;
                let sensitive = self.shared.dialog.sensitive();
                let reply = page
                    .first()
                    .and_then(|e| Reply::from_event(e, &sensitive))
                    .ok_or_else(|| {
                        Failure::Turn(TurnError::Internal(format!(
                            "reply event {} of {uid} is missing from the log",
                            processed.reply_seq
                        )))
                    })?;
                Ok(Some(TurnOutcome {
                    ack_seq: processed.turn_seq,
                    reply,
                    duplicate: true,
                }))
            }
            None => Ok(None),
        }
    }

    /// Runs the pending action under its key, dead-letters it if it fails past
    /// its retries, and commits its outcome with the reply; returns the reply.
    pub(super) async fn finish_pending(&mut self) -> Result<RecordedEvent, Failure> {
        let uid = self.uid.clone();
        let shared = Arc::clone(&self.shared);
        let session = self.session.as_ref().ok_or_else(not_loaded)?;
        let pending = session
            .pending_action()
            .cloned()
            .ok_or_else(|| Failure::Turn(TurnError::Internal("no action is pending".into())))?;
        let chosen = shared.dialog.choose(uid.as_str(), Some(&pending.policy));
        let (outcome, _) = self
            .run_action(&chosen, &pending.action, &pending.args, pending.requested)
            .await;
        let now = now_ms();
        if let ActionOutcome::Failed { reason, attempts } = &outcome {
            let entry = DeadLetter {
                id: 0,
                uid: uid.clone(),
                seq: pending.requested,
                action: pending.action.clone(),
                args: pending.args.clone(),
                reason: reason.clone(),
                attempts: *attempts,
                created_ms: now,
            };
            shared
                .store
                .dead_letter(&entry)
                .await
                .map_err(|e| unavailable(&e))?;
            metrics::counter!("confab_dlq_entries_total").increment(1);
            crate::publish_dlq_depth(shared.store.as_ref()).await;
        }
        let session = self.session.as_ref().ok_or_else(not_loaded)?;
        let mut decision: ReplyDecision = chosen.pipeline.policy().resume(
            TurnContext {
                state: session,
                now_ms: now,
            },
            &pending,
            &outcome,
        );
        let slots = session.slots().clone();
        // The action has run: a failing reply stage must not keep its turn open
        // (every retry would run the action again). The plain reply goes out.
        match self
            .after_reply(&decision.reply_text, &decision.intent, &slots)
            .await
        {
            Ok(text) => decision.reply_text = text,
            Err(_) => {
                warn!(uid = %uid, "reply stage failed after an action; the plain reply is sent")
            }
        }
        let session = self.session.as_ref().ok_or_else(not_loaded)?;
        let done = session
            .record_action_outcome(&uid, self.epoch, now, outcome)
            .ok_or_else(not_loaded)?;
        let reply = session
            .record_reply(&uid, self.epoch, now, done.seq, decision)
            .ok_or_else(not_loaded)?;
        self.commit(vec![done, reply.clone()]).await?;
        Ok(reply)
    }

    /// Runs an action of this session under its key (the uid and the seq of
    /// its request); returns the outcome and the key.
    async fn run_action(
        &self,
        chosen: &crate::dialog::Chosen,
        action: &str,
        args: &confab_core::session::Slots,
        requested: Seq,
    ) -> (ActionOutcome, String) {
        let uid = self.uid.as_str();
        let key = idempotency_key(uid, requested.0);
        let outcome = self
            .shared
            .actions
            .run(chosen.actions.get(action), action, &key, uid, args)
            .await;
        (outcome, key)
    }

    /// Commits events and applies them to memory; on failure the state is
    /// dropped (the log is the truth) unless the commit was never tried.
    async fn commit(&mut self, events: Vec<RecordedEvent>) -> Result<(), Failure> {
        let uid = self.uid.clone();
        if let Err(e) = self.shared.committer.commit(events.clone()).await {
            if matches!(e, CommitError::Overloaded { .. }) {
                tracing::debug!(uid = %uid, error = %e, "commit not tried");
            } else {
                self.session = None;
                warn!(uid = %uid, error = %e, "commit failed; session will reload");
            }
            return Err(match e {
                CommitError::Store(StoreError::Conflict { .. }) => Failure::Turn(TurnError::Internal(
                    "the session was changed elsewhere; it has been reloaded: retry with the same id"
                        .into(),
                )),
                CommitError::Store(e) => unavailable(&e),
                CommitError::Overloaded { .. } => Failure::Turn(TurnError::Overloaded(format!(
                    "{e}; nothing was recorded: retry with the same id after a backoff"
                ))),
            });
        }
        let session = self.session.as_mut().ok_or_else(not_loaded)?;
        for event in &events {
            if let Err(e) = session.apply(event) {
                // Committed but not applicable to memory: the log is the truth.
                crate::invariant::violated(
                    crate::invariant::LOG_APPLIES,
                    &format!("{uid}: a committed event does not apply: {e}"),
                );
                self.session = None;
                return Err(Failure::Turn(TurnError::Internal(
                    "the session's memory disagreed with its log; it reloads: retry with the same id".into(),
                )));
            }
        }
        Ok(())
    }

    /// Records a refused text for audit. A failure to record is logged: the
    /// refusal itself stands either way.
    async fn audit_rejection(&mut self, message_id: MessageId, reason: &str, text: &str, now: u64) {
        metrics::counter!("confab_inputs_rejected_total").increment(1);
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let Some(event) = session.record_rejection(
            &self.uid,
            self.epoch,
            now,
            message_id,
            reason.to_owned(),
            text,
        ) else {
            return;
        };
        if self.commit(vec![event]).await.is_err() {
            warn!(uid = %self.uid, reason, "refused input not recorded for audit");
        }
    }

    async fn after_reply(
        &self,
        text: &str,
        intent: &str,
        slots: &confab_core::session::Slots,
    ) -> Result<String, Failure> {
        let masked_slots = self.shared.dialog.masked(slots);
        let input = StageInput {
            uid: self.uid.as_str(),
            text,
            intent: Some(intent),
            slots: Some(&masked_slots),
        };
        self.shared
            .stages
            .run(StagePoint::AfterReply, input)
            .await
            .map_err(stage_failed)
    }

    /// Answers a request that is not a turn.
    pub(super) async fn request(&mut self, ask: SessionAsk) -> Result<SessionAnswer, Failure> {
        let node = self.shared.config.node_id.clone();
        match ask {
            SessionAsk::Hello => {
                let session = self.ready().await?;
                Ok(SessionAnswer::Hello(SessionInfo {
                    last_seq: session.seq(),
                    node,
                }))
            }
            SessionAsk::Show => {
                self.ready().await?;
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
        let (outcome, key) = self
            .run_action(&chosen, &entry.action, &entry.args, entry.seq)
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
                self.commit(vec![event]).await?;
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

/// A failure after the turn's first events were committed.
fn outcome_unknown(failure: Failure) -> Failure {
    match failure {
        Failure::Turn(e) => Failure::Turn(TurnError::Internal(format!(
            "the turn is recorded but its action is not finished ({e}): retry with the same id"
        ))),
        fenced => fenced,
    }
}

fn stage_failed(reason: String) -> Failure {
    Failure::Turn(TurnError::Unavailable(format!(
        "{reason}; nothing was recorded: retry with the same id"
    )))
}
