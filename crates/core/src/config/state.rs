//! The sections on an entity's data: its stored value (`[state]`), the message ids `apply_once`
//! remembers (`[idempotency]`), ownership leases (`[leases]`) and presence (`[presence]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::at_least;
use super::{ConfigError, duration};

/// How state values are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StateConfig {
    /// Largest encoded value accepted, in bytes (default 512 KiB).
    pub max_value_size: usize,
    /// Compress values larger than this many bytes (default: off). Needs the `compression`
    /// feature; compressed values always decode, whatever this setting.
    pub compress_above: Option<usize>,
    /// Attempts `update` makes before giving up on conflicts (default 32).
    pub update_max_attempts: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_value_size: 512 * 1024,
            compress_above: None,
            update_max_attempts: 32,
        }
    }
}

impl StateConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Redis bulk strings stop at 512 MiB.
        if self.max_value_size == 0 || self.max_value_size > 512 * 1024 * 1024 {
            return Err(ConfigError::new(
                "state.max_value_size",
                self.max_value_size,
                "must be from 1 byte to 512 MiB",
            ));
        }
        if let Some(0) = self.compress_above {
            return Err(ConfigError::new("state.compress_above", 0, "must be at least 1 byte"));
        }
        at_least("state.update_max_attempts", self.update_max_attempts, 1, 100_000)
    }
}

/// Exactly-once message handling (`apply_once`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// Most message ids remembered per entity (default 128); older ones are forgotten first.
    pub keep: u32,
    /// Longest a message id is remembered (default 24 h).
    #[serde(with = "duration")]
    pub keep_for: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            keep: 128,
            keep_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// Ownership leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// Share of the ttl subtracted from a lease's validity for clock drift (default 0.01).
    pub drift_factor: f64,
    /// Fixed time subtracted from a lease's validity (default 2 ms).
    #[serde(with = "duration")]
    pub drift_min: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            drift_factor: 0.01,
            drift_min: Duration::from_millis(2),
        }
    }
}

/// Presence of active entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PresenceConfig {
    /// Shards (sorted sets, each under its own hash tag) entities spread over (default 16).
    /// Changing it moves entities to other shards: change it only with presence empty.
    pub shards: u32,
    /// An entity is active while its last heartbeat is this recent (default 30 s).
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            shards: 16,
            window: Duration::from_secs(30),
        }
    }
}
