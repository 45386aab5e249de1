//! The MySQL store through the same suite, on the real MariaDB of this machine
//! (`CONFAB_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`). Each test
//! works in a database of its own, dropped at its end.

mod suite;

use confab_store::mysql::{MySqlOptions, MySqlStore};
use confab_testkit::{TestDatabase, shared_mysql_url};
use sqlx::Connection;

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDatabase::create(&shared_mysql_url()).await;
            let store = MySqlStore::open(&db.url, &MySqlOptions::default())
                .await
                .unwrap();
            suite::$name(&store).await;
            drop(store);
            db.drop_database().await;
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

#[tokio::test]
async fn events_land_in_the_table_mysql_itself_computes() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let store = MySqlStore::open(&db.url, &MySqlOptions::default())
        .await
        .unwrap();
    use confab_store::EventStore;
    store.append(&[suite::event("alice", 1)]).await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    let (shard,): (u64,) = sqlx::query_as("SELECT CRC32('alice') % 64")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let table = format!("events_{shard:02}");
    let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE uid = 'alice'"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(count, 1, "alice's event is in {table}");
    drop(store);
    db.drop_database().await;
}

#[tokio::test]
async fn writes_and_claims_name_their_node() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let as_node = |node: &str| MySqlOptions {
        node: node.into(),
        ..MySqlOptions::default()
    };
    let n1 = MySqlStore::open(&db.url, &as_node("n1")).await.unwrap();
    let n2 = MySqlStore::open(&db.url, &as_node("n2")).await.unwrap();
    let url = db.url.clone();
    let rows = async |uid: &str| -> Vec<suite::WriterRow> {
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        let table = format!("events_{:02}", crc32fast::hash(uid.as_bytes()) % 64);
        let rows: Vec<(u64, u64, u64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT seq, epoch, fence, node FROM {table} WHERE uid = ? ORDER BY seq"
        )))
        .bind(uid.as_bytes())
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(s, e, f, n)| (s, e, f, String::from_utf8(n).unwrap()))
            .collect()
    };
    let fence = async |uid: &str| -> Option<(u64, String)> {
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        let row: Option<(u64, Vec<u8>)> =
            sqlx::query_as("SELECT epoch, node FROM session_epochs WHERE uid = ?")
                .bind(uid.as_bytes())
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        row.map(|(e, n)| (e, String::from_utf8(n).unwrap()))
    };
    suite::writes_and_claims_name_their_node(&n1, &n2, rows, fence).await;
    drop((n1, n2));
    db.drop_database().await;
}

/// Nodes started together open one fresh database at the same moment: each
/// waits while another applies the migrations, and every one of them starts
/// (on MariaDB, sqlx's own migration lock never held, and one node found
/// another's migration half-done: "migration 3 is partially applied").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_opening_a_fresh_database_together_all_start() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = db.url.clone();
        opening.spawn(async move { MySqlStore::open(&url, &MySqlOptions::default()).await });
    }
    let mut stores = Vec::new();
    while let Some(opened) = opening.join_next().await {
        stores.push(opened.unwrap().expect("every node opens the database"));
    }
    let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    let (applied, done): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), CAST(SUM(success) AS SIGNED) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/mysql"))
        .unwrap()
        .count();
    assert_eq!(
        (applied, done),
        (i64::try_from(files).unwrap(), i64::try_from(files).unwrap()),
        "each migration applied once, and whole"
    );
    let _ = conn.close().await;
    drop(stores);
    db.drop_database().await;
}
