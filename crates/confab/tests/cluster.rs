//! `confab node` processes on one embedded store form one cluster:
//! - any node serves any user, and the session's owner does not depend on the
//!   node the socket landed on;
//! - a node joins, a node is drained, a node is killed, all while clients keep
//!   talking: every turn is answered, none is lost or applied twice;
//! - a node cut off from the majority (the others frozen by SIGSTOP) serves
//!   nothing and says so at once, and the frozen majority, resumed, declares no
//!   one down from heartbeat times it slept through.

mod common;

use common::*;
use confab_proto::admin::{NodesView, RingView};
use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use confab_testkit::load::{Load, UserLog, assert_no_loss_no_duplicate, slowest, summary};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_user_and_the_owner_is_the_same_from_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster(dir.path(), 3).await;
    let mut owners = std::collections::BTreeSet::new();
    for u in 0..12 {
        let uid = format!("user-{u}");
        let mut seen = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let mut client = Client::as_uid(node, &uid).await;
            let ServerFrame::Hello { node: owner, .. } = &client.hello else {
                unreachable!()
            };
            seen.push(owner.clone());
            let (ack, reply) = client.say(&format!("m-{i}"), "你好").await;
            assert_eq!(ack, u64::try_from(i).unwrap() * 3 + 1, "{uid} via node {i}");
            assert!(matches!(reply, ServerFrame::Reply { .. }));
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{uid}: owners {seen:?}"
        );
        owners.insert(seen[0].clone());
    }
    assert_eq!(
        owners.len(),
        3,
        "12 users spread over the 3 nodes: {owners:?}"
    );
}

/// Starts `n` plain-TCP nodes on one data dir (see [`cluster_with`]).
async fn cluster(dir: &std::path::Path, n: usize) -> (Vec<Node>, String) {
    cluster_with(dir, n, |_| Vec::new()).await
}

/// Stops the clients, then checks what they saw across `change`: every turn
/// answered at the seqs that follow (none lost or applied twice), none held
/// past `grace` + [`HUNG`]. Returns the logs and each user's owner.
///
/// How fast a turn is answered across a ring change is a benchmark
/// (`confab-bench rebalance`, docs/benchmarks.md), not a test: a 2-core
/// machine compiling in parallel once held an embedded-store write for 2 s.
async fn finish_and_check(
    load: Load,
    node: &Node,
    change: &str,
    grace: Duration,
) -> (Vec<UserLog>, std::collections::BTreeMap<String, String>) {
    let logs = load.finish().await;
    eprintln!("{change}: {}", summary(&logs));
    let owners = assert_no_loss_no_duplicate(&logs, &node.ws_url(), &tokens()).await;
    assert!(
        slowest(&logs) <= grace + HUNG,
        "a turn hung for {:?} across the {change} ({} turns)",
        slowest(&logs),
        turns(&logs)
    );
    (logs, owners)
}

/// The ring as `node` routes by it.
async fn ring(node: &Node) -> RingView {
    let (code, stdout, stderr) = confabctl(node, &["--json", "ring"]).await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("talker-{i}")).collect()
}

/// How long the tests let clients talk before and after a change.
const TALK: Duration = Duration::from_millis(1500);
/// Pause between one user's turns.
const PAUSE: Duration = Duration::from_millis(20);
/// A turn held this long was stuck, not slow: the load client's wait for a
/// frame (10 s) has passed and it took the connection as dead.
const HUNG: Duration = Duration::from_secs(10);

fn turns(logs: &[UserLog]) -> usize {
    logs.iter().map(|l| l.turns.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_under_load_without_losing_or_repeating_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, seed) = cluster(dir.path(), 3).await;
    assert_eq!(ring(&nodes[0]).await.vnodes.len(), 96);
    // Idle sessions too: resident, with no turn in flight when they move.
    let idle: Vec<String> = (0..40).map(|i| format!("idle-{i}")).collect();
    for (i, uid) in idle.iter().enumerate() {
        Client::as_uid(&nodes[i % 3], uid).await;
    }
    let urls = nodes.iter().map(Node::ws_url).collect();
    let load = Load::start(urls, &users(24), PAUSE, tokens());
    tokio::time::sleep(TALK).await;

    let joined =
        Node::start_member(dir.path(), &[], &["--node-id", "node-4", "--seeds", &seed]).await;
    for node in &nodes {
        eventually(|| async { ring(node).await.vnodes.len() == 128 }).await;
    }
    load.urls.lock().unwrap().push(joined.ws_url());
    nodes.push(joined);
    tokio::time::sleep(TALK).await;
    let (_, owners) = finish_and_check(load, &nodes[0], "join", Duration::ZERO).await;
    // The moved sessions' state went straight from their old owners to
    // node-4, which starts the idle ones from it on their next hello.
    for uid in &idle {
        Client::as_uid(&nodes[0], uid).await;
    }
    let (_, metrics) = http_get(nodes[3].port, "/metrics").await.unwrap();
    let handed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("confab_handoffs_total{state_from=\"old_owner\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        handed > 0.0,
        "no session state came from its old owner:\n{metrics}"
    );
    // Each old owner times its handoffs, from its adoption of the ring.
    let mut timed = false;
    for node in &nodes[..3] {
        let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
        timed |= metrics.contains("confab_migration_seconds_count{reason=\"ring_change\"}");
    }
    assert!(timed, "no old owner timed a handoff");
    // The new node took over its share: the sessions the ring gives it serve there.
    let view = ring(&nodes[0]).await;
    let taken = owners.values().filter(|o| *o == "node-4").count();
    assert!(taken > 0, "node-4 owns none of the sessions: {owners:?}");
    for (uid, owner) in &owners {
        let (code, stdout, _) = confabctl(&nodes[3], &["--json", "session", "locate", uid]).await;
        assert_eq!(code, 0);
        let located: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            located["owner"],
            owner.as_str(),
            "{uid} at epoch {}",
            view.epoch
        );
    }
}

/// A drained node keeps its open connections while its sessions move and
/// closes them with 1013 only once none is left on it, so that its clients
/// reconnect to sessions already serving on their new owners instead of
/// waiting for them to arrive there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_closes_its_connections_once_its_sessions_have_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster(dir.path(), 3).await;
    // 300 users connected to node-3, each with a turn: about a third of the
    // sessions live on node-3.
    let mut clients = Vec::new();
    for u in 0..300 {
        let mut client = Client::as_uid(&nodes[2], &format!("user-{u}")).await;
        client.say("m-1", "hello").await;
        clients.push(client);
    }
    let before = node_3_drain(&nodes[2], "GET").await;
    assert!(
        before.sessions_left > 0,
        "no session lives on node-3: {before:?}"
    );

    node_3_drain(&nodes[0], "POST").await;
    let first = clients[0].end().await;
    assert_eq!(first, End::Closed(Some(1013)));
    // The first close came once node-3 held no session any more.
    let progress = node_3_drain(&nodes[0], "GET").await;
    assert_eq!(
        progress.sessions_left, 0,
        "closed while sessions were still on node-3: {progress:?}"
    );
    assert!(
        progress.state == "draining" || progress.state == "left",
        "{progress:?}"
    );
    for client in &mut clients[1..] {
        assert_eq!(client.end().await, End::Closed(Some(1013)));
    }
    // Each user, reconnected to a member, finds the turn it had.
    for u in [0, 150, 299] {
        let client = Client::as_uid(&nodes[u % 2], &format!("user-{u}")).await;
        assert_eq!(client.last_seq(), 3, "user-{u}");
    }
}

/// `POST` (start) or `GET` (progress) node-3's drain through `via`'s admin API.
async fn node_3_drain(via: &Node, method: &str) -> confab_proto::admin::DrainView {
    let (status, body) = http_request(
        via.port,
        method,
        "/admin/v1/nodes/node-3/drain",
        Some(&admin_token()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{method} node-3's drain: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_sessions_off_under_load_then_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = cluster(dir.path(), 3).await;
    let urls = nodes.iter().map(Node::ws_url).collect();
    let load = Load::start(urls, &users(24), PAUSE, tokens());
    tokio::time::sleep(TALK).await;

    let (code, stdout, stderr) = confabctl(&nodes[0], &["nodes", "drain", "node-3"]).await;
    assert_eq!(code, 0, "drain failed: {stdout}{stderr}");
    assert!(stdout.contains("node-3 drained"), "{stdout}");
    // At once, the node asked agrees: a script's `drain && nodes` sees it gone.
    let (_, stdout, _) = confabctl(&nodes[0], &["--json", "nodes"]).await;
    let members: NodesView = serde_json::from_str(&stdout).unwrap();
    assert!(
        members.nodes.iter().all(|n| n.id != "node-3"),
        "node-3 is still listed right after its drain: {stdout}"
    );
    let drained = nodes.pop().unwrap();
    load.urls.lock().unwrap().pop();
    let status = drained.wait_exit().await;
    assert!(status.success(), "the drained node exited with {status}");
    tokio::time::sleep(TALK).await;
    let (logs, owners) = finish_and_check(load, &nodes[0], "drain", Duration::ZERO).await;
    assert!(
        owners.values().all(|o| o != "node-3"),
        "a session is still on node-3: {owners:?}"
    );
    // Its clients were told to go elsewhere with 1013 and came back on a member.
    let told = logs
        .iter()
        .filter(|l| l.closes.contains(&Some(1013)))
        .count();
    assert!(told > 0, "no client of node-3 saw 1013: {logs:?}");
    let view = ring(&nodes[0]).await;
    assert_eq!(view.nodes, ["node-1", "node-2"]);
    assert_eq!(view.vnodes.len(), 64);
    let (_, stdout, _) = confabctl(&nodes[1], &["--json", "nodes"]).await;
    let members: NodesView = serde_json::from_str(&stdout).unwrap();
    assert!(
        members.nodes.iter().all(|n| n.id != "node-3"),
        "node-3 is still a member: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_serve_again_on_the_survivors_with_every_acked_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = cluster(dir.path(), 3).await;
    let urls = nodes.iter().map(Node::ws_url).collect();
    let load = Load::start(urls, &users(24), PAUSE, tokens());
    tokio::time::sleep(TALK).await;

    let killed = nodes.remove(1);
    load.urls.lock().unwrap().remove(1);
    let killed_at = tokio::time::Instant::now();
    killed.kill().await;
    for node in &nodes {
        eventually(|| async { ring(node).await.nodes == ["node-1", "node-3"] }).await;
    }
    let detected = killed_at.elapsed();
    tokio::time::sleep(TALK).await;
    // Down is declared within 3 s by default (2 s of silence, a heartbeat
    // period, a compare-and-set); the sessions serve 2 s after that at most.
    assert!(
        detected <= Duration::from_secs(4),
        "node-2 was declared down after {detected:?}"
    );
    let (_, owners) = finish_and_check(load, &nodes[0], "kill", detected).await;
    assert!(owners.values().all(|o| o != "node-2"), "{owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_serves_nothing_and_a_resumed_majority_declares_no_one_down()
 {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster(dir.path(), 3).await;
    let epoch = ring(&nodes[0]).await.epoch;
    let mut client = Client::as_uid(&nodes[0], "lonely").await;
    let (first, _) = client.say("m-1", "hello").await;

    // node-2 and node-3 freeze, their sockets open: node-1 hears one member
    // of three, so it may declare no one down, and it serves nothing.
    nodes[1].pause();
    nodes[2].pause();
    eventually(|| async { http_get(nodes[0].port, "/readyz").await.map(|r| r.0) == Some(503) })
        .await;
    client
        .send(&ClientFrame::Say {
            id: "m-2".into(),
            text: "anyone there?".into(),
        })
        .await;
    let answer = client.recv().await;
    assert!(
        matches!(
            &answer,
            ServerFrame::Error { id: Some(id), code: ErrorCode::Unavailable, .. } if id == "m-2"
        ),
        "a node without the quorum answers unavailable: {answer:?}"
    );
    // Frozen for well past the failure detector's 2 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        ring(&nodes[0]).await.epoch,
        epoch,
        "node-1 declared someone down"
    );

    // Resumed, the two judge by fresh evidence: nobody goes down, the ring
    // keeps its epoch everywhere, and node-1 serves again.
    nodes[1].resume();
    nodes[2].resume();
    eventually(|| async { http_get(nodes[0].port, "/readyz").await.map(|r| r.0) == Some(200) })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        let view = ring(node).await;
        assert_eq!(
            (view.epoch, view.nodes.len()),
            (epoch, 3),
            "a node declared a member down after the pause"
        );
    }
    // m-2 was not recorded: the retry with the same id is the next turn.
    let (ack, _) = client.say("m-2", "anyone there?").await;
    assert_eq!(ack, first + 3);
}

/// A member whose machine is gone for good stays in the table as `down` and
/// is dialled for ever; `confabctl nodes remove` takes it out. A live member
/// is refused (drain it), an unknown one too, and the ring does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_for_good_is_removed_and_a_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = cluster(dir.path(), 3).await;
    let status_of = |stdout: &str, id: &str| -> Option<String> {
        let view: NodesView = serde_json::from_str(stdout).unwrap();
        view.nodes
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| n.status)
    };
    nodes.pop().unwrap().kill().await;
    let first = &nodes[0];
    eventually(|| async {
        let (_, stdout, _) = confabctl(first, &["--json", "nodes"]).await;
        status_of(&stdout, "node-3").as_deref() == Some("down")
    })
    .await;
    let ring_before = ring(first).await;

    let (code, _, stderr) = confabctl(first, &["nodes", "remove", "node-2"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("node-2 is up, not down"), "{stderr}");
    let (code, _, stderr) = confabctl(first, &["nodes", "remove", "node-9"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("node-9 is not a member"), "{stderr}");

    let (code, stdout, stderr) = confabctl(first, &["nodes", "remove", "node-3"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("node-3 removed from the member table"),
        "{stdout}"
    );
    for node in &nodes {
        eventually(|| async {
            let (_, stdout, _) = confabctl(node, &["--json", "nodes"]).await;
            status_of(&stdout, "node-3").is_none() && status_of(&stdout, "node-2").is_some()
        })
        .await;
    }
    assert_eq!(ring(first).await.epoch, ring_before.epoch);
    // Audited as every admin action is.
    let (_, stdout, _) = confabctl(first, &["audit", "list"]).await;
    assert!(stdout.contains("/admin/v1/nodes/node-3"), "{stdout}");
}
