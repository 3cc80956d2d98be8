//! The ratio of two samples with a confidence interval whose 95% holds at small n: the
//! Hodges–Lehmann shift of log values with its exact distribution-free (Moses) interval, and
//! the exact two-sided Mann–Whitney p-value.
//!
//! With `x = ln(numerator)`, `y = ln(denominator)` (m and n values), the `m·n` differences
//! `x_i − y_j` sorted are `d_(1) ≤ … ≤ d_(mn)`. The ratio is `exp(median of the differences)`;
//! under a multiplicative effect (`numerator ≈ r · denominator` in distribution) the interval
//! `[d_(k), d_(mn+1−k)]` holds `ln r` with probability `1 − 2·P(U ≤ k − 1)`, U the
//! Mann–Whitney statistic under the null (Moses 1953, Hollander and Wolfe ch. 4.3). The null
//! distribution is exact (a Gaussian binomial, counted in integers) while `m·n ≤`
//! [`EXACT_LIMIT`], else normal with continuity correction.
//!
//! The exact levels are discrete (m = n = 5: 96.8% or 94.4%): the interval interpolates
//! linearly between the two adjacent order statistics whose levels straddle [`CONFIDENCE`],
//! by the level (Hettmansperger and Sheather 1986 do the same for the sign-test interval of a
//! median). Below the sample sizes where even the widest interval `[d_(1), d_(mn)]` has a level
//! under 95% (`1 − 2/C(m+n, m) < 0.95`: m = n = 3, or 3 against 4) no 95% interval exists:
//! [`RatioEstimate::reaches_confidence`] is false and the interval is the widest one, with its
//! real level in [`RatioEstimate::level`].
//!
//! Ties (quantized values, such as CPU time in 10 ms steps) break the method's assumption of
//! continuous data and can make many differences exactly equal, even the whole interval one
//! point. They are handled conservatively: the p-value breaks the ties the way least favourable
//! to a difference, and when any two values are equal the interval is widened on each side by
//! the log-width of one quantization step (the smallest gap between distinct values) at the
//! smallest value.
//!
//! Everything here is deterministic: no resampling.
//!
//! ```
//! use isolab_analyzer::ratio;
//! let platform = [110.0, 111.0, 109.0, 110.5, 109.5];
//! let baseline = [100.0, 101.0, 99.0, 100.5, 99.5];
//! let r = ratio::ratio(&platform, &baseline).unwrap();
//! assert!((r.ratio - 1.1).abs() < 1e-3);
//! assert!(r.reaches_confidence && r.ci_low > 1.0, "{r:?}");
//! assert!(r.p_value < 0.05);
//! ```

use crate::stats::{CONFIDENCE, median_in_place};

/// Largest `m·n` whose null distribution is computed exactly (C(100, 50) ≈ 1e29 fits in 128
/// bits); beyond it the normal approximation is used.
pub const EXACT_LIMIT: usize = 2500;
/// Name of the method in `summary.json` and the comparison.
pub const METHOD: &str = "hodges_lehmann_log_moses";
/// Cap of the tie widening on the log scale (a factor 10⁶), so bounds stay finite.
const MAX_WIDENING: f64 = 13.815_510_557_964_274;

/// A ratio of two samples with its confidence interval and test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioEstimate {
    /// `exp(median of ln x_i − ln y_j)`: the Hodges–Lehmann ratio.
    pub ratio: f64,
    /// Lower bound of the interval.
    pub ci_low: f64,
    /// Upper bound of the interval.
    pub ci_high: f64,
    /// Confidence level of `[ci_low, ci_high]`: [`CONFIDENCE`] when reachable, else the level
    /// of the widest interval (for continuous data).
    pub level: f64,
    /// Whether the sample sizes allow a [`CONFIDENCE`] interval at all.
    pub reaches_confidence: bool,
    /// Exact two-sided Mann–Whitney p-value (ties broken against a difference).
    pub p_value: f64,
    /// Values in the numerator sample.
    pub n_numerator: usize,
    /// Values in the denominator sample.
    pub n_denominator: usize,
    /// Whether tied values widened the interval.
    pub tied: bool,
}

/// The null distribution of the Mann–Whitney U for sample sizes m and n.
#[derive(Debug, Clone, PartialEq)]
pub struct RankTest {
    m: usize,
    n: usize,
    null: Null,
}

#[derive(Debug, Clone, PartialEq)]
enum Null {
    /// `cdf[u] = P(U ≤ u)`, u in `0..=m·n`.
    Exact(Vec<f64>),
    /// Mean and standard deviation of U.
    Normal(f64, f64),
}

/// Counts of U = 0..=m·n over the C(m+n, m) equally likely arrangements: the coefficients of
/// the Gaussian binomial `[m+n choose m]_q = Π_{i=1..m} (1 − q^{n+i}) / (1 − q^i)`.
fn exact_counts(m: usize, n: usize) -> Vec<i128> {
    let (m, n) = (m.min(n), m.max(n));
    let len = m * n + 1;
    let mut c = vec![0i128; len];
    c[0] = 1;
    for i in 1..=m {
        let s = n + i;
        for k in (s..len).rev() {
            c[k] -= c[k - s];
        }
        // Dividing by (1 − q^i) as a power series only needs the lower coefficients, so the
        // truncation to degree m·n above is harmless.
        for k in i..len {
            c[k] += c[k - i];
        }
    }
    c
}

/// Standard normal distribution function (erfc after Numerical Recipes' `erfcc`, relative error
/// below 1.2·10⁻⁷).
pub fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc_a = t * poly.exp();
    let erfc_x = if x >= 0.0 { erfc_a } else { 2.0 - erfc_a };
    0.5 * erfc_x
}

impl RankTest {
    /// The null distribution for samples of `m` and `n` values.
    pub fn new(m: usize, n: usize) -> Self {
        let mn = m * n;
        let null = if mn <= EXACT_LIMIT {
            let counts = exact_counts(m, n);
            let total: i128 = counts.iter().sum();
            let mut acc = 0i128;
            Null::Exact(
                counts
                    .iter()
                    .map(|c| {
                        acc += c;
                        acc as f64 / total as f64
                    })
                    .collect(),
            )
        } else {
            let (mf, nf) = (m as f64, n as f64);
            Null::Normal(mf * nf / 2.0, (mf * nf * (mf + nf + 1.0) / 12.0).sqrt())
        };
        Self { m, n, null }
    }

    /// `P(U ≤ u)` under the null.
    pub fn cdf(&self, u: i64) -> f64 {
        let mn = i64::try_from(self.m * self.n).unwrap_or(i64::MAX);
        if u < 0 {
            return 0.0;
        }
        if u >= mn {
            return 1.0;
        }
        match &self.null {
            // 0 ≤ u < m·n.
            #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
            Null::Exact(cdf) => cdf[u as usize],
            Null::Normal(mean, sd) => normal_cdf((u as f64 + 0.5 - mean) / sd),
        }
    }

    /// Level of the interval `[d_(k), d_(mn+1−k)]`, k ≥ 1: `1 − 2·P(U ≤ k − 1)`.
    pub fn level(&self, k: usize) -> f64 {
        1.0 - 2.0 * self.cdf(i64::try_from(k).unwrap_or(i64::MAX) - 1)
    }

    /// Two-sided p-value of an observed U.
    pub fn p_value(&self, u: i64) -> f64 {
        let lower = self.cdf(u);
        let upper = 1.0 - self.cdf(u - 1);
        (2.0 * lower.min(upper)).min(1.0)
    }

    /// The ratio of `numerator` to `denominator` (sizes m and n as given to [`RankTest::new`]).
    /// `None` when a size differs or a value is not positive (no logarithm).
    pub fn ratio(&self, numerator: &[f64], denominator: &[f64]) -> Option<RatioEstimate> {
        if numerator.len() != self.m || denominator.len() != self.n || self.m * self.n == 0 {
            return None;
        }
        if numerator
            .iter()
            .chain(denominator)
            .any(|v| v.is_nan() || *v <= 0.0)
        {
            return None;
        }
        let x: Vec<f64> = numerator.iter().map(|v| v.ln()).collect();
        let y: Vec<f64> = denominator.iter().map(|v| v.ln()).collect();
        let mut d = Vec::with_capacity(x.len() * y.len());
        let (mut greater, mut equal) = (0i64, 0i64);
        for (xi, ri) in x.iter().zip(numerator) {
            for (yj, rj) in y.iter().zip(denominator) {
                d.push(xi - yj);
                match ri.total_cmp(rj) {
                    std::cmp::Ordering::Greater => greater += 1,
                    std::cmp::Ordering::Equal => equal += 1,
                    std::cmp::Ordering::Less => {}
                }
            }
        }
        d.sort_unstable_by(f64::total_cmp);
        let mn = d.len();
        let shift = {
            let mut copy = d.clone();
            median_in_place(&mut copy)?
        };
        // Ties broken the way least favourable to a difference: U as close to m·n/2 as the
        // tied pairs allow.
        let centre = i64::try_from(mn / 2).unwrap_or(i64::MAX);
        let u = centre.clamp(greater, greater + equal);
        let p_value = self.p_value(u);
        let at = |k: usize| d[k - 1];
        let widest = self.level(1);
        let (low, high, level, reaches) = if widest < CONFIDENCE {
            (at(1), at(mn), widest, false)
        } else {
            let kmax = mn.div_ceil(2).max(1);
            let mut k = 1;
            while k < kmax && self.level(k + 1) >= CONFIDENCE {
                k += 1;
            }
            let lambda = if k < kmax {
                let (gk, gnext) = (self.level(k), self.level(k + 1));
                if gk > gnext {
                    ((gk - CONFIDENCE) / (gk - gnext)).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            } else {
                0.0
            };
            // Interpolating only ever moves inwards, and only while k < kmax ≤ m·n.
            let next = if lambda > 0.0 { k + 1 } else { k };
            let (hi, hi_next) = (mn + 1 - k, mn + 1 - next);
            let low = at(k) + lambda * (at(next) - at(k));
            let high = at(hi) - lambda * (at(hi) - at(hi_next));
            (low, high, CONFIDENCE, true)
        };
        let widen = tie_widening(numerator, denominator);
        Some(RatioEstimate {
            ratio: shift.exp(),
            ci_low: (low - widen).exp(),
            ci_high: (high + widen).exp(),
            level,
            reaches_confidence: reaches,
            p_value,
            n_numerator: self.m,
            n_denominator: self.n,
            tied: widen > 0.0,
        })
    }
}

/// Log-width of one quantization step at the smallest value when any two values (within a
/// sample or across the two) are equal, else 0.
fn tie_widening(a: &[f64], b: &[f64]) -> f64 {
    let mut pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    pooled.sort_unstable_by(f64::total_cmp);
    if !pooled.windows(2).any(|w| w[0] == w[1]) {
        return 0.0;
    }
    let step = pooled
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0.0)
        .min_by(f64::total_cmp);
    let Some(step) = step else {
        // Every value equal: there is no spread to widen by, and no difference to claim.
        return 0.0;
    };
    let r = step / (2.0 * pooled[0]);
    if r < 1.0 {
        ((1.0 + r) / (1.0 - r)).ln().min(MAX_WIDENING)
    } else {
        MAX_WIDENING
    }
}

/// The ratio of `numerator` to `denominator` (see the module documentation); `None` when either
/// is empty or holds a value that is not positive.
pub fn ratio(numerator: &[f64], denominator: &[f64]) -> Option<RatioEstimate> {
    RankTest::new(numerator.len(), denominator.len()).ratio(numerator, denominator)
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the order given: a test is significant at
/// false-discovery rate q when its adjusted p-value is ≤ q.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut out = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        let adjusted = p[i] * m as f64 / (rank + 1) as f64;
        running = running.min(adjusted).min(1.0);
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn exact_counts_are_the_mann_whitney_frequencies() {
        // m = n = 3: 20 arrangements (Hollander and Wolfe, table A.6).
        assert_eq!(exact_counts(3, 3), vec![1, 1, 2, 3, 3, 3, 3, 2, 1, 1]);
        assert_eq!(exact_counts(1, 4), vec![1; 5]);
        assert_eq!(exact_counts(4, 2), exact_counts(2, 4));
        let c = exact_counts(50, 50);
        let total: i128 = c.iter().sum();
        // C(100, 50).
        assert_eq!(total, 100_891_344_545_564_193_334_812_497_256);
        assert!(c.iter().all(|x| *x > 0));
    }

    #[test]
    fn levels_are_the_tabled_ones() {
        let t = RankTest::new(5, 5);
        assert!((t.level(3) - (1.0 - 8.0 / 252.0)).abs() < 1e-12, "96.8%");
        assert!((t.level(4) - (1.0 - 14.0 / 252.0)).abs() < 1e-12, "94.4%");
        assert!((RankTest::new(3, 3).level(1) - 0.9).abs() < 1e-12);
        assert!(RankTest::new(3, 4).level(1) < CONFIDENCE);
        assert!(RankTest::new(4, 4).level(1) > CONFIDENCE);
        // The normal approximation just past the exact limit agrees with the exact counts.
        let exact = RankTest::new(50, 50);
        let normal = RankTest::new(51, 50);
        assert!(matches!(normal.null, Null::Normal(..)));
        let z = |t: &RankTest, u: i64| t.cdf(u);
        assert!((z(&exact, 1000) - normal_cdf((1000.5 - 1250.0) / 145.057_459_03)).abs() < 2e-3);
        assert!(z(&normal, 1275) > 0.5 && z(&normal, 1224) < 0.5);
    }

    #[test]
    fn normal_cdf_matches_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
        assert!((normal_cdf(-1.644_853_627) - 0.05).abs() < 1e-7);
    }

    #[test]
    fn p_values_are_exact() {
        let t = RankTest::new(5, 5);
        // Complete separation: the smallest two-sided p-value, 2/252.
        assert!((t.p_value(0) - 2.0 / 252.0).abs() < 1e-15);
        assert!((t.p_value(25) - 2.0 / 252.0).abs() < 1e-15);
        assert_eq!(t.p_value(12), 1.0);
        let r = ratio(&[2.0, 2.1, 2.2, 2.3, 2.4], &[1.0, 1.1, 1.2, 1.3, 1.4]).unwrap();
        assert!((r.p_value - 2.0 / 252.0).abs() < 1e-15);
    }

    #[test]
    fn too_few_repetitions_give_the_widest_interval_with_its_level() {
        let r = ratio(&[110.0, 111.0, 109.0], &[100.0, 101.0, 99.0]).unwrap();
        assert!(!r.reaches_confidence);
        assert!((r.level - 0.9).abs() < 1e-12);
        assert!((r.ci_low - 109.0 / 101.0).abs() < 1e-12);
        assert!((r.ci_high - 111.0 / 99.0).abs() < 1e-12);
        assert!(
            (r.p_value - 0.1).abs() < 1e-12,
            "2/20 is the smallest p at 3 vs 3"
        );
    }

    #[test]
    fn interval_interpolates_between_order_statistics() {
        // 5 vs 5: k = 3 (96.8%) and k = 4 (94.4%); 95% lies 23/30 of the way from k = 3 to 4.
        let x = [1.0f64, 2.0, 3.0, 4.0, 5.0].map(f64::exp);
        let y = [0.0f64, 0.1, 0.2, 0.3, 0.4].map(f64::exp);
        let r = ratio(&x, &y).unwrap();
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a.ln() - b.ln()))
            .collect();
        d.sort_by(f64::total_cmp);
        let t = RankTest::new(5, 5);
        let lambda = (t.level(3) - 0.95) / (t.level(3) - t.level(4));
        assert!((lambda - 23.0 / 30.0).abs() < 1e-9, "{lambda}");
        let low = d[2] + lambda * (d[3] - d[2]);
        let high = d[22] - lambda * (d[22] - d[21]);
        assert!((r.ci_low.ln() - low).abs() < 1e-12);
        assert!((r.ci_high.ln() - high).abs() < 1e-12);
        assert!((r.ratio.ln() - d[12]).abs() < 1e-12);
    }

    #[test]
    fn ties_never_give_a_zero_width_interval_that_claims_a_difference() {
        // CPU time in 10 ms steps: every repetition reads the same.
        let a = [500.0; 10];
        let b = [510.0; 10];
        let r = ratio(&b, &a).unwrap();
        assert!(r.tied);
        assert!(r.ci_low < 1.0 && r.ci_high > 1.02, "{r:?}");
        // Identical quantized samples: the same, with a p-value of 1.
        let r = ratio(
            &[300.0, 300.0, 310.0, 300.0, 310.0],
            &[300.0, 310.0, 300.0, 300.0, 310.0],
        );
        let r = r.unwrap();
        assert_eq!(r.p_value, 1.0);
        assert!(r.ci_low < 1.0 && r.ci_high > 1.0);
        // All equal: nothing to widen by, nothing claimed.
        let r = ratio(&[7.0; 5], &[7.0; 5]).unwrap();
        assert_eq!(
            (r.ratio, r.ci_low, r.ci_high, r.p_value),
            (1.0, 1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn non_positive_values_have_no_ratio() {
        assert_eq!(ratio(&[1.0, 0.0], &[1.0, 2.0]), None);
        assert_eq!(ratio(&[], &[1.0]), None);
        assert_eq!(RankTest::new(2, 2).ratio(&[1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn benjamini_hochberg_adjusts_step_up() {
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.5]);
        let want = [0.04, 0.04 * 4.0 / 3.0, 0.04 * 4.0 / 3.0, 0.5];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn interval_holds_the_estimate(a in prop::collection::vec(1.0f64..1e3, 1..15),
                                       b in prop::collection::vec(1.0f64..1e3, 1..15)) {
            let r = ratio(&a, &b).unwrap();
            prop_assert!(r.ci_low <= r.ratio && r.ratio <= r.ci_high, "{:?}", r);
            prop_assert!((0.0..=1.0).contains(&r.p_value));
            prop_assert_eq!(Some(r), ratio(&a, &b));
            // Swapping the samples inverts the ratio and keeps the p-value.
            let s = ratio(&b, &a).unwrap();
            prop_assert!((s.ratio * r.ratio - 1.0).abs() < 1e-9);
            prop_assert!((s.p_value - r.p_value).abs() < 1e-12);
        }
    }
}
