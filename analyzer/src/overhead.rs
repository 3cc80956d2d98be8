//! Overhead verdicts: what a ratio to the baseline and its confidence interval allow one to say.
//!
//! The overhead is the relative cost against the baseline, positive when the platform is worse:
//! `ratio − 1` for a lower-is-better metric (time per call), `1 − ratio` for a higher-is-better
//! one (throughput). The ratio and its interval are [`crate::ratio`]'s (Hodges–Lehmann on log
//! values, exact Moses interval). Verdicts, in this order:
//!
//! - too few repetitions: the sample sizes allow no 95% interval at all (3 against 3, 3
//!   against 4); no percentage is claimed, whatever the values;
//! - within 1%: the whole 95% CI of the overhead lies inside ±[`EQUIVALENCE_MARGIN`];
//! - worse or better: the CI excludes zero (the ratio's CI excludes 1) and the exact
//!   Mann–Whitney test agrees (p ≤ 0.05). The interpolated interval holds its 95% on average;
//!   the exact test's size is at most 5% (3.2% at 5 against 5, 4.3% at 10, 4.9% at 20), so
//!   requiring both keeps the rate of false differences between identical platforms at or below
//!   5% at every n;
//! - inconclusive otherwise.

use crate::stats::CONFIDENCE;
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

/// The verdict of an overhead interval and the ratio's test (see
/// [`crate::ratio::RatioEstimate`]: `reaches_confidence` is false when the interval is not a
/// 95% one).
pub fn verdict(overhead_ci: [f64; 2], reaches_confidence: bool, p_value: f64) -> Verdict {
    let [lo, hi] = overhead_ci;
    let significant = p_value <= 1.0 - CONFIDENCE;
    if !reaches_confidence {
        Verdict::TooFewRepetitions
    } else if lo >= -EQUIVALENCE_MARGIN && hi <= EQUIVALENCE_MARGIN {
        Verdict::Within
    } else if lo > 0.0 && significant {
        Verdict::Worse
    } else if hi < 0.0 && significant {
        Verdict::Better
    } else {
        Verdict::Inconclusive
    }
}

/// Words for a verdict with its overhead in percent and the repetitions of the platform and the
/// baseline, e.g. `10.0% worse`, `within 1%`, `too few repetitions (n=3)`.
pub fn describe(verdict: Verdict, overhead_pct: f64, n: usize, n_baseline: usize) -> String {
    match verdict {
        Verdict::Within => format!("within {}%", EQUIVALENCE_MARGIN * 100.0),
        Verdict::Worse => format!("{:.1}% worse", overhead_pct),
        Verdict::Better => format!("{:.1}% better", -overhead_pct),
        Verdict::Inconclusive => "inconclusive".to_owned(),
        Verdict::TooFewRepetitions if n == n_baseline => {
            format!("too few repetitions (n={n})")
        }
        Verdict::TooFewRepetitions => format!("too few repetitions (n={n} vs {n_baseline})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_interval() {
        assert_eq!(verdict([-0.005, 0.008], true, 0.5), Verdict::Within);
        assert_eq!(verdict([0.08, 0.12], true, 0.01), Verdict::Worse);
        assert_eq!(verdict([-0.2, -0.1], true, 0.01), Verdict::Better);
        assert_eq!(verdict([-0.05, 0.05], true, 0.5), Verdict::Inconclusive);
        assert_eq!(
            verdict([0.005, 0.02], true, 0.03),
            Verdict::Worse,
            "significant although small"
        );
        assert_eq!(
            verdict([0.02, 0.12], true, 0.06),
            Verdict::Inconclusive,
            "the interpolated CI excludes 1 but the exact test does not reject"
        );
        assert_eq!(
            verdict([0.08, 0.12], false, 0.1),
            Verdict::TooFewRepetitions,
            "no 95% interval, no claim"
        );
    }

    #[test]
    fn direction_matters() {
        // Throughput down 10% is 10% worse; latency down 10% is 10% better.
        assert!((overhead(0.9, true) - 0.1).abs() < 1e-12);
        assert!((overhead(0.9, false) + 0.1).abs() < 1e-12);
        let ci = overhead_interval([0.85, 0.95], true);
        assert!((ci[0] - 0.05).abs() < 1e-12 && (ci[1] - 0.15).abs() < 1e-12);
        assert_eq!(describe(Verdict::Worse, 10.0, 5, 5), "10.0% worse");
        assert_eq!(describe(Verdict::Within, 0.2, 5, 5), "within 1%");
        assert_eq!(
            describe(Verdict::TooFewRepetitions, 12.0, 3, 3),
            "too few repetitions (n=3)"
        );
        assert_eq!(
            describe(Verdict::TooFewRepetitions, 12.0, 3, 4),
            "too few repetitions (n=3 vs 4)"
        );
    }
}
