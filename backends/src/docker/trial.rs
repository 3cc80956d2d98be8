//! The making and unmaking of one Docker trial: its network, its containers (created, not
//! started, each below its instance cgroup), and their removal. The cgroups are the runner's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::{NetworkMode, RootfsKind};

use super::DockerError;
use super::engine::{self, Engine};
use super::engine::{LABEL_AGENT, LABEL_TRIAL};
use super::spec::{self, InstanceSpec};
use crate::base::ContainerBase;
use crate::{Leak, LeakReport};
use isolab_host::cgroup::TrialCgroups;
use isolab_host::netns::{self, TrialNetwork};

/// What every trial of this backend shares.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The cgroup engine and the workload binary.
    pub(crate) base: ContainerBase,
    /// Where a private daemon keeps its state.
    pub(crate) private_dir: PathBuf,
}

crate::base::deref_to_base!(Inner);

impl Inner {
    /// Container name of instance `index` of trial attempt `slug`.
    pub(crate) fn container_name(&self, slug: &str, index: u32) -> String {
        format!("{}-{slug}-i{index}", self.dir.name())
    }

    /// Prefix of the trial's network namespaces.
    pub(crate) fn net_prefix(&self, slug: &str) -> String {
        format!("{}-dk-{slug}", self.dir.name())
    }
}

/// One instance: its container.
#[derive(Debug, Clone)]
pub(crate) struct DockerInstance {
    /// Index within the trial.
    pub(crate) index: u32,
    /// Container name.
    pub(crate) name: String,
}

/// What one instance needs: index and workload arguments.
pub(crate) type Plan = (u32, Vec<String>);

/// Names shared by a trial's containers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    /// The trial attempt's slug.
    pub(crate) slug: &'a str,
    /// Prefix of its network namespaces.
    pub(crate) net_prefix: &'a str,
    /// The workload image.
    pub(crate) image: &'a str,
}

/// For `bridge`, makes the trial's network namespaces (one per instance in `indexes`).
pub(crate) async fn make_network(
    slug: &str,
    net_prefix: &str,
    mode: NetworkMode,
    indexes: Vec<u32>,
) -> Result<Option<TrialNetwork>, DockerError> {
    if mode != NetworkMode::Bridge {
        return Ok(None);
    }
    let prefix = net_prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        netns::create(&prefix, &indexes)
            .map(Some)
            .map_err(|source| DockerError::Network {
                instance: indexes.first().copied().unwrap_or(0),
                source,
            })
    })
    .await
    .map_err(|source| DockerError::Task {
        trial: slug.to_owned(),
        source,
    })?
}

/// Creates one container per plan, each below its instance cgroup. On error removes what this
/// trial made (containers, network).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create(
    inner: &Arc<Inner>,
    engine: &Engine,
    cgroups: &TrialCgroups,
    names: &Names<'_>,
    plans: &[Plan],
    rootfs: RootfsKind,
    mode: NetworkMode,
    runtime: Option<&str>,
) -> Result<Vec<DockerInstance>, DockerError> {
    let mut instances = Vec::with_capacity(plans.len());
    let mut failure = None;
    for (index, argv) in plans {
        let name = inner.container_name(names.slug, *index);
        let rel = cgroups.instance_rel(*index);
        let mut body = spec::container_body(&InstanceSpec {
            image: names.image,
            args: argv,
            agent: inner.dir.name(),
            slug: names.slug,
            index: *index,
            cgroup_rel: &rel,
            rootfs,
            runtime,
        });
        if mode == NetworkMode::Host
            && let Some(h) = body.host_config.as_mut()
        {
            h.network_mode = Some("host".into());
        }
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(&name)
            .build();
        let created = engine.docker.create_container(Some(opts), body).await;
        // A failed create may still leave a container under the name: it is removed below too.
        instances.push(DockerInstance {
            index: *index,
            name: name.clone(),
        });
        match created {
            Ok(c) => cgroups.set_leaf(*index, format!("{rel}/{}", c.id)),
            Err(e) => {
                failure = Some(DockerError::api("create", &name)(e));
                break;
            }
        }
    }
    let Some(e) = failure else {
        return Ok(instances);
    };
    let made: Vec<String> = instances.into_iter().map(|i| i.name).collect();
    for p in destroy(engine, &made, names.net_prefix).await {
        tracing::warn!("cleaning up after a failed prepare: {p}");
    }
    Err(e)
}

/// Removes the containers and the network of a trial; returns what failed.
pub(crate) async fn destroy(
    engine: &Engine,
    containers: &[String],
    net_prefix: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let removals = containers
        .iter()
        .map(|n| async move { (n, engine::remove(&engine.docker, n).await) });
    for (name, result) in futures::future::join_all(removals).await {
        if let Err(e) = result {
            problems.push(format!("remove container {name}: {e}"));
        }
    }
    let prefix = net_prefix.to_owned();
    match tokio::task::spawn_blocking(move || netns::destroy(&prefix)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(e) => problems.push(format!("cleanup task failed: {e}")),
    }
    problems
}

/// Everything of trial attempt `slug` the backend made that is still there, looked up in the
/// system: network namespaces, and containers the daemon at `socket` (if one was used) still
/// has with the trial's labels.
pub(crate) fn leftovers(
    inner: &Inner,
    socket: Option<PathBuf>,
    timeout: Duration,
    slug: &str,
) -> LeakReport {
    let mut report = LeakReport::default();
    for ns in netns::existing(&inner.net_prefix(slug)) {
        report.push(Leak::Netns { name: ns });
    }
    if let Some(socket) = socket {
        let (agent, slug) = (inner.dir.name().to_owned(), slug.to_owned());
        let found = engine::block_on(async move {
            let docker = engine::connect(&socket, timeout).await?;
            engine::containers_with(&docker, &[(LABEL_AGENT, &agent), (LABEL_TRIAL, &slug)]).await
        });
        match found {
            Some(Ok(list)) => {
                for (id, name) in list {
                    let short = id.get(..12).unwrap_or(&id);
                    report.push(Leak::Other {
                        what: format!("docker container {name} ({short}) still exists"),
                    });
                }
            }
            Some(Err(e)) => report.push(Leak::Other {
                what: format!("cannot list docker containers: {e}"),
            }),
            None => report.push(Leak::Other {
                what: "cannot list docker containers: runtime failed".into(),
            }),
        }
    }
    report
}

/// Removes every container the agent made on the daemon at `socket` (when the backend goes).
pub(crate) fn remove_agent_containers(inner: &Inner, socket: PathBuf, timeout: Duration) {
    let agent = inner.dir.name().to_owned();
    let removed = engine::block_on(async move {
        let docker = engine::connect(&socket, timeout).await?;
        for (id, _) in engine::containers_with(&docker, &[(LABEL_AGENT, &agent)]).await? {
            engine::remove(&docker, &id).await?;
        }
        Ok::<(), bollard::errors::Error>(())
    });
    if let Some(Err(e)) = removed {
        tracing::warn!("removing the agent's docker containers: {e}");
    }
}
