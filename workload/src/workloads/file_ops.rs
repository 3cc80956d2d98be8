//! `file_ops`: create, write, close and unlink files in a fresh directory of our own.

use std::fs::{self, File};
use std::io::Write;

use super::workdir::WorkDir;
use super::{WorkloadError, report_per_op};
use crate::emit::Emitter;
use crate::measure::measure;
use crate::params::Params;

const W: &str = "file_ops";

/// `file_ops`: one operation creates a file (`O_EXCL`), writes `size` bytes, closes and unlinks it.
pub(super) fn file_ops(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let size = params.bytes("size", 0);
    let len = usize::try_from(size).map_err(|_| WorkloadError::Alloc {
        workload: W,
        bytes: size,
    })?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| WorkloadError::Alloc {
            workload: W,
            bytes: size,
        })?;
    data.resize(len, 0xa5_u8);

    let dir = WorkDir::create(W, params.path("dir"))?;
    let mut n = 0u64;
    let m = measure(params.budget(), || {
        n += 1;
        let path = dir.path().join(format!("f{n}"));
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source| WorkloadError::Io {
                workload: W,
                op,
                path,
                source,
            }
        };
        let mut file = File::create_new(&path).map_err(io_err("create"))?;
        if !data.is_empty() {
            file.write_all(&data).map_err(io_err("write"))?;
        }
        drop(file);
        fs::remove_file(&path).map_err(io_err("unlink"))
    })?;
    drop(dir);
    report_per_op(em, &m, "us_per_file", "us", 1.0)
}
