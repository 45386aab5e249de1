//! TLS outward and identity-provider tokens, through the shipped binary: a node
//! on a private MariaDB that requires TLS, a private Redis that speaks only TLS
//! and an https stage, all checked against a private CA; RS256 and ES256 tokens
//! through a JWKS file (re-read when it changes) and an https JWKS URL.

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_testkit::{ActionService, PrivateMariaDb, PrivateRedis, SigningKey, jwks};
use std::path::Path;

fn certificates(dir: &Path) {
    confab_testkit::make_certificates(dir, "ca", &[("server", "127.0.0.1")]).unwrap();
}

fn claims(uid: &str) -> serde_json::Value {
    serde_json::json!({"sub": uid, "scope": "chat", "exp": now_s() + 600})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_mysql_redis_and_an_https_stage_over_tls_checked_against_its_ca() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let (cert, key, ca) = (
        certs.path().join("server.pem"),
        certs.path().join("server.key"),
        certs.path().join("ca.pem"),
    );
    let mariadb = tokio::task::block_in_place(|| PrivateMariaDb::start_tls(&cert, &key, &ca));
    let redis = tokio::task::block_in_place(|| PrivateRedis::start_tls(&cert, &key, &ca));
    let service = ActionService::start_tls(&cert, &key).await;
    let idp = SigningKey::es256(certs.path(), "idp-1");
    service.set_jwks(&jwks(&[&idp]));

    let mysql_url = format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        mariadb.url(),
        ca.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
jwks_url = "{url}/jwks"

[store]
mysql_url = "{mysql_url}"
redis_url = "{redis_url}"
redis_key_prefix = "tls-test"

[tls]
ca_file = "{ca}"

[[dialog.stages]]
name = "rewrite"
at = "after_reply"
url = "{url}/stage/prefix"
timeout_ms = 2000
retries = 0
on_error = "fail"
"#,
            url = service.url(),
            redis_url = redis.url(),
            ca = ca.display(),
        ),
    )
    .unwrap();
    assert!(service.url().starts_with("https://"));
    assert!(redis.url().starts_with("rediss://"));
    let node = Node::start_member(
        &dir.path().join("data"),
        &[],
        &["--config", config.to_str().unwrap()],
    )
    .await;

    // An ES256 token of the identity provider, its key fetched over https.
    let url = node.ws_url();
    let token = idp.sign(&claims("tina"));
    let mut client = eventually_value(|| async { Client::connect(&url, &token).await.ok() }).await;
    // Acked: committed in MariaDB, which refuses plaintext. Replied through the
    // https stage, which prefixes its answer.
    let (_, reply) = client.say("m-1", "你好").await;
    let ServerFrame::Reply { text, .. } = &reply else {
        panic!("{reply:?}")
    };
    assert!(
        text.starts_with("【AI】"),
        "the https stage answered: {text}"
    );
    assert_eq!(service.stage_calls().len(), 1);
    // Written through to Redis, which speaks only TLS.
    let mut conn = redis::Client::build_with_tls(
        redis.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tls-test:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the node wrote through to Redis over TLS");
    drop(client);
    node.stop().await;

    // The same MariaDB without TLS: refused, and the node says so.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["node", "--data-dir"])
        .arg(dir.path().join("plain"))
        .args(["--jwt-secret", SECRET])
        .env(
            "CONFAB_STORE__MYSQL_URL",
            format!("{}?ssl-mode=DISABLED", mariadb.url()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.mysql_url"), "{stderr}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_pass_by_kid_and_a_changed_jwks_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let es = SigningKey::es256(keys.path(), "es-1");
    let rs = SigningKey::rs256(keys.path(), "rs-1");
    let jwks_file = keys.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&es])).unwrap();
    let env = [
        ("CONFAB_AUTH__JWKS_FILE", jwks_file.to_str().unwrap()),
        ("CONFAB_AUTH__ISSUER", "https://id.example"),
        ("CONFAB_AUTH__AUDIENCE", "confab"),
    ];
    let node = Node::start_with(dir.path(), &env).await;
    let url = node.ws_url();
    let good = |uid: &str| {
        serde_json::json!({
            "sub": uid, "scope": "chat", "exp": now_s() + 600,
            "iss": "https://id.example", "aud": "confab",
        })
    };
    let mut client = Client::connect(&url, &es.sign(&good("uma"))).await.unwrap();
    client.say("m-1", "你好").await;
    // Not in the JWKS yet: refused before the upgrade.
    assert_401(Client::connect(&url, &rs.sign(&good("uma"))).await);
    // A wrong issuer or audience: refused.
    let mut wrong = good("uma");
    wrong["iss"] = "https://evil.example".into();
    assert_401(Client::connect(&url, &es.sign(&wrong)).await);
    let mut wrong = good("uma");
    wrong["aud"] = "other".into();
    assert_401(Client::connect(&url, &es.sign(&wrong)).await);
    // The identity provider rotates: the file now holds the RSA key only.
    std::fs::write(&jwks_file, jwks(&[&rs])).unwrap();
    let rs_token = rs.sign(&good("uma"));
    let mut client =
        eventually_value(|| async { Client::connect(&url, &rs_token).await.ok() }).await;
    client.say("m-2", "你好").await;
    assert_401(Client::connect(&url, &es.sign(&good("uma"))).await);
    // A broken file keeps the keys before it.
    std::fs::write(&jwks_file, "{ not json").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    Client::connect(&url, &rs_token).await.unwrap();
    // HS256 tokens of the node's secret still pass, held to the same issuer and
    // audience.
    Client::connect(&url, &token_with(SECRET, good("uma")))
        .await
        .unwrap();
    assert_401(Client::connect(&url, &token("uma")).await);
}

fn assert_401(result: Result<Client, tokio_tungstenite::tungstenite::Error>) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("expected 401, the connection was accepted"),
    }
}

// Multi-threaded: confabctl runs as a blocking child while the server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confabctl_speaks_https_and_checks_the_certificate() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let service = ActionService::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    )
    .await;
    let run = |ca: Option<&Path>| {
        let mut command = std::process::Command::new(confabctl_path());
        command
            .args(["--node", &service.url(), "--token", "t"])
            .env_remove("CONFAB_CA_FILE");
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.arg("status").output().unwrap()
    };
    // Trusting the private CA, the request reaches the server over TLS (which
    // is no confab node: it answers 404).
    let trusted = run(Some(&certs.path().join("ca.pem")));
    let stderr = String::from_utf8_lossy(&trusted.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    // Without it, the certificate is refused and nothing is sent.
    let untrusted = run(None);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(!stderr.contains("404"), "{stderr}");
}
