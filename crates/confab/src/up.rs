//! `confab up`: a local cluster of node processes on the embedded store.
//!
//! Node i is `confab node --node-id node-i --http-port P+i-1 --cluster-port C+i-1`
//! on the shared data dir; nodes 2..N join through node 1's cluster port.
//!
//! `confab up` supervises its nodes as an Erlang/OTP supervisor does its
//! children (one-for-one): a node that dies (a crash, `kill -9`) is restarted
//! with exponential backoff and rejoins the ring while the others keep
//! serving; past `--max-restarts` restarts within `--restart-window` it
//! is left down, and the others still run. A node that exits 0 (drained: it
//! left the cluster) is let go. Ctrl-C (or SIGTERM) stops every node cleanly:
//! each one snapshots its sessions before it exits.
//!
//! Once every node is ready it prints the URLs, the dev secret and ready
//! tokens for people, or with `--json` one JSON object on one line for
//! scripts ([`Ready`]); the supervisor's messages go to stderr either way.

use crate::{secrets, token};
use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// HTTP port of node 1; node i listens on P+i-1.
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    http_port: u16,
    /// Cluster port of node 1; node i uses C+i-1.
    #[arg(long, default_value_t = 7070, value_parser = clap::value_parser!(u16).range(1..))]
    cluster_port: u16,
    /// Where the embedded store and the dev secrets live.
    #[arg(long, default_value = "./confab-data")]
    data_dir: PathBuf,
    /// The HS256 secret (default: the data dir's dev secret, created on first run).
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Restarts of one node allowed within --restart-window; past it the
    /// node is left down (the others keep running).
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// The window --max-restarts counts restarts in: 60s, 5m, 1h.
    #[arg(long, default_value = "60s", value_parser = token::parse_positive_duration)]
    restart_window: Duration,
    /// Once every node is ready, print one JSON object on one line (the URLs,
    /// the secret's file, a chat token and an admin token) instead of the
    /// text for people.
    #[arg(long)]
    json: bool,
    /// A config file every node runs with (see config/node.toml), e.g. to put
    /// the cluster on MySQL shard servers and Redis; the ports, node ids, seeds
    /// and data dir still come from `confab up`.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The file in the data dir that holds the dev JWT secret (secrets.rs's).
const DEV_JWT_SECRET_FILE: &str = "dev-jwt-secret";
/// How long the tokens `confab up` prints stay valid.
const READY_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// `confab up --json`: what a script needs to use the cluster.
#[derive(serde::Serialize)]
struct Ready {
    /// Every node, in order.
    nodes: Vec<ReadyNode>,
    /// The shared data dir.
    data_dir: PathBuf,
    /// The file holding the dev JWT secret; `null` when the secret came from
    /// `--jwt-secret` or `CONFAB_AUTH__JWT_SECRET`.
    jwt_secret_file: Option<PathBuf>,
    /// A token for uid `demo` with scopes chat and admin.
    token: String,
    /// The uid `token` is for.
    token_uid: &'static str,
    /// A token for uid `ops` with scope admin, for confabctl and the dashboard.
    admin_token: String,
    /// Seconds both tokens stay valid.
    tokens_valid_s: u64,
}

impl Ready {
    fn new(args: &UpArgs, pids: &[Option<u32>], token: String, admin_token: String) -> Self {
        let port = args.http_port;
        let from_file = args.jwt_secret.as_deref().unwrap_or("").is_empty();
        let data_dir = std::path::absolute(&args.data_dir).unwrap_or(args.data_dir.clone());
        let nodes = (1..=args.nodes)
            .zip(pids)
            .map(|(i, pid)| {
                let http = format!("http://127.0.0.1:{}", port + i - 1);
                ReadyNode {
                    id: format!("node-{i}"),
                    pid: *pid,
                    ws: format!("ws://127.0.0.1:{}/v1/ws", port + i - 1),
                    dashboard: format!("{http}/dashboard"),
                    metrics: format!("{http}/metrics"),
                    http,
                }
            })
            .collect();
        Ready {
            nodes,
            jwt_secret_file: from_file.then(|| data_dir.join(DEV_JWT_SECRET_FILE)),
            data_dir,
            token,
            token_uid: "demo",
            admin_token,
            tokens_valid_s: READY_TOKEN_TTL.as_secs(),
        }
    }
}

/// One node of [`Ready`].
#[derive(serde::Serialize)]
struct ReadyNode {
    id: String,
    pid: Option<u32>,
    http: String,
    ws: String,
    dashboard: String,
    metrics: String,
}

/// Set on the nodes `confab up` starts: its pid. A node started with it stops
/// (SIGTERM: cleanly, its sessions snapshotted) when that process dies, even
/// by SIGKILL, instead of running on unsupervised and holding its ports.
pub(crate) const SUPERVISOR_PID_ENV: &str = "CONFAB_UP_PID";

/// Nodes `confab up` starts, at most.
const NODES_MAX: u16 = 16;
/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait before the first restart of a node; it doubles with each restart
/// within the period, up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest wait before a restart.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its nodes.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let nodes = args.nodes;
    anyhow::ensure!(
        (1..=NODES_MAX).contains(&nodes),
        "--nodes must be 1 to {NODES_MAX}"
    );
    check_ports(&args)?;
    let period = args.restart_window;
    // Node 1 starts the cluster; the others join it through its cluster port.
    let seed = format!("127.0.0.1:{}", args.cluster_port);
    let secret =
        secrets::jwt_secret_or_create(args.jwt_secret.as_deref().unwrap_or(""), &args.data_dir)?;
    let exe = std::env::current_exe().context("cannot find the confab executable")?;
    let launch = Launch {
        exe: exe.clone(),
        data_dir: args.data_dir.clone(),
        secret: secret.clone(),
        http_port: args.http_port,
        cluster_port: args.cluster_port,
        nodes,
        config: args.config.clone(),
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 1..=nodes {
        // Node 1 starts the cluster; the others join through it.
        let seeds = if i > 1 {
            vec![seed.clone()]
        } else {
            Vec::new()
        };
        children.push((format!("node-{i}"), launch.spawn(i, &seeds)?));
    }
    wait_all_ready(&mut children, args.http_port).await?;
    let pids: Vec<Option<u32>> = children.iter().map(|(_, child)| child.id()).collect();
    // Listen before saying it is ready: a script that stops `confab up` as
    // soon as it reads the ready line must find the handlers in place.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let token = token::sign(&secret, "demo", "chat admin", READY_TOKEN_TTL)?;
    let admin_token = token::sign(&secret, "ops", "admin", READY_TOKEN_TTL)?;
    if args.json {
        let ready = Ready::new(&args, &pids, token, admin_token);
        println!("{}", serde_json::to_string(&ready)?);
    } else {
        print_ready(&args, &exe, &pids, &secret, &token, &admin_token);
    }

    let policy = RestartPolicy {
        intensity: args.max_restarts,
        period,
    };
    let mut slots: Vec<Slot> = children
        .into_iter()
        .enumerate()
        .map(|(i, (id, child))| Slot {
            id,
            index: u16::try_from(i + 1).unwrap_or(u16::MAX),
            child: Some(child),
            state: SlotState::Running { ready: true },
            restarts: VecDeque::new(),
        })
        .collect();
    let gave_up = tokio::select! {
        _ = interrupt.recv() => Vec::new(),
        _ = terminate.recv() => Vec::new(),
        gave_up = supervise(&mut slots, &launch, &policy) => gave_up,
    };
    let mut running: Vec<(String, Child)> = slots
        .into_iter()
        .filter_map(|slot| slot.child.map(|child| (slot.id, child)))
        .collect();
    stop_all(&mut running).await;
    match gave_up.as_slice() {
        [] => Ok(()),
        ids => anyhow::bail!("{} kept failing and stayed down", ids.join(", ")),
    }
}

/// Every port the nodes will listen on, before any starts: within range, the
/// HTTP and cluster ranges apart, and free. A port already taken would have
/// the node that wants it exit at once, while whatever holds it answered the
/// readiness probe in its place.
fn check_ports(args: &UpArgs) -> anyhow::Result<()> {
    let n = args.nodes;
    let range = |first: u16, flag: &str| -> anyhow::Result<std::ops::RangeInclusive<u16>> {
        let last = first.checked_add(n - 1).with_context(|| {
            format!(
                "{flag} {first} with --nodes {n} runs past port 65535: node {n} would need port {}",
                u32::from(first) + u32::from(n) - 1
            )
        })?;
        Ok(first..=last)
    };
    let http = range(args.http_port, "--http-port")?;
    let cluster = range(args.cluster_port, "--cluster-port")?;
    anyhow::ensure!(
        http.end() < cluster.start() || cluster.end() < http.start(),
        "the HTTP ports {}-{} and the cluster ports {}-{} overlap: give --http-port and --cluster-port ranges {n} apart",
        http.start(),
        http.end(),
        cluster.start(),
        cluster.end()
    );
    for i in 1..=n {
        for (port, what) in [
            (args.http_port + i - 1, "HTTP"),
            (args.cluster_port + i - 1, "cluster"),
        ] {
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                anyhow::bail!(
                    "port {port} (node-{i}'s {what} port) is not free ({e}): is another confab \
                     running? Stop it, or start this one elsewhere with --http-port and --cluster-port"
                );
            }
        }
    }
    Ok(())
}

/// The text for people once every node is ready: the URLs, the secret, ready
/// tokens, how to chat and how to stop.
fn print_ready(
    args: &UpArgs,
    exe: &Path,
    pids: &[Option<u32>],
    secret: &str,
    token: &str,
    admin_token: &str,
) {
    let port = args.http_port;
    println!();
    println!(
        "confab is up: {} node(s) on the embedded store in {}",
        args.nodes,
        args.data_dir.display()
    );
    for (i, pid) in (1..=args.nodes).zip(pids) {
        let p = port + i - 1;
        let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        println!("  node-{i}  http://127.0.0.1:{p}  ws://127.0.0.1:{p}/v1/ws  (pid {pid})");
    }
    println!();
    println!("dev jwt secret: {secret}");
    println!("token for uid demo (24h): {token}");
    println!("admin token (24h): {admin_token}");
    println!();
    // The path this confab runs from: `confab` may not be on PATH (`cargo run`).
    println!(
        "chat from this shell:   {} chat --url ws://127.0.0.1:{port}/v1/ws --uid demo --data-dir {}",
        exe.display(),
        args.data_dir.display()
    );
    println!("or with any client:     websocat 'ws://127.0.0.1:{port}/v1/ws?token={token}'");
    println!(
        "                        then send {{\"type\":\"say\",\"id\":\"m-1\",\"text\":\"39码的黑色有货吗\"}}"
    );
    println!("or in a browser:        http://127.0.0.1:{port}/");
    println!("the ops dashboard:      http://127.0.0.1:{port}/dashboard#token={admin_token}");
    println!(
        "watch the cluster:      CONFAB_TOKEN={admin_token} confabctl --node http://127.0.0.1:{port} watch"
    );
    println!();
    println!(
        "A node that dies is restarted, at most {} times in {}.",
        args.max_restarts,
        humantime::format_duration(args.restart_window)
    );
    println!("Ctrl-C stops every node cleanly.");
}

/// How to start node i.
struct Launch {
    exe: PathBuf,
    data_dir: PathBuf,
    secret: String,
    http_port: u16,
    cluster_port: u16,
    nodes: u16,
    config: Option<PathBuf>,
}

impl Launch {
    fn spawn(&self, i: u16, seeds: &[String]) -> anyhow::Result<Child> {
        let id = format!("node-{i}");
        let mut command = Command::new(&self.exe);
        command
            .arg("node")
            .args(["--node-id", &id])
            .args(["--http-port", &(self.http_port + i - 1).to_string()])
            .args(["--cluster-port", &(self.cluster_port + i - 1).to_string()]);
        if !seeds.is_empty() {
            command.args(["--seeds", &seeds.join(",")]);
        }
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("CONFAB_AUTH__JWT_SECRET", &self.secret)
            .stdin(Stdio::null())
            // The node stops when `confab up` dies (`node::stop_with_parent`).
            .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
            .kill_on_drop(true);
        command
            .spawn()
            .with_context(|| format!("cannot start {id}"))
    }

    /// The seeds of a restarted node: every other node's cluster port, so
    /// that node 1, which started the cluster, finds it again too.
    fn seeds_for(&self, i: u16) -> Vec<String> {
        (1..=self.nodes)
            .filter(|n| *n != i)
            .map(|n| format!("127.0.0.1:{}", self.cluster_port + n - 1))
            .collect()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Erlang/OTP's restart intensity: at most `intensity` restarts of a node
/// within `period`.
struct RestartPolicy {
    intensity: u32,
    period: Duration,
}

/// One node under supervision.
struct Slot {
    id: String,
    index: u16,
    child: Option<Child>,
    state: SlotState,
    /// When it was restarted, within the policy's period.
    restarts: VecDeque<tokio::time::Instant>,
}

enum SlotState {
    /// Its process runs; `ready` once it answered `/readyz` after a restart.
    Running { ready: bool },
    /// It died: it starts again at this time.
    Restarting(tokio::time::Instant),
    /// It exited 0 (drained): let go.
    Left,
    /// It kept dying: left down.
    Down,
}

/// Watches the nodes: restarts those that die, lets go those that leave.
/// Returns (with the ids of the nodes left down) once no node runs or waits
/// for a restart.
async fn supervise(slots: &mut [Slot], launch: &Launch, policy: &RestartPolicy) -> Vec<String> {
    loop {
        let now = tokio::time::Instant::now();
        for i in 0..slots.len() {
            // Whether a node other than this one serves, for what is said
            // when this one dies.
            let others = slots
                .iter()
                .enumerate()
                .any(|(j, s)| j != i && matches!(s.state, SlotState::Running { ready: true }));
            let slot = &mut slots[i];
            match slot.state {
                SlotState::Running { ready } => {
                    let Some(child) = slot.child.as_mut() else {
                        continue;
                    };
                    match child.try_wait() {
                        Ok(Some(status)) if status.success() => {
                            eprintln!("{} left the cluster and stopped", slot.id);
                            slot.child = None;
                            slot.state = SlotState::Left;
                        }
                        Ok(Some(status)) => {
                            slot.child = None;
                            slot.state = died(slot, &status.to_string(), now, policy, others);
                        }
                        Ok(None) if !ready => {
                            let port = launch.http_port + slot.index - 1;
                            if http_status(port, "/readyz").await == Some(200) {
                                eprintln!("{} is back and ready", slot.id);
                                slot.state = SlotState::Running { ready: true };
                            }
                        }
                        Ok(None) => {}
                        Err(e) => eprintln!("{}: cannot read its status: {e}", slot.id),
                    }
                }
                SlotState::Restarting(at) if now >= at => {
                    let seeds = launch.seeds_for(slot.index);
                    match launch.spawn(slot.index, &seeds) {
                        Ok(child) => {
                            let pid = child.id().map_or_else(|| "?".to_owned(), |p| p.to_string());
                            eprintln!("{} restarted (pid {pid})", slot.id);
                            slot.child = Some(child);
                            slot.state = SlotState::Running { ready: false };
                        }
                        Err(e) => slot.state = died(slot, &format!("{e:#}"), now, policy, others),
                    }
                }
                _ => {}
            }
        }
        let live = slots.iter().any(|s| {
            matches!(
                s.state,
                SlotState::Running { .. } | SlotState::Restarting(_)
            )
        });
        if !live {
            if slots.iter().all(|s| matches!(s.state, SlotState::Left)) {
                eprintln!(
                    "every node has left; the data stays in {}",
                    launch.data_dir().display()
                );
            }
            return slots
                .iter()
                .filter(|s| matches!(s.state, SlotState::Down))
                .map(|s| s.id.clone())
                .collect();
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// A node died (`how`): when it restarts, or whether it stays down.
fn died(
    slot: &mut Slot,
    how: &str,
    now: tokio::time::Instant,
    policy: &RestartPolicy,
    others_serve: bool,
) -> SlotState {
    let others = if others_serve {
        "the other nodes keep serving"
    } else {
        "no other node is serving now"
    };
    while slot
        .restarts
        .front()
        .is_some_and(|at| now.duration_since(*at) > policy.period)
    {
        slot.restarts.pop_front();
    }
    let recent = u32::try_from(slot.restarts.len()).unwrap_or(u32::MAX);
    if recent >= policy.intensity {
        eprintln!(
            "{} exited unexpectedly ({how}); it was restarted {recent} times within {} s, so it stays down ({others})",
            slot.id,
            policy.period.as_secs()
        );
        return SlotState::Down;
    }
    let backoff = RESTART_BACKOFF_FIRST
        .saturating_mul(1 << recent.min(16))
        .min(RESTART_BACKOFF_MAX);
    eprintln!(
        "{} exited unexpectedly ({how}); restarting it in {} ms (restart {} of at most {} within {} s); {others}",
        slot.id,
        backoff.as_millis(),
        recent + 1,
        policy.intensity,
        policy.period.as_secs()
    );
    slot.restarts.push_back(now);
    SlotState::Restarting(now + backoff)
}

async fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for (id, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => eprintln!("{id} stopped"),
            Ok(Ok(status)) => eprintln!("{id} stopped: {status}"),
            Ok(Err(e)) => eprintln!("{id}: {e}"),
            Err(_) => {
                eprintln!(
                    "{id} did not stop within {}s; killing it",
                    STOP_TIMEOUT.as_secs()
                );
                let _ = child.kill().await;
            }
        }
    }
}

/// Waits until every node answers `/readyz` with 200 in one pass. A node is
/// ready once it is linked to every member of its ring; node 1 can be ready
/// before the others join its ring and then wait for links to them, so one
/// pass over the nodes in turn is not enough: a client's first hello could
/// reach a node not yet linked to the session's owner.
async fn wait_all_ready(children: &mut [(String, Child)], first_port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let mut waiting = None;
        for (i, (id, child)) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{id} exited during start-up ({status}); its log is above");
            }
            let port = first_port + u16::try_from(i).unwrap_or(0);
            if http_status(port, "/readyz").await != Some(200) {
                waiting = Some(id.clone());
                break;
            }
        }
        let Some(id) = waiting else {
            return Ok(());
        };
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{id} was not ready within {}s",
            READY_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status code of `GET path` on 127.0.0.1:port, or `None` if it fails.
pub(crate) async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
