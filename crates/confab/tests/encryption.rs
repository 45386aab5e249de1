//! Encryption at rest, through the shipped binaries: after a conversation that
//! gave a phone number and an address, neither is in the raw bytes of the
//! SQLite file, of MySQL or of Redis, in any encoding; and `confabctl keys`
//! rotates the data key while clients talk, re-encrypts the old snapshots and
//! refuses to retire a version still in use.

mod common;

use base64::Engine;
use common::*;
use confab_proto::ServerFrame;
use confab_testkit::{TestDatabase, shared_mysql_url, shared_redis_url};
use sqlx::{Connection, Row};
use std::path::Path;

const PHONE: &str = "13912345678";
const ADDRESS: &str = "北京市朝阳区建国路88号";

/// The shipped flows plus one that asks for an address.
fn flows_with_delivery(dir: &Path) {
    copy_shipped_flows(dir);
    std::fs::write(
        dir.join("v1/delivery.toml"),
        r#"
[[intents]]
name = "delivery"
keywords = ["送货地址", "收货地址"]
confidence = 0.9

[slots.address]
type = "address"
prompt = "请告诉我收货地址。"

[[steps]]
ask = "address"

[[steps]]
reply = "好的，送到 {address}。"
"#,
    )
    .unwrap();
}

/// Gives the phone and the address; checks that replies mask them.
async fn converse(node: &Node, uid: &str) {
    let mut client = Client::as_uid(node, uid).await;
    client.say("m-1", "请给我回电").await;
    let (_, reply) = client.say("m-2", &format!("我的手机号是{PHONE}")).await;
    let ServerFrame::Reply { text, slots, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert!(!text.contains(PHONE), "{text}");
    assert_eq!(slots["phone"], "139****5678");
    client.say("m-3", "送货地址").await;
    let (_, reply) = client.say("m-4", ADDRESS).await;
    let ServerFrame::Reply { slots, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert_ne!(slots["address"], ADDRESS, "masked in the reply");
}

/// Every way the code could have written a secret: as text, JSON-escaped, hex,
/// base64.
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let json_escaped: String = secret
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A distinctive piece of the value, so that base64's alignment with the
    // surrounding bytes cannot hide it: every 3-byte-aligned encoding of it.
    let mut found = vec![
        ("text".to_owned(), secret.as_bytes().to_vec()),
        ("json escape".to_owned(), json_escaped.into_bytes()),
        ("hex".to_owned(), hex::encode(secret).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(secret).into_bytes()),
    ];
    for shift in 0..3 {
        let padded: Vec<u8> = std::iter::repeat_n(b'x', shift)
            .chain(secret.bytes())
            .collect();
        // The middle of the encoding does not depend on what came before.
        let encoded = b64.encode(&padded);
        let middle = &encoded[4..encoded.len().saturating_sub(4)];
        found.push((format!("base64 +{shift}"), middle.as_bytes().to_vec()));
        let encoded = b64url.encode(&padded);
        let middle = &encoded[4..encoded.len().saturating_sub(4)];
        found.push((format!("base64url +{shift}"), middle.as_bytes().to_vec()));
    }
    found
}

fn assert_absent(where_: &str, bytes: &[u8]) {
    for secret in [PHONE, ADDRESS] {
        for (encoding, needle) in encodings(secret) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{where_} holds {secret:?} as {encoding}"
            );
        }
    }
}

/// Sealed values (`enc:1:`) or a sealed snapshot (format 2) are there: the
/// search above looked at what was written.
fn assert_sealed_values_present(where_: &str, bytes: &[u8]) {
    assert!(
        bytes
            .windows(6)
            .any(|w| w == b"enc:1:" || w == b"CFSN\0\x02"),
        "{where_} holds no sealed value: was anything written?"
    );
}

#[tokio::test]
async fn the_sqlite_file_holds_no_phone_or_address_in_any_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    flows_with_delivery(&flows);
    let data = dir.path().join("data");
    let env = [("CONFAB_DIALOG__FLOWS_DIR", flows.to_str().unwrap())];
    let node = Node::start_with(&data, &env).await;
    converse(&node, "alice").await;
    // `session show` masks too.
    let (code, shown, _) = confabctl(&node, &["session", "show", "alice"]).await;
    assert_eq!(code, 0);
    assert!(
        !shown.contains(PHONE) && !shown.contains("建国路"),
        "{shown}"
    );
    node.stop().await; // a clean stop writes alice's snapshot
    let mut raw = Vec::new();
    for name in ["confab.db", "confab.db-wal", "confab.db-shm"] {
        if let Ok(bytes) = std::fs::read(data.join(name)) {
            raw.extend(bytes);
        }
    }
    assert_absent("the SQLite store", &raw);
    assert_sealed_values_present("the SQLite store", &raw);

    // What was sealed opens: the session comes back whole from its snapshot.
    let node = Node::start_with(&data, &env).await;
    let mut client = Client::as_uid(&node, "alice").await;
    assert!(matches!(client.hello, ServerFrame::Hello { last_seq, .. } if last_seq > 0));
    let (code, shown, _) = confabctl(&node, &["--json", "session", "show", "alice"]).await;
    assert_eq!(code, 0);
    assert!(shown.contains("139****5678"), "{shown}");
    client.assert_alive().await;
}

#[tokio::test]
async fn mysql_and_redis_hold_no_phone_or_address_in_any_encoding() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let prefix = format!("confab-sealed-test-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    flows_with_delivery(&flows);
    let redis_url = shared_redis_url();
    let env = [
        ("CONFAB_STORE__MYSQL_URL", db.url.as_str()),
        ("CONFAB_STORE__REDIS_URL", redis_url.as_str()),
        ("CONFAB_STORE__REDIS_KEY_PREFIX", prefix.as_str()),
        ("CONFAB_DIALOG__FLOWS_DIR", flows.to_str().unwrap()),
    ];
    let node = Node::start_with(&dir.path().join("data"), &env).await;
    converse(&node, "bob").await;
    node.stop().await;

    // Every row of every table of the test's database.
    let mut mysql = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_all(&mut mysql)
    .await
    .unwrap();
    let mut raw = Vec::new();
    for (table,) in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM `{table}`")))
            .fetch_all(&mut mysql)
            .await
            .unwrap();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(bytes) = row.try_get::<Vec<u8>, _>(i) {
                    raw.extend(bytes);
                } else if let Ok(text) = row.try_get::<String, _>(i) {
                    raw.extend(text.into_bytes());
                }
            }
        }
    }
    assert_absent("MySQL", &raw);
    assert_sealed_values_present("MySQL", &raw);

    // Every value of every key of the test's prefix (read by type: DUMP's
    // serialisation compresses, which would hide plaintext from the search).
    let mut redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the node wrote through to Redis");
    let mut raw = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap(),
            other => panic!("{key} is a {other}, which this test does not read"),
        };
        raw.extend(values.concat());
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    assert_absent("Redis", &raw);
    assert_sealed_values_present("Redis", &raw);
}

/// `confabctl keys status` as JSON.
async fn keys_status(node: &Node) -> serde_json::Value {
    let (code, out, err) = confabctl(node, &["--json", "keys", "status"]).await;
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn covered(status: &serde_json::Value, version: u64, what: &str) -> u64 {
    status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .map_or(0, |v| v[what].as_u64().unwrap())
}

#[tokio::test]
async fn a_key_rotates_under_load_and_old_snapshots_move_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    flows_with_delivery(&flows);
    let data = dir.path().join("data");
    let env = [("CONFAB_DIALOG__FLOWS_DIR", flows.to_str().unwrap())];
    // Sessions with snapshots under version 1.
    let node = Node::start_with(&data, &env).await;
    for user in 0..5 {
        converse(&node, &format!("old-{user}")).await;
    }
    node.stop().await;
    let node = Node::start_with(&data, &env).await;
    let before = keys_status(&node).await;
    assert_eq!(covered(&before, 1, "snapshots"), 5, "{before}");

    // Clients talk while the key rotates: no turn fails.
    let talkers: Vec<_> = (0..4)
        .map(|t| {
            let url = node.ws_url();
            tokio::spawn(async move {
                let mut client = Client::connect(&url, &token(&format!("talker-{t}")))
                    .await
                    .unwrap();
                for i in 0..30 {
                    // `say` panics on anything but an ack and a reply.
                    client
                        .say(&format!("m-{i}"), &format!("我的手机号是1391234{i:04}"))
                        .await;
                }
            })
        })
        .collect();
    let (code, out, err) = confabctl(&node, &["keys", "rotate"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("v2"), "{out}");
    for talker in talkers {
        talker.await.unwrap();
    }
    // The old sessions still open (their snapshots are under v1, or already
    // rewritten), and every old snapshot moves to v2.
    for user in 0..5 {
        let client = Client::as_uid(&node, &format!("old-{user}")).await;
        assert!(matches!(client.hello, ServerFrame::Hello { last_seq, .. } if last_seq >= 12));
    }
    eventually(|| async {
        let status = keys_status(&node).await;
        covered(&status, 1, "snapshots") == 0
    })
    .await;
    let after = keys_status(&node).await;
    assert!(
        covered(&after, 2, "events") > 0,
        "new writes use v2: {after}"
    );
    assert!(
        covered(&after, 1, "events") > 0,
        "events stay as written: {after}"
    );

    // v1 still covers events: retiring it is refused, and so is the current v2.
    let (code, _, err) = confabctl(&node, &["keys", "retire", "1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("still covers"), "{err}");
    let (code, _, err) = confabctl(&node, &["keys", "retire", "v2"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("newest") || err.contains("still covers"),
        "{err}"
    );
    let (code, _, err) = confabctl(&node, &["keys", "retire", "7"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no version v7"), "{err}");

    // After a restart every session comes back from its v2 snapshot.
    node.stop().await;
    let node = Node::start_with(&data, &env).await;
    let mut client = Client::as_uid(&node, "old-0").await;
    client.say("m-after", "你好").await;
}

/// A gauge's value in a node's `/metrics`.
async fn gauge(node: &Node, name: &str) -> Option<f64> {
    let (_, metrics) = http_get(node.port, "/metrics").await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_node_reaches_every_node_of_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = cluster_with(dir.path(), 3, |_| Vec::new()).await;
    for node in &nodes {
        assert_eq!(gauge(node, "confab_data_key_version").await, Some(1.0));
    }
    let (code, _, err) = confabctl(&nodes[1], &["keys", "rotate"]).await;
    assert_eq!(code, 0, "{err}");
    // Each node follows the store's ring every 500 ms.
    for node in &nodes {
        eventually(|| async { gauge(node, "confab_data_key_version").await == Some(2.0) }).await;
    }
    // Turns through every node (each forwarded to its session's owner) are
    // written under v2 from now on.
    let before = keys_status(&nodes[0]).await;
    for (i, node) in nodes.iter().enumerate() {
        let mut client = Client::as_uid(node, &format!("after-rotation-{i}")).await;
        client.say("m-1", "你好").await;
    }
    let after = keys_status(&nodes[0]).await;
    assert!(
        covered(&after, 2, "events") >= covered(&before, 2, "events") + 3,
        "{after}"
    );
}
