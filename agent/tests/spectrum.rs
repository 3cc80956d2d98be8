//! The platform spectrum on this host: the agent's capabilities name every platform with its
//! version or the reason it cannot run here. Runs as root in CI.

mod common;

use std::time::Duration;

use isolab_agent::core::AgentCore;
use isolab_backends::catalog::{BACKENDS, OUT_OF_REACH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_name_every_platform_with_a_version_or_a_reason() {
    if !common::privileged("capabilities") {
        return;
    }
    let core = AgentCore::new(common::config("caps")).await;
    let caps = core.capabilities().await;
    let names: Vec<&str> = caps.backends.iter().map(|b| b.name.as_str()).collect();
    for want in BACKENDS.iter().chain(OUT_OF_REACH.iter().map(|p| &p.name)) {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    for b in &caps.backends {
        if b.available {
            assert!(
                !b.version.is_empty(),
                "{} is available but has no version",
                b.name
            );
        } else {
            assert!(
                !b.reason.is_empty(),
                "{} is unavailable without a reason",
                b.name
            );
        }
    }
    for p in OUT_OF_REACH {
        let b = caps
            .backends
            .iter()
            .find(|b| b.name == p.name)
            .expect("listed");
        assert!(
            !b.available && b.reason.contains("kernel"),
            "{}: {}",
            b.name,
            b.reason
        );
    }
    assert!(names.contains(&"vm/kvm"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("container/")),
        "{names:?}"
    );
    core.shutdown(Duration::from_secs(10)).await;
}
