//! `confab-bench`: confab's load generator.
//!
//! - `turns`: an open-loop load of `say` turns over N WebSocket sessions at a target
//!   rate. Every turn has a scheduled send time fixed in advance, and its latency is
//!   measured from that time, not from when it was actually sent: a stalled server
//!   or client shows up as latency instead of hiding as a lower send rate (no
//!   coordinated omission).
//! - `echo`: a bare WebSocket server that answers each `say` at once with an `ack`
//!   and a `reply`, doing nothing else: the floor to measure in the same run.
//! - `rebalance`: a local cluster holding many sessions while a node joins and
//!   another drains: migration times, pauses, turns lost, memory per session.
//! - `nemesis`: the real cluster in network namespaces under a seeded fault
//!   schedule, and a checker over everything the clients saw.
//! - `stats`: `confabctl stats` latency with many sessions resident (a
//!   baseline with few in the same run).

mod admin;
mod echo;
mod nemesis;
mod plot;
mod reactivate;
mod rebalance;
mod resident;
mod stats;
mod turns;

use clap::{Parser, Subcommand};

/// The same allocator as the node, so that client overhead stays small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "confab-bench", version, about = "confab's load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open-loop turns over many sessions; prints throughput and latency percentiles.
    Turns(turns::TurnsArgs),
    /// A bare protocol-v1 echo server, the floor to compare confab with.
    Echo(echo::EchoArgs),
    /// Sessions moving under load: 3 nodes holding many sessions, a 4th joins,
    /// then one drains; prints migration times, pauses, memory per session.
    Rebalance(rebalance::RebalanceArgs),
    /// The real cluster under real faults (partitions, pauses, kills, clock
    /// steps, store outages) in network namespaces, checked afterwards; needs root.
    Nemesis(nemesis::NemesisArgs),
    /// `confabctl stats` latency: 3 nodes, a baseline of few sessions, then
    /// many (one turn each); times the cluster-wide stats call at both.
    Stats(stats::StatsArgs),
    /// What waking a passivated session adds to its first turn, beside a
    /// resident session's (run `turns` beside it for a busy node).
    Reactivate(reactivate::ReactivateArgs),
    /// What a resident session costs (up to a million on one node) against a
    /// bare ractor actor, and what a passivated one costs.
    Resident(resident::ResidentArgs),
    /// Throughput served against p99, one line per server, from `turns --json`
    /// reports, as an SVG.
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Turns(args) => turns::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Rebalance(args) => rebalance::run(args).await,
            Command::Nemesis(args) => nemesis::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Reactivate(args) => reactivate::run(args).await,
            Command::Resident(args) => resident::run(args).await,
            Command::Plot(args) => plot::run(args).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
