//! The client side of the coordinator service (`isolab submit`, `isolab watch --server`).

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use isolab_proto::v1 as pb;
use pb::coordinator_client::CoordinatorClient;
use tonic::transport::{Channel, Endpoint};

use super::convert;
use super::core::{SubmitRequest, Submitted};
use crate::client::ClientTls;
use crate::events::RunEvent;

/// Default address of `isolab serve`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7410";

/// Why talking to the coordinator service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceClientError {
    /// The address is not a valid endpoint.
    #[error("invalid coordinator address `{addr}`: {source}")]
    Address {
        /// The address.
        addr: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS directory could not be loaded.
    #[error("TLS for coordinator {addr}: {source}")]
    Tls {
        /// The address.
        addr: String,
        /// What was wrong.
        #[source]
        source: isolab_tls::TlsConfigError,
    },
    /// Could not connect.
    #[error("cannot connect to coordinator {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The service answered with an error.
    #[error("coordinator {addr}: {}", status.message())]
    Rpc {
        /// The address.
        addr: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The service sent an event the client cannot read.
    #[error("coordinator {addr} sent a malformed event: {source}")]
    Malformed {
        /// The address.
        addr: String,
        /// What was wrong.
        #[source]
        source: convert::ConvertError,
    },
}

/// A connection to `isolab serve`.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    addr: String,
    client: CoordinatorClient<Channel>,
}

impl ServiceClient {
    /// Connects to `addr` (`host:port` or a URL); with `tls`, mutual TLS as the `client`
    /// identity of the directory (`https://`).
    pub async fn connect(addr: &str, tls: Option<&ClientTls>) -> Result<Self, ServiceClientError> {
        let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
        let url = format!("{}://{rest}", if tls.is_some() { "https" } else { "http" });
        let address = |source| ServiceClientError::Address {
            addr: addr.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(address)?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            let host = rest.split('/').next().unwrap_or(rest);
            let host = match host.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None => host.rsplit_once(':').map_or(host, |(h, _)| h),
            };
            let domain = tls.domain.clone().unwrap_or_else(|| host.to_owned());
            let config =
                isolab_tls::client_tls(&tls.dir, &tls.identity, &domain).map_err(|source| {
                    ServiceClientError::Tls {
                        addr: url.clone(),
                        source,
                    }
                })?;
            endpoint = endpoint.tls_config(config).map_err(address)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ServiceClientError::Connect {
                addr: url.clone(),
                source,
            })?;
        Ok(Self {
            addr: url,
            client: CoordinatorClient::new(channel),
        })
    }

    fn rpc(&self, status: tonic::Status) -> ServiceClientError {
        ServiceClientError::Rpc {
            addr: self.addr.clone(),
            status: Box::new(status),
        }
    }

    /// Submits a pipeline.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ServiceClientError> {
        let r = self
            .client
            .clone()
            .submit_run(convert::submit_to_pb(req))
            .await
            .map_err(|s| self.rpc(s))?
            .into_inner();
        Ok(Submitted {
            run_id: r.run_id,
            trials: r.trials,
            queued_ahead: r.queued_ahead,
        })
    }

    /// The events of `run_id` (`None`: the newest run), history then live, ending after the
    /// run's `run_finished`.
    pub async fn watch(
        &self,
        run_id: Option<&str>,
        samples: bool,
    ) -> Result<impl Stream<Item = Result<RunEvent, ServiceClientError>> + use<>, ServiceClientError>
    {
        let stream = self
            .client
            .clone()
            .watch_run(pb::WatchRunRequest {
                run_id: run_id.unwrap_or_default().to_owned(),
                samples,
            })
            .await
            .map_err(|s| self.rpc(s))?
            .into_inner();
        let me = self.clone();
        Ok(stream.map(move |item| match item {
            Ok(ev) => convert::event_from_pb(ev).map_err(|source| ServiceClientError::Malformed {
                addr: me.addr.clone(),
                source,
            }),
            Err(s) => Err(me.rpc(s)),
        }))
    }

    /// The service's runs.
    pub async fn list(&self) -> Result<Vec<pb::RunSummary>, ServiceClientError> {
        Ok(self
            .client
            .clone()
            .list_runs(pb::ListRunsRequest {})
            .await
            .map_err(|s| self.rpc(s))?
            .into_inner()
            .runs)
    }

    /// Cancels a run; its state afterwards.
    pub async fn cancel(&self, run_id: &str) -> Result<String, ServiceClientError> {
        Ok(self
            .client
            .clone()
            .cancel_run(pb::CancelRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .map_err(|s| self.rpc(s))?
            .into_inner()
            .state)
    }
}
