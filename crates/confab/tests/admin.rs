//! The ring and membership views through the admin API and `confabctl`, on a
//! real node: what ops read before and after the cluster grows.

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_proto::admin::{NodesView, RingView, SessionLocation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_nodes_and_locate_agree_with_where_sessions_live() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;

    let (code, stdout, stderr) = confabctl(&node, &["--json", "ring"]).await;
    assert_eq!(code, 0, "{stderr}");
    let ring: RingView = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (ring.epoch, ring.nodes.as_slice()),
        (1, &["node-1".to_owned()][..])
    );
    assert_eq!(ring.vnodes.len(), 32, "32 virtual nodes per member");
    assert!(
        ring.vnodes
            .windows(2)
            .all(|w| w[0].position < w[1].position),
        "ring order"
    );
    let mut indexes: Vec<u32> = ring.vnodes.iter().map(|v| v.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..32).collect::<Vec<_>>());

    let (code, stdout, _) = confabctl(&node, &["--json", "nodes"]).await;
    assert_eq!(code, 0);
    let nodes: NodesView = serde_json::from_str(&stdout).unwrap();
    assert_eq!(nodes.nodes.len(), 1);
    assert!(nodes.nodes[0].this_node && nodes.nodes[0].status == "up");

    let (code, stdout, _) = confabctl(&node, &["--json", "session", "locate", "alice"]).await;
    assert_eq!(code, 0);
    let at: SessionLocation = serde_json::from_str(&stdout).unwrap();
    assert!(
        ring.vnodes.contains(&at.vnode),
        "{at:?} is a vnode of the ring"
    );
    // The first vnode at or after the uid's hash owns it: the located one is on the ring.
    let client = Client::as_uid(&node, "alice").await;
    let ServerFrame::Hello { node: owner, .. } = &client.hello else {
        unreachable!()
    };
    assert_eq!(&at.owner, owner, "hello names the owner that locate finds");

    let (code, human, _) = confabctl(&node, &["ring"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        human.lines().filter(|l| l.contains("node-1")).count(),
        33,
        "{human}"
    );
    let (code, _, stderr) =
        confabctl(&node, &["session", "locate", "bad uid with spaces\u{7}"]).await;
    assert_eq!(code, 1, "{stderr}");
}

#[tokio::test]
async fn every_admin_action_is_in_the_audit_log_with_who_what_when_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let started = now_s() * 1000;
    let (code, _, err) = confabctl(&node, &["keys", "rotate"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = confabctl(&node, &["canary", "set", "v9", "--tails", "0"]).await;
    assert_ne!(code, 0, "v9 is not loaded");
    // Without a token: refused and only counted (anyone could send those). With a
    // chat token: refused, and recorded.
    let (status, _) = http_request(node.port, "POST", "/admin/v1/keys/rotate", None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let chat = token("mallory");
    let (status, _) = http_request(
        node.port,
        "POST",
        "/admin/v1/keys/rotate",
        Some(&chat),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    // Reads are not actions.
    let (code, _, _) = confabctl(&node, &["keys", "status"]).await;
    assert_eq!(code, 0);

    let (code, out, err) = confabctl(&node, &["--json", "audit", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = list["entries"].as_array().unwrap();
    let summary: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            assert!(e["at_ms"].as_u64().unwrap() >= started - 1000);
            assert!(e["node"].as_str().unwrap().starts_with("node-"));
            (
                e["who"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("mallory".into(), "POST /admin/v1/keys/rotate".into(), 403),
            ("ops".into(), "PUT /admin/v1/canary".into(), 400),
            ("ops".into(), "POST /admin/v1/keys/rotate".into(), 200),
        ],
        "newest first: {out}"
    );
    assert_eq!(entries[2]["result"], "ok");
    assert!(
        entries[1]["result"].as_str().unwrap().contains("v9"),
        "the refusal says why: {out}"
    );
    // The table names the same.
    let (code, table, _) = confabctl(&node, &["audit", "list", "--limit", "2"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("mallory") && table.lines().count() == 3,
        "{table}"
    );
}
