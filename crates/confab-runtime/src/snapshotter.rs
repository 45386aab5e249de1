//! Periodic snapshots, written in batches off the sessions' path.
//!
//! A session hands its snapshot over and goes on with its turns; the writer
//! gathers snapshots for up to `SNAPSHOT_BATCH_DELAY` (or `SNAPSHOTS_PER_BATCH`)
//! and writes each batch in one transaction (and one Redis round trip). A
//! snapshot only saves replay time, so a full queue or a failed write loses
//! nothing: the session snapshots again later, and its events are durable.

use confab_store::{Store, StoredSnapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Snapshots per transaction, at most.
const SNAPSHOTS_PER_BATCH: usize = 256;
/// How long the first snapshot of a batch waits for others.
const SNAPSHOT_BATCH_DELAY: Duration = Duration::from_millis(50);

/// The handle sessions hand their snapshots to.
#[derive(Clone)]
pub struct Snapshotter {
    queue: mpsc::Sender<Offered>,
}

/// A snapshot, and where to record its seq once it is stored.
type Offered = (StoredSnapshot, Arc<AtomicU64>);

impl Snapshotter {
    /// Starts the writer task; at most `queue_max` snapshots wait for it.
    pub fn start(store: Arc<dyn Store>, queue_max: usize) -> Self {
        let (queue, rx) = mpsc::channel(queue_max.max(1));
        tokio::spawn(run(store, rx));
        Self { queue }
    }

    /// Queues a snapshot; `false` if the queue is full (the caller tries again
    /// later). Once it is written, `stored` is raised to its seq.
    pub fn offer(&self, snapshot: StoredSnapshot, stored: Arc<AtomicU64>) -> bool {
        let queued = self.queue.try_send((snapshot, stored)).is_ok();
        if !queued {
            metrics::counter!("confab_snapshots_deferred_total").increment(1);
        }
        queued
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Offered>) {
    let mut batch = Vec::with_capacity(SNAPSHOTS_PER_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + SNAPSHOT_BATCH_DELAY;
        while batch.len() < SNAPSHOTS_PER_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let snapshots: Vec<StoredSnapshot> = batch.iter().map(|(s, _)| s.clone()).collect();
        match store.write_snapshots(&snapshots).await {
            Ok(()) => {
                for (snapshot, stored) in &batch {
                    stored.fetch_max(snapshot.seq.0, Ordering::AcqRel);
                }
                metrics::counter!("confab_snapshot_writes_total").increment(batch.len() as u64);
            }
            Err(e) => {
                tracing::warn!(snapshots = batch.len(), error = %e, "periodic snapshots not written");
            }
        }
        batch.clear();
    }
}
