//! Caller identity at the agent: under mutual TLS only the `coordinator` identity may call
//! `RunTrial`, `Cancel` and `Capabilities` (a `client` or `health` certificate of the same CA is
//! refused, an agent certificate cannot even act as a client); on plain-text loopback only root
//! (or the agent's own user) may, and another local user is refused by uid.

mod common;

use std::path::Path;

use isolab_agent::config::AgentConfig;
use isolab_agent::serve::{spawn_local, spawn_local_tls};
use isolab_proto::v1 as pb;
use isolab_proto::v1::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

fn config() -> AgentConfig {
    AgentConfig {
        // No trial runs here: the workload binary is not needed.
        workload_bin: Some("/nonexistent/isolab-workload".into()),
        cgroup_prefix: "isolab-test-authz".into(),
        state_dir: common::state_dir(),
        ..AgentConfig::default()
    }
}

/// A client of the agent at `addr` presenting `identity` of `dir`, expecting the name `r1`.
async fn tls_client(
    addr: std::net::SocketAddr,
    dir: &Path,
    identity: &str,
) -> AgentClient<Channel> {
    let tls = isolab_tls::client_tls(dir, identity, "r1").expect("client tls");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect");
    AgentClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_coordinator_identity_may_call_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path();
    isolab_tls::init_dev_pki(pki, &["r1".to_owned()], &[]).unwrap();
    let tls = isolab_tls::server_tls(pki, "agent-r1").unwrap();
    let agent = spawn_local_tls(config(), Some(tls)).await.unwrap();

    let mut coordinator = tls_client(agent.addr, pki, "coordinator").await;
    let found = coordinator
        .cancel(pb::CancelRequest {
            trial_id: "nope".into(),
        })
        .await
        .expect("the coordinator may cancel")
        .into_inner()
        .found;
    assert!(!found);
    // Authorized, then refused for its content: not a permission error.
    let status = coordinator
        .run_trial(pb::RunTrialRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    for identity in ["client", "health"] {
        let mut c = tls_client(agent.addr, pki, identity).await;
        let status = c
            .run_trial(pb::RunTrialRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(&format!(
                "RunTrial: identity `{identity}` may not call this; allowed: coordinator"
            )),
            "{}",
            status.message()
        );
        let status = c
            .capabilities(pb::CapabilitiesRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = c
            .cancel(pb::CancelRequest {
                trial_id: "x".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    // An agent's certificate is for servers only: it does not load as a client identity.
    let e = isolab_tls::client_tls(pki, "agent-r1", "r1").unwrap_err();
    assert!(e.to_string().contains("client certificate"), "{e}");
    agent.shutdown().await;
}

/// The code of the child's `Cancel` call as uid/gid 65534: 0 refused by uid, 1 admitted,
/// 2 anything else.
fn cancel_as_nobody(url: &str) -> i32 {
    // SAFETY: plain system calls on this (single-threaded, forked) process's credentials.
    let switched = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(65534) == 0
            && libc::setuid(65534) == 0
    };
    if !switched {
        return 3;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 4;
    };
    rt.block_on(async {
        let Ok(mut c) = AgentClient::connect(url.to_owned()).await else {
            return 5;
        };
        match c
            .cancel(pb::CancelRequest {
                trial_id: "x".into(),
            })
            .await
        {
            Ok(_) => 1,
            Err(s)
                if s.code() == tonic::Code::PermissionDenied
                    && s.message().contains("local user uid 65534")
                    && s.message().contains("only root") =>
            {
                0
            }
            Err(s) => {
                eprintln!("unexpected refusal: {s:?}");
                2
            }
        }
    })
}

#[test]
fn a_non_root_local_user_is_refused_on_plain_text() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must not be skipped"
        );
        eprintln!("skipped: needs root to switch to uid 65534");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(spawn_local(config())).unwrap();
    let url = agent.url();
    // Root is admitted.
    let found = rt.block_on(async {
        let mut c = AgentClient::connect(url.clone()).await.unwrap();
        c.cancel(pb::CancelRequest {
            trial_id: "x".into(),
        })
        .await
        .map(|r| r.into_inner().found)
    });
    assert_eq!(found.map_err(|s| s.to_string()), Ok(false));
    // SAFETY: the child only switches user, makes one call on a runtime of its own and leaves
    // with `_exit`, touching none of the parent's threads or their locks' state.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let code = cancel_as_nobody(&url);
            // SAFETY: ends the child at once, without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "the child as uid 65534 (0 = refused by uid, 1 = admitted, 2 = other error)"
            );
        }
    }
    rt.block_on(agent.shutdown());
}
