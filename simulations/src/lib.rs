//! confab-sim: the deterministic simulator.
//!
//! One seed decides everything: the fault schedule, the network's delays and
//! losses, the stores' latencies and errors, the users' timing, and the order of
//! events due at the same millisecond. Several nodes run confab's real core
//! (membership, ring, routing, handoff, session) and dialog code on one thread,
//! over a simulated network and simulated MySQL and Redis. Invariants are
//! checked as the run goes, liveness once the faults have stopped. A run's last
//! line is `seed=N trace=<hash> invariants=ok|violated`, the same for the same
//! seed in any process. With `[workload] conversations` and `flows`, the users
//! play testers' conversation scripts against a flows dir and every answer is
//! checked against its turn ([`conversations`]). See docs/simulation.md.

mod by_session;
pub mod check;
pub mod conversations;
pub mod faults;
pub mod rng;
pub mod scenario;
pub use confab_timeline as timeline;
pub mod trace;
pub mod world;

use confab_core::mutation::{self, Mutation};
use scenario::Scenario;
use std::fmt::Write as _;
use world::{Outcome, World};

/// How to run one seed.
#[derive(Default)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// A planted bug to switch on.
    pub mutate: Option<Mutation>,
    /// Keep only these faults of the schedule.
    pub only_faults: Option<Vec<usize>>,
    /// Write the trace as JSONL here.
    pub trace_out: Option<Box<dyn std::io::Write>>,
}

/// Runs one seed of a scenario.
pub fn run(scenario: &Scenario, options: RunOptions) -> Result<Outcome, String> {
    run_with(scenario, options, World::run)
}

/// [`run`] for a process that exits after the run (`confab-sim run`): the
/// world's memory is left for the exit to return whole
/// ([`World::run_then_exit`]).
pub fn run_then_exit(scenario: &Scenario, options: RunOptions) -> Result<Outcome, String> {
    run_with(scenario, options, World::run_then_exit)
}

fn run_with(
    scenario: &Scenario,
    options: RunOptions,
    run: fn(World) -> Outcome,
) -> Result<Outcome, String> {
    let world = World::new(
        scenario,
        options.seed,
        options.only_faults.as_deref(),
        options.trace_out,
    )?;
    /// Switches the mutation off again however the run ends.
    struct Switched;
    impl Drop for Switched {
        fn drop(&mut self) {
            mutation::set(None);
        }
    }
    mutation::set(options.mutate);
    let _off = Switched;
    Ok(run(world))
}

/// The command that replays a run; `scenario` as the command line named it.
pub fn replay_command(
    scenario: &str,
    seed: u64,
    mutate: Option<Mutation>,
    only: Option<&[usize]>,
) -> String {
    let mut command = format!("confab-sim run {scenario} --seed {seed}");
    if let Some(m) = mutate {
        let _ = write!(command, " --mutate {}", m.name());
    }
    if let Some(only) = only {
        let list: Vec<String> = only.iter().map(usize::to_string).collect();
        let _ = write!(command, " --faults {}", list.join(","));
    }
    command
}

/// The last line of a run.
pub fn result_line(seed: u64, outcome: &Outcome) -> String {
    let verdict = if outcome.checker.count() == 0 {
        "ok"
    } else {
        "violated"
    };
    format!("seed={seed} trace={} invariants={verdict}", outcome.trace)
}

/// A run's summary: what ran, what happened, what broke, and on the last
/// line the result. Deterministic: the same seed gives the same text.
pub fn summary(
    scenario: &Scenario,
    options_seed: u64,
    mutate: Option<Mutation>,
    only: Option<&[usize]>,
    outcome: &Outcome,
) -> String {
    let mut out = String::new();
    let s = &outcome.stats;
    let _ = writeln!(
        out,
        "scenario {} seed {}{}: {} nodes, {} sessions, {:.1} s simulated ({} steps)",
        scenario.name,
        options_seed,
        mutate
            .map(|m| format!(" mutate {}", m.name()))
            .unwrap_or_default(),
        scenario.nodes,
        scenario.sessions,
        outcome.simulated_ms as f64 / 1000.0,
        outcome.steps,
    );
    let faults: Vec<String> = outcome
        .timeline
        .faults
        .iter()
        .map(|f| {
            format!(
                "#{} {} at {:.1}s",
                f.index,
                f.label,
                f.from_ms as f64 / 1000.0
            )
        })
        .collect();
    let faults = if faults.is_empty() {
        "none".to_owned()
    } else {
        faults.join("; ")
    };
    let _ = writeln!(
        out,
        "faults: {faults}; liveness from {:.1}s",
        outcome.timeline.faults_end_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "turns: {} acked of {} says; {} unavailable, {} overloaded, {} user timeouts; {} commits, {} fenced writes, {} refused claims",
        s.acked,
        s.says,
        s.unavailable,
        s.overloaded,
        s.timeouts,
        s.commits,
        s.fenced_writes,
        s.refused_claims
    );
    let _ = writeln!(
        out,
        "stores: {} loads ({} with a Redis prefix), {} Redis bypasses; network lost {} messages; final epoch {}",
        s.loads, s.redis_hits, s.redis_bypass, s.lost, s.epoch
    );
    let _ = writeln!(
        out,
        "links: {} made, {} reset; {} messages between nodes not sent for want of a link",
        s.links_made, s.links_reset, s.unlinked
    );
    let _ = writeln!(
        out,
        "sessions: {} passivated; {} snapshots stored, {} loads started from one",
        s.passivated, s.snapshots, s.snapshot_loads
    );
    let _ = writeln!(
        out,
        "actions: {} run, {} dead-lettered, {} found pending at a load and run again",
        s.actions_run, s.dead_letters, s.actions_resumed
    );
    let m = &s.migrations;
    let a = &s.migrations_after_faults;
    let _ = writeln!(
        out,
        "migrations: {} finished (p50 {} ms, p90 {} ms, p99 {} ms, max {} ms), {} unfinished; after the faults: {} (max {} ms, limit {} ms)",
        m.finished.len(),
        m.quantile(0.5),
        m.quantile(0.9),
        m.quantile(0.99),
        m.max(),
        m.unfinished,
        a.finished.len(),
        a.max(),
        world::MIGRATION_MAX_MS,
    );
    if let Some(c) = &scenario.conversations {
        let scripts = c.scripts().len();
        let _ = writeln!(
            out,
            "conversations: {} users on {scripts} script{}, {} finished theirs; {} answers checked against their turns ({} refusals by the input filter)",
            scenario.sessions,
            if scripts == 1 { "" } else { "s" },
            s.scripts_finished,
            s.script_answers,
            s.script_refusals,
        );
    }
    let violations = outcome.checker.violations();
    if violations.is_empty() {
        let _ = writeln!(out, "violations: none");
    } else {
        let _ = writeln!(out, "violations: {}", outcome.checker.count());
        for v in violations.iter().take(20) {
            let node = v.node.map(|n| format!(" n{}", n + 1)).unwrap_or_default();
            let _ = writeln!(
                out,
                "  [{:.3}s] {}{}: {}",
                v.at_ms as f64 / 1000.0,
                v.invariant,
                node,
                v.detail
            );
        }
        let _ = writeln!(
            out,
            "replay: {}",
            replay_command(&scenario.source, options_seed, mutate, only)
        );
    }
    out.push_str(&result_line(options_seed, outcome));
    out
}

/// What `shrink` found.
pub struct Shrunk {
    /// Faults in the seed's full schedule.
    pub from: usize,
    /// The smallest set that still fails.
    pub kept: Vec<usize>,
    /// Its run.
    pub outcome: Outcome,
}

/// From a failing seed, removes faults one at a time while the run still
/// fails, and returns the smallest schedule found. `progress` is told each try.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    mutate: Option<Mutation>,
    mut progress: impl FnMut(&[usize], bool),
) -> Result<Shrunk, String> {
    let attempt = |only: Option<Vec<usize>>| {
        run(
            scenario,
            RunOptions {
                seed,
                mutate,
                only_faults: only,
                trace_out: None,
            },
        )
    };
    let mut outcome = attempt(None)?;
    if outcome.checker.count() == 0 {
        return Err(format!("seed {seed} passes: nothing to shrink"));
    }
    let mut kept: Vec<usize> = outcome.timeline.faults.iter().map(|f| f.index).collect();
    let from = kept.len();
    let mut i = 0;
    while i < kept.len() {
        let mut fewer = kept.clone();
        fewer.remove(i);
        let tried = attempt(Some(fewer.clone()))?;
        let fails = tried.checker.count() > 0;
        progress(&fewer, fails);
        if fails {
            kept = fewer;
            outcome = tried;
        } else {
            i += 1;
        }
    }
    Ok(Shrunk {
        from,
        kept,
        outcome,
    })
}
