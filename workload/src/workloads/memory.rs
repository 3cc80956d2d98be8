//! Memory workloads: `page_fault`, `mmap`, `mem_bw`.

use std::ffi::c_void;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, munmap};
use nix::unistd::{SysconfVar, sysconf};

use super::{WorkloadError, report_per_op, report_totals};
use crate::emit::Emitter;
use crate::measure::{Budget, Measured, measure, to_f64};
use crate::params::Params;

const MIB: u64 = 1 << 20;

/// `page_fault`: map a fresh anonymous region, write one byte per page, unmap. Only the
/// writing is timed; transparent huge pages are disabled on the region so every page faults.
pub(super) fn page_fault(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "page_fault";
    let page = page_size();
    let size = params.bytes("size", 64 * MIB);
    let pages = size / page;
    if pages == 0 {
        return Err(invalid_size(
            W,
            size,
            &format!("at least one page ({page} bytes)"),
        ));
    }
    let len = map_len(W, pages * page, "a size that fits in memory")?;
    let (page_step, page_count) = (to_usize(page), to_usize(pages));
    let mut touching = Duration::ZERO;
    let mut rounds = 0u64;
    let m = measure(params.budget(), || {
        let map = AnonMap::new(W, len)?;
        // SAFETY: advice on a mapping we own; failure (no THP support) only loses the advice.
        let _ = unsafe { madvise(map.ptr, len.get(), MmapAdvise::MADV_NOHUGEPAGE) };
        let base = map.ptr.as_ptr().cast::<u8>();
        let start = Instant::now();
        for i in 0..page_count {
            // SAFETY: i * page_step < len, inside the writable mapping owned by `map`.
            unsafe { base.add(i * page_step).write_volatile(1) };
        }
        touching += start.elapsed();
        rounds += 1;
        Ok(())
    })?;
    // Calibration rounds are included here: every round is a valid measurement of faults.
    let faults = to_f64(rounds * pages);
    let touching_s = touching.as_secs_f64().max(1e-9);
    em.summary("ns_per_fault", touching_s * 1e9 / faults, "ns", false)?;
    em.summary("faults_per_s", faults / touching_s, "faults/s", true)?;
    em.summary("faults", faults, "faults", true)?;
    report_totals(em, &m)
}

/// `mmap`: map and unmap a region without touching it.
pub(super) fn mmap(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "mmap";
    let len = map_len(W, params.bytes("size", MIB), "at least 1 byte")?;
    let m = measure(params.budget(), || AnonMap::new(W, len).map(drop))?;
    report_per_op(em, &m, "us_per_op", "us", 1.0)
}

/// `mem_bw`: read, write and copy bandwidth over one buffer, each phase a third of the duration.
pub(super) fn mem_bw(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "mem_bw";
    let size = params.bytes("size", 64 * MIB);
    // An even number of u64 words, so the copy moves one half onto the other.
    let words = (size / 16) * 2;
    if words == 0 {
        return Err(invalid_size(W, size, "at least 16 bytes"));
    }
    let n =
        usize::try_from(words).map_err(|_| invalid_size(W, size, "a size that fits in memory"))?;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(n).map_err(|_| WorkloadError::Alloc {
        workload: W,
        bytes: size,
    })?;
    buf.resize(n, 1); // touches every page before anything is timed
    let phase = Budget::Duration(params.run_duration() / 3);
    let bytes = to_f64(words * 8);

    let read = measure(phase, || {
        let sum = black_box(buf.as_slice())
            .iter()
            .fold(0u64, |acc, w| acc.wrapping_add(*w));
        black_box(sum);
        Ok(())
    })?;
    let mut pass = 0u64;
    let write = measure(phase, || {
        pass += 1;
        buf.fill(black_box(pass));
        black_box(buf.as_mut_slice());
        Ok(())
    })?;
    let copy = measure(phase, || {
        let (from, to) = buf.split_at_mut(n / 2);
        to.copy_from_slice(black_box(from));
        black_box(to);
        Ok(())
    })?;

    let gb_s =
        |m: &Measured, bytes_per_pass: f64| bytes_per_pass * to_f64(m.ops) / m.elapsed_s() / 1e9;
    em.summary("read_gb_s", gb_s(&read, bytes), "GB/s", true)?;
    em.summary("write_gb_s", gb_s(&write, bytes), "GB/s", true)?;
    em.summary("copy_gb_s", gb_s(&copy, bytes / 2.0), "GB/s", true)?;
    let total = Measured {
        ops: read.ops + write.ops + copy.ops,
        elapsed: read.elapsed + write.elapsed + copy.elapsed,
    };
    report_totals(em, &total)
}

/// An anonymous private read-write mapping, unmapped on drop.
struct AnonMap {
    ptr: NonNull<c_void>,
    len: NonZeroUsize,
}

impl AnonMap {
    fn new(workload: &'static str, len: NonZeroUsize) -> Result<Self, WorkloadError> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| WorkloadError::sys(workload, "mmap", e))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping created in `new`, and nothing refers to it
        // once the owner is dropped.
        let _ = unsafe { munmap(self.ptr, self.len.get()) };
    }
}

/// The system page size (4096 when it cannot be read).
fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => u64::try_from(n).unwrap_or(4096).max(1),
        _ => 4096,
    }
}

/// A mapping length from a `size` param, or a usage error saying what is expected.
fn map_len(
    workload: &'static str,
    size: u64,
    at_least: &str,
) -> Result<NonZeroUsize, WorkloadError> {
    usize::try_from(size)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| invalid_size(workload, size, at_least))
}

fn invalid_size(workload: &'static str, size: u64, expected: &str) -> WorkloadError {
    WorkloadError::InvalidParam {
        workload,
        param: "size",
        value: size.to_string(),
        expected: expected.to_owned(),
    }
}

/// `u64` to `usize` for values already known to fit (they came from a `usize` length).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
