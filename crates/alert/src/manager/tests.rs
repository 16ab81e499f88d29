//! The manager on a real monitor's snapshots, stepped through time by explicit instants, and
//! its notifiers against in-process HTTP receivers on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stateful_redis_core::{Aggregation, AlertRule, AlertmanagerConfig, AlertsConfig, Error, WebhookConfig};
use stateful_redis_metrics::{ALERT_METRICS, GaugeSource, Gauges, PerformanceMonitor};

use super::*;
use crate::notify::Status;

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod https;

/// Gauges the test sets.
#[derive(Debug, Default)]
struct Source(Mutex<Gauges>);

impl GaugeSource for Source {
    fn gauges(&self) -> Gauges {
        self.0.lock().unwrap().clone()
    }
}

/// A monitor whose gauges the test sets, and a clock the test steps.
struct Rig {
    monitor: PerformanceMonitor,
    source: Arc<Source>,
    start: Instant,
}

impl Rig {
    fn new() -> Self {
        let monitor = PerformanceMonitor::default();
        let source = Arc::new(Source::default());
        monitor.set_gauge_source(Arc::clone(&source) as Arc<dyn GaugeSource>);
        Self {
            monitor,
            source,
            start: Instant::now(),
        }
    }

    fn set(&self, change: impl FnOnce(&mut Gauges)) {
        let mut gauges = self.source.0.lock().unwrap();
        change(&mut gauges);
    }

    /// Evaluates the monitor's snapshot and thresholds `seconds` after the start.
    fn at(&self, alerts: &AlertManager, seconds: u64) -> Vec<Transition> {
        alerts.evaluate(
            &self.monitor.snapshot(),
            &self.monitor.alert_thresholds(),
            self.start + Duration::from_secs(seconds),
        )
    }
}

fn names(transitions: &[Transition]) -> Vec<(&str, &str, &str)> {
    transitions.iter().map(|t| (t.rule.as_str(), t.from, t.to)).collect()
}

/// No built-in rules, the log notifier only.
fn config(rules: Vec<AlertRule>) -> AlertsConfig {
    let mut config = AlertsConfig::default();
    config.default_rules = false;
    config.rules = rules;
    config
}

fn rule(name: &str, metric: &str, threshold: f64, for_secs: u64) -> AlertRule {
    let mut rule = AlertRule::new(name, metric, threshold);
    rule.for_duration = Duration::from_secs(for_secs);
    rule
}

/// The notifications queued so far: rule and status.
fn outbox(alerts: &AlertManager) -> Vec<(String, Status)> {
    lock(&alerts.inner.outbox)
        .iter()
        .map(|n| (n.rule.clone(), n.status))
        .collect()
}

fn state(alerts: &AlertManager, rule: &str) -> Option<&'static str> {
    alerts.state(rule).map(|s| s.as_str())
}

#[tokio::test]
async fn fires_once_after_for_and_resolves_past_the_hysteresis() {
    let rig = Rig::new();
    let alerts = AlertManager::new(&config(vec![rule("DeepQueue", "queue.depth", 100.0, 60)])).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(names(&rig.at(&alerts, 0)), [("DeepQueue", "inactive", "pending")]);
    assert!(rig.at(&alerts, 30).is_empty());
    assert_eq!(state(&alerts, "DeepQueue"), Some("pending"));
    assert!(outbox(&alerts).is_empty());

    let fired = rig.at(&alerts, 60);
    assert_eq!(names(&fired), [("DeepQueue", "pending", "firing")]);
    assert_eq!((fired[0].value, fired[0].threshold), (150.0, 100.0));
    // Still above: no further transition, no further notification.
    assert!(rig.at(&alerts, 70).is_empty());
    assert!(rig.at(&alerts, 80).is_empty());
    assert_eq!(outbox(&alerts).len(), 1);

    // Below the threshold, above its resolve level (100 × (1 − 0.1) = 90): still firing.
    rig.set(|g| g.queue_depth = 95);
    assert!(rig.at(&alerts, 90).is_empty());
    let statuses = alerts.alerts();
    let status = &statuses[0];
    assert_eq!(
        (status.state, status.value, status.threshold),
        ("firing", Some(95.0), 100.0)
    );
    assert!(status.since.is_some());

    rig.set(|g| g.queue_depth = 80);
    assert_eq!(names(&rig.at(&alerts, 100)), [("DeepQueue", "firing", "resolved")]);
    let statuses = alerts.alerts();
    assert_eq!((statuses[0].state, statuses[0].since), ("inactive", None));
    assert_eq!(
        outbox(&alerts),
        [
            ("DeepQueue".to_owned(), Status::Firing),
            ("DeepQueue".to_owned(), Status::Resolved)
        ]
    );
    let (firing, resolved) = {
        let outbox = lock(&alerts.inner.outbox);
        (outbox[0].clone(), outbox[1].clone())
    };
    assert_eq!((firing.ends_at, resolved.starts_at), (None, firing.starts_at));
    assert!(resolved.ends_at.is_some());
    assert_eq!(resolved.value, 80.0);

    alerts.shutdown(Duration::from_secs(5)).await;
    let stats = alerts.stats();
    assert_eq!((stats.evaluations, stats.fired, stats.resolved), (7, 1, 1));
    // The log notifier delivered both.
    assert_eq!((stats.notifications_sent, stats.notifications_dropped), (2, 0));
}

#[tokio::test]
async fn a_pending_alert_that_clears_goes_back_without_a_notification() {
    let rig = Rig::new();
    let alerts = AlertManager::new(&config(vec![rule("DeepQueue", "queue.depth", 100.0, 60)])).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(names(&rig.at(&alerts, 0)), [("DeepQueue", "inactive", "pending")]);
    rig.set(|g| g.queue_depth = 50);
    assert_eq!(names(&rig.at(&alerts, 10)), [("DeepQueue", "pending", "inactive")]);
    assert_eq!(state(&alerts, "DeepQueue"), Some("inactive"));
    assert!(outbox(&alerts).is_empty());

    // The `for` starts again with the next pending state.
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(names(&rig.at(&alerts, 20)), [("DeepQueue", "inactive", "pending")]);
    assert!(rig.at(&alerts, 70).is_empty());
    assert_eq!(names(&rig.at(&alerts, 80)), [("DeepQueue", "pending", "firing")]);
    assert_eq!(outbox(&alerts).len(), 1);
    assert_eq!(alerts.stats().fired, 1);
    alerts.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_rate_rule_compares_the_increase_per_second() {
    let rig = Rig::new();
    let mut drops = rule("Drops", "operations.dropped", 0.0, 0);
    drops.aggregation = Aggregation::Rate;
    let alerts = AlertManager::new(&config(vec![drops])).unwrap();
    rig.set(|g| g.dropped = 5);
    // The first evaluation only records the starting point.
    assert!(rig.at(&alerts, 0).is_empty());
    assert_eq!(alerts.alerts()[0].value, None);
    assert!(rig.at(&alerts, 10).is_empty());
    assert_eq!(alerts.alerts()[0].value, Some(0.0));

    rig.set(|g| g.dropped = 25);
    let fired = rig.at(&alerts, 20);
    assert_eq!(names(&fired), [("Drops", "inactive", "firing")]);
    // 20 more in 10 s.
    assert_eq!(fired[0].value, 2.0);
    // No new drops: the rate is 0, at the threshold 0, so it resolves.
    assert_eq!(names(&rig.at(&alerts, 30)), [("Drops", "firing", "resolved")]);
    alerts.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn thresholds_override_rules_and_add_rules_of_their_own() {
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    config.labels.insert("service".into(), "billing".into());
    let alerts = AlertManager::new(&config).unwrap();
    rig.set(|g| {
        g.queue_depth = 50;
        g.pool_waiters = 3;
    });
    assert!(rig.at(&alerts, 0).is_empty());

    // A threshold set at run time wins over the rule's from the next evaluation on.
    rig.monitor.set_alert_threshold("queue.depth", 10.0).unwrap();
    let fired = rig.at(&alerts, 10);
    assert_eq!(names(&fired), [("DeepQueue", "inactive", "firing")]);
    assert_eq!(fired[0].threshold, 10.0);

    // A threshold on a metric no rule covers gets a rule of its own.
    rig.monitor.set_alert_threshold("pool.waiters", 2.0).unwrap();
    let fired = rig.at(&alerts, 20);
    assert_eq!(names(&fired), [("threshold:pool.waiters", "inactive", "firing")]);
    let rules: Vec<String> = alerts.alerts().into_iter().map(|s| s.rule).collect();
    assert_eq!(rules, ["DeepQueue", "threshold:pool.waiters"]);
    let notification = lock(&alerts.inner.outbox)[1].clone();
    assert_eq!(notification.summary, "pool.waiters above its threshold");
    assert_eq!(notification.severity, Severity::Warning);
    let label = |name: &str| notification.labels.get(name).cloned();
    assert_eq!(label("alertname").as_deref(), Some("threshold:pool.waiters"));
    assert_eq!(label("severity").as_deref(), Some("warning"));
    assert_eq!(label("service").as_deref(), Some("billing"));
    alerts.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn reconfigure_keeps_firing_states_and_refuses_bad_configs() {
    let rig = Rig::new();
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    let alerts = AlertManager::new(&config).unwrap();
    rig.set(|g| g.queue_depth = 150);
    assert_eq!(names(&rig.at(&alerts, 0)), [("DeepQueue", "inactive", "firing")]);

    config.rules = vec![
        rule("DeepQueue", "queue.depth", 120.0, 0),
        rule("Waiting", "pool.waiters", 0.0, 0),
    ];
    alerts.reconfigure(&config).unwrap();
    assert_eq!(state(&alerts, "DeepQueue"), Some("firing"));
    // 150 is still above 120: it goes on firing, without a second notification.
    assert!(rig.at(&alerts, 10).is_empty());
    assert_eq!(outbox(&alerts).len(), 1);

    let mut bad = config.clone();
    bad.rules.push(rule("Typo", "queue.deep", 1.0, 0));
    let err = alerts.reconfigure(&bad).unwrap_err();
    assert!(
        matches!(&err, Error::Config(e) if e.field == "alerts.rules[2].metric"),
        "{err}"
    );
    assert_eq!(alerts.alerts().len(), 2);

    // A rule that goes away while firing is resolved.
    config.rules = vec![rule("Waiting", "pool.waiters", 0.0, 0)];
    alerts.reconfigure(&config).unwrap();
    assert_eq!(
        outbox(&alerts),
        [
            ("DeepQueue".to_owned(), Status::Firing),
            ("DeepQueue".to_owned(), Status::Resolved)
        ]
    );
    assert_eq!(alerts.alerts().len(), 1);
    assert_eq!(alerts.stats().resolved, 1);
    alerts.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn config_errors_name_the_field() {
    let err = AlertManager::new(&config(vec![rule("Typo", "operations.p999_ms", 1.0, 0)])).unwrap_err();
    assert!(
        matches!(&err, Error::Config(e) if e.field == "alerts.rules[0].metric"),
        "{err}"
    );
    assert!(err.to_string().contains("operations.p99_ms"), "{err}");

    let mut nan = config(Vec::new());
    nan.hysteresis = f64::NAN;
    let err = AlertManager::new(&nan).unwrap_err();
    assert!(
        matches!(&err, Error::Config(e) if e.field == "alerts.hysteresis"),
        "{err}"
    );
}

#[tokio::test]
async fn built_in_rules_use_known_metrics_and_can_be_replaced() {
    for rule in crate::built_in_rules() {
        assert!(ALERT_METRICS.contains(&rule.metric.as_str()), "{}", rule.metric);
    }
    let mut config = AlertsConfig::default();
    let alerts = AlertManager::new(&config).unwrap();
    assert_eq!(alerts.alerts().len(), 8);

    config.rules = vec![
        rule("StatefulRedisHighLatencyP99", "operations.p99_ms", 250.0, 0),
        rule("Mine", "queue.depth", 1.0, 0),
    ];
    alerts.reconfigure(&config).unwrap();
    let statuses = alerts.alerts();
    assert_eq!(statuses.len(), 9);
    assert_eq!(
        (statuses[1].rule.as_str(), statuses[1].threshold),
        ("StatefulRedisHighLatencyP99", 250.0)
    );
    assert_eq!(statuses[8].rule, "Mine");

    // A quiet monitor raises nothing.
    let monitor = PerformanceMonitor::default();
    assert!(
        alerts
            .evaluate(&monitor.snapshot(), &BTreeMap::new(), Instant::now())
            .is_empty()
    );
    alerts.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_notifications() {
    let rig = Rig::new();
    let alerts = AlertManager::new(&config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)])).unwrap();
    // On this one-thread runtime the delivery task cannot run between these evaluations
    // (nothing awaits), so its queue fills up.
    for second in 0..1100_u64 {
        rig.set(|g| g.queue_depth = if second % 2 == 0 { 150 } else { 0 });
        assert_eq!(rig.at(&alerts, second).len(), 1);
    }
    let stats = alerts.stats();
    assert_eq!((stats.fired, stats.resolved), (550, 550));
    assert_eq!(stats.notifications_dropped, 1100 - 1024);
    alerts.shutdown(Duration::from_secs(10)).await;
    assert_eq!(alerts.stats().notifications_sent, 1024);
}

#[tokio::test]
async fn the_spawned_task_evaluates_until_shutdown() {
    let mut config = config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)]);
    config.interval = Duration::from_millis(20);
    let alerts = AlertManager::new(&config).unwrap();
    let rig = Rig::new();
    rig.set(|g| g.queue_depth = 150);
    let task = alerts.spawn(rig.monitor.clone());
    for _ in 0..500 {
        if alerts.stats().fired == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state(&alerts, "DeepQueue"), Some("firing"));
    alerts.shutdown(Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends at shutdown")
        .expect("the task does not panic");
}

#[cfg(not(feature = "http"))]
#[tokio::test]
async fn without_http_a_webhook_or_an_alertmanager_is_refused() {
    let mut webhook = config(Vec::new());
    webhook.webhook = Some(WebhookConfig::new("http://127.0.0.1:9/hook?token=s3cret"));
    let err = AlertManager::new(&webhook).unwrap_err();
    assert!(matches!(&err, Error::Config(e) if e.field == "alerts.webhook"), "{err}");
    assert!(err.to_string().contains("`http` feature"), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let mut alertmanager = config(Vec::new());
    alertmanager.alertmanager = Some(AlertmanagerConfig::new("http://127.0.0.1:9093"));
    let err = AlertManager::new(&alertmanager).unwrap_err();
    assert!(
        matches!(&err, Error::Config(e) if e.field == "alerts.alertmanager"),
        "{err}"
    );

    // The log notifier is there (the other tests see it deliver), and a refused
    // reconfiguration leaves it in place.
    let alerts = AlertManager::new(&config(vec![rule("DeepQueue", "queue.depth", 100.0, 0)])).unwrap();
    assert!(alerts.reconfigure(&webhook).is_err());
    assert!(format!("{alerts:?}").contains("[\"log\"]"), "{alerts:?}");
    alerts.shutdown(Duration::from_secs(5)).await;
}
