//! `memory_bomb`: maps `step` bytes (default 16MiB) of anonymous memory at a time and writes
//! every page of it, until `mmap` fails, `limit` is reached (default: no limit) or the kernel
//! kills it (a memory cgroup's OOM killer); then holds what it has until the duration ends.
//! It volunteers as the first OOM victim (`oom_score_adj` 1000, best effort).
//!
//! Series `bytes_reached` after every step (so the last value survives an OOM kill). Summary:
//! `bytes_reached`, `refused` (1 when `mmap` said no, else 0), `ops` (steps), `elapsed_s`.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use super::clock::Clock;
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "memory_bomb";

/// Bytes between two written bytes: a page.
const PAGE: usize = 4096;

/// `memory_bomb`: see the module documentation.
pub(crate) fn memory_bomb(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let step_bytes = params.bytes("step", 16 << 20);
    let step = usize::try_from(step_bytes)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| WorkloadError::InvalidParam {
            workload: W,
            param: "step",
            value: step_bytes.to_string(),
            expected: "a positive size that fits in memory, e.g. 16MiB".into(),
        })?;
    let limit = params.bytes_opt("limit").unwrap_or(u64::MAX);
    // Best effort: a container or VM may not have /proc, or forbid the write.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let clock = Clock::new(params.run_duration());
    let mut held = Held::default();
    let mut reached = 0u64;
    let mut refused = false;
    while !clock.done() && !refused && reached < limit {
        match held.grow(step) {
            Ok(()) => {
                reached += step_bytes;
                em.series(
                    "bytes_reached",
                    to_f64(reached),
                    "bytes",
                    true,
                    clock.t_offset_s(),
                )?;
            }
            Err(e) => {
                eprintln!(
                    "isolab-workload: {W}: mmap of {step_bytes} bytes refused after {reached}: {e}"
                );
                refused = true;
            }
        }
    }
    clock.idle_until_end();
    let elapsed = clock.elapsed();
    drop(held);
    em.summary("bytes_reached", to_f64(reached), "bytes", true)?;
    em.summary("refused", if refused { 1.0 } else { 0.0 }, "bool", false)?;
    let steps = reached / step_bytes.max(1);
    report_totals(
        em,
        &Measured {
            ops: steps,
            elapsed,
        },
    )?;
    check_stop()
}

/// The mappings made so far, unmapped on drop.
#[derive(Default)]
struct Held {
    maps: Vec<(NonNull<c_void>, NonZeroUsize)>,
}

impl Held {
    /// Maps `len` more bytes and writes one byte per page.
    fn grow(&mut self, len: NonZeroUsize) -> nix::Result<()> {
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks aliases
        // nothing of ours.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        self.maps.push((ptr, len));
        let base = ptr.as_ptr().cast::<u8>();
        for offset in (0..len.get()).step_by(PAGE) {
            // SAFETY: offset < len, inside the writable mapping just made and owned by self.
            unsafe { base.add(offset).write_volatile(1) };
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (ptr, len) in self.maps.drain(..) {
            // SAFETY: each (ptr, len) is exactly one mapping made in `grow`, unmapped once.
            let _ = unsafe { munmap(ptr, len.get()) };
        }
    }
}
