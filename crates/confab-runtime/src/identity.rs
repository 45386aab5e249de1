//! One live node per node id.
//!
//! A node started with the id of a node that is running (a copied config, a
//! forgotten `--node-id`, which defaults to `node-1`) would publish its address
//! over the live node's, take its place in the others' links and keep the ring
//! changing while neither serves. So each node holds a lease on its id in the
//! store's settings (`cluster.alive.<id>`: a random incarnation, its cluster
//! address, the time), renewed every [`RENEW_EVERY`], and a node starting
//! checks it first, as Akka refuses a second member at a live member's address:
//! - no lease, or one its holder wrote at this node's own address (whose
//!   port this node has just bound, so the holder is gone: a restart), or one
//!   not renewed for [`STALE_AFTER`] by the holder's clock: the node takes it;
//! - a recent lease at another address: the node watches it for
//!   [`WATCH_FOR`]; renewed meanwhile, the id is in use and the node refuses to
//!   start ([`ClusterError::DuplicateId`]); not renewed, its holder is gone and
//!   the node takes it (a node restarted at a new address waits that long).
//!
//! A clean stop gives the lease back ([`release`]: its time set to 0), so the
//! node starts again at once wherever it is dialled.
//!
//! The lease decides nothing about sessions: fencing does (ADR 10). A holder
//! that finds its lease taken over (it was paused past [`STALE_AFTER`] and a
//! node with its id started meanwhile) says so in its log at every renewal and
//! leaves the lease to the newer one.

use crate::cluster::ClusterError;
use confab_core::NodeId;
use confab_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often a node renews the lease on its id.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A lease not renewed for this long (by its holder's clock against this
/// node's) is taken without watching it.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long a starting node watches a recent lease at another address for a
/// renewal.
pub(crate) const WATCH_FOR: Duration = Duration::from_secs(3);
/// Tries to write the lease before giving up on a store that keeps changing it.
const TRIES_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Lease {
    incarnation: u64,
    address: String,
    at_ms: u64,
}

fn key(me: &NodeId) -> String {
    format!("cluster.alive.{me}")
}

fn unreadable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(format!("cannot read or write this node's id lease: {e}"))
}

async fn read(store: &dyn Store, me: &NodeId) -> Result<Option<(u64, Lease)>, ClusterError> {
    let Some(setting) = store.setting(&key(me)).await.map_err(unreadable)? else {
        return Ok(None);
    };
    // A body this version cannot read is taken as no lease at all.
    Ok(serde_json::from_str(&setting.body)
        .ok()
        .map(|lease| (setting.revision, lease)))
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
    for _ in 0..TRIES_MAX {
        let held = read(store.as_ref(), me).await?;
        let revision = match &held {
            None => 0,
            Some((revision, lease)) => {
                let fresh = crate::shared::now_ms().saturating_sub(lease.at_ms)
                    < STALE_AFTER.as_millis() as u64;
                if lease.address != address && fresh {
                    watch(store.as_ref(), me, *revision, lease).await?;
                }
                *revision
            }
        };
        let lease = Lease {
            incarnation,
            address: address.to_owned(),
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

/// Waits [`WATCH_FOR`] for the holder of `lease` to renew it.
async fn watch(
    store: &dyn Store,
    me: &NodeId,
    revision: u64,
    lease: &Lease,
) -> Result<(), ClusterError> {
    tracing::info!(node = %me, holder = %lease.address, "this node id has a recent lease at another address: watching it for a renewal");
    let deadline = tokio::time::Instant::now() + WATCH_FOR;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RENEW_EVERY / 4).await;
        match read(store, me).await? {
            Some((now, held)) if now != revision => {
                return Err(ClusterError::DuplicateId {
                    id: me.to_string(),
                    address: held.address,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The lease a running node holds.
pub(crate) struct Held {
    address: String,
    incarnation: u64,
    released: std::sync::atomic::AtomicBool,
}

impl Held {
    pub(crate) fn new(address: &str, incarnation: u64) -> Self {
        Self {
            address: address.to_owned(),
            incarnation,
            released: Default::default(),
        }
    }
}

/// Renews the lease every [`RENEW_EVERY`] until it is released. A failed
/// write is tried again at the next renewal; a lease another incarnation holds
/// is left to it.
pub(crate) async fn renew(store: Arc<dyn Store>, me: NodeId, held: Arc<Held>) {
    let (address, incarnation) = (&held.address, held.incarnation);
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if held.released.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let held = match read(store.as_ref(), &me).await {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(error = %e, "cannot renew this node's id lease; trying again");
                continue;
            }
        };
        let revision = match held {
            Some((_, lease)) if lease.incarnation != incarnation => {
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
            incarnation,
            address: address.clone(),
            at_ms: crate::shared::now_ms(),
        };
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
        let Ok(Some((revision, mut lease))) = read(store, me).await else {
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
        assert_eq!(
            (lease.incarnation, lease.address.as_str()),
            (5, "10.0.0.5:7070")
        );
        assert!(lease.at_ms > 0);
    }
}
