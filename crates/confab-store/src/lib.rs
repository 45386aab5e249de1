//! confab's storage.
//!
//! - [`EventStore`] and [`SnapshotStore`]: what the runtime needs of a durable tier
//!   (append a batch of events in one transaction, read a session's events after a
//!   seq, read and write snapshots).
//! - [`sqlite::SqliteStore`]: the embedded default, one SQLite file in WAL mode in
//!   the data dir, safe to share between node processes on one machine.
//! - [`mysql::MySqlStore`]: the system of record on MySQL/MariaDB, events sharded
//!   into 64 tables by a pinned CRC-32 of the uid.
//! - [`redis::RedisTier`] and [`tiered::TieredStore`]: Redis as the hot tier in
//!   front of either durable store, written through on every commit and read
//!   first on every load.
//!
//! - [`membership::MembershipStore`]: the cluster's member table, changed by
//!   compare-and-set (SQLite for local clusters, Redis in production).
//! - [`ControlStore`]: what operators act on in either durable store: the
//!   dead-letter queue of failed actions, and cluster-wide settings changed by
//!   compare-and-set on their revision.
//!
//! Every write is fenced by the session's ring epoch: [`EventStore::claim`] raises
//! a session's fence, and a write from an older epoch gets [`StoreError::Fenced`].

/// Implements the store traits for a type whose inherent methods do the work
/// (`append_events`, `claim_epoch`, `load_events`, `load_snapshot`,
/// `store_snapshots`, `ping_db`, `lane_of`, `writers`), counting every request in `confab_store_requests_total`.
macro_rules! store_with_request_metrics {
    ($store:ty, $tier:expr) => {
        impl $crate::EventStore for $store {
            fn commit_lane(&self, uid: &confab_core::Uid) -> usize {
                self.lane_of(uid)
            }

            fn commit_writers(&self) -> usize {
                self.writers()
            }

            fn append<'a>(
                &'a self,
                events: &'a [confab_core::session::RecordedEvent],
            ) -> $crate::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::counted($tier, "append", self.append_events(events).await, |_| true)
                })
            }

            fn claim<'a>(
                &'a self,
                uid: &'a confab_core::Uid,
                epoch: confab_core::Epoch,
            ) -> $crate::StoreFuture<'a, ()> {
                Box::pin(async move {
                    $crate::counted($tier, "claim", self.claim_epoch(uid, epoch).await, |_| true)
                })
            }

            fn events_after<'a>(
                &'a self,
                uid: &'a confab_core::Uid,
                after: confab_core::Seq,
                limit: usize,
            ) -> $crate::StoreFuture<'a, Vec<confab_core::session::RecordedEvent>> {
                Box::pin(async move {
                    let loaded = self.load_events(uid, after, limit).await;
                    $crate::counted($tier, "events_after", loaded, |v| !v.is_empty())
                })
            }
        }

        impl $crate::SnapshotStore for $store {
            fn read_snapshot<'a>(
                &'a self,
                uid: &'a confab_core::Uid,
            ) -> $crate::StoreFuture<'a, Option<$crate::StoredSnapshot>> {
                Box::pin(async move {
                    let loaded = self.load_snapshot(uid).await;
                    $crate::counted($tier, "read_snapshot", loaded, Option::is_some)
                })
            }

            fn write_snapshots<'a>(
                &'a self,
                snapshots: &'a [$crate::StoredSnapshot],
            ) -> $crate::StoreFuture<'a, ()> {
                Box::pin(async move {
                    let written = self.store_snapshots(snapshots).await;
                    $crate::counted($tier, "write_snapshots", written, |_| true)
                })
            }
        }

        impl $crate::Store for $store {
            fn tier(&self) -> &'static str {
                $tier
            }

            fn ping(&self) -> $crate::StoreFuture<'_, ()> {
                Box::pin(self.ping_db())
            }
        }
    };
}
pub(crate) use store_with_request_metrics;

pub mod audit;
pub mod control;
pub mod key_usage;
pub mod membership;
pub mod mysql;
pub mod redis;
pub mod sqlite;
pub mod tiered;

pub use control::{ControlStore, DeadLetter, Setting};

use confab_core::fencing::Claim;
use confab_core::session::RecordedEvent;
use confab_core::{Epoch, Seq, Uid};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed store future, so that stores can be used as trait objects.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed to answer; the write did not happen
    /// (or its outcome is unknown): retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An event with this uid and seq is already recorded: the writer's view of the
    /// session is stale. It must reload the session before writing again.
    #[error("conflict: {uid} already has an event at seq {seq} or a newer owner")]
    Conflict {
        /// The session.
        uid: Uid,
        /// The first seq of the refused batch for it.
        seq: Seq,
    },
    /// The session's fence holds a newer ring epoch than the writer's: another node
    /// owns the session now. Nothing was written; the writer's session must stop.
    #[error("fenced: {uid} is owned at epoch {current}, this writer has epoch {epoch}")]
    Fenced {
        /// The session.
        uid: Uid,
        /// The writer's epoch.
        epoch: Epoch,
        /// The epoch the fence holds.
        current: Epoch,
    },
    /// A stored row could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store could not be opened as configured.
    #[error("store cannot be opened: {0}")]
    Open(String),
    /// The request breaks a limit of the store (a key too long, a body too
    /// large): nothing was done, and retrying the same request cannot succeed.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

/// A snapshot as stored: the codec's bytes and the header fields kept beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Whose session.
    pub uid: Uid,
    /// The seq it was taken at.
    pub seq: Seq,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The owner's ring epoch.
    pub epoch: Epoch,
    /// The signed snapshot bytes.
    pub bytes: Vec<u8>,
}

/// The epoch a session's fence holds when nobody has claimed it: the first ring
/// epoch. Claiming it writes nothing, since no writer can be older.
pub const FIRST_EPOCH: Epoch = Epoch(1);

/// The durable event log.
pub trait EventStore: Send + Sync + 'static {
    /// Appends events, of one or many sessions, in one transaction: all or none.
    ///
    /// Fenced: if an event's epoch is below its session's fence, the whole batch
    /// is refused with [`StoreError::Fenced`]. A seq already taken refuses it
    /// with [`StoreError::Conflict`].
    fn append<'a>(&'a self, events: &'a [RecordedEvent]) -> StoreFuture<'a, ()>;

    /// The group-commit lane of `uid`'s events: batches hold the events of one
    /// lane, and lanes commit independently. A store on several servers gives
    /// each server its own lane, so that a slow or dead server holds up only
    /// its own sessions; a store on one server has one lane, 0.
    fn commit_lane(&self, uid: &Uid) -> usize {
        let _ = uid;
        0
    }

    /// How many transactions of one lane the store can commit at once: the
    /// committer keeps no more batches committing than this, so that a batch
    /// does not close early only to wait for a writer while the next requests
    /// queue behind it. Unlimited unless the store says otherwise.
    fn commit_writers(&self) -> usize {
        usize::MAX
    }

    /// Takes ownership of `uid` at `epoch`: raises the session's fence to `epoch`,
    /// so that writers of older epochs are refused from now on. Fails with
    /// [`StoreError::Fenced`] if the fence already holds a newer epoch.
    fn claim<'a>(&'a self, uid: &'a Uid, epoch: Epoch) -> StoreFuture<'a, ()>;

    /// Up to `limit` events of `uid` with seq above `after`, in seq order.
    fn events_after<'a>(
        &'a self,
        uid: &'a Uid,
        after: Seq,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>>;
}

/// Where snapshots live.
pub trait SnapshotStore: Send + Sync + 'static {
    /// The latest snapshot of `uid`, if any.
    fn read_snapshot<'a>(&'a self, uid: &'a Uid) -> StoreFuture<'a, Option<StoredSnapshot>>;

    /// Writes snapshots in one transaction. A snapshot older than the stored one
    /// (a lower seq), or from an epoch below its session's fence, is dropped:
    /// snapshots never go back, and a stale owner never writes one.
    fn write_snapshots<'a>(&'a self, snapshots: &'a [StoredSnapshot]) -> StoreFuture<'a, ()>;
}

/// What a session is rebuilt from: its latest snapshot and the events after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionLog {
    /// The latest snapshot, if any.
    pub snapshot: Option<StoredSnapshot>,
    /// Events after the snapshot's seq (after 0 without one), in seq order, at
    /// most the `limit` asked for: when full, more may follow.
    pub events: Vec<RecordedEvent>,
}

/// A whole durable tier.
pub trait Store:
    EventStore + SnapshotStore + ControlStore + key_usage::KeyUsageStore + audit::AuditStore
{
    /// The tier's name in metrics (`sqlite`, `mysql`, `redis`).
    fn tier(&self) -> &'static str;

    /// Whether the store answers; used by `/readyz`.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// The latest snapshot of `uid` and up to `limit` events after it.
    fn load<'a>(&'a self, uid: &'a Uid, limit: usize) -> StoreFuture<'a, SessionLog> {
        Box::pin(async move {
            let snapshot = self.read_snapshot(uid).await?;
            let after = snapshot.as_ref().map_or(Seq(0), |s| s.seq);
            let events = self.events_after(uid, after, limit).await?;
            Ok(SessionLog { snapshot, events })
        })
    }
}

/// Checks a batch against the fences it must pass: `fences` holds the epoch of
/// every claimed session of the batch (unclaimed sessions are at [`FIRST_EPOCH`]).
pub(crate) fn check_fences<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    fences: &std::collections::BTreeMap<Uid, Epoch>,
) -> Result<(), StoreError> {
    for event in events {
        let current = fences.get(&event.uid).copied().unwrap_or(FIRST_EPOCH);
        if !confab_core::fencing::admits_write(current, event.epoch) {
            return Err(StoreError::Fenced {
                uid: event.uid.clone(),
                epoch: event.epoch,
                current,
            });
        }
    }
    Ok(())
}

/// Where a claim of `uid` at `epoch` stands against the fence `current`:
/// `Ok(true)` when the fence must be raised, `Ok(false)` when it already holds
/// `epoch`, [`StoreError::Fenced`] when a newer epoch holds it.
pub(crate) fn claim_against(uid: &Uid, epoch: Epoch, current: Epoch) -> Result<bool, StoreError> {
    match confab_core::fencing::claim(current, epoch) {
        Claim::Raise => Ok(true),
        Claim::Held => Ok(false),
        Claim::Refused => Err(StoreError::Fenced {
            uid: uid.clone(),
            epoch,
            current,
        }),
    }
}

/// The distinct uids of a batch, in order.
pub(crate) fn uids_of<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Vec<&'a Uid> {
    let mut uids: Vec<&Uid> = events.into_iter().map(|e| &e.uid).collect();
    uids.sort();
    uids.dedup();
    uids
}

/// Counts one store request in `confab_store_requests_total{tier,op,result}`.
/// `result` is `hit` (found, or written), `miss` (nothing found) or `error`.
pub fn count_request(tier: &'static str, op: &'static str, result: &'static str) {
    metrics::counter!("confab_store_requests_total", "tier" => tier, "op" => op, "result" => result)
        .increment(1);
}

/// Counts a request's outcome in `confab_store_requests_total` and passes it on:
/// `hit` when `found` says so, `miss` when it does not, `error` on an error.
pub(crate) fn counted<T>(
    tier: &'static str,
    op: &'static str,
    result: Result<T, StoreError>,
    found: impl Fn(&T) -> bool,
) -> Result<T, StoreError> {
    match &result {
        Ok(value) if found(value) => count_request(tier, op, "hit"),
        Ok(_) => count_request(tier, op, "miss"),
        Err(_) => count_request(tier, op, "error"),
    }
    result
}

/// The wait before retry number `attempt` (1 for the first retry): `base`
/// doubled per attempt, at most `max`, then [`jittered`].
pub fn backoff_with_jitter(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    jittered(doubled.min(max))
}

/// `period` scaled by a random factor in [0.5, 1), so that many clients retrying
/// (or many timers started together) spread out instead of firing at once.
pub fn jittered(period: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.5 + f64::from(random) / f64::from(u32::MAX) / 2.0;
    period.mul_f64(factor.min(0.999_999))
}
