//! Hosts of the test's own: one Linux network namespace per host, each joined
//! to a bridge by a veth pair, so that a fault cuts real TCP connections the
//! way a real network does (Jepsen's way, on one machine).
//!
//! ```text
//!   root namespace: bridge <tag>br, 10.A.B.1/24 (the gateway: the test's
//!   clients and private stores live here)
//!     ├── veth <tag>v1 ── eth0 in namespace <tag>-1, 10.A.B.11
//!     ├── veth <tag>v2 ── eth0 in namespace <tag>-2, 10.A.B.12
//!     └── ...
//! ```
//!
//! Faults are iptables rules inside a host's namespace: packets from a peer
//! dropped (a silent partition: the TCP connection stays open and stalls; in
//! one direction or both) or answered by a reset (the connection dies at the
//! next packet), random loss (`statistic`), every packet dropped (a frozen
//! host), and added latency (NFQUEUE and a thread that holds each packet: see
//! `latency.rs`). Nothing is routed beyond the bridge:
//! traffic goes only between the namespaces this network made and the
//! gateway. Every namespace, interface and rule is removed when the
//! [`Network`] is dropped, also when the test panics; namespaces left by a
//! process that died without dropping its network (a SIGKILL) are removed by
//! the next [`Network::create`].
//!
//! Needs root, `ip` (iproute2) and `iptables`; [`Network::create`] says which
//! is missing rather than skip.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// Every name this module makes starts with this.
const PREFIX: &str = "cfn";

/// One host: a namespace and its address on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (`ip netns exec <netns> ...`).
    pub netns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// How a blocked packet is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Dropped: the connection stays open and stalls (a silent partition).
    Drop,
    /// Answered by a TCP reset: the connection dies at once.
    Reset,
}

/// A bridge and its hosts, removed on drop.
#[derive(Debug)]
pub struct Network {
    tag: String,
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Why the machine cannot make a network: what is missing, in words.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Network {
    /// Makes a bridge and `hosts` namespaces on it (at most 200).
    ///
    /// # Errors
    ///
    /// When the machine refuses: not root, `ip` or `iptables` missing, or a
    /// command failed; the message says which, and what it printed.
    pub fn create(hosts: usize) -> Result<Network, Refused> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Refused(
                "network namespaces need root: run the test as root (CI does)".into(),
            ));
        }
        for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(Refused(format!(
                    "`{tool}` is not installed (Debian: apt-get install {package})"
                )));
            }
        }
        if hosts == 0 || hosts > 200 {
            return Err(Refused(format!("{hosts} hosts: 1 to 200 are possible")));
        }
        remove_orphans();
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        // A /24 per process, from its pid: two tests running at once do not
        // share addresses.
        let subnet = [10, 100 + (pid >> 8) as u8 % 100, (pid & 0xff) as u8];
        let addr = |last: u8| Ipv4Addr::new(subnet[0], subnet[1], subnet[2], last);
        let mut network = Network {
            bridge: format!("{tag}br"),
            tag: tag.clone(),
            gateway: addr(1),
            hosts: Vec::new(),
        };
        run(&["ip", "link", "add", &network.bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", network.gateway),
            "dev",
            &network.bridge,
        ])?;
        run(&["ip", "link", "set", &network.bridge, "up"])?;
        for i in 1..=hosts {
            let host = Host {
                netns: format!("{tag}-{i}"),
                addr: addr(10 + i as u8),
            };
            let veth = format!("{tag}v{i}");
            run(&["ip", "netns", "add", &host.netns])?;
            network.hosts.push(host.clone());
            run(&[
                "ip",
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &network.bridge])?;
            run(&["ip", "link", "set", &veth, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &host.netns];
                all.extend_from_slice(args);
                run(&all)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", host.addr),
                "dev",
                "eth0",
            ])?;
            inside(&["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(network)
    }

    /// The hosts, in order (host `i` is `hosts()[i]`).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The bridge's own address, in the root namespace: where the test's
    /// clients and stores are reached from the hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[i].netns])
            .arg(program);
        command
    }

    /// Host `i` stops hearing from `peer` (inbound) and, if `both`, stops
    /// reaching it (outbound).
    ///
    /// With [`Cut::Drop`] packets vanish: connections stay open and stall.
    /// With [`Cut::Reset`] every TCP packet from `peer` is answered by a reset,
    /// which kills the connection on both ends at the peer's next send (so a
    /// reset cut is always both ways, `both` or not). Resets themselves pass:
    /// a rule that also refused them (an OUTPUT rule on this host, or the
    /// same cut on the peer) would turn the reset into a silent drop.
    ///
    /// # Errors
    ///
    /// If iptables refuses the rule.
    pub fn cut(&self, i: usize, peer: Ipv4Addr, how: Cut, both: bool) -> Result<(), Refused> {
        let peer = peer.to_string();
        match how {
            Cut::Drop => {
                self.iptables(i, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
                if both {
                    self.iptables(i, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
                }
                Ok(())
            }
            Cut::Reset => self.iptables(
                i,
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    &peer,
                    "-p",
                    "tcp",
                    "!",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            ),
        }
    }

    /// Host `i` loses `percent` of the packets it receives, at random.
    ///
    /// # Errors
    ///
    /// If iptables refuses the rule (its `statistic` match is missing).
    pub fn lose(&self, i: usize, percent: u8) -> Result<(), Refused> {
        let probability = format!("{:.3}", f64::from(percent.min(100)) / 100.0);
        self.iptables(
            i,
            &[
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )
    }

    /// Every packet host `i` sends (but on its loopback) waits `delay` first,
    /// until [`Network::heal`] removes the rule and the returned
    /// [`crate::Latency`] is dropped (in either order: while the rule stays
    /// without its reader, packets pass it undelayed).
    ///
    /// # Errors
    ///
    /// If the kernel refuses NFQUEUE or iptables the rule.
    pub fn delay(&self, i: usize, delay: std::time::Duration) -> Result<crate::Latency, Refused> {
        // One queue per host: its number is the host's index, offset from 0.
        let queue_num = u16::try_from(1_000 + i).map_err(|_| Refused("too many hosts".into()))?;
        let latency =
            crate::Latency::start(&self.hosts[i].netns, queue_num, delay).map_err(Refused)?;
        let num = queue_num.to_string();
        self.iptables(
            i,
            &[
                "-A",
                "OUTPUT",
                "!",
                "-o",
                "lo",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &num,
                "--queue-bypass",
            ],
        )?;
        Ok(latency)
    }

    /// Host `i` receives and sends nothing but on its loopback, as a frozen
    /// VM's host does.
    ///
    /// # Errors
    ///
    /// If iptables refuses a rule.
    pub fn isolate(&self, i: usize) -> Result<(), Refused> {
        self.iptables(i, &["-A", "INPUT", "!", "-i", "lo", "-j", "DROP"])?;
        self.iptables(i, &["-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP"])
    }

    /// Removes every rule of host `i`: its network is whole again.
    ///
    /// # Errors
    ///
    /// If iptables cannot flush.
    pub fn heal(&self, i: usize) -> Result<(), Refused> {
        self.iptables(i, &["-F"])
    }

    fn iptables(&self, i: usize, rule: &[&str]) -> Result<(), Refused> {
        let mut all = vec![
            "ip",
            "netns",
            "exec",
            &self.hosts[i].netns,
            "iptables",
            "-w",
        ];
        all.extend_from_slice(rule);
        run(&all)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it
        // the bridge's end.
        for host in &self.hosts {
            let _ = quiet(&["ip", "netns", "delete", &host.netns]);
        }
        let _ = quiet(&["ip", "link", "delete", &self.bridge]);
        debug_assert!(self.tag.starts_with(PREFIX));
    }
}

/// Removes the namespaces and bridges of processes that are gone.
fn remove_orphans() {
    let Ok(out) = quiet(&["ip", "-o", "link", "show", "type", "bridge"]) else {
        return;
    };
    let netns = quiet(&["ip", "netns", "list"]).unwrap_or_else(|_| empty());
    let gone = |name: &str| -> bool {
        name.strip_prefix(PREFIX)
            .and_then(|rest| rest.split(['-', 'b', 'v']).next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if gone(name) {
            let _ = quiet(&["ip", "netns", "delete", name]);
        }
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "7: cfn123br: <...>"
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        if gone(name) {
            let _ = quiet(&["ip", "link", "delete", name]);
        }
    }
}

fn empty() -> Output {
    Output {
        status: std::process::ExitStatus::default(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    }
}

/// Runs a command; its failure says what ran and what it printed.
fn run(args: &[&str]) -> Result<(), Refused> {
    let out = quiet(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Refused(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn quiet(args: &[&str]) -> Result<Output, Refused> {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Refused(format!("cannot run `{}`: {e}", args[0])))
}
