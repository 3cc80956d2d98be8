//! `report.md`: the run in tables a researcher can paste.

use std::fmt::Write as _;

use crate::metrics::{is_bookkeeping, is_headline, is_host_metric};
use crate::summary::{
    ExperimentSummary, FairnessSummary, IsolationSummary, MetricSummary, NoiseSummary,
    PlatformStats, ScalingSummary, Stat, StopReason, Summary,
};
use crate::{overhead, stats};

/// A number with about four significant digits; scientific notation only when very large or
/// very small.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let mag = x.abs().log10().floor();
    if !(-3.0..6.0).contains(&mag) {
        return format!("{x:.3e}");
    }
    // mag is in -3..6, so 3 - mag is in -2..=6.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = (3.0 - mag).max(0.0) as usize;
    format!("{x:.decimals$}")
}

/// A ratio with three decimals.
pub fn fmt_ratio(x: f64) -> String {
    format!("{x:.3}")
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn median_cell(p: &PlatformStats) -> String {
    let mut s = format!(
        "{} [{}, {}]",
        fmt_num(p.median),
        fmt_num(p.ci_low),
        fmt_num(p.ci_high)
    );
    if p.outliers > 0 {
        let _ = write!(
            s,
            " ({} outlier{})",
            p.outliers,
            if p.outliers == 1 { "" } else { "s" }
        );
    }
    s
}

fn verdict_cell(p: &PlatformStats) -> String {
    match (p.verdict, p.overhead_pct, p.ratio_ci) {
        (Some(v), Some(o), _) => overhead::describe(v, o, p.n, p.n_baseline.unwrap_or(0)),
        (None, _, None) if p.ratio_to_baseline.is_some() => "baseline".to_owned(),
        _ => "–".to_owned(),
    }
}

fn ratio_cell(p: &PlatformStats) -> String {
    match (p.ratio_to_baseline, p.ratio_ci) {
        (Some(r), Some([lo, hi])) => {
            let mut s = format!("{} [{}, {}]", fmt_ratio(r), fmt_ratio(lo), fmt_ratio(hi));
            // An interval that is not a 95% one says what it is.
            if let Some(level) = p.ratio_ci_level.filter(|l| *l < stats::CONFIDENCE) {
                let _ = write!(s, " ({:.0}% CI)", 100.0 * level);
            }
            s
        }
        (Some(r), None) => fmt_ratio(r),
        _ => "–".to_owned(),
    }
}

/// Repetitions and why they stopped there: `5 (fixed)`, `12 (CI met)`, `30 (max)`, and
/// `missing in 1 of 6 trials` when some `ok` trials have no value of the metric.
fn n_cell(p: &PlatformStats) -> String {
    let mut s = match p.stop_reason {
        Some(r) => format!("{} ({})", p.n, stop_label(r)),
        None => p.n.to_string(),
    };
    if p.trials > p.n {
        let _ = write!(s, ", missing in {} of {} trials", p.trials - p.n, p.trials);
    }
    s
}

/// Short name of a stop reason in tables.
fn stop_label(r: StopReason) -> &'static str {
    match r {
        StopReason::Fixed => "fixed",
        StopReason::CiWithinTarget => "CI met",
        StopReason::MaxRepetitions => "max",
        StopReason::NoValues => "no values",
    }
}

fn metric_rows(out: &mut String, label: &str, m: &MetricSummary, ratios: bool) {
    for (i, (platform, p)) in m.platforms.iter().enumerate() {
        let (name, unit) = if i == 0 {
            (cell(label), cell(&m.unit))
        } else {
            (String::new(), String::new())
        };
        let _ = write!(
            out,
            "| {name} | {unit} | {} | {} | {} |",
            cell(platform),
            n_cell(p),
            median_cell(p)
        );
        if ratios {
            let _ = write!(out, " {} | {} |", ratio_cell(p), verdict_cell(p));
        }
        out.push('\n');
    }
}

/// Renders `report.md`.
pub fn render(summary: &Summary) -> String {
    let mut out = header(summary);
    for (name, e) in &summary.experiments {
        out.push_str(&experiment_section(name, e));
    }
    out.push_str(&crate::environment::markdown(&summary.environment));
    out
}

/// The run's header: id, pipeline, hosts, trial counts, failed trials, missing files, the
/// paper's findings (soltesz2007) and the noise. The environment closes the report.
pub fn header(summary: &Summary) -> String {
    let mut out = String::new();
    let s = summary;
    let _ = writeln!(out, "# isolab report: {}\n", s.run_id);
    let sha: String = s.pipeline_sha256.chars().take(12).collect();
    let _ = writeln!(
        out,
        "- pipeline: `{}` (sha256 `{sha}`), isolab {}",
        s.pipeline, s.isolab_version
    );
    let finished = s.finished_at.as_deref().unwrap_or("not finished");
    let _ = writeln!(
        out,
        "- status: {}, started {}, finished {finished}",
        s.status, s.started_at
    );
    let hosts = if s.hosts.is_empty() {
        "none recorded".to_owned()
    } else {
        s.hosts.join(", ")
    };
    let _ = writeln!(out, "- hosts: {hosts}");
    let c = &s.trials;
    let mut counts = format!("{} planned, {} ok, {} failed", c.planned, c.ok, c.failed);
    for (n, what) in [
        (c.timed_out, "timed out"),
        (c.cancelled, "cancelled"),
        (c.not_run, "not run"),
        (c.unfinished, "unfinished"),
    ] {
        if n > 0 {
            let _ = write!(counts, ", {n} {what}");
        }
    }
    let _ = writeln!(out, "- trials: {counts}");
    out.push('\n');

    if !s.failed_trials.is_empty() {
        let _ = writeln!(out, "## Failed trials\n");
        let _ = writeln!(
            out,
            "| trial | experiment | platform | workload | repetition | status | reason |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for f in &s.failed_trials {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                f.id,
                cell(&f.experiment),
                cell(&f.platform),
                cell(&f.workload),
                f.repetition,
                f.status,
                cell(f.reason.as_deref().unwrap_or("–"))
            );
        }
        out.push('\n');
    }
    if !s.missing_files.is_empty() {
        let _ = writeln!(out, "## Missing files\n");
        for f in &s.missing_files {
            let _ = writeln!(out, "- `{f}`");
        }
        out.push('\n');
    }
    if let Some(paper) = &s.paper {
        out.push_str(&crate::findings::markdown(paper));
    }
    noise(&mut out, &s.noise);
    out
}

/// Optional fraction as a percentage, `–` when absent.
fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), pct)
}

/// The noise section: host steal and background CPU per experiment and platform, and the
/// trials that ran on a busy host.
fn noise(out: &mut String, n: &NoiseSummary) {
    let _ = writeln!(out, "## Noise\n");
    if !n.recorded {
        let _ = writeln!(
            out,
            "Host steal and background CPU: not recorded (the agent that ran this run did not \
             report them).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Share of the host's CPU capacity during each trial that the hypervisor stole (steal) \
         or that ran outside the trial's cgroups (background), median over the trials. Trials \
         above {} background or {} steal ran on a busy host and are listed below.\n",
        pct(n.background_threshold),
        pct(n.steal_threshold)
    );
    let _ = writeln!(
        out,
        "| experiment | platform | trials | steal | background |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for p in &n.platforms {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&p.experiment),
            cell(&p.platform),
            p.trials,
            opt_pct(p.steal_median),
            opt_pct(p.background_median)
        );
    }
    out.push('\n');
    if n.flagged.is_empty() {
        let _ = writeln!(out, "No trial ran on a busy host.\n");
        return;
    }
    let _ = writeln!(out, "Trials on a busy host:\n");
    let _ = writeln!(
        out,
        "| trial | experiment | platform | workload | repetition | steal | background |"
    );
    let _ = writeln!(out, "|---|---|---|---|---:|---:|---:|");
    for t in &n.flagged {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            t.trial,
            cell(&t.experiment),
            cell(&t.platform),
            cell(&t.workload),
            t.repetition,
            opt_pct(t.steal),
            opt_pct(t.background)
        );
    }
    out.push('\n');
}

/// One experiment's section: heading, analysis tables, per-metric table.
pub fn experiment_section(name: &str, e: &ExperimentSummary) -> String {
    let mut out = String::new();
    experiment(&mut out, name, e);
    out
}

fn experiment(out: &mut String, name: &str, e: &ExperimentSummary) {
    let _ = writeln!(out, "## {name} ({})\n", e.analysis);
    if e.metrics.is_empty() {
        let _ = writeln!(out, "No data.\n");
        return;
    }
    if let Some(sc) = &e.scaling {
        scaling(out, sc);
    }
    if let Some(f) = &e.fairness {
        fairness(out, f);
    }
    if let Some(i) = &e.isolation {
        isolation(out, i);
    }
    let pick = |f: fn(&str) -> bool| -> Vec<(&String, &MetricSummary)> {
        e.metrics.iter().filter(|(_, m)| f(&m.metric)).collect()
    };
    let (workload, bookkeeping, host) = (
        pick(is_headline),
        pick(is_bookkeeping),
        pick(is_host_metric),
    );
    match &e.baseline {
        Some(b) => {
            let _ = writeln!(
                out,
                "Median across repetitions with its 95% bootstrap CI (a description of the spread, \
                 not a test); ratio to `{b}`: Hodges–Lehmann estimate on log values with its exact \
                 distribution-free 95% CI (Moses); verdict from that CI (within ±{}% counts as the \
                 same; too few repetitions when no 95% CI exists, e.g. 3 against 3, and the widest \
                 CI is shown with its real level).",
                overhead::EQUIVALENCE_MARGIN * 100.0
            );
        }
        None => {
            let _ = writeln!(out, "Median across repetitions with its 95% bootstrap CI.");
        }
    }
    let stops = e
        .metrics
        .values()
        .flat_map(|m| m.platforms.values())
        .any(|p| p.stop_reason.is_some());
    if stops {
        let _ = writeln!(
            out,
            "n: repetitions, and why they stopped there (fixed: as the pipeline asked; CI met: \
             `until_stable`'s CI target reached; max: `max_repetitions` reached first)."
        );
    }
    out.push('\n');
    for (title, rows) in [
        ("", workload),
        (
            "Bookkeeping (operations, elapsed time), mean per instance:\n\n",
            bookkeeping,
        ),
        ("Host accounting (cgroup), mean per instance:\n\n", host),
    ] {
        if rows.is_empty() {
            continue;
        }
        out.push_str(title);
        if e.baseline.is_some() {
            let _ = writeln!(
                out,
                "| metric | unit | platform | n | median [95% CI] | × {} [95% CI] | verdict |",
                e.baseline.as_deref().unwrap_or_default()
            );
            let _ = writeln!(out, "|---|---|---|---:|---:|---:|---|");
        } else {
            let _ = writeln!(out, "| metric | unit | platform | n | median [95% CI] |");
            let _ = writeln!(out, "|---|---|---|---:|---:|");
        }
        for (label, m) in rows {
            metric_rows(out, label, m, e.baseline.is_some());
        }
        out.push('\n');
    }
}

fn stat(s: &Stat) -> String {
    format!(
        "{} [{}, {}]",
        fmt_num(s.median),
        fmt_num(s.ci_low),
        fmt_num(s.ci_high)
    )
}

fn scaling(out: &mut String, sc: &ScalingSummary) {
    let _ = writeln!(
        out,
        "Scaling: aggregate = sum over instances; efficiency = agg(N) / (N/N0 · agg(N0)); knee = \
         first N with efficiency below {}.\n",
        sc.knee_efficiency
    );
    let _ = writeln!(
        out,
        "| metric | platform | N | n | aggregate [95% CI] | per instance [95% CI] | efficiency |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for s in &sc.series {
        for (i, p) in s.points.iter().enumerate() {
            let (label, platform) = if i == 0 {
                (cell(&s.label), cell(&s.platform))
            } else {
                Default::default()
            };
            let _ = writeln!(
                out,
                "| {label} | {platform} | {} | {} | {} | {} | {} |",
                p.n_instances,
                p.n,
                stat(&p.aggregate),
                stat(&p.per_instance),
                p.efficiency
                    .map_or_else(|| "–".to_owned(), |e| format!("{e:.2}"))
            );
        }
    }
    out.push('\n');
    for s in &sc.series {
        let knee = match s.knee {
            Some(n) => format!("knee at N={n}"),
            None => format!(
                "no knee up to N={}",
                s.points.last().map_or(0, |p| p.n_instances)
            ),
        };
        let _ = writeln!(out, "- {} on {}: {knee}", s.label, s.platform);
    }
    out.push('\n');
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn fairness(out: &mut String, f: &FairnessSummary) {
    let timeline = f.timeline_source.as_deref().unwrap_or("none");
    let _ = writeln!(
        out,
        "Fairness from `{}` (timeline: `{timeline}`, {} s intervals). Jain's index of \
         received/entitled: 1 is fair, 1/n is one-takes-all.\n",
        f.source, f.interval_s
    );
    let _ = writeln!(
        out,
        "| platform | n | Jain [95% CI] | max share error [95% CI] | reservation |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for (p, fp) in &f.platforms {
        let reservation = match &fp.reservation {
            Some(r) => format!(
                "{} ≥ {}: {} ({} of intervals)",
                r.group,
                pct(r.cpu),
                if r.met { "met" } else { "NOT met" },
                pct(r.met_fraction)
            ),
            None => "–".to_owned(),
        };
        let e = &fp.max_share_error;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} [{}, {}] | {reservation} |",
            cell(p),
            fp.n,
            stat(&fp.jain),
            pct(e.median),
            pct(e.ci_low),
            pct(e.ci_high)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| platform | group | instances | weight | entitled | received [95% CI] |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for (p, fp) in &f.platforms {
        for (g, share) in &fp.groups {
            let r = &share.received;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} [{}, {}] |",
                cell(p),
                cell(g),
                share.instances,
                share.weight,
                pct(share.entitled),
                pct(r.median),
                pct(r.ci_low),
                pct(r.ci_high)
            );
        }
    }
    out.push('\n');
}

fn isolation(out: &mut String, iso: &IsolationSummary) {
    let _ = writeln!(
        out,
        "Victim degradation vs `{}` on the same platform (positive = worse), with 95% CI \
         (Hodges–Lehmann ratio; with too few repetitions for 95% the widest CI and its level).\n",
        iso.baseline
    );
    for m in &iso.metrics {
        let platforms: Vec<&str> = {
            let mut v: Vec<&str> = Vec::new();
            for c in &m.cells {
                if !v.contains(&c.platform.as_str()) {
                    v.push(&c.platform);
                }
            }
            v
        };
        let _ = writeln!(out, "{} ({}):\n", m.label, m.unit);
        let _ = writeln!(out, "| adversary | {} |", platforms.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(platforms.len()));
        for a in &iso.adversaries {
            let cells: Vec<String> = platforms
                .iter()
                .map(|p| {
                    m.cells
                        .iter()
                        .find(|c| c.adversary == *a && c.platform == *p)
                        .map_or_else(
                            || "–".to_owned(),
                            |c| match c.degradation_ci_pct {
                                Some([lo, hi]) => {
                                    let mut s =
                                        format!("{:.1}% [{:.1}, {:.1}]", c.degradation_pct, lo, hi);
                                    if let Some(l) =
                                        c.degradation_ci_level.filter(|l| *l < stats::CONFIDENCE)
                                    {
                                        let _ = write!(s, " ({:.0}% CI)", 100.0 * l);
                                    }
                                    s
                                }
                                None => format!("{:.1}%", c.degradation_pct),
                            },
                        )
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", cell(a), cells.join(" | "));
        }
        out.push('\n');
    }
    if !iso.outcomes.is_empty() {
        let _ = writeln!(
            out,
            "| platform | adversary | trials | failed | OOM-killed | limit hit | leaks | contained |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|---|");
        for o in &iso.outcomes {
            let leaks = if o.leaks.is_empty() {
                "none".to_owned()
            } else {
                o.leaks.join("; ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&o.platform),
                cell(&o.adversary),
                o.trials,
                o.failed,
                o.killed,
                o.limit_hit,
                cell(&leaks),
                if o.contained { "yes" } else { "NO" }
            );
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(fmt_num(100.0), "100.0");
        assert_eq!(fmt_num(0.0125), "0.01250");
        assert_eq!(fmt_num(12345.6), "12346");
        assert_eq!(fmt_num(1.5), "1.500");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(2.5e9), "2.500e9");
        assert_eq!(fmt_ratio(1.1), "1.100");
    }
}
