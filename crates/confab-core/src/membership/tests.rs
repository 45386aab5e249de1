use super::*;
use crate::test_rng::TestRng;
use proptest::prelude::*;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

fn id(n: u32) -> NodeId {
    NodeId::new(format!("n{n}")).unwrap()
}

/// A ring as a node announced it.
type Announced = (Epoch, Vec<NodeId>);

/// A tiny deterministic world for membership alone: one shared table with
/// compare-and-set, nodes that can die and come back, and a network whose delay
/// and loss come from a seed.
struct World {
    now: u64,
    table: MemberTable,
    nodes: BTreeMap<NodeId, Membership>,
    alive: BTreeSet<NodeId>,
    /// (deliver at, sequence, to, input)
    pending: BinaryHeap<Reverse<(u64, u64, NodeId, Delivery)>>,
    sequence: u64,
    rng: TestRng,
    /// Percent of heartbeats lost, and the most a message is delayed (ms).
    loss_percent: u64,
    delay_max_ms: u64,
    /// Every ring each incarnation of a node announced, in order (a restarted
    /// node starts with no memory, so it announces afresh).
    rings: BTreeMap<(NodeId, u32), Vec<Announced>>,
    incarnation: BTreeMap<NodeId, u32>,
    left: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Delivery {
    Read,
    Cas(u64, Vec<(NodeId, Status)>, u64, u64),
    Heartbeat(NodeId, u64),
}

impl World {
    fn new(seed: u64, n: u32) -> Self {
        let config = MembershipConfig::default();
        let nodes = (1..=n)
            .map(|i| (id(i), Membership::new(id(i), config.clone())))
            .collect();
        Self {
            now: 0,
            table: MemberTable::default(),
            nodes,
            alive: (1..=n).map(id).collect(),
            pending: BinaryHeap::new(),
            sequence: 0,
            rng: TestRng::new(seed),
            loss_percent: 0,
            delay_max_ms: 20,
            rings: BTreeMap::new(),
            incarnation: BTreeMap::new(),
            left: BTreeSet::new(),
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        self.rng.below(below)
    }

    fn send(&mut self, to: NodeId, what: Delivery) {
        let at = self.now + 1 + self.random(self.delay_max_ms);
        self.sequence += 1;
        self.pending.push(Reverse((at, self.sequence, to, what)));
    }

    fn start(&mut self, node: &NodeId) {
        let now = self.now;
        self.nodes.get_mut(node).unwrap().handle(now, Input::Start);
        self.flush(node);
    }

    fn input(&mut self, node: &NodeId, input: Input) {
        let now = self.now;
        self.nodes.get_mut(node).unwrap().handle(now, input);
        self.flush(node);
    }

    /// Carries out a node's outputs.
    fn flush(&mut self, node: &NodeId) {
        while let Some(output) = self.nodes.get_mut(node).unwrap().poll_output() {
            match output {
                Output::ReadTable => self.send(node.clone(), Delivery::Read),
                Output::Cas { expected, table } => {
                    let members = table.members.into_iter().collect();
                    self.send(
                        node.clone(),
                        Delivery::Cas(expected, members, table.version, table.epoch.0),
                    );
                }
                Output::Heartbeat { to, epoch } => {
                    if self.random(100) >= self.loss_percent {
                        self.send(to, Delivery::Heartbeat(node.clone(), epoch.0));
                    }
                }
                Output::RingChanged { epoch, nodes } => {
                    let key = (node.clone(), self.incarnation_of(node));
                    self.rings.entry(key).or_default().push((epoch, nodes));
                }
                Output::Left => {
                    self.left.insert(node.clone());
                }
            }
        }
    }

    /// Runs until `until` (ms), checking the safety properties at every step.
    fn run_until(&mut self, until: u64) {
        loop {
            let next_timer = self
                .alive
                .iter()
                .filter_map(|n| self.nodes[n].poll_timeout())
                .min();
            let next_message = self.pending.peek().map(|Reverse((at, ..))| *at);
            let next = match (next_timer, next_message) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(until),
            }
            .max(self.now);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_message == Some(next) {
                let Reverse((_, _, to, what)) = self.pending.pop().unwrap();
                if !self.alive.contains(&to) {
                    continue;
                }
                // Only the requester's process sees the store's answer; a dead
                // requester's compare-and-set still happens (it was sent).
                let input = match what {
                    Delivery::Read => Input::TableRead(self.table.clone()),
                    Delivery::Cas(expected, members, version, epoch) => {
                        let applied = expected == self.table.version;
                        if applied {
                            self.table = MemberTable {
                                version,
                                epoch: Epoch(epoch),
                                members: members.into_iter().collect(),
                            };
                        }
                        Input::CasDone {
                            applied,
                            table: self.table.clone(),
                        }
                    }
                    Delivery::Heartbeat(from, epoch) => Input::Heartbeat {
                        from,
                        epoch: Epoch(epoch),
                    },
                };
                self.input(&to, input);
            } else {
                // Due now, or overdue: an input (a heartbeat that brings the
                // quorum back) may leave a deadline already past, which means
                // "act at once".
                let due: Vec<NodeId> = self
                    .alive
                    .iter()
                    .filter(|n| self.nodes[*n].poll_timeout().is_some_and(|t| t <= next))
                    .cloned()
                    .collect();
                for node in due {
                    self.nodes.get_mut(&node).unwrap().handle_timeout(next);
                    self.flush(&node);
                    let after = self.nodes[&node].poll_timeout();
                    assert!(
                        after.is_none_or(|t| t > next),
                        "{node}: a timer due at {next} did not move ({after:?})"
                    );
                }
            }
            self.check_safety();
        }
    }

    /// Epochs never go back in what a node announces, and one epoch always means
    /// one ring, whoever announced it.
    fn check_safety(&self) {
        let mut ring_of: BTreeMap<Epoch, &Vec<NodeId>> = BTreeMap::new();
        for (node, rings) in &self.rings {
            for pair in rings.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{node:?} announced {pair:?}");
            }
            for (epoch, nodes) in rings {
                let seen = ring_of.entry(*epoch).or_insert(nodes);
                assert_eq!(*seen, nodes, "two rings at epoch {epoch:?}");
            }
        }
    }

    fn incarnation_of(&self, node: &NodeId) -> u32 {
        self.incarnation.get(node).copied().unwrap_or(0)
    }

    fn kill(&mut self, node: &NodeId) {
        self.alive.remove(node);
    }

    fn revive(&mut self, node: &NodeId) {
        self.alive.insert(node.clone());
        *self.incarnation.entry(node.clone()).or_default() += 1;
        let config = MembershipConfig::default();
        // Memory is lost: a fresh machine that joins again.
        self.nodes
            .insert(node.clone(), Membership::new(node.clone(), config));
        self.start(node);
    }

    /// Every living node's adopted ring, and the table's.
    fn agreed(&self) -> Option<(Epoch, Vec<NodeId>)> {
        let table = (self.table.epoch, self.table.ring_nodes());
        self.alive
            .iter()
            .filter(|n| !self.left.contains(*n))
            .all(|n| {
                let key = (n.clone(), self.incarnation_of(n));
                self.rings.get(&key).and_then(|r| r.last()) == Some(&table)
            })
            .then_some(table)
    }
}

fn nodes(ids: &[u32]) -> Vec<NodeId> {
    ids.iter().copied().map(id).collect()
}

#[test]
fn three_nodes_join_and_agree_on_one_ring() {
    let mut world = World::new(7, 3);
    for n in 1..=3 {
        world.start(&id(n));
    }
    world.run_until(5_000);
    let (epoch, ring) = world.agreed().expect("all agree");
    assert_eq!(ring, nodes(&[1, 2, 3]));
    assert_eq!(epoch, Epoch(3), "one epoch per node that came up");
    for n in 1..=3 {
        assert_eq!(world.nodes[&id(n)].status(), Some(Status::Up));
    }
}

#[test]
fn a_dead_node_is_declared_down_within_three_seconds() {
    let mut world = World::new(11, 3);
    for n in 1..=3 {
        world.start(&id(n));
    }
    world.run_until(5_000);
    world.kill(&id(2));
    let killed_at = world.now;
    let mut down_at = None;
    while world.now < killed_at + 10_000 {
        world.run_until(world.now + 50);
        if world.table.members.get(&id(2)) == Some(&Status::Down) {
            down_at = Some(world.now);
            break;
        }
    }
    let down_at = down_at.expect("n2 declared down");
    assert!(
        down_at - killed_at <= 3_000,
        "took {} ms",
        down_at - killed_at
    );
    world.run_until(world.now + 2_000);
    let (_, ring) = world.agreed().expect("survivors agree");
    assert_eq!(ring, nodes(&[1, 3]));
}

#[test]
fn a_drained_node_leaves_the_ring_then_the_table() {
    let mut world = World::new(3, 3);
    for n in 1..=3 {
        world.start(&id(n));
    }
    world.run_until(5_000);
    world.input(&id(3), Input::Drain);
    world.run_until(6_000);
    assert_eq!(world.table.members.get(&id(3)), Some(&Status::Draining));
    assert_eq!(world.agreed().expect("agree").1, nodes(&[1, 2]));
    assert!(
        world.left.is_empty(),
        "it stays until its sessions are gone"
    );
    world.input(&id(3), Input::Drained);
    world.run_until(7_000);
    assert!(!world.table.members.contains_key(&id(3)));
    assert!(world.left.contains(&id(3)));
    // Its peers do not declare it down: it is gone from the table.
    world.kill(&id(3));
    world.run_until(12_000);
    assert_eq!(world.agreed().expect("agree").1, nodes(&[1, 2]));
}

#[test]
fn a_node_declared_down_joins_again_when_it_comes_back() {
    let mut world = World::new(5, 3);
    for n in 1..=3 {
        world.start(&id(n));
    }
    world.run_until(5_000);
    world.kill(&id(1));
    world.run_until(10_000);
    assert_eq!(world.table.members.get(&id(1)), Some(&Status::Down));
    let epoch_down = world.table.epoch;
    world.revive(&id(1));
    world.run_until(15_000);
    let (epoch, ring) = world.agreed().expect("agree");
    assert_eq!(ring, nodes(&[1, 2, 3]));
    assert_eq!(epoch, Epoch(epoch_down.0 + 1));
}

#[test]
fn an_operator_removes_a_member_only_while_it_is_down() {
    let mut world = World::new(13, 3);
    for n in 1..=3 {
        world.start(&id(n));
    }
    world.run_until(5_000);
    // Up members stay: the machine takes the request only for a down one.
    world.input(&id(1), Input::Remove(id(2)));
    world.run_until(6_000);
    assert_eq!(world.table.members.get(&id(2)), Some(&Status::Up));

    world.kill(&id(3));
    world.run_until(10_000);
    assert_eq!(world.table.members.get(&id(3)), Some(&Status::Down));
    let epoch = world.table.epoch;
    world.input(&id(1), Input::Remove(id(3)));
    world.run_until(11_000);
    assert!(
        !world.table.members.contains_key(&id(3)),
        "{:?}",
        world.table
    );
    assert_eq!(world.table.epoch, epoch, "the ring did not change");
    assert_eq!(world.agreed().expect("agree").1, nodes(&[1, 2]));

    // It comes back after all: it joins again, as a new member.
    world.revive(&id(3));
    world.run_until(16_000);
    assert_eq!(world.agreed().expect("agree").1, nodes(&[1, 2, 3]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the delays, losses and crashes, no two rings share an epoch and
    /// epochs only rise (checked at every step); once the faults stop, every
    /// living node agrees on a ring of exactly the living nodes.
    #[test]
    fn membership_converges_after_any_fault_schedule(
        seed in any::<u64>(),
        loss in 0u64..40,
        delay in 1u64..400,
        crashes in proptest::collection::vec((1u32..=4, 0u64..8_000), 0..4),
    ) {
        let mut world = World::new(seed, 4);
        world.loss_percent = loss;
        world.delay_max_ms = delay;
        for n in 1..=4 {
            world.start(&id(n));
        }
        let mut crashes = crashes;
        crashes.sort_by_key(|(_, at)| *at);
        for (node, at) in crashes {
            world.run_until(at.max(world.now));
            if world.alive.contains(&id(node)) {
                world.kill(&id(node));
            } else {
                world.revive(&id(node));
            }
        }
        world.run_until(world.now.max(8_000));
        // The faults stop: no loss, short delays, every dead node comes back.
        world.loss_percent = 0;
        world.delay_max_ms = 20;
        for n in 1..=4 {
            if !world.alive.contains(&id(n)) {
                world.revive(&id(n));
            }
        }
        world.run_until(world.now + 20_000);
        let agreed = world.agreed();
        prop_assert!(agreed.is_some(), "no agreement: table {:?}", world.table);
        prop_assert_eq!(agreed.unwrap().1, nodes(&[1, 2, 3, 4]));
    }
}

#[test]
fn a_refresh_reads_the_table_at_once_unless_a_read_is_in_flight() {
    let mut m = Membership::new(id(1), MembershipConfig::default());
    m.handle(0, Input::Refresh);
    assert_eq!(
        m.poll_output(),
        None,
        "a node that has not started reads nothing"
    );
    m.handle(0, Input::Start);
    assert_eq!(m.poll_output(), Some(Output::ReadTable));
    m.handle(5, Input::Refresh);
    assert_eq!(m.poll_output(), None, "the read in flight answers it");
    m.handle(6, Input::TableRead(MemberTable::default()));
    while m.poll_output().is_some() {}
    m.handle(7, Input::StoreFailed);
    m.handle(8, Input::Refresh);
    assert_eq!(m.poll_output(), Some(Output::ReadTable));
}

#[test]
fn news_of_a_newer_epoch_during_a_read_is_read_again_after_it() {
    let up = MemberTable::default()
        .with(&id(1), Some(Status::Joining))
        .with(&id(1), Some(Status::Up));
    let mut m = Membership::new(id(1), MembershipConfig::default());
    m.handle(0, Input::Start);
    assert_eq!(m.poll_output(), Some(Output::ReadTable));
    // A heartbeat tells of epoch 2 while the read is in flight; the read's
    // answer predates epoch 2.
    m.handle(
        1,
        Input::Heartbeat {
            from: id(2),
            epoch: Epoch(2),
        },
    );
    assert_eq!(m.poll_output(), None, "one request at a time");
    m.handle(2, Input::TableRead(up));
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        matches!(
            outputs.as_slice(),
            [
                Output::RingChanged {
                    epoch: Epoch(1),
                    ..
                },
                Output::ReadTable
            ]
        ),
        "{outputs:?}"
    );
}

#[test]
fn a_member_declared_down_still_gets_heartbeats_to_learn_it_must_rejoin() {
    let table = MemberTable::default()
        .with(&id(1), Some(Status::Up))
        .with(&id(2), Some(Status::Down));
    let mut m = Membership::new(id(1), MembershipConfig::default());
    m.handle(0, Input::Start);
    m.handle(1, Input::TableRead(table));
    while m.poll_output().is_some() {}
    m.handle_timeout(600);
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Heartbeat { to, .. } if *to == id(2))),
        "{outputs:?}"
    );
}

#[test]
fn a_node_declared_down_can_still_be_drained_and_leave() {
    let table = MemberTable::default()
        .with(&id(1), Some(Status::Joining))
        .with(&id(1), Some(Status::Up))
        .with(&id(2), Some(Status::Joining))
        .with(&id(2), Some(Status::Up))
        .with(&id(2), Some(Status::Down));
    let mut m = Membership::new(id(2), MembershipConfig::default());
    m.handle(0, Input::Start);
    assert_eq!(m.poll_output(), Some(Output::ReadTable));
    m.handle(1, Input::Drain); // before the table is read: nothing to propose yet
    m.handle(2, Input::TableRead(table.clone()));
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    let proposed = outputs.iter().find_map(|o| match o {
        Output::Cas { table, .. } => table.members.get(&id(2)).copied(),
        _ => None,
    });
    assert_eq!(proposed, Some(Status::Draining), "{outputs:?}");
    let draining = table.with(&id(2), Some(Status::Draining));
    m.handle(
        3,
        Input::CasDone {
            applied: true,
            table: draining,
        },
    );
    while m.poll_output().is_some() {}
    m.handle(4, Input::Drained);
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    let Some(Output::Cas { table: gone, .. }) =
        outputs.iter().find(|o| matches!(o, Output::Cas { .. }))
    else {
        panic!("no proposal to leave: {outputs:?}");
    };
    assert!(!gone.members.contains_key(&id(2)));
    m.handle(
        5,
        Input::CasDone {
            applied: true,
            table: gone.clone(),
        },
    );
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(outputs.contains(&Output::Left), "{outputs:?}");
}

#[test]
fn a_joining_node_goes_up_only_once_it_hears_every_member_that_is_up() {
    let joining = MemberTable::default()
        .with(&id(1), Some(Status::Joining))
        .with(&id(1), Some(Status::Up))
        .with(&id(2), Some(Status::Joining));
    let mut m = Membership::new(id(2), MembershipConfig::default());
    m.handle(0, Input::Start);
    assert_eq!(m.poll_output(), Some(Output::ReadTable));
    m.handle(1, Input::TableRead(joining.clone()));
    let proposes_up = |outputs: &[Output]| {
        outputs.iter().any(|o| {
            matches!(o, Output::Cas { table, .. } if table.members.get(&id(2)) == Some(&Status::Up))
        })
    };
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(!proposes_up(&outputs), "up without hearing n1: {outputs:?}");
    // Still nothing heard, past refreshes: it stays joining.
    for now in (100..3_000).step_by(100) {
        m.handle_timeout(now);
        let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        assert!(!proposes_up(&outputs), "at {now}: {outputs:?}");
        if outputs.contains(&Output::ReadTable) {
            m.handle(now, Input::TableRead(joining.clone()));
            while m.poll_output().is_some() {}
        }
    }
    // n1's heartbeat arrives: the next decision proposes up.
    m.handle(
        3_000,
        Input::Heartbeat {
            from: id(1),
            epoch: Epoch(1),
        },
    );
    let mut outputs = vec![];
    for now in (3_000..5_000).step_by(100) {
        m.handle_timeout(now);
        let step: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        if step.contains(&Output::ReadTable) {
            m.handle(now, Input::TableRead(joining.clone()));
            outputs.extend(std::iter::from_fn(|| m.poll_output()));
        }
        outputs.extend(step);
        if proposes_up(&outputs) {
            break;
        }
    }
    assert!(proposes_up(&outputs), "{outputs:?}");
}

#[test]
fn a_node_cut_off_from_the_majority_declares_no_one_down_and_does_not_serve() {
    let five = (1..=5).fold(MemberTable::default(), |t, n| {
        t.with(&id(n), Some(Status::Joining))
            .with(&id(n), Some(Status::Up))
    });
    let config = MembershipConfig::default();
    let mut m = Membership::new(id(3), config.clone());
    m.handle(0, Input::Start);
    m.handle(1, Input::TableRead(five));
    while m.poll_output().is_some() {}
    // It hears n4 only: 2 of 5 with itself.
    let quiet = config.down_after_ms * 3;
    let mut now = 2;
    while now < quiet {
        m.handle(
            now,
            Input::Heartbeat {
                from: id(4),
                epoch: Epoch(5),
            },
        );
        m.handle_timeout(now);
        let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
        assert!(
            !outputs.iter().any(|o| matches!(o, Output::Cas { .. })),
            "a minority proposed a change at {now}: {outputs:?}"
        );
        let next = m.poll_timeout().expect("a running machine has a timeout");
        assert!(
            next > now,
            "no busy loop: the next timeout {next} is not after {now}"
        );
        now += 100;
    }
    assert!(!m.has_quorum(now) && !m.serving(now));
    // n1 and n5 are heard again: the majority (3 of 5), and it serves.
    for n in [1, 5] {
        m.handle(
            now,
            Input::Heartbeat {
                from: id(n),
                epoch: Epoch(5),
            },
        );
    }
    assert!(m.has_quorum(now) && m.serving(now));
}

#[test]
fn half_of_the_members_decide_only_with_the_lowest_among_them() {
    let four = (1..=4).fold(MemberTable::default(), |t, n| {
        t.with(&id(n), Some(Status::Joining))
            .with(&id(n), Some(Status::Up))
    });
    for (me, other, quorum) in [(1, 2, true), (3, 4, false)] {
        let mut m = Membership::new(id(me), MembershipConfig::default());
        m.handle(0, Input::Start);
        m.handle(1, Input::TableRead(four.clone()));
        m.handle(
            2,
            Input::Heartbeat {
                from: id(other),
                epoch: Epoch(4),
            },
        );
        assert_eq!(m.has_quorum(3), quorum, "n{me} hearing n{other}");
    }
}

/// Three members, all up.
fn three_up() -> MemberTable {
    (1..=3).fold(MemberTable::default(), |t, n| {
        t.with(&id(n), Some(Status::Joining))
            .with(&id(n), Some(Status::Up))
    })
}

/// Carries out `m`'s outputs at `now`: reads answered at once with `table`;
/// the proposals it made, returned.
fn proposals(m: &mut Membership, table: &MemberTable, now: u64) -> Vec<MemberTable> {
    let mut proposals = vec![];
    while let Some(output) = m.poll_output() {
        match output {
            Output::ReadTable => m.handle(now, Input::TableRead(table.clone())),
            Output::Cas { table, .. } => proposals.push(table),
            _ => {}
        }
    }
    proposals
}

/// A heartbeat of `n` reaches `m` at `at`.
fn beat(m: &mut Membership, at: u64, n: u32) {
    m.handle(
        at,
        Input::Heartbeat {
            from: id(n),
            epoch: Epoch(3),
        },
    );
}

#[test]
fn a_node_left_alone_when_two_of_three_freeze_together_declares_no_one_down() {
    // The real-process test's race: n2 and n3 freeze at the same moment,
    // their last heartbeats 400 ms apart. When n3's silence reaches
    // down_after_ms, n2's is 1.6 s: it must no longer count toward n1's
    // quorum, or n1 declares n3 down, then n2 (half, with the lowest).
    let three = three_up();
    let config = MembershipConfig::default();
    let mut m = Membership::new(id(1), config.clone());
    m.handle(0, Input::Start);
    proposals(&mut m, &three, 0);
    let mut now = 2;
    while now < 3_000 {
        beat(&mut m, now, 2);
        beat(&mut m, now, 3);
        m.handle_timeout(now);
        assert_eq!(proposals(&mut m, &three, now), [], "all three heard");
        now += 100;
    }
    // n3's last heartbeat at 2,902 ms, n2's at 3,300; both then freeze.
    beat(&mut m, 3_300, 2);
    let mut now = 3_300;
    while now < 3_300 + config.down_after_ms * 4 {
        m.handle_timeout(now);
        let made = proposals(&mut m, &three, now);
        assert_eq!(made, [], "n1, alone, proposed a change at {now}");
        now += 50;
    }
    assert!(!m.serving(now), "alone, n1 serves nothing");
}

#[test]
fn a_node_that_regains_the_quorum_gives_the_members_still_silent_a_fresh_grace() {
    // n1 alone while n2 and n3 were frozen for 4 s; both resume, n2's
    // heartbeat arrives first. n3, silent for 4 s, is not declared down at
    // once: it gets down_after_ms from the moment n1 could decide again.
    let three = three_up();
    let mut m = Membership::new(id(1), MembershipConfig::default());
    m.handle(0, Input::Start);
    proposals(&mut m, &three, 0);
    for n in [2, 3] {
        beat(&mut m, 1, n);
    }
    let mut now = 1;
    while now < 4_000 {
        m.handle_timeout(now);
        assert_eq!(proposals(&mut m, &three, now), []);
        now += 50;
    }
    // n2 is heard again; n3 only 300 ms later.
    beat(&mut m, 4_000, 2);
    let mut now = 4_000;
    while now < 4_300 {
        m.handle_timeout(now);
        assert_eq!(
            proposals(&mut m, &three, now),
            [],
            "n3 declared down at {now}"
        );
        beat(&mut m, now, 2);
        now += 50;
    }
    beat(&mut m, 4_300, 3);
    assert!(m.serving(4_300));
}

#[test]
fn a_member_is_heard_only_within_the_quorum_window() {
    // What a forward is judged by: a heartbeat within half of down_after_ms,
    // not an open socket.
    let three = three_up();
    let config = MembershipConfig::default();
    let window = config.down_after_ms / 2;
    let mut m = Membership::new(id(1), config);
    m.handle(0, Input::Start);
    proposals(&mut m, &three, 0);
    assert!(m.hears(&id(1), 0), "a node always hears itself");
    assert!(!m.hears(&id(2), 0), "never heard");
    beat(&mut m, 100, 2);
    assert!(m.hears(&id(2), 100));
    assert!(m.hears(&id(2), 100 + window - 1));
    assert!(
        !m.hears(&id(2), 100 + window),
        "silent for the whole window"
    );
    assert!(!m.hears(&id(3), 100 + window));
}

#[test]
fn a_node_that_slept_gives_the_members_a_grace_as_long_as_its_sleep() {
    // n1 hears n2 and n3 until 1,000 ms, then its whole host freezes for
    // 5 s. On resuming, n3 is heard at once (its link came back first), n2
    // only after 4 s more, as a TCP retransmission backoff can hold it: n2
    // must not be declared down meanwhile, and is, once silent past the grace.
    let three = three_up();
    let config = MembershipConfig::default();
    let mut m = Membership::new(id(1), config.clone());
    m.handle(0, Input::Start);
    proposals(&mut m, &three, 0);
    let mut now = 1;
    while now <= 1_000 {
        beat(&mut m, now, 2);
        beat(&mut m, now, 3);
        m.handle_timeout(now);
        assert_eq!(proposals(&mut m, &three, now), []);
        now += 100;
    }
    let resumed = 6_001;
    let mut now = resumed;
    while now < resumed + 4_000 {
        beat(&mut m, now, 3);
        m.handle_timeout(now);
        assert_eq!(
            proposals(&mut m, &three, now),
            [],
            "n2 declared down at {now}"
        );
        now += 50;
    }
    // Silent for the whole grace (the 5 s slept): declared down.
    let mut declared = None;
    while now < resumed + 5_000 + config.down_after_ms && declared.is_none() {
        beat(&mut m, now, 3);
        m.handle_timeout(now);
        declared = proposals(&mut m, &three, now)
            .into_iter()
            .find(|t| t.members.get(&id(2)) == Some(&Status::Down))
            .map(|_| now);
        now += 50;
    }
    let at = declared.expect("n2, silent past the grace, is declared down");
    assert!(
        at >= resumed + 5_000,
        "declared at {at}, before the grace ran out"
    );
}
