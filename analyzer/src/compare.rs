//! Comparing two runs (`isolab compare RUN_A RUN_B`): for every metric and platform both runs
//! measured, the ratio of B to A with its 95% CI and p-value ([`crate::ratio`]: Hodges–Lehmann
//! on log values, exact Moses interval, exact Mann–Whitney test), and whether the change is a
//! regression or an improvement.
//!
//! Hundreds of metrics are tested at once, so a change counts only when it survives
//! Benjamini–Hochberg false-discovery control across every metric compared (adjusted p, the
//! q-value, ≤ [`FDR_Q`]), its 95% CI excludes 1, and its estimated size `|B/A − 1|` is at least
//! the threshold ([`DEFAULT_THRESHOLD`], `--threshold`). It is a regression when it goes the
//! wrong way for the metric (a higher-is-better metric drops, a lower-is-better one rises).
//! With too few repetitions for a 95% interval (3 against 3) a metric is never a change.
//! `--fail-on-regression` exits 4 when [`Comparison::has_regression`].
//!
//! ```
//! use isolab_analyzer::compare::{compare_summaries, Change};
//! use isolab_analyzer::testkit::{RunSpec, write_synthetic_run};
//! let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! for (dir, ns) in [(&a, 100.0), (&b, 120.0)] {
//!     let mut spec = RunSpec::new("r", "p");
//!     let values = [ns, ns + 1.0, ns - 1.0, ns + 0.5, ns - 0.5];
//!     spec.experiment("micro", "overhead", &[("native", "native")])
//!         .summary_metric("native", "syscall", "ns_per_call", "ns", false, &values);
//!     write_synthetic_run(dir.path(), &spec).unwrap();
//! }
//! let c = isolab_analyzer::compare::compare(a.path(), b.path()).unwrap();
//! assert_eq!(c.entries[0].change, Change::Regression);
//! assert!(c.has_regression());
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::markdown::{fmt_num, fmt_ratio};
use crate::overhead::overhead;
use crate::ratio::{self, RatioEstimate};
use crate::report::{AnalyzeError, analyze};
use crate::summary::Summary;

/// Default smallest relative change that counts (2%).
pub const DEFAULT_THRESHOLD: f64 = 0.02;
/// False-discovery rate controlled across the metrics of one comparison.
pub const FDR_Q: f64 = 0.05;

/// What happened to a metric between the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Significantly and at least the threshold worse in B.
    Regression,
    /// Significantly and at least the threshold better in B.
    Improvement,
    /// No change that counts.
    Unchanged,
    /// Too few repetitions for a 95% interval: no change can be claimed.
    TooFewRepetitions,
}

/// One metric on one platform in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonEntry {
    /// Experiment.
    pub experiment: String,
    /// Metric label.
    pub metric: String,
    /// Platform.
    pub platform: String,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Repetitions in A.
    pub n_a: usize,
    /// Repetitions in B.
    pub n_b: usize,
    /// Median in A.
    pub median_a: f64,
    /// Median in B.
    pub median_b: f64,
    /// B relative to A: the Hodges–Lehmann ratio (see [`crate::ratio`]).
    pub ratio: f64,
    /// Its confidence interval.
    pub ratio_ci: [f64; 2],
    /// Level of `ratio_ci` (0.95, or less with too few repetitions).
    pub ci_level: f64,
    /// Exact two-sided Mann–Whitney p-value.
    pub p_value: f64,
    /// Benjamini–Hochberg adjusted p-value across every entry of the comparison.
    pub q_value: f64,
    /// Change in percent, `100·(ratio − 1)`.
    pub delta_pct: f64,
    /// Its CI.
    pub delta_ci_pct: [f64; 2],
    /// The verdict.
    pub change: Change,
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Run id of A (the reference).
    pub run_a: String,
    /// Run id of B.
    pub run_b: String,
    /// [`ratio::METHOD`].
    pub method: String,
    /// Smallest relative change that counts (fraction, `--threshold`).
    pub threshold: f64,
    /// [`FDR_Q`].
    pub fdr_q: f64,
    /// Metrics measured in both, in A's order.
    pub entries: Vec<ComparisonEntry>,
    /// `experiment / metric / platform` measured in both but with a value that is zero or
    /// negative (counts such as `oom_kills`): no ratio.
    pub not_compared: Vec<String>,
    /// `experiment / metric / platform` measured only in A.
    pub only_in_a: Vec<String>,
    /// `experiment / metric / platform` measured only in B.
    pub only_in_b: Vec<String>,
    /// How the two runs' environments differ (shown first); empty when they do not.
    #[serde(default)]
    pub environment: Vec<crate::envdiff::EnvDifference>,
}

impl Comparison {
    /// The significant regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &ComparisonEntry> {
        self.entries
            .iter()
            .filter(|e| e.change == Change::Regression)
    }

    /// Whether any metric regressed significantly (`--fail-on-regression` exits 4 then).
    pub fn has_regression(&self) -> bool {
        self.regressions().next().is_some()
    }

    /// The comparison as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let count = |c: Change| self.entries.iter().filter(|e| e.change == c).count();
        let _ = writeln!(out, "# isolab compare: {} → {}\n", self.run_a, self.run_b);
        out.push_str(&crate::envdiff::to_markdown(&self.environment));
        out.push_str("## Metrics\n\n");
        let _ = writeln!(
            out,
            "{} regressions, {} improvements, {} unchanged, {} with too few repetitions. A change \
             counts when it is significant after Benjamini–Hochberg false-discovery control \
             across the {} metrics compared (q ≤ {}), its 95% CI excludes 1 and its size is at \
             least {}%. B/A: Hodges–Lehmann ratio on log values with its exact (Moses) CI; q: \
             adjusted p-value of the exact Mann–Whitney test.\n",
            count(Change::Regression),
            count(Change::Improvement),
            count(Change::Unchanged),
            count(Change::TooFewRepetitions),
            self.entries.len(),
            self.fdr_q,
            self.threshold * 100.0
        );
        let _ = writeln!(
            out,
            "| experiment | metric | platform | A | B | B/A [95% CI] | q | change |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---|");
        for e in &self.entries {
            let change = match e.change {
                Change::Regression => format!("**regression** ({:+.1}%)", e.delta_pct),
                Change::Improvement => format!("improvement ({:+.1}%)", e.delta_pct),
                Change::Unchanged => "–".to_owned(),
                Change::TooFewRepetitions if e.n_a == e.n_b => {
                    format!("too few repetitions (n={})", e.n_a)
                }
                Change::TooFewRepetitions => {
                    format!("too few repetitions (n={} vs {})", e.n_a, e.n_b)
                }
            };
            let mut ci = format!(
                "{} [{}, {}]",
                fmt_ratio(e.ratio),
                fmt_ratio(e.ratio_ci[0]),
                fmt_ratio(e.ratio_ci[1])
            );
            if e.ci_level < crate::stats::CONFIDENCE {
                let _ = write!(ci, " ({:.0}% CI)", 100.0 * e.ci_level);
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} {} | {ci} | {:.3} | {change} |",
                e.experiment,
                e.metric.replace('|', "\\|"),
                e.platform,
                fmt_num(e.median_a),
                e.unit,
                fmt_num(e.median_b),
                e.unit,
                e.q_value,
            );
        }
        for (title, list) in [
            (
                "Not compared (zero or negative values, no ratio)",
                &self.not_compared,
            ),
            ("Only in A", &self.only_in_a),
            ("Only in B", &self.only_in_b),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "\n{title}:\n");
                for x in list {
                    let _ = writeln!(out, "- {x}");
                }
            }
        }
        out
    }
}

/// Analyses both run directories and compares them with the default threshold.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Comparison, AnalyzeError> {
    compare_with(run_a, run_b, DEFAULT_THRESHOLD)
}

/// Analyses both run directories and compares them; `threshold` is the smallest relative change
/// that counts (0.02 = 2%).
pub fn compare_with(
    run_a: &Path,
    run_b: &Path,
    threshold: f64,
) -> Result<Comparison, AnalyzeError> {
    let mut c = compare_summaries(&analyze(run_a)?, &analyze(run_b)?, threshold);
    c.environment = crate::envdiff::env_diff(run_a, run_b);
    Ok(c)
}

/// Compares two analysed runs (the per-repetition values in their summaries).
pub fn compare_summaries(a: &Summary, b: &Summary, threshold: f64) -> Comparison {
    let mut tested: Vec<(ComparisonEntry, RatioEstimate)> = Vec::new();
    let mut not_compared = Vec::new();
    let mut only_in_a = Vec::new();
    let mut seen = BTreeSet::new();
    for (exp, ea) in &a.experiments {
        for (label, ma) in &ea.metrics {
            for (platform, pa) in &ma.platforms {
                let id = format!("{exp} / {label} / {platform}");
                seen.insert(id.clone());
                let pb = b
                    .experiments
                    .get(exp)
                    .and_then(|e| e.metrics.get(label))
                    .and_then(|m| m.platforms.get(platform));
                let Some(pb) = pb else {
                    only_in_a.push(id);
                    continue;
                };
                let Some(r) = ratio::ratio(&pb.values, &pa.values) else {
                    not_compared.push(id);
                    continue;
                };
                let entry = ComparisonEntry {
                    experiment: exp.clone(),
                    metric: label.clone(),
                    platform: platform.clone(),
                    unit: ma.unit.clone(),
                    higher_is_better: ma.higher_is_better,
                    n_a: pa.n,
                    n_b: pb.n,
                    median_a: pa.median,
                    median_b: pb.median,
                    ratio: r.ratio,
                    ratio_ci: [r.ci_low, r.ci_high],
                    ci_level: r.level,
                    p_value: r.p_value,
                    q_value: 1.0,
                    delta_pct: 100.0 * (r.ratio - 1.0),
                    delta_ci_pct: [100.0 * (r.ci_low - 1.0), 100.0 * (r.ci_high - 1.0)],
                    change: Change::Unchanged,
                };
                tested.push((entry, r));
            }
        }
    }
    let p: Vec<f64> = tested.iter().map(|(e, _)| e.p_value).collect();
    let q = ratio::benjamini_hochberg(&p);
    let entries = tested
        .into_iter()
        .zip(q)
        .map(|((mut e, r), q)| {
            e.q_value = q;
            e.change = change(&e, &r, threshold);
            e
        })
        .collect();
    let only_in_b = b
        .experiments
        .iter()
        .flat_map(|(exp, e)| {
            e.metrics.iter().flat_map(move |(label, m)| {
                m.platforms
                    .keys()
                    .map(move |p| format!("{exp} / {label} / {p}"))
            })
        })
        .filter(|id| !seen.contains(id))
        .collect();
    Comparison {
        run_a: a.run_id.clone(),
        run_b: b.run_id.clone(),
        method: ratio::METHOD.to_owned(),
        threshold,
        fdr_q: FDR_Q,
        entries,
        not_compared,
        only_in_a,
        only_in_b,
        environment: Vec::new(),
    }
}

/// The verdict of one entry whose q-value is set.
fn change(e: &ComparisonEntry, r: &RatioEstimate, threshold: f64) -> Change {
    if !r.reaches_confidence {
        return Change::TooFewRepetitions;
    }
    let excludes_one = r.ci_low > 1.0 || r.ci_high < 1.0;
    let large = (r.ratio - 1.0).abs() >= threshold;
    if !(e.q_value <= FDR_Q && excludes_one && large) {
        return Change::Unchanged;
    }
    if overhead(r.ratio, e.higher_is_better) > 0.0 {
        Change::Regression
    } else {
        Change::Improvement
    }
}
