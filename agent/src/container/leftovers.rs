//! The proof of a clean teardown: everything of a trial that could still exist, looked up in
//! the system rather than in the backend's own records.

use super::backend::Inner;
use super::lifecycle::TrialNames;
use super::runtime::Runtime;
use crate::backend::{Leak, LeakReport, process_alive};
use isolab_host::mounts::mounts_under;
use isolab_host::netns;

/// Looks for processes in the trial's cgroups (in every hierarchy), the cgroups themselves,
/// containers the runtime still knows (any state named after them under its `--root`, which is
/// ours: runc, crun and youki keep `<root>/<id>/`, runsc `<root>/<id>_sandbox:…`), mounts below the trial's directory, the directory, and
/// the trial's network namespaces with any veth left in them.
pub(crate) fn find(inner: &Inner, names: &TrialNames, runtime: Option<&Runtime>) -> LeakReport {
    let mut report = LeakReport::default();
    for pid in inner.hierarchies.pids(&names.cgroup_rel) {
        if let Some(comm) = process_alive(pid, None) {
            report.push(Leak::Process { pid, comm });
        }
    }
    for (hierarchy, _) in inner.hierarchies.existing(&names.cgroup_rel) {
        report.push(Leak::Cgroup {
            path: format!("{} ({hierarchy})", names.cgroup_rel),
        });
    }
    if let Some(rt) = runtime {
        for entry in rt.state_entries(&names.id_prefix()) {
            report.push(Leak::Other {
                what: format!(
                    "container state {entry} still under {} ({})",
                    rt.root().display(),
                    rt.name()
                ),
            });
        }
    }
    for point in mounts_under(&names.dir) {
        report.push(Leak::Mount {
            path: point.display().to_string(),
        });
    }
    if names.dir.exists() {
        report.push(Leak::Other {
            what: format!("bundle directory {} still exists", names.dir.display()),
        });
    }
    for ns in netns::existing(&names.net_prefix) {
        for veth in netns::veths_in(&ns) {
            report.push(Leak::Veth {
                name: format!("{veth} (in {ns})"),
            });
        }
        report.push(Leak::Netns { name: ns });
    }
    report.merge(LeakReport::default());
    report
}
