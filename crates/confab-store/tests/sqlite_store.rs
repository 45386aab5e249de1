//! The embedded store through its traits, on real SQLite files.

mod suite;

use confab_core::Seq;
use confab_store::EventStore;
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use suite::*;

async fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, &SqliteOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn appended_events_read_back_in_order_after_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    suite::appended_events_read_back_in_order_after_a_seq(&open(dir.path()).await).await;
}

#[tokio::test]
async fn a_batch_with_a_taken_seq_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    suite::a_batch_with_a_taken_seq_is_refused_whole(&open(dir.path()).await).await;
}

#[tokio::test]
async fn snapshots_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    suite::snapshots_never_go_back(&open(dir.path()).await).await;
}

#[tokio::test]
async fn many_sessions_in_one_batch_all_land() {
    let dir = tempfile::tempdir().unwrap();
    suite::many_sessions_in_one_batch_all_land(&open(dir.path()).await).await;
}

#[tokio::test]
async fn a_claim_fences_out_older_writers() {
    let dir = tempfile::tempdir().unwrap();
    suite::a_claim_fences_out_older_writers(&open(dir.path()).await).await;
}

#[tokio::test]
async fn a_stale_owner_cannot_write_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    suite::a_stale_owner_cannot_write_a_snapshot(&open(dir.path()).await).await;
}

#[tokio::test]
async fn load_gives_the_snapshot_and_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    suite::load_gives_the_snapshot_and_the_events_after_it(&open(dir.path()).await).await;
}

#[tokio::test]
async fn a_batch_of_large_events_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    suite::a_batch_of_large_events_lands_whole(&open(dir.path()).await).await;
}

#[tokio::test]
async fn membership_cas_lets_one_proposal_win() {
    let dir = tempfile::tempdir().unwrap();
    suite::membership_cas_lets_one_proposal_win(&open(dir.path()).await).await;
}

#[tokio::test]
async fn dead_letters_wait_oldest_first_up_to_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    suite::dead_letters_wait_oldest_first_up_to_a_limit(&open(dir.path()).await).await;
}

#[tokio::test]
async fn dead_lettering_one_key_twice_leaves_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    suite::dead_lettering_one_key_twice_leaves_one_entry(&open(dir.path()).await).await;
}

#[tokio::test]
async fn a_resolved_dead_letter_leaves_the_queue_until_it_fails_again() {
    let dir = tempfile::tempdir().unwrap();
    suite::a_resolved_dead_letter_leaves_the_queue_until_it_fails_again(&open(dir.path()).await)
        .await;
}

#[tokio::test]
async fn settings_change_only_by_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    suite::settings_change_only_by_compare_and_set(&open(dir.path()).await).await;
}

#[tokio::test]
async fn concurrent_setting_writers_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    suite::concurrent_setting_writers_exactly_one_wins(&open(dir.path()).await).await;
}

#[tokio::test]
async fn the_audit_log_lists_newest_first_and_cuts_long_entries() {
    let dir = tempfile::tempdir().unwrap();
    suite::the_audit_log_lists_newest_first_and_cuts_long_entries(&open(dir.path()).await).await;
}

#[tokio::test]
async fn key_usage_counts_snapshots_and_events_by_version() {
    let dir = tempfile::tempdir().unwrap();
    suite::key_usage_counts_snapshots_and_events_by_version(&open(dir.path()).await).await;
}

#[tokio::test]
async fn bad_control_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    suite::bad_control_input_is_refused_with_a_clear_error(&open(dir.path()).await).await;
}

#[tokio::test]
async fn two_processes_racing_on_the_member_table_never_both_win() {
    use confab_core::NodeId;
    use confab_core::membership::Status;
    use confab_store::membership::MembershipStore;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (open(dir.path()).await, open(dir.path()).await);
    let mut applied = 0;
    for round in 0..20u32 {
        let table = one.read_members().await.unwrap();
        let proposal = |who: &str| {
            table.with(
                &NodeId::new(format!("{who}-{round}")).unwrap(),
                Some(Status::Joining),
            )
        };
        let (p1, p2) = (proposal("one"), proposal("two"));
        let (r1, r2) = tokio::join!(
            one.cas_members(table.version, &p1),
            two.cas_members(table.version, &p2)
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert!(r1.applied != r2.applied, "round {round}: exactly one wins");
        applied += 1;
    }
    let table = two.read_members().await.unwrap();
    assert_eq!(table.version, applied);
    assert_eq!(table.members.len(), 20);
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

#[tokio::test]
async fn two_processes_racing_on_a_setting_never_both_win() {
    use confab_store::ControlStore;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (open(dir.path()).await, open(dir.path()).await);
    for round in 0..20u64 {
        let (r1, r2) = tokio::join!(
            one.put_setting("limits", round, "one"),
            two.put_setting("limits", round, "two")
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert!(r1 != r2, "round {round}: exactly one wins");
    }
    assert_eq!(two.setting("limits").await.unwrap().unwrap().revision, 20);
}

/// A data dir that fills up refuses writes with a clear error, and the
/// writer serves again once space is freed (after SQLite rolled a failed
/// write back by itself, the store's writer used to refuse every later
/// transaction until the process restarted).
#[tokio::test]
async fn a_full_disk_refuses_writes_and_the_writer_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = confab_testkit::Tmpfs::mount(dir.path(), "8m").unwrap();
    let store = open(dir.path()).await;
    store.append(&[event("disk", 1)]).await.unwrap();
    disk.fill(true).unwrap();
    // Large events, so that the WAL must grow.
    let text = "码".repeat(4000);
    let big: Vec<_> = (2..40)
        .map(|seq| confab_core::session::RecordedEvent {
            event: confab_core::session::Event::TurnReceived {
                message_id: confab_core::MessageId::new(format!("m-{seq}")).unwrap(),
                text: text.clone(),
            },
            ..event("disk", seq)
        })
        .collect();
    let error = store.append(&big).await.unwrap_err().to_string();
    assert!(error.contains("full"), "{error}");
    disk.fill(false).unwrap();
    store.append(&big).await.unwrap();
    let back = store
        .events_after(&uid("disk"), Seq(0), 1_000)
        .await
        .unwrap();
    assert_eq!(back.len(), 39, "nothing lost, nothing doubled");
}

#[tokio::test]
async fn writes_and_claims_name_their_node() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let as_node = |node: &str| SqliteOptions {
        node: node.into(),
        ..SqliteOptions::default()
    };
    let n1 = SqliteStore::open(dir.path(), &as_node("n1")).await.unwrap();
    let n2 = SqliteStore::open(dir.path(), &as_node("n2")).await.unwrap();
    let url = format!("sqlite://{}?mode=ro", n1.path().display());
    let rows = async |uid: &str| -> Vec<WriterRow> {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as("SELECT seq, epoch, fence, node FROM events WHERE uid = ? ORDER BY seq")
                .bind(uid)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(s, e, f, n)| (s as u64, e as u64, f as u64, n))
            .collect()
    };
    let fence = async |uid: &str| -> Option<(u64, String)> {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT epoch, node FROM session_epochs WHERE uid = ?")
                .bind(uid)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        row.map(|(e, n)| (e as u64, n))
    };
    suite::writes_and_claims_name_their_node(&n1, &n2, rows, fence).await;
}

/// A connection of its own to the store's file, inside a write transaction.
async fn holding_the_write_lock(store: &SqliteStore) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", store.path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    other
}

/// Another process's write transaction on the same file (here a connection of
/// its own) holds the write lock: the store's writer waits for it, outside
/// SQLite's busy handler, and commits once it is free.
#[tokio::test]
async fn a_write_waits_for_another_connections_lock_and_lands_once_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()).await);
    let mut other = holding_the_write_lock(&store).await;
    let writing = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move { store.append(&[event("locked", 1)]).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !writing.is_finished(),
        "the write went through another connection's lock"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    writing.await.unwrap().unwrap();
    let back = store
        .events_after(&uid("locked"), Seq(0), 10)
        .await
        .unwrap();
    assert_eq!(back, vec![event("locked", 1)]);
}

/// A lock held past `busy_timeout` fails the write with a clear error, writes
/// nothing, and the writer serves again once the lock is gone.
#[tokio::test]
async fn a_lock_held_past_busy_timeout_fails_the_write_clearly_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(200),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), &options).await.unwrap();
    let mut other = holding_the_write_lock(&store).await;
    let error = store
        .append(&[event("held", 1)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("write lock") && error.contains("busy_timeout (200 ms)"),
        "{error}"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    store.append(&[event("held", 1)]).await.unwrap();
    let back = store.events_after(&uid("held"), Seq(0), 10).await.unwrap();
    assert_eq!(
        back,
        vec![event("held", 1)],
        "written once, after the refusal"
    );
}

/// Three nodes opening one fresh data dir at once, as `confab up` starts them:
/// every open succeeds (creating the file, switching it to WAL and migrating it
/// make the others wait, never fail).
#[tokio::test]
async fn three_stores_opening_one_fresh_data_dir_at_once_all_open() {
    let options = SqliteOptions::default();
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = tokio::join!(
            SqliteStore::open(dir.path(), &options),
            SqliteStore::open(dir.path(), &options),
            SqliteStore::open(dir.path(), &options),
        );
        for store in [a, b, c] {
            store.unwrap().append(&[]).await.unwrap();
        }
    }
}
