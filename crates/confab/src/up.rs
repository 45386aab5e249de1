//! `confab up`: a local cluster of node processes on the embedded store.
//!
//! Node i is `confab node --node-id node-i --http-port P+i-1 --cluster-port C+i-1`
//! on the shared data dir; nodes 2..N join through node 1's cluster port. Ctrl-C (or SIGTERM) stops every node cleanly: each one
//! snapshots its sessions before it exits.

use crate::{secrets, token};
use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// HTTP port of node 1; node i listens on P+i-1.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Cluster port of node 1; node i uses C+i-1.
    #[arg(long, default_value_t = 7070)]
    cluster_port: u16,
    /// Where the embedded store and the dev secrets live.
    #[arg(long, default_value = "./confab-data")]
    data_dir: PathBuf,
    /// The HS256 secret (default: the data dir's dev secret, created on first run).
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

/// Nodes `confab up` starts, at most.
const NODES_MAX: u16 = 16;
/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let nodes = args.nodes;
    anyhow::ensure!(
        (1..=NODES_MAX).contains(&nodes),
        "--nodes must be 1 to {NODES_MAX}"
    );
    // Node 1 starts the cluster; the others join it through its cluster port.
    let seed = format!("127.0.0.1:{}", args.cluster_port);
    let secret =
        secrets::jwt_secret_or_create(args.jwt_secret.as_deref().unwrap_or(""), &args.data_dir)?;
    let exe = std::env::current_exe().context("cannot find the confab executable")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 1..=nodes {
        let id = format!("node-{i}");
        let child = Command::new(&exe)
            .arg("node")
            .args(["--node-id", &id])
            .args(["--http-port", &(args.http_port + i - 1).to_string()])
            .args(["--cluster-port", &(args.cluster_port + i - 1).to_string()])
            .args(if i > 1 {
                vec!["--seeds", seed.as_str()]
            } else {
                vec![]
            })
            .arg("--data-dir")
            .arg(&args.data_dir)
            .env("CONFAB_AUTH__JWT_SECRET", &secret)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {id}"))?;
        children.push((id, child));
    }
    for (i, (id, child)) in children.iter_mut().enumerate() {
        let port = args.http_port + u16::try_from(i).unwrap_or(0);
        wait_ready(id, child, port).await?;
    }
    let token = token::sign(
        &secret,
        "demo",
        "chat admin",
        Duration::from_secs(24 * 3600),
    )?;
    let port = args.http_port;
    println!();
    println!(
        "confab is up: {nodes} node(s) on the embedded store in {}",
        args.data_dir.display()
    );
    for i in 0..nodes {
        let p = port + i;
        println!(
            "  node-{}  http://127.0.0.1:{p}  ws://127.0.0.1:{p}/v1/ws",
            i + 1
        );
    }
    println!();
    println!("dev jwt secret: {secret}");
    println!("token for uid demo (24h): {token}");
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
    println!();
    println!("Ctrl-C stops every node cleanly.");

    let failed = tokio::select! {
        () = crate::node::stop_signal() => None,
        failed = first_failure(&mut children) => failed,
    };
    if let Some((id, status)) = &failed {
        eprintln!("{id} exited unexpectedly ({status}); stopping the others");
    }
    stop_all(&mut children).await;
    match failed {
        Some((id, _)) => anyhow::bail!("{id} failed"),
        None => Ok(()),
    }
}

/// Waits for a node to fail. A node that exits cleanly (drained, it left the
/// cluster) is let go and the others keep running; `None` once every node has.
async fn first_failure(children: &mut Vec<(String, Child)>) -> Option<(String, String)> {
    loop {
        let mut i = 0;
        while i < children.len() {
            let (id, child) = &mut children[i];
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    eprintln!("{id} left the cluster and stopped");
                    children.remove(i);
                    continue;
                }
                Ok(Some(status)) => return Some((id.clone(), status.to_string())),
                _ => i += 1,
            }
        }
        if children.is_empty() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

/// Polls `/readyz` until it answers 200, or the node exits, or time runs out.
async fn wait_ready(id: &str, child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{id} exited during start-up ({status}); its log is above");
        }
        if http_status(port, "/readyz").await == Some(200) {
            return Ok(());
        }
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
