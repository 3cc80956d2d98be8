//! From rows to repetitions to per-metric statistics.
//!
//! A repetition's value of a metric is the mean, over the trial's summary rows of that series
//! (one per instance, `t_offset_s` null), of the value; the statistics of a metric on a platform
//! are then taken across repetitions: median, bootstrap CI, outliers, and the ratio to the
//! experiment's baseline platform (the one its `baseline:` names; for manifests without it, the
//! first platform with the native backend).

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use crate::metrics::is_headline;
use crate::read::Run;
use crate::repetitions::StopReasons;
use crate::summary::{ExperimentSummary, MetricSummary, NoiseSummary, PlatformStats};
use crate::table::{SampleTable, Sym, TrialKey};
use crate::{fairness, isolation, noise, overhead, ratio, scaling, stats};

/// One repetition's value of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepValue {
    /// The trial.
    pub trial: TrialKey,
    /// Index into [`SampleTable::series`].
    pub series: u32,
    /// Mean over the trial's summary rows of the series.
    pub value: f64,
    /// Number of summary rows averaged (normally one per instance).
    pub rows: u32,
}

/// Per trial and series, the mean of the summary rows, for trials whose rows say `ok`.
///
/// Sorted by experiment, platform, repetition, trial id and series, so that everything computed
/// from it is deterministic.
pub fn repetition_values(table: &SampleTable) -> Vec<RepValue> {
    let ok = table.strings.get("ok");
    let mut acc: HashMap<(Sym, u32), (TrialKey, f64, u32)> = HashMap::new();
    for seg in &table.segments {
        if Some(seg.key.status) != ok {
            continue;
        }
        for i in seg.rows.clone() {
            if !table.t_offset_s[i].is_nan() {
                continue;
            }
            let e = acc
                .entry((seg.key.trial_id, table.series_id[i]))
                .or_insert((seg.key, 0.0, 0));
            e.1 += table.value[i];
            e.2 += 1;
        }
    }
    let mut out: Vec<RepValue> = acc
        .into_iter()
        .map(|((_, series), (trial, sum, n))| RepValue {
            trial,
            series,
            value: sum / f64::from(n),
            rows: n,
        })
        .collect();
    let s = |x: Sym| table.str(x);
    out.sort_by(|a, b| {
        (
            s(a.trial.experiment),
            s(a.trial.platform),
            a.trial.repetition,
            s(a.trial.trial_id),
            a.series,
        )
            .cmp(&(
                s(b.trial.experiment),
                s(b.trial.platform),
                b.trial.repetition,
                s(b.trial.trial_id),
                b.series,
            ))
    });
    out
}

/// What identifies a metric within an experiment (everything but the platform and repetition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MetricKey {
    pub(crate) workload: Sym,
    pub(crate) params: Sym,
    pub(crate) metric: Sym,
    pub(crate) unit: Sym,
    pub(crate) higher_is_better: bool,
    pub(crate) role: Sym,
    pub(crate) group: Option<Sym>,
    pub(crate) n_instances: i32,
    pub(crate) adversary: Option<Sym>,
}

impl MetricKey {
    /// The key of a repetition value.
    pub(crate) fn of(t: &SampleTable, r: &RepValue) -> Self {
        let s = &t.series[r.series as usize];
        Self {
            workload: s.workload,
            params: s.params,
            metric: s.metric,
            unit: s.unit,
            higher_is_better: s.higher_is_better,
            role: s.role,
            group: s.group,
            n_instances: r.trial.n_instances,
            adversary: r.trial.adversary,
        }
    }
}

/// Platforms of an experiment: the manifest's order, then any others found in the data, sorted.
pub(crate) fn platform_order(run: &Run, experiment: &str, found: &BTreeSet<&str>) -> Vec<String> {
    let mut order: Vec<String> = run
        .manifest
        .experiments
        .iter()
        .filter(|e| e.name == experiment)
        .flat_map(|e| e.platforms.iter().cloned())
        .collect();
    for p in found {
        if !order.iter().any(|o| o == p) {
            order.push((*p).to_owned());
        }
    }
    order
}

/// Backend of each platform, from the data, else from the manifest.
fn backends(run: &Run) -> HashMap<String, String> {
    let t = &run.table;
    let mut out: HashMap<String, String> = run
        .manifest
        .trials
        .iter()
        .map(|tr| (tr.platform.clone(), tr.backend.clone()))
        .collect();
    for seg in &t.segments {
        out.insert(
            t.str(seg.key.platform).to_owned(),
            t.str(seg.key.backend).to_owned(),
        );
    }
    out
}

/// Parses a canonical JSON params object into `key → display value`.
fn params_map(params: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(params) {
        Ok(map) => map
            .into_iter()
            .map(|(k, v)| {
                let shown = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, shown)
            })
            .collect(),
        Err(_) if params.is_empty() => Vec::new(),
        Err(_) => vec![("params".to_owned(), params.to_owned())],
    }
}

/// Readable, unique labels: `workload/metric [qualifiers]`, where the qualifiers are only what
/// distinguishes keys of the experiment (parameters that vary, instance counts that vary, the
/// adversary, a non-peer role, the group).
pub(crate) fn labels(t: &SampleTable, keys: &[MetricKey]) -> HashMap<MetricKey, String> {
    let n_values: BTreeSet<i32> = keys.iter().map(|k| k.n_instances).collect();
    // Parameter names whose value differs between keys of the same workload.
    let mut varying: HashMap<Sym, BTreeSet<String>> = HashMap::new();
    let mut seen: HashMap<(Sym, String), BTreeSet<String>> = HashMap::new();
    for k in keys {
        for (name, value) in params_map(t.str(k.params)) {
            seen.entry((k.workload, name)).or_default().insert(value);
        }
    }
    for ((workload, name), values) in seen {
        let everywhere = keys
            .iter()
            .filter(|k| k.workload == workload)
            .all(|k| params_map(t.str(k.params)).iter().any(|(n, _)| *n == name));
        if values.len() > 1 || !everywhere {
            varying.entry(workload).or_default().insert(name);
        }
    }
    let mut out = HashMap::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut sorted_keys: Vec<&MetricKey> = keys.iter().collect();
    sorted_keys.sort_by_key(|k| {
        (
            t.str(k.workload),
            t.str(k.metric),
            k.n_instances,
            t.str(k.params),
            t.opt_str(k.adversary),
        )
    });
    for k in sorted_keys {
        let mut quals = Vec::new();
        if let Some(names) = varying.get(&k.workload) {
            for (name, value) in params_map(t.str(k.params)) {
                if names.contains(&name) {
                    quals.push(format!("{name}={value}"));
                }
            }
        }
        if n_values.len() > 1 {
            quals.push(format!("n={}", k.n_instances));
        }
        if let Some(a) = k.adversary {
            quals.push(format!("adversary={}", t.str(a)));
        }
        if t.str(k.role) != "peer" {
            quals.push(format!("role={}", t.str(k.role)));
        }
        if let Some(g) = k.group {
            quals.push(format!("group={}", t.str(g)));
        }
        let mut label = format!("{}/{}", t.str(k.workload), t.str(k.metric));
        if !quals.is_empty() {
            label = format!("{label} [{}]", quals.join(", "));
        }
        let mut unique = label.clone();
        let mut i = 2;
        while used.contains(&unique) {
            unique = format!("{label} #{i}");
            i += 1;
        }
        used.insert(unique.clone());
        out.insert(*k, unique);
    }
    out
}

/// Values per repetition, grouped: experiment → metric → platform → values in repetition order.
type Grouped = HashMap<Sym, HashMap<MetricKey, HashMap<Sym, Vec<f64>>>>;
/// The trial ids behind each experiment, metric and platform's values.
type GroupTrials = HashMap<(Sym, MetricKey, Sym), Vec<Sym>>;

fn group(t: &SampleTable, reps: &[RepValue]) -> (Grouped, GroupTrials) {
    let mut g: Grouped = HashMap::new();
    let mut trials: GroupTrials = HashMap::new();
    for r in reps {
        let key = MetricKey::of(t, r);
        g.entry(r.trial.experiment)
            .or_default()
            .entry(key)
            .or_default()
            .entry(r.trial.platform)
            .or_default()
            .push(r.value);
        trials
            .entry((r.trial.experiment, key, r.trial.platform))
            .or_default()
            .push(r.trial.trial_id);
    }
    (g, trials)
}

/// What a trial measured: experiment, platform, workload, parameters, instances, adversary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CellKey(Sym, Sym, Sym, Sym, i32, Option<Sym>);

impl CellKey {
    fn new(experiment: Sym, platform: Sym, k: &MetricKey) -> Self {
        Self(
            experiment,
            platform,
            k.workload,
            k.params,
            k.n_instances,
            k.adversary,
        )
    }
}

/// The `ok` trials that reported any summary value of each cell: a metric with fewer values
/// than its cell has trials is missing from some of them.
fn cell_trials(t: &SampleTable, reps: &[RepValue]) -> HashMap<CellKey, BTreeSet<Sym>> {
    let mut out: HashMap<CellKey, BTreeSet<Sym>> = HashMap::new();
    for r in reps {
        let key = MetricKey::of(t, r);
        out.entry(CellKey::new(r.trial.experiment, r.trial.platform, &key))
            .or_default()
            .insert(r.trial.trial_id);
    }
    out
}

/// Order of metrics in a report: by workload, metric, parameters, instance count (numerically),
/// adversary, role and group.
#[allow(clippy::type_complexity)]
fn sort_key<'a>(
    t: &'a SampleTable,
    k: &MetricKey,
) -> (
    &'a str,
    &'a str,
    &'a str,
    i32,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
) {
    (
        t.str(k.workload),
        t.str(k.metric),
        t.str(k.params),
        k.n_instances,
        t.opt_str(k.adversary),
        t.str(k.role),
        t.opt_str(k.group),
    )
}

/// Experiments in manifest order, then any others found in the data, sorted.
pub(crate) fn experiment_order(run: &Run) -> Vec<String> {
    let t = &run.table;
    let mut order: Vec<String> = run
        .manifest
        .experiments
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let found: BTreeSet<&str> = t.segments.iter().map(|s| t.str(s.key.experiment)).collect();
    for e in found {
        if !order.iter().any(|o| o == e) {
            order.push(e.to_owned());
        }
    }
    order
}

/// What an analysis of one experiment gets to work with.
pub(crate) struct Experiment<'a> {
    /// The run.
    pub(crate) run: &'a Run,
    /// Experiment name.
    pub(crate) name: &'a str,
    /// Platforms in pipeline order.
    pub(crate) platforms: &'a [String],
    /// Every repetition value of the run (filter by experiment).
    pub(crate) reps: &'a [RepValue],
}

impl Experiment<'_> {
    /// The repetition values of this experiment.
    pub(crate) fn reps(&self) -> impl Iterator<Item = &RepValue> {
        let t = &self.run.table;
        self.reps
            .iter()
            .filter(move |r| t.str(r.trial.experiment) == self.name)
    }

    /// The experiment as the pipeline defines it, if the manifest's pipeline text parses.
    pub(crate) fn pipeline_experiment(&self) -> Option<isolab_model::pipeline::Experiment> {
        let m = &self.run.manifest;
        let pipeline = isolab_model::load_str(&m.pipeline_file, &m.pipeline_text).ok()?;
        pipeline
            .experiments
            .into_iter()
            .find(|e| e.name == self.name)
    }
}

/// Per-experiment, per-metric, per-platform statistics of a run.
pub fn experiment_summaries(run: &Run) -> IndexMap<String, ExperimentSummary> {
    summaries(run).0
}

/// The experiments' statistics and the host noise: the agent's host rows
/// ([`noise::HOST_ROLE`]) describe the host, never a workload, so they are kept apart.
pub(crate) fn summaries(run: &Run) -> (IndexMap<String, ExperimentSummary>, NoiseSummary) {
    let t = &run.table;
    let (host, reps): (Vec<RepValue>, Vec<RepValue>) = repetition_values(t)
        .into_iter()
        .partition(|r| noise::is_host_row(run, r));
    let noise = noise::noise(run, &host);
    let (mut grouped, group_trials) = group(t, &reps);
    let cells = cell_trials(t, &reps);
    let stops = StopReasons::new(&run.manifest);
    let backends = backends(run);
    let mut out = IndexMap::new();
    for name in experiment_order(run) {
        let analysis = run
            .manifest
            .experiments
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.analysis.clone())
            .or_else(|| {
                t.segments
                    .iter()
                    .find(|s| t.str(s.key.experiment) == name)
                    .map(|s| t.str(s.key.analysis).to_owned())
            })
            .unwrap_or_default();
        let metrics = t
            .strings
            .get(&name)
            .and_then(|sym| grouped.remove(&sym))
            .unwrap_or_default();
        let found: BTreeSet<&str> = metrics
            .values()
            .flat_map(|p| p.keys().map(|s| t.str(*s)))
            .collect();
        let platforms = platform_order(run, &name, &found);
        // Ratios to a baseline are what an overhead experiment is about; elsewhere they
        // mislead. The baseline is the one the experiment names, else (older manifests) its
        // first native-backend platform.
        let named = run
            .manifest
            .experiments
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.baseline.clone());
        let baseline = named
            .or_else(|| {
                platforms
                    .iter()
                    .find(|p| backends.get(*p).is_some_and(|b| b == "native"))
                    .cloned()
            })
            .filter(|_| analysis == "overhead");
        let keys: Vec<MetricKey> = metrics.keys().copied().collect();
        let labels = labels(t, &keys);
        let mut keys = keys;
        keys.sort_by_key(|k| sort_key(t, k));
        let exp_sym = t.strings.get(&name);
        let entries: Vec<(String, MetricSummary)> = keys
            .iter()
            .map(|key| {
                let stop_of = |platform: Sym| {
                    let ids = exp_sym
                        .and_then(|e| group_trials.get(&(e, *key, platform)))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    stops.of(ids.iter().map(|s| t.str(*s)))
                };
                let mut summary =
                    metric_summary(t, key, &metrics[key], &platforms, baseline.as_deref());
                for (p, stats) in &mut summary.platforms {
                    let sym = t.strings.get(p);
                    stats.stop_reason = sym.and_then(stop_of);
                    let cell = exp_sym.zip(sym).map(|(e, p)| CellKey::new(e, p, key));
                    stats.trials = cell
                        .and_then(|c| cells.get(&c))
                        .map_or(stats.n, |ids| ids.len().max(stats.n));
                }
                (labels[key].clone(), summary)
            })
            .collect();
        let ctx = Experiment {
            run,
            name: &name,
            platforms: &platforms,
            reps: &reps,
        };
        let summary = ExperimentSummary {
            scaling: (analysis == "scaling")
                .then(|| scaling::scaling(&ctx))
                .flatten(),
            fairness: (analysis == "fairness")
                .then(|| fairness::fairness(&ctx))
                .flatten(),
            isolation: (analysis == "isolation")
                .then(|| isolation::isolation(&ctx))
                .flatten(),
            analysis,
            baseline,
            metrics: entries.into_iter().collect(),
        };
        out.insert(name, summary);
    }
    (out, noise)
}

fn metric_summary(
    t: &SampleTable,
    key: &MetricKey,
    per_platform: &HashMap<Sym, Vec<f64>>,
    order: &[String],
    baseline: Option<&str>,
) -> MetricSummary {
    let values_of = |p: &str| t.strings.get(p).and_then(|s| per_platform.get(&s));
    let base = baseline.and_then(values_of);
    let unit = t.str(key.unit).to_owned();
    let mut platforms = IndexMap::new();
    for p in order {
        let Some(values) = values_of(p) else { continue };
        let Some(e) = stats::estimate(values) else {
            continue;
        };
        let hib = key.higher_is_better;
        let is_host = !is_headline(t.str(key.metric));
        let is_baseline = Some(p.as_str()) == baseline;
        // The baseline against itself is exactly 1, with no interval.
        let ratio = base
            .filter(|_| !is_baseline)
            .and_then(|b| ratio::ratio(values, b));
        let ratio_ci = ratio.map(|r| [r.ci_low, r.ci_high]);
        let overhead_ci = ratio_ci.map(|ci| overhead::overhead_interval(ci, hib));
        platforms.insert(
            p.clone(),
            PlatformStats {
                n: e.n,
                trials: e.n,
                stop_reason: None,
                median: e.median,
                ci_low: e.ci_low,
                ci_high: e.ci_high,
                unit: unit.clone(),
                higher_is_better: hib,
                outliers: e.outliers.len(),
                ratio_to_baseline: if is_baseline {
                    Some(1.0)
                } else {
                    ratio.map(|r| r.ratio)
                },
                ratio_ci,
                ratio_method: ratio.map(|_| ratio::METHOD.to_owned()),
                ratio_ci_level: ratio.map(|r| r.level),
                p_value: ratio.map(|r| r.p_value),
                n_baseline: ratio.map(|r| r.n_denominator),
                overhead_pct: ratio.map(|r| 100.0 * overhead::overhead(r.ratio, hib)),
                overhead_ci_pct: overhead_ci.map(|[lo, hi]| [100.0 * lo, 100.0 * hi]),
                // Host accounting and bookkeeping have no better or worse, only different.
                verdict: ratio
                    .zip(overhead_ci)
                    .filter(|_| !is_host)
                    .map(|(r, ci)| overhead::verdict(ci, r.reaches_confidence, r.p_value)),
                values: values.clone(),
            },
        );
    }
    MetricSummary {
        workload: t.str(key.workload).to_owned(),
        metric: t.str(key.metric).to_owned(),
        unit,
        higher_is_better: key.higher_is_better,
        params: t.str(key.params).to_owned(),
        role: t.str(key.role).to_owned(),
        group: t.opt_str(key.group).map(str::to_owned),
        n_instances: key.n_instances,
        adversary: t.opt_str(key.adversary).map(str::to_owned),
        platforms,
    }
}
