//! The sample: one measured value, as a workload prints it (one JSON object per line).
//!
//! Every backend carries the same lines: a native or container workload prints them on stdout;
//! a VM's `/init` frames them on the serial console with [`FRAME_PREFIX`] so that kernel messages
//! mixed into the console are never taken for data.

use serde::{Deserialize, Serialize};

/// Prefix of a framed sample line on a console shared with other output.
pub const FRAME_PREFIX: &str = "@@isolab@@ ";

/// One measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Metric name, e.g. `ns_per_call`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Unit of the value, e.g. `ns`, `us`, `GB/s`, `units/s`.
    pub unit: String,
    /// Whether larger is better (throughput) or worse (latency).
    pub higher_is_better: bool,
    /// Seconds since the workload started, for time series; absent for a summary value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_offset_s: Option<f64>,
}

/// Why a line is not a sample.
#[derive(Debug, thiserror::Error)]
pub enum ParseSampleError {
    /// Not JSON of the sample's shape.
    #[error("not a sample line ({source}): {line:?}")]
    Json {
        /// The offending line, truncated to 200 characters.
        line: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but the value is NaN or infinite.
    #[error("sample `{metric}` has a non-finite value")]
    NonFinite {
        /// The metric name.
        metric: String,
    },
}

impl Sample {
    /// A summary sample (no time offset).
    pub fn summary(metric: &str, value: f64, unit: &str, higher_is_better: bool) -> Self {
        Self {
            metric: metric.into(),
            value,
            unit: unit.into(),
            higher_is_better,
            t_offset_s: None,
        }
    }

    /// Parses one JSON line.
    pub fn parse_line(line: &str) -> Result<Self, ParseSampleError> {
        let s: Self =
            serde_json::from_str(line.trim()).map_err(|source| ParseSampleError::Json {
                line: line.chars().take(200).collect(),
                source,
            })?;
        if !s.value.is_finite() {
            return Err(ParseSampleError::NonFinite { metric: s.metric });
        }
        Ok(s)
    }

    /// Serializes to one JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Sample::summary("ns_per_call", 42.5, "ns", false);
        assert_eq!(Sample::parse_line(&s.to_line()).unwrap(), s);
        assert!(Sample::parse_line("garbage").is_err());
        assert!(
            Sample::parse_line(
                r#"{"metric":"x","value":1,"unit":"u","higher_is_better":true,"extra":1}"#
            )
            .is_err()
        );
    }
}
