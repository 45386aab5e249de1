//! Snapshots and passivation, as the production session actor and supervisor
//! carry them out: a session snapshots as the core's `SnapshotPolicy` says
//! after each commit and when its timer fires, and once more when it leaves
//! (hand-off, passivation); a node passivates the resident sessions the
//! handoff machine finds idle. The simulated MySQL keeps each session's
//! latest snapshot behind the fence, Redis a copy written through after it;
//! a load with no memory starts from the snapshot and reads the log after it.

use super::*;

impl World {
    /// How often a node looks for idle sessions (a quarter of the idle time,
    /// as the supervisor does).
    pub(super) fn sweep_every(&self) -> u64 {
        (self.scenario.session.passivate_after_ms / 4).max(100)
    }

    /// The node passivates the resident sessions idle for
    /// `passivate_after_ms` with nothing queued or in flight.
    pub(super) fn passivate_idle(&mut self, node: usize) {
        let now = self.node_now(node);
        let idle_ms = self.scenario.session.passivate_after_ms;
        let n = &mut self.nodes[node];
        let (held, resident) = (&n.held, &n.resident);
        let idle = n
            .handoff
            .idle(now, idle_ms, |uid| activity_of(resident, held, uid));
        for uid in idle {
            let s = self.session_of(&uid);
            let Some(hid) = self.nodes[node].resident.remove(&s) else {
                continue;
            };
            self.record("passivate", Some(node), s.into(), 0, 0);
            self.stats.passivated += 1;
            self.session_input(node, hid, SessionInput::Passivate);
        }
        let inc = self.nodes[node].incarnation;
        let at = self.now + self.sweep_every();
        self.push(at, Ev::PassivateSweep { node, inc });
    }

    /// After a commit: a snapshot now, a timer, or nothing, as the policy says.
    pub(super) fn snapshot_after_commit(&mut self, node: usize, hid: u64) {
        let policy = self.snapshots;
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        let Some(seq) = held.state.as_ref().map(SessionState::seq) else {
            return;
        };
        match policy.after_commit(seq, Seq(held.snapshot_seq), held.snapshot_timer) {
            SnapshotDue::Now => self.write_snapshot(node, hid),
            SnapshotDue::After(ms) => {
                held.snapshot_timer = true;
                let inc = self.nodes[node].incarnation;
                self.push(self.now + ms, Ev::SnapshotTimer { node, inc, hid });
            }
            SnapshotDue::Nothing => {}
        }
    }

    /// A session's snapshot timer fired: a snapshot if the state changed.
    pub(super) fn snapshot_timer(&mut self, node: usize, hid: u64) {
        let policy = self.snapshots;
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        held.snapshot_timer = false;
        let Some(seq) = held.state.as_ref().map(SessionState::seq) else {
            return;
        };
        if policy.on_timer(seq, Seq(held.snapshot_seq)) {
            self.write_snapshot(node, hid);
        }
    }

    /// Writes the session's snapshot, if it is loaded and past the last one,
    /// at the epoch it holds the session at.
    pub(super) fn write_snapshot(&mut self, node: usize, hid: u64) {
        let now = self.node_now(node);
        let Some(held) = self.nodes[node].held.get_mut(&hid) else {
            return;
        };
        // Nothing new since the last snapshot: no copy of the state made.
        let seq = held.state.as_ref().map_or(0, |state| state.seq().0);
        if !held.life.is_loaded() || seq <= held.snapshot_seq {
            return;
        }
        let Some(state) = held.state.as_ref() else {
            return;
        };
        held.snapshot_seq = seq;
        let (s, epoch) = (held.s, held.life.epoch());
        let uid = &self.uids[s as usize];
        let bytes = Arc::from(SnapshotRef::new(uid, now, epoch, state).encode(&self.key));
        let op = StoreOp::Snapshot {
            s,
            epoch,
            bytes,
            seq,
            at_ms: now,
        };
        self.store_op(node, op, 0);
    }

    /// The store's side of a snapshot: admitted by the fence as a write is,
    /// kept if newer than the one held, written through to Redis unless Redis
    /// times out. `snapshot-matches-log`: it must be the log replayed to its
    /// seq, never memory ahead of the log: the checker's replay, encoded with
    /// the same header, gives the same bytes.
    pub(super) fn store_snapshot(
        &mut self,
        node: usize,
        (s, epoch): (u32, Epoch),
        bytes: Arc<[u8]>,
        (seq, at_ms): (u64, u64),
    ) -> bool {
        let fence = self.durable.fences.get(&s).copied().unwrap_or(Epoch(0));
        if !fencing::admits_write(fence, epoch) {
            return false;
        }
        // The checker's replay, from where it last stopped if that is not
        // past this snapshot.
        let mut replayed = self
            .durable
            .replayed
            .remove(&s)
            .filter(|r| r.seq().0 <= seq)
            .unwrap_or_default();
        let log = self.durable.log(s);
        let from = replayed.seq().0 as usize;
        let upto = log.get(from..).unwrap_or_default().iter();
        let applies = upto
            .take_while(|e| e.seq.0 <= seq)
            .all(|e| replayed.apply(e).is_ok());
        let uid = &self.uids[s as usize];
        if !applies
            || replayed.seq().0 != seq
            || !same_snapshot(&SnapshotRef::new(uid, at_ms, epoch, &replayed), &bytes)
        {
            let detail = format!(
                "u{s}: a snapshot at seq {seq} by n{} is not the log replayed to that seq (the log ends at {})",
                node + 1,
                log.len()
            );
            self.checker
                .violate(self.now, "snapshot-matches-log", Some(node), detail);
            return false;
        }
        self.durable.replayed.insert(s, replayed);
        let newer = |held: Option<&(u64, Arc<[u8]>)>| held.is_none_or(|(old, _)| *old < seq);
        if !newer(self.durable.snapshots.get(&s)) {
            return false;
        }
        self.durable.snapshots.insert(s, (seq, Arc::clone(&bytes)));
        let redis_up = !(self.faulty() && self.store_rng.chance(self.settings.redis_timeouts));
        if redis_up && newer(self.redis_snapshots.get(&s)) {
            self.redis_snapshots.insert(s, (seq, bytes));
        }
        self.stats.snapshots += 1;
        true
    }

    /// What a claim loads: for a claimant with no memory, the latest
    /// snapshot (Redis's copy if it holds one, which may be older than
    /// MySQL's) and the log after it; for one whose memory is at a seq (a
    /// state that came from the old owner, at seq 0 too), the log after it.
    /// (Taking a snapshot for memory at seq 0 once lost the events between:
    /// `actions` seed 9383.)
    pub(super) fn load(&mut self, s: u32, memory: Option<u64>) -> Loaded {
        let log = self.durable.log(s);
        let snapshot = memory
            .is_none()
            .then(|| {
                self.redis_snapshots
                    .get(&s)
                    .or_else(|| self.durable.snapshots.get(&s))
                    .cloned()
            })
            .flatten();
        let from = snapshot
            .as_ref()
            .map_or(memory.unwrap_or(0), |(seq, _)| *seq);
        let events = log.get(from as usize..).unwrap_or_default().to_vec();
        if snapshot.is_some() {
            self.stats.snapshot_loads += 1;
        }
        Loaded {
            snapshot: snapshot.map(|(_, bytes)| bytes),
            events,
        }
    }
}

/// Whether `bytes` are `replayed` encoded: the same header and body (the
/// signature over them is the same under the same key, and every load
/// verifies it).
fn same_snapshot(replayed: &SnapshotRef<'_>, bytes: &[u8]) -> bool {
    let signed = replayed.signed();
    bytes.len() == signed.len() + SNAPSHOT_MAC_BYTES && bytes[..signed.len()] == signed[..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_core::session::TurnDecision;

    fn turn(state: &SessionState, uid: &Uid, n: u32) -> [RecordedEvent; 3] {
        let decision = TurnDecision {
            intent: "chat".into(),
            confidence: 0.5,
            slots_filled: Default::default(),
            slots_cleared: Vec::new(),
            reply_text: format!("reply {n}"),
            policy: "p1".into(),
            dialog: Default::default(),
        };
        let id = MessageId::new(format!("m{n}")).expect("a message id");
        state.record_turn(uid, Epoch(1), 1_000, id, format!("hi {n}"), decision)
    }

    /// `snapshot-matches-log`: the checker compares a snapshot's bytes with
    /// its own replay of the log, encoded the same way.
    #[test]
    fn a_snapshot_ahead_of_the_log_or_unlike_it_is_a_violation_and_the_log_replayed_is_not() {
        let scenario = Scenario::load("crash").expect("the crash scenario");
        let mut world = World::new(&scenario, 1, Some(&[]), None).expect("a world");
        let (s, epoch) = (0, Epoch(1));
        let uid = world.uids[s as usize].clone();
        let mut state = SessionState::default();
        let mut log = Vec::new();
        for n in 1..=2 {
            for event in turn(&state, &uid, n) {
                state.apply(&event).expect("applies");
                log.push(event);
            }
        }
        world.durable.fences.insert(s, epoch);
        let encode = |state: &SessionState, key: &SnapshotKey| -> Arc<[u8]> {
            Arc::from(SnapshotRef::new(&uid, 5, epoch, state).encode(key))
        };
        let seq = state.seq().0;

        // Memory ahead of the log: the log holds the first turn only.
        world.durable.logs.insert(s, log[..3].to_vec());
        let bytes = encode(&state, &world.key);
        assert!(!world.store_snapshot(0, (s, epoch), bytes, (seq, 5)));
        assert_eq!(world.checker.count(), 1, "{:?}", world.checker.violations());
        assert_eq!(
            world.checker.violations()[0].invariant,
            "snapshot-matches-log"
        );

        // The whole log, and a snapshot of another state at the same seq.
        world.durable.logs.insert(s, log.clone());
        let mut other = SessionState::default();
        for n in [7, 8] {
            for event in turn(&other, &uid, n) {
                other.apply(&event).expect("applies");
            }
        }
        assert_eq!(other.seq().0, seq);
        let bytes = encode(&other, &world.key);
        assert!(!world.store_snapshot(0, (s, epoch), bytes, (seq, 5)));
        assert_eq!(world.checker.count(), 2);

        // The log replayed: stored, no violation.
        let bytes = encode(&state, &world.key);
        assert!(world.store_snapshot(0, (s, epoch), bytes, (seq, 5)));
        assert_eq!(world.checker.count(), 2);
        assert_eq!(
            world.durable.snapshots.get(&s).map(|(seq, _)| *seq),
            Some(seq)
        );
    }
}
