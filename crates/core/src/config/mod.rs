//! Configuration structs: defaults, validation naming the bad field, secrets redacted. One file
//! per section of [`ExecutorConfig`]; the checks they share are in `check`.

mod alerts;
mod batch;
mod check;
pub mod duration;
mod redis;
mod retry;
mod secret;
mod state;
mod telemetry;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::alerts::{Aggregation, AlertRule, AlertmanagerConfig, AlertsConfig, Comparison, Severity, WebhookConfig};
pub use self::batch::{BatchConfig, OverloadPolicy};
use self::check::{at_least, positive};
pub use self::redis::{PoolConfig, RedisConfig, RedisUrl};
pub use self::retry::RetryConfig;
pub use self::secret::Secret;
pub use self::state::{IdempotencyConfig, LeaseConfig, PresenceConfig, StateConfig};
pub use self::telemetry::{OtlpProtocol, TelemetryConfig};

/// An invalid configuration value: names the field, the value (redacted if secret) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} = {value}: {reason}")]
pub struct ConfigError {
    /// The field's dotted path, such as `redis.pool.max_size`.
    pub field: String,
    /// The value given, with any secret redacted.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error for `field` holding `value`.
    pub fn new(field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Everything the executor is built from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// Redis connection settings.
    pub redis: RedisConfig,
    /// Value storage settings.
    pub state: StateConfig,
    /// Batching into pipelines.
    pub batch: BatchConfig,
    /// Exactly-once message handling.
    pub idempotency: IdempotencyConfig,
    /// Ownership leases.
    pub leases: LeaseConfig,
    /// Presence of active entities.
    pub presence: PresenceConfig,
    /// Retries of operations that are safe to repeat.
    pub retry: RetryConfig,
    /// OpenTelemetry export over OTLP.
    pub telemetry: TelemetryConfig,
    /// Alert rules and notifiers (the alert crate).
    pub alerts: AlertsConfig,
}

impl ExecutorConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.state.validate()?;
        self.batch.validate()?;
        // The write script forgets ids in one call: keep the batch Lua can unpack.
        at_least("idempotency.keep", self.idempotency.keep, 1, 5_000)?;
        positive("idempotency.keep_for", self.idempotency.keep_for)?;
        if self.idempotency.keep_for > Duration::from_secs(10 * 365 * 24 * 3600) {
            return Err(ConfigError::new(
                "idempotency.keep_for",
                duration::format(self.idempotency.keep_for),
                "must be at most 10 years",
            ));
        }
        // Before the span they make: an error names what is out of range itself.
        if self.retry.backoff > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "retry.backoff",
                duration::format(self.retry.backoff),
                "must be at most 1 min",
            ));
        }
        at_least("retry.attempts", self.retry.attempts, 1, 100)?;
        // A retry of an `apply_once` that did apply must still find its id.
        let span = self.retry.span(self.redis.response_timeout);
        if self.idempotency.keep_for <= span {
            return Err(ConfigError::new(
                "idempotency.keep_for",
                duration::format(self.idempotency.keep_for),
                format!(
                    "must be longer than the span of a call and its retries ({}: retry.attempts × \
                     redis.response_timeout plus the retry.backoff pauses); a retry after a lost reply \
                     would otherwise find its message id forgotten and apply again",
                    duration::format(span)
                ),
            ));
        }
        let drift = self.leases.drift_factor;
        if !(0.0..0.5).contains(&drift) {
            return Err(ConfigError::new(
                "leases.drift_factor",
                drift,
                "must be from 0 to below 0.5",
            ));
        }
        if self.leases.drift_min > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "leases.drift_min",
                duration::format(self.leases.drift_min),
                "must be at most 10 s",
            ));
        }
        at_least("presence.shards", self.presence.shards, 1, 16_384)?;
        positive("presence.window", self.presence.window)?;
        self.telemetry.validate()?;
        self.alerts.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_field_and_value() {
        let mut config = ExecutorConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.redis.pool.max_size = 0;
        let err = config.validate().expect_err("max_size 0");
        assert_eq!(err.field, "redis.pool.max_size");
        assert_eq!(err.value, "0");
        config.redis.pool.max_size = 4;
        config.redis.pool.min_idle = 5;
        assert_eq!(config.validate().expect_err("min_idle").field, "redis.pool.min_idle");
        config.redis.pool.min_idle = 0;
        config.redis.response_timeout = Duration::ZERO;
        assert_eq!(config.validate().expect_err("timeout").field, "redis.response_timeout");
    }

    #[test]
    fn any_number_of_retry_attempts_validates_at_once() {
        // Found by the property tests: the span of four billion attempts was summed in a
        // loop, before the attempts were checked (minutes of validation).
        let mut config = ExecutorConfig::default();
        config.retry.attempts = u32::MAX;
        let err = config.validate().expect_err("too many attempts");
        assert_eq!(err.field, "retry.attempts");
        assert_eq!(config.retry.span(Duration::from_secs(1)), Duration::MAX);
        config.retry.backoff = Duration::ZERO;
        assert_eq!(
            config.retry.span(Duration::from_secs(1)),
            Duration::from_secs(u64::from(u32::MAX))
        );
        assert_eq!(
            RetryConfig::default().span(Duration::from_secs(1)),
            Duration::from_millis(3060)
        );
    }
}

#[cfg(test)]
mod proptests;
