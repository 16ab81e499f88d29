//! The Prometheus scrape endpoint (feature `prometheus`): a metric reader whose collections
//! are written in the text exposition format under the names the OTLP→Prometheus translation
//! gives, and the HTTP server that serves them at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use stateful_redis_core::{ConfigError, Error};

/// A metric reader for Prometheus: add it to an `SdkMeterProvider` (`with_reader`), then
/// [`serve`](Self::serve) it, or put [`render`](Self::render)'s text on a route of your own.
///
/// Names and labels are those of the OTLP→Prometheus translation (the OpenTelemetry
/// Collector's `prometheus` exporter, Prometheus's own OTLP receiver) with suffixes on:
/// dots become underscores, the unit's word is appended unless the name holds it already
/// (`s` → `_seconds`, `By` → `_bytes`; annotations such as `{operation}` add nothing),
/// monotonic counters end in `_total`, histograms give `_bucket{le}`, `_sum` and `_count`, and
/// non-monotonic sums are gauges. `job` and `instance` are the scrape's own. No `target_info`
/// and no scope labels are written. Values are cumulative from the start of the process.
///
/// Cloning gives another handle on the same reader. Shutting the provider down stops the
/// server.
#[derive(Clone)]
pub struct PrometheusExporter {
    inner: Arc<Inner>,
}

struct Inner {
    reader: ManualReader,
    /// The server's task, stopped at shutdown.
    server: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serving = self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("PrometheusExporter")
            .field("serving", &serving)
            .finish_non_exhaustive()
    }
}

impl Default for PrometheusExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusExporter {
    /// A reader with cumulative temporality, not yet serving.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                reader: ManualReader::builder()
                    .with_temporality(Temporality::Cumulative)
                    .build(),
                server: Mutex::new(None),
            }),
        }
    }

    /// Collects now (the observable instruments' callbacks run on this thread) and returns
    /// the text exposition format (version 0.0.4). An error once the provider is shut down,
    /// or while the reader is in no provider.
    pub fn render(&self) -> Result<String, OTelSdkError> {
        let mut metrics = ResourceMetrics::default();
        self.inner.reader.collect(&mut metrics)?;
        Ok(exposition(&metrics))
    }

    /// Serves [`render`](Self::render) at `http://<addr>/metrics` on the current Tokio
    /// runtime until the provider is shut down; returns the address bound (port 0 picks a
    /// free one). `field` names the setting in errors (`telemetry.prometheus_listen`): an
    /// address that cannot be bound, or no runtime, is a config error naming it.
    pub fn serve(&self, addr: SocketAddr, field: &str) -> Result<SocketAddr, Error> {
        let bad = |reason: String| Error::Config(ConfigError::new(field, addr, reason));
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| bad("the Prometheus endpoint needs a Tokio runtime: start telemetry inside one".into()))?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| bad(format!("cannot listen there: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| bad(format!("cannot listen there: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| bad(format!("cannot listen there: {e}")))?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| bad(format!("cannot listen there: {e}")))?
        };
        let exporter = self.clone();
        let task = runtime.spawn(accept(listener, exporter));
        let old = self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task.abort_handle());
        if let Some(old) = old {
            old.abort();
        }
        tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
        Ok(bound)
    }
}

impl MetricReader for PrometheusExporter {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.inner.reader.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.inner.reader.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.reader.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if let Some(server) = self.inner.server.lock().unwrap_or_else(PoisonError::into_inner).take() {
            server.abort();
        }
        self.inner.reader.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.inner.reader.temporality(kind)
    }
}

/// Accepts scrapes, one task per connection.
async fn accept(listener: tokio::net::TcpListener, exporter: PrometheusExporter) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::debug!(error = %e, "Prometheus endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| respond(exporter.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

async fn respond(
    exporter: PrometheusExporter,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let reply = |status: u16, content_type: &str, body: String| {
        let mut response = hyper::Response::new(Body::new(body.into()));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.uri().path() != "/metrics" {
        return reply(404, "text/plain", "metrics are at /metrics\n".into());
    }
    if !matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD) {
        return reply(405, "text/plain", "GET /metrics\n".into());
    }
    // The callbacks of the observable instruments run here: off the runtime's threads.
    match tokio::task::spawn_blocking(move || exporter.render()).await {
        Ok(Ok(text)) => reply(200, "text/plain; version=0.0.4; charset=utf-8", text),
        Ok(Err(e)) => reply(503, "text/plain", format!("no metrics: {e}\n")),
        Err(_) => reply(500, "text/plain", "the collection failed\n".into()),
    }
}

/// One metric family of the exposition: its help, type and sample lines.
#[derive(Default)]
struct Family {
    help: String,
    kind: &'static str,
    samples: String,
}

/// The text exposition of one collection, families in name order.
fn exposition(metrics: &ResourceMetrics) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => add(&mut families, metric, data),
                AggregatedMetrics::U64(data) => add(&mut families, metric, data),
                AggregatedMetrics::I64(data) => add(&mut families, metric, data),
            }
        }
    }
    let mut out = String::new();
    for (name, family) in &families {
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        out.push_str(&family.samples);
    }
    out
}

/// A number as the exposition writes it.
trait Number: Copy {
    fn text(self) -> String;
}

impl Number for f64 {
    fn text(self) -> String {
        float(self)
    }
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        x.to_string()
    }
}

fn add<T: Number>(families: &mut BTreeMap<String, Family>, metric: &Metric, data: &MetricData<T>) {
    let unit = metric.unit();
    match data {
        MetricData::Gauge(gauge) => {
            let name = prometheus_name(metric.name(), unit, Kind::Gauge);
            let family = family(families, &name, metric, "gauge");
            for point in gauge.data_points() {
                sample(
                    &mut family.samples,
                    &name,
                    &labels(point.attributes()),
                    None,
                    &point.value().text(),
                );
            }
        }
        MetricData::Sum(sum) => {
            let (kind, type_name) = if sum.is_monotonic() {
                (Kind::Counter, "counter")
            } else {
                (Kind::Gauge, "gauge")
            };
            let name = prometheus_name(metric.name(), unit, kind);
            let family = family(families, &name, metric, type_name);
            for point in sum.data_points() {
                sample(
                    &mut family.samples,
                    &name,
                    &labels(point.attributes()),
                    None,
                    &point.value().text(),
                );
            }
        }
        MetricData::Histogram(histogram) => {
            let name = prometheus_name(metric.name(), unit, Kind::Histogram);
            let family = family(families, &name, metric, "histogram");
            let bucket = format!("{name}_bucket");
            for point in histogram.data_points() {
                let labels = labels(point.attributes());
                let mut cumulative = 0u64;
                let mut counts = point.bucket_counts();
                for bound in point.bounds() {
                    cumulative += counts.next().unwrap_or(0);
                    sample(
                        &mut family.samples,
                        &bucket,
                        &labels,
                        Some(&float(bound)),
                        &cumulative.to_string(),
                    );
                }
                let count = point.count();
                sample(&mut family.samples, &bucket, &labels, Some("+Inf"), &count.to_string());
                sample(
                    &mut family.samples,
                    &format!("{name}_sum"),
                    &labels,
                    None,
                    &point.sum().text(),
                );
                sample(
                    &mut family.samples,
                    &format!("{name}_count"),
                    &labels,
                    None,
                    &count.to_string(),
                );
            }
        }
        // Not made by this library's instruments; an app's own would need a native
        // histogram, which the text format cannot carry.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: &str,
    metric: &Metric,
    kind: &'static str,
) -> &'a mut Family {
    let family = families.entry(name.to_owned()).or_default();
    if family.kind.is_empty() {
        family.kind = kind;
        family.help = metric.description().to_owned();
    }
    family
}

/// Label names as the translation makes them, values as given; two attributes that end up
/// under one name have their values joined with `;`, as the translation does.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for kv in attributes {
        let value = match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        };
        labels
            .entry(label_name(kv.key.as_str()))
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    labels
}

fn sample(out: &mut String, name: &str, labels: &BTreeMap<String, String>, le: Option<&str>, value: &str) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (key, value) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le.map(|le| ("le", le)))
        {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

/// What a metric becomes, for its name's suffixes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An attribute key as a label name: characters other than letters, digits and `_` become
/// `_`; a leading digit gets `key_` before it.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "key_");
    }
    name
}

/// The word of a unit (UCUM, as OpenTelemetry writes them).
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The word of a unit after `/` (`By/s` → `bytes_per_second`).
fn per_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The Prometheus name of an OpenTelemetry metric, as the translation with suffixes makes
/// it: `db.client.operation.duration` in `s` → `db_client_operation_duration_seconds`,
/// counter `stateful_redis.leases.lost` → `stateful_redis_leases_lost_total`.
fn prometheus_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut parts: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    // Annotations (`{operation}`) carry no unit.
    let unit: String = {
        let mut depth = 0u32;
        unit.chars()
            .filter(|&c| match c {
                '{' => {
                    depth += 1;
                    false
                }
                '}' => {
                    depth = depth.saturating_sub(1);
                    false
                }
                _ => depth == 0,
            })
            .collect()
    };
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit.trim(), ""),
    };
    let push = |word: &str, parts: &mut Vec<String>| {
        if !word.is_empty() && !parts.iter().any(|p| p == word) {
            parts.push(word.to_owned());
        }
    };
    if let Some(word) = unit_word(main) {
        push(word, &mut parts);
    }
    if let Some(word) = per_word(per) {
        let joined = format!("per_{word}");
        if !parts.join("_").ends_with(&joined) {
            parts.push("per".to_owned());
            parts.push(word.to_owned());
        }
    }
    match kind {
        Kind::Counter => {
            parts.retain(|p| p != "total");
            parts.push("total".to_owned());
        }
        Kind::Gauge if main == "1" => push("ratio", &mut parts),
        _ => {}
    }
    let mut out = parts.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otlp_translation() {
        let cases = [
            (
                "db.client.operation.duration",
                "s",
                Kind::Histogram,
                "db_client_operation_duration_seconds",
            ),
            (
                "stateful_redis.operations",
                "{operation}",
                Kind::Counter,
                "stateful_redis_operations_total",
            ),
            (
                "stateful_redis.bytes",
                "By",
                Kind::Counter,
                "stateful_redis_bytes_total",
            ),
            ("process.cpu.time", "s", Kind::Counter, "process_cpu_time_seconds_total"),
            ("process.memory.usage", "By", Kind::Gauge, "process_memory_usage_bytes"),
            (
                "db.client.connection.count",
                "{connection}",
                Kind::Gauge,
                "db_client_connection_count",
            ),
            ("queue.wait.seconds", "s", Kind::Histogram, "queue_wait_seconds"),
            ("requests.total", "", Kind::Counter, "requests_total"),
            ("cache.hit", "1", Kind::Gauge, "cache_hit_ratio"),
            ("net.io", "By/s", Kind::Gauge, "net_io_bytes_per_second"),
            ("3xx.responses", "", Kind::Gauge, "_3xx_responses"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(prometheus_name(name, unit, kind), want, "{name} {unit}");
        }
        assert_eq!(label_name("db.client.connection.state"), "db_client_connection_state");
        assert_eq!(label_name("9lives"), "key_9lives");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_exposition_has_types_buckets_and_totals() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::SdkMeterProvider;

        let exporter = PrometheusExporter::new();
        let provider = SdkMeterProvider::builder().with_reader(exporter.clone()).build();
        let meter = provider.meter("test");
        let histogram = meter
            .f64_histogram("db.client.operation.duration")
            .with_unit("s")
            .with_description("Duration of operations.")
            .with_boundaries(vec![0.001, 0.01])
            .build();
        histogram.record(0.005, &[KeyValue::new("db.operation.name", "put")]);
        histogram.record(0.5, &[KeyValue::new("db.operation.name", "put")]);
        let counter = meter
            .u64_counter("stateful_redis.leases.lost")
            .with_unit("{lease}")
            .build();
        counter.add(3, &[KeyValue::new("note", "say \"hi\"")]);
        let text = exporter.render().expect("render");
        for line in [
            "# HELP db_client_operation_duration_seconds Duration of operations.",
            "# TYPE db_client_operation_duration_seconds histogram",
            "db_client_operation_duration_seconds_bucket{db_operation_name=\"put\",le=\"0.001\"} 0",
            "db_client_operation_duration_seconds_bucket{db_operation_name=\"put\",le=\"0.01\"} 1",
            "db_client_operation_duration_seconds_bucket{db_operation_name=\"put\",le=\"+Inf\"} 2",
            "db_client_operation_duration_seconds_sum{db_operation_name=\"put\"} 0.505",
            "db_client_operation_duration_seconds_count{db_operation_name=\"put\"} 2",
            "# TYPE stateful_redis_leases_lost_total counter",
            "stateful_redis_leases_lost_total{note=\"say \\\"hi\\\"\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        provider.shutdown().expect("shutdown");
        assert!(exporter.render().is_err(), "no collection after shutdown");
    }
}
