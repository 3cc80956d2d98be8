//! A cgroup made for one test, nested under the test process's own cgroup in each controller
//! it needs (cgroup v1), or one cgroup under its own in the unified hierarchy (v2). Commands
//! are put into it before they exec; on drop, any process left in it (only ever processes the
//! test started) is killed by pid and the directories are removed.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";

/// A limit: controller, v1 file, v2 file, value.
pub type Limit<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A test cgroup.
pub struct TestCgroup {
    /// One directory per controller (v1) or a single one (v2).
    dirs: Vec<(String, PathBuf)>,
    v2: bool,
}

/// The test process's own cgroup path for a v1 controller, or for v2 (`controller` = "").
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            list.is_empty()
        } else {
            list.split(',').any(|c| c == controller)
        };
        hit.then(|| path.trim_start_matches('/').to_owned())
    })
}

fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "isolab-workload-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestCgroup {
    /// Creates the cgroup with `limits`; `Err` says why it cannot be done here (for a skip).
    pub fn create(tag: &str, limits: &[Limit<'_>]) -> Result<Self, String> {
        let name = unique_name(tag);
        let unified = Path::new(ROOT).join("cgroup.controllers");
        let mut cg = Self {
            dirs: Vec::new(),
            v2: unified.exists(),
        };
        if cg.v2 {
            let own = Path::new(ROOT)
                .join(own_path("").ok_or("no cgroup v2 entry in /proc/self/cgroup")?);
            for (controller, ..) in limits {
                let enable = format!("+{controller}");
                std::fs::write(own.join("cgroup.subtree_control"), &enable).map_err(|e| {
                    format!("cannot enable {controller} under {}: {e}", own.display())
                })?;
            }
            let dir = own.join(&name);
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            cg.dirs.push((String::new(), dir));
        } else {
            for (controller, ..) in limits {
                if cg.dirs.iter().any(|(c, _)| c == controller) {
                    continue;
                }
                let mount = Path::new(ROOT).join(controller);
                if !mount.join("cgroup.procs").exists() {
                    return Err(format!(
                        "no cgroup v1 {controller} hierarchy at {}",
                        mount.display()
                    ));
                }
                let own = own_path(controller)
                    .ok_or(format!("no {controller} entry in /proc/self/cgroup"))?;
                let dir = mount.join(own).join(&name);
                std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                cg.dirs.push(((*controller).to_owned(), dir));
            }
        }
        for (controller, v1_file, v2_file, value) in limits {
            let file = if cg.v2 { v2_file } else { v1_file };
            let path = cg.dir(controller).join(file);
            std::fs::write(&path, value)
                .map_err(|e| format!("write {value} to {}: {e}", path.display()))?;
        }
        Ok(cg)
    }

    /// The directory holding `controller`'s files.
    pub fn dir(&self, controller: &str) -> &Path {
        let found = self.dirs.iter().find(|(c, _)| self.v2 || c == controller);
        &found.unwrap_or_else(|| panic!("no {controller} cgroup")).1
    }

    /// Reads a file of `controller` (v1 name, v2 name).
    pub fn read(&self, controller: &str, v1_file: &str, v2_file: &str) -> String {
        let file = if self.v2 { v2_file } else { v1_file };
        let path = self.dir(controller).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Makes `cmd`'s process join this cgroup before it executes.
    pub fn enter(&self, cmd: &mut Command) {
        let files: Vec<std::ffi::CString> = self
            .dirs
            .iter()
            .map(|(_, d)| {
                std::ffi::CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes())
                    .unwrap()
            })
            .collect();
        // SAFETY: the closure only calls async-signal-safe functions (getpid, open, write,
        // close) and formats into a stack buffer, as required between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut digits = [0u8; 20];
                let mut n = u64::try_from(libc::getpid()).unwrap_or(0);
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                for file in &files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let len = digits.len() - i;
                    let wrote = libc::write(fd, digits[i..].as_ptr().cast(), len);
                    libc::close(fd);
                    if isize::try_from(len).ok() != Some(wrote) {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// Pids now in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.dirs
            .iter()
            .flat_map(|(_, d)| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.pids();
            if left.is_empty() || Instant::now() > until {
                break;
            }
            for pid in left {
                // SAFETY: kill has no memory preconditions; these are processes this test
                // started (only they were put into this cgroup).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (_, dir) in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("warning: could not remove test cgroup {}", dir.display());
            }
        }
    }
}
