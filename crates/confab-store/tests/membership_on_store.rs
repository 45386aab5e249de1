//! The core's membership machines agreeing through a real store: three nodes on
//! one SQLite file, driven in virtual time, join, agree on one ring, and one of
//! them drains and leaves.

use confab_core::membership::{Input, Membership, MembershipConfig, Output};
use confab_core::{Epoch, NodeId};
use confab_store::membership::MembershipStore;
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use std::collections::BTreeMap;

fn id(n: u32) -> NodeId {
    NodeId::new(format!("n{n}")).unwrap()
}

struct Cluster {
    store: SqliteStore,
    nodes: BTreeMap<NodeId, Membership>,
    rings: BTreeMap<NodeId, (Epoch, Vec<NodeId>)>,
    left: Vec<NodeId>,
}

impl Cluster {
    /// Feeds an input and carries out everything it leads to, at `now`.
    async fn feed(&mut self, now: u64, node: &NodeId, input: Option<Input>) {
        let mut inputs = vec![(node.clone(), input)];
        while let Some((node, input)) = inputs.pop() {
            let machine = self.nodes.get_mut(&node).unwrap();
            match input {
                Some(input) => machine.handle(now, input),
                None => machine.handle_timeout(now),
            }
            while let Some(output) = self.nodes.get_mut(&node).unwrap().poll_output() {
                match output {
                    Output::ReadTable => {
                        let table = self.store.read_members().await.unwrap();
                        inputs.push((node.clone(), Some(Input::TableRead(table))));
                    }
                    Output::Cas { expected, table } => {
                        let done = self.store.cas_members(expected, &table).await.unwrap();
                        let input = Input::CasDone {
                            applied: done.applied,
                            table: done.table,
                        };
                        inputs.push((node.clone(), Some(input)));
                    }
                    Output::Heartbeat { to, epoch } => {
                        if self.nodes.contains_key(&to) {
                            let from = node.clone();
                            inputs.push((to, Some(Input::Heartbeat { from, epoch })));
                        }
                    }
                    Output::RingChanged { epoch, nodes } => {
                        self.rings.insert(node.clone(), (epoch, nodes));
                    }
                    Output::Left => self.left.push(node.clone()),
                }
            }
        }
    }

    async fn run(&mut self, from: u64, to: u64) {
        for now in (from..to).step_by(50) {
            let nodes: Vec<NodeId> = self.nodes.keys().cloned().collect();
            for node in nodes {
                if self.nodes[&node].poll_timeout().is_some_and(|t| t <= now) {
                    self.feed(now, &node, None).await;
                }
            }
        }
    }

    fn agreed(&self) -> Option<(Epoch, Vec<NodeId>)> {
        let first = self.rings.values().next()?.clone();
        (self.rings.len() == self.nodes.len() && self.rings.values().all(|r| *r == first))
            .then_some(first)
    }
}

#[tokio::test]
async fn three_nodes_agree_through_sqlite_and_one_drains_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), &SqliteOptions::default())
        .await
        .unwrap();
    let mut cluster = Cluster {
        store,
        nodes: (1..=3)
            .map(|n| (id(n), Membership::new(id(n), MembershipConfig::default())))
            .collect(),
        rings: BTreeMap::new(),
        left: Vec::new(),
    };
    for n in 1..=3 {
        cluster.feed(0, &id(n), Some(Input::Start)).await;
    }
    cluster.run(0, 3_000).await;
    let (epoch, ring) = cluster.agreed().expect("the three agree");
    assert_eq!(ring, [id(1), id(2), id(3)]);
    assert_eq!(epoch, Epoch(3));

    cluster.feed(3_000, &id(3), Some(Input::Drain)).await;
    cluster.run(3_000, 4_000).await;
    assert_eq!(cluster.agreed().expect("agree").1, [id(1), id(2)]);
    cluster.feed(4_000, &id(3), Some(Input::Drained)).await;
    cluster.run(4_000, 5_000).await;
    assert_eq!(cluster.left, [id(3)]);
    let table = cluster.store.read_members().await.unwrap();
    assert!(!table.members.contains_key(&id(3)));
    assert_eq!(table.ring_nodes(), [id(1), id(2)]);
}
