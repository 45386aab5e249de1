//! The system of record on MySQL or MariaDB, via sqlx.
//!
//! - Events are sharded into 64 tables, `events_00`..`events_63`, by
//!   [`shard_of`]: CRC-32 (IEEE) of the uid's bytes, modulo 64. It is the same in
//!   every process and version, and the same as MySQL's own `CRC32(uid) % 64`, so
//!   an operator can find a uid's table in SQL.
//! - Each table has primary key (uid, seq) and an index on (uid, ts_ms).
//! - A batch is one transaction across its shards: all or none, as the trait
//!   promises. Inserts are grouped per shard, at most `INSERT_ROWS_MAX` rows each.
//! - Fencing: after its inserts, the batch reads its sessions' fences from
//!   `session_epochs` with `LOCK IN SHARE MODE`, in the same transaction, and
//!   rolls back if one is newer. A claim (which writes the fence) waits until the
//!   batch ends, and a batch that reads after a claim sees it.
//! - Runtime queries only: building needs no database.

use crate::{FIRST_EPOCH, StoreError, StoredSnapshot, check_fences, claim_against, uids_of};
use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, Seq, Uid};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, MySql, Row};
use std::collections::BTreeMap;
use std::time::Duration;

mod control;

const TIER: &str = "mysql";

/// Event tables.
pub const SHARDS: u32 = 64;

/// Rows per INSERT statement.
const INSERT_ROWS_MAX: usize = 500;

/// The shard (0..64) holding a uid's events: `CRC32(uid) % 64`.
pub fn shard_of(uid: &Uid) -> u32 {
    crc32fast::hash(uid.as_str().as_bytes()) % SHARDS
}

fn table_of(shard: u32) -> String {
    format!("events_{shard:02}")
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct MySqlOptions {
    /// Connections in the pool: group commits in flight plus loads.
    pub connections_max: u32,
    /// How long to wait for a connection from the pool.
    pub acquire_timeout: Duration,
    /// The node id recorded beside every event this store writes and every
    /// claim it raises (`node` in the event tables and `session_epochs`); empty
    /// for a tool that writes as no node.
    pub node: String,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        Self {
            connections_max: 16,
            acquire_timeout: Duration::from_secs(2),
            node: String::new(),
        }
    }
}

/// The MySQL store.
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    /// `MySqlOptions::node`, as bytes.
    node: Vec<u8>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A query sent at once stays under this; MariaDB refuses packets over its
/// `max_allowed_packet` (16 MiB by default).
const QUERY_BYTES_MAX: usize = 4 << 20;
/// An INSERT statement stays under this.
const STATEMENT_BYTES_MAX: usize = 1 << 20;

/// Builds SQL text in parts of at most `QUERY_BYTES_MAX` (a statement larger
/// than that gets a part of its own), each sent as one multi-statement query.
struct SqlParts {
    parts: Vec<String>,
}

impl SqlParts {
    fn new() -> Self {
        Self {
            parts: vec![String::new()],
        }
    }

    fn push(&mut self, statement: &str) {
        let last = self.parts.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + statement.len() > QUERY_BYTES_MAX {
            self.parts.push(String::new());
        }
        let last = self.parts.last_mut().expect("never empty");
        last.push_str(statement);
        last.push_str(";\n");
    }
}

/// The statements of one batch: its inserts, grouped per shard (at most
/// `INSERT_ROWS_MAX` rows and `STATEMENT_BYTES_MAX` bytes each), then a locking
/// read of its sessions' fences, in one transaction left open. Every value is a
/// number or a hex literal, so nothing in it can be read as SQL. Each row keeps
/// the fence it was written under (read by a subquery, as the locking read
/// after it reads it) and the writing `node`, for checkers reading the store.
fn batch_sql(events: &[RecordedEvent], node: &[u8]) -> Vec<String> {
    use std::fmt::Write as _;
    let mut by_shard: BTreeMap<u32, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in events {
        by_shard
            .entry(shard_of(&event.uid))
            .or_default()
            .push(event);
    }
    let mut sql = SqlParts::new();
    sql.push("START TRANSACTION");
    for (shard, rows) in &by_shard {
        let head = format!(
            "INSERT INTO {} (uid, seq, ts_ms, epoch, kind, body, fence, node) VALUES ",
            table_of(*shard)
        );
        let mut statement = head.clone();
        let mut in_statement = 0;
        for e in rows {
            if in_statement == INSERT_ROWS_MAX || statement.len() > STATEMENT_BYTES_MAX {
                sql.push(&statement);
                statement.clone_from(&head);
                in_statement = 0;
            }
            let body = serde_json::to_vec(&e.event).expect("events always serialize");
            let uid = hex::encode(e.uid.as_str());
            let _ = write!(
                statement,
                "{}(X'{uid}',{},{},{},X'{}',X'{}',\
                 (SELECT COALESCE(MAX(epoch),{}) FROM session_epochs WHERE uid = X'{uid}'),X'{}')",
                if in_statement == 0 { "" } else { "," },
                e.seq.0,
                e.at_ms,
                e.epoch.0,
                hex::encode(e.event.kind()),
                hex::encode(body),
                FIRST_EPOCH.0,
                hex::encode(node),
            );
            in_statement += 1;
        }
        sql.push(&statement);
    }
    let mut select = String::from("SELECT uid, epoch FROM session_epochs WHERE uid IN (");
    for (i, uid) in uids_of(events).iter().enumerate() {
        let _ = write!(
            select,
            "{}X'{}'",
            if i == 0 { "" } else { "," },
            hex::encode(uid.as_str())
        );
    }
    select.push_str(") LOCK IN SHARE MODE");
    sql.push(&select);
    sql.parts
}

/// A pooled connection inside a transaction. If the request is dropped before
/// it ends the transaction (a caller's timeout cancelled it), the connection is
/// closed instead of going back to the pool, and the server rolls back.
struct InTransaction(Option<sqlx::pool::PoolConnection<MySql>>);

impl InTransaction {
    fn conn(&mut self) -> &mut sqlx::MySqlConnection {
        self.0.as_mut().expect("present until the transaction ends")
    }

    /// Commits; on an error the outcome is unknown and the connection is closed.
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(self.conn()).await?;
        self.0.take(); // back to the pool
        Ok(())
    }

    /// Rolls back, or closes the connection if it cannot.
    async fn rollback(mut self) {
        if sqlx::raw_sql("ROLLBACK").execute(self.conn()).await.is_ok() {
            self.0.take();
        }
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// The conflict a duplicate-key error names: MySQL's message quotes the key
/// (`Duplicate entry 'alice-7' for key 'PRIMARY'`); the first event of the batch
/// if it cannot be matched.
fn conflict_in(events: &[RecordedEvent], message: &str) -> StoreError {
    let named = events
        .iter()
        .find(|e| message.contains(&format!("'{}-{}'", e.uid, e.seq.0)))
        .unwrap_or(&events[0]);
    StoreError::Conflict {
        uid: named.uid.clone(),
        seq: named.seq,
    }
}

fn uid_of(bytes: Vec<u8>) -> Result<Uid, StoreError> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Corrupt(format!("stored uid is not utf-8: {e}")))
        .and_then(|s| Uid::new(s).map_err(|e| StoreError::Corrupt(format!("stored uid: {e}"))))
}

impl MySqlStore {
    /// Connects to `url` (`mysql://user:password@host:port/database`) and
    /// applies the migrations.
    pub async fn open(url: &str, options: &MySqlOptions) -> Result<Self, StoreError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(options.connections_max.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A ping before every use would cost a round trip on the commit path;
            // a dead connection fails its request instead, which the committer
            // retries. (sqlx still pings connections as they return to the pool,
            // off the ack path.)
            .test_before_acquire(false)
            // The fence check relies on REPEATABLE READ: its shared lock on a
            // session with no fence row is a gap lock, which READ COMMITTED
            // would not take. Set here so that a server default cannot change it.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect(url)
            .await
            .map_err(|e| StoreError::Open(format!("mysql: {e}")))?;
        sqlx::migrate!("./migrations/mysql")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open(format!("mysql migrations: {e}")))?;
        Ok(Self {
            pool,
            node: options.node.clone().into_bytes(),
        })
    }

    /// One round trip writes the whole batch and reads its fences; a second
    /// commits it, or rolls it back if a fence refuses it.
    async fn append_events(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let parts = batch_sql(events, &self.node);
        let mut tx = InTransaction(Some(self.pool.acquire().await.map_err(unavailable)?));
        let mut rows = Vec::new();
        for part in parts {
            match sqlx::raw_sql(AssertSqlSafe(part))
                .fetch_all(tx.conn())
                .await
            {
                Ok(part_rows) => rows = part_rows,
                Err(e) => {
                    let refused = match e.as_database_error() {
                        Some(db) if db.is_unique_violation() => conflict_in(events, db.message()),
                        _ => unavailable(e),
                    };
                    tx.rollback().await;
                    return Err(refused);
                }
            }
        }
        let mut fences = BTreeMap::new();
        for row in rows {
            fences.insert(uid_of(row.get("uid"))?, Epoch(row.get("epoch")));
        }
        if let Err(fenced) = check_fences(events, &fences) {
            tx.rollback().await;
            return Err(fenced);
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn claim_epoch(&self, uid: &Uid, epoch: Epoch) -> Result<(), StoreError> {
        let stored: Option<(u64,)> =
            sqlx::query_as("SELECT epoch FROM session_epochs WHERE uid = ?")
                .bind(uid.as_str().as_bytes())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        if !claim_against(uid, epoch, stored.map_or(FIRST_EPOCH, |(e,)| Epoch(e)))? {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            // `node` first: MySQL assigns left to right, each seeing the last.
            "INSERT INTO session_epochs (uid, epoch, node) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE node = IF(VALUES(epoch) > epoch, VALUES(node), node), \
             epoch = GREATEST(epoch, VALUES(epoch))",
        )
        .bind(uid.as_str().as_bytes())
        .bind(epoch.0)
        .bind(self.node.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (stored,): (u64,) = sqlx::query_as("SELECT epoch FROM session_epochs WHERE uid = ?")
            .bind(uid.as_str().as_bytes())
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        // A newer claim may have landed in between.
        claim_against(uid, epoch, Epoch(stored)).map(|_| ())
    }

    async fn ping_db(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
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
        let sql = format!(
            "SELECT seq, ts_ms, epoch, body FROM {} WHERE uid = ? AND seq > ? ORDER BY seq LIMIT ?",
            table_of(shard_of(uid))
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(uid.as_str().as_bytes())
            .bind(after.0)
            .bind(u64::try_from(limit).unwrap_or(u64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let body: Vec<u8> = row.get("body");
                let event: Event = serde_json::from_slice(&body).map_err(|e| {
                    StoreError::Corrupt(format!("event of {uid} does not decode: {e}"))
                })?;
                Ok(RecordedEvent {
                    uid: uid.clone(),
                    seq: Seq(row.get("seq")),
                    at_ms: row.get("ts_ms"),
                    epoch: Epoch(row.get("epoch")),
                    event,
                })
            })
            .collect()
    }

    async fn load_snapshot(&self, uid: &Uid) -> Result<Option<StoredSnapshot>, StoreError> {
        let row = sqlx::query("SELECT uid, seq, ts_ms, epoch, body FROM snapshots WHERE uid = ?")
            .bind(uid.as_str().as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|row| {
            Ok(StoredSnapshot {
                uid: uid_of(row.get("uid"))?,
                seq: Seq(row.get("seq")),
                at_ms: row.get("ts_ms"),
                epoch: Epoch(row.get("epoch")),
                bytes: row.get("body"),
            })
        })
        .transpose()
    }

    /// All snapshots in one transaction, in one round trip unless they are large.
    async fn store_snapshots(&self, snapshots: &[StoredSnapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut tx = InTransaction(Some(self.pool.acquire().await.map_err(unavailable)?));
        for part in snapshots_sql(snapshots) {
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(part)).execute(tx.conn()).await {
                tx.rollback().await;
                return Err(unavailable(e));
            }
        }
        tx.commit().await.map_err(unavailable)
    }
}

/// Statements upserting every snapshot in a transaction left open, each only if it is not older than the
/// stored one and its session's fence is not newer. `seq` is assigned last:
/// MySQL evaluates the assignments in order, so every condition before it still
/// compares with the stored seq. Values are numbers or hex literals.
fn snapshots_sql(snapshots: &[StoredSnapshot]) -> Vec<String> {
    let mut sql = SqlParts::new();
    sql.push("START TRANSACTION");
    for s in snapshots {
        let uid = hex::encode(s.uid.as_str());
        let checksum = s
            .bytes
            .get(s.bytes.len().saturating_sub(32)..)
            .unwrap_or_default();
        let statement = format!(
            "INSERT INTO snapshots (uid, seq, ts_ms, epoch, body, checksum) \
             SELECT X'{uid}', {seq}, {at}, {epoch}, X'{body}', X'{checksum}' FROM DUAL \
             WHERE NOT EXISTS (SELECT 1 FROM session_epochs WHERE uid = X'{uid}' AND epoch > {epoch}) \
             ON DUPLICATE KEY UPDATE \
             ts_ms = IF(VALUES(seq) >= seq, VALUES(ts_ms), ts_ms), \
             epoch = IF(VALUES(seq) >= seq, VALUES(epoch), epoch), \
             body = IF(VALUES(seq) >= seq, VALUES(body), body), \
             checksum = IF(VALUES(seq) >= seq, VALUES(checksum), checksum), \
             seq = IF(VALUES(seq) >= seq, VALUES(seq), seq)",
            seq = s.seq.0,
            at = s.at_ms,
            epoch = s.epoch.0,
            body = hex::encode(&s.bytes),
            checksum = hex::encode(checksum),
        );
        sql.push(&statement);
    }
    sql.parts
}

crate::store_with_request_metrics!(MySqlStore, TIER);

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned, and equal to MariaDB's `SELECT CRC32(uid) % 64` (checked on
    /// MariaDB 10.11): a change here moves every session's events.
    #[test]
    fn the_shard_function_is_pinned_and_matches_mysql_crc32() {
        let uid = |s: &str| Uid::new(s).unwrap();
        assert_eq!(crc32fast::hash(b"alice"), 663_665_735);
        assert_eq!(shard_of(&uid("alice")), 7);
        for (name, shard) in GOLDEN_SHARDS {
            assert_eq!(shard_of(&uid(name)), *shard, "{name}");
        }
    }

    const GOLDEN_SHARDS: &[(&str, u32)] = &[
        ("bob", 0),
        ("carol", 3),
        ("user-1", 20),
        ("user-42", 51),
        ("18612345678", 34),
        ("wx:oAbC123", 20),
    ];
}
