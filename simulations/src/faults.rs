//! A run's fault schedule: the scenario's faults at set times, then the ones
//! the seed draws, numbered in that order. `--faults 0,3` keeps only some of
//! them (what `shrink` prints).

use crate::rng::Rng;
use crate::scenario::{FaultSpec, Scenario};

/// The kinds `[random_faults]` may draw.
pub const RANDOM_KINDS: &[&str] = &[
    "crash",
    "pause",
    "partition",
    "one_way_partition",
    "clog",
    "slow_storage",
    "storage_errors",
    "redis_restart",
    "drain",
    "join",
];

/// One fault of the schedule, with nodes as indexes (`n1` is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Its number in the schedule.
    pub index: usize,
    /// When it starts (ms).
    pub at_ms: u64,
    /// When it ends (ms); equal to `at_ms` for an instant one.
    pub until_ms: u64,
    /// What it is.
    pub kind: FaultKind,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// The node crashes, and restarts at `until_ms` if `restarts`.
    Crash {
        /// The node.
        node: usize,
        /// Whether it restarts.
        restarts: bool,
    },
    /// The node is paused until `until_ms`.
    Pause {
        /// The node.
        node: usize,
    },
    /// The node starts and joins.
    Join {
        /// The node.
        node: usize,
    },
    /// The node is drained.
    Drain {
        /// The node.
        node: usize,
    },
    /// Messages `a` → `b` (and back unless `one_way`) are lost.
    Partition {
        /// One side.
        a: Vec<usize>,
        /// The other side.
        b: Vec<usize>,
        /// Only `a` → `b`.
        one_way: bool,
    },
    /// Messages to and from the node are held until `until_ms`.
    Clog {
        /// The node.
        node: usize,
    },
    /// MySQL takes `extra_ms` more per request.
    SlowStorage {
        /// Added latency (ms).
        extra_ms: u64,
    },
    /// MySQL fails this share of its requests.
    StorageErrors {
        /// The share.
        rate: f64,
    },
    /// Redis loses everything.
    RedisRestart,
}

impl Fault {
    /// A few words for the summary and the timeline.
    pub fn label(&self) -> String {
        let n = |i: &usize| format!("n{}", i + 1);
        let list = |v: &[usize]| v.iter().map(n).collect::<Vec<_>>().join(",");
        let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        let span = secs(self.until_ms - self.at_ms);
        match &self.kind {
            FaultKind::Crash {
                node,
                restarts: true,
            } => {
                format!("crash {} (restart after {span})", n(node))
            }
            FaultKind::Crash {
                node,
                restarts: false,
            } => format!("crash {}", n(node)),
            FaultKind::Pause { node } => format!("pause {} for {span}", n(node)),
            FaultKind::Join { node } => format!("join {}", n(node)),
            FaultKind::Drain { node } => format!("drain {}", n(node)),
            FaultKind::Partition { a, b, one_way } => {
                let arrow = if *one_way { "->" } else { "|" };
                format!("partition {} {arrow} {} for {span}", list(a), list(b))
            }
            FaultKind::Clog { node } => format!("clog {} for {span}", n(node)),
            FaultKind::SlowStorage { extra_ms } => {
                format!("slow mysql +{extra_ms}ms for {span}")
            }
            FaultKind::StorageErrors { rate } => {
                format!("mysql fails {:.0}% for {span}", rate * 100.0)
            }
            FaultKind::RedisRestart => "redis restart".to_owned(),
        }
    }

    /// The nodes it hits.
    pub fn nodes(&self) -> Vec<usize> {
        match &self.kind {
            FaultKind::Crash { node, .. }
            | FaultKind::Pause { node }
            | FaultKind::Join { node }
            | FaultKind::Drain { node }
            | FaultKind::Clog { node } => vec![*node],
            FaultKind::Partition { a, b, .. } => a.iter().chain(b).copied().collect(),
            _ => Vec::new(),
        }
    }
}

/// A run's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Every fault, by index (also the ones `--faults` left out: see `kept`).
    pub faults: Vec<Fault>,
    /// The indexes kept for this run.
    pub kept: Vec<usize>,
    /// How many node slots the run has (initial nodes plus joiners).
    pub node_slots: usize,
}

impl Schedule {
    /// The schedule of `scenario` for the seed behind `rng`, keeping only
    /// `only` if given.
    pub fn draw(
        scenario: &Scenario,
        rng: &mut Rng,
        only: Option<&[usize]>,
    ) -> Result<Self, String> {
        let mut slots = scenario.nodes;
        let mut faults = Vec::new();
        for spec in &scenario.faults {
            let fault = from_spec(spec, scenario.nodes, &mut slots)?;
            faults.push(Fault {
                index: faults.len(),
                ..fault
            });
        }
        if let Some(random) = &scenario.random_faults
            && !random.kinds.is_empty()
        {
            let count = rng.between(random.count[0].into(), random.count[1].into());
            for _ in 0..count {
                let kind = &random.kinds[rng.below(random.kinds.len() as u64) as usize];
                let at_s =
                    random.window_s[0] + (random.window_s[1] - random.window_s[0]) * rng.unit();
                let fault = draw_one(kind, ms(at_s), scenario.nodes, &mut slots, rng);
                faults.push(Fault {
                    index: faults.len(),
                    ..fault
                });
            }
        }
        let kept = match only {
            Some(only) => {
                if let Some(bad) = only.iter().find(|i| **i >= faults.len()) {
                    return Err(format!(
                        "--faults: no fault #{bad} (this seed's schedule has {})",
                        faults.len()
                    ));
                }
                let mut kept = only.to_vec();
                kept.sort_unstable();
                kept.dedup();
                kept
            }
            None => (0..faults.len()).collect(),
        };
        Ok(Self {
            faults,
            kept,
            node_slots: slots,
        })
    }

    /// The faults of this run.
    pub fn active(&self) -> impl Iterator<Item = &Fault> {
        self.kept.iter().map(|i| &self.faults[*i])
    }

    /// When the effects of the last fault of this run end (ms): a request sent
    /// to a slow MySQL just before the window closes lands `extra_ms` later.
    pub fn end_ms(&self) -> u64 {
        self.active()
            .map(|f| match f.kind {
                FaultKind::SlowStorage { extra_ms } => f.until_ms + extra_ms,
                _ => f.until_ms,
            })
            .max()
            .unwrap_or(0)
    }
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round().max(0.0) as u64
}

fn node_index(
    name: &str,
    initial: usize,
    slots: &mut usize,
    joining: bool,
) -> Result<usize, String> {
    let number: usize = name
        .strip_prefix('n')
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("node {name:?}: nodes are named n1, n2, ..."))?;
    if !joining && number > initial && number > *slots {
        return Err(format!(
            "node {name}: the scenario has {initial} nodes and no join of it"
        ));
    }
    *slots = (*slots).max(number);
    Ok(number - 1)
}

fn from_spec(spec: &FaultSpec, initial: usize, slots: &mut usize) -> Result<Fault, String> {
    let mut node = |name: &str, joining| node_index(name, initial, slots, joining);
    let (at_s, for_s, kind) = match spec {
        FaultSpec::Crash {
            node: name,
            at_s,
            restart_after_s,
        } => (
            *at_s,
            restart_after_s.unwrap_or(0.0),
            FaultKind::Crash {
                node: node(name, false)?,
                restarts: restart_after_s.is_some(),
            },
        ),
        FaultSpec::Pause {
            node: name,
            at_s,
            for_s,
        } => (
            *at_s,
            *for_s,
            FaultKind::Pause {
                node: node(name, false)?,
            },
        ),
        FaultSpec::Join { node: name, at_s } => (
            *at_s,
            0.0,
            FaultKind::Join {
                node: node(name, true)?,
            },
        ),
        FaultSpec::Drain { node: name, at_s } => (
            *at_s,
            0.0,
            FaultKind::Drain {
                node: node(name, false)?,
            },
        ),
        FaultSpec::Partition {
            a,
            b,
            one_way,
            at_s,
            for_s,
        } => {
            let a: Vec<usize> = a.iter().map(|n| node(n, false)).collect::<Result<_, _>>()?;
            let mut b: Vec<usize> = b.iter().map(|n| node(n, false)).collect::<Result<_, _>>()?;
            if b.is_empty() {
                b = (0..initial).filter(|n| !a.contains(n)).collect();
            }
            (
                *at_s,
                *for_s,
                FaultKind::Partition {
                    a,
                    b,
                    one_way: *one_way,
                },
            )
        }
        FaultSpec::Clog {
            node: name,
            at_s,
            for_s,
        } => (
            *at_s,
            *for_s,
            FaultKind::Clog {
                node: node(name, false)?,
            },
        ),
        FaultSpec::SlowStorage {
            at_s,
            for_s,
            extra_ms,
        } => (
            *at_s,
            *for_s,
            FaultKind::SlowStorage {
                extra_ms: extra_ms.max(0.0) as u64,
            },
        ),
        FaultSpec::StorageErrors { at_s, for_s, rate } => (
            *at_s,
            *for_s,
            FaultKind::StorageErrors {
                rate: rate.clamp(0.0, 1.0),
            },
        ),
        FaultSpec::RedisRestart { at_s } => (*at_s, 0.0, FaultKind::RedisRestart),
    };
    if at_s < 0.0 || for_s < 0.0 {
        return Err(format!("{spec:?}: times must not be negative"));
    }
    Ok(Fault {
        index: 0,
        at_ms: ms(at_s),
        until_ms: ms(at_s + for_s),
        kind,
    })
}

fn draw_one(kind: &str, at_ms: u64, initial: usize, slots: &mut usize, rng: &mut Rng) -> Fault {
    let node = rng.below(initial as u64) as usize;
    let for_ms = |rng: &mut Rng, low_s: u64, high_s: u64| rng.between(low_s * 1000, high_s * 1000);
    let (for_ms, kind) = match kind {
        "crash" => (
            for_ms(rng, 1, 10),
            FaultKind::Crash {
                node,
                restarts: true,
            },
        ),
        "pause" => (for_ms(rng, 1, 5), FaultKind::Pause { node }),
        "partition" | "one_way_partition" => {
            // A random cut: each node on side a with even odds, both sides non-empty.
            let mut a: Vec<usize> = (0..initial).filter(|_| rng.chance(0.5)).collect();
            if a.is_empty() || a.len() == initial {
                a = vec![node];
            }
            let b = (0..initial).filter(|n| !a.contains(n)).collect();
            let one_way = kind == "one_way_partition";
            (for_ms(rng, 2, 8), FaultKind::Partition { a, b, one_way })
        }
        "clog" => (for_ms(rng, 1, 4), FaultKind::Clog { node }),
        "slow_storage" => {
            let extra_ms = rng.between(200, 3_000);
            (for_ms(rng, 1, 5), FaultKind::SlowStorage { extra_ms })
        }
        "storage_errors" => {
            let rate = 0.05 + 0.45 * rng.unit();
            (for_ms(rng, 1, 5), FaultKind::StorageErrors { rate })
        }
        "drain" => (0, FaultKind::Drain { node }),
        "join" => {
            *slots += 1;
            (0, FaultKind::Join { node: *slots - 1 })
        }
        _ => (0, FaultKind::RedisRestart),
    };
    Fault {
        index: 0,
        at_ms,
        until_ms: at_ms + for_ms,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse(text, "t").unwrap()
    }

    #[test]
    fn set_faults_come_first_and_the_seed_draws_the_rest() {
        let s = scenario(
            r#"
            nodes = 3
            sessions = 10
            duration_s = 30
            [[faults]]
            kind = "crash"
            node = "n2"
            at_s = 5
            restart_after_s = 3
            [random_faults]
            count = [2, 2]
            kinds = ["pause", "join"]
            window_s = [10, 20]
            "#,
        );
        let a = Schedule::draw(&s, &mut Rng::new(9, 1), None).unwrap();
        let b = Schedule::draw(&s, &mut Rng::new(9, 1), None).unwrap();
        assert_eq!(a.faults, b.faults, "the seed decides");
        assert_eq!(a.faults.len(), 3);
        assert_eq!(
            a.faults[0].kind,
            FaultKind::Crash {
                node: 1,
                restarts: true
            }
        );
        assert_eq!((a.faults[0].at_ms, a.faults[0].until_ms), (5_000, 8_000));
        assert!(
            a.faults[1..]
                .iter()
                .all(|f| (10_000..=20_000).contains(&f.at_ms))
        );
        let only = Schedule::draw(&s, &mut Rng::new(9, 1), Some(&[2, 0])).unwrap();
        assert_eq!(only.active().map(|f| f.index).collect::<Vec<_>>(), [0, 2]);
        assert!(Schedule::draw(&s, &mut Rng::new(9, 1), Some(&[7])).is_err());
    }

    #[test]
    fn a_fault_on_an_unknown_node_is_refused() {
        let s = scenario(
            "nodes = 2\nsessions = 1\nduration_s = 5\n[[faults]]\nkind = \"pause\"\nnode = \"n5\"\nat_s = 1\nfor_s = 1",
        );
        let err = Schedule::draw(&s, &mut Rng::new(1, 1), None).unwrap_err();
        assert!(err.contains("n5"), "{err}");
    }
}
