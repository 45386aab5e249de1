//! One resident session on one node: load, serve, hand off, retire.

use super::{Destination, HandoffConfig};
use crate::ids::{Epoch, NodeId, Uid};
use crate::mutation::{self, Mutation};
use crate::ring::Ring;
use std::collections::VecDeque;

/// A queued turn's deadline, on the machine's clock (ms): after it nobody
/// waits for the answer (the caller timed out and retries with the same id),
/// so the session does not run it. The machine decides that, not its shells:
/// the runtime and the simulator both give each turn its deadline.
pub trait Deadline {
    /// When its caller stops waiting (`None`: it waits as long as it takes;
    /// a caller already gone may answer 0).
    fn deadline_ms(&self) -> Option<u64>;
}

/// What a new session starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start<S> {
    /// The durable tier.
    Durable,
    /// Its old owner is handing it here: wait for the state until `until` (ms).
    Awaiting {
        /// When to stop waiting and load from the durable tier.
        until: u64,
    },
    /// Its old owner's state (`None`: the old owner held nothing usable; load
    /// from the durable tier).
    Arrived(Option<S>),
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not loaded: the next turn loads it (a failed commit leaves it here too,
    /// since memory never runs ahead of the log).
    Unloaded,
    /// A turn waits for the old owner's state, until `until` (ms).
    AwaitingState {
        /// When to load from the durable tier instead.
        until: u64,
    },
    /// The claim at `epoch` and the load are in flight.
    Claiming {
        /// The epoch claimed.
        epoch: Epoch,
    },
    /// Loaded and claimed: turns are served.
    Active,
    /// The state is with the outbox; waiting (until `until`) to learn whether
    /// the new owner took it.
    Sending {
        /// When to take silence for "not taken".
        until: u64,
    },
    /// A newer owner holds the session: every turn is refused until it retires.
    Fenced,
    /// Done: handed off, passivated or retired.
    Stopped,
}

/// What the store answered to a claim and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Claimed at the epoch and loaded.
    Loaded,
    /// A newer epoch owns the session.
    Fenced,
    /// The store failed: nothing is known.
    Failed,
}

/// How the turn in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Answered (committed, a duplicate, refused by the filter, or failed
    /// without touching memory).
    Done,
    /// A commit failed: memory is dropped and the next turn loads again.
    Reload,
    /// The store's fence refused a write: a newer owner holds the session.
    Fenced,
}

/// Why a turn is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The ring in force names another node (`None`: nobody): retry there.
    Moved(Option<NodeId>),
    /// A newer owner fenced this session here.
    Fenced,
    /// The durable tier failed while loading: nothing was recorded.
    LoadFailed,
    /// Its caller stopped waiting before the session reached it: not run,
    /// nothing recorded (its retry carries the same id).
    CallerGone,
}

/// An input to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput<T, S> {
    /// A turn routed to this session.
    Turn(T),
    /// The old owner's state arrived (`None`: it held nothing usable).
    State(Option<S>),
    /// The claim in flight at `epoch` was answered.
    Claimed {
        /// The epoch it was made at.
        epoch: Epoch,
        /// The answer.
        result: Claimed,
    },
    /// The turn in flight ended.
    Served(Served),
    /// The ring gave the session to another node: finish the queued turns,
    /// then send the state to `to`.
    HandOff {
        /// The new owner, if linked.
        to: Destination,
        /// The epoch it owns the session at.
        epoch: Epoch,
    },
    /// The session has been idle: snapshot it and stop.
    Passivate,
    /// Whether the new owner took the state sent.
    Taken(bool),
}

/// What the shell must do for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput<T, S> {
    /// Claim the session at `epoch` (fencing older owners) and load it: from
    /// `state` plus the later events if given, else from the durable tier.
    Claim {
        /// The epoch to claim.
        epoch: Epoch,
        /// The old owner's state, if one came.
        state: Option<S>,
    },
    /// Serve this turn on the loaded session, writing at [`Session::epoch`].
    Serve(T),
    /// Answer this turn with an error.
    Refuse {
        /// The turn.
        turn: T,
        /// Why.
        refusal: Refusal,
    },
    /// Hand the session's state (none if it is not loaded) to the outbox for `to`.
    SendState {
        /// The new owner.
        to: NodeId,
        /// The epoch it owns the session at.
        epoch: Epoch,
    },
    /// Write the final snapshot: through the batch writer if the new owner took
    /// the state (the fence drops it once the new owner claims), else at once.
    WriteSnapshot {
        /// Whether the batch writer may take it.
        deferred: bool,
    },
    /// The session is done here: stop it (fenced sessions are no longer routed).
    Stop,
}

/// One session on one node.
#[derive(Debug)]
pub struct Session<T, S> {
    uid: Uid,
    me: NodeId,
    config: HandoffConfig,
    phase: Phase,
    start: Start<S>,
    /// The epoch of the last successful claim: every write carries it.
    epoch: Epoch,
    loaded: bool,
    queue: VecDeque<T>,
    in_flight: bool,
    /// Set by `HandOff`: where to send the state once the queue is served.
    leaving: Option<(Destination, Epoch)>,
    passivating: bool,
}

impl<T: Deadline, S> Session<T, S> {
    /// A session of `uid` on node `me`, starting from `start`.
    pub fn new(uid: Uid, me: NodeId, start: Start<S>, config: HandoffConfig) -> Self {
        Self {
            uid,
            me,
            config,
            phase: Phase::Unloaded,
            start,
            epoch: Epoch(0),
            loaded: false,
            queue: VecDeque::new(),
            in_flight: false,
            leaving: None,
            passivating: false,
        }
    }

    /// Where it stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The epoch its writes carry (its last claim).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Whether the session is loaded (memory is a prefix of the log).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Turns queued here, not counting the one in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a turn is being served.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether it waits for its old owner's state (a state offered now is taken).
    pub fn wants_state(&self) -> bool {
        matches!(self.phase, Phase::AwaitingState { .. })
            || (self.phase == Phase::Unloaded && matches!(self.start, Start::Awaiting { .. }))
    }

    /// Whether it has been told to leave (hand off or passivate).
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some() || self.passivating
    }

    /// Feeds one input at `now` (ms), with the ring in force; returns what to
    /// do, in order.
    pub fn handle(
        &mut self,
        now: u64,
        ring: &Ring,
        input: SessionInput<T, S>,
    ) -> Vec<SessionOutput<T, S>> {
        let mut out = Vec::new();
        match input {
            SessionInput::Turn(turn) => match self.phase {
                Phase::Fenced => out.push(SessionOutput::Refuse {
                    turn,
                    refusal: Refusal::Fenced,
                }),
                Phase::Sending { .. } | Phase::Stopped => out.push(SessionOutput::Refuse {
                    turn,
                    refusal: Refusal::Moved(ring.owner(&self.uid).cloned()),
                }),
                _ => self.queue.push_back(turn),
            },
            SessionInput::State(state) => {
                if self.wants_state() {
                    if mutation::active(Mutation::DropHandoffBuffer) {
                        self.queue.clear();
                    }
                    self.start = Start::Arrived(state);
                    if matches!(self.phase, Phase::AwaitingState { .. }) {
                        self.phase = Phase::Unloaded;
                    }
                }
            }
            SessionInput::Claimed { epoch, result } => {
                // Only the answer to the claim in flight counts.
                if self.phase != (Phase::Claiming { epoch }) {
                    return out;
                }
                match result {
                    Claimed::Loaded => {
                        self.epoch = epoch;
                        self.loaded = true;
                        self.phase = Phase::Active;
                    }
                    Claimed::Fenced => self.fence(&mut out),
                    Claimed::Failed => {
                        self.phase = Phase::Unloaded;
                        // That turn is answered; the next one loads again.
                        if let Some(turn) = self.queue.pop_front() {
                            out.push(SessionOutput::Refuse {
                                turn,
                                refusal: Refusal::LoadFailed,
                            });
                        }
                    }
                }
            }
            SessionInput::Served(served) => {
                if !self.in_flight {
                    return out;
                }
                self.in_flight = false;
                match served {
                    Served::Done => {}
                    Served::Reload => {
                        self.loaded = false;
                        if self.phase == Phase::Active {
                            self.phase = Phase::Unloaded;
                        }
                    }
                    Served::Fenced => self.fence(&mut out),
                }
            }
            SessionInput::HandOff { to, epoch } => {
                if self.phase != Phase::Fenced && self.phase != Phase::Stopped {
                    self.leaving = Some((to, epoch));
                }
            }
            SessionInput::Passivate => {
                if self.phase != Phase::Fenced && self.phase != Phase::Stopped {
                    self.passivating = true;
                }
            }
            SessionInput::Taken(taken) => {
                if matches!(self.phase, Phase::Sending { .. }) {
                    self.finish(taken, &mut out);
                }
            }
        }
        self.progress(now, ring, &mut out);
        out
    }

    /// Runs what is due at `now`: a wait for a state that did not come, or an
    /// answer from the new owner that did not come.
    pub fn handle_timeout(&mut self, now: u64, ring: &Ring) -> Vec<SessionOutput<T, S>> {
        let mut out = Vec::new();
        match self.phase {
            Phase::AwaitingState { until } if now >= until => {
                self.start = Start::Durable;
                self.phase = Phase::Unloaded;
            }
            Phase::Sending { until } if now >= until => self.finish(false, &mut out),
            _ => {}
        }
        self.progress(now, ring, &mut out);
        out
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::AwaitingState { until } | Phase::Sending { until } => Some(until),
            _ => None,
        }
    }

    /// Moves on once nothing is in flight: loads, serves the next turn, or
    /// leaves once the queue is served.
    fn progress(&mut self, now: u64, ring: &Ring, out: &mut Vec<SessionOutput<T, S>>) {
        loop {
            if self.in_flight {
                return;
            }
            match self.phase {
                Phase::Unloaded if !self.queue.is_empty() => match &self.start {
                    Start::Awaiting { until } if now < *until => {
                        self.phase = Phase::AwaitingState { until: *until };
                        return;
                    }
                    _ => {
                        if !self.claim(ring, out) {
                            continue;
                        }
                        return;
                    }
                },
                Phase::Active if !self.queue.is_empty() => {
                    let turn = self.queue.pop_front().expect("not empty");
                    // Its work would only delay the turns behind it.
                    if turn.deadline_ms().is_some_and(|deadline| now >= deadline) {
                        out.push(SessionOutput::Refuse {
                            turn,
                            refusal: Refusal::CallerGone,
                        });
                        continue;
                    }
                    self.in_flight = true;
                    out.push(SessionOutput::Serve(turn));
                    return;
                }
                Phase::Unloaded | Phase::Active if self.queue.is_empty() => {
                    self.leave(now, out);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Claims at the ring's epoch if the ring names this node; else refuses
    /// the queued turns (their retries go to the owner). Returns whether a
    /// claim went out.
    fn claim(&mut self, ring: &Ring, out: &mut Vec<SessionOutput<T, S>>) -> bool {
        let owner = ring.owner(&self.uid);
        // A claim at an epoch the store already holds does not fence: a node
        // the ring does not name must not make one.
        if owner != Some(&self.me) && !mutation::active(Mutation::ClaimOffRing) {
            let owner = owner.cloned();
            for turn in self.queue.drain(..) {
                out.push(SessionOutput::Refuse {
                    turn,
                    refusal: Refusal::Moved(owner.clone()),
                });
            }
            return false;
        }
        let state = match std::mem::replace(&mut self.start, Start::Durable) {
            Start::Arrived(state) => state,
            Start::Durable | Start::Awaiting { .. } => None,
        };
        let epoch = ring.epoch();
        self.phase = Phase::Claiming { epoch };
        out.push(SessionOutput::Claim { epoch, state });
        true
    }

    /// With nothing queued or in flight: hands off or passivates if told to.
    fn leave(&mut self, now: u64, out: &mut Vec<SessionOutput<T, S>>) {
        if let Some((to, epoch)) = self.leaving.take() {
            match to {
                Some(to) => {
                    out.push(SessionOutput::SendState { to, epoch });
                    self.phase = Phase::Sending {
                        until: now + self.config.hold_ms,
                    };
                }
                None => self.finish(false, out),
            }
        } else if self.passivating {
            self.finish(false, out);
        }
    }

    fn finish(&mut self, taken: bool, out: &mut Vec<SessionOutput<T, S>>) {
        if self.loaded {
            out.push(SessionOutput::WriteSnapshot { deferred: taken });
        }
        self.phase = Phase::Stopped;
        out.push(SessionOutput::Stop);
    }

    fn fence(&mut self, out: &mut Vec<SessionOutput<T, S>>) {
        self.loaded = false;
        self.phase = Phase::Fenced;
        for turn in self.queue.drain(..) {
            out.push(SessionOutput::Refuse {
                turn,
                refusal: Refusal::Fenced,
            });
        }
        out.push(SessionOutput::Stop);
    }
}
