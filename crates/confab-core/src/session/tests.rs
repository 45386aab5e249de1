use super::*;
use proptest::prelude::*;

fn uid() -> Uid {
    Uid::new("alice").unwrap()
}

fn mid(id: &str) -> MessageId {
    MessageId::new(id).unwrap()
}

fn decision(text: &str) -> TurnDecision {
    let mut slots_filled = Slots::new();
    if let Some(size) = text.strip_prefix("size ") {
        slots_filled.insert("size".into(), size.into());
    }
    TurnDecision {
        intent: if slots_filled.is_empty() {
            "chat"
        } else {
            "inform"
        }
        .into(),
        confidence: 0.75,
        slots_filled,
        slots_cleared: Vec::new(),
        reply_text: format!("you said {text}"),
        policy: "test-v1".into(),
        dialog: Slots::new(),
    }
}

/// Runs one `say` the way the runtime does: dedupe, record, apply.
fn say(state: &mut SessionState, log: &mut Vec<RecordedEvent>, id: &str, text: &str) -> bool {
    if state.duplicate(&mid(id)).is_some() {
        return false;
    }
    let events = state.record_turn(
        &uid(),
        Epoch(1),
        1_000,
        mid(id),
        text.into(),
        decision(text),
    );
    for event in &events {
        state.apply(event).unwrap();
        log.push(event.clone());
    }
    true
}

#[test]
fn a_turn_is_acknowledged_only_once_committed() {
    assert!(!may_acknowledge(false));
    assert!(may_acknowledge(true));
}

#[test]
fn a_turn_appends_three_events_and_updates_the_hot_state() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    assert!(say(&mut state, &mut log, "m-1", "size 39"));
    assert_eq!(state.seq(), Seq(3));
    assert_eq!(log.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(state.slots().get("size").map(String::as_str), Some("39"));
    assert_eq!(state.last_intent(), Some("inform"));
    let turn = state.recent_turns().next().unwrap();
    assert_eq!((turn.turn_seq, turn.reply_seq), (Seq(1), Seq(3)));
    assert_eq!(turn.reply_text, "you said size 39");
}

#[test]
fn a_duplicate_id_is_found_in_the_recent_window_then_in_the_log() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    say(&mut state, &mut log, "first", "hello");
    assert!(matches!(
        state.duplicate(&mid("first")),
        Some(Duplicate::Recent(_))
    ));
    for i in 0..RECENT_TURNS_MAX {
        say(&mut state, &mut log, &format!("m-{i}"), "again");
    }
    assert_eq!(
        state.duplicate(&mid("first")),
        Some(Duplicate::Logged(ProcessedTurn {
            turn_seq: Seq(1),
            reply_seq: Seq(3)
        }))
    );
    assert_eq!(state.recent_turns().count(), RECENT_TURNS_MAX);
}

#[test]
fn the_idempotency_horizon_forgets_the_oldest_ids() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    for i in 0..=PROCESSED_IDS_MAX {
        say(&mut state, &mut log, &format!("m-{i}"), "x");
    }
    assert_eq!(state.processed_len(), PROCESSED_IDS_MAX);
    assert!(state.duplicate(&mid("m-0")).is_none());
    assert!(state.duplicate(&mid("m-1")).is_some());
}

#[test]
fn apply_refuses_gaps_repeats_and_broken_turns() {
    let mut state = SessionState::default();
    let events = state.record_turn(&uid(), Epoch(1), 5, mid("a"), "hi".into(), decision("hi"));
    assert_eq!(
        state.apply(&events[1]),
        Err(ApplyError::SeqGap {
            expected: Seq(1),
            got: Seq(2)
        })
    );
    state.apply(&events[0]).unwrap();
    assert_eq!(
        state.apply(&events[0]),
        Err(ApplyError::SeqGap {
            expected: Seq(2),
            got: Seq(1)
        })
    );
    let mut reply_first = events[2].clone();
    reply_first.seq = Seq(2);
    if let Event::ReplyProduced { message_id, .. } = &mut reply_first.event {
        *message_id = mid("other");
    }
    assert!(matches!(
        state.apply(&reply_first),
        Err(ApplyError::OutOfTurnOrder { .. })
    ));
    assert_eq!(state.seq(), Seq(1), "a refused event changes nothing");
}

#[test]
fn a_turn_reusing_a_processed_id_is_refused_by_apply() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    say(&mut state, &mut log, "a", "hi");
    let again = state.record_turn(&uid(), Epoch(1), 5, mid("a"), "hi".into(), decision("hi"));
    assert_eq!(
        state.apply(&again[0]),
        Err(ApplyError::DuplicateMessageId(mid("a")))
    );
}

fn key(byte: u8) -> SnapshotKey {
    SnapshotKey::new(vec![byte; 32]).unwrap()
}

fn sample_snapshot() -> Snapshot {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    say(&mut state, &mut log, "m-1", "size 41");
    say(&mut state, &mut log, "m-2", "hello");
    Snapshot::new(uid(), 1_700_000_000_000, Epoch(7), state)
}

#[test]
fn a_snapshot_round_trips() {
    let snapshot = sample_snapshot();
    let bytes = snapshot.encode(&key(1));
    let decoded = Snapshot::decode(&bytes, &key(1)).unwrap();
    assert_eq!(decoded, snapshot);
    assert_eq!(decoded.seq, Seq(6));
    assert_eq!(decoded.epoch, Epoch(7));
    assert!(
        decoded.state.duplicate(&mid("m-1")).is_some(),
        "the index is rebuilt"
    );
}

#[test]
fn full_windows_slide_without_growing_their_memory() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    for i in 0..PROCESSED_IDS_MAX + 10 {
        say(&mut state, &mut log, &format!("m-{i}"), "hello");
    }
    assert_eq!(state.processed_order.len(), PROCESSED_IDS_MAX);
    assert_eq!(state.processed_index.len(), PROCESSED_IDS_MAX);
    assert_eq!(state.recent_turns.len(), RECENT_TURNS_MAX);
    assert!(
        state.processed_order.capacity() < 2 * PROCESSED_IDS_MAX,
        "the id window doubled its allocation: {}",
        state.processed_order.capacity()
    );
    assert!(
        state.recent_turns.capacity() < 2 * RECENT_TURNS_MAX,
        "the turn window doubled its allocation: {}",
        state.recent_turns.capacity()
    );
    // The oldest ids are forgotten, the newest remembered.
    assert!(state.duplicate(&mid("m-9")).is_none());
    assert!(state.duplicate(&mid("m-10")).is_some());
}

#[test]
fn processed_ids_are_written_as_pairs_and_read_in_both_shapes() {
    let state = sample_snapshot().state;
    let written = serde_json::to_value(&state).unwrap();
    assert_eq!(
        written["processed"],
        serde_json::json!([["m-1", [1, 3]], ["m-2", [4, 6]]]),
        "each id with [turn_seq, reply_seq]"
    );
    // As states were written before: each pair an object.
    let mut older = written.clone();
    older["processed"] = serde_json::json!([
        ["m-1", {"turn_seq": 1, "reply_seq": 3}],
        ["m-2", {"turn_seq": 4, "reply_seq": 6}]
    ]);
    let read: SessionState = serde_json::from_value(older).unwrap();
    assert_eq!(read, state);
    assert!(
        read.duplicate(&mid("m-2")).is_some(),
        "the index is rebuilt"
    );
    let again: SessionState = serde_json::from_value(written).unwrap();
    assert_eq!(again, state);
}

#[test]
fn every_tampered_byte_is_detected() {
    let bytes = sample_snapshot().encode(&key(1));
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        assert!(
            matches!(
                Snapshot::decode(&tampered, &key(1)),
                Err(SnapshotError::ChecksumMismatch)
            ),
            "flipping byte {i} went unnoticed"
        );
    }
}

#[test]
fn a_wrong_key_or_a_truncation_is_refused() {
    let bytes = sample_snapshot().encode(&key(1));
    assert!(matches!(
        Snapshot::decode(&bytes, &key(2)),
        Err(SnapshotError::ChecksumMismatch)
    ));
    assert!(matches!(
        Snapshot::decode(&bytes[..bytes.len() - 1], &key(1)),
        Err(SnapshotError::ChecksumMismatch)
    ));
    assert!(matches!(
        Snapshot::decode(&bytes[..10], &key(1)),
        Err(SnapshotError::Truncated { len: 10 })
    ));
    assert!(matches!(
        SnapshotKey::new(vec![0; 8]),
        Err(SnapshotError::KeyTooShort { len: 8, min: 16 })
    ));
}

#[test]
fn an_unknown_format_version_is_named() {
    let snapshot = sample_snapshot();
    let mut bytes = snapshot.encode(&key(1));
    bytes.truncate(bytes.len() - 32);
    bytes[5] = 9;
    let mut mac = key(1).mac();
    hmac::Mac::update(&mut mac, &bytes);
    bytes.extend_from_slice(&hmac::Mac::finalize(mac).into_bytes());
    assert!(matches!(
        Snapshot::decode(&bytes, &key(1)),
        Err(SnapshotError::UnsupportedVersion(9))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any sequence of turns and duplicate sends: seq rises by one per event,
    /// duplicates add nothing, and replaying the log (or a snapshot plus the rest of
    /// the log) rebuilds the same state.
    #[test]
    fn replay_rebuilds_the_same_state(
        sends in prop::collection::vec((0u8..40, prop::sample::select(vec!["hi", "size 39", "size 42", "order"])), 1..120),
        cut in 0usize..400,
    ) {
        let mut state = SessionState::default();
        let mut log = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (id, text) in &sends {
            let id = format!("m-{id}");
            let before = state.seq();
            let fresh = say(&mut state, &mut log, &id, text);
            prop_assert_eq!(fresh, seen.insert(id.clone()));
            let added = if fresh { EVENTS_PER_TURN } else { 0 };
            prop_assert_eq!(state.seq().0, before.0 + added);
        }
        for (i, event) in log.iter().enumerate() {
            prop_assert_eq!(event.seq, Seq(i as u64 + 1));
        }
        let mut replayed = SessionState::default();
        for event in &log {
            replayed.apply(event).unwrap();
        }
        prop_assert_eq!(&replayed, &state);

        // A snapshot at any settled point, plus the events after it, is the same.
        let cut = (cut.min(log.len()) / 3) * 3;
        let mut partial = SessionState::default();
        for event in &log[..cut] {
            partial.apply(event).unwrap();
        }
        let bytes = Snapshot::new(uid(), 1, Epoch(1), partial).encode(&key(3));
        let mut restored = Snapshot::decode(&bytes, &key(3)).unwrap().state;
        for event in &log[cut..] {
            restored.apply(event).unwrap();
        }
        prop_assert_eq!(&restored, &state);
    }
}

fn action_turn(action: &str) -> ActionTurn {
    ActionTurn {
        intent: "lottery_draw".into(),
        confidence: 0.9,
        slots_filled: [("box".to_owned(), "2".to_owned())].into(),
        action: action.into(),
        args: [("box".to_owned(), "2".to_owned())].into(),
        policy: "v1".into(),
        dialog: [("flow".to_owned(), "lottery".to_owned())].into(),
    }
}

fn closing_reply(text: &str) -> ReplyDecision {
    ReplyDecision {
        intent: "lottery_draw".into(),
        reply_text: text.into(),
        policy: "v1".into(),
        slots_cleared: vec!["box".into()],
        dialog: Slots::new(),
    }
}

fn apply_all(state: &mut SessionState, log: &mut Vec<RecordedEvent>, events: &[RecordedEvent]) {
    for event in events {
        state.apply(event).unwrap();
        log.push(event.clone());
    }
}

#[test]
fn an_action_turn_is_pending_until_its_outcome_and_reply_close_it() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    let first = state.record_action_turn(
        &uid(),
        Epoch(1),
        5,
        mid("m-1"),
        "draw".into(),
        action_turn("draw_prize"),
    );
    apply_all(&mut state, &mut log, &first);
    let pending = state
        .pending_action()
        .expect("the action is pending")
        .clone();
    assert_eq!(
        pending.requested,
        Seq(3),
        "the requested event's seq is the key"
    );
    assert_eq!(pending.message_id, mid("m-1"));
    assert_eq!(state.actions_on_day("draw_prize", 0), 1);
    assert!(
        state.duplicate(&mid("m-1")).is_none(),
        "the turn is not answered yet"
    );

    let prize: Slots = [("prize".to_owned(), "coupon".to_owned())].into();
    let outcome = state
        .record_action_outcome(&uid(), Epoch(1), 6, ActionOutcome::Succeeded(prize))
        .unwrap();
    let reply = state
        .record_reply(
            &uid(),
            Epoch(1),
            6,
            outcome.seq,
            closing_reply("you won a coupon"),
        )
        .unwrap();
    assert_eq!((outcome.seq, reply.seq), (Seq(4), Seq(5)));
    apply_all(&mut state, &mut log, &[outcome, reply]);
    assert!(state.pending_action().is_none());
    assert!(
        state.slots().get("box").is_none(),
        "a finished flow clears its slots"
    );
    match state.duplicate(&mid("m-1")) {
        Some(Duplicate::Recent(turn)) => {
            assert_eq!((turn.turn_seq, turn.reply_seq), (Seq(1), Seq(5)));
        }
        other => panic!("expected a recent duplicate, got {other:?}"),
    }
    // Replaying the log from nothing rebuilds the same state.
    let mut replayed = SessionState::default();
    for event in &log {
        replayed.apply(event).unwrap();
    }
    assert_eq!(replayed, state);
}

#[test]
fn a_pending_action_survives_a_reload_from_the_log() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    let first = state.record_action_turn(
        &uid(),
        Epoch(1),
        5,
        mid("m-1"),
        "draw".into(),
        action_turn("pay"),
    );
    apply_all(&mut state, &mut log, &first);
    // A crash: memory lost, the log read back.
    let mut reloaded = SessionState::default();
    for event in &log {
        reloaded.apply(event).unwrap();
    }
    assert_eq!(reloaded.pending_action(), state.pending_action());
    let failed = reloaded
        .record_action_outcome(
            &uid(),
            Epoch(2),
            9,
            ActionOutcome::Failed {
                reason: "prize service down".into(),
                attempts: 4,
            },
        )
        .unwrap();
    assert!(matches!(
        failed.event,
        Event::ActionFailed {
            requested: Seq(3),
            attempts: 4,
            ..
        }
    ));
}

#[test]
fn action_events_out_of_turn_order_are_refused() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    say(&mut state, &mut log, "m-1", "hi");
    // A success for an action never requested, inside a turn.
    let first = state.record_action_turn(
        &uid(),
        Epoch(1),
        5,
        mid("m-2"),
        "draw".into(),
        action_turn("pay"),
    );
    let mut bad = first.clone();
    bad[2].event = Event::ActionSucceeded {
        requested: Seq(1),
        action: "pay".into(),
        result: Slots::new(),
    };
    let mut probe = state.clone();
    probe.apply(&bad[0]).unwrap();
    probe.apply(&bad[1]).unwrap();
    assert!(matches!(
        probe.apply(&bad[2]),
        Err(ApplyError::OutOfTurnOrder { .. })
    ));
    // A reply while the action is pending.
    apply_all(&mut state, &mut log, &first);
    let early = RecordedEvent {
        uid: uid(),
        seq: Seq(7),
        at_ms: 5,
        epoch: Epoch(1),
        event: Event::ReplyProduced {
            message_id: mid("m-2"),
            text: "too early".into(),
            policy: "v1".into(),
            intent: "x".into(),
            slots: Slots::new(),
            dialog: Slots::new(),
        },
    };
    assert!(matches!(
        state.apply(&early),
        Err(ApplyError::OutOfTurnOrder { .. })
    ));
    assert!(
        state
            .record_rejection(&uid(), Epoch(1), 5, mid("m-3"), "x".into(), "y")
            .is_none()
    );
}

#[test]
fn a_replayed_dead_letter_and_a_rejection_are_recorded_between_turns() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    let first = state.record_action_turn(
        &uid(),
        Epoch(1),
        5,
        mid("m-1"),
        "draw".into(),
        action_turn("pay"),
    );
    apply_all(&mut state, &mut log, &first);
    let failed = state
        .record_action_outcome(
            &uid(),
            Epoch(1),
            6,
            ActionOutcome::Failed {
                reason: "down".into(),
                attempts: 4,
            },
        )
        .unwrap();
    let reply = state
        .record_reply(&uid(), Epoch(1), 6, failed.seq, closing_reply("sorry"))
        .unwrap();
    apply_all(&mut state, &mut log, &[failed, reply]);
    let success = state
        .record_replayed_success(&uid(), Epoch(1), 7, Seq(3), "pay", Slots::new())
        .unwrap();
    apply_all(&mut state, &mut log, &[success]);
    let long = "<script>".repeat(100);
    let rejected = state
        .record_rejection(&uid(), Epoch(1), 8, mid("m-2"), "script tag".into(), &long)
        .unwrap();
    match &rejected.event {
        Event::InputRejected { text, .. } => assert_eq!(text.len(), REJECTED_TEXT_BYTES_MAX),
        other => panic!("unexpected {other:?}"),
    }
    apply_all(&mut state, &mut log, &[rejected]);
    assert_eq!(state.seq(), Seq(7));
    assert!(
        state.duplicate(&mid("m-2")).is_none(),
        "a refused id is not a processed turn"
    );
}

#[test]
fn daily_action_counts_restart_on_a_new_day() {
    let mut state = SessionState::default();
    let mut log = Vec::new();
    for (i, at_ms) in [10, 20, DAY_MS + 5].into_iter().enumerate() {
        let id = format!("m-{i}");
        let first = state.record_action_turn(
            &uid(),
            Epoch(1),
            at_ms,
            mid(&id),
            "draw".into(),
            action_turn("pay"),
        );
        apply_all(&mut state, &mut log, &first);
        let ok = state
            .record_action_outcome(
                &uid(),
                Epoch(1),
                at_ms,
                ActionOutcome::Succeeded(Slots::new()),
            )
            .unwrap();
        let reply = state
            .record_reply(&uid(), Epoch(1), at_ms, ok.seq, closing_reply("ok"))
            .unwrap();
        apply_all(&mut state, &mut log, &[ok, reply]);
        if i == 1 {
            assert_eq!(state.actions_on_day("pay", 0), 2);
        }
    }
    assert_eq!(state.actions_on_day("pay", 0), 0);
    assert_eq!(state.actions_on_day("pay", 1), 1);
}
