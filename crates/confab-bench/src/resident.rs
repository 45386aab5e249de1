//! `confab-bench resident`: what a resident session costs, at up to a million
//! sessions on one node, and what a passivated one costs.
//!
//! 1. The floor, in this process: RSS growth per bare ractor actor (a `u64`
//!    of state), `--floor-actors` of them.
//! 2. One `confab node` on the embedded store (a data dir of its own); its RSS
//!    empty, then with `--sessions` sessions resident (one `hello` each):
//!    RSS / resident and growth / resident, and the growth against the floor.
//! 3. With `--passivate-after`, the node passivates idle sessions after that
//!    long: the bench waits until none is resident, and reads the RSS again.

use crate::rebalance::{bare_actor_kib, confab_binary, fill, metrics, sample, start_node};
use confab_testkit::free_port;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(clap::Args)]
pub(crate) struct ResidentArgs {
    /// Sessions to make resident on the node.
    #[arg(long, default_value_t = 1_000_000)]
    sessions: usize,
    /// Bare ractor actors spawned in this process for the floor (their RSS
    /// growth per actor is the same at any count; a million of them beside a
    /// million sessions may not fit in memory).
    #[arg(long, default_value_t = 100_000)]
    floor_actors: usize,
    /// Connections opened at once while making sessions resident.
    #[arg(long, default_value_t = 64)]
    fill_concurrency: usize,
    /// The node's `runtime.passivate_after_s`: when given, the bench waits,
    /// after measuring, until every session has passivated and measures
    /// again. Without it sessions stay for an hour.
    #[arg(long, value_parser = crate::turns::parse_duration_arg)]
    passivate_after: Option<Duration>,
    /// The confab binary (default: the one beside confab-bench).
    #[arg(long)]
    confab: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    sessions: usize,
    /// Sessions the node held once filled (`confab_sessions_resident`).
    resident: f64,
    fill_s: f64,
    floor_actors: usize,
    /// RSS growth per bare ractor actor in this process.
    bare_actor_kib: f64,
    node_empty_kib: f64,
    node_filled_kib: f64,
    rss_per_session_kib: f64,
    growth_per_session_kib: f64,
    /// Growth per session over the bare actor's.
    growth_over_bare: f64,
    /// With `--passivate-after`: the node's RSS once no session was resident,
    /// and how long they took to go.
    node_passivated_kib: Option<f64>,
    passivated_after_s: Option<f64>,
}

pub(crate) async fn run(args: ResidentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be above 0");
    anyhow::ensure!(args.floor_actors > 0, "--floor-actors must be above 0");
    anyhow::ensure!(
        args.fill_concurrency > 0,
        "--fill-concurrency must be above 0"
    );
    let confab = confab_binary(args.confab)?;
    eprintln!("the floor: {} bare ractor actors", args.floor_actors);
    let bare = bare_actor_kib(args.floor_actors).await?;

    let data = tempfile::tempdir()?;
    let passivate_s = args.passivate_after.map_or(3600, |d| d.as_secs().max(1));
    let settings = [
        ("CONFAB_RUNTIME__PASSIVATE_AFTER_S", passivate_s.to_string()),
        (
            "CONFAB_RUNTIME__MAX_RESIDENT_SESSIONS",
            (args.sessions + 1000).to_string(),
        ),
    ];
    let node = start_node(
        &confab,
        data.path(),
        "node-1",
        free_port(),
        None,
        "warn",
        &settings,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty = node.rss_kib();
    eprintln!("making {} sessions resident...", args.sessions);
    let filling = Instant::now();
    fill(&[node.ws()], args.sessions, args.fill_concurrency).await?;
    let fill_s = filling.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resident = sample(&metrics(&node).await, "confab_sessions_resident").unwrap_or(0.0);
    let filled = node.rss_kib();
    // Sessions that passivated during a fill longer than --passivate-after
    // would make the figures per session too high.
    anyhow::ensure!(
        resident >= args.sessions as f64 * 0.99,
        "the node holds {resident} of {} sessions after the fill (in {fill_s:.0} s): \
         some passivated or were refused (a longer --passivate-after?)",
        args.sessions
    );
    let growth = (filled - empty) / resident;

    let (mut node_passivated_kib, mut passivated_after_s) = (None, None);
    if let Some(after) = args.passivate_after {
        eprintln!("waiting for every session to passivate...");
        let waiting = Instant::now();
        // Found idle within a quarter of the period; a snapshot each to write.
        let deadline = waiting + after * 2 + Duration::from_secs(300);
        loop {
            let left = sample(&metrics(&node).await, "confab_sessions_resident");
            if left == Some(0.0) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{left:?} sessions still resident {:.0} s after the fill",
                waiting.elapsed().as_secs_f64()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        passivated_after_s = Some(waiting.elapsed().as_secs_f64());
        // The allocator gives freed pages back after a short delay.
        tokio::time::sleep(Duration::from_secs(5)).await;
        node_passivated_kib = Some(node.rss_kib());
    }
    let report = Report {
        sessions: args.sessions,
        resident,
        fill_s,
        floor_actors: args.floor_actors,
        bare_actor_kib: bare,
        node_empty_kib: empty,
        node_filled_kib: filled,
        rss_per_session_kib: filled / resident,
        growth_per_session_kib: growth,
        growth_over_bare: growth / bare,
        node_passivated_kib,
        passivated_after_s,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn print_human(r: &Report) {
    let mib = |kib: f64| kib / 1024.0;
    println!(
        "resident        {:.0} of {} sessions, filled in {:.1} s ({:.0}/s)",
        r.resident,
        r.sessions,
        r.fill_s,
        r.sessions as f64 / r.fill_s
    );
    println!(
        "node rss        {:.0} MiB empty, {:.0} MiB filled",
        mib(r.node_empty_kib),
        mib(r.node_filled_kib)
    );
    println!(
        "per session     {:.2} KiB (rss / resident), {:.2} KiB growth",
        r.rss_per_session_kib, r.growth_per_session_kib
    );
    println!(
        "bare actor      {:.2} KiB ({} in this process): growth is {:.2}x",
        r.bare_actor_kib, r.floor_actors, r.growth_over_bare
    );
    if let (Some(kib), Some(s)) = (r.node_passivated_kib, r.passivated_after_s) {
        println!(
            "passivated      none resident after {s:.0} s; node rss {:.0} MiB ({:+.0} MiB over empty)",
            mib(kib),
            mib(kib - r.node_empty_kib)
        );
    }
}
