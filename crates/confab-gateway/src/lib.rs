//! confab's gateway: the HTTP face of a node, on axum.
//!
//! - `GET /v1/ws`: protocol v1 over WebSocket ([`ws`]), authenticated by a JWT
//!   ([`auth`]) before the upgrade.
//! - `GET /healthz`: the process is alive.
//! - `GET /readyz`: the node has joined the ring and its store answers.
//! - `GET /metrics`: Prometheus text.
//! - `GET /`: a chat page for trying confab in a browser.
//! - `GET /dashboard`: the ops page; its data comes from the admin API, so it
//!   shows nothing without a token of scope `admin`.
//! - `/admin/v1/...`: the admin API ([`admin`]), for tokens with scope `admin`.

pub mod admin;
pub mod admission;
pub mod auth;
mod catalog;
pub mod limits;
mod page;
pub mod serve;
pub mod ws;

use auth::Authenticator;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use confab_runtime::Runtime;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use tokio::sync::watch;

/// The gateway's limits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest WebSocket frame or message accepted; a bigger one closes with 1009.
    pub frame_bytes_max: usize,
    /// Largest `say` text accepted, in bytes; a bigger one gets `too_large`.
    pub text_bytes_max: usize,
    /// Open connections, per node and per source address, and the idle deadline
    /// before an upgrade ([`serve`]).
    pub connections: serve::ConnectionLimits,
    /// `say` and `resume` frames queued per connection; past it, `overloaded`.
    pub connection_queue_max: usize,
    /// Turns per uid: past them, `rate_limited`.
    pub turns: limits::TurnLimits,
    /// Turns in flight on the node, adapted to a latency target; past the
    /// limit, `overloaded` before any work.
    pub admission: admission::AdmissionLimits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 * 1024,
            text_bytes_max: 4 * 1024,
            connections: serve::ConnectionLimits::default(),
            connection_queue_max: 32,
            turns: limits::TurnLimits::default(),
            admission: admission::AdmissionLimits::default(),
        }
    }
}

/// Where a node's connections stand while it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DrainStage {
    /// Serving: connections are accepted.
    Serving,
    /// New connections are closed with 1013; open ones keep serving.
    RefusingNew,
    /// Every connection is closed with 1013.
    Closing,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) runtime: Runtime,
    pub(crate) auth: Authenticator,
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) turn_limiter: Arc<limits::TurnLimiter>,
    pub(crate) admission: Arc<admission::AdmissionGate>,
    pub(crate) keys: Option<confab_runtime::keys::KeyManager>,
    /// How far the node's drain has come: new connections are refused (1013)
    /// from [`DrainStage::RefusingNew`], and every connection is closed with
    /// 1013 at [`DrainStage::Closing`], so that its client reconnects elsewhere.
    pub(crate) draining: Arc<watch::Sender<DrainStage>>,
    metrics: PrometheusHandle,
}

impl Gateway {
    /// A gateway over this runtime.
    pub fn new(
        runtime: Runtime,
        auth: Authenticator,
        config: GatewayConfig,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            runtime,
            auth,
            turn_limiter: limits::TurnLimiter::start(config.turns),
            admission: admission::AdmissionGate::new(config.admission),
            keys: None,
            config: Arc::new(config),
            draining: Arc::new(watch::Sender::new(DrainStage::Serving)),
            metrics,
        }
    }

    /// Serves `confabctl keys` with this ring.
    pub fn with_keys(mut self, keys: confab_runtime::keys::KeyManager) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Closes every WebSocket connection with 1013 (draining); new connections
    /// are closed the same way. Turns already queued still complete.
    pub fn drain(&self) {
        self.draining.send_replace(DrainStage::Closing);
    }

    /// Refuses new WebSocket connections with 1013 (draining) and keeps the
    /// open ones: their turns go to their sessions' owners, wherever the
    /// sessions move, until [`Gateway::drain`] closes them.
    pub fn refuse_new_connections(&self) {
        self.draining.send_if_modified(|stage| {
            let was = *stage;
            *stage = was.max(DrainStage::RefusingNew);
            *stage != was
        });
    }

    /// The axum router of every endpoint.
    pub fn router(self) -> Router {
        Router::new()
            .route(confab_proto::WS_PATH, get(ws::upgrade))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .route("/", get(chat_page))
            .route("/dashboard", get(dashboard_page))
            .nest(
                confab_proto::admin::ADMIN_PREFIX,
                admin::routes()
                    .route_layer(axum::middleware::from_fn_with_state(
                        self.clone(),
                        admin::require_admin,
                    ))
                    .layer(axum::middleware::from_fn_with_state(
                        self.clone(),
                        admin::audit,
                    )),
            )
            .layer(axum::middleware::from_fn(serve::track_busy))
            .with_state(self)
    }

    /// Serves every endpoint on this listener within the connection limits
    /// until `stop` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = serve::GuardedListener::new(listener, self.config.connections);
        axum::serve(
            listener,
            self.router()
                .into_make_service_with_connect_info::<serve::Peer>(),
        )
        .with_graceful_shutdown(stop)
        .await
    }
}

/// Installs the process-wide Prometheus recorder; call once per process.
/// Every metric of the catalog (`catalog.rs`) is described (`# HELP`) and shown from the start,
/// histograms with their buckets; process metrics are read at each scrape.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new();
    for metric in catalog::METRICS {
        if let catalog::Kind::Histogram(buckets) = metric.kind {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets)
                .map_err(|e| e.to_string())?;
        }
    }
    let handle = builder.install_recorder().map_err(|e| e.to_string())?;
    catalog::publish();
    PROCESS.describe();
    PROCESS.collect();
    Ok(handle)
}

/// CPU, memory, open files and threads of this process, as `process_*` metrics
/// (the names every Prometheus client library uses).
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(gw): State<Gateway>) -> Response {
    if gw.runtime.ready().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not on the ring yet, cut off from the majority of the cluster, or the store is unreachable\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(gw): State<Gateway>) -> Response {
    PROCESS.collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

async fn chat_page() -> Html<&'static str> {
    Html(page::CHAT_PAGE)
}

/// The ops dashboard, embedded in the binary: no CDN, nothing fetched but the
/// admin API and `/metrics` of the node that served it.
const DASHBOARD_PAGE: &str = include_str!("dashboard.html");

async fn dashboard_page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(DASHBOARD_PAGE),
    )
        .into_response()
}
