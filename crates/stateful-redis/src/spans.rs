//! The `tracing` spans of operations and leases (targets and levels: the crate docs'
//! "Tracing spans"). A span no subscriber wants costs a check of a cached flag.

use stateful_redis_core::Error;
use stateful_redis_metrics::Operation;

/// The target of the operations' spans.
pub(crate) const OPERATION: &str = "stateful_redis::operation";
/// The target of the leases' spans and events.
pub(crate) const LEASE: &str = "stateful_redis::lease";

/// The span of one public operation (DEBUG), entered while it runs, so that the spans of its
/// script calls (feature `otel`, or tracing-opentelemetry) are its children.
#[inline]
pub(crate) fn operation(operation: Operation, entity: Option<&str>) -> tracing::Span {
    tracing::debug_span!(
        target: OPERATION,
        "stateful_redis.operation",
        stateful_redis.operation = operation.as_str(),
        entity,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks an operation's span failed when `result` is a failure
/// ([`ErrorKind::is_failure`](stateful_redis_core::ErrorKind::is_failure)).
#[inline]
pub(crate) fn finish<T>(span: &tracing::Span, result: &Result<T, Error>) {
    if let Err(e) = result
        && e.kind().is_failure()
        && !span.is_disabled()
    {
        span.record("error.type", e.kind().as_str());
        span.record("otel.status_code", "ERROR");
    }
}
