//! TLS servers and their generated certificates.

use stateful_redis_test_support::RedisServer;

use crate::{redis_cli, redis_cli_ok};

fn tls_ping(server: &RedisServer) -> String {
    let port = server.tls_port().expect("a TLS port").to_string();
    let ca = server.ca_cert_path().expect("a CA file");
    let ca = ca.to_str().expect("a UTF-8 path");
    redis_cli_ok(&["--tls", "--cacert", ca, "-p", &port, "PING"])
}

#[test]
fn a_tls_server_answers_over_tls_with_a_certificate_from_its_ca() {
    let server = RedisServer::builder().tls().start();
    let tls_port = server.tls_port().expect("a TLS port");
    assert_ne!(tls_port, server.port());
    assert_eq!(server.tls_url(), Some(format!("rediss://127.0.0.1:{tls_port}")));

    let pem = server.ca_cert_pem().expect("a CA certificate");
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let on_disk = std::fs::read(server.ca_cert_path().expect("a CA file")).expect("read the CA");
    assert_eq!(on_disk, pem);

    assert_eq!(tls_ping(&server), "PONG");
    // The plain port keeps working.
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn the_server_certificate_is_not_trusted_without_the_ca() {
    let server = RedisServer::builder().tls().start();
    let port = server.tls_port().expect("a TLS port").to_string();
    let output = redis_cli(&["--tls", "-p", &port, "PING"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("PONG"), "{stdout}");
}

#[test]
fn a_tls_server_restarts_on_the_same_ports() {
    let mut server = RedisServer::builder().tls().start();
    let (port, tls_port) = (server.port(), server.tls_port());
    server.stop();
    server.restart();
    assert_eq!((server.port(), server.tls_port()), (port, tls_port));
    assert_eq!(tls_ping(&server), "PONG");
}
