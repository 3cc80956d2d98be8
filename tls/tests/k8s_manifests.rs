//! The Kubernetes manifests under `k8s/`: the base and both overlays build with `kubectl kustomize`
//! (the overlays with TLS Secrets made by `init_dev_pki`, as `isolab certs init` makes them), every
//! resource validates offline against the Kubernetes schemas with `python3 -m kubernetes_validate
//! --strict`, and the agent DaemonSet grants exactly the mounts and privileges the agent needs.
//!
//! Needs `kubectl` and the `kubernetes-validate` pip package (`./bootstrap` installs it). In CI
//! (`CI` set) a missing tool fails the test; elsewhere the test says why and skips.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The name the agents' shared certificate carries (see k8s/base/agent.yaml).
const AGENT_TLS_NAME: &str = "agent.isolab.svc";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether a command runs successfully; in CI a missing tool is a failure.
fn tools_present() -> bool {
    let probes: [(&str, &[&str]); 2] = [
        ("kubectl", &["version", "--client"]),
        ("python3", &["-m", "kubernetes_validate", "--version"]),
    ];
    for (program, args) in probes {
        let ok = Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let what = format!(
                "`{program} {}` does not run (run ./bootstrap)",
                args.join(" ")
            );
            assert!(std::env::var_os("CI").is_none(), "{what}");
            eprintln!("skipping the Kubernetes manifest test: {what}");
            return false;
        }
    }
    true
}

/// Copies `from` to `to`, leaving out `*.pem` (a developer's real certificates stay where they are).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.path().extension().is_none_or(|e| e != "pem") {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of `k8s/` with fresh development certificates in each overlay's `tls/`.
fn k8s_with_certs(tmp: &Path) -> PathBuf {
    let k8s = tmp.join("k8s");
    copy_tree(&repo_root().join("k8s"), &k8s);
    for overlay in ["local", "production"] {
        let sans = [
            "coordinator.isolab.svc".to_owned(),
            "coordinator.isolab.svc.cluster.local".to_owned(),
        ];
        isolab_tls::init_dev_pki(
            &k8s.join("overlays").join(overlay).join("tls"),
            &[AGENT_TLS_NAME.to_owned()],
            &sans,
        )
        .unwrap();
    }
    k8s
}

/// `kubectl kustomize DIR`, validated with kubernetes-validate; the resources.
fn build_and_validate(dir: &Path, tmp: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let file = tmp.join(format!("{name}.yaml"));
    fs::write(&file, &yaml).unwrap();
    let check = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "{name} does not validate:\n{report}"
    );
    // A WARN means a resource had no schema, so it was not validated at all.
    assert!(
        !report.contains("WARN") && !report.contains("ERROR"),
        "{name}:\n{report}"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert!(!docs.is_empty(), "{name} built nothing");
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n == name || n.starts_with(&format!("{name}-")))
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// The agent DaemonSet grants exactly what the agent needs, no more.
fn check_agent_daemonset(docs: &[Value], build: &str) {
    let ds = find(docs, "DaemonSet", "isolab-agent");
    let pod = &ds["spec"]["template"]["spec"];
    for host_ns in ["hostPID", "hostNetwork", "hostIPC"] {
        assert!(!is_true(&pod[host_ns]), "{build}: {host_ns} must be false");
    }
    assert_eq!(
        pod["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{build}: no token in the agent"
    );

    // hostPath volumes: exactly these, with these types.
    let volumes = pod["volumes"].as_array().unwrap();
    let host_paths: BTreeMap<String, (String, String)> = volumes
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .map(|v| {
            let hp = &v["hostPath"];
            (
                v["name"].as_str().unwrap().to_owned(),
                (
                    hp["path"].as_str().unwrap().to_owned(),
                    hp["type"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("kvm", "/dev/kvm", "CharDevice"),
        ("tun", "/dev/net/tun", "CharDevice"),
    ]
    .into_iter()
    .map(|(n, p, t)| (n.to_owned(), (p.to_owned(), t.to_owned())))
    .collect();
    assert_eq!(host_paths, want, "{build}: hostPath volumes");

    // One container, privileged, mounting each hostPath where it belongs. No cgroupfs from the
    // host: the runtime's own (read-write for a privileged container) keeps instances in the pod.
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{build}: one container");
    let agent = &containers[0];
    assert_eq!(agent["name"], "agent");
    assert!(
        is_true(&agent["securityContext"]["privileged"]),
        "{build}: the agent must be privileged"
    );
    let mounts = agent["volumeMounts"].as_array().unwrap();
    for (volume, (path, _)) in &want {
        let m = mounts
            .iter()
            .find(|m| m["name"] == volume.as_str())
            .unwrap_or_else(|| panic!("{build}: {volume} not mounted"));
        assert_eq!(
            m["mountPath"].as_str(),
            Some(path.as_str()),
            "{build}: {volume}"
        );
        assert!(
            !is_true(&m["readOnly"]),
            "{build}: {volume} must be writable"
        );
    }
    assert!(
        !mounts.iter().any(|m| m["name"] == "kube-api"),
        "{build}: the agent gets no API token"
    );
    assert!(
        !mounts.iter().any(|m| m["mountPath"] == "/sys/fs/cgroup"),
        "{build}: the host's cgroupfs would put instances outside the pod's cgroup"
    );
    let tls = mounts.iter().find(|m| m["name"] == "tls").unwrap();
    assert_eq!(tls["mountPath"], "/etc/isolab/tls");
    assert!(is_true(&tls["readOnly"]));

    // The command line: the agent itself (no shell), announcing its pod IP and node's labels.
    assert_eq!(strs(&agent["command"]), ["isolab-agent"], "{build}");
    let args = strs(&agent["args"]).join(" ");
    for want in [
        "--listen 0.0.0.0:7411",
        "--tls-dir /etc/isolab/tls",
        "--labels-file /run/isolab/node/labels",
        "--announce nats://nats:4222",
        "--name $(NODE_NAME)",
        "--advertise https://$(POD_IP):7411",
        "--metrics-listen 0.0.0.0:9464",
    ] {
        assert!(
            args.contains(want),
            "{build}: agent command lacks {want}: {args}"
        );
    }
    let env = agent["env"].as_array().unwrap();
    for (var, field) in [("POD_IP", "status.podIP"), ("NODE_NAME", "spec.nodeName")] {
        assert!(
            env.iter()
                .any(|e| e["name"] == var && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{build}: {var} from {field}"
        );
    }
    assert!(env.iter().any(|e| e["name"] == "ISOLAB_LOG"), "{build}");
    let port = agent["ports"].as_array().unwrap();
    assert!(
        port.iter()
            .any(|p| p["containerPort"].as_u64() == Some(7411) && p["name"] == "grpc"),
        "{build}"
    );
    // Prometheus: the metrics port is declared and annotated for scraping.
    assert!(
        port.iter()
            .any(|p| p["containerPort"].as_u64() == Some(9464) && p["name"] == "metrics"),
        "{build}"
    );
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9464", "{build}");
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{build}");

    // Probes: the gRPC health service on 7411 over mutual TLS.
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let cmd = strs(&agent[probe]["exec"]["command"]);
        assert_eq!(
            cmd.first().map(String::as_str),
            Some("isolab-health-probe"),
            "{build}: {probe}: {cmd:?}"
        );
        assert!(
            cmd.contains(&"--addr=127.0.0.1:7411".to_owned()),
            "{build}: {probe}: {cmd:?}"
        );
        assert!(
            cmd.contains(&"--tls-dir=/etc/isolab/tls".to_owned()),
            "{build}: {probe}: {cmd:?}"
        );
    }

    // No CPU limit (throttling would distort the measurements); a memory limit and requests.
    let resources = &agent["resources"];
    assert!(
        resources["limits"]["cpu"].is_null(),
        "{build}: the agent must have no CPU limit"
    );
    assert!(
        !resources["limits"]["memory"].is_null() && !resources["requests"]["cpu"].is_null(),
        "{build}"
    );

    // The init container that reads the node's labels: unprivileged, no hostPath, and the only
    // holder of the API token.
    let inits = pod["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1, "{build}");
    let init = &inits[0];
    assert!(
        !is_true(&init["securityContext"]["privileged"]),
        "{build}: init container privileged"
    );
    assert!(is_true(&init["securityContext"]["runAsNonRoot"]), "{build}");
    let init_mounts: Vec<&str> = init["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        !init_mounts.iter().any(|m| want.contains_key(*m)),
        "{build}: init container mounts a hostPath"
    );
    assert!(init_mounts.contains(&"kube-api"), "{build}");
    let script = strs(&init["args"]).join("\n");
    assert!(
        script.contains("topology.isolab.io/rack")
            && script.contains("topology.kubernetes.io/zone")
            && script.contains("/run/isolab/node/labels"),
        "{build}"
    );
    let env = init["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName")
    );

    // RBAC: `get` on nodes, nothing else.
    let role = find(docs, "ClusterRole", "isolab-agent-node-reader");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{build}");
    assert_eq!(strs(&rules[0]["resources"]), ["nodes"]);
    assert_eq!(strs(&rules[0]["verbs"]), ["get"]);
    assert_eq!(strs(&rules[0]["apiGroups"]), [""]);
    let binding = find(docs, "ClusterRoleBinding", "isolab-agent-node-reader");
    assert_eq!(
        binding["subjects"][0]["name"], pod["serviceAccountName"],
        "{build}"
    );
    assert_eq!(binding["subjects"][0]["namespace"], "isolab", "{build}");
}

fn check_control_plane(docs: &[Value], build: &str) {
    for d in docs {
        let kind = d["kind"].as_str().unwrap();
        if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(
                d["metadata"]["namespace"], "isolab",
                "{build}: {kind} {:?}",
                d["metadata"]["name"]
            );
        }
    }
    let coordinator = &find(docs, "Deployment", "isolab-coordinator")["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(
        strs(&coordinator["args"]).join(" "),
        "serve --listen 0.0.0.0:7400 --tls-dir /etc/isolab/tls --results /results --events nats://nats:4222 \
         --discover nats://nats:4222 --tls-domain agent.isolab.svc --metrics-listen 0.0.0.0:9464",
        "{build}"
    );
    let nats = &find(docs, "StatefulSet", "nats")["spec"];
    assert!(
        strs(&nats["template"]["spec"]["containers"][0]["args"]).contains(&"-js".to_owned()),
        "{build}"
    );
    assert_eq!(nats["volumeClaimTemplates"][0]["metadata"]["name"], "data");
    let job = &find(docs, "Job", "isolab-submit")["spec"]["template"]["spec"];
    let args = strs(&job["containers"][0]["args"]);
    let pipeline = if build == "local" {
        "racks"
    } else {
        "quickstart"
    };
    assert_eq!(
        args.join(" "),
        format!(
            "submit /pipelines/{pipeline}.yaml --server https://coordinator.isolab.svc:7400 \
             --tls-dir /etc/isolab/tls --wait 5m --watch"
        ),
        "{build}"
    );
    let config_map_name = job["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pipelines")
        .unwrap()["configMap"]["name"]
        .as_str()
        .unwrap();
    let pipelines = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == config_map_name)
        .unwrap();
    let quickstart = fs::read_to_string(repo_root().join("pipelines/quickstart.yaml")).unwrap();
    assert_eq!(
        pipelines["data"]["quickstart.yaml"].as_str(),
        Some(quickstart.as_str()),
        "{build}"
    );
    assert!(pipelines["data"]["racks.yaml"].is_string(), "{build}");
}

/// Each TLS Secret holds the CA certificate and its identities (the agents' also `health`, for their
/// probes), never the CA key; every reference
/// to one resolves to a Secret in the build.
fn check_secrets(docs: &[Value], build: &str) {
    let expect = [
        (
            "isolab-agent-tls",
            &["agent-agent.isolab.svc", "health"][..],
        ),
        ("isolab-coordinator-tls", &["coordinator"][..]),
        ("isolab-client-tls", &["client"][..]),
    ];
    for (name, identities) in expect {
        let secret = find(docs, "Secret", name);
        let mut keys: Vec<String> = secret["data"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        let mut want = vec!["ca.pem".to_owned()];
        for identity in identities {
            want.extend([format!("{identity}-key.pem"), format!("{identity}.pem")]);
        }
        want.sort();
        assert_eq!(keys, want, "{build}: {name}");
    }
    let secret_names: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for d in docs {
        for volume in d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                assert!(
                    secret_names.contains(&secret),
                    "{build}: {secret} is referenced but not generated"
                );
            }
        }
    }
}

#[test]
fn kustomizations_build_validate_and_grant_the_agent_exactly_what_it_needs() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let k8s = k8s_with_certs(tmp.path());

    let base = build_and_validate(&k8s.join("base"), tmp.path());
    check_agent_daemonset(&base, "base");
    check_control_plane(&base, "base");

    let local = build_and_validate(&k8s.join("overlays/local"), tmp.path());
    check_agent_daemonset(&local, "local");
    check_control_plane(&local, "local");
    check_secrets(&local, "local");
    let agent_image = find(&local, "DaemonSet", "isolab-agent")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(agent_image, "isolab/agent:dev");

    let production = build_and_validate(&k8s.join("overlays/production"), tmp.path());
    check_agent_daemonset(&production, "production");
    check_control_plane(&production, "production");
    check_secrets(&production, "production");
    let pdb = find(&production, "PodDisruptionBudget", "isolab-coordinator");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "isolab-coordinator"
    );
    let pod = &find(&production, "DaemonSet", "isolab-agent")["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["isolab.dev/agent"], "true");
    let coordinator =
        &find(&production, "Deployment", "isolab-coordinator")["spec"]["template"]["spec"];
    assert!(
        !coordinator["affinity"]["podAntiAffinity"].is_null(),
        "production keeps the coordinator off agent nodes"
    );
}

#[test]
fn the_pipeline_in_the_config_map_is_the_repository_one() {
    let copy = fs::read(repo_root().join("k8s/base/pipelines/quickstart.yaml")).unwrap();
    let original = fs::read(repo_root().join("pipelines/quickstart.yaml")).unwrap();
    assert!(
        copy == original,
        "k8s/base/pipelines/quickstart.yaml differs from pipelines/quickstart.yaml: copy it again"
    );
}
