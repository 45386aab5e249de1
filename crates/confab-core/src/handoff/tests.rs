use super::*;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn config() -> HandoffConfig {
    HandoffConfig {
        buffer_max: 3,
        timeout_ms: 1_000,
    }
}

type Own = Ownership<u32>;

fn ring(epoch: u64, owner: &str) -> Input<u32> {
    Input::RingChanged {
        epoch: Epoch(epoch),
        owner: id(owner),
    }
}

fn claim(epoch: u64, from_state: bool) -> Action<u32> {
    Action::Claim {
        epoch: Epoch(epoch),
        from_state,
    }
}

fn forward(to: &str, turn: u32) -> Action<u32> {
    Action::Forward { to: id(to), turn }
}

#[test]
fn an_active_session_serves_one_turn_at_a_time_in_order() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(0, Input::Turn(2)).is_empty(), "waits for turn 1");
    assert!(a.handle(0, Input::Turn(3)).is_empty());
    assert_eq!(a.handle(5, Input::Served), [Action::Serve(2)]);
    assert_eq!(a.handle(6, Input::Served), [Action::Serve(3)]);
    assert!(a.handle(7, Input::Served).is_empty());
}

#[test]
fn the_old_owner_sends_its_state_after_the_turn_in_flight_then_forwards_its_buffer() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(1, ring(2, "b")).is_empty(), "turn 1 is in flight");
    assert!(a.handle(2, Input::Turn(2)).is_empty(), "buffered");
    assert_eq!(
        a.handle(3, Input::Served),
        [Action::SendState {
            to: id("b"),
            epoch: Epoch(2)
        }]
    );
    assert!(a.handle(4, Input::Turn(3)).is_empty());
    assert_eq!(
        a.handle(5, Input::StateAcked),
        [forward("b", 2), forward("b", 3), Action::Released]
    );
    assert_eq!(a.handle(6, Input::Turn(4)), [forward("b", 4)]);
}

#[test]
fn the_new_owner_buffers_until_the_state_is_claimed_and_loaded() {
    let mut b = Own::awaiting(id("b"), Epoch(2), 0, config());
    assert!(b.handle(1, Input::Turn(7)).is_empty());
    assert_eq!(b.handle(2, Input::StateArrived), [claim(2, true)]);
    assert!(b.handle(3, Input::Turn(8)).is_empty());
    assert_eq!(b.handle(4, Input::Loaded), [Action::Serve(7)]);
    assert_eq!(b.handle(5, Input::Served), [Action::Serve(8)]);
    assert_eq!(b.phase(), &Phase::Active);
}

#[test]
fn without_the_state_the_new_owner_rebuilds_from_the_durable_tier_after_the_timeout() {
    let mut b = Own::awaiting(id("b"), Epoch(2), 0, config());
    assert!(b.handle(10, Input::Turn(1)).is_empty());
    assert_eq!(b.poll_timeout(), Some(1_000));
    assert!(b.handle_timeout(999).is_empty());
    assert_eq!(b.handle_timeout(1_000), [claim(2, false)]);
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.handle(1_200, Input::Loaded), [Action::Serve(1)]);
}

#[test]
fn an_unacknowledged_handoff_forwards_its_buffer_after_the_timeout() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(
        a.handle(0, ring(2, "b")),
        [Action::SendState {
            to: id("b"),
            epoch: Epoch(2)
        }]
    );
    assert!(a.handle(1, Input::Turn(1)).is_empty());
    assert_eq!(a.handle_timeout(1_000), [forward("b", 1), Action::Released]);
}

#[test]
fn a_full_buffer_refuses_turns_and_loses_none_it_took() {
    let mut b = Own::awaiting(id("b"), Epoch(2), 0, config());
    for t in 1..=3 {
        assert!(b.handle(0, Input::Turn(t)).is_empty());
    }
    assert_eq!(b.handle(0, Input::Turn(4)), [Action::Refuse(4)]);
    b.handle(1, Input::StateArrived);
    assert_eq!(b.handle(2, Input::Loaded), [Action::Serve(1)]);
    assert_eq!(b.handle(3, Input::Served), [Action::Serve(2)]);
    assert_eq!(b.handle(4, Input::Served), [Action::Serve(3)]);
    assert!(b.handle(5, Input::Served).is_empty());
}

#[test]
fn a_move_called_off_before_the_state_left_keeps_the_session_and_its_buffer() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(1, ring(2, "b")).is_empty(), "turn 1 in flight");
    assert!(a.handle(2, Input::Turn(2)).is_empty());
    // Back to `a` before turn 1 is done: the state never left.
    assert!(a.handle(3, ring(3, "a")).is_empty());
    assert_eq!(a.handle(4, Input::Served), [claim(3, true)]);
    assert_eq!(a.handle(5, Input::Loaded), [Action::Serve(2)]);
    assert_eq!(a.phase(), &Phase::Active);
}

#[test]
fn a_move_called_off_after_the_state_left_claims_at_once_from_its_memory() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(
        a.handle(0, ring(2, "b")),
        [Action::SendState {
            to: id("b"),
            epoch: Epoch(2)
        }]
    );
    assert!(a.handle(1, Input::Turn(1)).is_empty());
    // `b` may have served turns meanwhile; `a`'s memory is still a prefix of the
    // log, and the claim fences `b` and reads the rest.
    assert_eq!(a.handle(2, ring(3, "a")), [claim(3, true)]);
    assert!(
        a.handle(3, Input::StateAcked).is_empty(),
        "a late ack changes nothing"
    );
    assert!(
        a.handle(4, Input::StateArrived).is_empty(),
        "nor does state sent back"
    );
    assert_eq!(a.handle(5, Input::Loaded), [Action::Serve(1)]);
}

#[test]
fn a_session_that_moves_on_before_it_arrived_forwards_what_it_buffered() {
    let mut b = Own::awaiting(id("b"), Epoch(2), 0, config());
    assert!(b.handle(1, Input::Turn(1)).is_empty());
    assert_eq!(
        b.handle(2, ring(3, "c")),
        [forward("c", 1), Action::Released]
    );
    assert_eq!(b.handle(3, Input::Turn(2)), [forward("c", 2)]);
}

#[test]
fn an_owner_kept_across_a_ring_change_claims_the_new_epoch_before_writing() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(1, ring(3, "a")).is_empty(), "turn 1 in flight");
    assert!(a.handle(2, Input::Turn(2)).is_empty());
    assert_eq!(a.handle(3, Input::Served), [claim(3, true)]);
    assert_eq!(a.handle(4, Input::Loaded), [Action::Serve(2)]);
}

#[test]
fn a_refused_claim_refuses_the_buffered_turns_until_the_ring_tells() {
    let mut b = Own::awaiting(id("b"), Epoch(2), 0, config());
    assert!(b.handle(1, Input::Turn(1)).is_empty());
    b.handle_timeout(1_000);
    assert_eq!(b.handle(1_001, Input::ClaimRefused), [Action::Refuse(1)]);
    assert_eq!(b.handle(1_002, Input::Turn(2)), [Action::Refuse(2)]);
    b.handle(1_003, ring(4, "c"));
    assert_eq!(b.handle(1_004, Input::Turn(3)), [forward("c", 3)]);
}

#[test]
fn a_stale_ring_change_is_ignored() {
    let mut a = Own::active(id("a"), Epoch(5), config());
    assert!(a.handle(0, ring(4, "b")).is_empty());
    assert_eq!(a.phase(), &Phase::Active);
    assert_eq!(a.handle(1, Input::Turn(1)), [Action::Serve(1)]);
}

#[test]
fn a_session_nobody_holds_is_claimed_and_loaded_before_its_turns_are_served() {
    let (mut a, first) = Own::loading(id("a"), Epoch(3), 0, config());
    assert_eq!(first, claim(3, false));
    assert!(
        a.handle(1, Input::Turn(1)).is_empty(),
        "buffered while loading"
    );
    assert_eq!(a.poll_timeout(), None, "the claim is already asked for");
    assert_eq!(a.claiming(), Some(Epoch(3)));
    assert_eq!(a.handle(2, Input::Loaded), [Action::Serve(1)]);
    assert_eq!(a.claiming(), None);
    assert_eq!(a.phase(), &Phase::Active);
}

#[test]
fn a_fenced_write_refuses_the_buffer_until_the_ring_tells_the_owner() {
    let mut a = Own::active(id("a"), Epoch(2), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(1, Input::Turn(2)).is_empty());
    assert_eq!(a.handle(2, Input::Fenced), [Action::Refuse(2)]);
    assert_eq!(a.phase(), &Phase::Fenced);
    assert_eq!(a.handle(3, Input::Turn(3)), [Action::Refuse(3)]);
    a.handle(4, ring(3, "b"));
    assert_eq!(a.handle(5, Input::Turn(4)), [forward("b", 4)]);
}

#[test]
fn a_fenced_session_given_back_by_the_ring_reloads_from_the_durable_tier() {
    let mut a = Own::active(id("a"), Epoch(2), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    a.handle(1, Input::Fenced);
    assert!(a.handle(10, ring(4, "a")).is_empty());
    assert!(a.handle(11, Input::Turn(2)).is_empty());
    assert_eq!(
        a.handle_timeout(1_010),
        [claim(4, false)],
        "its memory is stale: never claimed from it"
    );
    assert_eq!(a.handle(1_011, Input::Loaded), [Action::Serve(2)]);
}

#[test]
fn a_reload_claims_again_and_serves_the_buffer_after_it() {
    let mut a = Own::active(id("a"), Epoch(2), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(1, Input::Turn(2)).is_empty());
    assert_eq!(a.handle(2, Input::Reload), [claim(2, false)]);
    assert!(a.handle(3, Input::Turn(3)).is_empty());
    assert_eq!(a.handle(4, Input::Loaded), [Action::Serve(2)]);
    assert_eq!(a.handle(5, Input::Served), [Action::Serve(3)]);
}

#[test]
fn an_owner_kept_across_a_ring_change_claims_only_after_its_turn_in_flight() {
    let mut a = Own::active(id("a"), Epoch(3), config());
    assert_eq!(a.handle(0, Input::Turn(1)), [Action::Serve(1)]);
    assert!(a.handle(10, ring(4, "a")).is_empty());
    assert_eq!(
        a.poll_timeout(),
        None,
        "no claim while turn 1 may still be written"
    );
    assert!(a.handle_timeout(5_000).is_empty());
    assert_eq!(a.handle(5_001, Input::Served), [claim(4, true)]);
}

#[test]
fn a_claim_overtaken_by_the_ring_is_answered_at_its_own_epoch_then_claimed_again() {
    let (mut a, _) = Own::loading(id("a"), Epoch(3), 0, config());
    assert!(a.handle(1, ring(4, "a")).is_empty());
    assert_eq!(
        a.claiming(),
        Some(Epoch(3)),
        "the answer awaited is the epoch-3 one"
    );
    assert_eq!(a.handle(2, Input::Loaded), [claim(4, true)]);
    assert_eq!(a.claiming(), Some(Epoch(4)));
    a.handle(3, ring(5, "b"));
    assert_eq!(
        a.claiming(),
        None,
        "released: no answer is awaited any more"
    );
    a.handle(4, ring(6, "a"));
    assert_eq!(a.claiming(), None, "back, but not claiming yet");
}

mod world {
    //! One session over three nodes whose ring keeps changing, with every message
    //! delayed by a seeded amount: a first taste of what confab-sim will do for
    //! the whole node.

    use super::super::*;
    use crate::test_rng::TestRng;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

    fn id(n: u8) -> NodeId {
        NodeId::new(format!("n{n}")).unwrap()
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        Deliver(u8, Input<u32>),
        /// A serve's commit reaches the store.
        Commit(u8, u32, Epoch),
        /// A claim reaches the store.
        Claim(u8, Epoch),
    }

    // `Input` has no ordering of its own; events only need one for the heap's
    // ties, which the sequence number breaks first.
    impl PartialOrd for Input<u32> {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Input<u32> {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            format!("{self:?}").cmp(&format!("{other:?}"))
        }
    }

    struct World {
        now: u64,
        rng: TestRng,
        delay_max: u64,
        nodes: BTreeMap<u8, Ownership<u32>>,
        queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
        sequence: u64,
        /// The store: the session's fence and its log of committed turns.
        fence: Epoch,
        log: Vec<(u32, Epoch)>,
        refused: BTreeSet<u32>,
    }

    impl World {
        fn new(seed: u64, delay_max: u64) -> Self {
            let config = HandoffConfig {
                buffer_max: 1_000,
                timeout_ms: 1_000,
            };
            let mut nodes = BTreeMap::new();
            nodes.insert(1, Ownership::active(id(1), Epoch(1), config.clone()));
            for n in 2..=3 {
                let mut released = Ownership::active(id(n), Epoch(1), config.clone());
                released.phase = Phase::Released { owner: id(1) };
                nodes.insert(n, released);
            }
            Self {
                now: 0,
                rng: TestRng::new(seed),
                delay_max,
                nodes,
                queue: BinaryHeap::new(),
                sequence: 0,
                fence: Epoch(1),
                log: Vec::new(),
                refused: BTreeSet::new(),
            }
        }

        fn random(&mut self, below: u64) -> u64 {
            self.rng.below(below)
        }

        fn later(&mut self, event: Event) {
            let at = self.now + 1 + self.random(self.delay_max);
            self.sequence += 1;
            self.queue.push(Reverse((at, self.sequence, event)));
        }

        fn input(&mut self, node: u8, input: Input<u32>) {
            let now = self.now;
            let actions = self.nodes.get_mut(&node).unwrap().handle(now, input);
            self.carry_out(node, actions);
        }

        fn carry_out(&mut self, node: u8, actions: Vec<Action<u32>>) {
            for action in actions {
                match action {
                    Action::Serve(turn) => {
                        let epoch = self.nodes[&node].epoch();
                        self.later(Event::Commit(node, turn, epoch));
                    }
                    Action::Forward { to, turn } => {
                        let to = to.as_str()[1..].parse().unwrap();
                        self.later(Event::Deliver(to, Input::Turn(turn)));
                    }
                    Action::Refuse(turn) => {
                        self.refused.insert(turn);
                    }
                    Action::SendState { to, .. } => {
                        let to = to.as_str()[1..].parse().unwrap();
                        self.later(Event::Deliver(to, Input::StateArrived));
                        self.later(Event::Deliver(node, Input::StateAcked));
                    }
                    Action::Claim { epoch, .. } => self.later(Event::Claim(node, epoch)),
                    Action::Released => {}
                }
            }
        }

        fn step(&mut self) -> bool {
            let timer = self
                .nodes
                .iter()
                .filter_map(|(n, o)| o.poll_timeout().map(|t| (t, *n)))
                .min();
            let next = self.queue.peek().map(|Reverse((at, ..))| *at);
            match (timer, next) {
                (Some((t, n)), next) if next.is_none_or(|at| t < at) => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    let actions = self.nodes.get_mut(&n).unwrap().handle_timeout(now);
                    assert!(
                        self.nodes[&n].poll_timeout().is_none_or(|t| t > now)
                            || !actions.is_empty(),
                        "n{n}: a timer that does nothing"
                    );
                    self.carry_out(n, actions);
                    true
                }
                (Some(_), None) => unreachable!("a lone timer is taken by the arm above"),
                (_, Some(_)) => {
                    let Reverse((at, _, event)) = self.queue.pop().unwrap();
                    self.now = self.now.max(at);
                    match event {
                        Event::Deliver(node, input) => self.input(node, input),
                        Event::Commit(node, turn, epoch) => {
                            // The store's fence refuses a stale owner's write.
                            if epoch >= self.fence {
                                assert!(
                                    self.log.iter().all(|(t, _)| *t != turn),
                                    "turn {turn} committed twice"
                                );
                                assert!(
                                    self.log.last().is_none_or(|(_, e)| *e <= epoch),
                                    "a write went back in epoch"
                                );
                                self.log.push((turn, epoch));
                            } else {
                                self.refused.insert(turn);
                            }
                            self.input(node, Input::Served);
                        }
                        Event::Claim(node, epoch) => {
                            // Claims never go back either.
                            if epoch >= self.fence {
                                self.fence = epoch;
                                self.input(node, Input::Loaded);
                            } else {
                                self.input(node, Input::ClaimRefused);
                            }
                        }
                    }
                    true
                }
                (None, None) => false,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the ring does and however messages are delayed, every turn is
        /// either committed exactly once or refused (the client retries), and
        /// committed writes never go back in epoch.
        #[test]
        fn every_turn_is_committed_once_or_refused(
            seed in any::<u64>(),
            delay_max in 1u64..1_500,
            script in proptest::collection::vec((0u8..4, 1u8..=3, 0u64..300), 1..60),
        ) {
            let mut world = World::new(seed, delay_max);
            let mut epoch = 1;
            let mut turns = 0u32;
            for (kind, node, gap) in script {
                let until = world.now + gap;
                while world.queue.peek().is_some_and(|Reverse((at, ..))| *at <= until) {
                    world.step();
                }
                world.now = world.now.max(until);
                if kind == 0 {
                    // The ring moves the session to `node`; every node hears of
                    // it after its own delay.
                    epoch += 1;
                    for n in 1..=3 {
                        let input = Input::RingChanged { epoch: Epoch(epoch), owner: id(node) };
                        world.later(Event::Deliver(n, input));
                    }
                } else {
                    turns += 1;
                    world.input(node, Input::Turn(turns));
                }
            }
            let mut steps = 0;
            while world.step() {
                steps += 1;
                prop_assert!(steps < 1_000_000, "no quiescence");
            }
            let committed: BTreeSet<u32> = world.log.iter().map(|(t, _)| *t).collect();
            for turn in 1..=turns {
                prop_assert!(
                    committed.contains(&turn) || world.refused.contains(&turn),
                    "turn {} was lost", turn
                );
            }
        }
    }
}
