//! States on their way out, batched per new owner.

use super::HandoffConfig;
use crate::ids::{Epoch, NodeId, Uid};
use std::collections::BTreeMap;

/// One message of states to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<S> {
    /// Its number, to match the answer.
    pub id: u64,
    /// The new owner.
    pub to: NodeId,
    /// The states, in the order they were pushed.
    pub states: Vec<Moved<S>>,
}

/// One moved session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved<S> {
    /// Whose.
    pub uid: Uid,
    /// The epoch that moved it.
    pub epoch: Epoch,
    /// The state (`None`: nothing usable; the new owner loads from the
    /// durable tier).
    pub state: Option<S>,
}

/// The outbox: gathers states for `linger_ms` (or until `handoff_max` wait:
/// every session handing off at once has pushed its own; waiting longer
/// would only add the linger to each round, measured as half of a round
/// during a drain of 24,000 sessions),
/// sends each new owner batches of at most `batch_max`, and reports for each
/// state whether it was taken; a batch unanswered after `hold_ms` was not.
#[derive(Debug)]
pub struct Outbox<S> {
    config: HandoffConfig,
    /// States not sent yet, each with its new owner.
    waiting: Vec<(NodeId, Moved<S>)>,
    /// When the first state of this round came.
    since: Option<u64>,
    /// Batches sent and not answered: to whom, whose states, until when.
    sent: BTreeMap<u64, (Vec<Uid>, u64)>,
    next_id: u64,
}

impl<S> Outbox<S> {
    /// An empty outbox.
    pub fn new(config: HandoffConfig) -> Self {
        Self {
            config,
            waiting: Vec::new(),
            since: None,
            sent: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// States waiting to be sent.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A moved session's state, for `to`.
    pub fn push(&mut self, now: u64, to: NodeId, uid: Uid, epoch: Epoch, state: Option<S>) {
        self.since.get_or_insert(now);
        self.waiting.push((to, Moved { uid, epoch, state }));
    }

    /// The batches to send now: everything waiting once the round has
    /// lingered `linger_ms` or `handoff_max` states wait; by node, in order.
    pub fn poll_batches(&mut self, now: u64) -> Vec<Batch<S>> {
        let due = self
            .since
            .is_some_and(|since| now >= since + self.config.linger_ms)
            || self.waiting.len() >= self.config.handoff_max.max(1);
        if !due {
            return Vec::new();
        }
        self.since = None;
        let mut by_node: BTreeMap<NodeId, Vec<Moved<S>>> = BTreeMap::new();
        for (to, moved) in self.waiting.drain(..) {
            by_node.entry(to).or_default().push(moved);
        }
        let mut batches = Vec::new();
        for (to, states) in by_node {
            let mut states = states.into_iter().peekable();
            while states.peek().is_some() {
                let chunk: Vec<_> = states.by_ref().take(self.config.batch_max.max(1)).collect();
                let id = self.next_id;
                self.next_id += 1;
                let uids = chunk.iter().map(|moved| moved.uid.clone()).collect();
                self.sent.insert(id, (uids, now + self.config.hold_ms));
                batches.push(Batch {
                    id,
                    to: to.clone(),
                    states: chunk,
                });
            }
        }
        batches
    }

    /// The new owner answered batch `id`: for each state, in order, whether it
    /// was taken (missing answers: not taken). Returns each session's result.
    pub fn answered(&mut self, id: u64, taken: &[bool]) -> Vec<(Uid, bool)> {
        let Some((uids, _)) = self.sent.remove(&id) else {
            return Vec::new();
        };
        uids.into_iter()
            .enumerate()
            .map(|(i, uid)| (uid, taken.get(i).copied().unwrap_or(false)))
            .collect()
    }

    /// The next time something is due: a round to send or a batch unanswered.
    pub fn poll_timeout(&self) -> Option<u64> {
        let linger = self.since.map(|since| since + self.config.linger_ms);
        let answer = self.sent.values().map(|(_, until)| *until).min();
        linger.into_iter().chain(answer).min()
    }

    /// Batches unanswered by `now`: none of their states was taken.
    pub fn handle_timeout(&mut self, now: u64) -> Vec<(Uid, bool)> {
        let late: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        late.into_iter()
            .flat_map(|id| self.answered(id, &[]))
            .collect()
    }
}
