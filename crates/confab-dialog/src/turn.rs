//! One turn of a session as a sans-IO machine: the sequence both shells run.
//!
//! The production session actor and the simulator's world drive this same
//! [`TurnFlow`]: it takes the session's memory, the pipeline and the result of
//! what it asked last, and answers with one [`Step`]: an answer for the client
//! (at most once per flow) and the next thing to do ([`Ask`]), or nothing when
//! the flow is over. The shell carries the ask out (a store read, an external
//! stage, a commit, an action, a dead letter) and feeds the result back.
//!
//! The order is the durability argument:
//! 1. an action found pending in memory (its owner crashed, or its second
//!    commit failed) is run again under its key and its turn closed before
//!    anything else is served;
//! 2. a message id seen before gets its original answer, from the recent window
//!    or read back from the log; nothing is run again;
//! 3. a turn that calls no action is three events committed at once;
//! 4. an action turn commits `received, understood, action_requested` **before**
//!    the action runs, so a crash after the action started leaves the request
//!    in the log with the key the next attempt reuses; and the owner confirms
//!    it still holds the session (a claim at its epoch) just before the
//!    action runs, so a stale owner does not run an action a newer one ran;
//! 5. an action that fails past its retries is dead-lettered **before** its
//!    failure is recorded (the queue is keyed by the action's key);
//! 6. the outcome and the reply are committed together, so an action whose
//!    success is in the log is never run again.
//!
//! Memory changes only after a commit: a commit that failed, or whose outcome
//! is unknown, drops the memory (the shell reloads it from the log), except
//! when it was never tried (an overloaded committer).

use crate::{Decision, Pipeline, TurnContext};
use confab_core::mutation::{self, Mutation};
use confab_core::session::{
    ActionOutcome, Duplicate, Event, PendingAction, RecordedEvent, ReplyDecision, SessionState,
    Slots, TurnRecord, may_acknowledge,
};
use confab_core::{Epoch, MessageId, Seq, Uid};

/// Where an external stage sits in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StagePoint {
    /// After the input filter, before the NLU: its text is what the NLU reads
    /// (filtered again if it changed).
    BeforeNlu,
    /// After the policy: its text is the reply sent and recorded.
    AfterReply,
}

/// What the flow needs done next.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// Read the session's event at `seq` from the log (the reply of a
    /// duplicate older than the recent window).
    ReadEvent {
        /// Its seq.
        seq: Seq,
    },
    /// Run the external stages of `point` over `text`.
    Stage {
        /// Which stages.
        point: StagePoint,
        /// The text they get.
        text: String,
        /// The reply's intent (after the NLU only).
        intent: Option<String>,
        /// The session's slots, unmasked: the shell masks them.
        slots: Option<Slots>,
    },
    /// Commit these events, fenced at their epoch.
    Commit {
        /// The events, numbered after the session's seq.
        events: Vec<RecordedEvent>,
    },
    /// Confirm that the session is still owned at `epoch` before its action
    /// runs: a claim at the same epoch, which the store's fence refuses once
    /// a newer owner has claimed the session (a stale owner would otherwise
    /// run an action that the new owner already ran and recorded).
    Confirm {
        /// The epoch this owner holds the session at.
        epoch: Epoch,
    },
    /// Run an action under its idempotency key.
    RunAction {
        /// The pending action (its `requested` seq and uid are the key).
        pending: PendingAction,
        /// The key: `uid:requested`.
        key: String,
    },
    /// Put an action that failed past its retries in the dead-letter queue.
    DeadLetter {
        /// The pending action.
        pending: PendingAction,
        /// Why it failed the last time.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// How a commit asked for ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Committed.
    Ok,
    /// Never tried (the committer's queue is full): nothing changed.
    NotTried(String),
    /// A newer epoch owns the session: this owner must stop.
    Fenced(String),
    /// A write at one of these seqs is already in the log.
    Conflict,
    /// Failed, or its outcome is unknown.
    Failed(String),
}

/// A result the shell feeds back: the answer to the last [`Ask`].
#[derive(Debug, Clone, PartialEq)]
pub enum TurnInput {
    /// The event read (`None`: not in the log), or why the read failed.
    Event(Result<Option<RecordedEvent>, String>),
    /// What the stages returned, or why they failed.
    Staged(Result<String, String>),
    /// How the commit ended.
    Committed(Committed),
    /// Whether the ownership was confirmed (`Ok`, `Fenced`, or `Failed`), and
    /// how long the answer took from the ask, on a monotonic clock (ms): the
    /// shell measures it, the flow decides whether it still proves anything.
    Confirmed {
        /// The store's answer.
        result: Committed,
        /// From the ask to the answer (ms).
        took_ms: u64,
    },
    /// How the action ended (past its retries).
    Acted(ActionOutcome),
    /// Whether the dead letter was stored.
    DeadLettered(Result<(), String>),
}

/// A reply as the log has it, unmasked: the shell masks it for its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Replied {
    /// Seq of the turn's first event: the seq of its `ack`.
    pub ack_seq: Seq,
    /// Seq of the reply event.
    pub reply_seq: Seq,
    /// The message id answered.
    pub message_id: MessageId,
    /// The reply text.
    pub text: String,
    /// The intent answered.
    pub intent: String,
    /// The policy version that answered.
    pub policy: String,
    /// The session's slots after the turn, unmasked.
    pub slots: Slots,
    /// Whether the message id had been answered before.
    pub duplicate: bool,
}

impl Replied {
    /// The reply a `ReplyProduced` event carries; `None` for other events.
    pub fn from_event(ack_seq: Seq, event: &RecordedEvent, duplicate: bool) -> Option<Self> {
        if !matches!(event.event, Event::ReplyProduced { .. }) {
            return None;
        }
        Self::from_owned_event(ack_seq, event.clone(), duplicate)
    }

    /// [`Replied::from_event`] for an event no longer needed: the reply's
    /// fields move out of it.
    pub fn from_owned_event(ack_seq: Seq, event: RecordedEvent, duplicate: bool) -> Option<Self> {
        match event.event {
            Event::ReplyProduced {
                message_id,
                text,
                policy,
                intent,
                slots,
                ..
            } => Some(Self {
                ack_seq,
                reply_seq: event.seq,
                message_id,
                text,
                intent,
                policy,
                slots,
                duplicate,
            }),
            _ => None,
        }
    }

    fn from_record(turn: &TurnRecord) -> Self {
        Self {
            ack_seq: turn.turn_seq,
            reply_seq: turn.reply_seq,
            message_id: turn.message_id.clone(),
            text: turn.reply_text.clone(),
            intent: turn.intent.clone(),
            policy: turn.policy.clone(),
            slots: turn.slots.clone(),
            duplicate: true,
        }
    }
}

/// Why a turn was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnFailure {
    /// The input filter refused the text (recorded for audit).
    Rejected(String),
    /// Nothing was recorded (a stage or the store failed): retry with the same id.
    NotRecorded(String),
    /// Nothing was tried (the committer is full): retry after a backoff.
    Overloaded(String),
    /// The turn is recorded but its action is not finished: retry with the
    /// same id (the action runs again under its key).
    Unfinished(String),
    /// A newer epoch owns the session.
    Fenced(String),
    /// A committed event did not apply to memory: the memory disagreed with
    /// the log (an invariant broken), and was dropped.
    Diverged(String),
    /// The session's memory was dropped, or the flow was fed out of order.
    Internal(String),
}

/// What the flow answers its client.
pub type TurnAnswer = Result<Replied, TurnFailure>;

/// One step of the flow: what to answer now, and what to do next (`None`:
/// the flow is over). A flow that only settles a session answers nothing when
/// it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The client's answer, given at most once per flow.
    pub answer: Option<TurnAnswer>,
    /// The next thing to do.
    pub ask: Option<Ask>,
}

/// What the flow is for.
#[derive(Debug, Clone, PartialEq)]
enum Goal {
    /// A user turn.
    Turn { message_id: MessageId, text: String },
    /// Only closing the pending action.
    Settle,
    /// A read of the session (`hello`, `resume`, `session show`): the pending
    /// action closed, then this owner proves it still holds the session at
    /// its epoch, so that its memory is the latest: no newer owner has
    /// claimed it, so none has written.
    Read,
}

/// What the flow waits for.
#[derive(Debug, Clone, PartialEq)]
enum Wait {
    Start,
    Event {
        ack_seq: Seq,
    },
    BeforeNlu {
        filtered: String,
    },
    /// The reply stage of a turn that calls no action.
    AfterReply {
        text: String,
        decision: Box<confab_core::session::TurnDecision>,
    },
    /// The audit record of a refused text.
    Audit {
        reason: String,
        event: Box<RecordedEvent>,
    },
    /// The three events of a turn that calls no action.
    Reply {
        events: Vec<RecordedEvent>,
    },
    /// The first three events of an action turn.
    Request {
        events: Vec<RecordedEvent>,
    },
    Confirm {
        pending: PendingAction,
        proof: Proof,
    },
    /// The ownership proof of a read.
    ConfirmRead {
        proof: Proof,
    },
    Action {
        pending: PendingAction,
    },
    DeadLetter {
        pending: PendingAction,
        outcome: ActionOutcome,
    },
    ActionReply {
        pending: PendingAction,
        outcome: ActionOutcome,
        decision: ReplyDecision,
    },
    /// The outcome and the reply of an action turn.
    Outcome {
        events: Vec<RecordedEvent>,
        ack_seq: Seq,
        message_id: MessageId,
    },
    Over,
}

/// How long a confirmation of ownership stays good, from when it was asked
/// (ms, on the owner's monotonic clock). An answer that comes back later proves only
/// that the owner held the session back then: a pause (a long GC, a frozen
/// VM) between the store's answer and its use may have let another node take
/// over, which takes at least the failure detector's `down_after_ms` (2 s by
/// default). Such an answer is asked again.
pub const CONFIRM_VALID_MS: u64 = 1_000;
/// Confirmations asked, at most, before the turn is given up (`unfinished`:
/// the client's retry asks again).
pub const CONFIRM_TRIES: u32 = 3;

/// An ownership confirmation on its way: how many times it was asked so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proof {
    tries: u32,
}

impl Proof {
    const FIRST: Self = Self { tries: 1 };

    /// The next try, if any is left.
    fn again(&self) -> Option<Self> {
        (self.tries < CONFIRM_TRIES).then_some(Self {
            tries: self.tries + 1,
        })
    }
}

/// Whether an answer that took `took_ms` came back too late to prove anything.
fn too_late(took_ms: u64) -> bool {
    took_ms >= CONFIRM_VALID_MS
}

/// One turn (or one settling of a pending action) of one session.
#[derive(Debug, Clone)]
pub struct TurnFlow {
    uid: Uid,
    epoch: Epoch,
    goal: Goal,
    wait: Wait,
    answered: bool,
}

/// Chooses the pipeline: the session's own (`None`), or the version that
/// requested a pending action.
pub type Choose<'a> = &'a dyn Fn(Option<&str>) -> Pipeline;

impl TurnFlow {
    /// A user turn of session `uid`, owned at `epoch`.
    pub fn turn(uid: Uid, epoch: Epoch, message_id: MessageId, text: String) -> Self {
        Self::new(uid, epoch, Goal::Turn { message_id, text })
    }

    /// Closes the pending action, if any, and nothing else.
    pub fn settle(uid: Uid, epoch: Epoch) -> Self {
        Self::new(uid, epoch, Goal::Settle)
    }

    /// A read of the session's memory: it ends with no answer once the
    /// memory may be read (the pending action closed, the ownership proved),
    /// or with the failure to give the reader.
    pub fn read(uid: Uid, epoch: Epoch) -> Self {
        Self::new(uid, epoch, Goal::Read)
    }

    fn new(uid: Uid, epoch: Epoch, goal: Goal) -> Self {
        Self {
            uid,
            epoch,
            goal,
            wait: Wait::Start,
            answered: false,
        }
    }

    /// Whether the flow is over.
    pub fn is_over(&self) -> bool {
        self.wait == Wait::Over
    }

    /// The first step. `state` is the session's memory (`None`: not loaded).
    pub fn start(
        &mut self,
        now: u64,
        state: &mut Option<SessionState>,
        choose: Choose<'_>,
    ) -> Step {
        debug_assert_eq!(self.wait, Wait::Start, "a flow starts once");
        self.proceed(now, state, choose)
    }

    /// Feeds the result of the last ask; the next step.
    pub fn handle(
        &mut self,
        now: u64,
        state: &mut Option<SessionState>,
        choose: Choose<'_>,
        input: TurnInput,
    ) -> Step {
        match (std::mem::replace(&mut self.wait, Wait::Over), input) {
            (Wait::Event { ack_seq }, TurnInput::Event(read)) => match read {
                Ok(Some(event)) => match Replied::from_event(ack_seq, &event, true) {
                    Some(replied) => self.end(Ok(replied)),
                    None => self.end(Err(missing_reply(&self.uid, event.seq))),
                },
                Ok(None) => self.end(Err(missing_reply(&self.uid, ack_seq.next().next()))),
                Err(e) => self.end(Err(TurnFailure::NotRecorded(format!(
                    "the durable tier failed ({e}); retry with the same id"
                )))),
            },
            (Wait::BeforeNlu { filtered }, TurnInput::Staged(staged)) => {
                let staged = match staged {
                    Ok(staged) => staged,
                    Err(e) => return self.end(Err(stage_failed(&e))),
                };
                // What a stage returned passes the filter too, unless unchanged.
                if staged == filtered {
                    return self.decide(now, state, choose, staged);
                }
                match choose(None).filter().filter(&staged) {
                    Ok(text) => self.decide(now, state, choose, text),
                    Err(rejection) => self.audit(now, state, rejection.reason, &staged),
                }
            }
            (Wait::AfterReply { text, decision }, TurnInput::Staged(staged)) => {
                let mut decision = *decision;
                match staged {
                    Ok(reply) => decision.reply_text = reply,
                    Err(e) => return self.end(Err(stage_failed(&e))),
                }
                let Goal::Turn { message_id, .. } = &self.goal else {
                    return self.end(Err(internal("a reply with no turn")));
                };
                let Some(session) = state.as_ref() else {
                    return self.end(Err(dropped()));
                };
                let events: Vec<RecordedEvent> = session
                    .record_turn(
                        &self.uid,
                        self.epoch,
                        now,
                        message_id.clone(),
                        text,
                        decision,
                    )
                    .into();
                // Planted bug `ack-before-commit`: the answer goes out now.
                let early = may_acknowledge(false).then(|| Ok(replied_by(&events)));
                if early.is_some() {
                    self.answered = true;
                }
                self.wait = Wait::Reply {
                    events: events.clone(),
                };
                Step {
                    answer: early,
                    ask: Some(Ask::Commit { events }),
                }
            }
            (Wait::Audit { reason, event }, TurnInput::Committed(committed)) => {
                let _ = self.apply_commit(state, &[*event], &committed);
                // Recorded or not, the refusal stands.
                self.end(Err(TurnFailure::Rejected(reason)))
            }
            (Wait::Reply { events }, TurnInput::Committed(committed)) => {
                match self.apply_commit(state, &events, &committed) {
                    Ok(()) => self.end(Ok(replied_by_owned(events))),
                    Err(failure) => self.end(Err(failure)),
                }
            }
            (Wait::Request { events }, TurnInput::Committed(committed)) => {
                if let Err(failure) = self.apply_commit(state, &events, &committed) {
                    return self.end(Err(failure));
                }
                self.run_pending(state)
            }
            (Wait::Confirm { pending, proof }, TurnInput::Confirmed { result, took_ms }) => match result {
                // Too late to prove ownership now: ask again, a few times.
                Committed::Ok if too_late(took_ms) => match proof.again() {
                    Some(proof) => {
                        self.wait = Wait::Confirm { pending, proof };
                        ask(Ask::Confirm { epoch: self.epoch })
                    }
                    None => self.end(Err(TurnFailure::Unfinished(
                        "the owner's confirmation that it holds the session kept coming back too late"
                            .to_owned(),
                    ))),
                },
                Committed::Ok => {
                    let key =
                        crate::actions::idempotency_key(self.uid.as_str(), pending.requested.0);
                    self.wait = Wait::Action {
                        pending: pending.clone(),
                    };
                    ask(Ask::RunAction { pending, key })
                }
                Committed::Fenced(e) => {
                    *state = None;
                    self.end(Err(TurnFailure::Fenced(e)))
                }
                // The action stays pending: the retry confirms again.
                Committed::NotTried(e) | Committed::Failed(e) => {
                    self.end(Err(TurnFailure::Unfinished(format!(
                        "the owner could not confirm it still holds the session ({e})"
                    ))))
                }
                Committed::Conflict => self.end(Err(internal("a confirmation conflicted"))),
            },
            (Wait::ConfirmRead { proof }, TurnInput::Confirmed { result, took_ms }) => match result {
                Committed::Ok if too_late(took_ms) => match proof.again() {
                    Some(proof) => {
                        self.wait = Wait::ConfirmRead { proof };
                        ask(Ask::Confirm { epoch: self.epoch })
                    }
                    None => self.end(Err(TurnFailure::NotRecorded(
                        "the owner's proof that it holds the session kept coming back too late: retry"
                            .to_owned(),
                    ))),
                },
                Committed::Ok => self.quiet(),
                Committed::Fenced(e) => {
                    *state = None;
                    self.end(Err(TurnFailure::Fenced(e)))
                }
                Committed::NotTried(e) | Committed::Failed(e) => {
                    self.end(Err(TurnFailure::NotRecorded(format!(
                        "the owner could not prove it still holds the session ({e}): retry"
                    ))))
                }
                Committed::Conflict => self.end(Err(internal("a confirmation conflicted"))),
            },
            (Wait::Action { pending }, TurnInput::Acted(outcome)) => match outcome {
                ActionOutcome::Failed { reason, attempts } => {
                    self.wait = Wait::DeadLetter {
                        pending: pending.clone(),
                        outcome: ActionOutcome::Failed {
                            reason: reason.clone(),
                            attempts,
                        },
                    };
                    ask(Ask::DeadLetter {
                        pending,
                        reason,
                        attempts,
                    })
                }
                outcome => self.resume(now, state, choose, pending, outcome),
            },
            (Wait::DeadLetter { pending, outcome }, TurnInput::DeadLettered(stored)) => {
                match stored {
                    Ok(()) => self.resume(now, state, choose, pending, outcome),
                    // Not recorded as failed until it is in the queue: the
                    // turn stays open, and its retry runs the action again.
                    Err(e) => self.end(Err(TurnFailure::Unfinished(format!(
                        "the dead-letter queue failed ({e})"
                    )))),
                }
            }
            (
                Wait::ActionReply {
                    pending,
                    outcome,
                    mut decision,
                },
                TurnInput::Staged(staged),
            ) => {
                // The action has run: a failing reply stage must not keep its
                // turn open (each retry would run the action again); the plain
                // reply goes out.
                if let Ok(text) = staged {
                    decision.reply_text = text;
                }
                let Some(session) = state.as_ref() else {
                    return self.end(Err(dropped()));
                };
                let uid = &self.uid;
                let Some(done) = session.record_action_outcome(uid, self.epoch, now, outcome)
                else {
                    return self.end(Err(dropped()));
                };
                let Some(reply) = session.record_reply(uid, self.epoch, now, done.seq, decision)
                else {
                    return self.end(Err(dropped()));
                };
                // received, understood, requested: the turn's ack is two before.
                let ack_seq = Seq(pending.requested.0.saturating_sub(2));
                let events = vec![done, reply];
                self.wait = Wait::Outcome {
                    events: events.clone(),
                    ack_seq,
                    message_id: pending.message_id,
                };
                ask(Ask::Commit { events })
            }
            (
                Wait::Outcome {
                    events,
                    ack_seq,
                    message_id,
                },
                TurnInput::Committed(committed),
            ) => {
                let failure = match self.apply_commit(state, &events, &committed) {
                    Ok(()) => None,
                    Err(TurnFailure::Fenced(e)) => Some(TurnFailure::Fenced(e)),
                    Err(e) => Some(unfinished(e)),
                };
                if let Some(failure) = failure {
                    return self.end(Err(failure));
                }
                match &self.goal {
                    // The turn that waited for this action is answered; a new
                    // turn goes on with its own work.
                    Goal::Turn { message_id: id, .. } if *id == message_id => self
                        .end(Ok(Replied::from_event(ack_seq, &events[1], false)
                            .expect("the second event is the reply"))),
                    _ => self.proceed(now, state, choose),
                }
            }
            (wait, input) => {
                self.wait = Wait::Over;
                self.end(Err(internal(&format!(
                    "the turn got {input:?} while waiting in {wait:?}"
                ))))
            }
        }
    }

    /// From a settled point: close a pending action, else do the goal.
    fn proceed(&mut self, now: u64, state: &mut Option<SessionState>, choose: Choose<'_>) -> Step {
        let Some(session) = state.as_ref() else {
            return self.end(Err(dropped()));
        };
        if session.pending_action().is_some() {
            return self.run_pending(state);
        }
        let (message_id, text) = match &self.goal {
            Goal::Turn { message_id, text } => (message_id, text),
            // Settled: nothing to answer.
            Goal::Settle => return self.quiet(),
            // Planted bug `read-from-memory`: memory is read with no proof
            // that no newer owner has written since.
            Goal::Read if mutation::active(Mutation::ReadFromMemory) => return self.quiet(),
            Goal::Read => {
                self.wait = Wait::ConfirmRead {
                    proof: Proof::FIRST,
                };
                return ask(Ask::Confirm { epoch: self.epoch });
            }
        };
        match session.duplicate(message_id) {
            Some(Duplicate::Recent(turn)) => return self.end(Ok(Replied::from_record(turn))),
            Some(Duplicate::Logged(processed)) => {
                self.wait = Wait::Event {
                    ack_seq: processed.turn_seq,
                };
                return ask(Ask::ReadEvent {
                    seq: processed.reply_seq,
                });
            }
            None => {}
        }
        let text = text.clone();
        match choose(None).filter().filter(&text) {
            Ok(filtered) => {
                self.wait = Wait::BeforeNlu {
                    filtered: filtered.clone(),
                };
                ask(Ask::Stage {
                    point: StagePoint::BeforeNlu,
                    text: filtered,
                    intent: None,
                    slots: None,
                })
            }
            Err(rejection) => self.audit(now, state, rejection.reason, &text),
        }
    }

    /// Records a refused text for audit (if no turn is open).
    fn audit(
        &mut self,
        now: u64,
        state: &Option<SessionState>,
        reason: String,
        text: &str,
    ) -> Step {
        let Goal::Turn { message_id, .. } = &self.goal else {
            return self.end(Err(TurnFailure::Rejected(reason)));
        };
        let event = state.as_ref().and_then(|session| {
            session.record_rejection(
                &self.uid,
                self.epoch,
                now,
                message_id.clone(),
                reason.clone(),
                text,
            )
        });
        match event {
            Some(event) => {
                self.wait = Wait::Audit {
                    reason,
                    event: Box::new(event.clone()),
                };
                ask(Ask::Commit {
                    events: vec![event],
                })
            }
            None => self.end(Err(TurnFailure::Rejected(reason))),
        }
    }

    /// The policy's decision on a text that passed the filter and the stages.
    fn decide(
        &mut self,
        now: u64,
        state: &Option<SessionState>,
        choose: Choose<'_>,
        text: String,
    ) -> Step {
        let Some(session) = state.as_ref() else {
            return self.end(Err(dropped()));
        };
        let Goal::Turn { message_id, .. } = &self.goal else {
            return self.end(Err(internal("a decision with no turn")));
        };
        let pipeline = choose(None);
        let policy = pipeline.policy();
        let ctx = TurnContext {
            state: session,
            now_ms: now,
        };
        let understanding = policy.understand(ctx, &text);
        match policy.decide(ctx, &text, &understanding) {
            Decision::Reply(decision) => {
                let mut slots = session.slots().clone();
                slots.extend(decision.slots_filled.clone());
                let stage = Ask::Stage {
                    point: StagePoint::AfterReply,
                    text: decision.reply_text.clone(),
                    intent: Some(decision.intent.clone()),
                    slots: Some(slots),
                };
                self.wait = Wait::AfterReply {
                    text,
                    decision: Box::new(decision),
                };
                ask(stage)
            }
            Decision::Action(action) => {
                let events: Vec<RecordedEvent> = session
                    .record_action_turn(
                        &self.uid,
                        self.epoch,
                        now,
                        message_id.clone(),
                        text,
                        action,
                    )
                    .into();
                self.wait = Wait::Request {
                    events: events.clone(),
                };
                ask(Ask::Commit { events })
            }
        }
    }

    /// Runs the pending action under its key, once this owner has confirmed
    /// it still holds the session.
    fn run_pending(&mut self, state: &Option<SessionState>) -> Step {
        let Some(pending) = state
            .as_ref()
            .and_then(SessionState::pending_action)
            .cloned()
        else {
            return self.end(Err(dropped()));
        };
        self.wait = Wait::Confirm {
            pending,
            proof: Proof::FIRST,
        };
        ask(Ask::Confirm { epoch: self.epoch })
    }

    /// The reply the policy resumes with after the action, through the stages.
    fn resume(
        &mut self,
        now: u64,
        state: &Option<SessionState>,
        choose: Choose<'_>,
        pending: PendingAction,
        outcome: ActionOutcome,
    ) -> Step {
        let Some(session) = state.as_ref() else {
            return self.end(Err(dropped()));
        };
        let pipeline = choose(Some(&pending.policy));
        let ctx = TurnContext {
            state: session,
            now_ms: now,
        };
        let decision = pipeline.policy().resume(ctx, &pending, &outcome);
        let stage = Ask::Stage {
            point: StagePoint::AfterReply,
            text: decision.reply_text.clone(),
            intent: Some(decision.intent.clone()),
            slots: Some(session.slots().clone()),
        };
        self.wait = Wait::ActionReply {
            pending,
            outcome,
            decision,
        };
        ask(stage)
    }

    fn apply_commit(
        &self,
        state: &mut Option<SessionState>,
        events: &[RecordedEvent],
        committed: &Committed,
    ) -> Result<(), TurnFailure> {
        apply_committed(&self.uid, state, events, committed)
    }

    /// The flow is over with nothing to answer.
    fn quiet(&mut self) -> Step {
        self.wait = Wait::Over;
        Step {
            answer: None,
            ask: None,
        }
    }

    fn end(&mut self, answer: TurnAnswer) -> Step {
        self.wait = Wait::Over;
        let answer = (!std::mem::replace(&mut self.answered, true)).then_some(answer);
        Step { answer, ask: None }
    }
}

/// Applies committed events to memory; a failed commit drops the memory (the
/// log is the truth) unless it was never tried. Also for commits made outside
/// a turn (a replayed dead letter's success).
pub fn apply_committed(
    uid: &Uid,
    state: &mut Option<SessionState>,
    events: &[RecordedEvent],
    committed: &Committed,
) -> Result<(), TurnFailure> {
    {
        let failure = match committed {
            Committed::Ok => {
                let Some(session) = state.as_mut() else {
                    return Err(dropped());
                };
                for event in events {
                    if let Err(e) = session.apply(event) {
                        *state = None;
                        return Err(TurnFailure::Diverged(format!(
                            "{uid}: a committed event does not apply ({e}); \
                             the session reloads: retry with the same id"
                        )));
                    }
                }
                return Ok(());
            }
            Committed::NotTried(e) => {
                return Err(TurnFailure::Overloaded(format!(
                    "{e}; nothing was recorded: retry with the same id after a backoff"
                )));
            }
            Committed::Fenced(e) => TurnFailure::Fenced(e.clone()),
            Committed::Conflict => TurnFailure::Internal(
                "the session was changed elsewhere; it has been reloaded: retry with the same id"
                    .into(),
            ),
            Committed::Failed(e) => TurnFailure::NotRecorded(format!(
                "the durable tier failed ({e}); the turn is not done: retry with the same id"
            )),
        };
        // Planted bug `action-rerun`: a commit that failed (its outcome
        // unknown, or found in the log already) keeps the memory, which still
        // holds the action pending though its success may be in the log.
        let keep = matches!(committed, Committed::Failed(_) | Committed::Conflict)
            && mutation::active(Mutation::ActionRerun)
            && state.as_ref().is_some_and(|s| s.pending_action().is_some());
        if !keep {
            *state = None;
        }
        Err(failure)
    }
}

fn ask(ask: Ask) -> Step {
    Step {
        answer: None,
        ask: Some(ask),
    }
}

/// The answer of a turn whose events are these: its first is acked, its last
/// is the reply.
fn replied_by(events: &[RecordedEvent]) -> Replied {
    let last = events.last().expect("a turn has events");
    Replied::from_event(events[0].seq, last, false).expect("a turn ends with its reply")
}

/// [`replied_by`] for events no longer needed: the reply's fields move out.
fn replied_by_owned(mut events: Vec<RecordedEvent>) -> Replied {
    let ack_seq = events.first().expect("a turn has events").seq;
    let last = events.pop().expect("a turn has events");
    Replied::from_owned_event(ack_seq, last, false).expect("a turn ends with its reply")
}

fn missing_reply(uid: &Uid, seq: Seq) -> TurnFailure {
    TurnFailure::Internal(format!(
        "reply event {seq} of {uid} is missing from the log"
    ))
}

fn dropped() -> TurnFailure {
    TurnFailure::Internal("the session's state was dropped: retry with the same id".into())
}

fn internal(why: &str) -> TurnFailure {
    TurnFailure::Internal(why.to_owned())
}

fn unfinished(failure: TurnFailure) -> TurnFailure {
    let why = match failure {
        TurnFailure::NotRecorded(e)
        | TurnFailure::Overloaded(e)
        | TurnFailure::Internal(e)
        | TurnFailure::Diverged(e)
        | TurnFailure::Rejected(e)
        | TurnFailure::Unfinished(e)
        | TurnFailure::Fenced(e) => e,
    };
    TurnFailure::Unfinished(why)
}

fn stage_failed(reason: &str) -> TurnFailure {
    TurnFailure::NotRecorded(format!(
        "{reason}; nothing was recorded: retry with the same id"
    ))
}

#[cfg(test)]
mod tests;
