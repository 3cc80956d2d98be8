use std::collections::BTreeMap;

use isolab_model::pipeline::{
    Accel, AnalysisKind, BackendKind, Limits, NetworkMode, ParamValue, Params, Platform, RootfsKind,
};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::resolve::{ResolvedPlatform, resolve};
use isolab_model::sample::Sample;
use isolab_model::units::{Bytes, HumanDuration, Percent};
use isolab_proto::v1 as pb;
use proptest::prelude::*;

use super::trial::param_from_text;
use super::*;
use crate::types::{
    BackendStatus, Capabilities, HostBudget, HostInfo, InstanceStats, LogStream, TrialEvent,
    TrialSpec, TrialState, TrialStatus,
};

fn platform(backend: BackendKind) -> Platform {
    Platform {
        backend,
        runtime: None,
        runtime_args: vec![],
        rootfs: None,
        network: None,
        limits: Limits::default(),
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    }
}

fn trial() -> Trial {
    let mut params = Params::new();
    params.insert("size".into(), ParamValue::Str("4KiB".into()));
    params.insert("iterations".into(), ParamValue::Int(1000));
    params.insert("ratio".into(), ParamValue::Float(0.25));
    params.insert("pin".into(), ParamValue::Bool(true));
    let platform_spec = Platform {
        runtime: Some("runc".into()),
        runtime_args: vec!["--debug".into()],
        rootfs: Some(RootfsKind::HostRo),
        network: Some(NetworkMode::Bridge),
        limits: Limits {
            memory: Some(Bytes(512 << 20)),
            pids: Some(64),
            cpu_weight: Some(100),
            cpu_quota: Some(Percent(0.5)),
            cpuset: Some("0-1".into()),
            io_weight: None,
            io_bps: Some(Bytes(1 << 20)),
        },
        ..platform(BackendKind::Container)
    };
    Trial {
        id: "0123456789abcdef".into(),
        experiment: "fair".into(),
        analysis: AnalysisKind::Fairness,
        platform: "container".into(),
        resolved: resolve(&platform_spec).unwrap(),
        platform_spec,
        repetition: 2,
        warmup: false,
        workload: "cpu_spin".into(),
        adversary: Some("fork_bomb".into()),
        params: Params::new(),
        instances: vec![
            InstanceSpec {
                index: 0,
                role: Role::Victim,
                group: Some("a".into()),
                workload: "cpu_spin".into(),
                params: params.clone(),
                cpu_weight: Some(300),
                cpu_reservation: Some(Percent(0.25)),
            },
            InstanceSpec {
                index: 1,
                role: Role::Adversary,
                group: None,
                workload: "fork_bomb".into(),
                params: Params::new(),
                cpu_weight: None,
                cpu_reservation: None,
            },
        ],
        duration: HumanDuration::from_millis(1500),
        timeout: HumanDuration::from_millis(34_500),
        retries: 0,
    }
}

#[test]
fn trial_round_trips() {
    let t = trial();
    let back = trial_from_proto(trial_to_proto("run-1", &t, 3)).unwrap();
    assert_eq!(back.run_id, "run-1");
    assert_eq!(back.attempt, 3);
    assert_eq!(back.trial, TrialSpec::from(&t));
    let ResolvedPlatform::Container(c) = &back.trial.platform_spec else {
        panic!("not a container: {:?}", back.trial.platform_spec);
    };
    assert_eq!(c.limits.memory_bytes, Some(512 << 20));
    assert_eq!(c.runtime_args, ["--debug"]);
}

#[test]
fn every_backend_round_trips_resolved() {
    let vm = Platform {
        vcpus: Some(2),
        memory: Some(Bytes(128 << 20)),
        accel: Some(Accel::Tcg),
        machine: Some("q35".into()),
        ..platform(BackendKind::Vm)
    };
    let docker = Platform {
        runtime: Some("runsc".into()),
        ..platform(BackendKind::Docker)
    };
    for p in [
        platform(BackendKind::Native),
        platform(BackendKind::Container),
        platform(BackendKind::Docker),
        platform(BackendKind::Lxc),
        platform(BackendKind::Vm),
        vm,
        docker,
    ] {
        let mut t = trial();
        t.resolved = resolve(&p).unwrap();
        t.platform_spec = p;
        t.adversary = None;
        let back = trial_from_proto(trial_to_proto("r", &t, 0)).unwrap().trial;
        assert_eq!(back, TrialSpec::from(&t));
        assert_eq!(back.platform_spec.backend(), t.platform_spec.backend);
    }
}

#[test]
fn bad_requests_name_the_field() {
    use pb::platform_spec::Backend;
    let good = trial_to_proto("r", &trial(), 0);
    let with_platform = |f: &dyn Fn(&mut pb::PlatformSpec)| {
        let mut req = good.clone();
        f(req.trial.as_mut().unwrap().platform.as_mut().unwrap());
        trial_from_proto(req)
    };
    assert_eq!(
        with_platform(&|p| p.backend = None).unwrap_err(),
        ConvertError::MissingField {
            field: "trial.platform.backend"
        }
    );
    let err = with_platform(&|p| {
        if let Some(Backend::Container(c)) = p.backend.as_mut() {
            c.rootfs = "fancy".into();
        }
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("trial.platform.container.rootfs"),
        "{err}"
    );
    let small_vm = |p: &mut pb::PlatformSpec| {
        p.backend = Some(Backend::Vm(pb::VmPlatform {
            vcpus: 1,
            guest_memory_mib: 64,
            accel: "auto".into(),
            machine: None,
            network: "none".into(),
            limits: None,
        }));
    };
    assert!(matches!(
        with_platform(&small_vm).unwrap_err(),
        ConvertError::OutOfRange {
            field: "trial.platform.vm.guest_memory_mib",
            ..
        }
    ));
    let mut req = good;
    req.trial = None;
    assert_eq!(
        trial_from_proto(req).unwrap_err(),
        ConvertError::MissingField { field: "trial" }
    );
}

fn stats() -> InstanceStats {
    InstanceStats {
        cpu_user_ns: 1,
        cpu_system_ns: 2,
        // Exact (cpuacct.usage), not the sum of the tick-based user and system times: the wire
        // once carried only those, and every CPU time arrived in 10 ms steps.
        cpu_usage_ns: 123_456_789,
        memory_current_bytes: 4,
        memory_peak_bytes: 5,
        memory_limit_hits: 0,
        oom_events: 6,
        oom_kills: 7,
        pids_current: 8,
        pids_limit_hits: 9,
        io_read_bytes: 10,
        io_write_bytes: 11,
    }
}

#[test]
fn events_round_trip() {
    let events = vec![
        TrialEvent::Status(TrialStatus {
            state: TrialState::Failed,
            message: "instance 0 exited with code 2".into(),
            host: "h".into(),
            accel: Some("tcg".into()),
            leaks: vec!["cgroup x still exists".into()],
        }),
        TrialEvent::Status(TrialStatus {
            state: TrialState::Running,
            message: String::new(),
            host: "h".into(),
            accel: None,
            leaks: vec![],
        }),
        TrialEvent::Sample {
            instance: 2,
            sample: Sample {
                metric: "units_per_s".into(),
                value: 12.5,
                unit: "units/s".into(),
                higher_is_better: true,
                t_offset_s: Some(0.1),
            },
        },
        TrialEvent::Stats {
            instance: 1,
            t_offset_s: 0.2,
            stats: stats(),
            final_: true,
        },
        TrialEvent::Log {
            instance: 0,
            stream: LogStream::Stderr,
            text: "oops".into(),
        },
        TrialEvent::Noise(crate::types::HostNoise {
            span_s: 0.5,
            steal_fraction: 0.01,
            background_cpu_fraction: Some(0.2),
            agent_cpu_fraction: 0.003,
        }),
        TrialEvent::Noise(crate::types::HostNoise {
            span_s: 0.5,
            steal_fraction: 0.0,
            background_cpu_fraction: None,
            agent_cpu_fraction: 0.0,
        }),
    ];
    for e in events {
        assert_eq!(event_from_proto(event_to_proto(e.clone())).unwrap(), e);
    }
    assert_eq!(
        event_from_proto(pb::TrialEvent { event: None }).unwrap_err(),
        ConvertError::MissingField { field: "event" }
    );
}

#[test]
fn capabilities_round_trip() {
    let c = Capabilities {
        agent_version: "0.1.0".into(),
        host: HostInfo {
            hostname: "h".into(),
            kernel: "6.1".into(),
            os: "Debian".into(),
            cpu_model: "cpu".into(),
            cpu_flags: vec!["sse".into()],
            cores: 2,
            memory_bytes: 1 << 30,
            cgroup_version: "v1".into(),
            clock_source: "tsc".into(),
            arch: "x86_64".into(),
        },
        backends: vec![
            BackendStatus {
                name: "native".into(),
                available: true,
                version: "0.1.0".into(),
                ..Default::default()
            },
            BackendStatus::unavailable("vm", "not implemented in this agent version"),
        ],
        labels: BTreeMap::from([("rack".into(), "r1".into())]),
        workloads: vec!["syscall".into()],
        budget: Some(HostBudget {
            memory_bytes: 8 << 30,
            pids: 30000,
            disk_bytes: 50 << 30,
            max_trials: 16,
            max_instances: 4096,
        }),
    };
    assert_eq!(
        capabilities_from_proto(capabilities_to_proto(&c)).unwrap(),
        c
    );
}

proptest! {
    #[test]
    fn parameter_text_is_preserved(text in "[a-zA-Z0-9._+-]{0,12}") {
        // What the workload sees (`--param k=<text>`) must not change in transit.
        prop_assert_eq!(param_from_text(text.clone()).to_string(), text);
    }

    #[test]
    fn numbers_round_trip(i in any::<i64>(), f in -1e9f64..1e9) {
        prop_assert_eq!(param_from_text(ParamValue::Int(i).to_string()), ParamValue::Int(i));
        let back = param_from_text(ParamValue::Float(f).to_string());
        prop_assert!(back == ParamValue::Float(f) || matches!(back, ParamValue::Int(_)));
    }
}
