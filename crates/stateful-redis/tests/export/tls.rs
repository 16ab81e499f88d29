//! OTLP export over TLS to real receivers started here (a tonic gRPC server and a hyper
//! HTTP/protobuf server, both over rustls), whose certificate a throwaway CA signed: trusted
//! through `telemetry.ca_file`, refused without it, with a log line that says TLS.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use prost::Message as _;
use stateful_redis::{Error, ExecutorConfig, OtlpProtocol, StatefulExecutor};
use stateful_redis_test_support::{RedisServer, TestCa};

/// The metrics of every export received.
pub(crate) type Received = Arc<Mutex<Vec<Metric>>>;

fn metrics(request: &ExportMetricsServiceRequest) -> Vec<Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| s.metrics.clone())
        .collect()
}

fn names(received: &Received) -> Vec<String> {
    received
        .lock()
        .expect("received")
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

#[derive(Clone)]
struct Grpc(Received);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().expect("received").extend(metrics(request.get_ref()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver over TLS with `ca`'s server certificate.
async fn grpc_tls_receiver(ca: &TestCa) -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let identity = tonic::transport::Identity::from_pem(ca.cert_pem(), ca.key_pem());
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .expect("server TLS")
        .add_service(MetricsServiceServer::new(Grpc(Arc::clone(&received))))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    (addr, received)
}

/// An OTLP/HTTP (protobuf) receiver over TLS with `ca`'s server certificate.
pub(crate) async fn http_tls_receiver(ca: &TestCa) -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"http/1.1"]));
    let r = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, r) = (acceptor.clone(), Arc::clone(&r));
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| handle(Arc::clone(&r), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

async fn handle(
    received: Received,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::{BodyExt as _, Full};
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let status = match (path.as_str(), body) {
        ("/v1/metrics", Ok(body)) => {
            let request = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
            received.lock().expect("received").extend(metrics(&request));
            200
        }
        _ => 404,
    };
    let reply = ExportMetricsServiceResponse::default().encode_to_vec();
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(reply.into()))
        .expect("response"))
}

fn config(server: &RedisServer, protocol: OtlpProtocol, addr: SocketAddr) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.redis.url = stateful_redis::RedisUrl::new(server.url());
    let t = &mut config.telemetry;
    t.enabled = true;
    t.traces = false;
    t.protocol = Some(protocol);
    t.endpoint = Some(format!("https://{addr}"));
    // One export, at shutdown.
    t.metrics_interval = Some(Duration::from_secs(3600));
    t.timeout = Some(Duration::from_secs(5));
    config
}

async fn receiver(ca: &TestCa, protocol: OtlpProtocol) -> (SocketAddr, Received) {
    match protocol {
        OtlpProtocol::Grpc => grpc_tls_receiver(ca).await,
        _ => http_tls_receiver(ca).await,
    }
}

async fn some_puts(exec: &StatefulExecutor) {
    let handle = exec.state::<u64>("tls").expect("namespace");
    for i in 0..20u64 {
        handle.put(&format!("e{i}"), &i).await.expect("put");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collectors_get_the_metrics_when_the_ca_file_is_set() {
    let server = RedisServer::start();
    let ca = TestCa::new();
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let (addr, received) = receiver(&ca, protocol).await;
        let mut config = config(&server, protocol, addr);
        config.telemetry.ca_file = Some(ca.ca_path().to_owned());
        let exec = StatefulExecutor::builder()
            .config(config)
            .build()
            .await
            .expect("executor");
        some_puts(&exec).await;
        exec.shutdown().await;
        assert_eq!(exec.telemetry_export_errors(), Some((0, 0)), "{protocol:?}");
        let names = names(&received);
        assert!(
            names.iter().any(|n| n == "db.client.operation.duration"),
            "{protocol:?}: {names:?}"
        );
    }
}

/// What the process logged, from a global subscriber (the exporters log on their own threads).
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_an_untrusted_collector_fails_as_tls() {
    let log = captured_log();
    let server = RedisServer::start();
    let ca = TestCa::new();
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let (addr, received) = receiver(&ca, protocol).await;
        let config = config(&server, protocol, addr);
        let exec = StatefulExecutor::builder()
            .config(config)
            .build()
            .await
            .expect("an untrusted collector is no reason to refuse to start");
        some_puts(&exec).await;
        exec.shutdown().await;
        let (metrics, _) = exec.telemetry_export_errors().expect("telemetry on");
        assert!(metrics >= 1, "{protocol:?}: the export was not refused");
        assert!(received.lock().expect("received").is_empty(), "{protocol:?}");
    }
    let text = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("OTLP export failed")).collect();
    assert!(failures.len() >= 2, "{text}");
    for line in failures {
        assert!(
            line.contains("TLS: the collector's certificate is not trusted: set telemetry.ca_file"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_bad_ca_file_is_a_config_error_naming_the_field_and_the_path() {
    let server = RedisServer::start();
    let ca = TestCa::new();
    let dir = ca.ca_path().parent().expect("dir").to_owned();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::File::create(&garbage)
        .and_then(|mut f| f.write_all(b"not a certificate\n"))
        .expect("write");
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        for (path, reason) in [(&missing, "cannot read"), (&garbage, "holds no PEM certificate")] {
            let mut config = config(&server, protocol, "127.0.0.1:9".parse().expect("addr"));
            config.telemetry.ca_file = Some(path.clone());
            let err = StatefulExecutor::builder()
                .config(config)
                .build()
                .await
                .expect_err("bad CA file");
            let Error::Config(e) = &err else {
                panic!("not a config error: {err}")
            };
            assert_eq!(
                (e.field.as_str(), e.value.as_str()),
                ("telemetry.ca_file", path.display().to_string().as_str()),
                "{err}"
            );
            assert!(e.reason.contains(reason), "{err}");
        }
    }
}
