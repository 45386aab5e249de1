//! Draws a [`Timeline`] as one standalone SVG document, for testers to look
//! at in a browser instead of reading logs.
//!
//! Layout, top to bottom: a title line and a migration summary, the legend,
//! the time axis, a lane of epoch labels, a lane for violations that name no
//! node, one lane per fault, then one row per node (its state bar over a strip
//! of the migrations into it, binned by time), the time axis again, the
//! "faults stop" label, and the first violations as text. Epoch lines, fault
//! bands and the "faults stop" line cross the node rows; hovering a mark shows
//! its details.
//!
//! The output depends only on the [`Timeline`]: the same run gives the same
//! bytes.

use std::fmt::{self, Write};

use super::{EpochMark, FaultMark, MigrationMark, NodeState, Span, Timeline, ViolationMark};

/// Left margin, for the row labels.
const LEFT: f64 = 90.0;
/// Width of the plot area, whatever the run's length.
const PLOT_W: f64 = 1400.0;
/// Right margin.
const RIGHT: f64 = 40.0;
/// Width of the document.
const WIDTH: f64 = LEFT + PLOT_W + RIGHT;
/// Baseline of the title line.
const TITLE_Y: f64 = 24.0;
/// Baseline of the migration summary.
const SUMMARY_Y: f64 = 44.0;
/// Baseline of the legend.
const LEGEND_Y: f64 = 68.0;
/// The top time axis.
const AXIS_TOP_Y: f64 = 100.0;
/// Baseline of the epoch labels.
const EPOCH_LABEL_Y: f64 = 114.0;
/// Least distance (px) between two epoch labels; a closer epoch keeps only
/// its line and tooltip.
const EPOCH_LABEL_GAP: f64 = 24.0;
/// Middle of the lane for violations that name no node.
const VIOLATION_LANE_Y: f64 = 127.0;
/// Top of the first fault lane.
const FAULT_LANE_TOP: f64 = 138.0;
/// Height of one fault lane.
const FAULT_LANE_H: f64 = 15.0;
/// Height of one node row: state bar, migration strips, gap.
const ROW_PITCH: f64 = 36.0;
/// Height of a state bar.
const BAR_H: f64 = 18.0;
/// Height of the strip of finished migrations.
const FINISHED_H: f64 = 7.0;
/// Height of the strip of unfinished migrations (under the finished one).
const UNFINISHED_H: f64 = 5.0;
/// Number of time bins for migrations.
const MIGRATION_BINS: usize = 200;
/// Width of one migration bin.
const CELL_W: f64 = PLOT_W / MIGRATION_BINS as f64;
/// Most ticks on the time axis (plus the one at 0).
const MAX_TICKS: u64 = 20;
/// From the bottom of the rows to the violation list's first baseline.
const LIST_GAP: f64 = 60.0;
/// Height of one line of the violation list.
const LIST_LINE_H: f64 = 16.0;
/// How many violations the list shows.
const LISTED_VIOLATIONS: usize = 20;
/// Longest violation text the list shows (chars); the tooltip has it all.
const LISTED_TEXT_CHARS: usize = 200;

const TEXT_COLOR: &str = "#212529";
const MUTED_COLOR: &str = "#868e96";
const AXIS_COLOR: &str = "#495057";
const GRID_COLOR: &str = "#dee2e6";
const EPOCH_COLOR: &str = "#1864ab";
const FAULT_COLOR: &str = "#d6336c";
const MIGRATION_COLOR: &str = "#1c7ed6";
const UNFINISHED_COLOR: &str = "#e03131";
const VIOLATION_COLOR: &str = "#e03131";
const STOP_COLOR: &str = "#212529";
const LIVENESS_COLOR: &str = "#b2f2bb";
const OK_COLOR: &str = "#2b8a3e";

/// Every state, in legend order.
const STATES: [NodeState; 7] = [
    NodeState::Up,
    NodeState::Joining,
    NodeState::Draining,
    NodeState::Down,
    NodeState::Crashed,
    NodeState::Paused,
    NodeState::Off,
];

/// Draws `timeline` as a complete, standalone SVG document (no external
/// styles, scripts or fonts), ending with a newline.
///
/// One row per node shows its state over time, with the migrations into it
/// binned underneath; epochs are dashed vertical lines, faults are bands over
/// the rows they hit (and one labelled lane each above the rows), violations
/// are red crosses, and the end of the faults is a solid line. Every mark has
/// a tooltip. The same timeline always gives the same string.
#[must_use]
pub fn render(timeline: &Timeline) -> String {
    let mut out = String::new();
    document(&mut out, timeline).expect("writing into a String cannot fail");
    out
}

/// Where things go: the time scale and the vertical positions that depend
/// on the timeline.
struct Geometry {
    /// The time the plot's right edge stands for (at least 1 ms).
    total_ms: u64,
    /// Top of the first node row.
    rows_top: f64,
    /// Bottom of the last node row.
    rows_bottom: f64,
    /// Height of the document.
    height: f64,
}

impl Geometry {
    fn new(t: &Timeline) -> Self {
        let total_ms = run_length(t).max(1);
        let rows_top = FAULT_LANE_TOP + t.faults.len() as f64 * FAULT_LANE_H + 8.0;
        let rows_bottom = rows_top + t.nodes.len() as f64 * ROW_PITCH;
        let listed = t.violations.len().min(LISTED_VIOLATIONS);
        let list_lines = 1 + listed + usize::from(t.violations.len() > LISTED_VIOLATIONS);
        let height = rows_bottom + LIST_GAP + list_lines as f64 * LIST_LINE_H;
        Self {
            total_ms,
            rows_top,
            rows_bottom,
            height,
        }
    }

    /// The x of a moment.
    fn x(&self, ms: u64) -> f64 {
        LEFT + PLOT_W * (ms.min(self.total_ms) as f64 / self.total_ms as f64)
    }

    /// The top of a node's row.
    fn row_y(&self, node: usize) -> f64 {
        self.rows_top + node as f64 * ROW_PITCH
    }

    /// The baseline of the violation list's heading.
    fn list_top(&self) -> f64 {
        self.rows_bottom + LIST_GAP
    }

    /// The migration bin a moment falls in.
    fn bin_of(&self, ms: u64) -> usize {
        let bin =
            u128::from(ms.min(self.total_ms)) * MIGRATION_BINS as u128 / u128::from(self.total_ms);
        usize::try_from(bin).map_or(MIGRATION_BINS - 1, |bin| bin.min(MIGRATION_BINS - 1))
    }

    /// When a migration bin starts (`MIGRATION_BINS` gives the end of the run).
    fn bin_start_ms(&self, bin: usize) -> u64 {
        let ms = u128::from(self.total_ms) * bin as u128 / MIGRATION_BINS as u128;
        u64::try_from(ms).unwrap_or(self.total_ms)
    }
}

/// The latest moment anything in the timeline names.
fn run_length(t: &Timeline) -> u64 {
    let spans = t.spans.iter().map(|s| s.to_ms.max(s.from_ms));
    let epochs = t.epochs.iter().map(|e| e.at_ms);
    let faults = t.faults.iter().map(|f| f.to_ms.max(f.from_ms));
    let migrations = t
        .migrations
        .iter()
        .map(|m| m.end_ms.unwrap_or(m.start_ms).max(m.start_ms));
    let violations = t.violations.iter().map(|v| v.at_ms);
    [t.end_ms, t.faults_end_ms]
        .into_iter()
        .chain(spans)
        .chain(epochs)
        .chain(faults)
        .chain(migrations)
        .chain(violations)
        .max()
        .unwrap_or(0)
}

/// The whole document, drawn back to front.
fn document(out: &mut String, t: &Timeline) -> fmt::Result {
    let g = Geometry::new(t);
    let height = g.height;
    writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="12" fill="{TEXT_COLOR}">"##
    )?;
    writeln!(
        out,
        "<title>{}</title>",
        esc(&format!("{} (seed {})", scenario_name(t), t.seed))
    )?;
    writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH:.0}" height="{height:.0}" fill="#ffffff"/>"##
    )?;
    header(out, t)?;
    legend(out)?;
    rows(out, t, &g)?;
    liveness(out, t, &g)?;
    grid(out, &g)?;
    for span in &t.spans {
        span_bar(out, t, &g, span)?;
    }
    migrations(out, t, &g)?;
    faults(out, t, &g)?;
    epochs(out, t, &g)?;
    faults_stop(out, t, &g)?;
    violations(out, t, &g)?;
    axes(out, &g)?;
    violation_list(out, t, &g)?;
    writeln!(out, "</svg>")
}

/// The title line and the migration summary.
fn header(out: &mut String, t: &Timeline) -> fmt::Result {
    let title = format!(
        "{} | seed {} | {} s | {} nodes, {} epochs, {} faults, {} migrations, {} violations",
        scenario_name(t),
        t.seed,
        secs(t.end_ms),
        t.nodes.len(),
        t.epochs.len(),
        t.faults.len(),
        t.migrations.len(),
        t.violations.len(),
    );
    let color = if t.violations.is_empty() {
        TEXT_COLOR
    } else {
        VIOLATION_COLOR
    };
    writeln!(
        out,
        r##"<text x="10" y="{TITLE_Y:.0}" font-size="16" font-weight="bold" fill="{color}">{}</text>"##,
        esc(&title)
    )?;
    writeln!(
        out,
        r##"<text x="10" y="{SUMMARY_Y:.0}" fill="{AXIS_COLOR}">{}</text>"##,
        esc(&migration_summary(&t.migrations))
    )
}

/// The scenario's name, or a placeholder.
fn scenario_name(t: &Timeline) -> &str {
    if t.scenario.is_empty() {
        "(unnamed scenario)"
    } else {
        t.scenario.as_str()
    }
}

/// "migrations: N (F finished, U unfinished); duration p50 .., p99 .., max ..".
fn migration_summary(migrations: &[MigrationMark]) -> String {
    if migrations.is_empty() {
        return "migrations: none".to_owned();
    }
    let mut durations: Vec<u64> = migrations
        .iter()
        .filter_map(|m| m.end_ms.map(|end| end.saturating_sub(m.start_ms)))
        .collect();
    durations.sort_unstable();
    let unfinished = migrations.len() - durations.len();
    let percentiles = match (
        percentile(&durations, 50),
        percentile(&durations, 99),
        durations.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => {
            format!("; duration p50 {p50} ms, p99 {p99} ms, max {max} ms")
        }
        _ => String::new(),
    };
    format!(
        "migrations: {} ({} finished, {unfinished} unfinished){percentiles}",
        migrations.len(),
        durations.len()
    )
}

/// The `p`th percentile (nearest rank) of sorted values; `None` if empty.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// What a legend entry shows.
enum Sample {
    /// A filled box: color, opacity.
    Fill(&'static str, f64),
    /// A dashed vertical line.
    Dashed(&'static str),
    /// A solid vertical line.
    Solid(&'static str),
    /// A violation's cross.
    Cross,
}

/// The legend: one entry per state, then the marks.
fn legend(out: &mut String) -> fmt::Result {
    let mut items: Vec<(Sample, &str)> = STATES
        .iter()
        .map(|&state| {
            let color = state_color(state).unwrap_or("#ffffff");
            (Sample::Fill(color, 1.0), state_name(state))
        })
        .collect();
    items.extend([
        (Sample::Dashed(EPOCH_COLOR), "epoch"),
        (Sample::Fill(FAULT_COLOR, 0.4), "fault"),
        (Sample::Fill(MIGRATION_COLOR, 0.8), "migrations in"),
        (Sample::Fill(UNFINISHED_COLOR, 0.8), "unfinished"),
        (Sample::Cross, "violation"),
        (Sample::Solid(STOP_COLOR), "faults stop"),
        (Sample::Fill(LIVENESS_COLOR, 0.6), "liveness phase"),
    ]);
    let mut x = 10.0_f64;
    for (sample, label) in items {
        legend_sample(out, x, &sample)?;
        let text_x = x + 18.0;
        writeln!(
            out,
            r##"<text x="{text_x:.1}" y="{LEGEND_Y:.1}">{}</text>"##,
            esc(label)
        )?;
        x = text_x + label.chars().count() as f64 * 7.0 + 16.0;
    }
    Ok(())
}

/// One legend sample, 14 px wide, starting at `x`.
fn legend_sample(out: &mut String, x: f64, sample: &Sample) -> fmt::Result {
    let top = LEGEND_Y - 10.0;
    let bottom = LEGEND_Y + 2.0;
    let mid_x = x + 7.0;
    match *sample {
        Sample::Fill(color, opacity) => {
            let y = LEGEND_Y - 9.0;
            writeln!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="14" height="10" fill="{color}" fill-opacity="{opacity:.2}" stroke="{MUTED_COLOR}" stroke-width="0.5"/>"##
            )
        }
        Sample::Dashed(color) => writeln!(
            out,
            r##"<line x1="{mid_x:.1}" y1="{top:.1}" x2="{mid_x:.1}" y2="{bottom:.1}" stroke="{color}" stroke-dasharray="3 2"/>"##
        ),
        Sample::Solid(color) => writeln!(
            out,
            r##"<line x1="{mid_x:.1}" y1="{top:.1}" x2="{mid_x:.1}" y2="{bottom:.1}" stroke="{color}" stroke-width="2"/>"##
        ),
        Sample::Cross => {
            let path = cross_path(mid_x, LEGEND_Y - 4.0);
            writeln!(
                out,
                r##"<path d="{path}" stroke="{VIOLATION_COLOR}" stroke-width="2.5" stroke-linecap="round"/>"##
            )
        }
    }
}

/// A state's name, as shown.
fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Off => "off",
        NodeState::Joining => "joining",
        NodeState::Up => "up",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
        NodeState::Crashed => "crashed",
        NodeState::Paused => "paused",
    }
}

/// A state's bar color; `None`: no bar (the row's background shows).
fn state_color(state: NodeState) -> Option<&'static str> {
    match state {
        NodeState::Off => None,
        NodeState::Joining => Some("#74c0fc"),
        NodeState::Up => Some("#2f9e44"),
        NodeState::Draining => Some("#f76707"),
        NodeState::Down => Some("#adb5bd"),
        NodeState::Crashed => Some("#5c0011"),
        NodeState::Paused => Some("#9c36b5"),
    }
}

/// The rows' backgrounds and labels.
fn rows(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    let label_x = LEFT - 8.0;
    let height = ROW_PITCH - 2.0;
    for (node, name) in t.nodes.iter().enumerate() {
        let y = g.row_y(node);
        let fill = if node % 2 == 0 { "#f8f9fa" } else { "#eef0f2" };
        let name_y = y + BAR_H - 2.0;
        let strip_y = y + BAR_H + 4.0 + FINISHED_H + 1.0;
        writeln!(
            out,
            r##"<rect x="{LEFT:.1}" y="{y:.1}" width="{PLOT_W:.1}" height="{height:.1}" fill="{fill}"/>"##
        )?;
        writeln!(
            out,
            r##"<text x="{label_x:.1}" y="{name_y:.1}" text-anchor="end" font-weight="bold">{}</text>"##,
            esc(name)
        )?;
        writeln!(
            out,
            r##"<text x="{label_x:.1}" y="{strip_y:.1}" text-anchor="end" font-size="9" fill="{MUTED_COLOR}">migr. in</text>"##
        )?;
    }
    Ok(())
}

/// A faint tint over the rows after the faults stopped.
fn liveness(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    if t.faults_end_ms == 0 || t.faults_end_ms >= g.total_ms {
        return Ok(());
    }
    let x = g.x(t.faults_end_ms);
    let width = LEFT + PLOT_W - x;
    let height = g.rows_bottom - AXIS_TOP_Y;
    writeln!(
        out,
        r##"<rect x="{x:.1}" y="{AXIS_TOP_Y:.1}" width="{width:.1}" height="{height:.1}" fill="{LIVENESS_COLOR}" fill-opacity="0.3" pointer-events="none"/>"##
    )
}

/// Faint vertical lines at the ticks.
fn grid(out: &mut String, g: &Geometry) -> fmt::Result {
    let bottom = g.rows_bottom;
    let (_, marks) = ticks(g.total_ms);
    for ms in marks {
        let x = g.x(ms);
        writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{AXIS_TOP_Y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{GRID_COLOR}" stroke-width="0.5"/>"##
        )?;
    }
    Ok(())
}

/// One span as a bar on its node's row.
fn span_bar(out: &mut String, t: &Timeline, g: &Geometry, span: &Span) -> fmt::Result {
    let Some(color) = state_color(span.state) else {
        return Ok(());
    };
    let Some(name) = t.nodes.get(span.node) else {
        return Ok(());
    };
    if span.to_ms <= span.from_ms {
        return Ok(());
    }
    let x = g.x(span.from_ms);
    let width = (g.x(span.to_ms) - x).max(0.5);
    let y = g.row_y(span.node) + 2.0;
    let tip = format!(
        "{name} {}: {} s to {} s ({} s)",
        state_name(span.state),
        secs(span.from_ms),
        secs(span.to_ms),
        secs(span.to_ms - span.from_ms)
    );
    writeln!(
        out,
        r##"<rect class="span" x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{BAR_H:.1}" fill="{color}"><title>{}</title></rect>"##,
        esc(&tip)
    )
}

/// Migrations into one node within one time bin.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    /// How many were served.
    finished: usize,
    /// How many were never served within the run.
    unfinished: usize,
    /// The longest of the finished ones.
    longest_ms: u64,
}

/// Migrations binned by their start, per destination node.
fn migration_bins(t: &Timeline, g: &Geometry) -> Vec<Vec<Bin>> {
    let mut bins = vec![vec![Bin::default(); MIGRATION_BINS]; t.nodes.len()];
    for migration in &t.migrations {
        let Some(row) = bins.get_mut(migration.to) else {
            continue;
        };
        let bin = &mut row[g.bin_of(migration.start_ms)];
        match migration.end_ms {
            Some(end) => {
                bin.finished += 1;
                bin.longest_ms = bin.longest_ms.max(end.saturating_sub(migration.start_ms));
            }
            None => bin.unfinished += 1,
        }
    }
    bins
}

/// The migration strips under each row: one cell per non-empty bin, more
/// opaque for more migrations; unfinished ones in red underneath.
fn migrations(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    let bins = migration_bins(t, g);
    let all = || bins.iter().flatten();
    let peak_finished = all().map(|b| b.finished).max().unwrap_or(0).max(1);
    let peak_unfinished = all().map(|b| b.unfinished).max().unwrap_or(0).max(1);
    for (node, row) in bins.iter().enumerate() {
        let name = node_name(&t.nodes, node);
        let finished_y = g.row_y(node) + BAR_H + 4.0;
        let unfinished_y = finished_y + FINISHED_H;
        for (index, bin) in row.iter().enumerate() {
            if bin.finished == 0 && bin.unfinished == 0 {
                continue;
            }
            let x = LEFT + CELL_W * index as f64;
            let from = secs(g.bin_start_ms(index));
            let to = secs(g.bin_start_ms(index + 1));
            if bin.finished > 0 {
                let n = bin.finished;
                let longest = bin.longest_ms;
                let tip = format!(
                    "{n} {} to {name} between {from} s and {to} s, max duration {longest} ms",
                    plural(n, "migration")
                );
                let opacity = share(n, peak_finished);
                cell(
                    out,
                    x,
                    finished_y,
                    FINISHED_H,
                    MIGRATION_COLOR,
                    opacity,
                    &tip,
                )?;
            }
            if bin.unfinished > 0 {
                let n = bin.unfinished;
                let tip = format!(
                    "{n} unfinished {} to {name} started between {from} s and {to} s, never served within the run",
                    plural(n, "migration")
                );
                let opacity = share(n, peak_unfinished);
                cell(
                    out,
                    x,
                    unfinished_y,
                    UNFINISHED_H,
                    UNFINISHED_COLOR,
                    opacity,
                    &tip,
                )?;
            }
        }
    }
    Ok(())
}

/// An opacity for `n` out of a peak: faint but visible for 1, opaque at the peak.
fn share(n: usize, peak: usize) -> f64 {
    0.3 + 0.7 * (n as f64 / peak.max(1) as f64)
}

/// One migration cell with its tooltip.
fn cell(
    out: &mut String,
    x: f64,
    y: f64,
    height: f64,
    color: &str,
    opacity: f64,
    tip: &str,
) -> fmt::Result {
    writeln!(
        out,
        r##"<rect class="migrations" x="{x:.1}" y="{y:.1}" width="{CELL_W:.1}" height="{height:.1}" fill="{color}" fill-opacity="{opacity:.2}"><title>{}</title></rect>"##,
        esc(tip)
    )
}

/// The fault lanes (one per fault, labelled) and the bands over the rows.
fn faults(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    if !t.faults.is_empty() {
        let x = LEFT - 8.0;
        let y = FAULT_LANE_TOP + 11.0;
        writeln!(
            out,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="end" fill="{FAULT_COLOR}">faults</text>"##
        )?;
    }
    for (lane, fault) in t.faults.iter().enumerate() {
        fault_mark(out, t, g, lane, fault)?;
    }
    Ok(())
}

/// One fault: its bands over the rows, its bar and label in its lane.
fn fault_mark(
    out: &mut String,
    t: &Timeline,
    g: &Geometry,
    lane: usize,
    fault: &FaultMark,
) -> fmt::Result {
    let x = g.x(fault.from_ms);
    let width = (g.x(fault.to_ms) - x).max(2.0);
    fault_bands(out, g, t.nodes.len(), x, width, &fault.nodes)?;

    let label = format!("#{} {}", fault.index, fault.label);
    let hits = if fault.nodes.is_empty() {
        "the stores or the whole network".to_owned()
    } else {
        names(&t.nodes, &fault.nodes)
    };
    let tip = format!(
        "{label}: {} s to {} s; hits {hits}",
        secs(fault.from_ms),
        secs(fault.to_ms)
    );
    let top = FAULT_LANE_TOP + lane as f64 * FAULT_LANE_H;
    let bar_y = top + 2.0;
    let text_y = top + 11.0;
    let (text_x, anchor) = if x > LEFT + PLOT_W * 0.7 {
        (x - 4.0, "end")
    } else {
        (x + width + 4.0, "start")
    };
    writeln!(out, r##"<g class="fault"><title>{}</title>"##, esc(&tip))?;
    writeln!(
        out,
        r##"<rect x="{x:.1}" y="{bar_y:.1}" width="{width:.1}" height="10" fill="{FAULT_COLOR}" fill-opacity="0.6"/>"##
    )?;
    writeln!(
        out,
        r##"<text x="{text_x:.1}" y="{text_y:.1}" text-anchor="{anchor}" font-size="11" fill="{FAULT_COLOR}">{}</text>"##,
        esc(&label)
    )?;
    writeln!(out, "</g>")
}

/// A fault's translucent bands: over the rows it hits, or over all rows.
fn fault_bands(
    out: &mut String,
    g: &Geometry,
    node_count: usize,
    x: f64,
    width: f64,
    nodes: &[usize],
) -> fmt::Result {
    if nodes.is_empty() {
        if node_count > 0 {
            band(out, x, width, g.rows_top, g.rows_bottom - g.rows_top - 2.0)?;
        }
        return Ok(());
    }
    for &node in nodes.iter().filter(|&&node| node < node_count) {
        band(out, x, width, g.row_y(node), ROW_PITCH - 2.0)?;
    }
    Ok(())
}

/// One translucent fault band (it lets the pointer through to the spans).
fn band(out: &mut String, x: f64, width: f64, y: f64, height: f64) -> fmt::Result {
    writeln!(
        out,
        r##"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="{FAULT_COLOR}" fill-opacity="0.15" stroke="{FAULT_COLOR}" stroke-opacity="0.5" stroke-width="0.5" pointer-events="none"/>"##
    )
}

/// The epochs: dashed lines across the rows, labelled where there is room.
fn epochs(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    if !t.epochs.is_empty() {
        let x = LEFT - 8.0;
        writeln!(
            out,
            r##"<text x="{x:.1}" y="{EPOCH_LABEL_Y:.1}" text-anchor="end" fill="{EPOCH_COLOR}">epochs</text>"##
        )?;
    }
    let mut last_label_x = f64::NEG_INFINITY;
    for mark in &t.epochs {
        let x = g.x(mark.at_ms);
        let labelled = x - last_label_x >= EPOCH_LABEL_GAP;
        if labelled {
            last_label_x = x;
        }
        epoch(out, t, g, mark, labelled)?;
    }
    Ok(())
}

/// One epoch's line, with its ring in the tooltip.
fn epoch(
    out: &mut String,
    t: &Timeline,
    g: &Geometry,
    mark: &EpochMark,
    labelled: bool,
) -> fmt::Result {
    let x = g.x(mark.at_ms);
    let bottom = g.rows_bottom;
    let ring = if mark.ring.is_empty() {
        "(empty)".to_owned()
    } else {
        names(&t.nodes, &mark.ring)
    };
    let tip = format!(
        "epoch {} at {} s; ring: {ring}",
        mark.epoch,
        secs(mark.at_ms)
    );
    writeln!(out, r##"<g class="epoch"><title>{}</title>"##, esc(&tip))?;
    writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{AXIS_TOP_Y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{EPOCH_COLOR}" stroke-opacity="0.7" stroke-dasharray="4 3"/>"##
    )?;
    writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{AXIS_TOP_Y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ffffff" stroke-opacity="0" stroke-width="6"/>"##
    )?;
    if labelled {
        writeln!(
            out,
            r##"<text x="{x:.1}" y="{EPOCH_LABEL_Y:.1}" text-anchor="middle" font-size="10" fill="{EPOCH_COLOR}">e{}</text>"##,
            mark.epoch
        )?;
    }
    writeln!(out, "</g>")
}

/// The solid line where the faults stop, labelled under the bottom axis.
fn faults_stop(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    if t.faults_end_ms == 0 {
        return Ok(());
    }
    let x = g.x(t.faults_end_ms);
    let bottom = g.rows_bottom + 22.0;
    let label_y = g.rows_bottom + 34.0;
    let tip = format!(
        "faults stop at {} s; the liveness phase follows",
        secs(t.faults_end_ms)
    );
    writeln!(
        out,
        r##"<g class="faults-stop"><title>{}</title>"##,
        esc(&tip)
    )?;
    writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{AXIS_TOP_Y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{STOP_COLOR}" stroke-width="2"/>"##
    )?;
    writeln!(
        out,
        r##"<text x="{x:.1}" y="{label_y:.1}" text-anchor="middle" font-weight="bold" fill="{STOP_COLOR}">faults stop</text>"##
    )?;
    writeln!(out, "</g>")
}

/// The violations: a red cross on the node's row, or in the top lane.
fn violations(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    if t.violations.is_empty() {
        return Ok(());
    }
    let x = LEFT - 8.0;
    let y = VIOLATION_LANE_Y + 4.0;
    writeln!(
        out,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="end" fill="{VIOLATION_COLOR}">violations</text>"##
    )?;
    for violation in &t.violations {
        violation_mark(out, t, g, violation)?;
    }
    Ok(())
}

/// One violation's cross, with its text in the tooltip.
fn violation_mark(
    out: &mut String,
    t: &Timeline,
    g: &Geometry,
    violation: &ViolationMark,
) -> fmt::Result {
    let x = g.x(violation.at_ms);
    let row = violation.node.filter(|&node| node < t.nodes.len());
    let y = row.map_or(VIOLATION_LANE_Y, |node| g.row_y(node) + 2.0 + BAR_H / 2.0);
    let tip = format!(
        "violation at {} s{}: {}",
        secs(violation.at_ms),
        who(t, violation),
        violation.text
    );
    let path = cross_path(x, y);
    writeln!(
        out,
        r##"<g class="violation"><title>{}</title>"##,
        esc(&tip)
    )?;
    writeln!(
        out,
        r##"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="#ffffff" fill-opacity="0"/>"##
    )?;
    writeln!(
        out,
        r##"<path d="{path}" stroke="#ffffff" stroke-width="5" stroke-linecap="round"/>"##
    )?;
    writeln!(
        out,
        r##"<path d="{path}" stroke="{VIOLATION_COLOR}" stroke-width="2.5" stroke-linecap="round"/>"##
    )?;
    writeln!(out, "</g>")
}

/// An X, 10 px across, centered on (`x`, `y`).
fn cross_path(x: f64, y: f64) -> String {
    let (left, right, top, bottom) = (x - 5.0, x + 5.0, y - 5.0, y + 5.0);
    format!(
        "M{left:.1} {top:.1} L{right:.1} {bottom:.1} M{left:.1} {bottom:.1} L{right:.1} {top:.1}"
    )
}

/// " on nX" for a violation that names a node; empty otherwise.
fn who(t: &Timeline, violation: &ViolationMark) -> String {
    violation.node.map_or_else(String::new, |node| {
        format!(" on {}", node_name(&t.nodes, node))
    })
}

/// The time axis, above and below the rows.
fn axes(out: &mut String, g: &Geometry) -> fmt::Result {
    let (step, marks) = ticks(g.total_ms);
    let right = LEFT + PLOT_W;
    let bottom = g.rows_bottom + 4.0;
    for y in [AXIS_TOP_Y, bottom] {
        writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="{AXIS_COLOR}"/>"##
        )?;
    }
    let top_tick = AXIS_TOP_Y - 4.0;
    let top_label = AXIS_TOP_Y - 7.0;
    let bottom_tick = bottom + 4.0;
    let bottom_label = bottom + 16.0;
    for ms in marks {
        let x = g.x(ms);
        let label = tick_label(ms, step);
        writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top_tick:.1}" x2="{x:.1}" y2="{AXIS_TOP_Y:.1}" stroke="{AXIS_COLOR}"/>"##
        )?;
        writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{bottom_tick:.1}" stroke="{AXIS_COLOR}"/>"##
        )?;
        writeln!(
            out,
            r##"<text x="{x:.1}" y="{top_label:.1}" text-anchor="middle" font-size="11" fill="{AXIS_COLOR}">{label}</text>"##
        )?;
        writeln!(
            out,
            r##"<text x="{x:.1}" y="{bottom_label:.1}" text-anchor="middle" font-size="11" fill="{AXIS_COLOR}">{label}</text>"##
        )?;
    }
    Ok(())
}

/// The tick step and the ticks (from 0) for a run of `total_ms`.
fn ticks(total_ms: u64) -> (u64, Vec<u64>) {
    let step = tick_step_ms(total_ms);
    let marks: Vec<u64> = (0..=total_ms / step).map(|i| i * step).collect();
    (step, marks)
}

/// A round tick step giving at most `MAX_TICKS` intervals.
fn tick_step_ms(total_ms: u64) -> u64 {
    const STEPS: [u64; 16] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 1_200_000, 1_800_000, 3_600_000,
    ];
    if let Some(step) = STEPS
        .iter()
        .copied()
        .find(|&step| total_ms.div_ceil(step) <= MAX_TICKS)
    {
        return step;
    }
    let mut step = 7_200_000_u64;
    while total_ms.div_ceil(step) > MAX_TICKS {
        step = step.saturating_mul(2);
    }
    step
}

/// A tick's label: whole seconds, or tenths for sub-second steps.
fn tick_label(ms: u64, step: u64) -> String {
    if step.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", ms as f64 / 1_000.0)
    }
}

/// The first violations as text lines under the chart.
fn violation_list(out: &mut String, t: &Timeline, g: &Geometry) -> fmt::Result {
    let total = t.violations.len();
    let heading = match total {
        0 => "Violations: none".to_owned(),
        n if n > LISTED_VIOLATIONS => format!("Violations: {n} (the first {LISTED_VIOLATIONS}):"),
        n => format!("Violations: {n}"),
    };
    let color = if total == 0 {
        OK_COLOR
    } else {
        VIOLATION_COLOR
    };
    let mut y = g.list_top();
    writeln!(
        out,
        r##"<text x="10" y="{y:.1}" font-weight="bold" fill="{color}">{}</text>"##,
        esc(&heading)
    )?;
    for violation in t.violations.iter().take(LISTED_VIOLATIONS) {
        y += LIST_LINE_H;
        let shown: String = violation.text.chars().take(LISTED_TEXT_CHARS).collect();
        let more = if violation.text.chars().count() > LISTED_TEXT_CHARS {
            "…"
        } else {
            ""
        };
        let line = format!(
            "{} s{}: {shown}{more}",
            secs(violation.at_ms),
            who(t, violation)
        );
        writeln!(
            out,
            r##"<text x="20" y="{y:.1}" font-family="monospace" font-size="11"><title>{}</title>{}</text>"##,
            esc(&violation.text),
            esc(&line)
        )?;
    }
    if total > LISTED_VIOLATIONS {
        y += LIST_LINE_H;
        let rest = total - LISTED_VIOLATIONS;
        writeln!(
            out,
            r##"<text x="20" y="{y:.1}" font-style="italic">… and {rest} more</text>"##
        )?;
    }
    Ok(())
}

/// A node's name, or "?" for an index out of range.
fn node_name(nodes: &[String], node: usize) -> &str {
    nodes.get(node).map_or("?", String::as_str)
}

/// Node names, comma-separated.
fn names(nodes: &[String], indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(|&node| node_name(nodes, node))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1 migration", "2 migrations": the word for `n`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// Milliseconds as seconds, to the millisecond.
fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1_000.0)
}

/// Text made safe for XML content and attribute values; characters XML
/// forbids become U+FFFD.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{esc, migration_summary, render, tick_step_ms};
    use crate::{EpochMark, FaultMark, MigrationMark, NodeState, Span, Timeline, ViolationMark};

    fn sample() -> Timeline {
        Timeline {
            scenario: "rolling-restart".to_owned(),
            seed: 42,
            end_ms: 10_000,
            faults_end_ms: 7_000,
            nodes: vec!["n1".to_owned(), "n2".to_owned(), "n3".to_owned()],
            spans: vec![
                Span {
                    node: 0,
                    from_ms: 0,
                    to_ms: 10_000,
                    state: NodeState::Up,
                },
                Span {
                    node: 1,
                    from_ms: 0,
                    to_ms: 3_000,
                    state: NodeState::Up,
                },
                Span {
                    node: 1,
                    from_ms: 3_000,
                    to_ms: 5_000,
                    state: NodeState::Crashed,
                },
                Span {
                    node: 1,
                    from_ms: 5_000,
                    to_ms: 10_000,
                    state: NodeState::Joining,
                },
                Span {
                    node: 2,
                    from_ms: 1_000,
                    to_ms: 10_000,
                    state: NodeState::Up,
                },
            ],
            epochs: vec![
                EpochMark {
                    at_ms: 1_000,
                    epoch: 1,
                    ring: vec![0, 2],
                },
                EpochMark {
                    at_ms: 6_000,
                    epoch: 2,
                    ring: vec![0, 1, 2],
                },
            ],
            faults: vec![FaultMark {
                index: 0,
                label: "crash n2".to_owned(),
                from_ms: 3_000,
                to_ms: 5_000,
                nodes: vec![1],
            }],
            migrations: vec![
                MigrationMark {
                    session: 7,
                    from: 1,
                    to: 0,
                    start_ms: 3_100,
                    end_ms: Some(3_200),
                },
                MigrationMark {
                    session: 8,
                    from: 1,
                    to: 2,
                    start_ms: 3_100,
                    end_ms: None,
                },
            ],
            violations: vec![ViolationMark {
                at_ms: 4_000,
                node: Some(1),
                text: "two owners <&> at once".to_owned(),
            }],
        }
    }

    #[test]
    fn renders_every_part() {
        let svg = render(&sample());
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>\n"));
        for name in ["n1", "n2", "n3"] {
            assert!(svg.contains(&format!(">{name}<")), "no row for {name}");
        }
        assert!(svg.contains(">e1<"));
        assert!(svg.contains(">e2<"));
        assert!(svg.contains("#0 crash n2"));
        assert!(svg.contains(r#"class="violation""#));
        assert!(svg.contains("two owners &lt;&amp;&gt; at once"));
        assert!(!svg.contains("<&>"));
        assert!(svg.contains("faults stop"));
        assert!(svg.contains("1 migration to n1 between 3.100 s and 3.150 s, max duration 100 ms"));
        assert!(svg.contains("1 unfinished migration to n3"));
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(render(&sample()), render(&sample()));
    }

    #[test]
    fn empty_timeline_renders() {
        let svg = render(&Timeline::default());
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("Violations: none"));
        assert!(!svg.contains("NaN"));
        assert!(!svg.contains("=\"inf"));
        assert!(!svg.contains("=\"-inf"));
    }

    #[test]
    fn indexes_out_of_range_are_skipped() {
        let mut timeline = sample();
        timeline.spans.push(Span {
            node: 9,
            from_ms: 0,
            to_ms: 1_000,
            state: NodeState::Paused,
        });
        timeline.migrations.push(MigrationMark {
            session: 9,
            from: 0,
            to: 9,
            start_ms: 20_000,
            end_ms: Some(25_000),
        });
        timeline.faults.push(FaultMark {
            index: 1,
            label: "pause n10".to_owned(),
            from_ms: 2_000,
            to_ms: 2_000,
            nodes: vec![9],
        });
        timeline.violations.push(ViolationMark {
            at_ms: 5_000,
            node: Some(9),
            text: "lost".to_owned(),
        });
        let svg = render(&timeline);
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("#1 pause n10"));
    }

    #[test]
    fn summary_ticks_and_escaping() {
        assert_eq!(
            migration_summary(&sample().migrations),
            "migrations: 2 (1 finished, 1 unfinished); duration p50 100 ms, p99 100 ms, max 100 ms"
        );
        assert_eq!(migration_summary(&[]), "migrations: none");
        assert_eq!(tick_step_ms(0), 100);
        assert_eq!(tick_step_ms(10_000), 500);
        assert_eq!(tick_step_ms(60_000), 5_000);
        assert_eq!(tick_step_ms(3_600_000), 300_000);
        assert_eq!(esc(r#"a<b>&"c"'"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;");
    }
}
