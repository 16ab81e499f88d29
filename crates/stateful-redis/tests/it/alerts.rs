//! Alerts end to end: a real Alertmanager receives fired and resolved alerts, a webhook that
//! is down costs operations nothing, and the configuration file reloads live.

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use stateful_redis::{AlertmanagerConfig, StatefulExecutor, WebhookConfig};
use stateful_redis_test_support::{Alertmanager, RedisServer};

use crate::config_for;

/// Waits for `done` for up to 30 s (a bound against hangs, not a timing assertion).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Our alerts in the Alertmanager's `GET /api/v2/alerts` (those whose `service` is ours).
fn alerts_in(am: &Alertmanager, service: &str) -> Vec<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&am.alerts_json()).expect("alertmanager answers JSON");
    all.as_array()
        .expect("an array of alerts")
        .iter()
        .filter(|a| a["labels"]["service"] == service)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_alerts_reach_a_real_alertmanager_and_resolve_there() {
    let server = RedisServer::start();
    let am = Alertmanager::start();
    let mut config = config_for(&server.url());
    config.alerts.default_rules = false;
    config.alerts.interval = Duration::from_secs(3600);
    config.alerts.labels.insert("service".into(), "it-alerts".into());
    config.alerts.alertmanager = Some(AlertmanagerConfig::new(am.url()));
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    let handle = exec.state::<u64>("am").expect("namespace");
    for i in 0..50u64 {
        handle.put(&format!("e{i}"), &i).await.expect("put");
    }
    // Any latency is above a threshold of zero: the alert fires at once (no rule covers the
    // metric, so the threshold gets a rule of its own).
    exec.set_alert_threshold("operations.max_ms", 0.0)
        .expect("known metric");
    let transitions = exec
        .alerts()
        .evaluate(&exec.snapshot(), &exec.monitor().alert_thresholds(), Instant::now());
    assert!(
        transitions
            .iter()
            .any(|t| t.rule == "threshold:operations.max_ms" && t.to == "firing"),
        "{transitions:?}"
    );
    eventually("the alert is in the Alertmanager", || {
        !alerts_in(&am, "it-alerts").is_empty()
    })
    .await;
    let shown = alerts_in(&am, "it-alerts");
    assert_eq!(shown.len(), 1, "{shown:?}");
    let labels = &shown[0]["labels"];
    assert_eq!(labels["alertname"], "threshold:operations.max_ms", "{labels}");
    assert_eq!(labels["severity"], "warning", "{labels}");
    assert_eq!(shown[0]["status"]["state"], "active", "{shown:?}");
    // Evaluating again while it still fires sends nothing new.
    let sent = exec.alerts().stats().notifications_sent;
    let again = exec
        .alerts()
        .evaluate(&exec.snapshot(), &exec.monitor().alert_thresholds(), Instant::now());
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(exec.alerts().stats().notifications_sent, sent);
    // Raised far above the value, the alert resolves: the Alertmanager gets its endsAt and
    // no longer lists it as active.
    exec.set_alert_threshold("operations.max_ms", 1e9)
        .expect("known metric");
    let resolved = exec
        .alerts()
        .evaluate(&exec.snapshot(), &exec.monitor().alert_thresholds(), Instant::now());
    assert!(resolved.iter().any(|t| t.to == "resolved"), "{resolved:?}");
    eventually("the Alertmanager took the resolution", || {
        alerts_in(&am, "it-alerts").is_empty()
    })
    .await;
    let stats = exec.alerts().stats();
    assert_eq!(
        (stats.fired, stats.resolved, stats.notification_failures),
        (1, 1, 0),
        "{stats:?}"
    );
    exec.shutdown().await;
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_costs_operations_nothing_and_retries_are_counted() {
    let server = RedisServer::start();
    let mut config = config_for(&server.url());
    config.alerts.default_rules = false;
    config.alerts.log = false;
    config.alerts.interval = Duration::from_millis(50);
    let mut webhook = WebhookConfig::new(format!("http://127.0.0.1:{}/hook", closed_port()));
    webhook.retries = 2;
    webhook.timeout = Duration::from_millis(500);
    config.alerts.webhook = Some(webhook);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    // Fires on the first evaluation that sees any operation.
    exec.set_alert_threshold("operations.max_ms", 0.0)
        .expect("known metric");
    let handle = exec.state::<u64>("hook").expect("namespace");
    let mut n = 0u64;
    while exec.alerts().stats().notification_failures == 0 {
        handle
            .put(&format!("e{}", n % 20), &n)
            .await
            .expect("put while the webhook is down");
        n += 1;
        if n.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(n < 10_000_000, "the webhook failure was never counted");
    }
    let stats = exec.alerts().stats();
    assert_eq!(stats.fired, 1, "{stats:?}");
    // Two retries after the first attempt, then given up and counted once.
    assert_eq!(
        (stats.notification_retries, stats.notification_failures),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(exec.snapshot().total.failures, 0, "no operation failed");
    exec.shutdown().await;
}

/// Log lines of this test binary, for the assertions on what the reload logs.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .finish();
        // Another test of this binary may have set one first: then nothing is captured and
        // the assertion on the log says so.
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    }))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_file(path: &std::path::Path, text: &str) {
    // Written whole and renamed, as editors and deploy tools do: never seen half-written.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).expect("create");
    file.write_all(text.as_bytes()).expect("write");
    file.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
}

fn settings(url: &str, threshold: &str, max_batch: u32, pool: u32) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\n[redis.pool]\nmax_size = {pool}\n\
         [batch]\nmax_batch = {max_batch}\n\
         [alerts]\ndefault_rules = false\nlog = false\ninterval = \"50ms\"\n\
         [[alerts.rules]]\nname = \"SlowOperations\"\nmetric = \"operations.p99_ms\"\nthreshold = {threshold}\n"
    )
}

fn threshold_of(exec: &StatefulExecutor, rule: &str) -> Option<f64> {
    exec.alerts()
        .alerts()
        .into_iter()
        .find(|a| a.rule == rule)
        .map(|a| a.threshold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_config_file_applies_live_and_a_broken_edit_keeps_the_running_config() {
    let logs = captured_logs();
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("sr-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("stateful-redis.toml");
    write_file(&file, &settings(&server.url(), "1000", 128, 8));
    let config = stateful_redis::load_config(Some(&file)).expect("valid file");
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    assert_eq!(threshold_of(&exec, "SlowOperations"), Some(1000.0));
    let watch = exec.watch_config(&file, Duration::from_millis(20));
    let handle = exec.state::<u64>("reload").expect("namespace");

    // A valid edit: the new threshold, batch size and pool size are used.
    write_file(&file, &settings(&server.url(), "0.5", 16, 12));
    eventually("the edit is applied", || watch.applied() == 1).await;
    // The next evaluation (every 50 ms) compares with the new threshold.
    eventually("the new threshold is used", || {
        threshold_of(&exec, "SlowOperations") == Some(0.5)
    })
    .await;
    assert_eq!(exec.batch_config().max_batch, 16);
    assert_eq!(exec.pool_stats().max_size, 12);
    assert_eq!(exec.live_config().batch.max_batch, 16);
    for i in 0..20u64 {
        handle.put(&format!("e{i}"), &i).await.expect("put after the reload");
    }

    // A broken edit: rejected, logged naming the field, and the running config stays.
    write_file(&file, &settings(&server.url(), "\"high\"", 64, 4));
    eventually("the broken edit is rejected", || watch.rejected() == 1).await;
    let why = watch.last_error().expect("a reason");
    assert!(why.contains("alerts.rules[0].threshold"), "{why}");
    assert_eq!(threshold_of(&exec, "SlowOperations"), Some(0.5));
    assert_eq!(exec.batch_config().max_batch, 16);
    assert_eq!(exec.pool_stats().max_size, 12);
    let logged = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(
        logged.contains("configuration change rejected") && logged.contains("alerts.rules[0].threshold"),
        "the log names the field: {logged}"
    );

    // An edit that is valid but changes what only a restart applies: the live parts apply,
    // the rest keeps its running value.
    let moved =
        settings(&server.url(), "0.5", 16, 12).replace("max_size = 12", "max_size = 12\nshared_connections = 3");
    write_file(&file, &moved);
    eventually("the second edit is applied", || watch.applied() == 2).await;
    assert_eq!(exec.pool_stats().shared_links, 1, "links only change on a restart");
    drop(watch);
    exec.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
