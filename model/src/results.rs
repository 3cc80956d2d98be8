//! The results table: the contract with data scientists.
//!
//! One row per measured value (tidy/long form). [`schema`] is the one explicit Arrow schema of
//! the `samples/…/trial-<id>.parquet` files; writers reject batches of any other schema and
//! readers check files against it. Column order and types are part of the contract: add columns
//! at the end, never change one.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Version of the results schema, stamped into Parquet metadata as `isolab.schema_version`.
pub const SCHEMA_VERSION: &str = "1";

/// Names of the columns, in order.
pub const COLUMNS: &[&str] = &[
    "run_id",
    "experiment",
    "analysis",
    "trial_id",
    "attempt",
    "repetition",
    "platform",
    "backend",
    "accel",
    "host",
    "instance",
    "role",
    "group",
    "n_instances",
    "workload",
    "adversary",
    "params",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "t_offset_s",
    "status",
];

/// The Arrow schema of the results table.
pub fn schema() -> SchemaRef {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    let s_null = |name: &str| Field::new(name, DataType::Utf8, true);
    let i = |name: &str| Field::new(name, DataType::Int32, false);
    Arc::new(Schema::new(vec![
        s("run_id"),
        s("experiment"),
        s("analysis"),
        s("trial_id"),
        i("attempt"),
        i("repetition"),
        s("platform"),
        s("backend"),
        s_null("accel"),
        s("host"),
        i("instance"),
        s("role"),
        s_null("group"),
        i("n_instances"),
        s("workload"),
        s_null("adversary"),
        s("params"),
        s("metric"),
        Field::new("value", DataType::Float64, false),
        s("unit"),
        Field::new("higher_is_better", DataType::Boolean, false),
        Field::new("t_offset_s", DataType::Float64, true),
        s("status"),
    ]))
}

/// One row of the results table, as plain Rust.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResultRow {
    /// The run this row belongs to.
    pub run_id: String,
    /// Experiment name.
    pub experiment: String,
    /// Analysis kind of the experiment (`overhead`, `scaling`, `fairness`, `isolation`).
    pub analysis: String,
    /// Stable, content-derived trial id.
    pub trial_id: String,
    /// Attempt number, 1 for the first.
    pub attempt: i32,
    /// Measured repetition, 0-based.
    pub repetition: i32,
    /// Platform name from the pipeline.
    pub platform: String,
    /// Backend kind (`native`, `container`, `vm`, …).
    pub backend: String,
    /// Accelerator actually used (VMs), else null.
    pub accel: Option<String>,
    /// Host the trial ran on.
    pub host: String,
    /// Instance index within the trial, 0-based.
    pub instance: i32,
    /// `victim`, `adversary` or `peer`.
    pub role: String,
    /// Group name (fairness), else null.
    pub group: Option<String>,
    /// Instances in the trial.
    pub n_instances: i32,
    /// Workload of this instance.
    pub workload: String,
    /// Adversary of the trial (isolation), else null.
    pub adversary: Option<String>,
    /// Workload parameters, canonical JSON object.
    pub params: String,
    /// Metric name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Unit of the value.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Seconds since the instance started, null for a summary value.
    pub t_offset_s: Option<f64>,
    /// Trial status (`ok` for rows of a finished trial).
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_matches_column_list() {
        let names: Vec<_> = schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, COLUMNS);
    }
}
