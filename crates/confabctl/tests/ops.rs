//! `confabctl`'s operator conveniences through its command line, without a
//! node: shell completions, the man page, durations as people write them, and
//! `watch` at a node that is not there. `watch` against a real node is in
//! crates/confab/tests/cli_ops.rs, where a node can be started.

use std::net::TcpListener;
use std::process::{Command, Output};

/// Runs `confabctl` with `args`, and with no `CONFAB_*` from the caller's shell.
fn confabctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confabctl"))
        .args(args)
        .env_remove("CONFAB_NODE")
        .env_remove("CONFAB_TOKEN")
        .output()
        .expect("confabctl runs")
}

/// Runs `confabctl` with a token, at `node`.
fn at(node: &str, args: &[&str]) -> Output {
    let mut all = vec!["--node", node, "--token", "t"];
    all.extend_from_slice(args);
    confabctl(&all)
}

/// A URL nothing listens on: a port bound, then let go.
fn nowhere() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn completions_for_every_shell_name_the_verbs_and_need_no_token() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = confabctl(&["completions", shell]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shell}: {}",
            stderr(&output)
        );
        let script = stdout(&output);
        for word in [
            "confabctl",
            "drain",
            "watch",
            "stats",
            "deadline",
            "--timeout",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let output = confabctl(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("bash"), "{}", stderr(&output));
}

#[test]
fn the_man_page_is_roff_and_names_the_verbs() {
    let output = confabctl(&["man"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = stdout(&output);
    // clap_mangen opens with the `Aq` string's definition (`.ie`/`.el`), then
    // the title line.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap_or_default();
    assert!(first.starts_with(".TH confabctl 1"), "{first}");
    assert!(page.contains(".SH NAME"), "{page}");
    for verb in ["watch", "nodes", "stats", "completions"] {
        assert!(page.contains(verb), "the man page lacks {verb}");
    }
}

#[test]
fn timeout_takes_a_duration_and_refuses_anything_else() {
    // A unit is required; the request then fails for want of a node (1), not
    // for the flag (2).
    let node = nowhere();
    let ok = at(&node, &["--timeout", "2s", "status"]);
    assert_eq!(ok.status.code(), Some(1), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("cannot reach"), "{}", stderr(&ok));
    for bad in ["banana", "5", "0s", "11m"] {
        let output = at(&node, &["--timeout", bad, "status"]);
        assert_eq!(output.status.code(), Some(2), "--timeout {bad}");
        let err = stderr(&output);
        assert!(err.contains("--timeout"), "{err}");
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    let err = stderr(&at(&node, &["--timeout", "banana", "status"]));
    assert!(
        err.contains("not a duration") && err.contains("5s"),
        "{err}"
    );
}

#[test]
fn the_old_timeout_in_milliseconds_still_works_but_not_with_the_new_one() {
    let node = nowhere();
    let old = at(&node, &["--timeout-ms", "2000", "status"]);
    assert_eq!(old.status.code(), Some(1), "{}", stderr(&old));
    let both = at(
        &node,
        &["--timeout", "2s", "--timeout-ms", "2000", "status"],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

#[test]
fn a_node_that_never_answers_times_out_after_the_given_duration() {
    // Connections to a listener that never accepts complete (the kernel's
    // backlog) and then hear nothing: only the timeout ends the request.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = format!("http://{}", silent.local_addr().unwrap());
    let output = at(&node, &["--timeout", "300ms", "status"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("no answer from") && err.contains("within 300ms"),
        "{err}"
    );
    assert!(err.contains("(--timeout)"), "{err}");
}

#[test]
fn drain_waits_for_a_duration_and_keeps_its_old_flag() {
    let node = nowhere();
    for args in [
        &["nodes", "drain", "node-2", "--wait", "30s"][..],
        &["nodes", "drain", "node-2", "--wait-s", "30"][..],
    ] {
        let output = at(&node, args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let bad = at(&node, &["nodes", "drain", "node-2", "--wait", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let both = at(
        &node,
        &["nodes", "drain", "node-2", "--wait", "1m", "--wait-s", "5"],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[test]
fn watch_at_no_node_prints_its_frames_with_the_error_then_exits_1() {
    let node = nowhere();
    let output = at(&node, &["watch", "--count", "2", "--interval", "100ms"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let frames = stdout(&output);
    assert_eq!(
        frames.matches("confabctl watch ").count(),
        2,
        "two frames:\n{frames}"
    );
    assert_eq!(frames.matches("error: cannot reach").count(), 2, "{frames}");
    assert!(!frames.contains('\u{1b}'), "no escape codes:\n{frames:?}");
    assert!(
        stderr(&output).contains("2 of 2 readings could not reach the node"),
        "{}",
        stderr(&output)
    );
    // As JSON: one object a line, each naming the error.
    let output = at(&node, &["--json", "watch", "--once"]);
    assert_eq!(output.status.code(), Some(1));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let frame: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert!(frame["error"].as_str().unwrap().contains("cannot reach"));
}

#[test]
fn stats_takes_a_deadline_of_1ms_to_10s() {
    let node = nowhere();
    let ok = at(&node, &["stats", "--deadline", "500ms"]);
    assert_eq!(ok.status.code(), Some(1), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("cannot reach"), "{}", stderr(&ok));
    for bad in ["11s", "0s", "soon", "5"] {
        let output = at(&node, &["stats", "--deadline", bad]);
        assert_eq!(output.status.code(), Some(2), "--deadline {bad}");
        assert!(
            stderr(&output).contains("--deadline"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn watch_refuses_bad_flags() {
    let node = nowhere();
    for args in [
        &["watch", "--once", "--count", "2"][..],
        &["watch", "--count", "0"][..],
        &["watch", "--interval", "10ms"][..],
        &["watch", "--interval", "often"][..],
    ] {
        let output = at(&node, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
