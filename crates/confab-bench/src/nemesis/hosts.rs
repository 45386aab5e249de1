//! The real cluster the nemesis tests: `confab node` processes, each in its
//! own network namespace, and private MariaDB and Redis servers reached
//! through delaying proxies on the bridge's address.

use super::schedule::Store;
use confab_testkit::netns::{Cut, Network};
use confab_testkit::{DelayProxy, PrivateMariaDb, PrivateRedis};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The ports every node uses inside its own namespace.
const HTTP_PORT: u16 = 8080;
const CLUSTER_PORT: u16 = 7070;
/// libfaketime, from Debian's `faketime` package.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// How long a node may take to answer `/readyz` after it starts.
const READY_MAX: Duration = Duration::from_secs(60);
/// The size of the tmpfs the embedded store lives on.
const DISK_SIZE: &str = "256m";

/// One node: its host, its process (none while killed or left) and whether
/// it is stopped by SIGSTOP.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) host: usize,
    pub(crate) addr: Ipv4Addr,
    child: Option<Child>,
    paused: bool,
    data: PathBuf,
    clock: PathBuf,
}

impl Node {
    pub(crate) fn http(&self) -> SocketAddr {
        (self.addr, HTTP_PORT).into()
    }

    pub(crate) fn ws(&self) -> String {
        format!("ws://{}:{HTTP_PORT}/v1/ws", self.addr)
    }

    fn cluster(&self) -> String {
        format!("{}:{CLUSTER_PORT}", self.addr)
    }

    fn pid(&self) -> Option<Pid> {
        let id = self.child.as_ref()?.id()?;
        Some(Pid::from_raw(i32::try_from(id).ok()?))
    }
}

/// The hosts, the stores and the nodes.
pub(crate) struct Cluster {
    pub(crate) net: Network,
    pub(crate) nodes: Vec<Node>,
    confab: PathBuf,
    secret: String,
    cookie: String,
    hmac_key: String,
    /// The master key every node wraps and unwraps the data-key ring with.
    master_keys: String,
    mysql: PrivateMariaDb,
    redis: PrivateRedis,
    mysql_proxy: DelayProxy,
    redis_proxy: DelayProxy,
    /// The embedded store's shared data directory, when the nodes use it
    /// (dropped before `_dir`).
    disk: Option<confab_testkit::Tmpfs>,
    _dir: tempfile::TempDir,
    pub(crate) logs: PathBuf,
    mutation: Option<String>,
    /// Where each node's certificate and key and the CA are, with `--tls`.
    tls: Option<PathBuf>,
    /// The threads delaying a node's packets, by node (latency faults).
    latencies: std::collections::BTreeMap<usize, confab_testkit::Latency>,
}

impl Cluster {
    /// Makes `hosts` namespaces (the nodes and the spare) and the stores.
    /// Starts nothing on the hosts yet.
    pub(crate) async fn create(
        confab: PathBuf,
        hosts: usize,
        secret: &str,
        mutation: Option<String>,
        embedded: bool,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            Path::new(FAKETIME_LIB).exists(),
            "{FAKETIME_LIB} is missing: the clock faults need libfaketime (Debian: apt-get install faketime)"
        );
        let net = Network::create(hosts)
            .map_err(|e| anyhow::anyhow!("the machine refuses the nemesis's network: {e}"))?;
        let (mysql, redis) =
            tokio::task::spawn_blocking(|| (PrivateMariaDb::start(), PrivateRedis::start()))
                .await?;
        let gateway = net.gateway().into();
        let mysql_proxy =
            DelayProxy::start_on(gateway, ([127, 0, 0, 1], mysql.port()).into()).await;
        let redis_proxy =
            DelayProxy::start_on(gateway, ([127, 0, 0, 1], redis.port()).into()).await;
        let dir = tempfile::Builder::new()
            .prefix("confab-nemesis-")
            .tempdir()?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let disk = if embedded {
            let path = dir.path().join("shared");
            Some(confab_testkit::Tmpfs::mount(&path, DISK_SIZE).map_err(|e| anyhow::anyhow!(e))?)
        } else {
            None
        };
        let nodes = net
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                // Sharing the embedded store means sharing its data dir, as
                // `confab up`'s nodes do.
                let data = disk.as_ref().map_or_else(
                    || dir.path().join(format!("n{}", i + 1)),
                    |d| d.path().to_owned(),
                );
                let clock = dir.path().join(format!("n{}.clock", i + 1));
                Node {
                    id: format!("n{}", i + 1),
                    host: i,
                    addr: host.addr,
                    child: None,
                    paused: false,
                    data,
                    clock,
                }
            })
            .collect::<Vec<Node>>();
        let tls = if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir_all(&certs)?;
            let names: Vec<(String, String)> = nodes
                .iter()
                .map(|n| (n.id.clone(), n.addr.to_string()))
                .collect();
            let at = certs.clone();
            tokio::task::spawn_blocking(move || {
                let names: Vec<(&str, &str)> = names
                    .iter()
                    .map(|(n, a)| (n.as_str(), a.as_str()))
                    .collect();
                confab_testkit::make_certificates(&at, "ca", &names)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("cannot make the cluster's certificates: {e}"))?;
            Some(certs)
        } else {
            None
        };
        Ok(Cluster {
            net,
            nodes,
            confab,
            secret: secret.to_owned(),
            cookie: format!("nemesis-cookie-{}", std::process::id()),
            hmac_key: "6e656d657369732d736e617073686f742d6b6579".into(),
            master_keys: format!("nemesis={}", "6d".repeat(32)),
            mysql,
            redis,
            mysql_proxy,
            redis_proxy,
            disk,
            _dir: dir,
            logs,
            mutation,
            tls,
            latencies: Default::default(),
        })
    }

    /// The store URLs as the nodes reach them.
    fn store_urls(&self) -> (String, String) {
        (
            format!("mysql://root@{}/test", self.mysql_proxy.addr()),
            format!("redis://{}/0", self.redis_proxy.addr()),
        )
    }

    /// Starts node `i`'s process (seeded by every other node in `members`)
    /// and waits until it answers `/readyz`. A process that exits at start
    /// (its store is down, say) is started again a second later, as a
    /// supervisor would, until [`READY_MAX`] has passed.
    pub(crate) async fn start(&mut self, i: usize, members: &[usize]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_MAX;
        loop {
            self.spawn(i, members)?;
            let http = self.nodes[i].http();
            loop {
                if let Some((200, _)) = crate::admin::request("GET", http, "/readyz", "").await {
                    return Ok(());
                }
                let exited = self.nodes[i]
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} not ready within {READY_MAX:?}{}; see {}",
                    self.nodes[i].id,
                    exited.map_or_else(String::new, |status| format!(" (it exited: {status})")),
                    self.logs.display()
                );
                if exited.is_some() {
                    self.nodes[i].child = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Starts node `i`'s process without waiting for it (a join while a store
    /// is down must not hold up the schedule); [`Cluster::ensure_ready`] waits.
    pub(crate) fn spawn(&mut self, i: usize, members: &[usize]) -> anyhow::Result<()> {
        let (mysql_url, redis_url) = self.store_urls();
        let seeds: Vec<String> = members
            .iter()
            .filter(|m| **m != i)
            .map(|m| self.nodes[*m].cluster())
            .collect();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.data)?;
        if !node.clock.exists() {
            std::fs::write(&node.clock, "+0\n")?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", node.id)))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.net.hosts()[node.host].netns])
            .arg(&self.confab)
            .arg("node")
            .args(["--node-id", &node.id])
            .args(["--http-port", &HTTP_PORT.to_string()])
            .args(["--cluster-port", &CLUSTER_PORT.to_string()])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--jwt-secret", &self.secret])
            .env("CONFAB_NODE__BIND", node.addr.to_string())
            .env("CONFAB_CLUSTER__COOKIE", &self.cookie)
            .env("CONFAB_STORE__SNAPSHOT_HMAC_KEY", &self.hmac_key)
            .env("CONFAB_CRYPTO__KEYS", &self.master_keys)
            .env("RUST_LOG", "warn")
            // The wall clock as libfaketime shows it: the offset in the clock
            // file, re-read every second; the monotonic clock stays true.
            .env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME_TIMESTAMP_FILE", &node.clock)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if !seeds.is_empty() {
            command.args(["--seeds", &seeds.join(",")]);
        }
        if let Some(bug) = &self.mutation {
            command.env("CONFAB_MUTATION", bug);
        }
        if let Some(certs) = &self.tls {
            command
                .env(
                    "CONFAB_CLUSTER__TLS_CERT",
                    certs.join(format!("{}.pem", node.id)),
                )
                .env(
                    "CONFAB_CLUSTER__TLS_KEY",
                    certs.join(format!("{}.key", node.id)),
                )
                .env("CONFAB_CLUSTER__TLS_CA", certs.join("ca.pem"))
                .env("CONFAB_CLUSTER__ADVERTISE", node.cluster());
        }
        if self.disk.is_none() {
            command
                .env("CONFAB_STORE__MYSQL_URL", mysql_url)
                .env("CONFAB_STORE__REDIS_URL", redis_url);
        }
        node.child = Some(command.spawn()?);
        node.paused = false;
        Ok(())
    }

    /// Waits until node `i` answers `/readyz`, starting it again (as
    /// [`Cluster::start`] does) if its process has exited meanwhile.
    pub(crate) async fn ensure_ready(&mut self, i: usize, members: &[usize]) -> anyhow::Result<()> {
        let exited = self.nodes[i]
            .child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some());
        if exited {
            return self.start(i, members).await;
        }
        let deadline = Instant::now() + READY_MAX;
        let http = self.nodes[i].http();
        while crate::admin::request("GET", http, "/readyz", "")
            .await
            .map(|r| r.0)
            != Some(200)
        {
            let exited = self.nodes[i]
                .child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some());
            if exited {
                return self.start(i, members).await;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready within {READY_MAX:?}",
                self.nodes[i].id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// SIGKILLs node `i` (resuming it first if it was paused).
    pub(crate) async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        node.paused = false;
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub(crate) fn pause(&mut self, i: usize, stop: bool) {
        let node = &mut self.nodes[i];
        if let Some(pid) = node.pid() {
            let signal = if stop {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(pid, signal);
            node.paused = stop;
        }
    }

    /// Whether node `i`'s process runs.
    pub(crate) fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Node `i`'s wall clock is `offset_s` away from the true time.
    pub(crate) fn set_clock(&self, i: usize, offset_s: i64) -> anyhow::Result<()> {
        std::fs::write(&self.nodes[i].clock, format!("{offset_s:+}s\n"))?;
        Ok(())
    }

    /// Cuts the `minority` off from every other node (`nodes`), both ways.
    pub(crate) fn partition(
        &self,
        minority: &[usize],
        nodes: usize,
        cut: Cut,
    ) -> anyhow::Result<()> {
        for &m in minority {
            for other in (0..nodes).filter(|o| !minority.contains(o)) {
                let peer = self.nodes[other].addr;
                self.net.cut(m, peer, cut, true)?;
                self.net.cut(other, self.nodes[m].addr, cut, true)?;
            }
        }
        Ok(())
    }

    /// Removes every network rule of every host.
    pub(crate) fn heal_network(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.net.heal(i)?;
        }
        self.latencies.clear();
        Ok(())
    }

    /// Every packet node `i` sends waits `delay`, until the network heals.
    pub(crate) fn delay(&mut self, i: usize, delay: Duration) -> anyhow::Result<()> {
        let latency = self.net.delay(self.nodes[i].host, delay)?;
        self.latencies.insert(i, latency);
        Ok(())
    }

    /// Kills (`down`) or restarts a store.
    pub(crate) async fn store_down(&mut self, store: Store, down: bool) {
        let (mysql, redis) = (&mut self.mysql, &mut self.redis);
        // The servers' own helpers block while they start.
        tokio::task::block_in_place(|| match (store, down) {
            (Store::Mysql, true) => mysql.kill(),
            (Store::Mysql, false) => mysql.restart(),
            (Store::Redis, true) => redis.kill(),
            (Store::Redis, false) => redis.restart(),
        });
    }

    /// Every packet to and from a store waits `delay`.
    pub(crate) fn store_delay(&self, store: Store, delay: Duration) {
        match store {
            Store::Mysql => self.mysql_proxy.set_delay(delay),
            Store::Redis => self.redis_proxy.set_delay(delay),
        }
    }

    /// Where the checker reads the store's own rows: MariaDB's URL (on
    /// loopback), or the embedded store's file.
    pub(crate) fn store_rows(&self) -> super::checker::Rows {
        match &self.disk {
            Some(disk) => super::checker::Rows::Sqlite(disk.path().join("confab.db")),
            None => super::checker::Rows::Mysql(self.mysql.url()),
        }
    }

    /// Fills the embedded store's data dir (`true`) until a write fails for
    /// want of space, or frees it (`false`).
    pub(crate) fn fill_disk(&self, full: bool) -> anyhow::Result<()> {
        let Some(disk) = &self.disk else {
            anyhow::bail!("the disk fault needs --store embedded");
        };
        Ok(disk.fill(full)?)
    }

    /// Stops every node: SIGCONT to any paused, then SIGTERM, so each
    /// snapshots its sessions; SIGKILL after 20 s.
    pub(crate) async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.pause(i, false);
            }
            if let Some(pid) = self.nodes[i].pid() {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take()
                && tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }

    /// Forgets node `i`'s process once it has exited by itself (after a drain).
    pub(crate) async fn reap(&mut self, i: usize, within: Duration) -> bool {
        let Some(child) = self.nodes[i].child.as_mut() else {
            return true;
        };
        if tokio::time::timeout(within, child.wait()).await.is_ok() {
            self.nodes[i].child = None;
            true
        } else {
            false
        }
    }
}
