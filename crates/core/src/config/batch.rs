//! The `[batch]` section: how operations are queued and batched into pipelines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::positive;
use super::{ConfigError, duration};

/// What a full queue does with one more operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// Wait for room up to `wait_deadline`, then fail with `Overloaded` (the default).
    #[default]
    Wait,
    /// Fail at once with `Overloaded`.
    Reject,
    /// Make room by dropping the oldest queued operation; its caller gets `Dropped`.
    DropOldest,
}

/// Batching of operations into pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most operations in one pipeline (default 128).
    pub max_batch: usize,
    /// How long a busy connection may wait for a fuller batch (default 0: never; a lone
    /// caller never waits whatever this is).
    #[serde(with = "duration")]
    pub linger: Duration,
    /// Most operations queued per connection (default 10,000).
    pub queue_capacity: usize,
    /// Pipelines in flight per connection (default 2: with more, batches get smaller and the
    /// writes more, for no more throughput; measured with `cargo xtask bench`).
    pub pipelines_in_flight: usize,
    /// What a full queue does.
    pub overload: OverloadPolicy,
    /// With `overload = "wait"`: the longest wait for room (default 1 s).
    #[serde(with = "duration")]
    pub wait_deadline: Duration,
    /// Most calls of one pipeline sent as one bundle, one `EVALSHA` of the `many` script
    /// (default 64): it applies them one after another, each atomic and answered on its own,
    /// and costs the server less than an `EVALSHA` each. Not used on a cluster (a slot in
    /// migration refuses bundles whose keys are split). 1 sends every call as its own
    /// `EVALSHA`. Also read under its former name, `calls_per_run`.
    #[serde(alias = "calls_per_run")]
    pub calls_per_bundle: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 128,
            linger: Duration::ZERO,
            queue_capacity: 10_000,
            pipelines_in_flight: 2,
            overload: OverloadPolicy::Wait,
            wait_deadline: Duration::from_secs(1),
            calls_per_bundle: 64,
        }
    }
}

impl BatchConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range = |field: &str, value: usize, min: usize, max: usize| {
            if value < min || value > max {
                return Err(ConfigError::new(field, value, format!("must be from {min} to {max}")));
            }
            Ok(())
        };
        in_range("batch.max_batch", self.max_batch, 1, 10_000)?;
        in_range("batch.queue_capacity", self.queue_capacity, 1, 10_000_000)?;
        in_range("batch.pipelines_in_flight", self.pipelines_in_flight, 1, 1_000)?;
        in_range("batch.calls_per_bundle", self.calls_per_bundle, 1, 1_000)?;
        if self.linger > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "batch.linger",
                duration::format(self.linger),
                "must be at most 1 s",
            ));
        }
        positive("batch.wait_deadline", self.wait_deadline)
    }
}
