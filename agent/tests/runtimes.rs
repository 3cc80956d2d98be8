//! Runtimes are names from the agent's configuration, never paths, and `runtime_args` come from
//! a per-runtime allowlist: over real gRPC, a trial naming a path or a disallowed argument is
//! refused before anything runs (a stand-in runtime that would leave a marker file never does).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use isolab_agent::conformance;
use isolab_agent::serve::spawn_local;
use isolab_backends::container::RuntimeTable;
use isolab_model::pipeline::{BackendKind, Platform};
use isolab_proto::v1::agent_client::AgentClient;
use isolab_wire::convert::trial_to_proto;

/// A stand-in runtime: any call of it (`--version`, `run --help`, `run`…) writes `marker`.
fn spy(dir: &Path, marker: &Path) -> PathBuf {
    let script = dir.join("spy-runtime");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", marker.display()),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    script
}

fn container(runtime: &str, args: &[&str]) -> Platform {
    Platform {
        backend: BackendKind::Container,
        runtime: Some(runtime.into()),
        runtime_args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..common::native()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_path_or_a_disallowed_arg_is_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("ran");
    let script = spy(dir.path(), &marker);
    let mut config = common::config("runtime-names");
    // The spy is configured under a name too: its arguments are still the allowlist's.
    config.runtimes =
        RuntimeTable::from_flags(&[format!("spy={}", script.display())], &[]).expect("table");
    let agent = spawn_local(config).await.expect("spawn local agent");
    let mut client = AgentClient::connect(agent.url()).await.expect("connect");
    let script_path = script.to_string_lossy().into_owned();
    let cases: [(Platform, &str); 4] = [
        (
            container(&script_path, &[]),
            "is a path; a runtime is a name",
        ),
        (
            container("runc", &[]),
            "runtime `runc` is not configured on this agent (known: spy)",
        ),
        (
            container("spy", &["--root", "/x"]),
            "runtime_args: `--root` is not allowed for runtime `spy` (allowed: none)",
        ),
        (
            container("spy", &["--log=/etc/passwd"]),
            "`--log=/etc/passwd` is not allowed",
        ),
    ];
    for (platform, expected) in cases {
        let trial = conformance::trial(
            &platform,
            "syscall",
            1,
            &[],
            Duration::from_millis(100),
            Duration::from_secs(10),
        );
        let err = client
            .run_trial(trial_to_proto("r", &trial, 0))
            .await
            .expect_err("the trial must be refused");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains(expected),
            "expected `{expected}` in: {}",
            err.message()
        );
    }
    assert!(
        !marker.exists(),
        "the runtime ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    agent.shutdown().await;
}
