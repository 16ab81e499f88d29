//! OpenTelemetry export against real OTLP receivers started inside the test (a tonic gRPC
//! server, and an HTTP endpoint decoding opentelemetry-proto), and a real redis-server.
//!
//! Each test exports once, at `shutdown()` (the export interval is long), so that what
//! arrived is exactly what the known workload made.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue as PKeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::{Span as PSpan, span};
use prost::Message as _;
use stateful_redis::{Error, ExecutorConfig, OtlpProtocol, Secret, Stage, StatefulExecutor};
use stateful_redis_test_support::RedisServer;

#[derive(Debug, Default)]
struct Received {
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    /// The `x-api-key` header (or metadata) of every request.
    keys: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Grpc(Arc<Received>);

impl Grpc {
    fn key<T>(&self, request: &tonic::Request<T>) {
        if let Some(v) = request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()) {
            self.0.keys.lock().expect("keys").push(v.to_owned());
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.key(&request);
        self.0.metrics.lock().expect("metrics").push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.key(&request);
        self.0.traces.lock().expect("traces").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A gRPC OTLP receiver on a free loopback port.
async fn grpc_receiver() -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = Grpc(Arc::clone(&received));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(svc.clone()))
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, received)
}

async fn http_handle(
    received: Arc<Received>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::{BodyExt as _, Full};
    let path = req.uri().path().to_owned();
    if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        received.keys.lock().expect("keys").push(v.to_owned());
    }
    let status = |code: u16| {
        hyper::Response::builder()
            .status(code)
            .body(Full::default())
            .expect("response")
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(status(400));
    };
    let reply = match path.as_str() {
        "/v1/metrics" => {
            let request = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
            received.metrics.lock().expect("metrics").push(request);
            ExportMetricsServiceResponse::default().encode_to_vec()
        }
        "/v1/traces" => {
            let request = ExportTraceServiceRequest::decode(body).expect("OTLP traces protobuf");
            received.traces.lock().expect("traces").push(request);
            ExportTraceServiceResponse::default().encode_to_vec()
        }
        _ => return Ok(status(404)),
    };
    Ok(hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(reply.into()))
        .expect("response"))
}

/// An HTTP/protobuf OTLP receiver on a free loopback port.
async fn http_receiver() -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| http_handle(Arc::clone(&r), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn config(server: &RedisServer, protocol: OtlpProtocol, endpoint: String) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.redis.url = stateful_redis::RedisUrl::new(server.url());
    let t = &mut config.telemetry;
    t.enabled = true;
    t.protocol = Some(protocol);
    t.endpoint = Some(endpoint);
    // One export, at shutdown.
    t.metrics_interval = Some(Duration::from_secs(3600));
    t.sample_ratio = Some(1.0);
    t.service_name = Some("otel-test".into());
    t.headers.insert("x-api-key".into(), Secret::new("k-123"));
    // One presence shard, so the presence calls are known; large values compressed.
    config.presence.shards = 1;
    config.state.compress_above = Some(256);
    config
}

fn text(kv: &[PKeyValue], key: &str) -> Option<String> {
    kv.iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn attributes(kv: &[PKeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .filter_map(|a| Some((a.key.clone(), text(kv, &a.key)?)))
        .collect()
}

/// Every metric of the last metrics request, by name (cumulative: the last one has all).
fn metrics(received: &Received) -> BTreeMap<String, Metric> {
    let requests = received.metrics.lock().expect("metrics");
    let last = requests.last().expect("no metrics export arrived");
    last.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| (m.name.clone(), m.clone()))
        .collect()
}

fn spans(received: &Received) -> Vec<PSpan> {
    received
        .traces
        .lock()
        .expect("traces")
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

/// What [`workload`] did.
struct Done {
    /// Puts and gets that succeeded.
    puts: u64,
    gets: u64,
    /// Other script calls: a lease acquire, a heartbeat and a presence count.
    other_calls: u64,
    /// Exclusive connections checked out.
    checkouts: u64,
    /// Entities the presence count found.
    active: u64,
}

/// Puts from 16 concurrent callers (so pipelines of several), reads, 128 values large
/// enough to be compressed (so that the 1-in-64 codec sample catches one on either runtime
/// thread), a lease, presence, two exclusive checkouts, and one operation that fails on
/// the server (a value of the wrong type under the entity's key).
async fn workload(server: &RedisServer, exec: &StatefulExecutor) -> Done {
    let handle = exec.state::<u64>("otel").expect("namespace");
    let mut tasks = Vec::new();
    for caller in 0..16u64 {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                handle.put(&format!("e{caller}-{i}"), &i).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    for i in 0..10u64 {
        assert_eq!(
            handle
                .get(&format!("e0-{i}"))
                .await
                .expect("get")
                .expect("stored")
                .value,
            i
        );
    }
    let large = exec.state::<Vec<u64>>("otel").expect("namespace");
    for i in 0..128u64 {
        large
            .put(&format!("large-{i}"), &vec![i; 300])
            .await
            .expect("large put");
    }
    exec.leases("otel")
        .expect("leases")
        .acquire("leased", "owner-1", Duration::from_secs(30))
        .await
        .expect("acquire");
    let presence = exec.presence("otel").expect("presence");
    presence.heartbeat_many(&["d1", "d2", "d3"]).await.expect("heartbeat");
    assert_eq!(presence.active_count().await.expect("count"), 3);
    for _ in 0..2 {
        drop(exec.pool().exclusive().await.expect("checkout"));
    }
    server.cli(&["HSET", "otel:{broken}:s", "f", "not a record"]);
    let failed = handle.put("broken", &1).await;
    assert!(
        matches!(failed, Err(Error::Script { .. })),
        "a wrong-type key fails in the script: {failed:?}"
    );
    Done {
        puts: 160 + 128,
        gets: 10,
        other_calls: 3,
        checkouts: 2,
        active: 3,
    }
}

/// The spans of `calls` script calls made outside any caller span, all sampled.
fn check_call_spans(all: &[PSpan], server: &RedisServer, calls: u64) {
    let pipelines: BTreeMap<Vec<u8>, &PSpan> = all
        .iter()
        .filter(|s| s.name == "BATCH EVALSHA")
        .map(|s| (s.span_id.clone(), s))
        .collect();
    let operations: Vec<&PSpan> = all.iter().filter(|s| s.name.starts_with("EVALSHA ")).collect();
    assert_eq!(operations.len() as u64, calls, "one span per script call");
    for op in &operations {
        assert_eq!(op.kind, span::SpanKind::Client as i32);
        if !op.parent_span_id.is_empty() {
            let parent = pipelines
                .get(&op.parent_span_id)
                .expect("an operation span's parent is a pipeline span");
            assert_eq!(op.trace_id, parent.trace_id);
            assert_eq!(parent.kind, span::SpanKind::Client as i32);
            // Linked both ways.
            assert!(op.links.iter().any(|l| l.span_id == parent.span_id));
            assert!(parent.links.iter().any(|l| l.span_id == op.span_id));
        }
        let a = attributes(&op.attributes);
        assert_eq!(a["db.system.name"], "redis");
        assert_eq!(a["db.operation.name"], "EVALSHA");
        assert_eq!(a["db.namespace"], "0");
        assert!(
            matches!(
                (
                    a["db.stored_procedure.name"].as_str(),
                    a["stateful_redis.operation"].as_str()
                ),
                ("write", "put") | ("get", "get") | ("acquire", "acquire") | ("presence", "presence")
            ),
            "{a:?}"
        );
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["server.port"], server.port().to_string());
    }
    let failed: Vec<_> = operations
        .iter()
        .filter(|s| text(&s.attributes, "error.type").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "exactly the failed put carries error.type");
    assert_eq!(
        text(&failed[0].attributes, "db.response.status_code").as_deref(),
        Some("WRONGTYPE")
    );
    assert!(
        pipelines.values().any(|p| {
            let a = attributes(&p.attributes);
            let size = a
                .get("db.operation.batch.size")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            size >= 2 && a["db.operation.name"] == "BATCH EVALSHA" && p.links.len() == size
        }),
        "some pipeline carried several operations, and links to each"
    );
}

/// The count of a histogram metric's points, all series together.
fn histogram_count(m: &BTreeMap<String, Metric>, name: &str) -> u64 {
    let metric = m.get(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(metric.unit, "s", "{name}");
    let Some(metric::Data::Histogram(h)) = &metric.data else {
        panic!("{name} is not a histogram")
    };
    h.data_points.iter().map(|p| p.count).sum()
}

/// The integer value of a sum or gauge point with `attribute` = `value` (or the only point).
fn int_point(m: &BTreeMap<String, Metric>, name: &str, attribute: Option<(&str, &str)>) -> i64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    let metric = m.get(name).unwrap_or_else(|| panic!("{name} missing"));
    let points = match &metric.data {
        Some(metric::Data::Sum(s)) => &s.data_points,
        Some(metric::Data::Gauge(g)) => &g.data_points,
        other => panic!("{name} is not a sum or gauge: {other:?}"),
    };
    let point = points
        .iter()
        .find(|p| attribute.is_none_or(|(k, v)| text(&p.attributes, k).as_deref() == Some(v)))
        .unwrap_or_else(|| panic!("{name} has no point {attribute:?}"));
    match point.value {
        Some(Value::AsInt(n)) => n,
        Some(Value::AsDouble(x)) => x as i64,
        None => panic!("{name} has no value"),
    }
}

fn check_export(received: &Received, server: &RedisServer, done: &Done) {
    let (puts, gets) = (done.puts, done.gets);
    let calls = puts + gets + 1 + done.other_calls;
    let m = metrics(received);

    // The operation histogram: seconds, semconv buckets, one series per operation and outcome.
    let duration = &m["db.client.operation.duration"];
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(h)) = &duration.data else {
        panic!("not a histogram: {duration:?}")
    };
    let series: BTreeMap<(String, Option<String>), u64> = h
        .data_points
        .iter()
        .map(|p| {
            let a = attributes(&p.attributes);
            assert_eq!(a.get("db.system.name").map(String::as_str), Some("redis"), "{a:?}");
            assert_eq!(a.get("db.operation.name").map(String::as_str), Some("EVALSHA"), "{a:?}");
            assert_eq!(a.get("db.namespace").map(String::as_str), Some("0"), "{a:?}");
            assert_eq!(a.get("server.address").map(String::as_str), Some("127.0.0.1"), "{a:?}");
            assert_eq!(a.get("server.port"), Some(&server.port().to_string()), "{a:?}");
            if a.contains_key("error.type") {
                assert_eq!(
                    a.get("db.response.status_code").map(String::as_str),
                    Some("WRONGTYPE"),
                    "{a:?}"
                );
            }
            // 50 µs to 10 s.
            assert_eq!(
                (p.explicit_bounds.first(), p.explicit_bounds.last()),
                (Some(&0.000_05), Some(&10.0))
            );
            (
                (a["stateful_redis.operation"].clone(), a.get("error.type").cloned()),
                p.count,
            )
        })
        .collect();
    assert_eq!(series.get(&("put".into(), None)), Some(&puts), "{series:?}");
    assert_eq!(series.get(&("get".into(), None)), Some(&gets), "{series:?}");
    assert_eq!(
        series.get(&("put".into(), Some("script".into()))),
        Some(&1),
        "{series:?}"
    );
    assert_eq!(series.get(&("acquire".into(), None)), Some(&1), "{series:?}");
    assert_eq!(
        series.len(),
        5,
        "only the series that recorded are exported (put, get, failed put, acquire, presence): {series:?}"
    );

    // Counters from the monitor agree with the histogram.
    let Some(metric::Data::Sum(ops)) = &m["stateful_redis.operations"].data else {
        panic!("operations is not a sum")
    };
    assert!(ops.is_monotonic);
    let put_count = ops
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "stateful_redis.operation").as_deref() == Some("put"))
        .expect("put count");
    assert_eq!(
        put_count.value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt((puts + 1) as i64))
    );
    let Some(metric::Data::Histogram(batches)) = &m["stateful_redis.batch.size"].data else {
        panic!("batch.size is not a histogram")
    };
    let sent: f64 = batches.data_points.iter().map(|p| p.sum.unwrap_or(0.0)).sum();
    assert_eq!(sent as u64, calls, "every script call went out in a pipeline");

    // Sampled stages: each runtime thread times its first operation and codec call.
    assert!(histogram_count(&m, "stateful_redis.queue.wait") >= 1);
    assert!(histogram_count(&m, "stateful_redis.serialization.duration") >= 1);
    assert!(histogram_count(&m, "stateful_redis.compression.duration") >= 1);
    assert_eq!(histogram_count(&m, "db.client.connection.wait_time"), done.checkouts);
    // Bytes both ways, the queue's capacity, leases and the presence count.
    assert_eq!(m["stateful_redis.bytes"].unit, "By");
    let sent_bytes = int_point(&m, "stateful_redis.bytes", Some(("direction", "sent")));
    let received_bytes = int_point(&m, "stateful_redis.bytes", Some(("direction", "received")));
    // Each large value alone is over 600 bytes of JSON before compression.
    assert!(
        sent_bytes > 128 * 100 && received_bytes > 0,
        "{sent_bytes} / {received_bytes}"
    );
    assert_eq!(int_point(&m, "stateful_redis.queue.capacity", None), 10_000);
    assert_eq!(int_point(&m, "stateful_redis.leases.acquired", None), 1);
    assert_eq!(
        int_point(&m, "stateful_redis.entities.active", None),
        done.active as i64
    );

    // The pool under the semantic conventions, and the process.
    let Some(metric::Data::Sum(conns)) = &m["db.client.connection.count"].data else {
        panic!("connection count is not a sum")
    };
    assert!(!conns.is_monotonic);
    let states: Vec<String> = conns
        .data_points
        .iter()
        .map(|p| {
            assert_eq!(
                text(&p.attributes, "db.client.connection.pool.name"),
                Some(format!("127.0.0.1:{}", server.port()))
            );
            text(&p.attributes, "db.client.connection.state").expect("state")
        })
        .collect();
    assert!(states.contains(&"idle".to_owned()) && states.contains(&"used".to_owned()));
    for name in [
        "process.cpu.time",
        "process.memory.usage",
        "stateful_redis.queue.depth",
        "stateful_redis.errors",
        "stateful_redis.telemetry.export.errors",
        "stateful_redis.runtime.tasks",
    ] {
        assert!(
            m.contains_key(name),
            "{name} missing; got {:?}",
            m.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(m["process.cpu.time"].unit, "s");

    // Spans: every script call has a CLIENT span; no caller span here, so a call is a child of
    // its pipeline's span (a pipeline of several), or a root (a pipeline of one).
    check_call_spans(&spans(received), server, calls);

    // The configured header reached the receiver with both signals.
    let keys = received.keys.lock().expect("keys");
    assert!(keys.len() >= 2 && keys.iter().all(|k| k == "k-123"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_of_metrics_and_traces() {
    let server = RedisServer::start();
    let (addr, received) = grpc_receiver().await;
    let exec = StatefulExecutor::builder()
        .config(config(&server, OtlpProtocol::Grpc, format!("http://{addr}")))
        .build()
        .await
        .expect("executor");
    let done = workload(&server, &exec).await;
    let snapshot = exec.monitor().snapshot();
    assert_eq!(snapshot.operation("put").expect("put").count, done.puts + 1);
    // The same sampled stages in the in-process snapshot.
    for stage in [Stage::QueueWait, Stage::Serialization, Stage::Compression] {
        assert!(
            snapshot.stage(stage).is_some_and(|s| s.count >= 1),
            "{stage:?} not timed"
        );
    }
    assert_eq!(snapshot.stage(Stage::PoolWait).map(|s| s.count), Some(done.checkouts));
    assert_eq!(snapshot.active_entities, Some(done.active));
    assert_eq!(snapshot.leases_acquired, 1);
    assert!(snapshot.gauges.bytes_sent > 0 && snapshot.gauges.bytes_received > 0);
    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));
    check_export(&received, &server, &done);
    check_dashboards(&metrics(&received));
}

/// The Prometheus name of an exported metric, as the OTLP translation makes it (the
/// collector's and Prometheus' own): `.` → `_`, the unit's word unless already there,
/// `_total` on monotonic sums. Also whether it is a histogram.
fn prometheus_name(metric: &Metric) -> (String, bool) {
    let mut parts: Vec<String> = metric
        .name
        .split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let unit = match metric.unit.as_str() {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        u if u.starts_with('{') || u.is_empty() || u == "1" => None,
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

/// Every metric name of ours (by prefix) a PromQL text refers to.
fn referenced(promql: &str) -> Vec<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["stateful_redis_", "db_client_", "process_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

/// Every `expr` and `query` string of a Grafana dashboard.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// `dashboards`: every metric the Grafana dashboard's queries and the Prometheus rules
/// name is one this export carries, under its Prometheus name.
fn check_dashboards(m: &BTreeMap<String, Metric>) {
    let mut names = std::collections::BTreeSet::new();
    for metric in m.values() {
        let (name, histogram) = prometheus_name(metric);
        if histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    // Attribute names turn into label names (`db.client.connection.state` →
    // `db_client_connection_state`), which share the metrics' prefixes.
    let mut labels = std::collections::BTreeSet::new();
    for metric in m.values() {
        let attributes: Vec<&[PKeyValue]> = match &metric.data {
            Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes[..]).collect(),
            Some(metric::Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes[..]).collect(),
            Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| &p.attributes[..]).collect(),
            _ => Vec::new(),
        };
        for kv in attributes.into_iter().flatten() {
            labels.insert(kv.key.replace('.', "_"));
        }
    }
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docs.join("stateful-redis.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut texts = Vec::new();
    queries(&dashboard, &mut texts);
    assert!(texts.len() >= 20, "the dashboard has {} queries", texts.len());
    let rules = std::fs::read_to_string(docs.join("prometheus-rules.yml")).expect("rules");
    texts.push(
        rules
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut used = std::collections::BTreeSet::new();
    for text in &texts {
        for name in referenced(text).into_iter().filter(|n| !labels.contains(n)) {
            assert!(
                names.contains(&name),
                "dashboards names {name}, which is not exported; exported: {names:?}"
            );
            used.insert(name);
        }
    }
    for core in [
        "db_client_operation_duration_seconds_bucket",
        "stateful_redis_operations_total",
        "stateful_redis_queue_depth",
        "db_client_connection_count",
        "stateful_redis_bytes_total",
    ] {
        assert!(used.contains(core), "the dashboards never show {core}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_of_metrics_and_traces() {
    let server = RedisServer::start();
    let (addr, received) = http_receiver().await;
    let exec = StatefulExecutor::builder()
        .config(config(&server, OtlpProtocol::HttpProtobuf, format!("http://{addr}")))
        .build()
        .await
        .expect("executor");
    let done = workload(&server, &exec).await;
    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));
    check_export(&received, &server, &done);
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_leaves_operations_alone_and_is_counted() {
    let server = RedisServer::start();
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let port = closed_port().await;
        let mut config = config(&server, protocol, format!("http://127.0.0.1:{port}"));
        config.telemetry.metrics_interval = Some(Duration::from_millis(100));
        config.telemetry.timeout = Some(Duration::from_millis(300));
        config.telemetry.shutdown_timeout = Duration::from_secs(3);
        let exec = StatefulExecutor::builder()
            .config(config)
            .build()
            .await
            .expect("a collector that is down is no reason to refuse to start");
        let handle = exec.state::<u64>("down").expect("namespace");
        // Operations go on, all of them, while exports fail.
        let mut n = 0u64;
        while exec.telemetry_export_errors().expect("telemetry on").0 == 0 {
            handle
                .put(&format!("e{}", n % 50), &n)
                .await
                .expect("put while the collector is down");
            n += 1;
            assert!(
                n < 1_000_000,
                "no metric export failure was ever counted ({protocol:?})"
            );
            if n.is_multiple_of(100) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(exec.monitor().snapshot().operation("put").expect("puts").failures, 0);
        // Shutdown comes back even though the last export cannot be delivered.
        tokio::time::timeout(Duration::from_secs(30), exec.shutdown())
            .await
            .expect("shutdown is bounded by telemetry.shutdown_timeout");
    }
}

#[tokio::test]
async fn bad_telemetry_settings_are_config_errors_naming_the_field() {
    let server = RedisServer::start();
    let mut config = config(&server, OtlpProtocol::Grpc, "not a url".into());
    let err = StatefulExecutor::builder()
        .config(config.clone())
        .build()
        .await
        .expect_err("bad endpoint");
    assert!(
        matches!(&err, Error::Config(e) if e.field == "telemetry.endpoint"),
        "{err}"
    );
    config.telemetry.endpoint = Some("http://127.0.0.1:4317".into());
    config.telemetry.sample_ratio = Some(1.5);
    let err = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect_err("bad ratio");
    assert!(
        matches!(&err, Error::Config(e) if e.field == "telemetry.sample_ratio"),
        "{err}"
    );
}

#[test]
fn header_values_never_show() {
    let server = RedisServer::start();
    let config = config(&server, OtlpProtocol::Grpc, "http://127.0.0.1:4317".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("k-123"), "{shown}");
    assert!(shown.contains("x-api-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampling_ratio_changes_live() {
    let server = RedisServer::start();
    let (addr, received) = http_receiver().await;
    let mut config = config(&server, OtlpProtocol::HttpProtobuf, format!("http://{addr}"));
    config.telemetry.sample_ratio = Some(0.0);
    let exec = StatefulExecutor::builder()
        .config(config.clone())
        .build()
        .await
        .expect("executor");
    let handle = exec.state::<u64>("sampling").expect("namespace");
    for i in 0..20u64 {
        handle.put(&format!("unsampled-{i}"), &i).await.expect("put");
    }
    config.telemetry.sample_ratio = Some(1.0);
    let change = exec.apply_config(&config).expect("valid");
    assert_eq!(change.applied, vec!["telemetry.sample_ratio"], "{change:?}");
    assert!(change.restart_needed.is_empty(), "{change:?}");
    assert_eq!(exec.live_config().telemetry.sample_ratio, Some(1.0));
    for i in 0..20u64 {
        handle.put(&format!("sampled-{i}"), &i).await.expect("put");
    }
    // Another telemetry setting needs a restart, and says so.
    config.telemetry.service_name = Some("renamed".into());
    let change = exec.apply_config(&config).expect("valid");
    assert_eq!(change.restart_needed, vec!["telemetry".to_owned()], "{change:?}");
    exec.shutdown().await;
    let operations = spans(&received)
        .into_iter()
        .filter(|s| s.name.starts_with("EVALSHA "))
        .count();
    assert_eq!(operations, 20, "only the puts after the change were traced");
}

/// The app's own providers, exporting over OTLP/HTTP to `addr` under the app's resource.
fn app_providers(
    addr: SocketAddr,
) -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    opentelemetry_sdk::metrics::SdkMeterProvider,
) {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("device-api")
        .with_attribute(opentelemetry::KeyValue::new("deployment.environment.name", "test"))
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{addr}/v1/traces"))
        .build()
        .expect("span exporter");
    let tracers = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{addr}/v1/metrics"))
        .build()
        .expect("metric exporter");
    let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(
            opentelemetry_sdk::metrics::PeriodicReader::builder(metrics)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    (tracers, meters)
}

/// Shuts the app's providers down (they block): the last export.
async fn shut_app(
    tracers: opentelemetry_sdk::trace::SdkTracerProvider,
    meters: opentelemetry_sdk::metrics::SdkMeterProvider,
) {
    tokio::task::spawn_blocking(move || {
        tracers.shutdown().expect("tracer provider shutdown");
        meters.shutdown().expect("meter provider shutdown");
    })
    .await
    .expect("shutdown thread");
}

/// The service name of the resource each span or metric arrived under, by its name.
fn resources(received: &Received) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let service = |r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| {
        r.as_ref()
            .and_then(|r| text(&r.attributes, "service.name"))
            .unwrap_or_default()
    };
    for request in received.traces.lock().expect("traces").iter() {
        for rs in &request.resource_spans {
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                out.insert(span.name.clone(), service(&rs.resource));
            }
        }
    }
    for request in received.metrics.lock().expect("metrics").iter() {
        for rm in &request.resource_metrics {
            for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                out.insert(metric.name.clone(), service(&rm.resource));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_owned_providers_put_the_executors_spans_under_the_apps_span_and_resource() {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};

    let server = RedisServer::start();
    let (addr, received) = http_receiver().await;
    let (tracers, meters) = app_providers(addr);
    // `telemetry.enabled` stays false: handing the providers over is enough.
    let exec = StatefulExecutor::builder()
        .url(server.url())
        .meter_provider(&meters)
        .tracer_provider(&tracers)
        .build()
        .await
        .expect("executor");
    let devices = exec.state::<u64>("app").expect("namespace");

    // A sampled request: the executor's spans are its children.
    let request = tracers.tracer("device-api").start("PUT /devices/{id}");
    let request = opentelemetry::Context::current_with_span(request);
    let (trace_id, request_id) = {
        let span = request.span();
        (span.span_context().trace_id(), span.span_context().span_id())
    };
    async {
        let (a, b) = tokio::join!(devices.put("dev-1", &1), devices.put("dev-2", &2));
        a.and(b).expect("puts");
        devices.get("dev-1").await.expect("get");
    }
    .with_context(request.clone())
    .await;
    request.span().end();

    // An unsampled request: its caller decided, so no span at all.
    let unsampled = opentelemetry::trace::SpanContext::new(
        opentelemetry::trace::TraceId::from(7u128),
        opentelemetry::trace::SpanId::from(9u64),
        opentelemetry::trace::TraceFlags::default(),
        true,
        Default::default(),
    );
    devices
        .put("dev-3", &3)
        .with_context(opentelemetry::Context::new().with_remote_span_context(unsampled))
        .await
        .expect("put");

    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), None, "the app's exporters, not ours");
    shut_app(tracers, meters).await;

    let all = spans(&received);
    let calls: Vec<&PSpan> = all.iter().filter(|s| s.name.starts_with("EVALSHA ")).collect();
    assert_eq!(calls.len(), 3, "two puts and a get under the sampled request: {all:?}");
    for call in &calls {
        assert_eq!(call.trace_id, trace_id.to_bytes().to_vec(), "{call:?}");
        assert_eq!(call.parent_span_id, request_id.to_bytes().to_vec(), "{call:?}");
    }
    assert!(
        all.iter().all(|s| s.trace_id != 7u128.to_be_bytes().to_vec()),
        "nothing of the unsampled request was recorded"
    );
    // A pipeline that carried both puts is in the request's trace too, linking to them.
    for batch in all.iter().filter(|s| s.name == "BATCH EVALSHA") {
        assert_eq!(batch.trace_id, trace_id.to_bytes().to_vec());
        assert!(batch.links.len() >= 2, "{batch:?}");
    }
    // Everything arrived under the app's resource.
    let by_name = resources(&received);
    for name in [
        "PUT /devices/{id}",
        "EVALSHA write",
        "EVALSHA get",
        "db.client.operation.duration",
    ] {
        assert_eq!(
            by_name.get(name).map(String::as_str),
            Some("device-api"),
            "{name}: {by_name:?}"
        );
    }
    let m = metrics(&received);
    assert!(histogram_count(&m, "db.client.operation.duration") >= 4);
}

#[tokio::test(flavor = "current_thread")]
async fn tracing_spans_bridged_by_tracing_opentelemetry_parent_the_executors_spans() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let server = RedisServer::start();
    let (addr, received) = http_receiver().await;
    let (tracers, meters) = app_providers(addr);
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracers.tracer("device-api")));
    let _default = tracing::subscriber::set_default(subscriber);
    let exec = StatefulExecutor::builder()
        .url(server.url())
        .meter_provider(&meters)
        .tracer_provider(&tracers)
        .build()
        .await
        .expect("executor");
    let devices = exec.state::<u64>("bridged").expect("namespace");
    devices
        .put("dev-1", &1)
        .instrument(tracing::info_span!("handle request"))
        .await
        .expect("put");
    exec.shutdown().await;
    shut_app(tracers, meters).await;

    let all = spans(&received);
    let by_name = |name: &str| {
        all.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {all:?}"))
    };
    let request = by_name("handle request");
    let operation = by_name("stateful_redis.operation");
    let call = by_name("EVALSHA write");
    assert_eq!(
        operation.parent_span_id, request.span_id,
        "the operation under the request"
    );
    assert_eq!(call.parent_span_id, operation.span_id, "the call under the operation");
    assert_eq!(call.trace_id, request.trace_id);
    assert_eq!(
        text(&operation.attributes, "stateful_redis.operation").as_deref(),
        Some("put")
    );
}
