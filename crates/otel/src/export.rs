//! OTLP exporters (gRPC or HTTP/protobuf, plain or TLS), wrapped to count their failures, and
//! the providers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use stateful_redis_core::{ConfigError, Error, OtlpProtocol, TelemetryConfig};

/// The sampling ratio when neither the config nor `OTEL_TRACES_SAMPLER` sets one.
const DEFAULT_RATIO: f64 = 0.01;

/// At most one warning per signal this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Failed exports, per signal. The OTLP exporters retry on their own first; one failure
/// here is one batch of data the collector did not get.
#[derive(Debug, Default)]
pub struct ExportErrors {
    metrics: AtomicU64,
    traces: AtomicU64,
    last_metrics_log_ms: AtomicU64,
    last_traces_log_ms: AtomicU64,
    /// What TLS said about the last failed HTTP export of each signal (the HTTP exporter
    /// reports every failure as "network error"; our client notes the cause here).
    tls_metrics: Mutex<Option<&'static str>>,
    tls_traces: Mutex<Option<&'static str>>,
}

impl ExportErrors {
    /// Metric exports that failed.
    pub fn metrics(&self) -> u64 {
        self.metrics.load(Ordering::Relaxed)
    }

    /// Span exports that failed.
    pub fn traces(&self) -> u64 {
        self.traces.load(Ordering::Relaxed)
    }

    fn counters(&self, signal: &'static str) -> (&AtomicU64, &AtomicU64) {
        match signal {
            "metrics" => (&self.metrics, &self.last_metrics_log_ms),
            _ => (&self.traces, &self.last_traces_log_ms),
        }
    }

    fn tls_slot(&self, signal: &str) -> &Mutex<Option<&'static str>> {
        match signal {
            "metrics" => &self.tls_metrics,
            _ => &self.tls_traces,
        }
    }

    /// Notes the TLS cause of an HTTP export failure about to be reported.
    fn note_tls(&self, signal: &str, hint: &'static str) {
        *self.tls_slot(signal).lock().unwrap_or_else(PoisonError::into_inner) = Some(hint);
    }

    fn failed(&self, signal: &'static str, error: &dyn std::fmt::Display) {
        let noted = self
            .tls_slot(signal)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (count, last_log) = self.counters(signal);
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let last = last_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && last_log
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let error = error.to_string();
            match noted.or_else(|| tls_hint(&error)) {
                Some(hint) => tracing::warn!(
                    signal,
                    failures = n,
                    error = %error,
                    "OTLP export failed: TLS: {hint} (logged at most once a minute)"
                ),
                None => tracing::warn!(
                    signal,
                    failures = n,
                    error = %error,
                    "OTLP export failed (logged at most once a minute)"
                ),
            }
        }
    }
}

/// Counts the failures of the metric exporter it wraps (runs on the PeriodicReader's thread).
#[derive(Debug)]
struct CountingMetricExporter<E> {
    inner: E,
    errors: Arc<ExportErrors>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            self.errors.failed("metrics", e);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Counts the failures of the span exporter it wraps (runs on the BatchSpanProcessor's thread).
#[derive(Debug)]
struct CountingSpanExporter<E> {
    inner: E,
    errors: Arc<ExportErrors>,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.errors.failed("traces", e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn build_error(signal: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(ConfigError::new(
        "telemetry",
        signal,
        format!("the OTLP {signal} exporter could not be built: {e}"),
    ))
}

/// The HTTP URL of a signal: the configured base with `/v1/<signal>` appended.
fn http_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

fn headers(config: &TelemetryConfig) -> HashMap<String, String> {
    config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect()
}

/// Config headers as gRPC metadata. Names are checked by the config; a value that is not
/// valid metadata is an error naming the header (never its value).
fn metadata(config: &TelemetryConfig) -> Result<tonic::metadata::MetadataMap, Error> {
    let mut md = tonic::metadata::MetadataMap::new();
    for (name, value) in &config.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.expose());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                md.insert(key, value);
            }
            _ => {
                return Err(Error::Config(ConfigError::new(
                    "telemetry.headers",
                    name,
                    "is not valid gRPC metadata (its value must be printable ASCII)",
                )));
            }
        }
    }
    Ok(md)
}

/// The config's settings on a gRPC exporter builder (metrics or spans); unset ones are left
/// to the `OTEL_*` variables.
fn tonic_settings<B: WithExportConfig + WithTonicConfig>(
    mut b: B,
    config: &TelemetryConfig,
    signal: &str,
) -> Result<B, Error> {
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    let ca = ca_file(config, signal);
    // TLS only for https:// (tonic talks plain HTTP/2 to http:// whatever the config), and
    // then always with roots: the exporter's own default for https has none.
    if ca.is_some() || endpoint(config, signal).is_some_and(|e| e.trim_start().starts_with("https://")) {
        let tls = tonic::transport::ClientTlsConfig::new();
        let tls = match ca {
            Some((field, path)) => {
                let pem = read_ca(&field, &path)?;
                tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        b = b.with_tls_config(tls);
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_metadata(metadata(config)?);
    }
    Ok(b)
}

/// The config's settings on an HTTP/protobuf exporter builder; the endpoint is the base URL
/// with `/v1/<signal>` appended. The HTTP client is ours: reqwest over rustls, with the
/// CA file's roots when one is set, else the system's.
fn http_settings<B: WithExportConfig + WithHttpConfig>(
    b: B,
    config: &TelemetryConfig,
    signal: &'static str,
    errors: &Arc<ExportErrors>,
) -> Result<B, Error> {
    let client = HttpClient {
        inner: http_client(config, signal)?,
        errors: Arc::clone(errors),
        signal,
    };
    let mut b = b
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client);
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(http_url(endpoint, signal));
    }
    if let Some(timeout) = config.timeout {
        b = b.with_timeout(timeout);
    }
    if !config.headers.is_empty() {
        b = b.with_headers(headers(config));
    }
    Ok(b)
}

/// The signal's variable `OTEL_EXPORTER_OTLP_<SIGNAL>_<NAME>`, else `OTEL_EXPORTER_OTLP_<NAME>`,
/// with the name of the one that was set.
fn otlp_var(signal: &str, name: &str) -> Option<(String, String)> {
    let read = |var: String| {
        std::env::var(&var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    };
    read(format!("OTEL_EXPORTER_OTLP_{}_{name}", signal.to_ascii_uppercase()))
        .or_else(|| read(format!("OTEL_EXPORTER_OTLP_{name}")))
}

/// The endpoint a signal goes to, when the config or the environment names one.
fn endpoint(config: &TelemetryConfig, signal: &str) -> Option<String> {
    config
        .endpoint
        .clone()
        .or_else(|| otlp_var(signal, "ENDPOINT").map(|(_, v)| v))
}

/// The CA file of a signal, with the name errors give it: `telemetry.ca_file`, else
/// `OTEL_EXPORTER_OTLP_[<SIGNAL>_]CERTIFICATE`.
fn ca_file(config: &TelemetryConfig, signal: &str) -> Option<(String, PathBuf)> {
    match &config.ca_file {
        Some(path) => Some(("telemetry.ca_file".to_owned(), path.clone())),
        None => otlp_var(signal, "CERTIFICATE").map(|(var, v)| (var, PathBuf::from(v))),
    }
}

/// The PEM text of a CA file that holds at least one certificate a root store takes. Missing,
/// unreadable, not PEM, or no such certificate: a config error naming `field` and the path.
fn read_ca(field: &str, path: &Path) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::Config(ConfigError::new(field, path.display(), reason));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not a PEM file of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("holds a certificate that is not a valid CA certificate: {e}")))?;
    }
    Ok(pem)
}

/// The blocking reqwest client of the HTTP exporter: rustls with the process's crypto
/// provider (ring, installed unless the application installed one), the CA file's roots
/// only when one is set, else the system's. Built on a thread of its own, as the exporter
/// builds its default one (a blocking client must not be built on a Tokio thread).
fn http_client(config: &TelemetryConfig, signal: &str) -> Result<reqwest::blocking::Client, Error> {
    let roots = match ca_file(config, signal) {
        Some((field, path)) => Some(read_ca(&field, &path)?),
        None => None,
    };
    let timeout = config
        .timeout
        .or_else(|| otlp_var(signal, "TIMEOUT").and_then(|(_, v)| v.trim().parse().ok().map(Duration::from_millis)));
    // The OTLP exporters' default: `OTEL_EXPORTER_OTLP_TIMEOUT` unset means 10 s.
    let timeout = timeout.unwrap_or(Duration::from_secs(10));
    let built = std::thread::Builder::new()
        .name("otlp-http-client".into())
        .spawn(move || {
            let mut builder = reqwest::blocking::Client::builder()
                .timeout(timeout)
                .tls_backend_rustls();
            if let Some(pem) = roots {
                builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
            }
            builder.build()
        })
        .map_err(|e| build_error(signal, e))?
        .join()
        .map_err(|_| build_error(signal, "the thread building the HTTP client panicked"))?;
    built.map_err(|e| build_error(signal, e))
}

/// The HTTP exporter's client: reqwest's blocking one, noting the TLS cause of a failure in
/// [`ExportErrors`] (the exporter itself reports every failure as "network error").
#[derive(Debug)]
struct HttpClient {
    inner: reqwest::blocking::Client,
    errors: Arc<ExportErrors>,
    signal: &'static str,
}

impl opentelemetry_http::HttpClient for HttpClient {
    // What `#[async_trait]` writes, by hand.
    fn send_bytes<'a, 'b>(
        &'a self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn Future<
                    Output = Result<
                        opentelemetry_http::Response<opentelemetry_http::Bytes>,
                        opentelemetry_http::HttpError,
                    >,
                > + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let result = opentelemetry_http::HttpClient::send_bytes(&self.inner, request).await;
            if let Err(e) = &result
                && let Some(tls) = rustls_error(e.as_ref())
            {
                self.errors.note_tls(self.signal, rustls_hint(tls));
            }
            result
        })
    }
}

/// The rustls error behind an error, if any. hyper wraps it in `io::Error`s, whose `source`
/// skips what they wrap: those are opened with `get_ref`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

const NOT_TRUSTED: &str = "the collector's certificate is not trusted: set telemetry.ca_file to the PEM file of its CA";
const WRONG_NAME: &str = "the collector's certificate does not name the endpoint's host";
const EXPIRED: &str = "the collector's certificate has expired";
const REFUSED: &str = "the collector's certificate was refused";
const HANDSHAKE: &str = "the TLS handshake failed (is the collector serving TLS on this port?)";

fn rustls_hint(error: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match error {
        // No trusted issuer, or an issuer of that name whose key did not sign it.
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => NOT_TRUSTED,
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => WRONG_NAME,
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => EXPIRED,
        rustls::Error::InvalidCertificate(_) => REFUSED,
        _ => HANDSHAKE,
    }
}

/// What to tell about an export error that is a TLS failure, or `None` for any other.
/// The exporters give their errors as text: this reads the words rustls and tonic use.
fn tls_hint(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    if e.contains("unknownissuer") || e.contains("unknown issuer") || e.contains("badsignature") {
        Some(NOT_TRUSTED)
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        Some(WRONG_NAME)
    } else if e.contains("expired") && e.contains("cert") {
        Some(EXPIRED)
    } else if e.contains("certificate") {
        Some(REFUSED)
    } else if e.contains("handshake") || e.contains("tls") || e.contains("corrupt message") {
        Some(HANDSHAKE)
    } else {
        None
    }
}

pub(crate) fn meter_provider(
    config: &TelemetryConfig,
    errors: Arc<ExportErrors>,
    resource: Resource,
) -> Result<SdkMeterProvider, Error> {
    let mut provider = SdkMeterProvider::builder().with_resource(resource);
    if config.exports_otlp() {
        let builder = opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative);
        let exporter = if grpc(config, "METRICS") {
            tonic_settings(builder.with_tonic(), config, "metrics")?.build()
        } else {
            http_settings(builder.with_http(), config, "metrics", &errors)?.build()
        }
        .map_err(|e| build_error("metrics", e))?;
        let mut reader = PeriodicReader::builder(CountingMetricExporter {
            inner: exporter,
            errors,
        });
        // Unset: OTEL_METRIC_EXPORT_INTERVAL, else 60 s.
        if let Some(interval) = config.metrics_interval {
            reader = reader.with_interval(interval);
        }
        provider = provider.with_reader(reader.build());
    }
    if let Some(addr) = config.prometheus_listen {
        #[cfg(feature = "prometheus")]
        {
            let exporter = crate::PrometheusExporter::new();
            exporter.serve(addr, "telemetry.prometheus_listen")?;
            provider = provider.with_reader(exporter);
        }
        #[cfg(not(feature = "prometheus"))]
        return Err(Error::Config(ConfigError::new(
            "telemetry.prometheus_listen",
            addr,
            "this build has no Prometheus endpoint: enable the `prometheus` feature of stateful-redis",
        )));
    }
    Ok(provider.build())
}

pub(crate) fn tracer_provider(
    config: &TelemetryConfig,
    errors: Arc<ExportErrors>,
    resource: Resource,
) -> Result<(SdkTracerProvider, Option<LiveRatio>), Error> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = if grpc(config, "TRACES") {
        tonic_settings(builder.with_tonic(), config, "traces")?.build()
    } else {
        http_settings(builder.with_http(), config, "traces", &errors)?.build()
    }
    .map_err(|e| build_error("traces", e))?;
    let processor = BatchSpanProcessor::builder(CountingSpanExporter {
        inner: exporter,
        errors,
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(8192)
            .with_scheduled_delay(Duration::from_secs(1))
            .build(),
    )
    .build();
    let mut provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor);
    // Unset and no OTEL_TRACES_SAMPLER: a low ratio, for the cost (ADR 005). With the
    // variable set and no ratio here, the SDK reads the variable.
    let ratio = match config.sample_ratio {
        Some(r) => Some(r),
        None if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() => Some(DEFAULT_RATIO),
        None => None,
    };
    let live = ratio.map(|ratio| LiveRatio(Arc::new(AtomicU64::new(ratio.to_bits()))));
    if let Some(live) = &live {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(live.clone())));
    }
    Ok((provider.build(), live))
}

/// `TraceIdRatioBased` with a ratio that can change while running
/// ([`Telemetry::set_sample_ratio`](crate::Telemetry::set_sample_ratio)).
#[derive(Debug, Clone)]
pub(crate) struct LiveRatio(Arc<AtomicU64>);

impl LiveRatio {
    pub(crate) fn set(&self, ratio: f64) {
        self.0.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }
}

impl opentelemetry_sdk::trace::ShouldSample for LiveRatio {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let ratio = f64::from_bits(self.0.load(Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio).should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Whether a signal goes over gRPC: the config's protocol, else
/// `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP/protobuf.
fn grpc(config: &TelemetryConfig, signal: &str) -> bool {
    match config.protocol {
        Some(OtlpProtocol::Grpc) => return true,
        Some(OtlpProtocol::HttpProtobuf) => return false,
        _ => {}
    }
    let read = |name: String| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    read(format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"))
        .or_else(|| read("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned()))
        .is_some_and(|v| v.trim() == "grpc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_failures_get_a_tls_hint() {
        let untrusted = "Unavailable, message: \"tcp connect error\", source: invalid peer certificate: UnknownIssuer";
        assert_eq!(tls_hint(untrusted), Some(NOT_TRUSTED));
        assert_eq!(
            tls_hint("received corrupt message of type InvalidContentType"),
            Some(HANDSHAKE)
        );
        assert_eq!(tls_hint("HTTP export failed: network error"), None);
        assert_eq!(tls_hint("tcp connect error: Connection refused (os error 111)"), None);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(rustls_hint(&expired), EXPIRED);
        let wrapped = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(rustls_error(&wrapped).map(rustls_hint), Some(NOT_TRUSTED));
    }
}
