//! The in-memory results table: columnar, with every string interned once.
//!
//! A run of ten million rows must fit comfortably in memory and be cheap to group, so the table
//! never holds a `ResultRow` per row. Columns that are constant within a trial (experiment,
//! platform, trial id, repetition, …) live once per [`TrialSegment`], a contiguous range of
//! rows. The columns that say *what* a row measures (role, group, workload, params, metric, unit,
//! direction) are interned together as a [`SeriesKey`], so a row is just an instance index, a
//! series id, a value and a time offset: 24 bytes.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

/// An interned string: an index into the table's [`Interner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

impl Sym {
    /// The index of the string in its interner.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Every distinct string of a table, stored once.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    strings: Vec<Box<str>>,
    index: HashMap<Box<str>, Sym>,
}

impl Interner {
    /// The symbol of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.index.get(s) {
            return sym;
        }
        let sym = Sym(u32::try_from(self.strings.len()).unwrap_or(u32::MAX));
        self.strings.push(s.into());
        self.index.insert(s.into(), sym);
        sym
    }

    /// The symbol of `s` if it was interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.index.get(s).copied()
    }

    /// The string of a symbol of this interner.
    ///
    /// # Panics
    /// If `sym` comes from another interner and is out of range.
    pub fn resolve(&self, sym: Sym) -> &str {
        &self.strings[sym.index()]
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether no string was interned.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// The trial-level columns of a run of rows; equal keys in a row are one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrialKey {
    /// Experiment name.
    pub experiment: Sym,
    /// Analysis kind.
    pub analysis: Sym,
    /// Trial id.
    pub trial_id: Sym,
    /// Measured repetition, 0-based.
    pub repetition: i32,
    /// Platform name.
    pub platform: Sym,
    /// Backend kind.
    pub backend: Sym,
    /// Host that ran the trial.
    pub host: Sym,
    /// Instances in the trial.
    pub n_instances: i32,
    /// Adversary (isolation), if any.
    pub adversary: Option<Sym>,
    /// Trial status column (`ok`).
    pub status: Sym,
}

/// A contiguous range of rows sharing one [`TrialKey`] (normally: one trial file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialSegment {
    /// The trial-level values.
    pub key: TrialKey,
    /// Rows of the table.
    pub rows: Range<usize>,
    /// Index into [`SampleTable::files`] of the file the rows came from.
    pub file: u32,
}

/// What a row measures, apart from the trial and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// `victim`, `adversary` or `peer`.
    pub role: Sym,
    /// Fairness group, if any.
    pub group: Option<Sym>,
    /// Workload of the instance.
    pub workload: Sym,
    /// Workload parameters, canonical JSON.
    pub params: Sym,
    /// Metric name.
    pub metric: Sym,
    /// Unit of the value.
    pub unit: Sym,
    /// Whether larger is better.
    pub higher_is_better: bool,
}

/// The rows of a run, columnar.
///
/// Row `i` belongs to the segment whose `rows` contains `i`; its series is
/// `series[series_id[i]]`. A summary value has `t_offset_s[i]` NaN (null in the file).
#[derive(Debug, Default, Clone)]
pub struct SampleTable {
    /// Every string of the table.
    pub strings: Interner,
    /// Files the rows were read from, in reading order.
    pub files: Vec<PathBuf>,
    /// Trial segments, in row order.
    pub segments: Vec<TrialSegment>,
    /// Distinct series; indexed by `series_id`.
    pub series: Vec<SeriesKey>,
    /// Instance index of each row.
    pub instance: Vec<i32>,
    /// Series of each row (index into `series`).
    pub series_id: Vec<u32>,
    /// Value of each row.
    pub value: Vec<f64>,
    /// Seconds since the instance started; NaN for a summary value.
    pub t_offset_s: Vec<f64>,
    series_index: HashMap<SeriesKey, u32>,
}

impl SampleTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The string of a symbol.
    pub fn str(&self, sym: Sym) -> &str {
        self.strings.resolve(sym)
    }

    /// The string of an optional symbol.
    pub fn opt_str(&self, sym: Option<Sym>) -> Option<&str> {
        sym.map(|s| self.strings.resolve(s))
    }

    /// The id of a series, adding it if new.
    pub fn series_id_of(&mut self, key: SeriesKey) -> u32 {
        if let Some(&id) = self.series_index.get(&key) {
            return id;
        }
        let id = u32::try_from(self.series.len()).unwrap_or(u32::MAX);
        self.series.push(key);
        self.series_index.insert(key, id);
        id
    }

    /// Adds `rows` to the last segment if it has the same key and file and ends where `rows`
    /// starts, else opens a new segment for them.
    pub(crate) fn push_segment(&mut self, key: TrialKey, file: u32, rows: Range<usize>) {
        if rows.is_empty() {
            return;
        }
        if let Some(last) = self.segments.last_mut()
            && last.key == key
            && last.file == file
            && last.rows.end == rows.start
        {
            last.rows.end = rows.end;
            return;
        }
        self.segments.push(TrialSegment { key, rows, file });
    }

    /// Appends another table's rows, files and segments, re-interning its strings.
    pub fn append(&mut self, other: SampleTable) {
        let lut: Vec<Sym> = other
            .strings
            .strings
            .iter()
            .map(|s| self.strings.intern(s))
            .collect();
        let map = |s: Sym| lut[s.index()];
        let series_lut: Vec<u32> = other
            .series
            .iter()
            .map(|k| {
                self.series_id_of(SeriesKey {
                    role: map(k.role),
                    group: k.group.map(map),
                    workload: map(k.workload),
                    params: map(k.params),
                    metric: map(k.metric),
                    unit: map(k.unit),
                    higher_is_better: k.higher_is_better,
                })
            })
            .collect();
        let row_offset = self.len();
        let file_offset = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        self.files.extend(other.files);
        for seg in other.segments {
            let k = seg.key;
            let key = TrialKey {
                experiment: map(k.experiment),
                analysis: map(k.analysis),
                trial_id: map(k.trial_id),
                repetition: k.repetition,
                platform: map(k.platform),
                backend: map(k.backend),
                host: map(k.host),
                n_instances: k.n_instances,
                adversary: k.adversary.map(map),
                status: map(k.status),
            };
            self.segments.push(TrialSegment {
                key,
                rows: seg.rows.start + row_offset..seg.rows.end + row_offset,
                file: seg.file + file_offset,
            });
        }
        self.instance.extend_from_slice(&other.instance);
        self.series_id
            .extend(other.series_id.iter().map(|&s| series_lut[s as usize]));
        self.value.extend_from_slice(&other.value);
        self.t_offset_s.extend_from_slice(&other.t_offset_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_row_table(experiment: &str, metric: &str, value: f64) -> SampleTable {
        let mut t = SampleTable::default();
        let s = |t: &mut SampleTable, x: &str| t.strings.intern(x);
        let key = TrialKey {
            experiment: s(&mut t, experiment),
            analysis: s(&mut t, "overhead"),
            trial_id: s(&mut t, "t1"),
            repetition: 0,
            platform: s(&mut t, "native"),
            backend: s(&mut t, "native"),
            host: s(&mut t, "h"),
            n_instances: 1,
            adversary: None,
            status: s(&mut t, "ok"),
        };
        let series = SeriesKey {
            role: s(&mut t, "peer"),
            group: None,
            workload: s(&mut t, "syscall"),
            params: s(&mut t, "{}"),
            metric: s(&mut t, metric),
            unit: s(&mut t, "ns"),
            higher_is_better: false,
        };
        let id = t.series_id_of(series);
        t.files.push("f".into());
        t.instance.push(0);
        t.series_id.push(id);
        t.value.push(value);
        t.t_offset_s.push(f64::NAN);
        t.push_segment(key, 0, 0..1);
        t
    }

    #[test]
    fn append_reinterns_strings_and_offsets_rows() {
        let mut a = one_row_table("micro", "ns_per_call", 1.0);
        let b = one_row_table("other", "us_per_process", 2.0);
        a.append(b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.segments.len(), 2);
        assert_eq!(a.segments[1].rows, 1..2);
        assert_eq!(a.segments[1].file, 1);
        assert_eq!(a.str(a.segments[1].key.experiment), "other");
        let s1 = a.series[a.series_id[1] as usize];
        assert_eq!(a.str(s1.metric), "us_per_process");
        // Shared strings are stored once.
        assert_eq!(a.strings.get("native").map(|_| ()), Some(()));
        assert_eq!(a.strings.len(), 13);
    }

    #[test]
    fn interner_round_trips() {
        let mut i = Interner::default();
        let a = i.intern("a");
        let b = i.intern("b");
        assert_eq!(i.intern("a"), a);
        assert_ne!(a, b);
        assert_eq!(i.resolve(b), "b");
        assert_eq!(i.get("c"), None);
    }
}
