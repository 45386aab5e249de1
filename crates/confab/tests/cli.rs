//! The `confab` command line: token, version, config errors and `up`'s refusals.

mod common;

use common::*;
use std::process::Command;

fn confab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .env_remove("CONFAB_AUTH__JWT_SECRET")
        .output()
        .unwrap()
}

#[test]
fn version_is_printed() {
    let out = confab(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("confab 0."));
}

#[tokio::test]
async fn a_printed_token_opens_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let out = confab(&[
        "token",
        "--uid",
        "zoe",
        "--ttl",
        "10m",
        "--jwt-secret",
        SECRET,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let client = Client::connect(&node.ws_url(), token.trim()).await.unwrap();
    assert!(
        matches!(client.hello, confab_proto::ServerFrame::Hello { ref uid, .. } if uid == "zoe")
    );
}

#[test]
fn a_token_or_a_window_of_no_time_is_a_usage_error() {
    for args in [
        &[
            "token",
            "--uid",
            "zoe",
            "--ttl",
            "0s",
            "--jwt-secret",
            SECRET,
        ][..],
        &[
            "token",
            "--uid",
            "zoe",
            "--ttl",
            "500ms",
            "--jwt-secret",
            SECRET,
        ][..],
        &["up", "--restart-window", "0"][..],
    ] {
        let out = confab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("too short: give at least 1s"), "{err}");
        assert!(out.stdout.is_empty(), "no token printed");
    }
}

#[test]
fn token_without_a_secret_says_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = confab(&[
        "token",
        "--uid",
        "zoe",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no jwt secret") && err.contains("confab up"),
        "{err}"
    );
}

#[test]
fn up_refuses_a_node_count_out_of_range_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    for nodes in ["0", "17"] {
        let out = confab(&["up", "--nodes", nodes, "--data-dir", data.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "--nodes {nodes}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--nodes must be 1 to 16"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!data.exists(), "nothing was created");
}

#[test]
fn up_refuses_a_bad_restart_window_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-created");
    let out = confab(&[
        "up",
        "--restart-window",
        "5x",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--restart-window") && stderr.contains("use s, m, h or d"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created");
}

#[test]
fn a_bad_config_value_is_named_and_the_node_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[runtime]\nmax_inflight_turns = 0\n").unwrap();
    let out = confab(&[
        "node",
        "--config",
        file.to_str().unwrap(),
        "--jwt-secret",
        SECRET,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runtime.max_inflight_turns"));
}
