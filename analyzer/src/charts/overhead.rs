//! The overhead chart: each workload metric × non-baseline platform as a bar from 1× to its
//! ratio to the baseline, with the ratio's CI as a whisker and every repetition as a point.
//!
//! The axis is the **cost factor** on a log₂ scale: the ratio for a lower-is-better metric (time
//! per call), its inverse for a higher-is-better one (throughput). So right of 1× is always
//! worse and left always better, and 2× worse and 2× better are the same distance from 1×
//! whatever the metric; a 64× and a 176× bar no longer squash a 1.1× one.

use plotters::prelude::*;

use super::{Chart, ChartError, FONT, WIDTH, category, color, count_u32, render};
use crate::metrics::is_headline;
use crate::summary::ExperimentSummary;

/// One bar: a metric on a platform, as cost factors (> 1 = worse than the baseline).
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// `label · platform`.
    pub label: String,
    /// Index of the platform (for its colour).
    pub platform: usize,
    /// Cost factor of the ratio estimate.
    pub factor: f64,
    /// Its CI, `[low, high]`.
    pub ci: [f64; 2],
    /// Each repetition's value divided by the baseline's median, as a cost factor.
    pub repetitions: Vec<f64>,
}

/// Cost factor of a ratio: `> 1` is worse than the baseline whichever way the metric points.
pub fn cost_factor(ratio: f64, higher_is_better: bool) -> f64 {
    if higher_is_better { 1.0 / ratio } else { ratio }
}

/// The rows of the overhead chart (positive, finite factors only: a log axis has no place for
/// a zero or negative value).
pub fn cost_rows(e: &ExperimentSummary) -> Vec<CostRow> {
    let Some(baseline) = e.baseline.as_deref() else {
        return Vec::new();
    };
    let platforms: Vec<&String> = {
        let mut v: Vec<&String> = Vec::new();
        for p in e.metrics.values().flat_map(|m| m.platforms.keys()) {
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v
    };
    let ok = |x: f64| x.is_finite() && x > 0.0;
    let mut rows = Vec::new();
    for (label, m) in e.metrics.iter().filter(|(_, m)| is_headline(&m.metric)) {
        let base_median = m.platforms.get(baseline).map(|b| b.median);
        for (p, s) in &m.platforms {
            let (Some(r), Some([lo, hi])) = (s.ratio_to_baseline, s.ratio_ci) else {
                continue;
            };
            let hib = m.higher_is_better;
            let (a, b) = (cost_factor(lo, hib), cost_factor(hi, hib));
            let factor = cost_factor(r, hib);
            if ![factor, a, b].into_iter().all(ok) {
                continue;
            }
            let repetitions = base_median
                .filter(|b| ok(*b))
                .map(|b| {
                    s.values
                        .iter()
                        .map(|v| cost_factor(v / b, hib))
                        .filter(|f| ok(*f))
                        .collect()
                })
                .unwrap_or_default();
            rows.push(CostRow {
                label: format!("{label} · {p}"),
                platform: platforms.iter().position(|x| *x == p).unwrap_or(0),
                factor,
                ci: [a.min(b), a.max(b)],
                repetitions,
            });
        }
    }
    rows
}

/// `0.25×`, `1×`, `64×` at whole powers of two (log₂ axis), blank elsewhere.
pub fn factor_label(log2: f64) -> String {
    let k = log2.round();
    if (log2 - k).abs() > 1e-6 {
        return String::new();
    }
    let v = k.exp2();
    if v >= 1.0 {
        format!("{v:.0}×")
    } else {
        let s = format!("{v:.6}");
        format!("{}×", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The chart, or `None` when the experiment has no ratios.
pub fn overhead(e: &ExperimentSummary) -> Option<Result<Chart, ChartError>> {
    let rows = cost_rows(e);
    if rows.is_empty() {
        return None;
    }
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let n = rows.len() as f64;
    let logs = rows
        .iter()
        .flat_map(|r| {
            [r.factor, r.ci[0], r.ci[1]]
                .into_iter()
                .chain(r.repetitions.iter().copied())
        })
        .map(f64::log2);
    let (lo, hi) = logs.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    // Whole powers of two at both ends, at least ½× to 2×.
    let (lo, hi) = ((lo - 0.05).floor().min(-1.0), (hi + 0.05).ceil().max(1.0));
    // A handful of ticks: every power of two up to 16 of them, else every other one.
    let span = hi - lo;
    // span is a small positive whole number (log₂ of a ratio range).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ticks = (span as usize + 1).min(17);
    let height = 80 + 24 * count_u32(rows.len());
    let baseline = e.baseline.as_deref().unwrap_or("baseline");
    let title = format!(
        "Cost relative to {baseline} (log scale, right = worse): bar = ratio estimate, whisker = \
         95% CI (the widest CI where 95% is out of reach), dots = repetitions; higher-is-better \
         metrics are inverted ({baseline} ÷ platform)"
    );
    let x_desc =
        format!("← better than {baseline}  ·  cost factor (log₂)  ·  worse than {baseline} →");
    Some(render("overhead", &title, (WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(lo..hi, (n - 0.5)..-0.5)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len())
            .y_label_formatter(&|v| category(&labels, *v))
            .x_labels(ticks)
            .x_label_formatter(&|v| factor_label(*v))
            .x_desc(x_desc.as_str())
            .label_style((FONT, 12))
            .draw()?;
        for (i, row) in rows.iter().enumerate() {
            let y = i as f64;
            let col = color(row.platform);
            chart.draw_series([Rectangle::new(
                [(0.0, y - 0.32), (row.factor.log2(), y + 0.32)],
                col.mix(0.55).filled(),
            )])?;
            let [a, b] = [row.ci[0].log2(), row.ci[1].log2()];
            chart.draw_series([PathElement::new(
                vec![(a, y), (b, y)],
                BLACK.stroke_width(2),
            )])?;
            for x in [a, b] {
                chart.draw_series([PathElement::new(vec![(x, y - 0.15), (x, y + 0.15)], BLACK)])?;
            }
            // Repetitions, spread a little vertically so equal values stay visible.
            let k = row.repetitions.len().max(1) as f64;
            chart.draw_series(row.repetitions.iter().enumerate().map(|(j, v)| {
                let dy = 0.24 * ((j as f64 + 0.5) / k - 0.5);
                Circle::new((v.log2(), y + dy), 3, col.filled().stroke_width(1))
            }))?;
            chart.draw_series(row.repetitions.iter().enumerate().map(|(j, v)| {
                let dy = 0.24 * ((j as f64 + 0.5) / k - 0.5);
                Circle::new((v.log2(), y + dy), 3, BLACK.stroke_width(1))
            }))?;
        }
        chart.draw_series([PathElement::new(
            vec![(0.0, -0.5), (0.0, n - 0.5)],
            BLACK.mix(0.8).stroke_width(1),
        )])?;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_is_better_ratios_are_inverted_so_right_is_worse() {
        assert_eq!(cost_factor(2.0, false), 2.0);
        assert_eq!(cost_factor(0.5, true), 2.0);
        assert_eq!(cost_factor(4.0, true), 0.25);
    }

    #[test]
    fn axis_labels_sit_on_powers_of_two() {
        assert_eq!(factor_label(0.0), "1×");
        assert_eq!(factor_label(6.0), "64×");
        assert_eq!(factor_label(-2.0), "0.25×");
        assert_eq!(factor_label(-1.0), "0.5×");
        assert_eq!(factor_label(0.5), "");
    }
}
