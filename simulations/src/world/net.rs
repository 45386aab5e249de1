//! The network between nodes and users, and the users themselves.

use super::*;

impl World {
    // ---- the network -------------------------------------------------------

    /// Sends `msg`. Between two nodes it needs an open link: without one it
    /// is not sent; a partition that resets, or a loss, closes the link and
    /// loses it; a silent partition holds it until it heals.
    pub(super) fn send(&mut self, from: Endpoint, to: Endpoint, msg: Msg) {
        let faulty = self.faulty();
        let link = match (from, to) {
            (Endpoint::Node(f), Endpoint::Node(t)) => {
                let Some(link) = self.link(f, t) else {
                    self.stats.unlinked += 1;
                    self.record("unlinked", Some(f), msg.session(), t as u64 + 1, 0);
                    return;
                };
                link
            }
            _ => 0,
        };
        let stalled = match (from, to) {
            (Endpoint::Node(f), Endpoint::Node(t)) => self.stalled_until(f, t).is_some(),
            _ => false,
        };
        if faulty && !stalled && self.cut(from, to) {
            self.lost_on_link(from, to);
            return;
        }
        if faulty && self.net.chance(self.settings.loss) {
            self.lost_on_link(from, to);
            return;
        }
        let copies = if faulty && self.net.chance(self.settings.duplicate) {
            2
        } else {
            1
        };
        let inc = match to {
            Endpoint::Node(node) => self.nodes[node].incarnation,
            Endpoint::User(_) => 0,
        };
        let deliver = |msg| Ev::Deliver {
            from,
            to,
            inc,
            link,
            msg,
        };
        if copies == 2 {
            let at = self.delivery_at(from, to, faulty);
            self.push_on_link(at, from, to, deliver(msg.clone()));
        }
        let at = self.delivery_at(from, to, faulty);
        self.push_on_link(at, from, to, deliver(msg));
    }

    /// Queues a delivery. Between two nodes the link is ordered, as a TCP
    /// connection is: a message never overtakes one sent before it.
    fn push_on_link(&mut self, at: u64, from: Endpoint, to: Endpoint, ev: Ev) {
        let (Endpoint::Node(f), Endpoint::Node(t)) = (from, to) else {
            return self.push(at, ev);
        };
        let tie = self.ties.next_u64();
        let (at, tie) = match self.link_last.get(&(f, t)) {
            Some(&(last_at, last_tie)) if at < last_at => {
                (last_at, last_tie.saturating_add(1).max(tie))
            }
            Some(&(last_at, last_tie)) if at == last_at => {
                (at, last_tie.saturating_add(1).max(tie))
            }
            _ => (at, tie),
        };
        self.link_last.insert((f, t), (at, tie));
        if let Ev::Deliver {
            inc,
            msg: Msg::Heartbeat { .. },
            ..
        } = &ev
        {
            let due = self.heartbeats_due.entry((f, t)).or_default();
            due.push_back((at, *inc));
            while due.front().is_some_and(|(d, _)| *d + 10_000 < self.now) {
                due.pop_front();
            }
        }
        self.push_keyed(at, tie, ev);
    }

    /// Notes a message lost; between two nodes, a loss is a reset that
    /// closes their link.
    pub(super) fn lost_on_link(&mut self, from: Endpoint, to: Endpoint) {
        self.stats.lost += 1;
        if let (Endpoint::Node(f), Endpoint::Node(t)) = (from, to) {
            self.link_lost.insert((f, t), self.now);
            self.close_link(f, t);
        }
    }

    /// When a message sent now arrives: latency, a tail, reordering, clogs.
    pub(super) fn delivery_at(&mut self, from: Endpoint, to: Endpoint, faulty: bool) -> u64 {
        let (low, high) = self.settings.latency;
        let mut delay = self.net.between(low, high);
        if faulty && self.net.chance(self.settings.tail) {
            delay *= 10;
        }
        if faulty && self.net.chance(self.settings.reorder) {
            delay += self.net.between(0, 5 * high);
        }
        let mut at = self.now + delay;
        for end in [from, to].into_iter().filter_map(|e| self.clogged_until(e)) {
            at = at.max(end);
        }
        if let (Endpoint::Node(f), Endpoint::Node(t)) = (from, to)
            && let Some(end) = self.stalled_until(f, t)
        {
            at = at.max(end + delay);
        }
        at
    }

    pub(super) fn cut(&self, from: Endpoint, to: Endpoint) -> bool {
        let (Endpoint::Node(f), Endpoint::Node(t)) = (from, to) else {
            return false;
        };
        self.active_faults
            .iter()
            .any(|i| match &self.schedule.faults[*i].kind {
                FaultKind::Partition { a, b, one_way } => {
                    (a.contains(&f) && b.contains(&t))
                        || (!one_way && b.contains(&f) && a.contains(&t))
                }
                _ => false,
            })
    }

    pub(super) fn clogged_until(&self, end: Endpoint) -> Option<u64> {
        let Endpoint::Node(node) = end else {
            return None;
        };
        self.active_faults
            .iter()
            .map(|i| &self.schedule.faults[*i])
            .filter(|f| f.kind == FaultKind::Clog { node })
            .map(|f| f.until_ms)
            .max()
    }

    pub(super) fn deliver(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        (inc, link): (u32, u64),
        msg: Msg,
    ) {
        let from_n = match from {
            Endpoint::Node(n) => n as u64 + 1,
            Endpoint::User(_) => 0,
        };
        match to {
            Endpoint::User(user) => {
                self.record("deliver_user", None, msg.session(), from_n, user.into());
                if let Msg::Answer {
                    s,
                    msg,
                    answer,
                    from,
                } = msg
                {
                    self.answered(s, msg, answer, from);
                }
            }
            Endpoint::Node(node) => {
                // Sent over a link that has closed since (with a crash of
                // either end, too): lost with it.
                if let Endpoint::Node(f) = from
                    && self.link(f, node) != Some(link)
                {
                    self.stats.lost += 1;
                    self.link_lost.insert((f, node), self.now);
                    return;
                }
                if !self.alive(node, inc) {
                    self.lost_on_link(from, to);
                    return;
                }
                self.record(msg.name(), Some(node), msg.session(), from_n, 0);
                self.node_message(node, msg);
            }
        }
    }

    // ---- users --------------------------------------------------------------

    pub(super) fn wake(&mut self, user: u32, generation: u32) {
        if self.users[user as usize].generation != generation {
            return;
        }
        self.record("wake", None, user.into(), 0, 0);
        let u = &mut self.users[user as usize];
        if u.waiting {
            self.stats.timeouts +=
                u64::from(self.now >= u.sent_at + self.scenario.workload.retry_after_ms);
        } else {
            if self.now >= self.quiet_from {
                return;
            }
            // A user that played its whole script stops: a second pass in the
            // same session would start from the slots and counts the first left.
            if let Some(c) = &self.conversations
                && c.finished(user, u.msg)
            {
                return;
            }
            u.msg += 1;
            u.waiting = true;
            if self.reads_rng.chance(HELLO_CHANCE) {
                self.hello(user);
            }
        }
        self.say(user);
    }

    pub(super) fn say(&mut self, user: u32) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .collect();
        let u = &mut self.users[user as usize];
        u.sent_at = self.now;
        let msg = u.msg;
        self.stats.says += 1;
        if !running.is_empty() {
            let gateway = running[self.users_rng.below(running.len() as u64) as usize];
            let turn = Turn {
                s: user,
                msg,
                hops: 0,
                hello: false,
                gives_up_at: Some(self.now + self.scenario.workload.retry_after_ms),
                deadline: None,
            };
            self.send(
                Endpoint::User(user),
                Endpoint::Node(gateway),
                Msg::Say(turn),
            );
        }
        // No answer by then: the same message again.
        self.wake_later(user, self.scenario.workload.retry_after_ms);
    }

    /// Sends a `hello` through any running node (as a client that reconnects
    /// does), remembering the highest seq acked to it so far.
    fn hello(&mut self, user: u32) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        let gateway = running[self.reads_rng.below(running.len() as u64) as usize];
        let u = &mut self.users[user as usize];
        let number = u.hellos.len() as u32 + 1;
        u.hellos.insert(number, u.acked_max);
        let turn = Turn {
            s: user,
            msg: number,
            hops: 0,
            hello: true,
            gives_up_at: None,
            deadline: None,
        };
        self.send(
            Endpoint::User(user),
            Endpoint::Node(gateway),
            Msg::Say(turn),
        );
    }

    /// A `hello`'s answer never reports less than was acked before it was sent.
    fn hello_answered(&mut self, s: u32, number: u32, last_seq: u64, from: usize) {
        let acked = self.users[s as usize]
            .hellos
            .get(&number)
            .copied()
            .unwrap_or(0);
        if last_seq < acked {
            let detail = format!(
                "u{s}: hello {number} via n{} answered last_seq {last_seq}, but seq {acked} was acked before it was sent",
                from + 1
            );
            self.checker
                .violate(self.now, "read-your-acks", Some(from), detail);
        }
    }

    /// Wakes `user` after `wait` ms; any wake planned before is cancelled.
    pub(super) fn wake_later(&mut self, user: u32, wait: u64) {
        let u = &mut self.users[user as usize];
        u.generation += 1;
        let generation = u.generation;
        self.push(self.now + wait, Ev::Wake { user, generation });
    }

    pub(super) fn answered(&mut self, s: u32, msg: u32, answer: Answer, from: usize) {
        let answer = match answer {
            Answer::Hello { last_seq } => return self.hello_answered(s, msg, last_seq, from),
            answer => answer,
        };
        let scripted = self.conversations.is_some();
        if scripted {
            self.check_script(s, msg, &answer, from);
        }
        let u = &self.users[s as usize];
        let current = u.waiting && u.msg == msg;
        match answer {
            Answer::Done {
                turn_seq,
                reply_seq,
                ..
            } => {
                if let Some(seen) = u.acked.get(&msg) {
                    if *seen != (turn_seq, reply_seq) {
                        self.checker.violate(
                            self.now,
                            "one-reply-per-turn",
                            Some(from),
                            format!(
                                "u{s} m{msg}: answered at seqs {}/{} and again at {turn_seq}/{reply_seq}: applied twice",
                                seen.0, seen.1
                            ),
                        );
                    }
                    return;
                }
                if !current {
                    return;
                }
                self.check_durable(s, msg, turn_seq, reply_seq, Some(from));
                self.stats.acked += 1;
                let u = &mut self.users[s as usize];
                u.acked.insert(msg, (turn_seq, reply_seq));
                u.acked_max = u.acked_max.max(reply_seq);
                self.next_turn(s);
            }
            // A script's refused text is answered for good: the user goes on.
            Answer::Refused if scripted => {
                if current {
                    self.next_turn(s);
                }
            }
            Answer::Hello { .. } => {}
            Answer::Unavailable | Answer::Overloaded | Answer::Refused => {
                if answer == Answer::Unavailable {
                    self.stats.unavailable += 1;
                } else if answer == Answer::Overloaded {
                    self.stats.overloaded += 1;
                }
                if current {
                    let [low, high] = self.scenario.workload.error_backoff_ms;
                    let wait = self.users_rng.between(low, high);
                    self.wake_later(s, wait);
                }
            }
        }
    }

    /// The user got its answer: it thinks, then says the next thing.
    fn next_turn(&mut self, s: u32) {
        let think = self.scenario.workload.think_ms;
        let wait = self.users_rng.between(think[0], think[1]);
        self.users[s as usize].waiting = false;
        self.wake_later(s, wait);
    }

    /// An answer to a script's turn must be what the turn expects: a reply
    /// (its intent, text and masked slots) or a refusal. Every answer is
    /// checked, a duplicate for a retried message id too.
    fn check_script(&mut self, s: u32, msg: u32, answer: &Answer, from: usize) {
        let Some(conversations) = self.conversations.clone() else {
            return;
        };
        let heard = match answer {
            Answer::Done {
                reply: Some(reply), ..
            } => reply.as_ref(),
            Answer::Done { reply: None, .. } => {
                let detail = format!("u{s} m{msg}: acked with no reply to check");
                self.checker
                    .violate(self.now, "conversation-script", Some(from), detail);
                return;
            }
            Answer::Refused => {
                self.stats.script_refusals += 1;
                &Heard::Rejected
            }
            Answer::Unavailable | Answer::Overloaded | Answer::Hello { .. } => return,
        };
        self.stats.script_answers += 1;
        if let Err(detail) = conversations.check(s, msg, heard) {
            self.checker
                .violate(self.now, "conversation-script", Some(from), detail);
        }
    }

    /// An acked turn must be in the durable log, at the seqs acked.
    pub(super) fn check_durable(
        &mut self,
        s: u32,
        msg: u32,
        turn_seq: u64,
        reply_seq: u64,
        from: Option<usize>,
    ) {
        let log = self.durable.log(s);
        let at = |seq: u64| log.get(seq.wrapping_sub(1) as usize).map(|e| &e.event);
        let id = format!("m{msg}");
        let received = matches!(at(turn_seq), Some(Event::TurnReceived { message_id, .. }) if message_id.as_str() == id);
        let replied = matches!(at(reply_seq), Some(Event::ReplyProduced { message_id, .. }) if message_id.as_str() == id);
        if !(received && replied) {
            self.checker.violate(
                self.now,
                "acked-turn-durable",
                from,
                format!("u{s} m{msg}: acked at seqs {turn_seq}/{reply_seq} but not in the durable log (it holds {} events)", log.len()),
            );
        }
    }
}
