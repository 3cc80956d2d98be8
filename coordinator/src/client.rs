//! The coordinator's edge towards agents: a gRPC client that speaks `isolab.v1` and hands the rest
//! of the coordinator plain events.

use std::path::PathBuf;
use std::time::Duration;

use isolab_model::plan::Trial;
use isolab_model::sample::Sample;
use isolab_proto::v1 as pb;
use isolab_wire::{InstanceStats, TrialEvent, TrialState};
use pb::agent_client::AgentClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::rows::StatValues;

/// Why talking to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a valid endpoint.
    #[error("invalid agent address `{addr}`: {source}")]
    Address {
        /// The address given.
        addr: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS directory could not be loaded.
    #[error("TLS for agent {addr}: {source}")]
    Tls {
        /// The agent.
        addr: String,
        /// What was wrong with the directory.
        #[source]
        source: isolab_tls::TlsConfigError,
    },
    /// Could not connect.
    #[error("cannot connect to agent {addr}: {source}")]
    Connect {
        /// The agent.
        addr: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered with an error.
    #[error("agent {addr}: {status}")]
    Rpc {
        /// The agent.
        addr: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The agent sent an event the coordinator cannot read.
    #[error("agent {addr} sent a malformed event: {what}")]
    Malformed {
        /// The agent.
        addr: String,
        /// What was wrong.
        what: String,
    },
    /// The agent refused to start the trial (over its host budget, a request it does not
    /// accept, a backend it lacks): the trial fails with the agent's reason; the connection is
    /// fine.
    #[error("agent {addr} refused the trial ({code:?}): {message}")]
    Refused {
        /// The agent.
        addr: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The agent's reason.
        message: String,
    },
    /// The agent's stream of a trial outlived the trial's own timeout by more than the margin
    /// (a hung or half-open connection); the trial was cancelled at the agent.
    #[error(
        "agent {addr}: trial {trial} sent no final status within its timeout plus {margin_s} s; cancelled"
    )]
    StreamDeadline {
        /// The agent.
        addr: String,
        /// The trial.
        trial: String,
        /// Seconds allowed beyond the trial's timeout.
        margin_s: u64,
    },
}

/// Time a RunTrial stream may run beyond the trial's own timeout: the agent's preparation
/// (a VM boot under TCG, a Docker image import) and teardown happen outside that timeout.
pub const STREAM_DEADLINE_MARGIN: Duration = Duration::from_secs(300);
/// HTTP/2 PING interval towards agents, and how long an unanswered PING may stay unanswered:
/// a dead peer or half-open connection is found in under a minute instead of never.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on the connections to agents (the kernel's probes, under the HTTP/2 PINGs).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Final state of a trial attempt as the agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    /// Finished and measured.
    Ok,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Deadline hit.
    TimedOut,
}

/// What an agent says during a trial, translated from protobuf.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// The trial is preparing or running on `host`.
    Progress {
        /// Human-readable phase.
        phase: &'static str,
        /// Host running it.
        host: String,
    },
    /// The trial ended.
    Finished {
        /// How.
        state: FinalState,
        /// Why (for failures).
        message: String,
        /// Host that ran it.
        host: String,
        /// Accelerator used, if a VM.
        accel: Option<String>,
        /// What teardown found left behind.
        leaks: Vec<String>,
    },
    /// A workload sample.
    Sample {
        /// Instance index.
        instance: u32,
        /// The sample.
        sample: Sample,
    },
    /// Cgroup statistics of an instance.
    Stats {
        /// Instance index.
        instance: u32,
        /// Seconds since the trial started.
        t_offset_s: f64,
        /// Counters as named metrics.
        values: StatValues,
        /// Whether this is the last snapshot.
        final_: bool,
    },
    /// A line the workload wrote to stderr or the console.
    Log {
        /// Instance index.
        instance: u32,
        /// Which stream.
        stream: String,
        /// The text.
        text: String,
    },
    /// How busy the host was besides the trial (fractions of its CPU capacity) as named metrics.
    Noise {
        /// (metric, unit, value).
        values: StatValues,
    },
}

/// Mutual TLS towards agents (`isolab run --tls-dir DIR [--tls-domain NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The TLS directory made by `isolab certs init`.
    pub dir: PathBuf,
    /// The identity presented (default `coordinator`).
    pub identity: String,
    /// The name the agent's certificate must carry; `None`: the host of its address.
    pub domain: Option<String>,
}

impl ClientTls {
    /// The coordinator's identity in `dir`, checking agents against the host they are dialled at.
    pub fn coordinator(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            identity: isolab_tls::layout::COORDINATOR.to_owned(),
            domain: None,
        }
    }

    /// The same with the agent's expected name set.
    #[must_use]
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        if domain.is_some() {
            self.domain = domain;
        }
        self
    }

    /// The same with `domain` expected unless a name is set already (an announced agent name,
    /// below an inventory's `tls_domain` and `--tls-domain`).
    #[must_use]
    pub fn or_domain(mut self, domain: Option<String>) -> Self {
        if self.domain.is_none() {
            self.domain = domain;
        }
        self
    }
}

/// The host part of a URL (`https://[::1]:7411` → `::1`).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// A connected agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Address as given (`http://127.0.0.1:7411`).
    pub addr: String,
    client: AgentClient<Channel>,
    stream_margin: Duration,
}

/// Turns `host:port` or a URL into an `http://` URL.
pub fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

impl Agent {
    /// Connects to an agent in plain text.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, None).await
    }

    /// Connects to an agent, with mutual TLS when `tls` is given (then `host:port` and `http://`
    /// addresses are dialled as `https://`).
    pub async fn connect_with(addr: &str, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let mut url = normalize_addr(addr);
        if tls.is_some()
            && let Some(rest) = url.strip_prefix("http://")
        {
            url = format!("https://{rest}");
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| ClientError::Address {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            let domain = tls
                .domain
                .clone()
                .unwrap_or_else(|| url_host(&url).to_owned());
            let config =
                isolab_tls::client_tls(&tls.dir, &tls.identity, &domain).map_err(|source| {
                    ClientError::Tls {
                        addr: url.clone(),
                        source,
                    }
                })?;
            endpoint = endpoint
                .tls_config(config)
                .map_err(|source| ClientError::Address {
                    addr: addr.to_owned(),
                    source,
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: url.clone(),
                source,
            })?;
        Ok(Self {
            addr: url,
            client: AgentClient::new(channel),
            stream_margin: STREAM_DEADLINE_MARGIN,
        })
    }

    /// How long a RunTrial stream may run beyond the trial's timeout (default
    /// [`STREAM_DEADLINE_MARGIN`]).
    #[must_use]
    pub fn with_stream_deadline_margin(mut self, margin: Duration) -> Self {
        self.stream_margin = margin;
        self
    }

    /// Host facts and backends of the agent.
    pub async fn capabilities(&self) -> Result<pb::CapabilitiesResponse, ClientError> {
        let mut c = self.client.clone();
        c.capabilities(pb::CapabilitiesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::Rpc {
                addr: self.addr.clone(),
                status: Box::new(s),
            })
    }

    /// Asks the agent to cancel a trial.
    pub async fn cancel(&self, trial_id: &str) -> Result<bool, ClientError> {
        let mut c = self.client.clone();
        c.cancel(pb::CancelRequest {
            trial_id: trial_id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().found)
        .map_err(|s| ClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(s),
        })
    }

    /// Runs a trial; `on_event` sees every event; returns when the stream ends.
    pub async fn run_trial(
        &self,
        run_id: &str,
        trial: &Trial,
        attempt: u32,
        mut on_event: impl FnMut(AgentEvent),
    ) -> Result<(), ClientError> {
        let mut c = self.client.clone();
        let mut req =
            tonic::Request::new(isolab_wire::convert::trial_to_proto(run_id, trial, attempt));
        // The agent parents its spans of this trial on ours (W3C `traceparent`).
        isolab_telemetry::inject_trace_context(&tracing::Span::current(), req.metadata_mut());
        let rpc = |s: tonic::Status| ClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(s),
        };
        let deadline = trial.timeout.0.saturating_add(self.stream_margin);
        let stream = async {
            let mut stream = c
                .run_trial(req)
                .await
                .map_err(|s| match s.code() {
                    // The agent answered and said no: not a lost connection.
                    tonic::Code::ResourceExhausted
                    | tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::AlreadyExists
                    | tonic::Code::PermissionDenied => ClientError::Refused {
                        addr: self.addr.clone(),
                        code: s.code(),
                        message: s.message().to_owned(),
                    },
                    _ => rpc(s),
                })?
                .into_inner();
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(rpc)?;
                if let Some(e) = self.translate(ev)? {
                    on_event(e);
                }
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, stream).await {
            Ok(result) => result,
            Err(_) => {
                // Best effort: the agent's own deadline should have ended it already.
                let _ = tokio::time::timeout(Duration::from_secs(10), self.cancel(&trial.id)).await;
                Err(ClientError::StreamDeadline {
                    addr: self.addr.clone(),
                    trial: trial.id.clone(),
                    margin_s: self.stream_margin.as_secs(),
                })
            }
        }
    }

    /// One agent event, decoded by the wire's decoder (the agent's own), in the coordinator's
    /// terms.
    fn translate(&self, ev: pb::TrialEvent) -> Result<Option<AgentEvent>, ClientError> {
        let malformed = |what: String| ClientError::Malformed {
            addr: self.addr.clone(),
            what,
        };
        let ev =
            isolab_wire::convert::event_from_proto(ev).map_err(|e| malformed(e.to_string()))?;
        Ok(Some(match ev {
            TrialEvent::Status(s) => {
                let fin = |state| AgentEvent::Finished {
                    state,
                    message: s.message.clone(),
                    host: s.host.clone(),
                    accel: s.accel.clone(),
                    leaks: s.leaks.clone(),
                };
                match s.state {
                    TrialState::Preparing => AgentEvent::Progress {
                        phase: "preparing",
                        host: s.host,
                    },
                    TrialState::Running => AgentEvent::Progress {
                        phase: "running",
                        host: s.host,
                    },
                    TrialState::Ok => fin(FinalState::Ok),
                    TrialState::Failed => fin(FinalState::Failed),
                    TrialState::Cancelled => fin(FinalState::Cancelled),
                    TrialState::TimedOut => fin(FinalState::TimedOut),
                }
            }
            TrialEvent::Sample { instance, sample } => {
                if !sample.value.is_finite() {
                    return Err(malformed("non-finite sample value".into()));
                }
                AgentEvent::Sample { instance, sample }
            }
            TrialEvent::Stats {
                instance,
                t_offset_s,
                stats,
                final_,
            } => AgentEvent::Stats {
                instance,
                t_offset_s,
                final_,
                values: stat_values(&stats),
            },
            TrialEvent::Noise(n) => AgentEvent::Noise {
                values: [
                    Some(("host_steal_fraction", "fraction", n.steal_fraction)),
                    n.background_cpu_fraction
                        .map(|v| ("host_background_cpu_fraction", "fraction", v)),
                    Some(("agent_cpu_fraction", "fraction", n.agent_cpu_fraction)),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            TrialEvent::Log {
                instance,
                stream,
                text,
            } => AgentEvent::Log {
                instance,
                stream: stream.as_str().to_owned(),
                text,
            },
        }))
    }
}

/// An instance's statistics as the named metrics of the results table.
fn stat_values(st: &InstanceStats) -> StatValues {
    #[allow(clippy::cast_precision_loss)]
    let f = |v: u64| v as f64;
    vec![
        ("cpu_usage_ns", "ns", f(st.cpu_usage_ns)),
        ("cpu_user_ns", "ns", f(st.cpu_user_ns)),
        ("cpu_system_ns", "ns", f(st.cpu_system_ns)),
        ("memory_current_bytes", "bytes", f(st.memory_current_bytes)),
        ("memory_peak_bytes", "bytes", f(st.memory_peak_bytes)),
        ("oom_events", "count", f(st.oom_events)),
        ("oom_kills", "count", f(st.oom_kills)),
        ("pids_current", "count", f(st.pids_current)),
        ("pids_limit_hits", "count", f(st.pids_limit_hits)),
        ("io_read_bytes", "bytes", f(st.io_read_bytes)),
        ("io_write_bytes", "bytes", f(st.io_write_bytes)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_strips_scheme_port_and_brackets() {
        assert_eq!(url_host("https://127.0.0.1:7411"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:7411/x"), "::1");
        assert_eq!(url_host("agent-r1.example:7411"), "agent-r1.example");
        assert_eq!(url_host("https://localhost"), "localhost");
    }
}
