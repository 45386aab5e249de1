//! Redis in front of a durable store (MySQL, or the embedded SQLite).
//!
//! - **Writes** go to the durable store first; once it has committed, the batch
//!   is queued for Redis and the write returns: the ack waits for the durable
//!   commit only. A background task writes the queue through in order, several
//!   batches per round trip. A Redis failure never fails a write, and a full
//!   queue skips Redis (counted as a bypass): readers find the gap and repair it.
//! - **Loads** read Redis first. A hit gives the snapshot and the cached events,
//!   and the durable store is asked only for the events after the last cached
//!   one (an index probe that finds nothing when Redis is current). A miss loads
//!   from the durable store and fills Redis.
//! - **Fences** are claimed in both, durable first: the durable fence is the one
//!   that decides, the Redis fence keeps a stale writer out of the hot tier.
//!
//! While Redis is down every request bypasses it (counted); see [`crate::redis`].

use crate::redis::{RedisTier, WriteThrough};
use crate::{
    EventStore, SessionLog, SnapshotStore, Store, StoreError, StoreFuture, StoredSnapshot,
};
use confab_core::session::RecordedEvent;
use confab_core::{Epoch, Seq, Uid};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Committed batches waiting to be written through, at most.
const WRITE_THROUGH_QUEUE_MAX: usize = 1024;
/// Events written through per round trip, at most.
const WRITE_THROUGH_EVENTS_MAX: usize = 8192;

enum WriteThroughJob {
    Events(Vec<RecordedEvent>),
    /// Answered once every job before it is done.
    Flush(oneshot::Sender<()>),
}

/// Redis over a durable store.
pub struct TieredStore {
    durable: Arc<dyn Store>,
    redis: Arc<RedisTier>,
    write_through: mpsc::Sender<WriteThroughJob>,
}

impl TieredStore {
    /// Puts `redis` in front of `durable`, and starts the write-through task on
    /// the current tokio runtime.
    pub fn new(durable: Arc<dyn Store>, redis: RedisTier) -> Self {
        let redis = Arc::new(redis);
        let (write_through, jobs) = mpsc::channel(WRITE_THROUGH_QUEUE_MAX);
        tokio::spawn(write_through_in_order(Arc::clone(&redis), jobs));
        Self {
            durable,
            redis,
            write_through,
        }
    }

    /// Waits until every batch committed so far has been written through (or
    /// skipped): for tests and a clean shutdown.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self
            .write_through
            .send(WriteThroughJob::Flush(done))
            .await
            .is_ok()
        {
            let _ = flushed.await;
        }
    }

    /// The hot tier.
    pub fn redis(&self) -> &RedisTier {
        &self.redis
    }

    /// The durable tier.
    pub fn durable(&self) -> &Arc<dyn Store> {
        &self.durable
    }

    fn write_through(&self, events: &[RecordedEvent]) {
        let job = WriteThroughJob::Events(events.to_vec());
        if self.write_through.try_send(job).is_err() {
            self.redis.count_bypass("append");
        }
    }

    async fn load_tiered(&self, uid: &Uid, limit: usize) -> Result<SessionLog, StoreError> {
        if let Ok(Some(cached)) = self.redis.read(uid, None, limit).await {
            let mut events = cached.events;
            if events.len() < limit {
                let tail = self
                    .durable
                    .events_after(uid, cached.last, limit - events.len())
                    .await?;
                if !tail.is_empty() {
                    // Redis missed writes while it was away: complete it.
                    events.extend(tail);
                    let log = SessionLog {
                        snapshot: cached.snapshot,
                        events,
                    };
                    if log.events.len() < limit {
                        let _ = self.redis.fill(uid, &log).await;
                    }
                    return Ok(log);
                }
            }
            return Ok(SessionLog {
                snapshot: cached.snapshot,
                events,
            });
        }
        let log = self.durable.load(uid, limit).await?;
        if log.events.len() < limit {
            let _ = self.redis.fill(uid, &log).await;
        }
        Ok(log)
    }

    async fn events_after_tiered(
        &self,
        uid: &Uid,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let Ok(Some(cached)) = self.redis.read(uid, Some(after), limit).await else {
            return self.durable.events_after(uid, after, limit).await;
        };
        let mut events = cached.events;
        if events.len() < limit {
            let from = events.last().map_or(after.max(cached.last), |e| e.seq);
            let tail = self
                .durable
                .events_after(uid, from, limit - events.len())
                .await?;
            events.extend(tail);
        }
        Ok(events)
    }
}

impl EventStore for TieredStore {
    fn append<'a>(&'a self, events: &'a [RecordedEvent]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.durable.append(events).await?;
            self.write_through(events);
            Ok(())
        })
    }

    fn claim<'a>(&'a self, uid: &'a Uid, epoch: Epoch) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.durable.claim(uid, epoch).await?;
            match self.redis.claim(uid, epoch).await {
                Err(fenced @ StoreError::Fenced { .. }) => Err(fenced),
                Ok(()) | Err(_) => Ok(()),
            }
        })
    }

    fn events_after<'a>(
        &'a self,
        uid: &'a Uid,
        after: Seq,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Box::pin(self.events_after_tiered(uid, after, limit))
    }
}

impl SnapshotStore for TieredStore {
    fn read_snapshot<'a>(&'a self, uid: &'a Uid) -> StoreFuture<'a, Option<StoredSnapshot>> {
        Box::pin(async move {
            if let Ok(Some(cached)) = self.redis.read(uid, None, 1).await
                && cached.snapshot.is_some()
            {
                return Ok(cached.snapshot);
            }
            self.durable.read_snapshot(uid).await
        })
    }

    fn write_snapshots<'a>(&'a self, snapshots: &'a [StoredSnapshot]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.durable.write_snapshots(snapshots).await?;
            let _ = self.redis.write_snapshots(snapshots).await;
            Ok(())
        })
    }
}

impl Store for TieredStore {
    fn tier(&self) -> &'static str {
        self.durable.tier()
    }

    /// The durable tier's health only: without Redis the node still serves.
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.durable.ping()
    }

    fn load<'a>(&'a self, uid: &'a Uid, limit: usize) -> StoreFuture<'a, SessionLog> {
        Box::pin(self.load_tiered(uid, limit))
    }
}

/// Writes committed batches through to Redis in commit order. A session's next
/// turn is committed only after its previous one was acked, which is after that
/// one's batch entered this queue: so each session's events arrive in order.
async fn write_through_in_order(redis: Arc<RedisTier>, mut jobs: mpsc::Receiver<WriteThroughJob>) {
    let mut events = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriteThroughJob::Events(batch) => events.extend(batch),
                WriteThroughJob::Flush(done) => flushes.push(done),
            }
            if events.len() < WRITE_THROUGH_EVENTS_MAX {
                next = jobs.try_recv().ok();
            }
        }
        if !events.is_empty() {
            // A failure is counted by the tier; readers find the gap and repair it.
            if let Ok(outcomes) = redis.append(&events).await {
                for (uid, outcome) in outcomes {
                    match outcome {
                        Ok(WriteThrough::Dropped) => {
                            tracing::debug!(uid = %uid, "cached log had a gap; dropped until reloaded");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(uid = %uid, error = %e, "write-through refused by the redis fence");
                        }
                    }
                }
            }
            events.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
