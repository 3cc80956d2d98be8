//! cgroup v1: one directory per controller hierarchy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kill::{self, Freeze};
use super::limits::{self, DEFAULT_PERIOD_US};
use super::stats::{parse_blkio_service_bytes, parse_flat_keyed, ticks_to_ns};
use super::{Cgroup, CgroupError, CgroupLimits, CgroupStats, Controller, fsutil};

const HINT_MEMORY: &str = "memory controller (CONFIG_MEMCG)?";
const HINT_PIDS: &str = "pids controller (CONFIG_CGROUP_PIDS)?";
const HINT_SHARES: &str = "cpu controller (CONFIG_FAIR_GROUP_SCHED)?";
const HINT_CFS: &str = "CONFIG_CFS_BANDWIDTH?";
const HINT_CPUSET: &str = "cpuset controller (CONFIG_CPUSETS)?";
const HINT_THROTTLE: &str = "CONFIG_BLK_DEV_THROTTLING?";

/// Files for I/O statistics, best first: throttle accounting sees every device, `_recursive`
/// includes child cgroups.
const BLKIO_STAT_FILES: [&str; 4] = [
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.throttle.io_service_bytes",
    "blkio.io_service_bytes_recursive",
    "blkio.io_service_bytes",
];

/// A v1 cgroup: the same relative path in every mounted controller the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Cgroup {
    rel: String,
    /// Directory per controller; joined controllers (`cpu,cpuacct`) share one.
    dirs: Vec<(Controller, PathBuf)>,
}

impl V1Cgroup {
    pub(crate) fn new(rel: String, dirs: Vec<(Controller, PathBuf)>) -> Self {
        Self { rel, dirs }
    }

    /// This cgroup's directory in one controller, if that controller is mounted.
    pub fn dir(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Distinct directories (one per hierarchy), in controller order.
    pub fn unique_dirs(&self) -> Vec<&Path> {
        let mut seen = BTreeSet::new();
        self.dirs
            .iter()
            .map(|(_, d)| d.as_path())
            .filter(|d| seen.insert(*d))
            .collect()
    }

    fn need(&self, controller: Controller, file: &'static str) -> Result<&Path, CgroupError> {
        self.dir(controller)
            .ok_or(CgroupError::ControllerUnavailable {
                controller: controller.name(),
                file,
            })
    }

    fn set(
        &self,
        controller: Controller,
        file: &'static str,
        value: &str,
        hint: &'static str,
    ) -> Result<(), CgroupError> {
        fsutil::write_control(self.need(controller, file)?, file, value, hint)
    }

    /// Memory limit with swap off: `memsw` must never be below the plain limit, so when raising
    /// past the current `memsw` the kernel says EINVAL and `memsw` goes first.
    fn set_memory(&self, bytes: u64) -> Result<(), CgroupError> {
        let dir = self.need(Controller::Memory, "memory.limit_in_bytes")?;
        let value = bytes.to_string();
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let has_memsw = memsw.exists();
        match fsutil::write_control(dir, "memory.limit_in_bytes", &value, HINT_MEMORY) {
            Ok(()) => {}
            Err(e) if has_memsw && e.raw_os_error() == Some(libc::EINVAL) => {
                fsutil::write(&memsw, &value)?;
                return fsutil::write(&dir.join("memory.limit_in_bytes"), &value);
            }
            Err(e) => return Err(e),
        }
        if has_memsw {
            fsutil::write(&memsw, &value)
        } else {
            tracing::warn!(
                cgroup = %self.rel,
                "memory.memsw.limit_in_bytes not present (swap accounting off): swap not limited"
            );
            Ok(())
        }
    }

    fn set_io_weight(&self, weight: u64) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(Controller::Blkio) else {
            return Err(CgroupError::ControllerUnavailable {
                controller: "blkio",
                file: "blkio.weight",
            });
        };
        for (file, lo) in [("blkio.weight", 10), ("blkio.bfq.weight", 1)] {
            let path = dir.join(file);
            if path.exists() {
                return fsutil::write(&path, &weight.clamp(lo, 1000).to_string());
            }
        }
        tracing::warn!(
            cgroup = %self.rel,
            "blkio.weight not present (no proportional I/O scheduler): io_weight skipped"
        );
        Ok(())
    }

    fn set_io_bps(&self, bps: u64, devices: &[(u64, u64)]) -> Result<(), CgroupError> {
        for (major, minor) in devices {
            let value = format!("{major}:{minor} {bps}");
            for file in [
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
            ] {
                self.set(Controller::Blkio, file, &value, HINT_THROTTLE)?;
            }
        }
        Ok(())
    }

    fn read_u64(&self, controller: Controller, file: &str) -> Result<u64, CgroupError> {
        match self.dir(controller) {
            Some(d) => Ok(fsutil::read_u64_optional(&d.join(file))?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    fn read_keyed(
        &self,
        controller: Controller,
        file: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<u64>>, CgroupError> {
        let text = match self.dir(controller) {
            Some(d) => fsutil::read_optional(&d.join(file))?.unwrap_or_default(),
            None => String::new(),
        };
        let map = parse_flat_keyed(&text);
        Ok(keys.iter().map(|k| map.get(k).copied()).collect())
    }

    fn io_bytes(&self) -> Result<(u64, u64), CgroupError> {
        let Some(dir) = self.dir(Controller::Blkio) else {
            return Ok((0, 0));
        };
        for file in BLKIO_STAT_FILES {
            if let Some(text) = fsutil::read_optional(&dir.join(file))? {
                return Ok(parse_blkio_service_bytes(&text));
            }
        }
        Ok((0, 0))
    }
}

impl Freeze for V1Cgroup {
    fn freeze(&self) -> Result<bool, CgroupError> {
        let Some(dir) = self.dir(Controller::Freezer) else {
            return Ok(false);
        };
        let state = dir.join("freezer.state");
        if !state.exists() {
            return Ok(false);
        }
        fsutil::write(&state, "FROZEN")?;
        kill::wait_frozen(&|| {
            Ok(fsutil::read_optional(&state)?.is_none_or(|s| s.trim() == "FROZEN"))
        })?;
        Ok(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        match self.dir(Controller::Freezer) {
            Some(dir) => fsutil::write(&dir.join("freezer.state"), "THAWED"),
            None => Ok(()),
        }
    }
}

impl Cgroup for V1Cgroup {
    fn rel_path(&self) -> &str {
        &self.rel
    }

    fn apply(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        limits::validate(l)?;
        if let Some(bytes) = l.memory_bytes {
            self.set_memory(bytes)?;
        }
        if let Some(max) = l.pids_max {
            self.set(Controller::Pids, "pids.max", &max.to_string(), HINT_PIDS)?;
        }
        if let Some(w) = l.cpu_weight {
            let shares = limits::v1_shares(w).to_string();
            self.set(Controller::Cpu, "cpu.shares", &shares, HINT_SHARES)?;
        }
        if let Some(q) = l.cpu_quota {
            let period = l.cpu_period_us.unwrap_or(DEFAULT_PERIOD_US);
            let quota = limits::quota_us(q, period).to_string();
            self.set(
                Controller::Cpu,
                "cpu.cfs_period_us",
                &period.to_string(),
                HINT_CFS,
            )?;
            self.set(Controller::Cpu, "cpu.cfs_quota_us", &quota, HINT_CFS)?;
        }
        if let Some(cpus) = &l.cpuset_cpus {
            self.set(Controller::Cpuset, "cpuset.cpus", cpus, HINT_CPUSET)?;
        }
        if let Some(w) = l.io_weight {
            self.set_io_weight(w)?;
        }
        if let Some((bps, devices)) = &l.io_bps {
            self.set_io_bps(*bps, devices)?;
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.unique_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        self.procs_files()
            .iter()
            .try_for_each(|f| fsutil::write(f, &value))
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut out = BTreeSet::new();
        for dir in self.unique_dirs() {
            fsutil::collect_pids(dir, &mut out)?;
        }
        Ok(out.into_iter().collect())
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        if !self.unique_dirs().iter().any(|d| d.is_dir()) {
            return Err(CgroupError::Gone {
                rel: self.rel.clone(),
            });
        }
        use Controller::{Cpuacct, Memory, Pids};
        let cpu = self.read_keyed(Cpuacct, "cpuacct.stat", &["user", "system"])?;
        let oom = self.read_keyed(Memory, "memory.oom_control", &["oom_kill", "under_oom"])?;
        let pids_max = self.read_keyed(Pids, "pids.events", &["max"])?;
        let (io_read_bytes, io_write_bytes) = self.io_bytes()?;
        Ok(CgroupStats {
            cpu_user_ns: ticks_to_ns(cpu[0].unwrap_or(0)),
            cpu_system_ns: ticks_to_ns(cpu[1].unwrap_or(0)),
            cpu_usage_ns: self.read_u64(Cpuacct, "cpuacct.usage")?,
            memory_current_bytes: self.read_u64(Memory, "memory.usage_in_bytes")?,
            memory_peak_bytes: self.read_u64(Memory, "memory.max_usage_in_bytes")?,
            memory_limit_hits: self.read_u64(Memory, "memory.failcnt")?,
            // Without an `oom_kill` counter (kernels before 4.13) only "in OOM now" is known.
            oom_events: oom[0].or(oom[1]).unwrap_or(0),
            oom_kills: oom[0].unwrap_or(0),
            pids_current: self.read_u64(Pids, "pids.current")?,
            pids_limit_hits: pids_max[0].unwrap_or(0),
            io_read_bytes,
            io_write_bytes,
        })
    }

    fn kill_all(&self, timeout: Duration) -> Result<Vec<u32>, CgroupError> {
        kill::kill_loop(&self.rel, timeout, self, &|| self.pids())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for dir in self.unique_dirs() {
            if let Err(e) = fsutil::remove_tree(dir) {
                tracing::warn!(cgroup = %self.rel, "{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
