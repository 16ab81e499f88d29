//! The `[alerts]` section: alert rules and where alerts are posted (the built-in rules are the
//! alert crate's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{ca_file, header_name, http_url, positive, shown_url};
use super::{ConfigError, Secret, duration};

/// How an alert rule turns its metric into the value it compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// The metric as the snapshot gives it (default).
    #[default]
    Value,
    /// For cumulative counters: the increase since the previous evaluation, divided by the
    /// seconds between the two. The first evaluation only records the starting point.
    Rate,
}

/// How an alert rule compares its value with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// `>` (default).
    #[default]
    #[serde(rename = ">")]
    Greater,
    /// `>=`.
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `<`.
    #[serde(rename = "<")]
    Less,
    /// `<=`.
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Comparison {
    /// Whether `value` meets the condition against `threshold` (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }

    /// Whether the condition is on high values (`>` and `>=`).
    pub fn is_upper(self) -> bool {
        matches!(self, Comparison::Greater | Comparison::GreaterOrEqual)
    }

    /// The operator, as written in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
        }
    }
}

/// How urgent an alert is; also its `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs a look soon (default).
    #[default]
    Warning,
    /// Needs a look now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert rule: a metric of the monitor's snapshot, compared with a threshold at every
/// evaluation; it fires once the condition has held for `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertRule {
    /// The alert's name (`alertname`): letters, digits, `_`, `:`, `.` and `-`; unique.
    pub name: String,
    /// The metric, one of the names `MetricsSnapshot::metric` knows (`ALERT_METRICS` of the
    /// metrics crate; checked by the alert crate).
    pub metric: String,
    /// `value` (default) or `rate`, for cumulative counters.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// `">"` (default), `">="`, `"<"` or `"<="`.
    #[serde(default)]
    pub comparison: Comparison,
    /// The threshold. A threshold set on the same metric with `set_alert_threshold` wins.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (default 0: at once).
    #[serde(rename = "for", default, with = "duration")]
    pub for_duration: Duration,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// Labels added to this alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One line saying what is wrong (may be empty).
    #[serde(default)]
    pub summary: String,
}

impl AlertRule {
    /// A rule that fires at once when `metric` is above `threshold`, with severity `warning`;
    /// change the other fields as needed.
    pub fn new(name: impl Into<String>, metric: impl Into<String>, threshold: f64) -> Self {
        Self {
            name: name.into(),
            metric: metric.into(),
            aggregation: Aggregation::Value,
            comparison: Comparison::Greater,
            threshold,
            for_duration: Duration::ZERO,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            summary: String::new(),
        }
    }

    /// Checks the rule; `field` is its path, such as `alerts.rules[2]`. The metric name is
    /// not checked here (core does not know the metrics).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
        if !valid_name {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("{:?}", self.name),
                "must be 1 or more letters, digits, '_', ':', '.' or '-'",
            ));
        }
        if !self.threshold.is_finite() {
            return Err(ConfigError::new(
                format!("{field}.threshold"),
                self.threshold,
                "must be a finite number",
            ));
        }
        label_names(&format!("{field}.labels"), &self.labels)
    }
}

/// Alerts posted as JSON to a URL of your own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `http://…` or `https://…` (URLs often carry a token: it never shows in `Debug`, logs
    /// or errors). `https://` trusts the system's roots, or only `ca_file` when set.
    pub url: Secret,
    /// The longest one attempt may take (default 5 s).
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt, 0 to 10 (default 3), with backoff from 100 ms
    /// doubling up to 5 s.
    #[serde(default = "default_notify_retries")]
    pub retries: u32,
    /// Headers sent with every post, such as `Authorization`; their values never show.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// A PEM file of the CA certificate(s) of an `https://` webhook whose certificate the
    /// system does not trust; when set, the only roots trusted for it. A file that is
    /// missing, unreadable or holds no certificate is an error naming
    /// `alerts.webhook.ca_file` and the path when the alert manager is built or
    /// reconfigured. A certificate that is not trusted is logged as a TLS error.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl WebhookConfig {
    /// Posts to `url`, with the default timeout and retries.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            timeout: default_notify_timeout(),
            retries: default_notify_retries(),
            headers: BTreeMap::new(),
            ca_file: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        http_url("alerts.webhook.url", self.url.expose(), true)?;
        positive("alerts.webhook.timeout", self.timeout)?;
        retries("alerts.webhook.retries", self.retries)?;
        if let Some(path) = &self.ca_file {
            ca_file("alerts.webhook.ca_file", path)?;
        }
        for (name, value) in &self.headers {
            header_name("alerts.webhook.headers", name)?;
            if value.expose().chars().any(|c| c.is_control() && c != '\t') {
                return Err(ConfigError::new(
                    format!("alerts.webhook.headers.{name}"),
                    "<redacted>",
                    "a header value must not hold control characters",
                ));
            }
        }
        Ok(())
    }
}

/// Alerts posted to a Prometheus Alertmanager (API v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertmanagerConfig {
    /// The base URL, such as `http://127.0.0.1:9093` or `https://alertmanager:9093`; alerts
    /// go to `<url>/api/v2/alerts`. `https://` trusts the system's roots, or only `ca_file`
    /// when set.
    pub url: String,
    /// The longest one attempt may take (default 5 s).
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt, 0 to 10 (default 3).
    #[serde(default = "default_notify_retries")]
    pub retries: u32,
    /// How often firing alerts are posted again to keep them alive (default 1 min); each
    /// post says they end after three of these unless posted again.
    #[serde(default = "default_resend_interval", with = "duration")]
    pub resend_interval: Duration,
    /// A PEM file of the CA certificate(s) of an `https://` Alertmanager whose certificate
    /// the system does not trust; when set, the only roots trusted for it. A file that is
    /// missing, unreadable or holds no certificate is an error naming
    /// `alerts.alertmanager.ca_file` and the path when the alert manager is built or
    /// reconfigured.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl AlertmanagerConfig {
    /// Posts to the Alertmanager at `url`, with the default timeout, retries and resend
    /// interval.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: default_notify_timeout(),
            retries: default_notify_retries(),
            resend_interval: default_resend_interval(),
            ca_file: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let parsed = http_url("alerts.alertmanager.url", &self.url, false)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::new(
                "alerts.alertmanager.url",
                shown_url(&self.url),
                "must be a base URL, without a query or fragment",
            ));
        }
        positive("alerts.alertmanager.timeout", self.timeout)?;
        retries("alerts.alertmanager.retries", self.retries)?;
        if let Some(path) = &self.ca_file {
            ca_file("alerts.alertmanager.ca_file", path)?;
        }
        positive("alerts.alertmanager.resend_interval", self.resend_interval)
    }
}

fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_notify_retries() -> u32 {
    3
}

fn default_resend_interval() -> Duration {
    Duration::from_secs(60)
}

/// Alerting on the monitor's metrics (the alert crate): rules, and where alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Evaluate the rules at all (default true).
    pub enabled: bool,
    /// How often the rules are evaluated (default 10 s).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Include the built-in rules, those of the alert crate's `built_in_rules()` (default true).
    /// A rule in `rules` with the name of a built-in one replaces it.
    pub default_rules: bool,
    /// Rules of your own.
    pub rules: Vec<AlertRule>,
    /// How far past the threshold a firing alert's value must come back before it resolves,
    /// as a share of the threshold, 0 to below 1 (default 0.1): a `>` alert resolves below
    /// `threshold × (1 − h)`, a `<` alert above `threshold × (1 + h)`; with threshold 0, at
    /// the threshold itself.
    pub hysteresis: f64,
    /// Labels added to every alert, such as `service` or `instance`.
    pub labels: BTreeMap<String, String>,
    /// Log alerts through `tracing` (default true).
    pub log: bool,
    /// Post alerts to a webhook.
    pub webhook: Option<WebhookConfig>,
    /// Post alerts to a Prometheus Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            default_rules: true,
            rules: Vec::new(),
            hysteresis: 0.1,
            labels: BTreeMap::new(),
            log: true,
            webhook: None,
            alertmanager: None,
        }
    }
}

impl AlertsConfig {
    /// Checks every field; the error names the first bad one. Metric names are checked by
    /// the alert crate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("alerts.interval", self.interval)?;
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err(ConfigError::new(
                "alerts.hysteresis",
                self.hysteresis,
                "must be from 0 to below 1",
            ));
        }
        label_names("alerts.labels", &self.labels)?;
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("alerts.rules[{i}]"))?;
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    format!("alerts.rules[{i}].name"),
                    &rule.name,
                    "another rule has the same name",
                ));
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        if let Some(alertmanager) = &self.alertmanager {
            alertmanager.validate()?;
        }
        Ok(())
    }
}

/// Label names as Prometheus and Alertmanager take them: `[A-Za-z_][A-Za-z0-9_]*`.
fn label_names(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for name in labels.keys() {
        let mut bytes = name.bytes();
        let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ConfigError::new(
                field,
                format!("{name:?}"),
                "a label name is a letter or '_', then letters, digits or '_'",
            ));
        }
    }
    Ok(())
}

fn retries(field: &str, value: u32) -> Result<(), ConfigError> {
    if value > 10 {
        return Err(ConfigError::new(field, value, "must be at most 10"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExecutorConfig;

    #[test]
    fn alerts_parse_with_defaults_and_hide_secrets() {
        let config: AlertsConfig = serde_json::from_str(
            r#"{
                "interval": "5s",
                "labels": {"service": "billing"},
                "rules": [
                    {"name": "SlowCalls", "metric": "operations.p99_ms", "threshold": 50,
                     "for": "2m", "severity": "critical", "comparison": ">="},
                    {"name": "Drops", "metric": "operations.dropped", "aggregation": "rate", "threshold": 0}
                ],
                "webhook": {"url": "http://hooks.test/alert?token=s3cret",
                            "headers": {"Authorization": "Bearer t0ken"}},
                "alertmanager": {"url": "http://127.0.0.1:9093", "resend_interval": "30s"}
            }"#,
        )
        .expect("parse");
        assert_eq!(config.validate(), Ok(()));
        assert!(config.enabled && config.default_rules && config.log);
        assert_eq!(config.interval, Duration::from_secs(5));
        let slow = &config.rules[0];
        assert_eq!(slow.for_duration, Duration::from_secs(120));
        assert_eq!(
            (slow.comparison, slow.severity, slow.aggregation),
            (Comparison::GreaterOrEqual, Severity::Critical, Aggregation::Value)
        );
        let drops = &config.rules[1];
        assert_eq!(
            (drops.comparison, drops.severity, drops.aggregation, drops.for_duration),
            (
                Comparison::Greater,
                Severity::Warning,
                Aggregation::Rate,
                Duration::ZERO
            )
        );
        let webhook = config.webhook.as_ref().expect("webhook");
        assert_eq!((webhook.timeout, webhook.retries), (Duration::from_secs(5), 3));
        let alertmanager = config.alertmanager.as_ref().expect("alertmanager");
        assert_eq!(alertmanager.resend_interval, Duration::from_secs(30));
        let shown = format!("{config:?} {}", serde_json::to_string(&config).expect("serialize"));
        assert!(!shown.contains("s3cret") && !shown.contains("t0ken"), "{shown}");
        let err = serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m", "threshold": 1, "fro": "1s"}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("fro"), "{err}");
        assert!(serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m"}"#).is_err());
        assert!(
            serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m", "threshold": 1, "comparison": "=>"}"#)
                .is_err()
        );
    }

    #[test]
    fn alert_validation_names_the_field() {
        fn field(config: &ExecutorConfig) -> String {
            config.validate().expect_err("invalid").field
        }
        let mut config = ExecutorConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.alerts.rules = vec![
            AlertRule::new("Deep", "queue.depth", 10.0),
            AlertRule::new("Waiting", "pool.waiters", 1.0),
            AlertRule::new("Deep", "queue.depth", f64::NAN),
        ];
        assert_eq!(field(&config), "alerts.rules[2].threshold");
        config.alerts.rules[2].threshold = 5.0;
        assert_eq!(field(&config), "alerts.rules[2].name");
        config.alerts.rules[2].name = "Deep Queue".into();
        assert_eq!(field(&config), "alerts.rules[2].name");
        config.alerts.rules[2].name = "DeepQueue".into();
        config.alerts.rules[1]
            .labels
            .insert("team-name".into(), "storage".into());
        assert_eq!(field(&config), "alerts.rules[1].labels");
        config.alerts.rules[1].labels.clear();
        assert_eq!(config.validate(), Ok(()));

        config.alerts.hysteresis = 1.0;
        assert_eq!(field(&config), "alerts.hysteresis");
        config.alerts.hysteresis = 0.0;
        config.alerts.interval = Duration::ZERO;
        assert_eq!(field(&config), "alerts.interval");
        config.alerts.interval = Duration::from_secs(1);
        config.alerts.labels.insert("0instance".into(), "a".into());
        assert_eq!(field(&config), "alerts.labels");
        config.alerts.labels.clear();

        config.alerts.webhook = Some(WebhookConfig::new("ftp://hooks.test/alert?token=s3cret"));
        let err = config.validate().expect_err("ftp");
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("alerts.webhook.url", "<redacted>")
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let mut webhook = WebhookConfig::new("http://hooks.test/alert?token=s3cret");
        webhook.retries = 11;
        config.alerts.webhook = Some(webhook.clone());
        assert_eq!(field(&config), "alerts.webhook.retries");
        webhook.retries = 0;
        webhook
            .headers
            .insert("X-Token".into(), Secret::new("t0ken\r\nX-Evil: 1"));
        config.alerts.webhook = Some(webhook.clone());
        let err = config.validate().expect_err("header value");
        assert_eq!(err.field, "alerts.webhook.headers.X-Token");
        assert!(!err.to_string().contains("t0ken"), "{err}");
        webhook.headers.insert("X-Token".into(), Secret::new("t0ken"));
        config.alerts.webhook = Some(webhook);
        assert_eq!(config.validate(), Ok(()));

        config.alerts.alertmanager = Some(AlertmanagerConfig::new("127.0.0.1:9093"));
        assert_eq!(field(&config), "alerts.alertmanager.url");
        let mut alertmanager = AlertmanagerConfig::new("http://am:p4ss@127.0.0.1:9093?x=1");
        config.alerts.alertmanager = Some(alertmanager.clone());
        let err = config.validate().expect_err("query");
        assert_eq!(err.field, "alerts.alertmanager.url");
        assert!(!err.to_string().contains("p4ss"), "{err}");
        alertmanager.url = "http://127.0.0.1:9093".into();
        alertmanager.timeout = Duration::ZERO;
        config.alerts.alertmanager = Some(alertmanager.clone());
        assert_eq!(field(&config), "alerts.alertmanager.timeout");
        alertmanager.timeout = Duration::from_secs(1);
        alertmanager.resend_interval = Duration::ZERO;
        config.alerts.alertmanager = Some(alertmanager);
        assert_eq!(field(&config), "alerts.alertmanager.resend_interval");
    }
}
