//! The simulated stores: MySQL (logs, fences, the member table) and Redis.

use super::*;

impl World {
    // ---- the stores ---------------------------------------------------------

    pub(super) fn store_op(&mut self, node: usize, op: StoreOp, delay: u64) {
        let (low, high) = self.settings.mysql_latency;
        let extra: u64 = self
            .active_faults
            .iter()
            .filter_map(|i| match self.schedule.faults[*i].kind {
                FaultKind::SlowStorage { extra_ms } => Some(extra_ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let mut there = self.store_rng.between(low, high).div_ceil(2) + extra;
        if let StoreOp::Claim(claims) = &op {
            // A load reads Redis first (the cached prefix), then MySQL's tail.
            self.stats.loads += claims.len() as u64;
            if self.faulty() && self.store_rng.chance(self.settings.redis_timeouts) {
                self.stats.redis_bypass += 1;
                there += self.settings.redis_timeout_ms;
            } else {
                there += self.settings.redis_latency;
                let hits = claims.iter().filter(|c| self.redis.contains_key(&c.s));
                self.stats.redis_hits += hits.count() as u64;
            }
        }
        let inc = self.nodes[node].incarnation;
        self.push(self.now + delay + there, Ev::StoreArrive { node, inc, op });
    }

    pub(super) fn store_arrive(&mut self, node: usize, inc: u32, op: StoreOp) {
        let session = match &op {
            StoreOp::Append { s, .. } => i64::from(*s),
            StoreOp::Claim(claims) if claims.len() == 1 => i64::from(claims[0].s),
            StoreOp::Confirm { s, .. } | StoreOp::Snapshot { s, .. } => i64::from(*s),
            _ => -1,
        };
        let count = match &op {
            StoreOp::Claim(claims) => claims.len() as u64,
            _ => 1,
        };
        self.record(op.name(), Some(node), session, count, 0);
        let faulty = self.faulty();
        let error_rate = self
            .active_faults
            .iter()
            .filter_map(|i| match self.schedule.faults[*i].kind {
                FaultKind::StorageErrors { rate } => Some(rate),
                _ => None,
            })
            .fold(
                if faulty {
                    self.settings.mysql_errors
                } else {
                    0.0
                },
                f64::max,
            );
        let failed = self.store_rng.chance(error_rate);
        let lost_answer = faulty && self.store_rng.chance(self.settings.mysql_unknown);
        let reply = match op {
            StoreOp::Read => {
                StoreReply::Table((!failed).then(|| Box::new(self.durable.table.clone())))
            }
            StoreOp::Cas { expected, table } => {
                StoreReply::Cas((!failed).then(|| Box::new(self.cas(expected, *table))))
            }
            StoreOp::Append {
                s,
                hid,
                epoch,
                events,
            } => {
                let result = if failed {
                    Err(Refusal::Unavailable)
                } else {
                    self.append(node, s, epoch, events)
                };
                StoreReply::Append { s, hid, result }
            }
            StoreOp::Confirm { s, hid, epoch } => {
                let result = if failed {
                    Err(Refusal::Unavailable)
                } else {
                    self.claim(node, s, epoch)
                };
                StoreReply::Confirm { s, hid, result }
            }
            StoreOp::Snapshot {
                s,
                epoch,
                bytes,
                seq,
                at_ms,
            } => {
                let stored = !failed && self.store_snapshot(node, (s, epoch), bytes, (seq, at_ms));
                StoreReply::Snapshot { s, stored }
            }
            StoreOp::Claim(claims) => StoreReply::Claim(
                claims
                    .into_iter()
                    .map(|ask| {
                        let result = if failed {
                            Err(Refusal::Unavailable)
                        } else {
                            self.claim(node, ask.s, ask.epoch)
                                .map(|()| self.load(ask.s, ask.memory))
                        };
                        (ask, result)
                    })
                    .collect(),
            ),
        };
        // Applied, but the answer is lost: the node sees an error.
        let reply = if lost_answer && !failed {
            lose(reply)
        } else {
            reply
        };
        let (low, high) = self.settings.mysql_latency;
        let back = self.store_rng.between(low, high) / 2;
        self.push(self.now + back, Ev::StoreReply { node, inc, reply });
    }

    pub(super) fn cas(&mut self, expected: u64, table: MemberTable) -> (bool, MemberTable) {
        let applied = self.durable.table.version == expected;
        if applied {
            if table.epoch > self.durable.table.epoch {
                self.durable.epoch_made_at.insert(table.epoch.0, self.now);
                self.stats.epoch = table.epoch.0;
                self.timeline.epochs.push(EpochMark {
                    at_ms: self.now,
                    epoch: table.epoch.0,
                    ring: table.ring_nodes().iter().map(node_of).collect(),
                });
            }
            self.durable.table = table;
        }
        (applied, self.durable.table.clone())
    }

    pub(super) fn append(
        &mut self,
        node: usize,
        s: u32,
        epoch: Epoch,
        events: Vec<RecordedEvent>,
    ) -> Result<(), Refusal> {
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        if !fencing::admits_write(fence, epoch) {
            self.stats.fenced_writes += 1;
            return Err(Refusal::Fenced);
        }
        let log = self.durable.logs.or_default(s);
        let last = log.last().map_or(0, |e| e.seq.0);
        let first = events.first().map_or(last + 1, |e| e.seq.0);
        if first <= last {
            // The (uid, seq) primary key refuses it.
            return Err(Refusal::Conflict);
        }
        let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
        self.checker.wrote(self.now, node, s, epoch, &seqs, last);
        if let Some(e) = events
            .iter()
            .find(|e| e.epoch != epoch || e.uid != self.uids[s as usize])
        {
            let detail = format!(
                "u{s}: a write at epoch {} carries an event of {} at epoch {}",
                epoch.0, e.uid, e.epoch.0
            );
            self.checker
                .violate(self.now, "one-active-owner", Some(node), detail);
        }
        for event in &events {
            if let Event::TurnReceived { message_id, .. } = &event.event {
                self.checker
                    .recorded(self.now, node, s, message_id.as_str());
            }
        }
        self.stats.commits += 1;
        log.extend(events);
        // Written through to Redis, unless Redis times out (then it is bypassed:
        // it keeps an older prefix, which loads complete from MySQL).
        if self.faulty() && self.store_rng.chance(self.settings.redis_timeouts) {
            self.stats.redis_bypass += 1;
        } else {
            let len = self.durable.logs[&s].len() as u64;
            self.redis.insert(s, len);
        }
        Ok(())
    }

    pub(super) fn claim(&mut self, node: usize, s: u32, epoch: Epoch) -> Result<(), Refusal> {
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        match fencing::claim(fence, epoch) {
            Claim::Refused => {
                self.stats.refused_claims += 1;
                return Err(Refusal::Fenced);
            }
            Claim::Raise => {
                self.durable.fences.insert(s, epoch);
            }
            Claim::Held => {}
        }
        self.checker.claimed(self.now, node, s, epoch);
        Ok(())
    }

    pub(super) fn store_reply(&mut self, node: usize, reply: StoreReply) {
        let now = self.node_now(node);
        match reply {
            StoreReply::Table(table) => {
                self.record("table_read", Some(node), -1, table.is_some().into(), 0);
                let input = table.map_or(MInput::StoreFailed, |t| MInput::TableRead(*t));
                self.nodes[node].membership.handle(now, input);
                self.membership_io(node);
            }
            StoreReply::Cas(result) => {
                self.record(
                    "table_cas",
                    Some(node),
                    -1,
                    result.as_ref().is_some_and(|r| r.0).into(),
                    0,
                );
                let input = result.map_or(MInput::StoreFailed, |done| {
                    let (applied, table) = *done;
                    MInput::CasDone { applied, table }
                });
                self.nodes[node].membership.handle(now, input);
                self.membership_io(node);
            }
            StoreReply::Append { s, hid, result } => self.committed(node, s, hid, result),
            StoreReply::Confirm { s, hid, result } => self.confirmed(node, s, hid, result),
            StoreReply::Snapshot { s, stored } => {
                self.record("snapshot_stored", Some(node), s.into(), stored.into(), 0);
            }
            StoreReply::Claim(results) => {
                for (ask, result) in results {
                    self.claimed(node, ask, result);
                }
            }
        }
    }

    pub(super) fn claimed(
        &mut self,
        node: usize,
        ClaimAsk { s, hid, epoch, .. }: ClaimAsk,
        result: Result<Loaded, Refusal>,
    ) {
        self.record(
            "claimed",
            Some(node),
            s.into(),
            epoch.0,
            result.is_ok().into(),
        );
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        if held.life.phase() != &(Phase::Claiming { epoch }) {
            return; // an answer to a claim this session no longer waits for
        }
        let result = match result {
            Ok(Loaded { snapshot, events }) => {
                // The old owner's state if one came, else the snapshot (its
                // checksum and uid checked), else nothing: then the log after.
                let from_snapshot = snapshot.map(|bytes| Snapshot::decode(&bytes, &self.key));
                let mut state = match (held.state.take(), from_snapshot) {
                    (Some(state), _) => state,
                    (None, Some(Ok(snap))) if snap.uid == self.uids[s as usize] => {
                        held.snapshot_seq = snap.seq.0;
                        snap.state
                    }
                    (None, Some(_)) => {
                        self.checker.violate(
                            self.now,
                            "state-decodes",
                            Some(node),
                            format!("u{s}: a loaded snapshot"),
                        );
                        SessionState::default()
                    }
                    (None, None) => SessionState::default(),
                };
                let from = state.seq();
                let tail = events.iter().filter(|e| e.seq > from);
                apply_all(&mut state, tail, &mut self.checker, self.now, node, s);
                if state.pending_action().is_some() {
                    // Its owner stopped between the action's two commits.
                    self.stats.actions_resumed += 1;
                }
                held.state = Some(state);
                handoff::Claimed::Loaded
            }
            Err(Refusal::Fenced) => {
                held.state = None;
                self.refresh(node);
                handoff::Claimed::Fenced
            }
            Err(_) => {
                held.state = None;
                handoff::Claimed::Failed
            }
        };
        self.session_input(node, hid, SessionInput::Claimed { epoch, result });
    }

    /// A migration is done once its new owner holds the session at the
    /// move's epoch or later: it took the state, or serves the session.
    pub(super) fn migration_done(&mut self, node: usize, s: u32, epoch_held: Epoch) {
        let Some((from, to, epoch, start)) = self.migrations.get(&s).copied() else {
            return;
        };
        if epoch_held < epoch {
            return;
        }
        self.migrations.remove(&s);
        let took = self.now - start;
        self.stats.migrations.finished.push(took);
        if start >= self.liveness_from {
            self.stats.migrations_after_faults.finished.push(took);
            if took > MIGRATION_MAX_MS {
                self.checker.violate(
                    self.now,
                    "migration-within-2s",
                    Some(node),
                    format!(
                        "u{s}: n{} to n{} took {took} ms after epoch {}",
                        from + 1,
                        to + 1,
                        epoch.0
                    ),
                );
            }
        }
        self.mark_migration(s, (from, to), start, Some(self.now));
    }
}

/// The answer of a request that was applied but whose answer never came back.
fn lose(reply: StoreReply) -> StoreReply {
    match reply {
        StoreReply::Table(_) => StoreReply::Table(None),
        StoreReply::Cas(_) => StoreReply::Cas(None),
        StoreReply::Append { s, hid, .. } => StoreReply::Append {
            s,
            hid,
            result: Err(Refusal::Unavailable),
        },
        StoreReply::Confirm { s, hid, .. } => StoreReply::Confirm {
            s,
            hid,
            result: Err(Refusal::Unavailable),
        },
        StoreReply::Snapshot { s, .. } => StoreReply::Snapshot { s, stored: false },
        StoreReply::Claim(results) => StoreReply::Claim(
            results
                .into_iter()
                .map(|(ask, _)| (ask, Err(Refusal::Unavailable)))
                .collect(),
        ),
    }
}

/// Applies committed events to a node's memory of session `s`; the first that
/// does not apply is a `log-applies` violation, and the rest are not tried.
fn apply_all<'a>(
    state: &mut SessionState,
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    checker: &mut Checker,
    at_ms: u64,
    node: usize,
    s: u32,
) {
    for event in events {
        if let Err(e) = state.apply(event) {
            checker.violate(at_ms, "log-applies", Some(node), format!("u{s}: {e}"));
            return;
        }
    }
}
