//! OTLP exporters (gRPC or HTTP/protobuf), wrapped to count their failures, and the providers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use stateful_redis_core::{ConfigError, Error, OtlpProtocol, TelemetryConfig};

/// The sampling ratio when neither the config nor `OTEL_TRACES_SAMPLER` sets one.
const DEFAULT_RATIO: f64 = 0.01;

/// At most one warning per signal this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Failed exports, per signal. The OTLP exporters retry on their own first; one failure
/// here is one batch of data the collector did not get.
#[derive(Debug, Default)]
pub struct ExportErrors {
    metrics: AtomicU64,
    traces: AtomicU64,
    last_metrics_log_ms: AtomicU64,
    last_traces_log_ms: AtomicU64,
}

impl ExportErrors {
    /// Metric exports that failed.
    pub fn metrics(&self) -> u64 {
        self.metrics.load(Ordering::Relaxed)
    }

    /// Span exports that failed.
    pub fn traces(&self) -> u64 {
        self.traces.load(Ordering::Relaxed)
    }

    fn counters(&self, signal: &'static str) -> (&AtomicU64, &AtomicU64) {
        match signal {
            "metrics" => (&self.metrics, &self.last_metrics_log_ms),
            _ => (&self.traces, &self.last_traces_log_ms),
        }
    }

    fn failed(&self, signal: &'static str, error: &dyn std::fmt::Display) {
        let (count, last_log) = self.counters(signal);
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let last = last_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && last_log
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(signal, failures = n, error = %error, "OTLP export failed (logged at most once a minute)");
        }
    }
}

/// Counts the failures of the metric exporter it wraps (runs on the PeriodicReader's thread).
#[derive(Debug)]
struct CountingMetricExporter<E> {
    inner: E,
    errors: Arc<ExportErrors>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            self.errors.failed("metrics", e);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Counts the failures of the span exporter it wraps (runs on the BatchSpanProcessor's thread).
#[derive(Debug)]
struct CountingSpanExporter<E> {
    inner: E,
    errors: Arc<ExportErrors>,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.errors.failed("traces", e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn build_error(signal: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(ConfigError::new(
        "telemetry",
        signal,
        format!("the OTLP {signal} exporter could not be built: {e}"),
    ))
}

/// The HTTP URL of a signal: the configured base with `/v1/<signal>` appended.
fn http_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

fn headers(config: &TelemetryConfig) -> HashMap<String, String> {
    config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect()
}

/// Config headers as gRPC metadata. Names are checked by the config; a value that is not
/// valid metadata is an error naming the header (never its value).
fn metadata(config: &TelemetryConfig) -> Result<tonic::metadata::MetadataMap, Error> {
    let mut md = tonic::metadata::MetadataMap::new();
    for (name, value) in &config.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.expose());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                md.insert(key, value);
            }
            _ => {
                return Err(Error::Config(ConfigError::new(
                    "telemetry.headers",
                    name,
                    "is not valid gRPC metadata (its value must be printable ASCII)",
                )));
            }
        }
    }
    Ok(md)
}

/// The config's settings on a gRPC exporter builder (metrics or spans); unset ones are left
/// to the `OTEL_*` variables.
fn tonic_settings<B: WithExportConfig + WithTonicConfig>(mut b: B, config: &TelemetryConfig) -> Result<B, Error> {
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_metadata(metadata(config)?);
    }
    Ok(b)
}

/// The config's settings on an HTTP/protobuf exporter builder; the endpoint is the base URL
/// with `/v1/<signal>` appended.
fn http_settings<B: WithExportConfig + WithHttpConfig>(b: B, config: &TelemetryConfig, signal: &str) -> B {
    let mut b = b.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(http_url(endpoint, signal));
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_headers(headers(config));
    }
    b
}

pub(crate) fn meter_provider(
    config: &TelemetryConfig,
    errors: Arc<ExportErrors>,
    resource: Resource,
) -> Result<SdkMeterProvider, Error> {
    let builder = opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
    let exporter = if grpc(config, "METRICS") {
        tonic_settings(builder.with_tonic(), config)?.build()
    } else {
        http_settings(builder.with_http(), config, "metrics").build()
    }
    .map_err(|e| build_error("metrics", e))?;
    let mut reader = PeriodicReader::builder(CountingMetricExporter {
        inner: exporter,
        errors,
    });
    // Unset: OTEL_METRIC_EXPORT_INTERVAL, else 60 s.
    if let Some(interval) = config.metrics_interval {
        reader = reader.with_interval(interval);
    }
    Ok(SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader.build())
        .build())
}

pub(crate) fn tracer_provider(
    config: &TelemetryConfig,
    errors: Arc<ExportErrors>,
    resource: Resource,
) -> Result<(SdkTracerProvider, Option<LiveRatio>), Error> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = if grpc(config, "TRACES") {
        tonic_settings(builder.with_tonic(), config)?.build()
    } else {
        http_settings(builder.with_http(), config, "traces").build()
    }
    .map_err(|e| build_error("traces", e))?;
    let processor = BatchSpanProcessor::builder(CountingSpanExporter {
        inner: exporter,
        errors,
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(8192)
            .with_scheduled_delay(Duration::from_secs(1))
            .build(),
    )
    .build();
    let mut provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor);
    // Unset and no OTEL_TRACES_SAMPLER: a low ratio, for the cost (ADR 005). With the
    // variable set and no ratio here, the SDK reads the variable.
    let ratio = match config.sample_ratio {
        Some(r) => Some(r),
        None if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() => Some(DEFAULT_RATIO),
        None => None,
    };
    let live = ratio.map(|ratio| LiveRatio(Arc::new(AtomicU64::new(ratio.to_bits()))));
    if let Some(live) = &live {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(live.clone())));
    }
    Ok((provider.build(), live))
}

/// `TraceIdRatioBased` with a ratio that can change while running
/// ([`Telemetry::set_sample_ratio`](crate::Telemetry::set_sample_ratio)).
#[derive(Debug, Clone)]
pub(crate) struct LiveRatio(Arc<AtomicU64>);

impl LiveRatio {
    pub(crate) fn set(&self, ratio: f64) {
        self.0.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
}

impl opentelemetry_sdk::trace::ShouldSample for LiveRatio {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let ratio = f64::from_bits(self.0.load(Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio).should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Whether a signal goes over gRPC: the config's protocol, else
/// `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP/protobuf.
fn grpc(config: &TelemetryConfig, signal: &str) -> bool {
    match config.protocol {
        Some(OtlpProtocol::Grpc) => return true,
        Some(OtlpProtocol::HttpProtobuf) => return false,
        _ => {}
    }
    let read = |name: String| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    read(format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
        .or_else(|| read("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned()))
        .is_some_and(|v| v.trim() == "grpc")
}
