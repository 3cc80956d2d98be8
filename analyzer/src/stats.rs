//! Robust statistics for small samples of repetitions: median, quantiles, MAD, outliers by
//! modified Z-score, and a percentile-bootstrap confidence interval of one sample's median.
//!
//! The bootstrap interval of a median describes the spread of one platform's repetitions and
//! drives `until_stable`; it is not a test and its nominal 95% is not met at small n (with 3
//! values it is essentially `[min, max]`, whose coverage is 75%). Comparisons between samples
//! (ratios to a baseline, `isolab compare`) use [`crate::ratio`] instead, whose interval holds
//! its level at every n.
//!
//! Reports must be reproducible byte for byte, so the bootstrap draws from [`SplitMix64`] seeded
//! with [`BOOTSTRAP_SEED`]: a ten-line generator whose output is fixed by its definition, unlike
//! `rand::rngs::StdRng`, whose algorithm may change between `rand` releases.
//!
//! Inputs are finite values (samples are checked finite when parsed); every function returns
//! `None` for an empty input instead of inventing a number.
//!
//! ```
//! use isolab_analyzer::stats;
//! let x = [100.0, 101.0, 99.0, 100.5, 99.5];
//! let e = stats::estimate(&x).unwrap();
//! assert_eq!(e.median, 100.0);
//! assert!(e.ci_low <= 100.0 && 100.0 <= e.ci_high);
//! ```

/// A value is an outlier when its modified Z-score exceeds this (Iglewicz and Hoaglin).
pub const MODIFIED_Z_THRESHOLD: f64 = 3.5;
/// Scale that makes the MAD a consistent estimator of σ for normal data (Φ⁻¹(0.75)).
const MAD_TO_SIGMA: f64 = 0.6745;
/// Confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Seed of the bootstrap generator: fixed, so reports are deterministic.
pub const BOOTSTRAP_SEED: u64 = 0x0150_1ab5_eed0_2007;

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast, and stable by definition.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (Lemire's multiply-shift; the bias is below 2⁻⁵⁰ for any
    /// sample we resample). `n` must be non-zero.
    pub fn index(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        // The high half of a product with n < 2^64 is < n, so it fits in usize.
        #[allow(clippy::cast_possible_truncation)]
        let i = (wide >> 64) as usize;
        i
    }
}

/// An estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// Whether `x` lies in the closed interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Median, its bootstrap CI, spread and outliers of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Number of values.
    pub n: usize,
    /// Sample median.
    pub median: f64,
    /// Lower bound of the 95% bootstrap CI of the median.
    pub ci_low: f64,
    /// Upper bound of the 95% bootstrap CI of the median.
    pub ci_high: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
    /// Indices of values flagged as outliers.
    pub outliers: Vec<usize>,
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// Median of values sorted ascending.
#[cfg(test)]
fn median_sorted(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(midpoint(v[n / 2 - 1], v[n / 2])),
    }
}

/// Halfway between two values, exact when they are equal.
fn midpoint(a: f64, b: f64) -> f64 {
    if a == b { a } else { a + (b - a) / 2.0 }
}

/// Median of `values` (reorders them; no allocation).
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let below = lower
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(upper);
    Some(midpoint(below, upper))
}

/// Median of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    median_in_place(&mut values.to_vec())
}

/// The `q`-quantile (0 ≤ q ≤ 1) of values sorted ascending, interpolating linearly between
/// order statistics (Hyndman and Fan's type 7, as R and numpy default to).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = q * (n - 1) as f64;
    let lo = h.floor();
    // 0 ≤ lo ≤ n-1, an exact whole number.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = lo as usize;
    let frac = h - lo;
    let a = sorted[i];
    Some(match sorted.get(i + 1) {
        Some(&b) if frac > 0.0 && a != b => a + frac * (b - a),
        _ => a,
    })
}

/// The `q`-quantile of `values` (see [`quantile_sorted`]).
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    quantile_sorted(&sorted(values), q)
}

/// Median absolute deviation from the median.
pub fn mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    median_in_place(&mut dev)
}

/// Modified Z-score of each value: `0.6745·(x − median)/MAD`.
///
/// When the MAD is zero (more than half the values are equal) no spread can be estimated and
/// every score is 0: nothing is flagged rather than everything.
pub fn modified_z_scores(values: &[f64]) -> Vec<f64> {
    let (Some(m), Some(d)) = (median(values), mad(values)) else {
        return Vec::new();
    };
    if d == 0.0 {
        return vec![0.0; values.len()];
    }
    values.iter().map(|x| MAD_TO_SIGMA * (x - m) / d).collect()
}

/// Indices of values whose modified Z-score exceeds [`MODIFIED_Z_THRESHOLD`].
pub fn outliers(values: &[f64]) -> Vec<usize> {
    modified_z_scores(values)
        .iter()
        .enumerate()
        .filter(|(_, z)| z.abs() > MODIFIED_Z_THRESHOLD)
        .map(|(i, _)| i)
        .collect()
}

/// Medians of [`BOOTSTRAP_RESAMPLES`] resamples (with replacement) of `values`.
fn bootstrap_medians(values: &[f64], rng: &mut SplitMix64) -> Vec<f64> {
    let n = values.len();
    let mut buf = vec![0.0; n];
    (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            for slot in &mut buf {
                *slot = values[rng.index(n)];
            }
            median_in_place(&mut buf).unwrap_or(f64::NAN)
        })
        .collect()
}

/// The central [`CONFIDENCE`] interval of a bootstrap distribution.
fn percentile_interval(mut dist: Vec<f64>) -> Option<Interval> {
    dist.retain(|x| x.is_finite());
    dist.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval {
        low: quantile_sorted(&dist, tail)?,
        high: quantile_sorted(&dist, 1.0 - tail)?,
    })
}

/// 95% percentile-bootstrap confidence interval of the median (deterministic).
pub fn bootstrap_median_ci(values: &[f64]) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED);
    percentile_interval(bootstrap_medians(values, &mut rng))
}

/// Median, bootstrap CI, MAD and outliers of a sample.
pub fn estimate(values: &[f64]) -> Option<Estimate> {
    let median = median(values)?;
    let ci = bootstrap_median_ci(values)?;
    Some(Estimate {
        n: values.len(),
        median,
        ci_low: ci.low,
        ci_high: ci.high,
        mad: mad(values)?,
        outliers: outliers(values),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.125), Some(1.5));
        assert_eq!(quantile(&v, 1.5), None);
    }

    #[test]
    fn mad_and_outliers() {
        let v = [10.0, 10.5, 9.5, 10.2, 9.8, 30.0];
        assert!((mad(&v).unwrap() - 0.35).abs() < 1e-12);
        assert_eq!(outliers(&v), vec![5]);
        assert!(
            outliers(&[1.0, 1.0, 1.0, 5.0]).is_empty(),
            "zero MAD flags nothing"
        );
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 0 from the reference implementation.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.index(3) < 3));
    }

    fn sample() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-1e6f64..1e6, 1..40)
    }

    proptest! {
        // Every case runs thousands of bootstrap resamples: fewer cases keep the suite quick.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn median_of_constant_is_the_constant(c in -1e9f64..1e9, n in 1usize..50) {
            let v = vec![c; n];
            prop_assert_eq!(median(&v), Some(c));
            let e = estimate(&v).unwrap();
            prop_assert_eq!((e.ci_low, e.ci_high), (c, c));
            prop_assert_eq!(e.mad, 0.0);
        }

        #[test]
        fn ci_contains_the_median(v in sample()) {
            let e = estimate(&v).unwrap();
            prop_assert!(e.ci_low <= e.median && e.median <= e.ci_high, "{:?}", e);
        }

        #[test]
        fn estimates_are_deterministic(v in sample()) {
            prop_assert_eq!(estimate(&v), estimate(&v));
            prop_assert_eq!(bootstrap_median_ci(&v), bootstrap_median_ci(&v));
        }

        #[test]
        fn median_lies_between_extremes(v in sample()) {
            let m = median(&v).unwrap();
            let s = sorted(&v);
            prop_assert!(s[0] <= m && m <= s[s.len() - 1]);
            prop_assert_eq!(Some(m), median_sorted(&s));
        }

    }
}
