//! [`ActionService`]: a real HTTP service for actions and pipeline stages, on a
//! free port, that a test starts and steers: it fails on demand, holds a call
//! until released, and records every call. It pays the way a payment API
//! does: once per `Idempotency-Key`, answering a repeated key with the first
//! answer. Tests assert on what it saw: how many calls, under which keys, and
//! how many payouts.
//!
//! - `POST /draw`: an action. Body `{"action", "key", "uid", "args"}`; answers
//!   `{"prize": "..."}`.
//! - `POST /stage/upper` and `/stage/prefix`: pipeline stages; answer
//!   `{"text": ...}` with the text upper-cased, or prefixed with `【AI】`.
//! - `POST /stage/replace`: a stage that rewrites `三十九` into `39`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What the service does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer at once.
    Serve,
    /// Answer 500 to the next `n` calls, then serve.
    FailNext(u32),
    /// Answer 500 to every call.
    FailAll,
    /// Hold the next call until [`ActionService::release`], then serve.
    HoldNext,
}

#[derive(Default)]
struct Seen {
    /// Every call's idempotency key, in order.
    calls: Vec<String>,
    /// Payouts by key: each key is paid once.
    paid: BTreeMap<String, String>,
    /// Stage calls, by path.
    stage_calls: Vec<String>,
}

struct Inner {
    /// Set by [`ActionService::stop`]: every call gets 503, also on connections
    /// already open (which outlive the listener).
    down: std::sync::atomic::AtomicBool,
    mode: Mutex<Mode>,
    seen: Mutex<Seen>,
    release: Notify,
    arrived: Notify,
    /// What `GET /jwks` serves (an identity provider's keys), set by the test.
    jwks: Mutex<String>,
}

/// The service. Dropping it stops it.
pub struct ActionService {
    inner: Arc<Inner>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
    tls: bool,
}

/// Accepts TLS connections for axum: a handshake per connection, in its own
/// task, so that one slow client does not hold up the others.
struct TlsListener {
    connections: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("the certificate file reads")
        .collect::<Result<_, _>>()
        .expect("the certificate parses");
    let key = PrivateKeyDer::from_pem_file(key).expect("the key parses");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a certificate and its key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

const PRIZES: &[&str] = &["10 元优惠券", "20 元优惠券", "免运费券"];

impl ActionService {
    /// Starts the service on a free port of 127.0.0.1 (on the current tokio runtime).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts it over https with this certificate and key (PEM files): the
    /// certificate must name 127.0.0.1.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(Some(tls_acceptor(cert, key))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let inner = Arc::new(Inner {
            down: std::sync::atomic::AtomicBool::new(false),
            mode: Mutex::new(Mode::Serve),
            seen: Mutex::new(Seen::default()),
            release: Notify::new(),
            arrived: Notify::new(),
            jwks: Mutex::new(r#"{"keys":[]}"#.to_owned()),
        });
        let app = axum::Router::new()
            .route("/draw", post(draw))
            .route("/stage/upper", post(stage_upper))
            .route("/stage/prefix", post(stage_prefix))
            .route("/stage/replace", post(stage_replace))
            .route("/jwks", axum::routing::get(jwks))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let local = listener.local_addr().expect("bound");
        let port = local.port();
        let is_tls = tls.is_some();
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(acceptor) => {
                let (sender, connections) = tokio::sync::mpsc::channel(64);
                let accept = async move {
                    while let Ok((tcp, peer)) = listener.accept().await {
                        let acceptor = acceptor.clone();
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(tls)) = tokio::time::timeout(
                                std::time::Duration::from_secs(5),
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                let _ = sender.send((tls, peer)).await;
                            }
                        });
                    }
                };
                let serve = async move {
                    let _ = axum::serve(TlsListener { connections, local }, app).await;
                };
                // One task, so that `stop` ends the accepting and the serving.
                tokio::spawn(async move {
                    tokio::join!(accept, serve);
                })
            }
        };
        Self {
            inner,
            port,
            task,
            tls: is_tls,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` when started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Serves this JWKS document at `GET /jwks` from now on.
    pub fn set_jwks(&self, document: &str) {
        *self.inner.jwks.lock().unwrap_or_else(|e| e.into_inner()) = document.to_owned();
    }

    /// Sets what the next calls get.
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().expect("mode lock") = mode;
    }

    /// Lets a held call answer.
    pub fn release(&self) {
        self.inner.release.notify_one();
    }

    /// Waits until a call has arrived (and, in `HoldNext`, is held).
    pub async fn arrived(&self) {
        self.inner.arrived.notified().await;
    }

    /// Every action call's key, in order.
    pub fn calls(&self) -> Vec<String> {
        self.inner.seen.lock().expect("seen lock").calls.clone()
    }

    /// Payouts by key.
    pub fn paid(&self) -> BTreeMap<String, String> {
        self.inner.seen.lock().expect("seen lock").paid.clone()
    }

    /// Stage calls, by path, in order.
    pub fn stage_calls(&self) -> Vec<String> {
        self.inner
            .seen
            .lock()
            .expect("seen lock")
            .stage_calls
            .clone()
    }

    /// Goes down: new connections are refused, and calls on connections
    /// already open get 503.
    pub fn stop(&self) {
        self.inner
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for ActionService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn draw(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if body.get("key").and_then(|k| k.as_str()) != Some(key.as_str()) {
        return Err((StatusCode::BAD_REQUEST, "key header and body differ".into()));
    }
    inner
        .seen
        .lock()
        .expect("seen lock")
        .calls
        .push(key.clone());
    let mode = {
        let mut mode = inner.mode.lock().expect("mode lock");
        let now = *mode;
        match now {
            Mode::FailNext(n) => {
                *mode = if n > 1 {
                    Mode::FailNext(n - 1)
                } else {
                    Mode::Serve
                }
            }
            Mode::HoldNext => *mode = Mode::Serve,
            Mode::Serve | Mode::FailAll => {}
        }
        now
    };
    inner.arrived.notify_one();
    match mode {
        Mode::FailNext(_) | Mode::FailAll => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "prize service down".into(),
            ));
        }
        Mode::HoldNext => inner.release.notified().await,
        Mode::Serve => {}
    }
    let mut seen = inner.seen.lock().expect("seen lock");
    let n = seen.paid.len();
    let prize = seen
        .paid
        .entry(key)
        .or_insert_with(|| PRIZES[n % PRIZES.len()].to_owned())
        .clone();
    Ok(Json(serde_json::json!({ "prize": prize })))
}

type StageAnswer = Result<Json<serde_json::Value>, (StatusCode, String)>;

fn stage_text(
    inner: &Inner,
    path: &str,
    body: &serde_json::Value,
) -> Result<String, (StatusCode, String)> {
    if inner.down.load(std::sync::atomic::Ordering::SeqCst) {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "down".into()));
    }
    inner
        .seen
        .lock()
        .expect("seen lock")
        .stage_calls
        .push(path.to_owned());
    Ok(body
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned())
}

async fn stage_upper(
    State(inner): State<Arc<Inner>>,
    Json(body): Json<serde_json::Value>,
) -> StageAnswer {
    let text = stage_text(&inner, "upper", &body)?;
    Ok(Json(serde_json::json!({ "text": text.to_uppercase() })))
}

async fn jwks(State(inner): State<Arc<Inner>>) -> String {
    inner.jwks.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn stage_prefix(
    State(inner): State<Arc<Inner>>,
    Json(body): Json<serde_json::Value>,
) -> StageAnswer {
    let text = stage_text(&inner, "prefix", &body)?;
    Ok(Json(serde_json::json!({ "text": format!("【AI】{text}") })))
}

async fn stage_replace(
    State(inner): State<Arc<Inner>>,
    Json(body): Json<serde_json::Value>,
) -> StageAnswer {
    let text = stage_text(&inner, "replace", &body)?;
    Ok(Json(
        serde_json::json!({ "text": text.replace("三十九", "39") }),
    ))
}
