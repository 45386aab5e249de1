//! `confab node`: one node, serving HTTP and WebSocket, until SIGINT or SIGTERM.

use crate::config::Config;
use crate::secrets;
use anyhow::Context;
use confab_core::NodeId;
use confab_core::session::SnapshotKey;
use confab_dialog::Pipeline;
use confab_gateway::auth::Authenticator;
use confab_gateway::{Gateway, GatewayConfig};
use confab_runtime::{Runtime, RuntimeConfig};
use confab_store::Store;
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use figment::Figment;
use figment::providers::Serialized;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

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
    /// Cluster port (used once clustering lands).
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(args.config.as_deref(), args.overrides())?;
    anyhow::ensure!(
        config.node.seeds.is_empty(),
        "clustering is not available in this version yet: run without --seeds (node.seeds)"
    );
    let data_dir = &config.node.data_dir;
    let jwt_secret = secrets::jwt_secret(&config.auth.jwt_secret, data_dir)?;
    let auth = Authenticator::new(jwt_secret.as_bytes()).context("auth.jwt_secret")?;
    let snapshot_key = SnapshotKey::new(secrets::snapshot_key(
        &config.store.snapshot_hmac_key,
        data_dir,
    )?)
    .context("store.snapshot_hmac_key")?;

    let store = SqliteStore::open(
        data_dir,
        &SqliteOptions {
            synchronous_full: config.store.sqlite_synchronous == "full",
            ..SqliteOptions::default()
        },
    )
    .await?;
    info!(path = %store.path().display(), "embedded store open");
    let metrics = confab_gateway::install_metrics().map_err(anyhow::Error::msg)?;
    let node_id = NodeId::new(config.node.id.clone())?;
    let runtime = Runtime::start(
        RuntimeConfig {
            node_id: node_id.clone(),
            inflight_turns_max: config.runtime.max_inflight_turns,
            session_queue_max: config.runtime.max_queued_per_session,
            passivate_after: Duration::from_secs(config.runtime.passivate_after_s),
            batch_events_max: config.store.batch_max_events,
            batch_delay_max: Duration::from_millis(config.store.batch_max_delay_ms),
            turn_timeout: Duration::from_millis(config.runtime.turn_timeout_ms),
            resident_sessions_max: config.runtime.max_resident_sessions,
            snapshot_key,
        },
        Arc::new(store) as Arc<dyn Store>,
        Pipeline::shoe_shop(),
    )
    .await?;
    let gateway = Gateway::new(
        runtime.clone(),
        auth,
        GatewayConfig {
            frame_bytes_max: config.gateway.max_frame_bytes,
            text_bytes_max: config.gateway.max_text_bytes,
            connections_max: config.gateway.max_connections,
            connection_queue_max: config.gateway.max_queued_per_connection,
        },
        metrics,
    );
    let addr = format!("{}:{}", config.node.bind, config.node.http_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another node running there?)"))?;
    info!(node = %node_id, addr = %addr, "confab node ready");

    let draining = gateway.clone();
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(async move {
            stop_signal().await;
            info!("stopping: closing connections, then snapshotting sessions");
            draining.drain();
        })
        .await
        .context("http server failed")?;
    let written = runtime.shutdown().await?;
    info!(snapshots = written, "stopped cleanly");
    Ok(())
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
