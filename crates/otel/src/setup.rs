//! The `setup` feature: an SDK with OTLP export built from [`TelemetryConfig`], owned and shut
//! down by the executor (the CLI's way, and one line for apps without OpenTelemetry of their own).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use stateful_redis_core::{Error, TelemetryConfig};

use crate::export::{self, ExportErrors, LiveRatio};
use crate::{Sources, Telemetry, scope};

/// The providers the executor built, and what their exporters counted.
pub(crate) struct Owned {
    meters: SdkMeterProvider,
    tracers: Option<SdkTracerProvider>,
    /// The sampler's ratio, when ours (not one `OTEL_TRACES_SAMPLER` chose).
    ratio: Option<LiveRatio>,
    pub(crate) errors: Arc<ExportErrors>,
    shutdown_timeout: Duration,
    /// Set by the first `shutdown()`: later calls do nothing.
    shut: AtomicBool,
}

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owned")
            .field("traces", &self.tracers.is_some())
            .field("export_errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds an SDK with OTLP exporters from `config` (feature `setup`) and records into it:
    /// the executor owns these providers and shuts them down. Call it inside a Tokio runtime
    /// (the gRPC exporter needs one). A collector that is down is not an error here: exports
    /// fail later, counted. A bad setting is an [`Error::Config`] naming it.
    ///
    /// The tracer provider's sampler is `ParentBased(TraceIdRatioBased(telemetry.sample_ratio))`:
    /// the ratio applies to root spans only (pipelines no sampled caller is in), the callers'
    /// decision to the rest.
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
        register_export_errors(&meter, &errors);
        let tracer = tracers
            .as_ref()
            .map(|p| opentelemetry::global::BoxedTracer::new(Box::new(p.tracer_with_scope(scope()))));
        let mut telemetry = Self::new(&meter, tracer, sources);
        telemetry.owned = Some(Owned {
            meters,
            tracers,
            ratio,
            errors,
            shutdown_timeout: config.shutdown_timeout,
            shut: AtomicBool::new(false),
        });
        Ok(telemetry)
    }
}

impl Owned {
    /// See [`Telemetry::set_sample_ratio`].
    pub(crate) fn set_sample_ratio(&self, ratio: f64) -> bool {
        match &self.ratio {
            Some(live) if (0.0..=1.0).contains(&ratio) => {
                live.set(ratio);
                true
            }
            _ => false,
        }
    }

    /// See [`Telemetry::shutdown`].
    pub(crate) async fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) {
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

/// `stateful_redis.telemetry.export.errors`: failures of this very SDK's exports (they show in
/// the next export that succeeds).
fn register_export_errors(meter: &Meter, errors: &Arc<ExportErrors>) {
    let e = Arc::clone(errors);
    let _ = meter
        .u64_observable_counter("stateful_redis.telemetry.export.errors")
        .with_unit("{error}")
        .with_description("OTLP exports that failed, by signal.")
        .with_callback(move |obs| {
            obs.observe(e.metrics(), &[KeyValue::new("signal", "metrics")]);
            obs.observe(e.traces(), &[KeyValue::new("signal", "traces")]);
        })
        .build();
}
