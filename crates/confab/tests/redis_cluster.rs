//! `confab up` with its hot tier on a Redis Cluster (`store.redis_cluster_nodes`),
//! as an operator runs it: chat users talk, a Redis master is killed (SIGKILL)
//! and its replica takes over. No acked turn is lost or answered twice, no turn
//! fails outside the failover, every user carries on, and Redis is used again
//! once the replica has taken over.

mod common;

use common::*;
use confab_testkit::PrivateRedisCluster;
use confab_testkit::load::{Load, UserLog, assert_no_loss_no_duplicate, slowest, summary};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// Turns the users keep talking after the failover, before the checks: longer
/// than the hot tier's longest bypass (its failure backoff doubles up to 5 s,
/// and a slow failover on a busy machine reaches it), so that the write-through
/// has resumed by then.
const AFTER_FAILOVER: Duration = Duration::from_secs(7);
/// A turn may meet a setback this long after the failover ends: a Redis
/// request that was under way when it ended takes at most the tier's timeout
/// (`store.redis_timeout_ms`, 250 ms), plus room for the turn's reply.
const SETTLE: Duration = Duration::from_secs(1);

/// `confab_store_requests_total{tier="redis",op,result="hit"}` summed over the
/// nodes on `ports`: the Redis requests that succeeded.
async fn redis_hits(ports: &[u16], op: &str) -> u64 {
    let mut total = 0;
    for &port in ports {
        let (_, metrics) = http_get(port, "/metrics").await.expect("metrics answer");
        total += metrics
            .lines()
            .filter(|l| {
                l.starts_with("confab_store_requests_total{")
                    && l.contains("tier=\"redis\"")
                    && l.contains(&format!("op=\"{op}\""))
                    && l.contains("result=\"hit\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

/// `EVAL` calls the Redis node on `port` has served.
async fn eval_calls(port: u16) -> u64 {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_eval:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Every setback a turn met (an error frame, a connection that ended), with
/// when it happened and the turn's user and id.
fn setbacks(logs: &[UserLog]) -> Vec<(Instant, String)> {
    logs.iter()
        .flat_map(|log| {
            log.turns.iter().flat_map(move |turn| {
                let sent = turn.at - turn.latency;
                turn.setbacks.iter().map(move |(after, what)| {
                    (sent + *after, format!("{} {}: {what}", log.uid, turn.id))
                })
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_master_killed_under_load_fails_no_turn_outside_the_failover_and_loses_none() {
    let cluster = tokio::task::spawn_blocking(PrivateRedisCluster::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3);
    let ports = [port, port + 1, port + 2];
    let log_path = dir.path().join("up.log");
    let mut child = ChildGuard::new(
        confab_up(3, port, &dir.path().join("data"))
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            // The talkers go faster than a person: no turn of theirs is refused
            // for its rate, so a setback can only be the failover's.
            .env("CONFAB_LIMITS__TURNS_PER_S", "1000")
            .env("CONFAB_LIMITS__BURST", "1000")
            .env(
                "CONFAB_STORE__REDIS_CLUSTER_NODES",
                cluster.seed_urls().join(","),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().starts_with("Ctrl-C stops") {
            break;
        }
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("ws://127.0.0.1:{p}/v1/ws"))
        .collect();
    let users: Vec<String> = (0..24).map(|i| format!("talker-{i}")).collect();
    let load = Load::start(urls.clone(), &users, Duration::from_millis(20), tokens());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let appended = redis_hits(&ports, "append").await;
    assert!(
        appended > 0,
        "turns are written through to the Redis Cluster"
    );

    // The master serving talker-0's keys dies; its replica takes over.
    let victim = format!("{{{}}}", users[0]);
    let (cluster, killed) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let killed = cluster.kill_master_of(&victim);
        (cluster, killed)
    })
    .await
    .unwrap();
    let k = killed.clone();
    let (cluster, (promoted, failover)) = tokio::task::spawn_blocking(move || {
        let promoted = cluster.wait_for_failover(&k, Duration::from_secs(30));
        (cluster, promoted)
    })
    .await
    .unwrap();
    let killed_at = Instant::from_std(killed.at);
    let failed_over_at = killed_at + failover;
    let appended_at_failover = redis_hits(&ports, "append").await;
    tokio::time::sleep(AFTER_FAILOVER).await;
    let logs = load.finish().await;
    eprintln!(
        "redis master 127.0.0.1:{} (slot {}) killed; 127.0.0.1:{promoted} took over {failover:?} later; {}",
        killed.port,
        killed.slot,
        summary(&logs)
    );

    // No acked turn lost or applied twice; each session resumes at its last turn.
    assert_no_loss_no_duplicate(&logs, &urls[0], &tokens()).await;
    // A turn may have met a setback only while the master was down.
    let setbacks = setbacks(&logs);
    eprintln!(
        "{} setbacks; the slowest turn took {:?}",
        setbacks.len(),
        slowest(&logs)
    );
    for (at, what) in &setbacks {
        assert!(
            *at >= killed_at && *at <= failed_over_at + SETTLE,
            "{what}, {:?} after the kill, outside the failover (which ended {failover:?} after it)",
            at.saturating_duration_since(killed_at)
        );
    }
    // Every user carried on after the failover.
    for log in &logs {
        assert!(
            log.turns.iter().any(|t| t.at > failed_over_at),
            "{} got no turn answered after the failover",
            log.uid
        );
    }
    // Redis is written through again (the talkers' sessions live on every master).
    let appended_after = redis_hits(&ports, "append").await;
    assert!(
        appended_after > appended_at_failover,
        "no write-through reached Redis after the failover ({appended_at_failover} before, {appended_after} after)"
    );
    // The promoted replica serves its sessions: it lacked the scripts and was
    // sent their source.
    assert!(
        eval_calls(promoted).await > 0,
        "the nodes never reached the promoted replica"
    );

    let status = tokio::task::spawn_blocking(move || child.stop_with(Signal::SIGTERM))
        .await
        .unwrap();
    let said = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "confab up exited with {status}: {said}");
    drop(cluster);
}
