//! `confab up`, as a newcomer runs it: it starts, prints a token that works,
//! stops cleanly on SIGTERM, and the next `confab up` on the same data dir
//! carries on.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `confab up` until it prints its token; returns the child and the token.
fn up(data_dir: &std::path::Path, port: u16) -> (ChildGuard, String) {
    let mut child = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_confab"))
            .args([
                "up",
                "--http-port",
                &port.to_string(),
                "--cluster-port",
                &free_ports(3).to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("CONFAB_AUTH__JWT_SECRET")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut token = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(t) = line.strip_prefix("token for uid demo (24h): ") {
            token = Some(t.trim().to_owned());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    (child, token.expect("confab up printed a token"))
}

fn stop(child: ChildGuard) {
    let status = child.stop_with(Signal::SIGTERM);
    assert!(status.success(), "confab up exited with {status}");
}

#[tokio::test]
async fn confab_up_serves_stops_cleanly_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3);
    let (child, token) = up(dir.path(), port);
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut client = Client::connect(&url, &token).await.unwrap();
    let (ack, _) = client.say("m-1", "39码的黑色有货吗？").await;
    assert_eq!(ack, 1);
    drop(client);
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
    assert!(dir.path().join("dev-jwt-secret").exists());

    // Same data dir: the same dev secret, so the old token still works, and the
    // session is where it was.
    let (child, second_token) = up(dir.path(), port);
    assert_eq!(second_token.split('.').next(), token.split('.').next());
    let client = Client::connect(&url, &token).await.unwrap();
    assert_eq!(client.last_seq(), 3);
    drop(client);
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
}

/// `confab up --nodes 3` supervises its nodes: a node killed with SIGKILL under
/// client load is restarted and rejoins the ring, the others answer all along,
/// and no acked turn is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_of_confab_up_is_restarted_and_the_others_serve_throughout() {
    use confab_testkit::load::{Load, assert_no_loss_no_duplicate, summary};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3);
    let log_path = dir.path().join("up.log");
    let mut child = ChildGuard::new(
        confab_up(3, port, &dir.path().join("data"))
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The listing names each node's pid: a user kills one to watch failover.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut pids = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(pid) = line
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
        {
            pids.push(pid.parse::<i32>().unwrap());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "confab up lists 3 nodes with their pids");
    let nodes = |at: &[u16]| -> Vec<String> {
        at.iter()
            .map(|p| format!("ws://127.0.0.1:{p}/v1/ws"))
            .collect()
    };
    let users: Vec<String> = (0..24).map(|i| format!("talker-{i}")).collect();
    let load = Load::start(
        nodes(&[port, port + 2]),
        &users,
        Duration::from_millis(20),
        tokens(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    kill(Pid::from_raw(pids[1]), Signal::SIGKILL).unwrap();
    let ring_of = |p: u16| async move {
        let (code, stdout, _) = confabctl_at(p, &["--json", "ring"]).await;
        if code != 0 {
            return Vec::new();
        }
        let view: confab_proto::admin::RingView = serde_json::from_str(&stdout).unwrap();
        view.nodes
    };
    // Restarted by `confab up` (declared down meanwhile, or not, if it came
    // back first): on the ring again, seen from every node, the restarted one too.
    for p in [port, port + 1, port + 2] {
        eventually(|| async { ring_of(p).await == ["node-1", "node-2", "node-3"] }).await;
    }
    load.urls
        .lock()
        .unwrap()
        .push(format!("ws://127.0.0.1:{}/v1/ws", port + 1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = load.finish().await;
    eprintln!("kill under confab up: {}", summary(&logs));
    assert_no_loss_no_duplicate(&logs, &format!("ws://127.0.0.1:{port}/v1/ws"), &tokens()).await;

    let said = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        said.contains("node-2 exited unexpectedly (signal: 9 (SIGKILL)); restarting it in 500 ms"),
        "confab up did not say it restarts node-2: {said}"
    );
    assert!(
        !said.contains("stopping the others"),
        "confab up stopped the cluster: {said}"
    );
    // Ctrl-C still stops every node cleanly, the restarted one too.
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
}

/// A port that is taken stops `confab up` before it starts anything: it names
/// the port and never says it is up (it used to print the URLs of whatever
/// held the port, whose `/readyz` answered for it, then crash-loop). Ports
/// past 65535, and port 0, are refused the same way.
#[test]
fn confab_up_refuses_ports_it_cannot_have() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_confab"))
            .arg("up")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("CONFAB_AUTH__JWT_SECRET")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let http = free_ports(3);
    let cluster = free_ports(3);
    let taken = std::net::TcpListener::bind(("127.0.0.1", http + 1)).unwrap();
    let out = run(&[
        "--http-port",
        &http.to_string(),
        "--cluster-port",
        &cluster.to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "port {} (node-2's HTTP port) is not free",
            http + 1
        )),
        "{said}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(taken);

    let taken = std::net::TcpListener::bind(("127.0.0.1", cluster + 2)).unwrap();
    let out = run(&[
        "--http-port",
        &http.to_string(),
        "--cluster-port",
        &cluster.to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "port {} (node-3's cluster port) is not free",
            cluster + 2
        )),
        "{said}"
    );
    drop(taken);

    let out = run(&["--http-port", "65535"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("runs past port 65535"), "{said}");
    let out = run(&[
        "--http-port",
        &http.to_string(),
        "--cluster-port",
        &(http + 1).to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("overlap"), "{said}");
    let out = run(&["--http-port", "0"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    // Nothing was started: the data dir holds no store.
    assert!(!dir.path().join("confab.db").exists());
}

/// `confab up --nodes 2 --json` on `port` and `data`, once it printed its
/// ready line: the child and that line.
fn up_json(port: u16, data: &std::path::Path) -> (ChildGuard, serde_json::Value) {
    let mut child = ChildGuard::new(
        confab_up(2, port, data)
            .arg("--json")
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("confab up printed no ready line ({e}): {line:?}"));
    (child, ready)
}

/// `confab up` killed with SIGKILL takes its nodes with it: each gets SIGTERM
/// from the kernel and stops cleanly, so the ports are free and the next
/// `confab up` on the same data dir starts and finds the session as it was
/// (the nodes used to run on, unsupervised, holding the ports).
#[tokio::test]
async fn the_nodes_of_a_killed_confab_up_stop_and_the_next_one_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let data = dir.path().join("data");
    let (child, ready) = up_json(port, &data);
    let url = ready["nodes"][1]["ws"].as_str().unwrap().to_owned();
    let pids: Vec<i32> = (0..2)
        .map(|i| i32::try_from(ready["nodes"][i]["pid"].as_u64().unwrap()).unwrap())
        .collect();
    let mut client = Client::connect(&url, &token("kept")).await.unwrap();
    let (ack, _) = client.say("m-1", "39码的黑色有货吗？").await;
    assert_eq!(ack, 1);
    drop(client);

    let status = tokio::task::spawn_blocking(move || child.stop_with(Signal::SIGKILL))
        .await
        .unwrap();
    assert_eq!(status.code(), None, "killed");
    // Both nodes stop: their processes end (a zombie, if nothing reaps the
    // orphan, has ended too).
    for pid in pids {
        eventually(|| async move {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'))
            })
        })
        .await;
    }
    // `up_json` reads the ready line: confab up started again.
    let (again, _) = up_json(port, &data);
    let client = Client::connect(&url, &token("kept")).await.unwrap();
    assert_eq!(client.last_seq(), 3, "the acked turn is there");
    drop(client);
    tokio::task::spawn_blocking(move || stop(again))
        .await
        .unwrap();
}

/// A node started by hand with the id of a live member (a copied command, or
/// no `--node-id`, which means `node-1`) refuses to start and names the id; the
/// cluster goes on as it was. It used to join, publish its address over the
/// live node's and keep the ring changing while neither served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_members_id_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_ports(2);
    let cluster = free_ports(2);
    let mut child = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_confab"))
            .args(["up", "--nodes", "2", "--json"])
            .args(["--http-port", &port.to_string()])
            .args(["--cluster-port", &cluster.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let epoch = |p: u16| async move {
        let (code, stdout, stderr) = confabctl_at(p, &["--json", "ring"]).await;
        assert_eq!(code, 0, "{stderr}");
        let view: confab_proto::admin::RingView = serde_json::from_str(&stdout).unwrap();
        (view.epoch, view.nodes)
    };
    let before = epoch(port).await;
    assert_eq!(before.1, ["node-1", "node-2"]);

    for id in [Some("node-2"), None] {
        let mut node = Command::new(env!("CARGO_BIN_EXE_confab"));
        node.arg("node");
        if let Some(id) = id {
            node.args(["--node-id", id]);
        }
        let data = data.clone();
        let out = tokio::task::spawn_blocking(move || {
            node.args(["--http-port", &free_port().to_string()])
                .args(["--cluster-port", &free_port().to_string()])
                .args(["--seeds", &format!("127.0.0.1:{cluster}")])
                .arg("--data-dir")
                .arg(&data)
                .env("CONFAB_AUTH__JWT_SECRET", SECRET)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let id = id.unwrap_or("node-1");
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!(
                "node id {id} is in use: a live node at 127.0.0.1:"
            )),
            "{said}"
        );
    }
    // Nothing changed: the same ring at the same epoch, both nodes ready.
    assert_eq!(epoch(port).await, before);
    assert_eq!(epoch(port + 1).await, before);
    for p in [port, port + 1] {
        assert_eq!(http_get(p, "/readyz").await.unwrap().0, 200);
    }
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
}
