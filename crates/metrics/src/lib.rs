//! Measurement for stateful-redis: what every operation did, at the cost of a few atomic
//! adds, and snapshots of it for code in the same process.
//!
//! The [`PerformanceMonitor`] aggregates locally — lock-free log-linear latency histograms
//! ([`LatencyHistogram`], buckets at most 3.125 % wide), counts, failures, errors by kind and
//! per-second rates — and [`PerformanceMonitor::snapshot`] turns that into a
//! [`MetricsSnapshot`]: counts per operation, rates over a sliding window, p50/p90/p99/max,
//! failure rates, and the pool, queue and batch gauges of a [`GaugeSource`]. Thresholds for
//! alerts are set with [`PerformanceMonitor::set_alert_threshold`] on validated names.
//!
//! ```
//! use std::time::Duration;
//! use stateful_redis_metrics::{Operation, PerformanceMonitor};
//!
//! let monitor = PerformanceMonitor::default();
//! monitor.record(Operation::Put, Duration::from_micros(250), None);
//! monitor.record_operation("my-step", Duration::from_millis(3), true);
//! monitor.set_alert_threshold("operations.p99_ms", 50.0)?;
//! let snapshot = monitor.snapshot();
//! assert_eq!(snapshot.operation("put").map(|p| p.count), Some(1));
//! assert_eq!(snapshot.total.count, 2);
//! # Ok::<(), stateful_redis_core::Error>(())
//! ```
//!
//! ## Feature flags
//! None.

mod histogram;
mod monitor;

pub use crate::histogram::{LatencyHistogram, LatencySummary};
pub use crate::monitor::{
    ALERT_METRICS, GaugeSource, Gauges, MetricsSnapshot, Operation, OperationSnapshot, PerformanceMonitor, Stage,
    StageSnapshot,
};
