//! The HTTP listener, with the connection limits the node keeps before any
//! request is read.
//!
//! Every accepted TCP connection counts, upgraded or not, until its socket
//! closes:
//! - past `max_connections` on the node, or `max_connections_per_ip` from one
//!   source address, the connection gets `503 Service Unavailable` and is closed,
//!   before any upgrade (the upgrade handler never runs);
//! - a connection that is not a WebSocket may sit idle (no request in progress:
//!   nothing sent yet, half a request line, or a finished response) for at most
//!   `idle_before_upgrade`; then it is closed. An upgraded WebSocket has no
//!   such deadline (its idleness is the client's business, and its slot counts).
//!
//! The limit is kept on the socket itself ([`GuardedIo`]), so it holds through
//! hyper's upgrade, where the socket moves to the WebSocket task.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// Refusals being written at once, at most; past it a refused socket is just
/// closed (a flood of them must not cost more than a closed socket).
const REFUSALS_MAX: usize = 256;

/// How long a refusal waits for the request it answers before writing the 503.
const REFUSAL_READ_WAIT: Duration = Duration::from_millis(500);

/// Bytes of the refused request read, at most, before answering.
const REFUSAL_READ_BYTES: usize = 8 * 1024;

/// The limits on connections, set from `[gateway]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections on the node.
    pub max: usize,
    /// Open connections from one source address.
    pub max_per_ip: usize,
    /// How long a connection that is not a WebSocket may wait without a request
    /// in progress.
    pub idle_before_upgrade: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: 10_000,
            max_per_ip: 1_000,
            idle_before_upgrade: Duration::from_secs(10),
        }
    }
}

/// Why a connection was refused; the `reason` label of
/// `confab_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Node,
    SourceAddress,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Node => "max_connections",
            Self::SourceAddress => "max_connections_per_ip",
        }
    }
}

/// Open connections, in all and per source address.
#[derive(Debug)]
struct Ledger {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    /// Instants are kept as milliseconds since this one.
    origin: Instant,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Ledger {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Connection>, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max {
            return Err(Refusal::Node);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.limits.max_per_ip {
            return Err(Refusal::SourceAddress);
        }
        *from_ip += 1;
        open.total += 1;
        metrics::gauge!("confab_http_connections").set(open.total as f64);
        Ok(Arc::new(Connection {
            ledger: Arc::clone(self),
            ip,
            upgraded: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
        }))
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(from_ip) = open.per_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                open.per_ip.remove(&ip);
            }
        }
        metrics::gauge!("confab_http_connections").set(open.total as f64);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One admitted connection; its slot is given back when the last of the socket
/// and the request handlers holding it lets go.
#[derive(Debug)]
pub struct Connection {
    ledger: Arc<Ledger>,
    ip: IpAddr,
    upgraded: AtomicBool,
    /// Requests being handled on it.
    busy: AtomicUsize,
    /// When it last had no request in progress, in the ledger's milliseconds.
    idle_since_ms: AtomicU64,
}

impl Connection {
    /// Marks it a WebSocket: no idle deadline from now on.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// Marks a request in progress until the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// When an idle, not upgraded connection is closed; `None` while a request is
    /// in progress or once upgraded.
    fn deadline(&self) -> Option<Instant> {
        if self.upgraded.load(Ordering::Acquire) || self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.ledger.origin + idle_since + self.ledger.limits.idle_before_upgrade)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.ledger.release(self.ip);
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        let connection = &self.0;
        connection
            .idle_since_ms
            .store(connection.ledger.now_ms(), Ordering::Release);
        connection.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The peer of a connection, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its connection's slot.
    pub connection: Arc<Connection>,
}

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener that admits connections within [`ConnectionLimits`].
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    ledger: Arc<Ledger>,
    refusals: Arc<Semaphore>,
}

impl GuardedListener {
    /// Guards this listener.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        metrics::gauge!("confab_http_connections").set(0.0);
        for reason in [Refusal::Node, Refusal::SourceAddress] {
            metrics::counter!("confab_connections_refused_total", "reason" => reason.label())
                .absolute(0);
        }
        Self {
            listener,
            ledger: Arc::new(Ledger {
                limits,
                open: Mutex::default(),
                origin: Instant::now(),
            }),
            refusals: Arc::new(Semaphore::new(REFUSALS_MAX)),
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.ledger.admit(addr.ip()) {
                Ok(connection) => {
                    // Frames go out as they are written. With Nagle's algorithm
                    // a turn's reply, flushed just after its ack, waited for the
                    // client to acknowledge the ack: up to 40 ms of its delayed
                    // ACK (1 % of turns on a quiet node).
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(peer = %addr, error = %e, "TCP_NODELAY not set");
                    }
                    let io = GuardedIo {
                        stream,
                        connection: Arc::clone(&connection),
                        timer: Box::pin(tokio::time::sleep_until(Instant::now())),
                    };
                    return (io, Peer { addr, connection });
                }
                Err(refusal) => {
                    metrics::counter!("confab_connections_refused_total", "reason" => refusal.label())
                        .increment(1);
                    debug!(peer = %addr, reason = refusal.label(), "connection refused");
                    if let Ok(permit) = Arc::clone(&self.refusals).try_acquire_owned() {
                        let limits = self.ledger.limits;
                        tokio::spawn(async move {
                            refuse(stream, refusal, limits).await;
                            drop(permit);
                        });
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::other(
            "a guarded listener's own address is not a peer; ask the TcpListener",
        ))
    }
}

/// Answers a refused connection with 503 and closes it.
async fn refuse(mut stream: TcpStream, refusal: Refusal, limits: ConnectionLimits) {
    // Read the request first (some of it, briefly): closing a socket with
    // unread data sends a reset, and the client would see that, not the 503.
    let mut request = vec![0u8; REFUSAL_READ_BYTES];
    let mut read = 0;
    let _ = tokio::time::timeout(REFUSAL_READ_WAIT, async {
        while read < request.len() {
            match stream.read(&mut request[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let message = match refusal {
        Refusal::Node => format!(
            "node has {} connections, its limit (gateway.max_connections): connect to another node or retry",
            limits.max
        ),
        Refusal::SourceAddress => format!(
            "{} connections from your address, the limit (gateway.max_connections_per_ip): close one or retry",
            limits.max_per_ip
        ),
    };
    let body = serde_json::json!({"error": "overloaded", "message": message}).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_READ_WAIT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// An admitted socket: gives its slot back when dropped, and fails its reads
/// once it has been idle past its deadline without being upgraded.
#[derive(Debug)]
pub struct GuardedIo {
    stream: TcpStream,
    connection: Arc<Connection>,
    timer: Pin<Box<Sleep>>,
}

impl GuardedIo {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.connection.deadline() else {
            return false;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within gateway.idle_before_upgrade_ms",
            )));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A layer on every route: marks the request's connection busy while it is
/// handled, so that the idle deadline does not cut a slow answer short.
pub(crate) async fn track_busy(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(busy) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|info| info.0.connection.busy())
    else {
        return next.run(request).await;
    };
    let (parts, body) = next.run(request).await.into_parts();
    // Busy until the body is sent too, not only until the handler returns: hyper
    // reads (for an early close) while it writes a long body.
    axum::response::Response::from_parts(
        parts,
        axum::body::Body::new(BusyBody {
            inner: body,
            _busy: busy,
        }),
    )
}

/// A response body that keeps its connection busy until it is dropped.
struct BusyBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl axum::body::HttpBody for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply flushed right after its ack must not wait for the client's
    /// delayed ACK: every admitted connection has Nagle's algorithm off.
    #[tokio::test]
    async fn admitted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut guarded = GuardedListener::new(listener, ConnectionLimits::default());
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, _) = guarded.accept().await;
        assert!(io.stream.nodelay().unwrap());
    }
}
