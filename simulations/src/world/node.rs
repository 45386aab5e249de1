//! A node: its messages, the sessions it holds, its membership. Every decision
//! about a session's life and move is taken by the core's handoff machines
//! (`handoff::Node`, `handoff::Session`, `handoff::Outbox`), the ones the
//! production shell drives; this file only carries their outputs out.

use super::*;

impl World {
    // ---- a node's messages ------------------------------------------------

    pub(super) fn node_message(&mut self, node: usize, msg: Msg) {
        match msg {
            Msg::Say(turn) => self.route_turn(node, turn, None),
            Msg::Turn { turn, seen, from } => {
                self.check_announced(node, from, turn.s, seen);
                self.route_turn(node, turn, Some(seen));
            }
            Msg::Heartbeat { from, epoch } => {
                let inc = self.nodes[node].incarnation;
                self.heard_by.insert((node, inc, from), self.now);
                let now = self.node_now(node);
                let from = self.nodes[from].id.clone();
                self.nodes[node]
                    .membership
                    .handle(now, MInput::Heartbeat { from, epoch });
                self.membership_io(node);
            }
            Msg::Expect {
                from,
                epoch,
                sessions,
            } => {
                let inc = self.nodes[node].incarnation;
                for s in &sessions {
                    self.expects_seen.insert((node, inc, from, *s, epoch));
                }
                let now = self.node_now(node);
                let uids: Vec<Uid> = sessions
                    .iter()
                    .map(|s| self.uids[*s as usize].clone())
                    .collect();
                self.nodes[node].handoff.expect(now, uids);
            }
            Msg::States {
                from,
                batch,
                states,
            } => {
                let taken = states
                    .into_iter()
                    .map(|(s, epoch, bytes)| self.state_arrived(node, s, epoch, bytes.as_deref()))
                    .collect();
                let msg = Msg::Taken { batch, taken };
                self.send(Endpoint::Node(node), Endpoint::Node(from), msg);
            }
            Msg::Taken { batch, taken } => {
                let results = self.nodes[node].outbox.answered(batch, &taken);
                self.state_results(node, results);
            }
            Msg::Answer { .. } => {}
        }
    }

    /// Checks `announce-before-route`: a turn that node `from` forwarded here by
    /// a ring that moved the session from `from` to this node comes after
    /// `from`'s announcement of that move (the link is ordered), unless the
    /// link lost a message since the move.
    fn check_announced(&mut self, node: usize, from: usize, s: u32, seen: Epoch) {
        let Some((to, epoch, at)) = self.moves.get(&(from, s)).copied() else {
            return;
        };
        if to != node || seen < epoch {
            return;
        }
        if self.link_lost.get(&(from, node)).is_some_and(|t| *t >= at) {
            return;
        }
        let inc = self.nodes[node].incarnation;
        if !self.expects_seen.contains(&(node, inc, from, s, epoch)) {
            let detail = format!(
                "u{s}: n{} forwarded a turn to n{} by the ring of epoch {} before announcing the session it moved there",
                from + 1,
                node + 1,
                epoch.0
            );
            self.checker
                .violate(self.now, "announce-before-route", Some(node), detail);
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
        let now = self.node_now(node);
        let serving = self.nodes[node].membership.serving(now);
        if !serving {
            // Cut off from the majority: `unavailable` at once.
            self.answer(node, turn, Answer::Unavailable);
            return;
        }
        let n = &self.nodes[node];
        match route(&n.ring, &n.id, &self.uids[s as usize], seen, turn.hops) {
            Route::Serve => self.admit(node, turn),
            Route::Forward { to, epoch } => {
                // An owner declared down, gone from the table or out of reach
                // gets nothing: `unavailable` at once, the client retries.
                let status = n.membership.table().and_then(|t| t.members.get(&to));
                let heard = n.membership.hears(&to, now);
                let to = node_of(&to);
                if forward_lost(status.copied(), heard && self.linked_to(node, to), serving) {
                    self.answer(node, turn, Answer::Unavailable);
                    return;
                }
                let turn = Turn {
                    hops: turn.hops + 1,
                    ..turn
                };
                let msg = Msg::Turn {
                    turn,
                    seen: epoch,
                    from: node,
                };
                self.send(Endpoint::Node(node), Endpoint::Node(to), msg);
            }
            Route::Refresh => {
                // A newer epoch seen means this node's ring is stale: read the table.
                self.refresh(node);
                self.answer(node, turn, Answer::Unavailable);
            }
        }
    }

    /// A turn this node serves: queued to its resident session, which starts
    /// here if it is not resident (from the state that arrived, waiting for
    /// one announced, or from the durable tier), or refused. As in the
    /// runtime, a resident session with room in its queue gets the turn
    /// without the machine's admission, and the shell records when
    /// ([`confab_core::handoff::Activity`]).
    fn admit(&mut self, node: usize, turn: Turn) {
        let s = turn.s;
        let now = self.node_now(node);
        let n = &mut self.nodes[node];
        let queued = resident_work(&n.resident, &n.held, s);
        if let Some(hid) = n.resident.get(&s).copied()
            && self.handoff.delivers(queued)
        {
            if let Some(held) = n.held.get_mut(&hid) {
                held.last = now;
            }
            return self.queue_turn(node, turn);
        }
        let uid = &self.uids[s as usize];
        match n.handoff.admit(now, &n.ring, uid, queued) {
            Admit::Deliver => {}
            Admit::Start(start) => {
                let hid = self.next_hid;
                self.next_hid += 1;
                let n = &mut self.nodes[node];
                let life = Session::new(uid.clone(), n.id.clone(), start, self.handoff.clone());
                n.held.insert(
                    hid,
                    Held {
                        s,
                        life,
                        state: None,
                        pending: None,
                        timer: None,
                        turns_in: 0,
                        turns_out: 0,
                        snapshot_seq: 0,
                        snapshot_timer: false,
                        last: 0,
                    },
                );
                n.resident.insert(s, hid);
            }
            Admit::Moved(_) => return self.answer(node, turn, Answer::Unavailable),
            Admit::Overloaded(_) => return self.answer(node, turn, Answer::Overloaded),
        }
        self.queue_turn(node, turn);
    }

    /// Queues `turn` to its resident session.
    fn queue_turn(&mut self, node: usize, turn: Turn) {
        let hid = self.nodes[node].resident[&turn.s];
        let deadline = turn.gives_up_at.map(|at| self.local(node, at));
        let turn = Turn { deadline, ..turn };
        self.session_input(node, hid, SessionInput::Turn(turn));
    }

    /// A moved session's state arrived here: whether it was taken.
    fn state_arrived(&mut self, node: usize, s: u32, epoch: Epoch, bytes: Option<&[u8]>) -> bool {
        let state = match bytes.map(|b| Snapshot::decode(b, &self.key)) {
            None => None,
            Some(Ok(snapshot)) => Some(snapshot.state),
            Some(Err(e)) => {
                self.checker
                    .violate(self.now, "state-decodes", Some(node), format!("u{s}: {e}"));
                return false;
            }
        };
        let now = self.node_now(node);
        let n = &mut self.nodes[node];
        let uid = self.uids[s as usize].clone();
        let taken = match n.handoff.arrived(now, &n.ring, uid, epoch, state) {
            Arrival::Refused => {
                // This node's ring already gives the session elsewhere: the
                // move was overtaken, and the owner now loads it on demand.
                if self
                    .migrations
                    .get(&s)
                    .is_some_and(|m| m.1 == node && m.2 == epoch)
                {
                    let (from, to, _, started) = self.migrations.remove(&s).expect("checked");
                    self.mark_migration(s, (from, to), started, None);
                    self.stats.migrations.unfinished += 1;
                }
                false
            }
            Arrival::Kept => true,
            Arrival::Offer(state) => {
                let hid = n.resident[&s];
                let life = &n.held[&hid].life;
                if life.wants_state() {
                    self.session_input(node, hid, SessionInput::State(state));
                    true
                } else {
                    // Loaded here already (from the durable tier): the new
                    // owner holds the session, the move is done all the same.
                    if life.phase() == &Phase::Active {
                        let held_at = self.held_at(node, hid);
                        self.migration_done(node, s, held_at);
                    }
                    false
                }
            }
        };
        self.record("state_arrived", Some(node), s.into(), epoch.0, taken.into());
        if taken {
            self.migration_done(node, s, epoch);
        }
        taken
    }

    /// The new owners' answers for states sent: each session that sent one
    /// learns whether it was taken.
    fn state_results(&mut self, node: usize, results: Vec<(Uid, bool)>) {
        for (uid, taken) in results {
            let s = self.session_of(&uid);
            let sending: Vec<u64> = self.nodes[node]
                .held
                .of(s)
                .filter(|(_, h)| matches!(h.life.phase(), Phase::Sending { .. }))
                .map(|(hid, _)| hid)
                .collect();
            for hid in sending {
                self.session_input(node, hid, SessionInput::Taken(taken));
            }
        }
    }

    /// The newest epoch at which an active session is known to be held here:
    /// the ring's, if it still names this node (a session kept across ring
    /// changes is not claimed again), else the epoch it claimed.
    fn held_at(&self, node: usize, hid: u64) -> Epoch {
        let n = &self.nodes[node];
        let held = &n.held[&hid];
        let uid = &self.uids[held.s as usize];
        if n.resident.get(&held.s) == Some(&hid) && n.ring.owner(uid) == Some(&n.id) {
            n.ring.epoch().max(held.life.epoch())
        } else {
            held.life.epoch()
        }
    }

    /// `u17` is session 17.
    pub(super) fn session_of(&self, uid: &Uid) -> u32 {
        uid.as_str()[1..]
            .parse()
            .expect("simulated uids are u0, u1, ...")
    }

    pub(super) fn outbox_due(&mut self, node: usize) {
        let now = self.node_now(node);
        let batches = self.nodes[node].outbox.poll_batches(now);
        for batch in batches {
            let to = node_of(&batch.to);
            let states = batch
                .states
                .into_iter()
                .map(|moved| (self.session_of(&moved.uid), moved.epoch, moved.state))
                .collect();
            let msg = Msg::States {
                from: node,
                batch: batch.id,
                states,
            };
            self.send(Endpoint::Node(node), Endpoint::Node(to), msg);
        }
        let late = self.nodes[node].outbox.handle_timeout(now);
        self.state_results(node, late);
        self.arm_outbox_timer(node);
    }

    fn arm_outbox_timer(&mut self, node: usize) {
        let Some(local) = self.nodes[node].outbox.poll_timeout() else {
            return;
        };
        let at = self.global(node, local).max(self.now);
        let n = &mut self.nodes[node];
        if n.outbox_timer.is_none_or(|t| at < t) {
            n.outbox_timer = Some(at);
            let inc = n.incarnation;
            self.push(at, Ev::OutboxTimer { node, inc, at });
        }
    }

    // ---- a session on a node ------------------------------------------------

    pub(super) fn session_input(
        &mut self,
        node: usize,
        hid: u64,
        input: SessionInput<Turn, SessionState>,
    ) {
        let now = self.node_now(node);
        let n = &mut self.nodes[node];
        let Some(held) = n.held.get_mut(&hid) else {
            return;
        };
        if matches!(input, SessionInput::Turn(_)) {
            held.turns_in += 1;
        }
        let was_active = held.life.phase() == &Phase::Active;
        let outputs = held.life.handle(now, &n.ring, input);
        self.carry_out(node, hid, outputs);
        self.after_session_step(node, hid, was_active);
    }

    pub(super) fn session_timeout(&mut self, node: usize, hid: u64) {
        let now = self.node_now(node);
        let n = &mut self.nodes[node];
        let Some(held) = n.held.get_mut(&hid) else {
            return;
        };
        let was_active = held.life.phase() == &Phase::Active;
        let outputs = held.life.handle_timeout(now, &n.ring);
        self.carry_out(node, hid, outputs);
        self.after_session_step(node, hid, was_active);
    }

    pub(super) fn carry_out(
        &mut self,
        node: usize,
        hid: u64,
        outputs: Vec<SessionOutput<Turn, SessionState>>,
    ) {
        for output in outputs {
            let Some(held) = self.nodes[node].held.get_mut(&hid) else {
                return;
            };
            let s = held.s;
            if matches!(
                output,
                SessionOutput::Serve(_) | SessionOutput::Refuse { .. }
            ) {
                held.turns_out += 1;
            }
            match output {
                SessionOutput::Serve(turn) => self.serve(node, hid, turn),
                SessionOutput::Refuse { turn, refusal } => {
                    if refusal == HRefusal::Fenced {
                        // A newer epoch owns the session: this node's ring is stale.
                        self.refresh(node);
                    }
                    let answer = match refusal {
                        // As production answers it: nothing was recorded.
                        HRefusal::CallerGone => Answer::Overloaded,
                        _ => Answer::Unavailable,
                    };
                    self.answer(node, turn, answer);
                }
                SessionOutput::Claim { epoch, state } => {
                    let memory = state.as_ref().map(|m| m.seq().0);
                    held.state = state;
                    self.claim_later(node, s, hid, epoch, memory);
                }
                SessionOutput::SendState { to, epoch } => {
                    self.send_state(node, hid, node_of(&to), epoch)
                }
                // At once: production defers it to the batch writer when the
                // new owner took the state, which changes only its timing.
                SessionOutput::WriteSnapshot { .. } => self.write_snapshot(node, hid),
                SessionOutput::Stop => {
                    let n = &mut self.nodes[node];
                    n.held.remove(&hid);
                    let uid = &self.uids[s as usize];
                    if n.resident.get(&s) == Some(&hid) {
                        n.resident.remove(&s);
                        n.handoff.forget(uid);
                    } else if n.leaving.get(&s) == Some(&hid) {
                        // It waited to hand off, not told yet.
                        n.leaving.remove(&s);
                        n.handoff.stopped_waiting(uid);
                    } else {
                        // It was handing off: the next one goes.
                        let next = n.handoff.handed(uid);
                        self.tell_hand_off(node, next);
                    }
                    self.check_drained(node);
                    return;
                }
            }
        }
    }

    pub(super) fn after_session_step(&mut self, node: usize, hid: u64, was_active: bool) {
        let Some(held) = self.nodes[node].held.get(&hid) else {
            return;
        };
        let s = held.s;
        // Turns are conserved: every turn a session took is served, refused,
        // or still queued.
        let inside = held.turns_in - held.turns_out;
        if inside != held.life.queued() as u64 {
            let detail = format!(
                "u{s}: n{} took {} turns and let {} out, but queues {}: turns vanished",
                node + 1,
                held.turns_in,
                held.turns_out,
                held.life.queued()
            );
            self.checker
                .violate(self.now, "turns-conserved", Some(node), detail);
            let held = self.nodes[node].held.get_mut(&hid).expect("held");
            held.turns_in = held.turns_out + held.life.queued() as u64;
        }
        // At most one active owner: only one node may be active at an epoch
        // no newer claim has superseded (the checker's own reading, not the
        // store's fencing code, which a planted bug may break). Only a node
        // that just became active can break it.
        let now_active = self.nodes[node].held[&hid].life.phase() == &Phase::Active;
        if was_active || !now_active {
            self.arm_session_timer(node, hid);
            return;
        }
        let fence = self.checker.newest_claim(s);
        let active: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .filter(|n| {
                self.nodes[*n]
                    .held
                    .of(s)
                    .any(|(_, h)| h.life.phase() == &Phase::Active && h.life.epoch() >= fence)
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
        let epoch = self.held_at(node, hid);
        self.migration_done(node, s, epoch);
        self.arm_session_timer(node, hid);
    }

    /// Queues a claim; the claims of one step go to the store as one request.
    pub(super) fn claim_later(
        &mut self,
        node: usize,
        s: u32,
        hid: u64,
        epoch: Epoch,
        memory: Option<u64>,
    ) {
        let n = &mut self.nodes[node];
        if n.claims.is_empty() {
            let inc = n.incarnation;
            self.push(self.now, Ev::FlushClaims { node, inc });
        }
        self.nodes[node].claims.push(ClaimAsk {
            s,
            hid,
            epoch,
            memory,
        });
    }

    pub(super) fn arm_session_timer(&mut self, node: usize, hid: u64) {
        let Some(local) = self.nodes[node]
            .held
            .get(&hid)
            .and_then(|h| h.life.poll_timeout())
        else {
            return;
        };
        let at = self.global(node, local).max(self.now);
        let inc = self.nodes[node].incarnation;
        let held = self.nodes[node].held.get_mut(&hid).expect("held");
        if held.timer.is_none_or(|t| at < t) {
            held.timer = Some(at);
            self.push(at, Ev::SessionTimer { node, inc, hid, at });
        }
    }

    /// A moved session hands its state (none if it is not loaded) to the outbox.
    pub(super) fn send_state(&mut self, node: usize, hid: u64, to: usize, epoch: Epoch) {
        let now = self.node_now(node);
        let held = &self.nodes[node].held[&hid];
        let s = held.s;
        let uid = self.uids[s as usize].clone();
        let bytes = held
            .state
            .as_ref()
            .filter(|_| held.life.is_loaded())
            .map(|state| SnapshotRef::new(&uid, now, epoch, state).encode(&self.key));
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
        let to_id = self.nodes[to].id.clone();
        self.nodes[node].outbox.push(now, to_id, uid, epoch, bytes);
        self.arm_outbox_timer(node);
    }

    /// A draining node leaves once no session is alive on it.
    pub(super) fn check_drained(&mut self, node: usize) {
        let n = &self.nodes[node];
        if n.drained || n.membership.status() != Some(Status::Draining) {
            return;
        }
        if n.held.is_empty() {
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
                    self.check_down_evidence(node, &table);
                    self.check_up_evidence(node, &table);
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
                    self.nodes[node].held.clear();
                    self.nodes[node].resident.clear();
                    self.nodes[node].leaving.clear();
                    self.nodes[node].handoff.clear();
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

    /// Checks `down-from-fresh-evidence`: a node proposes a member down only
    /// from a silence it observed, never while a heartbeat of that member was
    /// due to reach it within the detection period (one it slept through in a
    /// pause, say).
    /// Checks `up-when-heard`: a node proposes itself up only once a
    /// heartbeat of every member already up reached it within
    /// `down_after_ms` (a node that cannot hear them would be declared down
    /// again: the ring flaps).
    fn check_up_evidence(&mut self, node: usize, proposed: &MemberTable) {
        let Some(held) = self.nodes[node].membership.table() else {
            return;
        };
        let me = &self.nodes[node].id;
        if proposed.members.get(me) != Some(&Status::Up)
            || held.members.get(me) == Some(&Status::Up)
        {
            return;
        }
        let inc = self.nodes[node].incarnation;
        // A margin for the node's clock drift.
        let window = self.membership.down_after_ms + 50;
        let unheard: Vec<usize> = held
            .members
            .iter()
            .filter(|(id, st)| *id != me && **st == Status::Up)
            .map(|(id, _)| node_of(id))
            .filter(|m| {
                self.heard_by
                    .get(&(node, inc, *m))
                    .is_none_or(|at| self.now >= at + window)
            })
            .collect();
        if let Some(m) = unheard.first() {
            let detail = format!(
                "n{} proposed itself up without a heartbeat of n{} (up) in the last {window} ms",
                node + 1,
                m + 1
            );
            self.checker
                .violate(self.now, "up-when-heard", Some(node), detail);
        }
    }

    fn check_down_evidence(&mut self, node: usize, proposed: &MemberTable) {
        let Some(held) = self.nodes[node].membership.table() else {
            return;
        };
        let down: Vec<NodeId> = proposed
            .members
            .iter()
            .filter(|(id, st)| **st == Status::Down && held.members.get(*id) != Some(&Status::Down))
            .map(|(id, _)| id.clone())
            .collect();
        let inc = self.nodes[node].incarnation;
        let window = self.membership.down_after_ms;
        for id in down {
            let member = node_of(&id);
            let due = self.heartbeats_due.get(&(member, node));
            let heard = due.into_iter().flatten().find(|(at, to_inc)| {
                *to_inc == inc && *at + window > self.now + 50 && *at + 50 <= self.now
            });
            if let Some((at, _)) = heard {
                let detail = format!(
                    "n{} proposed n{} down although a heartbeat of n{} was due to reach it at {at} ms, within the last {window} ms",
                    node + 1,
                    member + 1,
                    member + 1
                );
                self.checker
                    .violate(self.now, "down-from-fresh-evidence", Some(node), detail);
            }
        }
        // Checked after `down-from-fresh-evidence`, which names the cause
        // when a paused node judged by stale heartbeats.
        let Some(held) = self.nodes[node].membership.table() else {
            return;
        };
        let me = &self.nodes[node].id;
        let downs = proposed
            .members
            .iter()
            .any(|(id, st)| *st == Status::Down && held.members.get(id) != Some(&Status::Down));
        if downs {
            // `down-from-majority`: heard (within the quorum window, half of
            // down_after_ms, plus a margin for drift) a majority of the
            // members up, or half with the lowest.
            let inc = self.nodes[node].incarnation;
            let window = self.membership.down_after_ms / 2 + 50;
            let up: Vec<&NodeId> = held
                .members
                .iter()
                .filter(|(_, st)| **st == Status::Up)
                .map(|(id, _)| id)
                .collect();
            let hears = |id: &NodeId| {
                id == me
                    || self
                        .heard_by
                        .get(&(node, inc, node_of(id)))
                        .is_some_and(|at| self.now < at + window)
            };
            let heard = up.iter().filter(|id| hears(id)).count();
            let quorum =
                up.is_empty() || 2 * heard > up.len() || (2 * heard == up.len() && hears(up[0]));
            if !quorum {
                let detail = format!(
                    "n{} proposed a member down hearing {heard} of the {} members up",
                    node + 1,
                    up.len()
                );
                self.checker
                    .violate(self.now, "down-from-majority", Some(node), detail);
            }
        }
    }

    pub(super) fn refresh(&mut self, node: usize) {
        let now = self.node_now(node);
        self.nodes[node].membership.handle(now, MInput::Refresh);
        self.membership_io(node);
    }

    /// Whether `node` has an open link to `other`.
    fn linked(&self, node: usize, other: &NodeId) -> bool {
        self.linked_to(node, node_of(other))
    }

    /// The node adopts a new ring: it announces the resident sessions the ring
    /// moves to their new owners, then routes by it and tells each moved
    /// session to hand off.
    pub(super) fn ring_changed(&mut self, node: usize, epoch: Epoch, members: Vec<NodeId>) {
        self.record("ring", Some(node), -1, epoch.0, members.len() as u64);
        let ring = Ring::new(epoch, members);
        let expects = {
            let n = &self.nodes[node];
            n.handoff.announce(&ring, |o| self.linked(node, o))
        };
        for expect in expects {
            let sessions = expect.uids.iter().map(|u| self.session_of(u)).collect();
            let msg = Msg::Expect {
                from: node,
                epoch: expect.epoch,
                sessions,
            };
            self.send(
                Endpoint::Node(node),
                Endpoint::Node(node_of(&expect.to)),
                msg,
            );
        }
        let linked: Vec<NodeId> = ring
            .members()
            .filter(|o| self.linked(node, o))
            .cloned()
            .collect();
        let n = &mut self.nodes[node];
        n.ring = ring;
        let (resident, held) = (&n.resident, &n.held);
        let adopted = n.handoff.adopt(
            &n.ring,
            |o| linked.contains(o),
            |uid| activity_of(resident, held, uid).last,
        );
        for uid in &adopted.back {
            let s: u32 = uid.as_str()[1..].parse().expect("a simulated uid");
            if let Some(hid) = n.leaving.remove(&s) {
                n.resident.insert(s, hid);
            }
        }
        // A session this node serves and keeps under the new ring holds it at
        // that epoch: a move to here announced at an epoch between ends.
        let kept: Vec<(u32, u64)> = self
            .migrations
            .iter()
            .filter(|(_, m)| m.1 == node)
            .filter_map(|(s, _)| n.resident.get(&s).map(|hid| (s, *hid)))
            .collect();
        // The moved sessions leave the resident set; turns for them are
        // forwarded from now on.
        for uid in &adopted.left {
            let s: u32 = uid.as_str()[1..].parse().expect("a simulated uid");
            if let Some(hid) = n.resident.remove(&s) {
                n.leaving.insert(s, hid);
            }
        }
        // Where each waiting session goes now (checked by announce-before-route).
        for (s, _) in n.leaving.iter() {
            let owner = n.ring.owner(&self.uids[s as usize]);
            if let Some(to) = owner.filter(|o| **o != n.id && linked.contains(o)) {
                self.moves.insert((node, s), (node_of(to), epoch, self.now));
            }
        }
        self.tell_hand_off(node, adopted.hand_off);
        for (s, hid) in kept {
            let active = self.nodes[node]
                .held
                .get(&hid)
                .is_some_and(|h| h.life.phase() == &Phase::Active);
            if active && self.nodes[node].resident.get(&s) == Some(&hid) {
                let held_at = self.held_at(node, hid);
                self.migration_done(node, s, held_at);
            }
        }
        self.check_drained(node);
    }

    /// Tells each session to hand off; one whose holder is gone lets the next
    /// one go at once.
    fn tell_hand_off(&mut self, node: usize, handoffs: Vec<HandOff>) {
        // In the machine's order: the sessions talked to last are told first.
        let mut handoffs = std::collections::VecDeque::from(handoffs);
        while let Some(HandOff { uid, to, epoch }) = handoffs.pop_front() {
            let s = self.session_of(&uid);
            match self.nodes[node].leaving.remove(&s) {
                Some(hid) => self.session_input(node, hid, SessionInput::HandOff { to, epoch }),
                None => handoffs.extend(self.nodes[node].handoff.handed(&uid)),
            }
        }
    }
}
