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
use stateful_redis::{Error, ExecutorConfig, OtlpProtocol, Secret, StatefulExecutor};
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

/// Puts from 16 concurrent callers (so pipelines of several), reads, and one operation that
/// fails on the server (a value of the wrong type under the entity's key). Returns
/// (puts, gets) that succeeded.
async fn workload(server: &RedisServer, exec: &StatefulExecutor) -> (u64, u64) {
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
    server.cli(&["SET", "otel:{broken}:s", "not a hash"]);
    let failed = handle.put("broken", &1).await;
    assert!(
        matches!(failed, Err(Error::Script { .. })),
        "a wrong-type key fails in the script: {failed:?}"
    );
    (160, 10)
}

fn check_export(received: &Received, server: &RedisServer, exec_ops: (u64, u64)) {
    let (puts, gets) = exec_ops;
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
            assert_eq!(p.explicit_bounds.first(), Some(&0.001));
            ((a["db.operation.name"].clone(), a.get("error.type").cloned()), p.count)
        })
        .collect();
    assert_eq!(series.get(&("put".into(), None)), Some(&puts), "{series:?}");
    assert_eq!(series.get(&("get".into(), None)), Some(&gets), "{series:?}");
    assert_eq!(
        series.get(&("put".into(), Some("script".into()))),
        Some(&1),
        "{series:?}"
    );
    assert_eq!(
        series.len(),
        3,
        "only the series that recorded are exported: {series:?}"
    );

    // Counters from the monitor agree with the histogram.
    let Some(metric::Data::Sum(ops)) = &m["stateful_redis.operations"].data else {
        panic!("operations is not a sum")
    };
    assert!(ops.is_monotonic);
    let put_count = ops
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "db.operation.name").as_deref() == Some("put"))
        .expect("put count");
    assert_eq!(
        put_count.value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt((puts + 1) as i64))
    );
    let Some(metric::Data::Histogram(batches)) = &m["stateful_redis.batch.size"].data else {
        panic!("batch.size is not a histogram")
    };
    let sent: f64 = batches.data_points.iter().map(|p| p.sum.unwrap_or(0.0)).sum();
    assert_eq!(sent as u64, puts + gets + 1, "every script call went out in a pipeline");

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

    // Spans: every script call has a CLIENT span under its pipeline's.
    let all = spans(received);
    let pipelines: BTreeMap<Vec<u8>, &PSpan> = all
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| (s.span_id.clone(), s))
        .collect();
    let operations: Vec<&PSpan> = all.iter().filter(|s| !s.parent_span_id.is_empty()).collect();
    assert_eq!(operations.len() as u64, puts + gets + 1, "one span per script call");
    for op in &operations {
        let parent = pipelines
            .get(&op.parent_span_id)
            .expect("an operation span's parent is a pipeline span");
        assert_eq!(op.trace_id, parent.trace_id);
        assert_eq!(op.kind, span::SpanKind::Client as i32);
        assert_eq!(parent.kind, span::SpanKind::Client as i32);
        let a = attributes(&op.attributes);
        assert_eq!(a["db.system.name"], "redis");
        assert_eq!(a["db.operation.name"], "EVALSHA");
        assert!(
            matches!(a["db.stored_procedure.name"].as_str(), "write" | "get"),
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
    assert!(
        pipelines.values().any(|p| {
            let a = attributes(&p.attributes);
            a.get("db.operation.batch.size")
                .is_some_and(|n| n.parse::<u64>().unwrap_or(0) >= 2)
                && a["db.operation.name"] == "BATCH EVALSHA"
        }),
        "some pipeline carried several operations"
    );

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
    let ops = workload(&server, &exec).await;
    assert_eq!(
        exec.monitor().snapshot().operation("put").expect("put").count,
        ops.0 + 1
    );
    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));
    check_export(&received, &server, ops);
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
    let ops = workload(&server, &exec).await;
    exec.shutdown().await;
    assert_eq!(exec.telemetry_export_errors(), Some((0, 0)));
    check_export(&received, &server, ops);
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
