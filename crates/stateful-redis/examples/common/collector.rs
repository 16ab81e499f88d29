//! A stand-in OpenTelemetry collector for the examples: an OTLP/HTTP (protobuf) receiver on a
//! free loopback port that keeps what it got. Point the exporters at a real collector
//! (`http://collector:4318`) instead.

#![allow(dead_code, reason = "each example reads the part it shows")]

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// What the collector received.
#[derive(Default)]
pub(crate) struct Received {
    /// Each metric's name, and the `service.name` of the resource it came under.
    pub(crate) metrics: Vec<(String, String)>,
    /// Each span, and the `service.name` of the resource it came under.
    pub(crate) spans: Vec<(Span, String)>,
}

impl Received {
    /// The first span named `name`.
    pub(crate) fn span(&self, name: &str) -> Option<&Span> {
        self.spans.iter().map(|(s, _)| s).find(|s| s.name == name)
    }
}

/// Starts the collector: its base URL, and what it got.
pub(crate) async fn start() -> std::io::Result<(String, Arc<Mutex<Received>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let received = Arc::new(Mutex::new(Received::default()));
    let store = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = Arc::clone(&store);
            let service = hyper::service::service_fn(move |req| receive(Arc::clone(&store), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    Ok((url, received))
}

fn service(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == "service.name")
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Takes one export request: `/v1/metrics` or `/v1/traces`.
async fn receive(
    store: Arc<Mutex<Received>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<bytes::Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let mut store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let decoded = match path.as_str() {
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body)
            .map(|r| {
                for rm in r.resource_metrics {
                    let service = service(rm.resource.as_ref());
                    let metrics = rm.scope_metrics.into_iter().flat_map(|s| s.metrics);
                    store.metrics.extend(metrics.map(|m| (m.name, service.clone())));
                }
            })
            .is_ok(),
        "/v1/traces" => ExportTraceServiceRequest::decode(body)
            .map(|r| {
                for rs in r.resource_spans {
                    let service = service(rs.resource.as_ref());
                    let spans = rs.scope_spans.into_iter().flat_map(|s| s.spans);
                    store.spans.extend(spans.map(|s| (s, service.clone())));
                }
            })
            .is_ok(),
        _ => false,
    };
    let mut reply = hyper::Response::new(Full::default());
    if !decoded {
        *reply.status_mut() = hyper::StatusCode::BAD_REQUEST;
    }
    Ok(reply)
}
