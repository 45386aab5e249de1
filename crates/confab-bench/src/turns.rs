//! `confab-bench turns`: open-loop turns over N sessions.

use anyhow::Context;
use confab_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Connections opened at once while setting up.
const CONNECTS_IN_PARALLEL: usize = 200;
/// How long to wait for replies after the last scheduled turn.
const DRAIN: Duration = Duration::from_secs(10);

const TEXTS: &[&str] = &[
    "你好",
    "这款鞋有货吗？",
    "39码",
    "黑色",
    "订单号 SO20261124",
    "do you have white in size 41?",
    "请回电 13812345678",
    "谢谢",
];

#[derive(clap::Args)]
pub(crate) struct TurnsArgs {
    /// The WebSocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws.
    #[arg(long)]
    url: String,
    /// Sessions (one connection and one uid each).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Target turns per second, over all sessions.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to send, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    duration: Duration,
    /// Turns scheduled in this first stretch are sent but not measured.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    warmup: Duration,
    /// HS256 secret to sign the sessions' tokens with.
    #[arg(
        long,
        env = "CONFAB_AUTH__JWT_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    jwt_secret: String,
    /// Prefix of the sessions' uids (a fresh prefix gives fresh sessions).
    #[arg(long, default_value = "bench")]
    uid_prefix: String,
    /// Prefix of the turns' message ids: a run that reuses another run's sessions
    /// needs a fresh one, or its turns are answered as duplicates.
    #[arg(long, default_value = "b")]
    id_prefix: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) when the measured p99 latency is above this: 50ms, 1s.
    #[arg(long, value_parser = parse_duration_arg)]
    max_p99: Option<Duration>,
    /// Fail (exit 1) when fewer turns per second than this were answered.
    #[arg(long)]
    min_throughput: Option<f64>,
    /// Turns answered `overloaded` are expected (a run that offers more than
    /// the node serves): they are reported, with how fast they came back, but
    /// do not fail the run.
    #[arg(long)]
    overload_ok: bool,
}

/// Parses a duration flag as people write it (`30s`, `2m`, `500ms`, `1m30s`:
/// the humantime crate, as in every confab binary), and the forms the flags
/// took before: a bare number of seconds (`90`, `0.5`) and a decimal with ms,
/// s or m (`1.5s`).
pub(crate) fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(duration) = humantime::parse_duration(text) {
        return Ok(duration);
    }
    let bad = || format!("{text:?} is not a duration: write it as 500ms, 30s, 2m or 1m30s");
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

/// [`parse_duration_arg`] for flags read after clap (the nemesis's).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    parse_duration_arg(text).map_err(anyhow::Error::msg)
}

/// What one session saw.
struct SessionResult {
    /// The samples, not a histogram: an HdrHistogram of this range and
    /// precision is about 160 KiB of counters, and one per session (two, with
    /// the errors') made 10,000 sessions a 4 GiB load generator whose every
    /// record missed the cache. At most one sample per turn sent.
    latency_us: Vec<u64>,
    /// From scheduled send to an error answer, measured turns only.
    error_latency_us: Vec<u64>,
    sent: u64,
    replied: u64,
    errors: BTreeMap<String, u64>,
}

/// The report.
#[derive(Serialize)]
struct Report {
    url: String,
    sessions: usize,
    target_rate: f64,
    duration_s: f64,
    sent: u64,
    replied: u64,
    missing: u64,
    errors: BTreeMap<String, u64>,
    throughput_per_s: f64,
    latency_ms: Percentiles,
    /// How fast the errors came back, from each turn's scheduled send: an
    /// overload should be answered at once, not after a queue.
    error_latency_ms: Percentiles,
    /// Why the run failed: errors, missing replies, bounds broken (empty
    /// when it passed).
    failures: Vec<String>,
}

#[derive(Serialize)]
struct Percentiles {
    measured: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// tungstenite zeroes its whole read buffer before each read; its 128 KiB default
/// would make the load generator measure memset.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// The secret to sign tokens with: `--jwt-secret`, or a placeholder when it
/// is empty (then only a node with that same secret accepts the tokens).
pub(crate) fn signing_secret(given: &str) -> String {
    if given.is_empty() {
        "confab-bench-has-no-secret-set".to_owned()
    } else {
        given.to_owned()
    }
}

/// An HS256 token for `uid` with `scope`, valid for a day.
pub(crate) fn token(secret: &str, uid: &str, scope: &str) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 24 * 3600;
    let claims = serde_json::json!({"sub": uid, "scope": scope, "exp": exp});
    Ok(jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

pub(crate) async fn run(args: TurnsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be above 0");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let (duration, warmup) = (args.duration, args.warmup);
    anyhow::ensure!(!duration.is_zero(), "--duration must be above 0");
    let secret = signing_secret(&args.jwt_secret);

    eprintln!("connecting {} sessions to {}", args.sessions, args.url);
    let connects = Arc::new(Semaphore::new(CONNECTS_IN_PARALLEL));
    let mut sockets = Vec::with_capacity(args.sessions);
    let mut pending = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let uid = format!("{}-{i}", args.uid_prefix);
        let mut request = args.url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token(&secret, &uid, "chat")?).parse()?,
        );
        let connects = Arc::clone(&connects);
        pending.push(tokio::spawn(async move {
            let _permit = connects.acquire().await;
            let (mut socket, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false)
                    .await?;
            // The hello.
            socket.next().await.context("closed before hello")??;
            anyhow::Ok(socket)
        }));
    }
    for p in pending {
        sockets.push(p.await??);
    }

    // Session i sends every `period`, phase-shifted so that the whole load is even.
    let period = Duration::from_secs_f64(args.sessions as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + duration;
    let measure_from = start + warmup;
    eprintln!(
        "sending {:.0} turns/s for {}s ({} per session every {:?})",
        args.rate,
        duration.as_secs_f64(),
        1,
        period
    );
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let phase = period.mul_f64(i as f64 / args.sessions as f64);
            let id_prefix = args.id_prefix.clone();
            tokio::spawn(session(
                socket,
                start + phase,
                period,
                end,
                measure_from,
                id_prefix,
            ))
        })
        .collect();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut error_latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut sent, mut replied) = (0, 0);
    let mut errors = BTreeMap::new();
    for task in tasks {
        let r = task.await??;
        for us in r.latency_us {
            latency_us.saturating_record(us);
        }
        for us in r.error_latency_us {
            error_latency_us.saturating_record(us);
        }
        sent += r.sent;
        replied += r.replied;
        for (code, n) in r.errors {
            *errors.entry(code).or_insert(0) += n;
        }
    }
    let bounds = Bounds::from(&args);
    let mut report = Report {
        url: args.url,
        sessions: args.sessions,
        target_rate: args.rate,
        duration_s: duration.as_secs_f64(),
        sent,
        replied,
        missing: sent - replied - errors.values().sum::<u64>(),
        throughput_per_s: replied as f64 / duration.as_secs_f64(),
        errors,
        latency_ms: Percentiles::of(&latency_us),
        error_latency_ms: Percentiles::of(&error_latency_us),
        failures: Vec::new(),
    };
    report.failures = failures(&report, &bounds);
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

impl Percentiles {
    fn of(latency_us: &Histogram<u64>) -> Self {
        let q = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            measured: latency_us.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: latency_us.max() as f64 / 1000.0,
        }
    }
}

/// The bounds a run must keep, from the command line.
struct Bounds {
    max_p99: Option<Duration>,
    min_throughput: Option<f64>,
    overload_ok: bool,
}

impl From<&TurnsArgs> for Bounds {
    fn from(args: &TurnsArgs) -> Self {
        Bounds {
            max_p99: args.max_p99,
            min_throughput: args.min_throughput,
            overload_ok: args.overload_ok,
        }
    }
}

/// Why a run failed, one reason each: turns answered with an error, turns
/// never answered, and each bound it broke.
fn failures(report: &Report, bounds: &Bounds) -> Vec<String> {
    let mut failures = Vec::new();
    let failed = |code: &str| !(bounds.overload_ok && code == "overloaded");
    let errors: u64 = report
        .errors
        .iter()
        .filter(|(code, _)| failed(code))
        .map(|(_, n)| n)
        .sum();
    if errors > 0 {
        let kinds: Vec<String> = report
            .errors
            .iter()
            .filter(|(code, _)| failed(code))
            .map(|(code, n)| format!("{code}={n}"))
            .collect();
        failures.push(format!(
            "{errors} turns answered with an error ({})",
            kinds.join(" ")
        ));
    }
    if report.missing > 0 {
        failures.push(format!(
            "{} turns got no reply within {} s of the end",
            report.missing,
            DRAIN.as_secs()
        ));
    }
    if let Some(max) = bounds.max_p99 {
        let max_ms = max.as_secs_f64() * 1000.0;
        let bound = humantime::format_duration(max);
        if report.latency_ms.measured == 0 {
            failures.push(format!(
                "no turn was measured, so --max-p99 {bound} cannot hold (a longer --duration, a shorter --warmup?)"
            ));
        } else if report.latency_ms.p99 > max_ms {
            failures.push(format!(
                "p99 {:.2} ms is above --max-p99 {bound}",
                report.latency_ms.p99
            ));
        }
    }
    if let Some(min) = bounds.min_throughput
        && report.throughput_per_s < min
    {
        failures.push(format!(
            "throughput {:.1} turns/s is below --min-throughput {min}",
            report.throughput_per_s
        ));
    }
    failures
}

fn print_human(r: &Report) {
    println!("url           {}", r.url);
    println!("sessions      {}", r.sessions);
    println!(
        "target        {:.0} turns/s for {:.0}s",
        r.target_rate, r.duration_s
    );
    println!("sent          {}", r.sent);
    println!(
        "replied       {} ({:.0} turns/s)",
        r.replied, r.throughput_per_s
    );
    println!("missing       {}", r.missing);
    let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "errors        {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(" ")
        }
    );
    let l = &r.latency_ms;
    println!(
        "latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.measured
    );
    let e = &r.error_latency_ms;
    if e.measured > 0 {
        println!(
            "errors ms     p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            e.p50, e.p90, e.p99, e.p999, e.max, e.measured
        );
    }
    if r.failures.is_empty() {
        println!("result        ok");
    } else {
        println!("result        FAILED");
        for failure in &r.failures {
            println!("  {failure}");
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(
    socket: Socket,
    first: Instant,
    period: Duration,
    end: Instant,
    measure_from: Instant,
    id_prefix: String,
) -> anyhow::Result<SessionResult> {
    let (mut sink, mut stream) = socket.split();
    let schedule: Vec<Instant> = (0u32..)
        .map(|k| first + period * k)
        .take_while(|t| *t < end)
        .collect();
    let count = schedule.len();
    let schedule = Arc::new(schedule);
    let writer = {
        let schedule = Arc::clone(&schedule);
        let id_prefix = id_prefix.clone();
        tokio::spawn(async move {
            for (k, at) in schedule.iter().enumerate() {
                tokio::time::sleep_until(*at).await;
                let frame = ClientFrame::Say {
                    id: format!("{id_prefix}-{k}"),
                    text: TEXTS[k % TEXTS.len()].into(),
                };
                sink.send(Message::text(serde_json::to_string(&frame)?))
                    .await?;
            }
            anyhow::Ok(sink)
        })
    };
    let mut result = SessionResult {
        latency_us: Vec::with_capacity(count),
        error_latency_us: Vec::new(),
        sent: count as u64,
        replied: 0,
        errors: BTreeMap::new(),
    };
    let deadline = end + DRAIN;
    let mut done = 0usize;
    while done < count {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let frame: ServerFrame = serde_json::from_str(text.as_str())?;
        let (id, error) = match frame {
            ServerFrame::Reply { id, .. } => (id, None),
            ServerFrame::Error {
                id: Some(id), code, ..
            } => (id, Some(code)),
            _ => continue,
        };
        let k: usize = id
            .strip_prefix(id_prefix.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .ok_or_else(|| anyhow::anyhow!("a reply to an id this run did not send: {id}"))?
            .parse()?;
        done += 1;
        let scheduled = schedule[k];
        let measured_us = (scheduled >= measure_from).then(|| {
            let us = Instant::now().duration_since(scheduled).as_micros();
            u64::try_from(us).unwrap_or(u64::MAX)
        });
        match error {
            Some(code) => {
                let code = serde_json::to_value(code)?
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                *result.errors.entry(code).or_insert(0) += 1;
                if let Some(us) = measured_us {
                    result.error_latency_us.push(us);
                }
            }
            None => {
                result.replied += 1;
                if let Some(us) = measured_us {
                    result.latency_us.push(us);
                }
            }
        }
    }
    let mut sink = writer.await??;
    let _ = sink.close().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them_and_as_before() {
        let ok = |text: &str| parse_duration_arg(text).unwrap();
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        // The forms the hand-written parser took.
        assert_eq!(ok("90"), Duration::from_secs(90));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("2.5m"), Duration::from_secs(150));
        for bad in ["banana", "5x", "", "1.2.3s"] {
            let err = parse_duration_arg(bad).unwrap_err();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
    }

    fn report(p99: f64, measured: u64, errors: &[(&str, u64)], missing: u64) -> Report {
        Report {
            url: "ws://x".to_owned(),
            sessions: 1,
            target_rate: 10.0,
            duration_s: 1.0,
            sent: 10,
            replied: 10 - missing,
            missing,
            errors: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            throughput_per_s: (10 - missing) as f64,
            latency_ms: Percentiles {
                measured,
                p50: p99,
                p90: p99,
                p99,
                p999: p99,
                max: p99,
            },
            error_latency_ms: Percentiles::of(&Histogram::new(3).unwrap()),
            failures: Vec::new(),
        }
    }

    #[test]
    fn a_run_fails_on_errors_missing_replies_and_each_broken_bound() {
        let none = Bounds {
            max_p99: None,
            min_throughput: None,
            overload_ok: false,
        };
        assert!(failures(&report(5.0, 10, &[], 0), &none).is_empty());
        let failed = failures(&report(5.0, 10, &[("overloaded", 2)], 1), &none);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("2 turns answered with an error (overloaded=2)"));
        assert!(failed[1].contains("1 turns got no reply"));

        let bounds = Bounds {
            max_p99: Some(Duration::from_millis(50)),
            min_throughput: Some(20.0),
            overload_ok: false,
        };
        let failed = failures(&report(62.5, 10, &[], 0), &bounds);
        assert_eq!(
            failed,
            [
                "p99 62.50 ms is above --max-p99 50ms",
                "throughput 10.0 turns/s is below --min-throughput 20"
            ]
        );
        // Within the bounds.
        let easy = Bounds {
            max_p99: Some(Duration::from_secs(1)),
            min_throughput: Some(1.0),
            overload_ok: false,
        };
        assert!(failures(&report(62.5, 10, &[], 0), &easy).is_empty());
        // An overload run expects `overloaded`, and only that.
        let overload = Bounds {
            overload_ok: true,
            ..none
        };
        assert!(failures(&report(5.0, 10, &[("overloaded", 2)], 0), &overload).is_empty());
        let failed = failures(
            &report(5.0, 10, &[("overloaded", 2), ("internal", 1)], 0),
            &overload,
        );
        assert_eq!(failed, ["1 turns answered with an error (internal=1)"]);
        // Nothing measured cannot prove a p99 bound.
        let failed = failures(&report(0.0, 0, &[], 0), &easy);
        assert!(failed[0].contains("no turn was measured"), "{failed:?}");
    }
}
