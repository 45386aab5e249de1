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
        reply_text: format!("you said {text}"),
        policy: "test-v1".into(),
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
