//! Each planted bug is caught by a shipped scenario within 100 seeds: the
//! checkers can fail.

use confab_core::mutation::Mutation;
use confab_sim::scenario::Scenario;
use confab_sim::{RunOptions, run};

/// The first (scenario, seed, invariant) that catches `mutation`.
fn caught(mutation: Mutation) -> Option<(String, u64, &'static str)> {
    let scenarios: Vec<Scenario> = ["crash", "partition", "rebalance", "slow-storage", "actions"]
        .iter()
        .map(|name| Scenario::load(name).unwrap())
        .collect();
    for seed in 0..100 {
        for scenario in &scenarios {
            let options = RunOptions {
                seed,
                mutate: Some(mutation),
                ..RunOptions::default()
            };
            let outcome = run(scenario, options).unwrap();
            if let Some(first) = outcome.checker.violations().first() {
                return Some((scenario.name.clone(), seed, first.invariant));
            }
        }
    }
    None
}

#[test]
fn no_fencing_is_caught_as_two_active_owners() {
    let (scenario, seed, invariant) =
        caught(Mutation::NoFencing).expect("no-fencing is never caught");
    assert_eq!(invariant, "one-active-owner", "{scenario} seed {seed}");
}

#[test]
fn ack_before_commit_is_caught_as_an_acked_turn_not_durable() {
    let (scenario, seed, invariant) =
        caught(Mutation::AckBeforeCommit).expect("ack-before-commit is never caught");
    assert_eq!(invariant, "acked-turn-durable", "{scenario} seed {seed}");
}

#[test]
fn drop_handoff_buffer_is_caught_as_turns_vanishing() {
    let (scenario, seed, invariant) =
        caught(Mutation::DropHandoffBuffer).expect("drop-handoff-buffer is never caught");
    assert_eq!(invariant, "turns-conserved", "{scenario} seed {seed}");
}

#[test]
fn route_before_expect_is_caught_as_a_turn_overtaking_its_announcement() {
    let (scenario, seed, invariant) =
        caught(Mutation::RouteBeforeExpect).expect("route-before-expect is never caught");
    assert_eq!(invariant, "announce-before-route", "{scenario} seed {seed}");
}

#[test]
fn claim_off_ring_is_caught_as_two_active_owners() {
    let (scenario, seed, invariant) =
        caught(Mutation::ClaimOffRing).expect("claim-off-ring is never caught");
    assert_eq!(invariant, "one-active-owner", "{scenario} seed {seed}");
}

#[test]
fn stale_heartbeats_is_caught_as_a_down_without_fresh_evidence() {
    let (scenario, seed, invariant) =
        caught(Mutation::StaleHeartbeats).expect("stale-heartbeats is never caught");
    // Heartbeats from before a pause count as fresh: a node proposes a member
    // down whose heartbeat was due (a pause), or while it hears no majority
    // (heard before a partition).
    assert!(
        ["down-from-fresh-evidence", "down-from-majority"].contains(&invariant),
        "{scenario} seed {seed}: {invariant}"
    );
}

#[test]
fn action_rerun_is_caught_as_an_action_run_after_its_recorded_success() {
    let (scenario, seed, invariant) =
        caught(Mutation::ActionRerun).expect("action-rerun is never caught");
    assert_eq!(invariant, "action-once", "{scenario} seed {seed}");
}

#[test]
fn read_from_memory_is_caught_as_a_hello_below_an_acked_seq() {
    let (scenario, seed, invariant) =
        caught(Mutation::ReadFromMemory).expect("read-from-memory is never caught");
    assert_eq!(invariant, "read-your-acks", "{scenario} seed {seed}");
}

#[test]
fn socket_is_link_is_caught_as_a_node_up_without_hearing_the_others() {
    let (scenario, seed, invariant) =
        caught(Mutation::SocketIsLink).expect("socket-is-link is never caught");
    assert_eq!(invariant, "up-when-heard", "{scenario} seed {seed}");
}

#[test]
fn no_quorum_is_caught_as_a_minority_declaring_members_down() {
    let (scenario, seed, invariant) =
        caught(Mutation::NoQuorum).expect("no-quorum is never caught");
    assert_eq!(invariant, "down-from-majority", "{scenario} seed {seed}");
}

#[test]
fn dial_seeds_only_is_caught_as_members_left_unlinked() {
    let (scenario, seed, invariant) =
        caught(Mutation::DialSeedsOnly).expect("dial-seeds-only is never caught");
    assert_eq!(invariant, "links-healed", "{scenario} seed {seed}");
}

#[test]
fn the_correct_code_passes_the_seeds_that_catch_the_bugs() {
    for mutation in Mutation::ALL {
        let (scenario, seed, _) = caught(mutation).unwrap();
        let scenario = Scenario::load(&scenario).unwrap();
        let outcome = run(
            &scenario,
            RunOptions {
                seed,
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            outcome.checker.violations(),
            [],
            "{} seed {seed} fails without {}",
            scenario.name,
            mutation.name()
        );
    }
}
