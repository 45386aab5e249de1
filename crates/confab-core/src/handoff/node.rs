//! A node's side of the protocol: resident sessions, admission, expected and
//! arrived states, and what a ring change moves.

use super::{Destination, HandoffConfig, Start};
use crate::ids::{Epoch, NodeId, Uid};
use crate::mutation::{self, Mutation};
use crate::ring::Ring;
use std::collections::BTreeMap;

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

/// The node's side of the handoff.
#[derive(Debug)]
pub struct Node<S> {
    me: NodeId,
    config: HandoffConfig,
    /// Resident sessions (routable here), with the time of their last turn.
    resident: BTreeMap<Uid, u64>,
    /// Sessions another node announced, until when to wait for their state.
    expected: BTreeMap<Uid, u64>,
    /// States that arrived with no turn waiting, and when.
    arrived: BTreeMap<Uid, (Option<S>, u64)>,
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
        if let Some(last) = self.resident.get_mut(uid) {
            if queued >= self.config.queue_max {
                return Admit::Overloaded(Limit::Queue(self.config.queue_max));
            }
            *last = now;
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
        self.resident.insert(uid.clone(), now);
        Admit::Start(start)
    }

    /// Before this node routes by `next`: the announcements to send, one per
    /// new owner that `linked` says is reachable, naming the resident sessions
    /// `next` moves there.
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
    /// resident set, and each must hand off to its destination. States kept for
    /// sessions the ring gives elsewhere are dropped (their owner loads them
    /// from the durable tier).
    pub fn adopt(
        &mut self,
        ring: &Ring,
        linked: impl Fn(&NodeId) -> bool,
    ) -> Vec<(Uid, Destination)> {
        let me = &self.me;
        self.arrived.retain(|uid, _| ring.owner(uid) == Some(me));
        let mut handoffs = Vec::new();
        for (to, uids) in self.moved(ring) {
            let to = to.filter(|to| linked(to));
            for uid in uids {
                let last = self.resident.remove(&uid).unwrap_or(0);
                handoffs.push((last, uid, to.clone()));
            }
        }
        // The sessions talked to last go first: a user talking now waits for
        // their state at the new owner, the thousands of idle ones do not.
        handoffs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        handoffs.into_iter().map(|(_, uid, to)| (uid, to)).collect()
    }

    /// The resident sessions `ring` gives to other nodes, by new owner (`None`:
    /// the ring is empty).
    fn moved(&self, ring: &Ring) -> BTreeMap<Option<NodeId>, Vec<Uid>> {
        let mut moved: BTreeMap<Option<NodeId>, Vec<Uid>> = BTreeMap::new();
        for uid in self.resident.keys() {
            let owner = ring.owner(uid);
            if owner != Some(&self.me) {
                moved.entry(owner.cloned()).or_default().push(uid.clone());
            }
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

    /// The resident sessions idle for `idle_ms` with nothing queued
    /// (`queued(uid)`), taken off the resident set: each must passivate.
    pub fn idle(&mut self, now: u64, idle_ms: u64, queued: impl Fn(&Uid) -> usize) -> Vec<Uid> {
        let idle: Vec<Uid> = self
            .resident
            .iter()
            .filter(|(uid, last)| now.saturating_sub(**last) >= idle_ms && queued(uid) == 0)
            .map(|(uid, _)| uid.clone())
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
    }
}
