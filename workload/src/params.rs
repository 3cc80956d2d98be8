//! Workload params: `KEY=VALUE` words checked against the catalog and parsed into typed values
//! before anything runs, so a bad value is a usage error (exit 2), never a half-run workload.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use isolab_model::catalog::WorkloadInfo;
use isolab_model::units::{Bytes, HumanDuration};

use crate::measure::Budget;

/// Duration measured when neither `duration` nor `iterations` is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(1);

/// Most `threads` a workload may start.
const MAX_THREADS: u64 = 1024;

/// The values `role` accepts.
pub(crate) const ROLES: &[&str] = &["loopback", "server", "client"];

/// How a param's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// A positive human duration (`500ms`).
    Duration,
    /// A positive whole number, at most the given bound.
    Count {
        /// Largest accepted value.
        max: u64,
    },
    /// A human byte size (`64MiB`).
    Bytes,
    /// A filesystem path.
    Path,
    /// An IPv4 or IPv6 address (no host names: a static binary has no resolver).
    Ip,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

impl ParamKind {
    /// The kind of every param name the catalog uses; `None` for a name this binary does not know.
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "duration" | "interval" => Self::Duration,
            "iterations" => Self::Count { max: u64::MAX },
            "threads" | "connections" | "jobs" => Self::Count { max: MAX_THREADS },
            "port" => Self::Count { max: 65535 },
            "scale" | "subdirs" => Self::Count { max: 10_000 },
            "files" => Self::Count { max: 10_000_000 },
            "max_forks" => Self::Count { max: 1 << 22 },
            "size" | "step" | "limit" => Self::Bytes,
            "dir" => Self::Path,
            "host" => Self::Ip,
            "role" => Self::Choice(ROLES),
            _ => return None,
        })
    }

    fn expected(self) -> String {
        match self {
            Self::Duration => "a positive duration such as `500ms` or `2s`".into(),
            Self::Count { max: u64::MAX } => "a positive whole number".into(),
            Self::Count { max } => format!("a whole number from 1 to {max}"),
            Self::Bytes => "a size such as `4096`, `64KiB` or `1MiB`".into(),
            Self::Path => {
                "a relative path without `..`, inside the instance's scratch directory".into()
            }
            Self::Ip => "an IP address such as `10.0.0.2` (host names are not resolved)".into(),
            Self::Choice(words) => format!("one of {}", words.join(", ")),
        }
    }

    fn parse(self, text: &str) -> Option<Value> {
        match self {
            Self::Duration => {
                let d = text.parse::<HumanDuration>().ok()?.0;
                (!d.is_zero()).then_some(Value::Duration(d))
            }
            Self::Count { max } => {
                let n: u64 = text.trim().parse().ok()?;
                (1..=max).contains(&n).then_some(Value::Count(n))
            }
            Self::Bytes => Some(Value::Bytes(text.parse::<Bytes>().ok()?.get())),
            Self::Path => isolab_model::validate::check_dir(text)
                .is_ok()
                .then(|| Value::Path(PathBuf::from(text))),
            Self::Ip => text.trim().parse().ok().map(Value::Ip),
            Self::Choice(words) => words
                .iter()
                .find(|w| **w == text.trim())
                .map(|w| Value::Choice(w)),
        }
    }
}

/// A parsed param value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Duration(Duration),
    Count(u64),
    Bytes(u64),
    Path(PathBuf),
    Ip(IpAddr),
    Choice(&'static str),
}

/// Why a param was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParamError {
    /// Not `KEY=VALUE`.
    #[error("{workload}: param `{arg}` is not KEY=VALUE")]
    Malformed {
        /// The workload.
        workload: &'static str,
        /// The word given.
        arg: String,
    },
    /// A name the workload does not accept.
    #[error("{workload}: unknown param `{param}`; {workload} accepts: {accepted}")]
    Unknown {
        /// The workload.
        workload: &'static str,
        /// The param name given.
        param: String,
        /// The names it accepts.
        accepted: String,
    },
    /// The same name twice.
    #[error("{workload}: param `{param}` given twice")]
    Duplicate {
        /// The workload.
        workload: &'static str,
        /// The param name.
        param: String,
    },
    /// A value of the wrong shape.
    #[error("{workload}: invalid value `{value}` for param `{param}`: expected {expected}")]
    Invalid {
        /// The workload.
        workload: &'static str,
        /// The param name.
        param: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
}

/// The validated params of one workload run.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    values: BTreeMap<&'static str, Value>,
}

impl Params {
    /// Parses `KEY=VALUE` words for `info`, rejecting unknown names, duplicates and bad values.
    pub(crate) fn parse(info: &WorkloadInfo, pairs: &[String]) -> Result<Self, ParamError> {
        let workload = info.name;
        let mut values = BTreeMap::new();
        for pair in pairs {
            let Some((key, text)) = pair.split_once('=') else {
                return Err(ParamError::Malformed {
                    workload,
                    arg: pair.clone(),
                });
            };
            let key = key.trim();
            let Some(param) = info.params.iter().find(|p| p.name == key) else {
                let accepted: Vec<&str> = info.params.iter().map(|p| p.name).collect();
                return Err(ParamError::Unknown {
                    workload,
                    param: key.to_owned(),
                    accepted: accepted.join(", "),
                });
            };
            // A catalog param this binary has no kind for is a bug caught by a unit test; treat
            // it as a path (any non-empty text) rather than refusing to run.
            let kind = ParamKind::of(param.name).unwrap_or(ParamKind::Path);
            let value = kind.parse(text).ok_or_else(|| ParamError::Invalid {
                workload,
                param: key.to_owned(),
                value: text.to_owned(),
                expected: kind.expected(),
            })?;
            if values.insert(param.name, value).is_some() {
                return Err(ParamError::Duplicate {
                    workload,
                    param: key.to_owned(),
                });
            }
        }
        Ok(Self { values })
    }

    /// A duration param, or `default`.
    pub(crate) fn duration(&self, name: &str, default: Duration) -> Duration {
        match self.values.get(name) {
            Some(Value::Duration(d)) => *d,
            _ => default,
        }
    }

    /// A count param, or `default`.
    pub(crate) fn count(&self, name: &str, default: u64) -> u64 {
        match self.values.get(name) {
            Some(Value::Count(n)) => *n,
            _ => default,
        }
    }

    /// A byte-size param, or `default`.
    pub(crate) fn bytes(&self, name: &str, default: u64) -> u64 {
        match self.values.get(name) {
            Some(Value::Bytes(n)) => *n,
            _ => default,
        }
    }

    /// A path param, if given.
    pub(crate) fn path(&self, name: &str) -> Option<&Path> {
        match self.values.get(name) {
            Some(Value::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// An IP address param, if given.
    pub(crate) fn ip(&self, name: &str) -> Option<IpAddr> {
        match self.values.get(name) {
            Some(Value::Ip(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// A choice param, or `default`.
    pub(crate) fn choice(&self, name: &str, default: &'static str) -> &'static str {
        match self.values.get(name) {
            Some(Value::Choice(word)) => word,
            _ => default,
        }
    }

    /// A byte-size param if given.
    pub(crate) fn bytes_opt(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(Value::Bytes(n)) => Some(*n),
            _ => None,
        }
    }

    /// A count param if given.
    pub(crate) fn count_opt(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(Value::Count(n)) => Some(*n),
            _ => None,
        }
    }

    /// `iterations`, if given.
    pub(crate) fn iterations(&self) -> Option<u64> {
        match self.values.get("iterations") {
            Some(Value::Count(n)) => Some(*n),
            _ => None,
        }
    }

    /// `duration`, or the default of one second.
    pub(crate) fn run_duration(&self) -> Duration {
        self.duration("duration", DEFAULT_DURATION)
    }

    /// How long to measure: `iterations` when given, else `duration`.
    pub(crate) fn budget(&self) -> Budget {
        match self.iterations() {
            Some(n) => Budget::Iterations(n),
            None => Budget::Duration(self.run_duration()),
        }
    }
}

#[cfg(test)]
mod tests {
    use isolab_model::catalog::{self, WORKLOADS};

    use super::*;

    fn parse(name: &str, pairs: &[&str]) -> Result<Params, ParamError> {
        let pairs: Vec<String> = pairs.iter().map(|s| (*s).to_owned()).collect();
        Params::parse(catalog::find(name).unwrap(), &pairs)
    }

    #[test]
    fn every_catalog_param_has_a_kind() {
        for w in WORKLOADS {
            for p in w.params {
                assert!(
                    ParamKind::of(p.name).is_some(),
                    "{}: param `{}` has no kind",
                    w.name,
                    p.name
                );
            }
        }
    }

    #[test]
    fn typed_values() {
        let p = parse("cpu_spin", &["duration=250ms", "threads=3", "interval=1s"]).unwrap();
        assert_eq!(p.run_duration(), Duration::from_millis(250));
        assert_eq!(p.count("threads", 1), 3);
        assert_eq!(
            p.duration("interval", Duration::ZERO),
            Duration::from_secs(1)
        );
        let p = parse("file_ops", &["size=1KiB", "dir=x/y"]).unwrap();
        assert_eq!(p.bytes("size", 0), 1024);
        assert_eq!(p.path("dir"), Some(Path::new("x/y")));
        assert_eq!(p.run_duration(), DEFAULT_DURATION);
        assert!(matches!(p.budget(), Budget::Duration(_)));
        let p = parse("tcp_stream", &["role=server", "host=10.0.0.1", "port=5001"]).unwrap();
        assert_eq!(p.choice("role", "loopback"), "server");
        assert_eq!(p.ip("host"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(p.count("port", 1), 5001);
        assert_eq!(p.count_opt("connections"), None);
        let p = parse("tcp_stream", &["host=::1"]).unwrap();
        assert_eq!(p.choice("role", "loopback"), "loopback");
        assert!(p.ip("host").unwrap().is_ipv6());
        let p = parse("disk_bomb", &["limit=32MiB"]).unwrap();
        assert_eq!(p.bytes_opt("limit"), Some(32 << 20));
        assert_eq!(p.bytes_opt("step"), None);
        let p = parse("syscall", &["iterations=7", "duration=5s"]).unwrap();
        assert!(matches!(p.budget(), Budget::Iterations(7)));
    }

    #[test]
    fn rejects_bad_params() {
        let e = parse("syscall", &["size=1"]).unwrap_err().to_string();
        assert!(
            e.contains("syscall") && e.contains("`size`") && e.contains("iterations"),
            "{e}"
        );
        let e = parse("syscall", &["iterations=0"]).unwrap_err().to_string();
        assert!(
            e.contains("`iterations`") && e.contains("positive whole number"),
            "{e}"
        );
        let e = parse("cpu_spin", &["threads=5000"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 to 1024"), "{e}");
        assert!(parse("syscall", &["duration=0s"]).is_err());
        assert!(parse("syscall", &["duration=fast"]).is_err());
        assert!(parse("mmap", &["size=lots"]).is_err());
        assert!(parse("syscall", &["duration"]).is_err());
        let e = parse("tcp_rr", &["role=both"]).unwrap_err().to_string();
        assert!(e.contains("loopback, server, client"), "{e}");
        let e = parse("tcp_rr", &["host=example.org"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("IP address"), "{e}");
        assert!(parse("tcp_rr", &["port=70000"]).is_err());
        for dir in ["dir=/etc", "dir=../../x", "dir=a/../../b", "dir="] {
            let e = parse("disk", &[dir]).unwrap_err().to_string();
            assert!(e.contains("relative path without `..`"), "{dir}: {e}");
        }
        assert!(matches!(
            parse("syscall", &["duration=1s", "duration=2s"]),
            Err(ParamError::Duplicate { .. })
        ));
    }
}
