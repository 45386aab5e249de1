//! One live node per node id.
//!
//! A node started with the id of a node that is running (a copied config, a
//! forgotten `--node-id`, which defaults to `node-1`) would publish its address
//! over the live node's, take its place in the others' links and keep the ring
//! changing while neither serves. So each node holds a lease on its id in the
//! store's settings (`cluster.alive.<id>`: a random incarnation, its cluster
//! address, the time), renewed every [`RENEW_EVERY`], and a node starting
//! checks it first, as Akka refuses a second member at a live member's address:
//! - no lease, a released one, or one its holder wrote at this node's own
//!   socket (the same address, not a wildcard, on the same machine: this node
//!   has just bound that port, so the holder is gone: a restart): the node
//!   takes it;
//! - any other: the node watches it for [`WATCH_FOR`]; renewed by its holder
//!   meanwhile, the id is in use and the node refuses to start
//!   ([`ClusterError::DuplicateId`]); released, it looks again; not written,
//!   its holder is gone and the node takes it (so a node restarted elsewhere
//!   after a crash waits that long). The lease's time is never compared with
//!   this node's clock, which may differ from the holder's.
//!
//! A clean stop gives the lease back ([`release`]: its time set to 0), so the
//! node starts again at once wherever it is dialled.
//!
//! The lease decides nothing about sessions: fencing does (ADR 10). A holder
//! that finds its lease taken over (it was paused past [`WATCH_FOR`] while a
//! node with its id started) says so in its log at every renewal and
//! leaves the lease to the newer one.

use crate::cluster::ClusterError;
use confab_core::NodeId;
use confab_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often a node renews the lease on its id.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a starting node watches a lease held elsewhere for a renewal:
/// three renewals.
pub(crate) const WATCH_FOR: Duration = Duration::from_secs(3);
/// Tries to write the lease before giving up on a store that keeps changing it.
const TRIES_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Lease {
    incarnation: u64,
    address: String,
    /// The machine (and network namespace) the holder runs on: an address
    /// names one socket only there.
    #[serde(default)]
    host: String,
    /// When its holder last renewed it, by its clock; 0 once released.
    at_ms: u64,
}

/// This machine as the lease records it: the kernel's boot id (one per boot
/// of the machine or VM) and the hostname (one per container or pod).
fn this_host() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "{}/{}",
        read("/proc/sys/kernel/random/boot_id"),
        read("/proc/sys/kernel/hostname")
    )
}

/// Whether the node holding `lease` was dialled at the very socket this node
/// has just bound: the same address, not a wildcard, on this machine.
fn same_socket(lease: &Lease, address: &str, host: &str) -> bool {
    let wildcard = address.starts_with("0.0.0.0:") || address.starts_with("[::]:");
    lease.address == address && !wildcard && !host.starts_with('/') && lease.host == host
}

/// The setting that holds the lease: the id as it is, spaces (which setting
/// keys cannot hold) and `%` percent-encoded.
fn key(me: &NodeId) -> String {
    let id = me.as_str().replace('%', "%25").replace(' ', "%20");
    format!("cluster.alive.{id}")
}

fn unreadable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(format!("cannot read or write this node's id lease: {e}"))
}

/// The lease's revision, and the lease if this version can read its body (one
/// it cannot read is taken as none, and written over at that revision).
async fn read(
    store: &dyn Store,
    me: &NodeId,
) -> Result<Option<(u64, Option<Lease>)>, ClusterError> {
    let Some(setting) = store.setting(&key(me)).await.map_err(unreadable)? else {
        return Ok(None);
    };
    Ok(Some((
        setting.revision,
        serde_json::from_str(&setting.body).ok(),
    )))
}

async fn write(
    store: &dyn Store,
    me: &NodeId,
    revision: u64,
    lease: &Lease,
) -> Result<bool, ClusterError> {
    let body = serde_json::to_string(lease).expect("a lease serializes");
    store
        .put_setting(&key(me), revision, &body)
        .await
        .map_err(unreadable)
}

/// Takes the lease on `me` for a node dialled at `address`, or refuses
/// because a live node holds it. Call once this node's cluster port is bound.
pub(crate) async fn claim(
    store: &Arc<dyn Store>,
    me: &NodeId,
    address: &str,
    incarnation: u64,
) -> Result<(), ClusterError> {
    let host = this_host();
    for _ in 0..TRIES_MAX {
        let revision = match read(store.as_ref(), me).await? {
            None => 0,
            Some((revision, None)) => revision,
            // Released at a clean stop, or held at this very socket: gone.
            Some((revision, Some(lease)))
                if lease.at_ms == 0 || same_socket(&lease, address, &host) =>
            {
                revision
            }
            Some((revision, Some(lease))) => {
                match watch(store.as_ref(), me, revision, &lease).await? {
                    // Not renewed: its holder is gone.
                    Watched::Silent => revision,
                    // Released meanwhile, or taken by another starting node:
                    // look again.
                    Watched::Changed => continue,
                }
            }
        };
        let lease = Lease {
            incarnation,
            address: address.to_owned(),
            host: host.clone(),
            at_ms: crate::shared::now_ms(),
        };
        if write(store.as_ref(), me, revision, &lease).await? {
            return Ok(());
        }
    }
    Err(ClusterError::Store(format!(
        "the lease on node id {me} kept changing while this node took it: is another node starting with the same id?"
    )))
}

/// What watching a lease found.
enum Watched {
    /// Not written for [`WATCH_FOR`].
    Silent,
    /// Released, or written by another incarnation.
    Changed,
}

/// Watches `lease` for [`WATCH_FOR`]: renewed by its holder, the id is in use.
/// Its time is not compared with this node's clock (the holder's may be off):
/// only whether the holder writes it again.
async fn watch(
    store: &dyn Store,
    me: &NodeId,
    revision: u64,
    lease: &Lease,
) -> Result<Watched, ClusterError> {
    tracing::info!(node = %me, holder = %lease.address, "this node id has a lease held elsewhere: watching it for a renewal");
    let deadline = tokio::time::Instant::now() + WATCH_FOR;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RENEW_EVERY / 4).await;
        match read(store, me).await? {
            Some((now, Some(held))) if now != revision => {
                if held.incarnation == lease.incarnation && held.at_ms != 0 {
                    return Err(ClusterError::DuplicateId {
                        id: me.to_string(),
                        address: held.address,
                    });
                }
                return Ok(Watched::Changed);
            }
            Some((now, None)) if now != revision => return Ok(Watched::Changed),
            _ => {}
        }
    }
    Ok(Watched::Silent)
}

/// The lease a running node holds.
pub(crate) struct Held {
    address: String,
    host: String,
    incarnation: u64,
    released: std::sync::atomic::AtomicBool,
}

impl Held {
    pub(crate) fn new(address: &str, incarnation: u64) -> Self {
        Self {
            address: address.to_owned(),
            host: this_host(),
            incarnation,
            released: Default::default(),
        }
    }

    fn released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Renews the lease every [`RENEW_EVERY`] until it is released. A failed
/// write is tried again at the next renewal; a lease another incarnation holds
/// is left to it.
pub(crate) async fn renew(store: Arc<dyn Store>, me: NodeId, held: Arc<Held>) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if held.released() {
            return;
        }
        let stored = match read(store.as_ref(), &me).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::debug!(error = %e, "cannot renew this node's id lease; trying again");
                continue;
            }
        };
        let revision = match stored {
            // Released by this node (its stop raced this renewal): leave it.
            Some((_, Some(lease))) if lease.incarnation == held.incarnation && lease.at_ms == 0 => {
                return;
            }
            Some((_, Some(lease))) if lease.incarnation != held.incarnation => {
                tracing::error!(
                    node = %me,
                    holder = %lease.address,
                    "another node took over this node's id (this one was paused or cut off past the lease); stop one of them"
                );
                continue;
            }
            Some((revision, _)) => revision,
            None => 0,
        };
        let lease = Lease {
            incarnation: held.incarnation,
            address: held.address.clone(),
            host: held.host.clone(),
            at_ms: crate::shared::now_ms(),
        };
        // Released while this renewal read: leave the release in place.
        if held.released() {
            return;
        }
        if let Err(e) = write(store.as_ref(), &me, revision, &lease).await {
            tracing::debug!(error = %e, "cannot renew this node's id lease; trying again");
        }
    }
}

/// Gives the lease back at a clean stop: its time set to 0, so a node of this
/// id takes it at once. Best effort: a store that fails now leaves the lease
/// to go stale.
pub(crate) async fn release(store: &dyn Store, me: &NodeId, held: &Held) {
    held.released
        .store(true, std::sync::atomic::Ordering::Release);
    // A renewal already under way may write first: read again and retry.
    for _ in 0..TRIES_MAX {
        let Ok(Some((revision, Some(mut lease)))) = read(store, me).await else {
            return;
        };
        if lease.incarnation != held.incarnation {
            return;
        }
        lease.at_ms = 0;
        if !matches!(write(store, me, revision, &lease).await, Ok(false)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_store::sqlite::{SqliteOptions, SqliteStore};

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), &SqliteOptions::default())
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    /// The cases a starting node meets: a live holder elsewhere refuses it; a
    /// holder at its own address (a restart), a released lease or a holder
    /// that stopped renewing let it in.
    #[tokio::test]
    async fn a_live_holder_keeps_its_id_and_a_gone_one_gives_it_up() {
        let (_dir, store) = store().await;
        let me = NodeId::new("node-2").unwrap();
        claim(&store, &me, "10.0.0.2:7070", 1).await.unwrap();
        let held = Arc::new(Held::new("10.0.0.2:7070", 1));
        let renewing = tokio::spawn(renew(Arc::clone(&store), me.clone(), Arc::clone(&held)));

        // A second node elsewhere, while the first renews: refused.
        let refused = claim(&store, &me, "10.0.0.9:7070", 2).await.unwrap_err();
        assert!(
            matches!(&refused, ClusterError::DuplicateId { id, address } if id == "node-2" && address == "10.0.0.2:7070"),
            "{refused}"
        );
        // The holder stops renewing (it crashed): the one elsewhere waits out
        // the watch, then takes it.
        renewing.abort();
        let started = tokio::time::Instant::now();
        claim(&store, &me, "10.0.0.9:7070", 3).await.unwrap();
        assert!(started.elapsed() >= WATCH_FOR);
        // Restarted at the holder's own address: at once.
        let started = tokio::time::Instant::now();
        claim(&store, &me, "10.0.0.9:7070", 4).await.unwrap();
        assert!(started.elapsed() < WATCH_FOR);
        // Released at a clean stop: taken at once from anywhere.
        release(store.as_ref(), &me, &Held::new("10.0.0.9:7070", 4)).await;
        let started = tokio::time::Instant::now();
        claim(&store, &me, "10.0.0.5:7070", 5).await.unwrap();
        assert!(started.elapsed() < WATCH_FOR);
        // A release by an incarnation that no longer holds it changes nothing.
        release(store.as_ref(), &me, &Held::new("10.0.0.9:7070", 4)).await;
        let (_, lease) = read(store.as_ref(), &me).await.unwrap().unwrap();
        let lease = lease.unwrap();
        assert_eq!(
            (lease.incarnation, lease.address.as_str()),
            (5, "10.0.0.5:7070")
        );
        assert!(lease.at_ms > 0);
    }

    /// A wildcard address names no one socket: a second node advertising
    /// `0.0.0.0:7070` is watched, not let in, while the first renews. A lease
    /// released while a starting node watches it lets that node in.
    #[tokio::test]
    async fn a_wildcard_address_is_watched_and_a_release_during_the_watch_lets_in() {
        let (_dir, store) = store().await;
        let me = NodeId::new("node-1").unwrap();
        claim(&store, &me, "0.0.0.0:7070", 1).await.unwrap();
        let held = Arc::new(Held::new("0.0.0.0:7070", 1));
        let renewing = tokio::spawn(renew(Arc::clone(&store), me.clone(), Arc::clone(&held)));
        let refused = claim(&store, &me, "0.0.0.0:7070", 2).await.unwrap_err();
        assert!(
            matches!(refused, ClusterError::DuplicateId { .. }),
            "{refused}"
        );

        let starting = tokio::spawn({
            let (store, me) = (Arc::clone(&store), me.clone());
            async move { claim(&store, &me, "10.0.0.7:7070", 3).await }
        });
        tokio::time::sleep(RENEW_EVERY / 2).await;
        release(store.as_ref(), &me, &held).await;
        starting.await.unwrap().unwrap();
        renewing.await.unwrap();
        let (_, lease) = read(store.as_ref(), &me).await.unwrap().unwrap();
        assert_eq!(lease.unwrap().incarnation, 3);
    }
}
