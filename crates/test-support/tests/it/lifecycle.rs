//! Starting, stopping, restarting and dropping servers.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use stateful_redis_test_support::{RedisServer, redis_server_available};

#[test]
fn a_started_server_answers_ping() {
    assert!(redis_server_available());
    let server = RedisServer::start();
    assert!(server.is_running());
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert_eq!(server.tls_port(), None);
    assert_eq!(server.tls_url(), None);
    assert_eq!(server.ca_cert_pem(), None);
}

#[test]
fn a_server_answers_raw_ping_without_credentials() {
    let server = RedisServer::start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.write_all(b"PING\r\n").expect("send PING");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("read the reply");
    assert_eq!(line, "+PONG\r\n");
}

#[test]
fn the_test_configuration_is_applied() {
    let server = RedisServer::start();
    assert_eq!(server.cli(&["CONFIG", "GET", "bind"]), "bind\n127.0.0.1");
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), "save");
    assert_eq!(server.cli(&["CONFIG", "GET", "appendonly"]), "appendonly\nno");
    assert_eq!(server.cli(&["CONFIG", "GET", "daemonize"]), "daemonize\nno");
    // Tests rely on DEBUG SLEEP.
    assert_eq!(server.cli(&["DEBUG", "SLEEP", "0"]), "OK");
}

#[test]
fn extra_args_reach_redis_server() {
    let server = RedisServer::builder()
        .arg("maxmemory-policy", "allkeys-lru")
        .arg("--hz", "20")
        .start();
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru"
    );
    assert_eq!(server.cli(&["CONFIG", "GET", "hz"]), "hz\n20");
}

#[test]
fn stop_and_restart_keep_the_port_and_lose_the_data() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.cli(&["SET", "key", "value"]), "OK");

    server.stop();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.stop(); // stopping twice is fine

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["EXISTS", "key"]), "0");

    // Restarting a running server restarts it.
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn a_server_that_shut_itself_down_is_not_running_and_can_restart() {
    let mut server = RedisServer::start();
    // SHUTDOWN closes the connection without a reply; redis-cli still exits successfully.
    let _ = server.cli(&["SHUTDOWN", "NOSAVE"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.is_running() {
        assert!(std::time::Instant::now() < deadline, "SHUTDOWN did not stop the server");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.restart();
    assert_eq!(server.cli(&["PING"]), "PONG");
}

#[test]
fn drop_kills_the_server_and_removes_its_directory() {
    let server = RedisServer::start();
    let port = server.port();
    let dir = PathBuf::from(server.cli(&["CONFIG", "GET", "dir"]).lines().nth(1).expect("dir"));
    assert!(dir.join("redis.log").is_file());

    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists());
}

#[test]
fn servers_get_different_ports() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.cli(&["SET", "k", "a"]), "OK");
    assert_eq!(b.cli(&["EXISTS", "k"]), "0");
}

#[test]
fn restart_waits_for_a_port_that_is_briefly_held_elsewhere() {
    let mut server = RedisServer::start();
    let port = server.port();
    server.stop();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(squatter);
    });
    server.restart();
    release.join().expect("the releasing thread");
    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), "PONG");
}
