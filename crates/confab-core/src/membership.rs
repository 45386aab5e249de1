//! Cluster membership as a deterministic state machine.
//!
//! The cluster agrees through one shared [`MemberTable`], changed only by
//! compare-and-set on its `version` (in production a Redis key or a row of the
//! embedded store, in the simulator a simulated store). Each node runs one
//! [`Membership`]: it feeds it what happened ([`Input`]) with the time, and
//! carries out what it asks for ([`Output`]): read the table, propose a new one,
//! send a heartbeat, adopt a new ring. It never reads a clock or draws a random
//! number, so the simulator can run many of them on one thread.
//!
//! - **Join:** a node adds itself as `Joining`, then moves itself `Up`. Only the
//!   second step changes the ring, so the epoch rises once per join.
//! - **Heartbeats:** every `heartbeat_every_ms` a node sends one to every other
//!   member, and at once when it adopts a new ring (a heartbeat carrying a newer
//!   epoch makes its receiver read the table). A member not heard from for `down_after_ms` is proposed `Down` by any
//!   `Up` node that misses it (the compare-and-set lets one proposal win).
//! - **Drain and leave:** a draining node moves itself `Draining` (out of the
//!   ring: its sessions move away while it still serves their handoff), and once
//!   told its sessions are gone, removes itself and reports [`Output::Left`].
//! - **Rejoin:** a node that finds itself `Down` in the table (others stopped
//!   hearing it) joins again, at a new epoch.
//!
//! The ring of a table is its `Up` members; the epoch rises exactly when that set
//! changes, so two nodes with the same epoch have the same ring.

use crate::ids::{Epoch, NodeId};
use crate::mutation::{self, Mutation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the table, not yet in the ring.
    Joining,
    /// In the ring: owns sessions.
    Up,
    /// Out of the ring, still alive to hand its sessions off.
    Draining,
    /// Not heard from: out of the ring until it joins again.
    Down,
}

/// The shared table every node agrees on. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberTable {
    /// Raised by one on every change: the compare-and-set's token.
    pub version: u64,
    /// The ring's epoch: raised by one whenever the set of `Up` members changes.
    pub epoch: Epoch,
    /// Every member, by id.
    pub members: BTreeMap<NodeId, Status>,
}

impl Default for MemberTable {
    fn default() -> Self {
        Self {
            version: 0,
            epoch: Epoch(0),
            members: BTreeMap::new(),
        }
    }
}

impl MemberTable {
    /// The ring's members: the `Up` ones, in order.
    pub fn ring_nodes(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, s)| **s == Status::Up)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// This table with `node` set to `status` (or removed, with `None`): the next
    /// version, and the next epoch if the ring changes.
    pub fn with(&self, node: &NodeId, status: Option<Status>) -> MemberTable {
        let mut next = self.clone();
        match status {
            Some(status) => next.members.insert(node.clone(), status),
            None => next.members.remove(node),
        };
        next.version += 1;
        if next.ring_nodes() != self.ring_nodes() {
            next.epoch = Epoch(self.epoch.0 + 1);
        }
        next
    }
}

/// After a gap, members get a grace as long as the gap, up to this many times
/// `down_after_ms` (see `Membership::wake`).
pub const WAKE_GRACE_MAX_FACTOR: u64 = 4;

/// Timings, in milliseconds.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// How often a node sends heartbeats.
    pub heartbeat_every_ms: u64,
    /// A member not heard from for this long is proposed `Down`.
    pub down_after_ms: u64,
    /// How often a node reads the table for changes made by others.
    pub refresh_every_ms: u64,
    /// How long to wait for the table store before asking again.
    pub store_timeout_ms: u64,
    /// A machine that has not run for longer than this (a pause, a clock
    /// jump) distrusts what it heard before: it must run at least every
    /// heartbeat period, so this is well above one.
    pub stale_after_ms: u64,
}

impl Default for MembershipConfig {
    /// A dead node is declared down within 3 s: 2 s of silence, then at most one
    /// heartbeat period and a compare-and-set.
    fn default() -> Self {
        Self {
            heartbeat_every_ms: 500,
            down_after_ms: 2_000,
            refresh_every_ms: 1_000,
            store_timeout_ms: 1_000,
            stale_after_ms: 1_000,
        }
    }
}

/// What happened, as the shell tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Join the cluster (or rejoin it).
    Start,
    /// The table as read from the store (after [`Output::ReadTable`]).
    TableRead(MemberTable),
    /// The outcome of [`Output::Cas`]: whether it was applied, and the table
    /// the store holds now.
    CasDone {
        /// Whether the proposal won.
        applied: bool,
        /// The store's table after the attempt.
        table: MemberTable,
    },
    /// The store did not answer a read or a compare-and-set.
    StoreFailed,
    /// A heartbeat from another member, carrying the epoch it knows.
    Heartbeat {
        /// Who sent it.
        from: NodeId,
        /// The epoch its sender knows.
        epoch: Epoch,
    },
    /// Something suggests the table changed (a store write was fenced, a turn
    /// came routed at an unknown epoch): read it now.
    Refresh,
    /// The operator drains this node.
    Drain,
    /// Every session of this draining node has been handed off.
    Drained,
    /// The operator removes a member that is `Down` (gone for good) from the
    /// table: it is no longer listed or dialled. A member that is not down
    /// when the proposal is made is left as it is; one that comes back later
    /// joins again as a new member.
    Remove(NodeId),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Read the table and answer with [`Input::TableRead`] (or `StoreFailed`).
    ReadTable,
    /// Replace the table if its version is still `expected`; answer with
    /// [`Input::CasDone`] (or `StoreFailed`).
    Cas {
        /// The version the proposal was made from.
        expected: u64,
        /// The proposed table (its version is `expected + 1`).
        table: MemberTable,
    },
    /// Send a heartbeat to a member.
    Heartbeat {
        /// To whom.
        to: NodeId,
        /// The epoch this node knows.
        epoch: Epoch,
    },
    /// The ring changed: these members at this epoch.
    RingChanged {
        /// The new epoch.
        epoch: Epoch,
        /// The `Up` members, in order.
        nodes: Vec<NodeId>,
    },
    /// This node has left the cluster (after a drain); the shell may stop.
    Left,
}

/// What this node is after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Idle,
    Up,
    Drain,
    Leave,
    Gone,
}

/// One node's membership.
#[derive(Debug)]
pub struct Membership {
    me: NodeId,
    config: MembershipConfig,
    goal: Goal,
    table: Option<MemberTable>,
    /// When each other member was last heard from (or first seen).
    last_heard: BTreeMap<NodeId, u64>,
    /// When a heartbeat of each other member last arrived: evidence, never
    /// granted (a node goes up only once it hears every member that is up).
    heard: BTreeMap<NodeId, u64>,
    /// A read or compare-and-set is in flight since this time.
    waiting_since: Option<u64>,
    /// A read was wanted while a request was in flight (a heartbeat told of a
    /// newer epoch): read again once the answer is in, which may predate it.
    read_again: bool,
    /// The epoch of the last `RingChanged` output.
    announced: Option<Epoch>,
    /// When this machine last ran (any input or timeout): a longer gap than
    /// `stale_after_ms` means the node was paused or its clock jumped.
    last_ran: Option<u64>,
    /// Whether the quorum was held when last looked at.
    had_quorum: bool,
    /// Members the operator asked to remove, while they are still `Down` in
    /// the table.
    removing: std::collections::BTreeSet<NodeId>,
    next_heartbeat: u64,
    next_refresh: u64,
    outputs: VecDeque<Output>,
}

impl Membership {
    /// A node that has not joined yet.
    pub fn new(me: NodeId, config: MembershipConfig) -> Self {
        Self {
            me,
            config,
            goal: Goal::Idle,
            table: None,
            last_heard: BTreeMap::new(),
            heard: BTreeMap::new(),
            waiting_since: None,
            read_again: false,
            announced: None,
            last_ran: None,
            had_quorum: false,
            removing: Default::default(),
            next_heartbeat: 0,
            next_refresh: 0,
            outputs: VecDeque::new(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The table as this node last saw it.
    pub fn table(&self) -> Option<&MemberTable> {
        self.table.as_ref()
    }

    /// This node's status in the table it last saw.
    pub fn status(&self) -> Option<Status> {
        self.table.as_ref()?.members.get(&self.me).copied()
    }

    /// The epoch of the ring this node has adopted.
    pub fn epoch(&self) -> Option<Epoch> {
        self.announced
    }

    /// How recently a member must have been heard to count toward the
    /// quorum: half of `down_after_ms`. Members that fall silent together
    /// (a partition, two processes frozen at once) reach their down deadline
    /// one heartbeat period apart at most; were the quorum counted over the
    /// whole `down_after_ms`, the one whose deadline comes second would still
    /// count when the first is judged, and a node left alone would declare
    /// the first down with a "majority" that is gone (found by the
    /// real-process test that freezes two of three nodes). With heartbeats
    /// every `heartbeat_every_ms` (below a quarter of `down_after_ms`), a
    /// healthy member is heard within the window even with a heartbeat lost.
    pub fn quorum_window_ms(&self) -> u64 {
        self.config.down_after_ms / 2
    }

    /// Whether this node heard `node` within [`Self::quorum_window_ms`]
    /// (itself: always). This, not an open socket, is what a link is judged
    /// by: a turn forwarded to an owner not heard within the window is
    /// failed at once (`routing::forward_lost`), since a silent or one-way
    /// cut leaves the socket open and its answer might never come.
    pub fn hears(&self, node: &NodeId, now: u64) -> bool {
        // Planted bug `stale-heartbeats` (here too): a heartbeat heard once,
        // before a pause say, counts as if it were fresh.
        let stale = mutation::active(Mutation::StaleHeartbeats);
        *node == self.me
            || self
                .heard
                .get(node)
                .is_some_and(|at| stale || now.saturating_sub(*at) < self.quorum_window_ms())
    }

    /// Whether this node is on the side of the cluster that may decide: it
    /// hears (a heartbeat within [`Self::quorum_window_ms`]) a majority of
    /// the members that are up, itself included when up, or exactly half of
    /// them with the lowest up member among those heard (the tie-breaker of
    /// Akka's keep-majority). A node cut off from the majority declares no
    /// one down, and does not serve.
    pub fn has_quorum(&self, now: u64) -> bool {
        // Planted bug `no-quorum`: every node decides, whatever it hears.
        if mutation::active(Mutation::NoQuorum) {
            return true;
        }
        let Some(table) = &self.table else {
            return false;
        };
        // One pass over the members, in id order (the first up is the lowest):
        // every step of the simulator asks this, so nothing is collected.
        let mut up = table
            .members
            .iter()
            .filter(|(_, status)| **status == Status::Up)
            .map(|(node, _)| node);
        let Some(lowest) = up.next() else {
            return true;
        };
        let lowest_heard = self.hears(lowest, now);
        let (mut count, mut heard) = (1, usize::from(lowest_heard));
        for node in up {
            count += 1;
            heard += usize::from(self.hears(node, now));
        }
        2 * heard > count || (2 * heard == count && lowest_heard)
    }

    /// Whether this node may serve turns: it is not up, or it is up and has
    /// the quorum. An isolated member answers `unavailable` at once instead of
    /// holding turns it cannot serve for long.
    pub fn serving(&self, now: u64) -> bool {
        self.status() != Some(Status::Up) || self.has_quorum(now)
    }

    /// Feeds one input, at `now` (ms).
    pub fn handle(&mut self, now: u64, input: Input) {
        self.wake(now);
        match input {
            Input::Start => {
                self.goal = Goal::Up;
                self.next_heartbeat = now;
                self.read(now);
            }
            Input::TableRead(table) => {
                self.waiting_since = None;
                self.adopt(now, table);
                self.decide(now);
                self.read_if_wanted(now);
            }
            Input::CasDone { applied, table } => {
                self.waiting_since = None;
                self.adopt(now, table);
                if applied && self.goal == Goal::Leave && self.status().is_none() {
                    self.goal = Goal::Gone;
                    self.outputs.push_back(Output::Left);
                }
                self.decide(now);
                self.read_if_wanted(now);
            }
            Input::StoreFailed => {
                // Asked again at the next refresh.
                self.waiting_since = None;
                self.next_refresh = now + self.config.refresh_every_ms;
            }
            Input::Heartbeat { from, epoch } => {
                if from != self.me {
                    self.last_heard.insert(from.clone(), now);
                    self.heard.insert(from, now);
                }
                if self.announced.is_none_or(|mine| epoch > mine) {
                    self.read(now); // someone knows a newer ring
                }
                self.note_quorum(now);
            }
            Input::Refresh => {
                if !matches!(self.goal, Goal::Idle | Goal::Gone) {
                    self.read(now);
                }
            }
            Input::Drain => {
                if matches!(self.goal, Goal::Up) {
                    self.goal = Goal::Drain;
                    self.decide(now);
                }
            }
            Input::Drained => {
                if self.goal == Goal::Drain {
                    self.goal = Goal::Leave;
                    self.decide(now);
                }
            }
            Input::Remove(node) => {
                let down = self
                    .table
                    .as_ref()
                    .is_some_and(|t| t.members.get(&node) == Some(&Status::Down));
                if node != self.me && down {
                    self.removing.insert(node);
                    self.decide(now);
                }
            }
        }
    }

    /// Runs what is due at `now`: heartbeats, refreshes, failure detection.
    pub fn handle_timeout(&mut self, now: u64) {
        if matches!(self.goal, Goal::Idle | Goal::Gone) {
            return;
        }
        self.wake(now);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat_every_ms;
            if let Some(table) = &self.table {
                let epoch = self.announced.unwrap_or(table.epoch);
                // Members declared down get them too: one that was only cut off
                // learns at once that it must join again.
                for node in table.members.keys() {
                    if *node != self.me {
                        self.outputs.push_back(Output::Heartbeat {
                            to: node.clone(),
                            epoch,
                        });
                    }
                }
            }
        }
        if self
            .waiting_since
            .is_some_and(|since| now >= since + self.config.store_timeout_ms)
        {
            self.waiting_since = None; // the answer is lost: ask again
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_every_ms;
            self.read(now);
        }
        self.decide(now);
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        if matches!(self.goal, Goal::Idle | Goal::Gone) {
            return None;
        }
        let mut next = self.next_heartbeat.min(self.next_refresh);
        if let Some(since) = self.waiting_since {
            next = next.min(since + self.config.store_timeout_ms);
        }
        // Failure detection proposes through the table: while a request is in
        // flight it waits for the answer (or the store timeout above).
        // Without the quorum nobody is declared down: no deadline to wake for
        // (the next heartbeat heard, an input, may bring the quorum back).
        if let Some(table) = &self.table
            && self.waiting_since.is_none()
            && self.status() == Some(Status::Up)
            && self.last_ran.is_some_and(|now| self.has_quorum(now))
        {
            for (node, status) in &table.members {
                if *node != self.me && *status != Status::Down {
                    let heard = self.last_heard.get(node).copied().unwrap_or(0);
                    next = next.min(heard + self.config.down_after_ms);
                }
            }
        }
        Some(next)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Notes that the machine runs at `now`. After a gap longer than
    /// `stale_after_ms` (the process was paused, or its clock jumped), what it
    /// knows of the others is stale: silence it slept through is no evidence.
    /// Every member gets a fresh grace and the table is read again before
    /// anything is proposed from it. The grace is `down_after_ms`, or as long
    /// as the gap up to [`WAKE_GRACE_MAX_FACTOR`] times that: after a freeze
    /// of its whole host, the node's TCP connections wait out their
    /// retransmission backoff, which after a gap of some seconds can keep a
    /// healthy member silent about as long again (found by the nemesis's
    /// `freeze-declares-all-down`: n1 declared down 4.7 s after n2 and n3
    /// resumed).
    fn wake(&mut self, now: u64) {
        let slept = self.last_ran.map_or(0, |last| now.saturating_sub(last));
        self.last_ran = Some(now);
        if slept > self.config.stale_after_ms && !mutation::active(Mutation::StaleHeartbeats) {
            let down_after = self.config.down_after_ms;
            let grace = slept.clamp(down_after, down_after * WAKE_GRACE_MAX_FACTOR);
            // Suspected once `now >= heard + down_after_ms`.
            let heard_at = now + (grace - down_after);
            for heard in self.last_heard.values_mut() {
                *heard = heard_at;
            }
            self.waiting_since = None;
            self.read(now);
        }
    }

    fn read(&mut self, now: u64) {
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
            self.read_again = false;
            self.next_refresh = now + self.config.refresh_every_ms;
            self.outputs.push_back(Output::ReadTable);
        } else {
            self.read_again = true;
        }
    }

    fn read_if_wanted(&mut self, now: u64) {
        if self.read_again && self.waiting_since.is_none() && self.goal != Goal::Gone {
            self.read(now);
        }
    }

    /// Takes a table that is newer than the one held, and announces its ring.
    fn adopt(&mut self, now: u64, table: MemberTable) {
        if self
            .table
            .as_ref()
            .is_some_and(|held| held.version >= table.version)
        {
            return;
        }
        for (node, status) in &table.members {
            // A member first seen, or seen in a new status (one that joins again
            // after being declared down), gets a full `down_after_ms` of grace.
            let held = self.table.as_ref().and_then(|t| t.members.get(node));
            if held != Some(status) {
                self.last_heard.insert(node.clone(), now);
            }
        }
        self.last_heard
            .retain(|node, _| table.members.contains_key(node));
        self.heard
            .retain(|node, _| table.members.contains_key(node));
        self.removing
            .retain(|node| table.members.get(node) == Some(&Status::Down));
        if self.announced != Some(table.epoch) && self.goal != Goal::Gone {
            // Tell the others at once: a heartbeat carrying a newer epoch makes
            // them read the table, so a new ring spreads in one round trip.
            self.next_heartbeat = now;
            self.announced = Some(table.epoch);
            self.outputs.push_back(Output::RingChanged {
                epoch: table.epoch,
                nodes: table.ring_nodes(),
            });
        }
        self.table = Some(table);
    }

    /// Proposes the one change this node wants next, if none is in flight.
    /// Notes whether the quorum is held. A node that regains it gives every
    /// member a fresh `down_after_ms` of grace: while it could not decide, it
    /// could not tell a dead member from one cut off as it was, and the
    /// members that come back with the majority (a healed partition, two
    /// processes resumed together) are heard a moment apart; the first
    /// heard must not make the second look dead (found by the real-process
    /// test that freezes two of three nodes, then resumes them).
    fn note_quorum(&mut self, now: u64) {
        let quorum = self.has_quorum(now);
        if quorum && !self.had_quorum {
            for heard in self.last_heard.values_mut() {
                *heard = (*heard).max(now);
            }
        }
        self.had_quorum = quorum;
    }

    fn decide(&mut self, now: u64) {
        self.note_quorum(now);
        if self.waiting_since.is_some() {
            return;
        }
        let Some(table) = &self.table else {
            return;
        };
        let mine = table.members.get(&self.me).copied();
        let proposal = match (self.goal, mine) {
            (Goal::Up, None | Some(Status::Down)) => Some((self.me.clone(), Some(Status::Joining))),
            // Up (onto the ring) only once linked to every member already
            // up, judged by their heartbeats arriving, not by an open socket:
            // a node that cannot hear them (a partition, a stalled link, a
            // wrong cookie) would take sessions it cannot be sent, then be
            // declared down again. It stays joining and asks again later.
            (Goal::Up, Some(Status::Joining)) if self.hears_every_up(now, table) => {
                Some((self.me.clone(), Some(Status::Up)))
            }
            // From `down` too: a node cut off and declared down, drained
            // before it joined again, must still be able to leave.
            (Goal::Drain, Some(Status::Up | Status::Joining | Status::Down)) => {
                Some((self.me.clone(), Some(Status::Draining)))
            }
            (Goal::Leave, Some(_)) => Some((self.me.clone(), None)),
            (Goal::Up, Some(Status::Up)) => self
                .suspect(now, table)
                .or_else(|| self.removal(now, table)),
            _ => None,
        };
        if let Some((node, status)) = proposal {
            let next = table.with(&node, status);
            self.waiting_since = Some(now);
            self.outputs.push_back(Output::Cas {
                expected: table.version,
                table: next,
            });
        }
    }

    /// Whether a heartbeat of every other member that is up arrived within
    /// `down_after_ms`.
    fn hears_every_up(&self, now: u64, table: &MemberTable) -> bool {
        // Planted bug `socket-is-link`: a node counts itself linked without
        // hearing anyone, as an open socket would say.
        if mutation::active(Mutation::SocketIsLink) {
            return true;
        }
        table
            .members
            .iter()
            .filter(|(node, status)| **node != self.me && **status == Status::Up)
            .all(|(node, _)| {
                self.heard
                    .get(node)
                    .is_some_and(|at| now.saturating_sub(*at) < self.config.down_after_ms)
            })
    }

    /// A member the operator asked to remove that is still `Down`, the first
    /// in id order, to take out of the table: decided, like a `Down`, only on
    /// the majority's side.
    fn removal(&self, now: u64, table: &MemberTable) -> Option<(NodeId, Option<Status>)> {
        if !self.has_quorum(now) {
            return None;
        }
        self.removing
            .iter()
            .find(|node| table.members.get(*node) == Some(&Status::Down))
            .map(|node| (node.clone(), None))
    }

    /// A member to declare `Down`: the first (in id order) not heard from for
    /// `down_after_ms`.
    fn suspect(&self, now: u64, table: &MemberTable) -> Option<(NodeId, Option<Status>)> {
        if !self.has_quorum(now) {
            return None;
        }
        table
            .members
            .iter()
            .filter(|(node, status)| **node != self.me && **status != Status::Down)
            .find(|(node, _)| {
                let heard = self.last_heard.get(*node).copied().unwrap_or(now);
                now >= heard + self.config.down_after_ms
            })
            .map(|(node, _)| (node.clone(), Some(Status::Down)))
    }
}

#[cfg(test)]
mod tests;
