//! Tests of the bundle: snapshots of `config.json` for a few platform settings, and resources.

use std::path::{Path, PathBuf};

use super::*;
use crate::rootfs::HostBind;

const FEATURES: HostFeatures = HostFeatures {
    swap_limit: true,
    io_weight: true,
};

fn rootfs(binds: &[&str]) -> Rootfs {
    Rootfs {
        dir: PathBuf::from("/state/trials/t/i0/rootfs"),
        binds: binds
            .iter()
            .map(|b| HostBind {
                path: PathBuf::from(b),
            })
            .collect(),
    }
}

fn config(rootfs: &Rootfs, network: &NetAttach, limits: &CgroupLimits, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let input = BundleInput {
        args: &args,
        instance: 0,
        trial: "0123456789abcdef-a0",
        hostname: "isolab-i0",
        rootfs,
        workload_bin: Path::new("/opt/isolab/isolab-workload"),
        network,
        cgroups_path: "isolab-agent-1-0/0123456789abcdef-a0/i0",
        limits,
        features: FEATURES,
    };
    to_json(&spec(&input).expect("spec builds"))
}

/// Only the safety envelope's ceilings, no network, minimal root.
#[test]
fn snapshot_minimal_no_network_ceilings_only() {
    let limits = CgroupLimits {
        memory_bytes: Some(1 << 30),
        pids_max: Some(4096),
        ..Default::default()
    };
    let json = config(
        &rootfs(&[]),
        &NetAttach::None,
        &limits,
        &["syscall", "--param", "duration=1s"],
    );
    insta::assert_snapshot!(json);
}

/// A fully limited platform on a bridge, with the host's libraries.
#[test]
fn snapshot_host_ro_bridge_all_limits() {
    let limits = CgroupLimits {
        memory_bytes: Some(256 << 20),
        pids_max: Some(256),
        cpu_weight: Some(200),
        cpu_quota: Some(0.5),
        cpu_period_us: None,
        cpuset_cpus: Some("0-1".into()),
        io_weight: Some(5000),
        io_bps: Some((1 << 20, vec![(254, 0)])),
    };
    let net = NetAttach::Netns(PathBuf::from(
        "/run/netns/isolab-agent-1-0-0123456789abcdef-a0-i0",
    ));
    let json = config(&rootfs(&["/usr", "/etc/ssl"]), &net, &limits, &["cpu_spin"]);
    insta::assert_snapshot!(json);
}

/// Host network: no network namespace at all.
#[test]
fn host_network_has_no_network_namespace() {
    let limits = CgroupLimits {
        pids_max: Some(64),
        ..Default::default()
    };
    let json = config(&rootfs(&[]), &NetAttach::Host, &limits, &["syscall"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let types: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["pid", "ipc", "uts", "mount", "cgroup"]);
    let none = config(&rootfs(&[]), &NetAttach::None, &limits, &["syscall"]);
    let v: serde_json::Value = serde_json::from_str(&none).unwrap();
    let net = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "network");
    assert!(
        net.is_some_and(|n| n.get("path").is_none()),
        "none: a fresh network namespace"
    );
}

#[test]
fn process_has_no_capabilities_and_no_new_privileges() {
    let json = config(
        &rootfs(&[]),
        &NetAttach::None,
        &CgroupLimits::default(),
        &["syscall"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = &v["process"];
    assert_eq!(p["args"][0], WORKLOAD_PATH);
    assert_eq!(p["terminal"], false);
    assert_eq!(p["noNewPrivileges"], true);
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(
            p["capabilities"][set].as_array().map(Vec::len),
            Some(0),
            "{set}"
        );
    }
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
}

#[test]
fn memory_limit_disables_swap_where_the_kernel_allows() {
    let l = CgroupLimits {
        memory_bytes: Some(128 << 20),
        ..Default::default()
    };
    let r = resources(&l, FEATURES).unwrap();
    let m = r.memory().unwrap();
    assert_eq!(m.limit(), Some(128 << 20));
    assert_eq!(m.swap(), Some(128 << 20), "memory+swap == memory: no swap");
    let r = resources(
        &l,
        HostFeatures {
            swap_limit: false,
            io_weight: true,
        },
    )
    .unwrap();
    assert_eq!(
        r.memory().unwrap().swap(),
        None,
        "no memsw file: runc must not be asked"
    );
}

#[test]
fn cpu_weight_quota_and_cpuset_convert() {
    let l = CgroupLimits {
        cpu_weight: Some(100),
        cpu_quota: Some(2.0),
        cpu_period_us: Some(50_000),
        cpuset_cpus: Some("1".into()),
        ..Default::default()
    };
    let r = resources(&l, FEATURES).unwrap();
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        cpu.shares(),
        Some(1024),
        "weight 100 is the default share of 1024"
    );
    assert_eq!(cpu.period(), Some(50_000));
    assert_eq!(cpu.quota(), Some(100_000), "two CPUs: twice the period");
    assert_eq!(cpu.cpus().as_deref(), Some("1"));
    let tiny = CgroupLimits {
        cpu_weight: Some(1),
        cpu_quota: Some(0.001),
        ..Default::default()
    };
    let r = resources(&tiny, FEATURES).unwrap();
    assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(10));
    assert_eq!(
        r.cpu().as_ref().unwrap().quota(),
        Some(1_000),
        "quota floored at 1 ms"
    );
}

#[test]
fn no_cpu_or_blkio_section_without_such_limits() {
    let r = resources(
        &CgroupLimits {
            pids_max: Some(10),
            ..Default::default()
        },
        FEATURES,
    )
    .unwrap();
    assert!(r.cpu().is_none());
    assert!(r.block_io().is_none());
    assert!(r.memory().is_none());
    assert_eq!(r.pids().unwrap().limit(), 10);
    assert_eq!(
        r.devices().as_ref().map(Vec::len),
        Some(1),
        "deny-all device rule"
    );
}

#[test]
fn io_weight_is_clamped_or_skipped() {
    let l = CgroupLimits {
        io_weight: Some(10_000),
        ..Default::default()
    };
    let r = resources(&l, FEATURES).unwrap();
    assert_eq!(r.block_io().as_ref().unwrap().weight(), Some(1000));
    let r = resources(
        &l,
        HostFeatures {
            swap_limit: true,
            io_weight: false,
        },
    )
    .unwrap();
    assert!(
        r.block_io().is_none(),
        "no weight file: runc must not be asked"
    );
}

#[test]
fn bad_limits_are_named() {
    let e = resources(
        &CgroupLimits {
            cpu_weight: Some(0),
            ..Default::default()
        },
        FEATURES,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cpu_weight"), "{e}");
    let e = resources(
        &CgroupLimits {
            cpu_quota: Some(f64::NAN),
            ..Default::default()
        },
        FEATURES,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cpu_quota"), "{e}");
    let e = resources(
        &CgroupLimits {
            memory_bytes: Some(u64::MAX),
            ..Default::default()
        },
        FEATURES,
    )
    .unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn write_puts_config_json_in_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let root = rootfs(&[]);
    let input = BundleInput {
        args: &[],
        instance: 3,
        trial: "t-a0",
        hostname: "h",
        rootfs: &root,
        workload_bin: Path::new("/w"),
        network: &NetAttach::None,
        cgroups_path: "a/b",
        limits: &CgroupLimits::default(),
        features: FEATURES,
    };
    let s = spec(&input).unwrap();
    write(tmp.path(), &s).unwrap();
    let back = Spec::load(tmp.path().join("config.json")).unwrap();
    assert_eq!(back, s);
    let e = write(&tmp.path().join("missing"), &s).unwrap_err();
    assert!(e.to_string().contains("missing/config.json"), "{e}");
}
