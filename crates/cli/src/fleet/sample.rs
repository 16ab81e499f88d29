//! The run's timeline: one sample of every instance's figures a second, the chaos marks,
//! and the advisor's latest suggestions; the dashboard draws it and the report keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use stateful_redis::Suggestion;

use super::instance::{Control, Life, Op};

/// One instance at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct InstanceSample {
    pub(crate) name: String,
    pub(crate) life: Life,
    pub(crate) held: u64,
    pub(crate) acquired: u64,
    pub(crate) lost: u64,
    pub(crate) taken_over: u64,
    pub(crate) fenced: u64,
}

/// An alert rule not inactive, on one instance's executor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct AlertSample {
    pub(crate) rule: String,
    pub(crate) state: String,
    pub(crate) instance: String,
}

/// The fleet at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Sample {
    /// Seconds since the run started.
    pub(crate) t: f64,
    /// Operations per second since the previous sample, by operation.
    pub(crate) rates: BTreeMap<&'static str, f64>,
    /// All operations per second.
    pub(crate) total_rate: f64,
    /// Latency over the executors' window: the median of their p50s, the highest p99.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Failed operations since the start, by error kind, all instances.
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) in_flight: u64,
    pub(crate) queue_depth: u64,
    pub(crate) connections: u64,
    pub(crate) connections_used: u64,
    pub(crate) pool_waiters: u64,
    pub(crate) instances: Vec<InstanceSample>,
    /// Devices with a heartbeat within the presence window.
    pub(crate) active_devices: Option<u64>,
    pub(crate) alerts: Vec<AlertSample>,
}

impl Sample {
    /// Leases held by all instances.
    pub(crate) fn held(&self) -> u64 {
        self.instances.iter().map(|i| i.held).sum()
    }
}

/// Something the run did to the fleet, at a moment.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Mark {
    pub(crate) t: f64,
    pub(crate) what: String,
}

/// Everything recorded over the run.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Timeline {
    pub(crate) samples: Vec<Sample>,
    pub(crate) marks: Vec<Mark>,
    pub(crate) suggestions: Vec<Suggestion>,
}

/// Takes samples: remembers the counts of the previous one to turn them into rates.
#[derive(Debug)]
pub(crate) struct Sampler {
    started: Instant,
    last_t: f64,
    last: BTreeMap<&'static str, u64>,
}

impl Sampler {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            last_t: 0.0,
            last: BTreeMap::new(),
        }
    }

    pub(crate) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub(crate) fn sample(&mut self, controls: &[Arc<Control>], active_devices: Option<u64>) -> Sample {
        let t = self.elapsed();
        let dt = (t - self.last_t).max(1e-3);
        let mut rates = BTreeMap::new();
        let mut total_rate = 0.0;
        for op in Op::ALL {
            let count: u64 = controls.iter().map(|c| c.stats.op(op)).sum();
            let previous = self.last.insert(op.name(), count).unwrap_or(0);
            let rate = count.saturating_sub(previous) as f64 / dt;
            total_rate += rate;
            rates.insert(op.name(), rate);
        }
        self.last_t = t;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut instances = Vec::new();
        let mut p50s = Vec::new();
        let mut p99_ms: f64 = 0.0;
        let (mut in_flight, mut queue_depth, mut connections, mut connections_used, mut pool_waiters) = (0, 0, 0, 0, 0);
        let mut alerts = Vec::new();
        for control in controls {
            let stats = &control.stats;
            for (kind, n) in stats.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                *errors.entry((*kind).to_owned()).or_default() += n;
            }
            instances.push(InstanceSample {
                name: control.name.clone(),
                life: control.life(),
                held: stats.held.load(Ordering::Relaxed),
                acquired: stats.acquired.load(Ordering::Relaxed),
                lost: stats.lost.load(Ordering::Relaxed),
                taken_over: stats.taken_over.load(Ordering::Relaxed),
                fenced: stats.fenced.load(Ordering::Relaxed),
            });
            if control.life() != Life::Running {
                continue;
            }
            let Some(exec) = control.executor() else { continue };
            let snapshot = exec.snapshot();
            if snapshot.total.count > 0 {
                p50s.push(snapshot.total.p50.as_secs_f64() * 1e3);
                p99_ms = p99_ms.max(snapshot.total.p99.as_secs_f64() * 1e3);
            }
            let g = &snapshot.gauges;
            in_flight += g.in_flight;
            queue_depth += g.queue_depth;
            connections += g.connections;
            connections_used += g.connections_used;
            pool_waiters += g.pool_waiters;
            for alert in exec.alerts().alerts() {
                if alert.state != "inactive" {
                    alerts.push(AlertSample {
                        rule: alert.rule,
                        state: alert.state.to_owned(),
                        instance: control.name.clone(),
                    });
                }
            }
        }
        p50s.sort_by(f64::total_cmp);
        let p50_ms = p50s.get(p50s.len() / 2).copied().unwrap_or(0.0);
        Sample {
            t,
            rates,
            total_rate,
            p50_ms,
            p99_ms,
            errors,
            in_flight,
            queue_depth,
            connections,
            connections_used,
            pool_waiters,
            instances,
            active_devices,
            alerts,
        }
    }
}

/// The advisor's suggestions of every running instance, one per finding.
pub(crate) fn suggestions(controls: &[Arc<Control>]) -> Vec<Suggestion> {
    let mut seen = std::collections::BTreeSet::new();
    let mut all = Vec::new();
    for control in controls {
        if control.life() != Life::Running {
            continue;
        }
        if let Some(exec) = control.executor() {
            for suggestion in exec.optimization_suggestions() {
                if seen.insert(suggestion.finding.clone()) {
                    all.push(suggestion);
                }
            }
        }
    }
    all
}
