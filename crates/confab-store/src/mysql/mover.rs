//! Moving a shard to another server with the cluster up (`confab shards move`),
//! the way Vitess moves tables: copy while writes go on, hold the shard still
//! only for the last changes, switch the map, release.
//!
//! 1. **Prepare the target**: its tables are migrated, whatever an earlier,
//!    unfinished move left of the shard there is deleted, and the shard is
//!    marked `home` on it (nobody writes it there until the map says so).
//! 2. **Copy live**: the shard's events, in pages of [`PAGE_ROWS`] rows in
//!    (uid, seq) order, then one catch-up pass of what was appended meanwhile.
//! 3. **Freeze**: the shard's row in the source's `shard_state` is locked
//!    exclusively (`FOR UPDATE`). Every write to the shard reads that row with a
//!    shared lock first, so in-flight writes finish and new ones wait: no turn
//!    fails, it waits for the freeze.
//! 4. **Copy the rest**: the events appended since the catch-up, and every
//!    fence and snapshot of the shard (they change in place). The counts on
//!    both servers must then be equal, or the move stops and the shard stays
//!    where it was.
//! 5. **Mark it moved** on the source and commit, which releases the waiting
//!    writers: they see `moved`, reload the map, and until the map is switched
//!    they retry. A move that dies here leaves the shard unavailable, never
//!    written in two places; running the same move again finishes it.
//! 6. **Switch the map** in the control store ([`SHARD_MAP_SETTING`], by
//!    compare-and-set on its revision). Writers follow it to the target.
//! 7. **Clean up** the source's copy of the shard, in bounded deletes.

use super::{HOME, MySqlStore, SHARD_MAP_SETTING, SHARDS, Server, redacted, table_of, unavailable};
use crate::StoreError;
use sqlx::{AssertSqlSafe, MySqlPool, Row};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Rows read and written per statement while copying and cleaning up.
pub const PAGE_ROWS: u32 = 1000;

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MoveReport {
    /// The shard.
    pub shard: u32,
    /// Its old server (password masked).
    pub from: String,
    /// Its new server (password masked).
    pub to: String,
    /// Events on the new server when the map was switched.
    pub events: u64,
    /// Fences copied.
    pub fences: u64,
    /// Snapshots copied.
    pub snapshots: u64,
    /// How long writes to the shard waited, in ms.
    pub frozen_ms: u64,
    /// The map's revision in the control store after the switch.
    pub revision: u64,
}

/// Moves `shard` to the server at `to_url`; `progress` hears each step.
///
/// Refuses a shard that is already there, and stops (leaving the shard where it
/// was) if the copy does not match.
pub async fn move_shard(
    store: &MySqlStore,
    shard: u32,
    to_url: &str,
    progress: impl Fn(&str),
) -> Result<MoveReport, StoreError> {
    store.reload().await?;
    let routes = store.routes();
    let map = routes
        .map
        .with_shard_on(shard, to_url)
        .map_err(StoreError::Invalid)?;
    let source = Arc::clone(&routes.servers[routes.server_of(shard)]);
    if source.url == to_url {
        return Err(StoreError::Invalid(format!(
            "shard {shard} is already on {}",
            redacted(to_url)
        )));
    }
    let target = Server::lazy(to_url, &store.shared.options)?;
    let (from, to) = (source.ready().await?, target.ready().await?);
    let table = table_of(shard);

    let state = shard_state(from, shard).await?;
    if state != HOME {
        // An earlier run marked it moved and died before switching the map:
        // the copy on the target is complete; switch now.
        progress(&format!(
            "shard {shard} was already copied ({state}); switching the map"
        ));
        let revision = switch(store, &map, routes.revision).await?;
        return Ok(MoveReport {
            shard,
            from: redacted(&source.url),
            to: redacted(to_url),
            events: count(to, &format!("SELECT COUNT(*) FROM {table}")).await?,
            fences: count(to, &of_shard("SELECT COUNT(*) FROM session_epochs", shard)).await?,
            snapshots: count(to, &of_shard("SELECT COUNT(*) FROM snapshots", shard)).await?,
            frozen_ms: 0,
            revision,
        });
    }

    progress(&format!("preparing {}", redacted(to_url)));
    clear(to, shard).await?;
    sqlx::query("UPDATE shard_state SET state = ?, moved_to = '' WHERE shard = ?")
        .bind(HOME)
        .bind(shard)
        .execute(to)
        .await
        .map_err(unavailable)?;

    progress(&format!("copying {table} while it is written"));
    copy_events_after(from, to, &table, &BTreeMap::new()).await?;
    copy_events_after(from, to, &table, &last_seqs(to, &table).await?).await?;

    progress(&format!("freezing shard {shard}"));
    let frozen_at = Instant::now();
    let mut freeze = from.begin().await.map_err(unavailable)?;
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM shard_state WHERE shard = ? FOR UPDATE")
            .bind(shard)
            .fetch_one(&mut *freeze)
            .await
            .map_err(unavailable)?;
    if state != HOME {
        return Err(StoreError::Invalid(format!(
            "shard {shard} is {state} on its server; another move is running"
        )));
    }
    copy_events_after(from, to, &table, &last_seqs(to, &table).await?).await?;
    let fences = copy_keyed(from, to, shard, "session_epochs", "uid, epoch, node").await?;
    let snapshots = copy_keyed(
        from,
        to,
        shard,
        "snapshots",
        "uid, seq, ts_ms, epoch, body, checksum",
    )
    .await?;
    let events = count(to, &format!("SELECT COUNT(*) FROM {table}")).await?;
    let on_source = count(from, &format!("SELECT COUNT(*) FROM {table}")).await?;
    if events != on_source {
        return Err(StoreError::Corrupt(format!(
            "the copy of {table} has {events} rows and the source {on_source}; the shard stays where it was"
        )));
    }

    sqlx::query("UPDATE shard_state SET state = 'moved', moved_to = ? WHERE shard = ?")
        .bind(redacted(to_url).into_bytes())
        .bind(shard)
        .execute(&mut *freeze)
        .await
        .map_err(unavailable)?;
    freeze.commit().await.map_err(unavailable)?;
    let frozen_ms = u64::try_from(frozen_at.elapsed().as_millis()).unwrap_or(u64::MAX);

    progress(&format!(
        "switching the map: shard {shard} on {}",
        redacted(to_url)
    ));
    let revision = switch(store, &map, routes.revision).await?;

    progress(&format!(
        "cleaning up shard {shard} on {}",
        redacted(&source.url)
    ));
    clear(from, shard).await?;
    Ok(MoveReport {
        shard,
        from: redacted(&source.url),
        to: redacted(to_url),
        events,
        fences,
        snapshots,
        frozen_ms,
        revision,
    })
}

async fn shard_state(pool: &MySqlPool, shard: u32) -> Result<String, StoreError> {
    let (state,): (String,) = sqlx::query_as("SELECT state FROM shard_state WHERE shard = ?")
        .bind(shard)
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    Ok(state)
}

/// Writes `map` to the control store over revision `expected` and puts it in
/// force in `store`.
async fn switch(
    store: &MySqlStore,
    map: &super::ShardMap,
    expected: u64,
) -> Result<u64, StoreError> {
    if !store
        .cas_setting(SHARD_MAP_SETTING, expected, &map.to_setting())
        .await?
    {
        return Err(StoreError::Invalid(format!(
            "the shard map in the control store changed during the move (it is past revision \
             {expected}); the shard is marked moved on its old server: run the same move again \
             to switch the map"
        )));
    }
    store.reload().await?;
    Ok(expected + 1)
}

/// `select` restricted to the rows of `shard` (for tables keyed by uid).
fn of_shard(select: &str, shard: u32) -> String {
    format!("{select} WHERE CRC32(uid) % {SHARDS} = {shard}")
}

async fn count(pool: &MySqlPool, sql: &str) -> Result<u64, StoreError> {
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Each uid's last seq in `table`.
async fn last_seqs(pool: &MySqlPool, table: &str) -> Result<BTreeMap<Vec<u8>, u64>, StoreError> {
    let rows: Vec<(Vec<u8>, u64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT uid, MAX(seq) FROM {table} GROUP BY uid"
    )))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    Ok(rows.into_iter().collect())
}

const EVENT_COLUMNS: &str = "uid, seq, ts_ms, epoch, kind, body, fence, node";

/// Copies the events of `table` that `copied` (each uid's last seq on the
/// target) does not cover, in pages of [`PAGE_ROWS`] in (uid, seq) order.
async fn copy_events_after(
    from: &MySqlPool,
    to: &MySqlPool,
    table: &str,
    copied: &BTreeMap<Vec<u8>, u64>,
) -> Result<u64, StoreError> {
    let mut moved = 0;
    let mut after: (Vec<u8>, u64) = (Vec::new(), 0);
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM {table} WHERE (uid, seq) > (?, ?) ORDER BY uid, seq LIMIT ?"
        )))
        .bind(&after.0)
        .bind(after.1)
        .bind(PAGE_ROWS)
        .fetch_all(from)
        .await
        .map_err(unavailable)?;
        let Some(last) = rows.last() else {
            return Ok(moved);
        };
        after = (last.get("uid"), last.get("seq"));
        let fresh: Vec<_> = rows
            .iter()
            .filter(|row| {
                let uid: Vec<u8> = row.get("uid");
                copied
                    .get(&uid)
                    .is_none_or(|last| row.get::<u64, _>("seq") > *last)
            })
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let mut insert =
            sqlx::QueryBuilder::new(format!("INSERT IGNORE INTO {table} ({EVENT_COLUMNS}) "));
        insert.push_values(fresh.iter(), |mut values, row| {
            values
                .push_bind(row.get::<Vec<u8>, _>("uid"))
                .push_bind(row.get::<u64, _>("seq"))
                .push_bind(row.get::<u64, _>("ts_ms"))
                .push_bind(row.get::<u64, _>("epoch"))
                .push_bind(row.get::<Vec<u8>, _>("kind"))
                .push_bind(row.get::<Vec<u8>, _>("body"))
                .push_bind(row.get::<u64, _>("fence"))
                .push_bind(row.get::<Vec<u8>, _>("node"));
        });
        insert.build().execute(to).await.map_err(unavailable)?;
        moved += fresh.len() as u64;
    }
}

/// Copies every row of `shard` in `table` (keyed by uid), replacing what the
/// target has, in pages of [`PAGE_ROWS`].
async fn copy_keyed(
    from: &MySqlPool,
    to: &MySqlPool,
    shard: u32,
    table: &str,
    columns: &str,
) -> Result<u64, StoreError> {
    let names: Vec<&str> = columns.split(", ").collect();
    let mut copied = 0;
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} WHERE uid > ? AND CRC32(uid) % {SHARDS} = {shard} \
             ORDER BY uid LIMIT ?"
        )))
        .bind(&after)
        .bind(PAGE_ROWS)
        .fetch_all(from)
        .await
        .map_err(unavailable)?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        after = last.get("uid");
        let mut replace = sqlx::QueryBuilder::new(format!("REPLACE INTO {table} ({columns}) "));
        replace.push_values(rows.iter(), |mut values, row| {
            for name in &names {
                match *name {
                    "uid" | "node" | "body" | "checksum" => {
                        values.push_bind(row.get::<Vec<u8>, _>(*name));
                    }
                    _ => {
                        values.push_bind(row.get::<u64, _>(*name));
                    }
                }
            }
        });
        replace.build().execute(to).await.map_err(unavailable)?;
        copied += rows.len() as u64;
    }
}

/// Deletes every row of `shard` on `pool`, in bounded deletes.
async fn clear(pool: &MySqlPool, shard: u32) -> Result<(), StoreError> {
    let statements = [
        format!("DELETE FROM {} LIMIT {PAGE_ROWS}", table_of(shard)),
        format!(
            "{} LIMIT {PAGE_ROWS}",
            of_shard("DELETE FROM session_epochs", shard)
        ),
        format!(
            "{} LIMIT {PAGE_ROWS}",
            of_shard("DELETE FROM snapshots", shard)
        ),
    ];
    for statement in statements {
        loop {
            let done = sqlx::query(AssertSqlSafe(statement.clone()))
                .execute(pool)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() == 0 {
                break;
            }
        }
    }
    Ok(())
}
