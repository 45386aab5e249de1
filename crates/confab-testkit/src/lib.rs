//! confab's test helpers, for the integration tests of the other crates.
//!
//! - [`PrivateRedis`] and [`PrivateMariaDb`]: real servers of the test's own, on a
//!   free port with their data in a temporary directory, that a test may kill
//!   (SIGKILL) and restart at will. They never touch the shared servers on
//!   127.0.0.1:6379 and 127.0.0.1:3306.
//! - [`PrivateRedisCluster`]: a Redis Cluster of the test's own (three masters,
//!   three replicas) whose masters a test kills to watch a replica take over,
//!   and whose slots it moves between masters (MOVED and ASK).
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
mod certificates;
mod database;
mod latency;
pub mod load;
mod mariadb;
pub mod netns;
mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod signing;
mod tmpfs;

pub use action_service::{ActionService, Mode};
pub use certificates::make_certificates;
pub use database::{TestDatabase, shared_mysql_url, shared_redis_url};
pub use latency::Latency;
pub use mariadb::PrivateMariaDb;
pub use proxy::DelayProxy;
pub use redis::PrivateRedis;
pub use redis_cluster::{KilledMaster, PrivateRedisCluster, SlotMigration};
pub use signing::{SigningKey, jwks};
pub use tmpfs::Tmpfs;

use std::net::TcpListener;

/// Where [`free_port`] picks: below Linux's default ephemeral range
/// (32768–60999), so that no outgoing connection of any process is given the
/// port as its local port while a server of ours is down between a kill and a
/// restart on the same port (a restart once failed with "Address already in
/// use" that way, in a full test run).
const PORTS: std::ops::Range<u16> = 20_000..32_768;

/// How many random ports of [`PORTS`] [`free_port`] tries before it gives up.
const PORT_TRIES: usize = 1_000;

/// A TCP port on 127.0.0.1 that was free a moment ago: picks a random port of
/// 20000–32767 that binds, and closes the socket.
///
/// Another process may take the port before the caller binds it; the server
/// helpers retry with another port when that happens.
///
/// # Panics
///
/// If none of 1,000 random ports binds.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    let span = PORTS.end - PORTS.start;
    for attempt in 0..PORT_TRIES {
        let mut hasher = seed.build_hasher();
        hasher.write_usize(attempt);
        let port = PORTS.start + (hasher.finish() % u64::from(span)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port among {PORT_TRIES} random ones of {PORTS:?} on 127.0.0.1")
}
