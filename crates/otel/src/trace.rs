//! Spans: one CLIENT span per pipeline, one CLIENT child per operation in it.
//!
//! One pipeline serves many callers, whose traces differ, so the pipeline span is a root (its
//! sampling follows the ratio) and each operation span *links* to its caller's span instead of
//! being its child: parenting the pipeline to its first caller would file the other callers'
//! operations under a stranger's trace.

use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use opentelemetry_semantic_conventions::attribute as semattr;
use stateful_redis_core::ErrorKind;

/// The server the spans name.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) address: String,
    pub(crate) port: u16,
}

/// What an operation carries from its caller to its pipeline: the caller's span, which its
/// operation span links to.
#[derive(Debug, Clone)]
pub struct OpTrace {
    caller: SpanContext,
}

impl OpTrace {
    /// Captures the current OpenTelemetry context's span (with `tracing-opentelemetry`, the
    /// entered `tracing` span) in the caller's task; `None` when the caller is in no span,
    /// so that there is nothing to carry.
    pub fn capture() -> Option<Self> {
        let cx = Context::current();
        let span = cx.span();
        let caller = span.span_context();
        caller.is_valid().then(|| Self { caller: caller.clone() })
    }
}

/// The spans of one pipeline in flight; [`finish`](Self::finish) ends them.
#[derive(Debug)]
pub struct PipelineSpans {
    pipeline: Context,
    operations: Vec<Span>,
}

impl PipelineSpans {
    pub(crate) fn start<'a>(
        tracer: &SdkTracer,
        ops: impl ExactSizeIterator<Item = (&'static str, Option<&'a OpTrace>)>,
        server: &Server,
    ) -> Self {
        let n = ops.len();
        let mut pipeline = tracer
            .span_builder(if n > 1 { "PIPELINE" } else { "EVALSHA" })
            .with_kind(SpanKind::Client)
            .start_with_context(tracer, &Context::new());
        if !pipeline.is_recording() {
            return Self {
                pipeline: Context::new().with_span(pipeline),
                operations: Vec::new(),
            };
        }
        let common = [
            KeyValue::new(semattr::DB_SYSTEM_NAME, "redis"),
            KeyValue::new(semattr::SERVER_ADDRESS, server.address.clone()),
            KeyValue::new(semattr::SERVER_PORT, i64::from(server.port)),
        ];
        for kv in &common {
            pipeline.set_attribute(kv.clone());
        }
        pipeline.set_attribute(KeyValue::new(
            semattr::DB_OPERATION_NAME,
            if n > 1 { "BATCH EVALSHA" } else { "EVALSHA" },
        ));
        if n > 1 {
            // The conventions say never 1.
            pipeline.set_attribute(KeyValue::new(semattr::DB_OPERATION_BATCH_SIZE, n as i64));
        }
        let ops: Vec<(&'static str, Option<&OpTrace>)> = ops.collect();
        for (_, op) in &ops {
            if let Some(op) = op.filter(|o| o.caller.is_valid()) {
                pipeline.add_link(op.caller.clone(), Vec::new());
            }
        }
        let parent = Context::new().with_span(pipeline);
        let operations = ops
            .iter()
            .map(|&(script, op)| {
                let mut attributes = common.to_vec();
                attributes.push(KeyValue::new(semattr::DB_OPERATION_NAME, "EVALSHA"));
                attributes.push(KeyValue::new(semattr::DB_STORED_PROCEDURE_NAME, script));
                let links = match op {
                    Some(o) if o.caller.is_valid() => vec![Link::with_context(o.caller.clone())],
                    _ => Vec::new(),
                };
                tracer
                    .span_builder(format!("EVALSHA {script}"))
                    .with_kind(SpanKind::Client)
                    .with_attributes(attributes)
                    .with_links(links)
                    .start_with_context(tracer, &parent)
            })
            .collect();
        Self {
            pipeline: parent,
            operations,
        }
    }

    /// Whether the pipeline is sampled (its spans will be exported).
    pub fn is_recording(&self) -> bool {
        self.pipeline.span().is_recording()
    }

    /// Ends every span: each operation's with its own outcome (`errors` in pipeline order;
    /// a failure sets `error.type` and an error status), then the pipeline's, which carries
    /// `error.type` when every operation failed with the same failure (the pipeline as a whole).
    pub fn finish(self, errors: impl IntoIterator<Item = Option<ErrorKind>>) {
        let mut common: Option<Option<ErrorKind>> = None;
        let mut ops = self.operations.into_iter();
        for error in errors {
            let failure = error.filter(|k| k.is_failure());
            common = match common {
                None => Some(failure),
                Some(c) if c == failure => Some(c),
                Some(_) => Some(None),
            };
            if let Some(mut span) = ops.next() {
                if let Some(kind) = failure {
                    span.set_attribute(KeyValue::new(semattr::ERROR_TYPE, kind.as_str()));
                    span.set_status(Status::error(kind.as_str()));
                }
                span.end();
            }
        }
        for mut span in ops {
            span.end();
        }
        let span = self.pipeline.span();
        if let Some(Some(kind)) = common {
            span.set_attribute(KeyValue::new(semattr::ERROR_TYPE, kind.as_str()));
            span.set_status(Status::error(kind.as_str()));
        }
        span.end();
    }
}
