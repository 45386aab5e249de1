//! The human output: one function per admin body, each returning the text to
//! print. Tables are plain columns two spaces apart, as `kubectl get` prints them.

use std::fmt::Write as _;

use confab_proto::admin::{
    CanaryStatus, ClusterStats, DlqList, DlqReplayReport, NodeStatus, NodesView, PolicyStatus,
    PolicyVersionInfo, ReloadReport, RingView, SessionLocation, SessionView,
};

/// Digits of a policy digest shown in tables: enough to tell versions apart.
const DIGEST_SHOWN_CHARS: usize = 12;

/// Columns of text, aligned; the last column is not padded.
pub(crate) struct Table {
    /// Column titles; none for a key/value listing.
    header: Vec<String>,
    /// The cells, row by row.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table under `header` (empty for no header line).
    pub(crate) fn new(header: &[&str]) -> Self {
        let header = header.iter().map(|h| (*h).to_owned()).collect();
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds one row; a cell's line breaks become spaces to keep the row one line.
    pub(crate) fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells = cells.into_iter().map(|c| c.replace(['\n', '\r'], " "));
        self.rows.push(cells.collect());
    }

    /// The table as lines of text, with no trailing newline.
    pub(crate) fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.header)
            .filter(|h| !h.is_empty())
            .chain(&self.rows)
            .collect();
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line.iter()) {
                *width = (*width).max(display_width(cell));
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                text.push_str(cell);
                if i + 1 < line.len() {
                    let pad = widths[i] - display_width(cell) + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }
}

/// Columns a terminal gives `text`: CJK and fullwidth characters take two, as
/// slot values often are (`黑色`).
fn display_width(text: &str) -> usize {
    let wide = |c: char| {
        matches!(c as u32,
            0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1FAFF
            | 0x20000..=0x3FFFD)
    };
    text.chars().map(|c| if wide(c) { 2 } else { 1 }).sum()
}

/// A key/value listing: keys in one column, values in the next.
fn fields(pairs: &[(&str, String)]) -> String {
    let mut table = Table::new(&[]);
    for (key, value) in pairs {
        table.row([(*key).to_owned(), value.clone()]);
    }
    table.render()
}

/// `yes` or `no`.
fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// The value, or `-` when there is none.
fn or_dash(value: Option<&String>) -> String {
    value.map_or_else(|| "-".to_owned(), Clone::clone)
}

/// How long ago `then_ms` was, coarsely: `45s`, `12m`, `3h`, `2d`.
pub(crate) fn age(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The canary split on one line: `stable v1 90%  canary v2 10% (tails 0)`.
pub(crate) fn canary(status: &CanaryStatus) -> String {
    let Some(canary) = &status.canary else {
        return format!("stable {} 100%  no canary", status.stable);
    };
    let tails: Vec<String> = status.tails.iter().map(u8::to_string).collect();
    let canary_percent = status.canary_percent.min(100);
    format!(
        "stable {} {}%  canary {canary} {canary_percent}% (tails {})",
        status.stable,
        100 - canary_percent,
        tails.join(","),
    )
}

/// `status`: one node at a glance.
pub(crate) fn status(status: &NodeStatus) -> String {
    fields(&[
        ("node", status.node.clone()),
        ("version", status.version.clone()),
        ("ready", yes_no(status.ready)),
        ("sessions", status.sessions_resident.to_string()),
        ("ring epoch", status.ring_epoch.to_string()),
        ("dlq depth", status.dlq_depth.to_string()),
        ("policy", canary(&status.policy.canary)),
    ])
}

/// The loaded policy versions, one a row.
fn versions(versions: &[PolicyVersionInfo]) -> String {
    if versions.is_empty() {
        return "no policy versions loaded".to_owned();
    }
    let mut table = Table::new(&["VERSION", "DIGEST", "FLOWS"]);
    for v in versions {
        let digest = v.digest.chars().take(DIGEST_SHOWN_CHARS).collect();
        table.row([v.version.clone(), digest, v.flows.join(",")]);
    }
    table.render()
}

/// `policy status`: where the flows come from, what is loaded and what serves.
pub(crate) fn policy(policy: &PolicyStatus, now_ms: u64) -> String {
    let mut out = fields(&[
        ("flows dir", policy.flows_dir.clone()),
        ("loaded", format!("{} ago", age(now_ms, policy.loaded_ms))),
        ("serving", canary(&policy.canary)),
    ]);
    out.push_str("\n\n");
    out.push_str(&versions(&policy.versions));
    if let Some(error) = &policy.last_error {
        let _ = write!(
            out,
            "\n\nlast reload refused: {error}\nthe previous policy still serves"
        );
    }
    out
}

/// `policy reload` when the files were taken.
pub(crate) fn reload(report: &ReloadReport) -> String {
    format!("policy reloaded\n\n{}", versions(&report.versions))
}

/// `dlq list`: the oldest entries, and how many more wait.
pub(crate) fn audit(list: &confab_proto::admin::AuditList, now_ms: u64) -> String {
    if list.entries.is_empty() {
        return "no admin action recorded yet".to_owned();
    }
    let mut table = Table::new(&["ID", "AGE", "WHO", "NODE", "ACTION", "STATUS", "RESULT"]);
    for e in &list.entries {
        table.row([
            e.id.to_string(),
            age(now_ms, e.at_ms),
            e.who.clone(),
            e.node.clone(),
            e.action.clone(),
            e.status.to_string(),
            e.result.clone(),
        ]);
    }
    table.render()
}

pub(crate) fn keys(status: &confab_proto::admin::KeysStatus) -> String {
    let mut table = Table::new(&[
        "VERSION",
        "CURRENT",
        "MASTER",
        "SNAPSHOTS",
        "EVENTS",
        "CREATED",
    ]);
    for v in &status.versions {
        table.row([
            format!("v{}", v.version),
            if v.current { "yes" } else { "" }.to_owned(),
            v.master.clone(),
            v.snapshots.to_string(),
            v.events.to_string(),
            age(crate::now_ms(), v.created_ms) + " ago",
        ]);
    }
    let mut out = table.render();
    if status.plaintext_snapshots > 0 {
        out.push_str(&format!(
            "\n{} snapshots are still in the plaintext format 1: they move to the current version in the background",
            status.plaintext_snapshots
        ));
    }
    out
}

pub(crate) fn key_versions(versions: &[u32]) -> String {
    versions
        .iter()
        .map(|v| format!("v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn dlq_list(list: &DlqList, now_ms: u64) -> String {
    if list.entries.is_empty() && list.depth == 0 {
        return "the dead-letter queue is empty".to_owned();
    }
    let mut table = Table::new(&["ID", "UID", "SEQ", "ACTION", "ATTEMPTS", "AGE", "REASON"]);
    for e in &list.entries {
        table.row([
            e.id.to_string(),
            e.uid.clone(),
            e.seq.to_string(),
            e.action.clone(),
            e.attempts.to_string(),
            age(now_ms, e.created_ms),
            e.reason.clone(),
        ]);
    }
    let mut out = table.render();
    let shown = list.entries.len() as u64;
    if list.depth > shown {
        let _ = write!(
            out,
            "\n{shown} of {} entries shown (--limit for more)",
            list.depth
        );
    }
    out
}

/// `dlq replay`: each entry's outcome, then what still waits.
pub(crate) fn dlq_replay(report: &DlqReplayReport) -> String {
    if report.outcomes.is_empty() {
        return format!("nothing replayed; {} entries waiting", report.depth);
    }
    let mut table = Table::new(&["ID", "RESULT", "MESSAGE"]);
    for o in &report.outcomes {
        let result = if o.ok { "ok" } else { "failed" };
        table.row([o.id.to_string(), result.to_owned(), o.message.clone()]);
    }
    let failed = report.outcomes.iter().filter(|o| !o.ok).count();
    let replayed = report.outcomes.len() - failed;
    format!(
        "{}\n{replayed} replayed, {failed} failed; {} entries still waiting",
        table.render(),
        report.depth
    )
}

/// `session show`: the session's place and state; slots come masked by the node.
pub(crate) fn session(view: &SessionView) -> String {
    let mut out = fields(&[
        ("uid", view.uid.clone()),
        ("seq", view.seq.to_string()),
        ("owner", view.owner.clone()),
        ("epoch", view.epoch.to_string()),
        ("policy", view.policy.clone()),
        ("intent", or_dash(view.last_intent.as_ref())),
        ("pending action", or_dash(view.pending_action.as_ref())),
    ]);
    out.push_str("\n\n");
    if view.slots.is_empty() {
        out.push_str("no slots");
        return out;
    }
    let mut table = Table::new(&["SLOT", "VALUE"]);
    for (name, value) in &view.slots {
        table.row([name.clone(), value.clone()]);
    }
    out.push_str(&table.render());
    out
}

/// `ring`: every virtual node with its owner, in ring order.
pub(crate) fn ring(view: &RingView) -> String {
    let mut out = fields(&[
        ("epoch", view.epoch.to_string()),
        ("members", view.nodes.join(",")),
        ("vnodes", view.vnodes.len().to_string()),
    ]);
    out.push_str("\n\n");
    let mut table = Table::new(&["POSITION", "NODE", "VNODE"]);
    for vnode in &view.vnodes {
        table.row([
            format!("{:016x}", vnode.position),
            vnode.node.clone(),
            vnode.index.to_string(),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// `nodes`: the members.
pub(crate) fn nodes(view: &NodesView) -> String {
    let mut table = Table::new(&[
        "NODE",
        "STATUS",
        "VNODES",
        "LINK",
        "SESSIONS",
        "IN FLIGHT",
        "",
    ]);
    let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for node in &view.nodes {
        table.row([
            node.id.clone(),
            node.status.clone(),
            node.vnodes.to_string(),
            if node.connected { "up" } else { "down" }.to_owned(),
            or_dash(node.sessions_resident),
            or_dash(node.inflight_turns),
            if node.this_node { "(this node)" } else { "" }.to_owned(),
        ]);
    }
    format!("epoch {}\n\n{}", view.epoch, table.render())
}

/// A share as a percentage with one decimal: `42.9%`.
fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `stats`: per member, then the cluster's totals, the intents and the slots.
pub(crate) fn stats(stats: &ClusterStats) -> String {
    let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut members = Table::new(&["NODE", "STATUS", "SESSIONS", "TURNS/MIN", "TURNS", ""]);
    for node in &stats.nodes {
        let note = match &node.error {
            Some(error) => format!("unreachable: {error}"),
            None if node.id == stats.node => "(this node)".to_owned(),
            None => String::new(),
        };
        members.row([
            node.id.clone(),
            node.status.clone(),
            or_dash(node.sessions_resident),
            or_dash(node.turns_last_minute),
            or_dash(node.turns_total),
            note,
        ]);
    }
    let reached = stats.nodes.len() - stats.unreachable.len();
    members.row([
        "cluster".to_owned(),
        format!("{reached}/{} answered", stats.nodes.len()),
        stats.sessions_resident.to_string(),
        stats.turns_last_minute.to_string(),
        stats.turns_total.to_string(),
        String::new(),
    ]);
    let mut out = format!(
        "cluster stats from {} (ring epoch {}); turns are counted since each node started\n\n{}",
        stats.node,
        stats.ring_epoch,
        members.render()
    );
    out.push_str("\n\n");
    if stats.intents.is_empty() && stats.intents_other == 0 {
        out.push_str("no turn answered yet");
    } else {
        let mut intents = Table::new(&["INTENT", "TURNS", "SHARE"]);
        for intent in &stats.intents {
            intents.row([
                intent.name.clone(),
                intent.count.to_string(),
                percent(intent.share),
            ]);
        }
        if stats.intents_other > 0 {
            let counted = stats.intents.iter().map(|i| i.count).sum::<u64>() + stats.intents_other;
            intents.row([
                "(other)".to_owned(),
                stats.intents_other.to_string(),
                percent(stats.intents_other as f64 / counted as f64),
            ]);
        }
        out.push_str(&intents.render());
    }
    out.push_str("\n\n");
    if stats.slot_fills.is_empty() && stats.slot_fills_other == 0 {
        out.push_str("no slot filled yet");
    } else {
        let mut slots = Table::new(&["SLOT", "FILLS", "PER TURN"]);
        for slot in &stats.slot_fills {
            slots.row([
                slot.name.clone(),
                slot.fills.to_string(),
                percent(slot.per_turn),
            ]);
        }
        if stats.slot_fills_other > 0 {
            slots.row([
                "(other)".to_owned(),
                stats.slot_fills_other.to_string(),
                String::new(),
            ]);
        }
        out.push_str(&slots.render());
    }
    if stats.intents_other > 0 || stats.slot_fills_other > 0 {
        let _ = write!(
            out,
            "\n\n(other): names past the cap of {} distinct names (runtime.max_stats_names)",
            stats.names_max
        );
    }
    out
}

/// `session locate`: the owner of a uid on the ring.
pub(crate) fn locate(location: &SessionLocation) -> String {
    fields(&[
        ("uid", location.uid.clone()),
        ("owner", location.owner.clone()),
        ("epoch", location.epoch.to_string()),
        (
            "vnode",
            format!(
                "{}#{} at {:016x}",
                location.vnode.node, location.vnode.index, location.vnode.position
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(canary: Option<&str>, tails: Vec<u8>) -> CanaryStatus {
        CanaryStatus {
            stable: "v1".to_owned(),
            canary: canary.map(str::to_owned),
            canary_percent: 10 * tails.len() as u8,
            tails,
            revision: 1,
        }
    }

    #[test]
    fn the_canary_line_shows_both_sides_of_the_split() {
        assert_eq!(
            canary(&split(Some("v2"), vec![0])),
            "stable v1 90%  canary v2 10% (tails 0)"
        );
        assert_eq!(
            canary(&split(Some("v2"), vec![0, 1])),
            "stable v1 80%  canary v2 20% (tails 0,1)"
        );
        assert_eq!(canary(&split(None, vec![])), "stable v1 100%  no canary");
    }

    #[test]
    fn tables_align_columns_and_count_wide_characters_twice() {
        let mut table = Table::new(&["SLOT", "VALUE"]);
        table.row(["colour".to_owned(), "黑色".to_owned()]);
        table.row(["颜色".to_owned(), "black".to_owned()]);
        assert_eq!(table.render(), "SLOT    VALUE\ncolour  黑色\n颜色    black");
    }

    #[test]
    fn stats_show_every_member_the_totals_and_the_shares() {
        use confab_proto::admin::{IntentShare, MemberStats, SlotFillRate};
        let member = |id: &str, n: Option<u64>, error: Option<&str>| MemberStats {
            id: id.to_owned(),
            status: "up".to_owned(),
            reachable: error.is_none(),
            error: error.map(str::to_owned),
            sessions_resident: n,
            turns_last_minute: n,
            turns_total: n,
        };
        let stats = ClusterStats {
            node: "node-1".to_owned(),
            ring_epoch: 3,
            deadline_ms: 1000,
            nodes: vec![
                member("node-1", Some(4), None),
                member("node-2", None, Some("no answer within 1000 ms")),
            ],
            unreachable: vec!["node-2".to_owned()],
            sessions_resident: 4,
            turns_last_minute: 4,
            turns_total: 4,
            intents: vec![IntentShare {
                name: "ask_stock".to_owned(),
                count: 3,
                share: 0.75,
            }],
            intents_other: 1,
            slot_fills: vec![SlotFillRate {
                name: "size".to_owned(),
                fills: 2,
                per_turn: 0.5,
            }],
            slot_fills_other: 0,
            names_max: 1,
        };
        let text = stats_text(&stats);
        assert!(
            text.contains("node-1   up            4         4          4      (this node)"),
            "{text}"
        );
        assert!(
            text.contains("unreachable: no answer within 1000 ms"),
            "{text}"
        );
        assert!(
            text.contains("cluster  1/2 answered  4         4          4"),
            "{text}"
        );
        assert!(text.contains("ask_stock  3      75.0%"), "{text}");
        assert!(text.contains("(other)    1      25.0%"), "{text}");
        assert!(text.contains("size  2      50.0%"), "{text}");
        assert!(text.contains("runtime.max_stats_names"), "{text}");
    }

    fn stats_text(stats: &ClusterStats) -> String {
        super::stats(stats)
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(age(59_999, 0), "59s");
        assert_eq!(age(60_000, 0), "1m");
        assert_eq!(age(7_200_000, 0), "2h");
        assert_eq!(age(0, 5_000), "0s");
        assert_eq!(age(3 * 86_400_000, 0), "3d");
    }
}
