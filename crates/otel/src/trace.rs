//! Spans: one CLIENT span per script call, a child of its caller's span, and one CLIENT span
//! per pipeline of several calls that links to the calls it carries.
//!
//! A call's span is a child of the context its caller was in when it submitted the call, so
//! it is sampled by the caller's decision: a sampled caller gets it, an unsampled caller does
//! not (no span is made at all). A call made outside any span has no trace of its own to join:
//! it becomes a child of its pipeline's span, recorded when the pipeline's is.
//!
//! The pipeline's span (only for two calls or more, with `db.operation.batch.size`) is a child
//! of its first sampled caller, so that it is recorded whenever one of its calls is, and a root
//! (sampled by the tracer's sampler) when no caller is sampled. It links to every call span it
//! carries, and each call span links back to it.

use std::sync::Arc;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::attribute as semattr;
use stateful_redis_core::Error;
use stateful_redis_metrics::Operation;

/// The server the spans name, and the attributes every span and series carries.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// `db.system.name`, `db.namespace`, `server.address`, `server.port`.
    pub(crate) common: Vec<KeyValue>,
}

impl Server {
    pub(crate) fn new(address: &str, port: u16, database: u32) -> Self {
        Self {
            common: vec![
                KeyValue::new(semattr::DB_SYSTEM_NAME, "redis"),
                // Shared strings: every span and pipeline clones these, without allocating.
                KeyValue::new(semattr::DB_NAMESPACE, Arc::<str>::from(database.to_string())),
                KeyValue::new(semattr::SERVER_ADDRESS, Arc::<str>::from(address)),
                KeyValue::new(semattr::SERVER_PORT, i64::from(port)),
            ],
        }
    }
}

/// What an operation carries from its caller to its pipeline: the caller's context, whose
/// span the operation's span is a child of.
#[derive(Debug, Clone)]
pub struct OpTrace {
    caller: Context,
}

impl OpTrace {
    /// Captures the current OpenTelemetry context in the caller's task: the active span of
    /// the OpenTelemetry API, or with `tracing-opentelemetry` (which activates the context of
    /// the entered `tracing` span) the caller's `tracing` span. `None` when the caller is in
    /// no span, so that there is nothing to carry.
    pub fn capture() -> Option<Self> {
        // Looked at in place: most callers of a busy service are in no span, and a clone of
        // the context costs more than the look.
        Context::map_current(|cx| cx.span().span_context().is_valid().then(|| Self { caller: cx.clone() }))
    }

    /// The caller's span, when the caller's trace is sampled.
    fn sampled(&self) -> Option<&Context> {
        self.caller.span().span_context().is_sampled().then_some(&self.caller)
    }
}

/// Whose child a call's span is.
enum Parent<'a> {
    /// The caller's sampled span.
    Caller(&'a Context),
    /// The caller is in an unsampled trace: no span.
    Unsampled,
    /// No caller span: the pipeline's span.
    Pipeline,
}

/// The spans of one pipeline in flight; [`finish`](Self::finish) ends them.
#[derive(Debug)]
pub struct PipelineSpans {
    /// The pipeline's span (two calls or more), as the context its calls are children of.
    pipeline: Option<Context>,
    /// Each call's span, in pipeline order; `None` for a call that is not traced.
    operations: Vec<Option<BoxedSpan>>,
}

impl PipelineSpans {
    pub(crate) fn start<'a>(
        tracer: &BoxedTracer,
        ops: impl ExactSizeIterator<Item = (&'static str, Operation, Option<&'a OpTrace>)> + Clone,
        server: &Server,
    ) -> Self {
        let parent = |op: Option<&'a OpTrace>| match op {
            Some(op) => op.sampled().map_or(Parent::Unsampled, Parent::Caller),
            None => Parent::Pipeline,
        };
        let n = ops.len();
        let first_sampled = ops.clone().find_map(|(_, _, op)| match parent(op) {
            Parent::Caller(cx) => Some(cx),
            _ => None,
        });
        // The pipeline's span, kept (as the context its calls are children of) only when it
        // is recorded: the sampler drops most, and those cost nothing more.
        let pipeline = (n > 1)
            .then(|| {
                let mut attributes = Vec::with_capacity(server.common.len() + 2);
                attributes.extend_from_slice(&server.common);
                attributes.push(KeyValue::new(semattr::DB_OPERATION_NAME, "BATCH EVALSHA"));
                // The conventions say never 1.
                attributes.push(KeyValue::new(semattr::DB_OPERATION_BATCH_SIZE, n as i64));
                let builder = tracer
                    .span_builder("BATCH EVALSHA")
                    .with_kind(SpanKind::Client)
                    .with_attributes(attributes);
                tracer.build_with_context(builder, first_sampled.unwrap_or(&Context::new()))
            })
            .filter(|span| span.is_recording())
            .map(|span| Context::new().with_span(span));
        // No span to record for any call: a single call without a caller span is a root of
        // its own, else a call needs a sampled caller or a recorded pipeline.
        if pipeline.is_none() && first_sampled.is_none() && n > 1 {
            return Self {
                pipeline,
                operations: Vec::new(),
            };
        }
        let recording = pipeline.as_ref();
        let operations = ops
            .map(|(script, operation, op)| (script, operation, parent(op)))
            .map(|(script, operation, parent)| {
                let parent = match parent {
                    Parent::Caller(cx) => cx,
                    Parent::Unsampled => return None,
                    // A single call without a caller span is a root.
                    Parent::Pipeline if n == 1 => &Context::new(),
                    Parent::Pipeline => recording?,
                };
                let mut attributes = Vec::with_capacity(server.common.len() + 3);
                attributes.extend_from_slice(&server.common);
                attributes.push(KeyValue::new(semattr::DB_OPERATION_NAME, "EVALSHA"));
                attributes.push(KeyValue::new(semattr::DB_STORED_PROCEDURE_NAME, script));
                attributes.push(KeyValue::new(crate::instruments::OPERATION, operation.as_str()));
                let mut builder = tracer
                    .span_builder(format!("EVALSHA {script}"))
                    .with_kind(SpanKind::Client)
                    .with_attributes(attributes);
                if let Some(p) = recording {
                    builder = builder.with_links(vec![Link::with_context(p.span().span_context().clone())]);
                }
                let span = tracer.build_with_context(builder, parent);
                span.is_recording().then_some(span)
            })
            .collect::<Vec<_>>();
        if let Some(p) = recording {
            for span in operations.iter().flatten() {
                p.span().add_link(span.span_context().clone(), Vec::new());
            }
        }
        Self { pipeline, operations }
    }

    /// Whether any span of the pipeline is recorded (will be exported).
    pub fn is_recording(&self) -> bool {
        self.pipeline.is_some() || self.operations.iter().any(Option::is_some)
    }

    /// The span context of each call's span, in pipeline order (`None` for an untraced call).
    pub fn operation_contexts(&self) -> impl Iterator<Item = Option<&SpanContext>> {
        self.operations.iter().map(|s| s.as_ref().map(|s| s.span_context()))
    }

    /// Ends every span: each call's with its own outcome (`errors` in pipeline order; a
    /// failure sets `error.type`, `db.response.status_code` when Redis gave one, and an error
    /// status), then the pipeline's, which carries `error.type` when every call failed with
    /// the same kind of failure (the pipeline as a whole).
    pub fn finish<'e>(self, errors: impl IntoIterator<Item = Option<&'e Error>>) {
        let mut common: Option<Option<stateful_redis_core::ErrorKind>> = None;
        let mut ops = self.operations.into_iter();
        for error in errors {
            let failure = error.filter(|e| e.kind().is_failure());
            let kind = failure.map(Error::kind);
            common = match common {
                None => Some(kind),
                Some(c) if c == kind => Some(c),
                Some(_) => Some(None),
            };
            if let Some(Some(mut span)) = ops.next() {
                if let Some(e) = failure {
                    fail(&mut span, e);
                }
                span.end();
            }
        }
        for mut span in ops.flatten() {
            span.end();
        }
        if let Some(cx) = self.pipeline {
            let span = cx.span();
            if let Some(Some(kind)) = common {
                span.set_attribute(KeyValue::new(semattr::ERROR_TYPE, kind.as_str()));
                span.set_status(Status::error(kind.as_str()));
            }
            span.end();
        }
    }
}

/// Marks a call's span as failed with `error`.
fn fail(span: &mut BoxedSpan, error: &Error) {
    let kind = error.kind().as_str();
    span.set_attribute(KeyValue::new(semattr::ERROR_TYPE, kind));
    if let Some(code) = error.response_code() {
        span.set_attribute(KeyValue::new(semattr::DB_RESPONSE_STATUS_CODE, code.to_owned()));
    }
    span.set_status(Status::error(kind));
}
