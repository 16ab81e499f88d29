//! Medians and spreads of a case's figures over the repetitions.

use super::cases::Case;
use super::sample::Sample;

/// The figures taken per run: their JSON names, whether higher is better, and how tables name them.
pub(super) const METRICS: &[(&str, bool, &str)] = &[
    ("ops_per_sec", true, "ops/s"),
    ("p50_us", false, "p50 µs"),
    ("p99_us", false, "p99 µs"),
    ("client_cpu_s_per_100k", false, "client CPU s/100k"),
    ("server_cpu_s_per_100k", false, "server CPU s/100k"),
    ("executor_cpu_s_per_100k", false, "executor thread CPU s/100k"),
];

pub(super) fn metric(sample: &Sample, name: &str) -> Option<f64> {
    match name {
        "ops_per_sec" => Some(sample.ops_per_sec),
        "p50_us" => Some(sample.p50_us),
        "p99_us" => Some(sample.p99_us),
        "client_cpu_s_per_100k" => Some(sample.client_cpu_per_100k()),
        "server_cpu_s_per_100k" => sample.server_cpu_per_100k(),
        "executor_cpu_s_per_100k" => sample.executor_cpu_per_100k(),
        _ => None,
    }
}

/// A median and its spread over the repetitions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stat {
    pub(super) median: f64,
    /// (max - min) / median; 0 for one repetition.
    pub(super) spread: f64,
}

pub(super) fn stat(values: &[f64]) -> Option<Stat> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    };
    let spread = if median == 0.0 {
        0.0
    } else {
        (sorted[n - 1] - sorted[0]) / median.abs()
    };
    Some(Stat { median, spread })
}

#[derive(Debug)]
pub(super) struct CaseResult<'a> {
    pub(super) case: &'a Case,
    pub(super) samples: Vec<Sample>,
}

impl CaseResult<'_> {
    pub(super) fn stat(&self, name: &str) -> Option<Stat> {
        let values: Vec<f64> = self.samples.iter().filter_map(|s| metric(s, name)).collect();
        stat(&values)
    }

    pub(super) fn median(&self, name: &str) -> Option<f64> {
        self.stat(name).map(|s| s.median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spread() {
        let s = stat(&[3.0, 1.0, 2.0]).expect("a stat");
        assert_eq!(s.median, 2.0);
        assert_eq!(s.spread, 1.0);
        assert_eq!(stat(&[1.0, 3.0]).expect("a stat").median, 2.0);
        assert!(stat(&[]).is_none());
    }
}
