//! Throwaway databases on a MariaDB/MySQL server, and the shared servers' URLs.

use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};

/// The shared MariaDB/MySQL server the tests use, without a database:
/// `CONFAB_TEST_MYSQL_URL`, by default `mysql://root@127.0.0.1:3306`.
pub fn shared_mysql_url() -> String {
    std::env::var("CONFAB_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The shared Redis server the tests use: `CONFAB_TEST_REDIS_URL`, by default
/// `redis://127.0.0.1:6379/`.
pub fn shared_redis_url() -> String {
    std::env::var("CONFAB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A fresh database of a test's own, named `confab_test_<pid>_<counter>`.
///
/// It is not dropped automatically (that would need an async drop): call
/// [`TestDatabase::drop_database`] at the end of the test. One left behind by a
/// failed test is harmless, its name is never reused by a live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    /// The URL of the database: the server's URL followed by `/<name>`.
    pub url: String,
    /// The database's name.
    pub name: String,
}

impl TestDatabase {
    /// Creates a fresh database on the server at `server_url`, a URL without a
    /// database such as `mysql://root@127.0.0.1:3306` (see [`shared_mysql_url`]).
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or the database cannot be created.
    pub async fn create(server_url: &str) -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let server_url = server_url.trim_end_matches('/');
        // At most 12 + 10 + 1 + 10 = 33 characters; MySQL allows 64.
        let name = format!(
            "confab_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::MySqlConnection::connect(server_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB must run on {server_url} (.ci/run starts it on 127.0.0.1:3306 \
                     when installed): {e}"
                )
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create the database {name} on {server_url}: {e}"));
        let _ = conn.close().await;
        TestDatabase {
            url: format!("{server_url}/{name}"),
            name,
        }
    }

    /// Drops the database.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or the database cannot be dropped.
    pub async fn drop_database(self) {
        // Connecting to the database itself is fine: MySQL lets a connection
        // drop its current database.
        let mut conn = sqlx::MySqlConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE `{}`",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot drop the database {}: {e}", self.name));
        let _ = conn.close().await;
    }
}
