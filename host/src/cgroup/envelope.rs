//! The safety envelope: the limits every instance cgroup gets, whatever the pipeline says.
//!
//! Each instance gets hard `pids` and `memory` ceilings from the agent's configuration; the
//! pipeline's limits apply on top and can only tighten them (the smaller value wins). CPU weight,
//! quota, cpuset and I/O settings come from the pipeline alone. A CPU reservation is a share
//! guarantee, not a cap: planning expresses it through weights, so it adds no limit here.
//! Called once per instance, by the cgroup engine ([`super::engine::CgroupEngine::limits`]),
//! before any backend code runs; a backend can only name the memory limit for when the platform
//! sets none (the vm backend: what QEMU needs), never change the rule.

use isolab_model::plan::InstanceSpec;
use isolab_model::resolve::InstanceLimits;

use super::CgroupLimits;

/// The agent's hard ceilings for every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// `pids.max` of every instance.
    pub pids: u64,
    /// Memory limit of every instance.
    pub memory_bytes: u64,
}

/// The limits of one instance: ceilings, tightened by the platform's limits and the instance's
/// own CPU weight. `io_device` is the block device (major, minor) an `io_bps` cap applies to.
/// `memory_default_bytes` is the memory limit when the platform sets none (the vm backend: what
/// its QEMU needs); without one, the ceiling.
pub fn instance_limits(
    ceilings: Ceilings,
    platform: &InstanceLimits,
    instance: &InstanceSpec,
    io_device: Option<(u64, u64)>,
    memory_default_bytes: Option<u64>,
) -> CgroupLimits {
    let min = |ceiling: u64, asked: Option<u64>| Some(asked.map_or(ceiling, |a| a.min(ceiling)));
    let memory_bytes = platform.memory_bytes.map_or(
        memory_default_bytes.unwrap_or(ceilings.memory_bytes),
        |asked| asked.min(ceilings.memory_bytes),
    );
    CgroupLimits {
        memory_bytes: Some(memory_bytes),
        pids_max: min(ceilings.pids, platform.pids_max),
        cpu_weight: instance.cpu_weight.or(platform.cpu_weight),
        cpu_quota: platform.cpu_quota_cpus,
        cpu_period_us: None,
        cpuset_cpus: platform.cpuset_cpus.clone(),
        io_weight: platform.io_weight,
        io_bps: platform
            .io_bps
            .map(|b| (b, io_device.into_iter().collect())),
    }
}

/// The whole block device (major, minor) that holds `path`, if it is on one (not on tmpfs or
/// overlay): a partition is resolved to its disk, which is what I/O throttling needs.
pub fn block_device_of(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    if major == 0 {
        return None;
    }
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None;
    }
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).ok()?;
        let (ma, mi) = parent.trim().split_once(':')?;
        return Some((ma.parse().ok()?, mi.parse().ok()?));
    }
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use isolab_model::pipeline::Limits;
    use isolab_model::plan::Role;
    use isolab_model::units::{Bytes, Percent};

    use super::*;

    fn instance(cpu_weight: Option<u64>) -> InstanceSpec {
        InstanceSpec {
            index: 0,
            role: Role::Peer,
            group: None,
            workload: "syscall".into(),
            params: Default::default(),
            cpu_weight,
            cpu_reservation: None,
        }
    }

    const CEIL: Ceilings = Ceilings {
        pids: 4096,
        memory_bytes: 1 << 30,
    };

    #[test]
    fn ceilings_apply_when_the_pipeline_sets_nothing() {
        let l = instance_limits(
            CEIL,
            &InstanceLimits::default(),
            &instance(None),
            None,
            None,
        );
        assert_eq!(l.pids_max, Some(4096));
        assert_eq!(l.memory_bytes, Some(1 << 30));
        assert_eq!(l.cpu_weight, None);
        assert_eq!(l.io_bps, None);
    }

    #[test]
    fn the_smaller_of_ceiling_and_pipeline_wins() {
        let platform = InstanceLimits::from(&Limits {
            memory: Some(Bytes(4 << 30)),
            pids: Some(64),
            cpu_weight: Some(100),
            cpu_quota: Some(Percent(0.5)),
            cpuset: Some("0".into()),
            io_weight: None,
            io_bps: Some(Bytes(1 << 20)),
        });
        let l = instance_limits(CEIL, &platform, &instance(Some(300)), Some((8, 0)), None);
        assert_eq!(
            l.memory_bytes,
            Some(1 << 30),
            "ceiling below the pipeline's 4GiB"
        );
        assert_eq!(l.pids_max, Some(64), "pipeline below the ceiling");
        assert_eq!(
            l.cpu_weight,
            Some(300),
            "instance weight overrides the platform's"
        );
        assert_eq!(l.cpu_quota, Some(0.5));
        assert_eq!(l.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(l.io_bps, Some((1 << 20, vec![(8, 0)])));
    }

    #[test]
    fn a_backend_default_stands_in_only_for_an_unset_memory_limit() {
        let qemu = Some(300 << 20);
        let unset = instance_limits(
            CEIL,
            &InstanceLimits::default(),
            &instance(None),
            None,
            qemu,
        );
        assert_eq!(unset.memory_bytes, qemu, "the default, not the ceiling");
        let platform = InstanceLimits {
            memory_bytes: Some(4 << 30),
            ..InstanceLimits::default()
        };
        let set = instance_limits(CEIL, &platform, &instance(None), None, qemu);
        assert_eq!(
            set.memory_bytes,
            Some(1 << 30),
            "the pipeline's, under the ceiling"
        );
    }
}
