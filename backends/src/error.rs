//! [`CommonError`]: what goes wrong alike in every backend, declared once. Each backend's error
//! type wraps it in a variant `Common` and adds only its own; `from_common!` lets `?` turn
//! each cause into that variant.

use std::path::PathBuf;

use isolab_host::cgroup::TrialCgroupError;

use crate::PlatformMismatch;
use crate::args::ArgsError;
use crate::rootfs::NotStatic;

/// What any backend can refuse or fail at alike.
#[derive(Debug, thiserror::Error)]
pub enum CommonError {
    /// The trial's platform is another backend's.
    #[error(transparent)]
    Platform(#[from] PlatformMismatch),
    /// The instance's command line is not allowed.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A `minimal` root needs a statically linked workload.
    #[error(transparent)]
    NotStatic(#[from] NotStatic),
    /// The trial's cgroups.
    #[error(transparent)]
    Cgroups(#[from] TrialCgroupError),
    /// An instance's main process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// An instance's main process (the workload, `lxc-execute`) could not be started.
#[derive(Debug, thiserror::Error)]
#[error("instance {instance}: cannot start {}: {source}", program.display())]
pub struct SpawnError {
    /// Instance index.
    pub instance: u32,
    /// The binary.
    pub program: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// `impl From<cause>` for backend error type `$t`, whose variant `Common` holds a
/// [`CommonError`], for every cause of a [`CommonError`].
macro_rules! from_common {
    ($t:ty) => {
        impl From<$crate::PlatformMismatch> for $t {
            fn from(e: $crate::PlatformMismatch) -> Self {
                Self::Common(e.into())
            }
        }
        impl From<$crate::args::ArgsError> for $t {
            fn from(e: $crate::args::ArgsError) -> Self {
                Self::Common(e.into())
            }
        }
        impl From<$crate::rootfs::NotStatic> for $t {
            fn from(e: $crate::rootfs::NotStatic) -> Self {
                Self::Common(e.into())
            }
        }
        impl From<$crate::error::SpawnError> for $t {
            fn from(e: $crate::error::SpawnError) -> Self {
                Self::Common(e.into())
            }
        }
        impl From<isolab_host::cgroup::TrialCgroupError> for $t {
            fn from(e: isolab_host::cgroup::TrialCgroupError) -> Self {
                Self::Common(e.into())
            }
        }
    };
}
pub(crate) use from_common;
