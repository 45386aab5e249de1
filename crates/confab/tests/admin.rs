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
