//! The engine: nodes running the real core (membership, ring, routing,
//! handoff, session) and dialog code, a simulated network, simulated MySQL and
//! Redis, and chat users, all driven by one seeded event queue.
//!
//! Events are ordered by (virtual time, a seeded random tie-break, sequence):
//! events due at the same millisecond run in an order the seed picks, so sweeps
//! explore interleavings.

use crate::check::{Checker, Distribution};
use crate::faults::{FaultKind, Schedule};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::timeline::{
    EpochMark, FaultMark, MigrationMark, NodeState, Span, Timeline, ViolationMark,
};
use crate::trace::{Record, Trace};
use confab_core::fencing::{self, Claim};
use confab_core::handoff::{Action, HandoffConfig, Input as HInput, Ownership, Phase};
use confab_core::membership::{
    Input as MInput, MemberTable, Membership, MembershipConfig, Output, Status,
};
use confab_core::ring::Ring;
use confab_core::routing::{Route, route};
use confab_core::session::{
    Event, RecordedEvent, SessionState, Snapshot, SnapshotKey, may_acknowledge,
};
use confab_core::{Epoch, MessageId, NodeId, Uid};
use confab_dialog::{DialogContext, Pipeline};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// What users say, in turn: a shoe-shop conversation, over and over.
const SCRIPT: &[&str] = &[
    "hello",
    "do you have running shoes in stock?",
    "size 42",
    "in red",
    "where is my order 12345?",
    "please call me back",
    "my phone is 13812345678",
    "thanks",
];

/// Users stop starting new turns this long before the end, so that every turn
/// can be answered before the liveness checks.
const QUIET_MS: u64 = 8_000;
/// A migration must finish this soon after its epoch change.
pub const MIGRATION_MAX_MS: u64 = 2_000;
/// A node asks again for a claim the store did not answer after this long.
const CLAIM_RETRY_MS: u64 = 250;
/// Pause between commit attempts.
const COMMIT_BACKOFF_MS: u64 = 50;

/// A user's turn, as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// The session (and its user).
    s: u32,
    /// The message number: message id `m<msg>`.
    msg: u32,
    /// Forwards so far.
    hops: u8,
}

/// How a turn was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Acked and replied: the seqs of its `ack` and `reply`.
    Done { turn_seq: u64, reply_seq: u64 },
    /// `unavailable`: retry.
    Unavailable,
    /// `overloaded`: retry later.
    Overloaded,
    /// The input filter refused it.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Node(usize),
    User(u32),
}

#[derive(Debug, Clone)]
enum Msg {
    Say(Turn),
    Turn {
        turn: Turn,
        seen: Epoch,
    },
    State {
        s: u32,
        epoch: Epoch,
        from: usize,
        bytes: Vec<u8>,
    },
    StateAck {
        s: u32,
        epoch: Epoch,
        from: usize,
    },
    Heartbeat {
        from: usize,
        epoch: Epoch,
    },
    Answer {
        s: u32,
        msg: u32,
        answer: Answer,
        from: usize,
    },
}

impl Msg {
    fn name(&self) -> &'static str {
        match self {
            Msg::Say(_) => "say",
            Msg::Turn { .. } => "turn",
            Msg::State { .. } => "state",
            Msg::StateAck { .. } => "state_ack",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Answer { .. } => "answer",
        }
    }

    fn session(&self) -> i64 {
        match self {
            Msg::Say(t) | Msg::Turn { turn: t, .. } => t.s.into(),
            Msg::State { s, .. } | Msg::StateAck { s, .. } | Msg::Answer { s, .. } => (*s).into(),
            Msg::Heartbeat { .. } => -1,
        }
    }
}

#[derive(Debug, Clone)]
enum StoreOp {
    Read,
    Cas {
        expected: u64,
        table: Box<MemberTable>,
    },
    Append {
        s: u32,
        epoch: Epoch,
        events: Vec<RecordedEvent>,
    },
    /// Claims of several sessions, each `(session, epoch, seq its memory is
    /// at)`: the claims a node makes in one step go to the store together.
    Claim(Vec<(u32, Epoch, u64)>),
}

impl StoreOp {
    fn name(&self) -> &'static str {
        match self {
            StoreOp::Read => "read_table",
            StoreOp::Cas { .. } => "cas_table",
            StoreOp::Append { .. } => "append",
            StoreOp::Claim { .. } => "claim",
        }
    }
}

#[derive(Debug, Clone)]
enum StoreReply {
    Table(Option<Box<MemberTable>>),
    Cas(Option<Box<(bool, MemberTable)>>),
    Append {
        s: u32,
        result: Result<(), Refusal>,
    },
    /// Per session claimed: its epoch, and the log after the seq given (or why not).
    Claim(Vec<(u32, Epoch, Result<Vec<RecordedEvent>, Refusal>)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unavailable,
    Fenced,
    Conflict,
}

#[derive(Debug)]
enum Ev {
    Fault {
        index: usize,
        start: bool,
    },
    Wake {
        user: u32,
        generation: u32,
    },
    Deliver {
        from: Endpoint,
        to: Endpoint,
        msg: Msg,
    },
    StoreArrive {
        node: usize,
        inc: u32,
        op: StoreOp,
    },
    StoreReply {
        node: usize,
        inc: u32,
        reply: StoreReply,
    },
    MembershipTimer {
        node: usize,
        inc: u32,
        at: u64,
    },
    SessionTimer {
        node: usize,
        inc: u32,
        s: u32,
        at: u64,
    },
    FlushClaims {
        node: usize,
        inc: u32,
    },
}

/// A queued event: its key, and where the event waits in the slab (the heap
/// moves these small entries, not the events).
struct Entry {
    at: u64,
    tie: u64,
    seq: u64,
    slot: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
impl Entry {
    fn key(&self) -> (u64, u64, u64) {
        (self.at, self.tie, self.seq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Off,
    Running,
    Crashed,
    Left,
}

/// One session held in one node's memory.
struct Held {
    own: Ownership<Turn>,
    /// The session's state in memory (when loaded, or arrived from the old owner).
    state: Option<SessionState>,
    /// The turn being committed: its events, and whether it was acked already.
    pending: Option<(Turn, Vec<RecordedEvent>, bool, u32)>,
    timer: Option<u64>,
    turns_in: u64,
    turns_out: u64,
}

struct Node {
    id: NodeId,
    life: Life,
    incarnation: u32,
    paused_until: u64,
    drift_ppm: i64,
    membership: Membership,
    timer: Option<u64>,
    ring: Ring,
    prev_ring: Ring,
    ring_at: u64,
    sessions: BTreeMap<u32, Held>,
    /// Claims asked for in this step, sent together when it ends.
    claims: Vec<(u32, Epoch, u64)>,
    drained: bool,
    shown: (NodeState, u64),
}

struct User {
    msg: u32,
    waiting: bool,
    sent_at: u64,
    generation: u32,
    /// The seqs each acked message was answered with (index: msg - 1).
    acked: Vec<(u64, u64)>,
}

#[derive(Default)]
struct Durable {
    table: MemberTable,
    fences: BTreeMap<u32, Epoch>,
    logs: BTreeMap<u32, Vec<RecordedEvent>>,
    epoch_made_at: BTreeMap<u64, u64>,
}

/// The settings of one run, drawn from the scenario by the seed.
#[derive(Debug, Clone)]
struct Settings {
    latency: (u64, u64),
    tail: f64,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    mysql_latency: (u64, u64),
    mysql_errors: f64,
    mysql_unknown: f64,
    redis_latency: u64,
    redis_timeouts: f64,
    redis_timeout_ms: u64,
    commit_attempts: u32,
}

/// Counts for the summary.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Messages users sent (first tries and retries).
    pub says: u64,
    /// Turns acked to their users.
    pub acked: u64,
    /// Answers `unavailable`.
    pub unavailable: u64,
    /// Answers `overloaded`.
    pub overloaded: u64,
    /// Users that waited past their retry time.
    pub timeouts: u64,
    /// Commits the store accepted.
    pub commits: u64,
    /// Writes the fence refused.
    pub fenced_writes: u64,
    /// Claims the fence refused.
    pub refused_claims: u64,
    /// Sessions loaded from the durable tier.
    pub loads: u64,
    /// Of which Redis held a prefix.
    pub redis_hits: u64,
    /// Redis requests that timed out (the node went on without Redis).
    pub redis_bypass: u64,
    /// Messages the network lost.
    pub lost: u64,
    /// The last epoch.
    pub epoch: u64,
    /// Migrations (state sent from an old owner to a new one).
    pub migrations: Distribution,
    /// Migrations made after the faults stopped.
    pub migrations_after_faults: Distribution,
}

/// The result of a run.
pub struct Outcome {
    /// Counts.
    pub stats: Stats,
    /// What broke.
    pub checker: Checker,
    /// The trace hash.
    pub trace: String,
    /// Records in the trace.
    pub steps: u64,
    /// Simulated ms.
    pub simulated_ms: u64,
    /// What to draw.
    pub timeline: Timeline,
    /// The trace file could not be written.
    pub trace_error: Option<std::io::Error>,
}

/// One run's world.
pub struct World {
    scenario: Scenario,
    schedule: Schedule,
    settings: Settings,
    membership: MembershipConfig,
    handoff: HandoffConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Entry>>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    net: Rng,
    store_rng: Rng,
    users_rng: Rng,
    ties: Rng,
    nodes: Vec<Node>,
    uids: Vec<Uid>,
    users: Vec<User>,
    durable: Durable,
    redis: BTreeMap<u32, u64>,
    pipeline: Pipeline,
    key: SnapshotKey,
    active_faults: Vec<usize>,
    liveness_from: u64,
    quiet_from: u64,
    end: u64,
    migrations: BTreeMap<u32, (usize, usize, Epoch, u64)>,
    checker: Checker,
    trace: Trace,
    timeline: Timeline,
    stats: Stats,
}

impl World {
    /// A world for `scenario` and `seed`, keeping only the faults `only` if given.
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        only: Option<&[usize]>,
        trace_out: Option<Box<dyn std::io::Write>>,
    ) -> Result<Self, String> {
        let mut draw = Rng::new(seed, 1);
        let schedule = Schedule::draw(scenario, &mut draw, only)?;
        let (n, st) = (&scenario.network, &scenario.storage);
        let ms = |v: f64| v.max(0.0).round() as u64;
        let latency_min = ms(n.latency_min_ms.draw(&mut draw));
        let mysql_min = ms(st.mysql_latency_min_ms.draw(&mut draw));
        let settings = Settings {
            latency: (
                latency_min,
                ms(n.latency_max_ms.draw(&mut draw)).max(latency_min),
            ),
            tail: n.tail.draw(&mut draw),
            loss: n.loss.draw(&mut draw),
            duplicate: n.duplicate.draw(&mut draw),
            reorder: n.reorder.draw(&mut draw),
            mysql_latency: (
                mysql_min,
                ms(st.mysql_latency_max_ms.draw(&mut draw)).max(mysql_min),
            ),
            mysql_errors: st.mysql_errors.draw(&mut draw),
            mysql_unknown: st.mysql_unknown_outcome.draw(&mut draw),
            redis_latency: ms(st.redis_latency_ms.draw(&mut draw)),
            redis_timeouts: st.redis_timeouts.draw(&mut draw),
            redis_timeout_ms: st.redis_timeout_ms,
            commit_attempts: st.commit_attempts.max(1),
        };
        let drift = scenario.clocks.drift_ppm.draw(&mut draw).abs();
        let membership = MembershipConfig::default();
        let handoff = HandoffConfig {
            buffer_max: scenario.handoff.buffer_max,
            timeout_ms: scenario.handoff.timeout_ms,
        };
        let nodes = (0..schedule.node_slots)
            .map(|i| {
                let id = NodeId::new(format!("n{}", i + 1)).expect("a valid node id");
                let drift_ppm = ((draw.unit() * 2.0 - 1.0) * drift).round() as i64;
                Node {
                    membership: Membership::new(id.clone(), membership.clone()),
                    id,
                    life: Life::Off,
                    incarnation: 0,
                    paused_until: 0,
                    drift_ppm,
                    timer: None,
                    ring: Ring::new(Epoch(0), []),
                    prev_ring: Ring::new(Epoch(0), []),
                    ring_at: 0,
                    sessions: BTreeMap::new(),
                    claims: Vec::new(),
                    drained: false,
                    shown: (NodeState::Off, 0),
                }
            })
            .collect();
        let liveness_from = schedule.end_ms().max((scenario.duration_s * 1000.0) as u64);
        let end = liveness_from + (scenario.settle_s * 1000.0) as u64;
        let mut timeline = Timeline {
            scenario: scenario.name.clone(),
            seed,
            end_ms: end,
            faults_end_ms: liveness_from,
            nodes: (0..schedule.node_slots)
                .map(|i| format!("n{}", i + 1))
                .collect(),
            ..Timeline::default()
        };
        for fault in schedule.active() {
            timeline.faults.push(FaultMark {
                index: fault.index,
                label: fault.label(),
                from_ms: fault.at_ms,
                to_ms: fault.until_ms,
                nodes: fault.nodes(),
            });
        }
        let mut world = Self {
            scenario: scenario.clone(),
            settings,
            membership,
            handoff,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            net: Rng::new(seed, 2),
            store_rng: Rng::new(seed, 3),
            users_rng: Rng::new(seed, 4),
            ties: Rng::new(seed, 5),
            nodes,
            uids: (0..scenario.sessions)
                .map(|i| Uid::new(format!("u{i}")).expect("a valid uid"))
                .collect(),
            users: (0..scenario.sessions)
                .map(|_| User {
                    msg: 0,
                    waiting: false,
                    sent_at: 0,
                    generation: 0,
                    acked: Vec::new(),
                })
                .collect(),
            durable: Durable::default(),
            redis: BTreeMap::new(),
            pipeline: Pipeline::shoe_shop(),
            key: SnapshotKey::new(*b"confab-sim snapshot key").expect("a long enough key"),
            active_faults: Vec::new(),
            liveness_from,
            quiet_from: end.saturating_sub(QUIET_MS),
            end,
            migrations: BTreeMap::new(),
            checker: Checker::default(),
            trace: Trace::new(trace_out),
            timeline,
            stats: Stats::default(),
            schedule,
        };
        world.start();
        Ok(world)
    }

    fn start(&mut self) {
        for node in 0..self.scenario.nodes {
            self.boot(node);
        }
        let faults: Vec<(u64, u64, usize)> = self
            .schedule
            .active()
            .map(|f| (f.at_ms, f.until_ms, f.index))
            .collect();
        for (at, until, index) in faults {
            self.push(at, Ev::Fault { index, start: true });
            self.push(
                until.max(at),
                Ev::Fault {
                    index,
                    start: false,
                },
            );
        }
        let [low, high] = self.scenario.workload.start_ms;
        for user in 0..self.scenario.sessions {
            let at = self.users_rng.between(low, high);
            self.push(
                at,
                Ev::Wake {
                    user,
                    generation: 0,
                },
            );
        }
    }

    /// Runs to the end, then checks liveness.
    pub fn run(mut self) -> Outcome {
        while let Some(Reverse(entry)) = self.queue.pop() {
            if entry.at > self.end {
                break;
            }
            self.now = entry.at;
            let ev = self.slab[entry.slot as usize]
                .take()
                .expect("a queued event");
            self.free.push(entry.slot);
            self.step(ev);
        }
        self.now = self.end;
        self.finish()
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let tie = self.ties.next_u64();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(Reverse(Entry {
            at,
            tie,
            seq: self.seq,
            slot,
        }));
    }

    fn record(&mut self, ev: &'static str, node: Option<usize>, session: i64, a: u64, b: u64) {
        self.trace.record(Record {
            t: self.now,
            ev,
            node: node.map_or(-1, |n| n as i64 + 1),
            session,
            a,
            b,
        });
    }

    fn faulty(&self) -> bool {
        self.now < self.liveness_from
    }

    // ---- time -------------------------------------------------------------

    /// The node's clock at simulated time `t`.
    fn local(&self, node: usize, t: u64) -> u64 {
        let ppm = self.nodes[node].drift_ppm;
        (t as i64 + (t as i64 * ppm) / 1_000_000).max(0) as u64
    }

    /// The first simulated time at which the node's clock reads `local`.
    fn global(&self, node: usize, local: u64) -> u64 {
        let ppm = self.nodes[node].drift_ppm;
        let mut t = ((local as i128 * 1_000_000) / (1_000_000 + ppm as i128)).max(0) as u64;
        while self.local(node, t) < local {
            t += 1;
        }
        while t > 0 && self.local(node, t - 1) >= local {
            t -= 1;
        }
        t
    }

    fn node_now(&self, node: usize) -> u64 {
        self.local(node, self.now)
    }

    // ---- the step ---------------------------------------------------------

    fn step(&mut self, ev: Ev) {
        // A paused node does nothing until its pause ends: what reaches it waits.
        if let Some(node) = ev_node(&ev)
            && self.nodes[node].paused_until > self.now
        {
            let until = self.nodes[node].paused_until;
            self.push(until, ev);
            return;
        }
        match ev {
            Ev::Fault { index, start } => self.fault(index, start),
            Ev::Wake { user, generation } => self.wake(user, generation),
            Ev::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Ev::StoreArrive { node, inc, op } => self.store_arrive(node, inc, op),
            Ev::StoreReply { node, inc, reply } => {
                if self.alive(node, inc) {
                    self.store_reply(node, reply);
                }
            }
            Ev::MembershipTimer { node, inc, at } => {
                if self.alive(node, inc) && self.nodes[node].timer == Some(at) {
                    self.record("membership_timer", Some(node), -1, 0, 0);
                    self.nodes[node].timer = None;
                    let now = self.node_now(node);
                    self.nodes[node].membership.handle_timeout(now);
                    self.membership_io(node);
                }
            }
            Ev::FlushClaims { node, inc } => {
                if self.alive(node, inc) {
                    let claims = std::mem::take(&mut self.nodes[node].claims);
                    if !claims.is_empty() {
                        self.store_op(node, StoreOp::Claim(claims), 0);
                    }
                }
            }
            Ev::SessionTimer { node, inc, s, at } => {
                if self.alive(node, inc)
                    && let Some(held) = self.nodes[node].sessions.get_mut(&s)
                    && held.timer == Some(at)
                {
                    held.timer = None;
                    self.record("session_timer", Some(node), s.into(), 0, 0);
                    let now = self.node_now(node);
                    let held = self.nodes[node].sessions.get_mut(&s).expect("held");
                    let was_active = held.own.phase() == &Phase::Active;
                    let actions = held.own.handle_timeout(now);
                    self.carry_out(node, s, actions);
                    self.after_session_step(node, s, was_active);
                }
            }
        }
    }

    fn alive(&self, node: usize, inc: u32) -> bool {
        let n = &self.nodes[node];
        n.life == Life::Running && n.incarnation == inc
    }

    // ---- faults -------------------------------------------------------------

    fn fault(&mut self, index: usize, start: bool) {
        self.record("fault", None, -1, index as u64, start.into());
        let fault = self.schedule.faults[index].clone();
        if start {
            self.active_faults.push(index);
        } else {
            self.active_faults.retain(|i| *i != index);
        }
        match (&fault.kind, start) {
            (FaultKind::Crash { node, .. }, true) => self.crash(*node),
            (
                FaultKind::Crash {
                    node,
                    restarts: true,
                },
                false,
            ) => self.boot(*node),
            (FaultKind::Pause { node }, true) => {
                self.nodes[*node].paused_until = fault.until_ms;
                self.show(*node, NodeState::Paused);
            }
            (FaultKind::Pause { node }, false) => self.show_status(*node),
            (FaultKind::Join { node }, true) => self.boot(*node),
            (FaultKind::Drain { node }, true) if self.nodes[*node].life == Life::Running => {
                let now = self.node_now(*node);
                self.nodes[*node].membership.handle(now, MInput::Drain);
                self.membership_io(*node);
            }
            (FaultKind::RedisRestart, true) => self.redis.clear(),
            _ => {}
        }
    }

    fn boot(&mut self, node: usize) {
        if self.nodes[node].life == Life::Running || self.nodes[node].life == Life::Left {
            return;
        }
        let n = &mut self.nodes[node];
        n.life = Life::Running;
        n.incarnation += 1;
        n.membership = Membership::new(n.id.clone(), self.membership.clone());
        n.timer = None;
        n.ring = Ring::new(Epoch(0), []);
        n.prev_ring = Ring::new(Epoch(0), []);
        n.sessions.clear();
        n.claims.clear();
        n.drained = false;
        self.record(
            "boot",
            Some(node),
            -1,
            self.nodes[node].incarnation.into(),
            0,
        );
        let now = self.node_now(node);
        self.nodes[node].membership.handle(now, MInput::Start);
        self.membership_io(node);
        self.show_status(node);
    }

    fn crash(&mut self, node: usize) {
        if self.nodes[node].life != Life::Running {
            return;
        }
        self.record("crash", Some(node), -1, 0, 0);
        let n = &mut self.nodes[node];
        n.life = Life::Crashed;
        n.sessions.clear();
        n.paused_until = 0;
        self.show(node, NodeState::Crashed);
    }

    // ---- the timeline -----------------------------------------------------

    fn show(&mut self, node: usize, state: NodeState) {
        let (was, since) = self.nodes[node].shown;
        if was == state {
            return;
        }
        if self.now > since && was != NodeState::Off {
            self.timeline.spans.push(Span {
                node,
                from_ms: since,
                to_ms: self.now,
                state: was,
            });
        }
        self.nodes[node].shown = (state, self.now);
    }

    fn show_status(&mut self, node: usize) {
        let n = &self.nodes[node];
        let state = match n.life {
            Life::Off | Life::Left => NodeState::Off,
            Life::Crashed => NodeState::Crashed,
            Life::Running if n.paused_until > self.now => NodeState::Paused,
            Life::Running => match n.membership.status() {
                None | Some(Status::Joining) => NodeState::Joining,
                Some(Status::Up) => NodeState::Up,
                Some(Status::Draining) => NodeState::Draining,
                Some(Status::Down) => NodeState::Down,
            },
        };
        self.show(node, state);
    }

    // ---- the network -------------------------------------------------------

    fn send(&mut self, from: Endpoint, to: Endpoint, msg: Msg) {
        let faulty = self.faulty();
        if faulty && self.cut(from, to) {
            self.stats.lost += 1;
            return;
        }
        if faulty && self.net.chance(self.settings.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if faulty && self.net.chance(self.settings.duplicate) {
            2
        } else {
            1
        };
        if copies == 2 {
            let at = self.delivery_at(from, to, faulty);
            let copy = msg.clone();
            self.push(at, Ev::Deliver { from, to, msg: copy });
        }
        let at = self.delivery_at(from, to, faulty);
        self.push(at, Ev::Deliver { from, to, msg });
    }

    /// When a message sent now arrives: latency, a tail, reordering, clogs.
    fn delivery_at(&mut self, from: Endpoint, to: Endpoint, faulty: bool) -> u64 {
        let (low, high) = self.settings.latency;
        let mut delay = self.net.between(low, high);
        if faulty && self.net.chance(self.settings.tail) {
            delay *= 10;
        }
        if faulty && self.net.chance(self.settings.reorder) {
            delay += self.net.between(0, 5 * high);
        }
        let mut at = self.now + delay;
        for end in [from, to].into_iter().filter_map(|e| self.clogged_until(e)) {
            at = at.max(end);
        }
        at
    }

    fn cut(&self, from: Endpoint, to: Endpoint) -> bool {
        let (Endpoint::Node(f), Endpoint::Node(t)) = (from, to) else {
            return false;
        };
        self.active_faults
            .iter()
            .any(|i| match &self.schedule.faults[*i].kind {
                FaultKind::Partition { a, b, one_way } => {
                    (a.contains(&f) && b.contains(&t))
                        || (!one_way && b.contains(&f) && a.contains(&t))
                }
                _ => false,
            })
    }

    fn clogged_until(&self, end: Endpoint) -> Option<u64> {
        let Endpoint::Node(node) = end else {
            return None;
        };
        self.active_faults
            .iter()
            .map(|i| &self.schedule.faults[*i])
            .filter(|f| f.kind == FaultKind::Clog { node })
            .map(|f| f.until_ms)
            .max()
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint, msg: Msg) {
        let from_n = match from {
            Endpoint::Node(n) => n as u64 + 1,
            Endpoint::User(_) => 0,
        };
        match to {
            Endpoint::User(user) => {
                self.record("deliver_user", None, msg.session(), from_n, user.into());
                if let Msg::Answer {
                    s,
                    msg,
                    answer,
                    from,
                } = msg
                {
                    self.answered(s, msg, answer, from);
                }
            }
            Endpoint::Node(node) => {
                if self.nodes[node].life != Life::Running {
                    self.stats.lost += 1;
                    return;
                }
                self.record(msg.name(), Some(node), msg.session(), from_n, 0);
                self.node_message(node, msg);
            }
        }
    }

    // ---- users --------------------------------------------------------------

    fn wake(&mut self, user: u32, generation: u32) {
        if self.users[user as usize].generation != generation {
            return;
        }
        self.record("wake", None, user.into(), 0, 0);
        let u = &mut self.users[user as usize];
        if u.waiting {
            self.stats.timeouts +=
                u64::from(self.now >= u.sent_at + self.scenario.workload.retry_after_ms);
        } else {
            if self.now >= self.quiet_from {
                return;
            }
            u.msg += 1;
            u.waiting = true;
        }
        self.say(user);
    }

    fn say(&mut self, user: u32) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .collect();
        let u = &mut self.users[user as usize];
        u.sent_at = self.now;
        u.generation += 1;
        let (msg, generation) = (u.msg, u.generation);
        self.stats.says += 1;
        if !running.is_empty() {
            let gateway = running[self.users_rng.below(running.len() as u64) as usize];
            let turn = Turn {
                s: user,
                msg,
                hops: 0,
            };
            self.send(
                Endpoint::User(user),
                Endpoint::Node(gateway),
                Msg::Say(turn),
            );
        }
        let retry = self.now + self.scenario.workload.retry_after_ms;
        self.push(retry, Ev::Wake { user, generation });
    }

    fn answered(&mut self, s: u32, msg: u32, answer: Answer, from: usize) {
        let u = &self.users[s as usize];
        let current = u.waiting && u.msg == msg;
        match answer {
            Answer::Done {
                turn_seq,
                reply_seq,
            } => {
                if let Some(seen) = u.acked.get(msg as usize - 1) {
                    if *seen != (turn_seq, reply_seq) {
                        self.checker.violate(
                            self.now,
                            "one-reply-per-turn",
                            Some(from),
                            format!(
                                "u{s} m{msg}: answered at seqs {}/{} and again at {turn_seq}/{reply_seq}: applied twice",
                                seen.0, seen.1
                            ),
                        );
                    }
                    return;
                }
                if !current {
                    return;
                }
                self.check_durable(s, msg, turn_seq, reply_seq, Some(from));
                self.stats.acked += 1;
                let think = self.scenario.workload.think_ms;
                let wait = self.users_rng.between(think[0], think[1]);
                let u = &mut self.users[s as usize];
                u.acked.push((turn_seq, reply_seq));
                u.waiting = false;
                u.generation += 1;
                let generation = u.generation;
                self.push(
                    self.now + wait,
                    Ev::Wake {
                        user: s,
                        generation,
                    },
                );
            }
            Answer::Unavailable | Answer::Overloaded | Answer::Refused => {
                if answer == Answer::Unavailable {
                    self.stats.unavailable += 1;
                } else if answer == Answer::Overloaded {
                    self.stats.overloaded += 1;
                }
                if current {
                    let [low, high] = self.scenario.workload.error_backoff_ms;
                    let wait = self.users_rng.between(low, high);
                    let u = &mut self.users[s as usize];
                    u.generation += 1;
                    let generation = u.generation;
                    self.push(
                        self.now + wait,
                        Ev::Wake {
                            user: s,
                            generation,
                        },
                    );
                }
            }
        }
    }

    /// An acked turn must be in the durable log, at the seqs acked.
    fn check_durable(
        &mut self,
        s: u32,
        msg: u32,
        turn_seq: u64,
        reply_seq: u64,
        from: Option<usize>,
    ) {
        let log = self
            .durable
            .logs
            .get(&s)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let at = |seq: u64| log.get(seq.wrapping_sub(1) as usize).map(|e| &e.event);
        let id = format!("m{msg}");
        let received = matches!(at(turn_seq), Some(Event::TurnReceived { message_id, .. }) if message_id.as_str() == id);
        let replied = matches!(at(reply_seq), Some(Event::ReplyProduced { message_id, .. }) if message_id.as_str() == id);
        if !(received && replied) {
            self.checker.violate(
                self.now,
                "acked-turn-durable",
                from,
                format!("u{s} m{msg}: acked at seqs {turn_seq}/{reply_seq} but not in the durable log (it holds {} events)", log.len()),
            );
        }
    }

    // ---- a node's messages ------------------------------------------------

    fn node_message(&mut self, node: usize, msg: Msg) {
        match msg {
            Msg::Say(turn) => self.route_turn(node, turn, None),
            Msg::Turn { turn, seen } => self.route_turn(node, turn, Some(seen)),
            Msg::Heartbeat { from, epoch } => {
                let now = self.node_now(node);
                let from = self.nodes[from].id.clone();
                self.nodes[node]
                    .membership
                    .handle(now, MInput::Heartbeat { from, epoch });
                self.membership_io(node);
            }
            Msg::State {
                s,
                epoch,
                from,
                bytes,
            } => self.state_arrived(node, s, epoch, from, &bytes),
            Msg::StateAck { s, epoch, from } => {
                let to = self.nodes[from].id.clone();
                let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
                    return;
                };
                let matches = matches!(held.own.phase(), Phase::HandingOff { to: t, sent: true, .. } if *t == to)
                    && held.own.epoch() == epoch;
                if matches {
                    self.session_input(node, s, HInput::StateAcked);
                }
            }
            Msg::Answer { .. } => {}
        }
    }

    fn answer(&mut self, node: usize, turn: Turn, answer: Answer) {
        let msg = Msg::Answer {
            s: turn.s,
            msg: turn.msg,
            answer,
            from: node,
        };
        self.send(Endpoint::Node(node), Endpoint::User(turn.s), msg);
    }

    fn route_turn(&mut self, node: usize, turn: Turn, seen: Option<Epoch>) {
        let s = turn.s;
        if let Some(held) = self.nodes[node].sessions.get(&s)
            && !matches!(held.own.phase(), Phase::Released { .. })
        {
            self.session_input(node, s, HInput::Turn(turn));
            return;
        }
        let n = &self.nodes[node];
        match route(&n.ring, &n.id, &self.uids[s as usize], seen, turn.hops) {
            Route::Serve => {
                self.hold(node, s, None);
                self.session_input(node, s, HInput::Turn(turn));
            }
            Route::Forward { to, epoch } => {
                let to = node_of(&to);
                let turn = Turn {
                    hops: turn.hops + 1,
                    ..turn
                };
                self.send(
                    Endpoint::Node(node),
                    Endpoint::Node(to),
                    Msg::Turn { turn, seen: epoch },
                );
            }
            Route::Refresh => {
                // A newer epoch seen means this node's ring is stale: read the table.
                self.refresh(node);
                self.answer(node, turn, Answer::Unavailable);
            }
        }
    }

    /// Makes sure `node` holds session `s`: a new holder loads it from the
    /// durable tier, or waits for its old owner's state when one may come.
    fn hold(&mut self, node: usize, s: u32, arriving: Option<Epoch>) {
        if self.nodes[node].sessions.contains_key(&s) {
            return;
        }
        let n = &self.nodes[node];
        let uid = &self.uids[s as usize];
        let now = self.node_now(node);
        let epoch = arriving.unwrap_or(n.ring.epoch()).max(n.ring.epoch());
        let previous = n.prev_ring.owner(uid).filter(|p| **p != n.id);
        let old_owner_alive = previous.is_some_and(|p| {
            n.membership
                .table()
                .and_then(|t| t.members.get(p))
                .is_some_and(|st| matches!(st, Status::Up | Status::Draining))
        });
        let recently = self.now < n.ring_at + self.handoff.timeout_ms;
        let (own, first) = if arriving.is_some() || (old_owner_alive && recently) {
            (
                Ownership::awaiting(n.id.clone(), epoch, now, self.handoff.clone()),
                None,
            )
        } else {
            let (own, claim) = Ownership::loading(n.id.clone(), epoch, now, self.handoff.clone());
            (own, Some(claim))
        };
        self.nodes[node].sessions.insert(
            s,
            Held {
                own,
                state: None,
                pending: None,
                timer: None,
                turns_in: 0,
                turns_out: 0,
            },
        );
        if let Some(claim) = first {
            self.carry_out(node, s, vec![claim]);
        }
    }

    fn state_arrived(&mut self, node: usize, s: u32, epoch: Epoch, from: usize, bytes: &[u8]) {
        let ack = Msg::StateAck {
            s,
            epoch,
            from: node,
        };
        self.send(Endpoint::Node(node), Endpoint::Node(from), ack);
        let state = match Snapshot::decode(bytes, &self.key) {
            Ok(snapshot) => snapshot.state,
            Err(e) => {
                self.checker
                    .violate(self.now, "state-decodes", Some(node), format!("u{s}: {e}"));
                return;
            }
        };
        let n = &self.nodes[node];
        if epoch < n.ring.epoch() && n.ring.owner(&self.uids[s as usize]) != Some(&n.id) {
            return; // the ring has moved on: the turns forwarded here are routed on
        }
        self.hold(node, s, Some(epoch));
        let me = self.nodes[node].id.clone();
        if epoch > self.nodes[node].sessions[&s].own.epoch() {
            self.session_input(node, s, HInput::RingChanged { epoch, owner: me });
        }
        let held = self.nodes[node].sessions.get_mut(&s).expect("held");
        if matches!(
            held.own.phase(),
            Phase::Awaiting {
                claiming: false,
                ..
            }
        ) {
            // Memory and the state sent are both prefixes of the durable log:
            // keep the longer (the claim reads the rest). A turn in flight here
            // is applied to the memory it was served from.
            let newer = held.state.as_ref().is_none_or(|m| m.seq() < state.seq());
            if newer && held.pending.is_none() {
                held.state = Some(state);
            }
            self.session_input(node, s, HInput::StateArrived);
        }
        self.migration_done(node, s);
    }

    // ---- a session on a node ------------------------------------------------

    fn session_input(&mut self, node: usize, s: u32, input: HInput<Turn>) {
        let now = self.node_now(node);
        let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
            return;
        };
        if std::env::var("SIMDEBUG").is_ok_and(|v| v == s.to_string()) {
            eprintln!(
                "{} n{} {:?} at {:?} {:?} state seq {:?}",
                self.now,
                node + 1,
                input,
                held.own.epoch(),
                held.own.phase(),
                held.state.as_ref().map(|s| s.seq())
            );
        }
        if matches!(input, HInput::Turn(_)) {
            held.turns_in += 1;
        }
        let was_active = held.own.phase() == &Phase::Active;
        let actions = held.own.handle(now, input);
        self.carry_out(node, s, actions);
        self.after_session_step(node, s, was_active);
    }

    fn carry_out(&mut self, node: usize, s: u32, actions: Vec<Action<Turn>>) {
        for action in actions {
            let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
                return;
            };
            if matches!(
                action,
                Action::Serve(_) | Action::Forward { .. } | Action::Refuse(_)
            ) {
                held.turns_out += 1;
            }
            let epoch = held.own.epoch();
            match action {
                Action::Serve(turn) => self.serve(node, s, turn),
                Action::Forward { to, turn } => {
                    let turn = Turn {
                        hops: turn.hops + 1,
                        ..turn
                    };
                    let to = node_of(&to);
                    self.send(
                        Endpoint::Node(node),
                        Endpoint::Node(to),
                        Msg::Turn { turn, seen: epoch },
                    );
                }
                Action::Refuse(turn) => {
                    let answer = if held.own.phase() == &Phase::Fenced {
                        Answer::Unavailable
                    } else {
                        Answer::Overloaded
                    };
                    self.answer(node, turn, answer);
                }
                Action::SendState { to, epoch } => self.send_state(node, s, node_of(&to), epoch),
                Action::Claim { epoch, from_state } => {
                    if !from_state {
                        held.state = None;
                    }
                    let after = held.state.as_ref().map_or(0, |m| m.seq().0);
                    self.claim_later(node, s, epoch, after);
                }
                Action::Released => {
                    // A turn still being committed keeps its place: its answer
                    // goes to the user and its outcome to the handoff machine.
                    held.state = None;
                    self.check_drained(node);
                }
            }
        }
    }

    fn after_session_step(&mut self, node: usize, s: u32, was_active: bool) {
        let Some(held) = self.nodes[node].sessions.get(&s) else {
            return;
        };
        // Turns are conserved: every turn a node took is served, forwarded,
        // refused, or still buffered.
        let inside = held.turns_in - held.turns_out;
        if inside != held.own.buffered() as u64 {
            let detail = format!(
                "u{s}: n{} took {} turns and let {} out, but buffers {}: turns vanished",
                node + 1,
                held.turns_in,
                held.turns_out,
                held.own.buffered()
            );
            self.checker
                .violate(self.now, "turns-conserved", Some(node), detail);
            let held = self.nodes[node].sessions.get_mut(&s).expect("held");
            held.turns_in = held.turns_out + held.own.buffered() as u64;
        }
        // At most one active owner: only one node may be active at an epoch
        // no newer claim has superseded (the checker's own reading, not the
        // store's fencing code, which a planted bug may break). Only a node
        // that just became active can break it.
        let now_active = self.nodes[node]
            .sessions
            .get(&s)
            .is_some_and(|h| h.own.phase() == &Phase::Active);
        if was_active || !now_active {
            self.arm_session_timer(node, s);
            return;
        }
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        let active: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .filter(|n| {
                self.nodes[*n]
                    .sessions
                    .get(&s)
                    .is_some_and(|h| h.own.phase() == &Phase::Active && h.own.epoch() >= fence)
            })
            .collect();
        if active.len() > 1 {
            let names: Vec<String> = active.iter().map(|n| format!("n{}", n + 1)).collect();
            self.checker.violate(
                self.now,
                "one-active-owner",
                Some(node),
                format!("u{s}: active on {} at once", names.join(" and ")),
            );
        }
        self.arm_session_timer(node, s);
    }

    /// Queues a claim; the claims of one step go to the store as one request.
    fn claim_later(&mut self, node: usize, s: u32, epoch: Epoch, after: u64) {
        let n = &mut self.nodes[node];
        if n.claims.is_empty() {
            let inc = n.incarnation;
            self.push(self.now, Ev::FlushClaims { node, inc });
        }
        self.nodes[node].claims.push((s, epoch, after));
    }

    fn arm_session_timer(&mut self, node: usize, s: u32) {
        let Some(local) = self.nodes[node]
            .sessions
            .get(&s)
            .and_then(|h| h.own.poll_timeout())
        else {
            return;
        };
        let at = self.global(node, local).max(self.now);
        let inc = self.nodes[node].incarnation;
        let held = self.nodes[node].sessions.get_mut(&s).expect("held");
        if held.timer.is_none_or(|t| at < t) {
            held.timer = Some(at);
            self.push(at, Ev::SessionTimer { node, inc, s, at });
        }
    }

    fn serve(&mut self, node: usize, s: u32, turn: Turn) {
        let now = self.node_now(node);
        let held = self.nodes[node].sessions.get_mut(&s).expect("held");
        let Some(state) = &held.state else {
            self.checker.violate(
                self.now,
                "served-loaded",
                Some(node),
                format!("u{s}: served with no state"),
            );
            return;
        };
        let message_id = MessageId::new(format!("m{}", turn.msg)).expect("a valid message id");
        if let Some(done) = state.duplicate(&message_id) {
            let (turn_seq, reply_seq) = match done {
                confab_core::session::Duplicate::Recent(r) => (r.turn_seq.0, r.reply_seq.0),
                confab_core::session::Duplicate::Logged(p) => (p.turn_seq.0, p.reply_seq.0),
            };
            self.answer(
                node,
                turn,
                Answer::Done {
                    turn_seq,
                    reply_seq,
                },
            );
            self.session_input(node, s, HInput::Served);
            return;
        }
        let text = SCRIPT[(turn.msg as usize - 1) % SCRIPT.len()];
        let ctx = DialogContext {
            slots: state.slots(),
            last_intent: state.last_intent(),
        };
        let Ok(output) = self.pipeline.run(ctx, text) else {
            self.answer(node, turn, Answer::Refused);
            self.session_input(node, s, HInput::Served);
            return;
        };
        let epoch = held.own.epoch();
        let events = state
            .record_turn(
                &self.uids[s as usize],
                epoch,
                now,
                message_id,
                output.text,
                output.decision,
            )
            .to_vec();
        let early = may_acknowledge(false);
        held.pending = Some((turn, events.clone(), early, 1));
        if early {
            let answer = Answer::Done {
                turn_seq: events[0].seq.0,
                reply_seq: events[2].seq.0,
            };
            self.answer(node, turn, answer);
        }
        self.store_op(node, StoreOp::Append { s, epoch, events }, 0);
    }

    fn send_state(&mut self, node: usize, s: u32, to: usize, epoch: Epoch) {
        let held = &self.nodes[node].sessions[&s];
        let state = held.state.clone().unwrap_or_default();
        let snapshot = Snapshot::new(
            self.uids[s as usize].clone(),
            self.node_now(node),
            epoch,
            state,
        );
        let bytes = snapshot.encode(&self.key);
        let start = self
            .durable
            .epoch_made_at
            .get(&epoch.0)
            .copied()
            .unwrap_or(self.now);
        if let Some((from, to, _, started)) = self.migrations.insert(s, (node, to, epoch, start)) {
            // Superseded by a newer move before it finished.
            self.timeline.migrations.push(MigrationMark {
                session: s,
                from,
                to,
                start_ms: started,
                end_ms: None,
            });
            self.stats.migrations.unfinished += 1;
        }
        self.send(
            Endpoint::Node(node),
            Endpoint::Node(to),
            Msg::State {
                s,
                epoch,
                from: node,
                bytes,
            },
        );
    }

    fn check_drained(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.drained || n.membership.status() != Some(Status::Draining) {
            return;
        }
        let gone = n
            .sessions
            .values()
            .all(|h| matches!(h.own.phase(), Phase::Released { .. } | Phase::Fenced));
        if gone {
            self.nodes[node].drained = true;
            let now = self.node_now(node);
            self.nodes[node].membership.handle(now, MInput::Drained);
            self.membership_io(node);
        }
    }

    // ---- membership ---------------------------------------------------------

    fn membership_io(&mut self, node: usize) {
        while let Some(output) = self.nodes[node].membership.poll_output() {
            match output {
                Output::ReadTable => self.store_op(node, StoreOp::Read, 0),
                Output::Cas { expected, table } => {
                    let table = Box::new(table);
                    self.store_op(node, StoreOp::Cas { expected, table }, 0)
                }
                Output::Heartbeat { to, epoch } => {
                    let to = node_of(&to);
                    self.send(
                        Endpoint::Node(node),
                        Endpoint::Node(to),
                        Msg::Heartbeat { from: node, epoch },
                    );
                }
                Output::RingChanged { epoch, nodes } => self.ring_changed(node, epoch, nodes),
                Output::Left => {
                    self.record("left", Some(node), -1, 0, 0);
                    self.nodes[node].life = Life::Left;
                    self.nodes[node].sessions.clear();
                    self.show(node, NodeState::Off);
                    return;
                }
            }
        }
        self.show_status(node);
        if self.nodes[node].life != Life::Running {
            return;
        }
        let Some(local) = self.nodes[node].membership.poll_timeout() else {
            return;
        };
        let at = self.global(node, local).max(self.now);
        if self.nodes[node].timer.is_none_or(|t| at < t) {
            self.nodes[node].timer = Some(at);
            let inc = self.nodes[node].incarnation;
            self.push(at, Ev::MembershipTimer { node, inc, at });
        }
    }

    fn refresh(&mut self, node: usize) {
        let now = self.node_now(node);
        self.nodes[node].membership.handle(now, MInput::Refresh);
        self.membership_io(node);
    }

    fn ring_changed(&mut self, node: usize, epoch: Epoch, members: Vec<NodeId>) {
        self.record("ring", Some(node), -1, epoch.0, members.len() as u64);
        let ring = Ring::new(epoch, members);
        let n = &mut self.nodes[node];
        n.prev_ring = std::mem::replace(&mut n.ring, ring);
        n.ring_at = self.now;
        let held: Vec<u32> = n.sessions.keys().copied().collect();
        for s in held {
            let Some(owner) = self.nodes[node].ring.owner(&self.uids[s as usize]).cloned() else {
                continue;
            };
            self.session_input(node, s, HInput::RingChanged { epoch, owner });
        }
        self.check_drained(node);
    }

    // ---- the stores ---------------------------------------------------------

    fn store_op(&mut self, node: usize, op: StoreOp, delay: u64) {
        let (low, high) = self.settings.mysql_latency;
        let extra: u64 = self
            .active_faults
            .iter()
            .filter_map(|i| match self.schedule.faults[*i].kind {
                FaultKind::SlowStorage { extra_ms } => Some(extra_ms),
                _ => None,
            })
            .sum();
        let mut there = self.store_rng.between(low, high).div_ceil(2) + extra;
        if let StoreOp::Claim(claims) = &op {
            // A load reads Redis first (the cached prefix), then MySQL's tail.
            self.stats.loads += claims.len() as u64;
            if self.faulty() && self.store_rng.chance(self.settings.redis_timeouts) {
                self.stats.redis_bypass += 1;
                there += self.settings.redis_timeout_ms;
            } else {
                there += self.settings.redis_latency;
                let hits = claims.iter().filter(|(s, ..)| self.redis.contains_key(s));
                self.stats.redis_hits += hits.count() as u64;
            }
        }
        let inc = self.nodes[node].incarnation;
        self.push(self.now + delay + there, Ev::StoreArrive { node, inc, op });
    }

    fn store_arrive(&mut self, node: usize, inc: u32, op: StoreOp) {
        let session = match &op {
            StoreOp::Append { s, .. } => i64::from(*s),
            StoreOp::Claim(claims) if claims.len() == 1 => i64::from(claims[0].0),
            _ => -1,
        };
        let count = match &op {
            StoreOp::Claim(claims) => claims.len() as u64,
            _ => 1,
        };
        self.record(op.name(), Some(node), session, count, 0);
        let faulty = self.faulty();
        let error_rate = self
            .active_faults
            .iter()
            .filter_map(|i| match self.schedule.faults[*i].kind {
                FaultKind::StorageErrors { rate } => Some(rate),
                _ => None,
            })
            .fold(
                if faulty {
                    self.settings.mysql_errors
                } else {
                    0.0
                },
                f64::max,
            );
        let failed = self.store_rng.chance(error_rate);
        let lost_answer = faulty && self.store_rng.chance(self.settings.mysql_unknown);
        let reply = match op {
            StoreOp::Read => {
                StoreReply::Table((!failed).then(|| Box::new(self.durable.table.clone())))
            }
            StoreOp::Cas { expected, table } => {
                StoreReply::Cas((!failed).then(|| Box::new(self.cas(expected, *table))))
            }
            StoreOp::Append { s, epoch, events } => {
                let result = if failed {
                    Err(Refusal::Unavailable)
                } else {
                    self.append(node, s, epoch, events)
                };
                StoreReply::Append { s, result }
            }
            StoreOp::Claim(claims) => StoreReply::Claim(
                claims
                    .into_iter()
                    .map(|(s, epoch, after)| {
                        let result = if failed {
                            Err(Refusal::Unavailable)
                        } else {
                            self.claim(s, epoch, after)
                        };
                        (s, epoch, result)
                    })
                    .collect(),
            ),
        };
        // Applied, but the answer is lost: the node sees an error.
        let reply = if lost_answer && !failed {
            lose(reply)
        } else {
            reply
        };
        let (low, high) = self.settings.mysql_latency;
        let back = self.store_rng.between(low, high) / 2;
        self.push(self.now + back, Ev::StoreReply { node, inc, reply });
    }

    fn cas(&mut self, expected: u64, table: MemberTable) -> (bool, MemberTable) {
        let applied = self.durable.table.version == expected;
        if applied {
            if table.epoch > self.durable.table.epoch {
                self.durable.epoch_made_at.insert(table.epoch.0, self.now);
                self.stats.epoch = table.epoch.0;
                self.timeline.epochs.push(EpochMark {
                    at_ms: self.now,
                    epoch: table.epoch.0,
                    ring: table.ring_nodes().iter().map(node_of).collect(),
                });
            }
            self.durable.table = table;
        }
        (applied, self.durable.table.clone())
    }

    fn append(
        &mut self,
        node: usize,
        s: u32,
        epoch: Epoch,
        events: Vec<RecordedEvent>,
    ) -> Result<(), Refusal> {
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        if !fencing::admits_write(fence, epoch) {
            self.stats.fenced_writes += 1;
            return Err(Refusal::Fenced);
        }
        let log = self.durable.logs.entry(s).or_default();
        let last = log.last().map_or(0, |e| e.seq.0);
        let first = events.first().map_or(last + 1, |e| e.seq.0);
        if first <= last {
            // The (uid, seq) primary key refuses it.
            return Err(Refusal::Conflict);
        }
        self.checker.wrote(self.now, node, s, epoch, first, last);
        self.stats.commits += 1;
        log.extend(events);
        // Written through to Redis, unless Redis times out (then it is bypassed:
        // it keeps an older prefix, which loads complete from MySQL).
        if self.faulty() && self.store_rng.chance(self.settings.redis_timeouts) {
            self.stats.redis_bypass += 1;
        } else {
            let len = self.durable.logs[&s].len() as u64;
            self.redis.insert(s, len);
        }
        Ok(())
    }

    fn claim(&mut self, s: u32, epoch: Epoch, after: u64) -> Result<Vec<RecordedEvent>, Refusal> {
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        match fencing::claim(fence, epoch) {
            Claim::Refused => {
                self.stats.refused_claims += 1;
                return Err(Refusal::Fenced);
            }
            Claim::Raise => {
                self.durable.fences.insert(s, epoch);
                self.checker.claimed(s, epoch);
            }
            Claim::Held => {}
        }
        // The claimant's memory is a prefix of the log: it gets the rest.
        let log = self
            .durable
            .logs
            .get(&s)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(log.get(after as usize..).unwrap_or_default().to_vec())
    }

    fn store_reply(&mut self, node: usize, reply: StoreReply) {
        let now = self.node_now(node);
        match reply {
            StoreReply::Table(table) => {
                self.record("table_read", Some(node), -1, table.is_some().into(), 0);
                let input = table.map_or(MInput::StoreFailed, |t| MInput::TableRead(*t));
                self.nodes[node].membership.handle(now, input);
                self.membership_io(node);
            }
            StoreReply::Cas(result) => {
                self.record(
                    "table_cas",
                    Some(node),
                    -1,
                    result.as_ref().is_some_and(|r| r.0).into(),
                    0,
                );
                let input = result.map_or(MInput::StoreFailed, |done| {
                    let (applied, table) = *done;
                    MInput::CasDone { applied, table }
                });
                self.nodes[node].membership.handle(now, input);
                self.membership_io(node);
            }
            StoreReply::Append { s, result } => self.committed(node, s, result),
            StoreReply::Claim(results) => {
                for (s, epoch, result) in results {
                    self.claimed(node, s, epoch, result);
                }
            }
        }
    }

    fn committed(&mut self, node: usize, s: u32, result: Result<(), Refusal>) {
        self.record("committed", Some(node), s.into(), result.is_ok().into(), 0);
        let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
            return;
        };
        let Some((turn, events, acked, attempts)) = held.pending.take() else {
            return;
        };
        let done = Answer::Done {
            turn_seq: events[0].seq.0,
            reply_seq: events[2].seq.0,
        };
        match result {
            Ok(()) => {
                if let Some(state) = &mut held.state {
                    for event in &events {
                        if let Err(e) = state.apply(event) {
                            self.checker.violate(
                                self.now,
                                "log-applies",
                                Some(node),
                                format!("u{s}: {e}"),
                            );
                        }
                    }
                }
                if !acked && may_acknowledge(true) {
                    self.answer(node, turn, done);
                }
                self.session_input(node, s, HInput::Served);
            }
            Err(Refusal::Unavailable) if attempts < self.settings.commit_attempts => {
                // The same events at the same epoch: the ring may have moved
                // since, but this write was made (and fenced) at that epoch.
                let epoch = events[0].epoch;
                held.pending = Some((turn, events.clone(), acked, attempts + 1));
                let delay = COMMIT_BACKOFF_MS << (attempts - 1);
                self.store_op(node, StoreOp::Append { s, epoch, events }, delay);
            }
            Err(refusal) => {
                held.state = None;
                if !acked {
                    self.answer(node, turn, Answer::Unavailable);
                }
                let input = if refusal == Refusal::Fenced {
                    // A newer epoch claimed the session: this node's ring is stale.
                    self.refresh(node);
                    HInput::Fenced
                } else {
                    HInput::Reload
                };
                self.session_input(node, s, input);
            }
        }
    }

    fn claimed(
        &mut self,
        node: usize,
        s: u32,
        epoch: Epoch,
        result: Result<Vec<RecordedEvent>, Refusal>,
    ) {
        self.record(
            "claimed",
            Some(node),
            s.into(),
            epoch.0,
            result.is_ok().into(),
        );
        let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
            return;
        };
        if held.own.claiming() != Some(epoch) {
            return; // an answer to a claim this node no longer waits for
        }
        match result {
            Ok(tail) => {
                let mut state = held.state.take().unwrap_or_default();
                let from = state.seq();
                for event in tail.iter().filter(|e| e.seq > from) {
                    if let Err(e) = state.apply(event) {
                        self.checker.violate(
                            self.now,
                            "log-applies",
                            Some(node),
                            format!("u{s}: {e}"),
                        );
                        break;
                    }
                }
                held.state = Some(state);
                self.session_input(node, s, HInput::Loaded);
                self.migration_done(node, s);
            }
            Err(Refusal::Fenced) => {
                held.state = None;
                self.refresh(node);
                self.session_input(node, s, HInput::ClaimRefused);
            }
            Err(_) => {
                // Ask again, from the same memory (the machine claims a newer
                // epoch once this one is loaded, if the ring moved meanwhile).
                let after = held.state.as_ref().map_or(0, |m| m.seq().0);
                let claim = StoreOp::Claim(vec![(s, epoch, after)]);
                self.store_op(node, claim, CLAIM_RETRY_MS);
            }
        }
    }

    fn migration_done(&mut self, node: usize, s: u32) {
        let active = self.nodes[node]
            .sessions
            .get(&s)
            .is_some_and(|h| h.own.phase() == &Phase::Active);
        let Some((from, to, epoch, start)) = self.migrations.get(&s).copied() else {
            return;
        };
        if !active || self.nodes[node].sessions[&s].own.epoch() < epoch {
            return;
        }
        self.migrations.remove(&s);
        let took = self.now - start;
        self.stats.migrations.finished.push(took);
        if start >= self.liveness_from {
            self.stats.migrations_after_faults.finished.push(took);
            if took > MIGRATION_MAX_MS {
                self.checker.violate(
                    self.now,
                    "migration-within-2s",
                    Some(node),
                    format!(
                        "u{s}: n{} to n{} took {took} ms after epoch {}",
                        from + 1,
                        to + 1,
                        epoch.0
                    ),
                );
            }
        }
        self.timeline.migrations.push(MigrationMark {
            session: s,
            from,
            to,
            start_ms: start,
            end_ms: Some(self.now),
        });
    }

    // ---- the end ------------------------------------------------------------

    fn finish(mut self) -> Outcome {
        self.liveness();
        for (s, (from, to, epoch, start)) in std::mem::take(&mut self.migrations) {
            self.stats.migrations.unfinished += 1;
            if start >= self.liveness_from {
                self.stats.migrations_after_faults.unfinished += 1;
                self.checker.violate(
                    self.end,
                    "migration-within-2s",
                    Some(to),
                    format!(
                        "u{s}: n{} to n{} at epoch {} never finished",
                        from + 1,
                        to + 1,
                        epoch.0
                    ),
                );
            }
            self.timeline.migrations.push(MigrationMark {
                session: s,
                from,
                to,
                start_ms: start,
                end_ms: None,
            });
        }
        for node in 0..self.nodes.len() {
            self.show(node, NodeState::Off);
        }
        self.stats.migrations.finish();
        self.stats.migrations_after_faults.finish();
        for v in self.checker.violations() {
            self.timeline.violations.push(ViolationMark {
                at_ms: v.at_ms,
                node: v.node,
                text: format!("{}: {}", v.invariant, v.detail),
            });
        }
        let steps = self.trace.len();
        let (trace, trace_error) = self.trace.finish();
        Outcome {
            stats: self.stats,
            checker: self.checker,
            trace,
            steps,
            simulated_ms: self.end,
            timeline: self.timeline,
            trace_error,
        }
    }

    /// After the faults stopped: the ring is agreed, every session is served by
    /// its ring owner, every user was answered, and every log replays.
    fn liveness(&mut self) {
        let end = self.end;
        let table = self.durable.table.clone();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.life == Life::Running && n.membership.epoch() != Some(table.epoch) {
                let detail = format!(
                    "n{} holds epoch {:?} but the table is at epoch {}",
                    i + 1,
                    n.membership.epoch().map(|e| e.0),
                    table.epoch.0
                );
                self.checker.violate(end, "ring-agreed", Some(i), detail);
            }
        }
        let ring = Ring::new(table.epoch, table.ring_nodes());
        for s in 0..self.uids.len() as u32 {
            let owner = ring.owner(&self.uids[s as usize]).map(node_of);
            for (i, n) in self.nodes.iter().enumerate() {
                let active = n.life == Life::Running
                    && n.sessions
                        .get(&s)
                        .is_some_and(|h| h.own.phase() == &Phase::Active);
                if active && Some(i) != owner {
                    let detail = format!(
                        "u{s}: served by n{} but the ring gives it to {owner:?}",
                        i + 1
                    );
                    self.checker
                        .violate(end, "served-by-owner", Some(i), detail);
                }
            }
            let user = &self.users[s as usize];
            if user.waiting {
                let detail = format!(
                    "u{s}: m{} sent at {} ms was never answered",
                    user.msg, user.sent_at
                );
                self.checker
                    .violate(end, "every-turn-answered", None, detail);
            }
            let log = self
                .durable
                .logs
                .get(&s)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut state = SessionState::default();
            for event in log {
                if let Err(e) = state.apply(event) {
                    self.checker
                        .violate(end, "log-applies", None, format!("u{s}: {e}"));
                    break;
                }
            }
            for (i, (turn_seq, reply_seq)) in
                self.users[s as usize].acked.clone().into_iter().enumerate()
            {
                self.check_durable(s, i as u32 + 1, turn_seq, reply_seq, None);
            }
        }
    }
}

/// The node an event is for, if it waits while that node is paused.
fn ev_node(ev: &Ev) -> Option<usize> {
    match ev {
        Ev::Deliver {
            to: Endpoint::Node(n),
            ..
        }
        | Ev::StoreReply { node: n, .. }
        | Ev::MembershipTimer { node: n, .. }
        | Ev::SessionTimer { node: n, .. }
        | Ev::FlushClaims { node: n, .. } => Some(*n),
        _ => None,
    }
}

/// `n3` is 2.
fn node_of(id: &NodeId) -> usize {
    id.as_str()[1..]
        .parse::<usize>()
        .expect("simulated nodes are n1, n2, ...")
        - 1
}

/// The answer of a request that was applied but whose answer never came back.
fn lose(reply: StoreReply) -> StoreReply {
    match reply {
        StoreReply::Table(_) => StoreReply::Table(None),
        StoreReply::Cas(_) => StoreReply::Cas(None),
        StoreReply::Append { s, .. } => StoreReply::Append {
            s,
            result: Err(Refusal::Unavailable),
        },
        StoreReply::Claim(results) => StoreReply::Claim(
            results
                .into_iter()
                .map(|(s, epoch, _)| (s, epoch, Err(Refusal::Unavailable)))
                .collect(),
        ),
    }
}
