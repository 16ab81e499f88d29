//! OpenTelemetry in an app: the app exports its own spans over OTLP, the executor exports its
//! metrics and spans to the same collector (`telemetry` in the config), and the executor's
//! spans link to the app's request span they ran under. A small OTLP/HTTP receiver on loopback
//! stands in for the collector and prints what arrived; point both at a real collector
//! (`http://collector:4318`) instead.
//!
//! Run it with `cargo run -p stateful-redis --features otel --example opentelemetry [REDIS_URL]`;
//! without a URL (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use stateful_redis::{OtlpProtocol, StatefulExecutor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let (collector, received) = collector().await?;

    // The app's own tracing: spans of its requests, exported over OTLP/HTTP.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{collector}/v1/traces"))
        .build()?;
    let resource = Resource::builder().with_service_name("device-api").build();
    let app = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();

    // The executor's telemetry: metrics and spans of every operation, to the same collector.
    let mut config = redis.config();
    config.telemetry.enabled = true;
    config.telemetry.protocol = Some(OtlpProtocol::HttpProtobuf);
    config.telemetry.endpoint = Some(collector.clone());
    config.telemetry.service_name = Some("device-api".into());
    config.telemetry.sample_ratio = Some(1.0); // every pipeline traced (default 1 %)
    let executor = StatefulExecutor::builder().config(config).build().await?;
    let devices = executor.state::<u32>(&common::namespace("devices"))?;

    // One request of the app: its span is current while the executor works for it.
    let span = app.tracer("device-api").start("PUT /devices/{id}");
    let request = Context::current_with_span(span);
    let trace_id = request.span().span_context().trace_id();
    async {
        devices.put("dev-1", &1).await?;
        devices.update("dev-1", |n| n.unwrap_or(0) + 1).await?;
        Ok::<_, stateful_redis::Error>(())
    }
    .with_context(request.clone())
    .await?;
    request.span().set_attribute(KeyValue::new("device.id", "dev-1"));
    request.span().end();

    // Shutting down exports what is left: the executor's metrics and spans, then the app's spans.
    executor.shutdown().await;
    tokio::task::spawn_blocking(move || app.shutdown()).await??;

    let got = received.lock().map_err(|_| "poisoned")?;
    println!(
        "the collector got {} metrics, among them {:?}",
        got.metrics.len(),
        &got.metrics[..4.min(got.metrics.len())]
    );
    assert!(
        got.metrics.iter().any(|m| m == "db.client.operation.duration"),
        "{:?}",
        got.metrics
    );
    let linked: Vec<&str> = got
        .spans
        .iter()
        .filter(|s| s.links.iter().any(|l| l.trace_id == trace_id.to_bytes()))
        .map(|s| s.name.as_str())
        .collect();
    println!(
        "the collector got {} spans; linked to the app's request {trace_id}: {linked:?}",
        got.spans.len()
    );
    assert!(
        got.spans.iter().any(|s| s.name == "PUT /devices/{id}"),
        "the app's span arrived"
    );
    assert!(!linked.is_empty(), "the executor's spans link to the request span");
    Ok(())
}

/// What the stand-in collector received: metric names and spans.
#[derive(Default)]
struct Received {
    metrics: Vec<String>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP (protobuf) receiver on a free loopback port: its base URL, and what it got.
async fn collector() -> std::io::Result<(String, Arc<Mutex<Received>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let received = Arc::new(Mutex::new(Received::default()));
    let store = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = Arc::clone(&store);
            let service = hyper::service::service_fn(move |req| receive(Arc::clone(&store), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    Ok((url, received))
}

/// Takes one export request: `/v1/metrics` or `/v1/traces`.
async fn receive(
    store: Arc<Mutex<Received>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<bytes::Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let mut store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let decoded = match path.as_str() {
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body)
            .map(|r| {
                let scopes = r.resource_metrics.into_iter().flat_map(|r| r.scope_metrics);
                store.metrics.extend(scopes.flat_map(|s| s.metrics).map(|m| m.name));
            })
            .is_ok(),
        "/v1/traces" => ExportTraceServiceRequest::decode(body)
            .map(|r| {
                let scopes = r.resource_spans.into_iter().flat_map(|r| r.scope_spans);
                store.spans.extend(scopes.flat_map(|s| s.spans));
            })
            .is_ok(),
        _ => false,
    };
    let mut reply = hyper::Response::new(Full::default());
    if !decoded {
        *reply.status_mut() = hyper::StatusCode::BAD_REQUEST;
    }
    Ok(reply)
}
