//! The hot tier: per session, the latest snapshot and the events since it, in
//! Redis, with a TTL refreshed on every write and read.
//!
//! Two keys per session, with the uid as hash tag so both live in one slot:
//! - `<prefix>:{<uid>}:s`, a hash: `epoch` (the session's fence), and when a
//!   log is cached, `base` (the seq the cached log starts after), `last` (the
//!   last cached seq), `snap`, `snap_at` and `snap_epoch` (the snapshot at `base`,
//!   absent when `base` is 0);
//! - `<prefix>:{<uid>}:e`, a list: the events `base+1..=last`, JSON-encoded.
//!
//! What is cached is always a prefix of the durable log: events are pushed only
//! after their durable commit, and only when they follow `last` exactly. Any gap
//! (a write-through that failed while Redis was away) drops the cached log. So
//! a reader takes the cached prefix and asks the durable tier for what follows
//! it: a stale hot tier can never hide an acked turn (see [`crate::tiered`]).
//!
//! Every write runs as a Lua script that first compares the session's fence with
//! the writer's epoch (compare-and-set): a stale writer gets
//! [`StoreError::Fenced`] and changes nothing.
//!
//! While Redis fails, requests skip it for a backoff that doubles with every
//! failure (with jitter, up to 5 s); each skip is counted as a bypass in
//! `confab_store_bypass_total{tier="redis"}`. The connection manager reconnects by
//! itself, so Redis is used again, with no restart, once it answers.
//!
//! The tier runs on one server ([`RedisTier::open`]) or on a Redis Cluster
//! ([`RedisTier::open_cluster`], through the redis crate's cluster client). On a
//! cluster the hash tag puts both keys of a session in one slot, so each script
//! still touches one node; the client follows MOVED and ASK redirections and
//! refreshes its slot map when a replica takes over a failed master. A
//! pipeline there must stay in one slot, so a batch's calls (one per session)
//! go out concurrently instead of in one pipeline; a node that lacks a script
//! (a promoted replica, a node that restarted) is sent its source (`EVAL`),
//! which caches it there. What a failover loses (writes the replica had not
//! received) only makes a cached log shorter, still a prefix of the durable
//! one; the next write finds the gap and drops it.

use crate::{SessionLog, StoreError, StoredSnapshot, backoff_with_jitter, count_request};
use confab_core::session::RecordedEvent;
use confab_core::{Epoch, Seq, Uid};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use scripts::{APPEND, CLAIM, FILL, Lua, MEMBERS_CAS, READ, SNAPSHOT, scripts, with_source};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

mod scripts;

const TIER: &str = "redis";

/// The hot tier's settings.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long an untouched session stays in Redis.
    pub ttl: Duration,
    /// How long a request or a connection attempt may take before it counts as
    /// a failure.
    pub timeout: Duration,
    /// Prefix of every key, so that several deployments (or tests) can share a
    /// server.
    pub key_prefix: String,
    /// Events cached per session, at most; past it the session's cached log is
    /// dropped until its next snapshot restarts it.
    pub cached_events_max: usize,
    /// For `rediss://`: the CA certificates (PEM) the server's certificate must
    /// chain to, instead of the system's roots.
    pub tls_root_ca: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(1800),
            timeout: Duration::from_millis(250),
            key_prefix: "confab".into(),
            cached_events_max: 4096,
            tls_root_ca: None,
        }
    }
}

/// What the hot tier holds of a session, from a read.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedLog {
    /// The snapshot at `base`, if `base` is above 0.
    pub snapshot: Option<StoredSnapshot>,
    /// The seq the cached events start after.
    pub base: Seq,
    /// The last cached seq: the cache knows nothing past it.
    pub last: Seq,
    /// The cached events asked for, in seq order.
    pub events: Vec<RecordedEvent>,
}

/// What happened to a session's cached log when its events were written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteThrough {
    /// Appended to the cached log.
    Appended,
    /// The session has no cached log (it starts at the next load or snapshot).
    NotCached,
    /// The events did not follow the cached log (a write was missed), or it grew
    /// past its bound: the cached log was dropped.
    Dropped,
}

/// Counts of the hot tier's requests, for tests and tools.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Reads that found the session cached.
    pub hits: AtomicU64,
    /// Reads that did not.
    pub misses: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
    /// Requests skipped because Redis was failing.
    pub bypassed: AtomicU64,
}

/// The hot tier.
pub struct RedisTier {
    conn: Connection,
    options: RedisOptions,
    health: Health,
    stats: RedisStats,
}

/// Where the tier's commands go.
#[derive(Clone)]
enum Connection {
    /// One server, reconnected in the background by the manager.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Sends one command, routed by its key on a cluster.
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}

/// Redirections and reconnections the cluster client tries within one request
/// (each MOVED or ASK takes one); `RedisOptions::timeout` bounds them all.
const CLUSTER_RETRIES: u32 = 4;
/// The cluster client's wait before a retry (after TRYAGAIN, CLUSTERDOWN or a
/// lost node), from..to, in ms: short, so that retries fit in the timeout (the
/// crate's default starts at 1.28 s).
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// Backoff after failures, so that a dead Redis costs no time per request.
#[derive(Default)]
struct Health {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    failures: u32,
    retry_at: Option<Instant>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Health {
    fn allows(&self) -> bool {
        let state = self.state.lock().expect("health lock");
        state.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&self) {
        let mut state = self.state.lock().expect("health lock");
        state.failures = state.failures.saturating_add(1);
        state.retry_at =
            Some(Instant::now() + backoff_with_jitter(state.failures, BACKOFF_BASE, BACKOFF_MAX));
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().expect("health lock");
        state.failures = 0;
        state.retry_at = None;
    }
}

type ReadReply = Option<(u64, u64, Vec<u8>, u64, u64, Vec<Vec<u8>>)>;

impl RedisTier {
    /// Connects lazily to `url` (`redis://host:port/db`): a Redis that is down at
    /// start is bypassed until it comes up.
    pub fn open(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let client = match &options.tls_root_ca {
            Some(root) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                },
            ),
            _ => redis::Client::open(url),
        }
        .map_err(|e| StoreError::Open(format!("redis {url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StoreError::Open(format!("redis {url}: {e}")))?;
        Ok(Self {
            conn: Connection::Single(conn),
            options,
            health: Health::default(),
            stats: RedisStats::default(),
        })
    }

    /// Connects lazily to the Redis Cluster that `seeds` (`redis://host:port`,
    /// or `rediss://` for TLS, checked against `options.tls_root_ca` when set)
    /// belong to: any one of them that answers gives the cluster's slot map. A
    /// cluster that is down at start is bypassed until it comes up.
    pub fn open_cluster(seeds: &[String], options: RedisOptions) -> Result<Self, StoreError> {
        let named = seeds.join(", ");
        if seeds.is_empty() {
            return Err(StoreError::Open(
                "redis cluster: no seed nodes given".into(),
            ));
        }
        let (wait_min_ms, wait_max_ms) = CLUSTER_RETRY_WAIT_MS;
        let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(options.timeout)
            .response_timeout(options.timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(wait_min_ms)
            .max_retry_wait(wait_max_ms);
        if let Some(root) = &options.tls_root_ca
            && seeds.iter().all(|seed| seed.starts_with("rediss://"))
        {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.clone()),
            });
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Open(format!("redis cluster {named}: {e}")))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(options.timeout)
            .set_response_timeout(options.timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok(Self {
            conn: Connection::Cluster(conn),
            options,
            health: Health::default(),
            stats: RedisStats::default(),
        })
    }

    /// Whether the tier runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Connection::Cluster(_))
    }

    /// Request counts since start.
    pub fn stats(&self) -> &RedisStats {
        &self.stats
    }

    /// The session's two keys: its hash and its event list.
    pub fn keys_of(&self, uid: &Uid) -> (String, String) {
        let prefix = &self.options.key_prefix;
        (
            format!("{prefix}:{{{uid}}}:s"),
            format!("{prefix}:{{{uid}}}:e"),
        )
    }

    fn ttl_s(&self) -> u64 {
        self.options.ttl.as_secs().max(1)
    }

    /// Runs `request` unless Redis is in its failure backoff, counting the outcome.
    async fn guarded<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        if !self.health.allows() {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("confab_store_bypass_total", "tier" => TIER, "op" => op).increment(1);
            return Err(StoreError::Unavailable(
                "redis is failing; bypassed until its backoff ends".into(),
            ));
        }
        let outcome = tokio::time::timeout(self.options.timeout, request).await;
        match outcome {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.failed(op, e.to_string())),
            Err(_) => Err(self.failed(
                op,
                format!("no answer within {} ms", self.options.timeout.as_millis()),
            )),
        }
    }

    fn failed(&self, op: &'static str, why: String) -> StoreError {
        self.health.failed();
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        count_request(TIER, op, "error");
        tracing::debug!(op, error = %why, "redis request failed");
        StoreError::Unavailable(format!("redis: {why}"))
    }

    /// A call of `script` on the session's two keys; the caller adds its ARGV.
    fn evalsha(&self, script: &Lua, uid: &Uid) -> Cmd {
        let (hash, list) = self.keys_of(uid);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.hash()).arg(2).arg(hash).arg(list);
        cmd
    }

    /// Raises the session's fence in Redis to `epoch`.
    pub async fn claim(&self, uid: &Uid, epoch: Epoch) -> Result<(), StoreError> {
        let mut call = self.evalsha(&CLAIM, uid);
        call.arg(epoch.0).arg(self.ttl_s());
        let reply: (i64, u64) = self.run("claim", vec![call]).await?.remove(0);
        let claimed = fenced(uid, epoch, reply);
        count_request(TIER, "claim", if claimed.is_ok() { "hit" } else { "error" });
        claimed
    }

    /// Writes committed events through: each session's events are appended to its
    /// cached log, in one round trip for the whole batch. Returns what happened
    /// per session; a fenced session is refused its write.
    pub async fn append(
        &self,
        events: &[RecordedEvent],
    ) -> Result<BTreeMap<Uid, Result<WriteThrough, StoreError>>, StoreError> {
        let mut by_uid: BTreeMap<&Uid, Vec<&RecordedEvent>> = BTreeMap::new();
        for event in events {
            by_uid.entry(&event.uid).or_default().push(event);
        }
        let calls = by_uid
            .iter()
            .map(|(uid, events)| {
                let mut call = self.evalsha(&APPEND, uid);
                call.arg(min_epoch(events).0)
                    .arg(events[0].seq.0)
                    .arg(self.ttl_s())
                    .arg(self.options.cached_events_max);
                for event in events {
                    call.arg(encode_event(event));
                }
                call
            })
            .collect();
        let replies: Vec<(i64, u64)> = self.run("append", calls).await?;
        count_request(TIER, "append", "hit");
        Ok(by_uid
            .iter()
            .zip(replies)
            .map(|((uid, events), reply)| {
                let outcome = match reply.0 {
                    1 => Ok(WriteThrough::Appended),
                    2 => Ok(WriteThrough::Dropped),
                    -1 => fenced(uid, min_epoch(events), reply).map(|()| WriteThrough::NotCached),
                    _ => Ok(WriteThrough::NotCached),
                };
                ((*uid).clone(), outcome)
            })
            .collect())
    }

    /// Writes snapshots through; each trims its session's cached log to the
    /// events after it. Fenced or older snapshots change nothing.
    pub async fn write_snapshots(&self, snapshots: &[StoredSnapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let calls = snapshots
            .iter()
            .map(|s| {
                let mut call = self.evalsha(&SNAPSHOT, &s.uid);
                call.arg(s.epoch.0)
                    .arg(s.seq.0)
                    .arg(self.ttl_s())
                    .arg(s.bytes.as_slice())
                    .arg(s.at_ms);
                call
            })
            .collect();
        let _: Vec<(i64, u64)> = self.run("write_snapshots", calls).await?;
        count_request(TIER, "write_snapshots", "hit");
        Ok(())
    }

    /// Replaces the session's cached log with `log`, read from the durable tier
    /// (all of the log after its snapshot).
    pub async fn fill(&self, uid: &Uid, log: &SessionLog) -> Result<(), StoreError> {
        if log.events.len() > self.options.cached_events_max {
            return Ok(());
        }
        let mut call = self.evalsha(&FILL, uid);
        call.arg(0).arg(self.ttl_s());
        match &log.snapshot {
            Some(s) => call
                .arg(s.seq.0)
                .arg(s.bytes.as_slice())
                .arg(s.at_ms)
                .arg(s.epoch.0),
            None => call.arg(0).arg("").arg(0).arg(0),
        };
        for event in &log.events {
            call.arg(encode_event(event));
        }
        let _: Vec<i64> = self.run("fill", vec![call]).await?;
        count_request(TIER, "fill", "hit");
        Ok(())
    }

    /// The cached log of `uid`: from its snapshot (`after` = `None`), or the
    /// events after `after`; at most `limit` events. `None` when the cache does
    /// not hold the session or does not reach back to `after`.
    pub async fn read(
        &self,
        uid: &Uid,
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Option<CachedLog>, StoreError> {
        let after_arg = after.map_or(-1, |s| i64::try_from(s.0).unwrap_or(i64::MAX));
        let op = if after.is_none() {
            "load"
        } else {
            "events_after"
        };
        let mut call = self.evalsha(&READ, uid);
        call.arg(after_arg).arg(limit.max(1)).arg(self.ttl_s());
        let reply: ReadReply = self.run(op, vec![call]).await?.remove(0);
        let Some((base, last, snap, snap_at, snap_epoch, events)) = reply else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            count_request(TIER, op, "miss");
            return Ok(None);
        };
        let events = events
            .iter()
            .map(|bytes| decode_event(uid, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        count_request(TIER, op, "hit");
        Ok(Some(CachedLog {
            snapshot: (base > 0).then(|| StoredSnapshot {
                uid: uid.clone(),
                seq: Seq(base),
                at_ms: snap_at,
                epoch: Epoch(snap_epoch),
                bytes: snap,
            }),
            base: Seq(base),
            last: Seq(last),
            events,
        }))
    }

    /// Whether Redis answers a PING now (on a cluster: every node).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .guarded("ping", async move { conn.query(&redis::cmd("PING")).await })
            .await?;
        Ok(())
    }

    /// Runs script calls, one reply each: on one server in one round trip (if
    /// Redis lost its scripts, as when it restarted, loads them and runs the
    /// calls once more); on a cluster concurrently, one call per session.
    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        calls: Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = match &self.conn {
            Connection::Single(conn) => conn.clone(),
            Connection::Cluster(conn) => {
                return self
                    .guarded(op, async {
                        let replies = futures_util::future::join_all(calls.iter().map(|call| {
                            let mut conn = conn.clone();
                            async move { call_in_cluster(&mut conn, call).await }
                        }))
                        .await;
                        replies.into_iter().collect()
                    })
                    .await;
            }
        };
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.add_command(call);
        }
        let mut conn = conn;
        self.guarded(op, async {
            match pipe.query_async::<Vec<T>>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    for lua in scripts() {
                        lua.script.load_async(&mut conn).await?;
                    }
                    pipe.query_async::<Vec<T>>(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }
}

/// One script call on a cluster. The node that serves its slot may lack the
/// script (a replica promoted since, a node restarted or added): then the call
/// goes again as `EVAL` with the script's source, which caches it there. (A
/// `SCRIPT LOAD` goes to every node and fails while one is down, as during a
/// failover.)
async fn call_in_cluster<T: FromRedisValue>(
    conn: &mut ClusterConnection,
    call: &Cmd,
) -> Result<T, RedisError> {
    match call.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            match with_source(call) {
                Some(eval) => eval.query_async(conn).await,
                None => Err(e),
            }
        }
        other => other,
    }
}

fn min_epoch(events: &[&RecordedEvent]) -> Epoch {
    events.iter().map(|e| e.epoch).min().unwrap_or_default()
}

fn fenced(uid: &Uid, epoch: Epoch, (code, current): (i64, u64)) -> Result<(), StoreError> {
    if code == -1 {
        return Err(StoreError::Fenced {
            uid: uid.clone(),
            epoch,
            current: Epoch(current),
        });
    }
    Ok(())
}

fn encode_event(event: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(event).expect("events always serialize")
}

fn decode_event(uid: &Uid, bytes: &[u8]) -> Result<RecordedEvent, StoreError> {
    let event: RecordedEvent = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cached event of {uid} does not decode: {e}")))?;
    if &event.uid != uid {
        return Err(StoreError::Corrupt(format!(
            "cached event of {uid} belongs to {}",
            event.uid
        )));
    }
    Ok(event)
}

impl RedisTier {
    fn members_key(&self) -> String {
        format!("{}:membership", self.options.key_prefix)
    }
}

impl crate::membership::MembershipStore for RedisTier {
    fn read_members(&self) -> crate::StoreFuture<'_, confab_core::membership::MemberTable> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut read = redis::cmd("HGET");
            read.arg(self.members_key()).arg("body");
            let body: Option<String> = self.guarded("read_members", conn.query(&read)).await?;
            count_request(TIER, "read_members", "hit");
            crate::membership::decode(body.as_deref())
        })
    }

    fn cas_members<'a>(
        &'a self,
        expected: u64,
        table: &'a confab_core::membership::MemberTable,
    ) -> crate::StoreFuture<'a, crate::membership::CasOutcome> {
        Box::pin(async move {
            let body = crate::membership::check_proposal(expected, table)?;
            let mut call = redis::cmd("EVALSHA");
            call.arg(MEMBERS_CAS.hash())
                .arg(1)
                .arg(self.members_key())
                .arg(expected)
                .arg(table.version)
                .arg(&body);
            let (applied, stored): (i64, String) =
                self.run("cas_members", vec![call]).await?.remove(0);
            count_request(
                TIER,
                "cas_members",
                if applied == 1 { "hit" } else { "miss" },
            );
            let table = crate::membership::decode(Some(&stored))?;
            Ok(crate::membership::CasOutcome {
                applied: applied == 1,
                table,
            })
        })
    }
}
