//! The operator conveniences of the binaries, through their command lines:
//! completions and man pages of `confab`, `confab-sim` (and `confabctl`'s in its
//! own tests), durations as people write them, `confab up --json` and the
//! dashboard line, `confabctl watch` against a real node, `confab-sim run
//! --json`, and `confab-bench turns` failing on a broken bound.
//!
//! `confabctl`, `confab-sim` and `confab-bench` are found beside `confab`: a
//! workspace build (or `cargo nextest run -p confab -p confabctl -p confab-sim
//! -p confab-bench`) builds them.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A binary of the workspace, built beside `confab`.
fn sibling(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_confab")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {name}), or run the whole suite (.ci/run)",
        path.display()
    );
    path
}

fn confab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .env_remove("CONFAB_AUTH__JWT_SECRET")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first line of a clap_mangen page after its `Aq` string definition.
fn title_line(page: &str) -> &str {
    page.lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap_or_default()
}

#[test]
fn confab_prints_completions_for_every_shell_and_a_man_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = confab(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["confab", "up", "token", "--restart-window"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = confab(&["man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(title_line(&page).starts_with(".TH confab 1"), "{page}");
    assert!(page.contains("completions"), "{page}");
}

#[test]
fn confab_sim_prints_completions_for_every_shell_and_a_man_page() {
    let sim = sibling("confab-sim");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(&sim)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["confab-sim", "sweep", "replay"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = Command::new(&sim).arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(title_line(&text(&out.stdout)).starts_with(".TH confab-sim 1"));
}

#[test]
fn token_ttls_and_the_restart_window_are_durations_and_bad_ones_are_usage_errors() {
    for ttl in ["1h", "24h", "60s", "90", "1h30m"] {
        let out = confab(&[
            "token",
            "--uid",
            "zoe",
            "--ttl",
            ttl,
            "--jwt-secret",
            SECRET,
        ]);
        assert!(out.status.success(), "--ttl {ttl}: {}", text(&out.stderr));
    }
    let out = confab(&[
        "token",
        "--uid",
        "zoe",
        "--ttl",
        "banana",
        "--jwt-secret",
        SECRET,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--ttl") && err.contains("not a duration"),
        "{err}"
    );

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
    let err = text(&out.stderr);
    assert!(
        err.contains("--restart-window") && err.contains("use s, m, h or d"),
        "{err}"
    );
    assert!(!data.exists(), "nothing was created");
}

/// `confab up --json` prints one JSON line once its nodes are ready: the
/// URLs answer, the tokens work, the secret's file is there; SIGINT stops it
/// cleanly, and nothing else reaches stdout.
#[tokio::test]
async fn up_json_prints_one_line_that_a_script_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let mut child = ChildGuard::new(
        confab_up(1, port, &dir.path().join("data"))
            .arg("--json")
            .env_remove("CONFAB_AUTH__JWT_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdout)
    });
    let (line, mut stdout) = line.await.unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
    let node = &ready["nodes"][0];
    assert_eq!(node["id"], "node-1");
    let http = format!("http://127.0.0.1:{port}");
    assert_eq!(node["http"], http.as_str());
    assert_eq!(node["dashboard"], format!("{http}/dashboard").as_str());
    let ws = node["ws"].as_str().unwrap();
    assert_eq!(ws, format!("ws://127.0.0.1:{port}/v1/ws"));

    assert_eq!(http_get(port, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/dashboard").await.map(|r| r.0), Some(200));
    let secret_file = PathBuf::from(ready["jwt_secret_file"].as_str().unwrap());
    assert!(secret_file.is_file(), "{}", secret_file.display());
    let client = Client::connect(ws, ready["token"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        matches!(client.hello, confab_proto::ServerFrame::Hello { ref uid, .. } if uid == "demo")
    );
    drop(client);
    let admin = ready["admin_token"].as_str().unwrap();
    let status = http_request(port, "GET", "/admin/v1/status", Some(admin), None).await;
    assert_eq!(status.map(|r| r.0), Some(200));

    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        (child.wait().unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(status.success(), "confab up exited with {status}");
    assert_eq!(rest, "", "only the JSON line goes to stdout");
}

/// The text for people names the dashboard with an admin token in its URL.
#[tokio::test]
async fn up_prints_the_dashboard_url_with_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let mut child = ChildGuard::new(
        confab_up(1, port, dir.path())
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let dashboard = tokio::task::spawn_blocking(move || {
        let mut dashboard = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("the ops dashboard:") {
                dashboard = Some(url.trim().to_owned());
            }
            if line.starts_with("Ctrl-C stops") {
                break;
            }
        }
        dashboard
    })
    .await
    .unwrap()
    .expect("confab up printed the dashboard's URL");
    let prefix = format!("http://127.0.0.1:{port}/dashboard#token=");
    let token = dashboard
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{dashboard} is not under {prefix}"));
    let status = http_request(port, "GET", "/admin/v1/nodes", Some(token), None).await;
    assert_eq!(
        status.map(|r| r.0),
        Some(200),
        "the dashboard's token is an admin token"
    );
    let status = tokio::task::spawn_blocking(move || child.stop_with(Signal::SIGINT))
        .await
        .unwrap();
    assert!(status.success(), "confab up exited with {status}");
}

/// `confabctl watch --count 2` against a real node: two plain frames, each
/// naming the node, then exit 0; `--json` gives one object a line.
#[tokio::test]
async fn watch_prints_frames_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_member(dir.path(), &[], &["--node-id", "watched-1"]).await;
    let mut client = Client::as_uid(&node, "watcher").await;
    client.say("m-1", "你好").await;

    let (code, stdout, stderr) =
        confabctl(&node, &["watch", "--count", "2", "--interval", "200ms"]).await;
    assert_eq!(code, 0, "{stderr}");
    let frames: Vec<&str> = stdout
        .split("confabctl watch ")
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(frames.len(), 2, "two frames:\n{stdout}");
    for frame in &frames {
        assert!(frame.contains("watched-1"), "{frame}");
        assert!(frame.contains("(this node)"), "{frame}");
        assert!(frame.contains("ring epoch"), "{frame}");
    }
    assert!(!stdout.contains('\u{1b}'), "no escape codes: {stdout:?}");

    let (code, stdout, stderr) = confabctl(
        &node,
        &["--json", "watch", "--count", "2", "--interval", "200ms"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let frames: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{stdout}");
    for frame in &frames {
        assert_eq!(frame["node"], "watched-1");
        assert_eq!(frame["members"][0]["id"], "watched-1");
    }
    // The second reading has an interval, so rates.
    assert!(
        frames[1]["interval_s"].as_f64().unwrap() > 0.0,
        "{}",
        frames[1]
    );
    node.stop().await;
}

#[test]
fn sim_run_and_sweep_print_one_json_object() {
    let sim = sibling("confab-sim");
    let out = Command::new(&sim)
        .args(["run", "rebalance", "--seed", "42", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(run["scenario"], "rebalance");
    assert_eq!(run["seed"], 42);
    assert_eq!(run["result"], "ok");
    assert_eq!(run["violations"], serde_json::json!([]));
    assert!(run["line"].as_str().unwrap().starts_with("seed=42 trace="));
    assert!(run["turns"]["acked"].as_u64().unwrap() > 0, "{run}");

    let out = Command::new(&sim)
        .args([
            "run",
            "crash",
            "--seed",
            "0",
            "--mutate",
            "ack-before-commit",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(run["result"], "violated");
    assert!(!run["violations"].as_array().unwrap().is_empty());
    assert_eq!(
        run["replay"],
        "confab-sim run crash --seed 0 --mutate ack-before-commit"
    );

    let out = Command::new(&sim)
        .args(["sweep", "rebalance", "--seeds", "0..2", "--quiet", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sweep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(sweep["seeds"], 2);
    assert_eq!(sweep["ok"], 2);
    assert_eq!(sweep["failed"], serde_json::json!([]));
    assert_eq!(sweep["result"], "ok");
}

/// `confab-bench turns` exits 1 and names the bound a run broke; a run within
/// its bounds exits 0.
#[tokio::test]
async fn bench_fails_on_a_broken_bound_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let bench = |prefix: &str, bounds: &[&str]| {
        let mut command = tokio::process::Command::new(sibling("confab-bench"));
        command
            .args(["turns", "--url", &node.ws_url()])
            .args(["--sessions", "2", "--rate", "10", "--duration", "1s"])
            .args(["--warmup", "0s", "--jwt-secret", SECRET])
            .args(["--uid-prefix", prefix])
            .args(bounds);
        command.output()
    };
    let out = bench("strict", &["--max-p99", "1ns"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("is above --max-p99 1ns"), "{err}");
    assert!(
        text(&out.stdout).contains("FAILED"),
        "{}",
        text(&out.stdout)
    );

    let out = bench(
        "easy",
        &["--max-p99", "1h", "--min-throughput", "0.1", "--json"],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failures"], serde_json::json!([]));

    let out = bench("bad", &["--max-p99", "fast"]).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    node.stop().await;
}

/// `confab token --jwt-secret-file` (or `CONFAB_AUTH__JWT_SECRET_FILE`, as a
/// Kubernetes preStop hook has it) signs with the file's secret, which a node
/// given the same secret accepts; a missing file is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reads_its_secret_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt-secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = confab(&[
        "token",
        "--uid",
        "filed",
        "--jwt-secret-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let node = Node::start(&dir.path().join("data")).await;
    let mut client = Client::connect(&node.ws_url(), &token)
        .await
        .expect("the file's token is accepted");
    client.assert_alive().await;
    let out = confab(&[
        "token",
        "--uid",
        "x",
        "--jwt-secret-file",
        "/nonexistent/secret",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/secret"),
        "{}",
        text(&out.stderr)
    );
    node.stop().await;
}
