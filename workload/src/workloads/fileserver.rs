//! `fileserver`: a postmark-like small-file mix over a pool of files spread across
//! subdirectories of a fresh work directory.
//!
//! Set-up (not measured) creates `files` files (default 1000) over `subdirs` directories
//! (default 10), each of a random size between 512 bytes and `size` (default 16KiB). Then, for
//! the duration, each operation is one of four, picked at random with equal odds: create a new
//! file of random size, delete a random file, read a random file whole, or append a random amount
//! (up to `size / 4`, at least one byte) to a random file. Creating when the pool is at twice its
//! size turns into an append, deleting from an empty pool into a create, so the pool stays
//! near its starting size. Nothing is synced, as in postmark.
//!
//! Metrics: `ops_per_s`, `mb_per_s` (bytes read plus written, 1 MB = 1e6 bytes), `ops`,
//! `elapsed_s`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::latency::Rng;
use super::workdir::WorkDir;
use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;

const W: &str = "fileserver";

/// The smallest file created.
const MIN_FILE: u64 = 512;
/// Operations between clock reads.
const BATCH: u64 = 16;

/// `fileserver`: see the module documentation.
pub(crate) fn fileserver(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let files = params.count("files", 1000);
    let subdirs = params.count("subdirs", 10);
    let max_size = params.bytes("size", 16 << 10);
    if !(MIN_FILE..=64 << 20).contains(&max_size) {
        return Err(WorkloadError::InvalidParam {
            workload: W,
            param: "size",
            value: max_size.to_string(),
            expected: format!("from {MIN_FILE} bytes to 64MiB"),
        });
    }
    let dir = WorkDir::create(W, params.path("dir"))?;
    let mut pool = Pool::create(dir.path(), files, subdirs, max_size)?;
    let duration = params.run_duration();
    let start = Instant::now();
    let mut ops = 0u64;
    let elapsed = loop {
        for _ in 0..BATCH {
            pool.operation()?;
        }
        ops += BATCH;
        check_stop()?;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break elapsed;
        }
    };
    let moved = pool.bytes_moved;
    drop(pool);
    drop(dir);
    let m = Measured { ops, elapsed };
    em.summary("ops_per_s", m.ops_per_s(), "ops/s", true)?;
    em.summary(
        "mb_per_s",
        to_f64(moved) / 1e6 / m.elapsed_s(),
        "MB/s",
        true,
    )?;
    report_totals(em, &m)
}

/// The files and what was done to them.
struct Pool {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    target: usize,
    max_size: u64,
    next_name: u64,
    rng: Rng,
    data: Vec<u8>,
    buf: Vec<u8>,
    bytes_moved: u64,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkloadError {
    let path = path.to_owned();
    move |source| WorkloadError::Io {
        workload: W,
        op,
        path,
        source,
    }
}

impl Pool {
    fn create(root: &Path, files: u64, subdirs: u64, max_size: u64) -> Result<Self, WorkloadError> {
        let mut dirs = Vec::new();
        for d in 0..subdirs {
            let path = root.join(format!("d{d}"));
            fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
            dirs.push(path);
        }
        let len = usize::try_from(max_size).unwrap_or(usize::MAX);
        let target = usize::try_from(files).unwrap_or(usize::MAX);
        let mut pool = Self {
            dirs,
            files: Vec::with_capacity(target),
            target,
            max_size,
            next_name: 0,
            rng: Rng::from_time(),
            data: (0..len)
                .map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0))
                .collect(),
            buf: vec![0; len.max(64 << 10)],
            bytes_moved: 0,
        };
        for _ in 0..files {
            check_stop()?;
            pool.create_file()?;
        }
        pool.bytes_moved = 0;
        Ok(pool)
    }

    fn random_size(&mut self) -> usize {
        let size = MIN_FILE + self.rng.below(self.max_size - MIN_FILE + 1);
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    fn random_file(&mut self) -> usize {
        let n = u64::try_from(self.files.len()).unwrap_or(u64::MAX);
        usize::try_from(self.rng.below(n)).unwrap_or(0)
    }

    fn operation(&mut self) -> Result<(), WorkloadError> {
        let pick = self.rng.below(4);
        match pick {
            _ if self.files.is_empty() => self.create_file(),
            0 if self.files.len() < 2 * self.target.max(1) => self.create_file(),
            0 | 3 => self.append(),
            1 => self.delete(),
            _ => self.read(),
        }
    }

    fn create_file(&mut self) -> Result<(), WorkloadError> {
        let d = usize::try_from(self.next_name).unwrap_or(0) % self.dirs.len().max(1);
        let path = self
            .dirs
            .get(d)
            .map_or_else(PathBuf::new, Clone::clone)
            .join(format!("f{}", self.next_name));
        self.next_name += 1;
        let size = self.random_size();
        let mut file = File::create_new(&path).map_err(io_err("create", &path))?;
        file.write_all(&self.data[..size])
            .map_err(io_err("write", &path))?;
        self.bytes_moved += size as u64;
        self.files.push(path);
        Ok(())
    }

    fn delete(&mut self) -> Result<(), WorkloadError> {
        let i = self.random_file();
        let path = self.files.swap_remove(i);
        fs::remove_file(&path).map_err(io_err("unlink", &path))
    }

    fn read(&mut self) -> Result<(), WorkloadError> {
        let i = self.random_file();
        let path = &self.files[i];
        let mut file = File::open(path).map_err(io_err("open", path))?;
        loop {
            let n = file.read(&mut self.buf).map_err(io_err("read", path))?;
            if n == 0 {
                return Ok(());
            }
            self.bytes_moved += n as u64;
        }
    }

    fn append(&mut self) -> Result<(), WorkloadError> {
        let i = self.random_file();
        let quarter = (self.max_size / 4).max(1);
        let len = usize::try_from(1 + self.rng.below(quarter)).unwrap_or(1);
        let path = &self.files[i];
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        file.write_all(&self.data[..len])
            .map_err(io_err("append to", path))?;
        self.bytes_moved += len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_stays_near_its_size_and_counts_bytes() {
        let dir = WorkDir::create_in(W, &std::env::temp_dir()).unwrap();
        let mut pool = Pool::create(dir.path(), 50, 3, 4096).unwrap();
        assert_eq!(pool.files.len(), 50);
        assert_eq!(pool.bytes_moved, 0);
        for _ in 0..2000 {
            pool.operation().unwrap();
        }
        assert!(pool.bytes_moved > 0);
        assert!(
            !pool.files.is_empty() && pool.files.len() <= 100,
            "{}",
            pool.files.len()
        );
        let on_disk: usize = pool
            .dirs
            .iter()
            .map(|d| fs::read_dir(d).unwrap().count())
            .sum();
        assert_eq!(on_disk, pool.files.len());
    }
}
