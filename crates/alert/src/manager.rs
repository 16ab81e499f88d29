//! The `AlertManager`: the rules and their states, evaluations, hot reload, and the handle
//! on the delivery task.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use stateful_redis_core::{AlertsConfig, Error, Severity};
use stateful_redis_metrics::{MetricsSnapshot, PerformanceMonitor};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::notify::{self, Notification, Notifiers, QUEUE_CAPACITY, Shared, Status, bump};
use crate::rule::{self, Rule};
use crate::state::{AlertState, Change, RuleState, Transition};

/// Evaluates alert rules on the [`PerformanceMonitor`]'s snapshots and hands what fires and
/// resolves to the notifiers.
///
/// Cheap to clone: clones share the rules, their states and the delivery task. Notifications
/// go through a bounded queue (1,024) to one delivery task, so [`evaluate`](Self::evaluate)
/// never waits for a notifier; when the queue is full they are dropped and counted.
#[derive(Clone)]
pub struct AlertManager {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<Book>,
    shared: Arc<Shared>,
    /// `None` once shut down: closing the queue ends the delivery task.
    queue: Mutex<Option<mpsc::Sender<Notification>>>,
    delivery: Mutex<Option<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// Every notification queued, for the tests to look at.
    #[cfg(test)]
    outbox: Mutex<Vec<Notification>>,
}

/// The rules and their states.
struct Book {
    enabled: bool,
    interval: Duration,
    hysteresis: f64,
    labels: BTreeMap<String, String>,
    /// The configured rules, built-in ones first.
    rules: Vec<Entry>,
    /// The rules of thresholds set on metrics no configured rule covers, by metric.
    ad_hoc: Vec<Entry>,
}

struct Entry {
    rule: Rule,
    state: RuleState,
}

impl Entry {
    fn new(rule: Rule) -> Self {
        Self {
            rule,
            state: RuleState::default(),
        }
    }

    /// The notification for a step of this rule.
    fn notification(&self, status: Status, value: f64, threshold: f64, starts_at: SystemTime) -> Notification {
        Notification {
            rule: self.rule.name.clone(),
            status,
            severity: self.rule.severity,
            metric: self.rule.metric.clone(),
            value,
            threshold,
            summary: self.rule.summary.clone(),
            labels: self.rule.labels.clone(),
            starts_at,
            ends_at: None,
        }
    }

    /// Resolves the alert if it fires, for a rule that goes away; returns its notification.
    fn retire(&mut self, wall: SystemTime) -> Option<Notification> {
        let started_at = self.state.firing_since()?;
        self.state.reset();
        let value = self.state.value.unwrap_or(f64::NAN);
        let threshold = self.state.threshold.unwrap_or(self.rule.threshold);
        let mut resolved = self.notification(Status::Resolved, value, threshold, started_at);
        resolved.ends_at = Some(wall);
        Some(resolved)
    }
}

/// One rule's state now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AlertStatus {
    /// The rule's name (`threshold:<metric>` for a threshold without a rule).
    pub rule: String,
    /// Its metric.
    pub metric: String,
    /// Its severity.
    pub severity: Severity,
    /// `inactive`, `pending` or `firing`.
    pub state: &'static str,
    /// The value last compared (`None` before the first evaluation, and for a rate rule
    /// before its second).
    pub value: Option<f64>,
    /// The threshold last compared with (the rule's before the first evaluation).
    pub threshold: f64,
    /// When the pending or firing state began; `None` when inactive.
    pub since: Option<SystemTime>,
}

/// What the alert manager has done since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertStats {
    /// Evaluations made (none while `enabled` is false).
    pub evaluations: u64,
    /// Alerts that started firing.
    pub fired: u64,
    /// Alerts that resolved (also those whose rule was removed while firing).
    pub resolved: u64,
    /// Notifications delivered, one per notifier: a log line, a webhook post or an
    /// Alertmanager post.
    pub notifications_sent: u64,
    /// Posts retried after a failed attempt (webhook and Alertmanager, re-posts included).
    pub notification_retries: u64,
    /// Posts that failed after their last retry (re-posts included).
    pub notification_failures: u64,
    /// Notifications dropped because the delivery queue was full (or shut down).
    pub notifications_dropped: u64,
    /// Re-posts of the firing alerts to the Alertmanager, every `resend_interval`, that it
    /// accepted (one post holds every firing alert). Not counted in `notifications_sent`.
    pub refreshes: u64,
}

impl fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (enabled, rules) = {
            let book = lock(&self.inner.book);
            (book.enabled, book.rules.len() + book.ad_hoc.len())
        };
        f.debug_struct("AlertManager")
            .field("enabled", &enabled)
            .field("rules", &rules)
            .field("notifiers", &self.inner.shared.notifiers().names())
            .finish_non_exhaustive()
    }
}

impl AlertManager {
    /// Builds the rules (the built-in ones if `config.default_rules`, then `config.rules`; a
    /// configured rule with the name of a built-in one replaces it) and the notifiers, and
    /// spawns the delivery task.
    ///
    /// Needs a Tokio runtime. Errors: [`Error::Config`] naming the field, such as
    /// `alerts.rules[1].metric` for a metric not in
    /// [`ALERT_METRICS`](stateful_redis_metrics::ALERT_METRICS), or `alerts.webhook.ca_file` for
    /// a CA file that cannot be read or holds no certificate, or `alerts.webhook` and `alerts.alertmanager` in a
    /// build without the `http` feature; [`Error::InvalidArgument`] outside a Tokio runtime.
    pub fn new(config: &AlertsConfig) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidArgument {
            name: "runtime",
            reason: "AlertManager::new needs a Tokio runtime: it spawns the delivery task".to_owned(),
        })?;
        let rules = rule::compile(config)?;
        let notifiers = Notifiers::new(config)?;
        let shared = Arc::new(Shared::new(notifiers));
        let (queue, received) = mpsc::channel(QUEUE_CAPACITY);
        let delivery = runtime.spawn(notify::run(Arc::clone(&shared), received));
        let (stop, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                book: Mutex::new(Book {
                    enabled: config.enabled,
                    interval: config.interval,
                    hysteresis: config.hysteresis,
                    labels: config.labels.clone(),
                    rules: rules.into_iter().map(Entry::new).collect(),
                    ad_hoc: Vec::new(),
                }),
                shared,
                queue: Mutex::new(Some(queue)),
                delivery: Mutex::new(Some(delivery)),
                stop,
                #[cfg(test)]
                outbox: Mutex::new(Vec::new()),
            }),
        })
    }

    /// One evaluation of every rule against `snapshot`, at `now`; returns the transitions it
    /// made.
    ///
    /// A rule's value is `snapshot.metric(rule.metric)` (a rate rule takes the increase since
    /// the previous evaluation per second; its first evaluation only records the starting
    /// point). It is compared with `thresholds[rule.metric]` when that is set (the thresholds
    /// of [`PerformanceMonitor::alert_thresholds`]), else with the rule's threshold. A
    /// threshold on a metric no rule covers gets a rule of its own, `threshold:<metric>`
    /// (`>`, at once, `warning`). A metric the snapshot lacks leaves its rules as they are.
    ///
    /// Never blocks: notifications are queued for the delivery task, or dropped and counted
    /// if its queue is full.
    pub fn evaluate(
        &self,
        snapshot: &MetricsSnapshot,
        thresholds: &BTreeMap<String, f64>,
        now: Instant,
    ) -> Vec<Transition> {
        let counters = &self.inner.shared.counters;
        let wall = wall_clock(now);
        let mut transitions = Vec::new();
        let mut outgoing = Vec::new();
        {
            let mut guard = lock(&self.inner.book);
            let book = &mut *guard;
            if !book.enabled {
                return transitions;
            }
            bump(&counters.evaluations);
            for mut gone in book.sync_ad_hoc(thresholds) {
                if let Some(resolved) = gone.retire(wall) {
                    transitions.push(Transition {
                        rule: resolved.rule.clone(),
                        from: "firing",
                        to: "resolved",
                        value: resolved.value,
                        threshold: resolved.threshold,
                    });
                    bump(&counters.resolved);
                    outgoing.push(resolved);
                }
            }
            let hysteresis = book.hysteresis;
            for entry in book.rules.iter_mut().chain(book.ad_hoc.iter_mut()) {
                let Some(raw) = snapshot.metric(&entry.rule.metric) else {
                    continue;
                };
                let Some(value) = entry.state.aggregate(raw, entry.rule.rate, now) else {
                    continue;
                };
                let threshold = thresholds
                    .get(&entry.rule.metric)
                    .copied()
                    .filter(|t| t.is_finite())
                    .unwrap_or(entry.rule.threshold);
                let Some(change) = entry.state.step(&entry.rule, value, threshold, hysteresis, now, wall) else {
                    continue;
                };
                let (from, to) = change.names();
                transitions.push(Transition {
                    rule: entry.rule.name.clone(),
                    from,
                    to,
                    value,
                    threshold,
                });
                match change {
                    Change::Fired { started_at, .. } => {
                        bump(&counters.fired);
                        outgoing.push(entry.notification(Status::Firing, value, threshold, started_at));
                    }
                    Change::Resolved { started_at } => {
                        bump(&counters.resolved);
                        let mut resolved = entry.notification(Status::Resolved, value, threshold, started_at);
                        resolved.ends_at = Some(wall);
                        outgoing.push(resolved);
                    }
                    Change::Pending | Change::Cleared => {}
                }
            }
        }
        for notification in outgoing {
            self.send(notification);
        }
        transitions
    }

    /// Spawns a task that evaluates `monitor.snapshot()` with `monitor.alert_thresholds()`
    /// every `interval` (the first at once; a later `interval` from
    /// [`reconfigure`](Self::reconfigure) applies from the next tick). The task ends when
    /// [`shutdown`](Self::shutdown) is called or every handle on this manager is dropped.
    ///
    /// Must be called within a Tokio runtime.
    pub fn spawn(&self, monitor: PerformanceMonitor) -> JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.subscribe();
        let mut period = self.interval();
        tokio::spawn(async move {
            let mut ticker = new_ticker(tokio::time::Instant::now(), period);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
                let stopped = *stop.borrow();
                if stopped {
                    break;
                }
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                let manager = AlertManager { inner };
                manager.evaluate(&monitor.snapshot(), &monitor.alert_thresholds(), Instant::now());
                let current = manager.interval();
                drop(manager);
                if current != period {
                    period = current;
                    ticker = ticker_after(period);
                }
            }
        })
    }

    /// Replaces the rules and the notifiers (hot reload), validated as in
    /// [`new`](Self::new); on error nothing changes. A rule whose name and metric stay keeps
    /// its state: a firing alert goes on firing and is not notified again. A rule that goes
    /// away while firing is notified as resolved; so is every firing alert when `enabled`
    /// turns false.
    pub fn reconfigure(&self, config: &AlertsConfig) -> Result<(), Error> {
        let rules = rule::compile(config)?;
        let notifiers = Notifiers::new(config)?;
        let wall = SystemTime::now();
        let mut outgoing = Vec::new();
        {
            let mut guard = lock(&self.inner.book);
            let book = &mut *guard;
            let mut gone = std::mem::take(&mut book.rules);
            if !config.enabled {
                gone.append(&mut book.ad_hoc);
            }
            book.rules = rules
                .into_iter()
                .map(|rule| {
                    let kept = if config.enabled {
                        gone.iter()
                            .position(|e| e.rule.name == rule.name && e.rule.metric == rule.metric)
                    } else {
                        None
                    };
                    match kept {
                        Some(i) => Entry {
                            rule,
                            state: gone.swap_remove(i).state,
                        },
                        None => Entry::new(rule),
                    }
                })
                .collect();
            // Threshold rules stay while no configured rule covers their metric; they take
            // the new common labels.
            let (ad_hoc, covered): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut book.ad_hoc)
                .into_iter()
                .partition(|a| !book.rules.iter().any(|e| e.rule.metric == a.rule.metric));
            gone.extend(covered);
            book.ad_hoc = ad_hoc
                .into_iter()
                .map(|mut entry| {
                    entry.rule = Rule::ad_hoc(&entry.rule.metric, entry.rule.threshold, &config.labels);
                    entry
                })
                .collect();
            book.enabled = config.enabled;
            book.interval = config.interval;
            book.hysteresis = config.hysteresis;
            book.labels = config.labels.clone();
            outgoing.extend(gone.iter_mut().filter_map(|entry| entry.retire(wall)));
        }
        self.inner.shared.set_notifiers(notifiers);
        for notification in outgoing {
            bump(&self.inner.shared.counters.resolved);
            self.send(notification);
        }
        Ok(())
    }

    /// Every rule's state: the configured rules in order, then the threshold rules.
    pub fn alerts(&self) -> Vec<AlertStatus> {
        let book = lock(&self.inner.book);
        book.rules
            .iter()
            .chain(book.ad_hoc.iter())
            .map(|entry| AlertStatus {
                rule: entry.rule.name.clone(),
                metric: entry.rule.metric.clone(),
                severity: entry.rule.severity,
                state: entry.state.state.as_str(),
                value: entry.state.value,
                threshold: entry.state.threshold.unwrap_or(entry.rule.threshold),
                since: entry.state.since,
            })
            .collect()
    }

    /// The state of the rule named `rule`, if there is one.
    pub fn state(&self, rule: &str) -> Option<AlertState> {
        let book = lock(&self.inner.book);
        book.rules
            .iter()
            .chain(book.ad_hoc.iter())
            .find(|entry| entry.rule.name == rule)
            .map(|entry| entry.state.state)
    }

    /// The counters.
    pub fn stats(&self) -> AlertStats {
        let c = &self.inner.shared.counters;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        AlertStats {
            evaluations: load(&c.evaluations),
            fired: load(&c.fired),
            resolved: load(&c.resolved),
            notifications_sent: load(&c.sent),
            notification_retries: load(&c.retries),
            notification_failures: load(&c.failures),
            notifications_dropped: load(&c.dropped),
            refreshes: load(&c.refreshes),
        }
    }

    /// Stops the task of [`spawn`](Self::spawn), and waits up to `deadline` for the queued
    /// notifications to be delivered (retries included); what is left then is abandoned.
    /// Later notifications are dropped. Firing alerts are not resolved: the Alertmanager
    /// lets them expire after three resend intervals.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.stop.send_replace(true);
        // Closing the queue ends the delivery task once it has delivered what is queued.
        drop(lock(&self.inner.queue).take());
        let delivery = lock(&self.inner.delivery).take();
        if let Some(mut delivery) = delivery
            && tokio::time::timeout(deadline, &mut delivery).await.is_err()
        {
            delivery.abort();
            tracing::warn!(
                ?deadline,
                "alert notifications still undelivered at the shutdown deadline were abandoned"
            );
        }
    }

    fn interval(&self) -> Duration {
        lock(&self.inner.book).interval
    }

    /// Hands a notification to the delivery task, or counts it dropped.
    fn send(&self, notification: Notification) {
        #[cfg(test)]
        lock(&self.inner.outbox).push(notification.clone());
        let queued = lock(&self.inner.queue)
            .as_ref()
            .is_some_and(|queue| queue.try_send(notification).is_ok());
        if !queued {
            bump(&self.inner.shared.counters.dropped);
        }
    }
}

impl Book {
    /// Adds a rule for each threshold on a known metric that no configured rule covers, and
    /// takes out those whose threshold went away or whose metric a rule now covers.
    fn sync_ad_hoc(&mut self, thresholds: &BTreeMap<String, f64>) -> Vec<Entry> {
        let rules = &self.rules;
        let wanted: Vec<(&str, f64)> = thresholds
            .iter()
            .filter(|(metric, threshold)| {
                threshold.is_finite()
                    && rule::known_metric(metric)
                    && !rules.iter().any(|e| e.rule.metric == metric.as_str())
            })
            .map(|(metric, threshold)| (metric.as_str(), *threshold))
            .collect();
        if wanted.is_empty() && self.ad_hoc.is_empty() {
            return Vec::new();
        }
        let (kept, gone): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.ad_hoc)
            .into_iter()
            .partition(|entry| wanted.iter().any(|(metric, _)| *metric == entry.rule.metric));
        self.ad_hoc = kept;
        for (metric, threshold) in wanted {
            if !self.ad_hoc.iter().any(|entry| entry.rule.metric == metric) {
                self.ad_hoc
                    .push(Entry::new(Rule::ad_hoc(metric, threshold, &self.labels)));
            }
        }
        gone
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `now` on the wall clock.
fn wall_clock(now: Instant) -> SystemTime {
    let (wall, real) = (SystemTime::now(), Instant::now());
    if now >= real {
        wall.checked_add(now.duration_since(real)).unwrap_or(wall)
    } else {
        wall.checked_sub(real.duration_since(now)).unwrap_or(wall)
    }
}

fn new_ticker(first: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(first, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// A ticker whose first tick is one `period` from now.
fn ticker_after(period: Duration) -> tokio::time::Interval {
    new_ticker(tokio::time::Instant::now() + period, period)
}

#[cfg(test)]
mod tests;
