//! The executor: one entry point through which every state operation goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::{Serialize, de::DeserializeOwned};
use stateful_redis_alert::AlertManager;
use stateful_redis_batch::{BatchStats, Batcher, PipelineSink};
use stateful_redis_core::{Codec, Envelope, Error, ExecutorConfig, Namespace, RedisConfig, SerdeCodec, hash_tag};
use stateful_redis_metrics::{GaugeSource, Gauges, MetricsSnapshot, Operation, PerformanceMonitor, Stage};
use stateful_redis_pool::{ConnectHook, Pool, PoolStats};
use stateful_redis_scripts::{Call, Combine, Invocation, Script, ScriptStats, Scripts};
use tokio::sync::Notify;

use crate::leases::Leases;
use crate::presence::Presence;
use crate::state::StateHandle;

/// How long `shutdown()` waits for queued alert notifications.
const ALERT_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds a [`StatefulExecutor`] from a configuration.
#[derive(Debug, Default)]
#[must_use]
pub struct ExecutorBuilder {
    config: ExecutorConfig,
    /// The application's OpenTelemetry providers, if it handed them over.
    providers: crate::telemetry::Providers,
}

impl ExecutorBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ExecutorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the Redis URL (`redis://user:password@host:port/db`, `rediss://…` for TLS).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.redis.url = stateful_redis_core::RedisUrl::new(url);
        self
    }

    /// Replaces the Redis connection settings.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.config.redis = redis;
        self
    }

    /// Edits the configuration in place.
    pub fn with(mut self, edit: impl FnOnce(&mut ExecutorConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Records the executor's metrics through the application's meter provider (feature
    /// `otel`), whatever `telemetry.enabled` says: the application's resource, views and
    /// exporters apply, and the application shuts the provider down, after
    /// [`StatefulExecutor::shutdown`] so that the last figures are exported.
    ///
    /// It takes the provider, not a `Meter`, so that the instruments carry the library's own
    /// instrumentation scope (`stateful-redis`, its version, the conventions' schema URL), as
    /// the OpenTelemetry guidance for libraries asks; by reference, because the application
    /// keeps owning it. A provider not handed over is the global one (spans unless
    /// `telemetry.traces` is false). Without either (and without `otel-setup`),
    /// `telemetry.enabled` records into the global providers, which must be set before
    /// [`build`](Self::build): instruments made from the no-op provider stay no-ops. A cheap
    /// record needs bound series: see `stateful_redis_otel`'s `bound-instruments` feature.
    #[cfg(feature = "otel")]
    pub fn meter_provider<P>(mut self, provider: &P) -> Self
    where
        P: stateful_redis_otel::opentelemetry::metrics::MeterProvider + ?Sized,
    {
        self.providers.meter = Some(stateful_redis_otel::meter(provider));
        self
    }

    /// Makes the executor's spans with the application's tracer provider (feature `otel`),
    /// whatever `telemetry.enabled` and `telemetry.traces` say: its sampler decides, its
    /// exporters export. See [`meter_provider`](Self::meter_provider) for why a provider. Spans
    /// are children of the span current (OpenTelemetry context, or with tracing-opentelemetry
    /// the entered `tracing` span) where the operation was called.
    #[cfg(feature = "otel")]
    pub fn tracer_provider<P>(mut self, provider: &P) -> Self
    where
        P: stateful_redis_otel::opentelemetry::trace::TracerProvider + ?Sized,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as stateful_redis_otel::opentelemetry::trace::Tracer>::Span: Send + Sync + 'static,
    {
        self.providers.tracer = Some(stateful_redis_otel::tracer(provider));
        self
    }

    /// Validates the configuration, connects (failing at once on a wrong address or
    /// password) and loads the scripts.
    pub async fn build(self) -> Result<StatefulExecutor, Error> {
        self.config.validate()?;
        // Before connecting: it checks the rules' metric names.
        let alerts = AlertManager::new(&self.config.alerts)?;
        let scripts = Arc::new(Scripts::new());
        let hook: Arc<dyn ConnectHook> = Arc::clone(&scripts) as Arc<dyn ConnectHook>;
        let pool = Pool::connect(&self.config.redis, vec![hook]).await?;
        if let Err(e) = check_eviction(&pool, self.config.redis.allow_eviction).await {
            pool.close();
            return Err(e);
        }
        let envelope = Envelope::new(self.config.state.max_value_size, self.config.state.compress_above);
        let monitor = PerformanceMonitor::default();
        let telemetry = match crate::telemetry::start(&self.config, &monitor, self.providers) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                pool.close();
                return Err(e);
            }
        };
        // One queue per shared link: an entity's operations always take the same link.
        let calls_per_bundle = Arc::new(AtomicUsize::new(self.config.batch.calls_per_bundle));
        let sink = RedisSink {
            pool: pool.clone(),
            scripts: Arc::clone(&scripts),
            monitor: monitor.clone(),
            telemetry: telemetry.clone(),
            calls_per_bundle: Arc::clone(&calls_per_bundle),
        };
        let (m, t) = (monitor.clone(), telemetry.clone());
        pool.on_checkout(Arc::new(move |waited| {
            m.record_stage(Stage::PoolWait, waited);
            crate::telemetry::record_stage(&t, Stage::PoolWait, waited);
        }));
        let batcher = Batcher::new(sink, pool.shared_links(), &self.config.batch);
        let live = self.config.clone();
        let executor = StatefulExecutor {
            inner: Arc::new(Inner {
                monitor: monitor.clone(),
                pool,
                batcher,
                calls_per_bundle,
                scripts,
                envelope,
                config: self.config,
                in_flight: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                drained: Notify::new(),
                retries: AtomicU64::new(0),
                telemetry,
                advisor: crate::advisor::AdvisorState::default(),
                alerts,
                live: std::sync::Mutex::new(live),
            }),
        };
        executor.inner.alerts.spawn(monitor.clone());
        // Weak: the monitor lives inside the executor it reads.
        monitor.set_gauge_source(Arc::new(ExecutorGauges(Arc::downgrade(&executor.inner))));
        Ok(executor)
    }
}

/// Versioned, atomic per-entity state in Redis.
///
/// Cheap to clone; clones share connections. Get typed handles with
/// [`state`](Self::state); stop with [`shutdown`](Self::shutdown).
#[derive(Debug, Clone)]
pub struct StatefulExecutor {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) monitor: PerformanceMonitor,
    pub(crate) pool: Pool,
    batcher: Batcher<RedisSink>,
    /// `batch.calls_per_bundle`, shared with the sink and changed live.
    calls_per_bundle: Arc<AtomicUsize>,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) envelope: Envelope,
    pub(crate) config: ExecutorConfig,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    drained: Notify,
    retries: AtomicU64,
    /// OpenTelemetry (feature `otel`), when `telemetry.enabled` or the app handed providers over.
    pub(crate) telemetry: crate::telemetry::Handle,
    /// What the advisor saw at its last call.
    pub(crate) advisor: crate::advisor::AdvisorState,
    /// Rules evaluated on the monitor's snapshots, and their notifiers.
    pub(crate) alerts: AlertManager,
    /// The configuration running now (`config` with what `apply_config` changed live).
    pub(crate) live: std::sync::Mutex<ExecutorConfig>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without `shutdown()`: stop the flusher tasks, which hold the pool.
        self.batcher.close();
        self.pool.close();
    }
}

/// Counts an operation in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.closed.load(Ordering::Acquire) {
            self.0.drained.notify_waiters();
        }
    }
}

impl Inner {
    /// Takes new batch settings live (see `Batcher::reconfigure`).
    pub(crate) fn reconfigure_batch(&self, config: &stateful_redis_core::BatchConfig) -> Result<(), Error> {
        self.batcher.reconfigure(config)?;
        self.calls_per_bundle.store(config.calls_per_bundle, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `shutdown()` began.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records an operation that started at `started` in the monitor.
    pub(crate) fn observe<T>(&self, operation: Operation, started: std::time::Instant, result: &Result<T, Error>) {
        let error = result.as_ref().err();
        let duration = self.monitor.record_since(operation, started, error.map(Error::kind));
        crate::telemetry::record(&self.telemetry, operation, duration, error);
    }

    /// Records how long a sampled stage of an operation took.
    pub(crate) fn stage(&self, stage: Stage, duration: std::time::Duration) {
        self.monitor.record_stage(stage, duration);
        crate::telemetry::record_stage(&self.telemetry, stage, duration);
    }

    /// Records the timings of a sampled encode or decode.
    pub(crate) fn codec_timings(&self, timings: stateful_redis_core::CodecTimings) {
        self.stage(Stage::Serialization, timings.codec);
        if let Some(compression) = timings.compression {
            self.stage(Stage::Compression, compression);
        }
    }

    /// Admits an operation, or refuses it once shutdown began.
    pub(crate) fn begin(&self) -> Result<InFlight<'_>, Error> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        Ok(guard)
    }

    /// Encodes a call and picks its queue (by the hash tag of its keys). No await: the
    /// call's keys and values may live in scratch buffers.
    pub(crate) fn encode<I: Invocation>(&self, call: &I, operation: Operation) -> Encoded {
        let key = call.routing_key();
        Encoded {
            // One link (the default): one queue, whatever the hash tag.
            hint: if self.pool.shared_links() > 1 {
                fnv1a(hash_tag(key))
            } else {
                0
            },
            op: Queued {
                call: Call::new(
                    call,
                    if self.pool.is_cluster() {
                        stateful_redis_pool::key_slot(key.as_bytes())
                    } else {
                        0
                    },
                ),
                trace: crate::telemetry::capture(&self.telemetry),
                operation,
            },
        }
    }

    /// Queues an encoded call with the calls of other tasks and waits for its reply. The
    /// batcher's own future: no state machine of its own around it.
    fn submit(&self, encoded: Encoded) -> impl Future<Output = Result<redis::Value, Error>> + '_ {
        self.batcher.submit(encoded.hint, encoded.op)
    }

    /// Runs one script call: queued with the calls of other tasks and sent in a pipeline
    /// on the link of the call's hash tag.
    pub(crate) async fn run<I: Invocation>(&self, call: &I, operation: Operation) -> Result<I::Reply, Error> {
        self.run_encoded(
            call.script(),
            false,
            || Ok(self.encode(call, operation)),
            |value| call.parse(value),
        )
        .await
    }

    /// Runs a call that is safe to repeat (a read, a fenced or idempotent write, a lease
    /// call): when its outcome is unknown (timeout, broken connection) it is sent again,
    /// up to `retry.attempts` in all, with doubling pauses. Never use it for plain writes.
    pub(crate) async fn run_safe<I: Invocation>(&self, call: &I, operation: Operation) -> Result<I::Reply, Error> {
        self.run_encoded(
            call.script(),
            true,
            || Ok(self.encode(call, operation)),
            |value| call.parse(value),
        )
        .await
    }

    /// Runs the call `encode` makes, and reads its reply with `parse`. Each attempt encodes
    /// it again, so that `encode` may build it in scratch buffers (see `encode`). When
    /// `safe` (a call safe to repeat, as for [`run_safe`](Self::run_safe)) an attempt whose
    /// outcome is unknown is followed by another, up to `retry.attempts` in all.
    pub(crate) async fn run_encoded<R>(
        &self,
        script: &'static Script,
        safe: bool,
        encode: impl Fn() -> Result<Encoded, Error>,
        parse: impl FnOnce(redis::Value) -> Result<R, String>,
    ) -> Result<R, Error> {
        let retry = &self.config.retry;
        let attempts = if safe { retry.attempts } else { 1 };
        let mut pause = retry.backoff;
        let mut attempt = 1;
        // The first attempt whose outcome is unknown: once one may have applied, a later
        // attempt's error (an overloaded queue, a refusal) cannot say that nothing happened.
        let mut unknown: Option<Error> = None;
        loop {
            match self.submit(encode()?).await {
                Err(e) if e.is_outcome_unknown() && attempt < attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(script = script.name(), attempt, error = %e, "retrying a safe call");
                    unknown.get_or_insert(e);
                    // Boxed: the pause is rare, and every call's future would carry it.
                    Box::pin(tokio::time::sleep(pause)).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(match unknown {
                        Some(first) if !e.is_outcome_unknown() => {
                            tracing::debug!(script = script.name(), attempt, error = %e,
                                "a retry failed after an attempt whose outcome is unknown");
                            first
                        }
                        _ => e,
                    });
                }
                Ok(value) => {
                    return parse(value).map_err(|detail| Error::UnexpectedReply {
                        what: script.name(),
                        detail,
                    });
                }
            }
        }
    }

    /// Runs safe calls concurrently; the batcher puts them in pipelines.
    pub(crate) async fn run_many_safe<I: Invocation>(
        &self,
        calls: &[I],
        operation: Operation,
    ) -> Vec<Result<I::Reply, Error>> {
        futures_util::future::join_all(calls.iter().map(|call| self.run_safe(call, operation))).await
    }
}

/// Refuses a server whose `maxmemory-policy` evicts, unless `allow` (then warns). The
/// guarantees rest on keys that must never be evicted (leases, message ids, fences).
async fn check_eviction(pool: &Pool, allow: bool) -> Result<(), Error> {
    let policies = match pool.check_eviction().await {
        Ok(policies) => policies,
        Err(e) if allow => {
            tracing::warn!(error = %e, "redis.allow_eviction: the servers' maxmemory-policy is unknown");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for policy in policies.iter().filter(|p| !p.keeps_every_key()) {
        if !allow {
            return Err(Error::UnsafeEviction {
                node: policy.node.clone(),
                policy: policy.policy.clone(),
                reason: policy.what_it_breaks(),
            });
        }
        tracing::warn!(
            server = %policy.node,
            policy = %policy.policy,
            "redis.allow_eviction: guarantees off: {}",
            policy.what_it_breaks()
        );
    }
    Ok(())
}

/// The executor's gauges, read when a snapshot is taken.
struct ExecutorGauges(std::sync::Weak<Inner>);

impl GaugeSource for ExecutorGauges {
    fn gauges(&self) -> Gauges {
        let Some(inner) = self.0.upgrade() else {
            return Gauges::default();
        };
        let pool = inner.pool.stats();
        let batch = inner.batcher.stats();
        let mut g = Gauges::default();
        g.in_flight = inner.in_flight.load(Ordering::Acquire) as u64;
        g.queue_depth = batch.queued;
        g.pipelines_in_flight = batch.in_flight;
        g.batches = batch.batches;
        g.batched_operations = batch.sent;
        g.rejected = batch.rejected;
        g.dropped = batch.dropped;
        g.retries = inner.retries.load(Ordering::Relaxed);
        g.script_reloads = inner.scripts.stats().reloads;
        g.connections = u64::from(pool.connections + pool.shared_connected + pool.direct_connected);
        g.connections_idle = u64::from(pool.idle);
        g.connections_used = u64::from(pool.in_use);
        g.pool_waiters = pool.waiters;
        g.pool_waits = pool.waits;
        g.pool_timeouts = pool.timeouts;
        g.pool_max_size = u64::from(pool.max_size);
        g.queue_capacity = (inner.batcher.config().queue_capacity * inner.pool.shared_links()) as u64;
        g.bytes_sent = pool.bytes_sent;
        g.bytes_received = pool.bytes_received;
        g.evicting_servers = u64::from(pool.evicting_servers);
        g
    }
}

/// FNV-1a: a stable hash of a hash tag, to pick the queue (and link) of an entity.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Sends a batch of script calls as one pipeline on link `shard`: the direct link on plain
/// TCP, the shared redis-rs link for TLS and unix sockets.
#[derive(Debug)]
struct RedisSink {
    pool: Pool,
    scripts: Arc<Scripts>,
    monitor: PerformanceMonitor,
    telemetry: crate::telemetry::Handle,
    /// `batch.calls_per_bundle`: calls of a pipeline sent as one bundle (`EVALSHA many`).
    calls_per_bundle: Arc<AtomicUsize>,
}

/// An encoded call and the queue it goes to.
pub(crate) struct Encoded {
    hint: u64,
    op: Queued,
}

/// One script call on its way through the batcher.
pub(crate) struct Queued {
    /// The call, encoded once when it was made.
    call: Call,
    /// The caller's trace, when spans are on.
    trace: crate::telemetry::Trace,
    /// The public operation the call is part of (its spans' `stateful_redis.operation`).
    operation: Operation,
}

/// The same error for each operation of a pipeline that failed as a whole.
fn for_each(error: &Error, n: usize) -> Vec<Result<redis::Value, Error>> {
    (0..n).map(|_| Err(error.duplicate())).collect()
}

impl PipelineSink for RedisSink {
    type Op = Queued;
    type Reply = redis::Value;

    async fn send(&self, shard: usize, ops: Vec<Queued>) -> Vec<Result<redis::Value, Error>> {
        let spans = crate::telemetry::pipeline(
            &self.telemetry,
            ops.iter().map(|q| (q.call.script, q.operation, &q.trace)),
        );
        let calls: Vec<Call> = ops.into_iter().map(|q| q.call).collect();
        let combine = Combine::up_to(self.calls_per_bundle.load(Ordering::Relaxed));
        let results = if self.pool.is_cluster() {
            // No bundles on a cluster: while a slot migrates, a bundle whose keys are split between
            // the two masters is refused (`TRYAGAIN`) until the migration ends, where single
            // calls follow their `ASK` one by one (ADR 008).
            self.scripts.run_cluster(&self.pool, &calls, Combine::OFF).await
        } else {
            self.send_calls(shard, &calls, combine).await
        };
        crate::telemetry::finish(spans, &results);
        results
    }

    fn queue_wait(&self, waited: std::time::Duration) {
        self.monitor.record_stage(Stage::QueueWait, waited);
        crate::telemetry::record_stage(&self.telemetry, Stage::QueueWait, waited);
    }
}

impl RedisSink {
    async fn send_calls(&self, shard: usize, calls: &[Call], combine: Combine) -> Vec<Result<redis::Value, Error>> {
        // The hot path: the pool's own pipeline link (plain TCP).
        if self.pool.direct_links() > 0 {
            return self.scripts.run_direct(&self.pool, shard, calls, combine).await;
        }
        // TLS and unix sockets: a redis-rs shared link, which sends `Cmd`s.
        let mut conn = match self.pool.shared_at(shard).await {
            Ok(conn) => conn,
            Err(e) => return for_each(&e, calls.len()),
        };
        let timeout = self.pool.response_timeout();
        self.scripts.run_pipeline(&mut conn, calls, combine, timeout).await
    }
}

impl StatefulExecutor {
    /// A builder with the default configuration.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// A handle on the entities of `namespace`, whose values are `T` stored with serde
    /// JSON. Fails if the namespace is invalid.
    pub fn state<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
        namespace: &str,
    ) -> Result<StateHandle<T, SerdeCodec>, Error> {
        self.state_with_codec(namespace, SerdeCodec::json())
    }

    /// A handle on the entities of `namespace`, whose values are `T` stored with `codec`.
    pub fn state_with_codec<T, C: Codec<T>>(&self, namespace: &str, codec: C) -> Result<StateHandle<T, C>, Error> {
        Ok(StateHandle::new(
            Arc::clone(&self.inner),
            Namespace::new(namespace)?,
            codec,
        ))
    }

    /// The connection pool, for its statistics, resizing, or commands of your own.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The pool's statistics.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// How often scripts were loaded and reloaded.
    pub fn script_stats(&self) -> ScriptStats {
        self.inner.scripts.stats()
    }

    /// The configuration the executor runs with (secrets redacted in its `Debug`).
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    /// The alerts: rules evaluated every `alerts.interval` on the monitor's snapshots (with
    /// the thresholds of [`set_alert_threshold`](Self::set_alert_threshold)), their states,
    /// and the notifiers' counts.
    pub fn alerts(&self) -> &AlertManager {
        &self.inner.alerts
    }

    /// Sets the threshold of the alerts on `metric` (one of [`ALERT_METRICS`](crate::ALERT_METRICS)),
    /// from the next evaluation on; a metric no rule covers gets a rule of its own
    /// (`threshold:<metric>`, firing while the value is above it).
    pub fn set_alert_threshold(&self, metric: &str, threshold: f64) -> Result<(), Error> {
        self.inner.monitor.set_alert_threshold(metric, threshold)
    }

    /// The batch settings in force now.
    pub fn batch_config(&self) -> stateful_redis_core::BatchConfig {
        self.inner.batcher.config()
    }

    /// Calls re-sent after their outcome was unknown (only calls safe to repeat are).
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Ownership leases on the entities of `namespace` (the namespace of the state they guard).
    pub fn leases(&self, namespace: &str) -> Result<Leases, Error> {
        Ok(Leases::new(Arc::clone(&self.inner), Namespace::new(namespace)?))
    }

    /// Presence (heartbeats and the active count) of the entities of `namespace`.
    pub fn presence(&self, namespace: &str) -> Result<Presence, Error> {
        Ok(Presence::new(Arc::clone(&self.inner), Namespace::new(namespace)?))
    }

    /// The performance monitor: every operation of this executor is recorded in it, and
    /// your own with [`PerformanceMonitor::record_operation`].
    pub fn monitor(&self) -> &PerformanceMonitor {
        &self.inner.monitor
    }

    /// [`PerformanceMonitor::snapshot`]: counts, rates, latency percentiles, failures, and
    /// the pool, queue and batch gauges.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.inner.monitor.snapshot()
    }

    /// Counts of the batching: pipelines, their sizes, queue depth, rejections, drops.
    pub fn batch_stats(&self) -> BatchStats {
        self.inner.batcher.stats()
    }

    /// Operations running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// `(metrics, traces)`: OTLP exports that failed so far, or `None` unless the executor exports
    /// itself (`telemetry.enabled` with `otel-setup`, no providers handed over): the app's own
    /// exporters are the app's to watch. A failed export never fails an operation.
    pub fn telemetry_export_errors(&self) -> Option<(u64, u64)> {
        crate::telemetry::export_errors(&self.inner.telemetry)
    }

    /// Refuses new operations ([`Error::Shutdown`]), waits for those in flight to finish,
    /// exports the last telemetry (at most `telemetry.shutdown_timeout`), then closes the
    /// connections. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        loop {
            let drained = self.inner.drained.notified();
            tokio::pin!(drained);
            // Register before checking, so a wake-up between the check and the await is not lost.
            drained.as_mut().enable();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            drained.await;
        }
        self.inner.batcher.shutdown().await;
        // Queued notifications get a short while to go out; firing alerts stay firing.
        self.inner.alerts.shutdown(ALERT_FLUSH).await;
        // The last export, with every operation counted.
        crate::telemetry::shutdown(&self.inner.telemetry).await;
        self.inner.pool.close();
    }
}
