//! The one error type of the cgroup module.

use std::io;
use std::path::PathBuf;

/// What went wrong with a cgroup operation; every variant names the path or cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found.
    #[error("cgroup detection: {reason}")]
    Detect {
        /// What was missing.
        reason: String,
    },
    /// A relative cgroup path that could escape our own cgroup, or is empty.
    #[error("invalid cgroup path {rel:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        rel: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A requested limit is out of range.
    #[error("invalid limit {name} = {value}: {reason}")]
    InvalidLimit {
        /// Field of `CgroupLimits`.
        name: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
    /// A control file needed for a requested limit does not exist.
    #[error("{} not present: {hint}", path.display())]
    MissingControl {
        /// The control file.
        path: PathBuf,
        /// The likely cause (kernel option, controller not enabled).
        hint: &'static str,
    },
    /// A controller needed for a requested limit is not mounted or enabled.
    #[error("{file} not present: {controller} controller not available")]
    ControllerUnavailable {
        /// Controller name.
        controller: &'static str,
        /// The control file that was needed.
        file: &'static str,
    },
    /// Reading a file or directory failed.
    #[error("read {}: {source}", path.display())]
    Read {
        /// File read.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Writing a control file failed.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        /// File written.
        path: PathBuf,
        /// Value written.
        value: String,
        /// Cause.
        source: io::Error,
    },
    /// A control file held something we could not parse.
    #[error("parse {}: {reason}", path.display())]
    Parse {
        /// File read.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Creating a cgroup directory failed.
    #[error("create {}: {source}", path.display())]
    Create {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("remove {}: {source}", path.display())]
    Remove {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Sending a signal failed (other than "no such process").
    #[error("kill pid {pid} in cgroup {rel}: {source}")]
    Signal {
        /// Cgroup.
        rel: String,
        /// Target.
        pid: u32,
        /// Cause.
        source: nix::Error,
    },
    /// Processes were still alive when the kill deadline passed.
    #[error("cgroup {rel}: processes {pids:?} survived kill for {timeout_ms} ms")]
    KillTimeout {
        /// Cgroup.
        rel: String,
        /// Survivors.
        pids: Vec<u32>,
        /// The deadline given.
        timeout_ms: u128,
    },
    /// The cgroup does not exist (in any controller).
    #[error("cgroup {rel} does not exist")]
    Gone {
        /// Cgroup.
        rel: String,
    },
    /// A path holds a NUL byte and cannot be passed to the kernel.
    #[error("path {} holds a NUL byte", path.display())]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
}

impl CgroupError {
    /// The OS error number behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Read { source, .. }
            | Self::Write { source, .. }
            | Self::Create { source, .. }
            | Self::Remove { source, .. } => source.raw_os_error(),
            Self::Signal { source, .. } => Some(*source as i32),
            _ => None,
        }
    }
}
