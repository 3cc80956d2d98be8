//! The `/tmp` tmpfs of runc, Docker and LXC instances: its default size, and the bytes a trial's
//! tmpfs take together (what the agent counts in its host-wide disk budget).

use std::time::Duration;

use isolab_host::cgroup::CgroupPlan;

use crate::TrialContext;

/// Default size of the `/tmp` tmpfs of a runc, Docker or LXC instance.
pub const DEFAULT_TMP_BYTES: u64 = 256 << 20;

/// The `/tmp` tmpfs bytes of a trial of runc, Docker or LXC instances: `tmp_bytes` each.
pub fn tmp_bytes_of(tmp_bytes: u64, ctx: &TrialContext) -> u64 {
    tmp_bytes.saturating_mul(u64::try_from(ctx.trial.instances.len()).unwrap_or(u64::MAX))
}

/// The cgroup plan of a backend whose instances each have a `/tmp` tmpfs of `tmp_bytes` (runc,
/// Docker, LXC): those bytes counted in the agent's disk budget, and the backend's kill timeout.
pub fn cgroup_plan(tmp_bytes: u64, ctx: &TrialContext, kill_timeout: Duration) -> CgroupPlan {
    CgroupPlan {
        disk_bytes: tmp_bytes_of(tmp_bytes, ctx),
        kill_timeout,
        ..CgroupPlan::default()
    }
}
