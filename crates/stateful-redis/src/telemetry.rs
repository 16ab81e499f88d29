//! The executor's hooks into OpenTelemetry (`stateful-redis-otel`), or nothing at all when the
//! `otel` feature is off: every function here then compiles to nothing.
//!
//! Where the figures go: the providers handed to the builder, else with `telemetry.enabled` an
//! SDK with OTLP export built from the config (feature `otel-setup`), or the global providers
//! (without it).

use std::time::Duration;

use stateful_redis_core::{Error, ExecutorConfig};
use stateful_redis_metrics::{Operation, PerformanceMonitor, Stage};
use stateful_redis_scripts::Script;

#[cfg(feature = "otel")]
mod on {
    use std::sync::Arc;

    use redis::{ConnectionAddr, IntoConnectionInfo as _};
    use stateful_redis_otel::{OpTrace, PipelineSpans, Sources, Telemetry, opentelemetry};

    use super::*;

    pub(crate) type Handle = Option<Arc<Telemetry>>;
    /// The caller's span. Boxed: every operation carries one through the batcher, and moves it
    /// several times; `None` (no allocation) unless spans are on and the caller is in a span.
    pub(crate) type Trace = Option<Box<OpTrace>>;
    pub(crate) type Spans = Option<PipelineSpans>;

    /// The providers the application handed to the builder.
    #[derive(Debug, Default)]
    pub(crate) struct Providers {
        pub(crate) meter: Option<opentelemetry::metrics::Meter>,
        pub(crate) tracer: Option<opentelemetry::global::BoxedTracer>,
    }

    impl Providers {
        fn given(&self) -> bool {
            self.meter.is_some() || self.tracer.is_some()
        }
    }

    pub(crate) fn start(
        config: &ExecutorConfig,
        monitor: &PerformanceMonitor,
        providers: Providers,
    ) -> Result<Handle, Error> {
        if !config.telemetry.enabled && !providers.given() {
            return Ok(None);
        }
        // What the spans call the server: the URL's host and port (none for a unix socket).
        let info = config.redis.url.expose().into_connection_info();
        let database = info.as_ref().map_or(0, |i| i.redis_settings().db());
        let (address, port) = match info.map(|i| i.addr().clone()) {
            Ok(ConnectionAddr::Tcp(host, port)) | Ok(ConnectionAddr::TcpTls { host, port, .. }) => (host, port),
            _ => ("localhost".to_owned(), 0),
        };
        let sources = Sources::new(monitor.clone(), address, port).database(u32::try_from(database).unwrap_or(0));
        if providers.given() {
            let meter = providers
                .meter
                .unwrap_or_else(|| stateful_redis_otel::meter(&*opentelemetry::global::meter_provider()));
            let tracer = providers.tracer.or_else(|| {
                config
                    .telemetry
                    .traces
                    .then(|| stateful_redis_otel::tracer(&opentelemetry::global::tracer_provider()))
            });
            return Ok(Some(Arc::new(Telemetry::new(&meter, tracer, sources))));
        }
        own_or_global(config, sources).map(|t| Some(Arc::new(t)))
    }

    /// `telemetry.enabled` and no providers handed over: an SDK of our own from the config.
    #[cfg(feature = "otel-setup")]
    fn own_or_global(config: &ExecutorConfig, sources: Sources) -> Result<Telemetry, Error> {
        Telemetry::start(&config.telemetry, sources)
    }

    /// `telemetry.enabled` and no providers handed over: the global providers. The export
    /// settings need an SDK of our own (`otel-setup`), so one that is set is refused.
    #[cfg(not(feature = "otel-setup"))]
    fn own_or_global(config: &ExecutorConfig, sources: Sources) -> Result<Telemetry, Error> {
        let t = &config.telemetry;
        t.validate()?;
        let set = [
            ("telemetry.protocol", t.protocol.is_some()),
            ("telemetry.endpoint", t.endpoint.is_some()),
            ("telemetry.timeout", t.timeout.is_some()),
            ("telemetry.headers", !t.headers.is_empty()),
            ("telemetry.metrics_interval", t.metrics_interval.is_some()),
            ("telemetry.sample_ratio", t.sample_ratio.is_some()),
            ("telemetry.service_name", t.service_name.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(Error::Config(stateful_redis_core::ConfigError::new(
                *field,
                "set",
                "is an export setting, and this build records into the application's OpenTelemetry \
                 providers: enable the `otel-setup` feature for an SDK of the executor's own",
            )));
        }
        let meter = stateful_redis_otel::meter(&*opentelemetry::global::meter_provider());
        let tracer = t
            .traces
            .then(|| stateful_redis_otel::tracer(&opentelemetry::global::tracer_provider()));
        Ok(Telemetry::new(&meter, tracer, sources))
    }

    #[inline]
    pub(crate) fn record(handle: &Handle, operation: Operation, duration: Duration, error: Option<&Error>) {
        if let Some(t) = handle {
            t.record(operation, duration, error);
        }
    }

    #[inline]
    pub(crate) fn record_stage(handle: &Handle, stage: Stage, duration: Duration) {
        if let Some(t) = handle {
            t.record_stage(stage, duration);
        }
    }

    #[inline]
    pub(crate) fn capture(handle: &Handle) -> Trace {
        match handle {
            Some(t) if t.tracing() => OpTrace::capture().map(Box::new),
            _ => None,
        }
    }

    /// `ops`: each call's script, operation and trace.
    pub(crate) fn pipeline<'a>(
        handle: &Handle,
        ops: impl ExactSizeIterator<Item = (&'static Script, Operation, &'a Trace)> + Clone,
    ) -> Spans {
        let t = handle.as_ref()?;
        t.record_batch(ops.len());
        t.pipeline(ops.map(|(script, operation, trace)| (script.name(), operation, trace.as_deref())))
    }

    pub(crate) fn finish(spans: Spans, results: &[Result<redis::Value, Error>]) {
        if let Some(spans) = spans {
            spans.finish(results.iter().map(|r| r.as_ref().err()));
        }
    }

    /// Whether the sampling ratio could be changed live.
    pub(crate) fn set_sample_ratio(handle: &Handle, ratio: f64) -> bool {
        handle.as_ref().is_some_and(|t| t.set_sample_ratio(ratio))
    }

    pub(crate) async fn shutdown(handle: &Handle) {
        if let Some(t) = handle {
            t.shutdown().await;
        }
    }

    /// `(metrics, traces)` exports that failed.
    pub(crate) fn export_errors(handle: &Handle) -> Option<(u64, u64)> {
        handle.as_ref().and_then(|t| t.export_errors())
    }
}

#[cfg(not(feature = "otel"))]
mod on {
    use super::*;

    /// No telemetry in this build.
    #[derive(Debug, Clone)]
    pub(crate) struct Handle;
    /// No providers to hand over.
    #[derive(Debug, Default)]
    pub(crate) struct Providers;
    /// No trace to carry.
    #[derive(Debug)]
    pub(crate) struct Trace;
    /// No spans to end.
    pub(crate) struct Spans;

    pub(crate) fn start(config: &ExecutorConfig, _: &PerformanceMonitor, _: Providers) -> Result<Handle, Error> {
        if config.telemetry.enabled {
            return Err(Error::Config(stateful_redis_core::ConfigError::new(
                "telemetry.enabled",
                true,
                "this build has no OpenTelemetry: enable the `otel` feature of stateful-redis",
            )));
        }
        Ok(Handle)
    }

    #[inline]
    pub(crate) fn record(_: &Handle, _: Operation, _: Duration, _: Option<&Error>) {}

    #[inline]
    pub(crate) fn record_stage(_: &Handle, _: Stage, _: Duration) {}

    #[inline]
    pub(crate) fn capture(_: &Handle) -> Trace {
        Trace
    }

    #[inline]
    pub(crate) fn pipeline<'a>(
        _: &Handle,
        _: impl ExactSizeIterator<Item = (&'static Script, Operation, &'a Trace)> + Clone,
    ) -> Spans {
        Spans
    }

    #[inline]
    pub(crate) fn finish(_: Spans, _: &[Result<redis::Value, Error>]) {}

    pub(crate) fn set_sample_ratio(_: &Handle, _: f64) -> bool {
        false
    }

    pub(crate) async fn shutdown(_: &Handle) {}

    pub(crate) fn export_errors(_: &Handle) -> Option<(u64, u64)> {
        None
    }
}

pub(crate) use on::*;
