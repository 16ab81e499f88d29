//! The `[telemetry]` section: OpenTelemetry export over OTLP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{ca_file, header_name, http_url, positive};
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
    /// (`http://host:4318`), to which `/v1/metrics` and `/v1/traces` are appended. An
    /// `https://` URL is exported over TLS (rustls), trusting the system's roots, or only
    /// [`ca_file`](Self::ca_file) when set.
    pub endpoint: Option<String>,
    /// A PEM file of the CA certificate(s) that signed the collector's certificate, for a
    /// collector whose certificate the system does not trust (a private CA, a self-signed
    /// one). When set, these are the only roots trusted for OTLP export (default: the
    /// system's roots; `OTEL_EXPORTER_OTLP_[<SIGNAL>_]CERTIFICATE` when unset). A file that
    /// is missing, unreadable or holds no certificate is an error naming this field and the
    /// path when telemetry starts. A collector whose certificate is not trusted is logged as
    /// a TLS error, not a network one.
    pub ca_file: Option<PathBuf>,
    /// Serve the metrics for Prometheus to scrape, at `http://<this address>/metrics` (the
    /// `prometheus` feature of `stateful-redis`), such as `0.0.0.0:9464`. The text
    /// exposition format, with the names and labels the OTLP→Prometheus translation gives
    /// (`db_client_operation_duration_seconds_bucket`, `stateful_redis_operations_total`),
    /// so the shipped dashboard and rules work on either path. With this set and no OTLP
    /// endpoint named (`endpoint` here, or an `OTEL_EXPORTER_OTLP_[<SIGNAL>_]ENDPOINT`),
    /// nothing is exported over OTLP: metrics are scraped, and no spans are made. Needs
    /// `enabled`; a port that cannot be bound is an error when telemetry starts.
    pub prometheus_listen: Option<SocketAddr>,
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
            ca_file: None,
            prometheus_listen: None,
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
    /// Whether metrics and spans go out over OTLP: always, unless only a Prometheus endpoint
    /// is asked for ([`prometheus_listen`](Self::prometheus_listen) set, and neither
    /// `endpoint` nor the environment names an OTLP endpoint).
    pub fn exports_otlp(&self) -> bool {
        self.prometheus_listen.is_none() || self.endpoint.is_some() || Self::enabled_by_env()
    }

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
        if let Some(path) = &self.ca_file {
            ca_file("telemetry.ca_file", path)?;
        }
        if let Some(addr) = self.prometheus_listen
            && !self.enabled
        {
            return Err(ConfigError::new(
                "telemetry.prometheus_listen",
                addr,
                "needs telemetry.enabled = true",
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_prometheus_settings_parse_and_are_checked() {
        let config: TelemetryConfig = serde_json::from_str(
            r#"{"enabled": true, "endpoint": "https://otel.internal:4318",
                "ca_file": "/etc/ssl/private-ca.pem", "prometheus_listen": "0.0.0.0:9464"}"#,
        )
        .expect("parse");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(
            config.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ssl/private-ca.pem"))
        );
        assert_eq!(config.prometheus_listen.map(|a| a.port()), Some(9464));
        // An endpoint named: OTLP as well as the scrape endpoint.
        assert!(config.exports_otlp());
        let mut only_prometheus = config.clone();
        only_prometheus.endpoint = None;
        assert_eq!(only_prometheus.exports_otlp(), TelemetryConfig::enabled_by_env());
        assert!(TelemetryConfig::default().exports_otlp());

        let mut bad = config.clone();
        bad.ca_file = Some(PathBuf::new());
        assert_eq!(bad.validate().expect_err("empty path").field, "telemetry.ca_file");
        let mut bad = config;
        bad.enabled = false;
        let err = bad.validate().expect_err("listen without enabled");
        assert_eq!(
            (err.field.as_str(), err.value.as_str()),
            ("telemetry.prometheus_listen", "0.0.0.0:9464")
        );
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"prometheus_listen": "localhost"}"#).is_err());
    }
}
