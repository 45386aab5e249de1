//! The node's configuration: defaults, then the TOML file, then `CONFAB_SECTION__KEY`
//! environment variables, then command-line flags.

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The most `runtime.max_stats_names` may be: each name costs a map entry per
/// node, and a stats answer lists them all.
const STATS_NAMES_MAX: usize = 10_000;

/// The whole file. `config/node.toml` documents every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) node: NodeSection,
    pub(crate) auth: AuthSection,
    pub(crate) gateway: GatewaySection,
    pub(crate) limits: LimitsSection,
    pub(crate) runtime: RuntimeSection,
    pub(crate) store: StoreSection,
    pub(crate) dialog: DialogSection,
    pub(crate) cluster: ClusterSection,
    pub(crate) tls: TlsSection,
    pub(crate) crypto: CryptoSection,
    pub(crate) log: LogSection,
    pub(crate) telemetry: TelemetrySection,
}

/// How the node writes its log lines (to stderr).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// `text` (one line per event) or `json` (one object per line).
    pub(crate) format: LogFormat,
    /// An `EnvFilter` directive; empty: confab's own lines at info, the
    /// libraries' at warn. `RUST_LOG` overrides it.
    pub(crate) filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: String::new(),
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Traces out over OTLP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetrySection {
    /// An OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; empty: no export.
    pub(crate) otlp_endpoint: String,
    /// The service name spans carry.
    pub(crate) service_name: String,
    /// The share of turns traced, 0.0 to 1.0 (a trace that arrives from another
    /// node keeps that node's decision).
    pub(crate) sample_ratio: f64,
    /// Spans queued for export, at most; past it, spans are dropped (and counted).
    pub(crate) queue_max: usize,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "confab".into(),
            sample_ratio: 1.0,
            queue_max: 2048,
        }
    }
}

/// Encryption at rest: where the master keys that wrap the data-key ring are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CryptoSection {
    pub(crate) keys_file: PathBuf,
    pub(crate) keys: String,
    pub(crate) reencrypt_per_s: u32,
}

impl Default for CryptoSection {
    fn default() -> Self {
        Self {
            keys_file: PathBuf::new(),
            keys: String::new(),
            reencrypt_per_s: 200,
        }
    }
}

/// Outbound TLS: what the node trusts when it dials out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSection {
    pub(crate) ca_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NodeSection {
    pub(crate) id: String,
    pub(crate) bind: String,
    pub(crate) http_port: u16,
    pub(crate) cluster_port: u16,
    pub(crate) seeds: Vec<String>,
    pub(crate) data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: "node-1".into(),
            bind: "127.0.0.1".into(),
            http_port: 8080,
            cluster_port: 7070,
            seeds: Vec::new(),
            data_dir: PathBuf::from("./confab-data"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthSection {
    pub(crate) jwt_secret: String,
    pub(crate) jwks_file: PathBuf,
    pub(crate) jwks_url: String,
    pub(crate) jwks_refresh_s: u64,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) leeway_s: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            jwks_refresh_s: 300,
            issuer: String::new(),
            audience: String::new(),
            leeway_s: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    pub(crate) turns_per_s: u32,
    pub(crate) burst: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            turns_per_s: 20,
            burst: 40,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GatewaySection {
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_text_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) idle_before_upgrade_ms: u64,
    pub(crate) max_queued_per_connection: usize,
    pub(crate) admission_latency_target_ms: u64,
    pub(crate) admission_min_inflight: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_text_bytes: 4 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            idle_before_upgrade_ms: 10_000,
            max_queued_per_connection: 32,
            admission_latency_target_ms: 0,
            admission_min_inflight: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RuntimeSection {
    pub(crate) max_inflight_turns: usize,
    pub(crate) max_queued_per_session: usize,
    pub(crate) max_resident_sessions: usize,
    /// Sessions a node hands off at once when the ring moves them away.
    pub(crate) max_handing_off: usize,
    pub(crate) passivate_after_s: u64,
    pub(crate) turn_timeout_ms: u64,
    /// Distinct intent names (and as many slot names) `confabctl stats` counts
    /// on their own per node; later names are counted as `other`.
    pub(crate) max_stats_names: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            max_inflight_turns: 8192,
            max_queued_per_session: 32,
            max_resident_sessions: 100_000,
            max_handing_off: confab_core::handoff::HandoffConfig::default().handoff_max,
            passivate_after_s: 600,
            turn_timeout_ms: 10_000,
            max_stats_names: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreSection {
    pub(crate) mysql_url: String,
    /// `[[store.mysql_shards]]`: shard ranges on other servers than `mysql_url`.
    pub(crate) mysql_shards: Vec<confab_store::mysql::ShardRange>,
    pub(crate) redis_url: String,
    /// Seed nodes of a Redis Cluster, instead of `redis_url`.
    pub(crate) redis_cluster_nodes: Vec<String>,
    pub(crate) redis_ttl_s: u64,
    pub(crate) redis_timeout_ms: u64,
    pub(crate) redis_key_prefix: String,
    pub(crate) redis_cached_events_max: usize,
    pub(crate) mysql_pool_max: u32,
    pub(crate) mysql_acquire_timeout_ms: u64,
    pub(crate) sqlite_readers_max: u32,
    pub(crate) batch_max_events: usize,
    pub(crate) batch_max_delay_ms: u64,
    pub(crate) commit_concurrency: usize,
    pub(crate) commit_retries: u32,
    pub(crate) commit_wait_max_ms: u64,
    pub(crate) snapshot_every_s: u64,
    pub(crate) snapshot_every_events: u64,
    pub(crate) sqlite_synchronous: String,
    pub(crate) snapshot_hmac_key: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            mysql_url: String::new(),
            mysql_shards: Vec::new(),
            redis_url: String::new(),
            redis_cluster_nodes: Vec::new(),
            redis_ttl_s: 1800,
            redis_timeout_ms: 250,
            redis_key_prefix: "confab".into(),
            redis_cached_events_max: 4096,
            mysql_pool_max: 16,
            mysql_acquire_timeout_ms: 2000,
            sqlite_readers_max: 4,
            batch_max_events: 2048,
            batch_max_delay_ms: 2,
            commit_concurrency: 4,
            commit_retries: 3,
            commit_wait_max_ms: 2000,
            snapshot_every_s: 30,
            snapshot_every_events: 300,
            sqlite_synchronous: "full".into(),
            snapshot_hmac_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterSection {
    pub(crate) cookie: String,
    pub(crate) heartbeat_every_ms: u64,
    pub(crate) down_after_ms: u64,
    pub(crate) tls_cert: String,
    pub(crate) tls_key: String,
    pub(crate) tls_ca: String,
    pub(crate) advertise: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            cookie: String::new(),
            heartbeat_every_ms: 500,
            down_after_ms: 2000,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            advertise: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DialogSection {
    pub(crate) flows_dir: PathBuf,
    pub(crate) stable_version: String,
    pub(crate) reload_poll_ms: u64,
    pub(crate) action_max_retries: u32,
    pub(crate) action_backoff_ms: u64,
    pub(crate) action_backoff_max_ms: u64,
    pub(crate) stages: Vec<confab_runtime::stages::StageConfig>,
}

impl Default for DialogSection {
    fn default() -> Self {
        Self {
            flows_dir: PathBuf::new(),
            stable_version: "v1".into(),
            reload_poll_ms: 500,
            action_max_retries: 3,
            action_backoff_ms: 100,
            action_backoff_max_ms: 2000,
            stages: Vec::new(),
        }
    }
}

/// The keys whose value may instead be given as a file, by an environment
/// variable `CONFAB_SECTION__KEY_FILE` naming it (the Docker and Kubernetes way
/// to pass secrets).
/// (`crypto.keys` has none: `CONFAB_CRYPTO__KEYS_FILE` is `crypto.keys_file`,
/// the file provider, which checks the file's mode.)
pub(crate) const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "cluster.cookie",
    "store.mysql_url",
    "store.redis_url",
    "store.redis_cluster_nodes",
    "store.snapshot_hmac_key",
];

/// The secret key a `SECTION__KEY_FILE` variable (prefix stripped) names, if any.
fn secret_of_file_var(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let stem = name.strip_suffix("_file")?;
    let (section, key) = stem.split_once("__")?;
    let dotted = format!("{section}.{key}");
    SECRET_KEYS.iter().copied().find(|k| *k == dotted)
}

/// The items of a list key's text: separated by commas, each trimmed, the
/// empty ones dropped (`a, b,`).
fn list_items(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The secrets given as files: each `CONFAB_SECTION__KEY_FILE` variable of a
/// secret key, read (and trimmed); a list key's file holds its items, one
/// per line or comma-separated ([`list_items`]). `defaults` (`Config::default()` as a figment value)
/// says which keys are lists.
fn secrets_from_files(
    vars: impl Iterator<Item = (String, String)>,
    defaults: &figment::value::Value,
) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    for (name, path) in vars {
        let Some(key) = name.strip_prefix("CONFAB_").and_then(secret_of_file_var) else {
            continue;
        };
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("{name}: reading the secret file {path:?}"))?;
        figment = if matches!(
            defaults.find_ref(key),
            Some(figment::value::Value::Array(..))
        ) {
            // One item per line, or a line of comma-separated items.
            let items: Vec<String> = value.lines().flat_map(list_items).collect();
            figment.merge(Serialized::default(key, items))
        } else {
            figment.merge(Serialized::default(key, value.trim().to_owned()))
        };
    }
    Ok(figment)
}

/// The environment's `CONFAB_SECTION__KEY` variables, each read as the type its
/// key has: figment alone reads `CONFAB_NODE__ID=1` as a number (which a string
/// key then refuses) and a list only in `[a, b]` form. Here a string key takes
/// the text as it is, and a list key takes `a,b,c` (or still `[a, b]`).
struct TypedEnv {
    env: Env,
    /// `Config::default()` as a figment value: what type each key has.
    defaults: figment::value::Value,
}

impl TypedEnv {
    fn value(&self, key: &str, raw: &str) -> figment::value::Value {
        use figment::value::Value;
        let parsed = || raw.parse::<Value>().unwrap_or_else(|never| match never {});
        match self.defaults.find_ref(key) {
            Some(Value::String(..)) => Value::from(raw.to_owned()),
            Some(Value::Array(..)) if !raw.trim_start().starts_with('[') => Value::from(
                list_items(raw)
                    .into_iter()
                    .map(Value::from)
                    .collect::<Vec<Value>>(),
            ),
            _ => parsed(),
        }
    }
}

impl figment::Provider for TypedEnv {
    fn metadata(&self) -> figment::Metadata {
        self.env.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        // Sorted, so that two variables for one key always resolve the same way.
        let mut vars: Vec<_> = self.env.iter().collect();
        vars.sort();
        for (key, raw) in vars {
            let nested = figment::util::nest(key.as_str(), self.value(key.as_str(), &raw));
            if let Some(nested) = nested.into_dict() {
                dict = merge_dicts(dict, nested);
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// `b` over `a`, key by key, down through nested tables.
fn merge_dicts(mut a: figment::value::Dict, b: figment::value::Dict) -> figment::value::Dict {
    use figment::value::Value;
    for (key, value) in b {
        let merged = match (a.remove(&key), value) {
            (Some(Value::Dict(_, old)), Value::Dict(tag, new)) => {
                Value::Dict(tag, merge_dicts(old, new))
            }
            (_, new) => new,
        };
        a.insert(key, merged);
    }
    a
}

/// Retries of an action, at most (`dialog.action_max_retries`).
const ACTION_RETRIES_MAX: u32 = 10;
/// External stages, at most.
const STAGES_MAX: usize = 16;

impl Config {
    /// Defaults, the file (if given), the environment, then `overrides`.
    pub(crate) fn load(file: Option<&Path>, overrides: Figment) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        // Only `CONFAB_SECTION__KEY`: `CONFAB_NODE` and `CONFAB_TOKEN` belong to confabctl.
        // A secret's `..._FILE` form is read below, not taken as a key.
        let env = Env::prefixed("CONFAB_")
            .filter(|key| key.as_str().contains("__") && secret_of_file_var(key.as_str()).is_none())
            .split("__");
        let defaults = figment::value::Value::serialize(Config::default())
            .context("the default configuration")?;
        let secrets = secrets_from_files(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            &defaults,
        )?;
        let env = TypedEnv { env, defaults };
        let config: Config = figment
            .merge(env)
            .merge(secrets)
            .merge(overrides)
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// The cluster address other nodes dial: `cluster.advertise`, else
    /// `node.bind:node.cluster_port`.
    pub(crate) fn cluster_advertise(&self) -> String {
        if self.cluster.advertise.is_empty() {
            if self.node.bind.contains(':') {
                format!("[{}]:{}", self.node.bind, self.node.cluster_port)
            } else {
                format!("{}:{}", self.node.bind, self.node.cluster_port)
            }
        } else {
            self.cluster.advertise.clone()
        }
    }

    /// The TLS files, when cluster TLS is configured.
    pub(crate) fn cluster_tls(&self) -> Option<confab_runtime::cluster_tls::TlsFiles> {
        let c = &self.cluster;
        (!c.tls_cert.is_empty()).then(|| confab_runtime::cluster_tls::TlsFiles {
            cert: c.tls_cert.clone().into(),
            key: c.tls_key.clone().into(),
            ca: c.tls_ca.clone().into(),
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        confab_core::NodeId::new(self.node.id.clone())
            .with_context(|| format!("node.id {:?}", self.node.id))?;
        let t = &self.telemetry;
        anyhow::ensure!(
            (0.0..=1.0).contains(&t.sample_ratio),
            "telemetry.sample_ratio must be between 0.0 and 1.0, not {}",
            t.sample_ratio
        );
        anyhow::ensure!(
            t.otlp_endpoint.is_empty()
                || t.otlp_endpoint.starts_with("http://")
                || t.otlp_endpoint.starts_with("https://"),
            "telemetry.otlp_endpoint must start with http:// or https:// (OTLP over HTTP), not {:?}",
            t.otlp_endpoint
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&t.queue_max),
            "telemetry.queue_max must be between 1 and 1000000"
        );
        let c = &self.cluster;
        let tls_set = [&c.tls_cert, &c.tls_key, &c.tls_ca]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        anyhow::ensure!(
            tls_set == 0 || tls_set == 3,
            "cluster TLS needs all of cluster.tls_cert, cluster.tls_key and cluster.tls_ca (or none)"
        );
        anyhow::ensure!(
            tls_set == 0
                || !self.cluster_advertise().starts_with("0.0.0.0:")
                    && !self.cluster_advertise().starts_with("[::]:"),
            "with cluster TLS and node.bind {:?}, set cluster.advertise to the HOST:PORT other nodes dial (the host its certificate names)",
            self.node.bind
        );
        anyhow::ensure!(
            matches!(self.store.sqlite_synchronous.as_str(), "full" | "normal"),
            "store.sqlite_synchronous must be \"full\" or \"normal\", not {:?}",
            self.store.sqlite_synchronous
        );
        for (name, value) in [
            ("gateway.max_frame_bytes", self.gateway.max_frame_bytes),
            ("gateway.max_text_bytes", self.gateway.max_text_bytes),
            ("gateway.max_connections", self.gateway.max_connections),
            (
                "gateway.max_connections_per_ip",
                self.gateway.max_connections_per_ip,
            ),
            ("limits.turns_per_s", self.limits.turns_per_s as usize),
            ("limits.burst", self.limits.burst as usize),
            (
                "gateway.max_queued_per_connection",
                self.gateway.max_queued_per_connection,
            ),
            (
                "gateway.admission_min_inflight",
                self.gateway.admission_min_inflight,
            ),
            (
                "runtime.max_inflight_turns",
                self.runtime.max_inflight_turns,
            ),
            (
                "runtime.max_queued_per_session",
                self.runtime.max_queued_per_session,
            ),
            ("runtime.max_handing_off", self.runtime.max_handing_off),
            ("store.batch_max_events", self.store.batch_max_events),
            ("store.commit_concurrency", self.store.commit_concurrency),
            (
                "store.redis_cached_events_max",
                self.store.redis_cached_events_max,
            ),
        ] {
            anyhow::ensure!(value > 0, "{name} must be above 0");
        }
        anyhow::ensure!(
            self.runtime.max_stats_names <= STATS_NAMES_MAX,
            "runtime.max_stats_names must be at most {STATS_NAMES_MAX}, not {}",
            self.runtime.max_stats_names
        );
        for (name, value) in [
            (
                "gateway.idle_before_upgrade_ms",
                self.gateway.idle_before_upgrade_ms,
            ),
            ("auth.jwks_refresh_s", self.auth.jwks_refresh_s),
            ("store.redis_ttl_s", self.store.redis_ttl_s),
            ("store.redis_timeout_ms", self.store.redis_timeout_ms),
            ("store.snapshot_every_s", self.store.snapshot_every_s),
            (
                "store.snapshot_every_events",
                self.store.snapshot_every_events,
            ),
            ("store.mysql_pool_max", u64::from(self.store.mysql_pool_max)),
            (
                "store.sqlite_readers_max",
                u64::from(self.store.sqlite_readers_max),
            ),
        ] {
            anyhow::ensure!(value > 0, "{name} must be above 0");
        }
        let mysql = &self.store.mysql_url;
        anyhow::ensure!(
            mysql.is_empty() || mysql.starts_with("mysql://"),
            "store.mysql_url must start with mysql:// (or be empty), not {mysql:?}"
        );
        if !self.store.mysql_shards.is_empty() {
            anyhow::ensure!(
                !mysql.is_empty(),
                "store.mysql_shards needs store.mysql_url: the control server, and the home of \
                 every shard no range names"
            );
            confab_store::mysql::ShardMap::new(mysql, &self.store.mysql_shards)
                .map_err(anyhow::Error::msg)?;
        }
        let redis = &self.store.redis_url;
        anyhow::ensure!(
            redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://"),
            "store.redis_url must start with redis:// or rediss:// (TLS), or be empty, not {redis:?}"
        );
        let seeds = &self.store.redis_cluster_nodes;
        anyhow::ensure!(
            redis.is_empty() || seeds.is_empty(),
            "store.redis_url and store.redis_cluster_nodes are both set: give one, the URL of a \
             single Redis or the seed nodes of a Redis Cluster"
        );
        for seed in seeds {
            anyhow::ensure!(
                seed.starts_with("redis://") || seed.starts_with("rediss://"),
                "store.redis_cluster_nodes: each seed must start with redis:// or rediss:// (TLS), \
                 not {seed:?}"
            );
        }
        anyhow::ensure!(
            self.store.commit_wait_max_ms.saturating_mul(2) <= self.runtime.turn_timeout_ms,
            "store.commit_wait_max_ms ({}) must be at most half of runtime.turn_timeout_ms ({}): \
             a turn the store is too slow for gets `overloaded`, and one it tried gets its \
             answer, before the turn times out",
            self.store.commit_wait_max_ms,
            self.runtime.turn_timeout_ms
        );
        anyhow::ensure!(
            self.cluster.heartbeat_every_ms > 0
                && self.cluster.down_after_ms >= 2 * self.cluster.heartbeat_every_ms,
            "cluster.down_after_ms must be at least twice cluster.heartbeat_every_ms (above 0)"
        );
        let d = &self.dialog;
        anyhow::ensure!(
            d.reload_poll_ms >= 50,
            "dialog.reload_poll_ms must be at least 50, not {}",
            d.reload_poll_ms
        );
        anyhow::ensure!(
            d.action_max_retries <= ACTION_RETRIES_MAX,
            "dialog.action_max_retries must be at most {ACTION_RETRIES_MAX}, not {}",
            d.action_max_retries
        );
        anyhow::ensure!(
            d.action_backoff_ms > 0 && d.action_backoff_ms <= d.action_backoff_max_ms,
            "dialog.action_backoff_ms must be above 0 and at most dialog.action_backoff_max_ms"
        );
        anyhow::ensure!(
            d.stages.len() <= STAGES_MAX,
            "dialog.stages: at most {STAGES_MAX} stages"
        );
        for stage in &d.stages {
            anyhow::ensure!(
                stage.url.starts_with("http://") || stage.url.starts_with("https://"),
                "dialog.stages {}: url must start with http:// or https://, not {:?}",
                stage.name,
                stage.url
            );
            anyhow::ensure!(
                stage.timeout_ms > 0 && stage.retries <= ACTION_RETRIES_MAX,
                "dialog.stages {}: timeout_ms must be above 0 and retries at most {ACTION_RETRIES_MAX}",
                stage.name
            );
        }
        anyhow::ensure!(
            self.gateway.max_text_bytes <= self.gateway.max_frame_bytes,
            "gateway.max_text_bytes ({}) cannot exceed gateway.max_frame_bytes ({})",
            self.gateway.max_text_bytes,
            self.gateway.max_frame_bytes
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/node.toml");
        let from_file: Config = Figment::from(Toml::file(&file)).extract().unwrap();
        let defaults = Config::default();
        assert_eq!(
            toml_of(&from_file),
            toml_of(&defaults),
            "config/node.toml and the defaults disagree"
        );
        // Every key is written out, not left to its default.
        let written: figment::value::Value = Figment::from(Toml::file(&file)).extract().unwrap();
        let all: figment::value::Value = Figment::from(Serialized::defaults(Config::default()))
            .extract()
            .unwrap();
        assert_eq!(
            keys_of(&written, ""),
            keys_of(&all, ""),
            "config/node.toml must document every key"
        );
    }

    fn toml_of(config: &Config) -> String {
        format!("{config:?}")
    }

    fn keys_of(value: &figment::value::Value, prefix: &str) -> Vec<String> {
        match value {
            figment::value::Value::Dict(_, dict) => dict
                .iter()
                .flat_map(|(k, v)| keys_of(v, &format!("{prefix}{k}.")))
                .collect(),
            _ => vec![prefix.trim_end_matches('.').to_owned()],
        }
    }

    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("n.toml", "[runtime]\nmax_inflight_turns = 5\n")?;
            jail.set_env("CONFAB_RUNTIME__MAX_INFLIGHT_TURNS", "7");
            jail.set_env("CONFAB_AUTH__JWT_SECRET", "from-env");
            jail.set_env("CONFAB_NODE", "http://ignored");
            let config = Config::load(
                Some(Path::new("n.toml")),
                Figment::from(Serialized::default("auth.jwt_secret", "from-flag")),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(config.runtime.max_inflight_turns, 7);
            assert_eq!(config.auth.jwt_secret, "from-flag");
            Ok(())
        });
    }

    #[test]
    fn env_values_take_their_key_type() {
        figment::Jail::expect_with(|jail| {
            // A numeric-looking id and secret stay strings; a number stays a number.
            jail.set_env("CONFAB_NODE__ID", "1");
            jail.set_env(
                "CONFAB_AUTH__JWT_SECRET",
                "12345678901234567890123456789012",
            );
            jail.set_env("CONFAB_NODE__HTTP_PORT", "9001");
            // A list as people write it in a manifest, spaces and a trailing comma too.
            jail.set_env("CONFAB_NODE__SEEDS", "a.example:7070, b.example:7070,");
            let config = Config::load(None, Figment::new()).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.node.id, "1");
            assert_eq!(config.auth.jwt_secret, "12345678901234567890123456789012");
            assert_eq!(config.node.http_port, 9001);
            assert_eq!(config.node.seeds, ["a.example:7070", "b.example:7070"]);
            // The bracketed form still works.
            jail.set_env("CONFAB_NODE__SEEDS", "[c.example:7070]");
            let config = Config::load(None, Figment::new()).map_err(|e| format!("{e:#}"))?;
            assert_eq!(config.node.seeds, ["c.example:7070"]);
            // A word where a number belongs is refused, naming the variable.
            jail.set_env("CONFAB_NODE__HTTP_PORT", "eighty");
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(format!("{err:#}").contains("HTTP_PORT"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn dialog_stages_are_read_from_the_file_and_checked() {
        figment::Jail::expect_with(|jail| {
            let stage = "[[dialog.stages]]\nname = \"llm\"\nat = \"after_reply\"\n\
                         url = \"URL\"\ntimeout_ms = 800\nretries = 1\non_error = \"skip\"\n";
            jail.create_file(
                "ok.toml",
                &stage.replace("URL", "http://127.0.0.1:9100/rewrite"),
            )?;
            let config = Config::load(Some(Path::new("ok.toml")), Figment::new()).unwrap();
            let stages = &config.dialog.stages;
            assert_eq!(stages.len(), 1);
            assert_eq!(
                (stages[0].at, stages[0].on_error, stages[0].timeout_ms),
                (
                    confab_runtime::stages::StagePoint::AfterReply,
                    confab_runtime::stages::OnError::Skip,
                    800
                )
            );
            jail.create_file(
                "tls.toml",
                &stage.replace("URL", "https://llm.example/rewrite"),
            )?;
            assert!(Config::load(Some(Path::new("tls.toml")), Figment::new()).is_ok());
            jail.create_file(
                "ftp.toml",
                &stage.replace("URL", "ftp://llm.example/rewrite"),
            )?;
            let err = Config::load(Some(Path::new("ftp.toml")), Figment::new()).unwrap_err();
            assert!(err.to_string().contains("https://"), "{err}");
            jail.create_file(
                "at.toml",
                &stage
                    .replace("after_reply", "whenever")
                    .replace("URL", "http://x"),
            )?;
            let err = Config::load(Some(Path::new("at.toml")), Figment::new()).unwrap_err();
            assert!(format!("{err:#}").contains("whenever"), "{err:#}");
            jail.create_file("retries.toml", "[dialog]\naction_max_retries = 99\n")?;
            let err = Config::load(Some(Path::new("retries.toml")), Figment::new()).unwrap_err();
            assert!(err.to_string().contains("action_max_retries"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn redis_cluster_nodes_take_a_list_and_exclude_redis_url() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cluster.toml",
                "[store]\nredis_cluster_nodes = [\"rediss://r1.example:6380\"]\n",
            )?;
            let config = Config::load(Some(Path::new("cluster.toml")), Figment::new())
                .map_err(|e| format!("{e:#}"))?;
            assert_eq!(
                config.store.redis_cluster_nodes,
                ["rediss://r1.example:6380"]
            );
            // A comma list in the environment, as a manifest writes it.
            jail.set_env(
                "CONFAB_STORE__REDIS_CLUSTER_NODES",
                "redis://r1.example:6379, redis://r2.example:6379",
            );
            let config = Config::load(None, Figment::new()).map_err(|e| format!("{e:#}"))?;
            assert_eq!(
                config.store.redis_cluster_nodes,
                ["redis://r1.example:6379", "redis://r2.example:6379"]
            );
            jail.set_env("CONFAB_STORE__REDIS_URL", "redis://one.example:6379/0");
            let err = format!("{:#}", Config::load(None, Figment::new()).unwrap_err());
            assert!(
                err.contains("store.redis_url and store.redis_cluster_nodes are both set"),
                "{err}"
            );
            jail.set_env("CONFAB_STORE__REDIS_URL", "");
            jail.set_env("CONFAB_STORE__REDIS_CLUSTER_NODES", "r1.example:6379");
            let err = format!("{:#}", Config::load(None, Figment::new()).unwrap_err());
            assert!(
                err.contains("store.redis_cluster_nodes") && err.contains("redis://"),
                "{err}"
            );
            jail.clear_env();
            // The seeds may carry a password: a file, one per line, as a
            // mounted secret holds them; it wins over the variable.
            jail.create_file(
                "seeds",
                "rediss://:s3cret@r3.example:6380\n\nrediss://:s3cret@r4.example:6380, \n",
            )?;
            jail.set_env(
                "CONFAB_STORE__REDIS_CLUSTER_NODES",
                "redis://plain.example:6379",
            );
            jail.set_env("CONFAB_STORE__REDIS_CLUSTER_NODES_FILE", "seeds");
            let config = Config::load(None, Figment::new()).map_err(|e| format!("{e:#}"))?;
            assert_eq!(
                config.store.redis_cluster_nodes,
                [
                    "rediss://:s3cret@r3.example:6380",
                    "rediss://:s3cret@r4.example:6380"
                ]
            );
            jail.set_env("CONFAB_STORE__REDIS_CLUSTER_NODES_FILE", "no-such-file");
            let err = format!("{:#}", Config::load(None, Figment::new()).unwrap_err());
            assert!(
                err.contains("CONFAB_STORE__REDIS_CLUSTER_NODES_FILE")
                    && err.contains("no-such-file"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[store]\nsqlite_synchronous = \"sometimes\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), Figment::new()).unwrap_err();
            assert!(err.to_string().contains("sqlite_synchronous"), "{err}");
            jail.create_file("typo.toml", "[runtime]\nmax_inflight = 5\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), Figment::new()).unwrap_err();
            assert!(format!("{err:#}").contains("max_inflight"), "{err:#}");
            Ok(())
        });
    }
}
