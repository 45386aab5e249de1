//! The invariants, checked as the run goes (each after the step that could
//! break it), and the liveness properties, checked once the faults have stopped.

use confab_core::Epoch;
use std::collections::{BTreeMap, BTreeSet};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When (simulated ms).
    pub at_ms: u64,
    /// Which invariant (a short stable name).
    pub invariant: &'static str,
    /// The node involved, if one is (index).
    pub node: Option<usize>,
    /// What happened.
    pub detail: String,
}

/// What the checker remembers of one session's durable log.
#[derive(Debug, Clone, Default)]
struct Log {
    /// Highest epoch a claim raised the fence to.
    claimed: Epoch,
    /// Epoch of the last accepted write.
    written: Epoch,
}

/// Collects violations. Keeps at most `MAX_KEPT` of them (the count goes on).
#[derive(Debug, Default)]
pub struct Checker {
    logs: BTreeMap<u32, Log>,
    /// Every (session, message number) the durable logs hold a turn of.
    recorded: BTreeSet<(u32, u32)>,
    violations: Vec<Violation>,
    count: u64,
}

const MAX_KEPT: usize = 100;

impl Checker {
    /// Records a violation.
    pub fn violate(
        &mut self,
        at_ms: u64,
        invariant: &'static str,
        node: Option<usize>,
        detail: String,
    ) {
        self.count += 1;
        if self.violations.len() < MAX_KEPT {
            self.violations.push(Violation {
                at_ms,
                invariant,
                node,
                detail,
            });
        }
    }

    /// The violations kept, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// How many there were.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// A claim raised session `s`'s fence to `epoch`.
    pub fn claimed(&mut self, s: u32, epoch: Epoch) {
        let log = self.logs.entry(s).or_default();
        log.claimed = log.claimed.max(epoch);
    }

    /// The store accepted a turn of session `s` with this message id: a message
    /// id recorded twice is a turn applied twice.
    pub fn recorded(&mut self, at_ms: u64, node: usize, s: u32, message_id: &str) {
        let number = message_id.strip_prefix('m').and_then(|n| n.parse().ok());
        let Some(number) = number else {
            let detail = format!("u{s}: a turn with the message id {message_id:?}, never sent");
            self.violate(at_ms, "one-reply-per-turn", Some(node), detail);
            return;
        };
        if !self.recorded.insert((s, number)) {
            let detail = format!("u{s}: {message_id} recorded a second time: a turn applied twice");
            self.violate(at_ms, "one-reply-per-turn", Some(node), detail);
        }
    }

    /// The store accepted a write of session `s`'s events from seq `first`,
    /// after `last` (the log's last seq), made by `node` at `epoch`.
    /// Checks: the seq rises by exactly one, a fenced write never goes back in
    /// epoch, and no owner older than the last claim writes (two owners).
    pub fn wrote(&mut self, at_ms: u64, node: usize, s: u32, epoch: Epoch, first: u64, last: u64) {
        if first != last + 1 {
            self.violate(
                at_ms,
                "seq-plus-one",
                Some(node),
                format!("u{s}: a write starts at seq {first} after seq {last}"),
            );
        }
        let log = self.logs.entry(s).or_default().clone();
        if epoch < log.written {
            self.violate(
                at_ms,
                "fenced-write-went-back",
                Some(node),
                format!(
                    "u{s}: n{} wrote at epoch {} after a write at epoch {}",
                    node + 1,
                    epoch.0,
                    log.written.0
                ),
            );
        }
        if epoch < log.claimed {
            self.violate(
                at_ms,
                "one-active-owner",
                Some(node),
                format!(
                    "u{s}: n{} wrote at epoch {} after the session was claimed at epoch {}: two active owners",
                    node + 1,
                    epoch.0,
                    log.claimed.0
                ),
            );
        }
        let entry = self.logs.entry(s).or_default();
        entry.written = entry.written.max(epoch);
    }
}

/// Durations of finished migrations, and the unfinished ones.
#[derive(Debug, Default, Clone)]
pub struct Distribution {
    /// Finished, in ms, sorted at `finish`.
    pub finished: Vec<u64>,
    /// Never finished within the run.
    pub unfinished: u64,
}

impl Distribution {
    /// The `q` quantile (0 to 1) of the finished ones.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.finished.is_empty() {
            return 0;
        }
        let rank = ((self.finished.len() - 1) as f64 * q).round() as usize;
        self.finished[rank]
    }

    /// The longest.
    pub fn max(&self) -> u64 {
        self.finished.last().copied().unwrap_or(0)
    }

    /// Sorts the durations.
    pub fn finish(&mut self) {
        self.finished.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_a_newer_claim_is_two_active_owners() {
        let mut c = Checker::default();
        c.claimed(1, Epoch(2));
        c.wrote(10, 0, 1, Epoch(2), 1, 0);
        assert_eq!(c.count(), 0);
        c.claimed(1, Epoch(3));
        c.wrote(11, 0, 1, Epoch(2), 4, 3);
        assert_eq!(c.violations()[0].invariant, "one-active-owner");
    }

    #[test]
    fn a_gap_or_an_older_write_is_caught() {
        let mut c = Checker::default();
        c.wrote(1, 0, 1, Epoch(3), 1, 0);
        c.wrote(2, 1, 1, Epoch(3), 5, 3);
        c.wrote(3, 1, 1, Epoch(2), 8, 7);
        let names: Vec<_> = c.violations().iter().map(|v| v.invariant).collect();
        assert_eq!(names, ["seq-plus-one", "fenced-write-went-back"]);
    }

    #[test]
    fn a_message_id_recorded_twice_is_a_turn_applied_twice() {
        let mut c = Checker::default();
        c.recorded(1, 0, 4, "m1");
        c.recorded(2, 0, 4, "m2");
        c.recorded(3, 0, 5, "m1");
        assert_eq!(c.count(), 0, "another message, or another session");
        c.recorded(4, 1, 4, "m1");
        assert_eq!(c.violations()[0].invariant, "one-reply-per-turn");
    }

    #[test]
    fn quantiles_of_a_distribution() {
        let mut d = Distribution {
            finished: vec![30, 10, 20, 40],
            unfinished: 0,
        };
        d.finish();
        assert_eq!((d.quantile(0.0), d.quantile(1.0), d.max()), (10, 40, 40));
        assert_eq!(Distribution::default().quantile(0.5), 0);
    }
}
