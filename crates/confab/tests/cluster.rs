//! Three `confab node` processes on one embedded store form one cluster: any
//! node serves any user, and the session's owner does not depend on the node
//! the socket landed on.

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_proto::admin::NodesView;

async fn members_up(node: &Node) -> usize {
    let (code, stdout, _) = confabctl(node, &["--json", "nodes"]).await;
    if code != 0 {
        return 0;
    }
    let view: NodesView = serde_json::from_str(&stdout).unwrap();
    view.nodes
        .iter()
        .filter(|n| n.status == "up" && n.connected)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_user_and_the_owner_is_the_same_from_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let seed_port = free_port();
    let seed = format!("127.0.0.1:{seed_port}");
    let mut nodes = vec![
        Node::start_member(
            dir.path(),
            &[],
            &[
                "--node-id",
                "node-1",
                "--cluster-port",
                &seed_port.to_string(),
            ],
        )
        .await,
    ];
    for id in ["node-2", "node-3"] {
        nodes.push(Node::start_member(dir.path(), &[], &["--node-id", id, "--seeds", &seed]).await);
    }
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + WAIT;
        while members_up(node).await < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster never formed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
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
