//! The node's secrets through the shipped binary: `..._FILE` variables, the
//! cookie a node reachable from other hosts must be given, and a node with the
//! wrong cookie refused (and the refusal logged).

mod common;

use common::*;
use std::process::{Command, Stdio};

const MASTER_KEYS: &str = "m1=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn confab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command.stdin(Stdio::null());
    command
}

#[test]
fn a_node_reachable_from_other_hosts_refuses_to_start_without_master_keys_or_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let output = confab()
        .args(["node", "--http-port", &free_port().to_string()])
        .args(["--cluster-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--jwt-secret", SECRET])
        .env("CONFAB_NODE__BIND", "0.0.0.0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no master keys") && stderr.contains("CONFAB_CRYPTO__KEYS"),
        "{stderr}"
    );
    assert!(!dir.path().join("master-keys").exists());
    // With master keys, the cookie is what it lacks.
    let output = confab()
        .args(["node", "--http-port", &free_port().to_string()])
        .args(["--cluster-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--jwt-secret", SECRET])
        .env("CONFAB_NODE__BIND", "0.0.0.0")
        .env("CONFAB_CRYPTO__KEYS", MASTER_KEYS)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cluster.cookie is not set") && stderr.contains("COOKIE_FILE"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("cluster-cookie").exists(),
        "no default cookie was made for it"
    );
}

/// The Redis Cluster seeds (which may carry a password) can come from a file,
/// one per line: the node reads them from it, checks them, and says which key
/// is wrong.
#[test]
fn redis_cluster_seeds_are_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds");
    let node = |seeds_file: &std::path::Path, extra: &[(&str, &str)]| {
        let mut command = confab();
        command
            .args(["node", "--http-port", &free_port().to_string()])
            .args(["--cluster-port", &free_port().to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--jwt-secret", SECRET])
            .env("CONFAB_STORE__REDIS_CLUSTER_NODES_FILE", seeds_file);
        for (k, v) in extra {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // A seed without its scheme, on the file's second line.
    std::fs::write(&seeds, "redis://:pw@127.0.0.1:7000\n127.0.0.1:7001\n").unwrap();
    let stderr = node(&seeds, &[]);
    assert!(
        stderr.contains("store.redis_cluster_nodes") && stderr.contains("redis://"),
        "{stderr}"
    );
    // Good seeds from the file, and a Redis URL beside them: one or the other.
    std::fs::write(
        &seeds,
        "redis://:pw@127.0.0.1:7000\nredis://:pw@127.0.0.1:7001\n",
    )
    .unwrap();
    let stderr = node(
        &seeds,
        &[("CONFAB_STORE__REDIS_URL", "redis://127.0.0.1:6379/")],
    );
    assert!(
        stderr.contains("store.redis_url and store.redis_cluster_nodes are both set"),
        "{stderr}"
    );
    // A file that is not there is named.
    let stderr = node(&dir.path().join("missing"), &[]);
    assert!(
        stderr.contains("CONFAB_STORE__REDIS_CLUSTER_NODES_FILE") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[tokio::test]
async fn secrets_come_from_files_named_by_file_variables() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let jwt = secrets.path().join("jwt");
    std::fs::write(&jwt, "a-jwt-secret-from-a-file-0123456789\n").unwrap();
    let cookie = secrets.path().join("cookie");
    std::fs::write(&cookie, "a-cookie-from-a-file-0123456789").unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["node", "--http-port", &port.to_string()])
        .args(["--cluster-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CONFAB_NODE__BIND", "0.0.0.0")
        .env("CONFAB_AUTH__JWT_SECRET_FILE", &jwt)
        .env("CONFAB_CLUSTER__COOKIE_FILE", &cookie)
        .env("CONFAB_CRYPTO__KEYS", MASTER_KEYS)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(|| async { http_get(port, "/readyz").await.map(|r| r.0) == Some(200) }).await;
    let signed = token_with(
        "a-jwt-secret-from-a-file-0123456789",
        serde_json::json!({"sub": "fay", "scope": "chat", "exp": now_s() + 60}),
    );
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut client = Client::connect(&url, &signed).await.unwrap();
    client.say("m-1", "你好").await;
    // The dev secret is not what signs here.
    assert!(Client::connect(&url, &token("fay")).await.is_err());
    child.kill().await.unwrap();
    // A file variable naming a missing file stops the node with its name.
    let output = confab()
        .args(["node", "--data-dir"])
        .arg(dir.path())
        .env(
            "CONFAB_AUTH__JWT_SECRET_FILE",
            secrets.path().join("missing"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CONFAB_AUTH__JWT_SECRET_FILE"), "{stderr}");
}

#[tokio::test]
async fn a_node_with_the_wrong_cookie_is_refused_and_the_refusal_logged() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let start = |id: &str, cookie: &str, seeds: Option<u16>, http_port: u16, cluster_port: u16| {
        let log = std::fs::File::create(logs.path().join(format!("{id}.log"))).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
        command
            .args(["node", "--node-id", id])
            .args(["--http-port", &http_port.to_string()])
            .args(["--cluster-port", &cluster_port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--jwt-secret", SECRET])
            .env("CONFAB_CLUSTER__COOKIE", cookie)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(seed) = seeds {
            command.args(["--seeds", &format!("127.0.0.1:{seed}")]);
        }
        command.spawn().unwrap()
    };
    let (first_http, first_port) = (free_port(), free_port());
    let _first = start(
        "node-1",
        "the-cluster-cookie-0123456789",
        None,
        first_http,
        first_port,
    );
    eventually(|| async { http_get(first_http, "/readyz").await.map(|r| r.0) == Some(200) }).await;
    let _rogue = start(
        "node-2",
        "a-guessed-cookie-0123456789",
        Some(first_port),
        free_port(),
        free_port(),
    );
    let log_of = |id: &str| {
        std::fs::read_to_string(logs.path().join(format!("{id}.log"))).unwrap_or_default()
    };
    eventually(|| async {
        let both = log_of("node-1") + &log_of("node-2");
        both.contains("authentication failure")
    })
    .await;
    // node-1 never links to the rogue: it is in the member table (the shared
    // store), but not linked.
    let rogue = eventually_value(|| async {
        let (_, out, _) = confabctl_at(first_http, &["--json", "nodes"]).await;
        let nodes: serde_json::Value = serde_json::from_str(&out).ok()?;
        nodes["nodes"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == "node-2")
            .cloned()
    })
    .await;
    assert_ne!(rogue["connected"], true, "{rogue}");
}

#[tokio::test]
async fn master_keys_come_from_a_file_only_its_owner_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("master-keys");
    std::fs::write(&file, format!("# the master key\n{MASTER_KEYS}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = confab()
        .args(["node", "--data-dir"])
        .arg(dir.path())
        .args(["--jwt-secret", SECRET])
        .env("CONFAB_CRYPTO__KEYS_FILE", &file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    // Mode 600: the node starts on it, and makes no key of its own.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::start_with(
        dir.path(),
        &[("CONFAB_CRYPTO__KEYS_FILE", file.to_str().unwrap())],
    )
    .await;
    Client::as_uid(&node, "vic").await.say("m-1", "你好").await;
    assert!(!dir.path().join("master-keys").exists());
}
