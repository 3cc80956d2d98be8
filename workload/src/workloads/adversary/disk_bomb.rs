//! `disk_bomb`: appends `step` bytes (default 4MiB) of incompressible data to one file in a
//! fresh directory under `dir` (default: a temp dir), `fsync`ing after every step, until the
//! filesystem says no (`ENOSPC`, `EDQUOT`, `EFBIG`) or `limit` bytes are written (default: no
//! limit); then holds the file until the duration ends and removes it (unless killed first).
//!
//! Series `bytes_written` after every step. Summary: `bytes_written`, `full` (1 when the
//! filesystem refused, else 0), `ops` (steps), `elapsed_s`.

use std::fs::File;
use std::io::{self, Write};

use super::clock::Clock;
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;
use crate::workloads::latency::Rng;
use crate::workloads::workdir::WorkDir;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "disk_bomb";

/// `disk_bomb`: see the module documentation.
pub(crate) fn disk_bomb(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let step_bytes = params.bytes("step", 4 << 20);
    let step = usize::try_from(step_bytes)
        .ok()
        .filter(|s| (1..=1 << 30).contains(s))
        .ok_or_else(|| WorkloadError::InvalidParam {
            workload: W,
            param: "step",
            value: step_bytes.to_string(),
            expected: "from 1 byte to 1GiB".into(),
        })?;
    let limit = params.bytes_opt("limit").unwrap_or(u64::MAX);
    let mut block = vec![0u8; step];
    let mut rng = Rng::from_time();
    for chunk in block.chunks_mut(8) {
        let bytes = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let dir = WorkDir::create(W, params.path("dir"))?;
    let path = dir.path().join("bomb.dat");
    let mut file = File::create_new(&path).map_err(|source| WorkloadError::Io {
        workload: W,
        op: "create",
        path: path.clone(),
        source,
    })?;
    let clock = Clock::new(params.run_duration());
    let (mut written, mut steps, mut full) = (0u64, 0u64, false);
    while !clock.done() && !full && written < limit {
        let want = usize::try_from((limit - written).min(step_bytes)).unwrap_or(step);
        let result =
            write_some(&mut file, &block[..want], &mut written).and_then(|()| file.sync_data());
        match result {
            Ok(()) => steps += 1,
            Err(e) if is_full(&e) => {
                eprintln!(
                    "isolab-workload: {W}: the filesystem refused after {written} bytes: {e}"
                );
                full = true;
            }
            Err(source) => {
                return Err(WorkloadError::Io {
                    workload: W,
                    op: "write",
                    path,
                    source,
                });
            }
        }
        em.series(
            "bytes_written",
            to_f64(written),
            "bytes",
            true,
            clock.t_offset_s(),
        )?;
    }
    clock.idle_until_end();
    let elapsed = clock.elapsed();
    drop(file);
    drop(dir);
    em.summary("bytes_written", to_f64(written), "bytes", true)?;
    em.summary("full", if full { 1.0 } else { 0.0 }, "bool", false)?;
    report_totals(
        em,
        &Measured {
            ops: steps,
            elapsed,
        },
    )?;
    check_stop()
}

/// Writes all of `buf`, counting every byte that made it, even when a later write fails.
fn write_some(file: &mut File, mut buf: &[u8], written: &mut u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Ok(n) => {
                *written += n as u64;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    )
}
