//! [`CgroupManager`]: finds the hierarchy and our own cgroup in it, and makes [`AnyCgroup`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{AnyCgroup, CgroupError, CgroupVersion, Controller, V1Cgroup, V2Cgroup, fsutil};

/// One cgroup mount from `/proc/self/mountinfo` (or `/proc/mounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// `cgroup` or `cgroup2`.
    pub(crate) fstype: String,
    /// Path of the hierarchy that is mounted (`/` unless in a cgroup namespace or bind mount).
    pub(crate) root: String,
    /// Where it is mounted.
    pub(crate) point: PathBuf,
    /// Super options: controller names for v1 (`cpu`, `cpuacct`, `name=systemd`, `rw`…).
    pub(crate) options: Vec<String>,
}

/// Cgroup mounts in `/proc/self/mountinfo` text; falls back to the `/proc/mounts` format.
pub(crate) fn parse_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| parse_mountinfo_line(line).or_else(|| parse_mounts_line(line)))
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let mut post = post.split(' ');
    let fstype = post.next()?.to_owned();
    let _source = post.next()?;
    let options = post
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_owned)
        .collect();
    Some(CgroupMount {
        fstype,
        root: unescape(pre.get(3)?),
        point: PathBuf::from(unescape(pre.get(4)?)),
        options,
    })
}

fn parse_mounts_line(line: &str) -> Option<CgroupMount> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [_source, point, fstype, opts, ..] = f[..] else {
        return None;
    };
    Some(CgroupMount {
        fstype: fstype.to_owned(),
        root: "/".to_owned(),
        point: PathBuf::from(unescape(point)),
        options: opts.split(',').map(str::to_owned).collect(),
    })
}

/// Undoes the octal escapes of mount tables (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: controller name (`""` for the v2 line) → path.
pub(crate) fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            out.insert(String::new(), path.to_owned());
        }
        for c in ctrls.split(',').filter(|c| !c.is_empty()) {
            out.insert(c.to_owned(), path.to_owned());
        }
    }
    out
}

/// `mount point` + (`own path` minus `mount root`).
fn own_dir(point: &Path, root: &str, own: &str) -> PathBuf {
    let rel = match own.strip_prefix(root.trim_end_matches('/')) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => {
            tracing::warn!(
                own,
                root,
                "own cgroup is outside the mounted hierarchy; using its root"
            );
            ""
        }
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        point.to_owned()
    } else {
        point.join(rel)
    }
}

#[derive(Debug, Clone)]
enum Layout {
    /// Own cgroup directory per controller.
    V1(Vec<(Controller, PathBuf)>),
    /// Own cgroup directory and the controllers its children may use.
    V2(PathBuf, Vec<Controller>),
}

/// Finds the cgroup hierarchy and our own place in it; makes and opens cgroups below it.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    layout: Layout,
}

impl CgroupManager {
    /// Looks at the real mounts: v1 whenever the memory controller is on v1 (legacy or hybrid,
    /// like this machine), else v2 when a unified hierarchy is mounted.
    pub fn detect() -> Result<Self, CgroupError> {
        let mounts = fsutil::read_optional(Path::new("/proc/self/mountinfo"))?
            .map_or_else(|| fsutil::read(Path::new("/proc/mounts")), Ok)?;
        let own = fsutil::read(Path::new("/proc/self/cgroup"))?;
        let m = Self::from_tables(&mounts, &own)?;
        match m.layout {
            Layout::V2(dir, _) => {
                // At the root of our cgroup namespace: a container's own cgroup.
                let in_container = parse_proc_cgroup(&own).get("").is_some_and(|p| p == "/");
                Self::v2_with_leaf(dir, std::process::id(), in_container)
            }
            Layout::V1(_) => Ok(m),
        }
    }

    /// v2 with the agent (`pid`) itself inside `own`: it moves into its leaf when it must, and
    /// trial cgroups go beside the leaf (see [`super::leaf`]).
    pub(crate) fn v2_with_leaf(
        own: PathBuf,
        pid: u32,
        in_container: bool,
    ) -> Result<Self, CgroupError> {
        let own = super::leaf::own_for_trials(&own)?;
        super::leaf::make_room(&own, pid, in_container)?;
        Self::v2(own)
    }

    /// As [`Self::detect`], from the text of the mount table and of `/proc/self/cgroup`.
    pub fn from_tables(mounts: &str, proc_self_cgroup: &str) -> Result<Self, CgroupError> {
        let mounts = parse_mounts(mounts);
        let own = parse_proc_cgroup(proc_self_cgroup);
        let v1_memory = mounts
            .iter()
            .any(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == "memory"));
        if v1_memory {
            let mut dirs = Vec::new();
            for c in Controller::V1 {
                let Some(m) = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c.name()))
                else {
                    continue;
                };
                let path = own.get(c.name()).map_or("/", String::as_str);
                dirs.push((c, own_dir(&m.point, &m.root, path)));
            }
            return Ok(Self::v1(dirs));
        }
        let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
            return Err(CgroupError::Detect {
                reason: "no v1 memory controller and no cgroup2 mount".into(),
            });
        };
        let path = own.get("").map_or("/", String::as_str);
        Self::v2(own_dir(&m.point, &m.root, path))
    }

    /// A manager on any directory (tests: a fake cgroupfs). v1: `root` holds one directory per
    /// hierarchy, named by its controllers (`memory`, `cpu,cpuacct`; symlinks such as `cpu` →
    /// `cpu,cpuacct` are fine). v2: `root` is the unified mount. Our own cgroup in each is read
    /// from `proc_self_cgroup` (the text of `/proc/self/cgroup`; `/` when not listed).
    pub fn with_root(
        root: &Path,
        version: CgroupVersion,
        proc_self_cgroup: &str,
    ) -> Result<Self, CgroupError> {
        let own = parse_proc_cgroup(proc_self_cgroup);
        match version {
            CgroupVersion::V1 => {
                let mut found: BTreeMap<Controller, PathBuf> = BTreeMap::new();
                // Real directories first, so that a symlink (`cpu` → `cpu,cpuacct`) only fills in
                // what no directory provides and joined controllers share one path.
                let (dirs, links) = hierarchy_dirs(root)?;
                for name in dirs.iter().chain(&links) {
                    for part in name.split(',') {
                        if let Some(c) = Controller::from_name(part, CgroupVersion::V1) {
                            let path = own.get(part).map_or("/", String::as_str);
                            found
                                .entry(c)
                                .or_insert_with(|| own_dir(&root.join(name), "/", path));
                        }
                    }
                }
                if found.is_empty() {
                    return Err(CgroupError::Detect {
                        reason: format!("no v1 controller directory under {}", root.display()),
                    });
                }
                Ok(Self::v1(found.into_iter().collect()))
            }
            CgroupVersion::V2 => {
                let path = own.get("").map_or("/", String::as_str);
                Self::v2(own_dir(root, "/", path))
            }
        }
    }

    fn v1(dirs: Vec<(Controller, PathBuf)>) -> Self {
        Self {
            layout: Layout::V1(dirs),
        }
    }

    fn v2(own: PathBuf) -> Result<Self, CgroupError> {
        let text = fsutil::read_optional(&own.join("cgroup.subtree_control"))?.unwrap_or_default();
        let controllers = text
            .split_whitespace()
            .filter_map(|n| Controller::from_name(n.trim_start_matches('+'), CgroupVersion::V2))
            .collect();
        Ok(Self {
            layout: Layout::V2(own, controllers),
        })
    }

    /// Hierarchy in use.
    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1(_) => CgroupVersion::V1,
            Layout::V2(..) => CgroupVersion::V2,
        }
    }

    /// Controllers new cgroups get: v1 the mounted ones the agent uses; v2 those enabled in our
    /// own cgroup's `cgroup.subtree_control`.
    pub fn controllers(&self) -> Vec<Controller> {
        match &self.layout {
            Layout::V1(dirs) => dirs.iter().map(|(c, _)| *c).collect(),
            Layout::V2(_, cs) => cs.clone(),
        }
    }

    /// Our own cgroup's directory in every hierarchy used (deduplicated).
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        let dirs: BTreeSet<&PathBuf> = match &self.layout {
            Layout::V1(dirs) => dirs.iter().map(|(_, d)| d).collect(),
            Layout::V2(d, _) => [d].into_iter().collect(),
        };
        dirs.into_iter().cloned().collect()
    }

    /// Creates `rel` below our own cgroup (`mkdir -p` in every hierarchy). v1: each new cpuset
    /// level gets `cpuset.cpus` and `cpuset.mems` from its parent. v2: every intermediate level
    /// of `rel` gets our controllers in `cgroup.subtree_control`.
    pub fn create(&self, rel: &str) -> Result<AnyCgroup, CgroupError> {
        fsutil::validate_rel(rel)?;
        // In each hierarchy, the shallowest level of `rel` that does not exist yet: removed again
        // if creation fails midway.
        let fresh: Vec<PathBuf> = self
            .own_dirs()
            .into_iter()
            .filter_map(|own| {
                let mut path = own;
                rel.split('/').find_map(|part| {
                    path.push(part);
                    (!path.exists()).then(|| path.clone())
                })
            })
            .collect();
        if let Err(e) = self.create_dirs(rel) {
            for top in &fresh {
                if let Err(e2) = fsutil::remove_tree(top) {
                    tracing::warn!("undoing partial cgroup {rel}: {e2}");
                }
            }
            return Err(e);
        }
        self.open(rel)
    }

    fn create_dirs(&self, rel: &str) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1(dirs) => {
                let mut done = BTreeSet::new();
                for (c, own) in dirs {
                    if !done.insert(own) {
                        continue;
                    }
                    let created = fsutil::mkdir_levels(own, rel)?;
                    if dirs
                        .iter()
                        .any(|(c2, d)| d == own && *c2 == Controller::Cpuset)
                    {
                        created.iter().try_for_each(|d| copy_cpuset(d))?;
                    }
                    tracing::debug!(controller = %c, rel, created = created.len(), "cgroup made");
                }
            }
            Layout::V2(own, controllers) => {
                fsutil::mkdir_levels(own, rel)?;
                // Intermediate levels only: the leaf will hold processes.
                let mut path = own.clone();
                let parts: Vec<&str> = rel.split('/').collect();
                for part in &parts[..parts.len() - 1] {
                    path.push(part);
                    enable_controllers(&path, controllers)?;
                }
            }
        }
        Ok(())
    }

    /// The cgroup at `rel` (whether or not it exists yet).
    pub fn open(&self, rel: &str) -> Result<AnyCgroup, CgroupError> {
        fsutil::validate_rel(rel)?;
        Ok(match &self.layout {
            Layout::V1(dirs) => AnyCgroup::V1(V1Cgroup::new(
                rel.to_owned(),
                dirs.iter().map(|(c, d)| (*c, d.join(rel))).collect(),
            )),
            Layout::V2(own, _) => AnyCgroup::V2(V2Cgroup::new(rel.to_owned(), own.join(rel))),
        })
    }

    /// Whether `rel` exists in any hierarchy (`""` is our own cgroup).
    pub fn exists(&self, rel: &str) -> bool {
        if !rel.is_empty() && fsutil::validate_rel(rel).is_err() {
            return false;
        }
        self.own_dirs().iter().any(|d| d.join(rel).is_dir())
    }

    /// Names of the child cgroups of `rel` in any hierarchy (`""`: children of our own cgroup),
    /// sorted, for leak checks.
    pub fn list(&self, rel: &str) -> Vec<String> {
        if !rel.is_empty() && fsutil::validate_rel(rel).is_err() {
            return Vec::new();
        }
        let mut names = BTreeSet::new();
        for d in self.own_dirs() {
            match fsutil::child_dirs(&d.join(rel)) {
                Ok(children) => names.extend(children),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        names.into_iter().collect()
    }
}

/// Names of the directories under `root`, and of the symlinks to directories.
fn hierarchy_dirs(root: &Path) -> Result<(Vec<String>, Vec<String>), CgroupError> {
    let wrap = |source| CgroupError::Read {
        path: root.to_owned(),
        source,
    };
    let (mut dirs, mut links) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(root).map_err(wrap)? {
        let entry = entry.map_err(wrap)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            dirs.push(name);
        } else if kind.is_symlink() && entry.path().is_dir() {
            links.push(name);
        }
    }
    dirs.sort();
    links.sort();
    Ok((dirs, links))
}

/// v1 cpuset: a new cgroup starts with empty `cpus`/`mems` (unless `cgroup.clone_children`), and
/// no task can join it until both are set; copy them from the parent.
fn copy_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let value = fsutil::read(&parent.join(file))?;
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        fsutil::write(&dir.join(file), value)?;
    }
    Ok(())
}

/// v2: enables in `dir/cgroup.subtree_control` those of `wanted` that `dir` has and has not yet
/// enabled, in one write.
fn enable_controllers(dir: &Path, wanted: &[Controller]) -> Result<(), CgroupError> {
    let read_set = |file: &str| -> Result<Option<BTreeSet<String>>, CgroupError> {
        Ok(fsutil::read_optional(&dir.join(file))?.map(|t| {
            t.split_whitespace()
                .map(|n| n.trim_start_matches('+').to_owned())
                .collect()
        }))
    };
    // A fake cgroupfs has no `cgroup.controllers` in a new directory: assume all wanted.
    let available = read_set("cgroup.controllers")?;
    let enabled = read_set("cgroup.subtree_control")?.unwrap_or_default();
    let add: Vec<String> = wanted
        .iter()
        .map(|c| c.name())
        .filter(|n| available.as_ref().is_none_or(|a| a.contains(*n)) && !enabled.contains(*n))
        .map(|n| format!("+{n}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    fsutil::write(&dir.join("cgroup.subtree_control"), &add.join(" "))
}
