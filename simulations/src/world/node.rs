//! A node: its messages, the sessions it holds, its membership.

use super::dialog::{action_turn, done_answer, heard, heard_of};
use super::*;
use crate::conversations::run_action;
use confab_core::session::PendingAction;

impl World {
    // ---- a node's messages ------------------------------------------------

    pub(super) fn node_message(&mut self, node: usize, msg: Msg) {
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

    pub(super) fn answer(&mut self, node: usize, turn: Turn, answer: Answer) {
        let msg = Msg::Answer {
            s: turn.s,
            msg: turn.msg,
            answer,
            from: node,
        };
        self.send(Endpoint::Node(node), Endpoint::User(turn.s), msg);
    }

    pub(super) fn route_turn(&mut self, node: usize, turn: Turn, seen: Option<Epoch>) {
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
    pub(super) fn hold(&mut self, node: usize, s: u32, arriving: Option<Epoch>) {
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

    pub(super) fn state_arrived(
        &mut self,
        node: usize,
        s: u32,
        epoch: Epoch,
        from: usize,
        bytes: &[u8],
    ) {
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
        let owner = n.ring.owner(&self.uids[s as usize]);
        if epoch < n.ring.epoch() && owner != Some(&n.id) {
            // The ring has moved on: the state goes on to the owner (the turns
            // forwarded here are routed on too).
            if let Some(owner) = owner.map(node_of) {
                let epoch = n.ring.epoch();
                let bytes = bytes.to_vec();
                let msg = Msg::State {
                    s,
                    epoch,
                    from: node,
                    bytes,
                };
                self.send(Endpoint::Node(node), Endpoint::Node(owner), msg);
            }
            return;
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

    pub(super) fn session_input(&mut self, node: usize, s: u32, input: HInput<Turn>) {
        let now = self.node_now(node);
        let Some(held) = self.nodes[node].sessions.get_mut(&s) else {
            return;
        };
        if matches!(input, HInput::Turn(_)) {
            held.turns_in += 1;
        }
        let was_active = held.own.phase() == &Phase::Active;
        let actions = held.own.handle(now, input);
        self.carry_out(node, s, actions);
        self.after_session_step(node, s, was_active);
    }

    pub(super) fn carry_out(&mut self, node: usize, s: u32, actions: Vec<Action<Turn>>) {
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

    pub(super) fn after_session_step(&mut self, node: usize, s: u32, was_active: bool) {
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
        // A session that let go, or was fenced, keeps no turn waiting here.
        let held = &self.nodes[node].sessions[&s];
        if matches!(held.own.phase(), Phase::Released { .. } | Phase::Fenced)
            && held.own.buffered() > 0
        {
            let detail = format!(
                "u{s}: n{} let the session go ({:?}) with {} turns still buffered",
                node + 1,
                held.own.phase(),
                held.own.buffered()
            );
            self.checker
                .violate(self.now, "turns-conserved", Some(node), detail);
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
        let fence = self.checker.newest_claim(s);
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
    pub(super) fn claim_later(&mut self, node: usize, s: u32, epoch: Epoch, after: u64) {
        let n = &mut self.nodes[node];
        if n.claims.is_empty() {
            let inc = n.incarnation;
            self.push(self.now, Ev::FlushClaims { node, inc });
        }
        self.nodes[node].claims.push((s, epoch, after));
    }

    pub(super) fn arm_session_timer(&mut self, node: usize, s: u32) {
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

    pub(super) fn serve(&mut self, node: usize, s: u32, turn: Turn) {
        let now = self.node_now(node);
        let conversations = self.conversations.clone();
        let scripted = conversations.is_some();
        let held = self.nodes[node].sessions.get_mut(&s).expect("held");
        let Some(state) = &held.state else {
            self.checker.violate(
                self.now,
                "served-loaded",
                Some(node),
                format!("u{s}: served with no state"),
            );
            self.answer(node, turn, Answer::Unavailable);
            self.session_input(node, s, HInput::Reload);
            return;
        };
        let message_id = MessageId::new(format!("m{}", turn.msg)).expect("a valid message id");
        if let Some(done) = state.duplicate(&message_id) {
            let (turn_seq, reply_seq, reply) = match done {
                confab_core::session::Duplicate::Recent(r) => (
                    r.turn_seq.0,
                    r.reply_seq.0,
                    scripted.then(|| heard(&r.intent, &r.reply_text, &r.slots)),
                ),
                // Older than the recent window: its reply is read back from
                // the log (at once: the simulated read costs no time).
                confab_core::session::Duplicate::Logged(p) => {
                    let event = self.durable.log(s).get(p.reply_seq.0 as usize - 1);
                    (p.turn_seq.0, p.reply_seq.0, heard_of(scripted, event))
                }
            };
            let answer = Answer::Done {
                turn_seq,
                reply_seq,
                reply,
            };
            self.answer(node, turn, answer);
            self.session_input(node, s, HInput::Served);
            return;
        }
        let (pipeline, turn_ms, text) = match conversations.as_deref() {
            // Users never say more than their script: an empty text would be
            // refused by the filter.
            Some(c) => (
                c.pipeline(s),
                c.turn_ms(s, now),
                c.turn(s, turn.msg).map_or("", |t| t.say.as_str()),
            ),
            None => (
                &self.pipeline,
                now,
                SCRIPT[(turn.msg as usize - 1) % SCRIPT.len()],
            ),
        };
        let ctx = TurnContext {
            state,
            now_ms: turn_ms,
        };
        // A text the input filter refuses is answered so, and nothing is
        // recorded (production records an `input_rejected` audit event).
        let Ok(PipelineOutput {
            text: output_text,
            decision,
            ..
        }) = pipeline.run(ctx, text)
        else {
            self.answer(node, turn, Answer::Refused);
            self.session_input(node, s, HInput::Served);
            return;
        };
        let epoch = held.own.epoch();
        let uid = &self.uids[s as usize];
        let events = match decision {
            Decision::Reply(decision) => state
                .record_turn(uid, epoch, turn_ms, message_id, output_text, decision)
                .to_vec(),
            Decision::Action(action) => {
                let run = |pending: &PendingAction| match conversations.as_deref() {
                    Some(c) => c.run_action(s, uid, pending),
                    None => run_action(&BTreeMap::new(), uid, pending),
                };
                let first = (uid, epoch, turn_ms, message_id, output_text);
                match action_turn(state, pipeline.policy().as_ref(), first, action, run) {
                    Ok(events) => events,
                    Err(e) => {
                        let detail = format!("u{s}: an action turn does not apply: {e}");
                        self.checker
                            .violate(self.now, "log-applies", Some(node), detail);
                        self.answer(node, turn, Answer::Unavailable);
                        self.session_input(node, s, HInput::Served);
                        return;
                    }
                }
            }
        };
        let early = may_acknowledge(false);
        let answer = early.then(|| done_answer(&events, scripted));
        held.pending = Some((turn, events.clone(), early, 1));
        if let Some(answer) = answer {
            self.answer(node, turn, answer);
        }
        self.store_op(node, StoreOp::Append { s, epoch, events }, 0);
    }

    pub(super) fn send_state(&mut self, node: usize, s: u32, to: usize, epoch: Epoch) {
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
        // A stale owner's late move does not replace a newer one: the newer one
        // is the one measured.
        let newer = self.migrations.get(&s).is_some_and(|m| m.2 > epoch);
        if !newer
            && let Some((from, to, _, started)) =
                self.migrations.insert(s, (node, to, epoch, start))
        {
            // Superseded by a newer move before it finished.
            self.mark_migration(s, (from, to), started, None);
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

    pub(super) fn check_drained(&mut self, node: usize) {
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

    pub(super) fn membership_io(&mut self, node: usize) {
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

    pub(super) fn refresh(&mut self, node: usize) {
        let now = self.node_now(node);
        self.nodes[node].membership.handle(now, MInput::Refresh);
        self.membership_io(node);
    }

    pub(super) fn ring_changed(&mut self, node: usize, epoch: Epoch, members: Vec<NodeId>) {
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
}
