//! Every mounted cgroup hierarchy, for the directories an OCI runtime makes beyond those the
//! cgroup layer uses.
//!
//! runc 1.1 creates a container's (relative) `cgroupsPath` under its own cgroup in *every*
//! hierarchy it finds: each v1 controller, named hierarchies such as `name=systemd`, and the v2
//! mount of a hybrid host. [`Hierarchies`] lists our own cgroup directory in each of them (from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`), so teardown can remove a trial's directories
//! everywhere and the leak check can look everywhere. Only paths below our own cgroup, under a
//! relative path the caller names, are ever touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::factory::parse_proc_cgroup;

/// How often, and how far apart, `rmdir` is retried while the kernel still says `EBUSY`.
const RMDIR_ATTEMPTS: u32 = 50;
const RMDIR_BACKOFF: Duration = Duration::from_millis(10);

/// Why hierarchies could not be read or a directory not removed.
#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    /// A table could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A relative path that would leave our own cgroup.
    #[error("invalid relative cgroup path {rel:?}")]
    InvalidRel {
        /// The path.
        rel: String,
    },
    /// A directory could not be removed.
    #[error("cannot remove cgroup {}: {source}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What this host's cgroups can do, so that a runtime is never asked for a file that is missing
/// (runc fails the container then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFeatures {
    /// Swap can be limited (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub swap_limit: bool,
    /// A proportional I/O weight file exists (`blkio.weight`/`blkio.bfq.weight`, `io.weight`).
    pub io_weight: bool,
}

/// One hierarchy: how it is named and our own cgroup's directory in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hierarchy {
    /// Controllers or name (`memory`, `cpu,cpuacct`, `name=systemd`), or `unified` for v2.
    pub name: String,
    /// Our own cgroup's directory in it.
    pub own_dir: PathBuf,
    /// Our own cgroup's path within the mounted part of the hierarchy (`/` at its top).
    pub own_path: String,
}

/// Every cgroup hierarchy mounted here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// One entry per mounted hierarchy, sorted by name.
    pub list: Vec<Hierarchy>,
}

impl Hierarchies {
    /// From the real `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Self, HierarchyError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| HierarchyError::Read {
                path: p.into(),
                source,
            })
        };
        Ok(Self::from_tables(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
        ))
    }

    /// From the text of a mountinfo table and of `/proc/self/cgroup`.
    pub fn from_tables(mountinfo: &str, proc_self_cgroup: &str) -> Self {
        let own = parse_proc_cgroup(proc_self_cgroup);
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let (Some(fstype), Some(_source), opts) = (post.next(), post.next(), post.next())
            else {
                continue;
            };
            let (Some(root), Some(point)) = (pre.get(3), pre.get(4)) else {
                continue;
            };
            let (name, own_path) = match fstype {
                "cgroup2" => ("unified".to_owned(), own.get("").cloned()),
                "cgroup" => {
                    let ctrls: Vec<&str> = opts
                        .unwrap_or("")
                        .split(',')
                        .filter(|o| o.starts_with("name=") || own.contains_key(*o) && !o.is_empty())
                        .collect();
                    let path = ctrls.iter().find_map(|c| own.get(*c).cloned());
                    (ctrls.join(","), path)
                }
                _ => continue,
            };
            if name.is_empty() || !seen.insert(name.clone()) {
                continue;
            }
            let own_path = own_path.unwrap_or_else(|| "/".to_owned());
            let rel = own_path
                .strip_prefix(root.trim_end_matches('/'))
                .unwrap_or("");
            let own_dir = Path::new(point).join(rel.trim_start_matches('/'));
            let own_path = format!("/{}", rel.trim_start_matches('/'));
            list.push(Hierarchy {
                name,
                own_dir,
                own_path,
            });
        }
        list.sort();
        Self { list }
    }

    /// The `cgroupsPath` that puts a container at `rel` below our own cgroup. On v1 (and hybrid)
    /// a relative path: runc nests it under its own cgroup (ours) in each hierarchy, and our own
    /// paths may differ between controllers. On a pure v2 host runc would nest a relative path
    /// under the *parent* of its own cgroup, so there the path is absolute: our own path + `rel`.
    pub fn cgroups_path(&self, rel: &str) -> String {
        match self.list.as_slice() {
            [only] if only.name == "unified" => {
                format!("{}/{rel}", only.own_path.trim_end_matches('/'))
            }
            _ => rel.to_owned(),
        }
    }

    /// The hierarchies whose own directory is none of `own_dirs` (those another layer manages).
    pub fn excluding(&self, own_dirs: &[PathBuf]) -> Self {
        Self {
            list: self
                .list
                .iter()
                .filter(|h| !own_dirs.contains(&h.own_dir))
                .cloned()
                .collect(),
        }
    }

    /// `rel` (below our own cgroup) in every hierarchy where it exists.
    pub fn existing(&self, rel: &str) -> Vec<(String, PathBuf)> {
        if check_rel(rel).is_err() {
            return Vec::new();
        }
        self.list
            .iter()
            .map(|h| (h.name.clone(), h.own_dir.join(rel)))
            .filter(|(_, d)| d.is_dir())
            .collect()
    }

    /// Processes in `rel` and below, in any hierarchy (sorted, no duplicates).
    pub fn pids(&self, rel: &str) -> Vec<u32> {
        let mut out = BTreeSet::new();
        for (_, dir) in self.existing(rel) {
            if let Err(e) = super::fsutil::collect_pids(&dir, &mut out) {
                tracing::debug!("{e}");
            }
        }
        out.into_iter().collect()
    }

    /// Removes `rel` and everything below it in every hierarchy, deepest first. A directory
    /// that is already gone is fine; one that cannot be removed is an error (after retries on
    /// `EBUSY`, which the kernel says while a killed task is still leaving).
    pub fn remove(&self, rel: &str) -> Result<(), HierarchyError> {
        check_rel(rel)?;
        let mut first = None;
        for (_, dir) in self.existing(rel) {
            if let Err(e) = remove_tree(&dir) {
                tracing::warn!("{e}");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// What this host's cgroups support, judged from our own cgroup's files.
    pub fn features(&self) -> HostFeatures {
        let has = |name: &str, files: &[&str]| {
            self.list
                .iter()
                .filter(|h| h.name.split(',').any(|n| n == name))
                .any(|h| files.iter().any(|f| h.own_dir.join(f).exists()))
        };
        let v1_memory = self
            .list
            .iter()
            .any(|h| h.name.split(',').any(|n| n == "memory"));
        if v1_memory {
            HostFeatures {
                swap_limit: has("memory", &["memory.memsw.limit_in_bytes"]),
                io_weight: has("blkio", &["blkio.weight", "blkio.bfq.weight"]),
            }
        } else {
            // v2: our own cgroup shows the files its parent enabled for it.
            HostFeatures {
                swap_limit: has("unified", &["memory.swap.max"]),
                io_weight: has("unified", &["io.weight", "io.bfq.weight"]),
            }
        }
    }
}

fn check_rel(rel: &str) -> Result<(), HierarchyError> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel.contains('\0')
        || rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        Err(HierarchyError::InvalidRel {
            rel: rel.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Depth-first `rmdir` (cgroup directories hold only kernel files, which `rmdir` takes along).
fn remove_tree(dir: &Path) -> Result<(), HierarchyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(HierarchyError::Remove {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < RMDIR_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(RMDIR_BACKOFF);
            }
            Err(source) => {
                return Err(HierarchyError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_SELF: &str = "\
9:name=systemd:/
5:devices:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn every_hierarchy_with_our_own_path() {
        let h = Hierarchies::from_tables(MOUNTINFO, PROC_SELF);
        let got: Vec<(&str, &Path)> = h
            .list
            .iter()
            .map(|h| (h.name.as_str(), h.own_dir.as_path()))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu", Path::new("/sys/fs/cgroup/cpu")),
                ("devices", Path::new("/sys/fs/cgroup/devices")),
                ("memory", Path::new("/sys/fs/cgroup/memory/process_api/abc")),
                ("name=systemd", Path::new("/sys/fs/cgroup/systemd")),
                ("unified", Path::new("/sys/fs/cgroup/unified")),
            ]
        );
        assert_eq!(
            h.cgroups_path("a/t/i0"),
            "a/t/i0",
            "v1 and hybrid: relative to runc's own"
        );
    }

    #[test]
    fn pure_v2_and_a_namespaced_root() {
        let mi = "30 1 0:26 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_tables(mi, "0::/outer/agent.scope\n");
        assert_eq!(h.list.len(), 1);
        assert_eq!(h.list[0].own_dir, Path::new("/sys/fs/cgroup/agent.scope"));
        assert_eq!(
            h.cgroups_path("a/t/i0"),
            "/agent.scope/a/t/i0",
            "v2: absolute, below our own"
        );
        let h = Hierarchies::from_tables(
            "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        assert_eq!(h.cgroups_path("a/t/i0"), "/a/t/i0");
    }

    #[test]
    fn remove_and_list_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = Hierarchies::default();
        for name in ["cpu", "name=systemd"] {
            let own = tmp.path().join(name);
            std::fs::create_dir_all(own.join("agent/t1/i0")).unwrap();
            h.list.push(Hierarchy {
                name: name.into(),
                own_path: "/".into(),
                own_dir: own,
            });
        }
        assert_eq!(h.existing("agent/t1").len(), 2);
        assert!(h.pids("agent/t1").is_empty());
        h.remove("agent/t1").unwrap();
        assert!(h.existing("agent/t1").is_empty());
        assert_eq!(
            h.existing("agent").len(),
            2,
            "only the named path is removed"
        );
        h.remove("agent/t1").unwrap();
        assert!(matches!(
            h.remove("../x"),
            Err(HierarchyError::InvalidRel { .. })
        ));
        assert!(matches!(
            h.remove(""),
            Err(HierarchyError::InvalidRel { .. })
        ));
    }

    #[test]
    fn features_of_v1_follow_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mem = tmp.path().join("memory");
        let blkio = tmp.path().join("blkio");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&blkio).unwrap();
        let h = Hierarchies {
            list: vec![
                Hierarchy {
                    name: "blkio".into(),
                    own_path: "/".into(),
                    own_dir: blkio.clone(),
                },
                Hierarchy {
                    name: "memory".into(),
                    own_path: "/".into(),
                    own_dir: mem.clone(),
                },
            ],
        };
        assert_eq!(
            h.features(),
            HostFeatures {
                swap_limit: false,
                io_weight: false
            }
        );
        std::fs::write(mem.join("memory.memsw.limit_in_bytes"), "").unwrap();
        std::fs::write(blkio.join("blkio.bfq.weight"), "").unwrap();
        assert_eq!(
            h.features(),
            HostFeatures {
                swap_limit: true,
                io_weight: true
            }
        );
    }
}
