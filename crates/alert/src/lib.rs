//! Alerting for stateful-redis: rules evaluated on the
//! [`PerformanceMonitor`](stateful_redis_metrics::PerformanceMonitor)'s snapshots, and
//! notifications of what fires and resolves to the log, a webhook or a Prometheus
//! Alertmanager.
//!
//! An [`AlertManager`] holds the rules of an [`AlertsConfig`]: a built-in set
//! ([`built_in_rules()`]) and your own [`AlertRule`]s, each a metric of
//! [`MetricsSnapshot::metric`](stateful_redis_metrics::MetricsSnapshot::metric) compared with a
//! threshold. A rule goes from inactive to pending when its condition holds, fires once it has
//! held for the rule's `for`, and resolves once the value is back past the threshold by the
//! configured hysteresis. Each episode is notified once when it fires and once when it
//! resolves; the Alertmanager also gets the firing alerts again every `resend_interval`, so
//! that it keeps them. Thresholds set with `PerformanceMonitor::set_alert_threshold` override
//! the rules' on the same metric, and get a rule of their own (`threshold:<metric>`) where no
//! rule covers the metric. [`AlertManager::reconfigure`] swaps rules and notifiers live.
//!
//! Notifications go through a bounded queue to one delivery task: an evaluation never waits
//! for a notifier. Posts are retried with backoff; failures are counted in [`AlertStats`]
//! and logged at most once a minute, without the URL or header values. `https://` goes over
//! rustls, trusting the system's roots, or only the notifier's `ca_file`; a failure
//! of TLS is logged as one ("TLS: certificate not trusted: set alerts.webhook.ca_file ...").
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use stateful_redis_alert::{AlertManager, AlertRule, AlertsConfig};
//! use stateful_redis_metrics::{Operation, PerformanceMonitor};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), stateful_redis_core::Error> {
//! let mut config = AlertsConfig::default();
//! config.default_rules = false;
//! config.rules.push(AlertRule::new("SlowCalls", "operations.p99_ms", 50.0));
//! let alerts = AlertManager::new(&config)?;
//!
//! let monitor = PerformanceMonitor::default();
//! monitor.record(Operation::Put, Duration::from_millis(80), None);
//! let transitions = alerts.evaluate(&monitor.snapshot(), &monitor.alert_thresholds(), Instant::now());
//! assert_eq!((transitions[0].rule.as_str(), transitions[0].to), ("SlowCalls", "firing"));
//! assert_eq!(alerts.alerts()[0].state, "firing");
//!
//! // In a service: `alerts.spawn(monitor.clone());` evaluates every `config.interval`.
//! alerts.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(alerts.stats().fired, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## Feature flags
//! - `http` (default): the webhook and Alertmanager notifiers, over reqwest. Without it only
//!   the log notifier is there, and [`AlertManager::new`] and [`AlertManager::reconfigure`]
//!   refuse a configuration that names a webhook or an Alertmanager with a
//!   [`ConfigError`](stateful_redis_core::ConfigError) for `alerts.webhook` or
//!   `alerts.alertmanager`.

mod built_in;
mod manager;
mod notify;
mod rule;
mod state;

pub use crate::built_in::built_in_rules;
pub use crate::manager::{AlertManager, AlertStats, AlertStatus};
pub use crate::state::{AlertState, Transition};
pub use stateful_redis_core::{
    Aggregation, AlertRule, AlertmanagerConfig, AlertsConfig, Comparison, Severity, WebhookConfig,
};
