//! Rules ready to evaluate: the built-in set merged with the configured one, metric names
//! checked against `ALERT_METRICS`, labels merged.

use std::collections::BTreeMap;
use std::time::Duration;

use stateful_redis_core::{Aggregation, AlertRule, AlertsConfig, Comparison, ConfigError, Severity};
use stateful_redis_metrics::ALERT_METRICS;

use crate::built_in::built_in_rules;

/// One rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) metric: String,
    /// Compare the counter's increase per second rather than its value.
    pub(crate) rate: bool,
    pub(crate) comparison: Comparison,
    pub(crate) threshold: f64,
    pub(crate) for_duration: Duration,
    pub(crate) severity: Severity,
    pub(crate) summary: String,
    /// The config's labels, then the rule's, then `alertname` and `severity`.
    pub(crate) labels: BTreeMap<String, String>,
}

impl Rule {
    fn compile(rule: &AlertRule, common: &BTreeMap<String, String>) -> Self {
        let mut labels = common.clone();
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".to_owned(), rule.name.clone());
        labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
        Self {
            name: rule.name.clone(),
            metric: rule.metric.clone(),
            rate: rule.aggregation == Aggregation::Rate,
            comparison: rule.comparison,
            threshold: rule.threshold,
            for_duration: rule.for_duration,
            severity: rule.severity,
            summary: rule.summary.clone(),
            labels,
        }
    }

    /// The rule for a threshold set on a metric that no rule covers: `threshold:<metric>`,
    /// `>`, at once, `warning`.
    pub(crate) fn ad_hoc(metric: &str, threshold: f64, common: &BTreeMap<String, String>) -> Self {
        let mut rule = AlertRule::new(format!("threshold:{metric}"), metric, threshold);
        rule.summary = format!("{metric} above its threshold");
        Self::compile(&rule, common)
    }

    /// Whether a firing alert keeps firing at `value`: the condition still holds against the
    /// threshold moved by `hysteresis` (a share of it) toward resolving. With threshold 0 the
    /// level is the threshold itself.
    pub(crate) fn keeps_firing(&self, value: f64, threshold: f64, hysteresis: f64) -> bool {
        // The magnitude, so that a negative threshold moves the same way as a positive one.
        let margin = threshold.abs() * hysteresis;
        let level = if self.comparison.is_upper() {
            threshold - margin
        } else {
            threshold + margin
        };
        self.comparison.holds(value, level)
    }
}

/// Whether `metric` is one a snapshot can answer.
pub(crate) fn known_metric(metric: &str) -> bool {
    ALERT_METRICS.contains(&metric)
}

/// The rules of `config`, validated: the built-in ones if `default_rules` (a configured rule
/// with the same name replaces one in place), then the other configured ones, in order.
pub(crate) fn compile(config: &AlertsConfig) -> Result<Vec<Rule>, ConfigError> {
    config.validate()?;
    for (i, rule) in config.rules.iter().enumerate() {
        if !known_metric(&rule.metric) {
            return Err(ConfigError::new(
                format!("alerts.rules[{i}].metric"),
                format!("{:?}", rule.metric),
                format!("unknown metric; known: {}", ALERT_METRICS.join(", ")),
            ));
        }
    }
    let mut rules = if config.default_rules {
        built_in_rules()
    } else {
        Vec::new()
    };
    for rule in &config.rules {
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(built_in) => *built_in = rule.clone(),
            None => rules.push(rule.clone()),
        }
    }
    Ok(rules.iter().map(|r| Rule::compile(r, &config.labels)).collect())
}
