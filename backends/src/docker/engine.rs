//! The connection to a Docker Engine: an existing daemon's socket or a private daemon, the API
//! version negotiated with it, and the label queries that find our containers.
//!
//! Every container the agent makes carries the labels [`LABEL_AGENT`] (the agent's cgroup
//! directory name, unique per agent), [`LABEL_TRIAL`] (the trial attempt's slug) and
//! [`LABEL_PID`] (the agent's pid). Listing by label is how teardown and the leak check find
//! them, and how a new agent finds the containers of a crashed one (whose pid is gone).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use super::config::{DaemonMode, DockerConfig};
use super::daemon::PrivateDaemon;
use crate::process_alive;

/// Label naming the agent directory that made a container.
pub const LABEL_AGENT: &str = "isolab.agent";
/// Label naming the trial attempt a container belongs to.
pub const LABEL_TRIAL: &str = "isolab.trial";
/// Label holding the pid of the agent process that made a container.
pub const LABEL_PID: &str = "isolab.agent-pid";

/// A connected Engine.
#[derive(Debug)]
pub struct Engine {
    /// The API client.
    pub docker: Docker,
    /// The socket it talks to.
    pub socket: PathBuf,
    /// `Docker Engine <version> (API <api>[, private daemon])`.
    pub version: String,
    /// The private daemon, when the agent started one; stopped when the engine is dropped.
    pub daemon: Option<PrivateDaemon>,
}

/// A client for `socket` with the API version negotiated down to the daemon's.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Docker, bollard::errors::Error> {
    let docker = Docker::connect_with_unix(
        &socket.to_string_lossy(),
        timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    )?;
    docker.negotiate_version().await
}

/// Whether a daemon answers a ping on `socket`.
pub async fn ping(socket: &Path) -> Result<(), bollard::errors::Error> {
    let docker =
        Docker::connect_with_unix(&socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION)?;
    docker.ping().await.map(drop)
}

/// Connects as `config` says: the existing daemon, or a private one with its state in
/// `private_dir`. The error is the reason the backend is unavailable.
pub async fn open(config: &DockerConfig, private_dir: &Path) -> Result<Engine, String> {
    let existing = if config.daemon == DaemonMode::Private {
        Err(String::new())
    } else if !config.socket.exists() {
        Err(format!("no Docker daemon at {}", config.socket.display()))
    } else {
        match connect(&config.socket, config.api_timeout).await {
            Ok(d) => match d.ping().await {
                Ok(_) => Ok(d),
                Err(e) => Err(format!(
                    "no Docker daemon answers at {}: {e}",
                    config.socket.display()
                )),
            },
            Err(e) => Err(format!(
                "no Docker daemon at {}: {e}",
                config.socket.display()
            )),
        }
    };
    let (docker, socket, daemon) = match existing {
        Ok(d) => (d, config.socket.clone(), None),
        Err(why) if config.daemon == DaemonMode::Existing => return Err(why),
        Err(why) => {
            let daemon =
                PrivateDaemon::start(&config.dockerd, private_dir, config.daemon_start_timeout)
                    .await
                    .map_err(|e| {
                        if why.is_empty() {
                            e.to_string()
                        } else {
                            format!("{why}, and {e}")
                        }
                    })?;
            let socket = daemon.socket().to_owned();
            let docker = connect(&socket, config.api_timeout)
                .await
                .map_err(|e| format!("private dockerd at {}: {e}", socket.display()))?;
            (docker, socket, Some(daemon))
        }
    };
    let v = docker
        .version()
        .await
        .map_err(|e| format!("docker version: {e}"))?;
    let version = format!(
        "Docker Engine {} (API {}{})",
        v.version.as_deref().unwrap_or("?"),
        v.api_version.as_deref().unwrap_or("?"),
        if daemon.is_some() {
            ", private daemon"
        } else {
            ""
        }
    );
    Ok(Engine {
        docker,
        socket,
        version,
        daemon,
    })
}

/// Names of the containers (any state) carrying every `label=value` given.
pub async fn containers_with(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<(String, String)>, bollard::errors::Error> {
    let filters: HashMap<String, Vec<String>> = HashMap::from([(
        "label".to_owned(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    Ok(list
        .into_iter()
        .map(|c| {
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default();
            (
                c.id.unwrap_or_default(),
                name.trim_start_matches('/').to_owned(),
            )
        })
        .collect())
}

/// Removes a container, killing it first; one that does not exist is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes containers made by agent processes that no longer exist (a crashed agent's).
pub async fn remove_orphans(docker: &Docker) {
    let Ok(list) = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&HashMap::from([(
                    "label".to_owned(),
                    vec![LABEL_PID.to_owned()],
                )]))
                .build(),
        ))
        .await
    else {
        return;
    };
    for c in list {
        let pid = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_PID))
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) =
            pid.filter(|&p| p != std::process::id() && process_alive(p, None).is_none())
        else {
            continue;
        };
        let id = c.id.unwrap_or_default();
        tracing::warn!(container = %id, agent_pid = pid, "removing a container of a gone agent");
        if let Err(e) = remove(docker, &id).await {
            tracing::warn!(container = %id, "cannot remove it: {e}");
        }
    }
}

/// Runs `f` on a fresh single-threaded runtime in its own thread and waits for it: for the
/// synchronous parts of the [`crate::Backend`] trait (the leak check) and for `Drop`.
pub fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> Option<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .map(|rt| rt.block_on(f))
        })
        .join()
        .ok()
        .flatten()
    })
}
