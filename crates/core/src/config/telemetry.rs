//! The `[telemetry]` section: OpenTelemetry export over OTLP.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{header_name, http_url, positive};
use super::{ConfigError, Secret, duration};

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

/// OpenTelemetry metrics and traces (the `otel` feature of `stateful-redis`). With `enabled`, the
/// executor records into an SDK of its own exporting over OTLP (feature `otel-setup`; every
/// other field here configures it), else into the global providers, and then the export
/// settings are refused. Providers handed to the builder take precedence over both.
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
    #[serde(with = "duration::optional")]
    pub timeout: Option<Duration>,
    /// Headers (gRPC metadata) sent with every export, such as an API key. Their values
    /// never show in `Debug`, logs or serialization.
    pub headers: BTreeMap<String, Secret>,
    /// How often metrics are exported (default: from the variables, else 60 s).
    #[serde(with = "duration::optional")]
    pub metrics_interval: Option<Duration>,
    /// Export spans (default true when `enabled`).
    pub traces: bool,
    /// The share of root traces sampled, 0 to 1: pipelines and calls made outside any sampled
    /// caller span; spans under a caller's span follow the caller's decision (`ParentBased`).
    /// Default: `OTEL_TRACES_SAMPLER` when set, else 0.01 (tracing every operation costs far
    /// more than the operation's metrics).
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
