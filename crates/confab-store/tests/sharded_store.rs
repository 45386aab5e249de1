//! The MySQL store with its 64 shards spread over two servers.
//!
//! - The trait-level suite runs on a map of two servers: the control server
//!   holds shards 0..=31 and a second server shards 32..=63 (`a` is on shard 3,
//!   `b` on 57 and `c` on 47, so the suite's batches span both). The two
//!   servers are two databases on the shared MariaDB, each test's own: two
//!   URLs, two pools, two transactions, as with two machines.
//! - The failure tests kill a private `mariadbd`: only its shards fail.
//! - The move test moves a shard while writers write, and checks that every
//!   acknowledged write is on the new server.

mod suite;

use confab_core::{Epoch, Seq};
use confab_store::mysql::{MySqlOptions, MySqlStore, SHARD_MAP_SETTING, ShardRange, shard_of};
use confab_store::{ControlStore, EventStore, SnapshotStore, Store, StoreError};
use confab_testkit::{PrivateMariaDb, TestDatabase, shared_mysql_url};
use sqlx::Connection;
use std::sync::Arc;
use suite::{event, event_at, uid};

fn upper_half_on(url: &str) -> Vec<ShardRange> {
    vec![ShardRange {
        from: 32,
        to: 63,
        url: url.to_owned(),
    }]
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let control = TestDatabase::create(&shared_mysql_url()).await;
            let second = TestDatabase::create(&shared_mysql_url()).await;
            let store = MySqlStore::open_sharded(
                &control.url,
                &upper_half_on(&second.url),
                &MySqlOptions::default(),
            )
            .await
            .unwrap();
            suite::$name(&store).await;
            drop(store);
            control.drop_database().await;
            second.drop_database().await;
        }
    };
}

suite_test!(appended_events_read_back_in_order_after_a_seq);
suite_test!(a_batch_with_a_taken_seq_is_refused_whole);
suite_test!(snapshots_never_go_back);
suite_test!(many_sessions_in_one_batch_all_land);
suite_test!(a_claim_fences_out_older_writers);
suite_test!(a_stale_owner_cannot_write_a_snapshot);
suite_test!(load_gives_the_snapshot_and_the_events_after_it);
suite_test!(a_batch_of_large_events_lands_whole);
suite_test!(dead_letters_wait_oldest_first_up_to_a_limit);
suite_test!(dead_lettering_one_key_twice_leaves_one_entry);
suite_test!(a_resolved_dead_letter_leaves_the_queue_until_it_fails_again);
suite_test!(settings_change_only_by_compare_and_set);
suite_test!(concurrent_setting_writers_exactly_one_wins);
suite_test!(bad_control_input_is_refused_with_a_clear_error);
suite_test!(the_audit_log_lists_newest_first_and_cuts_long_entries);
suite_test!(key_usage_counts_snapshots_and_events_by_version);

async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn each_session_lives_on_its_shards_server_fence_and_snapshot_beside_its_events() {
    let control = TestDatabase::create(&shared_mysql_url()).await;
    let second = TestDatabase::create(&shared_mysql_url()).await;
    let store = MySqlStore::open_sharded(
        &control.url,
        &upper_half_on(&second.url),
        &MySqlOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((shard_of(&uid("a")), shard_of(&uid("b"))), (3, 57));
    store.claim(&uid("a"), Epoch(2)).await.unwrap();
    store.claim(&uid("b"), Epoch(2)).await.unwrap();
    store
        .append(&[
            event_at("a", 1, 2),
            event_at("b", 1, 2),
            event_at("b", 2, 2),
        ])
        .await
        .unwrap();
    let snapshot = |u: &str| confab_store::StoredSnapshot {
        uid: uid(u),
        seq: Seq(1),
        at_ms: 5,
        epoch: Epoch(2),
        bytes: b"snap".to_vec(),
    };
    store
        .write_snapshots(&[snapshot("a"), snapshot("b")])
        .await
        .unwrap();
    for (url, mine, other, table, events) in [
        (&control.url, "a", "b", "events_03", 1),
        (&second.url, "b", "a", "events_57", 2),
    ] {
        let here = |what: &str, u: &str| format!("SELECT COUNT(*) FROM {what} WHERE uid = '{u}'");
        assert_eq!(
            count(url, &here(table, mine)).await,
            events,
            "{mine}'s events"
        );
        assert_eq!(
            count(url, &here("session_epochs", mine)).await,
            1,
            "{mine}'s fence"
        );
        assert_eq!(
            count(url, &here("snapshots", mine)).await,
            1,
            "{mine}'s snapshot"
        );
        assert_eq!(count(url, &here("session_epochs", other)).await, 0);
        assert_eq!(count(url, &here("snapshots", other)).await, 0);
    }
    // The control tables are the control server's alone.
    store.put_setting("k", 0, "v").await.unwrap();
    assert_eq!(
        count(&control.url, "SELECT COUNT(*) FROM settings").await,
        1
    );
    assert_eq!(count(&second.url, "SELECT COUNT(*) FROM settings").await, 0);
    drop(store);
    control.drop_database().await;
    second.drop_database().await;
}

#[tokio::test]
async fn a_dead_server_fails_only_its_own_shards_and_serves_again_once_back() {
    let control = PrivateMariaDb::start();
    let mut second = PrivateMariaDb::start();
    let store = MySqlStore::open_sharded(
        &control.url(),
        &upper_half_on(&second.url()),
        &MySqlOptions {
            acquire_timeout: std::time::Duration::from_millis(500),
            ..MySqlOptions::default()
        },
    )
    .await
    .unwrap();
    store.append(&[event("a", 1), event("b", 1)]).await.unwrap();

    second.kill();
    // `a` (shard 3, control server) keeps serving; `b` and `c` (shards 57 and
    // 47, the dead server) answer unavailable; nothing else is refused.
    store.append(&[event("a", 2)]).await.unwrap();
    assert_eq!(
        store
            .events_after(&uid("a"), Seq(0), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    store.claim(&uid("a"), Epoch(3)).await.unwrap();
    for outcome in [
        store.append(&[event("b", 2)]).await,
        store.append(&[event("c", 1)]).await,
        store.claim(&uid("b"), Epoch(3)).await,
        store.events_after(&uid("b"), Seq(0), 10).await.map(|_| ()),
        store.read_snapshot(&uid("c")).await.map(|_| ()),
    ] {
        let err = outcome.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
    store
        .ping()
        .await
        .expect("the control server answers /readyz");
    store.put_setting("still", 0, "here").await.unwrap();

    second.restart();
    store.append(&[event("b", 2)]).await.unwrap();
    assert_eq!(
        store.events_after(&uid("b"), Seq(0), 10).await.unwrap(),
        vec![event("b", 1), event("b", 2)],
        "nothing was lost, nothing half-written"
    );
}

#[tokio::test]
async fn a_server_down_at_start_costs_only_its_shards() {
    let control = PrivateMariaDb::start();
    let mut second = PrivateMariaDb::start();
    let url = second.url();
    second.kill();
    let store = MySqlStore::open_sharded(
        &control.url(),
        &upper_half_on(&url),
        &MySqlOptions {
            acquire_timeout: std::time::Duration::from_millis(500),
            ..MySqlOptions::default()
        },
    )
    .await
    .expect("a shard server down at start does not stop the node");
    store.append(&[event("a", 1)]).await.unwrap();
    assert!(matches!(
        store.append(&[event("b", 1)]).await.unwrap_err(),
        StoreError::Unavailable(_)
    ));
    second.restart();
    // Its tables are created on first use.
    store.append(&[event("b", 1)]).await.unwrap();
    assert_eq!(
        store
            .events_after(&uid("b"), Seq(0), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_shard_moves_while_it_is_written_and_keeps_every_acknowledged_write() {
    let control = TestDatabase::create(&shared_mysql_url()).await;
    let second = TestDatabase::create(&shared_mysql_url()).await;
    let third = TestDatabase::create(&shared_mysql_url()).await;
    let ranges = upper_half_on(&second.url);
    let store = Arc::new(
        MySqlStore::open_sharded(&control.url, &ranges, &MySqlOptions::default())
            .await
            .unwrap(),
    );
    // A second node's store, opened before the move: it learns of it from the
    // old server when it next writes there.
    let other = MySqlStore::open_sharded(&control.url, &ranges, &MySqlOptions::default())
        .await
        .unwrap();
    let users: Vec<String> = (0..200)
        .map(|i| format!("u-{i}"))
        .filter(|u| shard_of(&uid(u)) == 3 || shard_of(&uid(u)) == 40)
        .collect();
    assert!(users.iter().any(|u| shard_of(&uid(u)) == 3));
    assert!(users.iter().any(|u| shard_of(&uid(u)) == 40));
    // Writers: each user appends turn after turn; each records what was acked.
    let writers: Vec<_> = users
        .iter()
        .map(|u| {
            let store = Arc::clone(&store);
            let u = u.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                for seq in 1..=30 {
                    match store.append(&[event(&u, seq)]).await {
                        Ok(()) => acked = seq,
                        Err(e) => panic!("{u} seq {seq}: {e}"),
                    }
                    tokio::task::yield_now().await;
                }
                (u, acked)
            })
        })
        .collect();
    let report = confab_store::mysql::mover::move_shard(&store, 3, &third.url, |_| {})
        .await
        .unwrap();
    let mut acked = Vec::new();
    for writer in writers {
        acked.push(writer.await.unwrap());
    }
    assert_eq!(report.shard, 3);
    assert_eq!(report.revision, 1);
    assert_eq!(store.shard_map().url_of(3), third.url);
    for (u, last) in &acked {
        assert_eq!(*last, 30);
        let events = store.events_after(&uid(u), Seq(0), 100).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            (1..=30).collect::<Vec<_>>(),
            "{u}: every acked event, once"
        );
    }
    let on_shard_3: Vec<&String> = acked
        .iter()
        .map(|(u, _)| u)
        .filter(|u| shard_of(&uid(u)) == 3)
        .collect();
    let expected = i64::try_from(on_shard_3.len() * 30).unwrap();
    assert_eq!(
        count(&third.url, "SELECT COUNT(*) FROM events_03").await,
        expected
    );
    assert_eq!(
        count(&control.url, "SELECT COUNT(*) FROM events_03").await,
        0,
        "cleaned up"
    );
    // The old server refuses the shard; the stale store follows the map.
    let straggler = on_shard_3[0];
    other.append(&[event(straggler, 31)]).await.unwrap();
    assert_eq!(other.shard_map().url_of(3), third.url);
    assert_eq!(
        count(
            &third.url,
            &format!("SELECT COUNT(*) FROM events_03 WHERE uid = '{straggler}'")
        )
        .await,
        31
    );
    let setting = store.setting(SHARD_MAP_SETTING).await.unwrap().unwrap();
    assert_eq!(setting.revision, 1);
    // A store opened afresh with the old config takes the control store's map.
    let fresh = MySqlStore::open_sharded(&control.url, &ranges, &MySqlOptions::default())
        .await
        .unwrap();
    assert_eq!(fresh.shard_map().url_of(3), third.url);
    assert_eq!(
        fresh
            .events_after(&uid(straggler), Seq(30), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Moving it where it already is is refused.
    let err = confab_store::mysql::mover::move_shard(&store, 3, &third.url, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already on"), "{err}");
    drop((store, other, fresh));
    for db in [control, second, third] {
        db.drop_database().await;
    }
}
