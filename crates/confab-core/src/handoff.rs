//! Who serves a session, and how it moves when the ring changes: one
//! [`Ownership`] per session on each node that holds it, as a deterministic state
//! machine.
//!
//! - **Active:** this node owns the session and serves its turns, one at a time.
//! - **Handing off:** the ring gave the session to another node. No new turn is
//!   served here: turns are buffered (up to `buffer_max`; past it they are
//!   refused). Once the turn in flight, if any, is done, the state goes straight
//!   to the new owner ([`Action::SendState`]). When the new owner acknowledges
//!   it, the buffer is forwarded there in order and this node lets go
//!   ([`Action::Released`]). If no acknowledgement comes within `timeout_ms`, the
//!   buffer is forwarded all the same: the new owner rebuilds from the durable
//!   tier.
//! - **Awaiting:** the ring gave the session to this node. Turns are buffered
//!   until the state arrives ([`Input::StateArrived`]) or `timeout_ms` passes;
//!   either way the shell claims the session at the new epoch (the store's fence
//!   then refuses the old owner's writes) and loads it ([`Action::Claim`]), and
//!   once it is loaded ([`Input::Loaded`]) the buffered turns are served in order.
//! - **Released:** another node owns it; turns that still arrive are forwarded.
//! - **Fenced:** the store refused this node's claim (a newer epoch owns the
//!   session); turns are refused until the ring says who owns it.
//!
//! A node that stays the owner across a ring change claims the new epoch too
//! before it writes again: otherwise the owner of an epoch in between could
//! still write after it.
//!
//! The machine never serves two turns at once and never serves a turn while the
//! state is on its way, which is what keeps the session's seq rising by exactly
//! one across a move.

use crate::ids::{Epoch, NodeId};
use crate::mutation::{self, Mutation};
use std::collections::VecDeque;

/// Limits of a handoff.
#[derive(Debug, Clone)]
pub struct HandoffConfig {
    /// Turns buffered while the session moves, at most.
    pub buffer_max: usize,
    /// How long to wait for the other side before falling back on the durable
    /// tier (ms).
    pub timeout_ms: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            buffer_max: 64,
            timeout_ms: 1_000,
        }
    }
}

/// Where the session stands on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Active,
    /// Moving to `to`; the state was sent (`sent`) or waits for the turn in flight.
    HandingOff {
        /// The new owner.
        to: NodeId,
        /// When the move began (ms).
        since: u64,
        /// Whether the state has been sent.
        sent: bool,
    },
    /// Coming here: waiting for the state (until `since + timeout_ms`), or for the
    /// claim and load once `claiming`.
    Awaiting {
        /// When the ring gave it to this node (ms).
        since: u64,
        /// Whether the claim and load have been asked for.
        claiming: bool,
    },
    /// Owned by `owner`.
    Released {
        /// The owner.
        owner: NodeId,
    },
    /// The store refused this node's claim: a newer epoch owns the session, and
    /// this node does not know whose it is yet. Turns are refused until the ring
    /// tells.
    Fenced,
}

/// What happened to the session, as the shell tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<T> {
    /// A turn for the session arrived here.
    Turn(T),
    /// The turn last served is done (committed and answered, or failed).
    Served,
    /// The ring changed: `owner` owns the session at `epoch`.
    RingChanged {
        /// The new epoch.
        epoch: Epoch,
        /// The session's owner at that epoch.
        owner: NodeId,
    },
    /// The new owner has the state this node sent.
    StateAcked,
    /// The old owner's state arrived here.
    StateArrived,
    /// The claim at this node's epoch and the load are done.
    Loaded,
    /// The store refused the claim: its fence holds a newer epoch.
    ClaimRefused,
    /// The store refused a write of this node's: its fence holds a newer epoch.
    /// The session's memory here is no longer the session; turns are refused
    /// until the ring tells who owns it.
    Fenced,
    /// The store holds writes this node's memory of the session does not (a
    /// commit whose outcome was unknown, then a conflict): claim and load it
    /// again from the durable tier before serving.
    Reload,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<T> {
    /// Serve this turn (the session is active, and nothing else is in flight).
    Serve(T),
    /// Send this turn to the owner.
    Forward {
        /// The owner.
        to: NodeId,
        /// The turn.
        turn: T,
    },
    /// Refuse this turn: the buffer is full (`overloaded`, retry).
    Refuse(T),
    /// Send the session's state (snapshot bytes at its current seq) to `to`.
    SendState {
        /// The new owner.
        to: NodeId,
        /// The epoch it owns the session at.
        epoch: Epoch,
    },
    /// Claim the session at `epoch` (fencing the old owner) and load it: if
    /// `from_state`, from the memory this node holds (its own, or the state that
    /// arrived) and the durable log after it; else from the durable tier alone.
    Claim {
        /// This node's epoch.
        epoch: Epoch,
        /// Whether the old owner's state arrived.
        from_state: bool,
    },
    /// This node no longer holds the session.
    Released,
}

/// One session's ownership on one node.
#[derive(Debug)]
pub struct Ownership<T> {
    me: NodeId,
    epoch: Epoch,
    phase: Phase,
    config: HandoffConfig,
    buffer: VecDeque<T>,
    in_flight: bool,
    state_arrived: bool,
    /// The epoch of the claim in flight.
    claiming: Option<Epoch>,
}

impl<T> Ownership<T> {
    /// A session this node owns at `epoch` (activated by its first turn).
    pub fn active(me: NodeId, epoch: Epoch, config: HandoffConfig) -> Self {
        Self::with_phase(me, epoch, Phase::Active, config)
    }

    /// A session this node owns at `epoch` and must load from the durable tier
    /// first (no other node holds it in memory): the returned claim is the first
    /// thing to do.
    pub fn loading(me: NodeId, epoch: Epoch, now: u64, config: HandoffConfig) -> (Self, Action<T>) {
        let phase = Phase::Awaiting {
            since: now,
            claiming: true,
        };
        let mut own = Self::with_phase(me, epoch, phase, config);
        own.claiming = Some(epoch);
        let claim = Action::Claim {
            epoch,
            from_state: false,
        };
        (own, claim)
    }

    /// A session the ring just gave to this node: its old owner may send its state.
    pub fn awaiting(me: NodeId, epoch: Epoch, now: u64, config: HandoffConfig) -> Self {
        let phase = Phase::Awaiting {
            since: now,
            claiming: false,
        };
        Self::with_phase(me, epoch, phase, config)
    }

    fn with_phase(me: NodeId, epoch: Epoch, phase: Phase, config: HandoffConfig) -> Self {
        Self {
            me,
            epoch,
            phase,
            config,
            buffer: VecDeque::new(),
            in_flight: false,
            state_arrived: false,
            claiming: None,
        }
    }

    /// Where the session stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The epoch this node knows the session at.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The epoch of the claim in flight, if one is: the shell feeds `Loaded`
    /// or `ClaimRefused` only for the answer to that claim, and asks again at
    /// that epoch if the store did not answer.
    pub fn claiming(&self) -> Option<Epoch> {
        match self.phase {
            Phase::Awaiting { claiming: true, .. } => self.claiming,
            _ => None,
        }
    }

    /// Turns waiting here.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Feeds one input at `now` (ms); returns what to do, in order.
    pub fn handle(&mut self, now: u64, input: Input<T>) -> Vec<Action<T>> {
        let mut actions = Vec::new();
        match input {
            Input::Turn(turn) => self.turn(turn, &mut actions),
            Input::Served => {
                self.in_flight = false;
                self.progress(&mut actions);
            }
            Input::RingChanged { epoch, owner } => {
                if epoch > self.epoch {
                    self.epoch = epoch;
                    self.ring_changed(now, owner, &mut actions);
                }
            }
            Input::StateAcked => {
                if let Phase::HandingOff { to, sent: true, .. } = &self.phase {
                    let to = to.clone();
                    self.release(to, &mut actions);
                }
            }
            Input::StateArrived => {
                if matches!(
                    self.phase,
                    Phase::Awaiting {
                        claiming: false,
                        ..
                    }
                ) {
                    self.state_arrived = true;
                    self.progress(&mut actions);
                }
            }
            Input::Loaded => {
                if matches!(self.phase, Phase::Awaiting { claiming: true, .. }) {
                    if self.claiming.is_some_and(|claimed| claimed < self.epoch) {
                        // The ring moved on (and back here) during the claim:
                        // claim the newer epoch too before writing.
                        self.claiming = Some(self.epoch);
                        actions.push(Action::Claim {
                            epoch: self.epoch,
                            from_state: true,
                        });
                    } else {
                        self.claiming = None;
                        self.state_arrived = false;
                        self.phase = Phase::Active;
                        self.progress(&mut actions);
                    }
                }
            }
            Input::ClaimRefused => {
                if matches!(self.phase, Phase::Awaiting { claiming: true, .. }) {
                    self.fence(&mut actions);
                }
            }
            Input::Fenced => {
                self.in_flight = false;
                if matches!(self.phase, Phase::Active | Phase::HandingOff { .. }) {
                    self.fence(&mut actions);
                }
            }
            Input::Reload => {
                self.in_flight = false;
                if self.phase == Phase::Active {
                    self.phase = Phase::Awaiting {
                        since: now,
                        claiming: true,
                    };
                    self.claiming = Some(self.epoch);
                    actions.push(Action::Claim {
                        epoch: self.epoch,
                        from_state: false,
                    });
                }
            }
        }
        actions
    }

    /// Runs what is due at `now`: the fallbacks of a handoff that stalled.
    pub fn handle_timeout(&mut self, now: u64) -> Vec<Action<T>> {
        let mut actions = Vec::new();
        match &self.phase {
            // The new owner rebuilds from the durable tier; the buffer goes to it
            // all the same. A turn still in flight finishes first.
            Phase::HandingOff { to, since, .. }
                if now >= since + self.config.timeout_ms && !self.in_flight =>
            {
                let to = to.clone();
                self.release(to, &mut actions);
            }
            Phase::Awaiting {
                since,
                claiming: false,
            } if now >= since + self.config.timeout_ms && !self.in_flight => {
                self.phase = Phase::Awaiting {
                    since: *since,
                    claiming: true,
                };
                self.claiming = Some(self.epoch);
                actions.push(Action::Claim {
                    epoch: self.epoch,
                    from_state: false,
                });
            }
            _ => {}
        }
        actions
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    /// A handoff with a turn in flight has none: `Served` comes first.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.phase {
            Phase::HandingOff { since, .. } if !self.in_flight => {
                Some(since + self.config.timeout_ms)
            }
            // A turn still in flight here (the node kept the session across a
            // ring change) is committed or refused before any claim.
            Phase::Awaiting {
                since,
                claiming: false,
            } if !self.in_flight => Some(since + self.config.timeout_ms),
            _ => None,
        }
    }

    fn turn(&mut self, turn: T, actions: &mut Vec<Action<T>>) {
        match &self.phase {
            Phase::Released { owner } => actions.push(Action::Forward {
                to: owner.clone(),
                turn,
            }),
            Phase::Active if !self.in_flight && self.buffer.is_empty() => {
                self.in_flight = true;
                actions.push(Action::Serve(turn));
            }
            Phase::Fenced => actions.push(Action::Refuse(turn)),
            _ if self.buffer.len() >= self.config.buffer_max => actions.push(Action::Refuse(turn)),
            _ => self.buffer.push_back(turn),
        }
    }

    fn ring_changed(&mut self, now: u64, owner: NodeId, actions: &mut Vec<Action<T>>) {
        let mine = owner == self.me;
        match (&self.phase, mine) {
            // Still here, at a new epoch: claim it before the next write, so that
            // an owner of an epoch in between cannot write after this one.
            (Phase::Active, true) => {
                self.state_arrived = true;
                self.phase = Phase::Awaiting {
                    since: now,
                    claiming: false,
                };
                self.progress(actions);
            }
            (Phase::Active, false) => {
                self.phase = Phase::HandingOff {
                    to: owner,
                    since: now,
                    sent: false,
                };
                self.progress(actions);
            }
            // The move is called off. This node's memory is a prefix of the
            // session's log even if the other side served turns since: it
            // claims the new epoch (fencing the other side) at once, and the
            // claim reads the rest of the log.
            (Phase::HandingOff { .. }, true) => {
                self.state_arrived = true;
                self.phase = Phase::Awaiting {
                    since: now,
                    claiming: false,
                };
                self.progress(actions);
            }
            (Phase::HandingOff { .. }, false) => {
                self.phase = Phase::HandingOff {
                    to: owner,
                    since: now,
                    sent: false,
                };
                self.progress(actions);
            }
            (Phase::Awaiting { .. }, false) => self.release(owner, actions),
            (Phase::Awaiting { .. }, true) => {}
            (Phase::Released { .. } | Phase::Fenced, true) => {
                self.phase = Phase::Awaiting {
                    since: now,
                    claiming: false,
                };
            }
            (Phase::Released { .. } | Phase::Fenced, false) => {
                self.phase = Phase::Released { owner }
            }
        }
    }

    /// Moves on once nothing is in flight: sends the state, claims, or serves the
    /// next buffered turn.
    fn progress(&mut self, actions: &mut Vec<Action<T>>) {
        if self.in_flight {
            return;
        }
        match &mut self.phase {
            Phase::HandingOff { to, sent, .. } if !*sent => {
                *sent = true;
                actions.push(Action::SendState {
                    to: to.clone(),
                    epoch: self.epoch,
                });
            }
            Phase::Awaiting {
                claiming: claiming @ false,
                ..
            } if self.state_arrived => {
                *claiming = true;
                self.claiming = Some(self.epoch);
                actions.push(Action::Claim {
                    epoch: self.epoch,
                    from_state: true,
                });
            }
            Phase::Active => {
                if let Some(turn) = self.buffer.pop_front() {
                    self.in_flight = true;
                    actions.push(Action::Serve(turn));
                }
            }
            _ => {}
        }
    }

    fn fence(&mut self, actions: &mut Vec<Action<T>>) {
        self.claiming = None;
        self.state_arrived = false;
        self.phase = Phase::Fenced;
        actions.extend(self.buffer.drain(..).map(Action::Refuse));
    }

    fn release(&mut self, to: NodeId, actions: &mut Vec<Action<T>>) {
        if mutation::active(Mutation::DropHandoffBuffer) {
            self.buffer.clear();
        }
        for turn in self.buffer.drain(..) {
            actions.push(Action::Forward {
                to: to.clone(),
                turn,
            });
        }
        self.state_arrived = false;
        self.claiming = None;
        self.phase = Phase::Released { owner: to };
        actions.push(Action::Released);
    }
}

#[cfg(test)]
mod tests;
