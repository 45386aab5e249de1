//! The embedded store through its traits, on real SQLite files.

use confab_core::session::{Event, RecordedEvent};
use confab_core::{Epoch, MessageId, Seq, Uid};
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use confab_store::{EventStore, SnapshotStore, StoreError, StoredSnapshot};

fn uid(s: &str) -> Uid {
    Uid::new(s).unwrap()
}

fn event(u: &str, seq: u64) -> RecordedEvent {
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

async fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, &SqliteOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn appended_events_read_back_in_order_after_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let batch: Vec<_> = (1..=5)
        .map(|s| event("a", s))
        .chain((1..=2).map(|s| event("b", s)))
        .collect();
    store.append(&batch).await.unwrap();
    let after_2 = store.events_after(&uid("a"), Seq(2), 100).await.unwrap();
    assert_eq!(after_2, batch[2..5].to_vec());
    let limited = store.events_after(&uid("a"), Seq(0), 2).await.unwrap();
    assert_eq!(limited, batch[0..2].to_vec());
    assert!(
        store
            .events_after(&uid("c"), Seq(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_batch_with_a_taken_seq_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
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

#[tokio::test]
async fn snapshots_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let snap = |seq: u64| StoredSnapshot {
        uid: uid("a"),
        seq: Seq(seq),
        at_ms: seq,
        epoch: Epoch(1),
        bytes: vec![seq as u8; 4],
    };
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), None);
    store.write_snapshots(&[snap(6)]).await.unwrap();
    store.write_snapshots(&[snap(3)]).await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), Some(snap(6)));
    store.write_snapshots(&[snap(9)]).await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), Some(snap(9)));
}

#[tokio::test]
async fn data_survives_reopening_and_two_stores_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).await;
        store.append(&[event("a", 1)]).await.unwrap();
    }
    // Two handles on one file, as two node processes on one data dir: their
    // writes interleave without loss.
    let (one, two) = (open(dir.path()).await, open(dir.path()).await);
    let writes = (2..=40).map(|s| {
        let store = if s % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move { store.append(&[event("x", s)]).await })
    });
    for w in writes.collect::<Vec<_>>() {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        one.events_after(&uid("a"), Seq(0), 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        two.events_after(&uid("x"), Seq(0), 100)
            .await
            .unwrap()
            .len(),
        39
    );
}
