//! `disk`: block-device-style I/O on one file of `size` bytes (default 64MiB) in a fresh work
//! directory (`dir`, default a temp dir): a sequential write (then `fdatasync`), a sequential
//! read, 4 KiB random reads for half the duration, then 4 KiB writes each followed by `fsync`
//! for the other half.
//!
//! The file is opened with `O_DIRECT` where the filesystem allows it, so reads reach the device.
//! Where it does not (tmpfs, the ramfs of an initramfs), the workload says so on stderr and in
//! `direct_io` = 0, writes through the page cache, and asks the kernel to drop the file's cached
//! pages (`posix_fadvise(DONTNEED)` after `fdatasync`) before reading; dropping the whole page
//! cache needs root and would disturb the neighbours, so reads may then come from memory.
//! The fsync phase always writes through the page cache, then times `fsync` alone.
//!
//! Metrics: `seq_write_mb_s`, `seq_read_mb_s` (1 MB = 1e6 bytes), `rand_read_iops`,
//! `fsync_p50_us`, `fsync_p99_us`, `direct_io` (1 or 0), `ops` (1 MiB sequential blocks plus
//! random reads plus fsyncs), `elapsed_s`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::aligned::{ALIGN, AlignedBuf};
use super::latency::{Histogram, Rng};
use super::workdir::WorkDir;
use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;

const W: &str = "disk";

/// Sequential block size.
const SEQ_BLOCK: u64 = 1 << 20;
/// Random I/O size.
const RAND_BLOCK: u64 = 4096;

/// `disk`: see the module documentation.
pub(crate) fn disk(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let requested = params.bytes("size", 64 << 20);
    let block = SEQ_BLOCK.min(requested / RAND_BLOCK * RAND_BLOCK);
    if block == 0 || requested > 1 << 40 {
        return Err(WorkloadError::InvalidParam {
            workload: W,
            param: "size",
            value: requested.to_string(),
            expected: "from 4KiB to 1TiB".into(),
        });
    }
    let size = requested / block * block;
    let dir = WorkDir::create(W, params.path("dir"))?;
    let path = dir.path().join("disk.dat");
    let phase = params.run_duration() / 2;
    let start = Instant::now();

    let mut file = TestFile::create(&path)?;
    let mut buf = AlignedBuf::new(W, usize::try_from(block).unwrap_or(usize::MAX))?;
    let mut rng = Rng::from_time();
    for chunk in buf.as_mut_slice().chunks_mut(8) {
        let bytes = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let write = file.sequential(&mut buf, size, Direction::Write)?;
    file.drop_cache();
    let read = file.sequential(&mut buf, size, Direction::Read)?;
    file.drop_cache();
    let rand = file.random_reads(&mut buf, size, phase, &mut rng)?;
    let fsyncs = fsync_latencies(&path, size, phase, &mut rng)?;
    let direct = file.direct;
    drop(file);
    drop(dir);

    let mb_s = |d: Duration| to_f64(size) / 1e6 / d.as_secs_f64().max(1e-9);
    let us = |q| to_f64(fsyncs.quantile_ns(q).unwrap_or(0)) / 1e3;
    em.summary("seq_write_mb_s", mb_s(write), "MB/s", true)?;
    em.summary("seq_read_mb_s", mb_s(read), "MB/s", true)?;
    em.summary("rand_read_iops", rand.ops_per_s(), "IOPS", true)?;
    em.summary("fsync_p50_us", us(0.5), "us", false)?;
    em.summary("fsync_p99_us", us(0.99), "us", false)?;
    em.summary("direct_io", if direct { 1.0 } else { 0.0 }, "bool", true)?;
    let seq_ops = 2 * (size / block);
    report_totals(
        em,
        &Measured {
            ops: seq_ops + rand.ops + fsyncs.count(),
            elapsed: start.elapsed(),
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// The test file, opened with `O_DIRECT` when the filesystem takes it.
struct TestFile {
    file: File,
    path: PathBuf,
    direct: bool,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WorkloadError {
    let path = path.to_owned();
    move |source| WorkloadError::Io {
        workload: W,
        op,
        path,
        source,
    }
}

impl TestFile {
    fn create(path: &Path) -> Result<Self, WorkloadError> {
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
        };
        match open(libc::O_DIRECT) {
            Ok(file) => {
                // Some filesystems accept the flag and refuse the I/O: probe one block.
                let probe = AlignedBuf::new(W, ALIGN)?;
                if file.write_at(probe.as_slice(), 0).is_ok() {
                    return Ok(Self {
                        file,
                        path: path.to_owned(),
                        direct: true,
                    });
                }
                drop(file);
                std::fs::remove_file(path).map_err(io_err("remove", path))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // The kernel may have created the file before refusing the flag.
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("remove", path)(e));
                    }
                    _ => {}
                }
            }
            Err(e) => return Err(io_err("create", path)(e)),
        }
        eprintln!(
            "isolab-workload: {W}: O_DIRECT is not supported in {}; using the page cache \
             (reads may be served from memory)",
            path.parent().unwrap_or(path).display()
        );
        let file = open(0).map_err(io_err("create", path))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            direct: false,
        })
    }

    /// Reads or writes the whole file in `buf`-sized blocks; a write ends with `fdatasync`.
    fn sequential(
        &mut self,
        buf: &mut AlignedBuf,
        size: u64,
        dir: Direction,
    ) -> Result<Duration, WorkloadError> {
        let block = buf.as_slice().len() as u64;
        let start = Instant::now();
        let mut offset = 0;
        while offset < size {
            check_stop()?;
            match dir {
                Direction::Write => self
                    .file
                    .write_all_at(buf.as_slice(), offset)
                    .map_err(io_err("write", &self.path))?,
                Direction::Read => self
                    .file
                    .read_exact_at(buf.as_mut_slice(), offset)
                    .map_err(io_err("read", &self.path))?,
            }
            offset += block;
        }
        if dir == Direction::Write {
            self.file
                .sync_data()
                .map_err(io_err("fdatasync", &self.path))?;
        }
        Ok(start.elapsed())
    }

    /// 4 KiB reads at random aligned offsets for `phase`.
    fn random_reads(
        &mut self,
        buf: &mut AlignedBuf,
        size: u64,
        phase: Duration,
        rng: &mut Rng,
    ) -> Result<Measured, WorkloadError> {
        let blocks = size / RAND_BLOCK;
        let one = &mut buf.as_mut_slice()[..usize::try_from(RAND_BLOCK).unwrap_or(4096)];
        let start = Instant::now();
        let mut ops = 0u64;
        loop {
            for _ in 0..32 {
                let offset = rng.below(blocks) * RAND_BLOCK;
                self.file
                    .read_exact_at(one, offset)
                    .map_err(io_err("read", &self.path))?;
            }
            ops += 32;
            check_stop()?;
            let elapsed = start.elapsed();
            if elapsed >= phase {
                return Ok(Measured { ops, elapsed });
            }
        }
    }

    /// Without `O_DIRECT`, asks the kernel to forget the file's cached pages.
    fn drop_cache(&self) {
        if !self.direct {
            let _ = self.file.sync_data();
            // SAFETY: advice on a descriptor we own; offset 0 and length 0 mean the whole file.
            let _ = unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
            };
        }
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// 4 KiB buffered writes at random offsets, each followed by a timed `fsync`, for `phase`
/// (at least one).
fn fsync_latencies(
    path: &Path,
    size: u64,
    phase: Duration,
    rng: &mut Rng,
) -> Result<Histogram, WorkloadError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let block = vec![0xa5_u8; usize::try_from(RAND_BLOCK).unwrap_or(4096)];
    let blocks = size / RAND_BLOCK;
    let mut hist = Histogram::default();
    let start = Instant::now();
    loop {
        let offset = rng.below(blocks) * RAND_BLOCK;
        file.write_all_at(&block, offset)
            .map_err(io_err("write", path))?;
        let t0 = Instant::now();
        file.sync_all().map_err(io_err("fsync", path))?;
        hist.record(t0.elapsed());
        check_stop()?;
        if start.elapsed() >= phase {
            return Ok(hist);
        }
    }
}
