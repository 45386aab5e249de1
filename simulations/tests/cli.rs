//! confab-sim from the outside: the same seed gives the same last line in
//! another process, another seed another line; failures print their replay
//! command and exit non-zero; traces and timelines are written.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confab-sim"))
        .args(args)
        .output()
        .expect("confab-sim runs")
}

fn last_line(output: &Output) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    stdout.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn the_same_seed_gives_the_same_line_in_another_process_and_another_seed_another() {
    let first = sim(&["run", "rebalance", "--seed", "42"]);
    let again = sim(&["run", "rebalance", "--seed", "42"]);
    let other = sim(&["run", "rebalance", "--seed", "43"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let line = last_line(&first);
    assert!(line.starts_with("seed=42 trace="), "{line}");
    assert!(line.ends_with(" invariants=ok"), "{line}");
    assert_eq!(
        first.stdout, again.stdout,
        "the whole summary, byte for byte"
    );
    let other = last_line(&other);
    assert!(other.starts_with("seed=43 trace="), "{other}");
    assert_ne!(
        line.split(' ').nth(1),
        other.split(' ').nth(1),
        "another trace"
    );
}

#[test]
fn a_violated_run_exits_non_zero_and_prints_how_to_replay_it() {
    let out = sim(&[
        "run",
        "crash",
        "--seed",
        "0",
        "--mutate",
        "ack-before-commit",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        stdout.contains("replay: confab-sim run crash --seed 0 --mutate ack-before-commit"),
        "{stdout}"
    );
    assert!(last_line(&out).ends_with(" invariants=violated"));
}

#[test]
fn replay_writes_the_trace_as_jsonl_and_run_draws_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let svg = dir.path().join("run.svg");
    let out = sim(&[
        "replay",
        "partition",
        "--seed",
        "3",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let run = sim(&[
        "run",
        "partition",
        "--seed",
        "3",
        "--timeline",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(last_line(&out), last_line(&run), "replay is the same run");
    let text = std::fs::read_to_string(&trace).unwrap();
    let steps: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(text.lines().count() as u64, steps, "one line per step");
    for line in text.lines().take(100) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["t"].is_u64() && record["ev"].is_string(), "{line}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("n5"));
}

#[test]
fn sweep_fails_listing_the_failing_seeds_and_shrink_keeps_the_faults_that_matter() {
    let out = sim(&[
        "sweep",
        "crash",
        "--seeds",
        "0..3",
        "--mutate",
        "no-fencing",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("failed seeds: "), "{stdout}");
    let ok = sim(&["sweep", "rebalance", "--seeds", "0..2", "--quiet"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let out = sim(&["shrink", "crash", "--seed", "2", "--mutate", "no-fencing"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let head = stdout.lines().next().unwrap();
    assert!(head.starts_with("shrink: "), "{stdout}");
    let replay = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replay: "))
        .expect("a replay command");
    // The replay command it prints fails the same way.
    let args: Vec<&str> = replay.split(' ').skip(1).collect();
    let again = sim(&args);
    assert_eq!(again.status.code(), Some(1), "{replay}");
    assert_eq!(last_line(&again), stdout.lines().last().unwrap());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = sim(&["run", "no-such-scenario", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("crash"),
        "lists the scenarios"
    );
    let out = sim(&["run", "crash", "--seed", "1", "--mutate", "typo"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-fencing"));
    let out = sim(&["sweep", "crash", "--seeds", "5..5"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sim(&["run", "crash", "--seed", "1", "--faults", "99"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no fault #99"));
}

#[test]
fn a_sweep_on_several_threads_reports_what_one_thread_does() {
    let args = |jobs: &str| {
        let out = sim(&[
            "sweep",
            "crash",
            "--seeds",
            "0..6",
            "--mutate",
            "no-fencing",
            "--quiet",
            "--jobs",
            jobs,
        ]);
        assert_eq!(out.status.code(), Some(1), "no-fencing fails some of 0..6");
        // The wall time differs; everything else is the same.
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout
            .lines()
            .map(|l| l.split(" in ").next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let one = args("1");
    assert!(one.iter().any(|l| l.starts_with("FAILED seed ")), "{one:?}");
    assert_eq!(one, args("3"));
    let out = sim(&["sweep", "crash", "--seeds", "0..2", "--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2), "--jobs 0 is refused");
}
