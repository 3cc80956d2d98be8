//! The hardening LXC ships for every container, read from its `common.conf`
//! (`/usr/share/lxc/config/common.conf`, which every distribution's container templates include):
//! the capabilities it drops (`lxc.cap.drop`) and its seccomp profile (`lxc.seccomp.profile`,
//! Debian's `common.seccomp`: a deny-list of `kexec_load`, `open_by_handle_at`, the module calls
//! and forced unmounts). The generated configuration ([`super::conf`]) applies both, so an LXC
//! instance is isolated the way LXC users' containers are, not less because isolab writes its
//! own configuration. The rest of `common.conf` (ttys, the devices cgroup, the `cgroup:mixed`
//! mount, the clone hook) is left out: it concerns consoles, devices nodes and cloning, which
//! the generated configuration sets itself (no console, LXC's minimal `/dev`) or does not use.

use std::path::{Path, PathBuf};

/// Where Debian's (and upstream's) `lxc` package installs the shared configuration.
pub const COMMON_CONF: &str = "/usr/share/lxc/config/common.conf";

/// The capability drops and seccomp profile of `common.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcHardening {
    /// Capabilities dropped, as LXC names them (`sys_module`…), in the file's order.
    pub cap_drop: Vec<String>,
    /// The seccomp profile file, when `common.conf` names one.
    pub seccomp_profile: Option<PathBuf>,
}

impl LxcHardening {
    /// Reads `lxc.cap.drop` and `lxc.seccomp.profile` from `common_conf`. A missing file, or a
    /// profile it names that does not exist, is an error: LXC without its default hardening is
    /// not the platform its users run.
    pub fn read(common_conf: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(common_conf).map_err(|e| {
            format!(
                "cannot read LXC's shipped {} ({e}): its capability drops and seccomp profile \
                 are the platform's default hardening (./bootstrap installs lxc)",
                common_conf.display()
            )
        })?;
        let mut out = Self::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "lxc.cap.drop" => out
                    .cap_drop
                    .extend(value.split_whitespace().map(str::to_owned)),
                "lxc.seccomp.profile" => out.seccomp_profile = Some(PathBuf::from(value.trim())),
                _ => {}
            }
        }
        if let Some(p) = &out.seccomp_profile
            && !p.is_file()
        {
            return Err(format!(
                "{} names the seccomp profile {}, which does not exist",
                common_conf.display(),
                p.display()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_profile_are_read_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("common.seccomp");
        std::fs::write(&profile, "2\ndenylist\n").unwrap();
        let conf = dir.path().join("common.conf");
        std::fs::write(
            &conf,
            format!(
                "# Drop some harmful capabilities\nlxc.cap.drop = mac_admin mac_override sys_time\n\
                 lxc.cap.drop = sys_module sys_rawio # more\nlxc.tty.max = 4\n\
                 lxc.seccomp.profile = {}\n",
                profile.display()
            ),
        )
        .unwrap();
        let h = LxcHardening::read(&conf).unwrap();
        assert_eq!(
            h.cap_drop,
            [
                "mac_admin",
                "mac_override",
                "sys_time",
                "sys_module",
                "sys_rawio"
            ]
        );
        assert_eq!(h.seccomp_profile.as_deref(), Some(profile.as_path()));
        let e = LxcHardening::read(&dir.path().join("missing.conf")).unwrap_err();
        assert!(e.contains("missing.conf") && e.contains("hardening"), "{e}");
        std::fs::remove_file(&profile).unwrap();
        let e = LxcHardening::read(&conf).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn the_installed_common_conf_drops_capabilities_and_filters() {
        let path = Path::new(COMMON_CONF);
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have lxc's {COMMON_CONF}"
            );
            eprintln!("skipping: {COMMON_CONF} is not installed");
            return;
        }
        let h = LxcHardening::read(path).unwrap();
        assert!(h.cap_drop.iter().any(|c| c == "sys_module"), "{h:?}");
        assert!(h.seccomp_profile.is_some(), "{h:?}");
    }
}
