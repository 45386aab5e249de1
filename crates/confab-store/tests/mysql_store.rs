//! The MySQL store through the same suite, on the real MariaDB of this machine
//! (`CONFAB_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`). Each test
//! works in a database of its own, dropped at its end.

mod suite;

use confab_store::mysql::{MySqlOptions, MySqlStore};
use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};

fn server_url() -> String {
    std::env::var("CONFAB_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A fresh database; dropped by `drop_database`.
async fn fresh_database() -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    // MySQL names are at most 64 characters.
    let name = format!(
        "confab_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::MySqlConnection::connect(&server_url())
        .await
        .expect("MariaDB must run on 127.0.0.1:3306 (.ci/run starts it when installed)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    (format!("{}/{name}", server_url()), name)
}

async fn drop_database(name: &str) {
    let mut conn = sqlx::MySqlConnection::connect(&server_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test]
        async fn $name() {
            let (url, db) = fresh_database().await;
            let store = MySqlStore::open(&url, &MySqlOptions::default())
                .await
                .unwrap();
            suite::$name(&store).await;
            drop(store);
            drop_database(&db).await;
        }
    };
}

suite_test!(appended_events_read_back_in_order_after_a_seq);
suite_test!(a_batch_with_a_taken_seq_is_refused_whole);
suite_test!(snapshots_never_go_back);
suite_test!(many_sessions_in_one_batch_all_land);

#[tokio::test]
async fn events_land_in_the_table_mysql_itself_computes() {
    let (url, db) = fresh_database().await;
    let store = MySqlStore::open(&url, &MySqlOptions::default())
        .await
        .unwrap();
    use confab_store::EventStore;
    store.append(&[suite::event("alice", 1)]).await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
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
    drop_database(&db).await;
}
