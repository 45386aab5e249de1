//! `confab-bench rebalance`: sessions moving under load.
//!
//! 1. Starts 3 `confab node` processes on one embedded store (a data dir of its
//!    own) and makes `--sessions` sessions resident, spread over them (one
//!    `hello` each).
//! 2. Measures memory per resident session (RSS / resident) and, in this
//!    process, the floor: as many bare ractor actors.
//! 3. Starts `--active` users talking steadily (one turn every `--pause`),
//!    then a 4th node joins; once the handoffs settle, node-2 is drained (the
//!    users' address list drops it when the drain starts, as a load balancer
//!    following its readiness does).
//! 4. Reports, per event:
//!    - how long moved sessions took to reach their new owner
//!      (`confab_migration_seconds`, timed by each old owner from its
//!      adoption of the ring to the new owner taking the state: p50, p99
//!      and max, the worst node's);
//!    - the per-session pause: each active user's slowest turn in the event
//!      (p99 and max over users);
//!    - acked turns lost or applied twice (each active user's seqs, and its
//!      session resumed at the end).

use crate::turns::{token, ws_config};
use anyhow::Context;
use confab_testkit::free_port;
use confab_testkit::load::{Load, Tokens, TurnLog, UserLog, check};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The secret the bench's nodes and tokens share.
pub(crate) const SECRET: &str = "confab-bench-rebalance-secret-0123456789";
/// How long a node may take to start, or an event to settle.
pub(crate) const WAIT: Duration = Duration::from_secs(120);
/// Steady load before and after each event.
const STEADY: Duration = Duration::from_secs(3);

#[derive(clap::Args)]
pub(crate) struct RebalanceArgs {
    /// Resident sessions to hold across the 3 nodes.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Users talking during the events.
    #[arg(long, default_value_t = 200)]
    active: usize,
    /// Pause between one active user's turns: 100ms, 1s.
    #[arg(long, default_value = "100ms", value_parser = crate::turns::parse_duration_arg)]
    pause: Duration,
    /// The same in milliseconds, as the flag was before --pause.
    #[arg(long, hide = true, conflicts_with = "pause")]
    pause_ms: Option<u64>,
    /// Slowest turns of each event to print (on stderr), with what each met.
    #[arg(long, default_value_t = 5)]
    show_slowest: usize,
    /// Connections opened at once while making sessions resident.
    #[arg(long, default_value_t = 64)]
    fill_concurrency: usize,
    /// The confab binary (default: the one beside confab-bench).
    #[arg(long)]
    confab: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Copy each node's log (warnings and errors) into this directory at the
    /// end, to see why a run was slow.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// The nodes' log filter (`RUST_LOG`), `info` to see when each node
    /// adopted each ring and handed sessions off.
    #[arg(long, default_value = "warn")]
    node_log: String,
}

#[derive(Serialize)]
struct Report {
    sessions: usize,
    active: usize,
    fill_s: f64,
    memory: Memory,
    join: Event,
    drain: Event,
    /// Acked turns lost or applied twice, over the whole run (active users).
    lost_or_repeated: usize,
}

#[derive(Serialize)]
struct Memory {
    /// RSS over resident sessions, per node.
    rss_per_session_kib: Vec<f64>,
    /// RSS growth over resident sessions, per node (the empty node's RSS taken out).
    growth_per_session_kib: Vec<f64>,
    /// The floor: RSS growth per bare ractor actor, in this process.
    bare_actor_kib: f64,
}

#[derive(Serialize)]
struct Event {
    /// From the start of the event until every member routes by the new ring.
    ring_s: f64,
    /// Sessions handed off.
    moved: u64,
    /// Handoff times, the worst node's quantiles (ms): the upper bounds of
    /// the histogram buckets they fall in.
    migration_p50_ms: f64,
    migration_p99_ms: f64,
    migration_max_ms: f64,
    /// Active users' slowest turn in the event (ms).
    pause_p99_ms: f64,
    pause_max_ms: f64,
    /// CPU the nodes used in the event beyond what the users' turns use in
    /// as long a time without one (s; user + system, all nodes), and that
    /// per moved session (µs): what a handoff costs, far less noisy on a
    /// shared machine than the pause it causes.
    handoff_cpu_s: f64,
    cpu_per_moved_us: f64,
}

impl Event {
    /// From the ring time (s), the handoff count, the migration quantiles 0.5,
    /// 0.99 and 1 (s) and the pause p99 and max (ms).
    fn new(
        ring_s: f64,
        moved: f64,
        quantiles: [f64; 3],
        pause_ms: (f64, f64),
        handoff_cpu_s: f64,
    ) -> Self {
        Event {
            handoff_cpu_s,
            cpu_per_moved_us: handoff_cpu_s / moved.max(1.0) * 1e6,
            ring_s,
            moved: moved as u64,
            migration_p50_ms: quantiles[0] * 1000.0,
            migration_p99_ms: quantiles[1] * 1000.0,
            migration_max_ms: quantiles[2] * 1000.0,
            pause_p99_ms: pause_ms.0,
            pause_max_ms: pause_ms.1,
        }
    }
}

pub(crate) struct NodeProc {
    pub(crate) http: u16,
    pub(crate) child: Child,
}

impl NodeProc {
    pub(crate) fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.http)
    }

    pub(crate) fn rss_kib(&self) -> f64 {
        self.child.id().map_or(0.0, rss_kib)
    }
}

/// The CPU time (user + system, every thread) process `pid` has used, in
/// seconds: fields 14 and 15 of `/proc/<pid>/stat` (0 once it is gone).
pub(crate) fn cpu_s(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |stat| stat_cpu_s(&stat))
}

/// User + system time (s) from the text of a `/proc/<pid>/stat`; 0 if it
/// does not parse.
fn stat_cpu_s(stat: &str) -> f64 {
    // After the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // Fields 14 and 15 counted from 1, the state (3) being the first here.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return 0.0;
    };
    // USER_HZ: the kernel reports these in hundredths of a second on every
    // architecture, whatever its own tick.
    (user + system) / 100.0
}

/// The CPU time the nodes have used together (s).
fn nodes_cpu_s(nodes: &[NodeProc]) -> f64 {
    nodes
        .iter()
        .filter_map(|node| node.child.id())
        .map(cpu_s)
        .sum()
}

pub(crate) fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0)
}

/// The confab binary to start: `given`, or the one beside this binary; an
/// error that says how to build it if it is not there.
pub(crate) fn confab_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let confab = match given {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("confab"),
    };
    anyhow::ensure!(
        confab.exists(),
        "{} not found: build it (cargo build --release -p confab) or pass --confab",
        confab.display()
    );
    Ok(confab)
}

/// Starts `confab node` `id` on the embedded store in `data`, and waits until
/// it is ready. Sessions passivate after an hour and up to 1,000,000 may be
/// resident; `settings` (environment, `CONFAB_...`) are applied after those.
pub(crate) async fn start_node(
    confab: &Path,
    data: &Path,
    id: &str,
    cluster_port: u16,
    seed: Option<&str>,
    log_filter: &str,
    settings: &[(&str, String)],
) -> anyhow::Result<NodeProc> {
    let http = free_port();
    let log = std::fs::File::create(data.join(format!("{id}.log")))?;
    let mut command = Command::new(confab);
    command
        .arg("node")
        .args(["--node-id", id])
        .args(["--http-port", &http.to_string()])
        .args(["--cluster-port", &cluster_port.to_string()])
        .arg("--data-dir")
        .arg(data)
        .args(["--jwt-secret", SECRET])
        .env("RUST_LOG", log_filter)
        .env("CONFAB_RUNTIME__PASSIVATE_AFTER_S", "3600")
        .env("CONFAB_RUNTIME__MAX_RESIDENT_SESSIONS", "1000000")
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(seed) = seed {
        command.args(["--seeds", seed]);
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", confab.display()))?;
    let node = NodeProc { http, child };
    let deadline = Instant::now() + WAIT;
    while http_get(http, "/readyz").await.map(|r| r.0) != Some(200) {
        anyhow::ensure!(Instant::now() < deadline, "{id} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(node)
}

/// `GET path` with the admin token: status and body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http("GET", port, path).await
}

async fn http(method: &str, port: u16, path: &str) -> Option<(u16, String)> {
    crate::admin::request(method, ([127, 0, 0, 1], port).into(), path, SECRET).await
}

/// The ring's member count as `node` routes by it.
pub(crate) async fn ring_members(node: &NodeProc) -> usize {
    let Some((200, body)) = http_get(node.http, "/admin/v1/ring").await else {
        return 0;
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| Some(v["nodes"].as_array()?.len()))
        .unwrap_or(0)
}

/// One sample of a metric from a Prometheus text page (labels included in
/// `name`, e.g. `confab_sessions_resident`).
pub(crate) fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `confab_migration_seconds{reason}`: count and the quantiles 0.5, 0.99, 1,
/// each as the upper bound of the histogram bucket it falls in (the nodes
/// export it with buckets, not quantiles: from 1 ms to 30 s, with 0.1, 0.25,
/// 0.5 and 1 s around the aims).
fn migration(page: &str, reason: &str) -> (f64, [f64; 3]) {
    let prefix = "confab_migration_seconds_bucket{";
    let label = format!("reason=\"{reason}\"");
    let mut buckets: Vec<(f64, f64)> = page
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(prefix)?;
            let (labels, value) = labels.split_once("} ")?;
            if !labels.split(',').any(|l| l == label) {
                return None;
            }
            let le = labels.split(',').find_map(|l| l.strip_prefix("le=\""))?;
            let le = le.trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last().map_or(0.0, |b| b.1);
    let q = |quantile: f64| {
        buckets
            .iter()
            .find(|(_, cumulative)| count > 0.0 && *cumulative >= quantile * count)
            .map_or(0.0, |b| b.0)
    };
    (count, [q(0.5), q(0.99), q(1.0)])
}

pub(crate) async fn metrics(node: &NodeProc) -> String {
    http_get(node.http, "/metrics")
        .await
        .map(|r| r.1)
        .unwrap_or_default()
}

/// Makes `sessions` sessions resident: one hello each, spread over the nodes.
pub(crate) async fn fill(
    urls: &[String],
    sessions: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let urls = Arc::new(urls.to_vec());
    let results = futures_util::stream::iter(0..sessions)
        .map(|i| {
            let urls = Arc::clone(&urls);
            async move {
                let uid = format!("resident-{i}");
                let mut request = urls[i % urls.len()].as_str().into_client_request()?;
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {}", token(SECRET, &uid, "chat")?).parse()?,
                );
                let (mut socket, _) =
                    tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), false)
                        .await?;
                let hello = socket.next().await.context("no hello")??;
                anyhow::ensure!(hello.to_text()?.contains("\"hello\""), "{hello}");
                let _ = socket.close(None).await;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        anyhow::bail!("{failed} of {sessions} sessions did not become resident: {e:#}");
    }
    Ok(())
}

/// RSS growth per bare ractor actor (a u64 of state), in this process.
pub(crate) async fn bare_actor_kib(count: usize) -> anyhow::Result<f64> {
    struct Bare;
    struct Ping;
    impl ractor::Message for Ping {}
    impl ractor::Actor for Bare {
        type Msg = Ping;
        type State = u64;
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ractor::ActorRef<Ping>,
            (): (),
        ) -> Result<u64, ractor::ActorProcessingErr> {
            Ok(0)
        }
    }
    let before = rss_kib(std::process::id());
    let mut actors = Vec::with_capacity(count);
    for _ in 0..count {
        actors.push(ractor::Actor::spawn(None, Bare, ()).await?);
    }
    let after = rss_kib(std::process::id());
    for (actor, handle) in actors {
        actor.stop(None);
        let _ = handle.await;
    }
    Ok((after - before) / count as f64)
}

fn pause(logs: &[UserLog], from: Instant, to: Instant) -> (f64, f64) {
    let mut worst = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for log in logs {
        let slowest = log
            .turns
            .iter()
            .filter(|t| t.at >= from && t.at <= to)
            .map(|t| t.latency)
            .max()
            .unwrap_or_default();
        worst.saturating_record(u64::try_from(slowest.as_micros()).unwrap_or(u64::MAX));
    }
    (
        worst.value_at_quantile(0.99) as f64 / 1000.0,
        worst.max() as f64 / 1000.0,
    )
}

/// The `n` slowest turns answered between `from` and `to`, one line each:
/// who, how long, when its ack came, and what it met on the way.
fn slowest_turns(logs: &[UserLog], from: Instant, to: Instant, n: usize) -> Vec<String> {
    let mut turns: Vec<(&str, &TurnLog)> = logs
        .iter()
        .flat_map(|log| log.turns.iter().map(move |t| (log.uid.as_str(), t)))
        .filter(|(_, t)| t.at >= from && t.at <= to)
        .collect();
    turns.sort_by_key(|(_, t)| std::cmp::Reverse(t.latency));
    turns
        .into_iter()
        .take(n)
        .map(|(uid, t)| {
            let started = t.at.checked_sub(t.latency).unwrap_or(from);
            let setbacks: Vec<String> = t
                .setbacks
                .iter()
                .map(|(after, why)| format!("{} ms: {why}", after.as_millis()))
                .collect();
            format!(
                "{uid} {}: {} ms, sent {} ms into the event, acked after {}; {}",
                t.id,
                t.latency.as_millis(),
                started.saturating_duration_since(from).as_millis(),
                t.acked_after
                    .map_or_else(|| "no ack".to_owned(), |a| format!("{} ms", a.as_millis())),
                if setbacks.is_empty() {
                    "no setback".to_owned()
                } else {
                    setbacks.join("; ")
                }
            )
        })
        .collect()
}

/// Waits until the old owners' handoff counts stop rising for a second.
async fn settle(nodes: &[&NodeProc], reason: &str) -> (f64, [f64; 3]) {
    let mut last = -1.0;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut count = 0.0;
        let mut worst = [0.0f64; 3];
        for node in nodes {
            let (c, q) = migration(&metrics(node).await, reason);
            count += c;
            for (w, v) in worst.iter_mut().zip(q) {
                *w = w.max(v);
            }
        }
        if count != last {
            last = count;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(1) || Instant::now() > deadline {
            return (count, worst);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn run(args: RebalanceArgs) -> anyhow::Result<()> {
    let confab = confab_binary(args.confab)?;
    let data = tempfile::tempdir()?;
    let bare = bare_actor_kib(args.sessions).await?;

    let seed_port = free_port();
    let seed = format!("127.0.0.1:{seed_port}");
    let mut nodes = vec![
        start_node(
            &confab,
            data.path(),
            "node-1",
            seed_port,
            None,
            &args.node_log,
            &[],
        )
        .await?,
    ];
    for id in ["node-2", "node-3"] {
        nodes.push(
            start_node(
                &confab,
                data.path(),
                id,
                free_port(),
                Some(&seed),
                &args.node_log,
                &[],
            )
            .await?,
        );
    }
    let deadline = Instant::now() + WAIT;
    for node in &nodes {
        while ring_members(node).await != 3 {
            anyhow::ensure!(Instant::now() < deadline, "the cluster never formed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let empty: Vec<f64> = nodes.iter().map(NodeProc::rss_kib).collect();
    let urls: Vec<String> = nodes.iter().map(NodeProc::ws).collect();
    eprintln!("making {} sessions resident...", args.sessions);
    let filling = Instant::now();
    fill(&urls, args.sessions, args.fill_concurrency).await?;
    let fill_s = filling.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rss_per_session_kib = Vec::new();
    let mut growth_per_session_kib = Vec::new();
    for (node, empty) in nodes.iter().zip(&empty) {
        let resident = sample(&metrics(node).await, "confab_sessions_resident").unwrap_or(0.0);
        let rss = node.rss_kib();
        rss_per_session_kib.push(rss / resident.max(1.0));
        growth_per_session_kib.push((rss - empty) / resident.max(1.0));
    }

    eprintln!("{} users talking; node-4 joins...", args.active);
    let tokens: Tokens = Arc::new(|uid: &str| token(SECRET, uid, "chat").unwrap_or_default());
    let users: Vec<String> = (0..args.active).map(|i| format!("active-{i}")).collect();
    let load = Load::start(
        urls.clone(),
        &users,
        args.pause_ms.map_or(args.pause, Duration::from_millis),
        Arc::clone(&tokens),
    );
    // The CPU the users' turns cost without an event, per second.
    let (quiet_at, quiet_cpu) = (Instant::now(), nodes_cpu_s(&nodes));
    tokio::time::sleep(STEADY).await;
    let load_cpu_per_s = (nodes_cpu_s(&nodes) - quiet_cpu) / quiet_at.elapsed().as_secs_f64();

    let join_at = Instant::now();
    let join_cpu = nodes_cpu_s(&nodes);
    nodes.push(
        start_node(
            &confab,
            data.path(),
            "node-4",
            free_port(),
            Some(&seed),
            &args.node_log,
            &[],
        )
        .await?,
    );
    let deadline = Instant::now() + WAIT;
    for node in &nodes {
        while ring_members(node).await != 4 {
            anyhow::ensure!(Instant::now() < deadline, "node-4 never joined the ring");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let join_ring = join_at.elapsed().as_secs_f64();
    load.urls.lock().expect("urls").push(nodes[3].ws());
    let old: Vec<&NodeProc> = nodes[..3].iter().collect();
    let (join_moved, join_q) = settle(&old, "ring_change").await;
    let join_end = Instant::now();
    let join_cpu =
        nodes_cpu_s(&nodes) - join_cpu - load_cpu_per_s * (join_end - join_at).as_secs_f64();
    tokio::time::sleep(STEADY).await;

    eprintln!("draining node-2...");
    let drain_at = Instant::now();
    let drain_cpu = nodes_cpu_s(&nodes);
    let (status, body) = http("POST", nodes[0].http, "/admin/v1/nodes/node-2/drain")
        .await
        .context("the drain request failed")?;
    anyhow::ensure!(status == 200, "drain refused: {status} {body}");
    // node-2's /readyz answers 503 from now on: the clients' address list
    // follows readiness, as a load balancer's does (a Kubernetes Service drops
    // the pod), so a client told 1013 reconnects to a node that serves.
    {
        let mut urls = load.urls.lock().expect("urls");
        let draining = nodes[1].ws();
        urls.retain(|u| *u != draining);
    }
    // node-2 stops once it has left: keep its last metrics page.
    let mut drained_page = String::new();
    let mut drain_ring = None;
    // node-2's CPU as last read before it exited.
    let mut drained_cpu = 0.0;
    let deadline = Instant::now() + WAIT;
    loop {
        if drain_ring.is_none() && ring_members(&nodes[0]).await == 3 {
            drain_ring = Some(drain_at.elapsed().as_secs_f64());
        }
        let page = metrics(&nodes[1]).await;
        if page.is_empty() {
            break;
        }
        drained_page = page;
        drained_cpu = nodes[1].child.id().map_or(drained_cpu, cpu_s);
        anyhow::ensure!(Instant::now() < deadline, "node-2 never left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_end = Instant::now();
    let others: f64 = [0, 2, 3]
        .iter()
        .filter_map(|&i| nodes[i].child.id())
        .map(cpu_s)
        .sum();
    let drain_cpu =
        others + drained_cpu - drain_cpu - load_cpu_per_s * (drain_end - drain_at).as_secs_f64();
    let (drain_moved, drain_q) = migration(&drained_page, "drain");
    tokio::time::sleep(STEADY).await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("node-2.metrics"), &drained_page)?;
        for (i, node) in nodes.iter().enumerate() {
            if i != 1 {
                std::fs::write(
                    dir.join(format!("node-{}.metrics", i + 1)),
                    metrics(node).await,
                )?;
            }
        }
    }
    let logs = load.finish().await;
    let (_, breaches) = check(&logs, &nodes[0].ws(), &tokens).await;
    let (join_p99, join_max) = pause(&logs, join_at, join_end);
    let (drain_p99, drain_max) = pause(&logs, drain_at, drain_end);
    for (event, from, to) in [("join", join_at, join_end), ("drain", drain_at, drain_end)] {
        eprintln!("slowest turns of the {event}:");
        for line in slowest_turns(&logs, from, to, args.show_slowest) {
            eprintln!("  {line}");
        }
    }
    let report = Report {
        sessions: args.sessions,
        active: args.active,
        fill_s,
        memory: Memory {
            rss_per_session_kib,
            growth_per_session_kib,
            bare_actor_kib: bare,
        },
        join: Event::new(
            join_ring,
            join_moved,
            join_q,
            (join_p99, join_max),
            join_cpu,
        ),
        drain: Event::new(
            drain_ring.unwrap_or(0.0),
            drain_moved,
            drain_q,
            (drain_p99, drain_max),
            drain_cpu,
        ),
        lost_or_repeated: breaches.len(),
    };
    for node in &mut nodes {
        if let Some(pid) = node.child.id() {
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), node.child.wait()).await;
    }
    if let Some(dir) = &args.keep_logs {
        for id in ["node-1", "node-2", "node-3", "node-4"] {
            let log = format!("{id}.log");
            std::fs::copy(data.path().join(&log), dir.join(&log))?;
        }
        eprintln!("node logs and metrics kept in {}", dir.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    for breach in breaches.iter().take(10) {
        eprintln!("breach: {breach}");
    }
    anyhow::ensure!(breaches.is_empty(), "{} breaches", breaches.len());
    Ok(())
}

fn print_human(r: &Report) {
    println!(
        "{} resident sessions on 3 nodes (made resident in {:.1} s), {} users talking",
        r.sessions, r.fill_s, r.active
    );
    println!(
        "memory per resident session: RSS/sessions {:?} KiB, growth {:?} KiB; bare ractor actor {:.2} KiB",
        r.memory
            .rss_per_session_kib
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>(),
        r.memory
            .growth_per_session_kib
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>(),
        r.memory.bare_actor_kib
    );
    for (name, e) in [("join (node-4)", &r.join), ("drain (node-2)", &r.drain)] {
        println!(
            "{name}: ring in {:.3} s; {} sessions moved; migration (bucket bounds) p50 <= {:.0} ms, p99 <= {:.0} ms, max <= {:.0} ms; pause p99 {:.1} ms, max {:.1} ms; node CPU beyond the load's {:.2} s ({:.0} µs per moved session)",
            e.ring_s,
            e.moved,
            e.migration_p50_ms,
            e.migration_p99_ms,
            e.migration_max_ms,
            e.pause_p99_ms,
            e.pause_max_ms,
            e.handoff_cpu_s,
            e.cpu_per_moved_us,
        );
    }
    println!("acked turns lost or applied twice: {}", r.lost_or_repeated);
}

#[cfg(test)]
mod tests {
    use super::{migration, stat_cpu_s};

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid 42, comm "tokio (rt) w", state R, then fields 4..15: utime 250
        // and stime 75 ticks are fields 14 and 15.
        let stat = "42 (tokio (rt) w) R 1 42 42 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 8 0";
        assert!(
            (stat_cpu_s(stat) - 3.25).abs() < 1e-9,
            "{}",
            stat_cpu_s(stat)
        );
        assert_eq!(stat_cpu_s("42 (cut short) R 1 2"), 0.0);
        assert_eq!(stat_cpu_s(""), 0.0);
    }

    #[test]
    fn migration_quantiles_are_read_from_the_histogram_buckets_of_one_reason() {
        let page = "\
confab_migration_seconds_bucket{reason=\"join\",le=\"0.1\"} 90
confab_migration_seconds_bucket{reason=\"join\",le=\"0.25\"} 99
confab_migration_seconds_bucket{reason=\"join\",le=\"0.5\"} 100
confab_migration_seconds_bucket{reason=\"join\",le=\"+Inf\"} 100
confab_migration_seconds_bucket{reason=\"drain\",le=\"0.1\"} 0
confab_migration_seconds_bucket{reason=\"drain\",le=\"+Inf\"} 7
confab_migration_seconds_count{reason=\"join\"} 100
";
        assert_eq!(migration(page, "join"), (100.0, [0.1, 0.25, 0.5]));
        let (count, [p50, _, max]) = migration(page, "drain");
        assert_eq!(count, 7.0);
        assert!(p50.is_infinite() && max.is_infinite(), "past every bucket");
        assert_eq!(migration(page, "rebalance"), (0.0, [0.0; 3]));
    }
}
