//! The run directory: its id, its manifest (kept up to date atomically) and its environment files.

use std::path::{Path, PathBuf};

use isolab_model::Pipeline;
use isolab_model::manifest::{
    ExperimentRecord, MANIFEST_VERSION, Manifest, RunStatus, TrialRecord, TrialState,
};
use isolab_model::plan::Trial;
use isolab_proto::v1 as pb;
use rand::Rng;

use crate::sink::{self, SinkError};

/// Why the run directory could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not readable.
    #[error("{path}: not an isolab manifest: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A run directory with this id already exists; it is never reused for a new run.
    #[error("{path}: a run directory with this id already exists")]
    Exists {
        /// The existing directory.
        path: PathBuf,
    },
    /// Another process holds the run's lock (`<run dir>/.lock`).
    #[error("run {run_id} is already running (pid {})", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Locked {
        /// The run.
        run_id: String,
        /// The process holding the lock, as it wrote into the lock file.
        pid: Option<u32>,
    },
}

/// The lock file of a run directory; an exclusive `flock` on it is held for as long as a
/// [`RunDir`] is open, and released by the kernel when the process exits or crashes.
pub const LOCK_FILE: &str = ".lock";

/// How many fresh ids [`with_fresh_id`] tries before giving up.
pub const FRESH_ID_ATTEMPTS: usize = 16;

/// Calls `create` with ids from `next_id` until one does not collide with an existing run
/// directory ([`RunDirError::Exists`]), at most [`FRESH_ID_ATTEMPTS`] times.
pub fn with_fresh_id<T>(
    mut next_id: impl FnMut() -> String,
    mut create: impl FnMut(&str) -> Result<T, RunDirError>,
) -> Result<T, RunDirError> {
    let mut attempt = 1;
    loop {
        match create(&next_id()) {
            Err(RunDirError::Exists { path }) if attempt < FRESH_ID_ATTEMPTS => {
                tracing::info!(existing = %path.display(), "run id collided; drawing another");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Takes the exclusive lock of the run directory `path` without waiting and records this
/// process's pid in it; a lock held by another process is [`RunDirError::Locked`].
fn lock(path: &Path) -> Result<std::fs::File, RunDirError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let file = path.join(LOCK_FILE);
    let io = |source| RunDirError::Io {
        path: file.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&file)
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            return Err(RunDirError::Locked {
                run_id: path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| writeln!(f, "{}", std::process::id()))
        .map_err(io)?;
    Ok(f)
}

/// UTC now as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A new run id: `<pipeline>-<YYYYmmddTHHMMSSZ>-<4 hex>`.
pub fn new_run_id(pipeline: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = now.format(&fmt).unwrap_or_default();
    let tag: u16 = rand::rng().random();
    format!("{pipeline}-{stamp}-{tag:04x}")
}

/// The manifest record of a planned trial.
/// A pending trial record; `round` is the trial's round in its experiment's execution order.
pub fn trial_record(t: &Trial, round: Option<u32>) -> TrialRecord {
    TrialRecord {
        id: t.id.clone(),
        experiment: t.experiment.clone(),
        platform: t.platform.clone(),
        backend: t.platform_spec.backend.as_str().to_owned(),
        workload: t.workload.clone(),
        adversary: t.adversary.clone(),
        repetition: t.repetition,
        warmup: t.warmup,
        n_instances: u32::try_from(t.instances.len()).unwrap_or(u32::MAX),
        status: TrialState::Pending,
        attempts: 0,
        host: None,
        accel: None,
        reason: None,
        file: None,
        rows: 0,
        duration_ms: 0,
        leaks: Vec::new(),
        round,
        started_at: None,
        finished_at: None,
    }
}

/// A run directory with its manifest.
#[derive(Debug)]
pub struct RunDir {
    /// `results/<run_id>`.
    pub path: PathBuf,
    /// The manifest as last written.
    pub manifest: Manifest,
    /// The open `.lock` file holding the run's exclusive lock (released when dropped).
    _lock: std::fs::File,
}

impl RunDir {
    /// Creates `results_dir/<run_id>`, takes its lock and writes the first manifest. An existing
    /// directory is never reused: it is [`RunDirError::Exists`] (see [`with_fresh_id`]).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        results_dir: &Path,
        run_id: &str,
        pipeline: &Pipeline,
        pipeline_file: &Path,
        text: &str,
        sha256: &str,
        overrides: &[String],
        only: Option<&str>,
        seed: Option<u64>,
        trials: &[Trial],
    ) -> Result<Self, RunDirError> {
        let path = results_dir.join(run_id);
        let io = |source| RunDirError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(results_dir).map_err(io)?;
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RunDirError::Exists { path });
            }
            Err(e) => return Err(io(e)),
        }
        let lock = lock(&path)?;
        std::fs::create_dir(path.join("env")).map_err(io)?;
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            run_id: run_id.to_owned(),
            pipeline_name: pipeline.name.clone(),
            pipeline_file: pipeline_file.display().to_string(),
            pipeline_sha256: sha256.to_owned(),
            pipeline_text: text.to_owned(),
            overrides: overrides.to_vec(),
            profile: None,
            only: only.map(str::to_owned),
            isolab_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now_rfc3339(),
            finished_at: None,
            status: RunStatus::Running,
            experiments: pipeline
                .experiments
                .iter()
                .map(|e| ExperimentRecord {
                    name: e.name.clone(),
                    analysis: e.analysis.as_str().to_owned(),
                    platforms: e.platforms.clone(),
                    baseline: e.baseline_platform(pipeline).map(str::to_owned),
                    order: Some(e.trial_order(pipeline).as_str().to_owned()),
                })
                .collect(),
            seed,
            trials: trials
                .iter()
                .map(|t| trial_record(t, Some(isolab_model::plan::round_of(pipeline, t))))
                .collect(),
            repetition_groups: Vec::new(),
            build: None,
            events: None,
        };
        let dir = Self {
            path,
            manifest,
            _lock: lock,
        };
        dir.save()?;
        Ok(dir)
    }

    /// Opens an existing run directory to go on with it: takes its lock (a run being run by
    /// another process is [`RunDirError::Locked`]), reads the manifest and removes staging files.
    pub fn open(path: &Path) -> Result<Self, RunDirError> {
        let file = path.join("manifest.json");
        if !file.is_file() {
            return Err(RunDirError::Io {
                path: file,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let lock = lock(path)?;
        let text = std::fs::read_to_string(&file).map_err(|source| RunDirError::Io {
            path: file.clone(),
            source,
        })?;
        let manifest = serde_json::from_str(&text).map_err(|source| RunDirError::Manifest {
            path: file.clone(),
            source,
        })?;
        let dir = Self {
            path: path.to_path_buf(),
            manifest,
            _lock: lock,
        };
        for staged in dir.remove_staging() {
            tracing::info!(file = %staged.display(), "removed a staging file of an interrupted write");
        }
        Ok(dir)
    }

    /// Removes staging files (`.<name>.tmp`) an interrupted run left behind under `samples/` and
    /// next to the manifest: they were never renamed into place, so they hold no results.
    pub fn remove_staging(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let mut stack = vec![self.path.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if p == self.path.join("samples") || p.starts_with(self.path.join("samples")) {
                        stack.push(p);
                    }
                } else if name.starts_with('.')
                    && name.ends_with(".tmp")
                    && std::fs::remove_file(&p).is_ok()
                {
                    removed.push(p);
                }
            }
        }
        removed
    }

    /// Writes the manifest atomically.
    pub fn save(&self) -> Result<(), RunDirError> {
        let mut bytes = serde_json::to_vec_pretty(&self.manifest).unwrap_or_default();
        bytes.push(b'\n');
        sink::write_atomic(&self.path.join("manifest.json"), &bytes)?;
        Ok(())
    }

    /// The record of trial `id`, added if missing.
    pub fn record_mut(&mut self, trial: &Trial) -> &mut TrialRecord {
        let pos = match self.manifest.trials.iter().position(|r| r.id == trial.id) {
            Some(p) => p,
            None => {
                self.manifest.trials.push(trial_record(trial, None));
                self.manifest.trials.len() - 1
            }
        };
        &mut self.manifest.trials[pos]
    }

    /// Whether trial `id` finished ok and its file is present (resume skips it).
    pub fn is_done(&self, id: &str) -> bool {
        self.manifest.trials.iter().any(|r| {
            r.id == id
                && r.status == TrialState::Ok
                && (r.warmup || r.file.as_ref().is_some_and(|f| self.path.join(f).is_file()))
        })
    }

    /// Writes `env/<host>.json` from an agent's capabilities.
    pub fn write_env(
        &self,
        agent_addr: &str,
        caps: &pb::CapabilitiesResponse,
    ) -> Result<String, RunDirError> {
        let host = caps.host.clone().unwrap_or_default();
        let name = if host.hostname.is_empty() {
            "unknown".to_owned()
        } else {
            host.hostname.clone()
        };
        let json = serde_json::json!({
            "hostname": host.hostname,
            "agent": agent_addr,
            "agent_version": caps.agent_version,
            "kernel": host.kernel,
            "os": host.os,
            "arch": host.arch,
            "cpu_model": host.cpu_model,
            "cpu_flags": host.cpu_flags,
            "cores": host.cores,
            "memory_bytes": host.memory_bytes,
            "cgroup_version": host.cgroup_version,
            "clock_source": host.clock_source,
            "labels": caps.labels,
            "backends": caps.backends.iter().map(|b| serde_json::json!({
                "name": b.name, "available": b.available, "version": b.version,
                "reason": b.reason, "accel": b.accel,
            })).collect::<Vec<_>>(),
            "workloads": caps.workloads,
            // The agent's host-wide budget (absent from agents that do not report one).
            "budget": caps.budget.as_ref().map(|b| serde_json::json!({
                "memory_bytes": b.memory_bytes, "pids": b.pids, "disk_bytes": b.disk_bytes,
                "max_trials": b.max_trials, "max_instances": b.max_instances,
            })),
        });
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
        bytes.push(b'\n');
        sink::write_atomic(&self.path.join("env").join(format!("{safe}.json")), &bytes)?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: p\ndefaults: { repetitions: 1, warmup: 0, duration: 100ms }\nplatforms:\n  native: { backend: native }\nexperiments:\n  - name: e\n    analysis: overhead\n    platforms: [native]\n    workloads: [syscall]\n";

    fn create(results: &Path, run_id: &str) -> Result<RunDir, RunDirError> {
        let p = isolab_model::load::load_str("p.yaml", TEXT).expect("pipeline");
        let trials = isolab_model::plan::plan(&p);
        RunDir::create(
            results,
            run_id,
            &p,
            Path::new("p.yaml"),
            TEXT,
            "sha",
            &[],
            None,
            None,
            &trials,
        )
    }

    #[test]
    fn create_never_reuses_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let first = create(tmp.path(), "r1").unwrap();
        drop(first);
        std::fs::write(tmp.path().join("r1/marker"), b"old run").unwrap();
        let manifest = std::fs::read(tmp.path().join("r1/manifest.json")).unwrap();
        match create(tmp.path(), "r1") {
            Err(RunDirError::Exists { path }) => assert_eq!(path, tmp.path().join("r1")),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(tmp.path().join("r1/manifest.json")).unwrap(),
            manifest
        );
        assert!(tmp.path().join("r1/marker").exists());
    }

    #[test]
    fn a_colliding_drawn_id_is_drawn_again() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("p-1")).unwrap();
        std::fs::create_dir(tmp.path().join("p-2")).unwrap();
        let mut ids = (1..).map(|n| format!("p-{n}"));
        let dir = with_fresh_id(|| ids.next().unwrap(), |id| create(tmp.path(), id)).unwrap();
        assert_eq!(dir.manifest.run_id, "p-3");
        assert_eq!(dir.path, tmp.path().join("p-3"));
        // A directory that keeps colliding ends in Exists rather than a loop or a reuse.
        let e = with_fresh_id(|| "p-1".to_owned(), |id| create(tmp.path(), id)).unwrap_err();
        assert!(matches!(e, RunDirError::Exists { .. }), "{e}");
    }

    #[test]
    fn a_run_that_is_open_cannot_be_opened_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = create(tmp.path(), "r1").unwrap();
        let e = RunDir::open(&dir.path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("run r1 is already running (pid {})", std::process::id())
        );
        drop(dir);
        let again = RunDir::open(&tmp.path().join("r1")).unwrap();
        assert!(matches!(
            RunDir::open(&again.path),
            Err(RunDirError::Locked { .. })
        ));
    }

    #[test]
    fn open_of_a_missing_run_does_not_create_it() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            RunDir::open(&tmp.path().join("nope")),
            Err(RunDirError::Io { .. })
        ));
        assert!(!tmp.path().join("nope").exists());
    }

    #[test]
    fn open_removes_staging_files_of_an_interrupted_run() {
        let tmp = tempfile::tempdir().unwrap();
        let p = isolab_model::load::load_str("p.yaml", TEXT).expect("pipeline");
        let trials = isolab_model::plan::plan(&p);
        let dir = create(tmp.path(), "r1").unwrap();
        let part = dir.path.join("samples/experiment=e/platform=native");
        std::fs::create_dir_all(&part).unwrap();
        let staged = part.join(".trial-x.parquet.tmp");
        let kept = part.join("trial-y.parquet");
        std::fs::write(&staged, b"half").unwrap();
        std::fs::write(&kept, b"whole").unwrap();
        std::fs::write(dir.path.join(".manifest.json.tmp"), b"{").unwrap();
        let path = dir.path.clone();
        drop(dir);
        let reopened = RunDir::open(&path).unwrap();
        let dir = reopened;
        let reopened = &dir;
        assert!(!staged.exists());
        assert!(!dir.path.join(".manifest.json.tmp").exists());
        assert!(kept.exists());
        assert_eq!(reopened.manifest.trials.len(), trials.len());
    }
}
