//! The advisor's analysis: a pure function from the figures of one moment (the monitor's snapshot,
//! the pool, batcher and script statistics, the configuration) to [`Suggestion`]s with
//! their evidence. No I/O, no executor: [`super`] gathers the figures.

use std::collections::BTreeMap;
use std::time::Duration;

use stateful_redis_batch::BatchStats;
use stateful_redis_core::{ErrorKind, ExecutorConfig, OverloadPolicy, Severity, duration};
use stateful_redis_metrics::{MetricsSnapshot, Stage};
use stateful_redis_pool::PoolStats;
use stateful_redis_scripts::ScriptStats;

/// What a finding is about.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// The exclusive connection pool (`redis.pool`).
    Pool,
    /// Pipelines and their sizes (`batch.max_batch`).
    Batching,
    /// The batcher's queues: depth, refusals, drops (`batch.queue_capacity`, `batch.overload`).
    Queue,
    /// Value compression (`state.compress_above`).
    Compression,
    /// Writers conflicting on the same entities.
    Contention,
    /// The Lua scripts in the server's script cache.
    Scripts,
    /// Slow replies and unreachable servers (`redis.response_timeout`).
    Timeouts,
    /// Operations that failed.
    Errors,
}

/// One finding of the advisor: what was seen, the figures it rests on, and what to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestion {
    /// What it is about.
    pub area: Area,
    /// How much it matters.
    pub severity: Severity,
    /// What was measured, in a sentence: "callers waited for an exclusive connection 412
    /// times; p99 wait 38.0 ms; 8 of 8 connections in use now".
    pub finding: String,
    /// The figures it is based on, by name.
    pub evidence: BTreeMap<&'static str, f64>,
    /// The change to make, concretely: "raise redis.pool.max_size from 8 to 16".
    pub change: String,
    /// The configuration field and the value proposed, when the change is one setting:
    /// `("redis.pool.max_size", "16")`.
    pub setting: Option<(&'static str, String)>,
    /// Whether the advisor (`optimize_connection_pool`, `optimize_lua_scripts`) applies it.
    pub automatic: bool,
}

impl Suggestion {
    fn new(area: Area, severity: Severity, finding: String, change: String) -> Self {
        Self {
            area,
            severity,
            finding,
            evidence: BTreeMap::new(),
            change,
            setting: None,
            automatic: false,
        }
    }

    fn with_evidence(mut self, name: &'static str, value: f64) -> Self {
        self.evidence.insert(name, value);
        self
    }

    fn with_setting(mut self, field: &'static str, value: impl ToString) -> Self {
        self.setting = Some((field, value.to_string()));
        self
    }

    fn applied_by_advisor(mut self) -> Self {
        self.automatic = true;
        self
    }
}

/// Cumulative counters at the advisor's last change (zeros before any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Baseline {
    pub(super) pool_waits: u64,
    pub(super) pool_timeouts: u64,
    pub(super) script_reloads: u64,
}

// Thresholds. Each rule fires only with enough evidence behind it.

/// A pool larger than the default `max_size` with nothing in use could be smaller.
const IDLE_POOL: u32 = 8;
/// Fewer pipelines than this say nothing about batch sizes.
const MIN_BATCHES: u64 = 100;
/// Pipelines this full on average (share of `batch.max_batch`): the cap, not the load, sets their size.
const FULL_BATCH: f64 = 0.9;
/// The largest `batch.max_batch` proposed: a bigger pipeline delays the replies of all its callers.
const MAX_PROPOSED_BATCH: usize = 1024;
/// The largest `batch.queue_capacity` the configuration accepts.
const MAX_QUEUE_CAPACITY: usize = 10_000_000;
/// Queues fuller than this share of their capacity are falling behind: one burst from refusing work.
const QUEUE_SATURATION: f64 = 0.5;
/// Fewer operations than this say nothing about value sizes.
const MIN_OPERATIONS: u64 = 100;
/// Bytes sent per operation above this: values of several KiB, which LZ4 shrinks well.
const LARGE_VALUE: f64 = 4096.0;
/// The `state.compress_above` proposed: below about 1 KiB, LZ4 saves little.
const COMPRESS_ABOVE: usize = 1024;
/// A `state.compress_above` below this compresses values too small to gain.
const SMALL_COMPRESS_ABOVE: usize = 512;
/// Compression costing this many times the serialization costs more than it saves on small values.
const COMPRESSION_COST: f64 = 4.0;
/// Fewer timed samples than this give no reliable mean.
const MIN_STAGE_SAMPLES: u64 = 16;
/// Fewer conditional writes than this say nothing about contention.
const MIN_WRITES: u64 = 50;
/// Conflicts on more than this share of conditional writes: writers contend on the same entities.
const CONFLICT_RATE: f64 = 0.01;
/// Entities a contention finding names.
const TOP_ENTITIES: usize = 5;
/// A p99 above this share of `redis.response_timeout`: slow calls are close to timing out.
const SLOW_SHARE: f64 = 0.5;
/// Failures above this share of calls over the window: callers see errors.
const FAILURE_RATE: f64 = 0.01;

/// Everything the advisor looks at, taken at one moment.
#[derive(Debug)]
pub(super) struct Inputs<'a> {
    pub(super) snapshot: MetricsSnapshot,
    pub(super) pool: PoolStats,
    pub(super) batch: BatchStats,
    pub(super) scripts: ScriptStats,
    pub(super) config: &'a ExecutorConfig,
    /// The monitor's hot entities, most conflicted first.
    pub(super) hot_entities: Vec<(String, u64)>,
    pub(super) baseline: Baseline,
}

/// The analysis proper: a pure function of the figures.
pub(super) fn analyze(input: &Inputs<'_>) -> Vec<Suggestion> {
    let mut out = Vec::new();
    pool_rule(input, &mut out);
    batching_rule(input, &mut out);
    queue_rule(input, &mut out);
    compression_rule(input, &mut out);
    contention_rule(input, &mut out);
    scripts_rule(input, &mut out);
    timeouts_rule(input, &mut out);
    errors_rule(input, &mut out);
    // Most urgent first; the sort is stable, so the rules' order holds within a severity.
    out.sort_by_key(|s| std::cmp::Reverse(s.severity));
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stage_p99_ms(snapshot: &MetricsSnapshot, stage: Stage) -> f64 {
    snapshot.stage(stage).map_or(0.0, |s| ms(s.p99))
}

fn error_count(snapshot: &MetricsSnapshot, kind: &str) -> u64 {
    snapshot.errors.get(kind).copied().unwrap_or(0)
}

/// Exclusive checkouts waited: raise `max_size`. A large pool with nothing in use: lower it.
fn pool_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let p = &input.pool;
    let configured = &input.config.redis.pool;
    let max = if p.max_size > 0 {
        p.max_size
    } else {
        configured.max_size
    };
    let limit = configured.max_size_limit;
    let waits = p.waits.saturating_sub(input.baseline.pool_waits);
    let timeouts = p.timeouts.saturating_sub(input.baseline.pool_timeouts);
    let p99 = stage_p99_ms(&input.snapshot, Stage::PoolWait);
    if waits > 0 || timeouts > 0 {
        let severity = if timeouts > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let finding = format!(
            "callers waited for an exclusive connection {waits} times ({timeouts} gave up); p99 wait \
             {p99:.1} ms; {} of {max} connections in use now, {} callers waiting",
            p.in_use, p.waiters
        );
        let suggestion = if max < limit {
            let to = max.saturating_mul(2).min(limit);
            Suggestion::new(
                Area::Pool,
                severity,
                finding,
                format!("raise redis.pool.max_size from {max} to {to}"),
            )
            .with_setting("redis.pool.max_size", to)
            .applied_by_advisor()
        } else {
            let to = limit.saturating_mul(2);
            Suggestion::new(
                Area::Pool,
                severity,
                finding,
                format!(
                    "the pool is at redis.pool.max_size_limit ({limit}): raise the limit (to {to}, say), \
                     or hold exclusive connections for less time"
                ),
            )
            .with_setting("redis.pool.max_size_limit", to)
        };
        out.push(
            suggestion
                .with_evidence("pool.waits", waits as f64)
                .with_evidence("pool.timeouts", timeouts as f64)
                .with_evidence("pool.wait_p99_ms", p99)
                .with_evidence("pool.in_use", f64::from(p.in_use))
                .with_evidence("pool.waiters", p.waiters as f64)
                .with_evidence("pool.max_size", f64::from(max))
                .with_evidence("pool.max_size_limit", f64::from(limit)),
        );
    } else if max > IDLE_POOL && p.in_use == 0 && p.waiters == 0 {
        let to = (max - max.div_ceil(4)).max(configured.min_idle.max(1));
        if to < max {
            out.push(
                Suggestion::new(
                    Area::Pool,
                    Severity::Info,
                    format!("no caller waited for an exclusive connection, and none of the {max} is in use now"),
                    format!(
                        "could lower redis.pool.max_size from {max} to {to} (optimize_connection_pool does, once \
                         two calls in a row see at most half the connections in use)"
                    ),
                )
                .with_setting("redis.pool.max_size", to)
                .applied_by_advisor()
                .with_evidence("pool.waits", 0.0)
                .with_evidence("pool.in_use", 0.0)
                .with_evidence("pool.max_size", f64::from(max))
                .with_evidence("pool.connections", f64::from(p.connections)),
            );
        }
    }
}

/// Pipelines leave full: the cap, not the load, sets their size.
fn batching_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let b = &input.batch;
    let max_batch = input.config.batch.max_batch;
    if b.batches < MIN_BATCHES || max_batch >= MAX_PROPOSED_BATCH {
        return;
    }
    let average = b.sent as f64 / b.batches as f64;
    if average < FULL_BATCH * max_batch as f64 {
        return;
    }
    let to = max_batch.saturating_mul(2).min(MAX_PROPOSED_BATCH);
    out.push(
        Suggestion::new(
            Area::Batching,
            Severity::Info,
            format!(
                "pipelines leave full: {average:.0} operations on average (largest {}) with batch.max_batch \
                 {max_batch}, over {} pipelines",
                b.max_batch, b.batches
            ),
            format!("raise batch.max_batch from {max_batch} to {to}: fewer, larger pipelines for the same load"),
        )
        .with_setting("batch.max_batch", to)
        .with_evidence("batches", b.batches as f64)
        .with_evidence("batch.average", average)
        .with_evidence("batch.largest", b.max_batch as f64)
        .with_evidence("batch.max_batch", max_batch as f64)
        .with_evidence("queue.wait_p99_ms", stage_p99_ms(&input.snapshot, Stage::QueueWait)),
    );
}

/// Work refused or dropped by full queues, or queues filling up.
fn queue_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let g = &input.snapshot.gauges;
    let (rejected, dropped) = (input.batch.rejected, input.batch.dropped);
    let saturation = if g.queue_capacity == 0 {
        0.0
    } else {
        g.queue_depth as f64 / g.queue_capacity as f64
    };
    if rejected == 0 && dropped == 0 && saturation <= QUEUE_SATURATION {
        return;
    }
    let batch = &input.config.batch;
    let capacity = batch.queue_capacity;
    let to = capacity.saturating_mul(2).min(MAX_QUEUE_CAPACITY);
    let finding = if rejected > 0 || dropped > 0 {
        format!(
            "the batcher's queues were full: {rejected} operations refused and {dropped} dropped; {:.0} % \
             full now ({} of {})",
            saturation * 100.0,
            g.queue_depth,
            g.queue_capacity
        )
    } else {
        format!(
            "the batcher's queues are {:.0} % full ({} of {} operations): Redis or the links are behind \
             the callers",
            saturation * 100.0,
            g.queue_depth,
            g.queue_capacity
        )
    };
    let change = match batch.overload {
        OverloadPolicy::Wait => format!(
            "raise batch.queue_capacity from {capacity} to {to} (or batch.wait_deadline), and find why Redis \
             answers slower than callers send"
        ),
        _ => format!(
            "raise batch.queue_capacity from {capacity} to {to}, or use batch.overload = \"wait\" so that \
             callers wait for room instead of failing"
        ),
    };
    out.push(
        Suggestion::new(Area::Queue, Severity::Warning, finding, change)
            .with_setting("batch.queue_capacity", to)
            .with_evidence("queue.rejected", rejected as f64)
            .with_evidence("queue.dropped", dropped as f64)
            .with_evidence("queue.depth", g.queue_depth as f64)
            .with_evidence("queue.capacity", g.queue_capacity as f64)
            .with_evidence("queue.saturation", saturation)
            .with_evidence("queue.wait_p99_ms", stage_p99_ms(&input.snapshot, Stage::QueueWait)),
    );
}

/// Large values sent uncompressed; or compression of values too small to gain.
fn compression_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let g = &input.snapshot.gauges;
    match input.config.state.compress_above {
        None => {
            if g.batched_operations < MIN_OPERATIONS {
                return;
            }
            let per_operation = g.bytes_sent as f64 / g.batched_operations as f64;
            if per_operation <= LARGE_VALUE {
                return;
            }
            let feature = if cfg!(feature = "compression") {
                "the `compression` feature is on in this build"
            } else {
                "needs the `compression` feature, which this build lacks"
            };
            out.push(
                Suggestion::new(
                    Area::Compression,
                    Severity::Info,
                    format!(
                        "operations send {per_operation:.0} bytes each on average, uncompressed (over {} \
                         operations)",
                        g.batched_operations
                    ),
                    format!(
                        "set state.compress_above = {COMPRESS_ABOVE} to compress larger values with LZ4 ({feature})"
                    ),
                )
                .with_setting("state.compress_above", COMPRESS_ABOVE)
                .with_evidence("bytes.sent", g.bytes_sent as f64)
                .with_evidence("operations", g.batched_operations as f64)
                .with_evidence("bytes_per_operation", per_operation),
            );
        }
        Some(threshold) if threshold < SMALL_COMPRESS_ABOVE => {
            let snapshot = &input.snapshot;
            let (Some(compression), Some(serialization)) =
                (snapshot.stage(Stage::Compression), snapshot.stage(Stage::Serialization))
            else {
                return;
            };
            if compression.count < MIN_STAGE_SAMPLES || serialization.count < MIN_STAGE_SAMPLES {
                return;
            }
            let (c, s) = (compression.mean.as_secs_f64(), serialization.mean.as_secs_f64());
            if s <= 0.0 || c <= s * COMPRESSION_COST {
                return;
            }
            out.push(
                Suggestion::new(
                    Area::Compression,
                    Severity::Info,
                    format!(
                        "compression takes {:.1} µs per value on average, {:.1} times the serialization \
                         ({:.1} µs), with state.compress_above = {threshold}",
                        c * 1e6,
                        c / s,
                        s * 1e6
                    ),
                    format!(
                        "raise state.compress_above from {threshold} to {COMPRESS_ABOVE}: small values gain \
                         little from compression"
                    ),
                )
                .with_setting("state.compress_above", COMPRESS_ABOVE)
                .with_evidence("compression.mean_us", c * 1e6)
                .with_evidence("serialization.mean_us", s * 1e6)
                .with_evidence("state.compress_above", threshold as f64),
            );
        }
        Some(_) => {}
    }
}

/// Conditional writes conflicting: name the entities writers contend on.
fn contention_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let snapshot = &input.snapshot;
    let writes: u64 = ["cas", "update", "transition", "delete_if"]
        .iter()
        .filter_map(|name| snapshot.operation(name))
        .map(|o| o.count)
        .sum();
    // Calls that ended in a conflict, or every conflicting attempt (update retries too) as
    // the hot entities counted them, whichever is more.
    let answered = error_count(snapshot, "conflict") + error_count(snapshot, "too_many_conflicts");
    let attempts: u64 = input.hot_entities.iter().map(|(_, n)| n).sum();
    let conflicts = answered.max(attempts);
    if writes < MIN_WRITES || input.hot_entities.is_empty() || conflicts as f64 <= CONFLICT_RATE * writes as f64 {
        return;
    }
    let rate = conflicts as f64 / writes as f64;
    let top: Vec<String> = input
        .hot_entities
        .iter()
        .take(TOP_ENTITIES)
        .map(|(entity, n)| format!("{entity:?} ({n})"))
        .collect();
    let top_count = input.hot_entities.first().map_or(0, |(_, n)| *n);
    out.push(
        Suggestion::new(
            Area::Contention,
            Severity::Warning,
            format!(
                "{conflicts} conflicts for {writes} conditional writes ({:.1} %), most on {}",
                rate * 100.0,
                top.join(", ")
            ),
            "spread writes to these entities (shard the entity) or use update() which retries".to_owned(),
        )
        .with_evidence("conflicts", conflicts as f64)
        .with_evidence("writes", writes as f64)
        .with_evidence("conflict_rate", rate)
        .with_evidence("top_entity_conflicts", top_count as f64),
    );
}

/// The server lost the scripts: load them ahead of traffic.
fn scripts_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let reloads = input.scripts.reloads.saturating_sub(input.baseline.script_reloads);
    if reloads == 0 {
        return;
    }
    out.push(
        Suggestion::new(
            Area::Scripts,
            Severity::Info,
            format!(
                "{reloads} scripts were loaded again after NOSCRIPT replies: the server's script cache was \
                 emptied (a restart, SCRIPT FLUSH or a failover), and each cost operations a SCRIPT LOAD and \
                 a resend"
            ),
            "load the scripts on every node ahead of traffic with optimize_lua_scripts(), after a restart \
             or failover"
                .to_owned(),
        )
        .applied_by_advisor()
        .with_evidence("scripts.reloads", reloads as f64)
        .with_evidence("scripts.preloads", input.scripts.preloads as f64),
    );
}

/// Timeouts with a p99 near the timeout; connection errors.
fn timeouts_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let snapshot = &input.snapshot;
    let timeouts = error_count(snapshot, "timeout");
    let response_timeout = input.config.redis.response_timeout;
    let p99 = snapshot.total.p99;
    if timeouts > 0 && p99.as_secs_f64() > SLOW_SHARE * response_timeout.as_secs_f64() {
        let to = response_timeout.saturating_mul(2);
        out.push(
            Suggestion::new(
                Area::Timeouts,
                Severity::Warning,
                format!(
                    "{timeouts} operations timed out, and the p99 latency ({:.1} ms) is over half of \
                     redis.response_timeout ({})",
                    ms(p99),
                    duration::format(response_timeout)
                ),
                format!(
                    "raise redis.response_timeout from {} to {}, or find what slows the server (SLOWLOG, \
                     large values, CPU, network)",
                    duration::format(response_timeout),
                    duration::format(to)
                ),
            )
            .with_setting("redis.response_timeout", duration::format(to))
            .with_evidence("errors.timeout", timeouts as f64)
            .with_evidence("operations.p99_ms", ms(p99))
            .with_evidence("redis.response_timeout_ms", ms(response_timeout)),
        );
    }
    let connection = error_count(snapshot, "connection");
    if connection > 0 {
        out.push(
            Suggestion::new(
                Area::Timeouts,
                Severity::Warning,
                format!("{connection} operations failed to reach Redis (connection refused, reset or lost)"),
                "check the server: is it up and reachable, and does it accept more connections (maxclients)?"
                    .to_owned(),
            )
            .with_evidence("errors.connection", connection as f64),
        );
    }
}

/// Failures over the window, with the kinds seen.
fn errors_rule(input: &Inputs<'_>, out: &mut Vec<Suggestion>) {
    let snapshot = &input.snapshot;
    let rate = snapshot.total.window_failure_rate;
    if rate <= FAILURE_RATE {
        return;
    }
    let failing: Vec<(&'static str, u64)> = snapshot
        .errors
        .iter()
        .filter(|(name, _)| is_failure(name))
        .map(|(name, n)| (*name, *n))
        .collect();
    let kinds = if failing.is_empty() {
        "no failure kind recorded".to_owned()
    } else {
        failing
            .iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut suggestion = Suggestion::new(
        Area::Errors,
        Severity::Warning,
        format!(
            "{:.1} % of operations failed over the last {} s; failures since the start by kind: {kinds}",
            rate * 100.0,
            snapshot.window.as_secs()
        ),
        "look at the failing kinds: timeouts and connection errors point at the server or the network, \
         overloaded and dropped at the queues, script and server errors at Redis's log"
            .to_owned(),
    )
    .with_evidence("failure_rate", rate)
    .with_evidence("operations_per_sec", snapshot.total.rate_per_sec);
    for (name, n) in failing {
        suggestion = suggestion.with_evidence(name, n as f64);
    }
    out.push(suggestion);
}

/// Whether the error kind named `name` is a failure rather than an expected answer.
fn is_failure(name: &str) -> bool {
    ErrorKind::ALL
        .iter()
        .any(|kind| kind.as_str() == name && kind.is_failure())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use stateful_redis_metrics::{GaugeSource, Gauges, Operation, PerformanceMonitor};

    use super::*;

    /// Gauges chosen by the test.
    struct Fixed(Gauges);

    impl GaugeSource for Fixed {
        fn gauges(&self) -> Gauges {
            self.0.clone()
        }
    }

    /// An executor's figures, without the executor.
    struct Case {
        monitor: PerformanceMonitor,
        pool: PoolStats,
        batch: BatchStats,
        scripts: ScriptStats,
        config: ExecutorConfig,
        baseline: Baseline,
    }

    impl Case {
        /// A healthy executor: quick successful operations, small batches, an idle pool.
        fn quiet() -> Self {
            let monitor = PerformanceMonitor::default();
            for _ in 0..500 {
                monitor.record(Operation::Put, Duration::from_micros(300), None);
                monitor.record(Operation::Get, Duration::from_micros(200), None);
            }
            let mut pool = PoolStats::default();
            pool.max_size = 8;
            pool.connections = 2;
            pool.idle = 2;
            let mut batch = BatchStats::default();
            batch.submitted = 1000;
            batch.sent = 1000;
            batch.batches = 400;
            batch.max_batch = 9;
            Self {
                monitor,
                pool,
                batch,
                scripts: ScriptStats::default(),
                config: ExecutorConfig::default(),
                baseline: Baseline::default(),
            }
        }

        fn gauges(&self, gauges: Gauges) {
            self.monitor.set_gauge_source(Arc::new(Fixed(gauges)));
        }

        fn analyze(&self) -> Vec<Suggestion> {
            analyze(&Inputs {
                snapshot: self.monitor.snapshot(),
                pool: self.pool.clone(),
                batch: self.batch.clone(),
                scripts: self.scripts,
                config: &self.config,
                hot_entities: self.monitor.hot_entities(),
                baseline: self.baseline,
            })
        }
    }

    fn of(suggestions: &[Suggestion], area: Area) -> Vec<&Suggestion> {
        suggestions.iter().filter(|s| s.area == area).collect()
    }

    #[test]
    fn a_quiet_executor_gets_no_suggestions() {
        let case = Case::quiet();
        assert_eq!(case.analyze(), Vec::new());
        // Gauges of a healthy executor change nothing.
        let mut g = Gauges::default();
        g.batched_operations = 1000;
        g.bytes_sent = 200_000;
        g.queue_depth = 3;
        g.queue_capacity = 10_000;
        case.gauges(g);
        assert_eq!(case.analyze(), Vec::new());
    }

    #[test]
    fn pool_waits_propose_doubling_max_size() {
        let mut case = Case::quiet();
        case.pool.waits = 5;
        case.pool.in_use = 8;
        case.pool.waiters = 2;
        case.monitor.record_stage(Stage::PoolWait, Duration::from_millis(38));
        let suggestions = case.analyze();
        let pool = of(&suggestions, Area::Pool);
        assert_eq!(pool.len(), 1, "{suggestions:?}");
        let pool = pool[0];
        assert_eq!(pool.setting, Some(("redis.pool.max_size", "16".to_owned())));
        assert!(pool.automatic);
        assert_eq!(pool.severity, Severity::Warning);
        assert_eq!(pool.evidence.get("pool.waits"), Some(&5.0));
        assert_eq!(pool.evidence.get("pool.max_size"), Some(&8.0));
        assert!(pool.evidence.get("pool.wait_p99_ms").is_some_and(|&p99| p99 >= 38.0));
        assert!(pool.finding.contains("5 times"), "{}", pool.finding);
        assert!(pool.change.contains("from 8 to 16"), "{}", pool.change);

        // Timeouts make it critical, and it comes first.
        case.pool.timeouts = 1;
        case.batch.rejected = 3;
        let suggestions = case.analyze();
        assert_eq!(suggestions[0].area, Area::Pool);
        assert_eq!(suggestions[0].severity, Severity::Critical);

        // At the limit, the limit is what to raise, and the advisor cannot.
        case.config.redis.pool.max_size_limit = 8;
        let suggestions = case.analyze();
        let pool = of(&suggestions, Area::Pool)[0];
        assert_eq!(pool.setting, Some(("redis.pool.max_size_limit", "16".to_owned())));
        assert!(!pool.automatic);

        // Waits the advisor already answered count no more.
        case.baseline.pool_waits = 5;
        case.baseline.pool_timeouts = 1;
        assert!(of(&case.analyze(), Area::Pool).is_empty());
    }

    #[test]
    fn a_large_idle_pool_could_be_smaller() {
        let mut case = Case::quiet();
        case.pool.max_size = 32;
        let suggestions = case.analyze();
        let pool = of(&suggestions, Area::Pool);
        assert_eq!(pool.len(), 1, "{suggestions:?}");
        assert_eq!(pool[0].severity, Severity::Info);
        assert_eq!(pool[0].setting, Some(("redis.pool.max_size", "24".to_owned())));
    }

    #[test]
    fn conflicts_name_the_hot_entities() {
        let case = Case::quiet();
        for _ in 0..100 {
            case.monitor.record(Operation::Cas, Duration::from_micros(300), None);
        }
        for _ in 0..10 {
            case.monitor
                .record(Operation::Cas, Duration::from_micros(300), Some(ErrorKind::Conflict));
        }
        for _ in 0..9 {
            case.monitor.record_conflict("dev-7");
        }
        case.monitor.record_conflict("dev-2");
        let suggestions = case.analyze();
        let contention = of(&suggestions, Area::Contention);
        assert_eq!(contention.len(), 1, "{suggestions:?}");
        let finding = &contention[0].finding;
        let (hot, other) = (finding.find("\"dev-7\" (9)"), finding.find("\"dev-2\" (1)"));
        assert!(hot.is_some() && other.is_some() && hot < other, "{finding}");
        assert_eq!(contention[0].evidence.get("conflicts"), Some(&10.0));
        assert_eq!(contention[0].evidence.get("writes"), Some(&110.0));
    }

    #[test]
    fn rare_conflicts_are_not_contention() {
        let case = Case::quiet();
        for _ in 0..1000 {
            case.monitor.record(Operation::Cas, Duration::from_micros(300), None);
        }
        case.monitor
            .record(Operation::Cas, Duration::from_micros(300), Some(ErrorKind::Conflict));
        case.monitor.record_conflict("dev-7");
        assert!(of(&case.analyze(), Area::Contention).is_empty());
    }

    #[test]
    fn large_uncompressed_values_suggest_compression() {
        let case = Case::quiet();
        let mut g = Gauges::default();
        g.batched_operations = 1000;
        g.bytes_sent = 8_000_000;
        case.gauges(g);
        let suggestions = case.analyze();
        let compression = of(&suggestions, Area::Compression);
        assert_eq!(compression.len(), 1, "{suggestions:?}");
        assert_eq!(
            compression[0].setting,
            Some(("state.compress_above", "1024".to_owned()))
        );
        assert_eq!(compression[0].evidence.get("bytes_per_operation"), Some(&8000.0));
    }

    #[test]
    fn full_pipelines_suggest_a_larger_max_batch() {
        let mut case = Case::quiet();
        case.batch.batches = 200;
        case.batch.sent = 200 * 120;
        case.batch.max_batch = 128;
        let suggestions = case.analyze();
        let batching = of(&suggestions, Area::Batching);
        assert_eq!(batching.len(), 1, "{suggestions:?}");
        assert_eq!(batching[0].setting, Some(("batch.max_batch", "256".to_owned())));
    }

    #[test]
    fn refused_work_and_full_queues_are_reported() {
        let mut case = Case::quiet();
        case.batch.rejected = 4;
        let suggestions = case.analyze();
        let queue = of(&suggestions, Area::Queue);
        assert_eq!(queue.len(), 1, "{suggestions:?}");
        assert_eq!(queue[0].setting, Some(("batch.queue_capacity", "20000".to_owned())));
        assert_eq!(queue[0].evidence.get("queue.rejected"), Some(&4.0));

        let case = Case::quiet();
        let mut g = Gauges::default();
        g.queue_depth = 6_000;
        g.queue_capacity = 10_000;
        case.gauges(g);
        let suggestions = case.analyze();
        let queue = of(&suggestions, Area::Queue);
        assert_eq!(queue.len(), 1, "{suggestions:?}");
        assert_eq!(queue[0].evidence.get("queue.saturation"), Some(&0.6));
    }

    #[test]
    fn slow_timeouts_suggest_a_longer_response_timeout() {
        let case = Case::quiet();
        for _ in 0..30 {
            case.monitor
                .record(Operation::Put, Duration::from_millis(900), Some(ErrorKind::Timeout));
        }
        let suggestions = case.analyze();
        let timeouts = of(&suggestions, Area::Timeouts);
        assert_eq!(timeouts.len(), 1, "{suggestions:?}");
        assert_eq!(timeouts[0].setting, Some(("redis.response_timeout", "2s".to_owned())));
        assert_eq!(timeouts[0].evidence.get("errors.timeout"), Some(&30.0));
    }

    #[test]
    fn script_reloads_suggest_preloading_until_the_advisor_did() {
        let mut case = Case::quiet();
        case.scripts.reloads = 3;
        let suggestions = case.analyze();
        let scripts = of(&suggestions, Area::Scripts);
        assert_eq!(scripts.len(), 1, "{suggestions:?}");
        assert!(scripts[0].automatic);
        case.baseline.script_reloads = 3;
        assert!(of(&case.analyze(), Area::Scripts).is_empty());
    }

    #[test]
    fn suggestions_serialize_with_snake_case_areas() {
        let mut case = Case::quiet();
        case.pool.waits = 1;
        let suggestions = case.analyze();
        let json = serde_json::to_value(&suggestions).expect("serializes");
        assert_eq!(json[0]["area"], "pool");
        assert_eq!(json[0]["setting"][0], "redis.pool.max_size");
    }
}
