//! Transport links between nodes, as ractor_cluster's sessions are in
//! production: a message between two nodes travels only over an open link,
//! a reset closes the link with everything on it, and each node dials, as
//! the core's [`confab_core::links::Dialer`] decides, every member it should be
//! linked to.
//!
//! - A link is opened by a dial that reaches its target: the target runs, is
//!   not paused, and no partition or clog stands between the two (a TCP
//!   handshake needs both directions). Dials take no simulated time.
//! - A link is closed by a crash of either end, by a message lost on it (the
//!   network's loss between nodes stands for a connection reset), and by a
//!   partition that resets: the first message that meets it closes the link.
//!   A closed link's messages still in flight are lost, even if a new link is
//!   opened before they would have arrived.
//! - A *silent* partition (the seed picks, per partition) drops no message and
//!   closes no link: messages wait until it heals, as a stalled TCP connection
//!   holds them, and the link stays open all along. Only the heartbeats'
//!   deadlines tell the nodes that something is wrong.

use super::*;
use confab_core::links::Known;

/// The chance that a partition is silent (its packets dropped, the links
/// stalled open) rather than one that resets the links that meet it.
const SILENT_CHANCE: f64 = 0.5;

/// The key of the link between `a` and `b` (links are symmetric).
fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Whether each of the schedule's partitions is silent, drawn from its own
/// stream so that the other draws of a seed stay as they were.
pub(super) fn draw_silent(seed: u64, faults: usize) -> Vec<bool> {
    let mut rng = Rng::new(seed, 7);
    (0..faults).map(|_| rng.chance(SILENT_CHANCE)).collect()
}

impl World {
    /// The open link between `a` and `b`: its number.
    pub(super) fn link(&self, a: usize, b: usize) -> Option<u64> {
        self.links.get(&pair(a, b)).copied()
    }

    /// Whether `node` has an open link to `other`.
    pub(super) fn linked_to(&self, node: usize, other: usize) -> bool {
        self.link(node, other).is_some()
    }

    fn open_link(&mut self, a: usize, b: usize) {
        self.next_link += 1;
        self.links.insert(pair(a, b), self.next_link);
        self.stats.links_made += 1;
        self.record("link_open", Some(a), -1, b as u64 + 1, self.next_link);
    }

    /// Closes the link between `a` and `b`, if open: whatever is in flight on
    /// it in either direction is lost.
    pub(super) fn close_link(&mut self, a: usize, b: usize) {
        if self.links.remove(&pair(a, b)).is_none() {
            return;
        }
        self.stats.links_reset += 1;
        self.record("link_closed", Some(a), -1, b as u64 + 1, 0);
        for (f, t) in [(a, b), (b, a)] {
            self.link_lost.insert((f, t), self.now);
            // Heartbeats in flight never arrive: they were not due.
            if let Some(due) = self.heartbeats_due.get_mut(&(f, t)) {
                let now = self.now;
                due.retain(|(at, _)| *at < now);
            }
        }
    }

    /// Every link of `node` closes (it crashed).
    pub(super) fn close_links_of(&mut self, node: usize) {
        for other in 0..self.nodes.len() {
            if other != node {
                self.close_link(node, other);
            }
        }
    }

    /// Whether a partition that lets nothing from `from` reach `to` is active
    /// and silent: messages wait for its end, the link stays open. Its end,
    /// the latest of them.
    pub(super) fn stalled_until(&self, from: usize, to: usize) -> Option<u64> {
        self.active_faults
            .iter()
            .filter(|i| self.silent.get(**i).copied().unwrap_or(false))
            .map(|i| &self.schedule.faults[*i])
            .filter(|fault| match &fault.kind {
                FaultKind::Partition { a, b, one_way } => {
                    (a.contains(&from) && b.contains(&to))
                        || (!one_way && b.contains(&from) && a.contains(&to))
                }
                _ => false,
            })
            .map(|fault| fault.until_ms)
            .max()
    }

    /// Whether a dial from `from` reaches `to` now.
    fn reachable(&self, from: usize, to: usize) -> bool {
        let (f, t) = (Endpoint::Node(from), Endpoint::Node(to));
        let target = &self.nodes[to];
        from != to
            && target.life == Life::Running
            && target.paused_until <= self.now
            && !self.cut(f, t)
            && !self.cut(t, f)
            && self.clogged_until(f).is_none()
            && self.clogged_until(t).is_none()
    }

    /// The node's dial tick: it dials whom its dialer names, and the next
    /// tick is set.
    pub(super) fn dial_tick(&mut self, node: usize) {
        let now = self.node_now(node);
        let seeds: Vec<String> = if node == 0 {
            Vec::new()
        } else {
            vec![self.addresses[&self.nodes[0].id].clone()]
        };
        let links = &self.links;
        let n = &mut self.nodes[node];
        let known = Known {
            table: n.membership.table(),
            addresses: &self.addresses,
            seeds: &seeds,
        };
        let due = n.dialer.due(now, known, |id| {
            links.contains_key(&pair(node, node_of(id)))
        });
        for target in due {
            let to = node_of_address(&target);
            let reached = !self.linked_to(node, to) && self.reachable(node, to);
            if reached {
                self.open_link(node, to);
            }
            self.record("dial", Some(node), -1, to as u64 + 1, reached.into());
            let linked = self.linked_to(node, to);
            self.nodes[node].dialer.dialed(now, &target, linked);
        }
        let inc = self.nodes[node].incarnation;
        let at = self.now + self.dial.tick_ms;
        self.push(at, Ev::DialTick { node, inc });
    }

    /// `links-healed`: at the end, every two running members of the table are
    /// linked (every node dials every member it should be linked to, for ever).
    pub(super) fn check_links_healed(&mut self) {
        let table = self.durable.table.clone();
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].life == Life::Running)
            .filter(|n| table.members.contains_key(&self.nodes[*n].id))
            .collect();
        for (i, a) in running.iter().enumerate() {
            for b in &running[i + 1..] {
                if !self.linked_to(*a, *b) {
                    let detail = format!("n{} and n{} are not linked at the end", a + 1, b + 1);
                    self.checker
                        .violate(self.end, "links-healed", Some(*a), detail);
                }
            }
        }
    }
}

/// The node a simulated address names (the address is the node id).
fn node_of_address(address: &str) -> usize {
    node_of(&NodeId::new(address).expect("simulated addresses are node ids"))
}
