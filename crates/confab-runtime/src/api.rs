//! What the gateway and the peers hand the runtime, and what they get back:
//! turns and requests, their outcomes and errors.

use confab_core::session::{RecordedEvent, Slots};
use confab_core::{Epoch, MessageId, NodeId, Seq, Uid};
use confab_store::DeadLetter;
use tokio::sync::OwnedSemaphorePermit;

/// Why a turn was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TurnError {
    /// Too much work in flight on the node or queued for the session.
    #[error("{0}")]
    Overloaded(String),
    /// The durable tier could not record the turn; nothing was recorded.
    #[error("{0}")]
    Unavailable(String),
    /// The input filter refused the text; nothing was recorded.
    #[error("{0}")]
    Rejected(String),
    /// A bug or a crashed session; the outcome is unknown: retry with the same id.
    #[error("{0}")]
    Internal(String),
}

impl TurnError {
    /// The outcome label in `confab_turns_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            TurnError::Overloaded(_) => "overloaded",
            TurnError::Unavailable(_) => "unavailable",
            TurnError::Rejected(_) => "rejected",
            TurnError::Internal(_) => "internal",
        }
    }
}

/// A reply as it leaves the session: sensitive slots masked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// The message id it answers.
    pub message_id: MessageId,
    /// The seq of the reply's event.
    pub seq: Seq,
    /// The text.
    pub text: String,
    /// The intent answered.
    pub intent: String,
    /// The slots after the turn, masked.
    pub slots: Slots,
    /// The policy version.
    pub policy: String,
}

impl Reply {
    /// The reply carried by a `ReplyProduced` event, masked (the fixed names and
    /// `sensitive`); `None` for other events.
    pub fn from_event(
        recorded: &RecordedEvent,
        sensitive: &std::collections::BTreeSet<String>,
    ) -> Option<Self> {
        // The ack's seq is not part of a reply frame.
        confab_dialog::turn::Replied::from_event(recorded.seq, recorded, false)
            .map(|replied| Self::masked(replied, sensitive))
    }

    /// The turn machine's reply as a client gets it: slots masked.
    pub(crate) fn masked(
        replied: confab_dialog::turn::Replied,
        sensitive: &std::collections::BTreeSet<String>,
    ) -> Self {
        Self {
            message_id: replied.message_id,
            seq: replied.reply_seq,
            text: replied.text,
            intent: replied.intent,
            slots: confab_dialog::masked_with(&replied.slots, sensitive),
            policy: replied.policy,
        }
    }
}

/// A done turn: recorded (or found recorded) and answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TurnOutcome {
    /// The seq of the turn's first event: the `ack`'s seq.
    pub ack_seq: Seq,
    /// The reply.
    pub reply: Reply,
    /// Whether the message id had been processed before (nothing new recorded).
    pub duplicate: bool,
}

/// What `hello` tells a client about its session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// The highest seq recorded.
    pub last_seq: Seq,
    /// The node that owns the session.
    pub node: NodeId,
}

/// One user turn on its way to its session: the Router and the supervisor pass
/// it on unchanged.
pub struct TurnRequest {
    /// Whose turn.
    pub uid: Uid,
    /// The client's message id.
    pub message_id: MessageId,
    /// What the user said.
    pub text: String,
    /// Where the outcome goes.
    pub reply: ractor::RpcReplyPort<Result<TurnOutcome, TurnError>>,
    /// The node's in-flight slot, held until the request is answered or dropped,
    /// wherever it is: a caller that gave up does not free it early.
    pub permit: OwnedSemaphorePermit,
    /// Set when another node routed it here: the epoch it was routed at and
    /// the forwards so far.
    pub forwarded: Option<(Epoch, u8)>,
    /// The turn's span where it entered this node: the session's work, or the
    /// forward to the owner, are its children.
    pub span: tracing::Span,
    /// When its caller stops waiting: a turn still queued then is not run
    /// (the session machine decides it: `confab_core::handoff::Deadline`).
    pub deadline: std::time::Instant,
}

/// What a [`SessionRequest`] asks of a session (other than a turn).
#[derive(serde::Serialize, serde::Deserialize)]
pub enum SessionAsk {
    /// Activate and report where the session stands.
    Hello,
    /// Show the session to ops.
    Show,
    /// Run a dead-lettered action again under its key.
    Replay(DeadLetter),
}

/// A session's answer to a [`SessionRequest`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SessionAnswer {
    /// To `Hello`.
    Hello(SessionInfo),
    /// To `Show`.
    Show(confab_proto::admin::SessionView),
    /// To `Replay`: whether the action succeeded now (or had before), and what happened.
    Replayed {
        /// The action's success is recorded and the entry left the queue.
        ok: bool,
        /// What happened.
        message: String,
    },
}

/// A request to a session that is not a turn; it activates the session.
pub struct SessionRequest {
    /// Whose session.
    pub uid: Uid,
    /// What is asked.
    pub ask: SessionAsk,
    /// Where the answer goes.
    pub reply: ractor::RpcReplyPort<Result<SessionAnswer, TurnError>>,
    /// The node's in-flight slot, as for turns.
    pub permit: OwnedSemaphorePermit,
    /// As for turns.
    pub forwarded: Option<(Epoch, u8)>,
}
