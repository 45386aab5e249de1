//! The hot tier on a Redis Cluster while the cluster changes under it: a slot
//! moves to another master (ASK, then MOVED) and a master is killed (a replica
//! takes over), each under reads and writes. Each test has a private cluster of
//! its own, SQLite behind it.

mod suite;

use confab_store::redis::{RedisOptions, RedisTier};
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use confab_store::tiered::TieredStore;
use confab_store::{EventStore, Store};
use confab_testkit::PrivateRedisCluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use suite::{event, uid};
use tokio::time::Instant;

/// Events a load asks for, at most: more than any test writes.
const LOAD_LIMIT: usize = 100_000;
/// Pause between two rounds of the load.
const ROUND_PAUSE: Duration = Duration::from_millis(10);
/// How long any wait of these tests may take before it fails as hung.
const WAIT: Duration = Duration::from_secs(60);

async fn start_cluster() -> Arc<PrivateRedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(PrivateRedisCluster::start)
            .await
            .unwrap(),
    )
}

async fn tiered_on(cluster: &PrivateRedisCluster) -> (Arc<TieredStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let durable: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path(), &SqliteOptions::default())
            .await
            .unwrap(),
    );
    let redis = RedisTier::open_cluster(&cluster.seed_urls(), RedisOptions::default()).unwrap();
    (Arc::new(TieredStore::new(durable, redis)), dir)
}

/// A counter of `INFO <section>` on the node on `port`: `field` of line
/// `name` (`cmdstat_asking` `calls`, `errorstat_MOVED` `count`), 0 if absent.
async fn info_counter(port: u16, section: &str, name: &str, field: &str) -> u64 {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|values| {
            values
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// What one round of the load saw.
#[derive(Debug, Clone)]
struct Round {
    /// When it ended.
    at: Instant,
    /// Redis requests that failed during it.
    redis_errors: u64,
    /// Redis requests skipped (its failure backoff) during it.
    redis_bypassed: u64,
    /// Loads Redis served during it.
    redis_hits: u64,
}

/// Sessions written and read in rounds: each round appends the next event of
/// every session through the tiered store, then loads each one and checks it
/// holds every event so far. A failed request or a wrong load is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(Vec<Round>, Vec<String>)>,
}

impl Load {
    fn start(store: Arc<TieredStore>, uids: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_load(
            store,
            uids,
            Arc::clone(&stop),
            Arc::clone(&rounds),
        ));
        Load { stop, rounds, task }
    }

    /// Waits until `n` more rounds have run.
    async fn rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Acquire) + n;
        let deadline = Instant::now() + WAIT;
        while self.rounds.load(Ordering::Acquire) < target {
            assert!(!self.task.is_finished(), "the load stopped");
            assert!(Instant::now() < deadline, "{n} rounds took over {WAIT:?}");
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    async fn finish(self) -> (Vec<Round>, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

async fn run_load(
    store: Arc<TieredStore>,
    uids: Vec<String>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> (Vec<Round>, Vec<String>) {
    let stats = store.redis().stats();
    let counters = || {
        (
            stats.errors.load(Ordering::Relaxed),
            stats.bypassed.load(Ordering::Relaxed),
            stats.hits.load(Ordering::Relaxed),
        )
    };
    let mut seq = 0;
    let mut log = Vec::new();
    let mut failures = Vec::new();
    while !stop.load(Ordering::Acquire) {
        seq += 1;
        let before = counters();
        for u in &uids {
            if let Err(e) = store.append(&[event(u, seq)]).await {
                failures.push(format!("{u} append {seq}: {e}"));
            }
        }
        for u in &uids {
            match store.load(&uid(u), LOAD_LIMIT).await {
                Ok(loaded) => {
                    let seqs: Vec<u64> = loaded.events.iter().map(|e| e.seq.0).collect();
                    if seqs != (1..=seq).collect::<Vec<_>>() {
                        failures.push(format!(
                            "{u} load after {seq}: {} events, last {:?}",
                            seqs.len(),
                            seqs.last()
                        ));
                    }
                }
                Err(e) => failures.push(format!("{u} load after {seq}: {e}")),
            }
        }
        let after = counters();
        log.push(Round {
            at: Instant::now(),
            redis_errors: after.0 - before.0,
            redis_bypassed: after.1 - before.1,
            redis_hits: after.2 - before.2,
        });
        rounds.fetch_add(1, Ordering::Release);
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    (log, failures)
}

/// `count` uids whose slots (all different) the master of `first`'s slot serves.
async fn sessions_on_one_master(cluster: &Arc<PrivateRedisCluster>, count: usize) -> Vec<String> {
    let cluster = Arc::clone(cluster);
    tokio::task::spawn_blocking(move || {
        let master = cluster.master_of_slot(cluster.slot_of("{moving-0}"));
        let mut uids: Vec<String> = Vec::new();
        let mut slots = Vec::new();
        for i in 0.. {
            let u = format!("moving-{i}");
            let slot = cluster.slot_of(&format!("{{{u}}}"));
            if !slots.contains(&slot) && cluster.master_of_slot(slot) == master {
                slots.push(slot);
                uids.push(u);
                if uids.len() == count {
                    break;
                }
            }
        }
        uids
    })
    .await
    .unwrap()
}

/// Every session's cached log is its whole durable log.
async fn assert_cached_whole(store: &TieredStore, uids: &[String]) {
    for u in uids {
        let durable = store
            .durable()
            .events_after(&uid(u), confab_core::Seq(0), LOAD_LIMIT)
            .await
            .unwrap();
        let cached = store
            .redis()
            .read(&uid(u), None, LOAD_LIMIT)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{u} is not cached"));
        assert_eq!(cached.events, durable, "{u}");
    }
}

/// Sessions whose slots move to another master while they are written and
/// read: the old master serves them until their keys move, then sends the
/// client on with ASK, then (once the new owner is announced) with MOVED.
/// Redis answers every request all along: not one fails or is bypassed, and
/// every load is served by Redis and holds every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moving_between_masters_fail_no_request() {
    let cluster = start_cluster().await;
    let (store, _dir) = tiered_on(&cluster).await;
    let uids = sessions_on_one_master(&cluster, 4).await;
    let load = Load::start(Arc::clone(&store), uids.clone());
    load.rounds(3).await;

    let c = Arc::clone(&cluster);
    let u = uids.clone();
    let (from, to, migrations) = tokio::task::spawn_blocking(move || {
        let slots: Vec<u16> = u.iter().map(|u| c.slot_of(&format!("{{{u}}}"))).collect();
        let from = c.master_of_slot(slots[0]);
        let to = *c.masters().iter().find(|&&m| m != from).unwrap();
        let migrations: Vec<_> = slots.iter().map(|&s| c.begin_migration(s, to)).collect();
        (from, to, migrations)
    })
    .await
    .unwrap();
    let asking_before = info_counter(to, "commandstats", "cmdstat_asking", "calls").await;
    let moved_before = info_counter(from, "errorstats", "errorstat_MOVED", "count").await;
    // Marked, keys still on the old master: it serves them.
    load.rounds(3).await;
    let migrations = tokio::task::spawn_blocking(move || {
        for m in &migrations {
            assert_eq!(m.move_keys(), 2, "a session's hash and list move together");
        }
        migrations
    })
    .await
    .unwrap();
    // Keys on the new master, not yet its slots: ASK.
    load.rounds(5).await;
    tokio::task::spawn_blocking(move || migrations.into_iter().for_each(|m| m.finish()))
        .await
        .unwrap();
    // Announced: MOVED, then the client's refreshed slot map.
    load.rounds(5).await;
    let (rounds, failures) = load.finish().await;

    assert!(failures.is_empty(), "{failures:#?}");
    let stats = store.redis().stats();
    assert_eq!(
        (
            stats.errors.load(Ordering::Relaxed),
            stats.bypassed.load(Ordering::Relaxed)
        ),
        (0, 0),
        "every Redis request was answered"
    );
    let misses: Vec<_> = rounds
        .iter()
        .skip(1)
        .filter(|r| r.redis_hits != uids.len() as u64)
        .collect();
    assert!(misses.is_empty(), "loads Redis did not serve: {misses:?}");
    let asked = info_counter(to, "commandstats", "cmdstat_asking", "calls").await - asking_before;
    let moved = info_counter(from, "errorstats", "errorstat_MOVED", "count").await - moved_before;
    eprintln!(
        "{} rounds; the new master was asked (ASKING) {asked} times, the old one answered MOVED {moved} times",
        rounds.len()
    );
    assert!(asked > 0, "no request was redirected with ASK");
    assert!(moved > 0, "no request was redirected with MOVED");
    let c = Arc::clone(&cluster);
    let owners = tokio::task::spawn_blocking(move || {
        uids.iter()
            .map(|u| c.master_of_slot(c.slot_of(&format!("{{{u}}}"))))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(owners.iter().all(|&o| o == to), "{owners:?}");
}

/// A master killed under reads and writes: no request of the tiered store
/// fails and no event is lost (the durable tier serves while Redis is
/// bypassed); once a replica has taken over, Redis serves every session
/// again, the promoted replica is sent the scripts it lacks, and every cached
/// log is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_no_request_and_redis_serves_again() {
    let mut cluster = tokio::task::spawn_blocking(PrivateRedisCluster::start)
        .await
        .unwrap();
    let (store, _dir) = tiered_on(&cluster).await;
    let uids: Vec<String> = (0..12).map(|i| format!("talker-{i}")).collect();
    let load = Load::start(Arc::clone(&store), uids.clone());
    load.rounds(10).await;

    let victim = format!("{{{}}}", uids[0]);
    let (cluster, killed) = tokio::task::spawn_blocking(move || {
        let killed = cluster.kill_master_of(&victim);
        (cluster, killed)
    })
    .await
    .unwrap();
    let k = killed.clone();
    let (_cluster, (promoted, failover)) = tokio::task::spawn_blocking(move || {
        let promoted = cluster.wait_for_failover(&k, Duration::from_secs(30));
        (cluster, promoted)
    })
    .await
    .unwrap();
    let failed_over_at = Instant::from_std(killed.at + failover);
    eprintln!(
        "127.0.0.1:{} killed; 127.0.0.1:{promoted} took over slot {} {failover:?} later",
        killed.port, killed.slot
    );

    // Redis serves every session again: rounds whose every load was a hit.
    let deadline = Instant::now() + WAIT;
    loop {
        load.rounds(5).await;
        let served_again = {
            let stats = store.redis().stats();
            let hits = stats.hits.load(Ordering::Relaxed);
            load.rounds(3).await;
            stats.hits.load(Ordering::Relaxed) - hits >= 3 * uids.len() as u64
        };
        if served_again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis did not serve every session again within {WAIT:?}"
        );
    }
    let (rounds, failures) = load.finish().await;

    assert!(failures.is_empty(), "{failures:#?}");
    let degraded: Vec<&Round> = rounds
        .iter()
        .filter(|r| r.redis_errors + r.redis_bypassed > 0)
        .collect();
    assert!(
        !degraded.is_empty(),
        "the kill was never felt: the test did not exercise a failover"
    );
    let killed_at = Instant::from_std(killed.at);
    let first = degraded.first().unwrap().at;
    let last = degraded.last().unwrap().at;
    eprintln!(
        "{} rounds; Redis failed or was bypassed in {} of them, from {:?} to {:?} after the kill (failover {failover:?})",
        rounds.len(),
        degraded.len(),
        first.saturating_duration_since(killed_at),
        last.saturating_duration_since(killed_at),
    );
    assert!(first >= killed_at, "Redis failed before the kill");
    // The failure backoff (under 5 s) may outlast the failover; a round's own
    // length comes on top.
    assert!(
        last <= failed_over_at + Duration::from_secs(10),
        "Redis was still failing {:?} after the failover",
        last - failed_over_at
    );
    let evals = info_counter(promoted, "commandstats", "cmdstat_eval", "calls").await;
    assert!(
        evals > 0,
        "the promoted replica was never sent a script's source"
    );
    assert_cached_whole(&store, &uids).await;
}
