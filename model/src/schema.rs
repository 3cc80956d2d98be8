//! The JSON Schema of the pipeline format (`isolab schema`), for editors and CI checks.
//!
//! It describes the shape only (types, required and allowed keys, unit spellings); rules that
//! relate fields to each other are checked by [`crate::validate`].

use crate::pipeline::Pipeline;

/// The schema's `$id`.
pub const SCHEMA_ID: &str = "https://isolab.github.io/schema/pipeline-v1.json";

/// The JSON Schema (draft 2020-12) of a pipeline file.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Pipeline);
    schema.insert("$id".to_owned(), SCHEMA_ID.into());
    schema.insert("title".to_owned(), "isolab pipeline (isolab/v1)".into());
    schema.insert(
        "description".to_owned(),
        "A pipeline: named platforms (how instances are isolated) and the experiments to run \
         on them. See `isolab validate` for the rules beyond shape."
            .into(),
    );
    schema.to_value()
}
