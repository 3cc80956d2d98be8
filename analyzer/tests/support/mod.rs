//! Simulated repetitions for the statistics tests: noise shapes seen on shared hosts, drawn from
//! a seeded generator so every run of the suite sees the same numbers.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use isolab_analyzer::stats::SplitMix64;

/// How the noise of one repetition is distributed (all around a typical value of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Normal, 5% standard deviation.
    Normal,
    /// Log-normal, σ = 0.2 on the log scale (right-skewed).
    LogNormal,
    /// Two modes (100 and 115, 2% each), and with probability 5% an outlier three times slower.
    BimodalOutlier,
    /// Normal, 2% standard deviation (a quiet micro-benchmark).
    Tight,
    /// Normal with 5% standard deviation, read in steps of 5 (many ties, like CPU time in
    /// 10 ms steps).
    Quantized,
}

impl Shape {
    /// Every shape.
    pub(crate) const ALL: [Shape; 4] = [
        Shape::Normal,
        Shape::LogNormal,
        Shape::BimodalOutlier,
        Shape::Quantized,
    ];

    /// A short name for tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Normal => "normal",
            Shape::LogNormal => "log-normal",
            Shape::BimodalOutlier => "bimodal+outlier",
            Shape::Quantized => "quantized",
            Shape::Tight => "tight",
        }
    }
}

/// Draws simulated repetition values.
#[derive(Debug, Clone)]
pub(crate) struct Sim {
    rng: SplitMix64,
}

impl Sim {
    /// A simulator starting from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
        }
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, one value per pair of uniforms).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// One value of `shape` (true median scale 100), times `effect`.
    pub(crate) fn value(&mut self, shape: Shape, effect: f64) -> f64 {
        let base = match shape {
            Shape::Normal => 100.0 * (1.0 + 0.05 * self.normal()),
            Shape::LogNormal => 100.0 * (0.2 * self.normal()).exp(),
            Shape::Tight => 100.0 * (1.0 + 0.02 * self.normal()),
            Shape::BimodalOutlier => {
                let mode = if self.uniform() < 0.5 { 100.0 } else { 115.0 };
                let v = mode * (1.0 + 0.02 * self.normal());
                if self.uniform() < 0.05 { 3.0 * v } else { v }
            }
            Shape::Quantized => 100.0 * (1.0 + 0.05 * self.normal()),
        };
        // A multiplicative effect; the quantized shape is read after the effect, as a clock
        // with coarse ticks would.
        match shape {
            Shape::Quantized => ((base * effect) / 5.0).round() * 5.0,
            _ => base * effect,
        }
    }

    /// `n` values of `shape` times `effect`.
    pub(crate) fn sample(&mut self, shape: Shape, n: usize, effect: f64) -> Vec<f64> {
        (0..n).map(|_| self.value(shape, effect)).collect()
    }
}
