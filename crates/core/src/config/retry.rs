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
    pub fn span(&self, response_timeout: Duration) -> Duration {
        let mut span = Duration::ZERO;
        let mut pause = self.backoff;
        for attempt in 0..self.attempts {
            span = span.saturating_add(response_timeout);
            if attempt + 1 < self.attempts {
                span = span.saturating_add(pause);
                pause = pause.saturating_mul(2);
            }
        }
        span
    }
}
