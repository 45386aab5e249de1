//! Which members a node dials, and when: every member it should be linked to,
//! with backoff, for ever.
//!
//! A node keeps a link to every other member of the table, whatever its status:
//! a member declared `down` may be alive behind a healed partition, and it
//! comes back only if someone dials it or it dials them. Each unlinked member
//! is dialled at its published address; one that cannot be reached is dialled
//! again after a delay that doubles from `first_ms` up to `max_ms`, and a link
//! made resets it. The seeds are dialled too while no member is linked (a node
//! that has not read the table yet knows only them).

use crate::NodeId;
use crate::membership::MemberTable;
use crate::mutation::{self, Mutation};
use std::collections::BTreeMap;

/// The dialling delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialConfig {
    /// The delay after the first failed dial of a target (ms).
    pub first_ms: u64,
    /// The longest delay between two dials of a target (ms).
    pub max_ms: u64,
    /// How often the node asks whom to dial, and how long one dial may take
    /// (ms).
    pub tick_ms: u64,
}

impl Default for DialConfig {
    fn default() -> Self {
        Self {
            first_ms: 1_000,
            max_ms: 8_000,
            tick_ms: 1_000,
        }
    }
}

/// A target's backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    /// Not dialled again before.
    next_at: u64,
    /// The delay after its next failure.
    delay: u64,
}

/// The dialling decisions of one node.
#[derive(Debug, Clone)]
pub struct Dialer {
    me: NodeId,
    config: DialConfig,
    /// Targets that failed, by address: at most one per member and seed.
    backoff: BTreeMap<String, Backoff>,
}

/// What a node knows when it decides whom to dial.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// The member table, if read.
    pub table: Option<&'a MemberTable>,
    /// Each member's published address.
    pub addresses: &'a BTreeMap<NodeId, String>,
    /// The configured seeds.
    pub seeds: &'a [String],
}

impl Dialer {
    /// The dialer of node `me`.
    pub fn new(me: NodeId, config: DialConfig) -> Self {
        Self {
            me,
            config,
            backoff: BTreeMap::new(),
        }
    }

    /// The addresses to dial now, sorted: each member of the table with no
    /// link (`linked` says), whose backoff has passed, and the seeds while no
    /// member is linked.
    pub fn due(
        &mut self,
        now: u64,
        known: Known<'_>,
        linked: impl Fn(&NodeId) -> bool,
    ) -> Vec<String> {
        let members: Vec<&NodeId> = known
            .table
            .map(|t| t.members.keys().filter(|id| **id != self.me).collect())
            .unwrap_or_default();
        let missing: Vec<&NodeId> = members.iter().copied().filter(|id| !linked(id)).collect();
        let none_linked = members.len() == missing.len();
        let mut wanted: Vec<String> = missing
            .iter()
            .filter_map(|id| known.addresses.get(*id).cloned())
            .collect();
        if none_linked {
            wanted.extend(known.seeds.iter().cloned());
        }
        // Planted bug `dial-seeds-only`: only the seeds not linked yet.
        if mutation::active(Mutation::DialSeedsOnly) {
            let linked_at = |seed: &String| {
                known
                    .addresses
                    .iter()
                    .any(|(id, address)| address == seed && linked(id))
            };
            wanted = known
                .seeds
                .iter()
                .filter(|seed| !linked_at(seed))
                .cloned()
                .collect();
        }
        wanted.sort();
        wanted.dedup();
        // Forget the backoff of targets no longer wanted: the map stays bounded.
        self.backoff.retain(|target, _| wanted.contains(target));
        wanted
            .into_iter()
            .filter(|t| self.backoff.get(t).is_none_or(|b| now >= b.next_at))
            .collect()
    }

    /// A dial of `target` ended: a link made resets its backoff, a failure
    /// doubles it.
    pub fn dialed(&mut self, now: u64, target: &str, linked: bool) {
        if linked {
            self.backoff.remove(target);
            return;
        }
        let first = self.config.first_ms;
        let backoff = self.backoff.entry(target.to_owned()).or_insert(Backoff {
            next_at: now,
            delay: first,
        });
        backoff.next_at = now + backoff.delay;
        backoff.delay = (backoff.delay * 2).min(self.config.max_ms.max(first));
    }

    /// When the next dial may be due (ms), if any target is backing off.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.backoff.values().map(|b| b.next_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Status;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn table(members: &[(&str, Status)]) -> MemberTable {
        let mut t = MemberTable::default();
        for (m, status) in members {
            t.members.insert(id(m), *status);
        }
        t
    }

    fn book() -> BTreeMap<NodeId, String> {
        ["n1", "n2", "n3"]
            .iter()
            .map(|n| (id(n), format!("{n}:7000")))
            .collect()
    }

    #[test]
    fn every_unlinked_member_is_dialled_down_members_too() {
        let mut d = Dialer::new(id("n1"), DialConfig::default());
        let t = table(&[("n1", Status::Up), ("n2", Status::Up), ("n3", Status::Down)]);
        let seeds = ["n2:7000".to_owned()];
        let addresses = book();
        let known = Known {
            table: Some(&t),
            addresses: &addresses,
            seeds: &seeds,
        };
        // n2 is linked (the seed), n3 is down and not linked: it is dialled.
        assert_eq!(d.due(0, known, |m| m.as_str() == "n2"), ["n3:7000"]);
        // Nothing linked: every member and the seeds.
        assert_eq!(d.due(0, known, |_| false), ["n2:7000", "n3:7000"]);
    }

    #[test]
    fn a_target_that_fails_is_dialled_again_after_a_doubling_delay_for_ever() {
        let config = DialConfig {
            first_ms: 100,
            max_ms: 400,
            ..DialConfig::default()
        };
        let mut d = Dialer::new(id("n1"), config);
        let t = table(&[("n1", Status::Up), ("n3", Status::Down)]);
        let addresses = book();
        let known = Known {
            table: Some(&t),
            addresses: &addresses,
            seeds: &[],
        };
        let mut dials = vec![];
        for now in (0..2_000).step_by(50) {
            for target in d.due(now, known, |_| false) {
                dials.push(now);
                d.dialed(now, &target, false);
            }
        }
        // 0, +100, +200, +400, then every 400 ms: never given up.
        assert_eq!(&dials[..5], [0, 100, 300, 700, 1100]);
        assert_eq!(*dials.last().unwrap(), 1900);
        d.dialed(2_000, "n3:7000", true);
        assert_eq!(d.poll_timeout(), None, "a link resets the backoff");
    }
}
