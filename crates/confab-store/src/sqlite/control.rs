//! The dead-letter queue and the cluster's settings on the embedded store
//! ([`crate::ControlStore`]): writes on the single writer connection, reads on
//! the reader pool, as for the sessions' logs.

use super::{SqliteStore, TIER, db_to_u64, seq_to_db, u64_to_db, unavailable};
use crate::StoreError;
use crate::control::{DeadLetter, DeadLetterRow, Setting, decode_args};
use confab_core::{Seq, Uid};
use sqlx::Row;

crate::control::control_with_request_metrics!(SqliteStore, TIER);

/// The dead-letter queue and the settings; see [`crate::ControlStore`].
impl SqliteStore {
    async fn insert_dead_letter(
        &self,
        entry: &DeadLetter,
        row: &DeadLetterRow<'_>,
    ) -> Result<u64, StoreError> {
        // One statement: the upsert and the id it lands on are atomic.
        let (id,): (i64,) = self
            .write_tx(async |tx| {
                sqlx::query_as(
            "INSERT INTO dead_letters (uid, seq, action, args, reason, attempts, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (uid, seq, action) DO UPDATE SET reason = excluded.reason, \
             attempts = excluded.attempts, resolved_ms = NULL \
             RETURNING id",
        )
        .bind(entry.uid.as_str())
        .bind(seq_to_db(entry.seq))
        .bind(entry.action.as_str())
        .bind(row.args.as_str())
        .bind(row.reason)
        .bind(i64::from(entry.attempts))
        .bind(u64_to_db(entry.created_ms))
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)
            })
            .await?;
        Ok(db_to_u64(id))
    }

    async fn waiting_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, uid, seq, action, args, reason, attempts, created_ms FROM dead_letters \
             WHERE resolved_ms IS NULL ORDER BY id LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.iter().map(dead_letter_of).collect()
    }

    async fn waiting_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(
            "SELECT id, uid, seq, action, args, reason, attempts, created_ms FROM dead_letters \
             WHERE id = ? AND resolved_ms IS NULL",
        )
        .bind(u64_to_db(id))
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(dead_letter_of).transpose()
    }

    async fn mark_resolved(&self, id: u64, at_ms: u64) -> Result<bool, StoreError> {
        let done = self
            .write_tx(async |tx| {
                sqlx::query(
                    "UPDATE dead_letters SET resolved_ms = ? WHERE id = ? AND resolved_ms IS NULL",
                )
                .bind(u64_to_db(at_ms))
                .bind(u64_to_db(id))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_waiting(&self) -> Result<u64, StoreError> {
        let (depth,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM dead_letters WHERE resolved_ms IS NULL")
                .fetch_one(&self.readers)
                .await
                .map_err(unavailable)?;
        Ok(db_to_u64(depth))
    }

    async fn load_setting(&self, key: &str) -> Result<Option<Setting>, StoreError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT revision, body FROM settings WHERE name = ?")
                .bind(key)
                .fetch_optional(&self.readers)
                .await
                .map_err(unavailable)?;
        Ok(row.map(|(revision, body)| Setting {
            revision: db_to_u64(revision),
            body,
        }))
    }

    async fn cas_setting(&self, key: &str, expected: u64, body: &str) -> Result<bool, StoreError> {
        // As `cas_members`: one writer at a time, so the read and the write
        // cannot interleave with another process's.
        self.write_tx(async |tx| {
            let stored: Option<(i64,)> =
                sqlx::query_as("SELECT revision FROM settings WHERE name = ?")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            if stored.map_or(0, |(revision,)| db_to_u64(revision)) != expected {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO settings (name, revision, body) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, body = excluded.body",
            )
            .bind(key)
            .bind(u64_to_db(expected + 1))
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }
}

fn dead_letter_of(row: &sqlx::sqlite::SqliteRow) -> Result<DeadLetter, StoreError> {
    let id = db_to_u64(row.get("id"));
    let uid: String = row.get("uid");
    let args: String = row.get("args");
    Ok(DeadLetter {
        id,
        uid: Uid::new(uid)
            .map_err(|e| StoreError::Corrupt(format!("uid of dead letter {id}: {e}")))?,
        seq: Seq(db_to_u64(row.get("seq"))),
        action: row.get("action"),
        args: decode_args(id, args.as_bytes())?,
        reason: row.get("reason"),
        attempts: u32::try_from(row.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
        created_ms: db_to_u64(row.get("created_ms")),
    })
}

impl crate::key_usage::KeyUsageStore for SqliteStore {
    fn snapshot_key_versions(
        &self,
    ) -> crate::StoreFuture<'_, std::collections::BTreeMap<confab_core::crypto::KeyVersion, u64>>
    {
        Box::pin(async move {
            let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
                "SELECT substr(body, 1, 10) AS header, COUNT(*) FROM snapshots GROUP BY header",
            )
            .fetch_all(&self.readers)
            .await
            .map_err(unavailable)?;
            crate::key_usage::by_version(rows)
        })
    }

    fn events_sealed_under(
        &self,
        version: confab_core::crypto::KeyVersion,
    ) -> crate::StoreFuture<'_, u64> {
        Box::pin(async move {
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM events WHERE instr(body, ?) > 0")
                    .bind(crate::key_usage::sealed_marker(version))
                    .fetch_one(&self.readers)
                    .await
                    .map_err(unavailable)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn snapshots_not_under<'a>(
        &'a self,
        version: confab_core::crypto::KeyVersion,
        after: Option<&'a Uid>,
        limit: usize,
    ) -> crate::StoreFuture<'a, Vec<Uid>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT uid FROM snapshots WHERE uid > ? AND substr(body, 1, 10) != ? \
                 ORDER BY uid LIMIT ?",
            )
            .bind(after.map_or("", |u| u.as_str()))
            .bind(crate::key_usage::sealed_header(version).to_vec())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.readers)
            .await
            .map_err(unavailable)?;
            rows.into_iter()
                .map(|(uid,)| Uid::new(uid).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect()
        })
    }
}

impl crate::audit::AuditStore for SqliteStore {
    fn audit<'a>(&'a self, entry: &'a crate::audit::AuditEntry) -> crate::StoreFuture<'a, u64> {
        Box::pin(async move {
            let entry = entry.clone().bounded();
            let (id,): (i64,) = self
                .write_tx(async |tx| {
                    sqlx::query_as(
                        "INSERT INTO admin_audit (at_ms, who, node, action, status, result) \
                 VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    )
                    .bind(u64_to_db(entry.at_ms))
                    .bind(&entry.who)
                    .bind(&entry.node)
                    .bind(&entry.action)
                    .bind(i64::from(entry.status))
                    .bind(&entry.result)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)
                })
                .await?;
            Ok(db_to_u64(id))
        })
    }

    fn audit_entries(&self, limit: usize) -> crate::StoreFuture<'_, Vec<crate::audit::AuditEntry>> {
        Box::pin(async move {
            let limit = limit.min(crate::audit::LIST_MAX);
            let rows = sqlx::query(
                "SELECT id, at_ms, who, node, action, status, result FROM admin_audit \
                 ORDER BY id DESC LIMIT ?",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.readers)
            .await
            .map_err(unavailable)?;
            rows.iter()
                .map(|row| {
                    Ok(crate::audit::AuditEntry {
                        id: db_to_u64(row.try_get("id").map_err(crate::audit::corrupt)?),
                        at_ms: db_to_u64(row.try_get("at_ms").map_err(crate::audit::corrupt)?),
                        who: row.try_get("who").map_err(crate::audit::corrupt)?,
                        node: row.try_get("node").map_err(crate::audit::corrupt)?,
                        action: row.try_get("action").map_err(crate::audit::corrupt)?,
                        status: u16::try_from(
                            row.try_get::<i64, _>("status")
                                .map_err(crate::audit::corrupt)?,
                        )
                        .map_err(crate::audit::corrupt)?,
                        result: row.try_get("result").map_err(crate::audit::corrupt)?,
                    })
                })
                .collect()
        })
    }
}
