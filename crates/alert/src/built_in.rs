//! The built-in alert rules, the same as the Prometheus rules in
//! [`dashboards/prometheus-rules.yml`][rules].
//!
//! [rules]: https://github.com/stateful-redis/stateful-redis/blob/main/dashboards/prometheus-rules.yml

use std::time::Duration;

use stateful_redis_core::{Aggregation, AlertRule, Severity};

/// The built-in rules, the same as the Prometheus rules in
/// [`dashboards/prometheus-rules.yml`][rules]. An
/// [`AlertManager`](crate::AlertManager) evaluates them unless
/// [`AlertsConfig::default_rules`](stateful_redis_core::AlertsConfig::default_rules) is off; a
/// configured rule with the name of a built-in one replaces it.
///
/// [rules]: https://github.com/stateful-redis/stateful-redis/blob/main/dashboards/prometheus-rules.yml
pub fn built_in_rules() -> Vec<AlertRule> {
    use Aggregation::{Rate, Value};
    use Severity::{Critical, Warning};
    vec![
        rule(
            "StatefulRedisHighFailureRate",
            "operations.failure_rate",
            Value,
            0.05,
            60,
            Critical,
            "More than 5 % of operations fail",
        ),
        rule(
            "StatefulRedisHighLatencyP99",
            "operations.p99_ms",
            Value,
            100.0,
            120,
            Warning,
            "p99 operation latency above 100 ms",
        ),
        rule(
            "StatefulRedisPoolWaits",
            "pool.waiters",
            Value,
            0.0,
            60,
            Warning,
            "Callers wait for an exclusive connection",
        ),
        rule(
            "StatefulRedisQueueSaturated",
            "queue.saturation",
            Value,
            0.8,
            30,
            Warning,
            "The batch queue is over 80 % full",
        ),
        rule(
            "StatefulRedisDroppedOperations",
            "operations.dropped",
            Rate,
            0.0,
            0,
            Critical,
            "Queued operations are being dropped",
        ),
        rule(
            "StatefulRedisRejectedOperations",
            "operations.rejected",
            Rate,
            0.0,
            0,
            Warning,
            "Operations are refused by a full queue",
        ),
        rule(
            "StatefulRedisLeasesLost",
            "leases.lost",
            Rate,
            0.0,
            0,
            Critical,
            "Ownership leases are being lost",
        ),
        rule(
            "StatefulRedisScriptReloads",
            "scripts.reloads",
            Rate,
            0.1,
            300,
            Warning,
            "Scripts are reloaded after NOSCRIPT",
        ),
    ]
}

/// A built-in rule: `>` the threshold, no labels of its own.
fn rule(
    name: &str,
    metric: &str,
    aggregation: Aggregation,
    threshold: f64,
    for_secs: u64,
    severity: Severity,
    summary: &str,
) -> AlertRule {
    let mut rule = AlertRule::new(name, metric, threshold);
    rule.aggregation = aggregation;
    rule.for_duration = Duration::from_secs(for_secs);
    rule.severity = severity;
    rule.summary = summary.to_owned();
    rule
}

#[cfg(test)]
mod tests {
    use stateful_redis_core::AlertsConfig;

    use super::*;

    #[test]
    fn built_in_alert_rules_are_valid() {
        let rules = built_in_rules();
        assert_eq!(rules.len(), 8);
        let mut config = AlertsConfig::default();
        config.rules = rules.clone();
        assert_eq!(config.validate(), Ok(()));
        let drops = rules
            .iter()
            .find(|r| r.name == "StatefulRedisDroppedOperations")
            .expect("built in");
        assert_eq!(
            (drops.aggregation, drops.severity),
            (Aggregation::Rate, Severity::Critical)
        );
        let p99 = rules
            .iter()
            .find(|r| r.name == "StatefulRedisHighLatencyP99")
            .expect("built in");
        assert_eq!((p99.threshold, p99.for_duration), (100.0, Duration::from_secs(120)));
    }
}
