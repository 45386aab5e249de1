//! Scenarios: TOML files in `simulations/scenarios/`. A scenario sets the
//! cluster, the workload and the faults; any number may be a range
//! (`loss = [0.0, 0.05]`) that the seed draws from, the way TigerBeetle's VOPR
//! lets the seed pick the fault settings. `[random_faults]` lets the seed draw
//! whole faults too.

use crate::conversations::{self, Conversations};
use crate::rng::Rng;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A number, or a `[low, high]` range the seed draws it from.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Draw {
    /// This value.
    Fixed(f64),
    /// A value drawn uniformly in `[low, high]`.
    Range([f64; 2]),
}

impl Draw {
    /// The value for this run.
    pub fn draw(self, rng: &mut Rng) -> f64 {
        match self {
            Draw::Fixed(value) => value,
            Draw::Range([low, high]) => low + (high - low) * rng.unit(),
        }
    }
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name (the file's stem if left out).
    #[serde(default)]
    pub name: String,
    /// What it exercises, in a sentence.
    #[serde(default)]
    pub description: String,
    /// Nodes started at time 0 (`n1` to `nN`).
    pub nodes: usize,
    /// Chat sessions, one user each (`u0`, `u1`, ...).
    pub sessions: u32,
    /// How long faults may happen (s): the faulty phase.
    pub duration_s: f64,
    /// How long the run goes on after the last fault, with no fault at all: the
    /// liveness phase (s).
    #[serde(default = "default_settle_s")]
    pub settle_s: f64,
    /// The users.
    #[serde(default)]
    pub workload: Workload,
    /// The network.
    #[serde(default)]
    pub network: Network,
    /// MySQL (the durable tier, also holding the member table) and Redis.
    #[serde(default)]
    pub storage: Storage,
    /// Per-node clock drift.
    #[serde(default)]
    pub clocks: Clocks,
    /// The handoff's limits.
    #[serde(default)]
    pub handoff: Handoff,
    /// Passivation and snapshots.
    #[serde(default)]
    pub session: SessionSettings,
    /// Faults at set times.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Faults the seed draws.
    #[serde(default)]
    pub random_faults: Option<RandomFaults>,
    /// The scripts and flows of `[workload] conversations` and `flows`, read
    /// when the scenario is parsed.
    #[serde(skip)]
    pub conversations: Option<Arc<Conversations>>,
    /// How the command line named it (a shipped scenario's name, or a path):
    /// what replay commands repeat.
    #[serde(skip)]
    pub source: String,
}

fn default_settle_s() -> f64 {
    20.0
}

/// What the chat users do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Pause between a reply and the user's next message (ms, drawn per turn).
    pub think_ms: [u64; 2],
    /// When a user first speaks (ms after the start, drawn per user).
    pub start_ms: [u64; 2],
    /// How long a user waits for an answer before sending the same message
    /// again (same message id).
    pub retry_after_ms: u64,
    /// Pause before retrying after an error answer (ms, drawn per retry).
    pub error_backoff_ms: [u64; 2],
    /// A dir of conversation scripts: user `i` plays script `i % n` (sorted by
    /// file name) instead of the shoe-shop texts, each answer checked against
    /// its turn. Relative to the workspace root unless absolute. Needs `flows`.
    pub conversations: Option<String>,
    /// A flows dir (`filter.toml`, `VERSION/NAME.toml`): the nodes run it
    /// instead of the hand-written shoe shop. Needs `conversations`.
    pub flows: Option<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            think_ms: [500, 4_000],
            start_ms: [0, 2_000],
            retry_after_ms: 3_000,
            error_backoff_ms: [200, 800],
            conversations: None,
            flows: None,
        }
    }
}

/// The network between nodes, and between users and nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Fastest delivery (ms).
    pub latency_min_ms: Draw,
    /// Slowest ordinary delivery (ms).
    pub latency_max_ms: Draw,
    /// Share of messages that take ten times `latency_max_ms` (faulty phase).
    pub tail: Draw,
    /// Share of messages lost (faulty phase).
    pub loss: Draw,
    /// Share of messages delivered twice (faulty phase).
    pub duplicate: Draw,
    /// Share of messages held back by up to five times `latency_max_ms`, so
    /// that later ones overtake them (faulty phase).
    pub reorder: Draw,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_min_ms: Draw::Fixed(1.0),
            latency_max_ms: Draw::Fixed(5.0),
            tail: Draw::Fixed(0.0),
            loss: Draw::Fixed(0.0),
            duplicate: Draw::Fixed(0.0),
            reorder: Draw::Fixed(0.0),
        }
    }
}

/// The simulated stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// MySQL's fastest answer (ms).
    pub mysql_latency_min_ms: Draw,
    /// MySQL's slowest ordinary answer (ms).
    pub mysql_latency_max_ms: Draw,
    /// Share of MySQL requests that fail, not applied (faulty phase).
    pub mysql_errors: Draw,
    /// Share of MySQL requests applied whose answer is lost: the client sees
    /// an error (faulty phase).
    pub mysql_unknown_outcome: Draw,
    /// Redis's answer time (ms).
    pub redis_latency_ms: Draw,
    /// Share of Redis requests that time out (faulty phase).
    pub redis_timeouts: Draw,
    /// How long a node waits for Redis before going to MySQL alone (ms).
    pub redis_timeout_ms: u64,
    /// Attempts at a commit before the turn is answered `unavailable`.
    pub commit_attempts: u32,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            mysql_latency_min_ms: Draw::Fixed(1.0),
            mysql_latency_max_ms: Draw::Fixed(6.0),
            mysql_errors: Draw::Fixed(0.0),
            mysql_unknown_outcome: Draw::Fixed(0.0),
            redis_latency_ms: Draw::Fixed(0.5),
            redis_timeouts: Draw::Fixed(0.0),
            redis_timeout_ms: 50,
            commit_attempts: 3,
        }
    }
}

/// Clock drift: each node's clock runs fast or slow by up to this much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clocks {
    /// Largest drift, in parts per million (drawn per node in ±this).
    pub drift_ppm: Draw,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            drift_ppm: Draw::Fixed(100.0),
        }
    }
}

/// The handoff's limits (confab_core::handoff::HandoffConfig).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Handoff {
    /// Turns queued per session, at most (`runtime.max_queued_per_session`).
    #[serde(alias = "buffer_max")]
    pub queue_max: usize,
    /// How long a new owner holds an expected session's turns for its state,
    /// and an old owner waits for the new owner's answer (ms).
    #[serde(alias = "timeout_ms")]
    pub hold_ms: u64,
    /// Sessions handing off at once on one node, at most. Production's 2,048
    /// never binds on a few hundred sessions; 16 makes every join and drain
    /// of the shipped scenarios pace its handoff.
    pub handoff_max: usize,
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            queue_max: 64,
            hold_ms: 1_000,
            handoff_max: 16,
        }
    }
}

/// When sessions passivate and snapshot (`runtime.passivate_after_s`,
/// `store.snapshot_every_events`, `store.snapshot_every_s`), shorter than in
/// production so that runs of a minute do both often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// A resident session with no turn for this long passivates (ms).
    pub passivate_after_ms: u64,
    /// Events since the last snapshot that make one due at once.
    pub snapshot_every_events: u64,
    /// How long the first event not in a snapshot waits for one (ms).
    pub snapshot_every_ms: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            passivate_after_ms: 6_000,
            snapshot_every_events: 30,
            snapshot_every_ms: 8_000,
        }
    }
}

/// A fault at a set time. Nodes are named `n1`, `n2`, ...
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    /// kill -9: memory is lost, the durable tier is kept. Restarted after
    /// `restart_after_s` if given.
    Crash {
        /// Which node.
        node: String,
        /// When (s).
        at_s: f64,
        /// Restart after this long (s).
        restart_after_s: Option<f64>,
    },
    /// The node stops for a while (a long GC pause, a frozen VM), then goes on
    /// from where it was, unaware.
    Pause {
        /// Which node.
        node: String,
        /// When (s).
        at_s: f64,
        /// For how long (s).
        for_s: f64,
    },
    /// A new node joins.
    Join {
        /// Its name (past the initial `nodes`).
        node: String,
        /// When (s).
        at_s: f64,
    },
    /// The operator drains a node: its sessions move away, then it leaves.
    Drain {
        /// Which node.
        node: String,
        /// When (s).
        at_s: f64,
    },
    /// Messages from `a` to `b` are lost (and from `b` to `a` unless `one_way`).
    Partition {
        /// One side.
        a: Vec<String>,
        /// The other side (every node not in `a` if empty).
        #[serde(default)]
        b: Vec<String>,
        /// Only `a` → `b` is cut.
        #[serde(default)]
        one_way: bool,
        /// When (s).
        at_s: f64,
        /// For how long (s).
        for_s: f64,
    },
    /// Every message to or from the node is held until the clog ends.
    Clog {
        /// Which node.
        node: String,
        /// When (s).
        at_s: f64,
        /// For how long (s).
        for_s: f64,
    },
    /// MySQL answers slowly: `extra_ms` more per request.
    SlowStorage {
        /// When (s).
        at_s: f64,
        /// For how long (s).
        for_s: f64,
        /// Added to every request (ms).
        extra_ms: f64,
    },
    /// MySQL fails a share of its requests.
    StorageErrors {
        /// When (s).
        at_s: f64,
        /// For how long (s).
        for_s: f64,
        /// The share that fails.
        rate: f64,
    },
    /// Redis restarts: everything it held is gone.
    RedisRestart {
        /// When (s).
        at_s: f64,
    },
}

/// Faults the seed draws: how many, of which kinds, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// How many (drawn in this range).
    pub count: [u32; 2],
    /// Kinds to draw from: `crash`, `pause`, `partition`, `one_way_partition`,
    /// `clog`, `slow_storage`, `storage_errors`, `redis_restart`, `drain`, `join`.
    pub kinds: Vec<String>,
    /// Faults start in this window (s).
    pub window_s: [f64; 2],
}

/// A scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// No such file.
    #[error("no scenario {name:?}: looked for {path} (scenarios: {known})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The scenarios there are.
        known: String,
    },
    /// Not valid TOML for a scenario.
    #[error("scenario {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The folder the shipped scenarios are in.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

impl Scenario {
    /// Loads a scenario by name (from [`scenarios_dir`]) or by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        let as_path = Path::new(name_or_path);
        let path = if as_path.extension().is_some_and(|e| e == "toml") {
            as_path.to_path_buf()
        } else {
            scenarios_dir().join(format!("{name_or_path}.toml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|_| ScenarioError::NotFound {
            name: name_or_path.to_owned(),
            path: path.clone(),
            known: Self::shipped().join(", "),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut scenario = Self::parse(&text, &stem)
            .map_err(|message| ScenarioError::Invalid { path, message })?;
        name_or_path.clone_into(&mut scenario.source);
        Ok(scenario)
    }

    /// Parses a scenario's TOML; `name` is used if the file gives none. A
    /// scenario with conversations reads its scripts and flows here.
    pub fn parse(text: &str, name: &str) -> Result<Scenario, String> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        if scenario.name.is_empty() {
            scenario.name = name.to_owned();
        }
        scenario.source.clone_from(&scenario.name);
        scenario.validate()?;
        scenario.conversations = scenario.read_conversations()?;
        Ok(scenario)
    }

    /// The scripts and flows `[workload]` names, if it names them.
    fn read_conversations(&self) -> Result<Option<Arc<Conversations>>, String> {
        let w = &self.workload;
        let (scripts, flows) = match (&w.conversations, &w.flows) {
            (None, None) => return Ok(None),
            (Some(scripts), Some(flows)) => (scripts, flows),
            _ => {
                return Err(
                    "workload.conversations and workload.flows go together: set both or neither"
                        .into(),
                );
            }
        };
        let mut dirs = Vec::new();
        for (key, given) in [("conversations", scripts), ("flows", flows)] {
            let dir = conversations::resolve(given);
            if !dir.is_dir() {
                return Err(format!(
                    "workload.{key}: no dir {} (a relative path is read from the workspace root, {})",
                    dir.display(),
                    conversations::workspace_root().display()
                ));
            }
            dirs.push(dir);
        }
        let loaded = Conversations::load(&dirs[0], &dirs[1])?;
        let count = loaded.scripts().len();
        if (self.sessions as usize) < count {
            return Err(format!(
                "sessions ({}) is below the number of scripts ({count}): some would never run",
                self.sessions
            ));
        }
        Ok(Some(Arc::new(loaded)))
    }

    /// The names of the shipped scenarios, sorted.
    pub fn shipped() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem()?.to_str().map(str::to_owned))?
            })
            .collect();
        names.sort();
        names
    }

    fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > 64 {
            return Err(format!("nodes must be 1 to 64, not {}", self.nodes));
        }
        if self.sessions == 0 {
            return Err("sessions must be at least 1".into());
        }
        if !(self.duration_s > 0.0 && self.settle_s >= 5.0) {
            return Err("duration_s must be positive and settle_s at least 5".into());
        }
        let w = &self.workload;
        for (name, [low, high]) in [
            ("think_ms", w.think_ms),
            ("start_ms", w.start_ms),
            ("error_backoff_ms", w.error_backoff_ms),
        ] {
            if low > high {
                return Err(format!("workload.{name}: {low} is above {high}"));
            }
        }
        let n = &self.network;
        let st = &self.storage;
        let shares = [
            ("network.tail", n.tail),
            ("network.loss", n.loss),
            ("network.duplicate", n.duplicate),
            ("network.reorder", n.reorder),
            ("storage.mysql_errors", st.mysql_errors),
            ("storage.mysql_unknown_outcome", st.mysql_unknown_outcome),
            ("storage.redis_timeouts", st.redis_timeouts),
        ];
        let amounts = [
            ("network.latency_min_ms", n.latency_min_ms),
            ("network.latency_max_ms", n.latency_max_ms),
            ("storage.mysql_latency_min_ms", st.mysql_latency_min_ms),
            ("storage.mysql_latency_max_ms", st.mysql_latency_max_ms),
            ("storage.redis_latency_ms", st.redis_latency_ms),
            ("clocks.drift_ppm", self.clocks.drift_ppm),
        ];
        for (name, draw, max) in shares
            .iter()
            .map(|(n, d)| (n, d, 1.0))
            .chain(amounts.iter().map(|(n, d)| (n, d, 1e6)))
        {
            let (low, high) = match *draw {
                Draw::Fixed(v) => (v, v),
                Draw::Range([low, high]) => (low, high),
            };
            if low > high {
                return Err(format!("{name}: {low} is above {high}"));
            }
            if !(0.0..=max).contains(&low) || !(0.0..=max).contains(&high) {
                return Err(format!("{name}: must be within 0 and {max}"));
            }
        }
        if !(1..=10).contains(&st.commit_attempts) {
            return Err("storage.commit_attempts: must be 1 to 10".into());
        }
        if let Some(random) = &self.random_faults {
            for kind in &random.kinds {
                if !crate::faults::RANDOM_KINDS.contains(&kind.as_str()) {
                    return Err(format!(
                        "random_faults.kinds: unknown kind {kind:?} (known: {})",
                        crate::faults::RANDOM_KINDS.join(", ")
                    ));
                }
            }
            if random.count[0] > random.count[1] || random.window_s[0] > random.window_s[1] {
                return Err("random_faults: a range's low end is above its high end".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let shipped = Scenario::shipped();
        for name in [
            "rebalance",
            "crash",
            "partition",
            "slow-storage",
            "conversations",
        ] {
            assert!(shipped.contains(&name.to_owned()), "{name} is missing");
        }
        for name in shipped {
            Scenario::load(&name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn a_bad_scenario_says_what_is_wrong() {
        let err = Scenario::parse("nodes = 3\nsessions = 10\nduration_s = 10\nspeed = 2", "x")
            .unwrap_err();
        assert!(err.contains("speed"), "{err}");
        let err = Scenario::parse("nodes = 0\nsessions = 10\nduration_s = 10", "x").unwrap_err();
        assert!(err.contains("nodes"), "{err}");
        let err = Scenario::parse(
            "nodes = 2\nsessions = 1\nduration_s = 5\n[network]\nloss = [0.5, 0.1]",
            "x",
        )
        .unwrap_err();
        assert!(err.contains("network.loss"), "{err}");
        let err = Scenario::parse(
            "nodes = 2\nsessions = 1\nduration_s = 5\n[storage]\nmysql_errors = 1.5",
            "x",
        )
        .unwrap_err();
        assert!(err.contains("mysql_errors"), "{err}");
        let err = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(err.contains("crash"), "lists the known ones: {err}");
    }

    #[test]
    fn conversations_need_flows_existing_dirs_and_a_user_per_script() {
        let base = "nodes = 2\nsessions = 8\nduration_s = 5\n[workload]\n";
        let err = Scenario::parse(
            &format!("{base}conversations = \"config/conversations\""),
            "x",
        )
        .unwrap_err();
        assert!(err.contains("set both or neither"), "{err}");
        let err = Scenario::parse(
            &format!("{base}conversations = \"config/nope\"\nflows = \"config/flows\""),
            "x",
        )
        .unwrap_err();
        let missing = crate::conversations::workspace_root().join("config/nope");
        assert!(
            err.contains("workload.conversations") && err.contains(&missing.display().to_string()),
            "names the path it looked at: {err}"
        );
        let err = Scenario::parse(
            "nodes = 2\nsessions = 3\nduration_s = 5\n[workload]\n\
             conversations = \"config/conversations\"\nflows = \"config/flows\"",
            "x",
        )
        .unwrap_err();
        assert!(err.contains("below the number of scripts"), "{err}");
        let ok = Scenario::parse(
            &format!("{base}conversations = \"config/conversations\"\nflows = \"config/flows\""),
            "x",
        )
        .unwrap();
        assert!(ok.conversations.is_some());
        assert!(Scenario::load("crash").unwrap().conversations.is_none());
    }

    #[test]
    fn a_range_is_drawn_within_its_bounds() {
        let mut rng = Rng::new(7, 0);
        for _ in 0..1_000 {
            let v = Draw::Range([0.5, 2.0]).draw(&mut rng);
            assert!((0.5..=2.0).contains(&v));
        }
        assert_eq!(Draw::Fixed(3.0).draw(&mut rng), 3.0);
    }
}
