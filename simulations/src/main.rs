//! `confab-sim`: run, sweep, replay and shrink seeded whole-cluster scenarios.
//! `run --json` and `sweep --json` print one JSON object instead of the text;
//! `completions SHELL` and `man` print what clap derives from [`Cli`].

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use confab_core::mutation::Mutation;
use confab_sim::scenario::Scenario;
use confab_sim::world::Outcome;
use confab_sim::{RunOptions, replay_command, result_line, shrink, summary};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

// The simulator allocates and frees small objects at a high rate (events,
// messages, session logs); mimalloc does that much faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "confab-sim",
    version,
    about = "confab's deterministic cluster simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one seed; the last line is `seed=N trace=<hash> invariants=ok|violated`.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// The seed (a random one, printed, if left out).
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object (scenario, seed, result, violations, figures)
        /// instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Runs many seeds, with a progress bar; fails if any seed fails.
    Sweep {
        /// A scenario name (from simulations/scenarios/) or a .toml path.
        scenario: String,
        /// Seeds `A..B` (B excluded).
        #[arg(
            long,
            conflicts_with = "seeds_file",
            required_unless_present = "seeds_file"
        )]
        seeds: Option<String>,
        /// A file of seeds, one per line (`#` starts a comment), as in
        /// simulations/regressions/.
        #[arg(long)]
        seeds_file: Option<PathBuf>,
        /// Switch on a planted bug.
        #[arg(long, value_parser = parse_mutation)]
        mutate: Option<Mutation>,
        /// Run this percentage of the seeds twice and compare their traces.
        #[arg(long, default_value_t = 5)]
        twice_percent: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Seeds run at once, each on a thread of its own (1 to 64). The
        /// output is the same for any number: failures are listed in seed
        /// order.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        /// Print one JSON object (scenario, seeds, failed seeds with their
        /// replay commands, figures) instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Runs one seed and writes its whole trace as JSONL.
    Replay {
        #[command(flatten)]
        run: RunArgs,
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Where to write the trace.
        #[arg(long)]
        trace: PathBuf,
    },
    /// From a failing seed, removes faults one at a time and keeps the smallest
    /// schedule that still fails.
    Shrink {
        /// A scenario name or a .toml path.
        scenario: String,
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        /// Switch on a planted bug.
        #[arg(long, value_parser = parse_mutation)]
        mutate: Option<Mutation>,
        /// Draw the smallest failing run to this SVG file.
        #[arg(long)]
        timeline: Option<PathBuf>,
    },
    /// Lists the shipped scenarios.
    List,
    /// Print a completion script for SHELL: bash, zsh, fish, elvish, powershell
    /// (`source <(confab-sim completions bash)`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print confab-sim's man page (roff) to stdout: `confab-sim man > confab-sim.1`.
    Man,
}

#[derive(Args)]
struct RunArgs {
    /// A scenario name (from simulations/scenarios/) or a .toml path.
    scenario: String,
    /// Switch on a planted bug: no-fencing, ack-before-commit, drop-handoff-buffer.
    #[arg(long, value_parser = parse_mutation)]
    mutate: Option<Mutation>,
    /// Keep only these faults of the seed's schedule (indexes, as `shrink` prints).
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<usize>>,
    /// Draw the run to this SVG file.
    #[arg(long)]
    timeline: Option<PathBuf>,
}

fn parse_mutation(name: &str) -> Result<Mutation, String> {
    Mutation::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
        format!("no mutation {name:?} (known: {})", known.join(", "))
    })
}

fn main() -> ExitCode {
    // A run's memory only grows (session logs, states); with transparent huge
    // pages the kernel zeroes 2 MiB at each first touch, which perf showed as
    // 40 % of a large run. Ordinary pages are faster here, and the hint is
    // harmless where it is not supported.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn execute(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run { run, seed, json } => {
            let seed = seed.unwrap_or_else(random_seed);
            one(&run, seed, None, json)
        }
        Command::Replay { run, seed, trace } => one(&run, seed, Some(&trace), false),
        Command::Sweep {
            scenario,
            seeds,
            seeds_file,
            mutate,
            twice_percent,
            quiet,
            jobs,
            json,
        } => {
            let (seeds, seeds_from) = match (seeds, seeds_file) {
                (Some(range), _) => (parse_range(&range)?, range),
                (None, Some(file)) => (read_seeds(&file)?, file.display().to_string()),
                (None, None) => return Err("give --seeds A..B or --seeds-file FILE".into()),
            };
            let how = SweepHow {
                mutate,
                twice_percent,
                quiet,
                jobs: usize::from(jobs),
                json,
            };
            sweep(&load(&scenario)?, &seeds, &seeds_from, how)
        }
        Command::Shrink {
            scenario,
            seed,
            mutate,
            timeline,
        } => {
            let scenario = load(&scenario)?;
            let shrunk = shrink(&scenario, seed, mutate, |kept, fails| {
                let verdict = if fails { "still fails" } else { "passes" };
                eprintln!("shrink: faults {kept:?}: {verdict}");
            })?;
            let only = (shrunk.kept.len() < shrunk.from).then_some(shrunk.kept.as_slice());
            if let Some(path) = &timeline {
                write_timeline(path, &shrunk.outcome.timeline)?;
            }
            println!(
                "shrink: {} faults -> {}: the smallest schedule that still fails",
                shrunk.from,
                shrunk.kept.len()
            );
            println!(
                "{}",
                summary(&scenario, seed, mutate, only, &shrunk.outcome)
            );
            Ok(ExitCode::from(1))
        }
        Command::List => {
            for name in Scenario::shipped() {
                let scenario = load(&name)?;
                println!("{name:<16} {}", scenario.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "confab-sim", &mut script);
            print_bytes(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| format!("cannot render the man page: {e}"))?;
            print_bytes(&page)
        }
    }
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<ExitCode, String> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn load(name: &str) -> Result<Scenario, String> {
    Scenario::load(name).map_err(|e| e.to_string())
}

fn one(args: &RunArgs, seed: u64, trace: Option<&Path>, json: bool) -> Result<ExitCode, String> {
    let scenario = load(&args.scenario)?;
    let trace_out: Option<Box<dyn std::io::Write>> = match trace {
        Some(path) => {
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(Box::new(std::io::BufWriter::new(file)))
        }
        None => None,
    };
    let started = Instant::now();
    let outcome = confab_sim::run_then_exit(
        &scenario,
        RunOptions {
            seed,
            mutate: args.mutate,
            only_faults: args.faults.clone(),
            trace_out,
        },
    )?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(e) = &outcome.trace_error {
        return Err(format!("writing the trace: {e}"));
    }
    if let Some(path) = &args.timeline {
        write_timeline(path, &outcome.timeline)?;
    }
    eprintln!(
        "wall {wall:.2} s: {:.0} simulated seconds per second, {:.0} steps per second",
        outcome.simulated_ms as f64 / 1000.0 / wall.max(1e-9),
        outcome.steps as f64 / wall.max(1e-9)
    );
    let only = args.faults.as_deref();
    if json {
        let report = run_json(&scenario, seed, args.mutate, only, &outcome, wall);
        println!("{report}");
    } else {
        println!("{}", summary(&scenario, seed, args.mutate, only, &outcome));
    }
    Ok(if outcome.checker.count() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `run --json`: the run as one JSON object, with the same figures as
/// [`summary`] and the same last line (`result_line`).
fn run_json(
    scenario: &Scenario,
    seed: u64,
    mutate: Option<Mutation>,
    only: Option<&[usize]>,
    outcome: &Outcome,
    wall_s: f64,
) -> serde_json::Value {
    let s = &outcome.stats;
    let migrations = |d: &confab_sim::check::Distribution| {
        json!({
            "finished": d.finished.len(),
            "unfinished": d.unfinished,
            "p50_ms": d.quantile(0.5),
            "p90_ms": d.quantile(0.9),
            "p99_ms": d.quantile(0.99),
            "max_ms": d.max(),
        })
    };
    let violations: Vec<serde_json::Value> = outcome
        .checker
        .violations()
        .iter()
        .map(|v| {
            json!({
                "at_ms": v.at_ms,
                "invariant": v.invariant,
                "node": v.node.map(|n| format!("n{}", n + 1)),
                "detail": v.detail,
            })
        })
        .collect();
    let faults: Vec<serde_json::Value> = outcome
        .timeline
        .faults
        .iter()
        .map(|f| json!({ "index": f.index, "label": f.label, "from_ms": f.from_ms }))
        .collect();
    let ok = outcome.checker.count() == 0;
    json!({
        "scenario": scenario.name,
        "source": scenario.source,
        "seed": seed,
        "mutate": mutate.map(|m| m.name()),
        "only_faults": only,
        "result": if ok { "ok" } else { "violated" },
        "trace": outcome.trace,
        "line": result_line(seed, outcome),
        "violations_count": outcome.checker.count(),
        "violations": violations,
        "replay": (!ok).then(|| replay_command(&scenario.source, seed, mutate, only)),
        "nodes": scenario.nodes,
        "sessions": scenario.sessions,
        "simulated_ms": outcome.simulated_ms,
        "steps": outcome.steps,
        "wall_s": wall_s,
        "faults": faults,
        "liveness_from_ms": outcome.timeline.faults_end_ms,
        "turns": {
            "says": s.says,
            "acked": s.acked,
            "unavailable": s.unavailable,
            "overloaded": s.overloaded,
            "user_timeouts": s.timeouts,
            "commits": s.commits,
            "fenced_writes": s.fenced_writes,
            "refused_claims": s.refused_claims,
        },
        "stores": {
            "loads": s.loads,
            "redis_hits": s.redis_hits,
            "redis_bypasses": s.redis_bypass,
        },
        "network": {
            "lost": s.lost,
            "links_made": s.links_made,
            "links_reset": s.links_reset,
            "unlinked": s.unlinked,
        },
        "sessions_passivated": s.passivated,
        "snapshots": s.snapshots,
        "snapshot_loads": s.snapshot_loads,
        "actions": {
            "run": s.actions_run,
            "dead_lettered": s.dead_letters,
            "resumed": s.actions_resumed,
        },
        "final_epoch": s.epoch,
        "migrations": migrations(&s.migrations),
        "migrations_after_faults": migrations(&s.migrations_after_faults),
        "conversations": scenario.conversations.as_ref().map(|_| json!({
            "scripts_finished": s.scripts_finished,
            "answers_checked": s.script_answers,
            "refusals": s.script_refusals,
        })),
    })
}

/// How a sweep runs.
struct SweepHow {
    mutate: Option<Mutation>,
    twice_percent: u64,
    quiet: bool,
    jobs: usize,
    /// One JSON object at the end instead of the text.
    json: bool,
}

/// One seed of a sweep: the simulated ms, and why it failed if it did.
fn sweep_one(
    scenario: &Scenario,
    seed: u64,
    mutate: Option<Mutation>,
    twice: bool,
) -> Result<(u64, Option<String>), String> {
    let options = || RunOptions {
        seed,
        mutate,
        ..RunOptions::default()
    };
    let outcome = confab_sim::run(scenario, options())?;
    let mut reason = (outcome.checker.count() > 0).then(|| {
        let first = &outcome.checker.violations()[0];
        format!("{}: {}", first.invariant, first.detail)
    });
    if twice {
        let again = confab_sim::run(scenario, options())?;
        if again.trace != outcome.trace {
            reason = Some(format!(
                "not deterministic: trace {} then {}",
                outcome.trace, again.trace
            ));
        }
    }
    Ok((outcome.simulated_ms, reason))
}

fn sweep(
    scenario: &Scenario,
    seeds: &[u64],
    seeds_from: &str,
    how: SweepHow,
) -> Result<ExitCode, String> {
    let SweepHow {
        mutate,
        twice_percent,
        quiet,
        jobs,
        json,
    } = how;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(seeds.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} seeds, {msg} ({elapsed}, eta {eta})",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    bar.set_prefix(scenario.name.clone());
    let started = Instant::now();
    let every = if twice_percent == 0 {
        u64::MAX
    } else {
        (100 / twice_percent.min(100)).max(1)
    };
    let twice_at = |i: usize| (i as u64).is_multiple_of(every);
    let twice = (0..seeds.len()).filter(|i| twice_at(*i)).count();
    // The failed seeds, each with why.
    let (mut failed, mut simulated) = (Vec::<(u64, String)>::new(), 0u64);
    // Workers take the next seed; results are reported in seed order as
    // soon as every earlier seed is done, so the output does not depend on
    // `jobs`.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<(), String> {
        for _ in 0..jobs.min(seeds.len()).max(1) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { return };
                    let result = sweep_one(scenario, seed, mutate, twice_at(i));
                    if tx.send((i, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut done: Vec<Option<(u64, Option<String>)>> = vec![None; seeds.len()];
        let mut reported = 0;
        for (i, result) in rx {
            done[i] = Some(result?);
            while let Some(Some((ms, reason))) = done.get_mut(reported).map(Option::take) {
                let seed = seeds[reported];
                simulated += ms;
                if let Some(reason) = reason {
                    if !json {
                        let replay = replay_command(&scenario.source, seed, mutate, None);
                        bar.suspend(|| {
                            println!("FAILED seed {seed}: {reason}\n  replay: {replay}");
                        });
                    }
                    failed.push((seed, reason));
                }
                reported += 1;
                bar.set_message(format!("{} failed", failed.len()));
                bar.inc(1);
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    if json {
        let failures: Vec<serde_json::Value> = failed
            .iter()
            .map(|(seed, reason)| {
                json!({
                    "seed": seed,
                    "reason": reason,
                    "replay": replay_command(&scenario.source, *seed, mutate, None),
                })
            })
            .collect();
        let report = json!({
            "scenario": scenario.name,
            "source": scenario.source,
            "mutate": mutate.map(|m| m.name()),
            "seeds_from": seeds_from,
            "seeds": seeds.len(),
            "ok": seeds.len() - failed.len(),
            "failed": failures,
            "run_twice": twice,
            "simulated_s": simulated as f64 / 1000.0,
            "wall_s": wall,
            "result": if failed.is_empty() { "ok" } else { "failed" },
        });
        println!("{report}");
        return Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!(
        "sweep {}{}: {} seeds, {} ok, {} failed; {} run twice with the same trace{}; {:.0} simulated s in {:.1} s",
        scenario.name,
        mutate
            .map(|m| format!(" mutate {}", m.name()))
            .unwrap_or_default(),
        seeds.len(),
        seeds.len() - failed.len(),
        failed.len(),
        twice,
        if failed.is_empty() {
            ""
        } else {
            " (unless listed)"
        },
        simulated as f64 / 1000.0,
        wall
    );
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = failed.iter().map(|(seed, _)| seed.to_string()).collect();
    println!("failed seeds: {}", list.join(" "));
    Ok(ExitCode::from(1))
}

fn parse_range(range: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds {range:?}: expected A..B, like 0..200");
    let (a, b) = range.split_once("..").ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(format!("--seeds {range:?}: the range is empty"));
    }
    Ok((a..b).collect())
}

fn read_seeds(path: &Path) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut seeds = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let seed = line
            .parse()
            .map_err(|_| format!("{}:{}: not a seed: {line:?}", path.display(), i + 1))?;
        seeds.push(seed);
    }
    if seeds.is_empty() {
        return Err(format!("{}: no seeds", path.display()));
    }
    Ok(seeds)
}

fn write_timeline(path: &Path, timeline: &confab_sim::timeline::Timeline) -> Result<(), String> {
    let svg = confab_sim::timeline::svg::render(timeline);
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("timeline: {}", path.display());
    Ok(())
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos % 1_000_000_000;
    eprintln!("no --seed: using seed {seed}");
    seed
}
