//! Redis in front of a durable store, on real servers, each test twice: on the
//! shared Redis (`CONFAB_TEST_REDIS_URL`, default 127.0.0.1:6379) under a key
//! prefix of its own (`<test>::single`), and on a private Redis Cluster of this
//! test process, three masters and three replicas (`<test>::cluster`). MariaDB
//! or SQLite is behind it. Tests that stop Redis start a private `redis-server`;
//! tests that kill or move parts of a cluster start one of their own or keep
//! to sessions of their own.

mod suite;

use confab_core::{Epoch, Seq, Uid};
use confab_store::mysql::{MySqlOptions, MySqlStore};
use confab_store::redis::{RedisOptions, RedisTier, WriteThrough};
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use confab_store::tiered::TieredStore;
use confab_store::{EventStore, SnapshotStore, Store, StoreError, StoredSnapshot};
use confab_testkit::{
    PrivateRedis, PrivateRedisCluster, TestDatabase, shared_mysql_url, shared_redis_url,
};
use redis::{Cmd, FromRedisValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use suite::{event, event_at, uid};

/// Which Redis the hot tier runs on.
#[derive(Debug, Clone, Copy)]
enum Hot {
    /// The shared server.
    Single,
    /// This test process's private Redis Cluster.
    Cluster,
}

/// A key prefix no other test (or process) uses.
fn prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "confab-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn options() -> RedisOptions {
    RedisOptions {
        key_prefix: prefix(),
        ..RedisOptions::default()
    }
}

fn redis_at(url: &str) -> RedisTier {
    RedisTier::open(url, options()).unwrap()
}

/// A hot tier on `hot`, under a key prefix of its own.
fn redis_on(hot: Hot) -> RedisTier {
    match hot {
        Hot::Single => redis_at(&shared_redis_url()),
        Hot::Cluster => {
            let tier =
                RedisTier::open_cluster(&PrivateRedisCluster::shared().seed_urls(), options())
                    .unwrap();
            assert!(tier.is_cluster());
            tier
        }
    }
}

/// SQLite in a temp dir behind `redis`.
async fn on_sqlite(redis: RedisTier) -> (TieredStore, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let durable: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path(), &SqliteOptions::default())
            .await
            .unwrap(),
    );
    (TieredStore::new(Arc::clone(&durable), redis), durable, dir)
}

/// A fresh database on the shared MariaDB behind `redis`.
async fn on_mysql(redis: RedisTier) -> (TieredStore, TestDatabase) {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let durable = MySqlStore::open(&db.url, &MySqlOptions::default())
        .await
        .unwrap();
    (TieredStore::new(Arc::new(durable), redis), db)
}

/// A connection of the test's own to the Redis under the tier, for what the
/// tier does not expose (TTLs, list lengths, keys lost behind its back).
enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    async fn open(hot: Hot) -> Raw {
        match hot {
            Hot::Single => Raw::Single(
                redis::Client::open(shared_redis_url())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .expect("Redis must run on 127.0.0.1:6379"),
            ),
            Hot::Cluster => Raw::Cluster(
                redis::cluster::ClusterClient::new(PrivateRedisCluster::shared().seed_urls())
                    .unwrap()
                    .get_async_connection()
                    .await
                    .expect("the private cluster answers"),
            ),
        }
    }

    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> T {
        match self {
            Raw::Single(conn) => cmd.query_async(conn).await,
            Raw::Cluster(conn) => cmd.query_async(conn).await,
        }
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.args_iter().next()))
    }
}

/// `key`'s TTL in seconds.
async fn ttl(raw: &mut Raw, key: &str) -> i64 {
    raw.query(redis::cmd("TTL").arg(key)).await
}

/// Each named test, on the shared server (`<name>::single`) and on the private
/// cluster (`<name>::cluster`).
macro_rules! on_each_redis {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn single() {
                super::$name(super::Hot::Single).await;
            }

            #[tokio::test]
            async fn cluster() {
                super::$name(super::Hot::Cluster).await;
            }
        }
    )*};
}

/// Each named suite test on SQLite and MySQL, each behind the shared server
/// and behind the private cluster.
macro_rules! suite_on_each_tier {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite_and_redis() {
                let (store, _durable, _dir) = on_sqlite(redis_on(Hot::Single)).await;
                suite::$name(&store).await;
            }

            #[tokio::test]
            async fn sqlite_and_redis_cluster() {
                let (store, _durable, _dir) = on_sqlite(redis_on(Hot::Cluster)).await;
                suite::$name(&store).await;
            }

            #[tokio::test]
            async fn mysql_and_redis() {
                let (store, db) = on_mysql(redis_on(Hot::Single)).await;
                suite::$name(&store).await;
                drop(store);
                db.drop_database().await;
            }

            #[tokio::test]
            async fn mysql_and_redis_cluster() {
                let (store, db) = on_mysql(redis_on(Hot::Cluster)).await;
                suite::$name(&store).await;
                drop(store);
                db.drop_database().await;
            }
        }
    )*};
}

suite_on_each_tier!(
    appended_events_read_back_in_order_after_a_seq,
    a_batch_with_a_taken_seq_is_refused_whole,
    snapshots_never_go_back,
    many_sessions_in_one_batch_all_land,
    a_claim_fences_out_older_writers,
    a_stale_owner_cannot_write_a_snapshot,
    load_gives_the_snapshot_and_the_events_after_it,
    a_batch_of_large_events_lands_whole,
    dead_letters_wait_oldest_first_up_to_a_limit,
    dead_lettering_one_key_twice_leaves_one_entry,
    a_resolved_dead_letter_leaves_the_queue_until_it_fails_again,
    settings_change_only_by_compare_and_set,
    concurrent_setting_writers_exactly_one_wins,
    bad_control_input_is_refused_with_a_clear_error,
    the_audit_log_lists_newest_first_and_cuts_long_entries,
    key_usage_counts_snapshots_and_events_by_version,
);

on_each_redis!(
    commits_write_through_and_loads_are_served_by_redis,
    a_miss_loads_from_the_durable_tier_and_fills_redis,
    a_stale_hot_tier_never_hides_an_acked_event,
    a_write_after_a_gap_drops_the_cached_log,
    a_snapshot_trims_the_cached_log,
    the_redis_fence_refuses_a_stale_writer,
    a_cached_log_whose_list_was_lost_is_a_miss_not_a_prefix,
    a_snapshot_at_the_cached_seq_replaces_the_cached_one,
    membership_cas_lets_one_proposal_win_on_redis,
    one_batch_writes_every_session_through,
);

async fn commits_write_through_and_loads_are_served_by_redis(hot: Hot) {
    let (store, _durable, _dir) = on_sqlite(redis_on(hot)).await;
    let batch: Vec<_> = (1..=6).map(|s| event("a", s)).collect();
    store.append(&batch[..3]).await.unwrap();
    store.append(&batch[3..]).await.unwrap();

    let log = store.load(&uid("a"), 100).await.unwrap();
    assert_eq!(log.events, batch);
    let stats = store.redis().stats();
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1, "the load was a hit");
    assert_eq!(stats.misses.load(Ordering::Relaxed), 0);

    // Both keys carry the TTL, refreshed by the read.
    let (hash, list) = store.redis().keys_of(&uid("a"));
    let mut raw = Raw::open(hot).await;
    for key in [hash, list] {
        let ttl = ttl(&mut raw, &key).await;
        assert!((1700..=1800).contains(&ttl), "{key} ttl {ttl}");
    }
}

async fn a_miss_loads_from_the_durable_tier_and_fills_redis(hot: Hot) {
    let (store, durable, _dir) = on_sqlite(redis_on(hot)).await;
    let batch: Vec<_> = (1..=4).map(|s| event("a", s)).collect();
    durable.append(&batch).await.unwrap(); // behind Redis's back

    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    let stats = store.redis().stats();
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1, "filled by the miss");
}

async fn a_stale_hot_tier_never_hides_an_acked_event(hot: Hot) {
    let (store, durable, _dir) = on_sqlite(redis_on(hot)).await;
    let batch: Vec<_> = (1..=9).map(|s| event("a", s)).collect();
    store.append(&batch[..3]).await.unwrap();
    // Redis misses 4..=6, as when it was down during their commit.
    durable.append(&batch[3..6]).await.unwrap();
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch[..6]);
    assert_eq!(
        store.events_after(&uid("a"), Seq(2), 100).await.unwrap(),
        batch[2..6]
    );
    // Writes go on; what Redis holds stays a prefix of the log.
    store.append(&batch[6..]).await.unwrap();
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    // Every read above was a hit: the first load repaired the cached log.
    assert_eq!(store.redis().stats().hits.load(Ordering::Relaxed), 3);
    let cached = store
        .redis()
        .read(&uid("a"), None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.events, batch);
}

async fn a_write_after_a_gap_drops_the_cached_log(hot: Hot) {
    let redis = redis_on(hot);
    let outcome = |r: &std::collections::BTreeMap<Uid, Result<WriteThrough, StoreError>>| {
        r[&uid("a")].clone().unwrap()
    };
    let r = redis.append(&[event("a", 1), event("a", 2)]).await.unwrap();
    assert_eq!(outcome(&r), WriteThrough::Appended);
    let r = redis.append(&[event("a", 5)]).await.unwrap();
    assert_eq!(outcome(&r), WriteThrough::Dropped);
    assert_eq!(redis.read(&uid("a"), None, 10).await.unwrap(), None);
    // Nothing is cached until the log can start again (a load or a snapshot).
    let r = redis.append(&[event("a", 6)]).await.unwrap();
    assert_eq!(outcome(&r), WriteThrough::NotCached);
}

async fn a_snapshot_trims_the_cached_log(hot: Hot) {
    let (store, _durable, _dir) = on_sqlite(redis_on(hot)).await;
    let batch: Vec<_> = (1..=6).map(|s| event("a", s)).collect();
    store.append(&batch).await.unwrap();
    let snapshot = StoredSnapshot {
        uid: uid("a"),
        seq: Seq(4),
        at_ms: 4,
        epoch: Epoch(1),
        bytes: vec![4; 48],
    };
    store
        .write_snapshots(std::slice::from_ref(&snapshot))
        .await
        .unwrap();

    let (_, list) = store.redis().keys_of(&uid("a"));
    let cached: i64 = Raw::open(hot)
        .await
        .query(redis::cmd("LLEN").arg(&list))
        .await;
    assert_eq!(cached, 2, "only the events after the snapshot stay");
    let log = store.load(&uid("a"), 100).await.unwrap();
    assert_eq!(log.snapshot, Some(snapshot));
    assert_eq!(log.events, batch[4..]);
    assert_eq!(store.redis().stats().hits.load(Ordering::Relaxed), 1);
}

async fn the_redis_fence_refuses_a_stale_writer(hot: Hot) {
    let redis = redis_on(hot);
    redis.append(&[event("a", 1)]).await.unwrap();
    redis.claim(&uid("a"), Epoch(3)).await.unwrap();
    let r = redis.append(&[event_at("a", 2, 2)]).await.unwrap();
    assert!(
        matches!(&r[&uid("a")], Err(StoreError::Fenced { current, .. }) if *current == Epoch(3)),
        "{r:?}"
    );
    let err = redis.claim(&uid("a"), Epoch(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let cached = redis.read(&uid("a"), None, 10).await.unwrap().unwrap();
    assert_eq!(
        cached.events,
        [event("a", 1)],
        "the stale write changed nothing"
    );
    // The current owner writes on.
    let r = redis.append(&[event_at("a", 2, 3)]).await.unwrap();
    assert_eq!(r[&uid("a")].clone().unwrap(), WriteThrough::Appended);
}

#[tokio::test]
async fn with_redis_down_the_durable_tier_serves_and_redis_is_used_again_when_back() {
    let mut server = PrivateRedis::start();
    let (store, _durable, _dir) = on_sqlite(redis_at(&server.url())).await;
    store.append(&[event("a", 1)]).await.unwrap();
    assert_eq!(store.load(&uid("a"), 10).await.unwrap().events.len(), 1);
    let stats = store.redis().stats();
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1);

    server.kill();
    for s in 2..=20 {
        store.append(&[event("a", s)]).await.unwrap();
        assert_eq!(
            store.load(&uid("a"), 100).await.unwrap().events.len(),
            s as usize
        );
    }
    assert!(
        stats.errors.load(Ordering::Relaxed) >= 1,
        "failures are counted"
    );
    assert!(
        stats.bypassed.load(Ordering::Relaxed) >= 1,
        "a failing Redis is bypassed, not waited for"
    );

    // Back, empty: the next loads miss, fill, and hit, with no restart of ours.
    server.restart();
    let hits_before = stats.hits.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.hits.load(Ordering::Relaxed) == hits_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis was not used again within 30 s of coming back"
        );
        assert_eq!(store.load(&uid("a"), 100).await.unwrap().events.len(), 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.append(&[event("a", 21)]).await.unwrap();
    let cached = store
        .redis()
        .read(&uid("a"), None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.last, Seq(21), "writes go through again");
}

async fn a_cached_log_whose_list_was_lost_is_a_miss_not_a_prefix(hot: Hot) {
    let (store, _durable, _dir) = on_sqlite(redis_on(hot)).await;
    let batch: Vec<_> = (1..=5).map(|s| event("a", s)).collect();
    store.append(&batch).await.unwrap();
    // The list goes (evicted, or expired apart from its hash); the hash stays.
    let (hash, list) = store.redis().keys_of(&uid("a"));
    let mut raw = Raw::open(hot).await;
    let _: i64 = raw.query(redis::cmd("DEL").arg(&list)).await;
    assert_eq!(
        store.redis().read(&uid("a"), None, 100).await.unwrap(),
        None
    );
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    // The load filled it again, and claims keep both keys alive.
    store.claim(&uid("a"), Epoch(1)).await.unwrap();
    let _: i64 = raw.query(redis::cmd("EXPIRE").arg(&hash).arg(5)).await;
    let _: i64 = raw.query(redis::cmd("EXPIRE").arg(&list).arg(5)).await;
    store.redis().claim(&uid("a"), Epoch(1)).await.unwrap();
    for key in [hash, list] {
        let ttl = ttl(&mut raw, &key).await;
        assert!(ttl > 1000, "{key} ttl {ttl} after a claim");
    }
}

async fn a_snapshot_at_the_cached_seq_replaces_the_cached_one(hot: Hot) {
    let redis = redis_on(hot);
    redis.append(&[event("a", 1), event("a", 2)]).await.unwrap();
    let snapshot = |byte: u8| StoredSnapshot {
        uid: uid("a"),
        seq: Seq(2),
        at_ms: 2,
        epoch: Epoch(1),
        bytes: vec![byte; 48],
    };
    redis.write_snapshots(&[snapshot(1)]).await.unwrap();
    redis.write_snapshots(&[snapshot(2)]).await.unwrap();
    let cached = redis.read(&uid("a"), None, 10).await.unwrap().unwrap();
    assert_eq!(cached.snapshot, Some(snapshot(2)));
    assert!(cached.events.is_empty());
}

async fn membership_cas_lets_one_proposal_win_on_redis(hot: Hot) {
    suite::membership_cas_lets_one_proposal_win(&redis_on(hot)).await;
}

/// One write-through of many sessions (on a cluster: over every master, each
/// session's call to its own slot) lands for every session, each read back
/// whole from Redis.
async fn one_batch_writes_every_session_through(hot: Hot) {
    let redis = redis_on(hot);
    let uids: Vec<String> = (0..64).map(|u| format!("spread-{u}")).collect();
    let batch: Vec<_> = uids
        .iter()
        .flat_map(|u| (1..=3).map(move |s| event(u, s)))
        .collect();
    let outcomes = redis.append(&batch).await.unwrap();
    assert_eq!(outcomes.len(), uids.len());
    for (u, outcome) in &outcomes {
        assert_eq!(outcome.clone().unwrap(), WriteThrough::Appended, "{u}");
    }
    for u in &uids {
        let cached = redis.read(&uid(u), None, 10).await.unwrap().unwrap();
        let expected: Vec<_> = (1..=3).map(|s| event(u, s)).collect();
        assert_eq!(cached.events, expected, "{u}");
    }
    assert_eq!(redis.stats().errors.load(Ordering::Relaxed), 0);
}
