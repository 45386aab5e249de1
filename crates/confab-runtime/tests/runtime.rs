//! The runtime on a real SQLite store: turns, idempotency, isolation of a failing
//! session, passivation, limits, turns whose caller gave up, shutdown snapshots,
//! periodic snapshots and fencing.

mod common;

use common::*;
use confab_core::{Epoch, Seq};
use confab_runtime::TurnError;
use confab_store::{EventStore, SnapshotStore, Store};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_recorded_and_a_repeated_id_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    assert_eq!(
        say(&rt, "a", "m-1", "hi").await.unwrap(),
        (1, 3, "echo: hi".into())
    );
    assert_eq!(
        say(&rt, "a", "m-2", "39码").await.unwrap(),
        (4, 6, "echo: 39码".into())
    );
    let again = rt
        .turn(uid("a"), mid("m-1"), "different text".into())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!((again.ack_seq, again.reply.seq), (Seq(1), Seq(3)));
    assert_eq!(again.reply.text, "echo: hi");
    let log = store.events_after(&uid("a"), Seq(0), 100).await.unwrap();
    assert_eq!(log.len(), 6, "the repeat added no event");
    let info = rt.hello(uid("a")).await.unwrap();
    assert_eq!(info.last_seq, Seq(6));
    let replies = rt.replies_after(&uid("a"), Seq(3), 100).await.unwrap();
    assert_eq!(replies.iter().map(|r| r.seq.0).collect::<Vec<_>>(), [6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_restarts_from_its_log_and_touches_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        store(dir.path()).await as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    say(&rt, "victim", "m-1", "hi").await.unwrap();
    say(&rt, "bystander", "m-1", "hi").await.unwrap();
    let err = say(&rt, "victim", "m-2", "boom").await.unwrap_err();
    assert!(matches!(err, TurnError::Internal(_)), "{err:?}");
    // The bystander's actor kept its state: a repeat is still answered from memory.
    assert_eq!(say(&rt, "bystander", "m-2", "more").await.unwrap().0, 4);
    // The victim restarts at the right seq and still knows its first turn.
    assert_eq!(say(&rt, "victim", "m-3", "again").await.unwrap().0, 4);
    let repeat = rt
        .turn(uid("victim"), mid("m-1"), "hi".into())
        .await
        .unwrap();
    assert!(repeat.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_passivates_with_a_snapshot_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let mut cfg = config(1);
    cfg.passivate_after = Duration::from_millis(200);
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        cfg,
        TestPolicy::default(),
    )
    .await;
    say(&rt, "sleepy", "m-1", "39码").await.unwrap();
    assert_eq!(rt.resident().await, 1);
    eventually(async || rt.resident().await == 0).await;
    eventually(async || store.read_snapshot(&uid("sleepy")).await.unwrap().is_some()).await;
    let snapshot = store.read_snapshot(&uid("sleepy")).await.unwrap().unwrap();
    assert_eq!(snapshot.seq, Seq(3));
    assert_eq!(say(&rt, "sleepy", "m-2", "hi").await.unwrap().0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_session_queue_gets_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let policy = TestPolicy::default();
    let mut cfg = config(1);
    cfg.session_queue_max = 2;
    let rt = start(
        store(dir.path()).await as Arc<dyn Store>,
        cfg,
        policy.clone(),
    )
    .await;
    let first = tokio::spawn({
        let rt = rt.clone();
        async move { say(&rt, "busy", "m-1", "wait").await }
    });
    // The first turn holds the session; wait until it is inside the policy.
    eventually(async || rt.resident().await == 1).await;
    // The first turn counts as queued until it is answered, so with a limit of
    // two, one more turn fits and every other is refused at once.
    let extra: Vec<_> = (0..5)
        .map(|i| {
            let rt = rt.clone();
            tokio::spawn(async move { say(&rt, "busy", &format!("m-x{i}"), "queued").await })
        })
        .collect();
    eventually(async || extra.iter().filter(|t| t.is_finished()).count() == 4).await;
    policy.open();
    assert_eq!(first.await.unwrap().unwrap().0, 1);
    let mut overloaded = 0;
    for task in extra {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(TurnError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(overloaded, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_bounds_turns_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let policy = TestPolicy::default();
    let mut cfg = config(1);
    cfg.inflight_turns_max = 2;
    let rt = start(
        store(dir.path()).await as Arc<dyn Store>,
        cfg,
        policy.clone(),
    )
    .await;
    let held: Vec<_> = ["u1", "u2"]
        .into_iter()
        .map(|u| {
            let rt = rt.clone();
            tokio::spawn(async move { say(&rt, u, "m-1", "wait").await })
        })
        .collect();
    eventually(async || rt.resident().await == 2).await;
    let err = say(&rt, "u3", "m-1", "hi").await.unwrap_err();
    assert!(matches!(err, TurnError::Overloaded(_)), "{err:?}");
    policy.open();
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert!(
        say(&rt, "u3", "m-1", "hi").await.is_ok(),
        "capacity comes back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_snapshots_every_resident_session_and_refuses_later_turns() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    for u in ["a", "b", "c"] {
        say(&rt, u, "m-1", "hi").await.unwrap();
    }
    say(&rt, "a", "m-2", "hi").await.unwrap();
    assert_eq!(rt.shutdown().await.unwrap(), 3);
    assert_eq!(
        store.read_snapshot(&uid("a")).await.unwrap().unwrap().seq,
        Seq(6)
    );
    assert_eq!(
        store.read_snapshot(&uid("c")).await.unwrap().unwrap().seq,
        Seq(3)
    );
    assert!(say(&rt, "a", "m-3", "hi").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_fails_its_checksum_is_refused_and_the_log_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    say(&rt, "a", "m-1", "39码").await.unwrap();
    rt.shutdown().await.unwrap();
    // One byte of the stored snapshot flipped (same seq, so the store takes it):
    // it fails its checksum, and the events rebuild the session.
    let mut snapshot = store.read_snapshot(&uid("a")).await.unwrap().unwrap();
    let middle = snapshot.bytes.len() / 2;
    snapshot.bytes[middle] ^= 0x01;
    store.write_snapshots(&[snapshot]).await.unwrap();
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    let repeat = rt.turn(uid("a"), mid("m-1"), "39码".into()).await.unwrap();
    assert!(repeat.duplicate);
    assert_eq!(say(&rt, "a", "m-2", "hi").await.unwrap().0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_bounds_resident_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1);
    cfg.resident_sessions_max = 2;
    let rt = start(
        store(dir.path()).await as Arc<dyn Store>,
        cfg,
        TestPolicy::default(),
    )
    .await;
    say(&rt, "one", "m-1", "hi").await.unwrap();
    say(&rt, "two", "m-1", "hi").await.unwrap();
    let err = say(&rt, "three", "m-1", "hi").await.unwrap_err();
    assert!(matches!(err, TurnError::Overloaded(_)), "{err:?}");
    assert!(
        say(&rt, "one", "m-2", "hi").await.is_ok(),
        "resident sessions still serve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_fenced_by_a_newer_owner_records_nothing_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        TestPolicy::default(),
    )
    .await;
    say(&rt, "moved", "m-1", "hi").await.unwrap();
    say(&rt, "stays", "m-1", "hi").await.unwrap();
    // Another node takes the session over at a newer epoch.
    store.claim(&uid("moved"), Epoch(2)).await.unwrap();

    let err = say(&rt, "moved", "m-2", "hi").await.unwrap_err();
    assert!(
        matches!(&err, TurnError::Unavailable(why) if why.contains("no longer owns")),
        "{err:?}"
    );
    let log = store
        .events_after(&uid("moved"), Seq(0), 100)
        .await
        .unwrap();
    assert_eq!(log.len(), 3, "the stale owner wrote nothing");
    eventually(async || rt.resident().await == 1).await;
    // Reactivating does not help a stale node: the claim itself is refused.
    let err = say(&rt, "moved", "m-2", "hi").await.unwrap_err();
    assert!(matches!(err, TurnError::Unavailable(_)), "{err:?}");
    assert_eq!(say(&rt, "stays", "m-2", "hi").await.unwrap().0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_every_n_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let mut cfg = config(1);
    cfg.snapshot_every_events = 6;
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        cfg,
        TestPolicy::default(),
    )
    .await;
    say(&rt, "a", "m-1", "hi").await.unwrap();
    assert_eq!(store.read_snapshot(&uid("a")).await.unwrap(), None);
    say(&rt, "a", "m-2", "hi").await.unwrap();
    eventually(async || store.read_snapshot(&uid("a")).await.unwrap().is_some()).await;
    assert_eq!(
        store.read_snapshot(&uid("a")).await.unwrap().unwrap().seq,
        Seq(6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let mut cfg = config(1);
    cfg.snapshot_every = Duration::from_millis(100);
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        cfg,
        TestPolicy::default(),
    )
    .await;
    say(&rt, "a", "m-1", "hi").await.unwrap();
    eventually(async || store.read_snapshot(&uid("a")).await.unwrap().is_some()).await;
    assert_eq!(
        store.read_snapshot(&uid("a")).await.unwrap().unwrap().seq,
        Seq(3)
    );
    assert_eq!(rt.resident().await, 1, "a snapshot does not passivate");
    say(&rt, "a", "m-2", "hi").await.unwrap();
    eventually(async || store.read_snapshot(&uid("a")).await.unwrap().unwrap().seq == Seq(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_queued_behind_a_fenced_session_get_unavailable_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let policy = TestPolicy::default();
    let rt = start(
        Arc::clone(&store) as Arc<dyn Store>,
        config(1),
        policy.clone(),
    )
    .await;
    say(&rt, "moved", "m-1", "hi").await.unwrap();
    // One turn inside the policy, three queued behind it.
    let spawn = |id: &str, text: &'static str| {
        let (rt, id) = (rt.clone(), id.to_owned());
        tokio::spawn(async move { say(&rt, "moved", &id, text).await })
    };
    let mut turns = vec![spawn("m-2", "wait")];
    eventually(async || policy.waiting.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
    turns.extend([spawn("m-3", "q1"), spawn("m-4", "q2"), spawn("m-5", "q3")]);
    // Let them reach the session's mailbox (how long does not change the outcome:
    // a turn that arrives later is refused by the fence all the same).
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.claim(&uid("moved"), Epoch(2)).await.unwrap();
    policy.open();
    for turn in turns {
        let err = turn.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, TurnError::Unavailable(why) if why.contains("no longer owns")),
            "{err:?}"
        );
    }
    assert_eq!(
        store
            .events_after(&uid("moved"), Seq(0), 100)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// A turn that waited behind a slow one past its caller's timeout is not run
/// when the session reaches it: nothing is recorded for it, and the client's
/// retry with the same id is recorded once, as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_whose_caller_gave_up_is_not_run_and_its_retry_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let policy = TestPolicy::default();
    let mut cfg = config(1);
    cfg.turn_timeout = Duration::from_millis(300);
    let rt = start(Arc::clone(&store) as Arc<dyn Store>, cfg, policy.clone()).await;
    let first = tokio::spawn({
        let rt = rt.clone();
        async move { say(&rt, "slow", "m-1", "wait").await }
    });
    eventually(async || policy.waiting.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
    // Queued behind the held turn; its caller gives up after 300 ms.
    let err = say(&rt, "slow", "m-2", "hi").await.unwrap_err();
    assert!(matches!(err, TurnError::Internal(_)), "{err:?}");
    policy.open();
    // The first turn ran on (its caller had gone too, but it was under way).
    let _ = first.await.unwrap();
    eventually(async || {
        store
            .events_after(&uid("slow"), Seq(0), 100)
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    // m-2 was reached and dropped: the log holds the first turn only, and
    // the retry is recorded once, right after it.
    let retried = rt.turn(uid("slow"), mid("m-2"), "hi".into()).await.unwrap();
    assert!(!retried.duplicate, "m-2 had not been recorded");
    assert_eq!(retried.ack_seq, Seq(4));
    let log = store.events_after(&uid("slow"), Seq(0), 100).await.unwrap();
    assert_eq!(log.len(), 6);
}
