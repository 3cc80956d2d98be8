//! Profiles: named sets of `--set` overrides kept in the pipeline itself (`profiles: { quick:
//! { defaults.duration: 200ms } }`), chosen with `--profile NAME` and applied before the user's
//! `--set`s.

use serde_json::Value;

/// The profile names of `root`, in file order.
pub(crate) fn names(root: &Value) -> Vec<String> {
    match root.get("profiles") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The `KEY=VALUE` flags of profile `name` in `root`, in file order; values are written as
/// one-line JSON, which is YAML. Errs with a message when the profile does not exist or is not a
/// mapping of keys to values.
pub(crate) fn flags(root: &Value, name: &str) -> Result<Vec<String>, String> {
    let known = names(root);
    let Some(profile) = root.get("profiles").and_then(|p| p.get(name)) else {
        let listed = if known.is_empty() {
            "the pipeline defines no profiles".to_owned()
        } else {
            format!("known profiles: {}", known.join(", "))
        };
        return Err(format!(
            "unknown profile `{name}`; {listed}{}",
            crate::suggest::hint(name, known.iter().map(String::as_str))
        ));
    };
    let Value::Object(entries) = profile else {
        return Err(format!(
            "profile `{name}` must be a mapping of dotted keys to values"
        ));
    };
    entries
        .iter()
        .map(|(key, v)| {
            let value = serde_json::to_string(v)
                .map_err(|e| format!("profile `{name}`: `{key}`: cannot write the value: {e}"))?;
            Ok(format!("{key}={value}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        crate::yaml::from_str(
            "profiles:\n  quick:\n    defaults.duration: 200ms\n    experiments.scale.matrix.instances: [1, 2]\n  full: {}\n",
        )
        .unwrap()
    }

    #[test]
    fn flags_in_file_order() {
        let v = doc();
        assert_eq!(names(&v), ["quick", "full"]);
        assert_eq!(
            flags(&v, "quick").unwrap(),
            [
                "defaults.duration=\"200ms\"",
                "experiments.scale.matrix.instances=[1,2]"
            ]
        );
        assert!(flags(&v, "full").unwrap().is_empty());
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let m = flags(&doc(), "quik").unwrap_err();
        assert!(m.contains("known profiles: quick, full"), "{m}");
        assert!(m.contains("did you mean `quick`?"), "{m}");
        let m = flags(&Value::Null, "quick").unwrap_err();
        assert!(m.contains("defines no profiles"), "{m}");
    }
}
