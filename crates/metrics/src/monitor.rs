//! The PerformanceMonitor: what every operation did, aggregated without locks, and the
//! snapshots code in the same process can ask for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

    /// Its position in [`Operation::ALL`] (which lists them in declaration order).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Parts of an operation's path timed apart from it, on a sample of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Stage {
    /// Waiting in the batcher's queue before a pipeline took the operation.
    QueueWait,
    /// Encoding a value for Redis or decoding one read back (the codec).
    Serialization,
    /// Compressing a value above the threshold, or decompressing one read back.
    Compression,
    /// Waiting for an exclusive connection from the pool.
    PoolWait,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [
        Stage::QueueWait,
        Stage::Serialization,
        Stage::Compression,
        Stage::PoolWait,
    ];

    /// Its name, as in snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::QueueWait => "queue_wait",
            Stage::Serialization => "serialization",
            Stage::Compression => "compression",
            Stage::PoolWait => "pool_wait",
        }
    }

    /// Its position in [`Stage::ALL`] (which lists them in declaration order).
    pub fn index(self) -> usize {
        self as usize
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
    failures: AtomicU64,
    rate: RateWindow,
    failure_rate: RateWindow,
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
    /// Most operations the batcher's queues hold, all queues together.
    pub queue_capacity: u64,
    /// Bytes written to Redis on the pipeline links (cumulative).
    pub bytes_sent: u64,
    /// Bytes read from Redis on the pipeline links (cumulative).
    pub bytes_received: u64,
    /// Servers whose `maxmemory-policy` may evict keys (`redis.allow_eviction`): above 0,
    /// leases and exactly-once are at risk.
    pub evicting_servers: u64,
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
    /// `failures / count`, since the start.
    pub failure_rate: f64,
    /// Failures per call over the snapshot's window (0 when there were no calls in it).
    pub window_failure_rate: f64,
    /// Calls per second over the snapshot's window.
    pub rate_per_sec: f64,
    /// Latency percentiles (bucket upper edges: at most 3.125 % high).
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
    fn of(name: &str, count: u64, failures: u64, rates: (f64, f64), latency: &LatencySummary) -> Self {
        let (rate, failure_rate) = rates;
        Self {
            name: name.to_owned(),
            count,
            failures,
            failure_rate: if count == 0 {
                0.0
            } else {
                failures as f64 / count as f64
            },
            window_failure_rate: if rate > 0.0 {
                (failure_rate / rate).min(1.0)
            } else {
                0.0
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
    /// Leases acquired.
    pub leases_acquired: u64,
    /// Active entities at the last presence count (`None` before the first).
    pub active_entities: Option<u64>,
    /// Timed stages (queue wait, serialization, compression, pool wait), each on its
    /// sample of operations; only stages timed at least once.
    pub stages: Vec<StageSnapshot>,
    /// Pool, queue and batch figures.
    pub gauges: Gauges,
}

/// The latency of one [`Stage`] over the operations it was timed on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageSnapshot {
    /// The stage's name ([`Stage::as_str`]).
    pub name: &'static str,
    /// Times it was timed.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl MetricsSnapshot {
    /// The figures of one operation, by name.
    pub fn operation(&self, name: &str) -> Option<&OperationSnapshot> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// The figures of one stage, by name, if it was timed.
    pub fn stage(&self, stage: Stage) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == stage.as_str())
    }

    /// The value of a metric by the name [`PerformanceMonitor::set_alert_threshold`] takes
    /// (one of [`ALERT_METRICS`]).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let t = &self.total;
        let g = &self.gauges;
        let stage_p99 = |stage: Stage| self.stage(stage).map_or(0.0, |s| s.p99.as_secs_f64() * 1e3);
        Some(match name {
            "operations.rate" => t.rate_per_sec,
            "operations.failure_rate" => t.window_failure_rate,
            "operations.p50_ms" => t.p50.as_secs_f64() * 1e3,
            "operations.p99_ms" => t.p99.as_secs_f64() * 1e3,
            "operations.max_ms" => t.max.as_secs_f64() * 1e3,
            "queue.depth" => g.queue_depth as f64,
            "queue.saturation" => {
                if g.queue_capacity == 0 {
                    0.0
                } else {
                    g.queue_depth as f64 / g.queue_capacity as f64
                }
            }
            "queue.wait_p99_ms" => stage_p99(Stage::QueueWait),
            "pool.wait_p99_ms" => stage_p99(Stage::PoolWait),
            "pool.waits" => g.pool_waits as f64,
            "entities.active" => self.active_entities.unwrap_or(0) as f64,
            "bytes.sent" => g.bytes_sent as f64,
            "bytes.received" => g.bytes_received as f64,
            "operations.in_flight" => g.in_flight as f64,
            "operations.rejected" => g.rejected as f64,
            "operations.dropped" => g.dropped as f64,
            "operations.retries" => g.retries as f64,
            "scripts.reloads" => g.script_reloads as f64,
            "pool.waiters" => g.pool_waiters as f64,
            "pool.timeouts" => g.pool_timeouts as f64,
            "servers.evicting" => g.evicting_servers as f64,
            "leases.lost" => self.leases_lost as f64,
            "errors.conflict" => self.errors.get("conflict").copied().unwrap_or(0) as f64,
            "errors.fenced" => self.errors.get("fenced").copied().unwrap_or(0) as f64,
            _ => return None,
        })
    }
}

/// The metric names thresholds can be set on. Counters (`operations.rejected`,
/// `operations.dropped`, `operations.retries`, `scripts.reloads`, `pool.waits`,
/// `pool.timeouts`, `leases.lost`, `errors.*`, `bytes.*`) are totals since the start; alert
/// rules take their rate. `operations.failure_rate` is failures per call over the window.
pub const ALERT_METRICS: [&str; 24] = [
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
    "queue.saturation",
    "queue.wait_p99_ms",
    "scripts.reloads",
    "pool.waiters",
    "pool.waits",
    "pool.wait_p99_ms",
    "pool.timeouts",
    "servers.evicting",
    "leases.lost",
    "entities.active",
    "errors.conflict",
    "errors.fenced",
    "bytes.sent",
    "bytes.received",
];

/// How many entities [`PerformanceMonitor::hot_entities`] tracks.
const HOT_ENTITIES: usize = 32;

/// The entities whose writes conflicted most: a "space-saving" top-k counter (Metwally,
/// Agrawal and El Abbadi, 2005). An entity not tracked takes over the smallest counter
/// and adds one to its count, so memory stays at `HOT_ENTITIES` entries whatever the number
/// of entities; a count over-estimates by at most the count it took over, and any entity
/// with more than `1/HOT_ENTITIES` of all conflicts is always in the list. The counts add
/// up to the number of conflicts recorded.
#[derive(Debug, Default)]
struct HotEntities {
    counts: Vec<(String, u64)>,
}

impl HotEntities {
    fn record(&mut self, entity: &str) {
        if let Some((_, n)) = self.counts.iter_mut().find(|(e, _)| e == entity) {
            *n += 1;
        } else if self.counts.len() < HOT_ENTITIES {
            self.counts.push((entity.to_owned(), 1));
        } else if let Some((e, n)) = self.counts.iter_mut().min_by_key(|(_, n)| *n) {
            e.clear();
            e.push_str(entity);
            *n += 1;
        }
    }

    /// Most counted first; ties by name, so the order is stable.
    fn top(&self) -> Vec<(String, u64)> {
        let mut top = self.counts.clone();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }
}

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
    leases_acquired: AtomicU64,
    /// Active entities at the last count, plus one (0: never counted).
    active_entities: AtomicU64,
    stages: Box<[LatencyHistogram]>,
    gauges: RwLock<Option<Arc<dyn GaugeSource>>>,
    thresholds: RwLock<BTreeMap<String, f64>>,
    /// Touched only on conflicts, which are not the hot path: a lock is fine.
    hot: Mutex<HotEntities>,
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
                leases_acquired: AtomicU64::new(0),
                active_entities: AtomicU64::new(0),
                stages: Stage::ALL.iter().map(|_| LatencyHistogram::default()).collect(),
                gauges: RwLock::default(),
                thresholds: RwLock::default(),
                hot: Mutex::default(),
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
        let second = self.second(now);
        if failed {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            stats.failure_rate.add(second);
        }
        stats.rate.add(second);
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

    /// Counts a lease acquired.
    pub fn record_lease_acquired(&self) {
        self.inner.leases_acquired.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the active entities a presence count found.
    pub fn set_active_entities(&self, count: u64) {
        self.inner
            .active_entities
            .store(count.saturating_add(1), Ordering::Relaxed);
    }

    /// Counts a write to `entity` that conflicted (a compare-and-set, update attempt,
    /// transition or conditional delete that found another version).
    pub fn record_conflict(&self, entity: &str) {
        self.inner.hot.lock().unwrap_or_else(|p| p.into_inner()).record(entity);
    }

    /// The entities whose writes conflicted most, most conflicted first, with their
    /// counts: at most 32, tracked in bounded memory, so a count may over-estimate by the
    /// count of an entity it displaced; an entity with more than 1/32 of all conflicts is
    /// always listed. The counts add up to the conflicts recorded.
    pub fn hot_entities(&self) -> Vec<(String, u64)> {
        self.inner.hot.lock().unwrap_or_else(|p| p.into_inner()).top()
    }

    /// Records how long one sampled `stage` took.
    pub fn record_stage(&self, stage: Stage, duration: Duration) {
        self.inner.stages[stage.index()].record(duration);
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
        let (mut total_count, mut total_failures, mut total_rate, mut total_failure_rate) = (0, 0, 0.0, 0.0);
        let mut operations = Vec::new();
        let custom = self.inner.custom.read().unwrap_or_else(|p| p.into_inner()).clone();
        let named = Operation::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), &self.inner.operations[o.index()]))
            .chain(custom.iter().map(|(name, stats)| (name.clone(), &**stats)));
        for (name, stats) in named {
            // The count is the histogram's: one atomic add fewer per record.
            let latency = stats.latency.summary();
            let count = latency.count();
            if count == 0 {
                continue;
            }
            let failures = stats.failures.load(Ordering::Relaxed);
            let rate = stats.rate.rate(now, window);
            let failure_rate = stats.failure_rate.rate(now, window);
            total_latency.merge(&latency);
            total_count += count;
            total_failures += failures;
            total_rate += rate;
            total_failure_rate += failure_rate;
            operations.push(OperationSnapshot::of(
                &name,
                count,
                failures,
                (rate, failure_rate),
                &latency,
            ));
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
            total: OperationSnapshot::of(
                "total",
                total_count,
                total_failures,
                (total_rate, total_failure_rate),
                &total_latency,
            ),
            operations,
            errors,
            leases_lost: self.inner.leases_lost.load(Ordering::Relaxed),
            leases_acquired: self.inner.leases_acquired.load(Ordering::Relaxed),
            active_entities: self.inner.active_entities.load(Ordering::Relaxed).checked_sub(1),
            stages: Stage::ALL
                .iter()
                .filter_map(|&stage| {
                    let latency = self.inner.stages[stage.index()].summary();
                    (latency.count() > 0).then(|| StageSnapshot {
                        name: stage.as_str(),
                        count: latency.count(),
                        p50: latency.quantile(0.5),
                        p90: latency.quantile(0.9),
                        p99: latency.quantile(0.99),
                        max: latency.max(),
                        mean: latency.mean(),
                    })
                })
                .collect(),
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
    fn stages_entities_and_leases_show_in_snapshots() {
        let monitor = PerformanceMonitor::default();
        let s = monitor.snapshot();
        assert!(s.stages.is_empty());
        assert_eq!((s.active_entities, s.metric("entities.active")), (None, Some(0.0)));
        for ms in [1, 2, 3, 40] {
            monitor.record_stage(Stage::PoolWait, Duration::from_millis(ms));
        }
        monitor.record_stage(Stage::Serialization, Duration::from_micros(3));
        monitor.set_active_entities(0);
        monitor.set_active_entities(17);
        monitor.record_lease_acquired();
        let s = monitor.snapshot();
        let wait = s.stage(Stage::PoolWait).expect("pool wait timed");
        assert_eq!(wait.count, 4);
        assert!(
            wait.max >= Duration::from_millis(40) && wait.p50 < Duration::from_millis(3),
            "{wait:?}"
        );
        let p99 = s.metric("pool.wait_p99_ms").expect("named");
        assert!((40.0..=43.0).contains(&p99), "{p99}");
        assert_eq!(s.stage(Stage::Serialization).map(|s| s.count), Some(1));
        assert!(s.stage(Stage::QueueWait).is_none());
        assert_eq!((s.active_entities, s.metric("entities.active")), (Some(17), Some(17.0)));
        assert_eq!(s.leases_acquired, 1);
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
    fn hot_entities_keep_the_most_conflicted_in_bounded_memory() {
        let monitor = PerformanceMonitor::default();
        assert!(monitor.hot_entities().is_empty());
        for _ in 0..50 {
            monitor.record_conflict("hot-1");
        }
        for _ in 0..20 {
            monitor.record_conflict("hot-2");
        }
        // Many entities conflicting once each: more than the counter holds.
        for i in 0..200 {
            monitor.record_conflict(&format!("cold-{i}"));
        }
        let hot = monitor.hot_entities();
        assert_eq!(hot.len(), HOT_ENTITIES);
        assert_eq!(hot[0], ("hot-1".to_owned(), 50));
        assert_eq!(hot[1], ("hot-2".to_owned(), 20));
        assert!(hot.windows(2).all(|w| w[0].1 >= w[1].1), "{hot:?}");
        // Space-saving keeps the sum of the counts equal to the number of records.
        assert_eq!(hot.iter().map(|(_, n)| n).sum::<u64>(), 270);
        // Conflicts stay out of the snapshot's shape; the error counts are separate.
        assert!(monitor.snapshot().errors.is_empty());
    }

    #[test]
    fn indexes_follow_the_lists() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "{op:?}");
        }
        for (i, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(stage.index(), i, "{stage:?}");
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
