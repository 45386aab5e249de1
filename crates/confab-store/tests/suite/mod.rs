//! The trait-level suite every store passes: the embedded SQLite store and MySQL.
#![allow(dead_code, unreachable_pub)]

use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, MessageId, Seq, Uid};
use confab_store::{Store, StoreError, StoredSnapshot};

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
