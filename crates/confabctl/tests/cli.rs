//! `confabctl` through its command line, without a node: the help, the usage
//! errors (exit 2) and an unreachable node (exit 1). Runs against a real node are
//! the end-to-end tests'.

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

/// Runs `confabctl` with a token, at a node that is not there.
fn with_token(args: &[&str]) -> Output {
    let node = format!("http://127.0.0.1:{}", free_port());
    let mut all = vec!["--node", node.as_str(), "--token", "t"];
    all.extend_from_slice(args);
    confabctl(&all)
}

/// A port nothing listens on: bound, then let go.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_every_verb() {
    let output = confabctl(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for verb in [
        "status",
        "policy",
        "canary",
        "dlq",
        "session",
        "ring",
        "nodes",
        "watch",
        "completions",
        "man",
    ] {
        assert!(help.contains(verb), "--help lacks {verb}:\n{help}");
    }
    for option in ["--node", "--token", "--json", "--timeout", "CONFAB_NODE"] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    let sub_verbs = [
        ("policy", &["status", "reload"][..]),
        ("canary", &["set", "status", "rollback", "promote"][..]),
        ("dlq", &["list", "replay"][..]),
        ("session", &["show", "locate"][..]),
    ];
    for (verb, subs) in sub_verbs {
        let output = confabctl(&[verb, "--help"]);
        assert_eq!(output.status.code(), Some(0));
        let help = String::from_utf8_lossy(&output.stdout);
        for sub in subs {
            assert!(help.contains(sub), "{verb} --help lacks {sub}:\n{help}");
        }
    }
}

#[test]
fn help_does_not_show_the_token_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_confabctl"))
        .arg("--help")
        .env("CONFAB_TOKEN", "secret-token-value")
        .output()
        .expect("confabctl runs");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("secret-token-value"));
}

#[test]
fn tails_outside_0_to_9_are_a_usage_error() {
    for tails in ["12", "0,10", "x", "-1"] {
        let output = with_token(&["canary", "set", "v2", "--tails", tails]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "--tails {tails}: {}",
            stderr(&output)
        );
    }
    let output = with_token(&["canary", "set", "v2"]);
    assert_eq!(output.status.code(), Some(2), "--tails is required");
}

#[test]
fn dlq_replay_needs_exactly_one_of_id_and_all() {
    let neither = with_token(&["dlq", "replay"]);
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));
    let both = with_token(&["dlq", "replay", "7", "--all"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[test]
fn no_token_is_a_usage_error_naming_both_sources() {
    let output = confabctl(&["--node", "http://127.0.0.1:1", "status"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("--token") && err.contains("CONFAB_TOKEN"),
        "{err}"
    );
}

#[test]
fn a_node_url_that_is_not_http_or_https_is_a_usage_error() {
    let output = confabctl(&["--node", "ftp://127.0.0.1:1", "--token", "t", "status"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("http and https"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unreachable_node_fails_with_a_hint() {
    for verb in [
        &["status"][..],
        &["dlq", "list"][..],
        &["session", "show", "alice"][..],
    ] {
        let output = with_token(verb);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{verb:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(
            err.starts_with("error: cannot reach http://127.0.0.1:"),
            "{err}"
        );
        assert!(
            err.contains("is a node running? (--node / CONFAB_NODE)"),
            "{err}"
        );
    }
}

#[test]
fn the_node_can_come_from_the_environment() {
    let node = format!("http://127.0.0.1:{}", free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_confabctl"))
        .args(["status"])
        .env("CONFAB_NODE", &node)
        .env("CONFAB_TOKEN", "t")
        .output()
        .expect("confabctl runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("cannot reach {node}")));
}
