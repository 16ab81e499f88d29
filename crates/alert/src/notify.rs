//! Notifications and their delivery to the log, a webhook and an Alertmanager, by one task
//! that reads a bounded queue, so that an evaluation never waits for a notifier.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stateful_redis_core::{AlertsConfig, ConfigError, Severity};
use tokio::sync::mpsc;

// The webhook and Alertmanager notifiers post over HTTP with the `http` feature; without it
// a configuration naming one is refused, and their code is there but never reached.
#[cfg(feature = "http")]
mod http;
#[cfg(not(feature = "http"))]
mod no_http;
#[cfg(feature = "http")]
use http as transport;
#[cfg(not(feature = "http"))]
use no_http as transport;

pub(crate) use transport::Target;

/// Notifications waiting for delivery; once it is full, new ones are dropped and counted.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// The pause before the first retry, doubled for each next one up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Failed deliveries are logged at most this often per notifier.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Whether a notification says an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert firing or resolved, as every notifier gets it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notification {
    pub(crate) rule: String,
    pub(crate) status: Status,
    pub(crate) severity: Severity,
    pub(crate) metric: String,
    pub(crate) value: f64,
    pub(crate) threshold: f64,
    pub(crate) summary: String,
    /// The config's labels, the rule's, `alertname` and `severity`.
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) starts_at: SystemTime,
    /// When it resolved; `None` while it fires.
    pub(crate) ends_at: Option<SystemTime>,
}

/// The counters behind `AlertStats`, shared by the evaluations and the delivery task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) evaluations: AtomicU64,
    pub(crate) fired: AtomicU64,
    pub(crate) resolved: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) refreshes: AtomicU64,
}

/// Adds one to `counter`; returns the new count.
pub(crate) fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// An Alertmanager (API v2).
#[derive(Debug)]
pub(crate) struct Alertmanager {
    target: Target,
    resend_interval: Duration,
}

/// Where notifications go; replaced whole when the manager is reconfigured.
#[derive(Debug)]
pub(crate) struct Notifiers {
    log: bool,
    webhook: Option<Target>,
    alertmanager: Option<Alertmanager>,
}

impl Notifiers {
    /// The notifiers of a validated `config`.
    pub(crate) fn new(config: &AlertsConfig) -> Result<Self, ConfigError> {
        let webhook = config.webhook.as_ref().map(Target::webhook).transpose()?;
        let alertmanager = match &config.alertmanager {
            Some(alertmanager) => Some(Alertmanager {
                target: Target::alertmanager(alertmanager)?,
                resend_interval: alertmanager.resend_interval,
            }),
            None => None,
        };
        Ok(Self {
            log: config.log,
            webhook,
            alertmanager,
        })
    }

    /// Which notifiers are on, for `Debug`.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.log {
            names.push("log");
        }
        if self.webhook.is_some() {
            names.push("webhook");
        }
        if self.alertmanager.is_some() {
            names.push("alertmanager");
        }
        names
    }
}

/// What the manager and the delivery task share.
#[derive(Debug)]
pub(crate) struct Shared {
    notifiers: RwLock<Arc<Notifiers>>,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn new(notifiers: Notifiers) -> Self {
        Self {
            notifiers: RwLock::new(Arc::new(notifiers)),
            counters: Counters::default(),
        }
    }

    pub(crate) fn notifiers(&self) -> Arc<Notifiers> {
        Arc::clone(&*self.notifiers.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_notifiers(&self, notifiers: Notifiers) {
        *self.notifiers.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(notifiers);
    }
}

/// When a notifier last logged a failure.
#[derive(Debug, Default)]
struct RateLimit(Option<Instant>);

/// The failure logs of each notifier.
#[derive(Debug, Default)]
struct Warned {
    webhook: RateLimit,
    alertmanager: RateLimit,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .0
            .is_some_and(|last| now.saturating_duration_since(last) < WARN_EVERY)
        {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// The delivery task: delivers each queued notification to every notifier, and re-posts the
/// firing alerts to the Alertmanager every `resend_interval`. Ends once the queue is closed
/// and empty.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Notification>) {
    // The alerts firing now, by rule, as last notified: what the Alertmanager is re-sent.
    let mut firing: BTreeMap<String, Notification> = BTreeMap::new();
    let mut resend_at: Option<tokio::time::Instant> = None;
    let mut warned = Warned::default();
    loop {
        tokio::select! {
            received = queue.recv() => match received {
                Some(notification) => {
                    deliver(&shared, &mut firing, &mut warned, notification).await;
                }
                None => break,
            },
            () = sleep_until(resend_at) => {
                resend_at = None;
                refresh(&shared, &firing, &mut warned.alertmanager).await;
            }
        }
        if firing.is_empty() {
            resend_at = None;
        } else if resend_at.is_none() {
            let notifiers = shared.notifiers();
            resend_at = notifiers
                .alertmanager
                .as_ref()
                .map(|alertmanager| tokio::time::Instant::now() + alertmanager.resend_interval);
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn deliver(
    shared: &Shared,
    firing: &mut BTreeMap<String, Notification>,
    warned: &mut Warned,
    notification: Notification,
) {
    // A resolved alert's firing copy: the Alertmanager may know it under older labels.
    let fired = match notification.status {
        Status::Firing => {
            firing.insert(notification.rule.clone(), notification.clone());
            None
        }
        Status::Resolved => firing.remove(&notification.rule),
    };
    let Warned {
        webhook: webhook_warned,
        alertmanager: alertmanager_warned,
    } = warned;
    let notifiers = shared.notifiers();
    if notifiers.log {
        log(&notification);
        bump(&shared.counters.sent);
    }
    let to_webhook = async {
        if let Some(target) = &notifiers.webhook {
            let result = post(shared, target, &webhook_body(&notification)).await;
            count(shared, result, "webhook", &shared.counters.sent, webhook_warned);
        }
    };
    let to_alertmanager = async {
        if let Some(alertmanager) = &notifiers.alertmanager {
            let body = alertmanager_body(&notification, fired.as_ref(), alertmanager.resend_interval);
            let result = post(shared, &alertmanager.target, &body).await;
            count(
                shared,
                result,
                "alertmanager",
                &shared.counters.sent,
                alertmanager_warned,
            );
        }
    };
    tokio::join!(to_webhook, to_alertmanager);
}

/// Posts every firing alert to the Alertmanager again, so that it keeps them.
async fn refresh(shared: &Shared, firing: &BTreeMap<String, Notification>, warned: &mut RateLimit) {
    let notifiers = shared.notifiers();
    let Some(alertmanager) = &notifiers.alertmanager else {
        return;
    };
    if firing.is_empty() {
        return;
    }
    let ends_at = keep_until(alertmanager.resend_interval);
    let body = Value::Array(firing.values().map(|n| alertmanager_alert(n, ends_at)).collect());
    let result = post(shared, &alertmanager.target, &body).await;
    count(shared, result, "alertmanager", &shared.counters.refreshes, warned);
}

/// Counts a delivery in `delivered`, or a failure (logged at most once a minute).
fn count(
    shared: &Shared,
    result: Result<(), String>,
    notifier: &'static str,
    delivered: &AtomicU64,
    warned: &mut RateLimit,
) {
    match result {
        Ok(()) => {
            bump(delivered);
        }
        Err(error) => {
            let failures = bump(&shared.counters.failures);
            if warned.allow() {
                tracing::warn!(
                    notifier,
                    failures,
                    error = %error,
                    "alert notification failed after its retries (logged at most once a minute)"
                );
            }
        }
    }
}

/// Posts `body` as JSON, retrying with backoff; the error never holds the URL.
async fn post(shared: &Shared, target: &Target, body: &Value) -> Result<(), String> {
    let mut backoff = FIRST_BACKOFF;
    let mut retries_left = target.retries();
    loop {
        let Err(error) = target.post(body).await else {
            return Ok(());
        };
        if retries_left == 0 {
            return Err(error);
        }
        retries_left -= 1;
        bump(&shared.counters.retries);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
    }
}

fn log(n: &Notification) {
    let (alert, severity, metric, summary) = (
        n.rule.as_str(),
        n.severity.as_str(),
        n.metric.as_str(),
        n.summary.as_str(),
    );
    let (value, threshold, labels) = (n.value, n.threshold, &n.labels);
    match n.status {
        Status::Resolved => {
            tracing::info!(
                alert,
                severity,
                metric,
                value,
                threshold,
                summary,
                ?labels,
                "alert resolved"
            );
        }
        Status::Firing if n.severity == Severity::Critical => {
            tracing::error!(
                alert,
                severity,
                metric,
                value,
                threshold,
                summary,
                ?labels,
                "alert firing"
            );
        }
        Status::Firing => {
            tracing::warn!(
                alert,
                severity,
                metric,
                value,
                threshold,
                summary,
                ?labels,
                "alert firing"
            );
        }
    }
}

/// The webhook's body: `{"version": "1", "status", "alert": {…}}`.
pub(crate) fn webhook_body(n: &Notification) -> Value {
    json!({
        "version": "1",
        "status": n.status.as_str(),
        "alert": {
            "name": n.rule,
            "severity": n.severity.as_str(),
            "metric": n.metric,
            "value": n.value,
            "threshold": n.threshold,
            "summary": n.summary,
            "labels": n.labels,
            "startsAt": rfc3339(n.starts_at),
            "endsAt": n.ends_at.map(rfc3339),
        }
    })
}

/// The Alertmanager's body for one notification: the alert; for a resolution, also its
/// firing copy if that had other labels (else the Alertmanager would keep it until it
/// expires).
fn alertmanager_body(n: &Notification, fired: Option<&Notification>, resend_interval: Duration) -> Value {
    let ends_at = match n.ends_at {
        Some(ended) => ended,
        None => keep_until(resend_interval),
    };
    let mut alerts = vec![alertmanager_alert(n, ends_at)];
    if let Some(old) = fired.filter(|old| old.labels != n.labels) {
        alerts.push(alertmanager_alert(old, ends_at));
    }
    Value::Array(alerts)
}

/// How long a firing alert stays alive in the Alertmanager without a re-post: three resend
/// intervals, as Prometheus does.
fn keep_until(resend_interval: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_add(resend_interval.saturating_mul(3)).unwrap_or(now)
}

/// One alert of the Alertmanager API v2 (`postableAlert`).
pub(crate) fn alertmanager_alert(n: &Notification, ends_at: SystemTime) -> Value {
    // An empty label is no label to the Alertmanager.
    let labels: BTreeMap<&str, &str> = n
        .labels
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut annotations = BTreeMap::new();
    if !n.summary.is_empty() {
        annotations.insert("summary", n.summary.clone());
    }
    annotations.insert(
        "description",
        format!("{} = {} (threshold {})", n.metric, n.value, n.threshold),
    );
    annotations.insert("value", n.value.to_string());
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(n.starts_at),
        "endsAt": rfc3339(ends_at),
    })
}

/// RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.000Z` (times before 1970 are
/// written as 1970).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// The date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.250Z");
        // A leap day, and the last second of a year.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_704_067_199)),
            "2023-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn bodies_have_the_documented_shape() {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), "DeepQueue".to_owned());
        labels.insert("severity".to_owned(), "warning".to_owned());
        labels.insert("empty".to_owned(), String::new());
        let n = Notification {
            rule: "DeepQueue".into(),
            status: Status::Resolved,
            severity: Severity::Warning,
            metric: "queue.depth".into(),
            value: 3.0,
            threshold: 100.0,
            summary: "deep".into(),
            labels,
            starts_at: UNIX_EPOCH,
            ends_at: Some(UNIX_EPOCH + Duration::from_secs(60)),
        };
        let webhook = webhook_body(&n);
        assert_eq!(webhook["version"], "1");
        assert_eq!(webhook["status"], "resolved");
        assert_eq!(webhook["alert"]["name"], "DeepQueue");
        assert_eq!(webhook["alert"]["labels"]["severity"], "warning");
        assert_eq!(webhook["alert"]["endsAt"], "1970-01-01T00:01:00.000Z");
        let alerts = alertmanager_body(&n, None, Duration::from_secs(60));
        let alert = &alerts[0];
        assert_eq!(alerts.as_array().map(Vec::len), Some(1));
        assert_eq!(alert["labels"]["alertname"], "DeepQueue");
        assert!(alert["labels"].get("empty").is_none(), "{alert}");
        assert_eq!(alert["annotations"]["description"], "queue.depth = 3 (threshold 100)");
        assert_eq!(alert["endsAt"], "1970-01-01T00:01:00.000Z");
        let mut fired = n.clone();
        fired.labels.insert("team".into(), "storage".into());
        let both = alertmanager_body(&n, Some(&fired), Duration::from_secs(60));
        assert_eq!(both.as_array().map(Vec::len), Some(2));
    }
}
