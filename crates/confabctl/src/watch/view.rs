//! What `watch` shows, from two readings of the cluster: no I/O and no clock.
//! The time between the readings comes in as an argument, as does the wall
//! time in the header.
//!
//! Rates are deltas over that time: each member's `turns_total` (from its
//! heartbeat) gives its turns per second; this node's
//! `confab_turn_latency_seconds_bucket` series give the p99 of the turns it
//! answered in the interval (estimated within a bucket as Prometheus's
//! `histogram_quantile` does); `confab_migrations_total` gives the sessions it
//! handed off.

use std::fmt::Write as _;
use std::time::Duration;

use confab_proto::admin::{DrainView, NodeStatus, NodesView};
use serde::Serialize;

/// The histogram of turn latency, in seconds.
const TURN_LATENCY_BUCKET: &str = "confab_turn_latency_seconds_bucket";
/// Sessions handed to another owner, by reason.
const MIGRATIONS_TOTAL: &str = "confab_migrations_total";
/// The member status whose drain `watch` follows.
const DRAINING: &str = "draining";
/// Width of a drain's progress bar, in characters.
const DRAIN_BAR_CHARS: u64 = 20;

/// One reading of the cluster through one node.
pub(crate) struct Sample {
    /// `GET /admin/v1/nodes`.
    pub(crate) nodes: NodesView,
    /// `GET /admin/v1/status`.
    pub(crate) status: NodeStatus,
    /// This node's `/metrics`, or why it could not be read.
    pub(crate) metrics: Result<Counters, String>,
    /// The drain of each member whose status is `draining`, or why it could
    /// not be read.
    pub(crate) drains: Vec<(String, Result<DrainView, String>)>,
}

impl Sample {
    /// The members whose drain to read.
    pub(crate) fn draining(nodes: &NodesView) -> impl Iterator<Item = &str> {
        nodes
            .nodes
            .iter()
            .filter(|m| m.status == DRAINING)
            .map(|m| m.id.as_str())
    }
}

/// The counters `watch` takes from one `/metrics` page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counters {
    /// `confab_turn_latency_seconds_bucket`: (upper bound in s, cumulative
    /// count), summed over any other labels, by rising bound; `+Inf` last.
    latency_buckets: Vec<(f64, f64)>,
    /// `confab_migrations_total`, summed over reasons.
    migrations: f64,
}

impl Counters {
    /// Reads the counters from a Prometheus text page; series it lacks count 0.
    pub(crate) fn parse(page: &str) -> Self {
        let mut latency_buckets: Vec<(f64, f64)> = Vec::new();
        let mut migrations = 0.0;
        for line in page.lines() {
            if let Some(rest) = series(line, TURN_LATENCY_BUCKET)
                && let Some((le, value)) = bucket(rest)
            {
                match latency_buckets.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, count)) => *count += value,
                    None => latency_buckets.push((le, value)),
                }
            } else if let Some(rest) = series(line, MIGRATIONS_TOTAL)
                && let Some(value) = sample_value(rest)
            {
                migrations += value;
            }
        }
        latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            latency_buckets,
            migrations,
        }
    }

    /// Turns answered in all, the `+Inf` bucket.
    fn turns(&self) -> f64 {
        self.latency_buckets.last().map_or(0.0, |(_, count)| *count)
    }

    /// What rose since `before`; a process that restarted in between (its
    /// counters went down) counts from zero.
    fn since(&self, before: &Counters) -> Counters {
        if self.turns() < before.turns() || self.migrations < before.migrations {
            return self.clone();
        }
        let earlier = |le: f64| {
            before
                .latency_buckets
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0.0, |(_, count)| *count)
        };
        Counters {
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|&(le, count)| (le, (count - earlier(le)).max(0.0)))
                .collect(),
            migrations: self.migrations - before.migrations,
        }
    }
}

/// The rest of `line` after the metric `name`, when the line is a sample of it.
fn series<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?;
    rest.starts_with(['{', ' ']).then_some(rest)
}

/// The value of a sample, after its labels: `{a="b"} 12` gives 12.
fn sample_value(rest: &str) -> Option<f64> {
    let after_labels = match rest.strip_prefix('{') {
        Some(labelled) => &labelled[labelled.rfind('}')? + 1..],
        None => rest,
    };
    after_labels.split_whitespace().next()?.parse().ok()
}

/// A histogram bucket's bound and cumulative count: `{le="0.005"} 12`.
fn bucket(rest: &str) -> Option<(f64, f64)> {
    let labels = rest.strip_prefix('{')?;
    let le_at = labels.find("le=\"")? + 4;
    let le_len = labels[le_at..].find('"')?;
    let le = labels[le_at..le_at + le_len].parse().ok()?;
    Some((le, sample_value(rest)?))
}

/// A quantile of a histogram's cumulative buckets, interpolated linearly within
/// its bucket as Prometheus's `histogram_quantile` does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Quantile {
    /// At about this many seconds.
    At(f64),
    /// Above the largest finite bound, this many seconds.
    Above(f64),
}

/// The `q` quantile of cumulative `buckets` (rising bounds, `+Inf` last), or
/// `None` when they hold no observation.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<Quantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let at = buckets.iter().position(|(_, count)| *count >= rank)?;
    let (lower, below) = if at == 0 { (0.0, 0.0) } else { buckets[at - 1] };
    let (upper, count) = buckets[at];
    if upper.is_infinite() {
        return Some(Quantile::Above(lower));
    }
    if count <= below {
        return Some(Quantile::At(upper));
    }
    Some(Quantile::At(
        lower + (upper - lower) * (rank - below) / (count - below),
    ))
}

/// One member's line.
#[derive(Debug, Serialize)]
pub(crate) struct MemberRow {
    id: String,
    status: String,
    connected: bool,
    this_node: bool,
    sessions: Option<u64>,
    inflight_turns: Option<u64>,
    turns_per_s: Option<f64>,
}

/// One drain in progress.
#[derive(Debug, Serialize)]
pub(crate) struct DrainRow {
    node: String,
    /// The drain, or why it could not be read.
    #[serde(flatten)]
    progress: DrainProgress,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum DrainProgress {
    Read {
        state: String,
        sessions_at_start: u64,
        sessions_left: u64,
    },
    Unread {
        error: String,
    },
}

/// What one frame of `watch` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Frame {
    /// The node answering.
    node: String,
    ready: bool,
    ring_epoch: u64,
    dlq_depth: u64,
    members: Vec<MemberRow>,
    /// Sums over the members that reported.
    sessions_total: u64,
    inflight_turns_total: u64,
    turns_per_s_total: Option<f64>,
    /// Seconds between this reading and the one before, when there was one.
    interval_s: Option<f64>,
    /// This node's turns answered in the interval, and their p99.
    turns_in_interval: Option<u64>,
    turn_p99_s: Option<Quantile>,
    /// Sessions this node handed off in the interval, and since it started.
    migrations_in_interval: Option<u64>,
    migrations_total: Option<u64>,
    drains: Vec<DrainRow>,
    /// Parts of the reading that failed (the rest still shows).
    problems: Vec<String>,
}

impl Frame {
    /// The frame for `now`, with rates against `before`, read `elapsed` earlier.
    pub(crate) fn new(now: &Sample, before: Option<(&Sample, Duration)>) -> Self {
        let elapsed_s = before
            .map(|(_, elapsed)| elapsed.as_secs_f64())
            .filter(|s| *s > 0.0);
        let members: Vec<MemberRow> = now
            .nodes
            .nodes
            .iter()
            .map(|member| {
                let earlier = before.and_then(|(sample, _)| {
                    let same = sample.nodes.nodes.iter().find(|m| m.id == member.id)?;
                    same.turns_total
                });
                let turns_per_s = match (member.turns_total, earlier, elapsed_s) {
                    (Some(now), Some(then), Some(s)) => Some(now.saturating_sub(then) as f64 / s),
                    _ => None,
                };
                MemberRow {
                    id: member.id.clone(),
                    status: member.status.clone(),
                    connected: member.connected,
                    this_node: member.this_node,
                    sessions: member.sessions_resident,
                    inflight_turns: member.inflight_turns,
                    turns_per_s,
                }
            })
            .collect();
        let rates: Vec<f64> = members.iter().filter_map(|m| m.turns_per_s).collect();
        let mut problems = Vec::new();
        let (mut turns_in_interval, mut turn_p99_s, mut migrations_in_interval) =
            (None, None, None);
        let mut migrations_total = None;
        match &now.metrics {
            Ok(counters) => {
                migrations_total = Some(counters.migrations as u64);
                if let Some((Ok(earlier), _)) = before.map(|(s, e)| (&s.metrics, e)) {
                    let delta = counters.since(earlier);
                    turns_in_interval = Some(delta.turns() as u64);
                    turn_p99_s = quantile(&delta.latency_buckets, 0.99);
                    migrations_in_interval = Some(delta.migrations as u64);
                }
            }
            Err(e) => problems.push(format!("cannot read /metrics: {e}")),
        }
        let drains = now
            .drains
            .iter()
            .map(|(node, drain)| DrainRow {
                node: node.clone(),
                progress: match drain {
                    Ok(d) => DrainProgress::Read {
                        state: d.state.clone(),
                        sessions_at_start: d.sessions_at_start,
                        sessions_left: d.sessions_left,
                    },
                    Err(e) => DrainProgress::Unread { error: e.clone() },
                },
            })
            .collect();
        Frame {
            node: now.status.node.clone(),
            ready: now.status.ready,
            ring_epoch: now.nodes.epoch,
            dlq_depth: now.status.dlq_depth,
            sessions_total: members.iter().filter_map(|m| m.sessions).sum(),
            inflight_turns_total: members.iter().filter_map(|m| m.inflight_turns).sum(),
            turns_per_s_total: (!rates.is_empty()).then(|| rates.iter().sum()),
            members,
            interval_s: elapsed_s,
            turns_in_interval,
            turn_p99_s,
            migrations_in_interval,
            migrations_total,
            drains,
            problems,
        }
    }

    /// The frame as lines of text, under no header.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "ring epoch {}  members {} ({} up)  {} {}  dlq {}",
                self.ring_epoch,
                self.members.len(),
                self.members.iter().filter(|m| m.status == "up").count(),
                self.node,
                if self.ready { "ready" } else { "NOT READY" },
                self.dlq_depth
            ),
            String::new(),
        ];
        lines.extend(self.member_table().lines().map(str::to_owned));
        lines.push(String::new());
        lines.push(self.latency_line());
        lines.push(self.migrations_line());
        lines.extend(self.drain_lines());
        lines.extend(self.problems.iter().map(|p| format!("warning: {p}")));
        lines
    }

    fn member_table(&self) -> String {
        let dash = || "-".to_owned();
        let count = |n: Option<u64>| n.map_or_else(dash, |n| n.to_string());
        let rate = |r: Option<f64>| r.map_or_else(dash, |r| format!("{r:.1}"));
        let mut table = crate::render::Table::new(&[
            "NODE",
            "STATUS",
            "LINK",
            "SESSIONS",
            "IN FLIGHT",
            "TURNS/S",
            "",
        ]);
        for m in &self.members {
            table.row([
                m.id.clone(),
                m.status.clone(),
                if m.connected { "up" } else { "down" }.to_owned(),
                count(m.sessions),
                count(m.inflight_turns),
                rate(m.turns_per_s),
                if m.this_node { "(this node)" } else { "" }.to_owned(),
            ]);
        }
        table.row([
            "total".to_owned(),
            String::new(),
            String::new(),
            self.sessions_total.to_string(),
            self.inflight_turns_total.to_string(),
            rate(self.turns_per_s_total),
            String::new(),
        ]);
        table.render()
    }

    fn latency_line(&self) -> String {
        let node = &self.node;
        let (Some(turns), Some(interval)) = (self.turns_in_interval, self.interval_s) else {
            return format!("turn p99 on {node}: - (needs two readings)");
        };
        let p99 = match self.turn_p99_s {
            None => return format!("turn p99 on {node}: no turns in the last {interval:.1} s"),
            Some(Quantile::At(s)) => milliseconds(s),
            Some(Quantile::Above(s)) => format!("> {}", milliseconds(s)),
        };
        format!("turn p99 on {node}: {p99} over the last {interval:.1} s ({turns} turns)")
    }

    fn migrations_line(&self) -> String {
        let node = &self.node;
        match (self.migrations_in_interval, self.migrations_total) {
            (Some(recent), Some(total)) => format!(
                "migrations from {node}: {recent} in the last {:.1} s, {total} since it started",
                self.interval_s.unwrap_or_default()
            ),
            (None, Some(total)) => format!("migrations from {node}: {total} since it started"),
            _ => format!("migrations from {node}: -"),
        }
    }

    fn drain_lines(&self) -> Vec<String> {
        if self.drains.is_empty() {
            return vec!["drains: none".to_owned()];
        }
        let mut lines = vec!["drains:".to_owned()];
        for drain in &self.drains {
            let mut line = format!("  {}  ", drain.node);
            match &drain.progress {
                DrainProgress::Read {
                    state,
                    sessions_at_start,
                    sessions_left,
                } => {
                    let moved = sessions_at_start.saturating_sub(*sessions_left);
                    let filled = (moved * DRAIN_BAR_CHARS)
                        .checked_div(*sessions_at_start)
                        .unwrap_or(DRAIN_BAR_CHARS);
                    let _ = write!(
                        line,
                        "{state} [{}{}] {moved}/{sessions_at_start} sessions moved, {sessions_left} left",
                        "=".repeat(filled as usize),
                        " ".repeat((DRAIN_BAR_CHARS - filled) as usize),
                    );
                }
                DrainProgress::Unread { error } => {
                    let _ = write!(line, "cannot read its drain: {error}");
                }
            }
            lines.push(line);
        }
        lines
    }
}

/// Seconds as milliseconds, with the digits that matter.
fn milliseconds(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::admin::{CanaryStatus, MemberView, PolicyStatus};

    const PAGE: &str = "\
# HELP confab_turn_latency_seconds Time from a turn's arrival to its answer.
# TYPE confab_turn_latency_seconds histogram
confab_turn_latency_seconds_bucket{le=\"0.005\"} 10
confab_turn_latency_seconds_bucket{le=\"0.01\"} 90
confab_turn_latency_seconds_bucket{le=\"0.025\"} 100
confab_turn_latency_seconds_bucket{le=\"+Inf\"} 100
confab_turn_latency_seconds_sum 0.7
confab_turn_latency_seconds_count 100
confab_migrations_total{reason=\"ring_change\"} 3
confab_migrations_total{reason=\"drain\"} 4
confab_migration_seconds_bucket{le=\"0.1\"} 7
";

    #[test]
    fn counters_are_read_from_the_page() {
        let counters = Counters::parse(PAGE);
        assert_eq!(
            counters.latency_buckets,
            vec![
                (0.005, 10.0),
                (0.01, 90.0),
                (0.025, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        assert_eq!(counters.migrations, 7.0);
        assert_eq!(Counters::parse("").turns(), 0.0);
    }

    #[test]
    fn the_p99_is_interpolated_within_its_bucket() {
        // 100 turns: rank 99 falls in (0.01, 0.025], 9 of its 10 turns in.
        let p99 = quantile(&Counters::parse(PAGE).latency_buckets, 0.99);
        let Some(Quantile::At(s)) = p99 else {
            panic!("{p99:?}")
        };
        assert!((s - 0.0235).abs() < 1e-9, "{s}");
        // Past the last finite bound: only a floor is known.
        let slow = [(0.01, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(quantile(&slow, 0.99), Some(Quantile::Above(0.01)));
        assert_eq!(quantile(&[(0.01, 0.0), (f64::INFINITY, 0.0)], 0.99), None);
    }

    #[test]
    fn deltas_count_only_the_interval_and_survive_a_restart() {
        let before = Counters::parse(PAGE);
        let after = Counters::parse(&PAGE.replace("} 100", "} 150").replace("} 4", "} 6"));
        let delta = after.since(&before);
        assert_eq!(delta.turns(), 50.0);
        assert_eq!(delta.migrations, 2.0);
        // A restarted node's counters start again from zero.
        let restarted = Counters::parse(&PAGE.replace("} 100", "} 20").replace("} 90", "} 15"));
        assert_eq!(restarted.since(&before).turns(), 20.0);
    }

    fn member(id: &str, status: &str, turns_total: Option<u64>) -> MemberView {
        MemberView {
            id: id.to_owned(),
            status: status.to_owned(),
            vnodes: 64,
            this_node: id == "node-1",
            connected: true,
            sessions_resident: Some(10),
            inflight_turns: Some(1),
            turns_total,
        }
    }

    fn sample(turns: [u64; 2], page: &str) -> Sample {
        let canary = CanaryStatus {
            stable: "v1".to_owned(),
            canary: None,
            tails: vec![],
            canary_percent: 0,
            revision: 1,
        };
        Sample {
            nodes: NodesView {
                epoch: 4,
                nodes: vec![
                    member("node-1", "up", Some(turns[0])),
                    member("node-2", "draining", Some(turns[1])),
                ],
            },
            status: NodeStatus {
                node: "node-1".to_owned(),
                version: "0.1.0".to_owned(),
                ready: true,
                sessions_resident: 10,
                ring_epoch: 4,
                policy: PolicyStatus {
                    flows_dir: "flows".to_owned(),
                    versions: vec![],
                    canary,
                    loaded_ms: 0,
                    last_error: None,
                },
                dlq_depth: 0,
            },
            metrics: Ok(Counters::parse(page)),
            drains: vec![(
                "node-2".to_owned(),
                Ok(DrainView {
                    node: "node-2".to_owned(),
                    state: "draining".to_owned(),
                    sessions_at_start: 10,
                    sessions_left: 5,
                }),
            )],
        }
    }

    #[test]
    fn the_first_frame_shows_counts_and_waits_for_rates() {
        let frame = Frame::new(&sample([100, 50], PAGE), None);
        let text = frame.lines().join("\n");
        assert!(text.contains("ring epoch 4  members 2 (1 up)"), "{text}");
        assert!(text.contains("needs two readings"), "{text}");
        assert!(text.contains("[==========          ] 5/10 sessions moved, 5 left"));
        assert_eq!(frame.turns_per_s_total, None);
        assert_eq!(frame.sessions_total, 20);
    }

    #[test]
    fn rates_are_deltas_over_the_time_between_readings() {
        let before = sample([100, 50], PAGE);
        let now = sample(
            [300, 150],
            &PAGE.replace("} 100", "} 150").replace("} 90", "} 130"),
        );
        let frame = Frame::new(&now, Some((&before, Duration::from_secs(2))));
        assert_eq!(frame.members[0].turns_per_s, Some(100.0));
        assert_eq!(frame.members[1].turns_per_s, Some(50.0));
        assert_eq!(frame.turns_per_s_total, Some(150.0));
        assert_eq!(frame.turns_in_interval, Some(50));
        let text = frame.lines().join("\n");
        assert!(text.contains("over the last 2.0 s (50 turns)"), "{text}");
        assert!(text.contains("migrations from node-1: 0 in the last 2.0 s, 7 since"));
    }
}
