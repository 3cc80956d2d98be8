//! The agent's table of OCI runtimes: name → absolute path of the binary, plus the global
//! arguments the operator approved for it.
//!
//! A trial names a runtime; only names in this table run, and the binary is the one the
//! operator configured (`--runtime NAME=/abs/path`, repeatable) or, when none is configured,
//! the one of [`DEFAULT_RUNTIMES`] found on the agent's `PATH` (plus the sbin directories) at
//! start, resolved once to an absolute path. A client never gives a path. Operator arguments
//! (`--runtime-arg NAME=ARG`) go on every call of that runtime, after the client's allowlisted
//! ones (`isolab_model::validate::check_runtime_arg`), so the operator's win.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use isolab_model::validate::{DEFAULT_RUNTIMES, check_runtime_name};

/// One configured runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEntry {
    /// The binary, an absolute path.
    pub program: PathBuf,
    /// Global arguments the operator set for every call (`--runtime-arg NAME=ARG`).
    pub args: Vec<String>,
}

/// What is wrong with a runtime configuration or request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeTableError {
    /// A `--runtime` value is not `NAME=/abs/path`, or its name or path is unusable.
    #[error("--runtime `{given}`: {reason}")]
    BadRuntime {
        /// The value given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--runtime-arg` value is not `NAME=ARG` or names a runtime not in the table.
    #[error("--runtime-arg `{given}`: {reason}")]
    BadArg {
        /// The value given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A trial named a runtime this agent does not have.
    #[error("runtime `{name}` is not configured on this agent (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names known, comma-separated (`none` when the table is empty).
        known: String,
    },
}

/// The runtimes an agent may run, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeTable {
    entries: BTreeMap<String, RuntimeEntry>,
}

impl RuntimeTable {
    /// [`DEFAULT_RUNTIMES`] found on `PATH` and in the sbin directories, as absolute paths;
    /// the ones not installed are left out.
    pub fn detect() -> Self {
        let entries = DEFAULT_RUNTIMES
            .iter()
            .filter_map(|name| {
                let program = isolab_host::which::find_binary(name)
                    .and_then(|p| std::path::absolute(p).ok())?;
                Some((
                    (*name).to_owned(),
                    RuntimeEntry {
                        program,
                        args: Vec::new(),
                    },
                ))
            })
            .collect();
        Self { entries }
    }

    /// The table from `--runtime NAME=/abs/path` values (none: [`RuntimeTable::detect`]) and
    /// `--runtime-arg NAME=ARG` values, which must name a runtime of the table.
    pub fn from_flags(runtimes: &[String], args: &[String]) -> Result<Self, RuntimeTableError> {
        let mut table = if runtimes.is_empty() {
            Self::detect()
        } else {
            Self::default()
        };
        for given in runtimes {
            let bad = |reason: String| RuntimeTableError::BadRuntime {
                given: given.clone(),
                reason,
            };
            let (name, path) = given
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=/abs/path".into()))?;
            table
                .insert(name, Path::new(path))
                .map_err(|e| bad(e.to_string()))?;
        }
        for given in args {
            let bad = |reason: String| RuntimeTableError::BadArg {
                given: given.clone(),
                reason,
            };
            let (name, arg) = given
                .split_once('=')
                .ok_or_else(|| bad("expected NAME=ARG".into()))?;
            if arg.is_empty() {
                return Err(bad("the argument is empty".into()));
            }
            let known = table.known();
            let entry = table
                .entries
                .get_mut(name)
                .ok_or_else(|| bad(format!("no runtime `{name}` (known: {known})")))?;
            entry.args.push(arg.to_owned());
        }
        Ok(table)
    }

    /// Adds (or replaces) runtime `name` with binary `program`, which must be an absolute path
    /// to an existing file.
    pub fn insert(&mut self, name: &str, program: &Path) -> Result<(), RuntimeTableError> {
        let bad = |reason: String| RuntimeTableError::BadRuntime {
            given: format!("{name}={}", program.display()),
            reason,
        };
        check_runtime_name(name).map_err(|e| bad(format!("name: {e}")))?;
        if !program.is_absolute() {
            return Err(bad(format!(
                "`{}` is not an absolute path",
                program.display()
            )));
        }
        if !program.is_file() {
            return Err(bad(format!("`{}` is not a file", program.display())));
        }
        self.entries.insert(
            name.to_owned(),
            RuntimeEntry {
                program: program.to_owned(),
                args: Vec::new(),
            },
        );
        Ok(())
    }

    /// The runtime called `name`, or an error listing the names known. A path is never a name
    /// of the table, so it is refused here too.
    pub fn get(&self, name: &str) -> Result<&RuntimeEntry, RuntimeTableError> {
        self.entries
            .get(name)
            .ok_or_else(|| RuntimeTableError::Unknown {
                name: name.to_owned(),
                known: self.known(),
            })
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The names, comma-separated, `none` when empty.
    pub fn known(&self) -> String {
        if self.entries.is_empty() {
            "none".into()
        } else {
            self.names().collect::<Vec<_>>().join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_the_table_and_bad_ones_are_named() {
        let sh = isolab_host::which::find_binary("sh").unwrap();
        let sh = std::path::absolute(sh).unwrap();
        let t = RuntimeTable::from_flags(
            &[format!("mine={}", sh.display())],
            &["mine=--platform=kvm".into()],
        )
        .unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["mine"]);
        let e = t.get("mine").unwrap();
        assert_eq!(
            (e.program.as_path(), e.args.as_slice()),
            (sh.as_path(), &["--platform=kvm".to_owned()][..])
        );
        let e = t.get("runc").unwrap_err().to_string();
        assert_eq!(
            e,
            "runtime `runc` is not configured on this agent (known: mine)"
        );
        assert!(t.get("/usr/sbin/runc").is_err());

        let e = RuntimeTable::from_flags(&["runc=sbin/runc".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--runtime `runc=sbin/runc`") && e.contains("not an absolute path"),
            "{e}"
        );
        let e = RuntimeTable::from_flags(&["a/b=/bin/sh".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("is a path"), "{e}");
        let e = RuntimeTable::from_flags(&["runc".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("NAME=/abs/path"), "{e}");
        let e = RuntimeTable::from_flags(&["x=/no/such/runtime".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("not a file"), "{e}");
        let e =
            RuntimeTable::from_flags(&[format!("mine={}", sh.display())], &["other=--x".into()])
                .unwrap_err()
                .to_string();
        assert!(e.contains("no runtime `other` (known: mine)"), "{e}");
    }

    #[test]
    fn detection_keeps_installed_defaults_as_absolute_paths() {
        let t = RuntimeTable::detect();
        for name in t.names() {
            assert!(DEFAULT_RUNTIMES.contains(&name), "{name}");
            assert!(t.get(name).unwrap().program.is_absolute());
        }
        // runc is installed wherever the real container tests run.
        if isolab_host::which::find_binary("runc").is_some() {
            assert!(t.get("runc").is_ok());
        }
    }
}
