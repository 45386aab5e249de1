//! The event-sourced session.
//!
//! A session's truth is its log of [`RecordedEvent`]s; [`SessionState`] is
//! [`SessionState::apply`] folded over that log. A turn appends three events, each
//! with the next seq: [`Event::TurnReceived`], [`Event::NluResult`] and
//! [`Event::ReplyProduced`]. They are committed together, so a turn is either
//! wholly in the log or not at all.
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
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_KEY_BYTES_MIN, Snapshot, SnapshotError, SnapshotKey,
};

use crate::ids::{Epoch, MessageId, Seq, Uid};
use crate::mutation::{self, Mutation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Completed turns kept whole in the state.
pub const RECENT_TURNS_MAX: usize = 32;

/// Message ids remembered for deduplication: the idempotency horizon.
pub const PROCESSED_IDS_MAX: usize = 1024;

/// Events per turn: received, understood, answered.
pub const EVENTS_PER_TURN: u64 = 3;

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
        /// All of the session's slots after the turn, unmasked.
        slots: Slots,
    },
}

impl Event {
    /// A short stable name for the event's kind, as stored beside it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::TurnReceived { .. } => "turn_received",
            Event::NluResult { .. } => "nlu_result",
            Event::ReplyProduced { .. } => "reply_produced",
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedTurn {
    /// Seq of the turn's `TurnReceived` event.
    pub turn_seq: Seq,
    /// Seq of the turn's `ReplyProduced` event.
    pub reply_seq: Seq,
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
    /// The event does not follow the turn's order (received, understood, answered).
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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "StateWire", into = "StateWire")]
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
}

/// The serialized shape of [`SessionState`]: the lookup index is rebuilt on load.
#[derive(Serialize, Deserialize)]
struct StateWire {
    seq: Seq,
    slots: Slots,
    last_intent: Option<String>,
    last_confidence: f32,
    recent_turns: VecDeque<TurnRecord>,
    processed: VecDeque<(MessageId, ProcessedTurn)>,
    open_turn: Option<OpenTurn>,
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
        }
    }
}

impl From<SessionState> for StateWire {
    fn from(state: SessionState) -> Self {
        Self {
            seq: state.seq,
            slots: state.slots,
            last_intent: state.last_intent,
            last_confidence: state.last_confidence,
            recent_turns: state.recent_turns,
            processed: state.processed_order,
            open_turn: state.open_turn,
        }
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
    /// The reply text.
    pub reply_text: String,
    /// The policy version that answered.
    pub policy: String,
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
            },
        ];
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
                if self.open_turn.is_none() {
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
            } => {
                let open = match self.open_turn.take() {
                    Some(open) if &open.message_id == message_id => open,
                    other => {
                        self.open_turn = other;
                        return Err(out_of_order);
                    }
                };
                let processed = ProcessedTurn {
                    turn_seq: open.turn_seq,
                    reply_seq: recorded.seq,
                };
                self.remember(message_id.clone(), processed);
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
                while self.recent_turns.len() > RECENT_TURNS_MAX {
                    self.recent_turns.pop_front();
                }
            }
        }
        self.seq = recorded.seq;
        Ok(())
    }

    fn remember(&mut self, message_id: MessageId, processed: ProcessedTurn) {
        self.processed_index.insert(message_id.clone(), processed);
        self.processed_order.push_back((message_id, processed));
        while self.processed_order.len() > PROCESSED_IDS_MAX {
            if let Some((evicted, _)) = self.processed_order.pop_front() {
                self.processed_index.remove(&evicted);
            }
        }
        debug_assert_eq!(self.processed_index.len(), self.processed_order.len());
    }
}

#[cfg(test)]
mod tests;
