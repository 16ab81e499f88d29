//! OpenTelemetry for stateful-redis: the executor's instruments and spans, recorded through the
//! OpenTelemetry **API** only.
//!
//! The application owns the SDK: the executor records into the providers the application set
//! globally ([`opentelemetry::global`]) or handed to it ([`meter`], [`tracer`]), so the
//! application's resource, sampler, views and exporters apply. The feature `setup` adds
//! [`Telemetry::start`], which builds an SDK with OTLP export from a `TelemetryConfig` for
//! programs that have none (the CLI). Nothing here is needed to use the library without
//! OpenTelemetry. What it records:
//!
//! - **Metrics.** `db.client.operation.duration` (seconds, buckets from 50 µs to 10 s) once per
//!   finished operation, one series per operation, made on first use; failures carry
//!   `error.type` and `db.response.status_code`. Everything else (operation and error counts, the
//!   pool's `db.client.connection.*`, queue depth, batches, retries, drops, leases, process CPU
//!   and memory, runtime tasks) is observed at each collection from the [`PerformanceMonitor`]'s
//!   snapshot: it costs the hot path nothing. The observers stay registered with the provider
//!   for its lifetime (the API cannot unregister them).
//! - **Traces.** One CLIENT span per script call (`EVALSHA <script>`, with the public operation it
//!   is part of in `stateful_redis.operation`), a child of the span its
//!   caller was in (so sampled by the caller's decision), and one per pipeline of several calls
//!   (`BATCH EVALSHA`, with `db.operation.batch.size`) linking to the calls it carries
//!   ([`PipelineSpans`]).
//! - **Attributes** per the database client conventions (schema in [`SCHEMA_URL`]):
//!   `db.system.name=redis`, `db.namespace` (the database index), `db.operation.name`
//!   (the Redis command), `stateful_redis.operation` (the library's operation),
//!   `server.address`, `server.port`, `error.type`, `db.response.status_code`.
//! - **Prometheus** (feature `prometheus`). `telemetry.prometheus_listen` serves the same
//!   metrics at `/metrics` for Prometheus to scrape, under the OTLP→Prometheus translation's
//!   names; `PrometheusExporter` is the reader, for an SDK meter provider of your own too.
//! - **TLS** (feature `setup`). `https://` endpoints go over rustls, trusting the system's
//!   roots or only `telemetry.ca_file`'s; an untrusted certificate is logged as a TLS failure.
//!
//! ## Cost
//!
//! A record through an unbound histogram costs about 160 ns (the SDK looks the series up by its
//! attributes); a bound series about 25 ns. Bound series need the SDK's
//! `experimental_metrics_bound_instruments` feature, so they are used only with this crate's
//! feature `bound-instruments`, which an application turns on together with that SDK feature
//! (`setup` turns both on). An SDK without it gives bound series that drop every measurement.
//!
//! ```
//! use stateful_redis_metrics::{Operation, PerformanceMonitor};
//! use stateful_redis_otel::{Sources, Telemetry};
//!
//! // The application's providers (here the global ones, no-ops until the app sets them).
//! let meter = stateful_redis_otel::meter(&*opentelemetry::global::meter_provider());
//! let tracer = stateful_redis_otel::tracer(&opentelemetry::global::tracer_provider());
//! let sources = Sources::new(PerformanceMonitor::default(), "127.0.0.1", 6379);
//! let telemetry = Telemetry::new(&meter, Some(tracer), sources);
//! telemetry.record(Operation::Put, std::time::Duration::from_micros(120), None);
//! ```
//!
//! ## Feature flags
//!
//! - `bound-instruments`: bound histogram series (see [Cost](#cost)).
//! - `setup`: [`Telemetry::start`], an SDK with OTLP export over gRPC or HTTP/protobuf.
//! - `prometheus`: the scrape endpoint and `PrometheusExporter` (with `setup`).

#[cfg(feature = "setup")]
mod export;
mod instruments;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "setup")]
mod setup;
mod trace;

use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::trace::{Tracer, TracerProvider};
use stateful_redis_core::Error;
use stateful_redis_metrics::{Operation, PerformanceMonitor, Stage};

#[cfg(feature = "setup")]
pub use crate::export::ExportErrors;
#[cfg(feature = "prometheus")]
pub use crate::prometheus::PrometheusExporter;
pub use crate::trace::{OpTrace, PipelineSpans};
pub use opentelemetry;
pub use opentelemetry_semantic_conventions::SCHEMA_URL;

/// What the instruments read, and where the spans say the server is.
#[derive(Debug, Clone)]
pub struct Sources {
    monitor: PerformanceMonitor,
    server_address: String,
    server_port: u16,
    database: u32,
    runtime: Option<tokio::runtime::Handle>,
}

impl Sources {
    /// The executor's monitor, and its Redis server's host and port.
    pub fn new(monitor: PerformanceMonitor, server_address: impl Into<String>, server_port: u16) -> Self {
        Self {
            monitor,
            server_address: server_address.into(),
            server_port,
            database: 0,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The database index the executor uses (`db.namespace`; default 0).
    #[must_use]
    pub fn database(mut self, index: u32) -> Self {
        self.database = index;
        self
    }
}

/// The executor's meter from `provider`, with the library's instrumentation scope
/// (`stateful-redis`, its version and [`SCHEMA_URL`]).
pub fn meter<P: MeterProvider + ?Sized>(provider: &P) -> Meter {
    provider.meter_with_scope(scope())
}

/// The executor's tracer from `provider`, with the library's instrumentation scope.
pub fn tracer<P>(provider: &P) -> BoxedTracer
where
    P: TracerProvider + ?Sized,
    P::Tracer: Send + Sync + 'static,
    <P::Tracer as Tracer>::Span: Send + Sync + 'static,
{
    BoxedTracer::new(Box::new(provider.tracer_with_scope(scope())))
}

/// The instruments and tracer of one executor.
pub struct Telemetry {
    tracer: Option<BoxedTracer>,
    durations: instruments::OpDurations,
    batch_sizes: instruments::BatchSizes,
    stages: instruments::StageDurations,
    server: trace::Server,
    /// The SDK [`Telemetry::start`] built, which this value owns.
    #[cfg(feature = "setup")]
    owned: Option<setup::Owned>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Telemetry");
        d.field("traces", &self.tracer.is_some()).field("server", &self.server);
        #[cfg(feature = "setup")]
        d.field("owned", &self.owned);
        d.finish_non_exhaustive()
    }
}

/// The instrumentation scope of every instrument and span.
fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("stateful-redis")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(SCHEMA_URL)
        .build()
}

impl Telemetry {
    /// Registers the instruments with `meter` (from [`meter`]) and makes spans with `tracer`
    /// (from [`tracer`]; `None`: no spans). The providers stay the application's: it shuts
    /// them down, after the executor's `shutdown()` so that the last figures are exported.
    pub fn new(meter: &Meter, tracer: Option<BoxedTracer>, sources: Sources) -> Self {
        let server = trace::Server::new(&sources.server_address, sources.server_port, sources.database);
        let pool_name = format!("{}:{}", sources.server_address, sources.server_port);
        let durations = instruments::OpDurations::new(meter, &server);
        let batch_sizes = instruments::BatchSizes::new(meter);
        let stages = instruments::StageDurations::new(meter, &pool_name);
        instruments::register_observers(meter, &sources);
        Self {
            tracer,
            durations,
            batch_sizes,
            stages,
            server,
            #[cfg(feature = "setup")]
            owned: None,
        }
    }

    /// Records one finished operation in `db.client.operation.duration`. `error` is its
    /// error, if any; only failures ([`ErrorKind::is_failure`](stateful_redis_core::ErrorKind::is_failure))
    /// carry `error.type`.
    #[inline]
    pub fn record(&self, operation: Operation, duration: Duration, error: Option<&Error>) {
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

    /// Changes the share of root spans sampled, from the next pipeline on. Returns false (and
    /// changes nothing) unless this value built its SDK ([`Telemetry::start`]) with spans on
    /// and the sampler from `telemetry.sample_ratio` (not `OTEL_TRACES_SAMPLER`).
    pub fn set_sample_ratio(&self, ratio: f64) -> bool {
        #[cfg(feature = "setup")]
        if let Some(owned) = &self.owned {
            return owned.set_sample_ratio(ratio);
        }
        let _ = ratio;
        false
    }

    /// Whether spans are made at all.
    #[inline]
    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts the spans of a pipeline of `ops` (one entry per call: the script it runs, the
    /// public operation it is part of, and its caller's context, `None` for a call submitted
    /// outside any span).
    pub fn pipeline<'a>(
        &self,
        ops: impl ExactSizeIterator<Item = (&'static str, Operation, Option<&'a OpTrace>)> + Clone,
    ) -> Option<PipelineSpans> {
        let tracer = self.tracer.as_ref()?;
        Some(PipelineSpans::start(tracer, ops, &self.server))
    }

    /// `(metrics, traces)`: exports that failed, when this value built its SDK
    /// ([`Telemetry::start`]); `None` with the application's providers.
    pub fn export_errors(&self) -> Option<(u64, u64)> {
        #[cfg(feature = "setup")]
        if let Some(owned) = &self.owned {
            return Some((owned.errors.metrics(), owned.errors.traces()));
        }
        None
    }

    /// With the SDK of [`Telemetry::start`]: exports what is left and stops the exporters,
    /// waiting at most `telemetry.shutdown_timeout`, on a blocking thread (safe on any
    /// runtime). With the application's providers: nothing (the application shuts them down).
    /// Idempotent.
    pub async fn shutdown(&self) {
        #[cfg(feature = "setup")]
        if let Some(owned) = &self.owned {
            owned.shutdown().await;
        }
    }
}
