//! confab's deterministic core.
//!
//! Everything here is plain Rust that does no I/O, reads no clock and draws no
//! randomness: callers pass `now` (milliseconds since the Unix epoch) and get back
//! values to persist or send. The production shell (`confab-runtime`) and the
//! simulator drive the same code.
//!
//! - [`ids`]: newtypes for the domain's identifiers, with their validation rules.
//! - [`session`]: the event-sourced session (events, state, `apply`) and its
//!   HMAC-signed snapshot codec.
//! - [`ring`]: the consistent hash ring, 32 virtual nodes per member, with hashing
//!   pinned byte for byte.
//! - [`handoff`]: the one handoff protocol, as the machines both shells drive:
//!   a node's resident sessions and what a ring change moves ([`handoff::Node`]),
//!   one session's load, turns and move ([`handoff::Session`]), and the batched
//!   outbox of moved states ([`handoff::Outbox`]).
//! - [`membership`]: who is in the cluster, agreed through compare-and-set on a
//!   shared table, with heartbeats, failure detection, drain and rejoin.
//! - [`links`]: whom a node dials and when: every member with no link, down
//!   ones too, with backoff, for ever.
//! - [`routing`]: the router's decision for a turn: serve, forward to the owner,
//!   or refresh a stale ring.
//! - [`fencing`]: the store's fence, which refuses the writes of a stale owner.
//! - [`stats`]: a node's running aggregate of its turns (turns per minute,
//!   intents, slot fills), bounded, for `confabctl stats`.
//! - [`admission`]: how many turns a node lets in at once, adapted so that the
//!   turns it lets in are answered within a latency target.
//! - [`mutation`]: planted bugs for the simulator (the `mutations` feature).

pub mod admission;
pub mod crypto;
pub mod fencing;
pub mod handoff;
pub mod ids;
pub mod links;
pub mod membership;
pub mod mutation;
pub mod ring;
pub mod routing;
pub mod session;
pub mod stats;
#[cfg(test)]
mod test_rng;

pub use ids::{Epoch, IdError, MessageId, NodeId, Seq, Uid};
