//! A bounded latency histogram (log-linear buckets, under 1% relative error) and a small
//! pseudo-random generator, for workloads that record many operations or pick random targets.
//!
//! Why not the `hdrhistogram` crate: inside one process this already is an HDR histogram
//! (log-linear buckets, bounded relative error, merged by adding counts, see
//! [`Histogram::merge`]), in ~100 lines and no dependency in the static workload binary. What
//! `hdrhistogram` would add is a serialized form (its V2 encoding) so that the latencies of
//! several instances merge into one distribution; but a histogram cannot leave an instance
//! today: the results schema (`model/src/results.rs`) carries one `f64` per row, so instances
//! report their own quantiles, and quantiles do not merge. Merging across instances needs a
//! results column for a serialized histogram, a change of the Parquet contract (schema, sink,
//! analyzer) to be made as such; swapping this type alone would change nothing a user sees.

use std::time::Duration;

/// Sub-bucket bits: 2^7 = 128 buckets per power of two, so a bucket is at most 1/128 wide.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed for any `u64`: `SUB` exact values, then `SUB` per power of two from
/// 2^SUB_BITS to 2^63 (a test checks the largest value fits).
const BUCKETS: usize = 128 * (65 - 7);

/// Counts of nanosecond values in log-linear buckets; percentiles come back as the middle of
/// the bucket, exact below 256 ns.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    let idx = if v < SUB {
        v
    } else {
        let msb = 63 - u64::from(v.leading_zeros());
        let e = msb - u64::from(SUB_BITS);
        let mantissa = v >> e; // in [SUB, 2 * SUB)
        SUB + e * SUB + (mantissa - SUB)
    };
    usize::try_from(idx).unwrap_or(BUCKETS - 1)
}

/// The middle of a bucket's range.
fn value_of(idx: usize) -> u64 {
    let idx = u64::try_from(idx).unwrap_or(u64::MAX);
    if idx < 2 * SUB {
        return idx;
    }
    let e = (idx - SUB) / SUB;
    let mantissa = SUB + (idx - SUB) % SUB;
    let low = mantissa << e;
    low + ((1u64 << e) - 1) / 2
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0 < q ≤ 1) in nanoseconds, `None` when empty.
    pub(crate) fn quantile_ns(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let wanted = (q.clamp(0.0, 1.0) * crate::measure::to_f64(self.total)).ceil();
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if c > 0 && crate::measure::to_f64(seen) >= wanted {
                return Some(value_of(idx));
            }
        }
        None
    }
}

/// xorshift64*: fast, deterministic, good enough to pick files and offsets.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is replaced, xorshift cannot leave it).
    pub(crate) fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A generator seeded from the clock and the process id.
    pub(crate) fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Self::new((u64::from(nanos) << 20) ^ u64::from(std::process::id()))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for n far below 2^64.
        let wide = u128::from(self.next_u64()) * u128::from(n);
        u64::try_from(wide >> 64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last || v > 100_000, "{v}");
            assert!(b < BUCKETS, "{v}");
            last = b;
            let back = value_of(b);
            let err = back.abs_diff(v);
            assert!(err <= v / SUB + 1, "{v} -> bucket {b} -> {back}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ns(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ns(0.5).unwrap();
        let p99 = h.quantile_ns(0.99).unwrap();
        assert!(p50.abs_diff(50_000) <= 50_000 / 100, "{p50}");
        assert!(p99.abs_diff(99_000) <= 99_000 / 100, "{p99}");
        let mut other = Histogram::default();
        other.record(Duration::from_secs(1));
        h.merge(&other);
        assert_eq!(h.count(), 101);
        assert!(h.quantile_ns(1.0).unwrap() > 990_000_000);
    }

    #[test]
    fn rng_stays_in_range_and_varies() {
        let mut r = Rng::new(0);
        let picks: Vec<u64> = (0..1000).map(|_| r.below(10)).collect();
        assert!(picks.iter().all(|p| *p < 10));
        assert!((0..10).all(|v| picks.contains(&v)));
        assert_eq!(r.below(0), 0);
    }
}
