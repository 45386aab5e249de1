//! The trait-level suite every store passes: the embedded SQLite store and MySQL.
#![allow(dead_code, unreachable_pub)]

use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, MessageId, Seq, Uid};
use confab_store::control::SETTING_KEY_BYTES_MAX;
use confab_store::membership::MembershipStore;
use confab_store::{DeadLetter, Setting, Store, StoreError, StoredSnapshot};

pub fn uid(s: &str) -> Uid {
    Uid::new(s).unwrap()
}

pub fn event(u: &str, seq: u64) -> RecordedEvent {
    RecordedEvent {
        uid: uid(u),
        seq: Seq(seq),
        at_ms: 1_000 + seq,
        epoch: Epoch(1),
        event: Event::TurnReceived {
            message_id: MessageId::new(format!("m-{seq}")).unwrap(),
            text: format!("text {seq} 你好"),
        },
    }
}

pub async fn appended_events_read_back_in_order_after_a_seq(store: &dyn Store) {
    let batch: Vec<_> = (1..=5)
        .map(|s| event("a", s))
        .chain((1..=2).map(|s| event("b", s)))
        .collect();
    store.append(&batch).await.unwrap();
    let after_2 = store.events_after(&uid("a"), Seq(2), 100).await.unwrap();
    assert_eq!(after_2, batch[2..5].to_vec());
    let limited = store.events_after(&uid("a"), Seq(0), 2).await.unwrap();
    assert_eq!(limited, batch[0..2].to_vec());
    assert_eq!(
        store.events_after(&uid("b"), Seq(0), 10).await.unwrap(),
        batch[5..].to_vec()
    );
    assert!(
        store
            .events_after(&uid("c"), Seq(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_batch_with_a_taken_seq_is_refused_whole(store: &dyn Store) {
    store.append(&[event("a", 1)]).await.unwrap();
    let err = store
        .append(&[event("b", 1), event("a", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        store
            .events_after(&uid("b"), Seq(0), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing of a refused batch is kept"
    );
}

pub async fn snapshots_never_go_back(store: &dyn Store) {
    let snap = |seq: u64| StoredSnapshot {
        uid: uid("a"),
        seq: Seq(seq),
        at_ms: seq,
        epoch: Epoch(1),
        bytes: vec![seq as u8; 40],
    };
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), None);
    store.write_snapshots(&[snap(6)]).await.unwrap();
    store.write_snapshots(&[snap(3)]).await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), Some(snap(6)));
    store.write_snapshots(&[snap(9)]).await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), Some(snap(9)));
}

pub async fn many_sessions_in_one_batch_all_land(store: &dyn Store) {
    // Enough uids to spread over every shard of a sharded store.
    let batch: Vec<_> = (0..300)
        .flat_map(|u| (1..=3).map(move |s| event(&format!("user-{u}"), s)))
        .collect();
    store.append(&batch).await.unwrap();
    for u in [0, 150, 299] {
        let events = store
            .events_after(&uid(&format!("user-{u}")), Seq(0), 10)
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
    store.ping().await.unwrap();
}

pub fn event_at(u: &str, seq: u64, epoch: u64) -> RecordedEvent {
    RecordedEvent {
        epoch: Epoch(epoch),
        ..event(u, seq)
    }
}

fn is_fenced(err: &StoreError, writer: u64, fence: u64) -> bool {
    matches!(err, StoreError::Fenced { epoch, current, .. } if *epoch == Epoch(writer) && *current == Epoch(fence))
}

pub async fn a_claim_fences_out_older_writers(store: &dyn Store) {
    store.append(&[event_at("a", 1, 1)]).await.unwrap();
    store.claim(&uid("a"), Epoch(2)).await.unwrap();

    let err = store.append(&[event_at("a", 2, 1)]).await.unwrap_err();
    assert!(is_fenced(&err, 1, 2), "{err}");
    // A batch holding a stale session is refused whole.
    let err = store
        .append(&[event_at("b", 1, 1), event_at("a", 2, 1)])
        .await
        .unwrap_err();
    assert!(is_fenced(&err, 1, 2), "{err}");
    assert!(
        store
            .events_after(&uid("b"), Seq(0), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The new owner writes on; claims never go back, and repeating one is fine.
    store.append(&[event_at("a", 2, 2)]).await.unwrap();
    let err = store.claim(&uid("a"), Epoch(1)).await.unwrap_err();
    assert!(is_fenced(&err, 1, 2), "{err}");
    store.claim(&uid("a"), Epoch(2)).await.unwrap();
    let epochs: Vec<_> = store
        .events_after(&uid("a"), Seq(0), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq.0, e.epoch.0))
        .collect();
    assert_eq!(epochs, [(1, 1), (2, 2)]);
    // Other sessions are not fenced.
    store.append(&[event_at("b", 1, 1)]).await.unwrap();
}

pub async fn a_stale_owner_cannot_write_a_snapshot(store: &dyn Store) {
    let snap = |seq: u64, epoch: u64| StoredSnapshot {
        uid: uid("a"),
        seq: Seq(seq),
        at_ms: seq,
        epoch: Epoch(epoch),
        bytes: vec![seq as u8; 40],
    };
    store.claim(&uid("a"), Epoch(3)).await.unwrap();
    store.write_snapshots(&[snap(5, 2)]).await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), None);
    store.write_snapshots(&[snap(5, 3)]).await.unwrap();
    assert_eq!(
        store.read_snapshot(&uid("a")).await.unwrap(),
        Some(snap(5, 3))
    );
    store.write_snapshots(&[snap(8, 2)]).await.unwrap();
    assert_eq!(
        store.read_snapshot(&uid("a")).await.unwrap(),
        Some(snap(5, 3))
    );
}

pub async fn load_gives_the_snapshot_and_the_events_after_it(store: &dyn Store) {
    let batch: Vec<_> = (1..=9).map(|s| event("a", s)).collect();
    store.append(&batch).await.unwrap();
    let log = store.load(&uid("a"), 100).await.unwrap();
    assert_eq!((log.snapshot, log.events), (None, batch.clone()));
    let snapshot = StoredSnapshot {
        uid: uid("a"),
        seq: Seq(6),
        at_ms: 6,
        epoch: Epoch(1),
        bytes: vec![6; 40],
    };
    store
        .write_snapshots(std::slice::from_ref(&snapshot))
        .await
        .unwrap();
    let log = store.load(&uid("a"), 100).await.unwrap();
    assert_eq!(log.snapshot, Some(snapshot));
    assert_eq!(log.events, batch[6..].to_vec());
    let log = store.load(&uid("a"), 2).await.unwrap();
    assert_eq!(log.events, batch[6..8].to_vec(), "at most the limit");
    assert_eq!(
        store.load(&uid("nobody"), 10).await.unwrap(),
        Default::default()
    );
}

pub async fn a_batch_of_large_events_lands_whole(store: &dyn Store) {
    // About 10 MB of SQL once hex-encoded: more than one query's worth for MySQL.
    let text = "码".repeat(1300);
    let batch: Vec<_> = (0..1200)
        .map(|i| RecordedEvent {
            event: Event::TurnReceived {
                message_id: MessageId::new(format!("m-{i}")).unwrap(),
                text: text.clone(),
            },
            ..event(&format!("big-{}", i % 40), 1 + i / 40)
        })
        .collect();
    store.append(&batch).await.unwrap();
    let events = store
        .events_after(&uid("big-7"), Seq(0), 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 30);
    assert_eq!(events[29], batch[29 * 40 + 7]);
}

pub async fn membership_cas_lets_one_proposal_win(store: &dyn MembershipStore) {
    use confab_core::NodeId;
    use confab_core::membership::{MemberTable, Status};
    let node = |s: &str| NodeId::new(s).unwrap();
    let empty = store.read_members().await.unwrap();
    assert_eq!(empty, MemberTable::default());
    // Two nodes propose from the same table: one wins, the other learns it.
    let a = empty.with(&node("a"), Some(Status::Joining));
    let b = empty.with(&node("b"), Some(Status::Joining));
    let first = store.cas_members(0, &a).await.unwrap();
    assert!(first.applied);
    assert_eq!(first.table, a);
    let second = store.cas_members(0, &b).await.unwrap();
    assert!(!second.applied);
    assert_eq!(second.table, a);
    // The loser proposes again from what it learned.
    let both = second.table.with(&node("b"), Some(Status::Up));
    assert!(store.cas_members(1, &both).await.unwrap().applied);
    assert_eq!(store.read_members().await.unwrap(), both);
    assert_eq!(both.ring_nodes(), [node("b")]);
    // A proposal whose version does not follow is a bug, refused.
    let err = store.cas_members(2, &both).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(store.read_members().await.unwrap(), both);
}

pub fn dead_letter(u: &str, seq: u64, action: &str) -> DeadLetter {
    DeadLetter {
        id: 0,
        uid: uid(u),
        seq: Seq(seq),
        action: action.into(),
        args: [
            ("colour".to_owned(), "黑色".to_owned()),
            ("size".to_owned(), "39".to_owned()),
        ]
        .into_iter()
        .collect(),
        reason: "shop api: 503 服务不可用".into(),
        attempts: 3,
        created_ms: 1_000 + seq,
    }
}

pub async fn dead_letters_wait_oldest_first_up_to_a_limit(store: &dyn Store) {
    assert_eq!(store.dead_letter_depth().await.unwrap(), 0);
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    let mut queued = Vec::new();
    for (u, seq, action) in [("a", 4, "ship"), ("b", 2, "refund"), ("a", 4, "notify")] {
        let mut entry = dead_letter(u, seq, action);
        entry.id = 999; // ignored
        let id = store.dead_letter(&entry).await.unwrap();
        queued.push(DeadLetter { id, ..entry });
    }
    assert!(queued[0].id < queued[1].id && queued[1].id < queued[2].id);
    assert_eq!(store.dead_letters(10).await.unwrap(), queued);
    assert_eq!(store.dead_letters(2).await.unwrap(), queued[..2]);
    assert!(store.dead_letters(0).await.unwrap().is_empty());
    assert_eq!(store.dead_letter_depth().await.unwrap(), 3);
    assert_eq!(
        store.dead_letter_by_id(queued[1].id).await.unwrap(),
        Some(queued[1].clone())
    );
    assert_eq!(
        store.dead_letter_by_id(queued[2].id + 100).await.unwrap(),
        None
    );
}

pub async fn dead_lettering_one_key_twice_leaves_one_entry(store: &dyn Store) {
    let first = dead_letter("a", 7, "ship");
    let id = store.dead_letter(&first).await.unwrap();
    let again = DeadLetter {
        reason: "shop api: timeout".into(),
        attempts: 6,
        created_ms: 9_999,
        ..first.clone()
    };
    assert_eq!(store.dead_letter(&again).await.unwrap(), id);
    assert_eq!(store.dead_letter(&again).await.unwrap(), id);
    assert_eq!(store.dead_letter_depth().await.unwrap(), 1);
    // The reason and attempts are the latest; the entry is as old as its first failure.
    let waiting = DeadLetter {
        id,
        created_ms: first.created_ms,
        ..again
    };
    assert_eq!(store.dead_letters(10).await.unwrap(), [waiting]);
}

pub async fn a_resolved_dead_letter_leaves_the_queue_until_it_fails_again(store: &dyn Store) {
    let one = store
        .dead_letter(&dead_letter("a", 1, "ship"))
        .await
        .unwrap();
    let two = store
        .dead_letter(&dead_letter("a", 2, "ship"))
        .await
        .unwrap();
    assert!(store.resolve_dead_letter(one, 5_000).await.unwrap());
    assert_eq!(store.dead_letter_depth().await.unwrap(), 1);
    assert_eq!(store.dead_letter_by_id(one).await.unwrap(), None);
    let waiting: Vec<_> = store
        .dead_letters(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(waiting, [two]);
    assert!(
        !store.resolve_dead_letter(one, 6_000).await.unwrap(),
        "resolved once only"
    );
    assert!(
        !store.resolve_dead_letter(two + 100, 6_000).await.unwrap(),
        "no such entry"
    );

    // The same action fails again: it waits again, under its old id.
    let failed_again = DeadLetter {
        reason: "shop api: 500".into(),
        attempts: 9,
        ..dead_letter("a", 1, "ship")
    };
    assert_eq!(store.dead_letter(&failed_again).await.unwrap(), one);
    assert_eq!(store.dead_letter_depth().await.unwrap(), 2);
    let entry = store.dead_letter_by_id(one).await.unwrap().unwrap();
    assert_eq!(
        (entry.reason.as_str(), entry.attempts),
        ("shop api: 500", 9)
    );
    assert!(store.resolve_dead_letter(one, 7_000).await.unwrap());
    assert!(store.resolve_dead_letter(two, 7_000).await.unwrap());
    assert_eq!(store.dead_letter_depth().await.unwrap(), 0);
}

pub async fn settings_change_only_by_compare_and_set(store: &dyn Store) {
    let setting = |revision, body: &str| Setting {
        revision,
        body: body.into(),
    };
    assert_eq!(store.setting("dialog").await.unwrap(), None);
    assert!(store.put_setting("dialog", 0, "v1 回复").await.unwrap());
    assert_eq!(
        store.setting("dialog").await.unwrap(),
        Some(setting(1, "v1 回复"))
    );
    // Stale or future revisions are refused and change nothing.
    assert!(!store.put_setting("dialog", 0, "lost").await.unwrap());
    assert!(!store.put_setting("dialog", 2, "lost").await.unwrap());
    assert_eq!(
        store.setting("dialog").await.unwrap(),
        Some(setting(1, "v1 回复"))
    );
    assert!(store.put_setting("dialog", 1, "v2").await.unwrap());
    assert_eq!(
        store.setting("dialog").await.unwrap(),
        Some(setting(2, "v2"))
    );
    // Keys are distinct byte for byte.
    assert_eq!(store.setting("Dialog").await.unwrap(), None);
    assert!(store.put_setting("Dialog", 0, "other").await.unwrap());
    assert_eq!(
        store.setting("dialog").await.unwrap(),
        Some(setting(2, "v2"))
    );
}

pub async fn concurrent_setting_writers_exactly_one_wins(store: &dyn Store) {
    for round in 0..10u64 {
        let (a, b, c, d) = tokio::join!(
            store.put_setting("limits", round, "a"),
            store.put_setting("limits", round, "b"),
            store.put_setting("limits", round, "c"),
            store.put_setting("limits", round, "d"),
        );
        let won: Vec<bool> = [a, b, c, d].into_iter().map(Result::unwrap).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
    }
    assert_eq!(store.setting("limits").await.unwrap().unwrap().revision, 10);
}

pub async fn bad_control_input_is_refused_with_a_clear_error(store: &dyn Store) {
    let edge = "k".repeat(SETTING_KEY_BYTES_MAX);
    assert!(store.put_setting(&edge, 0, "fits").await.unwrap());
    assert_eq!(store.setting(&edge).await.unwrap().unwrap().body, "fits");

    let long = "k".repeat(SETTING_KEY_BYTES_MAX + 1);
    for err in [
        store.put_setting(&long, 0, "x").await.unwrap_err(),
        store.setting(&long).await.unwrap_err(),
        store.put_setting("", 0, "x").await.unwrap_err(),
        store.put_setting("a key", 0, "x").await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
    let err = store.put_setting(&long, 0, "x").await.unwrap_err();
    assert!(err.to_string().contains("129 bytes, at most 128"), "{err}");

    let err = store
        .dead_letter(&dead_letter("a", 1, &"x".repeat(65)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(store.dead_letter_depth().await.unwrap(), 0);

    // A long reason is cut, not refused.
    let verbose = DeadLetter {
        reason: "错".repeat(5_000),
        ..dead_letter("a", 1, &"x".repeat(64))
    };
    let id = store.dead_letter(&verbose).await.unwrap();
    let stored = store.dead_letter_by_id(id).await.unwrap().unwrap();
    assert_eq!(stored.reason, "错".repeat(1365));
}

/// One event row as a checker reads it from the store: (seq, epoch, the fence
/// it passed, the node that wrote it).
pub type WriterRow = (u64, u64, u64, String);

/// Two stores on one database, as two nodes: every row names the node that
/// wrote it and the fence it passed, and the fence names the node whose claim
/// raised it. `rows` reads a session's events, `fence` its fence record, both
/// from the database itself.
pub async fn writes_and_claims_name_their_node(
    n1: &dyn Store,
    n2: &dyn Store,
    rows: impl AsyncFn(&str) -> Vec<WriterRow>,
    fence: impl AsyncFn(&str) -> Option<(u64, String)>,
) {
    n1.append(&[event_at("a", 1, 1)]).await.unwrap();
    assert_eq!(fence("a").await, None, "epoch 1 needs no claim");
    n1.claim(&uid("a"), Epoch(2)).await.unwrap();
    n1.append(&[event_at("a", 2, 2)]).await.unwrap();
    n2.claim(&uid("a"), Epoch(3)).await.unwrap();
    // n1 still thinks it owns the session: refused, and nothing of it lands.
    let err = n1.append(&[event_at("a", 3, 2)]).await.unwrap_err();
    assert!(is_fenced(&err, 2, 3), "{err}");
    n2.append(&[event_at("a", 3, 3), event_at("b", 1, 1)])
        .await
        .unwrap();
    // Repeating a held claim, or an older one, changes no claimant.
    n2.claim(&uid("a"), Epoch(3)).await.unwrap();
    assert!(n1.claim(&uid("a"), Epoch(2)).await.is_err());

    assert_eq!(
        rows("a").await,
        [
            (1, 1, 1, "n1".to_owned()),
            (2, 2, 2, "n1".to_owned()),
            (3, 3, 3, "n2".to_owned())
        ]
    );
    assert_eq!(rows("b").await, [(1, 1, 1, "n2".to_owned())]);
    assert_eq!(fence("a").await, Some((3, "n2".to_owned())));
}

pub async fn the_audit_log_lists_newest_first_and_cuts_long_entries(store: &dyn Store) {
    use confab_store::audit::{AuditEntry, TEXT_BYTES_MAX};
    let entry = |n: u64, action: String| AuditEntry {
        id: 0,
        at_ms: 1_000 + n,
        who: "ops".into(),
        node: "node-1".into(),
        action,
        status: 200,
        result: "ok".into(),
    };
    let first = store.audit(&entry(1, "POST /a".into())).await.unwrap();
    let second = store
        .audit(&entry(2, format!("POST /{}", "x".repeat(10_000))))
        .await
        .unwrap();
    assert!(second > first);
    let listed = store.audit_entries(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, second, "newest first");
    assert_eq!(listed[0].action.len(), TEXT_BYTES_MAX);
    assert_eq!(
        listed[1],
        AuditEntry {
            id: first,
            ..entry(1, "POST /a".into())
        }
    );
    assert_eq!(store.audit_entries(1).await.unwrap().len(), 1);
}

pub async fn key_usage_counts_snapshots_and_events_by_version(store: &dyn Store) {
    use confab_core::crypto::{DataKey, KeyRing};
    use confab_core::session::{SessionState, Snapshot, SnapshotKey};
    let v1 = KeyRing::new([DataKey::new(1, &[1; 32]).unwrap()]);
    let v2 = KeyRing::new([DataKey::new(2, &[2; 32]).unwrap()]);
    let snap = |u: &str, bytes: Vec<u8>| StoredSnapshot {
        uid: uid(u),
        seq: Seq(0),
        at_ms: 1,
        epoch: Epoch(1),
        bytes,
    };
    let frozen = |u: &str| Snapshot::new(uid(u), 1, Epoch(1), SessionState::default());
    store
        .write_snapshots(&[
            snap("ku-a", frozen("ku-a").seal(v1.current().unwrap(), [0; 12])),
            snap("ku-b", frozen("ku-b").seal(v2.current().unwrap(), [0; 12])),
            snap(
                "ku-c",
                frozen("ku-c").encode(&SnapshotKey::new(vec![3; 32]).unwrap()),
            ),
        ])
        .await
        .unwrap();
    let counts = store.snapshot_key_versions().await.unwrap();
    assert_eq!(counts.get(&1), Some(&1));
    assert_eq!(counts.get(&2), Some(&1));
    assert_eq!(
        counts.get(&confab_store::key_usage::PLAINTEXT_SNAPSHOTS),
        Some(&1)
    );
    let not_v2 = store.snapshots_not_under(2, None, 10).await.unwrap();
    assert!(not_v2.contains(&uid("ku-a")) && not_v2.contains(&uid("ku-c")));
    assert!(!not_v2.contains(&uid("ku-b")));
    let after_a = store
        .snapshots_not_under(2, Some(&uid("ku-a")), 10)
        .await
        .unwrap();
    assert!(!after_a.contains(&uid("ku-a")) && after_a.contains(&uid("ku-c")));

    let mut sealed = event("ku-e", 1);
    sealed.event = Event::TurnReceived {
        message_id: MessageId::new("m-1").unwrap(),
        text: v2.seal(&uid("ku-e"), "text", "hi", [0; 12]).unwrap(),
    };
    store.append(&[sealed]).await.unwrap();
    assert_eq!(store.events_sealed_under(2).await.unwrap(), 1);
    assert_eq!(store.events_sealed_under(1).await.unwrap(), 0);
    assert_eq!(store.events_sealed_under(22).await.unwrap(), 0);
}
