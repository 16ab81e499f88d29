//! A `tracing` app whose spans go to OpenTelemetry through tracing-opentelemetry: the executor's
//! `tracing` spans (operations at DEBUG, leases and connections at INFO) nest under the app's
//! own, and reach the collector with it. No `otel` feature is needed for this; with it and the
//! app's tracer provider handed to the builder, the executor's `EVALSHA` spans would sit under
//! its operation spans. A stand-in collector on loopback prints what arrived.
//!
//! Run it with `cargo run -p stateful-redis --example tracing_spans [REDIS_URL]`; without a URL
//! (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

#[path = "common/collector.rs"]
mod collector;
mod common;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use stateful_redis::StatefulExecutor;
use tracing::Instrument as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let (endpoint, received) = collector::start().await?;

    // The app's tracing: spans to OpenTelemetry, the executor's operations included (DEBUG).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let tracers = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("device-worker").build())
        .with_batch_exporter(exporter)
        .build();
    let filter = Targets::new()
        .with_target("stateful_redis::operation", tracing::Level::DEBUG)
        .with_default(tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracers.tracer("device-worker"))
                .with_filter(filter),
        )
        .try_init()?;

    let executor = StatefulExecutor::builder().config(redis.config()).build().await?;
    let namespace = common::namespace("devices");
    let devices = executor.state::<u32>(&namespace)?;
    let leases = executor.leases(&namespace)?;
    async {
        let guard = leases
            .acquire_guarded("dev-1", "worker-1", Duration::from_secs(10))
            .await?;
        devices.put("dev-1", &1).await?;
        devices.update("dev-1", |n| n.unwrap_or(0) + 1).await?;
        guard.release().await
    }
    .instrument(tracing::info_span!("handle message", message.id = "m-1"))
    .await?;

    executor.shutdown().await;
    tokio::task::spawn_blocking(move || tracers.shutdown()).await??;

    let got = received.lock().map_err(|_| "poisoned")?;
    let parent = got.span("handle message").ok_or("the app's span did not arrive")?;
    let children: Vec<&str> = got
        .spans
        .iter()
        .filter(|(s, _)| s.parent_span_id == parent.span_id)
        .map(|(s, _)| s.name.as_str())
        .collect();
    println!("under the app's span: {children:?}");
    assert!(children.contains(&"stateful_redis.operation"), "{children:?}");
    assert!(children.contains(&"stateful_redis.lease"), "{children:?}");
    Ok(())
}
