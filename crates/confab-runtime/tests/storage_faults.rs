//! The runtime on MySQL (and Redis) when they fail: a private `mariadbd` and a
//! private `redis-server` that are killed and restarted, and the shared MariaDB
//! behind a proxy that slows every packet.

mod common;

use common::*;
use confab_core::Seq;
use confab_runtime::{Runtime, TurnError};
use confab_store::Store;
use confab_store::mysql::{MySqlOptions, MySqlStore};
use confab_store::redis::{RedisOptions, RedisTier};
use confab_store::tiered::TieredStore;
use confab_testkit::{DelayProxy, PrivateMariaDb, PrivateRedis, TestDatabase, shared_mysql_url};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

async fn mysql(url: &str) -> Arc<dyn Store> {
    let options = MySqlOptions {
        connections_max: 8,
        acquire_timeout: Duration::from_millis(500),
        ..MySqlOptions::default()
    };
    Arc::new(MySqlStore::open(url, &options).await.unwrap())
}

/// Every acked turn is in the log, once: a repeat of its id is a duplicate with
/// the same seq, and the log holds exactly three events per acked turn.
async fn assert_acked_turns_kept(
    rt: &Runtime,
    store: &dyn Store,
    acked: &BTreeMap<(String, String), u64>,
) {
    let mut turns_per_uid: BTreeMap<&str, u64> = BTreeMap::new();
    for ((u, id), seq) in acked {
        let again = rt.turn(uid(u), mid(id), "again".into()).await.unwrap();
        assert!(again.duplicate, "{u}/{id} was acked but is not recorded");
        assert_eq!(again.ack_seq, Seq(*seq), "{u}/{id}");
        *turns_per_uid.entry(u).or_default() += 1;
    }
    for (u, turns) in turns_per_uid {
        let log = store.events_after(&uid(u), Seq(0), 10_000).await.unwrap();
        assert_eq!(log.len() as u64, turns * 3, "{u}: nothing recorded twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mysql_down_no_turn_is_acked_and_service_comes_back_by_itself() {
    let mut server = PrivateMariaDb::start();
    let store = mysql(&server.url()).await;
    let mut cfg = config(1);
    cfg.commit_retries = 2;
    cfg.inflight_turns_max = 16;
    let rt = start(Arc::clone(&store), cfg, TestPolicy::default()).await;
    let mut acked = BTreeMap::new();
    for u in ["a", "b", "c"] {
        let (seq, _, _) = say(&rt, u, "m-1", "hi").await.unwrap();
        acked.insert((u.to_owned(), "m-1".to_owned()), seq);
    }

    server.kill();
    // A burst while down: every turn is refused with `unavailable` (or
    // `overloaded` past the node's bound), none is acked, none times out.
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move {
                say(
                    &rt,
                    ["a", "b", "c", "d"][i % 4],
                    &format!("m-down-{i}"),
                    "hi",
                )
                .await
            })
        })
        .collect();
    let mut unavailable = 0;
    for turn in burst {
        match turn.await.unwrap() {
            Err(TurnError::Unavailable(_)) => unavailable += 1,
            Err(TurnError::Overloaded(_)) => {}
            other => panic!("with MySQL down a turn got {other:?}"),
        }
    }
    assert!(unavailable > 0);
    assert!(
        !rt.ready().await,
        "not ready while the durable tier is down"
    );

    server.restart();
    // The pool reconnects by itself: no restart of the runtime.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match say(&rt, "a", "m-2", "back?").await {
            Ok((seq, _, _)) => {
                acked.insert(("a".into(), "m-2".into()), seq);
                break;
            }
            Err(TurnError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("MySQL came back but turns still fail: {e:?}"),
        }
    }
    for u in ["b", "c", "d"] {
        let (seq, _, _) = say(&rt, u, "m-2", "hi").await.unwrap();
        acked.insert((u.to_owned(), "m-2".to_owned()), seq);
    }
    assert!(rt.ready().await);
    assert_acked_turns_kept(&rt, &*store, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_slow_mysql_clients_get_overloaded_not_timeouts() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let upstream = "127.0.0.1:3306".parse().unwrap();
    let proxy = DelayProxy::start(upstream).await;
    let url = db.url.replace("127.0.0.1:3306", &proxy.addr().to_string());
    let store = mysql(&url).await;
    let mut cfg = config(1);
    cfg.inflight_turns_max = 16;
    cfg.commit_wait_max = Duration::from_millis(300);
    cfg.turn_timeout = Duration::from_secs(20);
    let rt = start(Arc::clone(&store), cfg, TestPolicy::default()).await;
    proxy.set_delay(Duration::from_millis(20));

    let turns: Vec<_> = (0..64)
        .flat_map(|u| (0..3).map(move |t| (format!("user-{u}"), format!("m-{t}"))))
        .map(|(u, id)| {
            let rt = rt.clone();
            tokio::spawn(async move {
                let outcome = say(&rt, &u, &id, "hi").await;
                (u, id, outcome)
            })
        })
        .collect();
    let (mut acked, mut overloaded) = (BTreeMap::new(), 0);
    for turn in turns {
        let (u, id, outcome) = turn.await.unwrap();
        match outcome {
            Ok((seq, _, _)) => {
                acked.insert((u, id), seq);
            }
            Err(TurnError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("a slow store must give `overloaded`, not {e:?}"),
        }
    }
    assert!(!acked.is_empty(), "slow, not stopped: some turns are acked");
    assert!(overloaded > 0, "the excess is refused at once");

    proxy.set_delay(Duration::ZERO);
    assert_acked_turns_kept(&rt, &*store, &acked).await;
    drop(rt);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_turns_go_on_on_mysql_and_redis_is_used_again_when_back() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let mut redis = PrivateRedis::start();
    let tiered = Arc::new(TieredStore::new(
        mysql(&db.url).await,
        RedisTier::open(&redis.url(), RedisOptions::default()).unwrap(),
    ));
    let mut cfg = config(1);
    cfg.passivate_after = Duration::from_millis(200);
    let rt = start(
        Arc::clone(&tiered) as Arc<dyn Store>,
        cfg,
        TestPolicy::default(),
    )
    .await;
    let stats = tiered.redis().stats();
    say(&rt, "a", "m-1", "hi").await.unwrap();

    redis.kill();
    // Turns keep working on MySQL alone, for a resident session and a new one.
    assert_eq!(say(&rt, "a", "m-2", "hi").await.unwrap().0, 4);
    assert_eq!(say(&rt, "b", "m-1", "hi").await.unwrap().0, 1);
    assert_eq!(say(&rt, "b", "m-2", "hi").await.unwrap().0, 4);
    let skipped = stats.errors.load(Ordering::Relaxed) + stats.bypassed.load(Ordering::Relaxed);
    assert!(skipped >= 2, "the bypass is counted ({skipped})");

    redis.restart();
    // No restart of ours: once its backoff ends, Redis answers again.
    eventually(async || tiered.redis().ping().await.is_ok()).await;
    // Redis came back empty. Once `a` has passivated, its next load misses Redis
    // and fills it from MySQL; it passivates again (its snapshot now goes to
    // both tiers) and comes back from Redis.
    eventually(async || rt.resident().await == 0).await;
    assert_eq!(say(&rt, "a", "m-3", "hi").await.unwrap().0, 7);
    eventually(async || rt.resident().await == 0).await;
    let hits = stats.hits.load(Ordering::Relaxed);
    assert_eq!(say(&rt, "a", "m-4", "hi").await.unwrap().0, 10);
    assert!(
        stats.hits.load(Ordering::Relaxed) > hits,
        "Redis served the reload (hits {} misses {} errors {} bypassed {})",
        stats.hits.load(Ordering::Relaxed),
        stats.misses.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        stats.bypassed.load(Ordering::Relaxed),
    );

    for (u, events) in [("a", 12), ("b", 6)] {
        let log = tiered
            .durable()
            .events_after(&uid(u), Seq(0), 100)
            .await
            .unwrap();
        assert_eq!(log.len(), events, "{u}: every acked turn is in MySQL");
    }
    drop(rt);
    db.drop_database().await;
}
