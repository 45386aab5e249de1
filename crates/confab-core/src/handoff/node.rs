//! A node's side of the protocol: resident sessions, admission, expected and
//! arrived states, and what a ring change moves.
//!
//! A shell need not ask [`Node::admit`] for every turn: a turn for a session
//! that is resident, whose queue [`HandoffConfig::delivers`] one more turn,
//! may be queued to the session at once (the runtime does so in the caller's
//! task, without a hop through the supervisor). The machine then does not see
//! that turn, so the shell keeps each resident session's [`Activity`] (turns
//! queued, time of the last turn delivered) and hands it to the decisions that
//! read it: [`Node::idle`] and [`Node::adopt`]. A session is as recent as the
//! later of its last admission and its last delivery.

use super::{Destination, HandoffConfig, Start};
use crate::ids::{Epoch, NodeId, Uid};
use crate::mutation::{self, Mutation};
use crate::ring::Ring;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// An announcement to a new owner: these sessions, resident on the sender,
/// are handed to it at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The new owner.
    pub to: NodeId,
    /// The epoch of the ring that moves them.
    pub epoch: Epoch,
    /// The sessions, in order.
    pub uids: Vec<Uid>,
}

/// A moved session to tell to hand off ([`super::SessionInput::HandOff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    /// Whose.
    pub uid: Uid,
    /// Its new owner, if this node is linked to it.
    pub to: Destination,
    /// The epoch of the ring that moved it.
    pub epoch: Epoch,
}

/// What adopting a ring changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adopted {
    /// The sessions that left the resident set (their turns are forwarded
    /// from now on), in uid order.
    pub left: Vec<Uid>,
    /// The sessions to tell to hand off now (more follow as these stop, see
    /// [`Node::handed`]).
    pub hand_off: Vec<HandOff>,
    /// Sessions that were waiting to hand off and that the ring gives back to
    /// this node: resident again, as they were.
    pub back: Vec<Uid>,
}

/// What to do with a turn for a session the router says this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit<S> {
    /// The session is resident: queue the turn to it.
    Deliver,
    /// Start the session here (it is resident from now on), then queue the turn.
    Start(Start<S>),
    /// The ring in force gives the session to another node (`None`: to none):
    /// answer `unavailable`, the retry goes there.
    Moved(Option<NodeId>),
    /// A limit is reached: answer `overloaded`, saying which.
    Overloaded(Limit),
}

/// What the shell knows of a resident session that the machine may not have
/// seen: the turns queued to it now, and when it was last given one (the
/// shell's clock, in the machine's ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// Turns queued (waiting and in flight).
    pub queued: usize,
    /// When the last turn was delivered to it (0: none since it started).
    pub last: u64,
}

/// A limit a turn ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `resident_max` sessions are resident.
    Resident(usize),
    /// The session has `queue_max` turns queued.
    Queue(usize),
}

/// What became of a state that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival<S> {
    /// Refused: the new owner loads the session from the durable tier (or
    /// already has).
    Refused,
    /// Kept until the session's next turn.
    Kept,
    /// The session is resident: offer it the state (taken if it is waiting).
    Offer(Option<S>),
}

/// A session held here: the time of its last turn, and its position on
/// the ring ([`Ring::position_of`], read once when it starts: a ring change
/// asks each session's owner by position and hashes no uid).
#[derive(Debug, Clone, Copy)]
struct Held {
    last: u64,
    at: u64,
}

/// A session a ring moved away, waiting its turn to hand off.
#[derive(Debug, Clone)]
struct Leaving {
    held: Held,
    to: Destination,
}

/// The node's side of the handoff.
#[derive(Debug, Clone)]
pub struct Node<S> {
    me: NodeId,
    config: HandoffConfig,
    /// Resident sessions (routable here).
    resident: BTreeMap<Uid, Held>,
    /// Sessions another node announced, until when to wait for their state.
    expected: BTreeMap<Uid, u64>,
    /// States that arrived with no turn waiting, and when.
    arrived: BTreeMap<Uid, (Option<S>, u64)>,
    /// Sessions a ring moved away that wait their turn to hand off (the
    /// time of their last turn is the key of `queue`).
    leaving: BTreeMap<Uid, Leaving>,
    /// The epoch of the ring that moved them (the last adopted).
    leaving_epoch: Epoch,
    /// `leaving` in the order they go: talked to last first, then by uid.
    queue: BTreeSet<(Reverse<u64>, Uid)>,
    /// Sessions told to hand off that have not stopped yet.
    handing: BTreeSet<Uid>,
}

impl<S> Node<S> {
    /// Node `me`'s side, with nothing resident.
    pub fn new(me: NodeId, config: HandoffConfig) -> Self {
        Self {
            me,
            config,
            resident: BTreeMap::new(),
            expected: BTreeMap::new(),
            arrived: BTreeMap::new(),
            leaving: BTreeMap::new(),
            leaving_epoch: Epoch(0),
            queue: BTreeSet::new(),
            handing: BTreeSet::new(),
        }
    }

    /// Whether `uid` is resident (turns for it are queued to its session).
    pub fn is_resident(&self, uid: &Uid) -> bool {
        self.resident.contains_key(uid)
    }

    /// How many sessions are resident.
    pub fn resident_count(&self) -> usize {
        self.resident.len()
    }

    /// Admits a turn for `uid`, which the router says this node serves, at
    /// `now`; `queued` is how many turns its session holds now (resident only).
    pub fn admit(&mut self, now: u64, ring: &Ring, uid: &Uid, queued: usize) -> Admit<S> {
        if let Some(held) = self.resident.get_mut(uid) {
            if !self.config.delivers(queued) {
                return Admit::Overloaded(Limit::Queue(self.config.queue_max));
            }
            held.last = now;
            return Admit::Deliver;
        }
        // Routed here by a ring this node has just left behind.
        let owner = ring.owner(uid);
        if owner != Some(&self.me) && !mutation::active(Mutation::ClaimOffRing) {
            return Admit::Moved(owner.cloned());
        }
        // Checked before an arrived state or an expectation is used up.
        if self.resident.len() >= self.config.resident_max {
            return Admit::Overloaded(Limit::Resident(self.config.resident_max));
        }
        let expected = self.expected.remove(uid);
        let start = match (self.arrived.remove(uid), expected) {
            (Some((state, _)), _) => Start::Arrived(state),
            (None, Some(until)) if until > now => Start::Awaiting { until },
            _ => Start::Durable,
        };
        let held = Held {
            last: now,
            at: Ring::position_of(uid),
        };
        self.resident.insert(uid.clone(), held);
        Admit::Start(start)
    }

    /// Before this node routes by `next`: the announcements to send, one per
    /// new owner that `linked` says is reachable, naming the sessions resident
    /// here, or waiting to hand off, that `next` gives there.
    pub fn announce(&self, next: &Ring, linked: impl Fn(&NodeId) -> bool) -> Vec<Expect> {
        if mutation::active(Mutation::RouteBeforeExpect) {
            return Vec::new();
        }
        self.moved(next)
            .into_iter()
            .filter_map(|(to, uids)| {
                let to = to.filter(|to| linked(to))?;
                Some(Expect {
                    to,
                    epoch: next.epoch(),
                    uids,
                })
            })
            .collect()
    }

    /// This node now routes by `ring`: the resident sessions it moves leave the
    /// resident set and wait their turn to hand off. At most `handoff_max`
    /// hand off at once, the sessions talked to last first (`last`: when the
    /// shell last delivered a turn to a session, see [`Activity`]): a user talking now
    /// waits for their state at the new owner, the thousands of idle ones do
    /// not. Sessions still waiting from an earlier ring go where this one says,
    /// or are resident again if it gives them back here. States kept for
    /// sessions the ring gives elsewhere are dropped (their owner loads them
    /// from the durable tier).
    pub fn adopt(
        &mut self,
        ring: &Ring,
        linked: impl Fn(&NodeId) -> bool,
        last: impl Fn(&Uid) -> u64,
    ) -> Adopted {
        let me = self.me.clone();
        self.arrived.retain(|uid, _| ring.owner(uid) == Some(&me));
        // Asked once per member, not once per moved session.
        let linked: BTreeMap<&NodeId, bool> = ring.members().map(|m| (m, linked(m))).collect();
        let destination = |held: &Held| {
            let owner = ring.owner_at(held.at);
            (owner != Some(&me)).then(|| owner.filter(|o| linked.get(o) == Some(&true)).cloned())
        };
        self.leaving_epoch = ring.epoch();
        let mut back = Vec::new();
        for (uid, leaving) in &mut self.leaving {
            match destination(&leaving.held) {
                Some(to) => leaving.to = to,
                // Started here afresh meanwhile (admitted by a newer ring than
                // this node had adopted): the waiting one hands off to nobody.
                None if self.resident.contains_key(uid) => leaving.to = None,
                None => back.push((uid.clone(), leaving.held)),
            }
        }
        for (uid, held) in &back {
            self.leaving.remove(uid);
            self.queue.remove(&(Reverse(held.last), uid.clone()));
            self.resident.insert(uid.clone(), *held);
        }
        // One pass over the resident set, in uid order; the moved ones are
        // merged into `leaving` and `queue` at once, not one by one (a join
        // moves thousands while every turn here waits for this).
        let mut to = Vec::new();
        let extracted = self
            .resident
            .extract_if(.., |uid, held| match destination(held) {
                Some(dest) => {
                    held.last = held.last.max(last(uid));
                    to.push(dest);
                    true
                }
                None => false,
            });
        let moved: Vec<(Uid, Held)> = extracted.collect();
        let mut moved: BTreeMap<Uid, Leaving> = moved
            .into_iter()
            .zip(to)
            .map(|((uid, held), to)| (uid, Leaving { held, to }))
            .collect();
        let left: Vec<Uid> = moved.keys().cloned().collect();
        let mut queue: BTreeSet<(Reverse<u64>, Uid)> = moved
            .iter()
            .map(|(uid, leaving)| (Reverse(leaving.held.last), uid.clone()))
            .collect();
        self.queue.append(&mut queue);
        self.leaving.append(&mut moved);
        Adopted {
            left,
            hand_off: self.next_handoffs(),
            back: back.into_iter().map(|(uid, _)| uid).collect(),
        }
    }

    /// The session of `uid` told to hand off has stopped: returns the
    /// sessions to tell now in its place. A session of the same uid started
    /// here afresh meanwhile, and waiting to hand off in its turn, waits on
    /// (found by the simulator's `partition` seed 1200: dropping it too left
    /// that session resident on the old owner for good).
    #[must_use = "the sessions returned must be told to hand off"]
    pub fn handed(&mut self, uid: &Uid) -> Vec<HandOff> {
        if self.handing.remove(uid) {
            self.next_handoffs()
        } else {
            Vec::new()
        }
    }

    /// The session of `uid` that waited to hand off, not told yet, has
    /// stopped (passivated or fenced): it waits no more.
    pub fn stopped_waiting(&mut self, uid: &Uid) {
        if let Some(leaving) = self.leaving.remove(uid) {
            self.queue
                .remove(&(Reverse(leaving.held.last), uid.clone()));
        }
    }

    /// Sessions handing off now, and waiting to.
    pub fn handoffs(&self) -> (usize, usize) {
        (self.handing.len(), self.leaving.len())
    }

    /// Takes waiting sessions off the queue while fewer than `handoff_max`
    /// hand off.
    fn next_handoffs(&mut self) -> Vec<HandOff> {
        let mut start = Vec::new();
        while self.handing.len() < self.config.handoff_max.max(1) {
            let Some((_, uid)) = self.queue.pop_first() else {
                break;
            };
            if let Some(leaving) = self.leaving.remove(&uid) {
                start.push(HandOff {
                    uid: uid.clone(),
                    to: leaving.to,
                    epoch: self.leaving_epoch,
                });
                self.handing.insert(uid);
            }
        }
        start
    }

    /// The resident sessions `ring` gives to other nodes, and those waiting
    /// to hand off, by new owner (`None`: the ring is empty).
    fn moved(&self, ring: &Ring) -> BTreeMap<Option<NodeId>, Vec<Uid>> {
        let mut moved: BTreeMap<Option<NodeId>, Vec<Uid>> = BTreeMap::new();
        let held = self.resident.iter();
        let waiting = self
            .leaving
            .iter()
            .map(|(uid, leaving)| (uid, &leaving.held));
        for (uid, held) in held.chain(waiting) {
            let owner = ring.owner_at(held.at);
            if owner != Some(&self.me) {
                moved.entry(owner.cloned()).or_default().push(uid.clone());
            }
        }
        for uids in moved.values_mut() {
            uids.sort();
        }
        moved
    }

    /// Another node announced sessions it hands here: their turns wait for
    /// the state until `now + hold_ms` (past `resident_max` expected, the rest
    /// load from the durable tier).
    pub fn expect(&mut self, now: u64, uids: impl IntoIterator<Item = Uid>) {
        let until = now + self.config.hold_ms;
        for uid in uids {
            if self.expected.len() >= self.config.resident_max {
                break;
            }
            if !self.resident.contains_key(&uid) {
                self.expected.insert(uid, until);
            }
        }
    }

    /// A moved session's state arrived, sent at `epoch` (`None`: the old owner
    /// held nothing usable). Refused if this node's ring, at that epoch or later,
    /// gives the session to another node; a state sent at an epoch this node
    /// has not adopted yet is taken (the sender's newer ring gives it here).
    pub fn arrived(
        &mut self,
        now: u64,
        ring: &Ring,
        uid: Uid,
        epoch: Epoch,
        state: Option<S>,
    ) -> Arrival<S> {
        if ring.epoch() >= epoch && ring.owner(&uid) != Some(&self.me) {
            return Arrival::Refused;
        }
        self.expected.remove(&uid);
        if self.resident.contains_key(&uid) {
            return Arrival::Offer(state);
        }
        if self.arrived.len() >= self.config.resident_max {
            return Arrival::Refused;
        }
        // No session starts now: a join or a drain hands thousands over at
        // once, and most are idle.
        self.arrived.insert(uid, (state, now));
        Arrival::Kept
    }

    /// The session of `uid` stopped or was fenced: it is no longer resident.
    pub fn forget(&mut self, uid: &Uid) {
        self.resident.remove(uid);
    }

    /// The resident sessions idle for `idle_ms` with nothing queued, by the
    /// machine's record and the shell's (`activity(uid)`), taken off the
    /// resident set: each must passivate.
    pub fn idle(
        &mut self,
        now: u64,
        idle_ms: u64,
        activity: impl Fn(&Uid) -> Activity,
    ) -> Vec<Uid> {
        let idle: Vec<Uid> = self
            .resident
            .iter_mut()
            .filter_map(|(uid, held)| {
                // Recent by the machine's own record: recent whatever the shell says.
                if now.saturating_sub(held.last) < idle_ms {
                    return None;
                }
                let Activity { queued, last } = activity(uid);
                held.last = held.last.max(last);
                (now.saturating_sub(held.last) >= idle_ms && queued == 0).then(|| uid.clone())
            })
            .collect();
        for uid in &idle {
            self.resident.remove(uid);
        }
        idle
    }

    /// Drops expectations whose time ran out and states kept too long.
    pub fn expire(&mut self, now: u64) {
        self.expected.retain(|_, until| *until > now);
        let keep = self.config.arrived_keep_ms;
        self.arrived
            .retain(|_, (_, at)| now.saturating_sub(*at) < keep);
    }

    /// The node stops: nothing is resident, expected or kept.
    pub fn clear(&mut self) {
        self.resident.clear();
        self.expected.clear();
        self.arrived.clear();
        self.leaving.clear();
        self.queue.clear();
        self.handing.clear();
    }
}
