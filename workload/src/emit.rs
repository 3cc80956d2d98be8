//! Writing samples: one JSON line per [`Sample`], flushed at once (the reader may be a pipe).
//!
//! The prefix lets a console shared with kernel messages frame each line
//! (`isolab_model::sample::FRAME_PREFIX`); on stdout it is empty.

use std::io::Write;

use isolab_model::sample::Sample;

use crate::workloads::WorkloadError;

/// Writes samples as JSON lines.
pub(crate) struct Emitter<'w> {
    out: &'w mut dyn Write,
    prefix: &'static str,
}

impl<'w> Emitter<'w> {
    /// An emitter writing to `out`, every line starting with `prefix`.
    pub(crate) fn new(out: &'w mut dyn Write, prefix: &'static str) -> Self {
        Self { out, prefix }
    }

    /// Writes one sample and flushes. A non-finite value is refused (it is not valid JSON).
    pub(crate) fn emit(&mut self, sample: &Sample) -> Result<(), WorkloadError> {
        if !sample.value.is_finite() {
            return Err(WorkloadError::NonFinite {
                metric: sample.metric.clone(),
            });
        }
        let line = sample.to_line();
        writeln!(self.out, "{}{line}", self.prefix)
            .and_then(|()| self.out.flush())
            .map_err(WorkloadError::Output)
    }

    /// Writes a summary value (no time offset).
    pub(crate) fn summary(
        &mut self,
        metric: &str,
        value: f64,
        unit: &str,
        higher_is_better: bool,
    ) -> Result<(), WorkloadError> {
        self.emit(&Sample::summary(metric, value, unit, higher_is_better))
    }

    /// Writes a time-series value taken `t_offset_s` seconds after the start.
    pub(crate) fn series(
        &mut self,
        metric: &str,
        value: f64,
        unit: &str,
        higher_is_better: bool,
        t_offset_s: f64,
    ) -> Result<(), WorkloadError> {
        let mut sample = Sample::summary(metric, value, unit, higher_is_better);
        sample.t_offset_s = Some(t_offset_s);
        self.emit(&sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back_and_carry_the_prefix() {
        let mut buf = Vec::new();
        let mut em = Emitter::new(&mut buf, "@@ ");
        em.summary("ns_per_call", 41.5, "ns", false).unwrap();
        em.series("units_per_s", 10.0, "units/s", true, 0.1)
            .unwrap();
        assert!(em.summary("bad", f64::NAN, "ns", false).is_err());
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first = Sample::parse_line(lines[0].strip_prefix("@@ ").unwrap()).unwrap();
        assert_eq!(first, Sample::summary("ns_per_call", 41.5, "ns", false));
        let second = Sample::parse_line(lines[1].strip_prefix("@@ ").unwrap()).unwrap();
        assert_eq!(second.t_offset_s, Some(0.1));
    }
}
