//! Checks and unit conversions for [`CgroupLimits`], shared by v1 and v2.

use super::{CgroupError, CgroupLimits};

/// CFS period when none is given (100 ms).
pub(crate) const DEFAULT_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

/// Rejects values the kernel would refuse or misread, naming the field.
pub(crate) fn validate(l: &CgroupLimits) -> Result<(), CgroupError> {
    let bad = |name, value: String, reason| {
        Err(CgroupError::InvalidLimit {
            name,
            value,
            reason,
        })
    };
    if let Some(w) = l.cpu_weight
        && !(1..=10_000).contains(&w)
    {
        return bad("cpu_weight", w.to_string(), "must be 1..=10000");
    }
    if let Some(w) = l.io_weight
        && !(1..=10_000).contains(&w)
    {
        return bad("io_weight", w.to_string(), "must be 1..=10000");
    }
    if let Some(q) = l.cpu_quota
        && !(q.is_finite() && q > 0.0 && q <= 4096.0)
    {
        return bad(
            "cpu_quota",
            q.to_string(),
            "must be a CPU count in (0, 4096]",
        );
    }
    if let Some(p) = l.cpu_period_us
        && !(1_000..=1_000_000).contains(&p)
    {
        return bad("cpu_period_us", p.to_string(), "must be 1000..=1000000");
    }
    if let Some(m) = l.memory_bytes
        && m == 0
    {
        return bad("memory_bytes", m.to_string(), "must be positive");
    }
    if let Some(cpus) = &l.cpuset_cpus
        && (cpus.is_empty()
            || !cpus
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == '-'))
    {
        return bad("cpuset_cpus", cpus.clone(), "must be a CPU list like 0-1,3");
    }
    Ok(())
}

/// Quota in microseconds per period for a fraction of CPUs (validated beforehand).
pub(crate) fn quota_us(cpus: f64, period_us: u64) -> u64 {
    #[allow(clippy::cast_precision_loss)] // periods are at most 1e6: exact in f64
    let q = (cpus * period_us as f64).round();
    // Validated: 0 < cpus <= 4096 and period <= 1e6, so q fits in u64 and is not negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let q = q as u64;
    q.max(MIN_QUOTA_US)
}

/// v1 `cpu.shares` for a v2-scale weight: weight × 1024 / 100, at least 2.
pub(crate) fn v1_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(v1_shares(100), 1024);
        assert_eq!(v1_shares(1), 10);
        assert_eq!(v1_shares(10_000), 102_400);
        assert_eq!(quota_us(0.5, 100_000), 50_000);
        assert_eq!(quota_us(2.0, 100_000), 200_000);
        assert_eq!(quota_us(0.001, 100_000), 1_000);
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let cases = [
            CgroupLimits {
                cpu_weight: Some(0),
                ..Default::default()
            },
            CgroupLimits {
                io_weight: Some(10_001),
                ..Default::default()
            },
            CgroupLimits {
                cpu_quota: Some(f64::NAN),
                ..Default::default()
            },
            CgroupLimits {
                cpu_quota: Some(-1.0),
                ..Default::default()
            },
            CgroupLimits {
                cpu_period_us: Some(10),
                ..Default::default()
            },
            CgroupLimits {
                cpuset_cpus: Some("0\n1".into()),
                ..Default::default()
            },
        ];
        for l in cases {
            let err = validate(&l).expect_err("accepted");
            assert!(matches!(err, CgroupError::InvalidLimit { .. }), "{err}");
        }
        assert!(validate(&CgroupLimits::default()).is_ok());
    }
}
