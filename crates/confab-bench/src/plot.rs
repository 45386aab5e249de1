//! `confab-bench plot`: throughput served against p99 latency, one line per
//! server, from the JSON reports of `confab-bench turns --json`, as an SVG for
//! `docs/`.

use anyhow::Context;
use plotters::prelude::*;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct PlotArgs {
    /// One line: `LABEL=report.json,report.json,...` (the reports of one
    /// server at rising offered rates). Repeat for each server.
    #[arg(long = "series", required = true)]
    series: Vec<String>,
    /// Where the SVG goes.
    #[arg(long)]
    out: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "turns served against p99 latency")]
    title: String,
}

/// What the chart reads of a `turns --json` report.
#[derive(serde::Deserialize)]
struct Point {
    target_rate: f64,
    throughput_per_s: f64,
    latency_ms: Latency,
}

#[derive(serde::Deserialize)]
struct Latency {
    p99: f64,
}

struct Series {
    label: String,
    points: Vec<Point>,
}

fn read_series(spec: &str) -> anyhow::Result<Series> {
    let (label, files) = spec
        .split_once('=')
        .with_context(|| format!("--series {spec:?}: write it as LABEL=a.json,b.json"))?;
    let mut points = Vec::new();
    for file in files.split(',').filter(|f| !f.is_empty()) {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let point: Point = serde_json::from_str(&text)
            .with_context(|| format!("{file} is not a `confab-bench turns --json` report"))?;
        points.push(point);
    }
    anyhow::ensure!(!points.is_empty(), "--series {label:?} names no report");
    points.sort_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
    Ok(Series {
        label: label.to_owned(),
        points,
    })
}

pub(crate) async fn run(args: PlotArgs) -> anyhow::Result<()> {
    let series = args
        .series
        .iter()
        .map(|spec| read_series(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    draw(&series, &args.title, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn draw(series: &[Series], title: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.throughput_per_s).fold(0.0, f64::max) * 1.1;
    // p99 on a log axis: the floor is a millisecond, an overload seconds.
    let y_min = all()
        .map(|p| p.latency_ms.p99)
        .fold(f64::MAX, f64::min)
        .max(0.1)
        / 2.0;
    let y_max = all().map(|p| p.latency_ms.p99).fold(0.0, f64::max).max(1.0) * 2.0;
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max.max(1.0), (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("turns served per second")
        .y_desc("p99 latency, ms (log)")
        .draw()
        .map_err(plot_error)?;
    let colours = [RED, BLUE, GREEN, MAGENTA, BLACK, CYAN];
    for (i, s) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.throughput_per_s, p.latency_ms.p99))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|xy| Circle::new(xy, 4, colour.filled())),
            )
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_reads_turns_reports_in_rate_order_and_bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let report = |rate: f64, served: f64, p99: f64| {
            serde_json::json!({
                "url": "ws://x", "sessions": 1, "target_rate": rate, "duration_s": 1.0,
                "sent": 1, "replied": 1, "missing": 0, "errors": {},
                "throughput_per_s": served,
                "latency_ms": {"measured": 1, "p50": 1.0, "p90": 1.0, "p99": p99, "p999": 1.0, "max": 1.0},
                "failures": []
            })
            .to_string()
        };
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, report(20_000.0, 9_000.0, 800.0)).unwrap();
        std::fs::write(&b, report(5_000.0, 5_000.0, 12.0)).unwrap();
        let spec = format!("confab={},{}", a.display(), b.display());
        let series = read_series(&spec).unwrap();
        assert_eq!(series.label, "confab");
        let rates: Vec<f64> = series.points.iter().map(|p| p.target_rate).collect();
        assert_eq!(rates, [5_000.0, 20_000.0]);
        let out = dir.path().join("chart.svg");
        draw(&[series], "t", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("confab"), "the legend names the series");

        let err = read_series("no-equals-sign").err().unwrap().to_string();
        assert!(err.contains("LABEL=a.json"), "{err}");
        std::fs::write(&a, "{}").unwrap();
        let err = format!(
            "{:#}",
            read_series(&format!("x={}", a.display())).err().unwrap()
        );
        assert!(
            err.contains("is not a `confab-bench turns --json` report"),
            "{err}"
        );
    }
}
