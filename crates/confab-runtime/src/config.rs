//! The runtime's limits and timings.

use crate::actions::ActionSettings;
use crate::stages::StageConfig;
use confab_core::session::SnapshotKey;
use confab_core::{Epoch, NodeId};
use std::time::Duration;

/// Events read from the store per page when a session is rebuilt or resumed.
pub const EVENTS_PAGE_MAX: usize = 512;

/// The runtime's limits and timings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Turns in flight on this node; past it, turns get `overloaded`.
    pub inflight_turns_max: usize,
    /// Turns queued for one session; past it, that session's turns get `overloaded`.
    pub session_queue_max: usize,
    /// A session with no turn for this long passivates.
    pub passivate_after: Duration,
    /// Events per group commit, at most.
    pub batch_events_max: usize,
    /// How long the first turn of a batch waits for others, at most.
    pub batch_delay_max: Duration,
    /// Group commits in flight at once.
    pub commit_concurrency: usize,
    /// Retries of a group commit the durable tier could not take, with
    /// exponential backoff and jitter; then the turns get `unavailable`.
    pub commit_retries: u32,
    /// How long a turn may wait for its commit to start; past it the turn gets
    /// `overloaded` (nothing recorded). Keep it well under `turn_timeout`.
    pub commit_wait_max: Duration,
    /// A session writes a snapshot once this many events follow its last one...
    pub snapshot_every_events: u64,
    /// ...or this long after its first event since then, whichever comes first.
    pub snapshot_every: Duration,
    /// How long a caller waits for a turn before giving up with `internal`
    /// (the outcome is unknown: retry with the same id).
    pub turn_timeout: Duration,
    /// Sessions resident in memory on this node; past it, new sessions get
    /// `overloaded` until idle ones passivate.
    pub resident_sessions_max: usize,
    /// Sessions this node hands off at once when the ring moves them away, at
    /// most; the rest wait their turn, the sessions talked to last first
    /// (`confab_core::handoff::HandoffConfig::handoff_max`).
    pub handing_off_max: usize,
    /// The key that signs snapshots.
    /// The key that checks snapshots of the plaintext format 1, written before
    /// the data-key ring (`store.snapshot_hmac_key`).
    pub snapshot_key: SnapshotKey,
    /// The data-key ring: seals events and snapshots ([`crate::keys`]).
    pub ring: confab_core::crypto::SharedRing,
    /// Snapshots the re-encryption job rewrites under the newest key version, per
    /// second at most; 0 stops it.
    pub reencrypt_per_s: u32,
    /// The ring epoch this node owns its sessions at (1 until the cluster
    /// moves sessions; a node started at a higher epoch fences older owners).
    pub epoch: Epoch,
    /// How actions are retried before they are dead-lettered.
    pub actions: ActionSettings,
    /// External HTTP stages, in order.
    pub stages: Vec<StageConfig>,
    /// Distinct intent names, and as many slot names, the node's turn
    /// aggregate keeps a count of their own (`confabctl stats`); the turns of
    /// names first seen past it are counted as `other`.
    pub stats_names_max: usize,
}
