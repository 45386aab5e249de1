//! `confab-bench nemesis`: the real cluster under real faults, Jepsen's way.
//!
//! Each node is a `confab node` process in its own network namespace, on a
//! bridge; MariaDB and Redis are private servers reached through proxies on
//! the bridge's address. Clients outside the namespaces talk steadily,
//! retrying with the same message id and reconnecting to any node, and record
//! everything they see. A fault schedule, drawn from `--seed` or named by
//! `--schedule`, partitions the network (silently or by resets, both ways or
//! one), drops packets, pauses and kills processes, steps wall clocks and
//! takes the stores down or slows them, while a spare node joins and is
//! drained. Then every fault heals and the checker ([`checker`]) reads the
//! histories and the store's own rows.

mod checker;
mod hosts;
mod schedule;

use crate::admin;
use crate::turns::token;
use checker::{RingSeen, Violation};
use confab_testkit::load::{Load, Tokens, UserLog, check};
use confab_testkit::netns::Cut;
use confab_timeline::{EpochMark, FaultMark, NodeState, Span, Timeline, ViolationMark};
use hosts::Cluster;
use schedule::{Fault, Kind, Planned, Schedule};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The secret the nemesis's nodes and tokens share.
const SECRET: &str = "confab-nemesis-secret-0123456789";
/// Detection time (the nodes' default `down_after_ms` plus a heartbeat) plus
/// the 2 s the issue allows: the bound of rule `serves-again`.
const SERVES_AGAIN_MAX: Duration = Duration::from_millis(2_000 + 500 + 2_000);
/// How long the nodes get to agree on one ring after the heal.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// After the ring settled: clients go on this long (and the ring must not change).
const AFTER_SETTLE: Duration = Duration::from_secs(5);
/// How often each node's ring is read.
const RING_EVERY: Duration = Duration::from_millis(250);

/// `confab-bench nemesis`.
#[derive(clap::Args)]
pub(crate) struct NemesisArgs {
    /// Nodes of the cluster (3 to 9); a spare joins and is drained beside them.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// How long faults are injected (10s, 2m).
    #[arg(long, default_value = "120s")]
    duration: String,
    /// Fault kinds, comma-separated: partition, one-way, loss, pause, kill,
    /// clock, store (MariaDB and Redis) or disk (`--store embedded`); or all.
    #[arg(long, default_value = "all")]
    faults: String,
    /// The seed the schedule is drawn from: the same seed, the same schedule.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run a named schedule instead of drawing one (`--schedule list` names them).
    #[arg(long)]
    schedule: Option<String>,
    /// The nodes' store: MariaDB with Redis in front (`mysql`), or the
    /// embedded SQLite store shared through one data dir on a small tmpfs
    /// (`embedded`, as `confab up` runs).
    #[arg(long, value_enum, default_value_t = StoreArg::Mysql)]
    store: StoreArg,
    /// No spare node joining and draining during the faults.
    #[arg(long)]
    no_membership: bool,
    /// Users talking throughout.
    #[arg(long, default_value_t = 30)]
    users: usize,
    /// Pause between one user's turns (ms).
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// Draw the run as an SVG timeline here.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Write every client operation here, one JSON object per line (turns with
    /// their sends, acks, replies and setbacks; hellos), times in ms from the
    /// start of the run.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Copy each node's log here.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// The confab binary (default: the one beside confab-bench).
    #[arg(long)]
    confab: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Run every node with this planted bug (`CONFAB_MUTATION`), to see the
    /// checker catch it: needs a confab built with `--features mutations`.
    #[arg(long)]
    mutation: Option<String>,
    /// Link the nodes by mutual TLS (certificates made by `openssl` for the
    /// run): ractor_cluster then dials no member by itself (isolated mode), and
    /// every link is one confab's own dialling made.
    #[arg(long)]
    tls: bool,
    /// Print the schedule and stop (nothing is started).
    #[arg(long)]
    plan: bool,
}

/// The nodes' store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreArg {
    Mysql,
    Embedded,
}

/// What a run found.
#[derive(Debug, Serialize)]
struct Summary {
    schedule: Schedule,
    nodes: usize,
    users: usize,
    /// Turns sent (first sends), acked, answered, and sent again.
    turns: usize,
    acked: usize,
    sent_again: u64,
    /// Sessions read by the readers (`session show` through every node).
    reads: usize,
    /// Errors answered, by code.
    errors: BTreeMap<String, u64>,
    /// Acked turns the checker found lost or applied twice.
    lost_or_duplicated: usize,
    /// The longest time any user went without a reply during each fault
    /// kind's windows (from the fault's start to 5 s after its heal), ms.
    longest_unavailable: BTreeMap<String, Gap>,
    /// From the heal to the nodes agreeing on one ring, ms.
    settled_after_ms: Option<u64>,
    violations: Vec<Violation>,
}

/// The longest time one user went without a reply.
#[derive(Debug, Clone, Default, Serialize)]
struct Gap {
    ms: u64,
    uid: String,
    /// The fault it fell in.
    fault: String,
}

/// What happened to each node over time, for the timeline.
#[derive(Default)]
struct States(Vec<(u64, usize, NodeState)>);

pub(crate) async fn run(args: NemesisArgs) -> anyhow::Result<()> {
    if args.schedule.as_deref() == Some("list") {
        for (name, what) in schedule::NAMED {
            println!("{name}: {what}");
        }
        return Ok(());
    }
    anyhow::ensure!(
        (3..=9).contains(&args.nodes),
        "--nodes {}: 3 to 9",
        args.nodes
    );
    let duration = crate::turns::parse_duration(&args.duration)?;
    let schedule = match &args.schedule {
        Some(name) => Schedule::named(name)?,
        None => Schedule::generate(
            args.seed,
            args.nodes,
            u64::try_from(duration.as_millis())?,
            &Kind::parse_list(&args.faults, args.store == StoreArg::Embedded)?,
            !args.no_membership,
        ),
    };
    if args.plan {
        println!("{}", serde_json::to_string_pretty(&schedule)?);
        return Ok(());
    }
    let confab = match &args.confab {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("confab"),
    };
    anyhow::ensure!(
        confab.exists(),
        "{} not found: build it (cargo build -p confab) or pass --confab",
        confab.display()
    );
    eprintln!(
        "nemesis: {}, {} faults:",
        schedule.source,
        schedule.faults.len()
    );
    for planned in &schedule.faults {
        eprintln!(
            "  {:>6.1} s .. {:>6.1} s  {}",
            planned.at_ms as f64 / 1000.0,
            planned.heal_ms as f64 / 1000.0,
            planned.fault
        );
    }
    let spare = args.nodes;
    let mut cluster = Cluster::create(
        confab,
        args.nodes + 1,
        SECRET,
        args.mutation.clone(),
        args.store == StoreArg::Embedded,
        args.tls,
    )
    .await?;
    let result = drive(&args, &schedule, &mut cluster, spare).await;
    cluster.stop_all().await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(&cluster.logs)? {
            let entry = entry?;
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
        eprintln!("node logs kept in {}", dir.display());
    }
    drop(cluster);
    let (summary, timeline) = result?;
    if let Some(path) = &args.timeline {
        std::fs::write(path, confab_timeline::svg::render(&timeline))?;
        eprintln!("timeline drawn in {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_human(&summary);
    }
    anyhow::ensure!(
        summary.violations.is_empty(),
        "{} violations ({})",
        summary.violations.len(),
        summary.schedule.source
    );
    Ok(())
}

/// Starts the cluster, runs the schedule, heals, checks.
async fn drive(
    args: &NemesisArgs,
    schedule: &Schedule,
    cluster: &mut Cluster,
    spare: usize,
) -> anyhow::Result<(Summary, Timeline)> {
    let base: Vec<usize> = (0..args.nodes).collect();
    let started = Instant::now();
    let ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut states = States::default();
    for &i in &base {
        // Seeded by n1 alone, as a StatefulSet's pods are by pod 0: a node
        // must dial the members it learns of, not only its seeds.
        cluster.start(i, &[0, i]).await?;
        states.0.push((ms(), i, NodeState::Up));
    }
    let addrs: Vec<_> = cluster.nodes.iter().map(hosts::Node::http).collect();
    wait_for_ring(&addrs[..args.nodes], args.nodes, SETTLE_MAX)
        .await
        .ok_or_else(|| {
            anyhow::anyhow!("the cluster never formed a ring of {} nodes", args.nodes)
        })?;
    eprintln!("cluster of {} up; {} users talking", args.nodes, args.users);

    let seen: Arc<Mutex<Vec<RingSeen>>> = Arc::default();
    let watchers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| tokio::spawn(watch_ring(i, *addr, started, Arc::clone(&seen))))
        .collect();
    let tokens: Tokens = Arc::new(|uid: &str| token(SECRET, uid, "chat").unwrap_or_default());
    let users: Vec<String> = (0..args.users).map(|i| format!("nemesis-{i}")).collect();
    let urls: Vec<String> = base.iter().map(|&i| cluster.nodes[i].ws()).collect();
    let load = Load::start(
        urls,
        &users,
        Duration::from_millis(args.pause_ms),
        Arc::clone(&tokens),
    );
    // Readers: each node is asked for each user's session in turn, as a
    // support tool or a second device would, and must never show less than
    // what was acked.
    let reads: Arc<Mutex<Vec<checker::Read>>> = Arc::default();
    let readers: Vec<_> = (0..=args.nodes)
        .map(|i| {
            tokio::spawn(read_sessions(
                cluster.nodes[i].id.clone(),
                addrs[i],
                users.clone(),
                Arc::clone(&reads),
            ))
        })
        .collect();

    // The faults, the join and the drain, in time order.
    let phase = Instant::now();
    let phase_ms = ms();
    let mut events: Vec<(u64, Step)> = Vec::new();
    for (i, planned) in schedule.faults.iter().enumerate() {
        events.push((planned.at_ms, Step::Start(i)));
        events.push((planned.heal_ms, Step::Heal(i)));
    }
    if let Some(at) = schedule.join_ms {
        events.push((at, Step::Join));
    }
    if let Some(at) = schedule.drain_ms {
        events.push((at, Step::Drain));
    }
    events.sort_by_key(|(at, step)| (*at, matches!(step, Step::Start(_))));
    let mut marks: Vec<FaultMark> = Vec::new();
    let mut members = base.clone();
    let mut left = None;
    let mut drain_later = false;
    // When a join or a drain may change the ring: from its step until it is
    // done (a join whose spare is not ready at its drain stays open until the
    // deferred drain finds it ready).
    let mut membership_at: Vec<(u64, u64)> = Vec::new();
    for (at, step) in events {
        tokio::time::sleep_until(phase + Duration::from_millis(at)).await;
        match step {
            Step::Start(i) => {
                let planned = &schedule.faults[i];
                eprintln!("{:>6.1} s  {}", at as f64 / 1000.0, planned.fault);
                marks.push(FaultMark {
                    index: i,
                    label: planned.fault.to_string(),
                    from_ms: ms(),
                    to_ms: ms(),
                    nodes: planned.fault.nodes(),
                });
                inject(cluster, &planned.fault, args.nodes, &mut states, ms()).await?;
            }
            Step::Heal(i) => {
                let planned = &schedule.faults[i];
                heal(cluster, planned, &members, &mut states, ms()).await?;
                if let Some(mark) = marks.iter_mut().find(|m| m.index == i) {
                    mark.to_ms = ms();
                }
            }
            Step::Join => {
                membership_at.push((ms(), ms()));
                eprintln!("{:>6.1} s  n{} joins", at as f64 / 1000.0, spare + 1);
                states.0.push((ms(), spare, NodeState::Joining));
                members.push(spare);
                // Not waited for here: a store may be down, and the schedule
                // goes on; the drain waits for it.
                cluster.spawn(spare, &members)?;
                load.urls
                    .lock()
                    .expect("urls")
                    .push(cluster.nodes[spare].ws());
            }
            Step::Drain => {
                membership_at.push((ms(), ms()));
                // A spare that cannot start (its store is down or full) is
                // drained once the faults are over: the schedule goes on.
                let ready =
                    tokio::time::timeout(DRAIN_READY_MAX, cluster.ensure_ready(spare, &members))
                        .await;
                if !matches!(ready, Ok(Ok(()))) {
                    eprintln!(
                        "{:>6.1} s  n{} is not ready: it is drained after the faults",
                        at as f64 / 1000.0,
                        spare + 1
                    );
                    drain_later = true;
                    // No drain now; its join may yet change the ring, in any
                    // later window, until the spare is found ready.
                    membership_at.pop();
                    for (_, until) in &mut membership_at {
                        *until = u64::MAX;
                    }
                    continue;
                }
                eprintln!("{:>6.1} s  n{} drains", at as f64 / 1000.0, spare + 1);
                let drain = Drain {
                    spare,
                    nodes: args.nodes,
                    started,
                };
                left = Some(drain.run(cluster, &mut states, &load, &mut members).await?);
            }
        }
    }
    if drain_later {
        cluster.ensure_ready(spare, &members).await?;
        let ready_ms = ms();
        for (_, until) in &mut membership_at {
            *until = (*until).min(ready_ms);
        }
        let drain = Drain {
            spare,
            nodes: args.nodes,
            started,
        };
        left = Some(drain.run(cluster, &mut states, &load, &mut members).await?);
    }

    // Everything heals; the ring must settle and every session serve again.
    heal_all(cluster, schedule, &members, &mut states, ms()).await?;
    let heal = Instant::now();
    let heal_ms = ms();
    if let Some(left) = left {
        if cluster.reap(spare, SETTLE_MAX).await {
            let at = left.await.unwrap_or_else(|_| ms());
            states.0.push((at, spare, NodeState::Off));
        } else {
            left.abort();
            eprintln!("n{} did not leave after its drain", spare + 1);
        }
    }
    let settled = wait_for_ring(&addrs[..args.nodes], args.nodes, SETTLE_MAX).await;
    let settled_ms =
        settled.map(|at| u64::try_from(at.duration_since(started).as_millis()).unwrap_or(0));
    tokio::time::sleep(AFTER_SETTLE).await;
    let logs = load.finish_all().await;
    for reader in readers {
        reader.abort();
    }
    if let Some(path) = &args.history {
        write_history(path, &logs, started)?;
    }
    for watcher in watchers {
        watcher.abort();
    }
    let end_ms = ms();

    let (_, breaches) = check(&logs, &cluster.nodes[0].ws(), &tokens).await;
    let lost_or_duplicated = breaches.len();
    let mut violations = checker::client_rules(&logs, breaches);
    let reads = std::mem::take(&mut *reads.lock().expect("reads"));
    let reads_made = reads.len();
    violations.extend(checker::read_rules(&logs, &reads));
    violations.extend(checker::log_rules(&cluster.store_rows(), &logs).await?);
    violations.extend(checker::answers_in_time(
        &logs,
        &timed_windows(schedule, phase),
        SERVES_AGAIN_MAX,
    ));
    violations.extend(checker::serves_again(&logs, heal, SERVES_AGAIN_MAX));
    let seen = seen.lock().expect("rings").clone();
    violations.extend(checker::ring_rules(&seen, settled_ms));
    violations.extend(checker::steady_rules(
        &seen,
        &windows(schedule, args.nodes, &marks, &membership_at),
    ));

    let summary = Summary {
        schedule: schedule.clone(),
        nodes: args.nodes,
        users: args.users,
        turns: logs.iter().map(|l| l.turns.len()).sum(),
        acked: logs
            .iter()
            .flat_map(|l| &l.turns)
            .filter(|t| t.ack.is_some())
            .count(),
        sent_again: logs
            .iter()
            .flat_map(|l| &l.turns)
            .map(|t| u64::from(t.resent))
            .sum(),
        errors: error_counts(&logs),
        reads: reads_made,
        lost_or_duplicated,
        longest_unavailable: unavailability(&logs, schedule, phase),
        settled_after_ms: settled_ms.map(|s| s.saturating_sub(heal_ms)),
        violations,
    };
    let timeline = picture(
        &summary,
        args.nodes + 1,
        (phase_ms, heal_ms, end_ms),
        states,
        marks,
        &seen,
    );
    Ok((summary, timeline))
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Start(usize),
    Heal(usize),
    Join,
    Drain,
}

async fn inject(
    cluster: &mut Cluster,
    fault: &Fault,
    nodes: usize,
    states: &mut States,
    now: u64,
) -> anyhow::Result<()> {
    match fault {
        Fault::Partition { minority, cut } => cluster.partition(minority, nodes, *cut)?,
        Fault::OneWay { from, to } => {
            let from = cluster.nodes[*from].addr;
            cluster.net.cut(*to, from, Cut::Drop, false)?;
        }
        Fault::Loss { node, percent } => cluster.net.lose(*node, *percent)?,
        Fault::Latency { node, delay_ms } => {
            cluster.delay(*node, Duration::from_millis(*delay_ms))?;
        }
        Fault::Pause { node } => {
            cluster.pause(*node, true);
            states.0.push((now, *node, NodeState::Paused));
        }
        Fault::Freeze { nodes } => {
            for &node in nodes {
                cluster.pause(node, true);
                cluster.net.isolate(node)?;
                states.0.push((now, node, NodeState::Paused));
            }
        }
        Fault::Kill { node } => {
            cluster.kill(*node).await;
            states.0.push((now, *node, NodeState::Crashed));
        }
        Fault::Clock { node, step_s } => cluster.set_clock(*node, *step_s)?,
        Fault::StoreDown { store } => cluster.store_down(*store, true).await,
        Fault::StoreSlow { store, delay_ms } => {
            cluster.store_delay(*store, Duration::from_millis(*delay_ms));
        }
        Fault::DiskFull => cluster.fill_disk(true)?,
    }
    Ok(())
}

async fn heal(
    cluster: &mut Cluster,
    planned: &Planned,
    members: &[usize],
    states: &mut States,
    now: u64,
) -> anyhow::Result<()> {
    match &planned.fault {
        Fault::Partition { .. }
        | Fault::OneWay { .. }
        | Fault::Loss { .. }
        | Fault::Latency { .. } => {
            cluster.heal_network()?;
        }
        Fault::Pause { node } => {
            cluster.pause(*node, false);
            states.0.push((now, *node, NodeState::Up));
        }
        Fault::Freeze { nodes } => {
            for &node in nodes {
                // The host first, as a VM's kernel resumes with it: what the
                // process then reads is only what arrives from now on.
                cluster.net.heal(node)?;
                cluster.pause(node, false);
                states.0.push((now, node, NodeState::Up));
            }
        }
        Fault::Kill { node } => {
            if !cluster.running(*node) {
                cluster.start(*node, members).await?;
            }
            states.0.push((now, *node, NodeState::Up));
        }
        Fault::Clock { node, .. } => cluster.set_clock(*node, 0)?,
        Fault::StoreDown { store } => cluster.store_down(*store, false).await,
        Fault::StoreSlow { store, .. } => cluster.store_delay(*store, Duration::ZERO),
        Fault::DiskFull => cluster.fill_disk(false)?,
    }
    Ok(())
}

/// Heals whatever the schedule left broken (a fault cut short by the end of
/// the phase heals here too).
async fn heal_all(
    cluster: &mut Cluster,
    schedule: &Schedule,
    members: &[usize],
    states: &mut States,
    now: u64,
) -> anyhow::Result<()> {
    cluster.heal_network()?;
    for planned in &schedule.faults {
        match planned.fault {
            Fault::Pause { node } => cluster.pause(node, false),
            Fault::Freeze { ref nodes } => {
                nodes.iter().for_each(|&node| cluster.pause(node, false))
            }
            Fault::Kill { node } if !cluster.running(node) => {
                cluster.start(node, members).await?;
                states.0.push((now, node, NodeState::Up));
            }
            Fault::Clock { node, .. } => cluster.set_clock(node, 0)?,
            Fault::StoreSlow { store, .. } => cluster.store_delay(store, Duration::ZERO),
            Fault::DiskFull => cluster.fill_disk(false)?,
            _ => {}
        }
    }
    Ok(())
}

/// How long the drain step waits for the spare to be ready before leaving
/// its drain to the end of the faults.
const DRAIN_READY_MAX: Duration = Duration::from_secs(10);

/// The drain of the spare.
struct Drain {
    spare: usize,
    /// The first `nodes` nodes are asked to drain it.
    nodes: usize,
    /// When the run started.
    started: Instant,
}

impl Drain {
    /// Asks the first nodes to drain the spare, takes it off the clients'
    /// list and the members; returns the task that tells when it stopped
    /// answering.
    async fn run(
        &self,
        cluster: &Cluster,
        states: &mut States,
        load: &Load,
        members: &mut Vec<usize>,
    ) -> anyhow::Result<tokio::task::JoinHandle<u64>> {
        let spare = self.spare;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        states.0.push((now, spare, NodeState::Up));
        let path = format!("/admin/v1/nodes/n{}/drain", spare + 1);
        let mut asked = false;
        for node in &cluster.nodes[..self.nodes] {
            if let Some((200, _)) = admin::request("POST", node.http(), &path, SECRET).await {
                asked = true;
                break;
            }
        }
        anyhow::ensure!(asked, "no node accepted the drain of n{}", spare + 1);
        states.0.push((now, spare, NodeState::Draining));
        let gone = cluster.nodes[spare].ws();
        load.urls.lock().expect("urls").retain(|u| *u != gone);
        members.retain(|m| *m != spare);
        Ok(tokio::spawn(gone_at(
            cluster.nodes[spare].http(),
            self.started,
        )))
    }
}

/// Reads asked of one node and not answered yet, at most: a paused node
/// collects them, and answers them all when it resumes.
const READS_IN_FLIGHT_MAX: usize = 64;
/// How long a read waits for its answer: longer than any pause, so that a
/// read asked of a paused node is answered when it resumes, as a patient
/// client's would be.
const READ_WAIT: Duration = Duration::from_secs(15);

/// Reads each user's session through the node at `addr`, one every 100 ms
/// (each in a task of its own, so a paused node piles them up), until
/// aborted: what each answer said, and when it was asked.
async fn read_sessions(
    via: String,
    addr: std::net::SocketAddr,
    users: Vec<String>,
    reads: Arc<Mutex<Vec<checker::Read>>>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(READS_IN_FLIGHT_MAX));
    for uid in users.iter().cycle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            continue;
        };
        let (via, uid, reads) = (via.clone(), uid.clone(), Arc::clone(&reads));
        tokio::spawn(async move {
            let _permit = permit;
            let asked = Instant::now();
            let path = format!("/admin/v1/sessions/{uid}");
            if let Some((200, body)) =
                admin::request_within("GET", addr, &path, SECRET, READ_WAIT).await
                && let Ok(view) = serde_json::from_str::<confab_proto::admin::SessionView>(&body)
            {
                reads.lock().expect("reads").push(checker::Read {
                    asked,
                    via,
                    uid,
                    seq: view.seq,
                });
            }
        });
    }
}

/// When the node at `addr` stopped answering `/healthz` (ms from `started`).
async fn gone_at(addr: std::net::SocketAddr, started: Instant) -> u64 {
    while admin::request("GET", addr, "/healthz", SECRET)
        .await
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads node `i`'s ring every [`RING_EVERY`] until aborted.
async fn watch_ring(
    i: usize,
    addr: std::net::SocketAddr,
    started: Instant,
    seen: Arc<Mutex<Vec<RingSeen>>>,
) {
    loop {
        // Epoch 0: the node is on no ring yet (it has just started).
        if let Some((epoch, members)) = admin::ring(addr, SECRET).await
            && epoch > 0
        {
            let at_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            seen.lock().expect("rings").push(RingSeen {
                at_ms,
                node: i,
                epoch,
                members,
            });
        }
        tokio::time::sleep(RING_EVERY).await;
    }
}

/// Waits until every node of `addrs` routes by one ring of `count` members:
/// when they did, or `None` past `within`.
async fn wait_for_ring(
    addrs: &[std::net::SocketAddr],
    count: usize,
    within: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut epochs = Vec::new();
        for addr in addrs {
            match admin::ring(*addr, SECRET).await {
                Some((epoch, members)) if members.len() == count => epochs.push(epoch),
                _ => break,
            }
        }
        if epochs.len() == addrs.len() && epochs.windows(2).all(|w| w[0] == w[1]) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The windows of rule `answers-in-time`: every fault but a pause or a freeze
/// (a client connected to a paused node waits as long as the pause, as any
/// client of a frozen server does), packet loss (the clients' own packets are
/// lost too, and TCP's retransmission backoff alone can hold a frame for
/// seconds) and latency (a turn that loads its session crosses a dozen round
/// trips of the slowed node, each slowed), from its start to 2 s after its heal.
fn timed_windows(schedule: &Schedule, phase: Instant) -> Vec<(Instant, Instant, String)> {
    schedule
        .faults
        .iter()
        .filter(|planned| {
            !matches!(
                planned.fault.kind(),
                Kind::Pause | Kind::Freeze | Kind::Loss | Kind::Latency
            )
        })
        .map(|planned| {
            (
                phase + Duration::from_millis(planned.at_ms),
                phase + Duration::from_millis(planned.heal_ms + 2_000),
                planned.fault.to_string(),
            )
        })
        .collect()
}

/// Ring changes one fault may cause among `members` nodes: a node cut off,
/// paused or killed is declared down once and comes back once; a node losing
/// packets may be judged down and back twice; a clock step or a store fault
/// changes no ring. Where the nodes paused or frozen leave a rest that holds
/// no majority (more than half, or half with n1, the lowest), nobody may
/// declare them down; but on resuming they may not hear the rest for a while
/// (a frozen host's TCP connections wait out their retransmission backoff),
/// and declare it down once, and it comes back once.
fn ring_budget(fault: &Fault, members: usize) -> usize {
    let hit = fault.nodes();
    let rest = members.saturating_sub(hit.len());
    let rest_decides = 2 * rest > members || (2 * rest == members && !hit.contains(&0));
    match fault.kind() {
        Kind::Pause | Kind::Freeze if !rest_decides => 2 * rest,
        Kind::Partition
        | Kind::OneWay
        | Kind::Latency
        | Kind::Pause
        | Kind::Freeze
        | Kind::Kill => 2 * hit.len(),
        Kind::Loss => 4 * hit.len(),
        Kind::Clock | Kind::Store | Kind::Disk => 0,
    }
}

/// Each fault's window for rule `ring-steady`: from its start to the next
/// fault's (the last: 10 s past its heal), allowed its own ring changes, the
/// previous fault's (late ones spill over), and two per join or drain within
/// the window or the 10 s before it, or still under way in it (a join whose
/// spare a disk or store fault kept from starting is under way until the
/// deferred drain finds it ready).
fn windows(
    schedule: &Schedule,
    members: usize,
    marks: &[FaultMark],
    membership_at: &[(u64, u64)],
) -> Vec<checker::Window> {
    marks
        .iter()
        .enumerate()
        .map(|(i, mark)| {
            let until_ms = marks
                .get(i + 1)
                .map_or(mark.to_ms + 10_000, |next| next.from_ms);
            let budget = |index: usize| ring_budget(&schedule.faults[index].fault, members);
            let previous = i.checked_sub(1).map_or(0, |p| budget(marks[p].index));
            let membership = membership_at
                .iter()
                .filter(|(from, until)| {
                    until.saturating_add(10_000) >= mark.from_ms && *from <= until_ms
                })
                .count();
            checker::Window {
                label: mark.label.clone(),
                from_ms: mark.from_ms,
                until_ms,
                allowed: budget(mark.index) + previous + 2 * membership,
            }
        })
        .collect()
}

/// Every client operation as one JSON line, in ms from `started`.
fn write_history(path: &std::path::Path, logs: &[UserLog], started: Instant) -> anyhow::Result<()> {
    use std::io::Write;
    let ms =
        |at: Instant| u64::try_from(at.saturating_duration_since(started).as_millis()).unwrap_or(0);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for log in logs {
        for hello in &log.hellos {
            let line = serde_json::json!({
                "uid": log.uid, "op": "hello", "asked_ms": ms(hello.asked), "via": hello.via,
                "owner": hello.node, "last_seq": hello.last_seq, "acked_before": hello.acked,
            });
            writeln!(out, "{line}")?;
        }
        for turn in &log.turns {
            let sent = turn.at.checked_sub(turn.latency).unwrap_or(started);
            let line = serde_json::json!({
                "uid": log.uid, "op": "say", "id": turn.id, "sent_ms": ms(sent),
                "acked_ms": turn.acked_after.map(|a| ms(sent + a)), "ack": turn.ack,
                "replied_ms": ms(turn.at), "reply": turn.reply,
                "setbacks": turn.setbacks.iter().map(|(after, why)| (ms(sent + *after), why)).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Errors answered to the clients, by code.
fn error_counts(logs: &[UserLog]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, why) in logs.iter().flat_map(|l| &l.turns).flat_map(|t| &t.setbacks) {
        let code = why.split(':').next().unwrap_or(why).to_owned();
        let code = if code.starts_with("closed") {
            "connection closed".to_owned()
        } else if code.starts_with("no session via") {
            "no hello".to_owned()
        } else {
            code
        };
        *counts.entry(code).or_insert(0) += 1;
    }
    counts
}

/// For each fault kind: the longest time a user went without a reply
/// within one of its windows (the fault's start to 5 s after its heal).
fn unavailability(logs: &[UserLog], schedule: &Schedule, phase: Instant) -> BTreeMap<String, Gap> {
    let mut worst: BTreeMap<String, Gap> = BTreeMap::new();
    for planned in &schedule.faults {
        let from = phase + Duration::from_millis(planned.at_ms);
        let to = phase + Duration::from_millis(planned.heal_ms + 5_000);
        for log in logs {
            let mut last = from;
            let mut longest = Duration::ZERO;
            for turn in log.turns.iter().filter(|t| t.at > from) {
                let at = turn.at.min(to);
                longest = longest.max(at.duration_since(last));
                last = at;
                if turn.at >= to {
                    break;
                }
            }
            longest = longest.max(to.saturating_duration_since(last));
            let ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
            let entry = worst
                .entry(planned.fault.kind().name().to_owned())
                .or_default();
            if ms > entry.ms {
                *entry = Gap {
                    ms,
                    uid: log.uid.clone(),
                    fault: planned.fault.to_string(),
                };
            }
        }
    }
    worst
}

/// The run as the simulator draws its runs.
fn picture(
    summary: &Summary,
    hosts: usize,
    (phase_ms, heal_ms, end_ms): (u64, u64, u64),
    mut states: States,
    mut marks: Vec<FaultMark>,
    seen: &[RingSeen],
) -> Timeline {
    let spare = hosts - 1;
    // The spare is up from the first ring seen to hold it, after it started.
    let joined = states
        .0
        .iter()
        .find(|(_, node, state)| *node == spare && *state == NodeState::Joining)
        .map(|(at, _, _)| *at);
    let spare_name = format!("n{}", spare + 1);
    if let Some(up) = joined.and_then(|from| {
        seen.iter()
            .filter(|ring| ring.at_ms >= from && ring.members.contains(&spare_name))
            .map(|ring| ring.at_ms)
            .min()
    }) {
        states.0.push((up, spare, NodeState::Up));
    }
    let mut spans = Vec::new();
    states.0.sort_by_key(|(at, node, _)| (*node, *at));
    for node in 0..hosts {
        let changes: Vec<(u64, NodeState)> = states
            .0
            .iter()
            .filter(|(_, n, _)| *n == node)
            .map(|(at, _, state)| (*at, *state))
            .collect();
        let mut from = 0;
        let mut state = NodeState::Off;
        for (at, next) in changes {
            if at > from {
                spans.push(Span {
                    node,
                    from_ms: from,
                    to_ms: at,
                    state,
                });
            }
            from = at;
            state = next;
        }
        if end_ms > from {
            spans.push(Span {
                node,
                from_ms: from,
                to_ms: end_ms,
                state,
            });
        }
    }
    let mut epochs: Vec<EpochMark> = Vec::new();
    for ring in seen {
        if epochs.iter().all(|e| e.epoch != ring.epoch) {
            epochs.push(EpochMark {
                at_ms: ring.at_ms,
                epoch: ring.epoch,
                ring: ring
                    .members
                    .iter()
                    .filter_map(|m| m.strip_prefix('n')?.parse::<usize>().ok())
                    .map(|n| n - 1)
                    .collect(),
            });
        }
    }
    epochs.sort_by_key(|e| e.at_ms);
    for mark in &mut marks {
        mark.from_ms = mark.from_ms.max(phase_ms);
    }
    Timeline {
        scenario: format!("nemesis ({})", summary.schedule.source),
        seed: 0,
        end_ms,
        faults_end_ms: heal_ms,
        nodes: (0..hosts)
            .map(|i| {
                if i == spare {
                    format!("n{} (spare)", i + 1)
                } else {
                    format!("n{}", i + 1)
                }
            })
            .collect(),
        spans,
        epochs,
        faults: marks,
        migrations: Vec::new(),
        violations: summary
            .violations
            .iter()
            .map(|v| ViolationMark {
                at_ms: heal_ms,
                node: None,
                text: format!("{}: {}", v.rule, v.text),
            })
            .collect(),
    }
}

fn print_human(s: &Summary) {
    println!(
        "nemesis: {}, {} nodes, {} users, {} faults",
        s.schedule.source,
        s.nodes,
        s.users,
        s.schedule.faults.len()
    );
    println!(
        "turns answered {}, acked {}, sent again {}; lost or applied twice: {}; sessions read {}",
        s.turns, s.acked, s.sent_again, s.lost_or_duplicated, s.reads
    );
    let errors: Vec<String> = s.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "errors and closes on the way: {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    );
    for (kind, gap) in &s.longest_unavailable {
        println!(
            "longest without a reply during {kind}: {} ms ({}, in {})",
            gap.ms, gap.uid, gap.fault
        );
    }
    match s.settled_after_ms {
        Some(ms) => println!("one ring of every member {ms} ms after the heal"),
        None => println!("the ring never settled after the heal"),
    }
    if s.violations.is_empty() {
        let rules: Vec<&str> = checker::RULES.iter().map(|(r, _)| *r).collect();
        println!("violations: none ({} held)", rules.join(", "));
    } else {
        println!("violations: {}", s.violations.len());
        for v in s.violations.iter().take(20) {
            println!("  {}: {}", v.rule, v.text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_still_under_way_counts_in_the_windows_it_spans() {
        let planned = |at_ms: u64, fault: Fault| schedule::Planned {
            at_ms,
            heal_ms: at_ms + 5_000,
            fault,
        };
        let schedule = Schedule {
            source: "test".into(),
            faults: vec![
                planned(10_000, Fault::DiskFull),
                planned(46_000, Fault::Kill { node: 2 }),
            ],
            join_ms: Some(20_000),
            drain_ms: Some(40_000),
            duration_ms: 60_000,
        };
        let mark = |index: usize, from_ms: u64| FaultMark {
            index,
            label: format!("fault {index}"),
            from_ms,
            to_ms: from_ms + 5_000,
            nodes: Vec::new(),
        };
        let marks = [mark(0, 10_000), mark(1, 46_000)];
        // The join at 20 s, done at once: nothing for a fault 26 s later.
        let done = windows(&schedule, 3, &marks, &[(20_000, 20_000)]);
        assert_eq!(done[1].allowed, 2, "the kill's own down and back");
        // The join's spare was not ready until 58 s: it may change the ring then.
        let late = windows(&schedule, 3, &marks, &[(20_000, 58_000)]);
        assert_eq!(late[1].allowed, 4, "and the join's");
        assert_eq!(
            late[0].allowed, 2,
            "a join under way from 20 s counts from 10 s"
        );
    }

    #[test]
    fn a_frozen_majority_leaves_the_rest_no_say() {
        let freeze = |nodes: Vec<usize>| Fault::Freeze { nodes };
        // One of three frozen: declared down by the two others, and back.
        assert_eq!(ring_budget(&freeze(vec![1]), 3), 2);
        // Two of three: nobody may declare them down; on resuming they may
        // judge n1 silent once, and it comes back once.
        assert_eq!(ring_budget(&freeze(vec![1, 2]), 3), 2);
        assert_eq!(ring_budget(&freeze(vec![1, 2, 3]), 5), 4);
        // Half of four: the rest decides only with n1 among it.
        assert_eq!(ring_budget(&freeze(vec![2, 3]), 4), 4);
        assert_eq!(ring_budget(&freeze(vec![0, 1]), 4), 4);
        assert_eq!(ring_budget(&Fault::Pause { node: 0 }, 3), 2);
        assert_eq!(
            ring_budget(
                &Fault::Clock {
                    node: 0,
                    step_s: 30
                },
                3
            ),
            0
        );
    }
}
