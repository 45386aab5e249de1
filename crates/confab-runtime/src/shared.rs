//! What every actor of a node shares.

use crate::actions::ActionRunner;
use crate::dialog::Dialog;
use crate::stages::Stages;
use crate::{RuntimeConfig, drain, handoff, wire};
use confab_core::NodeId;
use confab_store::Store;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::committer::Committer;
use crate::snapshotter::Snapshotter;

/// What every actor of the node shares: its configuration, the services a
/// turn calls, its drain, and what it knows of the cluster.
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) committer: Committer,
    pub(crate) snapshotter: Snapshotter,
    pub(crate) dialog: Dialog,
    pub(crate) actions: ActionRunner,
    pub(crate) stages: Stages,
    /// This node's drain, if one was asked for.
    pub(crate) drain: drain::DrainCell,
    /// The ring, the member table, the links, and the channels to the
    /// cluster's tasks.
    pub(crate) cluster: ClusterView,
    /// The running aggregate of the turns this node's sessions answer.
    pub(crate) stats: crate::stats::StatsCell,
}

/// What a node knows of the cluster, as its cluster tasks last wrote it: each
/// part is replaced whole by the one task that owns it (membership writes the
/// table, the ring and `isolated`; the peer watcher the peers), and read by
/// every actor.
pub(crate) struct ClusterView {
    /// The ring the node routes by, replaced whole when membership changes.
    pub(crate) ring: std::sync::RwLock<Arc<confab_core::ring::Ring>>,
    /// The other members' peer actors, by node id (empty on a single node).
    pub(crate) peers:
        std::sync::RwLock<std::collections::BTreeMap<NodeId, ActorRef<wire::PeerMsg>>>,
    /// The member table as this node last saw it (`None` without a cluster).
    pub(crate) members: std::sync::RwLock<Option<confab_core::membership::MemberTable>>,
    /// The membership machine's input, once the cluster runs.
    pub(crate) membership:
        std::sync::OnceLock<tokio::sync::mpsc::Sender<confab_core::membership::Input>>,
    /// Whether this node is up but cut off from the majority of the members
    /// up (membership's quorum): it then serves nothing.
    pub(crate) isolated: std::sync::atomic::AtomicBool,
    /// The members this node has not heard within the quorum window
    /// (membership's `hears`): a turn is not forwarded to them, and one in
    /// flight to them is failed.
    pub(crate) unheard: std::sync::RwLock<std::collections::BTreeSet<NodeId>>,
    /// When the ring in force was adopted (`confab_migration_seconds` runs from it).
    pub(crate) ring_since: std::sync::Mutex<tokio::time::Instant>,
    /// The load each member last reported in its heartbeat (this node's own is
    /// read live): what `confabctl nodes` and the dashboard show.
    pub(crate) loads: std::sync::RwLock<std::collections::BTreeMap<NodeId, wire::MemberLoad>>,
    /// Sessions resident on this node, as the supervisor last counted them.
    pub(crate) resident: std::sync::atomic::AtomicU64,
    /// Turns this node answered since it started.
    pub(crate) turns_total: std::sync::atomic::AtomicU64,
    /// Moved sessions' states on their way to their new owners, batched.
    pub(crate) handoff_outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<handoff::Outgoing>>,
    /// The lease this node holds on its id, once the cluster runs.
    pub(crate) id_lease: std::sync::OnceLock<Arc<crate::identity::Held>>,
}

impl ClusterView {
    /// A node alone on `ring`, before its cluster tasks start.
    pub(crate) fn new(ring: confab_core::ring::Ring) -> Self {
        Self {
            ring: std::sync::RwLock::new(Arc::new(ring)),
            peers: Default::default(),
            members: Default::default(),
            membership: std::sync::OnceLock::new(),
            isolated: Default::default(),
            unheard: Default::default(),
            ring_since: std::sync::Mutex::new(tokio::time::Instant::now()),
            loads: Default::default(),
            resident: Default::default(),
            turns_total: Default::default(),
            handoff_outbox: std::sync::OnceLock::new(),
            id_lease: std::sync::OnceLock::new(),
        }
    }

    /// The member table as this node last saw it.
    pub(crate) fn members(&self) -> Option<confab_core::membership::MemberTable> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A member's status in that table, if listed.
    pub(crate) fn status_of(&self, node: &NodeId) -> Option<confab_core::membership::Status> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|table| table.members.get(node).copied())
    }
}

impl Shared {
    /// The ring in force.
    pub(crate) fn ring(&self) -> Arc<confab_core::ring::Ring> {
        Arc::clone(&self.cluster.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Asks membership to read the table now (a message came routed at a newer
    /// epoch); false without a cluster (nothing to wait for).
    pub(crate) fn refresh_membership(&self) -> bool {
        match self.cluster.membership.get() {
            Some(tx) => {
                let _ = tx.try_send(confab_core::membership::Input::Refresh);
                true
            }
            None => false,
        }
    }

    /// Whether this node is cut off from the majority of the cluster.
    pub(crate) fn is_isolated(&self) -> bool {
        self.cluster
            .isolated
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a forward to `node` has a live link: its peer actor is
    /// connected and membership heard it within the quorum window.
    pub(crate) fn linked(&self, node: &NodeId) -> bool {
        self.peer(node).is_some()
            && !self
                .cluster
                .unheard
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(node)
    }

    /// The peer actor of a member, if connected.
    pub(crate) fn peer(&self, node: &NodeId) -> Option<ActorRef<wire::PeerMsg>> {
        self.cluster
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }
}

/// Sets `confab_dlq_depth` from the store; a failure leaves it as it was.
pub(crate) async fn publish_dlq_depth(store: &dyn Store) {
    match store.dead_letter_depth().await {
        Ok(depth) => metrics::gauge!("confab_dlq_depth").set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the dead-letter depth"),
    }
}

/// Milliseconds since the Unix epoch: the shell's clock, passed into the core.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
