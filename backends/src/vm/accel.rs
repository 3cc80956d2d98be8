//! Choosing the accelerator: KVM only where it really works, TCG otherwise.
//!
//! `/dev/kvm` opening is not enough: under a nested hypervisor (PVM, on the machine this was
//! built on) it opens, answers `KVM_GET_API_VERSION` and creates VMs, yet a stock guest kernel
//! hangs early in boot. So KVM counts as working only when a probe VM boots on it and answers
//! `!ready` on its console within [`KVM_PROBE_TIMEOUT`]; the probe's QEMU is killed otherwise.
//! The verdict ([`KvmCheck`]) is taken once and kept for the agent's lifetime ([`KvmVerdict`]);
//! [`decide`] turns it and the pipeline's `accel:` into the accelerator used, as pure logic.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use isolab_model::pipeline::Accel;
use tokio::sync::OnceCell;

use super::qemu::AccelKind;

/// The KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// How long a KVM probe VM gets to answer. A working KVM boots this guest in well under a
/// second; a nested one that hangs must not hold up the agent for long.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(4);
/// `KVM_GET_API_VERSION` (`_IO(0xAE, 0x00)`); the only stable API version is 12.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_API_VERSION: libc::c_int = 12;

/// Whether KVM works here, with the reason either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmCheck {
    /// A probe VM booted and answered on KVM.
    Works {
        /// How long the probe took, for the record.
        boot: Duration,
    },
    /// KVM cannot be used; the text says which step failed.
    Unusable {
        /// Why.
        reason: String,
    },
}

/// The accelerator a trial uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// KVM or TCG.
    pub accel: AccelKind,
    /// Why this one (for capabilities and logs).
    pub reason: String,
}

/// Why the asked-for accelerator cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// `accel: kvm` on a host where KVM does not work.
    #[error(
        "accel: kvm was asked for, but KVM does not work here ({reason}); use accel: auto or tcg"
    )]
    KvmUnavailable {
        /// Why KVM does not work.
        reason: String,
    },
}

/// The accelerator for `requested`, given what is known about KVM. `tcg` never needs KVM;
/// `kvm` fails without it; `auto` takes KVM when it works, else TCG.
pub fn decide(requested: Accel, kvm: &KvmCheck) -> Result<AccelChoice, AccelError> {
    match (requested, kvm) {
        (Accel::Tcg, _) => Ok(AccelChoice {
            accel: AccelKind::Tcg,
            reason: "accel: tcg asked for".into(),
        }),
        (Accel::Kvm | Accel::Auto, KvmCheck::Works { boot }) => Ok(AccelChoice {
            accel: AccelKind::Kvm,
            reason: format!("a probe VM booted on KVM in {} ms", boot.as_millis()),
        }),
        (Accel::Kvm, KvmCheck::Unusable { reason }) => Err(AccelError::KvmUnavailable {
            reason: reason.clone(),
        }),
        (Accel::Auto, KvmCheck::Unusable { reason }) => Ok(AccelChoice {
            accel: AccelKind::Tcg,
            reason: format!("KVM unusable ({reason}); using TCG"),
        }),
    }
}

/// Whether `device` opens read-write and speaks KVM API version 12.
pub fn kvm_device_usable(device: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("{} does not open: {e}", device.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer; the fd is
    // open for the duration of the call.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version == KVM_API_VERSION {
        Ok(())
    } else {
        Err(format!(
            "{} answers KVM_GET_API_VERSION with {version}, not {KVM_API_VERSION}",
            device.display()
        ))
    }
}

/// The KVM verdict, taken once (the first caller runs the check, the others wait for it).
#[derive(Debug, Default)]
pub struct KvmVerdict {
    cell: OnceCell<KvmCheck>,
}

impl KvmVerdict {
    /// A verdict not taken yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verdict fixed in advance (tests, or an operator who knows).
    pub fn fixed(check: KvmCheck) -> Self {
        Self {
            cell: OnceCell::new_with(Some(check)),
        }
    }

    /// The verdict: `device` must be usable and `boot_probe` (which boots a probe VM on KVM and
    /// resolves to how long it took, or why it failed) must succeed within `timeout`.
    pub async fn get<F, Fut>(&self, device: &Path, timeout: Duration, boot_probe: F) -> &KvmCheck
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<Duration, String>>,
    {
        self.cell
            .get_or_init(|| async move {
                let device = device.to_path_buf();
                let usable = tokio::task::spawn_blocking(move || kvm_device_usable(&device))
                    .await
                    .unwrap_or_else(|e| Err(format!("KVM device check failed: {e}")));
                if let Err(reason) = usable {
                    return KvmCheck::Unusable { reason };
                }
                match boot_probe(timeout).await {
                    Ok(boot) => KvmCheck::Works { boot },
                    Err(why) => KvmCheck::Unusable {
                        reason: format!("a probe VM on KVM {why}"),
                    },
                }
            })
            .await
    }

    /// The verdict if it was taken already.
    pub fn peek(&self) -> Option<&KvmCheck> {
        self.cell.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_logic() {
        let works = KvmCheck::Works {
            boot: Duration::from_millis(120),
        };
        let broken = KvmCheck::Unusable {
            reason: "a probe VM on KVM did not answer within 4s".into(),
        };
        let kvm = decide(Accel::Auto, &works).unwrap();
        assert_eq!(kvm.accel, AccelKind::Kvm);
        assert!(kvm.reason.contains("120 ms"), "{}", kvm.reason);
        assert_eq!(decide(Accel::Kvm, &works).unwrap().accel, AccelKind::Kvm);
        assert_eq!(decide(Accel::Tcg, &works).unwrap().accel, AccelKind::Tcg);

        let auto = decide(Accel::Auto, &broken).unwrap();
        assert_eq!(auto.accel, AccelKind::Tcg);
        assert!(auto.reason.contains("did not answer"), "{}", auto.reason);
        assert_eq!(decide(Accel::Tcg, &broken).unwrap().accel, AccelKind::Tcg);
        let err = decide(Accel::Kvm, &broken).unwrap_err().to_string();
        assert!(
            err.contains("accel: kvm") && err.contains("did not answer"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn verdict_is_taken_once_and_a_missing_device_skips_the_probe() {
        let verdict = KvmVerdict::new();
        let missing = Path::new("/nonexistent/kvm");
        let check = verdict
            .get(missing, Duration::from_secs(1), |_| async {
                panic!("no probe without a device")
            })
            .await
            .clone();
        assert!(
            matches!(&check, KvmCheck::Unusable { reason } if reason.contains("/nonexistent/kvm"))
        );
        let again = verdict
            .get(missing, Duration::from_secs(1), |_| async {
                Ok(Duration::ZERO)
            })
            .await;
        assert_eq!(again, &check, "cached");
        assert_eq!(verdict.peek(), Some(&check));
    }

    #[tokio::test]
    async fn a_failed_probe_makes_kvm_unusable() {
        if kvm_device_usable(Path::new(KVM_DEVICE)).is_err() {
            eprintln!("skipped: {KVM_DEVICE} not usable here");
            return;
        }
        let verdict = KvmVerdict::new();
        let check = verdict
            .get(
                Path::new(KVM_DEVICE),
                Duration::from_millis(10),
                |t| async move { Err(format!("did not answer within {t:?}")) },
            )
            .await;
        assert!(
            matches!(check, KvmCheck::Unusable { reason } if reason.contains("did not answer"))
        );
        let ok = KvmVerdict::new();
        let check = ok
            .get(Path::new(KVM_DEVICE), Duration::from_secs(1), |_| async {
                Ok(Duration::from_millis(5))
            })
            .await;
        assert!(matches!(check, KvmCheck::Works { .. }));
    }
}
