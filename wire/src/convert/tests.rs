use std::collections::BTreeMap;

use isolab_model::pipeline::{
    Accel, AnalysisKind, BackendKind, Limits, NetworkMode, ParamValue, Params, Platform, RootfsKind,
};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::sample::Sample;
use isolab_model::units::{Bytes, HumanDuration, Percent};
use isolab_proto::v1 as pb;
use proptest::prelude::*;

use super::trial::param_from_text;
use super::*;
use crate::types::{
    BackendStatus, Capabilities, HostInfo, InstanceStats, LogStream, TrialEvent, TrialState,
    TrialStatus,
};

fn trial() -> Trial {
    let mut params = Params::new();
    params.insert("size".into(), ParamValue::Str("4KiB".into()));
    params.insert("iterations".into(), ParamValue::Int(1000));
    params.insert("ratio".into(), ParamValue::Float(0.25));
    params.insert("pin".into(), ParamValue::Bool(true));
    Trial {
        id: "0123456789abcdef".into(),
        experiment: "fair".into(),
        analysis: AnalysisKind::Fairness,
        platform: "container".into(),
        platform_spec: Platform {
            backend: BackendKind::Container,
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
            vcpus: Some(2),
            memory: Some(Bytes(256 << 20)),
            accel: Some(Accel::Tcg),
            machine: Some("microvm".into()),
        },
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
    assert_eq!(back.trial, t);
}

#[test]
fn minimal_platform_round_trips() {
    let mut t = trial();
    t.platform_spec = Platform {
        backend: BackendKind::Native,
        runtime: None,
        runtime_args: vec![],
        rootfs: None,
        network: None,
        limits: Limits::default(),
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    };
    t.adversary = None;
    assert_eq!(
        trial_from_proto(trial_to_proto("r", &t, 0)).unwrap().trial,
        t
    );
}

#[test]
fn bad_requests_name_the_field() {
    let mut req = trial_to_proto("r", &trial(), 0);
    req.trial
        .as_mut()
        .unwrap()
        .platform
        .as_mut()
        .unwrap()
        .backend = 0;
    assert_eq!(
        trial_from_proto(req.clone()).unwrap_err(),
        ConvertError::UnknownEnum {
            field: "trial.platform.backend",
            value: "0".into()
        }
    );
    req.trial
        .as_mut()
        .unwrap()
        .platform
        .as_mut()
        .unwrap()
        .rootfs = "fancy".into();
    req.trial
        .as_mut()
        .unwrap()
        .platform
        .as_mut()
        .unwrap()
        .backend = 1;
    assert!(
        trial_from_proto(req.clone())
            .unwrap_err()
            .to_string()
            .contains("trial.platform.rootfs")
    );
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
        cpu_usage_ns: 3,
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
