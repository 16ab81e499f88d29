//! The executor's `tracing` spans, seen by a subscriber layer that records every span with its
//! parent, around a real redis-server: they nest under the caller's span, carry the operation,
//! and follow a lease guard's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stateful_redis_test_support::RedisServer;
use tracing::Instrument as _;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One span as the layer saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    target: String,
    level: tracing::Level,
    /// The name of its parent span, if any.
    parent: Option<&'static str>,
    /// Its fields, as text.
    fields: HashMap<String, String>,
}

/// Records every span opened and the fields recorded on it later.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<HashMap<u64, Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.name());
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let meta = attrs.metadata();
        self.0.lock().expect("spans").insert(
            id.into_u64(),
            Seen {
                name: meta.name(),
                target: meta.target().to_owned(),
                level: *meta.level(),
                parent,
                fields,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &tracing::span::Record<'_>, _: Context<'_, S>) {
        if let Some(seen) = self.0.lock().expect("spans").get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

impl Recorder {
    fn spans(&self) -> Vec<Seen> {
        self.0.lock().expect("spans").values().cloned().collect()
    }
}

/// On a current-thread runtime, so that the thread's default subscriber sees every span.
#[tokio::test(flavor = "current_thread")]
async fn operation_and_lease_spans_nest_under_the_callers_span() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let server = RedisServer::start();
    let exec = crate::executor(&server).await;
    let state = exec.state::<u64>("spans").expect("namespace");
    let leases = exec.leases("spans").expect("leases");
    async {
        state.put("dev-1", &1).await.expect("put");
        state.get("dev-1").await.expect("get");
        server.cli(&["HSET", "spans:{broken}:s", "f", "not a record"]);
        state.put("broken", &1).await.expect_err("a wrong-type key fails");
        let guard = leases
            .acquire_guarded("dev-1", "owner-1", Duration::from_secs(30))
            .await
            .expect("acquire");
        guard.release().await.expect("release");
    }
    .instrument(tracing::info_span!("handle request"))
    .await;
    exec.shutdown().await;

    let spans = recorder.spans();
    let ops: Vec<&Seen> = spans.iter().filter(|s| s.name == "stateful_redis.operation").collect();
    let names: Vec<&str> = ops
        .iter()
        .map(|s| s.fields["stateful_redis.operation"].as_str())
        .collect();
    for expected in ["put", "get", "acquire", "release"] {
        assert!(names.contains(&expected), "no {expected} span: {names:?}");
    }
    for op in &ops {
        assert_eq!(op.target, "stateful_redis::operation");
        assert_eq!(op.level, tracing::Level::DEBUG);
        // The caller's span, or for the guard's release the lease span under it.
        assert!(
            matches!(op.parent, Some("handle request" | "stateful_redis.lease")),
            "{op:?}"
        );
    }
    let failed: Vec<&&Seen> = ops.iter().filter(|s| s.fields.contains_key("error.type")).collect();
    assert_eq!(failed.len(), 1, "only the failed put: {ops:?}");
    assert_eq!(failed[0].fields["error.type"], "script");
    assert_eq!(failed[0].fields["entity"], "broken");

    let lease = spans
        .iter()
        .find(|s| s.name == "stateful_redis.lease")
        .expect("a lease guard's span");
    assert_eq!(
        (lease.target.as_str(), lease.level, lease.parent),
        ("stateful_redis::lease", tracing::Level::INFO, Some("handle request"))
    );
    assert_eq!(lease.fields["entity"], "dev-1");
    assert_eq!(lease.fields["owner"], "owner-1");
    // The first connection of the pipeline link.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "stateful_redis.connect" && s.fields["reconnect"] == "false"),
        "{spans:?}"
    );
}
