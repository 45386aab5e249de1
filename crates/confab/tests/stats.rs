//! `confabctl stats` through the shipped binaries: a `confab up` cluster of 3
//! nodes, real WebSocket clients talking to all of them, and the cluster-wide
//! aggregates read back from any node: sessions resident per node summing to
//! the users, every answered turn counted once on the node that owns its
//! session, the intents the replies named, and the slots the texts filled. A
//! frozen member is listed as unreachable and left out of the totals, not
//! dropped.
//!
//! `confabctl` is found beside `confab`: a workspace build (or `cargo nextest
//! run -p confab -p confabctl`) builds it.

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_proto::admin::{ClusterStats, NodeStats};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `confab up` cluster, stopped with SIGTERM when dropped.
struct Up {
    child: Option<Child>,
    /// node-i's HTTP port is `port + i - 1`.
    port: u16,
    /// The node processes, by node index (node-1 first).
    pids: Vec<i32>,
}

impl Up {
    /// Runs `confab up --nodes n` until it says it is ready.
    fn start(dir: &std::path::Path, n: u16) -> Up {
        let port = free_ports(n);
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
            .args([
                "up",
                "--nodes",
                &n.to_string(),
                "--http-port",
                &port.to_string(),
            ])
            .args(["--cluster-port", &free_ports(n).to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
        assert_eq!(pids.len(), usize::from(n), "confab up lists its nodes");
        Up {
            child: Some(child),
            port,
            pids,
        }
    }

    fn ws(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.http(i))
    }

    fn http(&self, i: usize) -> u16 {
        self.port + u16::try_from(i).unwrap()
    }

    fn signal(&self, i: usize, signal: Signal) {
        kill(Pid::from_raw(self.pids[i]), signal).unwrap();
    }

    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap()),
            Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "confab up exited with {status}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for pid in &self.pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
            }
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap()),
                Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// `confabctl --json stats` at the node on `port`: the answer and stderr.
async fn stats_at(port: u16, extra: &[&str]) -> (ClusterStats, String) {
    let mut args = vec!["--json", "stats"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = confabctl_at(port, &args).await;
    assert_eq!(code, 0, "{stderr}");
    let stats = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{stdout} is not a ClusterStats: {e}"));
    (stats, stderr)
}

/// Every member up and linked, as the node on `port` sees them.
async fn linked_at(port: u16) -> usize {
    let (code, stdout, _) = confabctl_at(port, &["--json", "nodes"]).await;
    if code != 0 {
        return 0;
    }
    let view: confab_proto::admin::NodesView = serde_json::from_str(&stdout).unwrap();
    view.nodes
        .iter()
        .filter(|n| n.status == "up" && n.connected)
        .count()
}

/// Each user's turns: the intent the reply names is counted; the slots each
/// text names are filled (`config/flows/v1/shoe_shop.toml`).
const TURNS: [&str; 3] = ["39码的黑色有货吗？", "换成白色的", "谢谢"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_add_up_every_members_turns_sessions_intents_and_slot_fills() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), 3);
    for i in 0..3 {
        eventually(|| async { linked_at(up.http(i)).await == 3 }).await;
    }
    let (before, _) = stats_at(up.http(0), &[]).await;
    assert_eq!(before.turns_total, 0, "{before:?}");
    assert!(before.intents.is_empty());

    // 9 users, each on a socket to one of the 3 nodes: any node serves any
    // user, and the hello names the session's owner.
    let users = 9;
    let started = std::time::Instant::now();
    let mut owners: BTreeMap<String, u64> = BTreeMap::new();
    let mut intents: BTreeMap<String, u64> = BTreeMap::new();
    for u in 0..users {
        let uid = format!("shopper-{u}");
        let mut client = Client::connect(&up.ws(u % 3), &token(&uid)).await.unwrap();
        let ServerFrame::Hello { node, .. } = &client.hello else {
            unreachable!()
        };
        *owners.entry(node.clone()).or_default() += 1;
        for (k, text) in TURNS.iter().enumerate() {
            let (_, reply) = client.say(&format!("m-{k}"), text).await;
            let ServerFrame::Reply { intent, .. } = reply else {
                unreachable!()
            };
            *intents.entry(intent).or_default() += 1;
        }
        // The same id again is a duplicate: answered, never counted twice.
        client.say("m-0", TURNS[0]).await;
    }
    let turns = users as u64 * TURNS.len() as u64;
    assert!(
        owners.len() > 1,
        "the users spread over the nodes: {owners:?}"
    );

    // Asked of any node, the same figures.
    for i in 0..3 {
        let (stats, stderr) = stats_at(up.http(i), &[]).await;
        assert!(stats.unreachable.is_empty(), "{stats:?} {stderr}");
        assert_eq!(stats.node, format!("node-{}", i + 1));
        let ids: Vec<&str> = stats.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["node-1", "node-2", "node-3"]);
        assert_eq!(stats.sessions_resident, users as u64, "{stats:?}");
        assert_eq!(stats.turns_total, turns, "{stats:?}");
        for node in &stats.nodes {
            let owned = owners.get(&node.id).copied().unwrap_or(0);
            assert!(node.reachable && node.error.is_none(), "{node:?}");
            assert_eq!(node.sessions_resident, Some(owned), "{node:?}");
            assert_eq!(
                node.turns_total,
                Some(owned * TURNS.len() as u64),
                "counted on the owner: {node:?}"
            );
        }
        // No timing assertion: only a run that took under a minute must
        // still see every turn in the last minute.
        if started.elapsed() < std::time::Duration::from_secs(55) {
            assert_eq!(stats.turns_last_minute, turns, "{stats:?}");
        }
        assert!(stats.turns_last_minute <= turns);
        let counted: BTreeMap<String, u64> = stats
            .intents
            .iter()
            .map(|i| (i.name.clone(), i.count))
            .collect();
        assert_eq!(counted, intents, "the intents the replies named");
        assert_eq!(stats.intents_other, 0);
        assert!(counted.contains_key("stock_query") && counted.contains_key("thanks"));
        let stock = stats
            .intents
            .iter()
            .find(|i| i.name == "stock_query")
            .unwrap();
        assert!((stock.share - 2.0 / 3.0).abs() < 1e-9, "{stock:?}");
        let fills: BTreeMap<&str, u64> = stats
            .slot_fills
            .iter()
            .map(|s| (s.name.as_str(), s.fills))
            .collect();
        // 39码的黑色 fills size and colour, 换成白色的 colour again.
        assert_eq!(
            fills,
            BTreeMap::from([("colour", 2 * users as u64), ("size", users as u64)])
        );
        // Sorted, most first.
        assert_eq!(stats.slot_fills[0].name, "colour");
    }

    // The node's own aggregate, alone.
    let (status, body) = http_request(
        up.http(1),
        "GET",
        "/admin/v1/stats/local",
        Some(&admin_token()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let local: NodeStats = serde_json::from_str(&body).unwrap();
    assert_eq!(local.node, "node-2");
    assert_eq!(
        local.sessions_resident,
        owners.get("node-2").copied().unwrap_or(0)
    );

    // The table for people.
    let (code, table, stderr) = confabctl_at(up.http(0), &["stats"]).await;
    assert_eq!(code, 0, "{stderr}");
    for word in [
        "TURNS/MIN",
        "node-1",
        "node-3",
        "(this node)",
        "3/3 answered",
        "stock_query",
        "66.7%",
        "colour",
        "PER TURN",
    ] {
        assert!(table.contains(word), "{word} missing:\n{table}");
    }

    // Admin scope, like every admin endpoint; a bad deadline is refused.
    let path = "/admin/v1/stats";
    let chat = http_request(up.http(0), "GET", path, Some(&token("ops")), None).await;
    assert_eq!(chat.map(|r| r.0), Some(403));
    let none = http_request(up.http(0), "GET", path, None, None).await;
    assert_eq!(none.map(|r| r.0), Some(401));
    let zero = "/admin/v1/stats?deadline_ms=0";
    let bad = http_request(up.http(0), "GET", zero, Some(&admin_token()), None).await;
    assert_eq!(bad.map(|r| r.0), Some(400));
    let (code, _, stderr) = confabctl_at(up.http(0), &["stats", "--deadline", "11s"]).await;
    assert_eq!(code, 2, "{stderr}");

    // node-3 frozen: listed as unreachable, its figures out of the totals.
    up.signal(2, Signal::SIGSTOP);
    let (stats, stderr) = stats_at(up.http(0), &["--deadline", "300ms"]).await;
    up.signal(2, Signal::SIGCONT);
    assert_eq!(stats.unreachable, ["node-3"], "{stats:?}");
    assert_eq!(stats.deadline_ms, 300);
    let frozen = &stats.nodes[2];
    assert_eq!(frozen.id, "node-3");
    assert!(!frozen.reachable);
    assert!(frozen.error.is_some(), "{frozen:?}");
    assert_eq!(frozen.sessions_resident, None);
    let on_node_3 = owners.get("node-3").copied().unwrap_or(0);
    assert_eq!(stats.sessions_resident, users as u64 - on_node_3);
    assert_eq!(
        stats.turns_total,
        turns - on_node_3 * TURNS.len() as u64,
        "{stats:?}"
    );
    assert!(
        stderr.contains("node-3 did not answer within 300ms"),
        "{stderr}"
    );

    // Thawed, it answers again.
    eventually(|| async {
        confabctl_at(up.http(0), &["--json", "stats"])
            .await
            .1
            .contains("\"unreachable\": []")
    })
    .await;
    tokio::task::spawn_blocking(move || up.stop())
        .await
        .unwrap();
}
