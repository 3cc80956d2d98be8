//! cgroup v2 with the agent inside the cgroup it manages: the agent's leaf.
//!
//! In a container with its own cgroup namespace (a Kubernetes pod on a cgroup v2 node, the usual
//! nested-container setup), `/proc/self/cgroup` reads `0::/` and the runtime mounts the
//! container's own cgroup at `/sys/fs/cgroup`. The agent can make trial cgroups there, under the
//! pod's limits, but v2's "no internal processes" rule lets a cgroup hand controllers to its
//! children only while it holds no processes itself, and it holds the agent. So, once at
//! start-up, the agent moves itself (and, in a container, whatever else the runtime put there,
//! such as a probe) into a leaf [`LEAF`] of its own cgroup, then enables the controllers its
//! own cgroup offers in `cgroup.subtree_control`. Trial cgroups are made beside the leaf.
//!
//! It does nothing when the own cgroup holds no process (the controllers can already be handed
//! down), when it is the root cgroup (there is no `cgroup.freeze`: never move processes out of
//! the host's root), or when other processes share it outside a container (a login session: they
//! are not ours to move; trial cgroups then get only what is already enabled there). A later
//! look at the hierarchy from inside the leaf ([`own_for_trials`]) finds the same own cgroup.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupVersion, Controller, fsutil};

/// The leaf the agent moves into, inside its own cgroup.
pub(crate) const LEAF: &str = "agent";

/// The cgroup trial cgroups go under: `own`, or its parent when `own` is the agent's leaf (named
/// [`LEAF`], in a parent with controllers enabled: the agent moved there earlier).
pub(crate) fn own_for_trials(own: &Path) -> Result<PathBuf, CgroupError> {
    if let Some(parent) = own.parent()
        && own.file_name().is_some_and(|n| n == LEAF)
        && fsutil::read_optional(&parent.join("cgroup.subtree_control"))?
            .is_some_and(|t| !t.trim().is_empty())
    {
        return Ok(parent.to_owned());
    }
    Ok(own.to_owned())
}

/// Makes `own` (a v2 cgroup directory) able to hand controllers down: moves `pid`, and with
/// `in_container` every other process in `own`, into `own/`[`LEAF`], then enables in
/// `own/cgroup.subtree_control` the controllers the agent uses that `own` has. Returns the leaf
/// when it moved processes, `None` when there was nothing to do or nothing it may do.
pub(crate) fn make_room(
    own: &Path,
    pid: u32,
    in_container: bool,
) -> Result<Option<PathBuf>, CgroupError> {
    let procs: BTreeSet<u32> = fsutil::read_optional(&own.join("cgroup.procs"))?
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if procs.is_empty() {
        return Ok(None);
    }
    if !own.join("cgroup.freeze").exists() {
        tracing::warn!(own = %own.display(), "own cgroup is the root cgroup: trial cgroups get no controllers");
        return Ok(None);
    }
    let others: Vec<u32> = procs.iter().copied().filter(|p| *p != pid).collect();
    if !others.is_empty() && !in_container {
        tracing::warn!(
            own = %own.display(),
            others = others.len(),
            "own cgroup holds other processes: not moving them, trial cgroups get only the controllers already enabled"
        );
        return Ok(None);
    }
    let leaf = own.join(LEAF);
    fsutil::mkdir_levels(own, LEAF)?;
    // Others first (a probe may have ended: that is fine), ourselves last.
    for p in &others {
        if let Err(e) = move_pid(&leaf, *p) {
            tracing::debug!("process {p} not moved to the agent's leaf: {e}");
        }
    }
    move_pid(&leaf, pid)?;
    let available = fsutil::read_optional(&own.join("cgroup.controllers"))?.unwrap_or_default();
    let add: Vec<String> = available
        .split_whitespace()
        .filter(|n| Controller::from_name(n, CgroupVersion::V2).is_some())
        .map(|n| format!("+{n}"))
        .collect();
    if !add.is_empty() {
        fsutil::write(&own.join("cgroup.subtree_control"), &add.join(" "))?;
    }
    tracing::info!(leaf = %leaf.display(), controllers = %add.join(" "), "agent moved into its leaf; trial cgroups go beside it");
    Ok(Some(leaf))
}

/// Appends `pid` to `leaf/cgroup.procs` (one write per process, as the kernel wants).
fn move_pid(leaf: &Path, pid: u32) -> Result<(), CgroupError> {
    let path = leaf.join("cgroup.procs");
    let value = format!("{pid}\n");
    let wrap = |source| CgroupError::Write {
        path: path.clone(),
        value: value.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(wrap)?;
    f.write_all(value.as_bytes()).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{Cgroup, CgroupManager};

    fn put(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A container's cgroup (the namespace root) holding the agent (pid 1) and a probe (pid 57).
    fn container_cgroup(root: &Path) {
        put(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        );
        put(&root.join("cgroup.subtree_control"), "");
        put(&root.join("cgroup.procs"), "1\n57\n");
        put(&root.join("cgroup.freeze"), "0\n");
    }

    #[test]
    fn in_a_container_everything_moves_into_the_leaf_and_trials_go_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path();
        container_cgroup(own);
        let leaf = make_room(own, 1, true).unwrap().expect("moved");
        assert_eq!(leaf, own.join("agent"));
        assert_eq!(
            std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
            "57\n1\n"
        );
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+cpuset +cpu +io +memory +pids"
        );
        // Detected again from inside the leaf (`/proc/self/cgroup` reads `0::/agent`): trial
        // cgroups still go under the container's cgroup, beside the leaf, with its controllers.
        put(&leaf.join("cgroup.procs"), "1\n");
        let m = CgroupManager::v2_with_leaf(leaf.clone(), 1, true).unwrap();
        assert_eq!(m.own_dirs(), [own.to_owned()]);
        assert_eq!(
            m.controllers(),
            [
                Controller::Cpuset,
                Controller::Cpu,
                Controller::Io,
                Controller::Memory,
                Controller::Pids
            ]
        );
        let cg = m.create("isolab-agent-1-x/trial").unwrap();
        assert_eq!(
            cg.procs_files(),
            [own.join("isolab-agent-1-x/trial/cgroup.procs")]
        );
        assert!(!leaf.join("agent").exists(), "no leaf in the leaf");
    }

    #[test]
    fn outside_a_container_only_a_lone_agent_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path();
        container_cgroup(own);
        // A login session: the shell (57) is not ours to move.
        assert_eq!(make_room(own, 1, false).unwrap(), None);
        assert!(!own.join("agent").exists());
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            ""
        );
        // A service cgroup holding the agent alone.
        put(&own.join("cgroup.procs"), "1\n");
        assert_eq!(make_room(own, 1, false).unwrap(), Some(own.join("agent")));
        assert_eq!(
            std::fs::read_to_string(own.join("agent/cgroup.procs")).unwrap(),
            "1\n"
        );
    }

    #[test]
    fn the_root_cgroup_and_an_empty_one_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path();
        container_cgroup(own);
        std::fs::remove_file(own.join("cgroup.freeze")).unwrap();
        assert_eq!(
            make_room(own, 1, true).unwrap(),
            None,
            "the root cgroup has no cgroup.freeze"
        );
        assert!(!own.join("agent").exists());
        put(&own.join("cgroup.freeze"), "0\n");
        put(&own.join("cgroup.procs"), "");
        assert_eq!(make_room(own, 1, true).unwrap(), None, "nothing inside");
        assert!(!own.join("agent").exists());
    }

    #[test]
    fn only_a_leaf_below_enabled_controllers_is_seen_through() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path();
        put(&own.join("agent/cgroup.procs"), "1\n");
        put(&own.join("x/cgroup.procs"), "1\n");
        put(&own.join("cgroup.subtree_control"), "");
        // Someone else's cgroup that happens to be called `agent`.
        assert_eq!(
            own_for_trials(&own.join("agent")).unwrap(),
            own.join("agent")
        );
        put(&own.join("cgroup.subtree_control"), "memory pids\n");
        assert_eq!(own_for_trials(&own.join("agent")).unwrap(), own);
        assert_eq!(own_for_trials(&own.join("x")).unwrap(), own.join("x"));
    }
}
