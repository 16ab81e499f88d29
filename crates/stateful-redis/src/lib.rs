//! Versioned, atomic per-entity state on Redis, for services that run as many instances.
//!
//! A [`StatefulExecutor`] is the one entry point: it holds the connection pool and the
//! Lua scripts, and hands out typed [`StateHandle`]s per namespace. Every operation is
//! one script, atomic on the server: `get` and `get_many` (batched), `put`, compare-and-set
//! (`cas`), read-modify-write with bounded retries (`update`, or `try_update` whose closure
//! may refuse), state-machine `transition`s, `delete_if` and `delete`; only the listing of a
//! namespace (`entities`) is `SCAN` pages, which never block the server. Bad input (ids,
//! oversized values) is refused with a typed error before
//! anything is sent; corrupt data in Redis is a typed error naming the entity.
//!
//! ```no_run
//! use stateful_redis::{Error, StatefulExecutor, Version};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
//! struct Device { firmware: String, reboots: u32 }
//!
//! # async fn run() -> Result<(), Error> {
//! let executor = StatefulExecutor::builder().url("redis://127.0.0.1:6379").build().await?;
//! let devices = executor.state::<Device>("fleet")?;
//!
//! // Create only if absent, then change it without losing concurrent updates.
//! let v1 = devices.cas("dev-1", Version::NONE, &Device::default()).await?;
//! let updated = devices.update("dev-1", |d| {
//!     let mut d = d.unwrap_or_default();
//!     d.reboots += 1;
//!     d
//! }).await?;
//! assert!(updated.version > v1);
//!
//! // A stale compare-and-set is refused with the current version.
//! match devices.cas("dev-1", v1, &Device::default()).await {
//!     Err(Error::Conflict { current, .. }) => assert_eq!(current, updated.version),
//!     other => panic!("{other:?}"),
//! }
//!
//! // A state machine: only from the allowed statuses ("" = no status yet).
//! devices.transition("dev-1", &["", "offline"], "online", None).await?;
//!
//! executor.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Watching and tuning a running executor
//!
//! Every operation is recorded in the executor's [`PerformanceMonitor`]
//! ([`StatefulExecutor::snapshot`]). The executor also evaluates alert rules on those figures,
//! turns them into advice, and takes new settings while it runs:
//!
//! - **Alerts.** [`build`](ExecutorBuilder::build) makes an [`AlertManager`] from
//!   `config.alerts` (a rule on a metric that is not in [`ALERT_METRICS`] is an
//!   [`Error::Config`] naming the field) and evaluates the built-in and configured rules every
//!   `alerts.interval`, notifying the log, a webhook or a Prometheus Alertmanager.
//!   [`StatefulExecutor::set_alert_threshold`] changes a metric's threshold from the next
//!   evaluation on, [`StatefulExecutor::alerts`] shows the states and counters, and
//!   [`shutdown`](StatefulExecutor::shutdown) gives queued notifications at most 2 s.
//! - **Configuration and live changes.** [`load_config`] reads the defaults, a TOML file and the
//!   `STATEFUL_REDIS_*` variables ([`ENV_PREFIX`], `__` between levels), validated, with errors
//!   that name the field and never show a secret; [`parse_config`] reads TOML text, and
//!   [`redacted_toml`] prints a configuration with its secrets hidden (feature `config-file`).
//!   [`StatefulExecutor::apply_config`] takes the alert rules, the batch settings, the exclusive
//!   pool's settings and `telemetry.sample_ratio` live, and lists every other change in
//!   [`ConfigChange::restart_needed`]. [`StatefulExecutor::watch_config`] re-reads a file when its
//!   contents change, and rejects a bad edit with an error log, keeping the running settings
//!   ([`ConfigWatch`], feature `config-file`). [`StatefulExecutor::live_config`] is the configuration in force.
//! - **Advice.** [`StatefulExecutor::optimization_suggestions`] turns the measured figures into
//!   [`Suggestion`]s (what was seen, the evidence, the setting to change), without I/O.
//!   [`StatefulExecutor::optimize_connection_pool`] resizes the exclusive pool from its measured
//!   waits, within `redis.pool.max_size_limit`, and [`StatefulExecutor::optimize_lua_scripts`]
//!   loads the scripts the server lacks, ahead of traffic.
//!
//! ```no_run
//! # #[cfg(feature = "config-file")] {
//! use std::time::Duration;
//!
//! use stateful_redis::{Error, StatefulExecutor, load_config};
//!
//! # async fn run() -> Result<(), Error> {
//! // The defaults, then the file, then the STATEFUL_REDIS_* variables.
//! let config = load_config(Some("stateful-redis.toml".as_ref()))?;
//! let executor = StatefulExecutor::builder().config(config).build().await?;
//! // Edits of the file apply where they can while the executor runs.
//! let watch = executor.watch_config("stateful-redis.toml", Duration::from_secs(5));
//!
//! executor.set_alert_threshold("operations.p99_ms", 50.0)?;
//! for alert in executor.alerts().alerts() {
//!     println!("{}: {}", alert.rule, alert.state);
//! }
//! for suggestion in executor.optimization_suggestions() {
//!     println!("{:?}: {} -> {}", suggestion.area, suggestion.finding, suggestion.change);
//! }
//! let pool = executor.optimize_connection_pool()?;
//! println!("exclusive pool {} -> {}: {}", pool.from, pool.to, pool.reason);
//! let scripts = executor.optimize_lua_scripts().await?;
//! println!("{} scripts loaded, {} already cached", scripts.loaded, scripts.already_cached);
//!
//! watch.stop();
//! executor.shutdown().await;
//! # Ok(()) }
//! # }
//! ```
//!
//! ## Examples
//!
//! Runnable programs in [`examples/`][examples], each against the Redis URL given as its
//! argument (or in `REDIS_URL`), else a throw-away `redis-server` it starts; each asserts what it
//! shows, and `cargo xtask test` runs them all. `cargo run -p stateful-redis --example
//! device_registry`:
//!
//! - `device_registry`: create-if-absent, concurrent `update`s, a stale `cas` refused,
//!   `transition`s of a state machine, `delete_if`.
//! - `lease_worker`: writes fenced by a lease, failover to a second instance, and the stalled
//!   holder's late write refused with [`Error::Fenced`].
//! - `exactly_once`: `apply_once` per message id; a redelivered message is a replay.
//! - `presence`: heartbeats of many devices, the active count, silent ones expired.
//! - `alerts_and_advice`: an alert rule on the conflict rate fires and resolves; the advisor
//!   names the hot entity.
//! - `opentelemetry` (feature `otel`): an app that has OpenTelemetry hands its providers to the
//!   builder; the executor's spans are children of the app's request span, under its resource.
//! - `prometheus` (feature `prometheus`): the metrics served at `/metrics` for Prometheus to
//!   scrape, with no collector.
//! - `tracing_spans`: a `tracing` app bridged to OpenTelemetry with tracing-opentelemetry; the
//!   executor's `tracing` spans nest under the app's, no `otel` feature needed.
//!
//! ## Tracing spans
//! Without any feature, the executor makes `tracing` spans a service filters by target and level
//! (`RUST_LOG=stateful_redis::lease=info,stateful_redis::operation=debug`):
//!
//! | Target | Level | Span / events | Fields |
//! |---|---|---|---|
//! | `stateful_redis::operation` | DEBUG | `stateful_redis.operation`, one per public operation, entered while it runs | `stateful_redis.operation`, `entity`, `error.type` and `otel.status_code=ERROR` on failure |
//! | `stateful_redis::lease` | INFO | `stateful_redis.lease`: a [`LeaseGuard`]'s life; events `lease acquired`, `lease released` (INFO), `lease renewed` (DEBUG), `lease renewal failed`, `lease lost` (WARN) | `entity`, `owner`, `token` |
//! | `stateful_redis::connect` | INFO | `stateful_redis.connect`, one per connection attempt of a pipeline link; `connecting to Redis failed` (WARN) | `link`, `server`, `reconnect` |
//!
//! Spans are children of the caller's current span. With tracing-opentelemetry they become
//! OpenTelemetry spans, and (feature `otel`) the executor's `EVALSHA` spans are their children.
//!
//! ## Feature flags
//! - `compression` (default): LZ4 compression of values above `state.compress_above`.
//! - `msgpack`: the MessagePack codec (`SerdeCodec::msgpack()`).
//! - `alert-http` (default): the alerts' webhook and Alertmanager notifiers, over reqwest
//!   (`stateful-redis-alert/http`). Without it alerts go to the log only, and building the
//!   executor or [`StatefulExecutor::apply_config`] refuses an `alerts.webhook` or
//!   `alerts.alertmanager` with an [`Error::Config`] naming the field.
//! - `config-file` (default): configuration from TOML and the environment, with figment and
//!   toml: `load_config`, `parse_config`, `redacted_toml` and `StatefulExecutor::watch_config`.
//!   Without it, build an [`ExecutorConfig`] in code.
//! - `otel`: OpenTelemetry metrics and spans through the OpenTelemetry API, into the providers
//!   the app hands to [`ExecutorBuilder::meter_provider`] / [`ExecutorBuilder::tracer_provider`],
//!   or with `telemetry.enabled` the global ones; see [docs/metrics.md][metrics]. No SDK.
//! - `otel-setup`: `otel`, plus an SDK with OTLP export (gRPC or HTTP/protobuf) that
//!   `telemetry.enabled` builds from [`TelemetryConfig`] and the executor owns.
//! - `prometheus` (with `otel-setup`): a Prometheus scrape endpoint at
//!   `telemetry.prometheus_listen`, under the names the OTLP→Prometheus translation gives.
//!
//! [examples]: https://github.com/stateful-redis/stateful-redis/tree/main/crates/stateful-redis/examples
//! [metrics]: https://github.com/stateful-redis/stateful-redis/blob/main/docs/metrics.md

mod advisor;
mod executor;
mod leases;
mod listing;
mod presence;
mod reload;
#[cfg(feature = "config-file")]
mod settings;
mod spans;
mod state;
mod telemetry;
#[cfg(feature = "config-file")]
mod watch;

/// One value in this many has its serialization and compression timed (two clock reads
/// per value would show on the hot path).
const CODEC_SAMPLE: u32 = 64;

thread_local! {
    static CODEC_TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this encode or decode is one of the timed ones.
fn sampled() -> bool {
    CODEC_TICK.with(|tick| {
        let n = tick.get().wrapping_add(1);
        tick.set(n);
        n % CODEC_SAMPLE == 1
    })
}

pub use crate::advisor::{Area, PoolChange, ScriptsReport, Suggestion};
pub use crate::executor::{ExecutorBuilder, StatefulExecutor};
pub use crate::leases::{Lease, LeaseGuard, LeaseLoss, LeaseStatus, Leases};
pub use crate::listing::EntityScan;
pub use crate::presence::Presence;
pub use crate::reload::ConfigChange;
#[cfg(feature = "config-file")]
pub use crate::settings::{ENV_PREFIX, load_config, parse_config, redacted_toml};
pub use crate::state::{Applied, Change, Fence, Fenced, StateHandle, TryUpdateError, Updated};
#[cfg(feature = "config-file")]
pub use crate::watch::ConfigWatch;
#[doc(inline)]
pub use stateful_redis_alert::{AlertManager, AlertState, AlertStats, AlertStatus, Transition, built_in_rules};
#[doc(inline)]
pub use stateful_redis_batch::BatchStats;
#[doc(inline)]
pub use stateful_redis_core::{
    Aggregation, AlertRule, AlertmanagerConfig, AlertsConfig, BatchConfig, BytesCodec, Codec, CodecError, CodecTimings,
    Comparison, ConfigError, Envelope, Error, ErrorKind, ExecutorConfig, IdempotencyConfig, InvalidId, KeyLayout,
    LeaseConfig, Namespace, OtlpProtocol, OverloadPolicy, PoolConfig, PresenceConfig, Record, RedisConfig, RedisUrl,
    Result, RetryConfig, Secret, SerdeCodec, Severity, StateConfig, TelemetryConfig, Version, Versioned, WebhookConfig,
};
#[doc(inline)]
pub use stateful_redis_metrics::{
    ALERT_METRICS, GaugeSource, Gauges, LatencySummary, MetricsSnapshot, Operation, OperationSnapshot,
    PerformanceMonitor, Stage, StageSnapshot,
};
/// The Prometheus reader, for an application's own `SdkMeterProvider` (feature `prometheus`).
#[cfg(feature = "prometheus")]
#[doc(inline)]
pub use stateful_redis_otel::PrometheusExporter;
#[doc(inline)]
pub use stateful_redis_pool::{
    EvictionPolicy, ExclusiveConnection, Pool, PoolStats, Reply, SharedConnection, server_error,
};
#[doc(inline)]
pub use stateful_redis_scripts::{ACL_COMMANDS, ALL as SCRIPTS, Script, ScriptStats};

pub use bytes;
pub use redis;
/// The OpenTelemetry API the executor records through (feature `otel`).
#[cfg(feature = "otel")]
pub use stateful_redis_otel::opentelemetry;
pub use tokio;
