//! Moving a session's state straight to its new owner when the ring changes,
//! as [`confab_core::handoff`] lays out:
//!
//! 1. The old owner's supervisor takes the moved sessions off its map (no new
//!    turn reaches them there: its Router forwards by the new ring) and tells
//!    each new owner which sessions to expect ([`crate::cluster::Expect`]).
//! 2. Each moved actor finishes the turns already queued to it, then sends its
//!    snapshot to the new owner ([`crate::cluster::HandoffState`]), writes it to
//!    the store as a passivation does, and stops.
//! 3. On the new owner, a turn for an expected session waits (the session's
//!    mailbox buffers the turns behind it) until the state arrives or
//!    [`HANDOFF_WAIT`] passes. The session is then claimed at the new epoch,
//!    which fences the old owner's writes, and rebuilt from the state that
//!    arrived plus any events after it, or from the durable tier alone.
//!
//! A crashed owner sends nothing: its sessions are not expected, so their new
//! owners load them from the durable tier at once.

use crate::Runtime;
use crate::cluster::{Expect, HandoffState};
use crate::supervisor::SupervisorMsg;
use base64::Engine as _;
use ractor::rpc::CallResult;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a new owner holds an expected session's turns for its state
/// before it loads the session from the durable tier (the core's
/// `HandoffConfig::timeout_ms`).
pub const HANDOFF_WAIT: Duration = Duration::from_millis(1_000);

/// Snapshot bytes on the wire.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a new session actor starts from.
pub(crate) enum Incoming {
    /// Nothing: load from the durable tier.
    Nothing,
    /// Its old owner is handing it off: wait for the state until the deadline.
    Awaiting(oneshot::Receiver<Option<Vec<u8>>>, Instant),
    /// Its old owner's state (snapshot bytes), or `None`: the old owner held
    /// nothing usable, load from the durable tier.
    Arrived(Option<Vec<u8>>),
}

impl Incoming {
    /// Whether the session is coming from another node.
    pub(crate) fn is_handoff(&self) -> bool {
        !matches!(self, Incoming::Nothing)
    }

    /// The state to start from: waits for it if it is on its way.
    pub(crate) async fn state(self) -> Option<Vec<u8>> {
        match self {
            Incoming::Nothing => None,
            Incoming::Arrived(state) => state,
            Incoming::Awaiting(rx, deadline) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(state)) => state,
                Ok(Err(_)) | Err(_) => None,
            },
        }
    }
}

impl Runtime {
    /// Another node is about to hand these sessions here.
    pub(crate) fn expect(&self, expect: Expect) {
        let _ = self.supervisor.cast(SupervisorMsg::Expect(expect));
    }

    /// A moved session's state arrived; whether it was taken.
    pub(crate) async fn state_arrived(&self, handoff: HandoffState) -> bool {
        let state = match handoff.snapshot {
            None => None,
            Some(text) => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => return false,
            },
        };
        matches!(
            self.supervisor
                .call(
                    |reply| SupervisorMsg::Arrived {
                        uid: handoff.uid,
                        epoch: handoff.epoch,
                        state,
                        reply,
                    },
                    Some(HANDOFF_WAIT),
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }
}
