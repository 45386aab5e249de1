//! confab's test helpers, for the integration tests of the other crates.
//!
//! - [`PrivateRedis`] and [`PrivateMariaDb`]: real servers of the test's own, on a
//!   free port with their data in a temporary directory, that a test may kill
//!   (SIGKILL) and restart at will. They never touch the shared servers on
//!   127.0.0.1:6379 and 127.0.0.1:3306.
//! - [`DelayProxy`]: a TCP proxy whose added latency can be changed at any time,
//!   for connections already open too.
//! - [`ActionService`]: an HTTP service for actions and stages that fails,
//!   holds calls and pays once per idempotency key, as the test steers it.
//! - [`load`]: chat clients that keep talking while the cluster changes, and
//!   the check that no turn was lost or applied twice.
//! - [`netns`]: hosts of the test's own in network namespaces on a bridge, and
//!   the faults between them (partitions that drop or reset, packet loss).
//! - [`Tmpfs`]: a small tmpfs that a test fills up and frees (needs root).
//! - [`TestDatabase`]: a fresh, uniquely named database on a MariaDB/MySQL server
//!   (usually the shared one, [`shared_mysql_url`]).
//!
//! The server helpers are synchronous (they block while the server starts), so
//! they work from plain `#[test]`s and from `#[tokio::test]`s alike; from a
//! `current_thread` runtime they block it for the duration of the start.

mod action_service;
mod database;
pub mod load;
mod mariadb;
pub mod netns;
mod process;
mod proxy;
mod redis;
mod tmpfs;

pub use action_service::{ActionService, Mode};
pub use database::{TestDatabase, shared_mysql_url, shared_redis_url};
pub use mariadb::PrivateMariaDb;
pub use proxy::DelayProxy;
pub use redis::PrivateRedis;
pub use tmpfs::Tmpfs;

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the
/// port the kernel chose and closes the socket.
///
/// Another process may take the port before the caller binds it; the server
/// helpers retry with another port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}
