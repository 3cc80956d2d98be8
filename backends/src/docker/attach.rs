//! A started container as an [`InstanceHandle`]: its output from `attach` (made before the
//! start, so nothing is missed) split into stdout and stderr line streams, and its exit from
//! `wait`.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptionsBuilder;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::DockerError;
use crate::{InstanceExit, InstanceHandle, lines};
use isolab_host::cgroup::TrialCgroups;

/// Buffer of each output pipe between the attach stream and the line readers.
const PIPE_BYTES: usize = 256 * 1024;

/// An attached, not yet started container's output.
pub(crate) struct Attached {
    stdout: tokio::io::DuplexStream,
    stderr: tokio::io::DuplexStream,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached").finish_non_exhaustive()
    }
}

/// Attaches to container `name`'s stdout and stderr; a task copies the multiplexed stream into
/// two pipes until the container ends.
pub(crate) async fn attach(docker: &Docker, name: &str) -> Result<Attached, DockerError> {
    let opts = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    let results = docker
        .attach_container(name, Some(opts))
        .await
        .map_err(DockerError::api("attach", name))?;
    let (stdout, mut out_w) = tokio::io::duplex(PIPE_BYTES);
    let (stderr, mut err_w) = tokio::io::duplex(PIPE_BYTES);
    let mut output = results.output;
    let container = name.to_owned();
    tokio::spawn(async move {
        while let Some(item) = output.next().await {
            let written = match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    out_w.write_all(&message).await
                }
                Ok(LogOutput::StdErr { message }) => err_w.write_all(&message).await,
                Ok(LogOutput::StdIn { .. }) => Ok(()),
                Err(e) => {
                    let text = format!("isolab-agent: output of container {container} lost: {e}\n");
                    let _ = err_w.write_all(text.as_bytes()).await;
                    break;
                }
            };
            if written.is_err() {
                // The reader is gone (the runner gave up on it); keep draining nothing.
                break;
            }
        }
        let _ = out_w.shutdown().await;
        let _ = err_w.shutdown().await;
    });
    Ok(Attached { stdout, stderr })
}

/// Where an OOM kill that Docker saw is recorded, and the memory limit for the note.
#[derive(Debug, Clone)]
pub(crate) struct OomWatch {
    /// The trial's cgroups (the kill is noted for the instance).
    pub(crate) cgroups: TrialCgroups,
    /// The instance's memory limit.
    pub(crate) memory_bytes: Option<u64>,
}

/// The handle of a started container whose main process has host pid `pid`. With `oom`, once
/// the container's output ends, Docker is asked whether the OOM killer struck; if so the kill is
/// recorded and a line saying so ends stderr (so the trial's failure names the cause).
pub(crate) fn handle(
    docker: &Docker,
    name: &str,
    index: u32,
    pid: Option<u32>,
    attached: Attached,
    oom: Option<OomWatch>,
) -> InstanceHandle {
    let (note_docker, note_name) = (docker.clone(), name.to_owned());
    let note = async move {
        let watch = oom?;
        let state = note_docker
            .inspect_container(&note_name, None)
            .await
            .ok()?
            .state?;
        if state.oom_killed != Some(true) {
            return None;
        }
        watch.cgroups.note_oom_kill(index);
        let limit = crate::limit_text(watch.memory_bytes);
        Some(format!(
            "isolab: out of memory: Docker reports the container OOM-killed (memory limit {limit})"
        ))
    };
    let stderr = crate::then_note(lines(attached.stderr), note);
    let docker = docker.clone();
    let name = name.to_owned();
    let exit = Box::pin(async move {
        let mut wait = docker.wait_container(&name, None);
        match wait.next().await {
            Some(Ok(r)) => InstanceExit::from_runtime_code(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                InstanceExit::from_runtime_code(code)
            }
            Some(Err(e)) => InstanceExit::Lost(format!("waiting for container {name}: {e}")),
            None => InstanceExit::Lost(format!("waiting for container {name}: no answer")),
        }
    });
    InstanceHandle {
        index,
        pid,
        stdout: lines(attached.stdout),
        stderr,
        exit,
    }
}
