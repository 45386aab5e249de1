//! `confab-bench reactivate`: what waking a passivated session adds to its
//! first turn, beside a resident session's, on a node that may be busy with
//! other load (run `confab-bench turns` at the same time for that).
//!
//! Both kinds of probe do the same thing, the way a returning user does it:
//! connect, wait for the `hello`, say one thing, wait for the reply, close.
//! A cold probe's session has been left alone past the node's
//! `runtime.passivate_after_s`, so its `hello` loads it again (from Redis, on
//! a tiered store); a warm probe's session is probed often enough to stay in
//! memory. The difference of the two is the cost of reactivation.

use crate::admin;
use crate::turns::{parse_duration_arg, signing_secret, token, ws_config};
use anyhow::Context;
use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Connections opened at once while seeding the sessions.
const SEEDS_IN_PARALLEL: usize = 100;
/// Tries at seeding one session on a node that answers `overloaded`.
const SEED_ATTEMPTS: u32 = 10;
/// How long one probe may take, connect to reply.
const PROBE_MAX: Duration = Duration::from_secs(30);
/// Probes in flight at most; past it the run fails rather than queue.
const PROBES_IN_FLIGHT_MAX: usize = 1000;

#[derive(clap::Args)]
pub(crate) struct ReactivateArgs {
    /// The WebSocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws; the node's
    /// /metrics is read on the same host and port.
    #[arg(long)]
    url: String,
    /// The node's `runtime.passivate_after_s`: the cold sessions are left
    /// alone this long, and a quarter more (the node looks for idle sessions
    /// four times per period), before they are probed.
    #[arg(long, value_parser = parse_duration_arg)]
    passivate_after: Duration,
    /// Passivated sessions to wake, one probe each.
    #[arg(long, default_value_t = 1000)]
    cold: usize,
    /// Resident sessions, probed in turn beside the cold ones.
    #[arg(long, default_value_t = 20)]
    warm: usize,
    /// Probes per second, cold and warm alternating.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// HS256 secret to sign the sessions' tokens with.
    #[arg(
        long,
        env = "CONFAB_AUTH__JWT_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    jwt_secret: String,
    /// Prefix of the sessions' uids (a fresh prefix gives fresh sessions).
    #[arg(long, default_value = "wake")]
    uid_prefix: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) when a cold probe's p99 is more than this above a warm
    /// one's, e.g. 5ms (no bound when not given).
    #[arg(long, value_parser = parse_duration_arg)]
    max_added_p99: Option<Duration>,
}

/// One probe's times, in microseconds.
#[derive(Clone, Copy)]
struct Probe {
    /// From the start of the connect to the `hello` (a cold session is
    /// loaded here).
    hello_us: u64,
    /// From sending the turn to its reply.
    turn_us: u64,
}

#[derive(Serialize)]
struct Report {
    url: String,
    cold: Side,
    warm: Side,
    /// Cold p99 minus warm p99, connect to reply, in ms.
    added_p99_ms: f64,
    /// Sessions the node held before the cold sessions were left alone, and
    /// when they were probed (its `confab_sessions_resident`).
    resident_before: Option<f64>,
    resident_at_probe: Option<f64>,
    /// Session loads the node served from Redis while the probes ran.
    redis_load_hits: Option<f64>,
    failures: Vec<String>,
}

#[derive(Serialize)]
struct Side {
    probes: u64,
    errors: u64,
    /// Connect to `hello`.
    hello_ms: Percentiles,
    /// The first turn, send to reply.
    turn_ms: Percentiles,
    /// Connect to reply.
    total_ms: Percentiles,
}

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: impl Iterator<Item = u64>) -> anyhow::Result<Self> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for us in samples {
            h.saturating_record(us);
        }
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: h.max() as f64 / 1000.0,
        })
    }
}

impl Side {
    fn of(probes: &[Probe], errors: u64) -> anyhow::Result<Self> {
        Ok(Side {
            probes: probes.len() as u64,
            errors,
            hello_ms: Percentiles::of(probes.iter().map(|p| p.hello_us))?,
            turn_ms: Percentiles::of(probes.iter().map(|p| p.turn_us))?,
            total_ms: Percentiles::of(probes.iter().map(|p| p.hello_us + p.turn_us))?,
        })
    }
}

/// The probes of one kind that ended: their times, how many failed (and the
/// first few reasons), how many sessions came back empty.
#[derive(Default)]
struct Seen {
    probes: Vec<Probe>,
    errors: u64,
    reasons: Vec<String>,
    lost: u64,
}

impl Seen {
    /// Reasons kept, per kind; the rest are counted.
    const REASONS_MAX: usize = 3;

    fn record(&mut self, probe: anyhow::Result<(Probe, u64)>) {
        match probe {
            Ok((probe, last_seq)) => {
                self.probes.push(probe);
                // Seeded with one turn: a session that comes back with
                // nothing recorded has lost its state.
                self.lost += u64::from(last_seq == 0);
            }
            Err(e) => {
                self.errors += 1;
                if self.reasons.len() < Self::REASONS_MAX {
                    self.reasons.push(format!("{e:#}"));
                }
            }
        }
    }

    /// Why the run fails on account of these probes.
    fn failures(&self, kind: &str) -> Vec<String> {
        let mut failures = Vec::new();
        if self.errors > 0 {
            failures.push(format!(
                "{} {kind} probes failed: {}",
                self.errors,
                self.reasons.join("; ")
            ));
        }
        if self.lost > 0 {
            failures.push(format!(
                "{} {kind} sessions came back with nothing recorded",
                self.lost
            ));
        }
        failures
    }
}

fn too_many() -> anyhow::Error {
    anyhow::anyhow!("{PROBES_IN_FLIGHT_MAX} probes in flight: the node is not answering")
}

/// What a probe needs: where to connect, and how to sign.
struct Target {
    url: String,
    secret: String,
}

pub(crate) async fn run(args: ReactivateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.cold > 0, "--cold must be above 0");
    anyhow::ensure!(args.warm > 0, "--warm must be above 0");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(
        !args.passivate_after.is_zero(),
        "--passivate-after must be above 0"
    );
    // A warm session is probed once every `warm / (rate / 2)`; it must come
    // round well within the node's idle time, or it passivates too.
    let warm_cycle = Duration::from_secs_f64(args.warm as f64 / (args.rate / 2.0));
    anyhow::ensure!(
        warm_cycle * 2 <= args.passivate_after,
        "--warm {} at --rate {} probes each warm session every {:.1} s, more than half of \
         --passivate-after {}: they would passivate too (fewer --warm, or a higher --rate)",
        args.warm,
        args.rate,
        warm_cycle.as_secs_f64(),
        humantime::format_duration(args.passivate_after)
    );
    let http = http_addr(&args.url).await?;
    let target = Arc::new(Target {
        url: args.url.clone(),
        secret: signing_secret(&args.jwt_secret),
    });
    let cold: Vec<String> = (0..args.cold)
        .map(|i| format!("{}-cold-{i}", args.uid_prefix))
        .collect();
    let warm: Vec<String> = (0..args.warm)
        .map(|i| format!("{}-warm-{i}", args.uid_prefix))
        .collect();

    eprintln!(
        "seeding {} cold and {} warm sessions (one turn each)",
        cold.len(),
        warm.len()
    );
    seed(&target, cold.iter().chain(&warm)).await?;
    let resident_before = metric(http, &target.secret, "confab_sessions_resident").await;

    // The warm sessions are probed from now to the end; only the probes
    // beside the cold ones are measured.
    let period = Duration::from_secs_f64(2.0 / args.rate);
    let in_flight = Arc::new(Semaphore::new(PROBES_IN_FLIGHT_MAX));
    let measuring = Arc::new(AtomicBool::new(false));
    let warm_seen = Arc::new(Mutex::new(Seen::default()));
    let keeper = {
        let (target, in_flight, measuring, warm_seen) = (
            Arc::clone(&target),
            Arc::clone(&in_flight),
            Arc::clone(&measuring),
            Arc::clone(&warm_seen),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for (k, uid) in warm.iter().cycle().enumerate() {
                tick.tick().await;
                let permit = Arc::clone(&in_flight)
                    .try_acquire_owned()
                    .map_err(|_| too_many())?;
                let (target, uid) = (Arc::clone(&target), uid.clone());
                let measured = measuring.load(Ordering::Acquire);
                let warm_seen = Arc::clone(&warm_seen);
                tokio::spawn(async move {
                    let probe = probe(&target, &uid, &format!("w{k}")).await;
                    if measured {
                        warm_seen.lock().expect("not poisoned").record(probe);
                    }
                    drop(permit);
                });
            }
            anyhow::Ok(())
        })
    };

    let wait = args.passivate_after + args.passivate_after / 4 + Duration::from_secs(1);
    eprintln!(
        "leaving the cold sessions alone for {:.1} s",
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
    let resident_at_probe = metric(http, &target.secret, "confab_sessions_resident").await;
    let hits_before = redis_load_hits(http, &target.secret).await;

    eprintln!(
        "probing {} cold sessions at {:.0}/s beside the warm ones",
        cold.len(),
        args.rate / 2.0
    );
    measuring.store(true, Ordering::Release);
    let mut cold_probes = Vec::with_capacity(cold.len());
    let mut tick = tokio::time::interval(period);
    for uid in &cold {
        tick.tick().await;
        let permit = Arc::clone(&in_flight)
            .try_acquire_owned()
            .map_err(|_| too_many())?;
        let (target, uid) = (Arc::clone(&target), uid.clone());
        cold_probes.push(tokio::spawn(async move {
            let probe = probe(&target, &uid, "c").await;
            drop(permit);
            probe
        }));
    }
    let mut cold_seen = Seen::default();
    for task in cold_probes {
        cold_seen.record(task.await?);
    }
    measuring.store(false, Ordering::Release);
    let hits_after = redis_load_hits(http, &target.secret).await;
    keeper.abort();
    let mut failures = Vec::new();
    if let Ok(Err(e)) = keeper.await {
        failures.push(format!("the warm probes stopped: {e:#}"));
    }
    // Every probe ends within PROBE_MAX; the warm ones still out are waited for.
    let all = u32::try_from(PROBES_IN_FLIGHT_MAX)?;
    if tokio::time::timeout(
        PROBE_MAX + Duration::from_secs(1),
        in_flight.acquire_many(all),
    )
    .await
    .is_err()
    {
        failures.push("warm probes outlived their time limit".to_owned());
    }
    let warm_seen = std::mem::take(&mut *warm_seen.lock().expect("not poisoned"));
    failures.extend(cold_seen.failures("cold"));
    failures.extend(warm_seen.failures("warm"));
    let cold = Side::of(&cold_seen.probes, cold_seen.errors)?;
    let warm = Side::of(&warm_seen.probes, warm_seen.errors)?;
    if warm.probes == 0 {
        failures.push("no warm probe was measured".to_owned());
    }
    let added_p99_ms = cold.total_ms.p99 - warm.total_ms.p99;
    if let Some(max) = args.max_added_p99
        && added_p99_ms > max.as_secs_f64() * 1000.0
    {
        failures.push(format!(
            "reactivation adds {added_p99_ms:.2} ms at p99, above --max-added-p99 {}",
            humantime::format_duration(max)
        ));
    }
    let report = Report {
        url: args.url,
        cold,
        warm,
        added_p99_ms,
        resident_before,
        resident_at_probe,
        redis_load_hits: hits_before.zip(hits_after).map(|(b, a)| a - b),
        failures,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    if report.failures.is_empty() {
        return Ok(());
    }
    anyhow::bail!("the run failed: {}", report.failures.join("; "))
}

/// The node's HTTP address: the WebSocket URL's host and port.
async fn http_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let request = url
        .into_client_request()
        .with_context(|| format!("--url {url:?} is not a WebSocket URL"))?;
    let uri = request.uri();
    let host = uri.host().context("--url names no host")?;
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

/// Every session: connect, hello, one turn, close; at most
/// [`SEEDS_IN_PARALLEL`] at once.
async fn seed<'a>(
    target: &Arc<Target>,
    uids: impl Iterator<Item = &'a String>,
) -> anyhow::Result<()> {
    let at_once = Arc::new(Semaphore::new(SEEDS_IN_PARALLEL));
    let mut tasks = Vec::new();
    for uid in uids {
        let permit = Arc::clone(&at_once).acquire_owned().await?;
        let (target, uid) = (Arc::clone(target), uid.clone());
        tasks.push(tokio::spawn(async move {
            // A busy node may answer `overloaded`: tried again after a pause,
            // as the protocol asks of clients.
            let mut attempt = 1;
            let seeded = loop {
                match probe(&target, &uid, "seed").await {
                    Err(e)
                        if attempt < SEED_ATTEMPTS
                            && e.downcast_ref::<Refused>()
                                .is_some_and(|r| r.code == ErrorCode::Overloaded) =>
                    {
                        tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            drop(permit);
            seeded.with_context(|| format!("seeding {uid}"))
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Connect, `hello`, one turn with message id `id`, close: the times, and the
/// `last_seq` the hello gave.
async fn probe(target: &Target, uid: &str, id: &str) -> anyhow::Result<(Probe, u64)> {
    tokio::time::timeout(PROBE_MAX, probe_once(target, uid, id))
        .await
        .with_context(|| format!("no reply within {} s", PROBE_MAX.as_secs()))?
}

async fn probe_once(target: &Target, uid: &str, id: &str) -> anyhow::Result<(Probe, u64)> {
    let mut request = target.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&target.secret, uid, "chat")?).parse()?,
    );
    let started = Instant::now();
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false).await?;
    let last_seq = match next_frame(&mut socket).await? {
        ServerFrame::Hello { last_seq, .. } => last_seq,
        other => anyhow::bail!("the first frame is not a hello: {other:?}"),
    };
    let hello_at = Instant::now();
    let frame = ClientFrame::Say {
        id: id.to_owned(),
        text: "你好".into(),
    };
    socket
        .send(Message::text(serde_json::to_string(&frame)?))
        .await?;
    loop {
        match next_frame(&mut socket).await? {
            ServerFrame::Reply { .. } => break,
            ServerFrame::Error { code, message, .. } => {
                return Err(Refused { code, message }.into());
            }
            _ => {}
        }
    }
    let replied_at = Instant::now();
    let _ = socket.close(None).await;
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    Ok((
        Probe {
            hello_us: us(hello_at - started),
            turn_us: us(replied_at - hello_at),
        },
        last_seq,
    ))
}

/// A turn answered with an error frame.
#[derive(Debug)]
struct Refused {
    code: ErrorCode,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "answered {:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_frame(socket: &mut Socket) -> anyhow::Result<ServerFrame> {
    loop {
        match socket
            .next()
            .await
            .context("the node closed the connection")??
        {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(close) => anyhow::bail!("the node closed the connection: {close:?}"),
            _ => {}
        }
    }
}

/// One unlabelled metric of the node's /metrics, if it answers.
async fn metric(addr: SocketAddr, secret: &str, name: &str) -> Option<f64> {
    let (200, body) = admin::request("GET", addr, "/metrics", secret).await? else {
        return None;
    };
    sum_of(&body, |line| {
        line.split_once(' ').is_some_and(|(key, _)| key == name)
    })
}

/// Session loads served from Redis so far.
async fn redis_load_hits(addr: SocketAddr, secret: &str) -> Option<f64> {
    let (200, body) = admin::request("GET", addr, "/metrics", secret).await? else {
        return None;
    };
    sum_of(&body, |line| {
        line.starts_with("confab_store_requests_total{")
            && line.contains(r#"tier="redis""#)
            && line.contains(r#"op="load""#)
            && line.contains(r#"result="hit""#)
    })
}

/// The sum of the values of the Prometheus text lines `pick` chooses: 0 if
/// it chooses none (a counter not yet incremented is not on the page).
fn sum_of(body: &str, pick: impl Fn(&str) -> bool) -> Option<f64> {
    Some(
        body.lines()
            .filter(|line| !line.starts_with('#') && pick(line))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum(),
    )
}

fn print_human(r: &Report) {
    println!("url            {}", r.url);
    for (name, side) in [("cold", &r.cold), ("warm", &r.warm)] {
        println!("{name} probes    {} ({} failed)", side.probes, side.errors);
        for (what, p) in [
            ("connect->hello", &side.hello_ms),
            ("first turn", &side.turn_ms),
            ("connect->reply", &side.total_ms),
        ] {
            println!(
                "  {what:<15} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms",
                p.p50, p.p90, p.p99, p.max
            );
        }
    }
    println!(
        "added p99      {:.2} ms (cold minus warm, connect->reply)",
        r.added_p99_ms
    );
    let shown = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
    println!(
        "resident       {} seeded, {} when probed",
        shown(r.resident_before),
        shown(r.resident_at_probe)
    );
    println!(
        "redis loads    {} hits while probing",
        shown(r.redis_load_hits)
    );
    if r.failures.is_empty() {
        println!("result         ok");
    } else {
        println!("result         FAILED");
        for failure in &r.failures {
            println!("  {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_the_lines_picked() {
        let body = "# HELP confab_sessions_resident sessions in memory\n\
                    confab_sessions_resident 12\n\
                    confab_sessions_resident_other 5\n\
                    confab_store_requests_total{tier=\"redis\",op=\"load\",result=\"hit\"} 7\n\
                    confab_store_requests_total{tier=\"redis\",op=\"load\",result=\"miss\"} 2\n\
                    confab_store_requests_total{tier=\"mysql\",op=\"load\",result=\"hit\"} 3\n";
        let exact = |name: &str| {
            sum_of(body, |line| {
                line.split_once(' ').is_some_and(|(key, _)| key == name)
            })
        };
        assert_eq!(exact("confab_sessions_resident"), Some(12.0));
        assert_eq!(exact("confab_nothing"), Some(0.0));
        let hits = sum_of(body, |line| {
            line.contains(r#"tier="redis""#) && line.contains(r#"result="hit""#)
        });
        assert_eq!(hits, Some(7.0));
    }
}
