//! Large generated runs for benchmarks: rows built straight into Arrow arrays, no per-row
//! allocation.

use std::path::Path;

use arrow_array::RecordBatch;

use super::files::{
    RowRef, TrialCtx, batch, manifest, record, trial_id, trial_path, write_json, write_parquet,
};
use super::{RunSpec, SyntheticRun, TestkitError, TrialSpec};
use crate::stats::SplitMix64;

/// Shape of a large generated run (for benchmarks): every platform runs `repetitions` trials of
/// `instances` instances; each instance reports `points_per_instance` time-series points of
/// `units_per_s` and `summary_metrics` summary values. Values are pseudo-random but fixed by
/// `seed`. Rows are laid out as the coordinator writes them: time series interleaved across
/// instances in time order, then the summary values.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Run id.
    pub run_id: String,
    /// `(platform, backend)` pairs.
    pub platforms: Vec<(String, String)>,
    /// Trials per platform.
    pub repetitions: u32,
    /// Instances per trial.
    pub instances: u32,
    /// Time-series rows per instance.
    pub points_per_instance: u32,
    /// Summary rows per instance (metrics `m0`, `m1`, …).
    pub summary_metrics: u32,
    /// Seed of the values.
    pub seed: u64,
}

impl LoadSpec {
    /// About `total_rows` rows over native and container, 25 repetitions of 16 instances,
    /// 4 summary metrics per instance, the rest time series.
    pub fn with_total_rows(run_id: &str, total_rows: u64) -> Self {
        let per_instance = (total_rows / (2 * 25 * 16)).max(5);
        Self {
            run_id: run_id.into(),
            platforms: vec![
                ("native".into(), "native".into()),
                ("container".into(), "container".into()),
            ],
            repetitions: 25,
            instances: 16,
            points_per_instance: u32::try_from(per_instance - 4).unwrap_or(u32::MAX),
            summary_metrics: 4,
            seed: 7,
        }
    }

    /// Rows the spec produces.
    pub fn total_rows(&self) -> u64 {
        self.platforms.len() as u64
            * u64::from(self.repetitions)
            * u64::from(self.instances)
            * (u64::from(self.points_per_instance) + u64::from(self.summary_metrics))
    }
}

/// Writes a large generated run (see [`LoadSpec`]) into `run_dir`: one experiment `load`
/// (analysis `overhead`, workload `cpu_spin`), rows built straight into Arrow arrays.
///
/// The per-group medians the report computes from it are, in DuckDB (for side-by-side
/// benchmarks; `RUN` is the run directory):
///
/// ```sql
/// WITH reps AS (
///   SELECT experiment, platform, trial_id, role, "group", workload, params, metric, unit,
///          n_instances, adversary, avg(value) AS v
///   FROM read_parquet('RUN/samples/**/*.parquet') WHERE t_offset_s IS NULL GROUP BY ALL)
/// SELECT experiment, platform, role, "group", workload, params, metric, unit, n_instances,
///        adversary, median(v) FROM reps GROUP BY ALL ORDER BY ALL
/// ```
pub fn write_generated_run(run_dir: &Path, spec: &LoadSpec) -> Result<SyntheticRun, TestkitError> {
    let mut run = RunSpec::new(&spec.run_id, "generated");
    let exp = "load";
    let platforms: Vec<(&str, &str)> = spec
        .platforms
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_str()))
        .collect();
    run.experiment(exp, "overhead", &platforms);
    let metric_names: Vec<String> = (0..spec.summary_metrics).map(|m| format!("m{m}")).collect();
    let mut rng = SplitMix64::new(spec.seed);
    let mut records = Vec::new();
    let mut files = Vec::new();
    let mut total = 0u64;
    for (pi, (platform, backend)) in spec.platforms.iter().enumerate() {
        let base = 100.0 * (1.0 + 0.1 * pi as f64);
        for rep in 0..spec.repetitions {
            let mut t = TrialSpec::new(platform, "cpu_spin", rep);
            t.n_instances = spec.instances;
            let id = trial_id(exp, &t);
            let ctx = TrialCtx {
                run_id: &spec.run_id,
                experiment: exp,
                analysis: "overhead",
                trial_id: &id,
                repetition: i32::try_from(rep).unwrap_or(i32::MAX),
                platform,
                backend,
                host: &run.host,
                n_instances: i32::try_from(spec.instances).unwrap_or(i32::MAX),
                adversary: None,
            };
            let mut rows = Vec::new();
            let row = |inst: u32, metric, value, t_offset_s| RowRef {
                instance: i32::try_from(inst).unwrap_or(i32::MAX),
                role: "peer",
                group: None,
                workload: "cpu_spin",
                params: "{}",
                metric,
                value,
                unit: "units/s",
                higher_is_better: true,
                t_offset_s,
            };
            let mut uniform = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            // As the coordinator's sink writes them: the instances' time series interleaved as
            // the trial runs, then every summary value at the end.
            for p in 0..spec.points_per_instance {
                for inst in 0..spec.instances {
                    let at = Some(f64::from(p) * 0.1);
                    rows.push(row(
                        inst,
                        "units_per_s",
                        base * (0.95 + 0.1 * uniform()),
                        at,
                    ));
                }
            }
            for inst in 0..spec.instances {
                for m in &metric_names {
                    rows.push(row(inst, m, base * (0.99 + 0.02 * uniform()), None));
                }
            }
            let rel = trial_path(exp, platform, &id);
            let batches: Vec<RecordBatch> = rows
                .chunks(64 * 1024)
                .map(|c| batch(&ctx, c))
                .collect::<Result<_, _>>()?;
            write_parquet(&run_dir.join(&rel), &batches)?;
            let mut rec = record(&run.experiments[0], &t, &id, backend, &run.host)?;
            rec.rows = rows.len() as u64;
            rec.file = Some(rel.to_string_lossy().into_owned());
            total += rec.rows;
            files.push(rel);
            records.push(rec);
        }
    }
    write_json(&run_dir.join("manifest.json"), &manifest(&run, records)?)?;
    Ok(SyntheticRun {
        dir: run_dir.to_path_buf(),
        files,
        rows: total,
    })
}
