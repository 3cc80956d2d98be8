//! Hand-written deserializers for the two pipeline enums that accept several YAML shapes.
//!
//! `#[serde(untagged)]` would buffer the input and, when nothing matches, report only "data did
//! not match any variant" without a position; these visitors dispatch on the YAML type instead,
//! so errors inside (an unknown key in `{ name: …, parms: … }`) keep their message and place.

use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use super::{ParamValue, WorkloadRef, WorkloadSpec};

impl<'de> Deserialize<'de> for WorkloadRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WorkloadRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a workload name or a mapping with `name` and `params`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkloadRef, E> {
                Ok(WorkloadRef::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WorkloadRef, A::Error> {
                WorkloadSpec::deserialize(MapAccessDeserializer::new(map)).map(WorkloadRef::Full)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
                i64::try_from(v).map(ParamValue::Int).map_err(|_| {
                    E::invalid_value(de::Unexpected::Unsigned(v), &"a number below 2^63")
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The schema lists the catalog's workload names, so that editors complete them and flag a
/// misspelt one (the loader reports the same with a "did you mean").
impl schemars::JsonSchema for WorkloadRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WorkloadRef".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut names = crate::catalog::names();
        names.push("none");
        let spec = g.subschema_for::<WorkloadSpec>();
        schemars::json_schema!({
            "description": "A workload by name (`isolab-workload --list`), or `{ name, params }`.",
            "anyOf": [ { "type": "string", "enum": names }, spec ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ref_shapes() {
        let n: WorkloadRef = crate::yaml::from_str("syscall").unwrap();
        assert_eq!(n, WorkloadRef::Name("syscall".into()));
        let f: WorkloadRef =
            crate::yaml::from_str("{ name: mmap, params: { size: 4KiB } }").unwrap();
        assert_eq!(f.name(), "mmap");
        assert_eq!(
            f.params().get("size"),
            Some(&ParamValue::Str("4KiB".into()))
        );
        let e = crate::yaml::from_str::<WorkloadRef>("{ name: mmap, parms: {} }").unwrap_err();
        assert!(e.to_string().contains("unknown field `parms`"), "{e}");
        let e = crate::yaml::from_str::<WorkloadRef>("[a]").unwrap_err();
        assert!(e.to_string().contains("expected a workload name"), "{e}");
    }

    #[test]
    fn param_value_shapes() {
        let v: Vec<ParamValue> = crate::yaml::from_str("[1, -2, 1.5, true, 10s]").unwrap();
        assert_eq!(
            v,
            [
                ParamValue::Int(1),
                ParamValue::Int(-2),
                ParamValue::Float(1.5),
                ParamValue::Bool(true),
                ParamValue::Str("10s".into())
            ]
        );
        let e = crate::yaml::from_str::<ParamValue>("{a: 1}").unwrap_err();
        assert!(
            e.to_string()
                .contains("expected a number, a boolean or a string"),
            "{e}"
        );
    }
}
