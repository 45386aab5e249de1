//! Redis in front of a durable store, on the real servers of this machine: the
//! shared Redis (`CONFAB_TEST_REDIS_URL`, default 127.0.0.1:6379) under a key
//! prefix of each test's own, and MariaDB or SQLite behind it. Tests that stop
//! Redis start a private `redis-server`.

mod suite;

use confab_core::{Epoch, Seq, Uid};
use confab_store::mysql::{MySqlOptions, MySqlStore};
use confab_store::redis::{RedisOptions, RedisTier, WriteThrough};
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use confab_store::tiered::TieredStore;
use confab_store::{EventStore, SnapshotStore, Store, StoreError, StoredSnapshot};
use confab_testkit::{PrivateRedis, TestDatabase, shared_mysql_url, shared_redis_url};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use suite::{event, event_at, uid};

/// A key prefix no other test (or process) uses.
fn prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "confab-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn redis_at(url: &str) -> RedisTier {
    RedisTier::open(
        url,
        RedisOptions {
            key_prefix: prefix(),
            ..RedisOptions::default()
        },
    )
    .unwrap()
}

/// SQLite in a temp dir behind the shared Redis.
async fn on_sqlite(redis: RedisTier) -> (TieredStore, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let durable: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path(), &SqliteOptions::default())
            .await
            .unwrap(),
    );
    (TieredStore::new(Arc::clone(&durable), redis), durable, dir)
}

async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(shared_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must run on 127.0.0.1:6379")
}

macro_rules! suite_on_mysql_and_redis {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDatabase::create(&shared_mysql_url()).await;
            let durable = MySqlStore::open(&db.url, &MySqlOptions::default())
                .await
                .unwrap();
            let store = TieredStore::new(Arc::new(durable), redis_at(&shared_redis_url()));
            suite::$name(&store).await;
            drop(store);
            db.drop_database().await;
        }
    };
}

suite_on_mysql_and_redis!(appended_events_read_back_in_order_after_a_seq);
suite_on_mysql_and_redis!(a_batch_with_a_taken_seq_is_refused_whole);
suite_on_mysql_and_redis!(snapshots_never_go_back);
suite_on_mysql_and_redis!(many_sessions_in_one_batch_all_land);
suite_on_mysql_and_redis!(a_claim_fences_out_older_writers);
suite_on_mysql_and_redis!(a_stale_owner_cannot_write_a_snapshot);
suite_on_mysql_and_redis!(load_gives_the_snapshot_and_the_events_after_it);
suite_on_mysql_and_redis!(a_batch_of_large_events_lands_whole);
suite_on_mysql_and_redis!(dead_letters_wait_oldest_first_up_to_a_limit);
suite_on_mysql_and_redis!(dead_lettering_one_key_twice_leaves_one_entry);
suite_on_mysql_and_redis!(a_resolved_dead_letter_leaves_the_queue_until_it_fails_again);
suite_on_mysql_and_redis!(settings_change_only_by_compare_and_set);

#[tokio::test]
async fn commits_write_through_and_loads_are_served_by_redis() {
    let (store, _durable, _dir) = on_sqlite(redis_at(&shared_redis_url())).await;
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
    let mut conn = raw_redis().await;
    for key in [hash, list] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1700..=1800).contains(&ttl), "{key} ttl {ttl}");
    }
}

#[tokio::test]
async fn a_miss_loads_from_the_durable_tier_and_fills_redis() {
    let (store, durable, _dir) = on_sqlite(redis_at(&shared_redis_url())).await;
    let batch: Vec<_> = (1..=4).map(|s| event("a", s)).collect();
    durable.append(&batch).await.unwrap(); // behind Redis's back

    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    let stats = store.redis().stats();
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1, "filled by the miss");
}

#[tokio::test]
async fn a_stale_hot_tier_never_hides_an_acked_event() {
    let (store, durable, _dir) = on_sqlite(redis_at(&shared_redis_url())).await;
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

#[tokio::test]
async fn a_write_after_a_gap_drops_the_cached_log() {
    let redis = redis_at(&shared_redis_url());
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

#[tokio::test]
async fn a_snapshot_trims_the_cached_log() {
    let (store, _durable, _dir) = on_sqlite(redis_at(&shared_redis_url())).await;
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
    let cached: i64 = redis::cmd("LLEN")
        .arg(&list)
        .query_async(&mut raw_redis().await)
        .await
        .unwrap();
    assert_eq!(cached, 2, "only the events after the snapshot stay");
    let log = store.load(&uid("a"), 100).await.unwrap();
    assert_eq!(log.snapshot, Some(snapshot));
    assert_eq!(log.events, batch[4..]);
    assert_eq!(store.redis().stats().hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_redis_fence_refuses_a_stale_writer() {
    let redis = redis_at(&shared_redis_url());
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

#[tokio::test]
async fn a_cached_log_whose_list_was_lost_is_a_miss_not_a_prefix() {
    let (store, _durable, _dir) = on_sqlite(redis_at(&shared_redis_url())).await;
    let batch: Vec<_> = (1..=5).map(|s| event("a", s)).collect();
    store.append(&batch).await.unwrap();
    // The list goes (evicted, or expired apart from its hash); the hash stays.
    let (hash, list) = store.redis().keys_of(&uid("a"));
    let mut conn = raw_redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.redis().read(&uid("a"), None, 100).await.unwrap(),
        None
    );
    assert_eq!(store.load(&uid("a"), 100).await.unwrap().events, batch);
    // The load filled it again, and claims keep both keys alive.
    store.claim(&uid("a"), Epoch(1)).await.unwrap();
    let _: i64 = redis::cmd("EXPIRE")
        .arg(&hash)
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("EXPIRE")
        .arg(&list)
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    store.redis().claim(&uid("a"), Epoch(1)).await.unwrap();
    for key in [hash, list] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 1000, "{key} ttl {ttl} after a claim");
    }
}

#[tokio::test]
async fn a_snapshot_at_the_cached_seq_replaces_the_cached_one() {
    let redis = redis_at(&shared_redis_url());
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

#[tokio::test]
async fn membership_cas_lets_one_proposal_win_on_redis() {
    suite::membership_cas_lets_one_proposal_win(&redis_at(&shared_redis_url())).await;
}
