//! `confab node`: one node, serving HTTP and WebSocket, until SIGINT or SIGTERM.

use crate::config::Config;
use crate::secrets;
use crate::telemetry;
use anyhow::Context;
use confab_core::NodeId;
use confab_core::session::SnapshotKey;
use confab_gateway::admission::AdmissionLimits;
use confab_gateway::auth::AuthOptions;
use confab_gateway::auth::Authenticator;
use confab_gateway::limits::TurnLimits;
use confab_gateway::serve::ConnectionLimits;
use confab_gateway::{Gateway, GatewayConfig};
use confab_runtime::actions::ActionSettings;
use confab_runtime::dialog::{Dialog, DialogConfig};
use confab_runtime::keys::KeyManager;
use confab_runtime::{Runtime, RuntimeConfig};
use confab_store::Store;
use confab_store::mysql::{MySqlOptions, MySqlStore, redacted};
use confab_store::redis::{RedisOptions, RedisTier};
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use confab_store::tiered::TieredStore;
use figment::Figment;
use figment::providers::Serialized;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(clap::Args, Default)]
pub(crate) struct NodeArgs {
    /// The TOML config file (see config/node.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id.
    #[arg(long)]
    node_id: Option<String>,
    /// HTTP port.
    #[arg(long)]
    http_port: Option<u16>,
    /// Cluster port: node-to-node traffic (ractor_cluster), bound on node.bind.
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Members of a running cluster to join, HOST:PORT,...
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// The data dir (embedded store, dev secrets).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The HS256 secret for client tokens.
    #[arg(long, hide_env_values = true)]
    jwt_secret: Option<String>,
}

impl NodeArgs {
    fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if let Some(id) = &self.node_id {
            figment = figment.merge(Serialized::default("node.id", id));
        }
        if let Some(port) = self.http_port {
            figment = figment.merge(Serialized::default("node.http_port", port));
        }
        if let Some(port) = self.cluster_port {
            figment = figment.merge(Serialized::default("node.cluster_port", port));
        }
        if !self.seeds.is_empty() {
            figment = figment.merge(Serialized::default("node.seeds", &self.seeds));
        }
        if let Some(dir) = &self.data_dir {
            figment = figment.merge(Serialized::default("node.data_dir", dir));
        }
        if let Some(secret) = &self.jwt_secret {
            figment = figment.merge(Serialized::default("auth.jwt_secret", secret));
        }
        figment
    }
}

/// Under `confab up` (its pid in [`crate::up::SUPERVISOR_PID_ENV`]): asks
/// Linux for SIGTERM when the parent dies, and stops at once if it already
/// has. Linux sends the signal when the thread that started this process
/// exits: `confab up` starts its nodes from its main thread, which lives as
/// long as it does.
pub(crate) fn stop_with_parent() -> anyhow::Result<()> {
    let Ok(pid) = std::env::var(crate::up::SUPERVISOR_PID_ENV) else {
        return Ok(());
    };
    let parent: i32 = pid
        .parse()
        .with_context(|| format!("{} is not a pid: {pid:?}", crate::up::SUPERVISOR_PID_ENV))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot ask to be stopped with confab up")?;
    // It died before the line above: no signal will come.
    anyhow::ensure!(
        nix::unistd::getppid().as_raw() == parent,
        "confab up (pid {parent}), which started this node, has exited"
    );
    Ok(())
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), args.overrides())?;
    let telemetry = telemetry::init_node(&config.node.id, &config.log, &config.telemetry)?;
    let result = serve(config).await;
    // The span exporter's last batch: it blocks on its own thread.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.node.data_dir;
    let outbound_ca = outbound_trust(&config)?;
    let auth = authenticator(&config)?;
    let snapshot_key = SnapshotKey::new(secrets::snapshot_key(
        &config.store.snapshot_hmac_key,
        data_dir,
    )?)
    .context("store.snapshot_hmac_key")?;

    let flows_dir = crate::flows::flows_dir(&config.dialog.flows_dir, data_dir)?;
    let dialog = Dialog::open(DialogConfig {
        flows_dir,
        stable_version: config.dialog.stable_version.clone(),
        reload_poll: Duration::from_millis(config.dialog.reload_poll_ms),
    })
    .map_err(|e| anyhow::anyhow!("the flows do not load: {e}"))?;
    // First: what starts next (the key ring) publishes metrics.
    let metrics = confab_gateway::install_metrics().map_err(anyhow::Error::msg)?;
    let store = open_store(&config, outbound_ca).await?;
    let master_keys = master_keys(&config)?;
    let keys = KeyManager::start(Arc::clone(&store), Arc::new(master_keys))
        .await
        .context("the data-key ring")?;
    keys.follow();
    let node_id = NodeId::new(config.node.id.clone())?;
    let runtime = Runtime::start(
        RuntimeConfig {
            node_id: node_id.clone(),
            inflight_turns_max: config.runtime.max_inflight_turns,
            session_queue_max: config.runtime.max_queued_per_session,
            passivate_after: Duration::from_secs(config.runtime.passivate_after_s),
            batch_events_max: config.store.batch_max_events,
            batch_delay_max: Duration::from_millis(config.store.batch_max_delay_ms),
            commit_concurrency: config.store.commit_concurrency,
            commit_retries: config.store.commit_retries,
            commit_wait_max: Duration::from_millis(config.store.commit_wait_max_ms),
            snapshot_every_events: config.store.snapshot_every_events,
            snapshot_every: Duration::from_secs(config.store.snapshot_every_s),
            turn_timeout: Duration::from_millis(config.runtime.turn_timeout_ms),
            resident_sessions_max: config.runtime.max_resident_sessions,
            handing_off_max: config.runtime.max_handing_off,
            snapshot_key,
            ring: keys.ring(),
            reencrypt_per_s: config.crypto.reencrypt_per_s,
            epoch: confab_core::Epoch(1),
            actions: ActionSettings {
                max_retries: config.dialog.action_max_retries,
                backoff: Duration::from_millis(config.dialog.action_backoff_ms),
                backoff_max: Duration::from_millis(config.dialog.action_backoff_max_ms),
            },
            stages: config.dialog.stages.clone(),
            stats_names_max: config.runtime.max_stats_names,
        },
        store,
        dialog,
    )
    .await?;
    let bind: std::net::IpAddr = config
        .node
        .bind
        .parse()
        .with_context(|| format!("node.bind {:?} is not an IP address", config.node.bind))?;
    confab_runtime::cluster::start(
        &runtime,
        confab_runtime::cluster::ClusterConfig {
            bind,
            port: config.node.cluster_port,
            // One seed list for every member (a StatefulSet's, say) names this
            // node too: it does not dial itself.
            seeds: config
                .node
                .seeds
                .iter()
                .filter(|seed| **seed != config.cluster_advertise())
                .cloned()
                .collect(),
            cookie: cluster_cookie(&config, bind)?,
            membership: confab_core::membership::MembershipConfig {
                heartbeat_every_ms: config.cluster.heartbeat_every_ms,
                down_after_ms: config.cluster.down_after_ms,
                // Twice a heartbeat period without running is a pause.
                stale_after_ms: config
                    .cluster
                    .heartbeat_every_ms
                    .saturating_mul(2)
                    .max(1_000),
                ..Default::default()
            },
            tls: config.cluster_tls(),
            advertise: config.cluster_advertise(),
        },
    )
    .await?;
    let gateway = Gateway::new(
        runtime.clone(),
        auth,
        GatewayConfig {
            frame_bytes_max: config.gateway.max_frame_bytes,
            text_bytes_max: config.gateway.max_text_bytes,
            connections: ConnectionLimits {
                max: config.gateway.max_connections,
                max_per_ip: config.gateway.max_connections_per_ip,
                idle_before_upgrade: Duration::from_millis(config.gateway.idle_before_upgrade_ms),
            },
            connection_queue_max: config.gateway.max_queued_per_connection,
            turns: TurnLimits {
                turns_per_s: NonZeroU32::new(config.limits.turns_per_s)
                    .context("limits.turns_per_s")?,
                burst: NonZeroU32::new(config.limits.burst).context("limits.burst")?,
            },
            admission: AdmissionLimits {
                latency_target: Duration::from_millis(config.gateway.admission_latency_target_ms),
                in_flight_min: config.gateway.admission_min_inflight,
                in_flight_max: config.runtime.max_inflight_turns,
            },
        },
        metrics,
    )
    .with_keys(keys);
    let addr = format!("{}:{}", config.node.bind, config.node.http_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another node running there?)"))?;
    info!(node = %node_id, addr = %addr, "confab node ready");

    let draining = gateway.clone();
    let drain_runtime = runtime.clone();
    let mut drain = runtime.drain_state();
    gateway
        .serve(listener, async move {
            tokio::select! {
                () = stop_signal() => {
                    info!("stopping: closing connections, then snapshotting sessions");
                    draining.drain();
                }
                () = follow_drain(&mut drain, &draining, &drain_runtime) => {}
            }
        })
        .await
        .context("http server failed")?;
    let written = runtime.shutdown().await?;
    info!(snapshots = written, "stopped cleanly");
    Ok(())
}

/// The cluster cookie. A node reachable from other hosts (`node.bind` not a
/// loopback address) must be given one (`cluster.cookie`, or the file named by
/// `CONFAB_CLUSTER__COOKIE_FILE`); on loopback the data dir's is used, created
/// if missing, as `confab up` needs.
fn cluster_cookie(config: &Config, bind: std::net::IpAddr) -> anyhow::Result<String> {
    let cookie = &config.cluster.cookie;
    if cookie.is_empty() && !bind.is_loopback() {
        anyhow::bail!(
            "cluster.cookie is not set and node.bind {bind} is reachable from other hosts: \
             give every node the same secret cookie (CONFAB_CLUSTER__COOKIE_FILE=/path, or \
             cluster.cookie); a default one is only made for loopback clusters"
        );
    }
    if !cookie.is_empty() && cookie.len() < 16 {
        anyhow::bail!("cluster.cookie is {} bytes: use at least 16", cookie.len());
    }
    secrets::cluster_cookie(cookie, &config.node.data_dir)
}

/// The master keys of `[crypto]`. Off loopback they must be configured: the data
/// dir's default would travel with every copy of the data it protects.
fn master_keys(config: &Config) -> anyhow::Result<confab_runtime::keys::MasterKeys> {
    let c = &config.crypto;
    let configured = !c.keys.is_empty() || !c.keys_file.as_os_str().is_empty();
    let loopback = config
        .node
        .bind
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if !configured && !loopback {
        anyhow::bail!(
            "no master keys and node.bind {} is reachable from other hosts: give every node \
             the same master keys (CONFAB_CRYPTO__KEYS=NAME=HEX or crypto.keys_file); a default \
             one beside the data is only made for loopback clusters",
            config.node.bind
        );
    }
    secrets::master_keys(&c.keys, &c.keys_file, &config.node.data_dir).context("[crypto]")
}

/// How often the JWKS file is checked for a change.
const JWKS_FILE_POLL: Duration = Duration::from_secs(1);

/// How long a JWKS fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `tls.ca_file`: the CA certificates trusted, besides the system's, by the
/// outbound HTTP client, and instead of them by `rediss://`.
fn outbound_trust(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    let path = &config.tls.ca_file;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(path).with_context(|| format!("tls.ca_file {}", path.display()))?;
    confab_runtime::http::trust(&pem)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("tls.ca_file {}", path.display()))?;
    Ok(Some(pem))
}

/// The token checker of `[auth]`: HS256 with the node's secret (required unless
/// a JWKS is configured), RS256 and ES256 with the JWKS.
fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let a = &config.auth;
    let jwks = !a.jwks_file.as_os_str().is_empty() || !a.jwks_url.is_empty();
    // With a JWKS, HS256 is on only with a secret given explicitly: a dev secret
    // left in the data dir must not keep admitting tokens beside the provider's.
    let secret = if jwks {
        (!a.jwt_secret.is_empty()).then(|| a.jwt_secret.clone().into_bytes())
    } else {
        Some(secrets::jwt_secret(&a.jwt_secret, &config.node.data_dir)?.into_bytes())
    };
    let not_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let auth = Authenticator::with_options(AuthOptions {
        hs256_secret: secret,
        jwks_file: (!a.jwks_file.as_os_str().is_empty()).then(|| a.jwks_file.clone()),
        jwks_url: not_empty(&a.jwks_url),
        issuer: not_empty(&a.issuer),
        audience: not_empty(&a.audience),
        leeway_s: a.leeway_s,
    })
    .context("[auth]")?;
    let client = confab_runtime::http::client_without_redirects(JWKS_FETCH_TIMEOUT)
        .context("jwks http client")?;
    confab_gateway::auth::follow_jwks(
        &auth,
        client,
        JWKS_FILE_POLL,
        Duration::from_secs(a.jwks_refresh_s),
    );
    Ok(auth)
}

/// How long a drained node keeps answering admin requests after it left, so
/// that `confabctl nodes drain` sees it leave.
const LEFT_GRACE: Duration = Duration::from_secs(2);

/// How long a draining node keeps its open connections at most while its
/// sessions move; then it closes them whether or not every session moved.
const CONNECTIONS_KEPT_WHILE_DRAINING: Duration = Duration::from_secs(10);

/// Resolves once this node has been drained and left the cluster. When the
/// drain begins it refuses new WebSocket connections (1013) and keeps the open
/// ones: their turns follow their sessions to the new owners as any node's
/// do. Once no session actor is left on it (every session moved), it closes
/// them with 1013, so that their clients reconnect to a node on the ring
/// between turns instead of while their sessions are moving.
async fn follow_drain(
    drain: &mut tokio::sync::watch::Receiver<confab_runtime::drain::DrainState>,
    gateway: &Gateway,
    runtime: &Runtime,
) {
    use confab_runtime::drain::DrainState;
    if drain.wait_for(|s| *s != DrainState::Serving).await.is_err() {
        return std::future::pending().await;
    }
    info!("draining: refusing new connections; sessions move to their new owners");
    gateway.refuse_new_connections();
    let mut moved = runtime.drain_moved();
    tokio::select! {
        Ok(_) = moved.wait_for(|moved| *moved) => {
            info!("draining: every session moved; closing connections with 1013");
        }
        () = tokio::time::sleep(CONNECTIONS_KEPT_WHILE_DRAINING) => warn!(
            after_s = CONNECTIONS_KEPT_WHILE_DRAINING.as_secs(),
            "draining: sessions are still moving; closing connections with 1013 anyway"
        ),
    }
    gateway.drain();
    if drain.wait_for(|s| *s == DrainState::Left).await.is_err() {
        return std::future::pending().await;
    }
    info!("drained and left the cluster: stopping");
    tokio::time::sleep(LEFT_GRACE).await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("sigterm handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The durable tier (MySQL when `store.mysql_url` is set, else the embedded
/// SQLite store in the data dir), with Redis in front when `store.redis_url` (one
/// server) or `store.redis_cluster_nodes` (a Redis Cluster's seed nodes) is set.
async fn open_store(
    config: &Config,
    outbound_ca: Option<Vec<u8>>,
) -> anyhow::Result<Arc<dyn Store>> {
    let s = &config.store;
    let durable: Arc<dyn Store> = if s.mysql_url.is_empty() {
        let store = SqliteStore::open(
            &config.node.data_dir,
            &SqliteOptions {
                synchronous_full: s.sqlite_synchronous == "full",
                read_connections_max: s.sqlite_readers_max,
                node: config.node.id.clone(),
                ..SqliteOptions::default()
            },
        )
        .await?;
        info!(path = %store.path().display(), "embedded store open");
        Arc::new(store)
    } else {
        let store = MySqlStore::open_sharded(
            &s.mysql_url,
            &s.mysql_shards,
            &MySqlOptions {
                connections_max: s.mysql_pool_max,
                acquire_timeout: Duration::from_millis(s.mysql_acquire_timeout_ms),
                node: config.node.id.clone(),
            },
        )
        .await
        .context("store.mysql_url")?;
        info!(url = %redacted(&s.mysql_url), "mysql store open");
        for range in store.shard_map().ranges() {
            info!(from = range.from, to = range.to, url = %redacted(&range.url), "mysql shards");
        }
        Arc::new(store)
    };
    if s.redis_url.is_empty() && s.redis_cluster_nodes.is_empty() {
        return Ok(durable);
    }
    let options = RedisOptions {
        ttl: Duration::from_secs(s.redis_ttl_s),
        timeout: Duration::from_millis(s.redis_timeout_ms),
        key_prefix: s.redis_key_prefix.clone(),
        cached_events_max: s.redis_cached_events_max,
        tls_root_ca: outbound_ca,
    };
    // Config validation refuses both set.
    let redis = if s.redis_cluster_nodes.is_empty() {
        RedisTier::open(&s.redis_url, options).context("store.redis_url")?
    } else {
        RedisTier::open_cluster(&s.redis_cluster_nodes, options)
            .context("store.redis_cluster_nodes")?
    };
    if let Err(e) = redis.ping().await {
        warn!(error = %e, "redis does not answer yet; bypassing it until it does");
    }
    if redis.is_cluster() {
        let seeds: Vec<String> = s.redis_cluster_nodes.iter().map(|u| redacted(u)).collect();
        info!(seeds = %seeds.join(","), "redis cluster hot tier in front");
    } else {
        info!(url = %redacted(&s.redis_url), "redis hot tier in front");
    }
    Ok(Arc::new(TieredStore::new(durable, redis)))
}
