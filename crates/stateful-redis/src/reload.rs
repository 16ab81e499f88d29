//! New settings while running: [`StatefulExecutor::apply_config`] takes what can change
//! live.

use stateful_redis_core::{Error, ExecutorConfig};

use crate::executor::StatefulExecutor;

/// What [`StatefulExecutor::apply_config`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigChange {
    /// The sections taken live: `alerts`, `batch`, `redis.pool`.
    pub applied: Vec<&'static str>,
    /// Settings that differ but only take effect on a new executor (a restart); they keep
    /// their running values.
    pub restart_needed: Vec<String>,
}

impl StatefulExecutor {
    /// Takes the settings of `next` that can change while running, after validating all of
    /// it (on error nothing changes): the alert rules, thresholds and notifiers
    /// (`alerts`), the batch settings (`batch`: max batch, linger, queue capacity,
    /// pipelines in flight, overload policy), and the exclusive pool's size, limit and
    /// checkout timeout (`redis.pool`). Other differences (the Redis URL, timeouts, value
    /// storage, leases, telemetry, …) are listed in [`ConfigChange::restart_needed`] and
    /// logged; they need a new executor.
    pub fn apply_config(&self, next: &ExecutorConfig) -> Result<ConfigChange, Error> {
        next.validate()?;
        let inner = &self.inner;
        // After shutdown the pool refuses changes: refuse them all, before any applies.
        if inner.is_closed() {
            return Err(Error::Shutdown);
        }
        let mut current = inner.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut change = ConfigChange::default();
        // Alerts first: they validate metric names, which `validate` cannot.
        if next.alerts != current.alerts {
            inner.alerts.reconfigure(&next.alerts)?;
            change.applied.push("alerts");
        }
        if next.batch != current.batch {
            inner.reconfigure_batch(&next.batch)?;
            change.applied.push("batch");
        }
        if next.redis.pool != current.redis.pool {
            let fixed = inner.pool.apply(&next.redis.pool)?;
            change.applied.push("redis.pool");
            change.restart_needed.extend(fixed.into_iter().map(str::to_owned));
        }
        let mut fixed_parts = Vec::new();
        let (a, b) = (&current, next);
        if a.redis.url.expose() != b.redis.url.expose() {
            fixed_parts.push("redis.url");
        }
        if a.redis.cluster != b.redis.cluster {
            fixed_parts.push("redis.cluster");
        }
        if a.redis
            .seeds
            .iter()
            .map(|s| s.expose())
            .ne(b.redis.seeds.iter().map(|s| s.expose()))
        {
            fixed_parts.push("redis.seeds");
        }
        if a.redis.tls_ca_file != b.redis.tls_ca_file {
            fixed_parts.push("redis.tls_ca_file");
        }
        if a.redis.connect_timeout != b.redis.connect_timeout {
            fixed_parts.push("redis.connect_timeout");
        }
        if a.redis.response_timeout != b.redis.response_timeout {
            fixed_parts.push("redis.response_timeout");
        }
        for (name, differs) in [
            ("state", a.state != b.state),
            ("idempotency", a.idempotency != b.idempotency),
            ("leases", a.leases != b.leases),
            ("presence", a.presence != b.presence),
            ("retry", a.retry != b.retry),
        ] {
            if differs {
                fixed_parts.push(name);
            }
        }
        if a.telemetry != b.telemetry {
            // The sampling ratio changes live; anything else about telemetry needs a restart.
            let mut rest = b.telemetry.clone();
            rest.sample_ratio = a.telemetry.sample_ratio;
            let ratio_changed = a.telemetry.sample_ratio != b.telemetry.sample_ratio;
            let ratio_applied = ratio_changed
                && b.telemetry
                    .sample_ratio
                    .is_some_and(|r| crate::telemetry::set_sample_ratio(&inner.telemetry, r));
            if ratio_applied {
                change.applied.push("telemetry.sample_ratio");
            } else if ratio_changed {
                fixed_parts.push("telemetry.sample_ratio");
            }
            if rest != a.telemetry {
                fixed_parts.push("telemetry");
            }
        }
        let ratio_applied = change.applied.contains(&"telemetry.sample_ratio");
        change.restart_needed.extend(fixed_parts.into_iter().map(str::to_owned));
        if !change.restart_needed.is_empty() {
            tracing::warn!(
                settings = %change.restart_needed.join(", "),
                "changed settings that only a restart applies; they keep their running values"
            );
        }
        // What runs now: the new live sections, the old values of the rest.
        current.alerts = next.alerts.clone();
        current.batch = next.batch.clone();
        current.redis.pool = inner.pool.config();
        if ratio_applied {
            current.telemetry.sample_ratio = next.telemetry.sample_ratio;
        }
        if !change.applied.is_empty() {
            tracing::info!(sections = %change.applied.join(", "), "configuration applied live");
        }
        Ok(change)
    }

    /// The configuration running now: as built, with every change
    /// [`apply_config`](Self::apply_config) took live.
    pub fn live_config(&self) -> ExecutorConfig {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
