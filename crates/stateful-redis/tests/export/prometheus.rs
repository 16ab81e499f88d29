//! The Prometheus endpoint (`telemetry.prometheus_listen`) scraped by a real Prometheus
//! (Debian's `prometheus`) while an executor works, with the shipped rules loaded: every
//! query of the shipped Grafana dashboard returns data, and every rule evaluates without
//! error on series that exist. And the endpoint's series are those of the OTLP export of the
//! same work, translated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use serde_json::Value;
use stateful_redis::{Error, ExecutorConfig, OtlpProtocol, StatefulExecutor};
use stateful_redis_test_support::{Prometheus, RedisServer, TestCa};

const JOB: &str = "stateful-redis";

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

/// A port of 127.0.0.1 nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// GET `http://127.0.0.1:{port}/metrics`: status and body.
fn scrape(port: u16) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The JSON of an instant query that must succeed.
fn query(prometheus: &Prometheus, promql: &str) -> Value {
    let (status, body) = prometheus.query(promql);
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{promql}: not JSON ({e}): {body}"));
    assert!(
        status == 200 && json["status"] == "success",
        "{promql} failed ({status}): {body}"
    );
    json
}

fn has_data(json: &Value) -> bool {
    json["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
}

/// Polls `done` every 250 ms for at most `limit`; panics with `what` and Prometheus's log.
fn wait_for(prometheus: &Prometheus, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            prometheus.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The dashboard's PromQL: every panel target's `expr`, and the metric of each
/// `label_values(metric, label)` variable. Grafana's variables become what a user with
/// everything selected sends (`$window` = 1m).
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboards().join("stateful-redis.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(q)) => out.push(q.clone()),
                        _ => exprs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    exprs(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = match &variable["query"] {
            Value::String(q) => q.clone(),
            Value::Object(q) => q["query"].as_str().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        if variable["type"] == "query"
            && let Some(inner) = query.strip_prefix("label_values(")
            && let Some((metric, _label)) = inner.rsplit_once(',')
        {
            out.push(metric.trim().to_owned());
        }
    }
    out.iter()
        .map(|q| {
            q.replace("$job", JOB)
                .replace("$instance", ".*")
                .replace("$window", "1m")
        })
        .collect()
}

/// The `expr` of every rule of the shipped rules file (block scalars, `expr: |`).
fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dashboards().join("prometheus-rules.yml")).expect("rules");
    let mut rules = Vec::new();
    let mut lines = text.lines().peekable();
    let mut name = String::new();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(alert) = trimmed.strip_prefix("- alert:") {
            name = alert.trim().to_owned();
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let indent = line.len() - trimmed.len();
            let mut expr = String::new();
            if rest.trim() == "|" {
                while let Some(next) = lines.peek() {
                    if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    expr.push_str(next.trim());
                    expr.push(' ');
                    lines.next();
                }
            } else {
                expr = rest.trim().to_owned();
            }
            rules.push((name.clone(), expr.trim().to_owned()));
        }
    }
    assert!(rules.len() >= 8, "{rules:?}");
    rules
}

/// The metric names of ours a PromQL text refers to.
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["stateful_redis_", "db_client_", "process_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        // Label names share the prefixes.
        .filter(|w| !matches!(*w, "db_client_connection_pool_name" | "db_client_connection_state"))
        .map(str::to_owned)
        .collect()
}

/// Work that makes every series of the dashboard exist: puts from concurrent callers, gets,
/// large (compressed) values, a failing operation, a lease, presence, exclusive checkouts.
async fn workload(server: &RedisServer, exec: &StatefulExecutor) {
    let handle = exec.state::<u64>("prom").expect("namespace");
    let mut tasks = Vec::new();
    for caller in 0..8u64 {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                handle.put(&format!("e{caller}-{i}"), &i).await.expect("put");
                handle.get(&format!("e{caller}-{i}")).await.expect("get");
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    let large = exec.state::<Vec<u64>>("prom").expect("namespace");
    for i in 0..160u64 {
        large
            .put(&format!("large-{i}"), &vec![i; 300])
            .await
            .expect("large put");
    }
    exec.leases("prom")
        .expect("leases")
        .acquire("held", "owner-1", Duration::from_secs(60))
        .await
        .expect("acquire");
    let presence = exec.presence("prom").expect("presence");
    presence.heartbeat_many(&["d1", "d2", "d3"]).await.expect("heartbeat");
    assert_eq!(presence.active_count().await.expect("count"), 3);
    for _ in 0..2 {
        drop(exec.pool().exclusive().await.expect("checkout"));
    }
    server.cli(&["HSET", "prom:{broken}:s", "f", "not a record"]);
    assert!(matches!(handle.put("broken", &1).await, Err(Error::Script { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_endpoint_and_the_dashboard_and_rules_work_on_it() {
    let server = RedisServer::start();
    let port = free_port();
    let mut config = ExecutorConfig::default();
    config.redis.url = stateful_redis::RedisUrl::new(server.url());
    config.telemetry.enabled = true;
    config.telemetry.prometheus_listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    config.presence.shards = 1;
    config.state.compress_above = Some(256);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    workload(&server, &exec).await;

    // The exposition itself, before any Prometheus.
    let (status, text) = tokio::task::spawn_blocking(move || scrape(port)).await.expect("scrape");
    assert_eq!(status, 200, "{text}");
    for line in [
        "# TYPE db_client_operation_duration_seconds histogram",
        "# TYPE stateful_redis_operations_total counter",
        "# TYPE db_client_connection_count gauge",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("db_client_operation_duration_seconds_bucket{")
                && l.contains("stateful_redis_operation=\"put\"")
                && l.contains("le=\"+Inf\"")),
        "{text}"
    );
    // Prometheus-only: no spans, and nothing exported over OTLP.
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));

    let rules = dashboards().join("prometheus-rules.yml");
    let prometheus =
        tokio::task::spawn_blocking(move || Prometheus::start(JOB, &[format!("127.0.0.1:{port}")], &[&rules]))
            .await
            .expect("prometheus");
    // Work goes on while it scrapes, so that every rate has increases to see.
    let busy = {
        let handle = exec.state::<u64>("prom").expect("namespace");
        tokio::spawn(async move {
            for i in 0..100_000u64 {
                if handle.put(&format!("busy-{}", i % 100), &i).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let prometheus = tokio::task::spawn_blocking(move || {
        wait_for(
            &prometheus,
            "three scrapes of the endpoint",
            Duration::from_secs(60),
            || {
                has_data(&query(
                    &prometheus,
                    &format!("count_over_time(stateful_redis_operations_total{{job=\"{JOB}\"}}[1m]) >= 3"),
                ))
            },
        );
        prometheus
    })
    .await
    .expect("scrapes");

    // A lease lost now makes stateful_redis_leases_lost_total rise between two scrapes:
    // StatefulRedisLeasesLost (no `for`) fires, and the dashboard's ALERTS panel has data.
    let guard = exec
        .leases("prom")
        .expect("leases")
        .acquire_guarded("guarded", "holder", Duration::from_millis(600))
        .await
        .expect("guarded lease");
    server.cli(&["DEL", "prom:{guarded}:l"]);
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("the loss was never reported");

    let prometheus = tokio::task::spawn_blocking(move || {
        wait_for(
            &prometheus,
            "StatefulRedisLeasesLost firing",
            Duration::from_secs(60),
            || {
                has_data(&query(
                    &prometheus,
                    "ALERTS{alertname=\"StatefulRedisLeasesLost\",alertstate=\"firing\"}",
                ))
            },
        );
        // Every dashboard query returns data.
        let queries = dashboard_queries();
        assert!(queries.len() >= 40, "{} queries", queries.len());
        let empty: Vec<&String> = queries.iter().filter(|q| !has_data(&query(&prometheus, q))).collect();
        assert!(empty.is_empty(), "dashboard queries without data: {empty:#?}");

        // Every rule evaluates without error, on series that exist.
        for (name, expr) in rule_exprs() {
            query(&prometheus, &expr);
            for metric in metric_names(&expr) {
                assert!(
                    has_data(&query(&prometheus, &format!("{metric}{{job=\"{JOB}\"}}"))),
                    "rule {name} uses {metric}, which Prometheus does not have"
                );
            }
        }
        // And Prometheus's own evaluation of the loaded group says so.
        wait_for(&prometheus, "every rule evaluated", Duration::from_secs(30), || {
            let Some((200, body)) = prometheus.get("/api/v1/rules") else {
                return false;
            };
            let json: Value = serde_json::from_str(&body).unwrap_or_default();
            let all: Vec<&Value> = json["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let bad: Vec<&Value> = all.iter().copied().filter(|r| r["health"] == "err").collect();
            assert!(bad.is_empty(), "rules that fail to evaluate: {bad:#?}");
            all.len() == rule_exprs().len() && all.iter().all(|r| r["health"] == "ok")
        });
    })
    .await;
    busy.abort();
    exec.shutdown().await;
    if let Err(e) = prometheus {
        std::panic::resume_unwind(e.into_panic());
    }
    // The endpoint stops with the executor (its task is aborted: wait for the runtime to drop it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the endpoint still listens after shutdown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Prometheus name of an OTLP metric as the OTLP translation makes it (the Collector's and
/// Prometheus's own, suffixes on), written here apart from the library's: `.` → `_`, the
/// unit's word unless already there, `_total` on monotonic sums. Also whether it is a histogram.
fn translated(metric: &Metric) -> (String, bool) {
    let mut parts: Vec<String> = metric
        .name
        .split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let unit = match metric.unit.as_str() {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        u if u.starts_with('{') || u.is_empty() => None,
        other => panic!("no Prometheus word known for unit {other:?} of {}", metric.name),
    };
    if let Some(unit) = unit
        && !parts.iter().any(|p| p == unit)
    {
        parts.push(unit.to_owned());
    }
    let (counter, histogram) = match &metric.data {
        Some(metric::Data::Sum(s)) => (s.is_monotonic, false),
        Some(metric::Data::Histogram(_)) => (false, true),
        _ => (false, false),
    };
    if counter {
        parts.retain(|p| p != "total");
        parts.push("total".to_owned());
    }
    (parts.join("_"), histogram)
}

/// Each series name of an OTLP export as Prometheus would store it, with its label names.
fn translated_series(metrics: &[Metric]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for metric in metrics {
        let (name, histogram) = translated(metric);
        let attributes: Vec<&[KeyValue]> = match &metric.data {
            Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes[..]).collect(),
            Some(metric::Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes[..]).collect(),
            Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| &p.attributes[..]).collect(),
            other => panic!("{}: unexpected data {other:?}", metric.name),
        };
        let labels: BTreeSet<String> = attributes
            .into_iter()
            .flatten()
            .map(|kv| kv.key.replace('.', "_"))
            .collect();
        let names = if histogram {
            vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")]
        } else {
            vec![name]
        };
        for name in names {
            out.entry(name).or_default().extend(labels.iter().cloned());
        }
    }
    out
}

/// Each series name of an exposition, with its label names (`le` aside).
fn exposed_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(set) = line[name_end..].strip_prefix('{').and_then(|l| l.split_once('}')) {
            for pair in set.0.split("\",").filter(|p| !p.is_empty()) {
                let (label, _) = pair.split_once('=').unwrap_or((pair, ""));
                if label != "le" {
                    labels.insert(label.to_owned());
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_has_the_names_and_labels_of_the_otlp_translation() {
    let server = RedisServer::start();
    let ca = TestCa::new();
    let (collector, received) = crate::tls::http_tls_receiver(&ca).await;
    let port = free_port();
    let mut config = ExecutorConfig::default();
    config.redis.url = stateful_redis::RedisUrl::new(server.url());
    let t = &mut config.telemetry;
    t.enabled = true;
    t.traces = false;
    t.protocol = Some(OtlpProtocol::HttpProtobuf);
    t.endpoint = Some(format!("https://{collector}"));
    t.ca_file = Some(ca.ca_path().to_owned());
    // One export, at shutdown.
    t.metrics_interval = Some(Duration::from_secs(3600));
    t.prometheus_listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    config.presence.shards = 1;
    config.state.compress_above = Some(256);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    workload(&server, &exec).await;
    let (status, text) = tokio::task::spawn_blocking(move || scrape(port)).await.expect("scrape");
    assert_eq!(status, 200, "{text}");
    // Both paths see the same work: nothing happens between the scrape and the export.
    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));
    let exported = received.lock().expect("received").clone();
    assert!(!exported.is_empty(), "no OTLP export arrived");
    let want = translated_series(&exported);
    let got = exposed_series(&text);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "series names differ between OTLP (translated) and the endpoint"
    );
    assert_eq!(
        want, got,
        "label names differ between OTLP (translated) and the endpoint"
    );
}
