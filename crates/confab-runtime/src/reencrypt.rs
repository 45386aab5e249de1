//! The re-encryption job: rewrites stored snapshots under the ring's newest key
//! version, so that old versions come to cover nothing and can be retired.
//!
//! Every node walks the snapshots not under the newest version, in uid order,
//! and rewrites those it owns on the ring (at most `per_s` a second), with its
//! ring epoch: the store's fence drops the write if a newer owner claimed the
//! session, and its seq rule drops it if the session wrote a newer snapshot
//! meanwhile (a dropped rewrite is tried again on a later pass).
//! Events are never rewritten: they are appended once and kept as written.

use crate::shared::Shared;
use confab_core::Uid;
use confab_core::session::Snapshot;
use confab_store::StoredSnapshot;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Uids read per page.
const PAGE: usize = 256;

/// Pause after a pass that rewrote snapshots, or after a failure.
const IDLE: Duration = Duration::from_secs(5);

/// Pause after a whole pass rewrote nothing, unless the newest key version
/// changes first (looked at every [`IDLE`]). A pass reads every stored
/// snapshot (each store compares the header of every body), about a second of
/// a database server's time per 10,000 sessions. A pass that found nothing
/// under an older version leaves only what a node that had not yet read a
/// rotation wrote since; one that found only snapshots this node does not own
/// (their owners rewrite them) or cannot rewrite would find the same again.
const SETTLED: Duration = Duration::from_secs(300);

/// Starts the job on this node, rewriting at most `per_s` snapshots a second.
pub(crate) fn start(shared: Arc<Shared>, per_s: u32) {
    if per_s == 0 {
        return;
    }
    let gap = Duration::from_secs(1) / per_s;
    tokio::spawn(async move {
        let mut after: Option<Uid> = None;
        // Whether the pass under way rewrote a snapshot.
        let mut rewrote = false;
        loop {
            let ring = shared.config.ring.get();
            let Ok(current) = ring.current().map(|k| k.version()) else {
                tokio::time::sleep(IDLE).await;
                continue;
            };
            let page = match shared
                .store
                .snapshots_not_under(current, after.as_ref(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "re-encryption: listing snapshots failed; retrying");
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            };
            if page.is_empty() {
                // A pass that rewrote nothing (it found no snapshot under an
                // older version, or only others' or ones it cannot rewrite)
                // waits before the next.
                after = None;
                if std::mem::take(&mut rewrote) {
                    tokio::time::sleep(IDLE).await;
                } else {
                    settle(&shared, current).await;
                }
                continue;
            }
            after = page.last().cloned();
            for uid in page {
                let cluster_ring = shared.ring();
                if cluster_ring.owner(&uid) != Some(&shared.config.node_id) {
                    continue;
                }
                match rewrite(&shared, &uid, cluster_ring.epoch()).await {
                    Ok(()) => rewrote = true,
                    Err(e) => {
                        debug!(uid = %uid, error = %e, "re-encryption of a snapshot skipped");
                    }
                }
                tokio::time::sleep(gap).await;
            }
        }
    });
}

/// Waits [`SETTLED`], or less if the newest key version stops being
/// `current` (a rotation).
async fn settle(shared: &Shared, current: confab_core::crypto::KeyVersion) {
    let until = tokio::time::Instant::now() + SETTLED;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(IDLE).await;
        let newest = shared.config.ring.get().current().map(|k| k.version());
        if newest.ok() != Some(current) {
            return;
        }
    }
}

async fn rewrite(shared: &Shared, uid: &Uid, epoch: confab_core::Epoch) -> Result<(), String> {
    let Some(stored) = shared
        .store
        .read_snapshot(uid)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let ring = shared.config.ring.get();
    let snapshot = Snapshot::open(&stored.bytes, uid, &ring, Some(&shared.config.snapshot_key))
        .map_err(|e| e.to_string())?;
    let key = ring.current().map_err(|e| e.to_string())?;
    let rewritten = StoredSnapshot {
        bytes: snapshot.seal(key, crate::sealed::random_nonce()),
        epoch,
        ..stored
    };
    shared
        .store
        .write_snapshots(&[rewritten])
        .await
        .map_err(|e| e.to_string())?;
    metrics::counter!("confab_snapshots_reencrypted_total").increment(1);
    Ok(())
}
