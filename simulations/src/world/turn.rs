//! A turn on a node: the core's turn machine ([`TurnFlow`]) decides, this
//! file carries its asks out as production's session actor does. A commit is a
//! store operation that takes time (and may fail, or land with its answer
//! lost); the rest is answered at once: a log read, the stages (the simulator
//! has none: the text comes back unchanged), an action (a builtin run under
//! its key), a dead letter. Commits that find the store unavailable are tried
//! again `commit_attempts` times, as production's group committer does.

use super::*;
use crate::conversations::run_action;
use confab_core::session::{ActionOutcome, PendingAction, Slots};
use confab_dialog::turn::{Ask, Committed, Replied, Step, TurnFailure, TurnFlow, TurnInput};

/// A turn being served: its flow, and the commit it waits for.
pub(super) struct Pending {
    turn: Turn,
    flow: TurnFlow,
    /// The events of the commit in flight, for a retry.
    events: Vec<RecordedEvent>,
    attempts: u32,
    /// Whether the flow gave its answer.
    answered: bool,
    /// Whether a commit was fenced: the session's owner is newer elsewhere.
    fenced: bool,
    /// When the confirmation in flight was asked, on the node's clock.
    confirm_asked: u64,
}

impl World {
    pub(super) fn serve(&mut self, node: usize, hid: u64, turn: Turn) {
        let held = self.nodes[node].held.get_mut(&hid).expect("held");
        let s = held.s;
        if held.state.is_none() {
            self.checker.violate(
                self.now,
                "served-loaded",
                Some(node),
                format!("u{s}: served with no state"),
            );
            self.answer(node, turn, Answer::Unavailable);
            self.session_input(node, hid, SessionInput::Served(Served::Reload));
            return;
        }
        let uid = self.uids[s as usize].clone();
        let epoch = held.life.epoch();
        if turn.hello {
            let mut flow = TurnFlow::read(uid, epoch);
            let now = self.turn_now(node, s);
            let choose = self.chooser(s);
            let held = self.nodes[node].held.get_mut(&hid).expect("held");
            let step = flow.start(now, &mut held.state, &choose);
            let pending = Pending {
                turn,
                flow,
                events: vec![],
                attempts: 0,
                answered: false,
                fenced: false,
                confirm_asked: 0,
            };
            return self.follow(node, hid, pending, step);
        }
        let message_id = MessageId::new(format!("m{}", turn.msg)).expect("a valid message id");
        // Users never say more than their script: an empty text would be
        // refused by the filter.
        let text = match self.conversations.as_deref() {
            Some(c) => c.turn(s, turn.msg).map_or("", |t| t.say.as_str()),
            None => SCRIPT[(turn.msg as usize - 1) % SCRIPT.len()],
        };
        let mut flow = TurnFlow::turn(uid, epoch, message_id, text.to_owned());
        let now = self.turn_now(node, s);
        let choose = self.chooser(s);
        let held = self.nodes[node].held.get_mut(&hid).expect("held");
        let step = flow.start(now, &mut held.state, &choose);
        let pending = Pending {
            turn,
            flow,
            events: vec![],
            attempts: 0,
            answered: false,
            fenced: false,
            confirm_asked: 0,
        };
        self.follow(node, hid, pending, step);
    }

    /// The time a session's turn is recorded at: the node's clock, or the
    /// conversation's when users play scripts (their flows count days).
    fn turn_now(&self, node: usize, s: u32) -> u64 {
        let now = self.node_now(node);
        match self.conversations.as_deref() {
            Some(c) => c.turn_ms(s, now),
            None => now,
        }
    }

    /// The pipeline session `s` is served by (the simulator runs one version
    /// per session, whichever version asked for a pending action).
    fn chooser(&self, s: u32) -> impl Fn(Option<&str>) -> Pipeline + use<> {
        let pipeline = match self.conversations.as_deref() {
            Some(c) => c.pipeline(s).clone(),
            None => self.pipeline.clone(),
        };
        move |_| pipeline.clone()
    }

    /// Carries a flow's steps out until it waits for a commit or is over.
    fn follow(&mut self, node: usize, hid: u64, mut pending: Pending, mut step: Step) {
        let s = self.nodes[node].held[&hid].s;
        loop {
            // Answered at most once per flow (before its commit only with
            // the planted bug `ack-before-commit`).
            if let Some(answer) = step.answer.take() {
                pending.answered = true;
                let answer = self.answer_of(node, s, answer);
                self.answer(node, pending.turn, answer);
            }
            let input = match step.ask.take() {
                None => break,
                Some(Ask::Commit { events }) => {
                    let epoch = events[0].epoch;
                    pending.events = events.clone();
                    pending.attempts = 1;
                    let held = self.nodes[node].held.get_mut(&hid).expect("held");
                    held.pending = Some(pending);
                    let op = StoreOp::Append {
                        s,
                        hid,
                        epoch,
                        events,
                    };
                    self.store_op(node, op, 0);
                    return;
                }
                Some(Ask::Confirm { epoch }) => {
                    pending.confirm_asked = self.node_now(node);
                    let held = self.nodes[node].held.get_mut(&hid).expect("held");
                    held.pending = Some(pending);
                    self.store_op(node, StoreOp::Confirm { s, hid, epoch }, 0);
                    return;
                }
                Some(Ask::ReadEvent { seq }) => {
                    let event = self.durable.log(s).get(seq.0 as usize - 1).cloned();
                    TurnInput::Event(Ok(event))
                }
                Some(Ask::Stage { text, .. }) => TurnInput::Staged(Ok(text)),
                Some(Ask::RunAction {
                    pending: action, ..
                }) => {
                    // Run now, answered when it has taken its time.
                    let outcome = self.run_action(node, s, &action);
                    let (low, high) = ACTION_MS;
                    let at = self.now + self.store_rng.between(low, high);
                    let inc = self.nodes[node].incarnation;
                    let held = self.nodes[node].held.get_mut(&hid).expect("held");
                    held.pending = Some(pending);
                    self.push(
                        at,
                        Ev::ActionDone {
                            node,
                            inc,
                            hid,
                            outcome,
                        },
                    );
                    return;
                }
                Some(Ask::DeadLetter {
                    pending: action, ..
                }) => {
                    self.durable.dead_letters.insert((s, action.requested.0));
                    self.stats.dead_letters += 1;
                    TurnInput::DeadLettered(Ok(()))
                }
            };
            let now = self.turn_now(node, s);
            let choose = self.chooser(s);
            let held = self.nodes[node].held.get_mut(&hid).expect("held");
            step = pending.flow.handle(now, &mut held.state, &choose, input);
        }
        let held = &self.nodes[node].held[&hid];
        if pending.turn.hello && !pending.answered {
            // A read that ended with nothing to answer: the memory is the
            // latest, as proved; its seq is the answer.
            let last_seq = held.state.as_ref().map(SessionState::seq);
            let answer =
                last_seq.map_or(Answer::Unavailable, |seq| Answer::Hello { last_seq: seq.0 });
            self.answer(node, pending.turn, answer);
        }
        let held = &self.nodes[node].held[&hid];
        let served = if pending.fenced {
            // A newer epoch claimed the session: this node's ring is stale.
            self.refresh(node);
            Served::Fenced
        } else if held.state.is_none() {
            Served::Reload
        } else {
            Served::Done
        };
        self.session_input(node, hid, SessionInput::Served(served));
    }

    /// Runs a pending action under its key; an action whose success is in
    /// the log already must never run again.
    fn run_action(&mut self, node: usize, s: u32, action: &PendingAction) -> ActionOutcome {
        let done = self.durable.log(s).iter().any(|e| {
            matches!(&e.event, Event::ActionSucceeded { requested, .. } if *requested == action.requested)
        });
        if done {
            let detail = format!(
                "u{s}: {} requested at seq {} runs again after its success was committed",
                action.action, action.requested
            );
            self.checker
                .violate(self.now, "action-once", Some(node), detail);
        }
        self.stats.actions_run += 1;
        let uid = &self.uids[s as usize];
        match self.conversations.as_deref() {
            Some(c) => c.run_action(s, uid, action),
            None => run_action(&BTreeMap::new(), uid, action),
        }
    }

    /// The client's answer for what the flow answered.
    fn answer_of(&mut self, node: usize, s: u32, answer: Result<Replied, TurnFailure>) -> Answer {
        match answer {
            Ok(replied) => Answer::Done {
                turn_seq: replied.ack_seq.0,
                reply_seq: replied.reply_seq.0,
                reply: self
                    .conversations
                    .is_some()
                    .then(|| heard(&replied.intent, &replied.text, &replied.slots)),
            },
            Err(TurnFailure::Rejected(_)) => Answer::Refused,
            Err(TurnFailure::Overloaded(_)) => Answer::Overloaded,
            Err(TurnFailure::Diverged(why)) => {
                self.checker
                    .violate(self.now, "log-applies", Some(node), format!("u{s}: {why}"));
                Answer::Unavailable
            }
            Err(_) => Answer::Unavailable,
        }
    }

    /// An action's outcome, after its time.
    pub(super) fn action_done(&mut self, node: usize, hid: u64, outcome: ActionOutcome) {
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        let s = held.s;
        let Some(pending) = held.pending.take() else {
            return;
        };
        self.record("action_done", Some(node), s.into(), 0, 0);
        self.resume(node, hid, pending, TurnInput::Acted(outcome));
    }

    /// Feeds the result of a flow's ask back, and carries its next steps out.
    fn resume(&mut self, node: usize, hid: u64, mut pending: Pending, input: TurnInput) {
        let s = self.nodes[node].held[&hid].s;
        let now = self.turn_now(node, s);
        let choose = self.chooser(s);
        let held = self.nodes[node].held.get_mut(&hid).expect("held");
        let step = pending.flow.handle(now, &mut held.state, &choose, input);
        self.follow(node, hid, pending, step);
    }

    /// The store's answer to an owner confirming it holds its session.
    pub(super) fn confirmed(&mut self, node: usize, s: u32, hid: u64, result: Result<(), Refusal>) {
        self.record("confirmed", Some(node), s.into(), result.is_ok().into(), 0);
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        let Some(mut pending) = held.pending.take() else {
            return;
        };
        let confirmed = match result {
            Ok(()) => Committed::Ok,
            Err(Refusal::Fenced) => {
                pending.fenced = true;
                Committed::Fenced("a newer epoch claimed the session".into())
            }
            Err(_) => Committed::Failed("the store is unavailable".into()),
        };
        let took_ms = self.node_now(node).saturating_sub(pending.confirm_asked);
        let input = TurnInput::Confirmed {
            result: confirmed,
            took_ms,
        };
        self.resume(node, hid, pending, input);
    }

    /// A commit's answer from the store.
    pub(super) fn committed(&mut self, node: usize, s: u32, hid: u64, result: Result<(), Refusal>) {
        self.record("committed", Some(node), s.into(), result.is_ok().into(), 0);
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        let Some(mut pending) = held.pending.take() else {
            return;
        };
        let committed = match result {
            Ok(()) => {
                let step = Committed::Ok;
                self.resume(node, hid, pending, TurnInput::Committed(step));
                self.snapshot_after_commit(node, hid);
                return;
            }
            Err(Refusal::Unavailable) if pending.attempts < self.settings.commit_attempts => {
                // The same events at the same epoch: the ring may have moved
                // since, but this write was made (and fenced) at that epoch.
                let epoch = pending.events[0].epoch;
                let events = pending.events.clone();
                let delay = COMMIT_BACKOFF_MS << (pending.attempts - 1);
                pending.attempts += 1;
                held.pending = Some(pending);
                let op = StoreOp::Append {
                    s,
                    hid,
                    epoch,
                    events,
                };
                self.store_op(node, op, delay);
                return;
            }
            Err(Refusal::Unavailable) => Committed::Failed("the store is unavailable".into()),
            Err(Refusal::Conflict) => Committed::Conflict,
            Err(Refusal::Fenced) => {
                pending.fenced = true;
                Committed::Fenced("a newer epoch claimed the session".into())
            }
        };
        self.resume(node, hid, pending, TurnInput::Committed(committed));
    }
}

/// A reply as a client hears it, slots masked as in a `reply` frame.
fn heard(intent: &str, text: &str, slots: &Slots) -> Box<Heard> {
    Box::new(Heard::Reply {
        intent: intent.to_owned(),
        text: text.to_owned(),
        slots: confab_dialog::masked(slots),
    })
}
