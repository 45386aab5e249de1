//! Protocol v1 against a real node process, with a real WebSocket client.

mod common;

use common::*;
use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn a_conversation_is_acked_replied_deduplicated_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "alice").await;
    assert_eq!(
        client.hello,
        ServerFrame::Hello {
            uid: "alice".into(),
            resumed: false,
            last_seq: 0,
            node: "node-1".into()
        }
    );
    let (ack, reply) = client.say("m-1", "39码的黑色有货吗？").await;
    assert_eq!(ack, 1);
    let ServerFrame::Reply {
        seq,
        text,
        intent,
        slots,
        policy,
        ..
    } = &reply
    else {
        unreachable!()
    };
    assert_eq!(
        (*seq, intent.as_str(), policy.as_str()),
        (3, "stock_query", "v1")
    );
    assert_eq!(text, "黑色 39码 有货，今天下单今天发货。");
    assert_eq!(slots.get("size").map(String::as_str), Some("39"));

    let (ack, reply) = client.say("m-2", "请回电 13812345678").await;
    assert_eq!(ack, 4);
    let ServerFrame::Reply { text, slots, .. } = &reply else {
        unreachable!()
    };
    assert_eq!(slots.get("phone").map(String::as_str), Some("138****5678"));
    assert!(text.contains("138****5678") && !text.contains("13812345678"));

    // The same id again: the original ack and reply, and nothing new recorded.
    let (ack, again) = client.say("m-1", "something else entirely").await;
    assert_eq!(ack, 1);
    assert_eq!(reply_seq(&again), 3);
    let (ack, _) = client.say("m-3", "谢谢").await;
    assert_eq!(ack, 7, "the repeat recorded nothing");

    client.send(&ClientFrame::Resume { after_seq: 3 }).await;
    assert_eq!(reply_seq(&client.recv().await), 6);
    assert_eq!(reply_seq(&client.recv().await), 9);
    client.assert_alive().await;

    // A second connection sees the session where it stands.
    let mut other = Client::as_uid(&node, "alice").await;
    assert_eq!(other.last_seq(), 9);
    assert!(matches!(
        other.hello,
        ServerFrame::Hello { resumed: true, .. }
    ));
    other.send(&ClientFrame::Resume { after_seq: 0 }).await;
    for expected in [3, 6, 9] {
        assert_eq!(reply_seq(&other.recv().await), expected);
    }
    other.assert_alive().await;
}

#[tokio::test]
async fn refused_tokens_get_401_before_the_upgrade_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let url = node.ws_url();
    let far = now_s() + 3600;
    let cases = [
        (
            "bad signature",
            token_with(
                "another-secret-entirely-0123456789",
                serde_json::json!({"sub": "mallory", "scope": "chat", "exp": far}),
            ),
        ),
        (
            "expired",
            token_with(
                SECRET,
                serde_json::json!({"sub": "mallory", "scope": "chat", "exp": now_s() - 120}),
            ),
        ),
        (
            "no chat scope",
            token_with(
                SECRET,
                serde_json::json!({"sub": "mallory", "scope": "admin", "exp": far}),
            ),
        ),
        (
            "no exp",
            token_with(
                SECRET,
                serde_json::json!({"sub": "mallory", "scope": "chat"}),
            ),
        ),
        (
            "empty sub",
            token_with(
                SECRET,
                serde_json::json!({"sub": "", "scope": "chat", "exp": far}),
            ),
        ),
        (
            "huge sub",
            token_with(
                SECRET,
                serde_json::json!({"sub": "m".repeat(10_000), "scope": "chat", "exp": far}),
            ),
        ),
        (
            "not valid for another hour (nbf)",
            token_with(
                SECRET,
                serde_json::json!({"sub": "mallory", "scope": "chat", "exp": far + 3600, "nbf": far}),
            ),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        match Client::connect(&url, &token).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{what}");
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("\"unauthorized\""), "{what}: {body}");
            }
            Err(e) => panic!("{what}: expected 401, got {e}"),
            Ok(_) => panic!("{what}: the connection was accepted"),
        }
    }
    // No token at all.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401 without a token, got {:?}", other.map(|_| ())),
    }
    // The token may also come as a query parameter, for browsers.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{url}?token={}", token("mallory")))
            .await
            .unwrap();
    use futures_util::StreamExt;
    let hello = socket.next().await.unwrap().unwrap();
    let hello: ServerFrame = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert!(
        matches!(
            hello,
            ServerFrame::Hello {
                last_seq: 0,
                resumed: false,
                ..
            }
        ),
        "the refused attempts created nothing: {hello:?}"
    );
}

fn error_code(frame: &ServerFrame) -> (Option<String>, ErrorCode, String) {
    match frame {
        ServerFrame::Error { id, code, message } => (id.clone(), *code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_frames_get_a_clear_error_keep_the_connection_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "bob").await;
    let long_id = "i".repeat(129);
    let long_text = "字".repeat(2000);
    let cases: Vec<(String, ErrorCode, &str)> = vec![
        ("this is not json".into(), ErrorCode::BadFrame, "not json"),
        (
            r#"{"type":"shout","id":"m-1"}"#.into(),
            ErrorCode::BadFrame,
            "unknown frame type",
        ),
        (
            r#"{"type":"say","id":"m-1"}"#.into(),
            ErrorCode::BadFrame,
            "missing field `text`",
        ),
        (
            r#"{"type":"say","text":"hi"}"#.into(),
            ErrorCode::BadFrame,
            "missing field `id`",
        ),
        (
            r#"{"type":"say","id":7,"text":"hi"}"#.into(),
            ErrorCode::BadFrame,
            "invalid type",
        ),
        (
            r#"{"type":"resume","after_seq":"x"}"#.into(),
            ErrorCode::BadFrame,
            "invalid type",
        ),
        (
            r#"{"type":"say","id":"m-1","text":""}"#.into(),
            ErrorCode::BadFrame,
            "text is empty",
        ),
        (
            format!(r#"{{"type":"say","id":"m-1","text":"{long_text}"}}"#),
            ErrorCode::TooLarge,
            "the limit is 4096",
        ),
        (
            format!(r#"{{"type":"say","id":"{long_id}","text":"hi"}}"#),
            ErrorCode::TooLarge,
            "the limit is 128",
        ),
        (
            r#"{"type":"say","id":"","text":"hi"}"#.into(),
            ErrorCode::BadFrame,
            "message id is empty",
        ),
        (
            r#"{"type":"say","id":"m-1","text":"bell\u0007"}"#.into(),
            ErrorCode::RejectedInput,
            "control character",
        ),
    ];
    for (frame, code, expected) in cases {
        client.send_text(&frame).await;
        let (_, got, message) = error_code(&client.recv().await);
        assert_eq!(got, code, "{frame:.80}: {message}");
        assert!(
            message.contains(expected),
            "{frame:.80}: {message:?} lacks {expected:?}"
        );
        client.assert_alive().await;
    }
    client.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    let (_, code, message) = error_code(&client.recv().await);
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("binary"), "{message}");
    client.assert_alive().await;

    // The error carries the id when the frame had one.
    client
        .send_text(r#"{"type":"say","id":"m-7","text":5}"#)
        .await;
    assert_eq!(error_code(&client.recv().await).0.as_deref(), Some("m-7"));

    // The text the input filter refused is kept as one `input_rejected` audit
    // event (seq 1); no bad frame made a turn.
    let (ack, _) = client.say("m-1", "hello").await;
    assert_eq!(ack, 2, "only the refused text's audit event came before");
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "carol").await;
    let huge = format!(
        r#"{{"type":"say","id":"m-1","text":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    client.send_text(&huge).await;
    assert_eq!(client.end().await, End::Closed(Some(1009)));
    let again = Client::as_uid(&node, "carol").await;
    assert_eq!(again.last_seq(), 0, "the oversized frame recorded nothing");
}

#[tokio::test]
async fn invalid_utf8_gets_an_error_and_a_1007_close() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "dave").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.send_raw(Message::Frame(frame)).await;
    let (_, code, message) = error_code(&client.recv().await);
    assert_eq!(code, ErrorCode::BadFrame);
    assert!(message.contains("utf-8"), "{message}");
    assert_eq!(client.end().await, End::Closed(Some(1007)));
}

#[tokio::test]
async fn an_expiring_token_closes_the_session_with_1008() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("CONFAB_AUTH__LEEWAY_S", "0")]).await;
    let short = token_with(
        SECRET,
        serde_json::json!({"sub": "erin", "scope": "chat", "exp": now_s() + 2}),
    );
    let mut client = Client::connect(&node.ws_url(), &short).await.unwrap();
    assert_eq!(client.end().await, End::Closed(Some(1008)));
}

/// `auth.leeway_s` allows for clock skew at the upgrade and for the rest of
/// the connection alike: a token a few seconds past its `exp` is let in and
/// served, and its connection closes 1008 once the leeway has run out too
/// (it used to be closed as expired the moment it opened).
#[tokio::test]
async fn a_token_let_in_by_the_leeway_is_served_until_the_leeway_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &[("CONFAB_AUTH__LEEWAY_S", "6")]).await;
    let late = token_with(
        SECRET,
        serde_json::json!({"sub": "erin", "scope": "chat", "exp": now_s() - 1}),
    );
    let mut client = Client::connect(&node.ws_url(), &late).await.unwrap();
    let (ack, reply) = client.say("m-1", "hello").await;
    assert_eq!(ack, 1);
    assert!(matches!(reply, ServerFrame::Reply { .. }), "{reply:?}");
    assert_eq!(client.end().await, End::Closed(Some(1008)));
    // Past exp and the leeway: refused before the upgrade.
    let stale = token_with(
        SECRET,
        serde_json::json!({"sub": "erin", "scope": "chat", "exp": now_s() - 60}),
    );
    assert!(Client::connect(&node.ws_url(), &stale).await.is_err());
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "frank").await;
    client.say("m-1", "你好").await;
    assert_eq!(http_get(node.port, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(node.port, "/readyz").await.unwrap().0, 200);
    let (status, page) = http_get(node.port, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("/v1/ws"));
    let (status, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "confab_turns_total{outcome=\"ok\"} 1",
        "confab_turn_latency_seconds_bucket",
        "confab_mailbox_depth",
        "confab_store_requests_total{tier=\"sqlite\",op=\"append\",result=\"hit\"}",
        "confab_ws_connections 1",
        "confab_sessions_resident 1",
        "confab_ring_epoch 1",
        "confab_snapshot_checksum_failures_total 0",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}

/// Every series of the contract's metrics is on a fresh node's page before
/// anything happened, histograms with their (empty) buckets, so that a
/// dashboard or an alert such as `rate(confab_migration_seconds_count[5m])`
/// finds it from the start instead of no data.
#[tokio::test]
async fn a_fresh_node_shows_every_series_before_anything_happened() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let (status, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "confab_turn_latency_seconds_bucket{le=\"0.0005\"} 0",
        "confab_turn_latency_seconds_count 0",
        "confab_migration_seconds_bucket{reason=\"ring_change\",le=\"0.001\"} 0",
        "confab_migration_seconds_count{reason=\"drain\"} 0",
        "confab_migrations_total{reason=\"drain\"} 0",
        "confab_handoffs_total{state_from=\"old_owner\"} 0",
        "confab_handoffs_total{state_from=\"durable_tier\"} 0",
        "confab_commit_seconds_count 0",
        "confab_commit_batch_events_count 0",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_stopping_node_closes_connections_with_1013_after_their_acks() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "ivy").await;
    client.say("m-1", "你好").await;
    let stopping = tokio::spawn(node.stop());
    assert_eq!(client.end().await, End::Closed(Some(1013)));
    stopping.await.unwrap();
}
