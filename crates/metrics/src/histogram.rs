//! A lock-free latency histogram: log-linear buckets over microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: 32, so a bucket spans at most 1/32 of its value.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above the exact range: values up to 2^45 − 1 µs (about a year).
const GROUPS: usize = 41;
const BUCKETS: usize = SUB as usize * (GROUPS + 1);

/// Counts of durations in buckets at most 3.125 % wide, recorded with two atomic adds.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn index(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let msb = 63 - u64::from(us.leading_zeros());
    let shift = msb - u64::from(SUB_BITS);
    let sub = (us >> shift) & (SUB - 1);
    (((msb - u64::from(SUB_BITS) + 1) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let group = i / SUB; // >= 1
    let sub = i % SUB;
    let shift = group - 1;
    ((SUB + sub) << shift) + (1 << shift) - 1
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, duration: Duration) {
        // Clamped far below u64::MAX, so that the sum cannot wrap in any realistic life.
        let us = duration.as_micros().min(1 << 45) as u64;
        // Two atomic adds; the count is the buckets' sum, and the maximum is written only
        // when it grows (a read is far cheaper than a locked read-modify-write).
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if us > self.max_us.load(Ordering::Relaxed) {
            self.max_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// A copy of the counts, for percentiles.
    pub fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let count = counts.iter().sum();
        LatencySummary {
            counts,
            count,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a histogram's counts: percentiles, mean and max.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySummary {
    counts: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for LatencySummary {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl LatencySummary {
    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The duration below which `q` (0 to 1) of them fall: the upper edge of its bucket
    /// (at most 3.125 % above the true value), never above the maximum seen.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(upper(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// The largest duration recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The mean duration.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.count).unwrap_or(0))
    }

    /// Adds another summary's counts to this one.
    pub fn merge(&mut self, other: &LatencySummary) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_tightly() {
        for us in (0..2_000_000u64).step_by(7).chain([u64::from(u32::MAX), 1 << 40]) {
            let i = index(us);
            assert!(upper(i) >= us, "{us} above its bucket {i} ({})", upper(i));
            if i > 0 && i < BUCKETS - 1 {
                assert!(upper(i - 1) < us, "{us} belongs lower than {i}");
                assert!(upper(i) - us <= us / 32 + 1, "bucket of {us} too wide: {}", upper(i));
            }
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count(), 100);
        let close = |d: Duration, ms: u64| {
            let us = d.as_micros() as f64;
            (us - ms as f64 * 1000.0).abs() <= ms as f64 * 1000.0 * 0.03125 + 1.0
        };
        assert!(close(s.quantile(0.5), 50), "{:?}", s.quantile(0.5));
        assert!(close(s.quantile(0.9), 90), "{:?}", s.quantile(0.9));
        assert!(close(s.quantile(0.99), 99), "{:?}", s.quantile(0.99));
        assert_eq!(s.max(), Duration::from_millis(100));
        assert_eq!(s.quantile(1.0), Duration::from_millis(100));
        assert_eq!(s.mean(), Duration::from_micros(50_500));
        assert_eq!(LatencySummary::default().quantile(0.5), Duration::ZERO);
    }
}
