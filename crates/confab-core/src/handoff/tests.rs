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
    assert_eq!(
        b.handle(2, Input::StateArrived),
        [Action::Claim {
            epoch: Epoch(2),
            from_state: true
        }]
    );
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
    assert_eq!(
        b.handle_timeout(1_000),
        [Action::Claim {
            epoch: Epoch(2),
            from_state: false
        }]
    );
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
    assert_eq!(
        a.handle(4, Input::Served),
        [Action::Claim {
            epoch: Epoch(3),
            from_state: true
        }]
    );
    assert_eq!(a.handle(5, Input::Loaded), [Action::Serve(2)]);
    assert_eq!(a.phase(), &Phase::Active);
}

#[test]
fn a_move_called_off_after_the_state_left_waits_for_it_to_come_back() {
    let mut a = Own::active(id("a"), Epoch(1), config());
    assert_eq!(
        a.handle(0, ring(2, "b")),
        [Action::SendState {
            to: id("b"),
            epoch: Epoch(2)
        }]
    );
    assert!(a.handle(1, Input::Turn(1)).is_empty());
    // `b` may have served turns meanwhile: `a`'s memory is no longer the session.
    assert!(a.handle(2, ring(3, "a")).is_empty());
    assert!(
        a.handle(3, Input::StateAcked).is_empty(),
        "a late ack changes nothing"
    );
    assert_eq!(
        a.handle(4, Input::StateArrived),
        [Action::Claim {
            epoch: Epoch(3),
            from_state: true
        }]
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
fn a_stale_ring_change_is_ignored() {
    let mut a = Own::active(id("a"), Epoch(5), config());
    assert!(a.handle(0, ring(4, "b")).is_empty());
    assert_eq!(a.phase(), &Phase::Active);
    assert_eq!(a.handle(1, Input::Turn(1)), [Action::Serve(1)]);
}
