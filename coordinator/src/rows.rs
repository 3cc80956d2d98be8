//! Turning an agent's trial events into result rows of the contract.
//!
//! Samples become rows as they are; cgroup statistics become rows too (`cpu_usage_ns`,
//! `memory_current_bytes` as time series while the trial runs, and every counter once at the end),
//! so data scientists can relate what a workload reported to what the host accounted for it.
//! How busy the host was besides the trial becomes summary rows of instance −1 with role `host`
//! (`host_steal_fraction`, `host_background_cpu_fraction`, `agent_cpu_fraction`).

use isolab_model::plan::Trial;
use isolab_model::results::ResultRow;
use isolab_model::sample::Sample;

/// Identifies the trial attempt that rows belong to.
#[derive(Debug, Clone)]
pub struct RowContext<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// The trial.
    pub trial: &'a Trial,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Host that ran it.
    pub host: &'a str,
    /// Accelerator used, if a VM.
    pub accel: Option<&'a str>,
}

/// The `instance` of rows that describe the host rather than one instance.
pub const HOST_INSTANCE: i32 = -1;
/// The `role` of rows that describe the host rather than one instance.
pub const HOST_ROLE: &str = "host";

/// Cgroup counters as named metrics: (metric, unit, value).
pub type StatValues = Vec<(&'static str, &'static str, f64)>;

impl RowContext<'_> {
    fn base(&self, instance: u32) -> ResultRow {
        let t = self.trial;
        let spec = t.instances.iter().find(|i| i.index == instance);
        let params = spec.map(|s| &s.params).unwrap_or(&t.params);
        ResultRow {
            run_id: self.run_id.to_owned(),
            experiment: t.experiment.clone(),
            analysis: t.analysis.as_str().to_owned(),
            trial_id: t.id.clone(),
            attempt: i32::try_from(self.attempt).unwrap_or(i32::MAX),
            repetition: i32::try_from(t.repetition).unwrap_or(i32::MAX),
            platform: t.platform.clone(),
            backend: t.platform_spec.backend.as_str().to_owned(),
            accel: self.accel.map(str::to_owned),
            host: self.host.to_owned(),
            instance: i32::try_from(instance).unwrap_or(i32::MAX),
            role: spec.map_or("peer", |s| s.role.as_str()).to_owned(),
            group: spec.and_then(|s| s.group.clone()),
            n_instances: i32::try_from(t.instances.len()).unwrap_or(i32::MAX),
            workload: spec.map_or_else(|| t.workload.clone(), |s| s.workload.clone()),
            adversary: t.adversary.clone(),
            params: serde_json::to_string(params).unwrap_or_else(|_| "{}".into()),
            metric: String::new(),
            value: 0.0,
            unit: String::new(),
            higher_is_better: false,
            t_offset_s: None,
            status: "ok".to_owned(),
        }
    }

    /// The row of one workload sample.
    pub fn sample_row(&self, instance: u32, s: &Sample) -> ResultRow {
        ResultRow {
            metric: s.metric.clone(),
            value: s.value,
            unit: s.unit.clone(),
            higher_is_better: s.higher_is_better,
            t_offset_s: s.t_offset_s,
            ..self.base(instance)
        }
    }

    /// Rows of the host's noise during the trial: instance −1, role `host`, summary values; the
    /// workload and parameters are instance 0's (the victim of an isolation trial).
    pub fn noise_rows(&self, values: &StatValues) -> Vec<ResultRow> {
        values
            .iter()
            .map(|(metric, unit, value)| ResultRow {
                instance: HOST_INSTANCE,
                role: HOST_ROLE.to_owned(),
                group: None,
                metric: (*metric).to_owned(),
                value: *value,
                unit: (*unit).to_owned(),
                higher_is_better: false,
                t_offset_s: None,
                ..self.base(0)
            })
            .collect()
    }

    /// Rows of one statistics snapshot: the time-series subset while running, all counters at the end.
    pub fn stats_rows(
        &self,
        instance: u32,
        t_offset_s: f64,
        values: &StatValues,
        final_: bool,
    ) -> Vec<ResultRow> {
        values
            .iter()
            .filter(|(m, _, _)| final_ || matches!(*m, "cpu_usage_ns" | "memory_current_bytes"))
            .map(|(metric, unit, value)| ResultRow {
                metric: (*metric).to_owned(),
                value: *value,
                unit: (*unit).to_owned(),
                higher_is_better: false,
                t_offset_s: if final_ { None } else { Some(t_offset_s) },
                ..self.base(instance)
            })
            .collect()
    }
}
