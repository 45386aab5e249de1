//! The one handoff protocol: how a session lives on a node and moves to a new
//! owner when the ring changes, as three deterministic machines that both the
//! ractor shell (`confab-runtime`) and the simulator drive.
//!
//! - [`Node`]: the node's side. Which sessions are resident (routable here),
//!   whether a turn for a session may start it here ([`Admit`]), the sessions
//!   other nodes announced they hand here (`expected`), the states that arrived
//!   with no turn waiting (`arrived`), and, when the ring changes, which
//!   sessions to announce to their new owners and which to hand off.
//! - [`Session`]: one resident session. It waits for its old owner's state when
//!   one is coming, claims the session at the ring's epoch only if that ring
//!   names this node, serves one turn at a time in order, and, told to hand
//!   off, finishes the turns already queued, then hands its state over and
//!   stops. A session the store fenced refuses every turn and retires.
//! - [`Outbox`]: the states on their way out, gathered per new owner into
//!   batches of at most `batch_max`, each answered (taken or not) within
//!   `hold_ms`.
//!
//! The protocol, as a move runs:
//!
//! 1. Before the old owner routes by a new ring it announces each moved resident
//!    session to its new owner ([`Node::announce`], an `Expect`). The link
//!    between two nodes is ordered, so the announcement precedes every turn the
//!    old owner forwards by that ring.
//! 2. It adopts the ring ([`Node::adopt`]): the moved sessions leave its
//!    resident set (later turns are routed by the new ring, that is forwarded),
//!    and each is told to hand off ([`SessionInput::HandOff`]), at most
//!    `handoff_max` at once, the sessions talked to last first; each that stops
//!    lets the next one go ([`Node::handed`]).
//! 3. Each moved session serves the turns queued to it before the move, then
//!    hands its state to the outbox ([`SessionOutput::SendState`]). The outbox
//!    batches states per new owner and reports, for each, whether it was taken.
//!    Taken: the final snapshot goes through the batch writer. Not taken (or no
//!    answer within `hold_ms`): it is written at once, since the new owner loads
//!    from the durable tier.
//! 4. The new owner holds the turns of an expected session until its state
//!    arrives or `hold_ms` after the announcement; a state that arrives with no
//!    turn waiting is kept until the session's next turn. The session then claims
//!    the ring's epoch (which fences the old owner's writes) and loads from the
//!    state plus the later events, or from the durable tier alone.
//!
//! Safety rests on the store's fence, not on timing: a node claims only where
//! the ring in force names it, a write carries the epoch its session claimed,
//! and a fenced write is refused. A crashed owner sends nothing: its sessions are
//! not expected, and load from the durable tier on their new owners.

use crate::ids::NodeId;

mod node;
mod outbox;
mod session;

pub use node::{Activity, Admit, Adopted, Arrival, Expect, HandOff, Limit, Node};
pub use outbox::{Batch, Moved, Outbox};
pub use session::{
    Claimed, Deadline, Phase, Refusal, Served, Session, SessionInput, SessionOutput, Start,
};

/// The protocol's limits and timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffConfig {
    /// How long a new owner holds an expected session's turns for its state,
    /// and how long an old owner waits for the new owner to take it (ms).
    pub hold_ms: u64,
    /// States sent to one node in one message, at most.
    pub batch_max: usize,
    /// How long the outbox gathers states before it sends what it has (ms),
    /// unless every session handing off at once (`handoff_max`) has pushed
    /// its state: then it sends at once.
    pub linger_ms: u64,
    /// Resident sessions on a node, at most; also bounds the expected and
    /// arrived sessions.
    pub resident_max: usize,
    /// Turns queued to one session (waiting and in flight), at most.
    pub queue_max: usize,
    /// Sessions handing off at once on one node, at most (told to, and not
    /// stopped yet). A ring change moves tens of thousands at once; the rest
    /// wait their turn, the sessions talked to last first, so that the turns
    /// of users talking now interleave with the handoff instead of queueing
    /// behind all of it.
    pub handoff_max: usize,
    /// How long a state that arrived with no turn waiting is kept (ms).
    pub arrived_keep_ms: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            hold_ms: 1_000,
            batch_max: 256,
            linger_ms: 2,
            resident_max: 100_000,
            queue_max: 64,
            // 2,048 at once made every turn of the node wait behind the
            // handing-off actors' tasks in the scheduler's queues (join pause
            // p99 178-314 ms); 256 gave 94-263 ms and 64 gave 42-75 ms on a
            // slower machine, the last moved sessions arriving within 1-2 s
            // instead of 0.5-1 s (docs/benchmarks.md, 2026-12-05).
            handoff_max: 64,
            arrived_keep_ms: 300_000,
        }
    }
}

impl HandoffConfig {
    /// Whether a resident session holding `queued` turns takes one more: the
    /// rule [`Node::admit`] applies, and the one a shell applies when it
    /// delivers a resident session's turn itself ([`Node`]'s fast path).
    pub fn delivers(&self, queued: usize) -> bool {
        queued < self.queue_max
    }
}

/// Where a session goes when it moves: its new owner, if this node is linked
/// to it (`None`: nobody takes the state; the new owner loads from the durable
/// tier).
pub type Destination = Option<NodeId>;

#[cfg(test)]
mod tests;
