//! The engine: nodes running the real core (membership, ring, routing,
//! handoff, session) and dialog code, a simulated network, simulated MySQL and
//! Redis, and chat users, all driven by one seeded event queue.
//!
//! Events are ordered by (virtual time, a seeded random tie-break, sequence):
//! events due at the same millisecond run in an order the seed picks, so sweeps
//! explore interleavings.

use crate::by_session::BySession;
use crate::check::{Checker, Distribution};
use crate::conversations::Conversations;
use crate::faults::{FaultKind, Schedule};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::timeline::{
    EpochMark, FaultMark, MigrationMark, NodeState, Span, Timeline, ViolationMark,
};
use crate::trace::{Record, Trace};
use confab_core::fencing::{self, Claim};
use confab_core::handoff::{
    self, Activity, Admit, Arrival, HandOff, HandoffConfig, Outbox, Phase, Refusal as HRefusal,
    Served, Session, SessionInput, SessionOutput,
};
use confab_core::links::{DialConfig, Dialer};
use confab_core::membership::{
    Input as MInput, MemberTable, Membership, MembershipConfig, Output, Status,
};
use confab_core::ring::Ring;
use confab_core::routing::{Route, forward_lost, route};
use confab_core::session::{
    ActionOutcome, Event, RecordedEvent, SNAPSHOT_MAC_BYTES, SessionState, Snapshot, SnapshotDue,
    SnapshotKey, SnapshotPolicy, SnapshotRef,
};
use confab_core::{Epoch, MessageId, NodeId, Seq, Uid};
use confab_dialog::Pipeline;
use confab_dialog::script::Heard;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

mod end;
mod holds;
mod links;
mod net;
mod node;
mod snapshots;
mod store;
mod turn;

/// What users say, in turn: a shoe-shop conversation, over and over (unless
/// the scenario gives conversation scripts).
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
/// After the faults stop, the ring settles within this long: no member table
/// is made later (a restarted node's join and the downs of nodes that stay
/// crashed take a few seconds; dial backoff is at most 8 s).
pub const SETTLE_MS: u64 = 12_000;
/// How long an action takes, at least and at most (ms): the window in which
/// its owner may crash between the action's two commits.
const ACTION_MS: (u64, u64) = (5, 60);
/// The chance that a user sends a `hello` (through any node) as it says its
/// next message: a client reconnecting, reading where its session is.
const HELLO_CHANCE: f64 = 0.2;
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
    /// A read (`hello`) rather than a turn: `msg` numbers the user's hellos.
    hello: bool,
    /// When its user stops waiting and sends it again (simulated ms; a
    /// hello's user does not give up on it).
    gives_up_at: Option<u64>,
    /// The same on the clock of the node whose session holds it, set as it
    /// enters the session: the session machine refuses it past that.
    deadline: Option<u64>,
}

impl confab_core::handoff::Deadline for Turn {
    fn deadline_ms(&self) -> Option<u64> {
        self.deadline
    }
}

/// How a turn was answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Acked and replied: the seqs of its `ack` and `reply`, and, when users
    /// play conversation scripts, the reply as a client sees it (slots masked).
    Done {
        turn_seq: u64,
        reply_seq: u64,
        reply: Option<Box<Heard>>,
    },
    /// `unavailable`: retry.
    Unavailable,
    /// `overloaded`: retry later.
    Overloaded,
    /// The input filter refused it.
    Refused,
    /// A `hello`'s answer: the session's last seq, as its owner proved it.
    Hello { last_seq: u64 },
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
        from: usize,
    },
    /// The old owner announces the sessions it hands here at `epoch`.
    Expect {
        from: usize,
        epoch: Epoch,
        sessions: Vec<u32>,
    },
    /// A batch of moved sessions' states (`None`: nothing usable).
    States {
        from: usize,
        batch: u64,
        states: Vec<(u32, Epoch, Option<Vec<u8>>)>,
    },
    /// For each state of batch `batch`, whether it was taken.
    Taken {
        batch: u64,
        taken: Vec<bool>,
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
            Msg::Expect { .. } => "expect",
            Msg::States { .. } => "states",
            Msg::Taken { .. } => "taken",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Answer { .. } => "answer",
        }
    }

    fn session(&self) -> i64 {
        match self {
            Msg::Say(t) | Msg::Turn { turn: t, .. } => t.s.into(),
            Msg::Answer { s, .. } => (*s).into(),
            Msg::Expect { .. } | Msg::States { .. } | Msg::Taken { .. } | Msg::Heartbeat { .. } => {
                -1
            }
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
        hid: u64,
        epoch: Epoch,
        events: Vec<RecordedEvent>,
    },
    /// Claims of several sessions: the claims a node makes in one step go to
    /// the store together.
    Claim(Vec<ClaimAsk>),
    /// A session's owner confirms it still holds the session at `epoch`
    /// (before an action runs).
    Confirm {
        s: u32,
        hid: u64,
        epoch: Epoch,
    },
    /// A snapshot of session `s`, taken by its owner at `epoch` (signed
    /// bytes): fenced as writes are; the newer of two is kept.
    Snapshot {
        s: u32,
        epoch: Epoch,
        bytes: Arc<[u8]>,
        /// The seq of the state the bytes hold and when they were taken, so
        /// that the checker need not decode them (loads do): it encodes its
        /// own replay of the log with them and compares the bytes.
        seq: u64,
        at_ms: u64,
    },
}

impl StoreOp {
    fn name(&self) -> &'static str {
        match self {
            StoreOp::Read => "read_table",
            StoreOp::Cas { .. } => "cas_table",
            StoreOp::Append { .. } => "append",
            StoreOp::Claim { .. } => "claim",
            StoreOp::Confirm { .. } => "confirm",
            StoreOp::Snapshot { .. } => "snapshot",
        }
    }
}

/// One session's claim and load.
#[derive(Debug, Clone, Copy)]
struct ClaimAsk {
    /// The session.
    s: u32,
    /// Its holder on the node.
    hid: u64,
    /// The epoch claimed.
    epoch: Epoch,
    /// The seq the holder's memory is at, if it has any (a state that came
    /// from the old owner): the load returns the log after it. With none, the
    /// load starts from the latest snapshot.
    memory: Option<u64>,
}

#[derive(Debug, Clone)]
enum StoreReply {
    Table(Option<Box<MemberTable>>),
    Cas(Option<Box<(bool, MemberTable)>>),
    Append {
        s: u32,
        hid: u64,
        result: Result<(), Refusal>,
    },
    /// Per session claimed: what it loads, or why not.
    Claim(Vec<(ClaimAsk, Result<Loaded, Refusal>)>),
    Confirm {
        s: u32,
        hid: u64,
        result: Result<(), Refusal>,
    },
    /// Whether a snapshot was stored (the node takes no action on it).
    Snapshot {
        s: u32,
        stored: bool,
    },
}

/// What a load returns: the latest snapshot (Redis's if it holds one, else
/// MySQL's) when the claimant has no memory, and the log after it.
#[derive(Debug, Clone)]
struct Loaded {
    /// Shared with the stores that keep it, not copied.
    snapshot: Option<Arc<[u8]>>,
    events: Vec<RecordedEvent>,
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
    /// A message arrives; `inc` is the incarnation of the node it was sent to
    /// (a restarted node never gets its previous incarnation's messages), and
    /// `link` the number of the link it travels on between two nodes (0
    /// between a user and a node): a link closed since loses it.
    Deliver {
        from: Endpoint,
        to: Endpoint,
        inc: u32,
        link: u64,
        msg: Msg,
    },
    /// The node's dialer decides whom to dial.
    DialTick {
        node: usize,
        inc: u32,
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
        hid: u64,
        at: u64,
    },
    /// An action a session ran has ended.
    ActionDone {
        node: usize,
        inc: u32,
        hid: u64,
        outcome: ActionOutcome,
    },
    /// The node's outbox of moved states has something due.
    OutboxTimer {
        node: usize,
        inc: u32,
        at: u64,
    },
    FlushClaims {
        node: usize,
        inc: u32,
    },
    /// A session's snapshot timer.
    SnapshotTimer {
        node: usize,
        inc: u32,
        hid: u64,
    },
    /// The node looks for idle sessions to passivate.
    PassivateSweep {
        node: usize,
        inc: u32,
    },
}

/// A queued event: its key, and where the event waits in the slab (the heap
/// moves these 24-byte entries, not the events).
struct Entry {
    at: u64,
    tie: u64,
    /// The push's sequence number (high 32 bits: pushes made earlier come
    /// first among equal `at` and `tie`) and the slab slot (low 32 bits).
    seq_slot: u64,
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
        (self.at, self.tie, self.seq_slot)
    }

    fn slot(&self) -> usize {
        (self.seq_slot & u64::from(u32::MAX)) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Off,
    Running,
    Crashed,
    Left,
}

/// One session alive in one node's memory (resident, or finishing a move or a
/// passivation), as a session actor is in production.
struct Held {
    s: u32,
    life: Session<Turn, SessionState>,
    /// The session's state in memory (when loaded, or arrived from the old owner).
    state: Option<SessionState>,
    /// The turn being committed.
    pending: Option<turn::Pending>,
    timer: Option<u64>,
    turns_in: u64,
    turns_out: u64,
    /// The seq of the last snapshot taken (or loaded).
    snapshot_seq: u64,
    /// Whether a snapshot timer is set.
    snapshot_timer: bool,
    /// When the node last gave it a turn without the machine's admission
    /// (node time; 0: never): the shell's part of the session's recency
    /// ([`confab_core::handoff::Activity`]).
    last: u64,
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
    /// The node's side of the handoff: resident, expected and arrived sessions.
    handoff: handoff::Node<SessionState>,
    /// Moved sessions' states on their way out.
    outbox: Outbox<Vec<u8>>,
    outbox_timer: Option<u64>,
    /// Sessions alive here, by holder id (a session that left the resident set
    /// may still be finishing while a new one for the same user starts).
    held: holds::Holds,
    /// The holder of each resident session.
    resident: BySession<u64>,
    /// The holders of sessions a ring moved away that wait their turn to hand
    /// off (the core paces the handoff).
    leaving: BySession<u64>,
    /// Claims asked for in this step, sent together when it ends.
    claims: Vec<ClaimAsk>,
    drained: bool,
    shown: (NodeState, u64),
    /// Whom the node dials, and when.
    dialer: Dialer,
}

struct User {
    msg: u32,
    waiting: bool,
    sent_at: u64,
    generation: u32,
    /// The seqs each acked message was answered with, by message number (a
    /// message the input filter refused has none).
    acked: BTreeMap<u32, (u64, u64)>,
    /// The highest reply seq acked to this user.
    acked_max: u64,
    /// Hellos sent, by number: the highest reply seq acked when each was sent.
    hellos: BTreeMap<u32, u64>,
}

#[derive(Default)]
struct Durable {
    table: MemberTable,
    fences: BySession<Epoch>,
    logs: BySession<Vec<RecordedEvent>>,
    /// The dead-letter queue: by session and the seq of the action's request.
    dead_letters: std::collections::BTreeSet<(u32, u64)>,
    /// Each session's latest snapshot: its seq and signed bytes.
    snapshots: BySession<(u64, Arc<[u8]>)>,
    /// The checker's own replay of each snapshotted session's log, as far as
    /// the last snapshot checked: the next check applies only what follows.
    replayed: BySession<SessionState>,
    epoch_made_at: BTreeMap<u64, u64>,
}

impl Durable {
    /// Session `s`'s log (empty if it never wrote).
    fn log(&self, s: u32) -> &[RecordedEvent] {
        self.logs.get(&s).map(Vec::as_slice).unwrap_or_default()
    }
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
    /// Sessions loaded with an action pending (their owner stopped between
    /// the action's two commits): the next turn runs it again under its key.
    pub actions_resumed: u64,
    /// Actions run (first runs and runs again under the same key).
    pub actions_run: u64,
    /// Actions put in the dead-letter queue.
    pub dead_letters: u64,
    /// Messages the network lost.
    pub lost: u64,
    /// Links opened between nodes (by dials that reached their target).
    pub links_made: u64,
    /// Links closed (resets, crashes).
    pub links_reset: u64,
    /// Messages between nodes not sent for want of a link.
    pub unlinked: u64,
    /// Sessions passivated (idle).
    pub passivated: u64,
    /// Snapshots stored.
    pub snapshots: u64,
    /// Loads that started from a snapshot.
    pub snapshot_loads: u64,
    /// The last epoch.
    pub epoch: u64,
    /// Migrations (state sent from an old owner to a new one).
    pub migrations: Distribution,
    /// Migrations made after the faults stopped.
    pub migrations_after_faults: Distribution,
    /// Answers checked against a conversation script's turn (duplicates too).
    pub script_answers: u64,
    /// Of which refusals by the input filter.
    pub script_refusals: u64,
    /// Users that said every turn of their script and got its answer.
    pub scripts_finished: u64,
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
    /// The next holder id.
    next_hid: u64,
    /// When each node-to-node link last lost a message (links are ordered, as
    /// TCP is: a loss stands for a connection reset).
    link_lost: BTreeMap<(usize, usize), u64>,
    /// When the last message on each node-to-node link is delivered, with its
    /// tie-break: a later message never overtakes it.
    link_last: BTreeMap<(usize, usize), (u64, u64)>,
    /// The open links between nodes, by pair (lower node first): each link's
    /// number.
    links: BTreeMap<(usize, usize), u64>,
    /// The last link number given.
    next_link: u64,
    /// Whether each fault of the schedule, if a partition, is silent.
    silent: Vec<bool>,
    /// Each node's published address (its id).
    addresses: BTreeMap<NodeId, String>,
    /// The dialling delays.
    dial: DialConfig,
    /// Each session's latest move by each node: `(from, s) -> (to, epoch, at)`.
    moves: BTreeMap<(usize, u32), (usize, Epoch, u64)>,
    /// When heartbeats are due, per link: `(from, to) -> (due, incarnation of to)`.
    heartbeats_due: BTreeMap<(usize, usize), std::collections::VecDeque<(u64, u32)>>,
    /// When a heartbeat of each member last reached each node incarnation:
    /// (to, its incarnation, from) to the time.
    heard_by: BTreeMap<(usize, u32, usize), u64>,
    /// The announcements each node received: `(to, incarnation, from, s, epoch)`.
    expects_seen: std::collections::BTreeSet<(usize, u32, usize, u32, Epoch)>,
    seq: u64,
    queue: BinaryHeap<Reverse<Entry>>,
    /// The queued events, each with when it was first due: its time, unless
    /// it waited for a pause to end (then it keeps its first due time through
    /// any later pause).
    slab: Vec<Option<(Ev, u64)>>,
    free: Vec<u32>,
    net: Rng,
    store_rng: Rng,
    users_rng: Rng,
    /// Whether and where users send a `hello`.
    reads_rng: Rng,
    ties: Rng,
    nodes: Vec<Node>,
    uids: Vec<Uid>,
    users: Vec<User>,
    durable: Durable,
    redis: BySession<u64>,
    /// Redis's copy of each session's latest snapshot: written through after
    /// MySQL, so older than MySQL's when a write-through timed out, and gone
    /// when Redis restarts.
    redis_snapshots: BySession<(u64, Arc<[u8]>)>,
    /// When sessions snapshot.
    snapshots: SnapshotPolicy,
    pipeline: Pipeline,
    /// The scripts users play and the flows nodes run, if the scenario gives them.
    conversations: Option<Arc<Conversations>>,
    key: SnapshotKey,
    active_faults: Vec<usize>,
    liveness_from: u64,
    quiet_from: u64,
    end: u64,
    migrations: BySession<(usize, usize, Epoch, u64)>,
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
            hold_ms: scenario.handoff.hold_ms,
            queue_max: scenario.handoff.queue_max,
            handoff_max: scenario.handoff.handoff_max,
            resident_max: scenario.sessions.max(1) as usize,
            ..HandoffConfig::default()
        };
        let nodes = (0..schedule.node_slots)
            .map(|i| {
                let id = NodeId::new(format!("n{}", i + 1)).expect("a valid node id");
                let drift_ppm = ((draw.unit() * 2.0 - 1.0) * drift).round() as i64;
                Node {
                    membership: Membership::new(id.clone(), membership.clone()),
                    handoff: handoff::Node::new(id.clone(), handoff.clone()),
                    dialer: Dialer::new(id.clone(), DialConfig::default()),
                    id,
                    life: Life::Off,
                    incarnation: 0,
                    paused_until: 0,
                    drift_ppm,
                    timer: None,
                    ring: Ring::new(Epoch(0), []),
                    outbox: Outbox::new(handoff.clone()),
                    outbox_timer: None,
                    held: holds::Holds::default(),
                    resident: BySession::default(),
                    leaving: BySession::default(),
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
            next_hid: 0,
            link_lost: BTreeMap::new(),
            link_last: BTreeMap::new(),
            links: BTreeMap::new(),
            next_link: 0,
            silent: links::draw_silent(seed, schedule.faults.len()),
            addresses: (0..schedule.node_slots)
                .map(|i| {
                    let id = format!("n{}", i + 1);
                    (NodeId::new(id.clone()).expect("a valid node id"), id)
                })
                .collect(),
            dial: DialConfig::default(),
            moves: BTreeMap::new(),
            heartbeats_due: BTreeMap::new(),
            heard_by: BTreeMap::new(),
            expects_seen: std::collections::BTreeSet::new(),
            seq: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            net: Rng::new(seed, 2),
            store_rng: Rng::new(seed, 3),
            users_rng: Rng::new(seed, 4),
            ties: Rng::new(seed, 5),
            reads_rng: Rng::new(seed, 6),
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
                    acked: BTreeMap::new(),
                    acked_max: 0,
                    hellos: BTreeMap::new(),
                })
                .collect(),
            durable: Durable::default(),
            redis: BySession::default(),
            redis_snapshots: BySession::default(),
            snapshots: SnapshotPolicy {
                every_events: scenario.session.snapshot_every_events.max(1),
                every_ms: scenario.session.snapshot_every_ms,
            },
            pipeline: Pipeline::shoe_shop(),
            conversations: scenario.conversations.clone(),
            key: SnapshotKey::new(*b"confab-sim snapshot key").expect("a long enough key"),
            active_faults: Vec::new(),
            liveness_from,
            quiet_from: end.saturating_sub(QUIET_MS),
            end,
            migrations: BySession::default(),
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
        self.run_to_end()
    }

    /// [`World::run`] for a process that exits after the run: the world's
    /// memory (every session's log, the checker's records: millions of small
    /// allocations in a long run, 3-4 % of `steady-10k`'s time to free one by
    /// one) is left for the process's exit to return whole.
    pub fn run_then_exit(mut self) -> Outcome {
        let outcome = self.run_to_end();
        std::mem::forget(self);
        outcome
    }

    fn run_to_end(&mut self) -> Outcome {
        while let Some(Reverse(entry)) = self.queue.pop() {
            if entry.at > self.end {
                break;
            }
            self.now = entry.at;
            let slot = entry.slot();
            let (ev, due) = self.slab[slot].take().expect("a queued event");
            self.free.push(slot as u32);
            self.step(ev, due);
        }
        self.now = self.end;
        self.finish()
    }

    fn push(&mut self, at: u64, ev: Ev) {
        let tie = self.ties.next_u64();
        self.push_keyed(at, tie, ev);
    }

    /// Queues `ev` at `at` with the tie-break `tie`.
    fn push_keyed(&mut self, at: u64, tie: u64, ev: Ev) {
        self.push_entry(at, tie, at, ev);
    }

    /// Queues `ev` at `at` with the tie-break `tie`, first due at `due`.
    fn push_entry(&mut self, at: u64, tie: u64, due: u64, ev: Ev) {
        self.seq += 1;
        assert!(
            self.seq <= u64::from(u32::MAX),
            "a run queues at most 2^32 events: shorten the scenario"
        );
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some((ev, due));
                slot
            }
            None => {
                self.slab.push(Some((ev, due)));
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(Reverse(Entry {
            at,
            tie,
            seq_slot: (self.seq << 32) | u64::from(slot),
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

    fn step(&mut self, ev: Ev, due: u64) {
        // A paused node does nothing until its pause ends: what reaches it waits.
        if let Some(node) = ev_node(&ev)
            && self.nodes[node].paused_until > self.now
        {
            // Keyed by when it was first due, so that what waits keeps its
            // order (a link's messages stay in the order they were sent), also
            // through a second pause that began during the first (partition
            // seed 9867: re-keyed by the first pause's end, an announcement
            // fell behind a turn sent after it).
            let until = self.nodes[node].paused_until;
            self.push_entry(until, due, due, ev);
            return;
        }
        match ev {
            Ev::Fault { index, start } => self.fault(index, start),
            Ev::Wake { user, generation } => self.wake(user, generation),
            Ev::Deliver {
                from,
                to,
                inc,
                link,
                msg,
            } => self.deliver(from, to, (inc, link), msg),
            Ev::DialTick { node, inc } => {
                if self.alive(node, inc) {
                    self.dial_tick(node);
                }
            }
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
            Ev::SessionTimer { node, inc, hid, at } => {
                if self.alive(node, inc)
                    && let Some(held) = self.nodes[node].held.get_mut(&hid)
                    && held.timer == Some(at)
                {
                    held.timer = None;
                    let s = held.s;
                    self.record("session_timer", Some(node), s.into(), 0, 0);
                    self.session_timeout(node, hid);
                }
            }
            Ev::ActionDone {
                node,
                inc,
                hid,
                outcome,
            } => {
                if self.alive(node, inc) {
                    self.action_done(node, hid, outcome);
                }
            }
            Ev::SnapshotTimer { node, inc, hid } => {
                if self.alive(node, inc) {
                    self.snapshot_timer(node, hid);
                }
            }
            Ev::PassivateSweep { node, inc } => {
                if self.alive(node, inc) {
                    self.passivate_idle(node);
                }
            }
            Ev::OutboxTimer { node, inc, at } => {
                if self.alive(node, inc) && self.nodes[node].outbox_timer == Some(at) {
                    self.nodes[node].outbox_timer = None;
                    self.record("outbox_timer", Some(node), -1, 0, 0);
                    self.outbox_due(node);
                }
            }
        }
    }

    /// Whether `node` is the last running node that is not leaving.
    fn last_serving(&self, node: usize) -> bool {
        !(0..self.nodes.len()).any(|other| {
            other != node
                && self.nodes[other].life == Life::Running
                && matches!(
                    self.nodes[other].membership.status(),
                    None | Some(Status::Joining | Status::Up | Status::Down)
                )
        })
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
                let n = &mut self.nodes[*node];
                n.paused_until = n.paused_until.max(fault.until_ms);
                self.show(*node, NodeState::Paused);
            }
            (FaultKind::Pause { node }, false) => self.show_status(*node),
            (FaultKind::Join { node }, true) => self.boot(*node),
            // The last node that would still serve is not drained: a cluster
            // drained whole answers no one, which is the operator's choice,
            // not a fault (`actions` seeds 1628 and 4641 drained all four).
            (FaultKind::Drain { node }, true)
                if self.nodes[*node].life == Life::Running && !self.last_serving(*node) =>
            {
                let now = self.node_now(*node);
                self.nodes[*node].membership.handle(now, MInput::Drain);
                self.membership_io(*node);
            }
            (FaultKind::RedisRestart, true) => {
                self.redis.clear();
                self.redis_snapshots.clear();
            }
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
        n.paused_until = 0;
        n.membership = Membership::new(n.id.clone(), self.membership.clone());
        n.timer = None;
        n.ring = Ring::new(Epoch(0), []);
        n.handoff.clear();
        n.outbox = Outbox::new(self.handoff.clone());
        n.outbox_timer = None;
        n.held.clear();
        n.resident.clear();
        n.leaving.clear();
        n.claims.clear();
        n.drained = false;
        n.dialer = Dialer::new(n.id.clone(), self.dial);
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
        let inc = self.nodes[node].incarnation;
        self.push(self.now, Ev::DialTick { node, inc });
        let sweep = self.sweep_every();
        self.push(self.now + sweep, Ev::PassivateSweep { node, inc });
    }

    fn crash(&mut self, node: usize) {
        if self.nodes[node].life != Life::Running {
            return;
        }
        self.record("crash", Some(node), -1, 0, 0);
        let n = &mut self.nodes[node];
        n.life = Life::Crashed;
        n.held.clear();
        n.resident.clear();
        n.leaving.clear();
        n.handoff.clear();
        n.paused_until = 0;
        // What was on its links in either direction is gone with it.
        self.moves.retain(|(from, _), _| *from != node);
        for other in 0..self.nodes.len() {
            self.link_lost.insert((other, node), self.now);
            self.link_lost.insert((node, other), self.now);
        }
        self.close_links_of(node);
        self.show(node, NodeState::Crashed);
    }

    // ---- the timeline -----------------------------------------------------

    /// Draws a migration of session `s` from `from` to `to`; `end_ms` is `None`
    /// if it never finished.
    fn mark_migration(
        &mut self,
        s: u32,
        (from, to): (usize, usize),
        start_ms: u64,
        end_ms: Option<u64>,
    ) {
        self.timeline.migrations.push(MigrationMark {
            session: s,
            from,
            to,
            start_ms,
            end_ms,
        });
    }

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
        | Ev::ActionDone { node: n, .. }
        | Ev::OutboxTimer { node: n, .. }
        | Ev::FlushClaims { node: n, .. }
        | Ev::DialTick { node: n, .. }
        | Ev::SnapshotTimer { node: n, .. }
        | Ev::PassivateSweep { node: n, .. } => Some(*n),
        _ => None,
    }
}

/// The turns queued to session `s`'s resident holder, plus the one in
/// flight: what the handoff machine weighs when it admits or passivates.
fn resident_work(resident: &BySession<u64>, held: &holds::Holds, s: u32) -> usize {
    resident_activity(resident, held, s).queued
}

/// The shell's record of resident session `s`: turns queued and in flight,
/// and when it was last given one.
fn resident_activity(resident: &BySession<u64>, held: &holds::Holds, s: u32) -> Activity {
    resident
        .get(&s)
        .and_then(|hid| held.get(hid))
        .map_or(Activity::default(), |h| Activity {
            queued: h.life.queued() + usize::from(h.life.in_flight()),
            last: h.last,
        })
}

/// The same, by the session's uid (`u17`), as the handoff machine asks.
fn activity_of(resident: &BySession<u64>, held: &holds::Holds, uid: &Uid) -> Activity {
    uid.as_str()[1..].parse().map_or(Activity::default(), |s| {
        resident_activity(resident, held, s)
    })
}

/// `n3` is 2.
fn node_of(id: &NodeId) -> usize {
    id.as_str()[1..]
        .parse::<usize>()
        .expect("simulated nodes are n1, n2, ...")
        - 1
}
