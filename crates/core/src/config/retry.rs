//! The `[retry]` section: retries of operations whose outcome is unknown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Retries of operations whose outcome is unknown (timeouts, broken connections).
/// Only operations that are safe to repeat are retried: reads, `apply_once` (same message
/// id), fenced writes, lease renewals and presence calls. Plain writes, lease acquires and
/// releases are never re-sent: their callers get the unknown outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 3; 1 turns retries off).
    pub attempts: u32,
    /// Pause before the first retry, doubled for each next one (default 20 ms).
    #[serde(with = "duration")]
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(20),
        }
    }
}

impl RetryConfig {
    /// The longest a call and its retries can take with `response_timeout` per attempt: every
    /// attempt's timeout plus the doubling pauses between them. A message id must be
    /// remembered at least this long, or a retry of a write that did apply would apply again.
    ///
    /// In closed form, in nanoseconds, saturating at `Duration::MAX`: `attempts` may be any
    /// u32 here (`validate` calls it), and a loop over four billion attempts takes minutes.
    pub fn span(&self, response_timeout: Duration) -> Duration {
        let waits = response_timeout.as_nanos() * u128::from(self.attempts);
        // backoff, 2 × backoff, 4 × backoff … between the attempts: backoff × (2^(n−1) − 1).
        let pauses = match self.attempts.saturating_sub(1) {
            _ if self.backoff.is_zero() => 0,
            // 2^100 ns is past Duration::MAX.
            n if n >= 100 => u128::MAX,
            n => self.backoff.as_nanos().saturating_mul((1u128 << n) - 1),
        };
        let total = waits.saturating_add(pauses);
        u64::try_from(total / 1_000_000_000).map_or(Duration::MAX, |secs| {
            Duration::new(secs, (total % 1_000_000_000) as u32)
        })
    }
}
