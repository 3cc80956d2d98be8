//! The proof of a clean teardown: everything of a trial that could still exist, looked up in
//! the system rather than in the backend's own records.

use super::lifecycle::TrialNames;
use super::runtime::Runtime;
use crate::{Leak, LeakReport};
use isolab_host::mounts::mounts_under;
use isolab_host::netns;

/// Looks for containers the runtime still knows (any state named after them under its `--root`, which is
/// ours: runc, crun and youki keep `<root>/<id>/`, runsc `<root>/<id>_sandbox:…`), mounts below the trial's directory, the directory, and
/// the trial's network namespaces with any veth left in them (the runner's cgroup engine looks
/// for processes and cgroups).
pub(crate) fn find(names: &TrialNames, runtime: Option<&Runtime>) -> LeakReport {
    let mut report = LeakReport::default();
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
    report
}
