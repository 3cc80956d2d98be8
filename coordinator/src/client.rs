//! The coordinator's edge towards agents: a gRPC client that speaks `isolab.v1` and hands the rest
//! of the coordinator plain events.

use std::path::PathBuf;
use std::time::Duration;

use isolab_model::plan::Trial;
use isolab_model::sample::Sample;
use isolab_proto::v1 as pb;
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
}

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
            .tcp_nodelay(true);
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
        })
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
        let mut req = tonic::Request::new(isolab_agent::convert::trial_to_proto(
            run_id, trial, attempt,
        ));
        // The agent parents its spans of this trial on ours (W3C `traceparent`).
        isolab_agent::telemetry::inject_trace_context(
            &tracing::Span::current(),
            req.metadata_mut(),
        );
        let rpc = |s: tonic::Status| ClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(s),
        };
        let mut stream = c.run_trial(req).await.map_err(rpc)?.into_inner();
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(rpc)?;
            if let Some(e) = self.translate(ev)? {
                on_event(e);
            }
        }
        Ok(())
    }

    fn translate(&self, ev: pb::TrialEvent) -> Result<Option<AgentEvent>, ClientError> {
        use pb::trial_event::Event;
        let malformed = |what: &str| ClientError::Malformed {
            addr: self.addr.clone(),
            what: what.to_owned(),
        };
        let Some(ev) = ev.event else {
            return Err(malformed("empty event"));
        };
        Ok(Some(match ev {
            Event::Status(s) => {
                let state = pb::TrialState::try_from(s.state)
                    .map_err(|_| malformed("unknown trial state"))?;
                let fin = |state| AgentEvent::Finished {
                    state,
                    message: s.message.clone(),
                    host: s.host.clone(),
                    accel: (!s.accel.is_empty()).then(|| s.accel.clone()),
                    leaks: s.leaks.clone(),
                };
                match state {
                    pb::TrialState::Unspecified => {
                        return Err(malformed("unspecified trial state"));
                    }
                    pb::TrialState::Preparing => AgentEvent::Progress {
                        phase: "preparing",
                        host: s.host,
                    },
                    pb::TrialState::Running => AgentEvent::Progress {
                        phase: "running",
                        host: s.host,
                    },
                    pb::TrialState::Ok => fin(FinalState::Ok),
                    pb::TrialState::Failed => fin(FinalState::Failed),
                    pb::TrialState::Cancelled => fin(FinalState::Cancelled),
                    pb::TrialState::TimedOut => fin(FinalState::TimedOut),
                }
            }
            Event::Sample(s) => {
                if !s.value.is_finite() {
                    return Err(malformed("non-finite sample value"));
                }
                AgentEvent::Sample {
                    instance: s.instance,
                    sample: Sample {
                        metric: s.metric,
                        value: s.value,
                        unit: s.unit,
                        higher_is_better: s.higher_is_better,
                        t_offset_s: s.t_offset_s,
                    },
                }
            }
            Event::Stats(st) => {
                #[allow(clippy::cast_precision_loss)]
                let f = |v: u64| v as f64;
                AgentEvent::Stats {
                    instance: st.instance,
                    t_offset_s: st.t_offset_s,
                    final_: st.r#final,
                    values: vec![
                        (
                            "cpu_usage_ns",
                            "ns",
                            f(st.cpu_user_ns.saturating_add(st.cpu_system_ns)),
                        ),
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
                    ],
                }
            }
            Event::Log(l) => AgentEvent::Log {
                instance: l.instance,
                stream: l.stream,
                text: l.text,
            },
        }))
    }
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
