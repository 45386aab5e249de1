//! The system of record on MySQL or MariaDB, via sqlx, on one server or many.
//!
//! - Events are sharded into 64 tables, `events_00`..`events_63`, by
//!   [`shard_of`]: CRC-32 (IEEE) of the uid's bytes, modulo 64. It is the same in
//!   every process and version, and the same as MySQL's own `CRC32(uid) % 64`, so
//!   an operator can find a uid's table in SQL.
//! - The [`ShardMap`] puts each shard on a server (`[[store.mysql_shards]]`;
//!   unnamed shards stay on the control server, `store.mysql_url`). A session's
//!   fence (`session_epochs`) and snapshot live on its shard's server beside its
//!   events, so every fenced write is one transaction on one server. The control
//!   tables (dead letters, settings, the audit log) live on the control server.
//! - Each table has primary key (uid, seq) and an index on (uid, ts_ms).
//! - A batch is one transaction per server. A batch spanning servers prepares
//!   each server's transaction (inserts written, fences and shard states read)
//!   before any commits, so a conflict or a fence anywhere refuses all of it;
//!   only a server failing between the commits can leave part of it written.
//!   The committer never sends such a batch: it batches per server
//!   ([`crate::EventStore::commit_lane`]).
//! - Fencing: after its inserts, the batch reads its sessions' fences from
//!   `session_epochs` with `LOCK IN SHARE MODE`, in the same transaction, and
//!   rolls back if one is newer. A claim (which writes the fence) waits until the
//!   batch ends, and a batch that reads after a claim sees it.
//! - Shard moves: every write first reads its shards' rows in `shard_state`
//!   with a shared lock, and every read checks them. `confab shards move` holds
//!   the row's exclusive lock while it copies the last changes, then marks it
//!   `moved`: writers wait meanwhile, and then reload the map from the control
//!   store and go to the new server ([`mover`]).
//! - Runtime queries only: building needs no database.

use crate::{FIRST_EPOCH, StoreError, StoredSnapshot, check_fences, claim_against, uids_of};
use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, Seq, Uid};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Column as _, MySql, Row};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod control;
pub mod mover;
mod shard_map;

pub use shard_map::{SHARD_MAP_SETTING, ShardMap, ShardRange};

const TIER: &str = "mysql";

/// Event tables.
pub const SHARDS: u32 = 64;

/// Rows per INSERT statement.
const INSERT_ROWS_MAX: usize = 500;

/// A shard's state on a server that holds it (`shard_state.state`).
const HOME: &str = "home";

/// The shard (0..64) holding a uid's events: `CRC32(uid) % 64`.
pub fn shard_of(uid: &Uid) -> u32 {
    crc32fast::hash(uid.as_str().as_bytes()) % SHARDS
}

fn table_of(shard: u32) -> String {
    format!("events_{shard:02}")
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct MySqlOptions {
    /// Connections in each server's pool: group commits in flight plus loads.
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

/// One MySQL server: its pool, migrated before its first use.
struct Server {
    url: String,
    pool: MySqlPool,
    migrated: tokio::sync::OnceCell<()>,
}

impl Server {
    /// A pool that connects on first use, so that a server down at start costs
    /// only its own shards.
    fn lazy(url: &str, options: &MySqlOptions) -> Result<Arc<Self>, StoreError> {
        let pool = pool_options(options)
            .connect_lazy(url)
            .map_err(|e| StoreError::Open(format!("mysql {}: {e}", redacted(url))))?;
        Ok(Arc::new(Self {
            url: url.to_owned(),
            pool,
            migrated: tokio::sync::OnceCell::new(),
        }))
    }

    /// The pool, once the server's tables are in place.
    async fn ready(&self) -> Result<&MySqlPool, StoreError> {
        self.migrated
            .get_or_try_init(|| migrate(&self.pool))
            .await
            .map_err(|e| match e {
                StoreError::Open(why) => {
                    StoreError::Unavailable(format!("{}: {why}", redacted(&self.url)))
                }
                other => other,
            })?;
        Ok(&self.pool)
    }
}

/// Tries to apply the migrations this many times when the server cannot be
/// reached or fails a statement; a migration left half-done is not retried.
const MIGRATION_ATTEMPTS: u32 = 3;

/// How long a node waits, in seconds, while another node applies the
/// migrations to the same database before it gives up.
const MIGRATION_LOCK_WAIT_S: u32 = 120;

/// The migrations of the MySQL store.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Applies the migrations, one node at a time per database.
///
/// sqlx takes a named lock around its migrations with `GET_LOCK(name, -1)`
/// and does not read the answer; MariaDB reads a negative timeout as "do not
/// wait" and answers NULL at once, so on MariaDB nodes started together ran
/// the same migrations at the same moment, and one of them found the other's
/// migration half-done ("migration 3 is partially applied") and refused to
/// start. The lock is taken here, with a positive timeout, and checked; sqlx
/// then takes its own (another name) on the same connection, which holds both
/// (MySQL 5.7+, MariaDB 10.0.2+).
async fn migrate(pool: &MySqlPool) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match migrate_once(pool).await {
            Ok(()) => return Ok(()),
            Err(Failure::Transient(e)) if attempt < MIGRATION_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "mysql migrations failed; trying again");
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                attempt += 1;
            }
            Err(Failure::Transient(e) | Failure::Final(e)) => {
                return Err(StoreError::Open(format!("mysql migrations: {e}")));
            }
        }
    }
}

/// Why one try at the migrations failed.
enum Failure {
    /// The server, the connection, or another node still migrating: another
    /// try may pass.
    Transient(String),
    /// A migration failed or was left half-done, or the applied ones do not
    /// match this build's: trying again would give the same answer.
    Final(String),
}

async fn migrate_once(pool: &MySqlPool) -> Result<(), Failure> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Failure::Transient(e.to_string()))?;
    // Whatever ends this future (a caller's timeout included), the connection
    // is closed, not returned to the pool still holding the lock.
    conn.close_on_drop();
    // A lock name is at most 64 characters: the database's name is hashed.
    let locked: Option<i64> = sqlx::query_scalar(
        "SELECT GET_LOCK(CONCAT('confab-migrate:', SHA1(COALESCE(DATABASE(), ''))), ?)",
    )
    .bind(MIGRATION_LOCK_WAIT_S)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Failure::Transient(e.to_string()))?;
    if locked != Some(1) {
        return Err(Failure::Transient(format!(
            "another node held the migration lock for {MIGRATION_LOCK_WAIT_S} s \
             (GET_LOCK answered {locked:?})"
        )));
    }
    // `run_direct(None, conn, false)` is `run` on a connection already held
    // (no target, skip nothing); `run(&mut *conn)`
    // makes every future that awaits this one fail `Send` (sqlx's own note:
    // "implementation of `Acquire` is not general enough").
    let applied = MIGRATOR.run_direct(None, &mut *conn, false).await;
    // Closing the connection releases the lock whatever state it is in.
    let _ = conn.close().await;
    applied.map_err(|e| match e {
        // Reaching the server or running a bookkeeping query.
        sqlx::migrate::MigrateError::Execute(_) => Failure::Transient(e.to_string()),
        // A migration's own statements failed (MySQL's DDL has committed
        // what ran, and the row says so: a retry would only report it
        // dirty), a dirty row, or versions that do not match this build.
        other => Failure::Final(other.to_string()),
    })
}

fn pool_options(options: &MySqlOptions) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
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
}

/// The map in force and the servers it names.
struct Routes {
    map: ShardMap,
    /// The revision of [`SHARD_MAP_SETTING`] it came from; 0 for the config's.
    revision: u64,
    /// The servers of `map.servers()`, in that order.
    servers: Vec<Arc<Server>>,
    /// Each shard's index in `servers`.
    by_shard: Vec<usize>,
}

impl Routes {
    /// The routes of `map`, taking each server's pool from `pools` and adding
    /// a lazy one for a server seen for the first time.
    fn new(
        map: ShardMap,
        revision: u64,
        pools: &mut BTreeMap<String, Arc<Server>>,
        options: &MySqlOptions,
    ) -> Result<Self, StoreError> {
        let mut servers = Vec::new();
        for url in map.servers() {
            let server = match pools.get(url) {
                Some(server) => Arc::clone(server),
                None => {
                    let server = Server::lazy(url, options)?;
                    pools.insert(url.to_owned(), Arc::clone(&server));
                    server
                }
            };
            servers.push(server);
        }
        let by_shard = (0..SHARDS)
            .map(|shard| {
                servers
                    .iter()
                    .position(|s| s.url == map.url_of(shard))
                    .expect("every shard's server is listed")
            })
            .collect();
        Ok(Self {
            map,
            revision,
            servers,
            by_shard,
        })
    }

    fn server_of(&self, shard: u32) -> usize {
        self.by_shard[shard as usize]
    }
}

/// The MySQL store.
#[derive(Clone)]
pub struct MySqlStore {
    /// The control server's pool (and the home of every shard no range names).
    pool: MySqlPool,
    shared: Arc<Shared>,
    /// `MySqlOptions::node`, as bytes.
    node: Vec<u8>,
}

struct Shared {
    options: MySqlOptions,
    /// Pools by URL, kept across map reloads.
    servers: Mutex<BTreeMap<String, Arc<Server>>>,
    routes: RwLock<Arc<Routes>>,
    /// Held while the map is reloaded, so that many writers meeting a moved
    /// shard at once read the control store once.
    reloading: tokio::sync::Mutex<()>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Why a request on one server did not go through.
enum Refusal {
    /// The store refused it.
    Store(StoreError),
    /// The shard is not (or no longer) on the server asked: reload the map.
    Moved(u32),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(unavailable(e))
    }
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

/// The locking read of the shards' states that every write starts with: it
/// waits while a move holds a shard, and then sees that it moved.
fn shard_states_sql(shards: impl IntoIterator<Item = u32>) -> String {
    let list: Vec<String> = shards.into_iter().map(|s| s.to_string()).collect();
    format!(
        "SELECT shard, state FROM shard_state WHERE shard IN ({}) LOCK IN SHARE MODE",
        list.join(",")
    )
}

/// The statements of one batch: a locking read of its shards' states, its
/// inserts, grouped per shard (at most `INSERT_ROWS_MAX` rows and
/// `STATEMENT_BYTES_MAX` bytes each), then a locking read of its sessions'
/// fences, in one transaction left open. Every value is a number or a hex
/// literal, so nothing in it can be read as SQL. Each row keeps the fence it was
/// written under (read by a subquery, as the locking read after it reads it)
/// and the writing `node`, for checkers reading the store.
fn batch_sql(events: &[&RecordedEvent], node: &[u8]) -> Vec<String> {
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
    sql.push(&shard_states_sql(by_shard.keys().copied()));
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
    for (i, uid) in uids_of(events.iter().copied()).iter().enumerate() {
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

/// Whether a row came from the read of `shard_state`.
fn is_state_row(row: &MySqlRow) -> bool {
    row.columns().iter().any(|c| c.name() == "state")
}

/// The first shard of `rows` (from `shard_state`) not at home here.
fn first_away(rows: &[MySqlRow]) -> Option<u32> {
    rows.iter()
        .filter(|row| is_state_row(row))
        .find(|row| row.get::<String, _>("state") != HOME)
        .map(|row| row.get::<u32, _>("shard"))
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
fn conflict_in(events: &[&RecordedEvent], message: &str) -> StoreError {
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

/// How many times a request follows a moved shard before it gives up.
const MOVES_FOLLOWED_MAX: u32 = 5;

/// The first wait before a request looks again for a moved shard the map does
/// not show yet (the move marks the shard moved just before it switches the
/// map); doubled each time: 10 + 20 + 40 + 80 ms in all.
const MOVE_WAIT_BASE: Duration = Duration::from_millis(10);

impl MySqlStore {
    /// Connects to `url` (`mysql://user:password@host:port/database`), one
    /// server holding every shard, and applies the migrations.
    pub async fn open(url: &str, options: &MySqlOptions) -> Result<Self, StoreError> {
        Self::open_sharded(url, &[], options).await
    }

    /// Connects to the control server `control_url` and applies the
    /// migrations there; the shard servers `ranges` name are connected, and
    /// migrated, on first use. The map in the control store
    /// ([`SHARD_MAP_SETTING`]), once a shard has moved, wins over `ranges`.
    pub async fn open_sharded(
        control_url: &str,
        ranges: &[ShardRange],
        options: &MySqlOptions,
    ) -> Result<Self, StoreError> {
        let configured = ShardMap::new(control_url, ranges).map_err(StoreError::Open)?;
        let pool = pool_options(options)
            .connect(control_url)
            .await
            .map_err(|e| StoreError::Open(format!("mysql: {e}")))?;
        migrate(&pool).await?;
        let control = Arc::new(Server {
            url: control_url.to_owned(),
            pool: pool.clone(),
            migrated: tokio::sync::OnceCell::new_with(Some(())),
        });
        let mut pools = BTreeMap::from([(control_url.to_owned(), control)]);
        let routes = Routes::new(configured, 0, &mut pools, options)?;
        let shared = Arc::new(Shared {
            options: options.clone(),
            servers: Mutex::new(pools),
            routes: RwLock::new(Arc::new(routes)),
            reloading: tokio::sync::Mutex::new(()),
        });
        let store = Self {
            pool,
            shared,
            node: options.node.clone().into_bytes(),
        };
        store.reload().await?;
        Ok(store)
    }

    /// The map in force.
    pub fn shard_map(&self) -> ShardMap {
        self.routes().map.clone()
    }

    fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.shared.routes.read().expect("routes lock"))
    }

    /// Puts `map` in force, opening pools for servers it newly names.
    fn install(&self, map: ShardMap, revision: u64) -> Result<(), StoreError> {
        let mut pools = self.shared.servers.lock().expect("servers lock");
        let routes = Routes::new(map, revision, &mut pools, &self.shared.options)?;
        *self.shared.routes.write().expect("routes lock") = Arc::new(routes);
        Ok(())
    }

    /// Reads the map from the control store and puts it in force if it is
    /// newer than the one in force.
    async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.shared.reloading.lock().await;
        let Some(setting) = self.load_setting(SHARD_MAP_SETTING).await? else {
            return Ok(());
        };
        let current = self.routes();
        if setting.revision <= current.revision {
            return Ok(());
        }
        let map = ShardMap::from_setting(&setting.body).map_err(StoreError::Corrupt)?;
        if current.revision == 0 && map != current.map {
            tracing::warn!(
                "the shard map in the control store (revision {}) differs from store.mysql_shards; \
                 the control store's wins (a shard was moved): update the config to match",
                setting.revision
            );
        }
        tracing::info!(
            revision = setting.revision,
            "shard map loaded from the control store"
        );
        self.install(map, setting.revision)
    }

    /// After a shard was found moved: reloads the map, and if it has not
    /// changed yet, waits a little before the request looks again.
    async fn follow_move(&self, seen: u64, attempt: u32) -> Result<(), StoreError> {
        self.reload().await?;
        if self.routes().revision == seen {
            tokio::time::sleep(MOVE_WAIT_BASE * (1 << attempt.min(8))).await;
        }
        Ok(())
    }

    /// Runs `request` against the server of `shard` under the map in force; a
    /// shard that has moved reloads the map and follows it.
    async fn on_shard<'a, T, F>(&self, shard: u32, request: F) -> Result<T, StoreError>
    where
        F: Fn(
            Arc<Server>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, Refusal>> + Send + 'a>>,
    {
        for attempt in 0..MOVES_FOLLOWED_MAX {
            let routes = self.routes();
            let server = Arc::clone(&routes.servers[routes.server_of(shard)]);
            match request(server).await {
                Ok(value) => return Ok(value),
                Err(Refusal::Store(e)) => return Err(e),
                Err(Refusal::Moved(_)) => self.follow_move(routes.revision, attempt).await?,
            }
        }
        Err(moved_away(shard))
    }

    /// Every server of the map in force, each once.
    fn servers(&self) -> Vec<Arc<Server>> {
        self.routes().servers.clone()
    }

    /// The index of the server holding `uid` in the map in force: the committer
    /// batches per server.
    fn lane_of(&self, uid: &Uid) -> usize {
        self.routes().server_of(shard_of(uid))
    }

    /// A server commits transactions of many connections at once (one per
    /// batch, up to the pool's size): the committer's own setting decides.
    #[allow(clippy::unused_self)]
    fn writers(&self) -> usize {
        usize::MAX
    }

    /// One round trip per server writes its part of the batch and reads its
    /// fences and shard states; a second commits it, or rolls it back if a fence
    /// refuses it.
    async fn append_events(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        for attempt in 0..MOVES_FOLLOWED_MAX {
            let routes = self.routes();
            let mut by_server: BTreeMap<usize, Vec<&RecordedEvent>> = BTreeMap::new();
            for event in events {
                by_server
                    .entry(routes.server_of(shard_of(&event.uid)))
                    .or_default()
                    .push(event);
            }
            let prepared =
                futures_util::future::join_all(by_server.iter().map(|(i, part)| {
                    prepare_batch(Arc::clone(&routes.servers[*i]), part, &self.node)
                }))
                .await;
            let mut ready = Vec::new();
            let mut refusal = None;
            for outcome in prepared {
                match outcome {
                    Ok(tx) => ready.push(tx),
                    Err(e) => refusal = Some(worse(refusal, e)),
                }
            }
            match refusal {
                None => {
                    let committed = futures_util::future::join_all(
                        ready.into_iter().map(InTransaction::commit),
                    )
                    .await;
                    return committed
                        .into_iter()
                        .collect::<Result<Vec<()>, _>>()
                        .map(|_| ())
                        .map_err(unavailable);
                }
                Some(refusal) => {
                    futures_util::future::join_all(ready.into_iter().map(InTransaction::rollback))
                        .await;
                    match refusal {
                        Refusal::Store(e) => return Err(e),
                        Refusal::Moved(_) => self.follow_move(routes.revision, attempt).await?,
                    }
                }
            }
        }
        Err(StoreError::Unavailable(
            "a shard of the batch kept moving; the shard map did not settle".into(),
        ))
    }

    async fn claim_epoch(&self, uid: &Uid, epoch: Epoch) -> Result<(), StoreError> {
        let node = self.node.as_slice();
        self.on_shard(shard_of(uid), |server| {
            Box::pin(async move { claim_on(&server, uid, epoch, node).await })
        })
        .await
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
        let shard = shard_of(uid);
        // One round trip: the shard's state, joined to its events (one row of
        // NULLs when there are none).
        let sql = format!(
            "SELECT s.state, e.seq, e.ts_ms, e.epoch, e.body FROM shard_state s \
             LEFT JOIN {} e ON e.uid = ? AND e.seq > ? WHERE s.shard = ? ORDER BY e.seq LIMIT ?",
            table_of(shard)
        );
        let sql = &sql;
        let rows = self
            .on_shard(shard, |server| {
                Box::pin(async move {
                    let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(uid.as_str().as_bytes())
                        .bind(after.0)
                        .bind(shard)
                        .bind(u64::try_from(limit).unwrap_or(u64::MAX))
                        .fetch_all(server.ready().await?)
                        .await?;
                    at_home(shard, &rows)?;
                    Ok(rows)
                })
            })
            .await?;
        rows.iter()
            .filter_map(|row| {
                let seq: Option<u64> = row.get("seq");
                seq.map(|seq| (seq, row))
            })
            .map(|(seq, row)| {
                let body: Vec<u8> = row.get("body");
                let event: Event = serde_json::from_slice(&body).map_err(|e| {
                    StoreError::Corrupt(format!("event of {uid} does not decode: {e}"))
                })?;
                Ok(RecordedEvent {
                    uid: uid.clone(),
                    seq: Seq(seq),
                    at_ms: row.get::<Option<u64>, _>("ts_ms").unwrap_or_default(),
                    epoch: Epoch(row.get::<Option<u64>, _>("epoch").unwrap_or_default()),
                    event,
                })
            })
            .collect()
    }

    async fn load_snapshot(&self, uid: &Uid) -> Result<Option<StoredSnapshot>, StoreError> {
        let shard = shard_of(uid);
        let row = self
            .on_shard(shard, |server| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT s.state, p.seq, p.ts_ms, p.epoch, p.body FROM shard_state s \
                         LEFT JOIN snapshots p ON p.uid = ? WHERE s.shard = ?",
                    )
                    .bind(uid.as_str().as_bytes())
                    .bind(shard)
                    .fetch_optional(server.ready().await?)
                    .await?;
                    at_home(shard, row.as_slice())?;
                    Ok(row)
                })
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Some(seq) = row.get::<Option<u64>, _>("seq") else {
            return Ok(None);
        };
        Ok(Some(StoredSnapshot {
            uid: uid.clone(),
            seq: Seq(seq),
            at_ms: row.get::<Option<u64>, _>("ts_ms").unwrap_or_default(),
            epoch: Epoch(row.get::<Option<u64>, _>("epoch").unwrap_or_default()),
            bytes: row.get::<Option<Vec<u8>>, _>("body").unwrap_or_default(),
        }))
    }

    /// Each server's snapshots in one transaction, the servers in parallel.
    /// Snapshots never go back, so a server that failed can be retried with the
    /// whole batch again.
    async fn store_snapshots(&self, snapshots: &[StoredSnapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut by_shard: BTreeMap<u32, Vec<&StoredSnapshot>> = BTreeMap::new();
        for snapshot in snapshots {
            by_shard
                .entry(shard_of(&snapshot.uid))
                .or_default()
                .push(snapshot);
        }
        for attempt in 0..MOVES_FOLLOWED_MAX {
            let routes = self.routes();
            let mut by_server: BTreeMap<usize, Vec<&StoredSnapshot>> = BTreeMap::new();
            for (shard, part) in &by_shard {
                by_server
                    .entry(routes.server_of(*shard))
                    .or_default()
                    .extend(part);
            }
            let written = futures_util::future::join_all(
                by_server
                    .iter()
                    .map(|(i, part)| write_snapshots_on(Arc::clone(&routes.servers[*i]), part)),
            )
            .await;
            match written
                .into_iter()
                .fold(None, |refusal, outcome| match outcome {
                    Ok(()) => refusal,
                    Err(e) => Some(worse(refusal, e)),
                }) {
                None => return Ok(()),
                Some(Refusal::Store(e)) => return Err(e),
                Some(Refusal::Moved(_)) => self.follow_move(routes.revision, attempt).await?,
            }
        }
        Err(StoreError::Unavailable(
            "a shard of the snapshots kept moving; the shard map did not settle".into(),
        ))
    }
}

fn moved_away(shard: u32) -> StoreError {
    StoreError::Unavailable(format!(
        "shard {shard} moved and the shard map in the control store does not say where"
    ))
}

/// Of two refusals, the one the caller must hear: a store's answer (a conflict
/// or a fence, which the committer resolves session by session) over a moved
/// shard, which a reload resolves.
fn worse(current: Option<Refusal>, next: Refusal) -> Refusal {
    match (current, next) {
        (
            Some(Refusal::Store(e @ (StoreError::Conflict { .. } | StoreError::Fenced { .. }))),
            _,
        ) => Refusal::Store(e),
        (_, Refusal::Moved(shard)) => Refusal::Moved(shard),
        (Some(Refusal::Moved(shard)), Refusal::Store(StoreError::Unavailable(_))) => {
            Refusal::Moved(shard)
        }
        (_, next) => next,
    }
}

/// Refuses rows read from `shard_state` that say the shard is not at home.
fn at_home(shard: u32, rows: &[MySqlRow]) -> Result<(), Refusal> {
    match rows.first() {
        None => Err(Refusal::Moved(shard)),
        Some(row) if row.get::<String, _>("state") != HOME => Err(Refusal::Moved(shard)),
        Some(_) => Ok(()),
    }
}

/// Writes `events` on `server` in a transaction left open, unless a shard is
/// not at home there, a seq is taken or a fence refuses it.
async fn prepare_batch(
    server: Arc<Server>,
    events: &[&RecordedEvent],
    node: &[u8],
) -> Result<InTransaction, Refusal> {
    let parts = batch_sql(events, node);
    let pool = server.ready().await?;
    let mut tx = InTransaction(Some(pool.acquire().await?));
    let mut rows = Vec::new();
    for part in parts {
        match sqlx::raw_sql(AssertSqlSafe(part))
            .fetch_all(tx.conn())
            .await
        {
            Ok(part_rows) => rows.extend(part_rows),
            Err(e) => {
                let refused = match e.as_database_error() {
                    Some(db) if db.is_unique_violation() => conflict_in(events, db.message()),
                    _ => unavailable(e),
                };
                tx.rollback().await;
                return Err(Refusal::Store(refused));
            }
        }
    }
    if let Some(shard) = first_away(&rows) {
        tx.rollback().await;
        return Err(Refusal::Moved(shard));
    }
    let mut fences = BTreeMap::new();
    for row in rows.iter().filter(|row| !is_state_row(row)) {
        fences.insert(uid_of(row.get("uid"))?, Epoch(row.get("epoch")));
    }
    if let Err(fenced) = check_fences(events.iter().copied(), &fences) {
        tx.rollback().await;
        return Err(Refusal::Store(fenced));
    }
    Ok(tx)
}

/// Raises `uid`'s fence to `epoch` on `server`, which must hold its shard.
async fn claim_on(server: &Server, uid: &Uid, epoch: Epoch, node: &[u8]) -> Result<(), Refusal> {
    let shard = shard_of(uid);
    let pool = server.ready().await?;
    let row = sqlx::query(
        "SELECT s.state, f.epoch FROM shard_state s \
         LEFT JOIN session_epochs f ON f.uid = ? WHERE s.shard = ?",
    )
    .bind(uid.as_str().as_bytes())
    .bind(shard)
    .fetch_optional(pool)
    .await?;
    at_home(shard, row.as_slice())?;
    let stored = row.and_then(|row| row.get::<Option<u64>, _>("epoch"));
    if !claim_against(uid, epoch, stored.map_or(FIRST_EPOCH, Epoch))? {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let states = sqlx::query(AssertSqlSafe(shard_states_sql([shard])))
        .fetch_all(&mut *tx)
        .await?;
    at_home(shard, &states)?;
    sqlx::query(
        // `node` first: MySQL assigns left to right, each seeing the last.
        "INSERT INTO session_epochs (uid, epoch, node) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE node = IF(VALUES(epoch) > epoch, VALUES(node), node), \
         epoch = GREATEST(epoch, VALUES(epoch))",
    )
    .bind(uid.as_str().as_bytes())
    .bind(epoch.0)
    .bind(node)
    .execute(&mut *tx)
    .await?;
    let (stored,): (u64,) = sqlx::query_as("SELECT epoch FROM session_epochs WHERE uid = ?")
        .bind(uid.as_str().as_bytes())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    // A newer claim may have landed in between.
    Ok(claim_against(uid, epoch, Epoch(stored)).map(|_| ())?)
}

/// Writes `snapshots` on `server` in one transaction, unless a shard is not at
/// home there.
async fn write_snapshots_on(
    server: Arc<Server>,
    snapshots: &[&StoredSnapshot],
) -> Result<(), Refusal> {
    let pool = server.ready().await?;
    let mut tx = InTransaction(Some(pool.acquire().await?));
    let shards: std::collections::BTreeSet<u32> =
        snapshots.iter().map(|s| shard_of(&s.uid)).collect();
    let mut rows = Vec::new();
    for part in snapshots_sql(&shards, snapshots) {
        match sqlx::raw_sql(AssertSqlSafe(part))
            .fetch_all(tx.conn())
            .await
        {
            Ok(part_rows) => rows.extend(part_rows),
            Err(e) => {
                tx.rollback().await;
                return Err(Refusal::Store(unavailable(e)));
            }
        }
    }
    if let Some(shard) = first_away(&rows) {
        tx.rollback().await;
        return Err(Refusal::Moved(shard));
    }
    tx.commit().await?;
    Ok(())
}

/// Statements upserting every snapshot in a transaction left open, after a
/// locking read of their shards' states, each only if it is not older than the
/// stored one and its session's fence is not newer. `seq` is assigned last:
/// MySQL evaluates the assignments in order, so every condition before it still
/// compares with the stored seq. Values are numbers or hex literals.
fn snapshots_sql(
    shards: &std::collections::BTreeSet<u32>,
    snapshots: &[&StoredSnapshot],
) -> Vec<String> {
    let mut sql = SqlParts::new();
    sql.push("START TRANSACTION");
    sql.push(&shard_states_sql(shards.iter().copied()));
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
