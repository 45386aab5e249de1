//! The fault schedule: drawn from a seed (the same seed, the same schedule),
//! or one of the named schedules that replay what a probe of the real cluster
//! found.
//!
//! Faults come one at a time, as Jepsen's nemesis cycles do: a fault starts,
//! lasts a few seconds, heals, and the cluster gets a few seconds before the
//! next. Beside them a spare node joins a third of the way in and is drained
//! two thirds of the way in, so that ring changes meet the faults.

use confab_testkit::netns::Cut;
use serde::Serialize;
use std::fmt;

/// The kinds of fault `--faults` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A minority of the nodes cut off from the rest (dropped or reset).
    Partition,
    /// One node stops hearing another.
    OneWay,
    /// One node loses a share of the packets it receives.
    Loss,
    /// Every packet one node sends waits a while first.
    Latency,
    /// One node's process stopped (SIGSTOP), then resumed.
    Pause,
    /// One node frozen as a whole VM freezes: its process stopped and its
    /// host receiving and sending nothing, then both resumed.
    Freeze,
    /// One node killed (SIGKILL), then started again.
    Kill,
    /// One node's wall clock stepped.
    Clock,
    /// MariaDB or Redis killed then restarted, or slowed.
    Store,
    /// The embedded store's data directory full (`--store embedded` only).
    Disk,
}

impl Kind {
    const ALL: [(Kind, &'static str); 10] = [
        (Kind::Partition, "partition"),
        (Kind::OneWay, "one-way"),
        (Kind::Loss, "loss"),
        (Kind::Latency, "latency"),
        (Kind::Pause, "pause"),
        (Kind::Freeze, "freeze"),
        (Kind::Kill, "kill"),
        (Kind::Clock, "clock"),
        (Kind::Store, "store"),
        (Kind::Disk, "disk"),
    ];

    /// `partition,pause,...` (`all`: every kind the store allows). `embedded`:
    /// the nodes share the embedded store (no MariaDB or Redis to fault, a
    /// data directory to fill).
    pub(crate) fn parse_list(list: &str, embedded: bool) -> anyhow::Result<Vec<Kind>> {
        let allowed = |kind: &Kind| match kind {
            Kind::Store => !embedded,
            Kind::Disk => embedded,
            _ => true,
        };
        if list.trim() == "all" {
            return Ok(Self::ALL.iter().map(|(k, _)| *k).filter(allowed).collect());
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some((kind, _)) = Self::ALL.iter().find(|(_, n)| *n == name) else {
                let known: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                anyhow::bail!("no fault kind {name:?}: the kinds are {}", known.join(", "));
            };
            anyhow::ensure!(
                allowed(kind),
                "fault kind {name:?} needs {}",
                if embedded {
                    "--store mysql (the default)"
                } else {
                    "--store embedded"
                }
            );
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        anyhow::ensure!(!kinds.is_empty(), "--faults names no fault kind");
        kinds.sort();
        Ok(kinds)
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }
}

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Store {
    Mysql,
    Redis,
}

/// One fault. Nodes are indexes into the cluster's first `--nodes` nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub(crate) enum Fault {
    /// The `minority` is cut off from every other node.
    Partition {
        minority: Vec<usize>,
        #[serde(serialize_with = "cut_name")]
        cut: Cut,
    },
    /// `to` stops hearing `from` (packets dropped).
    OneWay { from: usize, to: usize },
    /// `node` loses `percent` of the packets it receives.
    Loss { node: usize, percent: u8 },
    /// Every packet `node` sends (to the nodes, the clients and the stores)
    /// waits `delay_ms` first.
    Latency { node: usize, delay_ms: u64 },
    /// `node` is stopped (SIGSTOP) until the fault heals (SIGCONT).
    Pause { node: usize },
    /// `nodes` are stopped and their hosts' networks drop every packet, until
    /// the fault heals: unlike a paused process, whose kernel keeps receiving
    /// the others' heartbeats, a frozen VM has nothing fresh to read when it
    /// resumes (the others' TCP retransmissions come later). Drawn schedules
    /// freeze one node; a named one freezes two together.
    Freeze { nodes: Vec<usize> },
    /// `node` is killed (SIGKILL) and started again when the fault heals.
    Kill { node: usize },
    /// `node`'s wall clock jumps by `step_s` and back when the fault heals.
    Clock { node: usize, step_s: i64 },
    /// `store` is killed and started again when the fault heals.
    StoreDown { store: Store },
    /// Every packet to and from `store` waits `delay_ms` until the fault heals.
    StoreSlow { store: Store, delay_ms: u64 },
    /// The shared data directory is filled until the fault heals.
    DiskFull,
}

fn cut_name<S: serde::Serializer>(cut: &Cut, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match cut {
        Cut::Drop => "drop",
        Cut::Reset => "reset",
    })
}

impl Fault {
    /// Its kind.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Fault::Partition { .. } => Kind::Partition,
            Fault::OneWay { .. } => Kind::OneWay,
            Fault::Loss { .. } => Kind::Loss,
            Fault::Latency { .. } => Kind::Latency,
            Fault::Pause { .. } => Kind::Pause,
            Fault::Freeze { .. } => Kind::Freeze,
            Fault::Kill { .. } => Kind::Kill,
            Fault::Clock { .. } => Kind::Clock,
            Fault::StoreDown { .. } | Fault::StoreSlow { .. } => Kind::Store,
            Fault::DiskFull => Kind::Disk,
        }
    }

    /// The nodes it hits (empty: the stores).
    pub(crate) fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Partition { minority, .. } => minority.clone(),
            Fault::Freeze { nodes } => nodes.clone(),
            Fault::OneWay { from, to } => vec![*from, *to],
            Fault::Loss { node, .. }
            | Fault::Latency { node, .. }
            | Fault::Pause { node }
            | Fault::Kill { node }
            | Fault::Clock { node, .. } => vec![*node],
            Fault::StoreDown { .. } | Fault::StoreSlow { .. } | Fault::DiskFull => Vec::new(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Partition { minority, cut } => {
                let names: Vec<String> = minority.iter().map(n).collect();
                let how = match cut {
                    Cut::Drop => "silent",
                    Cut::Reset => "reset",
                };
                write!(f, "partition {} | rest ({how})", names.join(","))
            }
            Fault::OneWay { from, to } => write!(f, "{} stops hearing {}", n(to), n(from)),
            Fault::Loss { node, percent } => write!(f, "{} loses {percent}%", n(node)),
            Fault::Latency { node, delay_ms } => write!(f, "{} +{delay_ms} ms", n(node)),
            Fault::Pause { node } => write!(f, "pause {}", n(node)),
            Fault::Freeze { nodes } => {
                let names: Vec<String> = nodes.iter().map(n).collect();
                write!(f, "freeze {}", names.join(","))
            }
            Fault::Kill { node } => write!(f, "kill -9 {}", n(node)),
            Fault::Clock { node, step_s } => write!(f, "clock {} {step_s:+}s", n(node)),
            Fault::StoreDown { store } => write!(f, "{store:?} down"),
            Fault::StoreSlow { store, delay_ms } => write!(f, "{store:?} +{delay_ms} ms"),
            Fault::DiskFull => write!(f, "data dir full"),
        }
    }
}

/// One fault of the schedule, with its window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Planned {
    /// When it starts, from the start of the fault phase (ms).
    pub(crate) at_ms: u64,
    /// When it heals (ms).
    pub(crate) heal_ms: u64,
    /// What it is.
    #[serde(flatten)]
    pub(crate) fault: Fault,
}

/// The whole schedule.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Schedule {
    /// Where it came from: `seed N` or a named schedule.
    pub(crate) source: String,
    /// The faults, in time order, none overlapping.
    pub(crate) faults: Vec<Planned>,
    /// When the spare node joins and when it is drained (ms), if it does.
    pub(crate) join_ms: Option<u64>,
    pub(crate) drain_ms: Option<u64>,
    /// How long the fault phase lasts (ms).
    pub(crate) duration_ms: u64,
}

/// The named schedules: each replays a failure a probe of the real cluster
/// found, on a 3-node (or larger) cluster, with no join or drain.
pub(crate) const NAMED: &[(&str, &str)] = &[
    (
        "stale-hello-after-pause",
        "an owner paused for 6 s while its sessions move, then resumed: a hello via it must not report an older last_seq",
    ),
    (
        "pause-declares-all-down",
        "a node paused for 5 s twice: on resuming it must not declare every other member down",
    ),
    (
        "freeze-declares-all-down",
        "n2 and n3 frozen together for 5 s, twice, as VMs freeze (no packet received meanwhile): n1 alone has no majority to declare them down, and on resuming, with nothing fresh heard, they must not declare it down",
    ),
    (
        "silent-partition",
        "one node cut off silently for 15 s: turns must not hang, the ring must not flap, and it must rejoin",
    ),
    (
        "reset-partition",
        "n2, whose only seed is n1, cut off by resets for 10 s: it must rejoin the ring after the heal (every node dials every member, not only its seeds)",
    ),
];

impl Schedule {
    /// A named schedule.
    pub(crate) fn named(name: &str) -> anyhow::Result<Schedule> {
        let one = |at_ms, heal_ms, fault| Planned {
            at_ms,
            heal_ms,
            fault,
        };
        let cut_off = |node, cut| Fault::Partition {
            minority: vec![node],
            cut,
        };
        let faults = match name {
            "stale-hello-after-pause" => vec![one(2_000, 8_000, Fault::Pause { node: 0 })],
            "pause-declares-all-down" => vec![
                one(2_000, 7_000, Fault::Pause { node: 1 }),
                one(12_000, 17_000, Fault::Pause { node: 1 }),
            ],
            "freeze-declares-all-down" => {
                let both = || Fault::Freeze { nodes: vec![1, 2] };
                vec![one(2_000, 7_000, both()), one(12_000, 17_000, both())]
            }
            "silent-partition" => vec![one(2_000, 17_000, cut_off(2, Cut::Drop))],
            "reset-partition" => vec![one(2_000, 12_000, cut_off(1, Cut::Reset))],
            _ => {
                let known: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
                anyhow::bail!(
                    "no schedule {name:?}: the named ones are {}",
                    known.join(", ")
                );
            }
        };
        let duration_ms = faults.last().map_or(0, |f| f.heal_ms) + 3_000;
        Ok(Schedule {
            source: format!("schedule {name}"),
            faults,
            join_ms: None,
            drain_ms: None,
            duration_ms,
        })
    }

    /// The schedule of `seed`: faults of `kinds` over `duration_ms`, on
    /// `nodes` nodes, with a join and a drain if `membership`.
    pub(crate) fn generate(
        seed: u64,
        nodes: usize,
        duration_ms: u64,
        kinds: &[Kind],
        membership: bool,
    ) -> Schedule {
        let mut rng = SplitMix(seed);
        let mut faults = Vec::new();
        let mut at = 1_000 + rng.below(2_000);
        while at + 3_000 < duration_ms {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let lasts = 3_000 + rng.below(6_000);
            let fault = draw(&mut rng, kind, nodes);
            let heal = (at + lasts).min(duration_ms);
            faults.push(Planned {
                at_ms: at,
                heal_ms: heal,
                fault,
            });
            at = heal + 2_000 + rng.below(3_000);
        }
        Schedule {
            source: format!("seed {seed}"),
            faults,
            join_ms: membership.then_some(duration_ms / 3),
            drain_ms: membership.then_some(duration_ms * 2 / 3),
            duration_ms,
        }
    }
}

fn draw(rng: &mut SplitMix, kind: Kind, nodes: usize) -> Fault {
    let node = |rng: &mut SplitMix| rng.below(nodes as u64) as usize;
    match kind {
        Kind::Partition => {
            // A strict minority: the rest keep a quorum.
            let size = 1 + rng.below(((nodes - 1) / 2).max(1) as u64) as usize;
            let mut all: Vec<usize> = (0..nodes).collect();
            let mut minority = Vec::new();
            for _ in 0..size {
                let i = rng.below(all.len() as u64) as usize;
                minority.push(all.remove(i));
            }
            minority.sort_unstable();
            let cut = if rng.below(2) == 0 {
                Cut::Drop
            } else {
                Cut::Reset
            };
            Fault::Partition { minority, cut }
        }
        Kind::OneWay => {
            let from = node(rng);
            let to = (from + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
            Fault::OneWay { from, to }
        }
        Kind::Loss => Fault::Loss {
            node: node(rng),
            percent: 10 + rng.below(31) as u8,
        },
        Kind::Latency => Fault::Latency {
            node: node(rng),
            delay_ms: 50 + rng.below(351),
        },
        Kind::Pause => Fault::Pause { node: node(rng) },
        Kind::Freeze => Fault::Freeze {
            nodes: vec![node(rng)],
        },
        Kind::Kill => Fault::Kill { node: node(rng) },
        Kind::Clock => {
            let step = 30 + rng.below(271) as i64;
            Fault::Clock {
                node: node(rng),
                step_s: if rng.below(2) == 0 { step } else { -step },
            }
        }
        Kind::Disk => Fault::DiskFull,
        Kind::Store => {
            let store = if rng.below(2) == 0 {
                Store::Mysql
            } else {
                Store::Redis
            };
            if rng.below(2) == 0 {
                Fault::StoreDown { store }
            } else {
                Fault::StoreSlow {
                    store,
                    delay_ms: 50 + rng.below(251),
                }
            }
        }
    }
}

/// SplitMix64: a seed's whole stream from one u64, the same on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_faults_never_overlap() {
        let kinds = Kind::parse_list("all", false).unwrap();
        assert!(!kinds.contains(&Kind::Disk));
        let a = Schedule::generate(7, 5, 120_000, &kinds, true);
        let b = Schedule::generate(7, 5, 120_000, &kinds, true);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert!(a.faults.len() >= 8, "{} faults in 120 s", a.faults.len());
        for pair in a.faults.windows(2) {
            assert!(pair[0].heal_ms < pair[1].at_ms);
        }
        for planned in &a.faults {
            assert!(planned.at_ms < planned.heal_ms && planned.heal_ms <= 120_000);
            if let Fault::Partition { minority, .. } = &planned.fault {
                assert!(minority.len() * 2 < 5, "a minority: {minority:?}");
            }
            assert!(planned.fault.nodes().iter().all(|n| *n < 5));
        }
        let c = Schedule::generate(8, 5, 120_000, &kinds, true);
        assert_ne!(
            serde_json::to_string(&a.faults).unwrap(),
            serde_json::to_string(&c.faults).unwrap()
        );
    }

    #[test]
    fn only_the_kinds_asked_for_are_drawn() {
        let kinds = Kind::parse_list("pause, kill", false).unwrap();
        let s = Schedule::generate(1, 3, 60_000, &kinds, false);
        assert!(
            s.faults
                .iter()
                .all(|p| matches!(p.fault.kind(), Kind::Pause | Kind::Kill))
        );
        assert_eq!(s.join_ms, None);
        let e = Kind::parse_list("pause,flood", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flood") && e.contains("partition"), "{e}");
        let e = Kind::parse_list("disk", false).unwrap_err().to_string();
        assert!(e.contains("--store embedded"), "{e}");
        let embedded = Kind::parse_list("all", true).unwrap();
        assert!(embedded.contains(&Kind::Disk) && !embedded.contains(&Kind::Store));
    }

    #[test]
    fn every_named_schedule_exists() {
        for (name, _) in NAMED {
            let s = Schedule::named(name).unwrap();
            assert!(!s.faults.is_empty());
        }
        assert!(Schedule::named("nope").is_err());
    }
}
