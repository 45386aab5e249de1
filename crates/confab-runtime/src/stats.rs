//! `confabctl stats`: the node's running aggregate of its turns, and the
//! cluster-wide sum of every member's, asked by fan-out.
//!
//! - **Per node.** Each session actor, once a commit of its turn is confirmed,
//!   adds what the commit counts for ([`Counted`]) to the node's
//!   [`TurnStats`] (one mutex, held for a few additions per turn). Resident
//!   sessions are the supervisor's own count. Nothing is ever computed by
//!   walking the sessions, and nothing is read from a store: the answer costs
//!   the same at 10 or 100,000 sessions.
//! - **Cluster-wide.** The node asked ([`Runtime::cluster_stats`]) asks every
//!   other member of the member table for its aggregate over its peer actor
//!   (`PeerMsg::Stats`), all at once, each with the same deadline, and adds up
//!   the answers ([`merge`]). A member that does not answer in time, or that
//!   this node has no link to, is listed as unreachable: its figures are
//!   missing from the totals, and the answer says so.
//!
//! Every list is sorted (members by id, names by count, most first, then by
//! name), so two answers over the same counts are equal.

use crate::Runtime;
use crate::wire::{PeerMsg, StatsAsk, Wire};
use confab_core::NodeId;
use confab_core::stats::{Counted, NameCounts, TurnStats};
use confab_proto::admin::{
    ClusterStats, IntentShare, MemberStats, NameCount, NodeStats, SlotFillRate,
};
use ractor::rpc::CallResult;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// How long the cluster-wide sum waits for each member when not told.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(1);
/// The longest deadline a caller may ask for.
pub const DEADLINE_MAX: Duration = Duration::from_secs(10);

/// The node's aggregate and the clock its times are read from.
pub(crate) struct StatsCell {
    /// The aggregate, added to by every session actor.
    aggregate: Mutex<TurnStats>,
    /// Its clock: monotonic, started with the node (a wall clock stepped back
    /// would empty the minute window).
    started: Instant,
    /// When it started, ms since the Unix epoch: for people.
    since_ms: u64,
}

impl StatsCell {
    /// An empty aggregate keeping at most `names_max` names per map.
    pub(crate) fn new(names_max: usize) -> Self {
        Self {
            aggregate: Mutex::new(TurnStats::new(names_max)),
            started: Instant::now(),
            since_ms: crate::now_ms(),
        }
    }

    /// Adds what a confirmed commit counts for.
    pub(crate) fn add(&self, counted: &Counted) {
        if counted.is_empty() {
            return;
        }
        let mut aggregate = self.aggregate.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: the window sees its times in order.
        let now_ms = self.now_ms();
        aggregate.add(now_ms, counted);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The aggregate as the admin API shows it.
    fn view(&self, node: &NodeId, sessions_resident: u64) -> NodeStats {
        let aggregate = self.aggregate.lock().unwrap_or_else(|e| e.into_inner());
        let now_ms = self.now_ms();
        let intents = aggregate.intents();
        let slot_fills = aggregate.slot_fills();
        NodeStats {
            node: node.to_string(),
            sessions_resident,
            turns_last_minute: aggregate.turns_last_minute(now_ms),
            turns_total: aggregate.turns_total(),
            intents: ranked(intents.iter().map(|(n, c)| (n.to_owned(), c))),
            intents_other: intents.other(),
            slot_fills: ranked(slot_fills.iter().map(|(n, c)| (n.to_owned(), c))),
            slot_fills_other: slot_fills.other(),
            names_max: names_max(intents),
            since_ms: self.since_ms,
        }
    }
}

fn names_max(counts: &NameCounts) -> u64 {
    u64::try_from(counts.names_max()).unwrap_or(u64::MAX)
}

/// Names by count, most first, then by name.
fn ranked(counts: impl IntoIterator<Item = (String, u64)>) -> Vec<NameCount> {
    let mut ranked: Vec<NameCount> = counts
        .into_iter()
        .map(|(name, count)| NameCount { name, count })
        .collect();
    ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    ranked
}

/// One member as the fan-out found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAnswer {
    /// The member.
    pub id: String,
    /// Its status in the member table.
    pub status: String,
    /// Its aggregate, or why there is none.
    pub stats: Result<NodeStats, String>,
}

/// Adds up the members' aggregates: the answer of `GET /admin/v1/stats`.
/// Names past `names_max` (the fewest turns first, then the last by name) go
/// to `other`.
pub fn merge(
    node: &str,
    ring_epoch: u64,
    deadline: Duration,
    names_max: usize,
    mut answers: Vec<MemberAnswer>,
) -> ClusterStats {
    answers.sort_by(|a, b| a.id.cmp(&b.id));
    let mut intents: BTreeMap<String, u64> = BTreeMap::new();
    let mut slot_fills: BTreeMap<String, u64> = BTreeMap::new();
    let mut stats = ClusterStats {
        node: node.to_owned(),
        ring_epoch,
        deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        nodes: Vec::with_capacity(answers.len()),
        unreachable: Vec::new(),
        sessions_resident: 0,
        turns_last_minute: 0,
        turns_total: 0,
        intents: Vec::new(),
        intents_other: 0,
        slot_fills: Vec::new(),
        slot_fills_other: 0,
        names_max: u64::try_from(names_max).unwrap_or(u64::MAX),
    };
    for answer in answers {
        let member = match answer.stats {
            Ok(member) => {
                stats.sessions_resident += member.sessions_resident;
                stats.turns_last_minute += member.turns_last_minute;
                stats.turns_total += member.turns_total;
                stats.intents_other += member.intents_other;
                stats.slot_fills_other += member.slot_fills_other;
                for NameCount { name, count } in member.intents {
                    *intents.entry(name).or_default() += count;
                }
                for NameCount { name, count } in member.slot_fills {
                    *slot_fills.entry(name).or_default() += count;
                }
                MemberStats {
                    id: answer.id,
                    status: answer.status,
                    reachable: true,
                    error: None,
                    sessions_resident: Some(member.sessions_resident),
                    turns_last_minute: Some(member.turns_last_minute),
                    turns_total: Some(member.turns_total),
                }
            }
            Err(error) => {
                stats.unreachable.push(answer.id.clone());
                MemberStats {
                    id: answer.id,
                    status: answer.status,
                    reachable: false,
                    error: Some(error),
                    sessions_resident: None,
                    turns_last_minute: None,
                    turns_total: None,
                }
            }
        };
        stats.nodes.push(member);
    }
    let (intents, cut) = capped(intents, names_max);
    stats.intents_other += cut;
    let (slot_fills, cut) = capped(slot_fills, names_max);
    stats.slot_fills_other += cut;
    let intents_counted = intents.iter().map(|n| n.count).sum::<u64>() + stats.intents_other;
    stats.intents = intents
        .into_iter()
        .map(|n| IntentShare {
            share: ratio(n.count, intents_counted),
            name: n.name,
            count: n.count,
        })
        .collect();
    let turns = stats.turns_total;
    stats.slot_fills = slot_fills
        .into_iter()
        .map(|n| SlotFillRate {
            per_turn: ratio(n.count, turns),
            name: n.name,
            fills: n.count,
        })
        .collect();
    stats
}

/// The `names_max` names with the most counts, ranked, and what the others add up to.
fn capped(counts: BTreeMap<String, u64>, names_max: usize) -> (Vec<NameCount>, u64) {
    let mut ranked = ranked(counts);
    let cut = ranked
        .split_off(names_max.min(ranked.len()))
        .iter()
        .map(|n| n.count)
        .sum();
    (ranked, cut)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64
}

impl Runtime {
    /// This node's own aggregate: what `GET /admin/v1/stats/local` answers and
    /// what a peer's `PeerMsg::Stats` gets.
    pub fn local_stats(&self) -> NodeStats {
        let resident = self.load().sessions_resident;
        self.shared.stats.view(self.node_id(), resident)
    }

    /// The cluster's aggregate: this node's own, and every other member's,
    /// asked in parallel, each within `deadline`.
    pub async fn cluster_stats(&self, deadline: Duration) -> ClusterStats {
        let me = self.node_id().clone();
        let status_name = |status: confab_core::membership::Status| {
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let mut members: BTreeMap<NodeId, String> = match self.members() {
            Some(table) => table
                .members
                .iter()
                .map(|(id, status)| (id.clone(), status_name(*status)))
                .collect(),
            None => self
                .ring()
                .members()
                .map(|id| (id.clone(), "up".to_owned()))
                .collect(),
        };
        // The node asked answers for itself even before the table lists it.
        members
            .entry(me.clone())
            .or_insert_with(|| "joining".to_owned());
        let mut asks = tokio::task::JoinSet::new();
        let mut asked = BTreeMap::new();
        let mut answers = Vec::with_capacity(members.len());
        for (id, status) in members {
            if id == me {
                answers.push(MemberAnswer {
                    id: id.to_string(),
                    status,
                    stats: Ok(self.local_stats()),
                });
                continue;
            }
            let Some(peer) = self.peer(&id) else {
                answers.push(MemberAnswer {
                    stats: Err(format!("{me} has no link to it")),
                    id: id.to_string(),
                    status,
                });
                continue;
            };
            asked.insert(id.to_string(), status.clone());
            asks.spawn(async move {
                let call = peer.call(
                    |port| PeerMsg::Stats(Wire(StatsAsk::default()), port),
                    Some(deadline),
                );
                let stats = match call.await {
                    Ok(CallResult::Success(Wire(stats))) => Ok(stats),
                    Ok(CallResult::Timeout) => {
                        Err(format!("no answer within {} ms", deadline.as_millis()))
                    }
                    Ok(CallResult::SenderError) | Err(_) => {
                        Err("its link closed before it answered".to_owned())
                    }
                };
                MemberAnswer {
                    id: id.to_string(),
                    status,
                    stats,
                }
            });
        }
        while let Some(done) = asks.join_next().await {
            match done {
                Ok(answer) => {
                    asked.remove(&answer.id);
                    answers.push(answer);
                }
                Err(e) => tracing::error!(error = %e, "a stats ask failed"),
            }
        }
        // An ask that failed is listed, never dropped.
        for (id, status) in asked {
            answers.push(MemberAnswer {
                id,
                status,
                stats: Err("the ask failed on this node (see its log)".to_owned()),
            });
        }
        merge(
            me.as_str(),
            self.epoch().0,
            deadline,
            self.shared.config.stats_names_max,
            answers,
        )
    }
}
