//! A TCP proxy that holds every chunk for a settable delay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How much one direction of one connection reads at a time (and so holds at
/// most while it sleeps).
const CHUNK: usize = 16 * 1024;

/// A TCP proxy on 127.0.0.1 and a free port to an upstream address, adding a
/// delay that can be changed at any time ([`DelayProxy::set_delay`]).
///
/// Each direction of each connection forwards sequentially: read up to 16 KiB,
/// sleep the current delay, write it on. So the delay applies to connections
/// already open too, from their next chunk on, and a connection buffers at
/// most one chunk per direction.
///
/// It runs on the tokio runtime it was started in. Dropping it stops accepting
/// and closes every connection it proxies.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    delay_micros: Arc<AtomicU64>,
    accept_loop: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on 127.0.0.1 (a port the kernel picks) and forwards every
    /// connection to `upstream`, initially without delay. A client whose
    /// upstream connection fails is disconnected.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if it cannot bind.
    pub async fn start(upstream: SocketAddr) -> DelayProxy {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), upstream).await
    }

    /// As [`DelayProxy::start`], listening on `ip` (a port the kernel picks):
    /// the gateway of a [`crate::netns::Network`], say, so that its hosts
    /// reach a server that listens on loopback only.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if it cannot bind.
    pub async fn start_on(ip: std::net::IpAddr, upstream: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind the proxy on {ip}: {e}"));
        let addr = listener.local_addr().expect("local_addr");
        let delay_micros = Arc::new(AtomicU64::new(0));
        let accept_loop = tokio::spawn(accept_loop(listener, upstream, delay_micros.clone()));
        DelayProxy {
            addr,
            delay_micros,
            accept_loop,
        }
    }

    /// Holds every chunk read from now on, in either direction, for `delay`
    /// before writing it on. `Duration::ZERO` turns the delay off.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::Relaxed);
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // The accept loop owns the connections' JoinSet, which aborts them all
        // when the aborted loop is dropped.
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, delay_micros: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Accept errors (such as running out of file descriptors) are
                // transient; the client sees its connection fail.
                if let Ok((client, _)) = accepted {
                    connections.spawn(proxy(client, upstream, delay_micros.clone()));
                }
            }
            // Reap finished connections so that the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Proxies one connection until both directions are done, or either fails.
async fn proxy(client: TcpStream, upstream: SocketAddr, delay_micros: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // dropping `client` disconnects it
    };
    // Nagle's algorithm would add latency of its own to small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // An error in one direction drops both, closing both sockets.
    let _ = tokio::try_join!(
        forward(client_read, server_write, &delay_micros),
        forward(server_read, client_write, &delay_micros),
    );
}

/// Copies `from` to `to` one chunk at a time, holding each chunk for the delay
/// current when it was read; at end of stream shuts `to` down for writing.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_micros: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let delay = delay_micros.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
