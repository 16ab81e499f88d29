//! OpenTelemetry for stateful-redis: metrics and traces exported over OTLP.
//!
//! The executor builds one [`Telemetry`] when `telemetry.enabled` is set (the `otel` feature of
//! `stateful-redis`); nothing here is needed to use the library without it. What it does:
//!
//! - **Metrics.** `db.client.operation.duration` (seconds, semantic-convention buckets) is recorded
//!   on the hot path through bound instruments, one series per operation and outcome, bound on
//!   first use (about 25 ns a record). Everything else (operation and error counts, the pool's
//!   `db.client.connection.*`, queue depth, batches, retries, drops, leases lost, process CPU and
//!   memory, runtime tasks, export errors) is observed at each collection from the
//!   [`PerformanceMonitor`]'s snapshot: it costs the hot path nothing.
//! - **Traces.** One CLIENT span per pipeline, and under it one CLIENT span per operation, with
//!   `db.system.name`, `db.operation.name`, `db.stored_procedure.name`,
//!   `db.operation.batch.size`, `server.address`/`server.port` and `error.type`. The pipeline span
//!   is a root whose sampling follows `telemetry.sample_ratio`; each operation span links to its
//!   caller's span, if the caller had one.
//! - **Export.** OTLP over gRPC or HTTP/protobuf, on the SDK's own threads. A failed export never
//!   blocks or fails an operation: it is counted ([`Telemetry::export_errors`], and the metric
//!   `stateful_redis.telemetry.export.errors`) and logged at most once a minute per signal.
//! - **Prometheus** (feature `prometheus`). `telemetry.prometheus_listen` serves the same
//!   metrics at `/metrics` for Prometheus to scrape, under the OTLP→Prometheus translation's
//!   names; `PrometheusExporter` is the reader, for an SDK meter provider of your own too.
//! - **TLS.** `https://` endpoints go over rustls (ring), trusting the system's roots or only
//!   `telemetry.ca_file`'s; an untrusted certificate is logged as a TLS failure.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stateful_redis_core::Error> {
//! use stateful_redis_core::TelemetryConfig;
//! use stateful_redis_metrics::{Operation, PerformanceMonitor};
//! use stateful_redis_otel::{Sources, Telemetry};
//!
//! let mut config = TelemetryConfig::default();
//! config.enabled = true;
//! config.endpoint = Some("http://127.0.0.1:4318".into());
//! let monitor = PerformanceMonitor::default();
//! let telemetry = Telemetry::start(&config, Sources::new(monitor, "127.0.0.1", 6379))?;
//! telemetry.record(Operation::Put, std::time::Duration::from_micros(120), None);
//! telemetry.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Feature flags
//! - `prometheus`: the scrape endpoint and `PrometheusExporter`.

mod export;
mod instruments;
#[cfg(feature = "prometheus")]
mod prometheus;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use stateful_redis_core::{Error, ErrorKind, TelemetryConfig};
use stateful_redis_metrics::{Operation, PerformanceMonitor, Stage};

pub use crate::export::ExportErrors;
#[cfg(feature = "prometheus")]
pub use crate::prometheus::PrometheusExporter;
pub use crate::trace::{OpTrace, PipelineSpans};

/// What the instruments read, and where the spans say the server is.
#[derive(Debug, Clone)]
pub struct Sources {
    monitor: PerformanceMonitor,
    server_address: String,
    server_port: u16,
    runtime: Option<tokio::runtime::Handle>,
}

impl Sources {
    /// The executor's monitor, and its Redis server's host and port.
    pub fn new(monitor: PerformanceMonitor, server_address: impl Into<String>, server_port: u16) -> Self {
        Self {
            monitor,
            server_address: server_address.into(),
            server_port,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// The providers, exporters and instruments of one executor.
pub struct Telemetry {
    meters: SdkMeterProvider,
    tracers: Option<SdkTracerProvider>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    durations: instruments::OpDurations,
    batch_sizes: instruments::BatchSizes,
    stages: instruments::StageDurations,
    /// The sampler's ratio, when ours (not one `OTEL_TRACES_SAMPLER` chose).
    ratio: Option<export::LiveRatio>,
    errors: Arc<ExportErrors>,
    server: trace::Server,
    shutdown_timeout: Duration,
    /// Set by the first `shutdown()`: later calls do nothing.
    shut: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.tracer.is_some())
            .field("server", &self.server)
            .field("export_errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// The instrumentation scope of every instrument and span.
fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("stateful-redis")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
        .build()
}

impl Telemetry {
    /// Builds the exporters and providers and registers the instruments. Call it inside a
    /// Tokio runtime (the gRPC exporter needs one). A collector that is down is not an error
    /// here: exports fail later, counted. A bad setting is an [`Error::Config`] naming it.
    pub fn start(config: &TelemetryConfig, sources: Sources) -> Result<Self, Error> {
        config.validate()?;
        let errors = Arc::new(ExportErrors::default());
        let mut resource = Resource::builder();
        if let Some(name) = &config.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let resource = resource.build();
        let meters = export::meter_provider(config, Arc::clone(&errors), resource.clone())?;
        // A Prometheus-only setup (no OTLP endpoint named) has nowhere to send spans.
        let (tracers, ratio) = if config.traces && config.exports_otlp() {
            let (provider, ratio) = export::tracer_provider(config, Arc::clone(&errors), resource)?;
            (Some(provider), ratio)
        } else {
            (None, None)
        };
        let meter = meters.meter_with_scope(scope());
        let durations = instruments::OpDurations::new(&meter);
        let batch_sizes = instruments::BatchSizes::new(&meter);
        let pool_name = format!("{}:{}", sources.server_address, sources.server_port);
        let stages = instruments::StageDurations::new(&meter, &pool_name);
        instruments::register_observers(&meter, &sources, &errors);
        let tracer = tracers.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            p.tracer_with_scope(scope())
        });
        Ok(Self {
            meters,
            tracers,
            tracer,
            durations,
            batch_sizes,
            stages,
            ratio,
            errors,
            server: trace::Server {
                address: sources.server_address,
                port: sources.server_port,
            },
            shutdown_timeout: config.shutdown_timeout,
            shut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Records one finished operation in `db.client.operation.duration`. `error` is its
    /// error, if any; only failures ([`ErrorKind::is_failure`]) carry `error.type`.
    #[inline]
    pub fn record(&self, operation: Operation, duration: Duration, error: Option<ErrorKind>) {
        self.durations.record(operation, duration, error);
    }

    /// Records the size of one pipeline sent.
    #[inline]
    pub fn record_batch(&self, size: usize) {
        self.batch_sizes.record(size);
    }

    /// Records how long one sampled [`Stage`] took, in its histogram
    /// (`stateful_redis.queue.wait`, `.serialization.duration`, `.compression.duration`,
    /// `db.client.connection.wait_time`).
    #[inline]
    pub fn record_stage(&self, stage: Stage, duration: Duration) {
        self.stages.record(stage, duration);
    }

    /// Changes the share of pipelines traced, from the next pipeline on. Returns false (and
    /// changes nothing) when spans are off or the sampler came from `OTEL_TRACES_SAMPLER`
    /// rather than `telemetry.sample_ratio` (then only a restart changes it).
    pub fn set_sample_ratio(&self, ratio: f64) -> bool {
        match &self.ratio {
            Some(live) if (0.0..=1.0).contains(&ratio) => {
                live.set(ratio);
                true
            }
            _ => false,
        }
    }

    /// Whether spans are made at all (`telemetry.traces`).
    #[inline]
    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts the spans of a pipeline of `ops` (one entry per operation: the script it runs,
    /// and its caller's span, `None` for an operation submitted outside any span). Nothing
    /// is recorded unless the pipeline is sampled.
    pub fn pipeline<'a>(
        &self,
        ops: impl ExactSizeIterator<Item = (&'static str, Option<&'a OpTrace>)>,
    ) -> Option<PipelineSpans> {
        let tracer = self.tracer.as_ref()?;
        Some(PipelineSpans::start(tracer, ops, &self.server))
    }

    /// Failed exports so far.
    pub fn export_errors(&self) -> &ExportErrors {
        &self.errors
    }

    /// Exports what is left and stops the exporters, waiting at most
    /// `telemetry.shutdown_timeout`. Runs the SDK's blocking shutdown on a blocking thread,
    /// so it is safe on any runtime. A last export that fails is counted by the exporter like
    /// any other. Idempotent.
    pub async fn shutdown(&self) {
        if self.shut.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let meters = self.meters.clone();
        let tracers = self.tracers.clone();
        let work = tokio::task::spawn_blocking(move || {
            // Spans first: their exporter is independent of the metrics.
            if let Some(tracers) = tracers
                && let Err(e) = tracers.shutdown()
            {
                tracing::debug!(error = %e, "telemetry: span provider shutdown");
            }
            if let Err(e) = meters.shutdown() {
                tracing::debug!(error = %e, "telemetry: meter provider shutdown");
            }
        });
        if tokio::time::timeout(self.shutdown_timeout, work).await.is_err() {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "telemetry shutdown timed out; the last export may be lost"
            );
        }
    }
}
