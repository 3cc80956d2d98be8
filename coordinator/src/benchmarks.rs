//! Measurement code behind `isolab-bench` (`just bench`); the binary only parses arguments and
//! prints. Every goal is checked by the bench, never by a test (tests run each once, tiny).
//!
//! - [`dispatch`]: trivial trials through the coordinator's dispatch path ([`Agent::run_trial`])
//!   to many in-process fake agents over loopback gRPC, one worker per agent as in `isolab run`:
//!   throughput and latency percentiles of a dispatch (request sent → final status read).
//! - [`sink`]: the Parquet sink ([`crate::sink::write_trial`]: rows → Arrow → zstd Parquet with
//!   the columns encoded on the host's cores, staged, synced, renamed) against the bare arrow
//!   writer (one `ArrowWriter`, same properties, one thread) given the finished batch, alternating
//!   file by file so drift hits both alike.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use isolab_model::plan::Trial;
use isolab_model::results::{self, ResultRow};
use isolab_proto::v1 as pb;
use parquet::arrow::ArrowWriter;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::client::{Agent, AgentEvent, ClientError, FinalState};
use crate::sink::{self, SinkError};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A fake agent could not listen.
    #[error("fake agent: {0}")]
    Listen(#[source] std::io::Error),
    /// The dispatch path failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A dispatch did not end with an ok status.
    #[error("trial {trial} on {agent} ended {state:?}")]
    TrialNotOk {
        /// The trial.
        trial: String,
        /// The agent.
        agent: String,
        /// How it ended.
        state: Option<FinalState>,
    },
    /// The benchmark pipeline did not load.
    #[error("benchmark pipeline: {0}")]
    Pipeline(#[from] isolab_model::LoadError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The bare writer failed.
    #[error("bare arrow writer on {path}: {source}")]
    Bare {
        /// The file.
        path: std::path::PathBuf,
        /// What parquet said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A file of the bare writer could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A worker task panicked.
    #[error("dispatch worker: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A fake agent: answers `RunTrial` at once with one sample and an ok status.
#[derive(Debug, Clone, Default)]
struct FakeAgent;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TrialEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for FakeAgent {
    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        Ok(Response::new(pb::CapabilitiesResponse::default()))
    }

    type RunTrialStream = EventStream;

    async fn run_trial(
        &self,
        _request: Request<pb::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        use pb::trial_event::Event;
        let events = [
            Event::Sample(pb::Sample {
                instance: 0,
                metric: "ns_per_call".into(),
                value: 42.0,
                unit: "ns".into(),
                higher_is_better: false,
                t_offset_s: None,
            }),
            Event::Status(pb::TrialStatus {
                state: pb::TrialState::Ok.into(),
                host: "fake".into(),
                ..pb::TrialStatus::default()
            }),
        ]
        .map(|e| Ok(pb::TrialEvent { event: Some(e) }));
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn cancel(
        &self,
        _request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        Ok(Response::new(pb::CancelResponse { found: false }))
    }
}

/// Fake agents serving on loopback until dropped.
struct FakeAgents {
    addrs: Vec<SocketAddr>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeAgents {
    async fn start(n: usize) -> Result<Self, BenchError> {
        let mut out = Self {
            addrs: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(BenchError::Listen)?;
            out.addrs
                .push(listener.local_addr().map_err(BenchError::Listen)?);
            let (stop, stopped) = oneshot::channel::<()>();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            out.stops.push(stop);
            out.tasks.push(tokio::spawn(async move {
                let _ = Server::builder()
                    .add_service(pb::agent_server::AgentServer::new(FakeAgent))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            }));
        }
        Ok(out)
    }

    async fn stop(self) {
        drop(self.stops);
        for t in self.tasks {
            // tonic waits for open connections without a deadline: bound it.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// What [`dispatch`] measured.
#[derive(Debug, Clone)]
pub struct DispatchReport {
    /// Fake agents.
    pub agents: usize,
    /// Trials dispatched.
    pub trials: usize,
    /// Wall time of the whole batch.
    pub elapsed: Duration,
    /// Median dispatch latency.
    pub p50: Duration,
    /// 99th percentile dispatch latency.
    pub p99: Duration,
}

impl DispatchReport {
    /// Trials per second.
    pub fn trials_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.trials as f64;
        n / self.elapsed.as_secs_f64()
    }
}

fn bench_trial() -> Result<Trial, BenchError> {
    let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: bench\n\
        defaults: { repetitions: 1, warmup: 0, duration: 1ms }\n\
        platforms:\n  native: { backend: native }\n\
        experiments:\n  - { name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }\n";
    let p = isolab_model::load::load_str("bench.yaml", text)?;
    Ok(isolab_model::plan::plan(&p).remove(0))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Dispatches `trials` trivial trials over `agents` fake agents (one worker per agent, like
/// `isolab run`) and measures throughput and per-dispatch latency.
pub async fn dispatch(agents: usize, trials: usize) -> Result<DispatchReport, BenchError> {
    let agents = agents.max(1);
    let fakes = FakeAgents::start(agents).await?;
    let mut clients = Vec::with_capacity(agents);
    for a in &fakes.addrs {
        clients.push(Agent::connect(&format!("http://{a}")).await?);
    }
    let trial = bench_trial()?;
    // Warm every connection once.
    for c in &clients {
        run_one(c, &trial).await?;
    }
    let started = Instant::now();
    let mut workers = Vec::with_capacity(agents);
    for (i, c) in clients.into_iter().enumerate() {
        let n = trials / agents + usize::from(i < trials % agents);
        let trial = trial.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                run_one(&c, &trial).await?;
                lat.push(t0.elapsed());
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut latencies = Vec::with_capacity(trials);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    fakes.stop().await;
    latencies.sort();
    Ok(DispatchReport {
        agents,
        trials: latencies.len(),
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

async fn run_one(agent: &Agent, trial: &Trial) -> Result<(), BenchError> {
    let mut state = None;
    let mut samples = 0usize;
    agent
        .run_trial("bench", trial, 1, |e| match e {
            AgentEvent::Finished { state: s, .. } => state = Some(s),
            AgentEvent::Sample { .. } => samples += 1,
            _ => {}
        })
        .await?;
    if state != Some(FinalState::Ok) || samples != 1 {
        return Err(BenchError::TrialNotOk {
            trial: trial.id.clone(),
            agent: agent.addr.clone(),
            state,
        });
    }
    Ok(())
}

/// What [`sink`] measured.
#[derive(Debug, Clone)]
pub struct SinkReport {
    /// Rows written by each side.
    pub rows: u64,
    /// Files written by each side.
    pub files: usize,
    /// Time in the sink (rows → batch → Parquet, staged, synced, renamed).
    pub sink: Duration,
    /// Time in the bare arrow writer (prebuilt batch → Parquet file).
    pub bare: Duration,
}

impl SinkReport {
    /// Sink ingest, rows per second.
    pub fn sink_rows_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.rows as f64;
        n / self.sink.as_secs_f64()
    }

    /// Bare writer, rows per second.
    pub fn bare_rows_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.rows as f64;
        n / self.bare.as_secs_f64()
    }

    /// Sink time over bare writer time.
    pub fn ratio(&self) -> f64 {
        self.sink.as_secs_f64() / self.bare.as_secs_f64()
    }
}

/// Result rows shaped like a trial's: time series of a few metrics plus summaries.
pub fn synthetic_rows(trial: usize, n: usize) -> Vec<ResultRow> {
    const METRICS: [(&str, &str); 4] = [
        ("ns_per_call", "ns"),
        ("cpu_usage_ns", "ns"),
        ("memory_current_bytes", "bytes"),
        ("ops_per_s", "ops/s"),
    ];
    (0..n)
        .map(|i| {
            let (metric, unit) = METRICS[i % METRICS.len()];
            #[allow(clippy::cast_precision_loss)]
            let x = i as f64;
            ResultRow {
                run_id: "bench-20250101T000000Z-0000".into(),
                experiment: "micro".into(),
                analysis: "overhead".into(),
                trial_id: format!("{trial:016x}"),
                attempt: 1,
                repetition: i32::try_from(trial % 7).unwrap_or(0),
                platform: "native".into(),
                backend: "native".into(),
                accel: None,
                host: "bench-host".into(),
                instance: i32::try_from(i % 4).unwrap_or(0),
                role: "peer".into(),
                group: None,
                n_instances: 4,
                workload: "syscall".into(),
                adversary: None,
                params: "{\"duration\":\"10s\"}".into(),
                metric: metric.into(),
                value: (x * 1.37).sin() * 1000.0 + 5000.0,
                unit: unit.into(),
                higher_is_better: metric == "ops_per_s",
                t_offset_s: (i % 50 != 0).then_some(x * 0.01),
                status: "ok".into(),
            }
        })
        .collect()
}

/// Writes `files` files of `rows_per_file` rows with the sink and with the bare arrow writer,
/// alternating, under `dir`.
pub fn sink(dir: &Path, files: usize, rows_per_file: usize) -> Result<SinkReport, BenchError> {
    let mut report = SinkReport {
        rows: 0,
        files,
        sink: Duration::ZERO,
        bare: Duration::ZERO,
    };
    for f in 0..files {
        let rows = synthetic_rows(f, rows_per_file);
        let batch = sink::rows_to_batch(&rows)?;

        let rel = sink::trial_file("micro", "native", &format!("{f:016x}"));
        let t0 = Instant::now();
        report.rows += sink::write_trial(&dir.join("sink"), &rel, &rows)?;
        report.sink += t0.elapsed();

        let path = dir.join(format!("bare-{f}.parquet"));
        let t0 = Instant::now();
        let file = File::create(&path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
        let bare = |source| BenchError::Bare {
            path: path.clone(),
            source,
        };
        let mut w = ArrowWriter::try_new(
            file,
            results::schema(),
            Some(sink::default_writer_properties()),
        )
        .map_err(bare)?;
        w.write(&batch).map_err(bare)?;
        w.close().map_err(bare)?;
        report.bare += t0.elapsed();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dispatch_runs_once_tiny() {
        let r = dispatch(3, 10).await.expect("dispatch");
        assert_eq!(r.trials, 10);
        assert!(r.p50 <= r.p99);
        assert!(r.trials_per_s() > 0.0);
    }

    #[test]
    fn sink_runs_once_tiny() {
        let dir = tempfile::tempdir().unwrap();
        let r = sink(dir.path(), 2, 1000).expect("sink");
        assert_eq!((r.rows, r.files), (2000, 2));
        assert!(r.ratio().is_finite());
        let written = dir.path().join("sink").join(sink::trial_file(
            "micro",
            "native",
            &format!("{:016x}", 1),
        ));
        assert!(written.is_file());
        assert!(dir.path().join("bare-1.parquet").is_file());
    }
}
