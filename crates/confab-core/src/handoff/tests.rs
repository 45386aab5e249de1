use super::*;
use crate::ids::{Epoch, Uid};
use crate::ring::Ring;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn config() -> HandoffConfig {
    HandoffConfig {
        hold_ms: 1_000,
        batch_max: 2,
        linger_ms: 2,
        resident_max: 3,
        queue_max: 2,
        handoff_max: 100,
        arrived_keep_ms: 10_000,
    }
}

fn ring(epoch: u64, nodes: &[&str]) -> Ring {
    Ring::new(Epoch(epoch), nodes.iter().map(|n| id(n)))
}

/// A uid `ring` gives to `owner`, the `nth` such.
fn uid_of(ring: &Ring, owner: &str, nth: usize) -> Uid {
    (0..)
        .map(|i| Uid::new(format!("user-{i}")).unwrap())
        .filter(|u| ring.owner(u) == Some(&id(owner)))
        .nth(nth)
        .unwrap()
}

/// The tests' turns are numbers; a turn numbered 100 or more is one whose
/// caller stops waiting at that many ms, the others wait as long as it takes.
impl Deadline for u32 {
    fn deadline_ms(&self) -> Option<u64> {
        (*self >= 100).then_some(u64::from(*self))
    }
}

type S = Session<u32, &'static str>;
type Out = SessionOutput<u32, &'static str>;

fn claim(epoch: u64, state: Option<&'static str>) -> Out {
    Out::Claim {
        epoch: Epoch(epoch),
        state,
    }
}

fn loaded(epoch: u64) -> SessionInput<u32, &'static str> {
    SessionInput::Claimed {
        epoch: Epoch(epoch),
        result: Claimed::Loaded,
    }
}

#[test]
fn a_session_loads_on_its_first_turn_then_serves_one_turn_at_a_time_in_order() {
    let r = ring(3, &["a", "b"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    assert_eq!(s.handle(0, &r, SessionInput::Turn(1)), [claim(3, None)]);
    assert!(s.handle(1, &r, SessionInput::Turn(2)).is_empty());
    assert_eq!(s.handle(2, &r, loaded(3)), [Out::Serve(1)]);
    assert_eq!(s.epoch(), Epoch(3), "writes carry the claimed epoch");
    assert_eq!(
        s.handle(3, &r, SessionInput::Served(Served::Done)),
        [Out::Serve(2)]
    );
    assert!(
        s.handle(4, &r, SessionInput::Served(Served::Done))
            .is_empty()
    );
}

#[test]
fn a_turn_whose_caller_stopped_waiting_is_refused_not_run_and_the_next_one_runs() {
    let r = ring(3, &["a", "b"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    assert_eq!(s.handle(0, &r, SessionInput::Turn(1)), [claim(3, None)]);
    // Behind turn 1: one that gives up at 150 ms, one at 500 ms.
    assert!(s.handle(1, &r, SessionInput::Turn(150)).is_empty());
    assert!(s.handle(2, &r, SessionInput::Turn(500)).is_empty());
    assert_eq!(s.handle(3, &r, loaded(3)), [Out::Serve(1)]);
    // Turn 1 ends at 200 ms: turn 150's caller is gone, turn 500's still waits.
    assert_eq!(
        s.handle(200, &r, SessionInput::Served(Served::Done)),
        [
            Out::Refuse {
                turn: 150,
                refusal: Refusal::CallerGone
            },
            Out::Serve(500)
        ]
    );
    // A turn that arrives in time but reaches the head too late is refused too.
    assert!(s.handle(201, &r, SessionInput::Turn(300)).is_empty());
    assert_eq!(
        s.handle(300, &r, SessionInput::Served(Served::Done)),
        [Out::Refuse {
            turn: 300,
            refusal: Refusal::CallerGone
        }]
    );
    assert_eq!(s.queued(), 0);
    assert!(!s.in_flight());
}

#[test]
fn a_session_the_ring_does_not_name_never_claims() {
    let r = ring(3, &["a", "b"]);
    let u = uid_of(&r, "b", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    assert_eq!(
        s.handle(0, &r, SessionInput::Turn(1)),
        [Out::Refuse {
            turn: 1,
            refusal: Refusal::Moved(Some(id("b")))
        }]
    );
}

#[test]
fn an_expected_session_holds_its_turns_for_the_state_then_claims_from_it() {
    let r = ring(4, &["a", "b"]);
    let u = uid_of(&r, "b", 0);
    let mut s = S::new(u, id("b"), Start::Awaiting { until: 1_000 }, config());
    assert!(s.handle(0, &r, SessionInput::Turn(1)).is_empty());
    assert!(s.handle(1, &r, SessionInput::Turn(2)).is_empty());
    assert!(s.wants_state());
    assert_eq!(s.poll_timeout(), Some(1_000));
    assert_eq!(
        s.handle(5, &r, SessionInput::State(Some("state"))),
        [claim(4, Some("state"))]
    );
    assert_eq!(s.handle(6, &r, loaded(4)), [Out::Serve(1)]);
}

#[test]
fn a_state_that_does_not_come_in_time_leaves_the_durable_tier() {
    let r = ring(4, &["a", "b"]);
    let u = uid_of(&r, "b", 0);
    let mut s = S::new(u, id("b"), Start::Awaiting { until: 1_000 }, config());
    assert!(s.handle(0, &r, SessionInput::Turn(1)).is_empty());
    assert!(s.handle_timeout(999, &r).is_empty());
    assert_eq!(s.handle_timeout(1_000, &r), [claim(4, None)]);
    assert!(!s.wants_state(), "a late state is refused");
}

#[test]
fn a_claim_answered_late_for_an_older_epoch_is_ignored() {
    let r = ring(5, &["a"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    assert_eq!(s.handle(0, &r, SessionInput::Turn(1)), [claim(5, None)]);
    assert!(s.handle(1, &r, loaded(4)).is_empty());
    assert_eq!(s.phase(), &Phase::Claiming { epoch: Epoch(5) });
}

#[test]
fn a_failed_load_refuses_one_turn_and_the_next_loads_again() {
    let r = ring(5, &["a"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    s.handle(0, &r, SessionInput::Turn(1));
    s.handle(0, &r, SessionInput::Turn(2));
    let failed = SessionInput::Claimed {
        epoch: Epoch(5),
        result: Claimed::Failed,
    };
    assert_eq!(
        s.handle(1, &r, failed),
        [
            Out::Refuse {
                turn: 1,
                refusal: Refusal::LoadFailed
            },
            claim(5, None)
        ]
    );
}

#[test]
fn a_fenced_session_refuses_what_it_holds_and_stops() {
    let r = ring(5, &["a"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    s.handle(0, &r, SessionInput::Turn(1));
    s.handle(0, &r, SessionInput::Turn(2));
    s.handle(1, &r, loaded(5));
    assert_eq!(
        s.handle(2, &r, SessionInput::Served(Served::Fenced)),
        [
            Out::Refuse {
                turn: 2,
                refusal: Refusal::Fenced
            },
            Out::Stop
        ]
    );
    assert_eq!(
        s.handle(3, &r, SessionInput::Turn(3)),
        [Out::Refuse {
            turn: 3,
            refusal: Refusal::Fenced
        }]
    );
}

#[test]
fn a_failed_commit_drops_memory_and_the_next_turn_claims_again() {
    let r = ring(5, &["a"]);
    let u = uid_of(&r, "a", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    s.handle(0, &r, SessionInput::Turn(1));
    s.handle(1, &r, loaded(5));
    assert!(
        s.handle(2, &r, SessionInput::Served(Served::Reload))
            .is_empty()
    );
    assert!(!s.is_loaded());
    assert_eq!(s.handle(3, &r, SessionInput::Turn(2)), [claim(5, None)]);
}

#[test]
fn a_moved_session_serves_its_queued_turns_then_sends_its_state_and_stops() {
    let before = ring(5, &["a"]);
    let after = ring(6, &["a", "b"]);
    let u = uid_of(&after, "b", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    s.handle(0, &before, SessionInput::Turn(1));
    s.handle(0, &before, SessionInput::Turn(2));
    assert_eq!(s.handle(1, &before, loaded(5)), [Out::Serve(1)]);
    let handoff = SessionInput::HandOff {
        to: Some(id("b")),
        epoch: Epoch(6),
    };
    assert!(s.handle(2, &after, handoff).is_empty(), "turn 1 in flight");
    assert_eq!(
        s.handle(3, &after, SessionInput::Served(Served::Done)),
        [Out::Serve(2)],
        "a turn queued before the move is served here"
    );
    assert_eq!(
        s.handle(4, &after, SessionInput::Served(Served::Done)),
        [Out::SendState {
            to: id("b"),
            epoch: Epoch(6)
        }]
    );
    assert_eq!(
        s.handle(5, &after, SessionInput::Taken(true)),
        [Out::WriteSnapshot { deferred: true }, Out::Stop]
    );
}

#[test]
fn a_state_the_new_owner_does_not_answer_is_written_at_once() {
    let before = ring(5, &["a"]);
    let after = ring(6, &["a", "b"]);
    let u = uid_of(&after, "b", 0);
    let mut s = S::new(u, id("a"), Start::Durable, config());
    s.handle(0, &before, SessionInput::Turn(1));
    s.handle(0, &before, loaded(5));
    s.handle(1, &before, SessionInput::Served(Served::Done));
    let handoff = SessionInput::HandOff {
        to: Some(id("b")),
        epoch: Epoch(6),
    };
    assert_eq!(s.handle(10, &after, handoff).len(), 1);
    assert_eq!(s.poll_timeout(), Some(1_010));
    assert_eq!(
        s.handle_timeout(1_010, &after),
        [Out::WriteSnapshot { deferred: false }, Out::Stop]
    );
}

#[test]
fn admission_starts_from_what_arrived_or_was_announced() {
    let r = ring(7, &["a", "b"]);
    let mut node: Node<&'static str> = Node::new(id("a"), config());
    let (u0, u1, u2) = (uid_of(&r, "a", 0), uid_of(&r, "a", 1), uid_of(&r, "a", 2));
    node.expect(100, [u0.clone()]);
    assert_eq!(
        node.arrived(100, &r, u1.clone(), Epoch(7), Some("s1")),
        Arrival::Kept
    );
    assert_eq!(
        node.admit(200, &r, &u0, 0),
        Admit::Start(Start::Awaiting { until: 1_100 })
    );
    assert_eq!(
        node.admit(200, &r, &u1, 0),
        Admit::Start(Start::Arrived(Some("s1")))
    );
    assert_eq!(node.admit(200, &r, &u2, 0), Admit::Start(Start::Durable));
    assert_eq!(node.admit(201, &r, &u0, 1), Admit::Deliver);
    assert_eq!(
        node.admit(201, &r, &u0, 2),
        Admit::Overloaded(Limit::Queue(2))
    );
    let u3 = uid_of(&r, "a", 3);
    assert_eq!(
        node.admit(202, &r, &u3, 0),
        Admit::Overloaded(Limit::Resident(3))
    );
    let theirs = uid_of(&r, "b", 0);
    assert_eq!(node.admit(202, &r, &theirs, 0), Admit::Moved(Some(id("b"))));
}

#[test]
fn a_ring_change_announces_then_hands_off_each_moved_session() {
    let before = ring(1, &["a"]);
    let after = ring(2, &["a", "b", "c"]);
    let mut node: Node<()> = Node::new(
        id("a"),
        HandoffConfig {
            resident_max: 100,
            ..config()
        },
    );
    let uids: Vec<Uid> = (0..30)
        .map(|i| Uid::new(format!("user-{i}")).unwrap())
        .collect();
    for uid in &uids {
        assert_eq!(node.admit(0, &before, uid, 0), Admit::Start(Start::Durable));
    }
    let linked = |n: &NodeId| n.as_str() == "b";
    let expects = node.announce(&after, linked);
    assert_eq!(expects.len(), 1, "c is not linked: nobody expects there");
    let mut to_b: Vec<&Uid> = uids
        .iter()
        .filter(|u| after.owner(u) == Some(&id("b")))
        .collect();
    to_b.sort();
    assert_eq!(expects[0].uids.iter().collect::<Vec<_>>(), to_b);
    let moved = node.adopt(&after, linked, |_| 0).hand_off;
    for HandOff { uid, to, epoch } in &moved {
        let owner = after.owner(uid).unwrap();
        assert_ne!(owner, &id("a"));
        assert_eq!(to.as_ref(), (owner == &id("b")).then_some(owner));
        assert_eq!(*epoch, Epoch(2));
        assert!(!node.is_resident(uid));
    }
    assert_eq!(moved.len() + node.resident_count(), 30);
}

#[test]
fn the_sessions_talked_to_last_hand_off_first() {
    let before = ring(1, &["a"]);
    let after = ring(2, &["a", "b"]);
    let mut node: Node<()> = Node::new(
        id("a"),
        HandoffConfig {
            resident_max: 100,
            ..config()
        },
    );
    let leaving: Vec<Uid> = (0..4).map(|i| uid_of(&after, "b", i)).collect();
    for (at, uid) in [(10, &leaving[0]), (40, &leaving[1]), (20, &leaving[2])] {
        node.admit(at, &before, uid, 0);
    }
    // Admitted twice: its last turn counts.
    node.admit(5, &before, &leaving[3], 0);
    node.admit(30, &before, &leaving[3], 0);
    let order: Vec<Uid> = node
        .adopt(&after, |_| true, |_| 0)
        .hand_off
        .into_iter()
        .map(|h| h.uid)
        .collect();
    assert_eq!(
        order,
        [
            leaving[1].clone(),
            leaving[3].clone(),
            leaving[2].clone(),
            leaving[0].clone()
        ]
    );
}

#[test]
fn turns_the_shell_delivered_itself_count_in_the_handoff_order() {
    let after = ring(2, &["a", "b"]);
    let (mut node, leaving) = leaving(&after, 3, 8);
    // Admitted at 0, 1 and 2; the shell then gave the first a turn at 50
    // without asking the machine (a resident session's fast path).
    let first = leaving[0].clone();
    let order = uids(
        &node
            .adopt(&after, |_| true, |uid| if *uid == first { 50 } else { 0 })
            .hand_off,
    );
    assert_eq!(
        order,
        [leaving[0].clone(), leaving[2].clone(), leaving[1].clone()]
    );
}

#[test]
fn a_session_is_idle_by_the_later_of_its_admission_and_the_shells_delivery() {
    let r = ring(1, &["a"]);
    let mut node: Node<()> = Node::new(id("a"), config());
    let (u0, u1, u2) = (uid_of(&r, "a", 0), uid_of(&r, "a", 1), uid_of(&r, "a", 2));
    for uid in [&u0, &u1, &u2] {
        node.admit(10, &r, uid, 0);
    }
    // At 100, idle after 50: u0 was given a turn at 80 by the shell, u1 has
    // one queued, u2 has seen nothing since its admission at 10.
    let activity = |uid: &Uid| match uid {
        u if *u == u0 => Activity {
            queued: 0,
            last: 80,
        },
        u if *u == u1 => Activity { queued: 1, last: 0 },
        _ => Activity::default(),
    };
    assert_eq!(node.idle(100, 50, activity), std::slice::from_ref(&u2));
    assert!(!node.is_resident(&u2));
    // The delivery at 80 is now the machine's record too: idle at 130.
    assert_eq!(
        node.idle(129, 50, |_| Activity::default()),
        std::slice::from_ref(&u1)
    );
    assert_eq!(
        node.idle(130, 50, |_| Activity::default()),
        std::slice::from_ref(&u0)
    );
    assert!(HandoffConfig::default().delivers(63) && !HandoffConfig::default().delivers(64));
}

/// Node `a` with `n` sessions resident that `after` gives to `b`, the i-th
/// talked to at time i, and at most `handoff_max` handing off at once.
fn leaving(after: &Ring, n: usize, handoff_max: usize) -> (Node<()>, Vec<Uid>) {
    let before = ring(1, &["a"]);
    let mut node: Node<()> = Node::new(
        id("a"),
        HandoffConfig {
            resident_max: 100,
            handoff_max,
            ..config()
        },
    );
    let uids: Vec<Uid> = (0..n).map(|i| uid_of(after, "b", i)).collect();
    for (at, uid) in uids.iter().enumerate() {
        node.admit(at as u64, &before, uid, 0);
    }
    (node, uids)
}

fn uids(handoffs: &[HandOff]) -> Vec<Uid> {
    handoffs.iter().map(|h| h.uid.clone()).collect()
}

#[test]
fn at_most_handoff_max_sessions_hand_off_at_once_and_each_stop_lets_the_next_go() {
    let after = ring(2, &["a", "b"]);
    let (mut node, leaving) = leaving(&after, 5, 2);
    let adopted = node.adopt(&after, |_| true, |_| 0);
    assert_eq!(
        uids(&adopted.hand_off),
        [leaving[4].clone(), leaving[3].clone()]
    );
    assert_eq!(node.handoffs(), (2, 3));
    assert_eq!(node.resident_count(), 0, "none is routed here any more");
    // A waiting session that stopped on its own frees no place, and is not told.
    node.stopped_waiting(&leaving[0]);
    assert_eq!(node.handoffs(), (2, 2));
    assert_eq!(uids(&node.handed(&leaving[3])), [leaving[2].clone()]);
    assert_eq!(uids(&node.handed(&leaving[4])), [leaving[1].clone()]);
    assert!(
        node.handed(&leaving[4]).is_empty(),
        "told once, counted once"
    );
    assert!(node.handed(&leaving[2]).is_empty(), "nothing waits");
    assert_eq!(node.handoffs(), (1, 0));
}

#[test]
fn a_later_ring_redirects_the_sessions_waiting_to_hand_off_or_gives_them_back() {
    let after = ring(2, &["a", "b"]);
    let (mut node, leaving) = leaving(&after, 40, 1);
    node.adopt(&after, |_| true, |_| 0);
    // b fails: a ring of a and c. The waiting sessions go to c, or stay here.
    let third = ring(3, &["a", "c"]);
    let expects = node.announce(&third, |_| true);
    let to_c: Vec<&Uid> = leaving[..39]
        .iter()
        .filter(|u| third.owner(u) == Some(&id("c")))
        .collect();
    assert!(
        !to_c.is_empty() && to_c.len() < 39,
        "the test needs both kinds"
    );
    assert_eq!(expects.len(), 1);
    assert_eq!(expects[0].to, id("c"));
    let mut announced: Vec<&Uid> = expects[0].uids.iter().collect();
    announced.retain(|u| *u != &leaving[39]);
    let mut expected = to_c.clone();
    expected.sort();
    assert_eq!(
        announced, expected,
        "the waiting sessions are announced too"
    );
    let adopted = node.adopt(&third, |_| true, |_| 0);
    assert!(adopted.hand_off.is_empty(), "one hands off already");
    let back: Vec<&Uid> = leaving[..39]
        .iter()
        .filter(|u| third.owner(u) == Some(&id("a")))
        .collect();
    let mut returned: Vec<&Uid> = adopted.back.iter().collect();
    returned.sort();
    let mut back_sorted = back.clone();
    back_sorted.sort();
    assert_eq!(returned, back_sorted);
    for uid in &back {
        assert!(node.is_resident(uid), "resident again, as it was");
    }
    let next = node.handed(&leaving[39]);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].to, Some(id("c")));
    assert_eq!(next[0].epoch, Epoch(3));
    assert_eq!(third.owner(&next[0].uid), Some(&id("c")));
}

#[test]
fn a_state_for_a_session_this_nodes_ring_gives_elsewhere_is_refused() {
    let r = ring(7, &["a", "b"]);
    let mut node: Node<()> = Node::new(id("a"), config());
    let theirs = uid_of(&r, "b", 0);
    assert_eq!(
        node.arrived(0, &r, theirs.clone(), Epoch(7), Some(())),
        Arrival::Refused
    );
    assert_eq!(
        node.arrived(0, &r, theirs, Epoch(8), Some(())),
        Arrival::Kept,
        "sent by a newer ring this node has not adopted yet"
    );
}

#[test]
fn the_outbox_batches_per_node_and_reports_silence_as_not_taken() {
    let mut outbox: Outbox<()> = Outbox::new(config());
    let u = |i: u32| Uid::new(format!("u{i}")).unwrap();
    for i in 0..3 {
        outbox.push(10, id("b"), u(i), Epoch(2), None);
    }
    outbox.push(11, id("c"), u(9), Epoch(2), None);
    assert!(outbox.poll_batches(11).is_empty(), "lingers");
    assert_eq!(outbox.poll_timeout(), Some(12));
    let batches = outbox.poll_batches(12);
    let shape: Vec<(String, usize)> = batches
        .iter()
        .map(|b| (b.to.to_string(), b.states.len()))
        .collect();
    assert_eq!(
        shape,
        [("b".into(), 2), ("b".into(), 1), ("c".into(), 1)],
        "at most batch_max per message"
    );
    assert_eq!(
        outbox.answered(batches[0].id, &[true, false]),
        [(u(0), true), (u(1), false)]
    );
    assert_eq!(outbox.poll_timeout(), Some(1_012));
    let late = outbox.handle_timeout(1_012);
    assert_eq!(late, [(u(2), false), (u(9), false)]);
    assert_eq!(outbox.poll_timeout(), None);
}

#[test]
fn the_outbox_sends_at_once_when_every_session_handing_off_has_pushed_its_state() {
    let config = HandoffConfig {
        handoff_max: 3,
        ..config()
    };
    let mut outbox: Outbox<()> = Outbox::new(config);
    let u = |i: u32| Uid::new(format!("u{i}")).unwrap();
    outbox.push(10, id("b"), u(0), Epoch(2), None);
    outbox.push(10, id("c"), u(1), Epoch(2), None);
    assert!(
        outbox.poll_batches(10).is_empty(),
        "two of three: it lingers"
    );
    outbox.push(10, id("b"), u(2), Epoch(2), None);
    let sent: Vec<usize> = outbox
        .poll_batches(10)
        .iter()
        .map(|b| b.states.len())
        .collect();
    assert_eq!(sent, [2, 1], "all three at once, by node, no linger");
}

#[test]
fn a_session_started_afresh_while_its_old_one_hands_off_waits_its_own_turn() {
    // The simulator's partition seed 1200: u's session hands off to b; a ring
    // gives u back, and a turn starts it here afresh; a newer ring moves it
    // again, so it waits to hand off. Then the old session stops: the new one
    // must still wait its turn, and be told, not be forgotten.
    let ab = ring(2, &["a", "b"]);
    let (mut node, leaving) = leaving(&ab, 2, 1);
    let adopted = node.adopt(&ab, |_| true, |_| 0);
    let first = adopted.hand_off[0].uid.clone();
    assert_eq!(node.handoffs(), (1, 1));
    let back = ring(3, &["a"]);
    let adopted = node.adopt(&back, |_| true, |_| 0);
    let other = leaving.iter().find(|u| **u != first).unwrap().clone();
    assert_eq!(
        adopted.back,
        std::slice::from_ref(&other),
        "the one waiting comes back"
    );
    assert!(matches!(node.admit(10, &back, &first, 0), Admit::Start(_)));
    let again = ring(4, &["a", "b"]);
    let adopted = node.adopt(&again, |_| true, |_| 0);
    assert!(adopted.hand_off.is_empty(), "the old one still hands off");
    assert_eq!(node.handoffs(), (1, 2));
    // The old session of `first` stops: the first in line goes, and the new
    // session of `first` still waits (talked to last, it is first in line).
    let next = node.handed(&first);
    assert_eq!(uids(&next), std::slice::from_ref(&first));
    assert_eq!(node.handoffs(), (1, 1));
    let next = node.handed(&first);
    assert_eq!(uids(&next), [other]);
    assert_eq!(node.handoffs(), (1, 0));
}
