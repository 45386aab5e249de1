//! The event-sourced session.
//!
//! A session's truth is its log of [`RecordedEvent`]s; [`SessionState`] is
//! [`SessionState::apply`] folded over that log. A turn appends three events, each
//! with the next seq: [`Event::TurnReceived`], [`Event::NluResult`] and
//! [`Event::ReplyProduced`]. They are committed together, so a turn is either
//! wholly in the log or not at all.
//!
//! A turn whose policy calls an action (a side effect: a coupon, a prize) is
//! recorded in two commits: [`SessionState::record_action_turn`] gives
//! received, understood and [`Event::ActionRequested`]; once the action has run,
//! [`SessionState::record_action_outcome`] ([`Event::ActionSucceeded`] or
//! [`Event::ActionFailed`]) and [`SessionState::record_reply`] close the turn. The
//! requested event's seq, with the uid, is the action's **idempotency key**: an
//! action found requested and not finished when a session loads (after a crash
//! or a move) is run again under the same key, and never after its success is
//! recorded. [`Event::InputRejected`] records a text the input filter refused,
//! outside any turn (an audit trail). [`Event::ActionSucceeded`] may also come
//! outside a turn, when a dead-lettered action is replayed.
//!
//! Two windows bound the state's memory:
//! - [`RECENT_TURNS_MAX`] completed turns are kept whole (the hot dialog context,
//!   and the replies answered again from memory for duplicate sends);
//! - [`PROCESSED_IDS_MAX`] message ids are remembered with the seqs of their turn
//!   and reply. This is the **idempotency horizon**: a `say` whose id is among the
//!   last 1,024 processed ids of its uid never makes a second turn; an id older than
//!   that is forgotten and would make a new turn.

mod snapshot;

pub use snapshot::{
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_KEY_BYTES_MIN, SNAPSHOT_MAC_BYTES,
    SNAPSHOT_SEALED_FORMAT_VERSION, Snapshot, SnapshotDue, SnapshotError, SnapshotKey,
    SnapshotPolicy, SnapshotRef,
};

use crate::ids::{Epoch, MessageId, Seq, Uid};
use crate::mutation::{self, Mutation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Completed turns kept whole in the state.
pub const RECENT_TURNS_MAX: usize = 32;

/// Message ids remembered for deduplication: the idempotency horizon.
pub const PROCESSED_IDS_MAX: usize = 1024;

/// Events per turn that calls no action: received, understood, answered.
pub const EVENTS_PER_TURN: u64 = 3;

/// Bytes of a refused text kept in its [`Event::InputRejected`].
pub const REJECTED_TEXT_BYTES_MAX: usize = 256;

/// Milliseconds in a day: daily action limits count by UTC day of `at_ms`.
pub const DAY_MS: u64 = 86_400_000;

/// Slot name to value. Sorted, so that every rendering of it is the same.
pub type Slots = BTreeMap<String, String>;

/// One fact in a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The user said something.
    TurnReceived {
        /// The client's message id.
        message_id: MessageId,
        /// What the user said, after the input filter.
        text: String,
    },
    /// What the NLU made of it.
    NluResult {
        /// The intent the turn serves (an `inform` resolves to the open task).
        intent: String,
        /// How sure the NLU was, 0.0 to 1.0.
        confidence: f32,
        /// Slots this turn filled or changed.
        slots_filled: Slots,
    },
    /// What the policy answered.
    ReplyProduced {
        /// The message id this reply answers.
        message_id: MessageId,
        /// The reply text, as sent (sensitive values already masked by the policy).
        text: String,
        /// The policy version that answered.
        policy: String,
        /// The intent answered (repeated so that a reply renders from this event alone).
        intent: String,
        /// All of the session's slots after the turn, unmasked: the state takes
        /// them as they are (a flow that ends may clear some).
        slots: Slots,
        /// The dialog engine's position after the turn (flow, step, what it
        /// awaits), opaque to the core; empty between flows.
        #[serde(default, skip_serializing_if = "Slots::is_empty")]
        dialog: Slots,
    },
    /// The policy called an action; its outcome follows (in the same turn, or
    /// after a crash, in the turn that finds it pending).
    ActionRequested {
        /// The action's name.
        action: String,
        /// Its arguments.
        args: Slots,
        /// The policy version that called it (it decides the reply after it).
        policy: String,
        /// The dialog engine's position while the action runs.
        #[serde(default, skip_serializing_if = "Slots::is_empty")]
        dialog: Slots,
    },
    /// The action succeeded.
    ActionSucceeded {
        /// Seq of its `ActionRequested`: the idempotency key with the uid.
        requested: Seq,
        /// The action's name.
        action: String,
        /// What it returned.
        result: Slots,
    },
    /// The action failed past its retries and was dead-lettered.
    ActionFailed {
        /// Seq of its `ActionRequested`.
        requested: Seq,
        /// The action's name.
        action: String,
        /// Why it failed the last time.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The input filter refused a text: recorded for audit, nothing else done.
    InputRejected {
        /// The client's message id.
        message_id: MessageId,
        /// Which rule refused it.
        reason: String,
        /// The refused text, cut to [`REJECTED_TEXT_BYTES_MAX`] bytes.
        text: String,
    },
}

impl Event {
    /// A short stable name for the event's kind, as stored beside it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TurnReceived { .. } => "turn_received",
            Event::NluResult { .. } => "nlu_result",
            Event::ReplyProduced { .. } => "reply_produced",
            Event::ActionRequested { .. } => "action_requested",
            Event::ActionSucceeded { .. } => "action_succeeded",
            Event::ActionFailed { .. } => "action_failed",
            Event::InputRejected { .. } => "input_rejected",
        }
    }
}

/// An event with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The session the event belongs to.
    pub uid: Uid,
    /// Its position: the session's previous seq plus one.
    pub seq: Seq,
    /// When it was recorded, in ms since the Unix epoch (given by the caller).
    pub at_ms: u64,
    /// The ring epoch of the owner that recorded it.
    pub epoch: Epoch,
    /// The fact itself.
    pub event: Event,
}

/// A completed turn, kept whole in the recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The client's message id.
    pub message_id: MessageId,
    /// Seq of the turn's `TurnReceived` event: the seq of its `ack`.
    pub turn_seq: Seq,
    /// Seq of the turn's `ReplyProduced` event: the seq of its `reply`.
    pub reply_seq: Seq,
    /// What the user said.
    pub user_text: String,
    /// What was answered.
    pub reply_text: String,
    /// The intent answered.
    pub intent: String,
    /// The policy version that answered.
    pub policy: String,
    /// The session's slots after the turn, unmasked.
    pub slots: Slots,
}

/// A processed message id and where its turn sits in the log.
///
/// Written as a pair, `[turn_seq, reply_seq]`: a session remembers 1,024 of
/// them, and as pairs they take half the bytes of a snapshot they took as
/// objects. Both shapes are read (the derived reader takes a sequence or a
/// map), so snapshots written before, and states from older nodes, still load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ProcessedTurn {
    /// Seq of the turn's `TurnReceived` event.
    pub turn_seq: Seq,
    /// Seq of the turn's `ReplyProduced` event.
    pub reply_seq: Seq,
}

impl Serialize for ProcessedTurn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.turn_seq, self.reply_seq).serialize(serializer)
    }
}

/// An action requested and not yet finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    /// Seq of its `ActionRequested`: with the uid, its idempotency key.
    pub requested: Seq,
    /// The action's name.
    pub action: String,
    /// Its arguments.
    pub args: Slots,
    /// The policy version that called it.
    pub policy: String,
    /// The message id of the turn waiting for it.
    pub message_id: MessageId,
}

/// How many times an action was requested on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct DayCount {
    day: u64,
    count: u32,
}

/// A turn that has been received but not yet answered in the log being applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenTurn {
    message_id: MessageId,
    turn_seq: Seq,
    text: String,
}

/// Why an event could not be applied: the log is not a valid session log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event's seq is not the state's seq plus one.
    #[error("seq gap: expected {expected}, got {got}")]
    SeqGap {
        /// The seq the state expects next.
        expected: Seq,
        /// The seq of the event.
        got: Seq,
    },
    /// The event does not follow the turn's order (received, understood,
    /// optionally an action requested and finished, answered).
    #[error("event {kind} at seq {seq} is out of turn order")]
    OutOfTurnOrder {
        /// The kind of the event.
        kind: &'static str,
        /// Its seq.
        seq: Seq,
    },
    /// A turn reuses a message id that is inside the idempotency horizon.
    #[error("message id {0} was already processed")]
    DuplicateMessageId(MessageId),
}

/// The hot state of a session: [`apply`](Self::apply) folded over its events.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(from = "StateWire")]
pub struct SessionState {
    seq: Seq,
    slots: Slots,
    last_intent: Option<String>,
    last_confidence: f32,
    recent_turns: VecDeque<TurnRecord>,
    /// Processed ids in the order they were processed, oldest first.
    processed_order: VecDeque<(MessageId, ProcessedTurn)>,
    /// The same ids, for lookup. Derived from `processed_order`, never serialized.
    processed_index: BTreeMap<MessageId, ProcessedTurn>,
    open_turn: Option<OpenTurn>,
    /// The dialog engine's position (opaque to the core).
    dialog: Slots,
    /// The action the open turn waits for.
    pending_action: Option<PendingAction>,
    /// Requests per action on the day of the latest one, for daily limits.
    action_days: BTreeMap<String, DayCount>,
}

/// The serialized shape of [`SessionState`]: the lookup index is rebuilt on load.
///
/// The snapshot's binary body (postcard) is positional: adding, removing or
/// reordering a field here, in [`StateWireRef`] or in the types inside them
/// changes the bytes. Such a change must bump the body's marker byte and keep
/// reading the old layout; the golden test in `snapshot.rs` fails first.
#[derive(Deserialize)]
struct StateWire {
    seq: Seq,
    slots: Slots,
    last_intent: Option<String>,
    last_confidence: f32,
    recent_turns: VecDeque<TurnRecord>,
    processed: VecDeque<(MessageId, ProcessedTurn)>,
    open_turn: Option<OpenTurn>,
    #[serde(default)]
    dialog: Slots,
    #[serde(default)]
    pending_action: Option<PendingAction>,
    #[serde(default)]
    action_days: BTreeMap<String, DayCount>,
}

impl From<StateWire> for SessionState {
    fn from(wire: StateWire) -> Self {
        let processed_index = wire.processed.iter().cloned().collect();
        Self {
            seq: wire.seq,
            slots: wire.slots,
            last_intent: wire.last_intent,
            last_confidence: wire.last_confidence,
            recent_turns: wire.recent_turns,
            processed_order: wire.processed,
            processed_index,
            open_turn: wire.open_turn,
            dialog: wire.dialog,
            pending_action: wire.pending_action,
            action_days: wire.action_days,
        }
    }
}

/// [`StateWire`]'s fields, borrowed from the state: serializing makes no copy
/// of it. Every field is written, even empty: the snapshot's binary body is
/// positional and has no names to skip by (a JSON reader takes them too, and
/// its defaults still fill the fields older JSON left out).
#[derive(Serialize)]
struct StateWireRef<'a> {
    seq: Seq,
    slots: &'a Slots,
    last_intent: &'a Option<String>,
    last_confidence: f32,
    recent_turns: &'a VecDeque<TurnRecord>,
    processed: &'a VecDeque<(MessageId, ProcessedTurn)>,
    open_turn: &'a Option<OpenTurn>,
    dialog: &'a Slots,
    pending_action: &'a Option<PendingAction>,
    action_days: &'a BTreeMap<String, DayCount>,
}

impl Serialize for SessionState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StateWireRef {
            seq: self.seq,
            slots: &self.slots,
            last_intent: &self.last_intent,
            last_confidence: self.last_confidence,
            recent_turns: &self.recent_turns,
            processed: &self.processed_order,
            open_turn: &self.open_turn,
            dialog: &self.dialog,
            pending_action: &self.pending_action,
            action_days: &self.action_days,
        }
        .serialize(serializer)
    }
}

/// What the dialog pipeline decided for one turn; [`SessionState::record_turn`]
/// turns it into events.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnDecision {
    /// The intent the turn serves.
    pub intent: String,
    /// The NLU's confidence, 0.0 to 1.0.
    pub confidence: f32,
    /// Slots the turn filled or changed.
    pub slots_filled: Slots,
    /// Slots dropped when the turn ends (a flow that finished, a changed mind).
    pub slots_cleared: Vec<String>,
    /// The reply text.
    pub reply_text: String,
    /// The policy version that answered.
    pub policy: String,
    /// The dialog engine's position after the turn.
    pub dialog: Slots,
}

/// What the NLU made of a turn whose policy calls an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTurn {
    /// The intent the turn serves.
    pub intent: String,
    /// The NLU's confidence, 0.0 to 1.0.
    pub confidence: f32,
    /// Slots the turn filled or changed.
    pub slots_filled: Slots,
    /// The action to run.
    pub action: String,
    /// Its arguments.
    pub args: Slots,
    /// The policy version that called it.
    pub policy: String,
    /// The dialog engine's position while the action runs.
    pub dialog: Slots,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// It succeeded with this result.
    Succeeded(Slots),
    /// It failed past its retries.
    Failed {
        /// Why, the last time.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// The reply that closes a turn after its action.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyDecision {
    /// The intent answered.
    pub intent: String,
    /// The reply text.
    pub reply_text: String,
    /// The policy version that answered.
    pub policy: String,
    /// Slots dropped as the turn ends.
    pub slots_cleared: Vec<String>,
    /// The dialog engine's position after the turn.
    pub dialog: Slots,
}

/// Whether a turn may be acknowledged to its client: only once the store has
/// committed its events, so that an acked turn survives any crash.
pub fn may_acknowledge(committed: bool) -> bool {
    committed || mutation::active(Mutation::AckBeforeCommit)
}

/// A `say` whose message id was seen before.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate<'a> {
    /// The turn is in the recent window: answer from memory.
    Recent(&'a TurnRecord),
    /// The turn is older: its reply event must be read back from the log.
    Logged(ProcessedTurn),
}

impl SessionState {
    /// The seq of the last applied event; `Seq(0)` for a new session.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The session's slots.
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The intent of the last turn, if any.
    pub fn last_intent(&self) -> Option<&str> {
        self.last_intent.as_deref()
    }

    /// The NLU confidence of the last turn.
    pub fn last_confidence(&self) -> f32 {
        self.last_confidence
    }

    /// The recent completed turns, oldest first.
    pub fn recent_turns(&self) -> impl Iterator<Item = &TurnRecord> {
        self.recent_turns.iter()
    }

    /// The dialog engine's position (empty between flows).
    pub fn dialog(&self) -> &Slots {
        &self.dialog
    }

    /// The action the open turn waits for: found on load, it must be run again
    /// under the same key and the turn closed before anything else.
    pub fn pending_action(&self) -> Option<&PendingAction> {
        self.pending_action.as_ref()
    }

    /// How many times `action` was requested on UTC day `day` (`at_ms / DAY_MS`).
    pub fn actions_on_day(&self, action: &str, day: u64) -> u32 {
        self.action_days
            .get(action)
            .filter(|d| d.day == day)
            .map_or(0, |d| d.count)
    }

    /// How many message ids are remembered (at most [`PROCESSED_IDS_MAX`]).
    pub fn processed_len(&self) -> usize {
        self.processed_order.len()
    }

    /// Whether this message id was processed within the idempotency horizon.
    pub fn duplicate(&self, message_id: &MessageId) -> Option<Duplicate<'_>> {
        let processed = self.processed_index.get(message_id)?;
        let recent = self
            .recent_turns
            .iter()
            .rev()
            .find(|turn| turn.turn_seq == processed.turn_seq);
        Some(match recent {
            Some(turn) => Duplicate::Recent(turn),
            None => Duplicate::Logged(*processed),
        })
    }

    /// The events of a new turn, numbered after the current seq. Pure: the state
    /// changes only when the events are applied, after they are committed.
    pub fn record_turn(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        message_id: MessageId,
        text: String,
        decision: TurnDecision,
    ) -> [RecordedEvent; 3] {
        debug_assert!(
            self.open_turn.is_none(),
            "a turn is open in a settled state"
        );
        let mut slots = self.slots.clone();
        slots.extend(decision.slots_filled.clone());
        for slot in &decision.slots_cleared {
            slots.remove(slot);
        }
        let events = [
            Event::TurnReceived {
                message_id: message_id.clone(),
                text,
            },
            Event::NluResult {
                intent: decision.intent.clone(),
                confidence: decision.confidence,
                slots_filled: decision.slots_filled,
            },
            Event::ReplyProduced {
                message_id,
                text: decision.reply_text,
                policy: decision.policy,
                intent: decision.intent,
                slots,
                dialog: decision.dialog,
            },
        ];
        self.numbered(uid, epoch, now_ms, events)
    }

    /// The first events of a turn that calls an action: received, understood,
    /// and the action requested. Its outcome and reply follow once it has run.
    pub fn record_action_turn(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        message_id: MessageId,
        text: String,
        turn: ActionTurn,
    ) -> [RecordedEvent; 3] {
        debug_assert!(
            self.open_turn.is_none(),
            "a turn is open in a settled state"
        );
        let events = [
            Event::TurnReceived { message_id, text },
            Event::NluResult {
                intent: turn.intent,
                confidence: turn.confidence,
                slots_filled: turn.slots_filled,
            },
            Event::ActionRequested {
                action: turn.action,
                args: turn.args,
                policy: turn.policy,
                dialog: turn.dialog,
            },
        ];
        self.numbered(uid, epoch, now_ms, events)
    }

    /// The outcome of the pending action, or `None` if none is pending.
    pub fn record_action_outcome(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        outcome: ActionOutcome,
    ) -> Option<RecordedEvent> {
        let pending = self.pending_action.as_ref()?;
        let [event] = self.numbered(
            uid,
            epoch,
            now_ms,
            [Self::outcome_event(
                pending.requested,
                &pending.action,
                outcome,
            )],
        );
        Some(event)
    }

    /// The success of an action that failed earlier and was replayed from the
    /// dead-letter queue, recorded outside any turn; `None` while a turn is open.
    pub fn record_replayed_success(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        requested: Seq,
        action: &str,
        result: Slots,
    ) -> Option<RecordedEvent> {
        if self.open_turn.is_some() {
            return None;
        }
        let [event] = self.numbered(
            uid,
            epoch,
            now_ms,
            [Self::outcome_event(
                requested,
                action,
                ActionOutcome::Succeeded(result),
            )],
        );
        Some(event)
    }

    fn outcome_event(requested: Seq, action: &str, outcome: ActionOutcome) -> Event {
        let action = action.to_owned();
        match outcome {
            ActionOutcome::Succeeded(result) => Event::ActionSucceeded {
                requested,
                action,
                result,
            },
            ActionOutcome::Failed { reason, attempts } => Event::ActionFailed {
                requested,
                action,
                reason,
                attempts,
            },
        }
    }

    /// The reply that closes the open turn, numbered after `after` (the seq of
    /// the action's outcome, not yet applied); `None` if no turn is open.
    pub fn record_reply(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        after: Seq,
        decision: ReplyDecision,
    ) -> Option<RecordedEvent> {
        let open = self.open_turn.as_ref()?;
        let mut slots = self.slots.clone();
        for slot in &decision.slots_cleared {
            slots.remove(slot);
        }
        Some(RecordedEvent {
            uid: uid.clone(),
            seq: after.next(),
            at_ms: now_ms,
            epoch,
            event: Event::ReplyProduced {
                message_id: open.message_id.clone(),
                text: decision.reply_text,
                policy: decision.policy,
                intent: decision.intent,
                slots,
                dialog: decision.dialog,
            },
        })
    }

    /// A refused text, recorded for audit outside any turn; `None` while a turn
    /// is open (the refusal is then only logged).
    pub fn record_rejection(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        message_id: MessageId,
        reason: String,
        text: &str,
    ) -> Option<RecordedEvent> {
        if self.open_turn.is_some() {
            return None;
        }
        let mut cut = text.len().min(REJECTED_TEXT_BYTES_MAX);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let [event] = self.numbered(
            uid,
            epoch,
            now_ms,
            [Event::InputRejected {
                message_id,
                reason,
                text: text[..cut].to_owned(),
            }],
        );
        Some(event)
    }

    fn numbered<const N: usize>(
        &self,
        uid: &Uid,
        epoch: Epoch,
        now_ms: u64,
        events: [Event; N],
    ) -> [RecordedEvent; N] {
        let mut seq = self.seq;
        events.map(|event| {
            seq = seq.next();
            RecordedEvent {
                uid: uid.clone(),
                seq,
                at_ms: now_ms,
                epoch,
                event,
            }
        })
    }

    /// Folds one event into the state. The event must carry the next seq.
    pub fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), ApplyError> {
        let expected = self.seq.next();
        if recorded.seq != expected {
            return Err(ApplyError::SeqGap {
                expected,
                got: recorded.seq,
            });
        }
        let out_of_order = ApplyError::OutOfTurnOrder {
            kind: recorded.event.kind(),
            seq: recorded.seq,
        };
        match &recorded.event {
            Event::TurnReceived { message_id, text } => {
                if self.open_turn.is_some() {
                    return Err(out_of_order);
                }
                if self.processed_index.contains_key(message_id) {
                    return Err(ApplyError::DuplicateMessageId(message_id.clone()));
                }
                self.open_turn = Some(OpenTurn {
                    message_id: message_id.clone(),
                    turn_seq: recorded.seq,
                    text: text.clone(),
                });
            }
            Event::NluResult {
                intent,
                confidence,
                slots_filled,
            } => {
                if self.open_turn.is_none() || self.pending_action.is_some() {
                    return Err(out_of_order);
                }
                self.slots
                    .extend(slots_filled.iter().map(|(k, v)| (k.clone(), v.clone())));
                self.last_intent = Some(intent.clone());
                self.last_confidence = *confidence;
            }
            Event::ReplyProduced {
                message_id,
                text,
                policy,
                intent,
                slots,
                dialog,
            } => {
                if self.pending_action.is_some() {
                    return Err(out_of_order);
                }
                let open = match self.open_turn.take() {
                    Some(open) if &open.message_id == message_id => open,
                    other => {
                        self.open_turn = other;
                        return Err(out_of_order);
                    }
                };
                self.slots.clone_from(slots);
                self.dialog.clone_from(dialog);
                let processed = ProcessedTurn {
                    turn_seq: open.turn_seq,
                    reply_seq: recorded.seq,
                };
                self.remember(message_id.clone(), processed);
                // Room first, then the push: pushing onto a full window would
                // double its allocation for good.
                while self.recent_turns.len() >= RECENT_TURNS_MAX {
                    self.recent_turns.pop_front();
                }
                self.recent_turns.push_back(TurnRecord {
                    message_id: message_id.clone(),
                    turn_seq: open.turn_seq,
                    reply_seq: recorded.seq,
                    user_text: open.text,
                    reply_text: text.clone(),
                    intent: intent.clone(),
                    policy: policy.clone(),
                    slots: slots.clone(),
                });
            }
            Event::ActionRequested {
                action,
                args,
                policy,
                dialog,
            } => {
                let Some(open) = &self.open_turn else {
                    return Err(out_of_order);
                };
                if self.pending_action.is_some() {
                    return Err(out_of_order);
                }
                self.pending_action = Some(PendingAction {
                    requested: recorded.seq,
                    action: action.clone(),
                    args: args.clone(),
                    policy: policy.clone(),
                    message_id: open.message_id.clone(),
                });
                self.dialog.clone_from(dialog);
                let day = recorded.at_ms / DAY_MS;
                let counted = self.action_days.entry(action.clone()).or_default();
                if counted.day != day {
                    *counted = DayCount { day, count: 0 };
                }
                counted.count += 1;
            }
            Event::ActionSucceeded { requested, .. } | Event::ActionFailed { requested, .. } => {
                match &self.pending_action {
                    Some(pending) if pending.requested == *requested => {
                        self.pending_action = None;
                    }
                    // A replayed dead letter's success, outside any turn.
                    None if self.open_turn.is_none()
                        && matches!(recorded.event, Event::ActionSucceeded { .. })
                        && *requested < recorded.seq => {}
                    _ => return Err(out_of_order),
                }
            }
            Event::InputRejected { .. } => {
                if self.open_turn.is_some() {
                    return Err(out_of_order);
                }
            }
        }
        self.seq = recorded.seq;
        Ok(())
    }

    fn remember(&mut self, message_id: MessageId, processed: ProcessedTurn) {
        // Room first, then the push: pushing onto a full window would double
        // its allocation (1,024 entries more) for the session's whole life.
        while self.processed_order.len() >= PROCESSED_IDS_MAX {
            if let Some((evicted, _)) = self.processed_order.pop_front() {
                self.processed_index.remove(&evicted);
            }
        }
        self.processed_index.insert(message_id.clone(), processed);
        self.processed_order.push_back((message_id, processed));
        debug_assert_eq!(self.processed_index.len(), self.processed_order.len());
    }
}

#[cfg(test)]
mod tests;
