//! confab's production shell: the actors that carry sessions, on ractor.
//!
//! - [`router`]: one Router per node. It looks each uid up on the ring and sends
//!   the turn to the owner: this node's supervisor, or another member's peer.
//!   It holds no state, so it is no actor: the caller's task routes.
//! - [`supervisor`]: the SessionSupervisor. It spawns one SessionActor per uid
//!   on demand, bounds each session's queue, passivates idle sessions and
//!   restarts a failed one from its durable state.
//! - [`session_actor`]: the SessionActor. It dedupes, runs the dialog pipeline,
//!   has the committer record the turn's events, and only then answers.
//! - [`committer`]: group commit. Events of all sessions go to the durable tier in
//!   one transaction per batch, bounded in size and in delay.
//! - [`snapshotter`]: periodic snapshots, written in batches off the turn path.
//! - [`dialog`]: the loaded policy versions, hot reload and the canary split.
//! - [`actions`]: running a policy's actions, with retries and the dead-letter queue.
//! - [`stages`]: external HTTP stages before the NLU and after the reply.
//! - [`stats`]: the node's running aggregate of its turns, and the cluster-wide
//!   sum of every member's, asked by fan-out (`confabctl stats`).
//!
//! [`Runtime`] is the handle the gateway holds: it bounds the turns in flight
//! on the node and turns every outcome into a metric.

pub mod actions;
mod api;
pub mod cluster;
mod cluster_error;
pub mod cluster_tls;
pub mod committer;
mod config;
pub mod dialog;
pub mod drain;
pub mod handoff;
pub mod http;
mod identity;
mod invariant;
pub mod keys;
pub mod messages;
mod reencrypt;
mod residents;
pub mod router;
mod runtime;
pub mod sealed;
pub mod session_actor;
mod shared;
pub mod snapshotter;
pub mod stages;
pub mod stats;
pub mod supervisor;
pub mod trace_context;
pub mod wire;

pub use api::{
    Reply, SessionAnswer, SessionAsk, SessionInfo, SessionRequest, TurnError, TurnOutcome,
    TurnRequest,
};
pub use config::{EVENTS_PAGE_MAX, RuntimeConfig};
pub use runtime::{Runtime, StartError};
pub(crate) use shared::{Shared, now_ms, publish_dlq_depth};
