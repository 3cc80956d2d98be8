//! `--only EXPR`: choose a subset of the planned trials.
//!
//! `experiment=micro,platform=native` keeps trials matching every term; a value may hold `*`
//! wildcards (`platform=container*`) and `|` alternatives (`platform=native|vm`).

use std::fmt;
use std::str::FromStr;

use super::Trial;

/// What a filter term looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// The experiment name.
    Experiment,
    /// The platform name.
    Platform,
    /// The trial's workload (the victim in isolation trials).
    Workload,
    /// The platform's backend (`native`, `container`, `vm`, …).
    Backend,
    /// The adversary (isolation trials only; other trials never match).
    Adversary,
}

impl FilterKey {
    /// All keys, in the order error messages list them.
    pub const ALL: [Self; 5] = [
        Self::Experiment,
        Self::Platform,
        Self::Workload,
        Self::Backend,
        Self::Adversary,
    ];

    /// The key as written in an expression.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Experiment => "experiment",
            Self::Platform => "platform",
            Self::Workload => "workload",
            Self::Backend => "backend",
            Self::Adversary => "adversary",
        }
    }

    fn value(self, t: &Trial) -> Option<&str> {
        match self {
            Self::Experiment => Some(&t.experiment),
            Self::Platform => Some(&t.platform),
            Self::Workload => Some(&t.workload),
            Self::Backend => Some(t.platform_spec.backend.as_str()),
            Self::Adversary => t.adversary.as_deref(),
        }
    }
}

/// Why a filter expression is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Nothing to filter by.
    #[error(
        "empty filter: expected KEY=VALUE[,KEY=VALUE…], e.g. `experiment=micro,platform=native`"
    )]
    Empty,
    /// A term without `=`.
    #[error("invalid filter term `{term}`: expected KEY=VALUE, e.g. `platform=native`")]
    NotKeyValue {
        /// The term as written.
        term: String,
    },
    /// A key that is not one of [`FilterKey::ALL`].
    #[error(
        "unknown filter key `{key}` (expected one of: experiment, platform, workload, backend, adversary){hint}"
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// A "did you mean" suffix, or empty.
        hint: String,
    },
    /// `key=` with nothing after it.
    #[error("filter term `{key}=` needs a value")]
    EmptyValue {
        /// The key.
        key: String,
    },
}

/// A parsed `--only` expression: all terms must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<(FilterKey, Vec<String>)>,
}

impl Filter {
    /// Parses `key=value[,key=value…]`.
    pub fn parse(expr: &str) -> Result<Self, FilterError> {
        let mut terms = Vec::new();
        for term in expr.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = term
                .split_once('=')
                .ok_or_else(|| FilterError::NotKeyValue {
                    term: term.to_owned(),
                })?;
            let key = key.trim();
            let k = FilterKey::ALL
                .into_iter()
                .find(|k| k.as_str() == key)
                .ok_or_else(|| FilterError::UnknownKey {
                    key: key.to_owned(),
                    hint: crate::suggest::hint(key, FilterKey::ALL.map(FilterKey::as_str)),
                })?;
            let patterns: Vec<String> = value
                .split('|')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            if patterns.is_empty() {
                return Err(FilterError::EmptyValue {
                    key: key.to_owned(),
                });
            }
            terms.push((k, patterns));
        }
        if terms.is_empty() {
            return Err(FilterError::Empty);
        }
        Ok(Self { terms })
    }

    /// Whether `t` matches every term.
    pub fn matches(&self, t: &Trial) -> bool {
        self.terms.iter().all(|(key, patterns)| {
            key.value(t)
                .is_some_and(|v| patterns.iter().any(|p| glob_match(p, v)))
        })
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|(k, p)| format!("{}={}", k.as_str(), p.join("|")))
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("cont*", "container"));
        assert!(glob_match("*tain*", "container"));
        assert!(glob_match("c*r", "container"));
        assert!(!glob_match("c*x", "container"));
        assert!(!glob_match("native", "native2"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Filter::parse(" , "), Err(FilterError::Empty));
        assert!(matches!(
            Filter::parse("micro"),
            Err(FilterError::NotKeyValue { .. })
        ));
        assert!(matches!(
            Filter::parse("platform="),
            Err(FilterError::EmptyValue { .. })
        ));
        let e = Filter::parse("platfrom=vm").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown filter key `platfrom` (expected one of: experiment, platform, workload, \
             backend, adversary); did you mean `platform`?"
        );
        let f = Filter::parse("experiment=micro, platform=native|vm").unwrap();
        assert_eq!(f.to_string(), "experiment=micro,platform=native|vm");
    }
}
