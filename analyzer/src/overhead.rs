//! Overhead verdicts: what a ratio to native and its confidence interval allow one to say.
//!
//! The overhead is the relative cost against the baseline, positive when the platform is worse:
//! `ratio − 1` for a lower-is-better metric (time per call), `1 − ratio` for a higher-is-better
//! one (throughput). A platform is "within 1%" when the whole 95% CI of the overhead lies inside
//! ±[`EQUIVALENCE_MARGIN`]; worse or better when the CI excludes zero; otherwise inconclusive.

use crate::summary::Verdict;

/// Half-width of the band in which a platform counts as equivalent to its baseline.
pub const EQUIVALENCE_MARGIN: f64 = 0.01;

/// Overhead (fraction, positive = worse) of a ratio to the baseline.
pub fn overhead(ratio: f64, higher_is_better: bool) -> f64 {
    if higher_is_better {
        1.0 - ratio
    } else {
        ratio - 1.0
    }
}

/// The overhead interval `[low, high]` of a ratio interval.
pub fn overhead_interval(ratio_ci: [f64; 2], higher_is_better: bool) -> [f64; 2] {
    let a = overhead(ratio_ci[0], higher_is_better);
    let b = overhead(ratio_ci[1], higher_is_better);
    [a.min(b), a.max(b)]
}

/// The verdict of an overhead interval.
pub fn verdict(overhead_ci: [f64; 2]) -> Verdict {
    let [lo, hi] = overhead_ci;
    if lo >= -EQUIVALENCE_MARGIN && hi <= EQUIVALENCE_MARGIN {
        Verdict::Within
    } else if lo > 0.0 {
        Verdict::Worse
    } else if hi < 0.0 {
        Verdict::Better
    } else {
        Verdict::Inconclusive
    }
}

/// Words for a verdict with its overhead in percent, e.g. `10.0% worse`, `within 1%`.
pub fn describe(verdict: Verdict, overhead_pct: f64) -> String {
    match verdict {
        Verdict::Within => format!("within {}%", EQUIVALENCE_MARGIN * 100.0),
        Verdict::Worse => format!("{:.1}% worse", overhead_pct),
        Verdict::Better => format!("{:.1}% better", -overhead_pct),
        Verdict::Inconclusive => "inconclusive".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_interval() {
        assert_eq!(verdict([-0.005, 0.008]), Verdict::Within);
        assert_eq!(verdict([0.08, 0.12]), Verdict::Worse);
        assert_eq!(verdict([-0.2, -0.1]), Verdict::Better);
        assert_eq!(verdict([-0.05, 0.05]), Verdict::Inconclusive);
        assert_eq!(
            verdict([0.005, 0.02]),
            Verdict::Worse,
            "significant although small"
        );
    }

    #[test]
    fn direction_matters() {
        // Throughput down 10% is 10% worse; latency down 10% is 10% better.
        assert!((overhead(0.9, true) - 0.1).abs() < 1e-12);
        assert!((overhead(0.9, false) + 0.1).abs() < 1e-12);
        let ci = overhead_interval([0.85, 0.95], true);
        assert!((ci[0] - 0.05).abs() < 1e-12 && (ci[1] - 0.15).abs() < 1e-12);
        assert_eq!(describe(Verdict::Worse, 10.0), "10.0% worse");
        assert_eq!(describe(Verdict::Within, 0.2), "within 1%");
    }
}
