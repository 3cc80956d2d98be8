//! cgroup v2: one directory on the unified hierarchy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kill::{self, Freeze};
use super::limits::{self, DEFAULT_PERIOD_US};
use super::stats::{parse_flat_keyed, parse_io_stat, usec_to_ns};
use super::{Cgroup, CgroupError, CgroupLimits, CgroupStats, fsutil};

const HINT_MEMORY: &str = "memory controller not enabled in the parent's cgroup.subtree_control?";
const HINT_PIDS: &str = "pids controller not enabled in the parent's cgroup.subtree_control?";
const HINT_CPU: &str = "cpu controller not enabled in the parent's cgroup.subtree_control?";
const HINT_CPUSET: &str = "cpuset controller not enabled in the parent's cgroup.subtree_control?";
const HINT_IO: &str = "io controller not enabled in the parent's cgroup.subtree_control?";

/// A v2 cgroup: one directory of the unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Cgroup {
    rel: String,
    dir: PathBuf,
}

impl V2Cgroup {
    pub(crate) fn new(rel: String, dir: PathBuf) -> Self {
        Self { rel, dir }
    }

    /// This cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn set(&self, file: &str, value: &str, hint: &'static str) -> Result<(), CgroupError> {
        fsutil::write_control(&self.dir, file, value, hint)
    }

    fn set_memory(&self, bytes: u64) -> Result<(), CgroupError> {
        self.set("memory.max", &bytes.to_string(), HINT_MEMORY)?;
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            fsutil::write(&swap, "0")
        } else {
            tracing::warn!(cgroup = %self.rel, "memory.swap.max not present: swap not limited");
            Ok(())
        }
    }

    fn set_io_weight(&self, weight: u64) -> Result<(), CgroupError> {
        for (file, hi) in [("io.weight", 10_000), ("io.bfq.weight", 1_000)] {
            let path = self.dir.join(file);
            if path.exists() {
                return fsutil::write(&path, &format!("default {}", weight.min(hi)));
            }
        }
        tracing::warn!(
            cgroup = %self.rel,
            "io.weight not present (no iocost or bfq): io_weight skipped"
        );
        Ok(())
    }

    fn read_u64(&self, file: &str) -> Result<u64, CgroupError> {
        Ok(fsutil::read_u64_optional(&self.dir.join(file))?.unwrap_or(0))
    }

    fn read_keyed(&self, file: &str, keys: &[&str]) -> Result<Vec<u64>, CgroupError> {
        let text = fsutil::read_optional(&self.dir.join(file))?.unwrap_or_default();
        let map = parse_flat_keyed(&text);
        Ok(keys
            .iter()
            .map(|k| map.get(k).copied().unwrap_or(0))
            .collect())
    }
}

impl Freeze for V2Cgroup {
    fn freeze(&self) -> Result<bool, CgroupError> {
        let file = self.dir.join("cgroup.freeze");
        if !file.exists() {
            return Ok(false);
        }
        fsutil::write(&file, "1")?;
        let events = self.dir.join("cgroup.events");
        kill::wait_frozen(&|| {
            let text = fsutil::read_optional(&events)?.unwrap_or_default();
            Ok(parse_flat_keyed(&text)
                .get("frozen")
                .is_none_or(|f| *f == 1))
        })?;
        Ok(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        fsutil::write(&self.dir.join("cgroup.freeze"), "0")
    }
}

impl Cgroup for V2Cgroup {
    fn rel_path(&self) -> &str {
        &self.rel
    }

    fn apply(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        limits::validate(l)?;
        if let Some(bytes) = l.memory_bytes {
            self.set_memory(bytes)?;
        }
        if let Some(max) = l.pids_max {
            self.set("pids.max", &max.to_string(), HINT_PIDS)?;
        }
        if let Some(w) = l.cpu_weight {
            self.set("cpu.weight", &w.to_string(), HINT_CPU)?;
        }
        if let Some(q) = l.cpu_quota {
            let period = l.cpu_period_us.unwrap_or(DEFAULT_PERIOD_US);
            let quota = limits::quota_us(q, period);
            self.set("cpu.max", &format!("{quota} {period}"), HINT_CPU)?;
        }
        if let Some(cpus) = &l.cpuset_cpus {
            self.set("cpuset.cpus", cpus, HINT_CPUSET)?;
        }
        if let Some(w) = l.io_weight {
            self.set_io_weight(w)?;
        }
        if let Some((bps, devices)) = &l.io_bps {
            for (major, minor) in devices {
                let value = format!("{major}:{minor} rbps={bps} wbps={bps}");
                self.set("io.max", &value, HINT_IO)?;
            }
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        fsutil::write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut out = BTreeSet::new();
        fsutil::collect_pids(&self.dir, &mut out)?;
        Ok(out.into_iter().collect())
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        if !self.dir.is_dir() {
            return Err(CgroupError::Gone {
                rel: self.rel.clone(),
            });
        }
        let cpu = self.read_keyed("cpu.stat", &["usage_usec", "user_usec", "system_usec"])?;
        let mem = self.read_keyed("memory.events", &["max", "oom", "oom_kill"])?;
        let pids_max = self.read_keyed("pids.events", &["max"])?;
        let io = fsutil::read_optional(&self.dir.join("io.stat"))?.unwrap_or_default();
        let (io_read_bytes, io_write_bytes) = parse_io_stat(&io);
        Ok(CgroupStats {
            cpu_usage_ns: usec_to_ns(cpu[0]),
            cpu_user_ns: usec_to_ns(cpu[1]),
            cpu_system_ns: usec_to_ns(cpu[2]),
            memory_current_bytes: self.read_u64("memory.current")?,
            memory_peak_bytes: self.read_u64("memory.peak")?,
            memory_limit_hits: mem[0],
            oom_events: mem[1],
            oom_kills: mem[2],
            pids_current: self.read_u64("pids.current")?,
            pids_limit_hits: pids_max[0],
            io_read_bytes,
            io_write_bytes,
        })
    }

    fn kill_all(&self, timeout: Duration) -> Result<Vec<u32>, CgroupError> {
        let kill_file = self.dir.join("cgroup.kill");
        if kill_file.exists() {
            return kill::wait_empty(&self.rel, timeout, &kill_file, &|| self.pids());
        }
        kill::kill_loop(&self.rel, timeout, self, &|| self.pids())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        fsutil::remove_tree(&self.dir)
    }
}
