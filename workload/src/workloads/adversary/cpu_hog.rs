//! `cpu_hog`: `threads` threads (default: the CPUs online) spinning on integer
//! hashing. Series `spins_per_s` every 100 ms; summary `spins_per_s`, `ops` (spins), `elapsed_s`.
//! One spin is `cpu_spin`'s work unit.

use super::clock::TICK;
use crate::emit::Emitter;
use crate::measure::check_stop;
use crate::params::Params;
use crate::workloads::build::online_cpus;
use crate::workloads::cpu_spin::spin_threads;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "cpu_hog";

/// `cpu_hog`: see the module documentation.
pub(crate) fn cpu_hog(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let threads = params
        .count_opt("threads")
        .map_or_else(online_cpus, |t| usize::try_from(t).unwrap_or(1));
    let total = spin_threads(
        W,
        threads,
        TICK,
        params.run_duration(),
        em,
        ("spins_per_s", "spins/s"),
    )?;
    em.summary("spins_per_s", total.ops_per_s(), "spins/s", true)?;
    report_totals(em, &total)?;
    check_stop()
}
