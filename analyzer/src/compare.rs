//! Comparing two runs (`isolab compare RUN_A RUN_B`): for every metric and platform both runs
//! measured, the ratio of B's median to A's with its 95% bootstrap CI, and whether the change is
//! a significant regression or improvement.
//!
//! A change is significant when the CI of the ratio excludes 1 and the change is at least
//! [`MIN_EFFECT`]; it is a regression when it goes the wrong way for the metric (a
//! higher-is-better metric drops, a lower-is-better one rises). `--fail-on-regression` exits 1
//! when [`Comparison::has_regression`].
//!
//! ```
//! use isolab_analyzer::compare::{compare_summaries, Change};
//! use isolab_analyzer::testkit::{RunSpec, write_synthetic_run};
//! let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! for (dir, ns) in [(&a, 100.0), (&b, 120.0)] {
//!     let mut spec = RunSpec::new("r", "p");
//!     spec.experiment("micro", "overhead", &[("native", "native")])
//!         .summary_metric("native", "syscall", "ns_per_call", "ns", false, &[ns, ns + 1.0, ns - 1.0]);
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
use crate::report::{AnalyzeError, analyze};
use crate::stats;
use crate::summary::Summary;

/// Smallest relative change reported as significant (1%).
pub const MIN_EFFECT: f64 = 0.01;

/// What happened to a metric between the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Significantly worse in B.
    Regression,
    /// Significantly better in B.
    Improvement,
    /// No significant change.
    Unchanged,
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
    /// `median_b / median_a`.
    pub ratio: f64,
    /// 95% bootstrap CI of the ratio.
    pub ratio_ci: [f64; 2],
    /// Change in percent, `100·(ratio − 1)`.
    pub delta_pct: f64,
    /// Its 95% CI.
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
    /// [`MIN_EFFECT`].
    pub min_effect: f64,
    /// Metrics measured in both, in A's order.
    pub entries: Vec<ComparisonEntry>,
    /// `experiment / metric / platform` measured only in A.
    pub only_in_a: Vec<String>,
    /// `experiment / metric / platform` measured only in B.
    pub only_in_b: Vec<String>,
}

impl Comparison {
    /// The significant regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &ComparisonEntry> {
        self.entries
            .iter()
            .filter(|e| e.change == Change::Regression)
    }

    /// Whether any metric regressed significantly (`--fail-on-regression` exits 1 then).
    pub fn has_regression(&self) -> bool {
        self.regressions().next().is_some()
    }

    /// The comparison as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let count = |c: Change| self.entries.iter().filter(|e| e.change == c).count();
        let _ = writeln!(out, "# isolab compare: {} → {}\n", self.run_a, self.run_b);
        let _ = writeln!(
            out,
            "{} regressions, {} improvements, {} unchanged (significant: 95% CI of B/A excludes 1 \
             and the change is at least {}%).\n",
            count(Change::Regression),
            count(Change::Improvement),
            count(Change::Unchanged),
            self.min_effect * 100.0
        );
        let _ = writeln!(
            out,
            "| experiment | metric | platform | A | B | B/A [95% CI] | change |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---|");
        for e in &self.entries {
            let change = match e.change {
                Change::Regression => format!("**regression** ({:+.1}%)", e.delta_pct),
                Change::Improvement => format!("improvement ({:+.1}%)", e.delta_pct),
                Change::Unchanged => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} {} | {} [{}, {}] | {change} |",
                e.experiment,
                e.metric.replace('|', "\\|"),
                e.platform,
                fmt_num(e.median_a),
                e.unit,
                fmt_num(e.median_b),
                e.unit,
                fmt_ratio(e.ratio),
                fmt_ratio(e.ratio_ci[0]),
                fmt_ratio(e.ratio_ci[1]),
            );
        }
        for (title, list) in [
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

/// Analyses both run directories and compares them.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Comparison, AnalyzeError> {
    Ok(compare_summaries(&analyze(run_a)?, &analyze(run_b)?))
}

/// Compares two analysed runs (the per-repetition values in their summaries).
pub fn compare_summaries(a: &Summary, b: &Summary) -> Comparison {
    let mut entries = Vec::new();
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
                let Some(r) = stats::ratio_of_medians(&pb.values, &pa.values) else {
                    continue;
                };
                let excludes_one = r.ci_low > 1.0 || r.ci_high < 1.0;
                let significant = excludes_one && (r.ratio - 1.0).abs() >= MIN_EFFECT;
                let change = match (significant, overhead(r.ratio, ma.higher_is_better) > 0.0) {
                    (false, _) => Change::Unchanged,
                    (true, true) => Change::Regression,
                    (true, false) => Change::Improvement,
                };
                entries.push(ComparisonEntry {
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
                    delta_pct: 100.0 * (r.ratio - 1.0),
                    delta_ci_pct: [100.0 * (r.ci_low - 1.0), 100.0 * (r.ci_high - 1.0)],
                    change,
                });
            }
        }
    }
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
        min_effect: MIN_EFFECT,
        entries,
        only_in_a,
        only_in_b,
    }
}
