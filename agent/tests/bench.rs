//! The measurements behind `isolab-bench` run once at tiny sizes, so CI exercises them (no
//! speed is asserted: `just bench` prints the ratios). Root needed; runs as root in CI.

mod common;

use std::time::Duration;

use isolab_agent::bench::container as cbench;
use isolab_agent::bench::spectrum;
use isolab_agent::core::AgentCore;
use isolab_backends::AnyBackend;
use isolab_backends::container::ContainerBackend;
use isolab_model::pipeline::Limits;

fn container(core: &AgentCore) -> &ContainerBackend {
    core.backends()
        .iter()
        .find_map(|b| match b {
            AnyBackend::Container(c) => Some(c),
            _ => None,
        })
        .expect("container backend")
}

/// The core, probed, with runc working; `None` (outside CI) when runc or root is missing.
async fn core_with_runc(test: &str) -> Option<AgentCore> {
    if !common::privileged(test) {
        return None;
    }
    let core = AgentCore::new(common::config(test)).await;
    let caps = core.capabilities().await;
    let runc = caps.backends.iter().find(|s| s.name == "container/runc");
    match runc {
        Some(s) if s.available => Some(core),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: runc unavailable in CI: {other:?}"
            );
            eprintln!("skipping {test}: runc unavailable: {other:?}");
            core.shutdown(Duration::from_secs(10)).await;
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_start_times_one_round() {
    let Some(core) = core_with_runc("bench-ct-start").await else {
        return;
    };
    let platform = cbench::platform("runc", Limits::default());
    let t = cbench::start_times(container(&core), &platform, 1)
        .await
        .expect("start times");
    for (what, v) in [
        ("agent first", &t.agent_first_ms),
        ("agent gone", &t.agent_gone_ms),
        ("bare first", &t.bare_first_ms),
        ("bare gone", &t.bare_gone_ms),
    ] {
        assert_eq!(v.len(), 1, "{what}: {v:?}");
        assert!(v[0] > 0.0 && v[0].is_finite(), "{what}: {v:?}");
    }
    // A container prints its first sample before it is gone.
    assert!(t.agent_first_ms[0] <= t.agent_gone_ms[0], "{t:?}");
    assert!(t.bare_first_ms[0] <= t.bare_gone_ms[0], "{t:?}");
    core.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_max_alive_up_to_eight() {
    let Some(core) = core_with_runc("bench-ct-max").await else {
        return;
    };
    let steps = cbench::max_alive(container(&core), "runc", 8).await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    let s = &steps[0];
    assert_eq!(s.n, 8);
    assert!(s.ok, "8 idle containers: {}", s.error);
    assert!(s.all_awake_s > 0.0, "{s:?}");
    assert!(
        s.memory_per_container_kib > 0.0 && s.memory_per_container_kib < 64.0 * 1024.0,
        "{s:?}"
    );
    core.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectrum_of_native_and_runc_one_round() {
    let Some(core) = core_with_runc("bench-spectrum").await else {
        return;
    };
    let s = spectrum::spectrum(
        &core,
        &["native", "container/runc", "no-such-platform"],
        1,
        Duration::from_millis(100),
    )
    .await
    .expect("spectrum");
    let labels: Vec<&str> = s.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        ["native", "container/runc"],
        "skipped: {:?}",
        s.skipped
    );
    for r in &s.rows {
        assert!(r.start_ms > 0.0 && r.start_ms.is_finite(), "{r:?}");
        assert!(r.syscall_ns > 0.0 && r.syscall_ns.is_finite(), "{r:?}");
        assert!(r.fork_exit_us > 0.0 && r.fork_exit_us.is_finite(), "{r:?}");
    }
    core.shutdown(Duration::from_secs(30)).await;
}
