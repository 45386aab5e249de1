//! A private Redis Cluster: three masters and three replicas.

use crate::process::{self, NotReady};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const REDIS_SERVER: &str = "redis-server";
const REDIS_CLI: &str = "redis-cli";
/// Masters, and as many replicas (one each).
const MASTERS: usize = 3;
const NODES: usize = 2 * MASTERS;
/// How long a node may be unreachable before the others mark it failed: short,
/// so that a failover takes about two seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// From the servers' start to a formed cluster whose replicas have synced.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports a node tries when the one it picked gets taken meanwhile.
const PORT_ATTEMPTS: usize = 3;
/// How often the cluster's state is polled.
const POLL: Duration = Duration::from_millis(50);

/// A Redis Cluster of the test's own on 127.0.0.1: six `redis-server
/// --cluster-enabled yes` on free ports (client and bus ports both chosen),
/// formed by `redis-cli --cluster create --cluster-replicas 1` into three
/// masters with one replica each, with a node timeout of 1 s and no
/// persistence. It never touches the shared servers.
///
/// Each node logs to `node-<i>/redis.log` in its temporary directory. Dropping
/// it kills every node and deletes the directory; a watchdog process does the
/// same within a second of the test process's exit, so a cluster kept in a
/// `static` ([`PrivateRedisCluster::shared`]) leaves nothing running either.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    nodes: Vec<ClusterNode>,
    /// Kills the nodes' process group once the test process is gone.
    watchdog: Child,
    /// Holds the nodes' data and logs; `Drop` kills them before it is deleted.
    dir: TempDir,
}

/// One node; dropping it kills it.
#[derive(Debug)]
struct ClusterNode {
    port: u16,
    /// `None` once killed.
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child);
        }
    }
}

/// A master killed by [`PrivateRedisCluster::kill_master_of`].
#[derive(Debug, Clone)]
pub struct KilledMaster {
    /// Its client port.
    pub port: u16,
    /// The slot it served that the key hashes to.
    pub slot: u16,
    /// When it was killed.
    pub at: Instant,
}

/// A slot on its way from one master to another, in the steps Redis Cluster
/// resharding takes: both ends marked ([`PrivateRedisCluster::begin_migration`]),
/// the keys moved ([`SlotMigration::move_keys`]; clients asking the old master
/// for them are sent on with ASK), the new owner announced
/// ([`SlotMigration::finish`]; clients that still ask the old master get MOVED).
#[derive(Debug)]
pub struct SlotMigration {
    slot: u16,
    from: u16,
    to: u16,
    to_id: String,
    /// Every live master, told the new owner at the end.
    masters: Vec<u16>,
}

static SHARED: LazyLock<PrivateRedisCluster> = LazyLock::new(PrivateRedisCluster::start);

impl PrivateRedisCluster {
    /// Starts six nodes, forms the cluster and waits until every node says
    /// `cluster_state:ok`, agrees on three masters covering all 16384 slots and
    /// three replicas, and every replica has synced with its master.
    ///
    /// # Panics
    ///
    /// If `redis-server` or `redis-cli` is missing (the message names the
    /// package), a node does not start, or the cluster is not formed within
    /// 60 s; the message has what was seen and the tail of the logs.
    pub fn start() -> PrivateRedisCluster {
        let redis_cli = process::binary(REDIS_CLI);
        let dir = tempfile::Builder::new()
            .prefix("confab-redis-cluster-")
            .tempdir()
            .expect("create a temporary directory");
        let started = Instant::now();
        let mut nodes: Vec<ClusterNode> = Vec::with_capacity(NODES);
        let mut group = None;
        for i in 0..NODES {
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let taken: Vec<u16> = nodes.iter().map(|n| n.port).collect();
            let node = start_node(&node_dir, &taken, group);
            group.get_or_insert(node.child.as_ref().expect("just started").id());
            nodes.push(node);
        }
        let group = group.expect("six nodes started");
        let watchdog = watchdog(group, dir.path());
        let cluster = PrivateRedisCluster {
            nodes,
            watchdog,
            dir,
        };
        let log = cluster.dir.path().join("create.log");
        let mut create = Command::new(&redis_cli);
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let mut child = process::spawn_logged(&mut create, &log);
        let deadline = started + FORM_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                process::kill(&mut child);
                cluster.fail(&format!(
                    "redis-cli --cluster create did not finish within {FORM_TIMEOUT:?}; tail of {}:\n{}",
                    log.display(),
                    process::log_tail(&log, 30)
                ));
            }
            std::thread::sleep(POLL);
        };
        if !status.success() {
            cluster.fail(&format!(
                "redis-cli --cluster create failed ({status}); tail of {}:\n{}",
                log.display(),
                process::log_tail(&log, 30)
            ));
        }
        let mut seen = String::new();
        while Instant::now() < deadline {
            match cluster.formed() {
                Ok(()) => return cluster,
                Err(why) => seen = why,
            }
            std::thread::sleep(POLL);
        }
        cluster.fail(&format!(
            "the cluster was not formed within {FORM_TIMEOUT:?}: {seen}"
        ))
    }

    /// One cluster for the whole test process, started on first use, for tests
    /// that neither kill its nodes nor expect a layout (each test keeps to keys
    /// of its own). Its nodes go when the process exits (see the type's docs).
    pub fn shared() -> &'static PrivateRedisCluster {
        &SHARED
    }

    /// `redis://127.0.0.1:<port>` of every node still running: seed nodes for
    /// a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        self.live_ports()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The client ports of the nodes still running.
    pub fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// The slot `key` hashes to (its hash tag's, if it has one), as the
    /// cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports().next().expect("a node is running");
        let reply = cli(port, &["CLUSTER", "KEYSLOT", key]);
        reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} answered {reply:?}"))
    }

    /// The port of the master serving `slot`: the live node that, by its own
    /// account, is a master owning it.
    ///
    /// # Panics
    ///
    /// If no live node owns the slot (its master died and no replica took over
    /// yet).
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.live_ports()
            .find(|&port| own_slots(port).is_some_and(|slots| slots.contains(&slot)))
            .unwrap_or_else(|| panic!("no live master owns slot {slot}"))
    }

    /// The ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        self.live_ports()
            .filter(|&port| own_slots(port).is_some())
            .collect()
    }

    /// SIGKILLs the master serving `key`'s slot (no goodbye: its replica takes
    /// over once the others mark it failed, about `2 × 1 s` later) and waits
    /// until it is gone.
    pub fn kill_master_of(&mut self, key: &str) -> KilledMaster {
        let slot = self.slot_of(key);
        let port = self.master_of_slot(slot);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("the master is one of ours");
        let mut child = node.child.take().expect("it is running");
        process::kill(&mut child);
        KilledMaster {
            port,
            slot,
            at: Instant::now(),
        }
    }

    /// Waits until a replica has taken over `killed`'s slot and every live node
    /// says `cluster_state:ok`; returns the new master's port and how long
    /// after the kill that held.
    ///
    /// # Panics
    ///
    /// If that does not hold within `timeout` of the kill.
    pub fn wait_for_failover(&self, killed: &KilledMaster, timeout: Duration) -> (u16, Duration) {
        let mut seen = String::new();
        while killed.at.elapsed() < timeout {
            let owner = self
                .live_ports()
                .find(|&port| own_slots(port).is_some_and(|slots| slots.contains(&killed.slot)));
            match owner {
                None => seen = format!("no live node owns slot {} yet", killed.slot),
                Some(owner) => match self.all_ok() {
                    Ok(()) => return (owner, killed.at.elapsed()),
                    Err(why) => seen = why,
                },
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "no failover of 127.0.0.1:{} (slot {}) within {timeout:?}: {seen}",
            killed.port, killed.slot
        )
    }

    /// Starts moving `slot` to the master on port `to`: the target imports it,
    /// the current owner migrates it. Until [`SlotMigration::move_keys`] the
    /// old owner serves the slot's keys; after it, it sends clients on with ASK.
    ///
    /// # Panics
    ///
    /// If `to` is not a live master, or already owns the slot.
    pub fn begin_migration(&self, slot: u16, to: u16) -> SlotMigration {
        let from = self.master_of_slot(slot);
        let masters = self.masters();
        assert!(masters.contains(&to), "127.0.0.1:{to} is not a live master");
        assert_ne!(from, to, "127.0.0.1:{to} already owns slot {slot}");
        let from_id = node_id(from);
        let to_id = node_id(to);
        let slot_arg = slot.to_string();
        ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        ok(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        SlotMigration {
            slot,
            from,
            to,
            to_id,
            masters,
        }
    }

    /// Whether every live node says `cluster_state:ok` and sees every other
    /// live node, with no node flagged as failing among them.
    fn all_ok(&self) -> Result<(), String> {
        let live: Vec<u16> = self.live_ports().collect();
        for &port in &live {
            let info = try_cli(port, &["CLUSTER", "INFO"])?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("127.0.0.1:{port} says {}", first_line(&info)));
            }
            let nodes = try_cli(port, &["CLUSTER", "NODES"])?;
            for &other in &live {
                let line = nodes
                    .lines()
                    .find(|l| {
                        l.split(' ')
                            .nth(1)
                            .is_some_and(|a| a.starts_with(&format!("127.0.0.1:{other}@")))
                    })
                    .ok_or_else(|| format!("127.0.0.1:{port} does not know 127.0.0.1:{other}"))?;
                let flags = line.split(' ').nth(2).unwrap_or_default();
                if flags.contains("fail") || flags.contains("handshake") || flags.contains("noaddr")
                {
                    return Err(format!(
                        "127.0.0.1:{port} sees 127.0.0.1:{other} as {flags}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the cluster is formed as [`PrivateRedisCluster::start`] promises.
    fn formed(&self) -> Result<(), String> {
        self.all_ok()?;
        for node in &self.nodes {
            let port = node.port;
            let info = try_cli(port, &["CLUSTER", "INFO"])?;
            for want in [
                format!("cluster_known_nodes:{NODES}"),
                format!("cluster_size:{MASTERS}"),
                "cluster_slots_ok:16384".to_owned(),
            ] {
                if !info.lines().any(|l| l.trim() == want) {
                    return Err(format!("127.0.0.1:{port}: no {want} yet"));
                }
            }
            let nodes = try_cli(port, &["CLUSTER", "NODES"])?;
            let masters = nodes.lines().filter(|l| is_master_line(l)).count();
            let replicas = nodes.lines().filter(|l| is_replica_line(l)).count();
            if (masters, replicas) != (MASTERS, MASTERS) {
                return Err(format!(
                    "127.0.0.1:{port} sees {masters} masters and {replicas} replicas"
                ));
            }
            let replication = try_cli(port, &["INFO", "replication"])?;
            if replication.lines().any(|l| l.trim() == "role:slave")
                && !replication
                    .lines()
                    .any(|l| l.trim() == "master_link_status:up")
            {
                return Err(format!("replica 127.0.0.1:{port} has not synced yet"));
            }
        }
        Ok(())
    }

    fn fail(&self, why: &str) -> ! {
        let tails: String = self
            .nodes
            .iter()
            .map(|n| {
                let log = n.dir.join("redis.log");
                format!(
                    "\n--- 127.0.0.1:{} ({}):\n{}",
                    n.port,
                    log.display(),
                    process::log_tail(&log, 10)
                )
            })
            .collect();
        // Unwinding drops `self`: the nodes are killed.
        panic!("private redis cluster: {why}{tails}");
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        // The nodes go as the fields are dropped, before the directory.
        process::kill(&mut self.watchdog);
    }
}

impl SlotMigration {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The old owner's port.
    pub fn from(&self) -> u16 {
        self.from
    }

    /// The new owner's port.
    pub fn to(&self) -> u16 {
        self.to
    }

    /// Moves every key of the slot to the new owner, in one `MIGRATE` (so a
    /// session's two keys arrive together); returns how many moved.
    pub fn move_keys(&self) -> usize {
        let slot = self.slot.to_string();
        let keys = cli(self.from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100000"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return 0;
        }
        let to = self.to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
        args.extend(&keys);
        ok(self.from, &args);
        keys.len()
    }

    /// Makes the new owner the slot's master, on both ends and every other
    /// master (clients that ask the old one now get MOVED).
    pub fn finish(self) {
        let slot = self.slot.to_string();
        let mut order = vec![self.to, self.from];
        order.extend(
            self.masters
                .iter()
                .filter(|&&m| m != self.to && m != self.from),
        );
        for port in order {
            ok(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &self.to_id]);
        }
    }
}

/// Starts one node in `dir` on a free port (none of `taken`), in process group
/// `group` (a new one if `None`), and waits until it answers `PING`.
fn start_node(dir: &Path, taken: &[u16], group: Option<u32>) -> ClusterNode {
    let log = dir.join("redis.log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = loop {
            let port = crate::free_port();
            if !taken.contains(&port) {
                break port;
            }
        };
        let bus_port = loop {
            let bus = crate::free_port();
            if bus != port && !taken.contains(&bus) {
                break bus;
            }
        };
        let mut cmd = Command::new(process::binary(REDIS_SERVER));
        cmd.args(["--port", &port.to_string()])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--bind", "127.0.0.1"])
            // No persistence: `--save ""` turns RDB snapshots off.
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            // A replica's first sync starts at once, not after 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .args(["--daemonize", "no"])
            // One group for all six, which the watchdog kills.
            .process_group(group.map_or(0, |g| g as i32));
        let mut child = process::spawn_logged(&mut cmd, &log);
        match process::wait_ready(&mut child, READY_TIMEOUT, || {
            try_cli(port, &["PING"]).is_ok_and(|r| r.trim() == "PONG")
        }) {
            Ok(()) => {
                return ClusterNode {
                    port,
                    child: Some(child),
                    dir: dir.to_owned(),
                };
            }
            Err(NotReady::Exited(_))
                if attempt < PORT_ATTEMPTS && process::port_was_taken(&log) =>
            {
                continue;
            }
            Err(why) => {
                process::kill(&mut child);
                let what = match why {
                    NotReady::Exited(status) => format!("exited ({status})"),
                    NotReady::TimedOut => format!("did not answer PING within {READY_TIMEOUT:?}"),
                };
                panic!(
                    "private redis cluster node on 127.0.0.1:{port} {what}; tail of {}:\n{}",
                    log.display(),
                    process::log_tail(&log, 30)
                );
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A shell that waits for this process to exit, then kills process group
/// `group` (the nodes) and deletes `dir`: a cluster in a `static` is never
/// dropped.
fn watchdog(group: u32, dir: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(
            "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
             kill -9 -\"$1\" 2>/dev/null; rm -rf \"$2\"",
        )
        .arg(std::process::id().to_string())
        .arg(group.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sh for the redis cluster's watchdog: {e}"))
}

/// `redis-cli -p <port> ARGS...`: its output, or why there is none.
fn try_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new(process::binary(REDIS_CLI))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stdout.starts_with("ERR") || stdout.starts_with("(error)") {
        return Err(format!(
            "127.0.0.1:{port} {}: {} {}",
            args.join(" "),
            stdout.trim(),
            stderr.trim()
        ));
    }
    Ok(stdout)
}

/// [`try_cli`], panicking on failure.
fn cli(port: u16, args: &[&str]) -> String {
    try_cli(port, args).unwrap_or_else(|why| panic!("redis-cli: {why}"))
}

/// [`cli`] for a command that answers `OK`.
fn ok(port: u16, args: &[&str]) {
    let reply = cli(port, args);
    assert_eq!(reply.trim(), "OK", "127.0.0.1:{port} {}", args.join(" "));
}

fn node_id(port: u16) -> String {
    cli(port, &["CLUSTER", "MYID"]).trim().to_owned()
}

/// The slots the node on `port` serves by its own account, if it is a master
/// (with slots); `None` if it is a replica, owns nothing or does not answer.
fn own_slots(port: u16) -> Option<Vec<u16>> {
    let nodes = try_cli(port, &["CLUSTER", "NODES"]).ok()?;
    let line = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    if !is_master_line(line) {
        return None;
    }
    let slots: Vec<u16> = line
        .split(' ')
        .skip(8)
        .filter(|range| !range.starts_with('['))
        .filter_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            Some(a.parse::<u16>().ok()?..=b.parse::<u16>().ok()?)
        })
        .flatten()
        .collect();
    (!slots.is_empty()).then_some(slots)
}

/// A `CLUSTER NODES` line of a healthy master that serves slots.
fn is_master_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split(' ').collect();
    fields.len() > 8
        && fields[2].split(',').any(|f| f == "master")
        && !fields[2].contains("fail")
        && fields[7].trim() == "connected"
}

/// A `CLUSTER NODES` line of a healthy, connected replica.
fn is_replica_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split(' ').collect();
    fields.len() > 7
        && fields[2].split(',').any(|f| f == "slave")
        && !fields[2].contains("fail")
        && fields[7].trim() == "connected"
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}
