//! Acked turns survive a clean restart and a SIGKILL; a node carries 1,000
//! concurrent sessions.

mod common;

use common::*;
use confab_proto::{ClientFrame, ServerFrame};
use std::collections::BTreeMap;

#[tokio::test]
async fn turns_survive_a_clean_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "alice").await;
    client.say("m-1", "这款鞋有货吗").await;
    client.say("m-2", "39码").await;
    let (_, before) = client.say("m-3", "黑色").await;
    drop(client);
    node.stop().await;

    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "alice").await;
    assert_eq!(client.last_seq(), 9);
    // The slots came back: the dialog goes on where it was.
    let (ack, reply) = client.say("m-4", "还有白色的吗").await;
    assert_eq!(ack, 10);
    let ServerFrame::Reply { slots, .. } = &reply else {
        unreachable!()
    };
    assert_eq!(slots.get("size").map(String::as_str), Some("39"));
    // A repeat of an old id is still recognised.
    let (ack, again) = client.say("m-3", "黑色").await;
    assert_eq!(ack, 7);
    assert_eq!(again, before);
}

#[tokio::test]
async fn every_acked_turn_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "bob").await;
    // Many turns in flight; the node dies right after the fifth ack.
    for i in 0..20 {
        client
            .send(&ClientFrame::Say {
                id: format!("m-{i}"),
                text: format!("{} 码", 35 + i % 10),
            })
            .await;
    }
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    while acked.len() < 5 {
        if let ServerFrame::Ack { id, seq } = client.recv().await {
            acked.insert(id, seq);
        }
    }
    node.kill().await;
    drop(client);

    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "bob").await;
    assert!(
        client.last_seq() >= 15,
        "five turns were acked: {}",
        client.last_seq()
    );
    assert_eq!(client.last_seq() % 3, 0, "no turn is half recorded");
    client.send(&ClientFrame::Resume { after_seq: 0 }).await;
    let mut replied = BTreeMap::new();
    for _ in 0..client.last_seq() / 3 {
        if let ServerFrame::Reply { id, seq, .. } = client.recv().await {
            replied.insert(id, seq);
        }
    }
    for (id, seq) in &acked {
        assert_eq!(
            replied.get(id),
            Some(&(seq + 2)),
            "acked turn {id} lost its reply"
        );
        // Sending it again does not make a second turn.
        let (again, _) = client.say(id, "again").await;
        assert_eq!(again, *seq);
    }
}

#[tokio::test]
async fn a_thousand_concurrent_sessions_are_all_acked_and_replied() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let url = node.ws_url();
    let sessions: Vec<_> = (0..1000)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(&url, &token(&format!("user-{i}")))
                    .await
                    .unwrap();
                let (first, _) = client.say("m-1", "有货吗").await;
                let (second, reply) = client.say("m-2", &format!("{}码 黑色", 35 + i % 10)).await;
                assert_eq!((first, second), (1, 4));
                match reply {
                    ServerFrame::Reply { intent, .. } => assert_eq!(intent, "stock_query"),
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    for session in sessions {
        session.await.unwrap();
    }
    let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("confab_turns_total{outcome=\"ok\"} 2000"),
        "every turn counted ok:\n{metrics}"
    );
}

#[tokio::test]
async fn two_node_processes_share_one_data_dir_safely() {
    let dir = tempfile::tempdir().unwrap();
    // Two ids: a second node with a live node's id is refused.
    let one = Node::start(dir.path()).await;
    let two = Node::start_with(dir.path(), &[("CONFAB_NODE__ID", "node-2")]).await;
    // Different users on each process, writing at the same time.
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let url = if i % 2 == 0 {
                one.ws_url()
            } else {
                two.ws_url()
            };
            tokio::spawn(async move {
                let mut client = Client::connect(&url, &token(&format!("shared-{i}")))
                    .await
                    .unwrap();
                for t in 1..=5 {
                    let (ack, _) = client.say(&format!("m-{t}"), "有货吗").await;
                    assert_eq!(ack, 1 + 3 * (t - 1));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    one.stop().await;
    two.stop().await;
    // Everything either process acked is in the shared store.
    let node = Node::start(dir.path()).await;
    for i in 0..40 {
        let client = Client::as_uid(&node, &format!("shared-{i}")).await;
        assert_eq!(client.last_seq(), 15, "shared-{i}");
    }
}
