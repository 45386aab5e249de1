//! Redis in front of a durable store (MySQL, or the embedded SQLite).
//!
//! - **Writes** go to the durable store first; only once it has committed are
//!   they written through to Redis, in one round trip per batch. A Redis failure
//!   never fails a write: the durable commit is what an ack promises.
//! - **Loads** read Redis first. A hit gives the snapshot and the cached events,
//!   and the durable store is asked only for the events after the last cached
//!   one (an index probe that finds nothing when Redis is current). A miss loads
//!   from the durable store and fills Redis.
//! - **Fences** are claimed in both, durable first: the durable fence is the one
//!   that decides, the Redis fence keeps a stale writer out of the hot tier.
//!
//! - **Control** (the dead-letter queue and the settings) is the durable store's
//!   alone: Redis holds none of it.
//!
//! While Redis is down every request bypasses it (counted); see [`crate::redis`].

use crate::redis::{RedisTier, WriteThrough};
use crate::{
    ControlStore, DeadLetter, EventStore, SessionLog, Setting, SnapshotStore, Store, StoreError,
    StoreFuture, StoredSnapshot,
};
use confab_core::session::RecordedEvent;
use confab_core::{Epoch, Seq, Uid};
use std::sync::Arc;
use tracing::warn;

/// Redis over a durable store.
pub struct TieredStore {
    durable: Arc<dyn Store>,
    redis: RedisTier,
}

impl TieredStore {
    /// Puts `redis` in front of `durable`.
    pub fn new(durable: Arc<dyn Store>, redis: RedisTier) -> Self {
        Self { durable, redis }
    }

    /// The hot tier.
    pub fn redis(&self) -> &RedisTier {
        &self.redis
    }

    /// The durable tier.
    pub fn durable(&self) -> &Arc<dyn Store> {
        &self.durable
    }

    async fn write_through(&self, events: &[RecordedEvent]) {
        let Ok(outcomes) = self.redis.append(events).await else {
            return; // counted by the tier; readers find the gap and repair it
        };
        for (uid, outcome) in outcomes {
            match outcome {
                Ok(WriteThrough::Dropped) => {
                    tracing::debug!(uid = %uid, "cached log had a gap; dropped until reloaded");
                }
                Ok(_) => {}
                Err(e) => warn!(uid = %uid, error = %e, "write-through refused by the redis fence"),
            }
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
    fn commit_lane(&self, uid: &Uid) -> usize {
        self.durable.commit_lane(uid)
    }

    fn commit_writers(&self) -> usize {
        self.durable.commit_writers()
    }

    fn append<'a>(&'a self, events: &'a [RecordedEvent]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.durable.append(events).await?;
            self.write_through(events).await;
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

/// Every request goes to the durable store, which counts it.
impl ControlStore for TieredStore {
    fn dead_letter<'a>(&'a self, entry: &'a DeadLetter) -> StoreFuture<'a, u64> {
        self.durable.dead_letter(entry)
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<DeadLetter>> {
        self.durable.dead_letters(limit)
    }

    fn dead_letter_by_id(&self, id: u64) -> StoreFuture<'_, Option<DeadLetter>> {
        self.durable.dead_letter_by_id(id)
    }

    fn resolve_dead_letter(&self, id: u64, at_ms: u64) -> StoreFuture<'_, bool> {
        self.durable.resolve_dead_letter(id, at_ms)
    }

    fn dead_letter_depth(&self) -> StoreFuture<'_, u64> {
        self.durable.dead_letter_depth()
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Setting>> {
        self.durable.setting(key)
    }

    fn put_setting<'a>(
        &'a self,
        key: &'a str,
        expected: u64,
        body: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.durable.put_setting(key, expected, body)
    }
}

/// Asked of the durable tier: Redis holds copies.
impl crate::key_usage::KeyUsageStore for TieredStore {
    fn snapshot_key_versions(
        &self,
    ) -> StoreFuture<'_, std::collections::BTreeMap<confab_core::crypto::KeyVersion, u64>> {
        self.durable.snapshot_key_versions()
    }

    fn events_sealed_under(
        &self,
        version: confab_core::crypto::KeyVersion,
    ) -> StoreFuture<'_, u64> {
        self.durable.events_sealed_under(version)
    }

    fn snapshots_not_under<'a>(
        &'a self,
        version: confab_core::crypto::KeyVersion,
        after: Option<&'a Uid>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Uid>> {
        self.durable.snapshots_not_under(version, after, limit)
    }
}

/// Kept in the durable tier.
impl crate::audit::AuditStore for TieredStore {
    fn audit<'a>(&'a self, entry: &'a crate::audit::AuditEntry) -> StoreFuture<'a, u64> {
        self.durable.audit(entry)
    }

    fn audit_entries(&self, limit: usize) -> StoreFuture<'_, Vec<crate::audit::AuditEntry>> {
        self.durable.audit_entries(limit)
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
