//! The embedded store: one SQLite file (`confab.db`) in the data dir, via sqlx.
//!
//! - WAL mode, so readers never block the writer and several node processes on one
//!   machine can share the file; writers take the lock with `BEGIN IMMEDIATE` and
//!   wait up to `busy_timeout` for each other instead of failing. The writer
//!   waits in this module, trying again every 1-2 ms, not in SQLite's own busy
//!   handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms
//!   between tries: with several node processes on one file (`confab up`, the
//!   rebalance bench) a lock freed early in one of those sleeps stayed unused
//!   for the rest of it, and every turn of every node waited (docs/benchmarks.md,
//!   the rebalance results of 2026-12-05).
//! - `synchronous` is configurable: `full` (the default) syncs the WAL on every
//!   commit, so an acked turn survives a power cut; `normal` survives a process
//!   crash only, and is faster.
//! - One writer connection (SQLite has one writer at a time anyway), a small pool of
//!   readers.

use crate::{FIRST_EPOCH, StoreError, StoredSnapshot, check_fences, claim_against, uids_of};
use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, Seq, Uid};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

mod control;

const TIER: &str = "sqlite";

/// Rows per INSERT statement: 6 bound values each, well under SQLite's 32,766.
/// Small enough that preparing a statement of a new size is cheap.
const INSERT_ROWS_MAX: usize = 128;

/// The embedded store's settings.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Sync the WAL on every commit (`true`, survives power loss) or leave it to
    /// checkpoints (`false`, survives process crashes only).
    pub synchronous_full: bool,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// Reader connections.
    pub read_connections_max: u32,
    /// The node id recorded beside every event this store writes and every
    /// claim it raises (`node` in `events` and `session_epochs`); empty for a
    /// tool that writes as no node.
    pub node: String,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(5),
            read_connections_max: 4,
            node: String::new(),
        }
    }
}

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    /// `SqliteOptions::node`.
    node: String,
    readers: SqlitePool,
    path: PathBuf,
    wal: Arc<WalState>,
    busy_timeout: Duration,
}

/// How long the writer's WAL restart waits for readers before giving up until
/// the next commit (instead of the writer's whole `busy_timeout`).
const RESTART_BUSY_TIMEOUT_MS: u64 = 20;

/// What the background checkpointer and the writer share about the WAL.
#[derive(Default)]
struct WalState {
    /// Frames in the WAL at the last checkpoint.
    frames: AtomicI64,
    /// Held while a checkpoint runs, so that two never wait on each other's
    /// locks (SQLite's busy handler would sleep for milliseconds).
    checkpointing: tokio::sync::Mutex<()>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The writer's first wait for a lock another connection holds; it doubles up
/// to [`BUSY_RETRY_MAX`].
const BUSY_RETRY_FIRST: Duration = Duration::from_millis(1);
const BUSY_RETRY_MAX: Duration = Duration::from_millis(2);

/// Whether SQLite refused for a lock another connection holds (`SQLITE_BUSY`
/// and its extended codes).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

impl SqliteStore {
    /// Opens (creating if needed) `confab.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Open(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("confab.db");
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(options.busy_timeout)
            // Multi-row inserts keep a statement journal: in memory, not a temp file.
            .pragma("temp_store", "memory")
            // Every commit writes each page it touched to the WAL in full, and a
            // batch touches one index page per session in it: small pages keep
            // that write (and the checkpoint after it) small. Set at creation.
            .page_size(1024)
            // 2 MiB of page cache. SQLite walks its whole page cache at the end
            // of every commit while the file is under 1 GiB (a B-tree balance
            // parks a page at the lock-byte page's number, past the file's end,
            // and the commit then truncates the cache by scanning all of it): 4.7 %
            // of the node's CPU under load with 8 MiB. 2 MiB cut the writer
            // thread's CPU per turn by 15-20 % (docs/benchmarks.md); a cache miss
            // is a read from the OS's page cache. A batch larger than the cache
            // spills to the WAL before its commit, which is correct, only slower.
            .pragma("cache_size", "-2048")
            .statement_cache_capacity(256)
            // Checkpoints run on their own connection (see `checkpoint_in_background`),
            // not inside a commit that acks are waiting for.
            .pragma("wal_autocheckpoint", "0");
        // Nodes starting together on one fresh data dir (`confab up`) race to
        // create the file and switch it to WAL, and SQLite refuses the losers
        // at once (no busy wait on those paths): they try again, for at most
        // `busy_timeout`.
        let deadline = tokio::time::Instant::now() + options.busy_timeout;
        let (writer, readers, checkpointer) = loop {
            match connect_pools(&connect, options).await {
                Ok(pools) => break pools,
                Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY_MAX).await;
                }
                Err(e) => return Err(StoreError::Open(format!("{}: {e}", path.display()))),
            }
        };
        let store = Self {
            writer,
            node: options.node.clone(),
            readers,
            path,
            wal: Arc::default(),
            busy_timeout: options.busy_timeout,
        };
        // Migrations wait for other processes inside SQLite (their statements
        // are sqlx's own), on the connection that keeps `busy_timeout`.
        store.migrate(&checkpointer).await?;
        tokio::spawn(checkpoint_in_background(
            checkpointer,
            Arc::clone(&store.wal),
        ));
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn migrate(&self, pool: &SqlitePool) -> Result<(), StoreError> {
        let migrator = sqlx::migrate!("./migrations/sqlite");
        // Two processes starting on one data dir may race to record the same
        // migration; the loser finds it applied on the second try.
        let mut last = None;
        for _ in 0..3 {
            match migrator.run(pool).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Open(format!(
            "migrating {}: {}",
            self.path.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn append_events(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.restart_wal_if_long().await;
        self.write_tx(async |tx| {
            // Inside the write transaction: no claim can land between check and insert.
            let mut fences = BTreeMap::new();
            for uids in uids_of(events).chunks(INSERT_ROWS_MAX) {
                let mut select: QueryBuilder<Sqlite> =
                    QueryBuilder::new("SELECT uid, epoch FROM session_epochs WHERE uid IN ");
                select.push_tuples(uids, |mut t, uid| {
                    t.push_bind(uid.as_str());
                });
                let rows = select
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                for row in rows {
                    let uid: String = row.get("uid");
                    let uid = Uid::new(uid)
                        .map_err(|e| StoreError::Corrupt(format!("fence uid: {e}")))?;
                    fences.insert(uid, Epoch(db_to_u64(row.get("epoch"))));
                }
            }
            check_fences(events, &fences)?;
            for chunk in events.chunks(INSERT_ROWS_MAX) {
                let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                    "INSERT INTO events (uid, seq, ts_ms, epoch, kind, body, fence, node) ",
                );
                insert.push_values(chunk, |mut row, e| {
                    let body = serde_json::to_string(&e.event).expect("events always serialize");
                    // The fence this write passed, kept for checkers reading the store.
                    let fence = fences.get(&e.uid).copied().unwrap_or(FIRST_EPOCH);
                    row.push_bind(e.uid.as_str().to_owned())
                        .push_bind(seq_to_db(e.seq))
                        .push_bind(u64_to_db(e.at_ms))
                        .push_bind(u64_to_db(e.epoch.0))
                        .push_bind(e.event.kind())
                        .push_bind(body)
                        .push_bind(u64_to_db(fence.0))
                        .push_bind(self.node.as_str());
                });
                if let Err(e) = insert.build().execute(&mut *tx).await {
                    return Err(match e.as_database_error() {
                        Some(db) if db.is_unique_violation() => conflict_of(chunk),
                        _ => unavailable(e),
                    });
                }
            }
            Ok(())
        })
        .await
    }

    async fn claim_epoch(&self, uid: &Uid, epoch: Epoch) -> Result<(), StoreError> {
        if !claim_against(uid, epoch, self.fence_of(uid).await?)? {
            return Ok(());
        }
        let stored = self
            .write_tx(async |tx| {
                sqlx::query(
                    // Every right-hand side reads the row as it was.
                    "INSERT INTO session_epochs (uid, epoch, node) VALUES (?, ?, ?) \
                     ON CONFLICT (uid) DO UPDATE SET epoch = max(epoch, excluded.epoch), \
                     node = CASE WHEN excluded.epoch > epoch THEN excluded.node ELSE node END",
                )
                .bind(uid.as_str())
                .bind(u64_to_db(epoch.0))
                .bind(self.node.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                let (stored,): (i64,) =
                    sqlx::query_as("SELECT epoch FROM session_epochs WHERE uid = ?")
                        .bind(uid.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                Ok(stored)
            })
            .await?;
        // A newer claim may have landed in between.
        claim_against(uid, epoch, Epoch(db_to_u64(stored))).map(|_| ())
    }

    async fn fence_of(&self, uid: &Uid) -> Result<Epoch, StoreError> {
        let stored: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM session_epochs WHERE uid = ?")
                .bind(uid.as_str())
                .fetch_optional(&self.readers)
                .await
                .map_err(unavailable)?;
        Ok(stored.map_or(FIRST_EPOCH, |(e,)| Epoch(db_to_u64(e))))
    }

    /// Brings the WAL back to its start once it is long. The background PASSIVE
    /// checkpoints have copied almost every frame already, so this RESTART has
    /// little left to do; it runs on the writer's own connection, between two
    /// commits, where it waits on no other writer.
    /// Runs `body` inside one write transaction (`BEGIN IMMEDIATE` then
    /// `COMMIT`) on the writer's connection. The statements are issued plainly,
    /// not through sqlx's `Transaction`: when a write fails for want of disk
    /// space SQLite rolls the transaction back by itself, sqlx's own ROLLBACK
    /// then fails, its count of open transactions stays at one, and every later
    /// `begin` on the writer was refused ("non-zero transaction depth") until
    /// the process restarted (found by the nemesis filling the data dir). Here
    /// any failure is followed by a ROLLBACK whose own failure (nothing left to
    /// roll back) is harmless, and the writer serves the next commit.
    pub(crate) async fn write_tx<T>(
        &self,
        body: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.acquire().await.map_err(unavailable)?;
        self.begin_immediate(&mut conn).await?;
        let result = match body(&mut conn).await {
            Ok(value) => sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map(|_| value)
                .map_err(unavailable),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        result
    }

    /// `BEGIN IMMEDIATE`, tried again every 1-2 ms while another connection
    /// holds the write lock, for at most `busy_timeout`.
    async fn begin_immediate(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.busy_timeout;
        let mut wait = BUSY_RETRY_FIRST;
        loop {
            let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await else {
                return Ok(());
            };
            if !is_busy(&e) {
                return Err(unavailable(e));
            }
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "{e}: another connection held the database's write lock for more than \
                     busy_timeout ({} ms)",
                    self.busy_timeout.as_millis()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(BUSY_RETRY_MAX);
        }
    }

    async fn restart_wal_if_long(&self) {
        if self.wal.frames.load(Ordering::Relaxed) <= WAL_PAGES_MAX {
            return;
        }
        // If the background checkpoint is running, the next commit tries again:
        // waiting for it would stall every ack behind its fsync.
        let Ok(_checkpointing) = self.wal.checkpointing.try_lock() else {
            return;
        };
        let mut conn = match self.writer.acquire().await {
            Ok(conn) => conn,
            Err(e) => return tracing::warn!(error = %e, "wal restart checkpoint skipped"),
        };
        let busy = |ms: u64| sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}")));
        let started = std::time::Instant::now();
        let _ = busy(RESTART_BUSY_TIMEOUT_MS).execute(&mut *conn).await;
        let restarted = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *conn)
            .await;
        // Back to the writer's own: it waits for locks outside SQLite.
        if let Err(e) = busy(0).execute(&mut *conn).await {
            // A writer left waiting up to 20 ms inside SQLite would hold up its
            // own retries: start afresh.
            tracing::warn!(error = %e, "cannot restore busy_timeout; reopening the connection");
            drop(conn.detach());
            return;
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wal restart checkpoint"
        );
        match restarted {
            Ok(row) if row.try_get::<i64, _>(0).unwrap_or(1) == 0 => {
                self.wal.frames.store(0, Ordering::Relaxed);
            }
            Ok(_) => tracing::debug!("wal restart checkpoint was busy; retrying later"),
            Err(e) => tracing::warn!(error = %e, "wal restart checkpoint failed"),
        }
    }

    /// One file, one lane.
    #[allow(clippy::unused_self)]
    fn lane_of(&self, _uid: &Uid) -> usize {
        0
    }

    /// SQLite has one writer at a time (and the writer pool one connection).
    #[allow(clippy::unused_self)]
    fn writers(&self) -> usize {
        1
    }

    async fn ping_db(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn load_events(
        &self,
        uid: &Uid,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, epoch, body FROM events WHERE uid = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(uid.as_str())
        .bind(seq_to_db(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let body: String = row.get("body");
                let event: Event = serde_json::from_str(&body).map_err(|e| {
                    StoreError::Corrupt(format!("event of {uid} does not decode: {e}"))
                })?;
                Ok(RecordedEvent {
                    uid: uid.clone(),
                    seq: Seq(db_to_u64(row.get("seq"))),
                    at_ms: db_to_u64(row.get("ts_ms")),
                    epoch: Epoch(db_to_u64(row.get("epoch"))),
                    event,
                })
            })
            .collect()
    }

    async fn load_snapshot(&self, uid: &Uid) -> Result<Option<StoredSnapshot>, StoreError> {
        let row = sqlx::query("SELECT seq, ts_ms, epoch, body FROM snapshots WHERE uid = ?")
            .bind(uid.as_str())
            .fetch_optional(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|row| StoredSnapshot {
            uid: uid.clone(),
            seq: Seq(db_to_u64(row.get("seq"))),
            at_ms: db_to_u64(row.get("ts_ms")),
            epoch: Epoch(db_to_u64(row.get("epoch"))),
            bytes: row.get("body"),
        }))
    }

    async fn store_snapshots(&self, snapshots: &[StoredSnapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        self.write_tx(async |tx| {
            for s in snapshots {
                // Dropped when the session's fence is newer than the snapshot's epoch.
                sqlx::query(
                    "INSERT INTO snapshots (uid, seq, ts_ms, epoch, body) SELECT ?1, ?2, ?3, ?4, ?5 \
                     WHERE NOT EXISTS (SELECT 1 FROM session_epochs WHERE uid = ?1 AND epoch > ?4) \
                     ON CONFLICT (uid) DO UPDATE SET seq = excluded.seq, ts_ms = excluded.ts_ms, \
                     epoch = excluded.epoch, body = excluded.body WHERE excluded.seq >= snapshots.seq",
                )
                .bind(s.uid.as_str())
                .bind(seq_to_db(s.seq))
                .bind(u64_to_db(s.at_ms))
                .bind(u64_to_db(s.epoch.0))
                .bind(s.bytes.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

/// The writer, reader and checkpointer pools on one file.
async fn connect_pools(
    connect: &SqliteConnectOptions,
    options: &SqliteOptions,
) -> Result<(SqlitePool, SqlitePool, SqlitePool), sqlx::Error> {
    // The writer does not wait inside SQLite: `begin_immediate` tries
    // again every 1-2 ms until `busy_timeout`. Its connection is opened
    // with SQLite's wait all the same (its setup PRAGMAs must wait for a
    // node creating the file beside it, as under `confab up`) and turns
    // it off once open. A file on this machine: no connection goes stale, so
    // it is not pinged (a round trip to its worker thread) before each use.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("PRAGMA busy_timeout = 0")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(connect.clone())
        .await?;
    let readers = SqlitePoolOptions::new()
        .max_connections(options.read_connections_max.max(1))
        .connect_with(connect.clone().read_only(true))
        .await?;
    let checkpointer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect.clone())
        .await?;
    Ok((writer, readers, checkpointer))
}

/// How often the WAL is checkpointed in the background.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// WAL frames (pages of 1 KiB) past which the writer restarts the WAL: 16 MiB.
/// Each restart stalls commits for about 20 ms (measured; mostly the database
/// file's fsync). Larger values made restarts rarer but the tail no better.
const WAL_PAGES_MAX: i64 = 16_384;

/// Copies the WAL into the database file every 50 ms, off the commit
/// path. PASSIVE never blocks the writer; under steady writes it never quite
/// catches up either, so the WAL would grow for ever: the writer restarts it
/// (see `restart_wal_if_long`) once it passes `WAL_PAGES_MAX`.
/// Ends when the store's pools are closed.
async fn checkpoint_in_background(pool: SqlitePool, wal: Arc<WalState>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        let _checkpointing = wal.checkpointing.lock().await;
        let started = std::time::Instant::now();
        let checkpointed = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        tracing::trace!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wal passive checkpoint"
        );
        match checkpointed {
            Ok(row) => wal
                .frames
                .store(row.try_get::<i64, _>(1).unwrap_or(0), Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
        }
    }
}

fn conflict_of(chunk: &[RecordedEvent]) -> StoreError {
    let first = &chunk[0];
    StoreError::Conflict {
        uid: first.uid.clone(),
        seq: first.seq,
    }
}

// SQLite integers are i64; seqs, epochs and timestamps stay far below i64::MAX.
fn u64_to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn seq_to_db(seq: Seq) -> i64 {
    u64_to_db(seq.0)
}

fn db_to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

crate::store_with_request_metrics!(SqliteStore, TIER);

impl crate::membership::MembershipStore for SqliteStore {
    fn read_members(&self) -> crate::StoreFuture<'_, confab_core::membership::MemberTable> {
        Box::pin(async move {
            let row: Option<(String,)> = sqlx::query_as("SELECT body FROM membership WHERE id = 1")
                .fetch_optional(&self.readers)
                .await
                .map_err(unavailable)?;
            let table = crate::membership::decode(row.as_ref().map(|(body,)| body.as_str()))?;
            crate::count_request(TIER, "read_members", "hit");
            Ok(table)
        })
    }

    fn cas_members<'a>(
        &'a self,
        expected: u64,
        table: &'a confab_core::membership::MemberTable,
    ) -> crate::StoreFuture<'a, crate::membership::CasOutcome> {
        Box::pin(async move {
            let body = crate::membership::check_proposal(expected, table)?;
            // One writer at a time: the read and the write cannot interleave
            // with another process's.
            let stored = self
                .write_tx(async |tx| {
                    let row: Option<(i64, String)> =
                        sqlx::query_as("SELECT version, body FROM membership WHERE id = 1")
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    let stored =
                        crate::membership::decode(row.as_ref().map(|(_, body)| body.as_str()))?;
                    if stored.version != expected {
                        return Ok(Some(stored));
                    }
                    sqlx::query(
                        "INSERT INTO membership (id, version, body) VALUES (1, ?, ?) \
                         ON CONFLICT (id) DO UPDATE SET version = excluded.version, body = excluded.body",
                    )
                    .bind(u64_to_db(table.version))
                    .bind(body)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    Ok(None)
                })
                .await?;
            if let Some(stored) = stored {
                crate::count_request(TIER, "cas_members", "miss");
                return Ok(crate::membership::CasOutcome {
                    applied: false,
                    table: stored,
                });
            }
            crate::count_request(TIER, "cas_members", "hit");
            Ok(crate::membership::CasOutcome {
                applied: true,
                table: table.clone(),
            })
        })
    }
}
