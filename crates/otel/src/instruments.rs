//! The instruments: the operation-duration histogram on the hot path, the batch-size
//! histogram once per pipeline, and observers read at each collection.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry_semantic_conventions::{attribute as semattr, metric as semmetric};
use stateful_redis_core::Error;
use stateful_redis_metrics::{MetricsSnapshot, Operation, PerformanceMonitor, Stage};

use crate::Sources;
use crate::trace::Server;

/// The attribute naming the library's operation (`put`, `get`, …; ADR 010).
pub(crate) const OPERATION: &str = "stateful_redis.operation";

/// Bucket boundaries of `db.client.operation.duration`, in seconds: the conventions' from 1 ms
/// on, and below it down to 50 µs, where a pipelined operation on a near server lands.
pub(crate) const DURATION_BOUNDARIES_S: [f64; 22] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.002_5, 0.005, 0.007_5, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Pipeline sizes: powers of two up to the largest `batch.max_batch` worth measuring.
const BATCH_BOUNDARIES: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// One series of a histogram: fixed attributes, bound when the `bound-instruments` feature
/// says the SDK can bind (about 25 ns a record), else recorded with its attributes (the SDK
/// looks the series up on each record, about 160 ns).
pub(crate) struct Series<T> {
    #[cfg(feature = "bound-instruments")]
    bound: opentelemetry::metrics::BoundHistogram<T>,
    #[cfg(not(feature = "bound-instruments"))]
    histogram: Histogram<T>,
    #[cfg(not(feature = "bound-instruments"))]
    attributes: Box<[KeyValue]>,
}

impl<T: Clone> Series<T> {
    fn new(histogram: &Histogram<T>, attributes: &[KeyValue]) -> Self {
        Self {
            #[cfg(feature = "bound-instruments")]
            bound: histogram.bind(attributes),
            #[cfg(not(feature = "bound-instruments"))]
            histogram: histogram.clone(),
            #[cfg(not(feature = "bound-instruments"))]
            attributes: attributes.into(),
        }
    }

    #[inline]
    fn record(&self, value: T) {
        #[cfg(feature = "bound-instruments")]
        self.bound.record(value);
        #[cfg(not(feature = "bound-instruments"))]
        self.histogram.record(value, &self.attributes);
    }
}

/// `db.client.operation.duration`: one series per operation that succeeded (or answered, as
/// a conflict does), made on its first record (a bound series is exported even when it never
/// records); failures, which are rare and carry the error's attributes, are recorded unbound.
pub(crate) struct OpDurations {
    histogram: Histogram<f64>,
    /// Every series' attributes but the operation's.
    common: Vec<KeyValue>,
    /// `[operation]`.
    slots: Box<[OnceLock<Series<f64>>]>,
}

impl OpDurations {
    pub(crate) fn new(meter: &Meter, server: &Server) -> Self {
        let histogram = meter
            .f64_histogram(semmetric::DB_CLIENT_OPERATION_DURATION)
            .with_unit("s")
            .with_description("Duration of the executor's operations, from the call to its result.")
            .with_boundaries(DURATION_BOUNDARIES_S.to_vec())
            .build();
        let mut common = server.common.clone();
        common.push(KeyValue::new(semattr::DB_OPERATION_NAME, "EVALSHA"));
        let slots = Operation::ALL.iter().map(|_| OnceLock::new()).collect();
        Self {
            histogram,
            common,
            slots,
        }
    }

    fn attributes(&self, operation: Operation) -> Vec<KeyValue> {
        let mut attributes = self.common.clone();
        attributes.push(KeyValue::new(OPERATION, operation.as_str()));
        attributes
    }

    #[inline]
    pub(crate) fn record(&self, operation: Operation, duration: Duration, error: Option<&Error>) {
        match error.filter(|e| e.kind().is_failure()) {
            None => self.slots[operation.index()]
                .get_or_init(|| Series::new(&self.histogram, &self.attributes(operation)))
                .record(duration.as_secs_f64()),
            Some(e) => {
                let mut attributes = self.attributes(operation);
                attributes.push(KeyValue::new(semattr::ERROR_TYPE, e.kind().as_str()));
                if let Some(code) = e.response_code() {
                    attributes.push(KeyValue::new(semattr::DB_RESPONSE_STATUS_CODE, code.to_owned()));
                }
                self.histogram.record(duration.as_secs_f64(), &attributes);
            }
        }
    }
}

/// `stateful_redis.batch.size`: operations per pipeline sent.
pub(crate) struct BatchSizes(Series<u64>);

impl BatchSizes {
    pub(crate) fn new(meter: &Meter) -> Self {
        let histogram = meter
            .u64_histogram("stateful_redis.batch.size")
            .with_unit("{operation}")
            .with_description("Operations per pipeline sent to Redis.")
            .with_boundaries(BATCH_BOUNDARIES.to_vec())
            .build();
        Self(Series::new(
            &histogram,
            &[KeyValue::new(semattr::DB_SYSTEM_NAME, "redis")],
        ))
    }

    #[inline]
    pub(crate) fn record(&self, size: usize) {
        self.0.record(size as u64);
    }
}

/// Boundaries for the sampled stages, in seconds: from a microsecond (a codec call) to ten
/// seconds (a pool wait near its timeout).
const STAGE_BOUNDARIES_S: [f64; 16] = [
    0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    10.0,
];

/// The histograms of the sampled [`Stage`]s, one bound series each.
pub(crate) struct StageDurations(Box<[Series<f64>]>);

impl StageDurations {
    pub(crate) fn new(meter: &Meter, pool_name: &str) -> Self {
        let series = Stage::ALL
            .iter()
            .map(|&stage| {
                let (name, description) = match stage {
                    Stage::QueueWait => (
                        "stateful_redis.queue.wait",
                        "Time a sampled operation (1 in 64) waited in the batcher's queue before a pipeline took it.",
                    ),
                    Stage::Serialization => (
                        "stateful_redis.serialization.duration",
                        "Time a sampled value (1 in 64) took to encode or decode with its codec.",
                    ),
                    Stage::Compression => (
                        "stateful_redis.compression.duration",
                        "Time a sampled value (1 in 64) took to compress or decompress.",
                    ),
                    Stage::PoolWait => (
                        semmetric::DB_CLIENT_CONNECTION_WAIT_TIME,
                        "Time it took to obtain a connection from the exclusive pool.",
                    ),
                    _ => ("stateful_redis.stage.duration", "Time of a sampled stage."),
                };
                let histogram = meter
                    .f64_histogram(name)
                    .with_unit("s")
                    .with_description(description)
                    .with_boundaries(STAGE_BOUNDARIES_S.to_vec())
                    .build();
                let attributes = match stage {
                    Stage::PoolWait => vec![KeyValue::new(
                        semattr::DB_CLIENT_CONNECTION_POOL_NAME,
                        pool_name.to_owned(),
                    )],
                    _ => vec![KeyValue::new(semattr::DB_SYSTEM_NAME, "redis")],
                };
                Series::new(&histogram, &attributes)
            })
            .collect();
        Self(series)
    }

    #[inline]
    pub(crate) fn record(&self, stage: Stage, duration: Duration) {
        self.0[stage.index()].record(duration.as_secs_f64());
    }
}

/// One snapshot per collection, shared by every observer (they run one after another on the
/// reader's thread, so a snapshot a few milliseconds old is the same collection's).
struct Snapshots {
    monitor: PerformanceMonitor,
    last: Mutex<Option<(Instant, Arc<MetricsSnapshot>)>>,
}

impl Snapshots {
    fn get(&self) -> Arc<MetricsSnapshot> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, snapshot)) if at.elapsed() < Duration::from_millis(250) => Arc::clone(snapshot),
            _ => {
                let snapshot = Arc::new(self.monitor.snapshot());
                *last = Some((Instant::now(), Arc::clone(&snapshot)));
                snapshot
            }
        }
    }
}

/// Registers every observable instrument. Their handles may be dropped: the callbacks stay
/// registered with the meter provider.
pub(crate) fn register_observers(meter: &Meter, sources: &Sources) {
    let snapshots = Arc::new(Snapshots {
        monitor: sources.monitor.clone(),
        last: Mutex::new(None),
    });
    let pool = KeyValue::new(
        semattr::DB_CLIENT_CONNECTION_POOL_NAME,
        format!("{}:{}", sources.server_address, sources.server_port),
    );

    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_counter("stateful_redis.operations")
        .with_unit("{operation}")
        .with_description("Operations finished, whatever their outcome.")
        .with_callback(move |obs| {
            let snapshot = s.get();
            for op in &snapshot.operations {
                obs.observe(op.count, &[KeyValue::new(OPERATION, op.name.clone())]);
            }
        })
        .build();
    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_counter("stateful_redis.operation.failures")
        .with_unit("{operation}")
        .with_description("Operations that failed (timeouts, connection, server and data errors; not conflicts).")
        .with_callback(move |obs| {
            let snapshot = s.get();
            for op in &snapshot.operations {
                obs.observe(op.failures, &[KeyValue::new(OPERATION, op.name.clone())]);
            }
        })
        .build();
    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_counter("stateful_redis.errors")
        .with_unit("{error}")
        .with_description(
            "Errors returned to callers, by kind: failures and expected answers (conflict, not_found, fenced) alike.",
        )
        .with_callback(move |obs| {
            for (kind, n) in &s.get().errors {
                obs.observe(*n, &[KeyValue::new(semattr::ERROR_TYPE, *kind)]);
            }
        })
        .build();
    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_counter("stateful_redis.conflicts")
        .with_unit("{conflict}")
        .with_description("Writes refused because the version moved (CAS conflicts).")
        .with_callback(move |obs| {
            obs.observe(s.get().errors.get("conflict").copied().unwrap_or(0), &[]);
        })
        .build();

    // Figures owned by the batcher, the pool and the leases, read through the monitor's gauges.
    type Read = fn(&MetricsSnapshot) -> u64;
    let counters: [(&str, &str, &str, Read); 8] = [
        ("stateful_redis.batches", "{batch}", "Pipelines sent to Redis.", |s| {
            s.gauges.batches
        }),
        (
            "stateful_redis.batch.operations",
            "{operation}",
            "Operations sent in pipelines.",
            |s| s.gauges.batched_operations,
        ),
        (
            "stateful_redis.rejected",
            "{operation}",
            "Operations refused by a full queue (batch.overload = reject, or wait past its deadline).",
            |s| s.gauges.rejected,
        ),
        (
            "stateful_redis.dropped",
            "{operation}",
            "Queued operations dropped for newer ones (batch.overload = drop_oldest).",
            |s| s.gauges.dropped,
        ),
        (
            "stateful_redis.retries",
            "{operation}",
            "Calls sent again after an unknown outcome (only calls that are safe to repeat).",
            |s| s.gauges.retries,
        ),
        (
            "stateful_redis.script.reloads",
            "{script}",
            "Scripts loaded again after NOSCRIPT.",
            |s| s.gauges.script_reloads,
        ),
        (
            "stateful_redis.leases.lost",
            "{lease}",
            "Leases a guard lost (expired or taken before renewal).",
            |s| s.leases_lost,
        ),
        ("stateful_redis.leases.acquired", "{lease}", "Leases acquired.", |s| {
            s.leases_acquired
        }),
    ];
    for (name, unit, description, read) in counters {
        let s = Arc::clone(&snapshots);
        let _ = meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |obs| obs.observe(read(&s.get()), &[]))
            .build();
    }
    let gauges: [(&str, &str, &str, Read); 5] = [
        (
            "stateful_redis.queue.depth",
            "{operation}",
            "Operations waiting in the batcher's queues.",
            |s| s.gauges.queue_depth,
        ),
        (
            "stateful_redis.queue.capacity",
            "{operation}",
            "The most operations the batcher's queues hold, all queues together.",
            |s| s.gauges.queue_capacity,
        ),
        (
            "stateful_redis.in_flight",
            "{operation}",
            "Operations admitted and not finished.",
            |s| s.gauges.in_flight,
        ),
        (
            "stateful_redis.pipelines.in_flight",
            "{batch}",
            "Pipelines sent and not yet answered.",
            |s| s.gauges.pipelines_in_flight,
        ),
        (
            "stateful_redis.connections",
            "{connection}",
            "Connections open to Redis: pipeline links and the exclusive pool.",
            |s| s.gauges.connections,
        ),
    ];
    for (name, unit, description, read) in gauges {
        let s = Arc::clone(&snapshots);
        let _ = meter
            .u64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |obs| obs.observe(read(&s.get()), &[]))
            .build();
    }

    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_gauge("stateful_redis.entities.active")
        .with_unit("{entity}")
        .with_description("Active entities at the last presence count (reported once one was counted).")
        .with_callback(move |obs| {
            if let Some(n) = s.get().active_entities {
                obs.observe(n, &[]);
            }
        })
        .build();
    let s = Arc::clone(&snapshots);
    let _ = meter
        .u64_observable_counter("stateful_redis.bytes")
        .with_unit("By")
        .with_description("Bytes written to and read from Redis on the pipeline links, by direction.")
        .with_callback(move |obs| {
            let g = &s.get().gauges;
            obs.observe(g.bytes_sent, &[KeyValue::new("direction", "sent")]);
            obs.observe(g.bytes_received, &[KeyValue::new("direction", "received")]);
        })
        .build();

    // The exclusive pool, under the semantic conventions' connection metrics.
    let (s, p) = (Arc::clone(&snapshots), pool.clone());
    let _ = meter
        .i64_observable_up_down_counter(semmetric::DB_CLIENT_CONNECTION_COUNT)
        .with_unit("{connection}")
        .with_description("Connections of the exclusive pool, idle and in use.")
        .with_callback(move |obs| {
            let g = &s.get().gauges;
            obs.observe(
                g.connections_idle as i64,
                &[p.clone(), KeyValue::new(semattr::DB_CLIENT_CONNECTION_STATE, "idle")],
            );
            obs.observe(
                g.connections_used as i64,
                &[p.clone(), KeyValue::new(semattr::DB_CLIENT_CONNECTION_STATE, "used")],
            );
        })
        .build();
    let pool_levels: [(&str, &str, &str, Read); 3] = [
        (
            "stateful_redis.servers.evicting",
            "{server}",
            "Servers whose maxmemory-policy may evict keys (redis.allow_eviction): leases and exactly-once are at risk.",
            |s| s.gauges.evicting_servers,
        ),
        (
            semmetric::DB_CLIENT_CONNECTION_MAX,
            "{connection}",
            "The most connections the exclusive pool may open.",
            |s| s.gauges.pool_max_size,
        ),
        (
            semmetric::DB_CLIENT_CONNECTION_PENDING_REQUESTS,
            "{request}",
            "Callers waiting for an exclusive connection.",
            |s| s.gauges.pool_waiters,
        ),
    ];
    for (name, unit, description, read) in pool_levels {
        let (s, p) = (Arc::clone(&snapshots), pool.clone());
        let _ = meter
            .i64_observable_up_down_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |obs| obs.observe(read(&s.get()) as i64, std::slice::from_ref(&p)))
            .build();
    }
    let pool_counts: [(&str, &str, &str, Read); 2] = [
        (
            semmetric::DB_CLIENT_CONNECTION_TIMEOUTS,
            "{timeout}",
            "Exclusive-connection checkouts that timed out.",
            |s| s.gauges.pool_timeouts,
        ),
        (
            "stateful_redis.pool.waits",
            "{request}",
            "Exclusive-connection checkouts that had to wait.",
            |s| s.gauges.pool_waits,
        ),
    ];
    for (name, unit, description, read) in pool_counts {
        let (s, p) = (Arc::clone(&snapshots), pool.clone());
        let _ = meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |obs| obs.observe(read(&s.get()), std::slice::from_ref(&p)))
            .build();
    }

    register_process(meter, sources);
}

/// Process CPU and memory, and the Tokio runtime's live tasks.
fn register_process(meter: &Meter, sources: &Sources) {
    use nix::sys::resource::{UsageWho, getrusage};
    let _ = meter
        .f64_observable_counter(semmetric::PROCESS_CPU_TIME)
        .with_unit("s")
        .with_description("CPU time of this process, user and system.")
        .with_callback(|obs| {
            if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
                let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
                obs.observe(secs(usage.user_time()), &[KeyValue::new(semattr::CPU_MODE, "user")]);
                obs.observe(secs(usage.system_time()), &[KeyValue::new(semattr::CPU_MODE, "system")]);
            }
        })
        .build();
    let _ = meter
        .i64_observable_up_down_counter(semmetric::PROCESS_MEMORY_USAGE)
        .with_unit("By")
        .with_description("Resident memory of this process.")
        .with_callback(|obs| {
            if let Some(bytes) = resident_bytes() {
                obs.observe(bytes, &[]);
            }
        })
        .build();
    if let Some(handle) = sources.runtime.clone() {
        let _ = meter
            .u64_observable_gauge("stateful_redis.runtime.tasks")
            .with_unit("{task}")
            .with_description("Live tasks of the Tokio runtime the executor was built in.")
            .with_callback(move |obs| obs.observe(handle.metrics().num_alive_tasks() as u64, &[]))
            .build();
    }
}

/// VmRSS from `/proc/self/status` (Linux), in bytes.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<i64>()
        .ok()?;
    Some(kb * 1024)
}
