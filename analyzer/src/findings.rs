//! The paper's findings as a checklist: for a run of `pipelines/soltesz2007.yaml`, each
//! qualitative finding of Soltesz et al. (EuroSys 2007) next to what this run measured, marked
//! from the run's own statistics:
//!
//! - **reproduced**: the run's confidence intervals support the finding;
//! - **not reproduced**: they contradict it;
//! - **inconclusive**: the run measured it, but its intervals decide neither way (too few
//!   repetitions, intervals that overlap);
//! - **not measured**: the run has no data for it (an `--only` filter, a profile without the
//!   experiment, failed trials).
//!
//! Rules (all on the analyzer's existing statistics, so a finding is never claimed on evidence the
//! rest of the report would not show):
//!
//! - *Containers perform like native* (per platform whose backend is `container`, `docker` or
//!   `lxc`, over the overhead experiments against a native baseline): a metric is **equivalent**
//!   when its whole 95% overhead CI lies within ±[`CHECK_MARGIN_PCT`]%, and **far** when its
//!   verdict is `worse` and the CI's lower end exceeds the margin. Reproduced when at least 3/4
//!   of the metrics are equivalent, not reproduced when more than 1/4 are far.
//! - *VMs pay an overhead* (per `vm` platform): reproduced when more than half of the metrics
//!   have the verdict `worse` (the CI excludes 1 and the exact test agrees, which an A/A pair
//!   reaches for at most 5% of metrics), not reproduced when at least half are equivalent.
//! - *VM overhead exceeds the container's*: per metric with both ratios, the VM's cost-factor CI
//!   lies entirely above the container's (reversed: entirely below). Reproduced when more than
//!   half of the metrics are above, not reproduced when more than half are below.
//! - *Throughput scales with N* (per scaling series): the aggregate's 95% CI at N = the host's
//!   cores (or the largest N below) lies entirely above that at the smallest N; not reproduced
//!   when entirely at or below it. Needs two or more repetitions at both points.
//! - *Fair share*: Jain's index CI lower end ≥ [`JAIN_FAIR`] (not reproduced: upper end below).
//! - *25% reservation*: the fairness analysis's `met` (share ≥ reserved in the required fraction
//!   of intervals).
//! - *Isolation under each adversary* (container platforms): the adversary was contained and the
//!   victim's degradation CI (95%) stays below +[`CHECK_MARGIN_PCT`]% for every victim metric;
//!   not reproduced when an adversary was not contained or a 95% CI lies entirely above it.
//!
//! A finding needs at least two repetitions on each side; one repetition is never evidence.

use std::collections::HashMap;
use std::fmt::Write as _;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::charts::overhead::cost_factor;
use crate::metrics::is_headline;
use crate::stats::CONFIDENCE;
use crate::summary::{ExperimentSummary, PlatformStats, Verdict};

mod experiments;
use experiments::{fairness, isolation, scaling};

/// Pipelines whose runs get the checklist.
pub const PAPER_PIPELINE: &str = "soltesz2007";
/// Margin (percent) within which a platform counts as performing like the baseline.
pub const CHECK_MARGIN_PCT: f64 = 10.0;
/// Jain's index at or above which shares count as fair.
pub const JAIN_FAIR: f64 = 0.95;

/// Backends that are operating-system-level virtualization (containers).
const CONTAINER_BACKENDS: &[&str] = &["container", "docker", "lxc"];

/// What the run says about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The run's intervals support the finding.
    Reproduced,
    /// They contradict it.
    NotReproduced,
    /// Measured, but the intervals decide neither way.
    Inconclusive,
    /// No data for it in this run.
    NotMeasured,
}

impl Status {
    /// Words in `report.md` (Markdown).
    pub fn label(self) -> &'static str {
        match self {
            Self::Reproduced => "✓ reproduced",
            Self::NotReproduced => "✗ **not reproduced**",
            Self::Inconclusive => "? inconclusive",
            Self::NotMeasured => "– not measured",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The paper's finding, in a few words.
    pub finding: String,
    /// What this run measured.
    pub measured: String,
    /// The verdict.
    pub status: Status,
}

/// The checklist of a run of the paper's pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperChecklist {
    /// The paper.
    pub paper: String,
    /// Findings in the paper's order.
    pub findings: Vec<Finding>,
}

/// Platform → backend, from the manifest's trials.
pub type Backends = HashMap<String, String>;

/// A headline metric's verdict on one platform, as the checklist counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Equivalent,
    Worse,
    Far,
    Undecided,
}

fn call(p: &PlatformStats) -> Option<Call> {
    let [lo, hi] = p.overhead_ci_pct?;
    let full = p.ratio_ci_level.is_some_and(|l| l >= CONFIDENCE);
    let verdict = p.verdict?;
    Some(if !full || p.n < 2 || p.n_baseline.unwrap_or(0) < 2 {
        Call::Undecided
    } else if lo >= -CHECK_MARGIN_PCT && hi <= CHECK_MARGIN_PCT {
        Call::Equivalent
    } else if verdict == Verdict::Worse && lo > CHECK_MARGIN_PCT {
        Call::Far
    } else if verdict == Verdict::Worse {
        Call::Worse
    } else {
        Call::Undecided
    })
}

/// Overhead experiments whose baseline runs on the native backend.
fn native_overheads<'a>(
    experiments: &'a IndexMap<String, ExperimentSummary>,
    backends: &Backends,
) -> Vec<(&'a String, &'a ExperimentSummary)> {
    experiments
        .iter()
        .filter(|(_, e)| e.analysis == "overhead")
        .filter(|(_, e)| {
            e.baseline
                .as_ref()
                .is_some_and(|b| backends.get(b).is_some_and(|x| x == "native"))
        })
        .collect()
}

/// Calls of every headline metric of `platform` over the native-baseline overhead experiments.
fn calls(overheads: &[(&String, &ExperimentSummary)], platform: &str) -> Vec<Call> {
    overheads
        .iter()
        .flat_map(|(_, e)| e.metrics.values())
        .filter(|m| is_headline(&m.metric))
        .filter_map(|m| m.platforms.get(platform).and_then(call))
        .collect()
}

fn count(calls: &[Call], which: &[Call]) -> usize {
    calls.iter().filter(|c| which.contains(c)).count()
}

fn platforms_of<'a>(
    overheads: &[(&'a String, &'a ExperimentSummary)],
    backends: &Backends,
    wanted: &[&str],
) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for (_, e) in overheads {
        for p in e.metrics.values().flat_map(|m| m.platforms.keys()) {
            let b = backends.get(p).map(String::as_str).unwrap_or_default();
            if wanted.contains(&b) && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn containers_like_native(
    overheads: &[(&String, &ExperimentSummary)],
    backends: &Backends,
) -> Vec<Finding> {
    let claim = |p: &str| {
        format!("Containers perform like native: `{p}` within ±{CHECK_MARGIN_PCT}% of native")
    };
    let platforms = platforms_of(overheads, backends, CONTAINER_BACKENDS);
    if platforms.is_empty() {
        return vec![not_measured(
            "Containers perform like native",
            "no container platform against a native baseline",
        )];
    }
    platforms
        .into_iter()
        .map(|p| {
            let c = calls(overheads, p);
            let (eq, far) = (count(&c, &[Call::Equivalent]), count(&c, &[Call::Far]));
            let n = c.len();
            let status = if n == 0 {
                Status::NotMeasured
            } else if 4 * eq >= 3 * n {
                Status::Reproduced
            } else if 4 * far > n {
                Status::NotReproduced
            } else {
                Status::Inconclusive
            };
            Finding {
                finding: claim(p),
                measured: format!(
                    "{eq} of {n} metrics within ±{CHECK_MARGIN_PCT}% (whole 95% CI), {far} more than {CHECK_MARGIN_PCT}% worse, {} undecided",
                    n - eq - far
                ),
                status,
            }
        })
        .collect()
}

fn vm_overhead(overheads: &[(&String, &ExperimentSummary)], backends: &Backends) -> Vec<Finding> {
    let platforms = platforms_of(overheads, backends, &["vm"]);
    if platforms.is_empty() {
        return vec![not_measured(
            "VMs pay an overhead over native",
            "no VM platform against a native baseline",
        )];
    }
    platforms
        .into_iter()
        .map(|p| {
            let c = calls(overheads, p);
            let worse = count(&c, &[Call::Worse, Call::Far]);
            let eq = count(&c, &[Call::Equivalent]);
            let n = c.len();
            let status = if n == 0 {
                Status::NotMeasured
            } else if 2 * worse > n {
                Status::Reproduced
            } else if 2 * eq >= n {
                Status::NotReproduced
            } else {
                Status::Inconclusive
            };
            Finding {
                finding: format!("VMs pay an overhead over native: `{p}` significantly worse"),
                measured: format!(
                    "{worse} of {n} metrics significantly worse than native, {eq} within ±{CHECK_MARGIN_PCT}%"
                ),
                status,
            }
        })
        .collect()
}

pub(crate) fn not_measured(finding: &str, why: &str) -> Finding {
    Finding {
        finding: finding.to_owned(),
        measured: why.to_owned(),
        status: Status::NotMeasured,
    }
}

/// The cost-factor CI of a metric on a platform, when it is a 95% one from ≥ 2 repetitions.
fn cost_ci(p: &PlatformStats, higher_is_better: bool) -> Option<[f64; 2]> {
    let [lo, hi] = p.ratio_ci?;
    if p.n < 2 || p.ratio_ci_level.is_none_or(|l| l < CONFIDENCE) {
        return None;
    }
    let (a, b) = (
        cost_factor(lo, higher_is_better),
        cost_factor(hi, higher_is_better),
    );
    Some([a.min(b), a.max(b)])
}

fn vm_above_container(overheads: &[(&String, &ExperimentSummary)], backends: &Backends) -> Finding {
    let finding = "VM overhead exceeds the container's";
    let vms = platforms_of(overheads, backends, &["vm"]);
    let cts = platforms_of(overheads, backends, &["container"]);
    let (Some(vm), Some(ct)) = (vms.first(), cts.first()) else {
        return not_measured(
            finding,
            "needs a `vm` and a `container` platform against native",
        );
    };
    let (mut above, mut below, mut n) = (0, 0, 0);
    for m in overheads
        .iter()
        .flat_map(|(_, e)| e.metrics.values())
        .filter(|m| is_headline(&m.metric))
    {
        let (Some(v), Some(c)) = (m.platforms.get(*vm), m.platforms.get(*ct)) else {
            continue;
        };
        let (Some(v), Some(c)) = (
            cost_ci(v, m.higher_is_better),
            cost_ci(c, m.higher_is_better),
        ) else {
            continue;
        };
        n += 1;
        if v[0] > c[1] {
            above += 1;
        } else if v[1] < c[0] {
            below += 1;
        }
    }
    let status = if n == 0 {
        Status::NotMeasured
    } else if 2 * above > n {
        Status::Reproduced
    } else if 2 * below > n {
        Status::NotReproduced
    } else {
        Status::Inconclusive
    };
    Finding {
        finding: format!("{finding}: `{vm}` costlier than `{ct}`"),
        measured: format!(
            "{above} of {n} metrics: `{vm}`'s 95% CI entirely above `{ct}`'s; {below} entirely below"
        ),
        status,
    }
}

/// The checklist of a run of [`PAPER_PIPELINE`]; `None` for other pipelines.
pub fn checklist(
    pipeline: &str,
    experiments: &IndexMap<String, ExperimentSummary>,
    backends: &Backends,
    cores: Option<u64>,
) -> Option<PaperChecklist> {
    if pipeline != PAPER_PIPELINE {
        return None;
    }
    let overheads = native_overheads(experiments, backends);
    let mut findings = containers_like_native(&overheads, backends);
    findings.extend(vm_overhead(&overheads, backends));
    findings.push(vm_above_container(&overheads, backends));
    findings.extend(scaling(experiments, cores));
    findings.extend(fairness(experiments));
    findings.extend(isolation(experiments, backends));
    Some(PaperChecklist {
        paper: "Soltesz et al., \"Container-based operating system virtualization: a scalable, \
                high-performance alternative to hypervisors\", EuroSys 2007"
            .to_owned(),
        findings,
    })
}

/// The `## The paper's findings` section of `report.md`.
pub fn markdown(c: &PaperChecklist) -> String {
    let mut out = String::from("## The paper's findings\n\n");
    let _ = writeln!(
        out,
        "{}: each qualitative finding next to this run's numbers, marked from the run's own 95% \
         CIs (see `docs/report.md` for the rules; one repetition is never evidence).\n",
        c.paper
    );
    let _ = writeln!(out, "| finding | this run | status |\n|---|---|---|");
    for f in &c.findings {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            f.finding.replace('|', "\\|"),
            f.measured.replace('|', "\\|"),
            f.status.label()
        );
    }
    out.push('\n');
    out
}
