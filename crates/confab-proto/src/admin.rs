//! The admin API's bodies: JSON under `/admin/v1/`, for tokens with scope `admin`.
//! `confabctl` and the node share these types. `docs/operations.md` lists the
//! endpoints for people.
//!
//! | method and path | body in | body out |
//! | --- | --- | --- |
//! | `GET /admin/v1/status` | | [`NodeStatus`] |
//! | `GET /admin/v1/policy` | | [`PolicyStatus`] |
//! | `POST /admin/v1/policy/reload` | | [`ReloadReport`] (422 when refused) |
//! | `GET /admin/v1/canary` | | [`CanaryStatus`] |
//! | `PUT /admin/v1/canary` | [`CanarySet`] | [`CanaryStatus`] |
//! | `POST /admin/v1/canary/rollback` | | [`CanaryStatus`] |
//! | `POST /admin/v1/canary/promote` | | [`CanaryStatus`] |
//! | `GET /admin/v1/dlq?limit=N` | | [`DlqList`] |
//! | `POST /admin/v1/dlq/replay` | [`DlqReplay`] | [`DlqReplayReport`] |
//! | `GET /admin/v1/sessions/{uid}` | | [`SessionView`] |
//! | `GET /admin/v1/sessions/{uid}/locate` | | [`SessionLocation`] |
//! | `GET /admin/v1/ring` | | [`RingView`] |
//! | `GET /admin/v1/nodes` | | [`NodesView`] |
//! | `POST /admin/v1/nodes/{id}/drain` | | [`DrainView`] (404 for a non-member) |
//! | `GET /admin/v1/nodes/{id}/drain` | | [`DrainView`] |
//! | `GET /admin/v1/stats?deadline_ms=N` | | [`ClusterStats`] (every member asked) |
//! | `GET /admin/v1/stats/local` | | [`NodeStats`] (the node asked, alone) |
//!
//! Every error is an HTTP status of 400 or more with an [`AdminError`] body.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The path prefix of every admin endpoint.
pub const ADMIN_PREFIX: &str = "/admin/v1";

/// The body of every admin error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// What went wrong, and what to do about it.
    pub error: String,
}

/// `GET /admin/v1/status`: one node's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node: String,
    /// The confab version the node runs.
    pub version: String,
    /// Whether the node serves (its actors run and its store answers).
    pub ready: bool,
    /// Sessions resident in memory.
    pub sessions_resident: u64,
    /// The ring epoch the node routes at.
    pub ring_epoch: u64,
    /// Which policy versions serve which users.
    pub policy: PolicyStatus,
    /// Actions waiting in the dead-letter queue.
    pub dlq_depth: u64,
}

/// One loaded policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersionInfo {
    /// Its name (`v1`, `v2`...): the folder under the flows dir.
    pub version: String,
    /// The flows it holds, sorted.
    pub flows: Vec<String>,
    /// A digest of its files: equal digests, equal policies.
    pub digest: String,
}

/// Why a set of flow files was refused: the first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyErrorBody {
    /// The file, relative to the flows dir.
    pub file: String,
    /// 1-based line of the problem, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}: ", self.file)?,
            (Some(line), None) => write!(f, "{}:{line}: ", self.file)?,
            _ => write!(f, "{}: ", self.file)?,
        }
        f.write_str(&self.message)
    }
}

/// `GET /admin/v1/policy`: what is loaded and what serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The folder the flows are read from.
    pub flows_dir: String,
    /// Every loaded version, sorted.
    pub versions: Vec<PolicyVersionInfo>,
    /// The canary split in force.
    pub canary: CanaryStatus,
    /// When the flows were last loaded, ms since the Unix epoch.
    pub loaded_ms: u64,
    /// The last reload's refusal, while the files stay wrong; `None` once a
    /// reload succeeds. The previous policy keeps serving meanwhile.
    pub last_error: Option<PolicyErrorBody>,
}

/// `POST /admin/v1/policy/reload`: the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Whether the new files were taken.
    pub ok: bool,
    /// The versions serving after the reload, sorted.
    pub versions: Vec<PolicyVersionInfo>,
    /// Why the files were refused (`ok` is false).
    pub error: Option<PolicyErrorBody>,
}

/// `PUT /admin/v1/canary`: send the users whose uid tail is in `tails` to `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanarySet {
    /// A loaded policy version.
    pub version: String,
    /// uid tails, each 0 to 9.
    pub tails: Vec<u8>,
}

/// The canary split in force, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// The version every user not in the canary gets.
    pub stable: String,
    /// The canary version, if one is set.
    pub canary: Option<String>,
    /// The uid tails sent to the canary, sorted.
    pub tails: Vec<u8>,
    /// Percent of uid tails on the canary (10 per tail).
    pub canary_percent: u8,
    /// Bumped on every change, so that nodes pick up the newest split.
    pub revision: u64,
}

/// One action in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntryBody {
    /// The entry's id, for `dlq replay ID`.
    pub id: u64,
    /// The session the action belongs to.
    pub uid: String,
    /// The seq of its `action_requested` event: with the uid, its idempotency key.
    pub seq: u64,
    /// The action's name.
    pub action: String,
    /// Its arguments.
    pub args: BTreeMap<String, String>,
    /// Why it failed the last time.
    pub reason: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub created_ms: u64,
}

/// `GET /admin/v1/dlq`: the queue, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqList {
    /// Entries waiting, in all.
    pub depth: u64,
    /// The oldest ones, up to the limit asked.
    pub entries: Vec<DlqEntryBody>,
}

/// `POST /admin/v1/dlq/replay`: one entry, or all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReplay {
    /// The entry to replay; `None` with `all`.
    pub id: Option<u64>,
    /// Replay every entry.
    #[serde(default)]
    pub all: bool,
}

/// The outcome of one replayed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReplayOutcome {
    /// The entry's id.
    pub id: u64,
    /// Whether the action succeeded (the entry left the queue).
    pub ok: bool,
    /// What happened.
    pub message: String,
}

/// `POST /admin/v1/dlq/replay`: what each replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqReplayReport {
    /// One outcome per entry tried, in id order.
    pub outcomes: Vec<DlqReplayOutcome>,
    /// Entries still waiting after the replay.
    pub depth: u64,
}

/// `GET /admin/v1/sessions/{uid}`: a session as ops may see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The user.
    pub uid: String,
    /// The highest seq recorded.
    pub seq: u64,
    /// The node that owns the session.
    pub owner: String,
    /// The ring epoch it is owned at.
    pub epoch: u64,
    /// Its slots, sensitive values masked.
    pub slots: BTreeMap<String, String>,
    /// The intent of its last turn.
    pub last_intent: Option<String>,
    /// The policy version its uid is routed to now.
    pub policy: String,
    /// An action started and not yet finished, if any.
    pub pending_action: Option<String>,
}

/// One virtual node of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNodeView {
    /// Its position on the ring (the pinned 64-bit hash).
    pub position: u64,
    /// The member that owns it.
    pub node: String,
    /// Its index among its member's virtual nodes.
    pub index: u32,
}

/// `GET /admin/v1/ring`: the ring this node routes by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingView {
    /// Its epoch.
    pub epoch: u64,
    /// Its members, sorted.
    pub nodes: Vec<String>,
    /// Every virtual node, in ring order.
    pub vnodes: Vec<VNodeView>,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// `joining`, `up`, `draining` or `down`.
    pub status: String,
    /// Its virtual nodes on the ring.
    pub vnodes: u32,
    /// Whether it is the node answering.
    pub this_node: bool,
    /// Whether the answering node has a live link to it (always true for itself).
    pub connected: bool,
    /// Sessions resident in its memory, as its last heartbeat said (`null`
    /// before one arrived).
    #[serde(default)]
    pub sessions_resident: Option<u64>,
    /// Turns it had admitted and not yet answered, as its last heartbeat said.
    #[serde(default)]
    pub inflight_turns: Option<u64>,
    /// Turns it answered since it started, as its last heartbeat said: two
    /// readings a second apart give its turns per second.
    #[serde(default)]
    pub turns_total: Option<u64>,
}

/// `GET /admin/v1/nodes`: the members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesView {
    /// The ring epoch.
    pub epoch: u64,
    /// The members, sorted by id.
    pub nodes: Vec<MemberView>,
}

/// `POST|GET /admin/v1/nodes/{id}/drain`: a node's drain, started or followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    /// The node.
    pub node: String,
    /// `serving`, `draining` or `left` (out of the member table; the process stops).
    pub state: String,
    /// Session actors on the node when the drain began.
    pub sessions_at_start: u64,
    /// Session actors still on it.
    pub sessions_left: u64,
}

/// `DELETE /admin/v1/nodes/{id}`: a member declared down, being taken out of
/// the member table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalView {
    /// The node.
    pub node: String,
    /// `removing`: proposed; it is gone once `GET /admin/v1/nodes` no longer
    /// lists it.
    pub state: String,
}

/// `GET /admin/v1/sessions/{uid}/locate`: where a session lives, without
/// touching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLocation {
    /// The user.
    pub uid: String,
    /// The member that owns it on the ring.
    pub owner: String,
    /// The ring epoch.
    pub epoch: u64,
    /// The virtual node it falls on.
    pub vnode: VNodeView,
}

/// One data-key version in `GET /admin/v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersionView {
    /// The version.
    pub version: u32,
    /// When it was added, ms since the Unix epoch.
    pub created_ms: u64,
    /// Whether new writes use it (the newest).
    pub current: bool,
    /// The master key that wraps it.
    pub master: String,
    /// Stored snapshots sealed under it.
    pub snapshots: u64,
    /// Stored events holding a value sealed under it.
    pub events: u64,
}

/// `GET /admin/v1/keys`: the data-key ring and what each version covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysStatus {
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionView>,
    /// Snapshots still in the plaintext format 1 (written before the ring).
    pub plaintext_snapshots: u64,
}

/// `POST /admin/v1/keys/rotate` and `POST /admin/v1/keys/{version}/retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    /// The version added or retired.
    pub version: u32,
    /// The versions the ring holds after the change.
    pub versions: Vec<u32>,
}

/// One entry of `GET /admin/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Its id, in the order written.
    pub id: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who: the token's `sub`, or `-` without a valid token.
    pub who: String,
    /// The node that served it.
    pub node: String,
    /// What: method and path.
    pub action: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What came of it: `ok`, or the error.
    pub result: String,
}

/// `GET /admin/v1/audit`: the newest admin actions first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    /// The entries, newest first.
    pub entries: Vec<AuditView>,
}

/// A name and its count: an intent and the turns that served it, or a slot
/// and the turns that filled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCount {
    /// The intent or slot name.
    pub name: String,
    /// How many times.
    pub count: u64,
}

/// `GET /admin/v1/stats/local`: one node's own in-memory aggregate, kept as its
/// sessions answer turns (counted on the node that owns the session, when the
/// turn's commit is confirmed), since the node started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node.
    pub node: String,
    /// Sessions resident in its memory now.
    pub sessions_resident: u64,
    /// Turns its sessions answered in the last 60 seconds (the current second
    /// included).
    pub turns_last_minute: u64,
    /// Turns its sessions answered since it started.
    pub turns_total: u64,
    /// Answered turns by intent, most first (then by name); at most
    /// `names_max` names.
    pub intents: Vec<NameCount>,
    /// Turns whose intent was first seen after `names_max` intents were kept.
    pub intents_other: u64,
    /// Slot fills by slot name (a turn that filled or changed a slot fills it
    /// once), most first (then by name); at most `names_max` names.
    pub slot_fills: Vec<NameCount>,
    /// Fills of slots first seen after `names_max` slot names were kept.
    pub slot_fills_other: u64,
    /// The cap on distinct names kept per map (`runtime.max_stats_names`).
    pub names_max: u64,
    /// When it started counting (the node's start), ms since the Unix epoch.
    pub since_ms: u64,
}

/// One member's figures in [`ClusterStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStats {
    /// The member's id.
    pub id: String,
    /// Its status in the member table: `joining`, `up`, `draining` or `down`.
    pub status: String,
    /// Whether it answered within the deadline (its figures are in the totals).
    pub reachable: bool,
    /// Why it is not in the totals, when it is not.
    pub error: Option<String>,
    /// Sessions resident in its memory (`null` when unreachable).
    pub sessions_resident: Option<u64>,
    /// Turns its sessions answered in the last minute.
    pub turns_last_minute: Option<u64>,
    /// Turns its sessions answered since it started.
    pub turns_total: Option<u64>,
}

/// An intent's part of the answered turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentShare {
    /// The intent.
    pub name: String,
    /// Turns that served it.
    pub count: u64,
    /// Its part of every answered turn counted (`other` included), 0.0 to 1.0.
    pub share: f64,
}

/// How often a slot gets filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotFillRate {
    /// The slot.
    pub name: String,
    /// Turns that filled (or changed) it.
    pub fills: u64,
    /// Fills per answered turn, 0.0 to 1.0: the share of turns that filled it.
    pub per_turn: f64,
}

/// `GET /admin/v1/stats`: the cluster's aggregates, added up from every
/// member's own ([`NodeStats`]), asked in parallel with a deadline. Never read
/// from the stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// The node that asked the others and added up their answers.
    pub node: String,
    /// The ring epoch it routes at.
    pub ring_epoch: u64,
    /// How long it waited for each member, at most.
    pub deadline_ms: u64,
    /// Every member of the table, sorted by id; unreachable ones included.
    pub nodes: Vec<MemberStats>,
    /// The members that did not answer in time (or could not be asked),
    /// sorted: their figures are missing from everything below.
    pub unreachable: Vec<String>,
    /// Sessions resident, over the members that answered.
    pub sessions_resident: u64,
    /// Turns answered in the last minute, over the members that answered.
    pub turns_last_minute: u64,
    /// Turns answered since each member started, over the members that answered.
    pub turns_total: u64,
    /// Answered turns by intent, most first (then by name); at most
    /// `names_max` names.
    pub intents: Vec<IntentShare>,
    /// Turns of intents not listed (past a member's cap or the cluster's).
    pub intents_other: u64,
    /// Slot fills by slot name, most first (then by name); at most `names_max`.
    pub slot_fills: Vec<SlotFillRate>,
    /// Fills of slots not listed.
    pub slot_fills_other: u64,
    /// The cap on names listed (the answering node's `runtime.max_stats_names`).
    pub names_max: u64,
}
