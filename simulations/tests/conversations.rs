//! Conversation scripts played by simulated users: the shipped scenario passes
//! with every script played to its end, a wrong expectation is caught as
//! `conversation-script` with its replay command, an `http` action (which the
//! simulator cannot call) takes its flow's failure branch, and the same seed
//! gives the same trace.

use confab_sim::scenario::Scenario;
use confab_sim::{RunOptions, run, summary};
use std::path::Path;
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

/// A small scenario of `sessions` users playing the scripts in `scripts`
/// against the flows in `flows` (relative to the workspace root unless absolute).
fn scenario_text(scripts: &str, flows: &str, sessions: u32) -> String {
    format!(
        "nodes = 3\nsessions = {sessions}\nduration_s = 6\nsettle_s = 10\n\
         [workload]\nthink_ms = [100, 400]\nconversations = '{scripts}'\nflows = '{flows}'\n\
         [[faults]]\nkind = \"crash\"\nnode = \"n2\"\nat_s = 1\nrestart_after_s = 1\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_conversations_scenario_passes_with_every_script_played_to_its_end() {
    let scenario = Scenario::load("conversations").unwrap();
    let scripts = scenario.conversations.as_ref().expect("scripts loaded");
    assert!(scripts.scripts().len() >= 8);
    assert_eq!(scenario.sessions as usize % scripts.scripts().len(), 0);
    for seed in 0..5 {
        let outcome = run(
            &scenario,
            RunOptions {
                seed,
                ..RunOptions::default()
            },
        )
        .unwrap();
        let text = summary(&scenario, seed, None, None, &outcome);
        assert_eq!(outcome.checker.violations(), [], "{text}");
        assert_eq!(
            outcome.stats.scripts_finished,
            u64::from(scenario.sessions),
            "{text}"
        );
        let turns: usize = (0..scenario.sessions)
            .map(|s| scripts.script_of(s).script.turns.len())
            .sum();
        assert!(outcome.stats.script_answers >= turns as u64, "{text}");
        assert!(outcome.stats.script_refusals > 0, "{text}");
    }
}

#[test]
fn a_wrong_expectation_is_a_violation_with_its_replay_command() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    write(
        &scripts.join("wrong.toml"),
        "uid = \"1\"\n\
         [[turns]]\nsay = \"39码黑色有货吗\"\nintent = \"stock_query\"\nreply = \"^黑色 39码 有货\"\n\
         [[turns]]\nsay = \"换成白色的\"\nintent = \"stock_query\"\nreply = \"没货了\"\n",
    );
    let scenario = dir.path().join("wrong.toml");
    write(
        &scenario,
        &scenario_text(scripts.to_str().unwrap(), "config/flows", 4),
    );
    let out = sim(&["run", scenario.to_str().unwrap(), "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("conversation-script")
            && stdout.contains("wrong.toml: turn 2 (\"换成白色的\")")
            && stdout.contains("does not match \"没货了\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("turn 1 "),
        "the first turn holds: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "replay: confab-sim run {} --seed 3",
            scenario.display()
        )),
        "the replay command names the file: {stdout}"
    );
    assert!(last_line(&out).ends_with(" invariants=violated"));
}

#[test]
fn an_http_action_fails_in_the_simulator_and_its_flow_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = confab_sim::conversations::resolve("config/flows");
    let flows = dir.path().join("flows");
    for file in ["filter.toml", "v1/policy.toml", "v1/common.toml"] {
        write(
            &flows.join(file),
            &std::fs::read_to_string(shipped.join(file)).unwrap(),
        );
    }
    let lottery = std::fs::read_to_string(shipped.join("v1/lottery.toml")).unwrap();
    let builtin = "kind = \"builtin\"\nbuiltin = \"lottery_draw\"";
    assert!(lottery.contains(builtin), "the shipped lottery changed");
    let http = "kind = \"http\"\nurl = \"http://prizes.invalid/v1/draw\"";
    write(
        &flows.join("v1/lottery.toml"),
        &lottery.replace(builtin, http),
    );
    let scripts = dir.path().join("scripts");
    write(
        &scripts.join("draw.toml"),
        "uid = \"1\"\n\
         [[turns]]\nsay = \"我要抽奖\"\nintent = \"lottery_draw\"\n\
         [[turns]]\nsay = \"2号\"\nreply = \"确认\"\nslots = { box = \"2\" }\n\
         [[turns]]\nsay = \"是\"\nreply = \"我们处理后会为您补发\"\nabsent = [\"box\"]\n",
    );
    let text = scenario_text(scripts.to_str().unwrap(), flows.to_str().unwrap(), 3);
    let scenario = Scenario::parse(&text, "http").unwrap();
    let outcome = run(
        &scenario,
        RunOptions {
            seed: 1,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let text = summary(&scenario, 1, None, None, &outcome);
    assert_eq!(outcome.checker.violations(), [], "{text}");
    assert_eq!(outcome.stats.scripts_finished, 3, "{text}");
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let first = sim(&["run", "conversations", "--seed", "11"]);
    let again = sim(&["run", "conversations", "--seed", "11"]);
    let other = sim(&["run", "conversations", "--seed", "12"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert_eq!(
        first.stdout, again.stdout,
        "the whole summary, byte for byte"
    );
    let trace = |out: &Output| last_line(out).split(' ').nth(1).unwrap().to_owned();
    assert_ne!(trace(&first), trace(&other));
}

#[test]
fn a_scenario_naming_a_missing_dir_is_refused_naming_it() {
    let text = scenario_text("config/no-such-scripts", "config/flows", 8);
    let err = Scenario::parse(&text, "x").unwrap_err();
    assert!(
        err.contains("workload.conversations") && err.contains("config/no-such-scripts"),
        "{err}"
    );
    let out = sim(&["run", "/no/such/scenario.toml", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(2));
}
