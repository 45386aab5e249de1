//! The admin API as the bench's commands call it: plain HTTP/1.0 with an
//! admin token, so a node that is slow or half-gone answers or fails without
//! a client library's pooling in the way.

use crate::turns::token;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one admin request may take.
const REQUEST_MAX: Duration = Duration::from_secs(5);

/// `method path` at `addr` with an admin token signed by `secret`: the status
/// and the body, or `None` if the node did not answer within 5 s.
pub(crate) async fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    secret: &str,
) -> Option<(u16, String)> {
    request_within(method, addr, path, secret, REQUEST_MAX).await
}

/// [`request`], waiting at most `within`.
pub(crate) async fn request_within(
    method: &str,
    addr: SocketAddr,
    path: &str,
    secret: &str,
    within: Duration,
) -> Option<(u16, String)> {
    let admin = token(secret, "bench-ops", "admin").ok()?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        let status = answer.get(9..12)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(within, exchange).await.ok()?
}

/// The ring `addr` routes by: its epoch and members, or `None` if it did not
/// answer.
pub(crate) async fn ring(addr: SocketAddr, secret: &str) -> Option<(u64, Vec<String>)> {
    let Some((200, body)) = request("GET", addr, "/admin/v1/ring", secret).await else {
        return None;
    };
    let view: confab_proto::admin::RingView = serde_json::from_str(&body).ok()?;
    Some((view.epoch, view.nodes))
}
