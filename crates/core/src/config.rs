//! Configuration structs: defaults, validation naming the bad field, secrets redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An invalid configuration value: names the field, the value (redacted if secret) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} = {value}: {reason}")]
pub struct ConfigError {
    /// The field's dotted path, such as `redis.pool.max_size`.
    pub field: String,
    /// The value given, with any secret redacted.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error for `field` holding `value`.
    pub fn new(field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// A secret string: `Debug` and `Display` print `***`; serialization writes `***` too.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A Redis URL (`redis://`, `rediss://` or `redis+unix://`); its password never shows in
/// `Debug`, `Display` or serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL; [`validate`](Self::validate) checks it.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, in the authority and in the query
    /// (`redis+unix:///path?pass=…`).
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    // Cannot fail for URLs that have a password.
                    let _ = parsed.set_password(Some("***"));
                }
                if parsed.query().is_some() {
                    let pairs: Vec<(String, String)> = parsed
                        .query_pairs()
                        .map(|(k, v)| {
                            let secret = matches!(k.as_ref(), "pass" | "password");
                            (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                        })
                        .collect();
                    parsed.query_pairs_mut().clear().extend_pairs(pairs);
                }
                parsed.to_string()
            }
            // Unparseable: show nothing of it that could be a secret (the last `@` ends
            // the credentials, whatever they hold).
            Err(_) => match self.0.rsplit_once('@') {
                Some((_, host)) => format!("<unparseable>@{host}"),
                None => "<unparseable URL>".to_owned(),
            },
        }
    }

    /// Checks the scheme and host; the error never holds the password.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let parsed = url::Url::parse(&self.0)
            .map_err(|e| ConfigError::new(field, self.redacted(), format!("not a URL: {e}")))?;
        match parsed.scheme() {
            "redis" | "rediss" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(ConfigError::new(field, self.redacted(), "the URL has no host"));
                }
            }
            "redis+unix" | "unix" => {}
            other => {
                return Err(ConfigError::new(
                    field,
                    self.redacted(),
                    format!("scheme {other:?} is not one of redis, rediss, redis+unix"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.0
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(RedisUrl)
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Durations in config files: `"250ms"`, `"2s"`, `"1m"`, or a number of milliseconds.
pub mod duration {
    use super::*;

    /// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` or plain milliseconds `"250"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like \"250ms\", \"2s\" or \"1m\""))?;
        let seconds = match unit.trim() {
            "" | "ms" => number / 1e3,
            "us" | "µs" => number / 1e6,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
    }

    /// Formats a duration the way [`parse`] reads it.
    pub fn format(d: Duration) -> String {
        if d.subsec_nanos() == 0 && d.as_secs() > 0 {
            format!("{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}us", d.as_micros())
        }
    }

    /// `serde(with = "duration")`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// `serde(with = "duration")`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Connection pool settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections shared by all pipelined traffic, each with its own batch queue
    /// (default 1: one link keeps batches largest and client CPU lowest, and two pipelines
    /// in flight on it keep the server busy; measured with `cargo xtask bench`).
    pub shared_connections: u32,
    /// Most connections in the exclusive (bb8) pool (default 8).
    pub max_size: u32,
    /// The largest `max_size` may become: `optimize_connection_pool()` and live resizes
    /// stay at or below it (default 64).
    pub max_size_limit: u32,
    /// Idle connections the exclusive pool keeps open (default 0).
    pub min_idle: u32,
    /// Longest wait for an exclusive connection (default 1 s).
    #[serde(with = "duration")]
    pub checkout_timeout: Duration,
    /// How often idle connections are checked with PING (default 5 s).
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            shared_connections: 1,
            max_size: 8,
            max_size_limit: 64,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(5),
        }
    }
}

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host:port[/db]`, or `rediss://` for TLS. With `cluster`,
    /// the first seed node.
    pub url: RedisUrl,
    /// Run on a Redis Cluster: `url` and `seeds` are nodes to learn the topology from;
    /// operations go to the master of their entity's slot (default false).
    pub cluster: bool,
    /// More cluster nodes to learn the topology from when `url`'s does not answer
    /// (`redis://host:port`; their credentials are `url`'s).
    pub seeds: Vec<RedisUrl>,
    /// PEM file of the CA to trust for `rediss://` instead of the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Longest wait to open a connection (default 1 s).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest wait for a reply (default 1 s).
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// Build even when a server's `maxmemory-policy` is not `noeviction` (default false:
    /// `build()` fails with `Error::UnsafeEviction`). Under memory pressure such a policy
    /// evicts keys the guarantees rest on: `volatile-*` the leases (a second holder while the
    /// first still writes) and remembered message ids (`apply_once` applies a redelivery
    /// again); `allkeys-*` also state (lost updates) and fence counters (an old fencing token
    /// is accepted again). With this on, the executor logs a warning naming the server and
    /// what breaks, and `PoolStats::evicting_servers` counts such servers; the health check
    /// reads the policies again on every round. Acceptable only where Redis is a cache that
    /// never reaches `maxmemory`.
    pub allow_eviction: bool,
    /// Pool settings.
    pub pool: PoolConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: RedisUrl::new("redis://127.0.0.1:6379"),
            cluster: false,
            seeds: Vec::new(),
            tls_ca_file: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            allow_eviction: false,
            pool: PoolConfig::default(),
        }
    }
}

impl RedisConfig {
    /// The defaults, with `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: RedisUrl::new(url),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.url.validate("redis.url")?;
        for (i, seed) in self.seeds.iter().enumerate() {
            seed.validate(&format!("redis.seeds[{i}]"))?;
        }
        if !self.seeds.is_empty() && !self.cluster {
            return Err(ConfigError::new(
                "redis.seeds",
                self.seeds.len(),
                "seed nodes are for a cluster: set redis.cluster = true",
            ));
        }
        if self.cluster && self.url.is_tls() {
            return Err(ConfigError::new(
                "redis.cluster",
                true,
                "a cluster over TLS (rediss://) is not supported yet: use redis:// nodes",
            ));
        }
        positive("redis.connect_timeout", self.connect_timeout)?;
        positive("redis.response_timeout", self.response_timeout)?;
        let p = &self.pool;
        at_least("redis.pool.shared_connections", p.shared_connections, 1, 64)?;
        at_least("redis.pool.max_size", p.max_size, 1, 1024)?;
        at_least("redis.pool.max_size_limit", p.max_size_limit, 1, 1024)?;
        if p.max_size > p.max_size_limit {
            return Err(ConfigError::new(
                "redis.pool.max_size",
                p.max_size,
                format!("must not exceed redis.pool.max_size_limit ({})", p.max_size_limit),
            ));
        }
        if p.min_idle > p.max_size {
            return Err(ConfigError::new(
                "redis.pool.min_idle",
                p.min_idle,
                format!("must not exceed redis.pool.max_size ({})", p.max_size),
            ));
        }
        positive("redis.pool.checkout_timeout", p.checkout_timeout)?;
        positive("redis.pool.health_check_interval", p.health_check_interval)?;
        Ok(())
    }
}

/// How state values are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StateConfig {
    /// Largest encoded value accepted, in bytes (default 512 KiB).
    pub max_value_size: usize,
    /// Compress values larger than this many bytes (default: off). Needs the `compression`
    /// feature; compressed values always decode, whatever this setting.
    pub compress_above: Option<usize>,
    /// Attempts `update` makes before giving up on conflicts (default 32).
    pub update_max_attempts: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_value_size: 512 * 1024,
            compress_above: None,
            update_max_attempts: 32,
        }
    }
}

impl StateConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Redis bulk strings stop at 512 MiB.
        if self.max_value_size == 0 || self.max_value_size > 512 * 1024 * 1024 {
            return Err(ConfigError::new(
                "state.max_value_size",
                self.max_value_size,
                "must be from 1 byte to 512 MiB",
            ));
        }
        if let Some(0) = self.compress_above {
            return Err(ConfigError::new("state.compress_above", 0, "must be at least 1 byte"));
        }
        at_least("state.update_max_attempts", self.update_max_attempts, 1, 100_000)
    }
}

/// What a full queue does with one more operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverloadPolicy {
    /// Wait for room up to `wait_deadline`, then fail with `Overloaded` (the default).
    #[default]
    Wait,
    /// Fail at once with `Overloaded`.
    Reject,
    /// Make room by dropping the oldest queued operation; its caller gets `Dropped`.
    DropOldest,
}

/// Batching of operations into pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most operations in one pipeline (default 128).
    pub max_batch: usize,
    /// How long a busy connection may wait for a fuller batch (default 0: never; a lone
    /// caller never waits whatever this is).
    #[serde(with = "duration")]
    pub linger: Duration,
    /// Most operations queued per connection (default 10,000).
    pub queue_capacity: usize,
    /// Pipelines in flight per connection (default 2: with more, batches get smaller and the
    /// writes more, for no more throughput; measured with `cargo xtask bench`).
    pub pipelines_in_flight: usize,
    /// What a full queue does.
    pub overload: OverloadPolicy,
    /// With `overload = "wait"`: the longest wait for room (default 1 s).
    #[serde(with = "duration")]
    pub wait_deadline: Duration,
    /// Most calls of one pipeline sent as one bundle, one `EVALSHA` of the `many` script
    /// (default 64): it applies them one after another, each atomic and answered on its own,
    /// and costs the server less than an `EVALSHA` each. Not used on a cluster (a slot in
    /// migration refuses bundles whose keys are split). 1 sends every call as its own
    /// `EVALSHA`. Also read under its former name, `calls_per_run`.
    #[serde(alias = "calls_per_run")]
    pub calls_per_bundle: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 128,
            linger: Duration::ZERO,
            queue_capacity: 10_000,
            pipelines_in_flight: 2,
            overload: OverloadPolicy::Wait,
            wait_deadline: Duration::from_secs(1),
            calls_per_bundle: 64,
        }
    }
}

impl BatchConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range = |field: &str, value: usize, min: usize, max: usize| {
            if value < min || value > max {
                return Err(ConfigError::new(field, value, format!("must be from {min} to {max}")));
            }
            Ok(())
        };
        in_range("batch.max_batch", self.max_batch, 1, 10_000)?;
        in_range("batch.queue_capacity", self.queue_capacity, 1, 10_000_000)?;
        in_range("batch.pipelines_in_flight", self.pipelines_in_flight, 1, 1_000)?;
        in_range("batch.calls_per_bundle", self.calls_per_bundle, 1, 1_000)?;
        if self.linger > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "batch.linger",
                duration::format(self.linger),
                "must be at most 1 s",
            ));
        }
        positive("batch.wait_deadline", self.wait_deadline)
    }
}

/// Exactly-once message handling (`apply_once`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// Most message ids remembered per entity (default 128); older ones are forgotten first.
    pub keep: u32,
    /// Longest a message id is remembered (default 24 h).
    #[serde(with = "duration")]
    pub keep_for: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            keep: 128,
            keep_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// Ownership leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// Share of the ttl subtracted from a lease's validity for clock drift (default 0.01).
    pub drift_factor: f64,
    /// Fixed time subtracted from a lease's validity (default 2 ms).
    #[serde(with = "duration")]
    pub drift_min: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            drift_factor: 0.01,
            drift_min: Duration::from_millis(2),
        }
    }
}

/// Presence of active entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PresenceConfig {
    /// Shards (sorted sets, each under its own hash tag) entities spread over (default 16).
    /// Changing it moves entities to other shards: change it only with presence empty.
    pub shards: u32,
    /// An entity is active while its last heartbeat is this recent (default 30 s).
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            shards: 16,
            window: Duration::from_secs(30),
        }
    }
}

/// Retries of operations whose outcome is unknown (timeouts, broken connections).
/// Only operations that are safe to repeat are retried: reads, `apply_once` (same message
/// id), fenced writes, lease renewals and presence calls. Plain writes, lease acquires and
/// releases are never re-sent: their callers get the unknown outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 3; 1 turns retries off).
    pub attempts: u32,
    /// Pause before the first retry, doubled for each next one (default 20 ms).
    #[serde(with = "duration")]
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(20),
        }
    }
}

impl RetryConfig {
    /// The longest a call and its retries can take with `response_timeout` per attempt: every
    /// attempt's timeout plus the doubling pauses between them. A message id must be
    /// remembered at least this long, or a retry of a write that did apply would apply again.
    pub fn span(&self, response_timeout: Duration) -> Duration {
        let mut span = Duration::ZERO;
        let mut pause = self.backoff;
        for attempt in 0..self.attempts {
            span = span.saturating_add(response_timeout);
            if attempt + 1 < self.attempts {
                span = span.saturating_add(pause);
                pause = pause.saturating_mul(2);
            }
        }
        span
    }
}

/// How telemetry leaves the process: OTLP over gRPC or over HTTP with protobuf bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// OpenTelemetry metrics and traces exported over OTLP (the `otel` feature of
/// `stateful-redis`).
///
/// Every setting left unset (`None`, or no headers) falls back to the standard variables:
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (and their `_METRICS_`/`_TRACES_` forms),
/// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_TRACES_SAMPLER`/`_ARG`. A setting given here wins over its variable, except headers:
/// the exporter adds those of `OTEL_EXPORTER_OTLP_[<SIGNAL>_]HEADERS` to the ones set here, and
/// a header named in both is sent with the variable's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// Export at all (default false). [`TelemetryConfig::enabled_by_env`] says whether
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or a per-signal endpoint) is set.
    pub enabled: bool,
    /// The transport (default: from the variables, else HTTP/protobuf).
    pub protocol: Option<OtlpProtocol>,
    /// gRPC: the collector URL (`http://host:4317`). HTTP: the base URL
    /// (`http://host:4318`), to which `/v1/metrics` and `/v1/traces` are appended.
    pub endpoint: Option<String>,
    /// The longest one export may take (default: from the variables, else 10 s).
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Headers (gRPC metadata) sent with every export, such as an API key. Their values
    /// never show in `Debug`, logs or serialization.
    pub headers: BTreeMap<String, Secret>,
    /// How often metrics are exported (default: from the variables, else 60 s).
    #[serde(with = "opt_duration")]
    pub metrics_interval: Option<Duration>,
    /// Export spans (default true when `enabled`).
    pub traces: bool,
    /// The share of pipelines traced, 0 to 1 (default: `OTEL_TRACES_SAMPLER` when set, else
    /// 0.01: tracing every operation costs far more than the operation's metrics).
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported resource (default: `OTEL_SERVICE_NAME`, else the SDK's).
    pub service_name: Option<String>,
    /// The longest `shutdown()` waits for the last export (default 5 s).
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            protocol: None,
            endpoint: None,
            timeout: None,
            headers: BTreeMap::new(),
            metrics_interval: None,
            traces: true,
            sample_ratio: None,
            service_name: None,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl TelemetryConfig {
    /// Whether the environment names an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn enabled_by_env() -> bool {
        [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint {
            http_url("telemetry.endpoint", endpoint, false)?;
        }
        if let Some(t) = self.timeout {
            positive("telemetry.timeout", t)?;
        }
        if let Some(i) = self.metrics_interval {
            positive("telemetry.metrics_interval", i)?;
        }
        positive("telemetry.shutdown_timeout", self.shutdown_timeout)?;
        if let Some(r) = self.sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(ConfigError::new("telemetry.sample_ratio", r, "must be from 0 to 1"));
        }
        for name in self.headers.keys() {
            header_name("telemetry.headers", name)?;
        }
        if let Some(name) = &self.service_name
            && name.trim().is_empty()
        {
            return Err(ConfigError::new("telemetry.service_name", name, "must not be empty"));
        }
        Ok(())
    }
}

/// `serde(with = "opt_duration")`: an optional duration, written like [`duration`].
mod opt_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&duration::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// How an alert rule turns its metric into the value it compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// The metric as the snapshot gives it (default).
    #[default]
    Value,
    /// For cumulative counters: the increase since the previous evaluation, divided by the
    /// seconds between the two. The first evaluation only records the starting point.
    Rate,
}

/// How an alert rule compares its value with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// `>` (default).
    #[default]
    #[serde(rename = ">")]
    Greater,
    /// `>=`.
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `<`.
    #[serde(rename = "<")]
    Less,
    /// `<=`.
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Comparison {
    /// Whether `value` meets the condition against `threshold` (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }

    /// Whether the condition is on high values (`>` and `>=`).
    pub fn is_upper(self) -> bool {
        matches!(self, Comparison::Greater | Comparison::GreaterOrEqual)
    }

    /// The operator, as written in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
        }
    }
}

/// How urgent an alert is; also its `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs a look soon (default).
    #[default]
    Warning,
    /// Needs a look now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert rule: a metric of the monitor's snapshot, compared with a threshold at every
/// evaluation; it fires once the condition has held for `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertRule {
    /// The alert's name (`alertname`): letters, digits, `_`, `:`, `.` and `-`; unique.
    pub name: String,
    /// The metric, one of the names `MetricsSnapshot::metric` knows (`ALERT_METRICS` of the
    /// metrics crate; checked by the alert crate).
    pub metric: String,
    /// `value` (default) or `rate`, for cumulative counters.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// `">"` (default), `">="`, `"<"` or `"<="`.
    #[serde(default)]
    pub comparison: Comparison,
    /// The threshold. A threshold set on the same metric with `set_alert_threshold` wins.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (default 0: at once).
    #[serde(rename = "for", default, with = "duration")]
    pub for_duration: Duration,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// Labels added to this alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One line saying what is wrong (may be empty).
    #[serde(default)]
    pub summary: String,
}

impl AlertRule {
    /// A rule that fires at once when `metric` is above `threshold`, with severity `warning`;
    /// change the other fields as needed.
    pub fn new(name: impl Into<String>, metric: impl Into<String>, threshold: f64) -> Self {
        Self {
            name: name.into(),
            metric: metric.into(),
            aggregation: Aggregation::Value,
            comparison: Comparison::Greater,
            threshold,
            for_duration: Duration::ZERO,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            summary: String::new(),
        }
    }

    fn built_in(
        name: &str,
        metric: &str,
        aggregation: Aggregation,
        threshold: f64,
        for_secs: u64,
        severity: Severity,
        summary: &str,
    ) -> Self {
        Self {
            aggregation,
            for_duration: Duration::from_secs(for_secs),
            severity,
            summary: summary.to_owned(),
            ..Self::new(name, metric, threshold)
        }
    }

    /// Checks the rule; `field` is its path, such as `alerts.rules[2]`. The metric name is
    /// not checked here (core does not know the metrics).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'));
        if !valid_name {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("{:?}", self.name),
                "must be 1 or more letters, digits, '_', ':', '.' or '-'",
            ));
        }
        if !self.threshold.is_finite() {
            return Err(ConfigError::new(
                format!("{field}.threshold"),
                self.threshold,
                "must be a finite number",
            ));
        }
        label_names(&format!("{field}.labels"), &self.labels)
    }
}

/// Alerts posted as JSON to a URL of your own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `http://…` (URLs often carry a token: it never shows in `Debug`, logs or errors).
    pub url: Secret,
    /// The longest one attempt may take (default 5 s).
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt, 0 to 10 (default 3), with backoff from 100 ms
    /// doubling up to 5 s.
    #[serde(default = "default_notify_retries")]
    pub retries: u32,
    /// Headers sent with every post, such as `Authorization`; their values never show.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

impl WebhookConfig {
    /// Posts to `url`, with the default timeout and retries.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            timeout: default_notify_timeout(),
            retries: default_notify_retries(),
            headers: BTreeMap::new(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        http_url("alerts.webhook.url", self.url.expose(), true)?;
        positive("alerts.webhook.timeout", self.timeout)?;
        retries("alerts.webhook.retries", self.retries)?;
        for (name, value) in &self.headers {
            header_name("alerts.webhook.headers", name)?;
            if value.expose().chars().any(|c| c.is_control() && c != '\t') {
                return Err(ConfigError::new(
                    format!("alerts.webhook.headers.{name}"),
                    "<redacted>",
                    "a header value must not hold control characters",
                ));
            }
        }
        Ok(())
    }
}

/// Alerts posted to a Prometheus Alertmanager (API v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertmanagerConfig {
    /// The base URL, such as `http://127.0.0.1:9093`; alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    /// The longest one attempt may take (default 5 s).
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt, 0 to 10 (default 3).
    #[serde(default = "default_notify_retries")]
    pub retries: u32,
    /// How often firing alerts are posted again to keep them alive (default 1 min); each
    /// post says they end after three of these unless posted again.
    #[serde(default = "default_resend_interval", with = "duration")]
    pub resend_interval: Duration,
}

impl AlertmanagerConfig {
    /// Posts to the Alertmanager at `url`, with the default timeout, retries and resend
    /// interval.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: default_notify_timeout(),
            retries: default_notify_retries(),
            resend_interval: default_resend_interval(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let parsed = http_url("alerts.alertmanager.url", &self.url, false)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::new(
                "alerts.alertmanager.url",
                shown_url(&self.url),
                "must be a base URL, without a query or fragment",
            ));
        }
        positive("alerts.alertmanager.timeout", self.timeout)?;
        retries("alerts.alertmanager.retries", self.retries)?;
        positive("alerts.alertmanager.resend_interval", self.resend_interval)
    }
}

fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_notify_retries() -> u32 {
    3
}

fn default_resend_interval() -> Duration {
    Duration::from_secs(60)
}

/// Alerting on the monitor's metrics (the alert crate): rules, and where alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Evaluate the rules at all (default true).
    pub enabled: bool,
    /// How often the rules are evaluated (default 10 s).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Include the built-in rules, [`AlertsConfig::default_rules()`] (default true). A rule in
    /// `rules` with the name of a built-in one replaces it.
    pub default_rules: bool,
    /// Rules of your own.
    pub rules: Vec<AlertRule>,
    /// How far past the threshold a firing alert's value must come back before it resolves,
    /// as a share of the threshold, 0 to below 1 (default 0.1): a `>` alert resolves below
    /// `threshold × (1 − h)`, a `<` alert above `threshold × (1 + h)`; with threshold 0, at
    /// the threshold itself.
    pub hysteresis: f64,
    /// Labels added to every alert, such as `service` or `instance`.
    pub labels: BTreeMap<String, String>,
    /// Log alerts through `tracing` (default true).
    pub log: bool,
    /// Post alerts to a webhook.
    pub webhook: Option<WebhookConfig>,
    /// Post alerts to a Prometheus Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            default_rules: true,
            rules: Vec::new(),
            hysteresis: 0.1,
            labels: BTreeMap::new(),
            log: true,
            webhook: None,
            alertmanager: None,
        }
    }
}

impl AlertsConfig {
    /// The built-in rules, the same as `docs/dashboards/prometheus-rules.yml`.
    pub fn default_rules() -> Vec<AlertRule> {
        use Aggregation::{Rate, Value};
        use Severity::{Critical, Warning};
        vec![
            AlertRule::built_in(
                "StatefulRedisHighFailureRate",
                "operations.failure_rate",
                Value,
                0.05,
                60,
                Critical,
                "More than 5 % of operations fail",
            ),
            AlertRule::built_in(
                "StatefulRedisHighLatencyP99",
                "operations.p99_ms",
                Value,
                100.0,
                120,
                Warning,
                "p99 operation latency above 100 ms",
            ),
            AlertRule::built_in(
                "StatefulRedisPoolWaits",
                "pool.waiters",
                Value,
                0.0,
                60,
                Warning,
                "Callers wait for an exclusive connection",
            ),
            AlertRule::built_in(
                "StatefulRedisQueueSaturated",
                "queue.saturation",
                Value,
                0.8,
                30,
                Warning,
                "The batch queue is over 80 % full",
            ),
            AlertRule::built_in(
                "StatefulRedisDroppedOperations",
                "operations.dropped",
                Rate,
                0.0,
                0,
                Critical,
                "Queued operations are being dropped",
            ),
            AlertRule::built_in(
                "StatefulRedisRejectedOperations",
                "operations.rejected",
                Rate,
                0.0,
                0,
                Warning,
                "Operations are refused by a full queue",
            ),
            AlertRule::built_in(
                "StatefulRedisLeasesLost",
                "leases.lost",
                Rate,
                0.0,
                0,
                Critical,
                "Ownership leases are being lost",
            ),
            AlertRule::built_in(
                "StatefulRedisScriptReloads",
                "scripts.reloads",
                Rate,
                0.1,
                300,
                Warning,
                "Scripts are reloaded after NOSCRIPT",
            ),
        ]
    }

    /// Checks every field; the error names the first bad one. Metric names are checked by
    /// the alert crate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("alerts.interval", self.interval)?;
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err(ConfigError::new(
                "alerts.hysteresis",
                self.hysteresis,
                "must be from 0 to below 1",
            ));
        }
        label_names("alerts.labels", &self.labels)?;
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("alerts.rules[{i}]"))?;
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    format!("alerts.rules[{i}].name"),
                    &rule.name,
                    "another rule has the same name",
                ));
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        if let Some(alertmanager) = &self.alertmanager {
            alertmanager.validate()?;
        }
        Ok(())
    }
}

/// Label names as Prometheus and Alertmanager take them: `[A-Za-z_][A-Za-z0-9_]*`.
fn label_names(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for name in labels.keys() {
        let mut bytes = name.bytes();
        let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ConfigError::new(
                field,
                format!("{name:?}"),
                "a label name is a letter or '_', then letters, digits or '_'",
            ));
        }
    }
    Ok(())
}

fn retries(field: &str, value: u32) -> Result<(), ConfigError> {
    if value > 10 {
        return Err(ConfigError::new(field, value, "must be at most 10"));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host; a `secret` URL never shows in the error.
fn http_url(field: &str, text: &str, secret: bool) -> Result<url::Url, ConfigError> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            let shown = if secret {
                "<redacted>".to_owned()
            } else {
                shown_url(text)
            };
            ConfigError::new(field, shown, "must be an http:// or https:// URL with a host")
        })
}

/// An HTTP header (or gRPC metadata) name: letters, digits, `-`, `_` and `.`.
fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            name,
            "a header name has only letters, digits, '-', '_' and '.'",
        ))
    }
}

/// A URL for an error message, with any password replaced by `***`.
fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Cannot fail for URLs that have a password.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => text.to_owned(),
        Err(_) if text.contains('@') => "<redacted>".to_owned(),
        Err(_) => text.to_owned(),
    }
}

/// Everything the executor is built from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// Redis connection settings.
    pub redis: RedisConfig,
    /// Value storage settings.
    pub state: StateConfig,
    /// Batching into pipelines.
    pub batch: BatchConfig,
    /// Exactly-once message handling.
    pub idempotency: IdempotencyConfig,
    /// Ownership leases.
    pub leases: LeaseConfig,
    /// Presence of active entities.
    pub presence: PresenceConfig,
    /// Retries of operations that are safe to repeat.
    pub retry: RetryConfig,
    /// OpenTelemetry export over OTLP.
    pub telemetry: TelemetryConfig,
    /// Alert rules and notifiers (the alert crate).
    pub alerts: AlertsConfig,
}

impl ExecutorConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.state.validate()?;
        self.batch.validate()?;
        // The write script forgets ids in one call: keep the batch Lua can unpack.
        at_least("idempotency.keep", self.idempotency.keep, 1, 5_000)?;
        positive("idempotency.keep_for", self.idempotency.keep_for)?;
        if self.idempotency.keep_for > Duration::from_secs(10 * 365 * 24 * 3600) {
            return Err(ConfigError::new(
                "idempotency.keep_for",
                duration::format(self.idempotency.keep_for),
                "must be at most 10 years",
            ));
        }
        // A retry of an `apply_once` that did apply must still find its id.
        let span = self.retry.span(self.redis.response_timeout);
        if self.idempotency.keep_for <= span {
            return Err(ConfigError::new(
                "idempotency.keep_for",
                duration::format(self.idempotency.keep_for),
                format!(
                    "must be longer than the span of a call and its retries ({}: retry.attempts × \
                     redis.response_timeout plus the retry.backoff pauses); a retry after a lost reply \
                     would otherwise find its message id forgotten and apply again",
                    duration::format(span)
                ),
            ));
        }
        let drift = self.leases.drift_factor;
        if !(0.0..0.5).contains(&drift) {
            return Err(ConfigError::new(
                "leases.drift_factor",
                drift,
                "must be from 0 to below 0.5",
            ));
        }
        if self.leases.drift_min > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "leases.drift_min",
                duration::format(self.leases.drift_min),
                "must be at most 10 s",
            ));
        }
        at_least("presence.shards", self.presence.shards, 1, 16_384)?;
        positive("presence.window", self.presence.window)?;
        if self.retry.backoff > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "retry.backoff",
                duration::format(self.retry.backoff),
                "must be at most 1 min",
            ));
        }
        at_least("retry.attempts", self.retry.attempts, 1, 100)?;
        self.telemetry.validate()?;
        self.alerts.validate()
    }
}

/// A timeout or interval: above zero and at most a day (sums of them must not overflow).
fn positive(field: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(
            field,
            duration::format(d),
            "must be greater than zero",
        ));
    }
    if d > Duration::from_secs(24 * 3600) && field != "idempotency.keep_for" && field != "presence.window" {
        return Err(ConfigError::new(field, duration::format(d), "must be at most 24 h"));
    }
    Ok(())
}

fn at_least(field: &str, value: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(field, value, format!("must be from {min} to {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let mut config = ExecutorConfig::default();
        config.redis.url = RedisUrl::new("redis://app:hunter2@127.0.0.1:6379/0");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("app:***@127.0.0.1"), "{debug}");
        let json = serde_json::to_string(&config).expect("serialize");
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "\"***\"");
        let bad = RedisUrl::new("http://app:hunter2@host");
        let err = bad.validate("redis.url").expect_err("bad scheme").to_string();
        assert!(
            !err.contains("hunter2") && err.contains("redis.url") && err.contains("http"),
            "{err}"
        );
        let garbage = RedisUrl::new("not a url :hunter2@x");
        let err = garbage.validate("redis.url").expect_err("unparseable").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let at_in_password = RedisUrl::new("no scheme:hun@ter2@host");
        assert!(
            !at_in_password.redacted().contains("ter2"),
            "{}",
            at_in_password.redacted()
        );
        let unix = RedisUrl::new("redis+unix:///run/redis.sock?db=1&user=app&pass=hunter2");
        let shown = format!("{unix:?} {unix}");
        assert!(!shown.contains("hunter2") && shown.contains("db=1"), "{shown}");
    }

    #[test]
    fn validation_names_field_and_value() {
        let mut config = ExecutorConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.redis.pool.max_size = 0;
        let err = config.validate().expect_err("max_size 0");
        assert_eq!(err.field, "redis.pool.max_size");
        assert_eq!(err.value, "0");
        config.redis.pool.max_size = 4;
        config.redis.pool.min_idle = 5;
        assert_eq!(config.validate().expect_err("min_idle").field, "redis.pool.min_idle");
        config.redis.pool.min_idle = 0;
        config.redis.response_timeout = Duration::ZERO;
        assert_eq!(config.validate().expect_err("timeout").field, "redis.response_timeout");
    }

    #[test]
    fn durations_parse_from_text_and_numbers() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration::parse("40"), Ok(Duration::from_millis(40)));
        assert!(duration::parse("fast").is_err());
        assert!(duration::parse("3 parsecs").is_err());
        let config: PoolConfig =
            serde_json::from_str(r#"{"checkout_timeout": "30ms", "health_check_interval": 2000}"#).expect("parse");
        assert_eq!(config.checkout_timeout, Duration::from_millis(30));
        assert_eq!(config.health_check_interval, Duration::from_secs(2));
        let err = serde_json::from_str::<PoolConfig>(r#"{"max_sise": 3}"#).expect_err("unknown field");
        assert!(err.to_string().contains("max_sise"), "{err}");
    }

    #[test]
    fn alerts_parse_with_defaults_and_hide_secrets() {
        let config: AlertsConfig = serde_json::from_str(
            r#"{
                "interval": "5s",
                "labels": {"service": "billing"},
                "rules": [
                    {"name": "SlowCalls", "metric": "operations.p99_ms", "threshold": 50,
                     "for": "2m", "severity": "critical", "comparison": ">="},
                    {"name": "Drops", "metric": "operations.dropped", "aggregation": "rate", "threshold": 0}
                ],
                "webhook": {"url": "http://hooks.test/alert?token=s3cret",
                            "headers": {"Authorization": "Bearer t0ken"}},
                "alertmanager": {"url": "http://127.0.0.1:9093", "resend_interval": "30s"}
            }"#,
        )
        .expect("parse");
        assert_eq!(config.validate(), Ok(()));
        assert!(config.enabled && config.default_rules && config.log);
        assert_eq!(config.interval, Duration::from_secs(5));
        let slow = &config.rules[0];
        assert_eq!(slow.for_duration, Duration::from_secs(120));
        assert_eq!(
            (slow.comparison, slow.severity, slow.aggregation),
            (Comparison::GreaterOrEqual, Severity::Critical, Aggregation::Value)
        );
        let drops = &config.rules[1];
        assert_eq!(
            (drops.comparison, drops.severity, drops.aggregation, drops.for_duration),
            (
                Comparison::Greater,
                Severity::Warning,
                Aggregation::Rate,
                Duration::ZERO
            )
        );
        let webhook = config.webhook.as_ref().expect("webhook");
        assert_eq!((webhook.timeout, webhook.retries), (Duration::from_secs(5), 3));
        let alertmanager = config.alertmanager.as_ref().expect("alertmanager");
        assert_eq!(alertmanager.resend_interval, Duration::from_secs(30));
        let shown = format!("{config:?} {}", serde_json::to_string(&config).expect("serialize"));
        assert!(!shown.contains("s3cret") && !shown.contains("t0ken"), "{shown}");
        let err = serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m", "threshold": 1, "fro": "1s"}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("fro"), "{err}");
        assert!(serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m"}"#).is_err());
        assert!(
            serde_json::from_str::<AlertRule>(r#"{"name": "x", "metric": "m", "threshold": 1, "comparison": "=>"}"#)
                .is_err()
        );
    }

    #[test]
    fn built_in_alert_rules_are_valid() {
        let rules = AlertsConfig::default_rules();
        assert_eq!(rules.len(), 8);
        let config = AlertsConfig {
            rules: rules.clone(),
            ..AlertsConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let drops = rules
            .iter()
            .find(|r| r.name == "StatefulRedisDroppedOperations")
            .expect("built in");
        assert_eq!(
            (drops.aggregation, drops.severity),
            (Aggregation::Rate, Severity::Critical)
        );
        let p99 = rules
            .iter()
            .find(|r| r.name == "StatefulRedisHighLatencyP99")
            .expect("built in");
        assert_eq!((p99.threshold, p99.for_duration), (100.0, Duration::from_secs(120)));
    }

    #[test]
    fn alert_validation_names_the_field() {
        fn field(config: &ExecutorConfig) -> String {
            config.validate().expect_err("invalid").field
        }
        let mut config = ExecutorConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.alerts.rules = vec![
            AlertRule::new("Deep", "queue.depth", 10.0),
            AlertRule::new("Waiting", "pool.waiters", 1.0),
            AlertRule::new("Deep", "queue.depth", f64::NAN),
        ];
        assert_eq!(field(&config), "alerts.rules[2].threshold");
        config.alerts.rules[2].threshold = 5.0;
        assert_eq!(field(&config), "alerts.rules[2].name");
        config.alerts.rules[2].name = "Deep Queue".into();
        assert_eq!(field(&config), "alerts.rules[2].name");
        config.alerts.rules[2].name = "DeepQueue".into();
        config.alerts.rules[1]
            .labels
            .insert("team-name".into(), "storage".into());
        assert_eq!(field(&config), "alerts.rules[1].labels");
        config.alerts.rules[1].labels.clear();
        assert_eq!(config.validate(), Ok(()));

        config.alerts.hysteresis = 1.0;
        assert_eq!(field(&config), "alerts.hysteresis");
        config.alerts.hysteresis = 0.0;
        config.alerts.interval = Duration::ZERO;
        assert_eq!(field(&config), "alerts.interval");
        config.alerts.interval = Duration::from_secs(1);
        config.alerts.labels.insert("0instance".into(), "a".into());
        assert_eq!(field(&config), "alerts.labels");
        config.alerts.labels.clear();

        config.alerts.webhook = Some(WebhookConfig::new("ftp://hooks.test/alert?token=s3cret"));
        let err = config.validate().expect_err("ftp");
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("alerts.webhook.url", "<redacted>")
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let mut webhook = WebhookConfig::new("http://hooks.test/alert?token=s3cret");
        webhook.retries = 11;
        config.alerts.webhook = Some(webhook.clone());
        assert_eq!(field(&config), "alerts.webhook.retries");
        webhook.retries = 0;
        webhook
            .headers
            .insert("X-Token".into(), Secret::new("t0ken\r\nX-Evil: 1"));
        config.alerts.webhook = Some(webhook.clone());
        let err = config.validate().expect_err("header value");
        assert_eq!(err.field, "alerts.webhook.headers.X-Token");
        assert!(!err.to_string().contains("t0ken"), "{err}");
        webhook.headers.insert("X-Token".into(), Secret::new("t0ken"));
        config.alerts.webhook = Some(webhook);
        assert_eq!(config.validate(), Ok(()));

        config.alerts.alertmanager = Some(AlertmanagerConfig::new("127.0.0.1:9093"));
        assert_eq!(field(&config), "alerts.alertmanager.url");
        let mut alertmanager = AlertmanagerConfig::new("http://am:p4ss@127.0.0.1:9093?x=1");
        config.alerts.alertmanager = Some(alertmanager.clone());
        let err = config.validate().expect_err("query");
        assert_eq!(err.field, "alerts.alertmanager.url");
        assert!(!err.to_string().contains("p4ss"), "{err}");
        alertmanager.url = "http://127.0.0.1:9093".into();
        alertmanager.timeout = Duration::ZERO;
        config.alerts.alertmanager = Some(alertmanager.clone());
        assert_eq!(field(&config), "alerts.alertmanager.timeout");
        alertmanager.timeout = Duration::from_secs(1);
        alertmanager.resend_interval = Duration::ZERO;
        config.alerts.alertmanager = Some(alertmanager);
        assert_eq!(field(&config), "alerts.alertmanager.resend_interval");
    }
}
