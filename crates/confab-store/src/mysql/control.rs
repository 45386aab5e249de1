//! The dead-letter queue and the cluster's settings on MySQL
//! ([`crate::ControlStore`]), in `dead_letters` (an entry waits while
//! `replayed_ms` is NULL; its arguments are JSON in `body`) and `settings`.

use super::{MySqlStore, TIER, uid_of, unavailable};
use crate::StoreError;
use crate::control::{DeadLetter, DeadLetterRow, Setting, decode_args};
use confab_core::Seq;
use sqlx::Row;
use sqlx::mysql::MySqlRow;

crate::control::control_with_request_metrics!(MySqlStore, TIER);

const DEAD_LETTER_COLUMNS: &str = "id, uid, seq, kind, body, reason, attempts, created_ms";

/// The dead-letter queue and the settings; see [`crate::ControlStore`].
impl MySqlStore {
    async fn insert_dead_letter(
        &self,
        entry: &DeadLetter,
        row: &DeadLetterRow<'_>,
    ) -> Result<u64, StoreError> {
        // The upsert and the read of the id it landed on, in one transaction
        // (MySQL has no INSERT ... RETURNING). A resolved entry waits again.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO dead_letters (uid, seq, kind, reason, body, attempts, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE reason = VALUES(reason), attempts = VALUES(attempts), \
             replayed_ms = NULL",
        )
        .bind(entry.uid.as_str().as_bytes())
        .bind(entry.seq.0)
        .bind(entry.action.as_str())
        .bind(row.reason)
        .bind(row.args.as_bytes())
        .bind(entry.attempts)
        .bind(entry.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (id,): (u64,) =
            sqlx::query_as("SELECT id FROM dead_letters WHERE uid = ? AND seq = ? AND kind = ?")
                .bind(entry.uid.as_str().as_bytes())
                .bind(entry.seq.0)
                .bind(entry.action.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    async fn waiting_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE replayed_ms IS NULL \
             ORDER BY id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(u64::try_from(limit).unwrap_or(u64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(dead_letter_of).collect()
    }

    async fn waiting_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ? AND replayed_ms IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(dead_letter_of).transpose()
    }

    async fn mark_resolved(&self, id: u64, at_ms: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE dead_letters SET replayed_ms = ? WHERE id = ? AND replayed_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_waiting(&self) -> Result<u64, StoreError> {
        let (depth,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM dead_letters WHERE replayed_ms IS NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    pub(super) async fn load_setting(&self, key: &str) -> Result<Option<Setting>, StoreError> {
        let row: Option<(u64, String)> =
            sqlx::query_as("SELECT revision, body FROM settings WHERE name = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(|(revision, body)| Setting { revision, body }))
    }

    /// The first write is an insert, which a concurrent first write makes fail
    /// on the primary key; a later one is an update conditioned on the revision,
    /// which InnoDB re-checks against the latest row once it holds its lock.
    pub(super) async fn cas_setting(
        &self,
        key: &str,
        expected: u64,
        body: &str,
    ) -> Result<bool, StoreError> {
        if expected == 0 {
            let inserted =
                sqlx::query("INSERT INTO settings (name, revision, body) VALUES (?, 1, ?)")
                    .bind(key)
                    .bind(body)
                    .execute(&self.pool)
                    .await;
            return match inserted {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_database_error()
                        .is_some_and(|db| db.is_unique_violation()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(unavailable(e)),
            };
        }
        let updated = sqlx::query(
            "UPDATE settings SET revision = ?, body = ? WHERE name = ? AND revision = ?",
        )
        .bind(expected + 1)
        .bind(body)
        .bind(key)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        // The revision changes, so a matched row is a changed row either way
        // sqlx's connection counts affected rows.
        Ok(updated.rows_affected() == 1)
    }
}

fn dead_letter_of(row: &MySqlRow) -> Result<DeadLetter, StoreError> {
    let id: u64 = row.get("id");
    let args: Vec<u8> = row.get("body");
    Ok(DeadLetter {
        id,
        uid: uid_of(row.get("uid"))?,
        seq: Seq(row.get("seq")),
        action: row.get("kind"),
        args: decode_args(id, &args)?,
        reason: row.get("reason"),
        attempts: row.get("attempts"),
        created_ms: row.get("created_ms"),
    })
}

/// `CRC32(uid) % 64 IN (...)`: the rows of `shards` in a table keyed by uid,
/// so that a server's leftovers of a shard moved away are not counted.
fn of_shards(shards: &[u32]) -> String {
    let list: Vec<String> = shards.iter().map(u32::to_string).collect();
    format!("CRC32(uid) % {} IN ({})", super::SHARDS, list.join(","))
}

/// Key usage, asked of every server for the shards the map gives it.
impl crate::key_usage::KeyUsageStore for MySqlStore {
    fn snapshot_key_versions(
        &self,
    ) -> crate::StoreFuture<'_, std::collections::BTreeMap<confab_core::crypto::KeyVersion, u64>>
    {
        Box::pin(async move {
            let map = self.shard_map();
            let mut rows: Vec<(Vec<u8>, i64)> = Vec::new();
            for server in self.servers() {
                let sql = format!(
                    "SELECT SUBSTRING(body, 1, 10) AS header, COUNT(*) FROM snapshots \
                     WHERE {} GROUP BY header",
                    of_shards(&map.shards_on(&server.url))
                );
                rows.extend(
                    sqlx::query_as::<_, (Vec<u8>, i64)>(sqlx::AssertSqlSafe(sql))
                        .fetch_all(server.ready().await?)
                        .await
                        .map_err(unavailable)?,
                );
            }
            crate::key_usage::by_version(rows)
        })
    }

    fn events_sealed_under(
        &self,
        version: confab_core::crypto::KeyVersion,
    ) -> crate::StoreFuture<'_, u64> {
        Box::pin(async move {
            let marker = crate::key_usage::sealed_marker(version);
            let map = self.shard_map();
            let mut total = 0u64;
            for server in self.servers() {
                let pool = server.ready().await?;
                for shard in map.shards_on(&server.url) {
                    let sql = format!(
                        "SELECT COUNT(*) FROM {} WHERE INSTR(body, ?) > 0",
                        super::table_of(shard)
                    );
                    let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(marker.as_bytes())
                        .fetch_one(pool)
                        .await
                        .map_err(unavailable)?;
                    total += u64::try_from(count).unwrap_or(0);
                }
            }
            Ok(total)
        })
    }

    /// Each server's first `limit` uids above `after`, merged: the first
    /// `limit` of all of them.
    fn snapshots_not_under<'a>(
        &'a self,
        version: confab_core::crypto::KeyVersion,
        after: Option<&'a confab_core::Uid>,
        limit: usize,
    ) -> crate::StoreFuture<'a, Vec<confab_core::Uid>> {
        Box::pin(async move {
            let map = self.shard_map();
            let mut uids = Vec::new();
            for server in self.servers() {
                let sql = format!(
                    "SELECT uid FROM snapshots WHERE uid > ? AND SUBSTRING(body, 1, 10) <> ? \
                     AND {} ORDER BY uid LIMIT ?",
                    of_shards(&map.shards_on(&server.url))
                );
                let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(after.map_or(&b""[..], |u| u.as_str().as_bytes()))
                    .bind(crate::key_usage::sealed_header(version).to_vec())
                    .bind(u64::try_from(limit).unwrap_or(u64::MAX))
                    .fetch_all(server.ready().await?)
                    .await
                    .map_err(unavailable)?;
                for (uid,) in rows {
                    uids.push(uid_of(uid)?);
                }
            }
            uids.sort();
            uids.truncate(limit);
            Ok(uids)
        })
    }
}

/// An audit row as MySQL gives it: id, at_ms, who, node, action, status, result.
type AuditRow = (u64, u64, Vec<u8>, Vec<u8>, Vec<u8>, u16, Vec<u8>);

impl crate::audit::AuditStore for MySqlStore {
    fn audit<'a>(&'a self, entry: &'a crate::audit::AuditEntry) -> crate::StoreFuture<'a, u64> {
        Box::pin(async move {
            let entry = entry.clone().bounded();
            let done = sqlx::query(
                "INSERT INTO admin_audit (at_ms, who, node, action, status, result) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(entry.at_ms)
            .bind(entry.who.as_bytes())
            .bind(entry.node.as_bytes())
            .bind(entry.action.as_bytes())
            .bind(entry.status)
            .bind(entry.result.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
            Ok(done.last_insert_id())
        })
    }

    fn audit_entries(&self, limit: usize) -> crate::StoreFuture<'_, Vec<crate::audit::AuditEntry>> {
        Box::pin(async move {
            let limit = limit.min(crate::audit::LIST_MAX);
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, at_ms, who, node, action, status, result FROM admin_audit \
                 ORDER BY id DESC LIMIT ?",
            )
            .bind(u64::try_from(limit).unwrap_or(u64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(crate::audit::corrupt);
            rows.into_iter()
                .map(|(id, at_ms, who, node, action, status, result)| {
                    Ok(crate::audit::AuditEntry {
                        id,
                        at_ms,
                        who: text(who)?,
                        node: text(node)?,
                        action: text(action)?,
                        status,
                        result: text(result)?,
                    })
                })
                .collect()
        })
    }
}
