//! The invariants, checked as the run goes (each after the step that could
//! break it), and the liveness properties, checked once the faults have stopped.

use crate::by_session::BySession;
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

/// What the checker remembers of one session's durable log, from the store's
/// accepted requests (never from the fencing code under test).
#[derive(Debug, Clone, Default)]
struct Log {
    /// The newest epoch any accepted claim was made at.
    claimed: Epoch,
    /// Who made the accepted claims, by epoch.
    claimants: BTreeMap<Epoch, usize>,
    /// Epoch of the last accepted write.
    written: Epoch,
}

/// Collects violations. Keeps at most `MAX_KEPT` of them (the count goes on).
#[derive(Debug, Default)]
pub struct Checker {
    logs: BySession<Log>,
    /// Every (session, message number) the durable logs hold a turn of.
    recorded: BySession<BTreeSet<u32>>,
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

    /// The store accepted `node`'s claim of session `s` at `epoch`. Checks: no
    /// claim older than one already accepted (the older claimant would own the
    /// session beside the newer one), and one claimant per epoch.
    pub fn claimed(&mut self, at_ms: u64, node: usize, s: u32, epoch: Epoch) {
        let log = self.logs.or_default(s);
        let newest = log.claimed;
        let other = log.claimants.insert(epoch, node).filter(|n| *n != node);
        log.claimed = log.claimed.max(epoch);
        if epoch < newest {
            let detail = format!(
                "u{s}: n{}'s claim at epoch {} was accepted after one at epoch {}: two active owners",
                node + 1,
                epoch.0,
                newest.0
            );
            self.violate(at_ms, "one-active-owner", Some(node), detail);
        }
        if let Some(other) = other {
            let detail = format!(
                "u{s}: n{} and n{} both claimed epoch {}",
                other + 1,
                node + 1,
                epoch.0
            );
            self.violate(at_ms, "one-active-owner", Some(node), detail);
        }
    }

    /// The newest epoch an accepted claim of session `s` was made at.
    pub fn newest_claim(&self, s: u32) -> Epoch {
        self.logs.get(&s).map_or(Epoch(0), |log| log.claimed)
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
        if !self.recorded.or_default(s).insert(number) {
            let detail = format!("u{s}: {message_id} recorded a second time: a turn applied twice");
            self.violate(at_ms, "one-reply-per-turn", Some(node), detail);
        }
    }

    /// The store accepted a write of session `s`'s events, whose seqs are
    /// `seqs`, after `last` (the log's last seq), made by `node` at `epoch`.
    /// Checks: the seq rises by exactly one; a fenced write never goes back in
    /// epoch; the writer claimed that epoch; no owner older than the last claim
    /// writes (two owners).
    pub fn wrote(
        &mut self,
        at_ms: u64,
        node: usize,
        s: u32,
        epoch: Epoch,
        seqs: &[u64],
        last: u64,
    ) {
        let expected = (last + 1..).take(seqs.len());
        if !seqs.iter().copied().eq(expected) {
            self.violate(
                at_ms,
                "seq-plus-one",
                Some(node),
                format!("u{s}: a write of seqs {seqs:?} after seq {last}"),
            );
        }
        if self.logs.get(&s).and_then(|log| log.claimants.get(&epoch)) != Some(&node) {
            let detail = format!(
                "u{s}: n{} wrote at epoch {}, which it never claimed",
                node + 1,
                epoch.0
            );
            self.violate(at_ms, "one-active-owner", Some(node), detail);
        }
        // The two epochs, not a copy of the log (its claimants are a B-tree).
        let log = self.logs.or_default(s);
        let (written, claimed) = (log.written, log.claimed);
        log.written = written.max(epoch);
        if epoch < written {
            self.violate(
                at_ms,
                "fenced-write-went-back",
                Some(node),
                format!(
                    "u{s}: n{} wrote at epoch {} after a write at epoch {}",
                    node + 1,
                    epoch.0,
                    written.0
                ),
            );
        }
        if epoch < claimed {
            self.violate(
                at_ms,
                "one-active-owner",
                Some(node),
                format!(
                    "u{s}: n{} wrote at epoch {} after the session was claimed at epoch {}: two active owners",
                    node + 1,
                    epoch.0,
                    claimed.0
                ),
            );
        }
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
        c.claimed(1, 0, 1, Epoch(2));
        c.wrote(10, 0, 1, Epoch(2), &[1, 2, 3], 0);
        assert_eq!(c.count(), 0);
        c.claimed(11, 1, 1, Epoch(3));
        c.wrote(12, 0, 1, Epoch(2), &[4, 5, 6], 3);
        assert_eq!(c.count(), 1);
        assert_eq!(c.violations()[0].invariant, "one-active-owner");
    }

    #[test]
    fn a_stale_claim_accepted_a_write_never_claimed_and_a_shared_epoch_are_caught() {
        let mut c = Checker::default();
        c.claimed(1, 0, 1, Epoch(5));
        c.claimed(2, 1, 1, Epoch(4));
        c.claimed(3, 2, 1, Epoch(5));
        c.wrote(4, 3, 1, Epoch(6), &[1, 2, 3], 0);
        let details: Vec<&str> = c.violations().iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(details.len(), 3, "{details:?}");
        assert!(
            details[0].contains("accepted after one at epoch 5"),
            "{details:?}"
        );
        assert!(details[1].contains("both claimed epoch 5"), "{details:?}");
        assert!(details[2].contains("never claimed"), "{details:?}");
        assert_eq!(c.newest_claim(1), Epoch(5));
        c.claimed(5, 2, 1, Epoch(5));
        assert_eq!(c.count(), 3, "the same node claiming again is fine");
    }

    #[test]
    fn a_gap_or_an_older_write_is_caught() {
        let mut c = Checker::default();
        c.claimed(0, 0, 1, Epoch(2));
        c.claimed(0, 0, 1, Epoch(3));
        c.wrote(1, 0, 1, Epoch(3), &[1, 2, 3], 0);
        c.wrote(2, 0, 1, Epoch(3), &[5, 6, 7], 3);
        c.wrote(3, 0, 1, Epoch(3), &[8, 10, 11], 7);
        c.wrote(4, 0, 1, Epoch(2), &[12, 13, 14], 11);
        let names: Vec<_> = c.violations().iter().map(|v| v.invariant).collect();
        assert_eq!(
            names,
            [
                "seq-plus-one",
                "seq-plus-one",
                "fenced-write-went-back",
                "one-active-owner"
            ]
        );
    }

    #[test]
    fn an_action_turn_of_five_events_is_one_write() {
        let mut c = Checker::default();
        c.claimed(0, 0, 1, Epoch(2));
        c.wrote(1, 0, 1, Epoch(2), &[1, 2, 3], 0);
        c.wrote(2, 0, 1, Epoch(2), &[4, 5, 6, 7, 8], 3);
        c.wrote(3, 0, 1, Epoch(2), &[9, 10, 11], 8);
        assert_eq!(c.count(), 0, "{:?}", c.violations());
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
