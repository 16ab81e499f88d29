//! The executor's hooks into OpenTelemetry (`stateful-redis-otel`), or nothing at all when the
//! `otel` feature is off: every function here then compiles to nothing.

use std::time::Duration;

use stateful_redis_core::{Error, ErrorKind, ExecutorConfig};
use stateful_redis_metrics::{Operation, PerformanceMonitor, Stage};
use stateful_redis_scripts::Script;

#[cfg(feature = "otel")]
mod on {
    use std::sync::Arc;

    use redis::{ConnectionAddr, IntoConnectionInfo as _};
    use stateful_redis_otel::{OpTrace, PipelineSpans, Sources, Telemetry};

    use super::*;

    pub(crate) type Handle = Option<Arc<Telemetry>>;
    /// The caller's span. Boxed: every operation carries one through the batcher, and moves it
    /// several times; `None` (no allocation) unless spans are on and the caller is in a span.
    pub(crate) type Trace = Option<Box<OpTrace>>;
    pub(crate) type Spans = Option<PipelineSpans>;

    pub(crate) fn start(config: &ExecutorConfig, monitor: &PerformanceMonitor) -> Result<Handle, Error> {
        if !config.telemetry.enabled {
            return Ok(None);
        }
        // What the spans call the server: the URL's host and port (none for a unix socket).
        let (address, port) = match config
            .redis
            .url
            .expose()
            .into_connection_info()
            .map(|i| i.addr().clone())
        {
            Ok(ConnectionAddr::Tcp(host, port)) | Ok(ConnectionAddr::TcpTls { host, port, .. }) => (host, port),
            _ => ("localhost".to_owned(), 0),
        };
        let telemetry = Telemetry::start(&config.telemetry, Sources::new(monitor.clone(), address, port))?;
        Ok(Some(Arc::new(telemetry)))
    }

    #[inline]
    pub(crate) fn record(handle: &Handle, operation: Operation, duration: Duration, error: Option<ErrorKind>) {
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

    /// `ops`: each operation's script and trace.
    pub(crate) fn pipeline<'a>(
        handle: &Handle,
        ops: impl ExactSizeIterator<Item = (&'static Script, &'a Trace)>,
    ) -> Spans {
        let t = handle.as_ref()?;
        t.record_batch(ops.len());
        t.pipeline(ops.map(|(script, trace)| (script.name(), trace.as_deref())))
    }

    pub(crate) fn finish(spans: Spans, results: &[Result<redis::Value, Error>]) {
        if let Some(spans) = spans {
            spans.finish(results.iter().map(|r| r.as_ref().err().map(Error::kind)));
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
        handle
            .as_ref()
            .map(|t| (t.export_errors().metrics(), t.export_errors().traces()))
    }
}

#[cfg(not(feature = "otel"))]
mod on {
    use super::*;

    /// No telemetry in this build.
    #[derive(Debug, Clone)]
    pub(crate) struct Handle;
    /// No trace to carry.
    #[derive(Debug)]
    pub(crate) struct Trace;
    /// No spans to end.
    pub(crate) struct Spans;

    pub(crate) fn start(config: &ExecutorConfig, _monitor: &PerformanceMonitor) -> Result<Handle, Error> {
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
    pub(crate) fn record(_: &Handle, _: Operation, _: Duration, _: Option<ErrorKind>) {}

    #[inline]
    pub(crate) fn record_stage(_: &Handle, _: Stage, _: Duration) {}

    #[inline]
    pub(crate) fn capture(_: &Handle) -> Trace {
        Trace
    }

    #[inline]
    pub(crate) fn pipeline<'a>(_: &Handle, _: impl ExactSizeIterator<Item = (&'static Script, &'a Trace)>) -> Spans {
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
