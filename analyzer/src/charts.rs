//! SVG charts for `report.html`, drawn with `plotters`' SVG backend: cost factors on a log axis
//! with CI whiskers and repetitions (overhead, [`overhead`]), throughput and efficiency lines (scaling), share time series (fairness) and a
//! degradation heat map (isolation). Text is laid out with plotters' built-in estimate, so no
//! font files are needed; the browser renders the `<text>` elements with its own fonts.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub mod overhead;

use crate::summary::{ExperimentSummary, FairnessPlatform, IsolationMetric, ScalingSummary};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart `{chart}`: {message}")]
pub struct ChartError {
    /// Which chart.
    pub chart: String,
    /// What plotters said.
    pub message: String,
}

/// One rendered chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Short identifier (`overhead`, `scaling-aggregate`, `fairness-<platform>`…).
    pub id: String,
    /// Caption.
    pub title: String,
    /// The `<svg>` element.
    pub svg: String,
}

type Draw<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 860;

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

fn render(
    id: &str,
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Draw<'_>) -> DrawResult,
) -> Result<Chart, ChartError> {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    result.map_err(|e| ChartError {
        chart: id.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Chart {
        id: id.to_owned(),
        title: title.to_owned(),
        svg,
    })
}

/// Padded `[low, high]` around values.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.01).max(1e-9);
    (lo - pad, hi + pad)
}

/// The label of a category axis tick at whole-number positions, blank elsewhere.
fn category(labels: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    // i is a small non-negative whole number.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    labels.get(i as usize).cloned().unwrap_or_default()
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Every chart of one experiment.
pub fn experiment_charts(e: &ExperimentSummary) -> Vec<Result<Chart, ChartError>> {
    let mut out = Vec::new();
    if e.analysis == "overhead"
        && let Some(c) = overhead::overhead(e)
    {
        out.push(c);
    }
    if let Some(s) = &e.scaling {
        out.extend(scaling(s));
    }
    if let Some(f) = &e.fairness {
        for (platform, fp) in &f.platforms {
            if !fp.timeline.is_empty() {
                out.push(fairness(platform, fp));
            }
        }
    }
    if let Some(i) = &e.isolation {
        for m in &i.metrics {
            if !m.cells.is_empty() {
                out.push(heat_map(m, &i.adversaries));
            }
        }
    }
    out
}

fn log2_label(v: f64) -> String {
    let n = v.exp2();
    if (n - n.round()).abs() < 1e-6 {
        format!("{}", n.round())
    } else {
        String::new()
    }
}

/// Aggregate throughput and efficiency versus instance count (log₂ axis).
fn scaling(s: &ScalingSummary) -> Vec<Result<Chart, ChartError>> {
    let ns = || {
        s.series
            .iter()
            .flat_map(|x| x.points.iter().map(|p| f64::from(p.n_instances).log2()))
    };
    let (x0, x1) = span(ns());
    let ticks = (x1 - x0).ceil().max(1.0);
    // A handful of ticks at most.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ticks = ticks as usize + 1;
    let aggregate = {
        let (y0, y1) = span(s.series.iter().flat_map(|x| {
            x.points.iter().flat_map(|p| {
                [p.aggregate.ci_low, p.aggregate.ci_high]
                    .into_iter()
                    .chain(p.aggregate_values.iter().copied())
            })
        }));
        render(
            "scaling-aggregate",
            "Aggregate throughput vs instances (median with 95% CI; hollow dots: repetitions)",
            (WIDTH, 420),
            |root| {
                let mut chart = ChartBuilder::on(root)
                    .margin(10)
                    .x_label_area_size(35)
                    .y_label_area_size(70)
                    .build_cartesian_2d(x0..x1, y0.min(0.0)..y1)?;
                chart
                    .configure_mesh()
                    .x_labels(ticks)
                    .x_label_formatter(&|v| log2_label(*v))
                    .x_desc("instances")
                    .y_desc("aggregate")
                    .draw()?;
                for (i, series) in s.series.iter().enumerate() {
                    let col = color(i);
                    let pts: Vec<(f64, f64)> = series
                        .points
                        .iter()
                        .map(|p| (f64::from(p.n_instances).log2(), p.aggregate.median))
                        .collect();
                    chart
                        .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?
                        .label(format!("{} · {}", series.label, series.platform))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                        });
                    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, col.filled())))?;
                    for p in &series.points {
                        let x = f64::from(p.n_instances).log2();
                        let w = vec![(x, p.aggregate.ci_low), (x, p.aggregate.ci_high)];
                        chart.draw_series([PathElement::new(w, col)])?;
                        // Each repetition, beside the median.
                        chart.draw_series(
                            p.aggregate_values
                                .iter()
                                .map(|v| Circle::new((x + 0.06, *v), 2, col.stroke_width(1))),
                        )?;
                    }
                }
                chart
                    .configure_series_labels()
                    .border_style(BLACK)
                    .background_style(WHITE.mix(0.8))
                    .draw()?;
                Ok(())
            },
        )
    };
    let efficiency = {
        let (_, y1) = span(
            s.series
                .iter()
                .flat_map(|x| x.points.iter().filter_map(|p| p.efficiency))
                .chain([1.0]),
        );
        render(
            "scaling-efficiency",
            "Scaling efficiency agg(N) / (N/N0 · agg(N0))",
            (WIDTH, 320),
            |root| {
                let mut chart = ChartBuilder::on(root)
                    .margin(10)
                    .x_label_area_size(35)
                    .y_label_area_size(60)
                    .build_cartesian_2d(x0..x1, 0.0..y1.max(1.1))?;
                chart
                    .configure_mesh()
                    .x_labels(ticks)
                    .x_label_formatter(&|v| log2_label(*v))
                    .x_desc("instances")
                    .y_desc("efficiency")
                    .draw()?;
                let knee = vec![(x0, s.knee_efficiency), (x1, s.knee_efficiency)];
                chart.draw_series([PathElement::new(knee, RED.mix(0.6).stroke_width(1))])?;
                for (i, series) in s.series.iter().enumerate() {
                    let pts: Vec<(f64, f64)> = series
                        .points
                        .iter()
                        .filter_map(|p| p.efficiency.map(|e| (f64::from(p.n_instances).log2(), e)))
                        .collect();
                    chart.draw_series(LineSeries::new(pts.clone(), color(i).stroke_width(2)))?;
                    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color(i).filled())))?;
                }
                Ok(())
            },
        )
    };
    vec![aggregate, efficiency]
}

/// Share of each group over time, with its entitlement as a thin line.
fn fairness(platform: &str, f: &FairnessPlatform) -> Result<Chart, ChartError> {
    let groups: Vec<&String> = f.groups.keys().collect();
    let (t0, t1) = span(f.timeline.iter().map(|p| p.t_s));
    let (_, y1) = span(f.timeline.iter().flat_map(|p| p.shares.values().copied()));
    let id = format!("fairness-{platform}");
    render(
        &id,
        &format!("CPU share over time on {platform}"),
        (WIDTH, 360),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d(t0.max(0.0)..t1, 0.0..y1.max(0.5))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc("share of CPU")
                .draw()?;
            for (i, g) in groups.iter().enumerate() {
                let col = color(i);
                let pts: Vec<(f64, f64)> = f
                    .timeline
                    .iter()
                    .filter_map(|p| p.shares.get(*g).map(|s| (p.t_s, *s)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
                    .label((*g).clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                    });
                if let Some(share) = f.groups.get(*g) {
                    let line = vec![(t0.max(0.0), share.entitled), (t1, share.entitled)];
                    chart.draw_series([PathElement::new(line, col.mix(0.5))])?;
                }
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
            Ok(())
        },
    )
}

/// Adversary × platform heat map of victim degradation (white 0%, red ≥ 50%, green better).
fn heat_map(m: &IsolationMetric, adversaries: &[String]) -> Result<Chart, ChartError> {
    let mut platforms: Vec<String> = Vec::new();
    for c in &m.cells {
        if !platforms.contains(&c.platform) {
            platforms.push(c.platform.clone());
        }
    }
    let (np, na) = (platforms.len() as f64, adversaries.len() as f64);
    let height = 90 + 40 * count_u32(adversaries.len());
    let id = format!("isolation-{}", m.label);
    render(
        &id,
        &format!("Victim degradation: {}", m.label),
        (WIDTH.min(220 + 160 * count_u32(platforms.len())), height),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(120)
                .build_cartesian_2d(-0.5..(np - 0.5), (na - 0.5)..-0.5)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(platforms.len())
                .y_labels(adversaries.len())
                .x_label_formatter(&|v| category(&platforms, *v))
                .y_label_formatter(&|v| category(adversaries, *v))
                .draw()?;
            for c in &m.cells {
                let (Some(x), Some(y)) = (
                    platforms.iter().position(|p| *p == c.platform),
                    adversaries.iter().position(|a| *a == c.adversary),
                ) else {
                    continue;
                };
                let (x, y) = (x as f64, y as f64);
                let d = (c.degradation_pct / 50.0).clamp(-1.0, 1.0);
                let fade = |v: f64| {
                    // 0 ≤ v ≤ 1, so the channel stays in 0..=255.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let ch = (255.0 * (1.0 - v)).round() as u8;
                    ch
                };
                let fill = if d >= 0.0 {
                    RGBColor(255, fade(d), fade(d))
                } else {
                    RGBColor(fade(-d), 255, fade(-d))
                };
                chart.draw_series([Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    fill.filled(),
                )])?;
                let style = TextStyle::from((FONT, 14).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series([Text::new(
                    format!("{:+.1}%", c.degradation_pct),
                    (x, y),
                    style,
                )])?;
            }
            Ok(())
        },
    )
}
