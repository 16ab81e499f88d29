//! An app that already has OpenTelemetry: it owns the SDK (its resource, sampler and OTLP
//! exporters) and hands its providers to the executor, which records its metrics and spans
//! through the OpenTelemetry API into them. The executor's spans are children of the app's
//! request span, and everything arrives under the app's resource. A stand-in collector on
//! loopback prints what arrived.
//!
//! Run it with `cargo run -p stateful-redis --features otel --example opentelemetry [REDIS_URL]`;
//! without a URL (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

#[path = "common/collector.rs"]
mod collector;
mod common;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use stateful_redis::StatefulExecutor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let (endpoint, received) = collector::start().await?;

    // The app's OpenTelemetry, as it has it already: one resource, OTLP/HTTP exporters.
    let resource = Resource::builder().with_service_name("device-api").build();
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let tracers = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/metrics"))
        .build()?;
    let meters = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(PeriodicReader::builder(metric_exporter).build())
        .build();

    // The executor records into them; no `telemetry` settings needed.
    let executor = StatefulExecutor::builder()
        .config(redis.config())
        .meter_provider(&meters)
        .tracer_provider(&tracers)
        .build()
        .await?;
    let devices = executor.state::<u32>(&common::namespace("devices"))?;

    // One request of the app: its span is current while the executor works for it.
    let span = tracers.tracer("device-api").start("PUT /devices/{id}");
    let request = Context::current_with_span(span);
    async {
        devices.put("dev-1", &1).await?;
        devices.update("dev-1", |n| n.unwrap_or(0) + 1).await?;
        Ok::<_, stateful_redis::Error>(())
    }
    .with_context(request.clone())
    .await?;
    request.span().set_attribute(KeyValue::new("device.id", "dev-1"));
    request.span().end();

    // The executor first (its last operations recorded), then the app's providers export.
    executor.shutdown().await;
    tokio::task::spawn_blocking(move || {
        tracers.shutdown()?;
        meters.shutdown()
    })
    .await??;

    let got = received.lock().map_err(|_| "poisoned")?;
    let parent = got.span("PUT /devices/{id}").ok_or("the app's span did not arrive")?;
    let children: Vec<(&str, &str)> = got
        .spans
        .iter()
        .filter(|(s, _)| s.parent_span_id == parent.span_id)
        .map(|(s, service)| (s.name.as_str(), service.as_str()))
        .collect();
    println!("under the app's request span (name, service): {children:?}");
    assert!(children.contains(&("EVALSHA write", "device-api")), "{children:?}");
    assert!(children.contains(&("EVALSHA get", "device-api")), "{children:?}");
    let duration = got
        .metrics
        .iter()
        .find(|(name, _)| name == "db.client.operation.duration")
        .ok_or("no operation durations")?;
    println!("{} arrived from service {:?}", duration.0, duration.1);
    assert_eq!(duration.1, "device-api");
    Ok(())
}
