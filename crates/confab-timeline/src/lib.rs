//! What a cluster run looked like: nodes over time, with epochs, faults,
//! migrations and violations. The simulator (`confab-sim run --timeline
//! FILE.svg`) and the nemesis of the real cluster (`confab-bench nemesis`) each
//! fill a [`Timeline`]; [`svg::render`] draws it, the same picture for both.
//! Times are milliseconds from the start of the run (simulated or real).

pub mod svg;

use serde::Serialize;

/// A whole run, as drawn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// The scenario's name.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// When the run ended (ms from the start of the run).
    pub end_ms: u64,
    /// When the faults stopped and the liveness phase began.
    pub faults_end_ms: u64,
    /// The rows: node names (`n1`, `n2`, ...), in order.
    pub nodes: Vec<String>,
    /// What each node was, over time. Spans of one node do not overlap.
    pub spans: Vec<Span>,
    /// Every epoch the member table reached.
    pub epochs: Vec<EpochMark>,
    /// Every fault of the schedule.
    pub faults: Vec<FaultMark>,
    /// Every session handed from one node to another.
    pub migrations: Vec<MigrationMark>,
    /// Every invariant that broke.
    pub violations: Vec<ViolationMark>,
}

/// What a node is during a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Not started yet, or left the cluster.
    Off,
    /// In the member table, not yet in the ring.
    Joining,
    /// In the ring.
    Up,
    /// Leaving: out of the ring, handing its sessions off.
    Draining,
    /// Declared down by the others (it may still run, cut off).
    Down,
    /// Crashed: the process is gone.
    Crashed,
    /// Paused (a long GC pause or a frozen VM): it does nothing, then resumes.
    Paused,
}

/// One node in one state from `from_ms` to `to_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// Index into [`Timeline::nodes`].
    pub node: usize,
    /// Start (ms from the start of the run).
    pub from_ms: u64,
    /// End (ms from the start of the run).
    pub to_ms: u64,
    /// The state.
    pub state: NodeState,
}

/// The member table reached `epoch` at `at_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochMark {
    /// When the compare-and-set that made it was applied.
    pub at_ms: u64,
    /// The epoch.
    pub epoch: u64,
    /// Its ring: the `Up` nodes' indexes.
    pub ring: Vec<usize>,
}

/// One fault of the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct FaultMark {
    /// Its index in the schedule (what `--faults` and `shrink` name).
    pub index: usize,
    /// What it is, in a few words (`crash n3`, `partition n1,n2 | n3`).
    pub label: String,
    /// Start.
    pub from_ms: u64,
    /// End (equal to `from_ms` for an instant fault).
    pub to_ms: u64,
    /// The nodes it hits (empty: the stores, or the whole network).
    pub nodes: Vec<usize>,
}

/// A session handed from `from` to `to`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationMark {
    /// The session's index.
    pub session: u32,
    /// The old owner's index.
    pub from: usize,
    /// The new owner's index.
    pub to: usize,
    /// When the epoch that moved it was made.
    pub start_ms: u64,
    /// When the new owner served it; `None`: never within the run.
    pub end_ms: Option<u64>,
}

/// An invariant that broke.
#[derive(Debug, Clone, Serialize)]
pub struct ViolationMark {
    /// When.
    pub at_ms: u64,
    /// The node involved, if one is.
    pub node: Option<usize>,
    /// What broke.
    pub text: String,
}
