//! `report.md`: the run in tables a researcher can paste.

use std::fmt::Write as _;

use crate::summary::{MetricSummary, PlatformStats, Summary};

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

fn ratio_cell(p: &PlatformStats) -> String {
    match (p.ratio_to_native, p.ratio_ci) {
        (Some(r), Some([lo, hi])) => {
            format!("{} [{}, {}]", fmt_ratio(r), fmt_ratio(lo), fmt_ratio(hi))
        }
        (Some(r), None) => fmt_ratio(r),
        _ => "–".to_owned(),
    }
}

fn metric_rows(out: &mut String, label: &str, m: &MetricSummary) {
    let mut first = true;
    for (platform, p) in &m.platforms {
        let (name, unit) = if first {
            (cell(label), cell(&m.unit))
        } else {
            (String::new(), String::new())
        };
        first = false;
        let _ = writeln!(
            out,
            "| {name} | {unit} | {} | {} | {} | {} |",
            cell(platform),
            p.n,
            median_cell(p),
            ratio_cell(p)
        );
    }
}

/// Renders `report.md`.
pub fn render(summary: &Summary) -> String {
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

    for (name, e) in &s.experiments {
        let _ = writeln!(out, "## {name} ({})\n", e.analysis);
        if e.metrics.is_empty() {
            let _ = writeln!(out, "No data.\n");
            continue;
        }
        let baseline = e.baseline.as_deref().unwrap_or("no native platform");
        let _ = writeln!(
            out,
            "Median across repetitions with its 95% bootstrap CI; ratio to `{baseline}`.\n"
        );
        let _ = writeln!(
            out,
            "| metric | unit | platform | n | median [95% CI] | × native [95% CI] |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|");
        for (label, m) in &e.metrics {
            metric_rows(&mut out, label, m);
        }
        out.push('\n');
    }
    out
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
