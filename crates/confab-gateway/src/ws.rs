//! Protocol v1 over WebSocket.
//!
//! A connection runs three tasks:
//! - the reader parses frames, answers `ping` and bad frames at once, and queues
//!   `say` and `resume` (at most `connection_queue_max`; past it, `overloaded`);
//!   a `say` first takes a place among the node's turns in flight
//!   ([`crate::admission`]), or is answered `overloaded` at once;
//! - the worker takes the queue in order, so turns reach the session in the order
//!   the client sent them, and writes `ack` and `reply` (or `error`);
//! - the writer owns the socket's sink; the others send it frames through a
//!   bounded channel, so a client that stops reading slows only itself.

use crate::admission::Slot;
use crate::auth::AuthError;
use crate::serve::Peer;
use crate::{DrainStage, Gateway};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_core::{IdError, MessageId, Seq, Uid};
use confab_proto::{
    CLOSE_OVERLOADED, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_LARGE, ClientFrame, ErrorCode, ServerFrame,
};
use confab_runtime::{Reply, TurnError};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tracing::debug;

/// Bytes read from the socket at a time. tungstenite zeroes this much before every
/// read; its 128 KiB default cost more CPU than the rest of a turn. Frames larger
/// than this are read in several steps.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Frames waiting for the writer, per connection.
const OUTBOX_MAX: usize = 64;

/// How long the worker waits for room in a full outbox (a client that does not
/// read) before it drops the connection's queued turns.
const OUTBOX_WAIT: Duration = Duration::from_secs(10);

/// Replies read from the store per page of a `resume`.
const RESUME_PAGE_REPLIES: usize = 256;

/// Close code for a text frame that is not UTF-8 (RFC 6455 requires failing the
/// connection).
const CLOSE_INVALID_PAYLOAD: u16 = 1007;

/// Close code for a frame that breaks RFC 6455 (unmasked, a bad opcode, reserved
/// bits set, a fragmented control frame...).
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn unauthorized(e: &AuthError) -> Response {
    let body = serde_json::json!({"error": "unauthorized", "message": e.to_string()});
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}

/// `GET /v1/ws`: authenticates, then upgrades.
pub(crate) async fn upgrade(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(query): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = bearer(&headers).map(str::to_owned).or(query.token);
    let Some(token) = token else {
        return unauthorized(&AuthError::Missing);
    };
    let caller = match gw.auth.verify_scope(&token, "chat") {
        Ok(caller) => caller,
        Err(e) => return unauthorized(&e),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // The connection limits were kept when the socket was accepted (a refused one
    // got 503 and never reached this handler); from here it is a WebSocket.
    let peer = extensions.get::<ConnectInfo<Peer>>().cloned();
    let limit = gw.config.frame_bytes_max;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            if let Some(ConnectInfo(peer)) = &peer {
                peer.connection.upgraded();
            }
            connection(gw, caller.uid, caller.exp, socket)
        })
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.to_json()))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Message {
    text(&ServerFrame::Error {
        id,
        code,
        message: message.into(),
    })
}

fn reply_frame(reply: Reply) -> ServerFrame {
    ServerFrame::Reply {
        id: reply.message_id.to_string(),
        seq: reply.seq.0,
        text: reply.text,
        intent: reply.intent,
        slots: reply.slots,
        policy: reply.policy,
    }
}

fn turn_error(id: Option<String>, e: &TurnError) -> Message {
    let code = match e {
        TurnError::Overloaded(_) => ErrorCode::Overloaded,
        TurnError::Unavailable(_) => ErrorCode::Unavailable,
        TurnError::Rejected(_) => ErrorCode::RejectedInput,
        TurnError::Internal(_) => ErrorCode::Internal,
    };
    error(id, code, e.to_string())
}

/// Work the reader hands to the worker, in the client's order.
enum Work {
    Say {
        id: MessageId,
        text: String,
        /// Its place among the node's turns in flight.
        slot: Slot,
    },
    Resume {
        after: Seq,
    },
}

/// Keeps `confab_ws_connections` true while a connection or its queued turns run.
struct ConnectionSlot;

impl ConnectionSlot {
    fn new() -> Self {
        metrics::gauge!("confab_ws_connections").increment(1.0);
        Self
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        metrics::gauge!("confab_ws_connections").decrement(1.0);
    }
}

async fn connection(gw: Gateway, uid: Uid, exp: u64, mut socket: WebSocket) {
    // Held until the connection's last queued turn is done, not just its socket.
    let _slot = ConnectionSlot::new();
    // A draining node closes a new connection at once: activating the session
    // for a hello first (it is moving away) cost the client most of a second.
    if *gw.draining.borrow() >= DrainStage::RefusingNew {
        let _ = socket
            .send(close(CLOSE_OVERLOADED, "node is draining: reconnect"))
            .await;
        return;
    }
    let hello = match gw.runtime.hello(uid.clone()).await {
        Ok(info) => ServerFrame::Hello {
            uid: uid.to_string(),
            resumed: info.last_seq > Seq(0),
            last_seq: info.last_seq.0,
            node: info.node.to_string(),
        },
        Err(e) => {
            let _ = socket.send(turn_error(None, &e)).await;
            let _ = socket
                .send(close(CLOSE_OVERLOADED, "session unavailable"))
                .await;
            return;
        }
    };
    if socket.send(text(&hello)).await.is_err() {
        return;
    }
    let (sink, stream) = socket.split();
    let (outbox, outbox_rx) = mpsc::channel::<Message>(OUTBOX_MAX);
    let writer = tokio::spawn(write_frames(sink, outbox_rx));
    let (work, work_rx) = mpsc::channel::<Work>(gw.config.connection_queue_max.max(1));
    let worker = tokio::spawn(run_work(gw.clone(), uid.clone(), work_rx, outbox.clone()));
    let closing = read_frames(&gw, &uid, stream, exp, &work, &outbox).await;
    // Turns already queued were sent by the client and may be acked: they run to
    // the end, and their frames go out before the close.
    drop(work);
    let _ = worker.await;
    if let Some(closing) = closing {
        let _ = outbox.send(closing).await;
    }
    drop(outbox);
    let _ = writer.await;
}

async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Message>,
) {
    // Everything waiting goes out in one flush (an ack and its reply: one write).
    'frames: while let Some(mut message) = outbox.recv().await {
        loop {
            let closing = matches!(message, Message::Close(_));
            if sink.feed(message).await.is_err() {
                break 'frames;
            }
            if closing {
                let _ = sink.flush().await;
                break 'frames;
            }
            match outbox.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

fn seconds_until(exp: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(exp.saturating_sub(now))
}

async fn read_frames(
    gw: &Gateway,
    uid: &Uid,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    exp: u64,
    work: &mpsc::Sender<Work>,
    outbox: &mpsc::Sender<Message>,
) -> Option<Message> {
    let expiry = tokio::time::sleep(seconds_until(exp));
    tokio::pin!(expiry);
    let mut draining = gw.draining.subscribe();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = &mut expiry => return Some(close(CLOSE_TOKEN_EXPIRED, "token expired")),
            () = async { drop(draining.wait_for(|stage| *stage == DrainStage::Closing).await) } => {
                return Some(close(CLOSE_OVERLOADED, "node is draining: reconnect"));
            }
        };
        let answer = match message {
            None | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(frame))) => handle_text(gw, uid, frame.as_str(), work),
            Some(Ok(Message::Binary(_))) => Some(error(
                None,
                ErrorCode::BadFrame,
                "binary frames are not accepted: send json text frames",
            )),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Err(e)) => {
                let (answer, closing) = read_error(gw, e);
                if let Some(answer) = answer {
                    let _ = outbox.send(answer).await;
                }
                return closing;
            }
        };
        if let Some(answer) = answer
            && outbox.send(answer).await.is_err()
        {
            return None;
        }
    }
}

/// What to answer at once, and how to close, when reading failed; the stream is
/// over after any read error.
fn read_error(gw: &Gateway, e: axum::Error) -> (Option<Message>, Option<Message>) {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            let limit = gw.config.frame_bytes_max;
            let reason = format!("frame over the {limit}-byte limit");
            (None, Some(close(CLOSE_TOO_LARGE, &reason)))
        }
        Some(tungstenite::Error::Utf8(_)) => (
            Some(error(
                None,
                ErrorCode::BadFrame,
                "text frame is not valid utf-8",
            )),
            Some(close(CLOSE_INVALID_PAYLOAD, "invalid utf-8")),
        ),
        Some(tungstenite::Error::Protocol(e)) => {
            debug!(error = %e, "websocket protocol violation");
            let reason = format!("protocol error: {e}");
            // A close reason is at most 123 bytes.
            let reason: String = reason.chars().take(100).collect();
            (None, Some(close(CLOSE_PROTOCOL_ERROR, &reason)))
        }
        _ => {
            debug!(error = %inner, "websocket read failed");
            (None, None)
        }
    }
}

/// Handles one text frame; returns the immediate answer, if any.
fn handle_text(gw: &Gateway, uid: &Uid, frame: &str, work: &mpsc::Sender<Work>) -> Option<Message> {
    let parsed = match ClientFrame::parse(frame) {
        Ok(parsed) => parsed,
        Err(e) => return Some(error(e.id, ErrorCode::BadFrame, e.message)),
    };
    let (item, id) = match parsed {
        ClientFrame::Ping => return Some(text(&ServerFrame::Pong)),
        ClientFrame::Resume { after_seq } => (
            Work::Resume {
                after: Seq(after_seq),
            },
            None,
        ),
        ClientFrame::Say { id, text } => {
            let message_id = match MessageId::new(id.clone()) {
                Ok(message_id) => message_id,
                Err(e @ IdError::TooLong { .. }) => {
                    return Some(error(Some(id), ErrorCode::TooLarge, e.to_string()));
                }
                Err(e) => return Some(error(Some(id), ErrorCode::BadFrame, e.to_string())),
            };
            if text.is_empty() {
                return Some(error(Some(id), ErrorCode::BadFrame, "text is empty"));
            }
            let limit = gw.config.text_bytes_max;
            if text.len() > limit {
                return Some(error(
                    Some(id),
                    ErrorCode::TooLarge,
                    format!("text is {} bytes, the limit is {limit}", text.len()),
                ));
            }
            if let Err(refusal) = gw.turn_limiter.check(uid) {
                return Some(refused_turn(
                    "rate_limited",
                    Some(id),
                    ErrorCode::RateLimited,
                    refusal.to_string(),
                ));
            }
            // Admission last: a turn refused for its own faults takes no place.
            let slot = match gw.admission.admit() {
                Ok(slot) => slot,
                Err(refused) => {
                    return Some(refused_turn(
                        "overloaded",
                        Some(id),
                        ErrorCode::Overloaded,
                        refused.to_string(),
                    ));
                }
            };
            (
                Work::Say {
                    id: message_id,
                    text,
                    slot,
                },
                Some(id),
            )
        }
    };
    match work.try_send(item) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => Some(refused_turn(
            "overloaded",
            id,
            ErrorCode::Overloaded,
            format!(
                "{} frames are waiting on this connection, its limit: wait for replies",
                gw.config.connection_queue_max
            ),
        )),
        Err(mpsc::error::TrySendError::Closed(_)) => None,
    }
}

/// A turn refused before it reached the session, counted in `confab_turns_total`
/// as the runtime counts its own.
fn refused_turn(
    outcome: &'static str,
    id: Option<String>,
    code: ErrorCode,
    message: String,
) -> Message {
    metrics::counter!("confab_turns_total", "outcome" => outcome).increment(1);
    error(id, code, message)
}

async fn run_work(
    gw: Gateway,
    uid: Uid,
    mut work: mpsc::Receiver<Work>,
    outbox: mpsc::Sender<Message>,
) {
    while let Some(item) = work.recv().await {
        let frames = match item {
            Work::Say { id, text, slot } => say(&gw, &uid, id, text, slot).await,
            Work::Resume { after } => {
                if resume(&gw, &uid, after, &outbox).await.is_err() {
                    return;
                }
                continue;
            }
        };
        for frame in frames {
            match tokio::time::timeout(OUTBOX_WAIT, outbox.send(frame)).await {
                Ok(Ok(())) => {}
                // The client left; the remaining turns still run, as they were sent.
                Ok(Err(_)) => break,
                // The client stopped reading: its queued turns would hold their
                // places among the node's turns in flight for ever. They are
                // dropped unrun (nothing recorded), and so are later ones.
                Err(_) => {
                    debug!(uid = %uid, "the client stopped reading; its queued turns are dropped");
                    return;
                }
            }
        }
    }
}

async fn say(gw: &Gateway, uid: &Uid, id: MessageId, text: String, slot: Slot) -> Vec<Message> {
    let client_id = id.to_string();
    let outcome = gw.runtime.turn(uid.clone(), id, text).await;
    // A turn's latency is the admission's signal when the turn ran, or timed
    // out; a refusal from a bound further in (or a store that is down) comes
    // back at once and would hide a queue: its slot is freed without a sample.
    match &outcome {
        Ok(_) | Err(TurnError::Internal(_)) => slot.answered(),
        Err(_) => drop(slot),
    }
    match outcome {
        Ok(done) => vec![
            self::text(&ServerFrame::Ack {
                id: client_id,
                seq: done.ack_seq.0,
            }),
            self::text(&reply_frame(done.reply)),
        ],
        Err(e) => vec![turn_error(Some(client_id), &e)],
    }
}

/// Streams every reply after `after`, page by page.
async fn resume(
    gw: &Gateway,
    uid: &Uid,
    after: Seq,
    outbox: &mpsc::Sender<Message>,
) -> Result<(), ()> {
    let mut cursor = after;
    loop {
        let page = match gw
            .runtime
            .replies_after(uid, cursor, RESUME_PAGE_REPLIES)
            .await
        {
            Ok(page) => page,
            Err(e) => return outbox.send(turn_error(None, &e)).await.map_err(|_| ()),
        };
        let full = page.len() == RESUME_PAGE_REPLIES;
        for reply in page {
            cursor = reply.seq;
            outbox
                .send(text(&reply_frame(reply)))
                .await
                .map_err(|_| ())?;
        }
        if !full {
            return Ok(());
        }
    }
}
