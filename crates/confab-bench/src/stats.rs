//! `confab-bench stats`: how long `confabctl stats` takes with many sessions
//! resident.
//!
//! 1. Starts 3 `confab node` processes on one embedded store (a data dir of its
//!    own), as `rebalance` does.
//! 2. Makes `--baseline-sessions` sessions resident with one turn each (a
//!    socket per user, spread over the nodes: hello, one `say`, its reply),
//!    waits until the nodes' aggregates count them all, and times the stats
//!    calls: that is the baseline of the same run.
//! 3. Makes sessions resident up to `--sessions` the same way and times the
//!    same calls again.
//!
//! Each measurement is `--calls` sequential requests to node-1, each on a fresh
//! connection, with a token signed once: `GET /admin/v1/stats` (the fan-out to
//! every member), `GET /admin/v1/stats/local` (node-1's own aggregate: the
//! floor without the fan-out), and `confabctl --json stats` as a user runs it
//! (a process each: start-up, HTTP and JSON included) when `confabctl` is
//! found beside `confab-bench`. Each is taken with the cluster idle, then again
//! while `--talkers` users talk (one turn each every `--pause`, the clients of
//! the cluster tests), so that the figures include a busy cluster.

use crate::rebalance::{NodeProc, SECRET, WAIT, confab_binary, ring_members, start_node};
use crate::turns::{token, ws_config};
use anyhow::Context;
use confab_proto::admin::ClusterStats;
use confab_proto::{ClientFrame, ServerFrame};
use confab_testkit::free_port;
use confab_testkit::load::{Load, Tokens};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The texts the users say, one each in turn: stock questions, a size, a
/// colour, thanks (none calls an action, so no turn waits on a service that
/// is not there).
/// How long the talkers talk before the calls are timed.
const STEADY: Duration = Duration::from_secs(3);

const TEXTS: &[&str] = &[
    "39码的黑色有货吗？",
    "你好",
    "do you have white in size 41?",
    "换成白色的",
    "谢谢",
    "这款鞋有货吗？",
];

#[derive(clap::Args)]
pub(crate) struct StatsArgs {
    /// Resident sessions to measure at, across the 3 nodes.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Resident sessions of the baseline measured first in the same run.
    #[arg(long, default_value_t = 1_000)]
    baseline_sessions: usize,
    /// Stats requests per measurement.
    #[arg(long, default_value_t = 50)]
    calls: usize,
    /// Users talking at once while sessions are made resident.
    #[arg(long, default_value_t = 128)]
    fill_concurrency: usize,
    /// Users talking while the calls are timed again (0: idle only); their
    /// sessions add to the resident ones.
    #[arg(long, default_value_t = 200)]
    talkers: usize,
    /// Pause between one talker's turns: 100ms, 1s.
    #[arg(long, default_value = "100ms", value_parser = crate::turns::parse_duration_arg)]
    pause: Duration,
    /// The confab binary (default: the one beside confab-bench).
    #[arg(long)]
    confab: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    calls: usize,
    baseline: Measurement,
    measured: Measurement,
}

#[derive(Serialize)]
struct Measurement {
    /// Sessions resident across the cluster, as the stats answer counted them.
    sessions_resident: u64,
    /// Sessions resident on each node.
    per_node: Vec<u64>,
    /// Turns the cluster answered, as the stats answer counted them.
    turns_total: u64,
    /// How long making the sessions resident took (this step's only).
    fill_s: f64,
    /// `GET /admin/v1/stats`: every member asked and added up.
    cluster_ms: Percentiles,
    /// `GET /admin/v1/stats/local`: node-1 alone, no fan-out.
    local_ms: Percentiles,
    /// `confabctl --json stats`, a process each (absent without confabctl).
    confabctl_ms: Option<Percentiles>,
    /// The same calls while users talk (absent with `--talkers 0`).
    busy: Option<Busy>,
}

#[derive(Serialize)]
struct Busy {
    /// Users talking.
    talkers: usize,
    /// Turns they had answered per second while the calls were timed.
    turns_per_s: f64,
    cluster_ms: Percentiles,
    local_ms: Percentiles,
    confabctl_ms: Option<Percentiles>,
}

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples_us: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(samples_us.value_at_quantile(0.50)),
            p99: ms(samples_us.value_at_quantile(0.99)),
            max: ms(samples_us.max()),
        }
    }
}

pub(crate) async fn run(args: StatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.calls > 0, "--calls must be above 0");
    anyhow::ensure!(
        args.baseline_sessions <= args.sessions,
        "--baseline-sessions must be at most --sessions"
    );
    let confab = confab_binary(args.confab)?;
    let confabctl = confab.with_file_name("confabctl");
    let confabctl = confabctl.exists().then_some(confabctl);
    if confabctl.is_none() {
        eprintln!("no confabctl beside confab: its latency is not measured");
    }
    let data = tempfile::tempdir()?;
    let mut nodes = start_cluster(&confab, data.path()).await?;
    let urls: Vec<String> = nodes.iter().map(NodeProc::ws).collect();
    let admin = token(SECRET, "bench-ops", "admin")?;
    let node = nodes[0].http;

    let mut steps = Vec::new();
    let mut made = 0;
    // The talkers' sessions and turns, counted too.
    let (mut talked_sessions, mut talked_turns) = (0u64, 0u64);
    for target in [args.baseline_sessions, args.sessions] {
        eprintln!("making {target} sessions resident (one turn each)...");
        let filling = Instant::now();
        fill(&urls, made..target, args.fill_concurrency).await?;
        let fill_s = filling.elapsed().as_secs_f64();
        made = target;
        let counted = counted(
            node,
            &admin,
            target as u64 + talked_sessions,
            target as u64 + talked_turns,
        )
        .await?;
        eprintln!(
            "{} resident, {} turns counted; timing {} stats calls...",
            counted.sessions_resident, counted.turns_total, args.calls
        );
        let (cluster_ms, local_ms, confabctl_ms) =
            time_calls(node, &admin, confabctl.as_deref(), args.calls).await?;
        let busy = if args.talkers == 0 {
            None
        } else {
            eprintln!("{} users talking; timing the calls again...", args.talkers);
            let tokens: Tokens =
                Arc::new(|uid: &str| token(SECRET, uid, "chat").unwrap_or_default());
            let users: Vec<String> = (0..args.talkers)
                .map(|i| format!("talker-{target}-{i}"))
                .collect();
            let load = Load::start(urls.clone(), &users, args.pause, tokens);
            tokio::time::sleep(STEADY).await;
            let from = Instant::now();
            let timed = time_calls(node, &admin, confabctl.as_deref(), args.calls).await;
            let to = Instant::now();
            let logs = load.finish().await;
            let (cluster_ms, local_ms, confabctl_ms) = timed?;
            talked_sessions += args.talkers as u64;
            talked_turns += logs.iter().map(|log| log.turns.len() as u64).sum::<u64>();
            let answered = logs
                .iter()
                .flat_map(|log| &log.turns)
                .filter(|t| t.at >= from && t.at <= to)
                .count();
            Some(Busy {
                talkers: args.talkers,
                turns_per_s: answered as f64 / (to - from).as_secs_f64(),
                cluster_ms,
                local_ms,
                confabctl_ms,
            })
        };
        steps.push(Measurement {
            sessions_resident: counted.sessions_resident,
            per_node: counted
                .nodes
                .iter()
                .map(|n| n.sessions_resident.unwrap_or(0))
                .collect(),
            turns_total: counted.turns_total,
            fill_s,
            cluster_ms,
            local_ms,
            confabctl_ms,
            busy,
        });
    }
    for node in &mut nodes {
        if let Some(pid) = node.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), node.child.wait()).await;
    }
    let measured = steps.pop().context("two measurements")?;
    let baseline = steps.pop().context("two measurements")?;
    let report = Report {
        nodes: 3,
        calls: args.calls,
        baseline,
        measured,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// 3 nodes on one data dir, node-1 seeding the others, all on one ring.
async fn start_cluster(confab: &Path, data: &Path) -> anyhow::Result<Vec<NodeProc>> {
    let seed_port = free_port();
    let seed = format!("127.0.0.1:{seed_port}");
    let mut nodes = vec![start_node(confab, data, "node-1", seed_port, None, "warn", &[]).await?];
    for id in ["node-2", "node-3"] {
        nodes.push(start_node(confab, data, id, free_port(), Some(&seed), "warn", &[]).await?);
    }
    let deadline = Instant::now() + WAIT;
    for node in &nodes {
        while ring_members(node).await != 3 {
            anyhow::ensure!(Instant::now() < deadline, "the cluster never formed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(nodes)
}

/// Users `range` each say one turn over a socket of their own, spread over
/// the nodes, and wait for its reply.
async fn fill(
    urls: &[String],
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let count = range.len();
    let urls = Arc::new(urls.to_vec());
    let results = futures_util::stream::iter(range)
        .map(|i| {
            let urls = Arc::clone(&urls);
            async move { one_turn(&urls[i % urls.len()], i).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        anyhow::bail!("{failed} of {count} users got no reply: {e:#}");
    }
    Ok(())
}

async fn one_turn(url: &str, i: usize) -> anyhow::Result<()> {
    let uid = format!("stats-{i}");
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(SECRET, &uid, "chat")?).parse()?,
    );
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false).await?;
    let hello = socket.next().await.context("no hello")??;
    anyhow::ensure!(hello.to_text()?.contains("\"hello\""), "{hello}");
    let say = ClientFrame::Say {
        id: "m-1".into(),
        text: TEXTS[i % TEXTS.len()].into(),
    };
    socket
        .send(Message::text(serde_json::to_string(&say)?))
        .await?;
    let answered = tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            match serde_json::from_str::<ServerFrame>(text.as_str())? {
                ServerFrame::Reply { .. } => return anyhow::Ok(()),
                ServerFrame::Error { code, message, .. } => {
                    anyhow::bail!("{uid}: {code:?}: {message}")
                }
                _ => {}
            }
        }
        anyhow::bail!("{uid}: the connection closed before the reply")
    })
    .await
    .with_context(|| format!("{uid}: no reply within {WAIT:?}"))?;
    let _ = socket.close(None).await;
    answered
}

/// Waits until the stats answer counts `sessions` sessions and `turns` turns:
/// every turn answered once, whatever the node its socket was on (a turn is
/// counted before its reply is sent, so this waits for nothing unless a count
/// is wrong).
async fn counted(
    port: u16,
    admin: &str,
    sessions: u64,
    turns: u64,
) -> anyhow::Result<ClusterStats> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(port, "/admin/v1/stats", admin)
            .await
            .context("node-1 did not answer the stats request")?;
        anyhow::ensure!(status == 200, "stats answered {status}: {body}");
        let stats: ClusterStats = serde_json::from_str(&body)?;
        anyhow::ensure!(
            stats.unreachable.is_empty(),
            "members unreachable: {:?}",
            stats.unreachable
        );
        if stats.sessions_resident == sessions && stats.turns_total == turns {
            return Ok(stats);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stats count {} sessions and {} turns, not {sessions} and {turns}",
            stats.sessions_resident,
            stats.turns_total
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` on a fresh connection with the admin token: status and body.
async fn get(port: u16, path: &str, admin: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {admin}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        let status = answer.get(9..12)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(WAIT, exchange).await.ok()?
}

/// The three timings: the fan-out, the local floor, confabctl.
async fn time_calls(
    node: u16,
    admin: &str,
    confabctl: Option<&Path>,
    calls: usize,
) -> anyhow::Result<(Percentiles, Percentiles, Option<Percentiles>)> {
    let cluster_ms = time_http(node, "/admin/v1/stats", admin, calls).await?;
    let local_ms = time_http(node, "/admin/v1/stats/local", admin, calls).await?;
    let confabctl_ms = match confabctl {
        Some(path) => Some(time_confabctl(path, node, admin, calls).await?),
        None => None,
    };
    Ok((cluster_ms, local_ms, confabctl_ms))
}

/// `calls` sequential requests, each timed from connect to the last byte.
async fn time_http(
    port: u16,
    path: &str,
    admin: &str,
    calls: usize,
) -> anyhow::Result<Percentiles> {
    let mut samples = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for _ in 0..calls {
        let asked = Instant::now();
        let (status, body) = get(port, path, admin)
            .await
            .with_context(|| format!("{path}: no answer"))?;
        let took = asked.elapsed();
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
        if path == "/admin/v1/stats" {
            let stats: ClusterStats = serde_json::from_str(&body)?;
            anyhow::ensure!(stats.unreachable.is_empty(), "{body}");
        }
        samples.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
    Ok(Percentiles::of(&samples))
}

/// `calls` runs of `confabctl --json stats`, each timed from spawn to exit.
async fn time_confabctl(
    confabctl: &Path,
    port: u16,
    admin: &str,
    calls: usize,
) -> anyhow::Result<Percentiles> {
    let mut samples = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for _ in 0..calls {
        let asked = Instant::now();
        let out = tokio::process::Command::new(confabctl)
            .args(["--node", &format!("http://127.0.0.1:{port}")])
            .args(["--token", admin, "--json", "stats"])
            .output()
            .await?;
        let took = asked.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "confabctl stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        samples.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
    Ok(Percentiles::of(&samples))
}

fn print_human(r: &Report) {
    let line = |name: &str, p: &Percentiles| {
        format!(
            "{name:<28} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            p.p50, p.p99, p.max
        )
    };
    for (label, m) in [("baseline", &r.baseline), ("measured", &r.measured)] {
        println!(
            "{label}: {} sessions resident on {} nodes {:?}, {} turns counted (made resident in {:.1} s), {} calls each",
            m.sessions_resident, r.nodes, m.per_node, m.turns_total, m.fill_s, r.calls
        );
        println!("  {}", line("GET /admin/v1/stats", &m.cluster_ms));
        println!("  {}", line("GET /admin/v1/stats/local", &m.local_ms));
        if let Some(p) = &m.confabctl_ms {
            println!("  {}", line("confabctl --json stats", p));
        }
        if let Some(busy) = &m.busy {
            println!(
                "  while {} users talk ({:.0} turns/s answered):",
                busy.talkers, busy.turns_per_s
            );
            println!("  {}", line("GET /admin/v1/stats", &busy.cluster_ms));
            println!("  {}", line("GET /admin/v1/stats/local", &busy.local_ms));
            if let Some(p) = &busy.confabctl_ms {
                println!("  {}", line("confabctl --json stats", p));
            }
        }
    }
}
