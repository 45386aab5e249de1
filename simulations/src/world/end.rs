//! The end of a run: liveness checks and the outcome.

use super::*;

impl World {
    // ---- the end ------------------------------------------------------------

    pub(super) fn finish(&mut self) -> Outcome {
        self.liveness();
        for (s, (from, to, epoch, start)) in std::mem::take(&mut self.migrations) {
            self.stats.migrations.unfinished += 1;
            if start >= self.liveness_from {
                self.stats.migrations_after_faults.unfinished += 1;
                self.checker.violate(
                    self.end,
                    "migration-within-2s",
                    Some(to),
                    format!(
                        "u{s}: n{} to n{} at epoch {} never finished",
                        from + 1,
                        to + 1,
                        epoch.0
                    ),
                );
            }
            self.mark_migration(s, (from, to), start, None);
        }
        for node in 0..self.nodes.len() {
            self.show(node, NodeState::Off);
        }
        self.stats.migrations.finish();
        self.stats.migrations_after_faults.finish();
        for v in self.checker.violations() {
            self.timeline.violations.push(ViolationMark {
                at_ms: v.at_ms,
                node: v.node,
                text: format!("{}: {}", v.invariant, v.detail),
            });
        }
        let steps = self.trace.len();
        let (trace, trace_error) = std::mem::replace(&mut self.trace, Trace::new(None)).finish();
        Outcome {
            stats: std::mem::take(&mut self.stats),
            checker: std::mem::take(&mut self.checker),
            trace,
            steps,
            simulated_ms: self.end,
            timeline: std::mem::take(&mut self.timeline),
            trace_error,
        }
    }

    /// `ring-settled`: a healed cluster settles on one ring within
    /// [`SETTLE_MS`] of the faults' end and does not flap: no member table is
    /// made after that.
    fn check_ring_settled(&mut self) {
        let bound = self.liveness_from + SETTLE_MS;
        let late: Vec<(u64, u64)> = self
            .durable
            .epoch_made_at
            .iter()
            .filter(|(_, at)| **at > bound)
            .map(|(epoch, at)| (*epoch, *at))
            .collect();
        for (epoch, at) in late {
            let detail = format!(
                "epoch {epoch} made at {at} ms, more than {SETTLE_MS} ms after the faults stopped at {} ms",
                self.liveness_from
            );
            self.checker.violate(at, "ring-settled", None, detail);
        }
    }

    /// After the faults stopped: the ring is agreed, every session is served by
    /// its ring owner, every user was answered, and every log replays.
    pub(super) fn liveness(&mut self) {
        self.check_links_healed();
        self.check_ring_settled();
        let end = self.end;
        let table = self.durable.table.clone();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.life == Life::Running && n.membership.epoch() != Some(table.epoch) {
                let detail = format!(
                    "n{} holds epoch {:?} but the table is at epoch {}",
                    i + 1,
                    n.membership.epoch().map(|e| e.0),
                    table.epoch.0
                );
                self.checker.violate(end, "ring-agreed", Some(i), detail);
            }
        }
        let ring = Ring::new(table.epoch, table.ring_nodes());
        for s in 0..self.uids.len() as u32 {
            let owner = ring.owner(&self.uids[s as usize]).map(node_of);
            for (i, n) in self.nodes.iter().enumerate() {
                let buffered: usize = n.held.of(s).map(|(_, h)| h.life.queued()).sum();
                if n.life == Life::Running && buffered > 0 {
                    let detail = format!(
                        "u{s}: {buffered} turns still buffered on n{} at the end",
                        i + 1
                    );
                    self.checker
                        .violate(end, "every-turn-answered", Some(i), detail);
                }
                let active = n.life == Life::Running
                    && n.held.of(s).any(|(_, h)| h.life.phase() == &Phase::Active);
                if active && Some(i) != owner {
                    let detail = format!(
                        "u{s}: served by n{} but the ring gives it to {owner:?}",
                        i + 1
                    );
                    self.checker
                        .violate(end, "served-by-owner", Some(i), detail);
                }
            }
            let user = &self.users[s as usize];
            if user.waiting {
                let detail = format!(
                    "u{s}: m{} sent at {} ms was never answered",
                    user.msg, user.sent_at
                );
                self.checker
                    .violate(end, "every-turn-answered", None, detail);
            }
            for (msg, (turn_seq, reply_seq)) in self.users[s as usize].acked.clone() {
                self.check_durable(s, msg, turn_seq, reply_seq, None);
            }
            let user = &self.users[s as usize];
            if let Some(c) = &self.conversations
                && !user.waiting
                && c.finished(s, user.msg)
            {
                self.stats.scripts_finished += 1;
            }
        }
    }
}
