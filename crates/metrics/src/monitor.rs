//! The PerformanceMonitor: what every operation did, aggregated without locks, and the
//! snapshots code in the same process can ask for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stateful_redis_core::{Error, ErrorKind};

use crate::histogram::{LatencyHistogram, LatencySummary};

/// The operations the executor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// `StateHandle::get`.
    Get,
    /// `StateHandle::put`.
    Put,
    /// `StateHandle::cas`.
    Cas,
    /// `StateHandle::update` (all its attempts).
    Update,
    /// `StateHandle::transition`.
    Transition,
    /// `StateHandle::delete_if`.
    Delete,
    /// `StateHandle::apply_once`.
    ApplyOnce,
    /// `Leases::acquire`.
    Acquire,
    /// `Leases::renew`.
    Renew,
    /// `Leases::release`.
    Release,
    /// Presence heartbeats, counts and expiry.
    Presence,
}

impl Operation {
    /// Every operation, in order.
    pub const ALL: [Operation; 11] = [
        Operation::Get,
        Operation::Put,
        Operation::Cas,
        Operation::Update,
        Operation::Transition,
        Operation::Delete,
        Operation::ApplyOnce,
        Operation::Acquire,
        Operation::Renew,
        Operation::Release,
        Operation::Presence,
    ];

    /// Its name, as in snapshots and (later) `db.operation.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Put => "put",
            Operation::Cas => "cas",
            Operation::Update => "update",
            Operation::Transition => "transition",
            Operation::Delete => "delete_if",
            Operation::ApplyOnce => "apply_once",
            Operation::Acquire => "acquire",
            Operation::Renew => "renew",
            Operation::Release => "release",
            Operation::Presence => "presence",
        }
    }

    /// Its position in [`Operation::ALL`].
    pub fn index(self) -> usize {
        Operation::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

/// Per-second counts over the last minute, for rates; one atomic add per record.
#[derive(Debug)]
struct RateWindow {
    slots: Box<[(AtomicU64, AtomicU64)]>,
}

const SLOTS: u64 = 64;

impl Default for RateWindow {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl RateWindow {
    fn add(&self, second: u64) {
        let (epoch, count) = &self.slots[(second % SLOTS) as usize];
        let seen = epoch.load(Ordering::Relaxed);
        if seen != second {
            // The first record of a new second resets the slot (a race may lose a count
            // at the boundary: rates are estimates, the totals are exact).
            if epoch
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                count.store(0, Ordering::Relaxed);
            }
        }
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Events per second over the `window` complete seconds before `now_second`.
    fn rate(&self, now_second: u64, window: u64) -> f64 {
        let window = window.clamp(1, SLOTS - 1);
        let from = now_second.saturating_sub(window);
        let events: u64 = self
            .slots
            .iter()
            .filter(|(epoch, _)| {
                let e = epoch.load(Ordering::Relaxed);
                e != u64::MAX && e >= from && e < now_second
            })
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum();
        let seconds = window.min(now_second).max(1);
        events as f64 / seconds as f64
    }
}

#[derive(Debug, Default)]
struct OperationStats {
    latency: LatencyHistogram,
    count: AtomicU64,
    failures: AtomicU64,
    rate: RateWindow,
}

/// Gauges and counters owned by other layers (pool, batcher, leases), read when a
/// snapshot is taken.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Gauges {
    /// Operations admitted and not finished.
    pub in_flight: u64,
    /// Operations waiting in the batcher's queues.
    pub queue_depth: u64,
    /// Pipelines in flight.
    pub pipelines_in_flight: u64,
    /// Pipelines sent (cumulative).
    pub batches: u64,
    /// Operations sent in pipelines (cumulative).
    pub batched_operations: u64,
    /// Operations refused by a full queue (cumulative).
    pub rejected: u64,
    /// Queued operations dropped for newer ones (cumulative).
    pub dropped: u64,
    /// Calls re-sent after an unknown outcome (cumulative).
    pub retries: u64,
    /// Script loads after `NOSCRIPT` (cumulative).
    pub script_reloads: u64,
    /// Connections open (links and exclusive pool).
    pub connections: u64,
    /// Exclusive connections idle.
    pub connections_idle: u64,
    /// Exclusive connections in use.
    pub connections_used: u64,
    /// Callers waiting for an exclusive connection.
    pub pool_waiters: u64,
    /// Checkouts that had to wait (cumulative).
    pub pool_waits: u64,
    /// Checkouts that timed out (cumulative).
    pub pool_timeouts: u64,
    /// Most exclusive connections allowed.
    pub pool_max_size: u64,
}

/// Where a monitor reads [`Gauges`] from; the executor provides one.
pub trait GaugeSource: Send + Sync + 'static {
    /// The gauges now.
    fn gauges(&self) -> Gauges;
}

/// One operation's figures in a snapshot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OperationSnapshot {
    /// The operation's name.
    pub name: String,
    /// Calls finished.
    pub count: u64,
    /// Calls that failed (timeouts, connection and server errors, …; not conflicts or
    /// other answers a caller expects, see [`ErrorKind::is_failure`]).
    pub failures: u64,
    /// `failures / count`.
    pub failure_rate: f64,
    /// Calls per second over the snapshot's window.
    pub rate_per_sec: f64,
    /// Latency percentiles (bucket upper edges: at most 6.25 % high).
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest call.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl OperationSnapshot {
    fn of(name: &str, count: u64, failures: u64, rate: f64, latency: &LatencySummary) -> Self {
        Self {
            name: name.to_owned(),
            count,
            failures,
            failure_rate: if count == 0 {
                0.0
            } else {
                failures as f64 / count as f64
            },
            rate_per_sec: rate,
            p50: latency.quantile(0.5),
            p90: latency.quantile(0.9),
            p99: latency.quantile(0.99),
            max: latency.max(),
            mean: latency.mean(),
        }
    }
}

/// Everything the monitor knows, at one moment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Since the monitor started.
    pub uptime: Duration,
    /// The window rates are computed over.
    pub window: Duration,
    /// Every operation called at least once.
    pub operations: Vec<OperationSnapshot>,
    /// All operations together.
    pub total: OperationSnapshot,
    /// Errors by kind, failures and expected answers alike (only kinds seen).
    pub errors: BTreeMap<&'static str, u64>,
    /// Leases lost while guarded.
    pub leases_lost: u64,
    /// Pool, queue and batch figures.
    pub gauges: Gauges,
}

impl MetricsSnapshot {
    /// The figures of one operation, by name.
    pub fn operation(&self, name: &str) -> Option<&OperationSnapshot> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// The value of a metric by the name [`PerformanceMonitor::set_alert_threshold`] takes.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let t = &self.total;
        let g = &self.gauges;
        Some(match name {
            "operations.rate" => t.rate_per_sec,
            "operations.failure_rate" => t.failure_rate,
            "operations.p50_ms" => t.p50.as_secs_f64() * 1e3,
            "operations.p99_ms" => t.p99.as_secs_f64() * 1e3,
            "operations.max_ms" => t.max.as_secs_f64() * 1e3,
            "queue.depth" => g.queue_depth as f64,
            "operations.in_flight" => g.in_flight as f64,
            "operations.rejected" => g.rejected as f64,
            "operations.dropped" => g.dropped as f64,
            "operations.retries" => g.retries as f64,
            "scripts.reloads" => g.script_reloads as f64,
            "pool.waiters" => g.pool_waiters as f64,
            "pool.timeouts" => g.pool_timeouts as f64,
            "leases.lost" => self.leases_lost as f64,
            "errors.conflict" => self.errors.get("conflict").copied().unwrap_or(0) as f64,
            "errors.fenced" => self.errors.get("fenced").copied().unwrap_or(0) as f64,
            _ => return None,
        })
    }
}

/// The metric names thresholds can be set on.
pub const ALERT_METRICS: [&str; 16] = [
    "operations.rate",
    "operations.failure_rate",
    "operations.p50_ms",
    "operations.p99_ms",
    "operations.max_ms",
    "operations.in_flight",
    "operations.rejected",
    "operations.dropped",
    "operations.retries",
    "queue.depth",
    "scripts.reloads",
    "pool.waiters",
    "pool.timeouts",
    "leases.lost",
    "errors.conflict",
    "errors.fenced",
];

/// Measures every operation with a few atomic adds, and answers snapshots.
///
/// `record` costs two or three uncontended atomic adds per counter touched (no lock, no
/// allocation); `snapshot` reads them all. Cheap to clone; clones share the figures.
#[derive(Clone)]
pub struct PerformanceMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    window: Duration,
    operations: Box<[OperationStats]>,
    custom: RwLock<BTreeMap<String, Arc<OperationStats>>>,
    errors: Box<[AtomicU64]>,
    leases_lost: AtomicU64,
    gauges: RwLock<Option<Arc<dyn GaugeSource>>>,
    thresholds: RwLock<BTreeMap<String, f64>>,
}

impl std::fmt::Debug for PerformanceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceMonitor")
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl Default for PerformanceMonitor {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl PerformanceMonitor {
    /// A monitor whose rates cover the last `window` (whole seconds, 1 to 60).
    pub fn new(window: Duration) -> Self {
        let window = Duration::from_secs(window.as_secs().clamp(1, 60));
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                window,
                operations: Operation::ALL.iter().map(|_| OperationStats::default()).collect(),
                custom: RwLock::default(),
                errors: (0..ErrorKind::COUNT).map(|_| AtomicU64::new(0)).collect(),
                leases_lost: AtomicU64::new(0),
                gauges: RwLock::default(),
                thresholds: RwLock::default(),
            }),
        }
    }

    /// Reads gauges from `source` at every snapshot.
    pub fn set_gauge_source(&self, source: Arc<dyn GaugeSource>) {
        *self.inner.gauges.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.inner.started).as_secs()
    }

    fn count(&self, stats: &OperationStats, duration: Duration, failed: bool, now: Instant) {
        stats.latency.record(duration);
        stats.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        stats.rate.add(self.second(now));
    }

    /// Records one executor operation: its duration and its error, if any.
    pub fn record(&self, operation: Operation, duration: Duration, error: Option<ErrorKind>) {
        self.record_at(operation, duration, error, Instant::now());
    }

    /// Records an operation that started at `started` and ends now: one clock read serves
    /// both its duration and its rate. Returns the duration it recorded.
    pub fn record_since(&self, operation: Operation, started: Instant, error: Option<ErrorKind>) -> Duration {
        let now = Instant::now();
        let duration = now.saturating_duration_since(started);
        self.record_at(operation, duration, error, now);
        duration
    }

    fn record_at(&self, operation: Operation, duration: Duration, error: Option<ErrorKind>, now: Instant) {
        if let Some(kind) = error {
            self.inner.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        let failed = error.is_some_and(ErrorKind::is_failure);
        self.count(&self.inner.operations[operation.index()], duration, failed, now);
    }

    /// Records an operation by name (your own, or one of [`Operation`]'s names).
    pub fn record_operation(&self, operation: &str, duration: Duration, success: bool) {
        let now = Instant::now();
        if let Some(known) = Operation::ALL.iter().find(|o| o.as_str() == operation) {
            self.count(&self.inner.operations[known.index()], duration, !success, now);
            return;
        }
        let existing = self
            .inner
            .custom
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(operation)
            .cloned();
        let stats = existing.unwrap_or_else(|| {
            let mut custom = self.inner.custom.write().unwrap_or_else(|p| p.into_inner());
            Arc::clone(custom.entry(operation.to_owned()).or_default())
        });
        self.count(&stats, duration, !success, now);
    }

    /// Counts a lease a guard lost.
    pub fn record_lease_lost(&self) {
        self.inner.leases_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the threshold of an alert on `metric` (one of [`ALERT_METRICS`]); the alerting
    /// layer evaluates it against snapshots. Unknown names and non-finite values are refused.
    pub fn set_alert_threshold(&self, metric: &str, threshold: f64) -> Result<(), Error> {
        if !ALERT_METRICS.contains(&metric) {
            return Err(Error::InvalidArgument {
                name: "metric",
                reason: format!("unknown metric {metric:?}; known: {}", ALERT_METRICS.join(", ")),
            });
        }
        if !threshold.is_finite() {
            return Err(Error::InvalidArgument {
                name: "threshold",
                reason: format!("{threshold} is not a finite number"),
            });
        }
        self.inner
            .thresholds
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(metric.to_owned(), threshold);
        Ok(())
    }

    /// The thresholds set so far.
    pub fn alert_thresholds(&self) -> BTreeMap<String, f64> {
        self.inner.thresholds.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything measured so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let now = self.second(Instant::now());
        let window = self.inner.window.as_secs();
        let mut total_latency = LatencySummary::default();
        let (mut total_count, mut total_failures, mut total_rate) = (0, 0, 0.0);
        let mut operations = Vec::new();
        let custom = self.inner.custom.read().unwrap_or_else(|p| p.into_inner()).clone();
        let named = Operation::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), &self.inner.operations[o.index()]))
            .chain(custom.iter().map(|(name, stats)| (name.clone(), &**stats)));
        for (name, stats) in named {
            let count = stats.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let failures = stats.failures.load(Ordering::Relaxed);
            let rate = stats.rate.rate(now, window);
            let latency = stats.latency.summary();
            total_latency.merge(&latency);
            total_count += count;
            total_failures += failures;
            total_rate += rate;
            operations.push(OperationSnapshot::of(&name, count, failures, rate, &latency));
        }
        let errors = ErrorKind::ALL
            .iter()
            .filter_map(|&kind| {
                let n = self.inner.errors[kind.index()].load(Ordering::Relaxed);
                (n > 0).then_some((kind.as_str(), n))
            })
            .collect();
        let gauges = self
            .inner
            .gauges
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|source| source.gauges())
            .unwrap_or_default();
        MetricsSnapshot {
            uptime: self.inner.started.elapsed(),
            window: self.inner.window,
            total: OperationSnapshot::of("total", total_count, total_failures, total_rate, &total_latency),
            operations,
            errors,
            leases_lost: self.inner.leases_lost.load(Ordering::Relaxed),
            gauges,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_errors_and_custom_operations() {
        let monitor = PerformanceMonitor::default();
        for _ in 0..8 {
            monitor.record(Operation::Put, Duration::from_millis(1), None);
        }
        monitor.record(Operation::Put, Duration::from_millis(5), Some(ErrorKind::Timeout));
        monitor.record(Operation::Cas, Duration::from_millis(1), Some(ErrorKind::Conflict));
        monitor.record_operation("reconcile", Duration::from_millis(3), false);
        monitor.record_operation("put", Duration::from_millis(2), true);
        let s = monitor.snapshot();
        let put = s.operation("put").expect("put");
        assert_eq!((put.count, put.failures), (10, 1));
        assert!((put.failure_rate - 0.1).abs() < 1e-9);
        // A conflict is an answer, not a failure.
        assert_eq!(s.operation("cas").expect("cas").failures, 0);
        assert_eq!(s.operation("reconcile").expect("custom").failures, 1);
        assert_eq!(s.total.count, 12);
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert_eq!(s.errors.get("conflict"), Some(&1));
        assert_eq!(s.metric("errors.conflict"), Some(1.0));
        assert!(s.operation("get").is_none());
    }

    #[test]
    fn thresholds_are_validated() {
        let monitor = PerformanceMonitor::default();
        monitor.set_alert_threshold("operations.p99_ms", 25.0).expect("known");
        assert_eq!(monitor.alert_thresholds().get("operations.p99_ms"), Some(&25.0));
        let err = monitor
            .set_alert_threshold("p99", 1.0)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("\"p99\"") && err.contains("operations.p99_ms"), "{err}");
        assert!(monitor.set_alert_threshold("queue.depth", f64::NAN).is_err());
        for name in ALERT_METRICS {
            assert!(monitor.snapshot().metric(name).is_some(), "{name} has no value");
        }
    }

    #[test]
    fn rates_cover_complete_seconds() {
        let window = RateWindow::default();
        for second in 0..5 {
            for _ in 0..(second + 1) * 10 {
                window.add(second);
            }
        }
        // Seconds 1..=4 held 20 + 30 + 40 + 50 = 140 events.
        assert!((window.rate(5, 4) - 35.0).abs() < 1e-9, "{}", window.rate(5, 4));
        // The current second does not count yet.
        assert!((window.rate(4, 1) - 40.0).abs() < 1e-9);
        // A slot is reused after the ring wraps.
        window.add(SLOTS + 4);
        assert!((window.rate(SLOTS + 5, 1) - 1.0).abs() < 1e-9);
    }
}
