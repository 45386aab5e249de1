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

/// A TCP port on 127.0.0.1 that was free a moment ago and that no other test
/// process on this machine is given while this one runs: picks a random port
/// of 20000–32767 that this process can reserve and that binds, and closes the
/// socket.
///
/// The reservation is an advisory lock on a file named after the port in
/// `$TMPDIR/confab-test-ports-<uid>`, held until the process exits. Without it two
/// tests running at once (nextest runs each in a process of its own) could
/// pick the same port: one's server failed to bind, and while it was failing
/// the other's answered its readiness probe, so that two tests shared one
/// server, and one of them killed it under the other (a full run saw "migration
/// 4 is partially applied" that way). A server killed and restarted on its port
/// keeps the reservation between the two.
///
/// A process that is not one of these tests may still take the port before the
/// caller binds it; the server helpers retry with another port when that
/// happens, and check that the server that answers is theirs.
///
/// # Panics
///
/// If none of 1,000 random ports can be reserved and binds.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    let span = PORTS.end - PORTS.start;
    for attempt in 0..PORT_TRIES {
        let mut hasher = seed.build_hasher();
        hasher.write_usize(attempt);
        let port = PORTS.start + (hasher.finish() % u64::from(span)) as u16;
        if reserve(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port among {PORT_TRIES} random ones of {PORTS:?} on 127.0.0.1")
}

/// `n` consecutive ports, `P..P+n`, each free a moment ago and reserved as
/// [`free_port`]'s are (for `confab up`, whose node i listens on `P+i-1`).
///
/// # Panics
///
/// If `n` is 0, or no run of `n` ports can be reserved in 1,000 tries.
pub fn free_ports(n: u16) -> u16 {
    assert!(n > 0, "free_ports(0)");
    for _ in 0..PORT_TRIES {
        let first = free_port();
        let Some(last) = first.checked_add(n - 1).filter(|last| *last < PORTS.end) else {
            continue;
        };
        // A port reserved before one of the run fails stays reserved, unused,
        // until the process exits.
        if (first + 1..=last).all(|p| reserve(p) && TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports among {PORT_TRIES} tries in {PORTS:?} on 127.0.0.1")
}

/// The port reservations this process holds: their locked files, kept open
/// (and so locked) until the process exits.
static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// Takes the advisory lock of `port`'s file, unless another process holds it.
/// Panics if the directory of the reservations cannot be written.
/// Where the port files are, created once per process. One directory per
/// user: another user's test runs cannot take a port file of ours, nor we
/// theirs (their ports are still refused by the bind).
fn reservations_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "confab-test-ports-{}",
            nix::unistd::getuid().as_raw()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}

fn reserve(port: u16) -> bool {
    let path = reservations_dir().join(port.to_string());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    match file.try_lock() {
        Ok(()) => {
            reserved.push(file);
            true
        }
        // Held by another process, or by this one (a lock on a second open
        // file of the same path conflicts with the first): either way taken.
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_handed_out_is_not_handed_out_again_while_the_process_runs() {
        let port = free_port();
        assert!(
            !reserve(port),
            "port {port} was handed out and is still reservable"
        );
        let others: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(!others.contains(&port));
    }

    #[test]
    fn a_run_of_ports_is_reserved_whole() {
        let first = free_ports(3);
        for port in first..first + 3 {
            assert!(!reserve(port), "port {port} of the run is still reservable");
        }
    }
}
