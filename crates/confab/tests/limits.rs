//! The node's limits, at their edges, through the shipped binary: connections
//! per node and per source address (503 before the upgrade), the idle deadline
//! before an upgrade, the per-uid turn bucket (`rate_limited`, nothing
//! recorded), the admission of turns (`overloaded` at once, nothing recorded),
//! the answers to protocol and admin-body violations, and a process without
//! transparent huge pages.

mod common;

use common::{
    Client, Node, SECRET, WAIT, admin_token, http_get, http_request, now_s, reply_seq, token,
    token_with,
};
use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Connects a WebSocket from a chosen loopback address (all of 127/8 is local).
async fn connect_from(
    source: [u8; 4],
    node: &Node,
    uid: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("binds a loopback source address");
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], node.port)))
        .await
        .unwrap();
    let mut request = node.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(uid)).parse().unwrap(),
    );
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
}

fn assert_503(result: Result<impl Sized, tungstenite::Error>, limit: &str) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("\"overloaded\""), "{body}");
            assert!(body.contains(limit), "names {limit}: {body}");
        }
        Err(e) => panic!("expected 503 before the upgrade, got {e}"),
        Ok(_) => panic!("expected 503 before the upgrade, the connection was upgraded"),
    }
}

async fn metric(node: &Node, line_start: &str) -> String {
    let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in:\n{metrics}"))
        .to_owned()
}

/// A node turns transparent huge pages off for its own process (docs/operations.md,
/// "Memory"): the kernel reports the process's flag in `/proc/<pid>/status`.
#[tokio::test]
async fn a_node_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let thp = node.proc_status("THP_enabled");
    node.stop().await;
    assert_eq!(
        thp.as_deref(),
        Some("0"),
        "THP_enabled of the node's /proc/<pid>/status (a kernel older than 5.0 does not report it)"
    );
}

#[tokio::test]
async fn the_last_connection_allowed_passes_and_the_next_gets_503_before_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("CONFAB_GATEWAY__MAX_CONNECTIONS", "2")]).await;
    let mut first = Client::as_uid(&node, "ann").await;
    // The second is the last the node allows: it is served.
    let mut second = Client::as_uid(&node, "ben").await;
    second.say("m-1", "你好").await;
    // The third is refused with 503 before any upgrade, and nothing is created.
    assert_503(
        connect_from([127, 0, 0, 1], &node, "cat").await,
        "gateway.max_connections",
    );
    first.assert_alive().await;
    drop(second);
    // A slot freed is a slot to take: the refused user comes in, with nothing
    // recorded by the refusal. (Until the node sees the socket close, a try is
    // refused too: each is counted.)
    let refusals = std::cell::Cell::new(1);
    let cat = common::eventually_value(|| async {
        let attempt = Client::connect(&node.ws_url(), &token("cat")).await;
        if attempt.is_err() {
            refusals.set(refusals.get() + 1);
        }
        attempt.ok()
    })
    .await;
    assert!(
        matches!(cat.hello, ServerFrame::Hello { last_seq: 0, .. }),
        "{:?}",
        cat.hello
    );
    drop(cat);
    drop(first);
    let counted = common::eventually_value(|| async {
        match http_get(node.port, "/metrics").await {
            Some((200, metrics)) => Some(metrics),
            Some((503, _)) => {
                refusals.set(refusals.get() + 1);
                None
            }
            _ => None,
        }
    })
    .await;
    let expected = format!(
        "confab_connections_refused_total{{reason=\"max_connections\"}} {}",
        refusals.get()
    );
    assert!(counted.contains(&expected), "{expected} in:\n{counted}");
}

#[tokio::test]
async fn one_source_address_gets_its_own_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP", "2")],
    )
    .await;
    let _first = connect_from([127, 0, 0, 2], &node, "dan").await.unwrap();
    let _last_allowed = connect_from([127, 0, 0, 2], &node, "eve").await.unwrap();
    assert_503(
        connect_from([127, 0, 0, 2], &node, "fay").await,
        "gateway.max_connections_per_ip",
    );
    // Another address is not held to 127.0.0.2's count.
    let _other = connect_from([127, 0, 0, 3], &node, "fay").await.unwrap();
    assert_eq!(
        metric(
            &node,
            "confab_connections_refused_total{reason=\"max_connections_per_ip\"}"
        )
        .await,
        "confab_connections_refused_total{reason=\"max_connections_per_ip\"} 1"
    );
}

/// Reads until the server closes the socket; panics if it stays open past the
/// wait.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes an idle socket before the upgrade");
}

#[tokio::test]
async fn sockets_that_never_finish_a_request_count_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("CONFAB_GATEWAY__MAX_CONNECTIONS", "2"),
            ("CONFAB_GATEWAY__IDLE_BEFORE_UPGRADE_MS", "1500"),
        ],
    )
    .await;
    let address = ("127.0.0.1", node.port);
    let mut silent = TcpStream::connect(address).await.unwrap();
    let mut half_line = TcpStream::connect(address).await.unwrap();
    half_line.write_all(b"GET /v1/ws HT").await.unwrap();
    // Two sockets that send no request hold both slots (for the deadline's
    // 1.5 s: the next connection comes at once)...
    assert_503(
        connect_from([127, 0, 0, 1], &node, "gus").await,
        "gateway.max_connections",
    );
    // ...until the deadline closes them.
    closed_by_server(&mut silent).await;
    closed_by_server(&mut half_line).await;
    let mut gus = common::eventually_value(|| async {
        Client::connect(&node.ws_url(), &token("gus")).await.ok()
    })
    .await;
    // An upgraded connection has no such deadline: it outlives it.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    gus.say("m-1", "你好").await;
}

#[tokio::test]
async fn turns_past_the_burst_get_rate_limited_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("CONFAB_LIMITS__TURNS_PER_S", "1"),
            ("CONFAB_LIMITS__BURST", "3"),
        ],
    )
    .await;
    let mut client = Client::as_uid(&node, "hal").await;
    // Four turns at once: the bucket holds three.
    for i in 1..=4 {
        client
            .send(&ClientFrame::Say {
                id: format!("m-{i}"),
                text: "你好".into(),
            })
            .await;
    }
    let mut answers: BTreeMap<String, Vec<ServerFrame>> = BTreeMap::new();
    let mut frames = 0;
    while frames < 7 {
        let frame = client.recv().await;
        let id = match &frame {
            ServerFrame::Ack { id, .. } | ServerFrame::Reply { id, .. } => id.clone(),
            ServerFrame::Error { id, .. } => id.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        answers.entry(id).or_default().push(frame);
        frames += 1;
    }
    for i in 1..=3 {
        let got = &answers[&format!("m-{i}")];
        assert!(matches!(got[0], ServerFrame::Ack { .. }), "m-{i}: {got:?}");
    }
    let limited = &answers["m-4"];
    match &limited[..] {
        [
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message,
                ..
            },
        ] => assert!(message.contains("burst 3"), "{message}"),
        other => panic!("m-4: {other:?}"),
    }
    // Nothing was recorded for m-4: a new connection's hello shows the three
    // turns only (each turn is three events: its text, its reply, ...).
    let last_seq = answers
        .values()
        .flatten()
        .filter_map(|frame| match frame {
            ServerFrame::Reply { seq, .. } => Some(*seq),
            _ => None,
        })
        .max()
        .unwrap();
    drop(client);
    let again = Client::as_uid(&node, "hal").await;
    match again.hello {
        ServerFrame::Hello { last_seq: seq, .. } => assert_eq!(seq, last_seq),
        other => panic!("{other:?}"),
    }
    let line = metric(&node, "confab_turns_total{outcome=\"rate_limited\"}").await;
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn a_frame_that_breaks_rfc_6455_closes_with_1002() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut stream = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\n\r\n",
        token("ida")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A client's frames must be masked: this text frame is not.
    stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let code = tokio::time::timeout(WAIT, async {
        loop {
            let mut header = [0u8; 2];
            stream.read_exact(&mut header).await.unwrap();
            let opcode = header[0] & 0x0f;
            let len = match header[1] & 0x7f {
                126 => {
                    let mut ext = [0u8; 2];
                    stream.read_exact(&mut ext).await.unwrap();
                    usize::from(u16::from_be_bytes(ext))
                }
                127 => panic!("no server frame here is that long"),
                len => usize::from(len),
            };
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.unwrap();
            if opcode == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("a close frame comes");
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn the_admin_api_names_its_own_way_to_pass_a_token_and_refuses_big_bodies_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (status, body) = http_get(node.port, "/admin/v1/status").await.unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert!(
        !body.contains("?token="),
        "the admin API takes no query token: {body}"
    );
    // nbf in the future: an admin token that is not valid yet is refused.
    let later = token_with(
        SECRET,
        serde_json::json!({"sub": "ops", "scope": "admin", "nbf": now_s() + 3600, "exp": now_s() + 7200}),
    );
    let (status, body) = http_request(node.port, "GET", "/admin/v1/status", Some(&later), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("nbf"), "{body}");
    // A body over the limit: 413, and the canary is untouched.
    let huge = format!("{{\"version\":\"{}\"}}", "v".repeat(3 * 1024 * 1024));
    let admin = admin_token();
    let (status, _) = http_request(
        node.port,
        "PUT",
        "/admin/v1/canary",
        Some(&admin),
        Some(&huge),
    )
    .await
    .unwrap();
    assert_eq!(status, 413);
    let (status, canary) = http_request(node.port, "GET", "/admin/v1/canary", Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!canary.contains("vvvv"), "{canary}");
}

#[tokio::test]
async fn injection_strings_in_uids_ids_and_texts_are_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let uid = "x');DROP/**/TABLE/**/events;--";
    let mut client = Client::as_uid(&node, uid).await;
    // Each is refused by the input filter (rejected_input, kept for audit) or
    // taken as text like any other: never an internal error.
    for (i, text) in [
        "'; DROP TABLE snapshots; --",
        "<script>alert(1)</script>",
        "{{phone}} ${jndi:ldap://x} %s%n",
        "../../etc/passwd",
        "\u{202e}gnp.exe \u{0}",
    ]
    .iter()
    .enumerate()
    {
        client
            .send(&ClientFrame::Say {
                id: format!("m-{i}\"'<"),
                text: (*text).into(),
            })
            .await;
        match client.recv().await {
            ServerFrame::Ack { .. } => {
                assert!(matches!(client.recv().await, ServerFrame::Reply { .. }));
            }
            ServerFrame::Error {
                code: ErrorCode::RejectedInput | ErrorCode::BadFrame,
                ..
            } => {}
            other => panic!("{text:?}: {other:?}"),
        }
    }
    drop(client);
    // Still one user among others, with all of her turns; the store unharmed.
    let again = Client::as_uid(&node, uid).await;
    assert!(matches!(again.hello, ServerFrame::Hello { last_seq, .. } if last_seq >= 1));
    let mut other = Client::as_uid(&node, "plain-user").await;
    other.say("m-1", "你好").await;
    let (code, shown, err) = common::confabctl(&node, &["--json", "session", "show", uid]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("DROP"),
        "the uid comes back as it was: {shown}"
    );
}

/// Sends `n` turns in one write on one connection and gathers every frame
/// that answers them, by message id.
async fn burst(client: &mut Client, prefix: &str, n: usize) -> BTreeMap<String, Vec<ServerFrame>> {
    let frames: Vec<ClientFrame> = (1..=n)
        .map(|i| ClientFrame::Say {
            id: format!("{prefix}-{i}"),
            text: "你好".into(),
        })
        .collect();
    client.send_all(&frames).await;
    let mut answers: BTreeMap<String, Vec<ServerFrame>> = BTreeMap::new();
    // Every turn ends with a reply or an error.
    while answers
        .values()
        .filter(|frames| {
            frames
                .iter()
                .any(|f| matches!(f, ServerFrame::Reply { .. } | ServerFrame::Error { .. }))
        })
        .count()
        < n
    {
        let frame = client.recv().await;
        let id = match &frame {
            ServerFrame::Ack { id, .. } | ServerFrame::Reply { id, .. } => id.clone(),
            ServerFrame::Error { id, .. } => id.clone().expect("a turn's error names it"),
            other => panic!("{other:?}"),
        };
        answers.entry(id).or_default().push(frame);
    }
    answers
}

/// The ids answered `overloaded`, with the message of the first.
fn overloaded(answers: &BTreeMap<String, Vec<ServerFrame>>) -> (Vec<String>, String) {
    let mut ids = Vec::new();
    let mut first = String::new();
    for (id, frames) in answers {
        if let [ServerFrame::Error { code, message, .. }] = &frames[..] {
            assert_eq!(*code, ErrorCode::Overloaded, "{id}: {message}");
            if first.is_empty() {
                first = message.clone();
            }
            ids.push(id.clone());
        }
    }
    (ids, first)
}

/// Admission through the binary: with room for one turn in flight, a burst
/// of five on one connection gets the first run and the other four answered
/// `overloaded` by the gateway's admission at once (its message names the
/// latency it keeps to), with nothing recorded for them: sent again, they are
/// recorded once each, right after the first. The limit is a metric. With the
/// adaptation off (`admission_latency_target_ms = 0`), the runtime's own bound
/// answers instead, naming itself.
#[tokio::test]
async fn a_turn_past_the_admission_limit_is_answered_overloaded_at_once_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("CONFAB_RUNTIME__MAX_INFLIGHT_TURNS", "1"),
            ("CONFAB_GATEWAY__ADMISSION_MIN_INFLIGHT", "1"),
            ("CONFAB_GATEWAY__ADMISSION_LATENCY_TARGET_MS", "20"),
        ],
    )
    .await;
    let mut client = Client::as_uid(&node, "ida").await;
    // The five frames arrive in one write: the reader takes all of them from
    // its buffer while the first turn has only been handed to the worker.
    let answers = burst(&mut client, "a", 5).await;
    let (refused, message) = overloaded(&answers);
    assert_eq!(refused, ["a-2", "a-3", "a-4", "a-5"], "{answers:?}");
    assert!(
        message.contains("turns queue longer than 20 ms"),
        "the admission answered: {message}"
    );
    let ServerFrame::Reply { seq: first_seq, .. } = answers["a-1"][1] else {
        panic!("{:?}", answers["a-1"]);
    };
    // Sent again one at a time, each is recorded once, after the first turn.
    let mut last = first_seq;
    for id in &refused {
        let (ack_seq, reply) = client.say(id, "你好").await;
        assert!(ack_seq > last, "{id} acked at {ack_seq}, after {last}");
        last = reply_seq(&reply);
    }
    drop(client);
    let again = Client::as_uid(&node, "ida").await;
    assert_eq!(again.last_seq(), last, "nothing else was recorded");
    let line = metric(&node, "confab_admission_limit ").await;
    assert!(line.ends_with(" 1"), "{line}");
    let line = metric(&node, "confab_turns_total{outcome=\"overloaded\"}").await;
    assert!(line.ends_with(" 4"), "{line}");
    node.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &[
            ("CONFAB_RUNTIME__MAX_INFLIGHT_TURNS", "1"),
            ("CONFAB_GATEWAY__ADMISSION_LATENCY_TARGET_MS", "0"),
            ("CONFAB_GATEWAY__ADMISSION_MIN_INFLIGHT", "1"),
        ],
    )
    .await;
    let mut client = Client::as_uid(&node, "ida").await;
    // The worker runs one turn at a time per connection: a second connection
    // makes the runtime's bound meet two turns at once.
    let mut other = Client::as_uid(&node, "jon").await;
    let (mine, theirs) = tokio::join!(burst(&mut client, "b", 5), burst(&mut other, "c", 5));
    let (refused_mine, message_mine) = overloaded(&mine);
    let (refused_theirs, message_theirs) = overloaded(&theirs);
    assert!(
        !refused_mine.is_empty() || !refused_theirs.is_empty(),
        "two connections, one slot: {mine:?} {theirs:?}"
    );
    let message = if message_mine.is_empty() {
        message_theirs
    } else {
        message_mine
    };
    assert!(
        message.contains("node has 1 requests in flight"),
        "the runtime's bound answered: {message}"
    );
    node.stop().await;
}
