//! ACL users and the admin password.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use stateful_redis_test_support::RedisServer;

use crate::{redis_cli, redis_cli_ok};

#[test]
fn acl_users_are_created_with_their_password_and_rules() {
    let server = RedisServer::builder()
        .acl_user("app", "app-secret", "~app:* +@all")
        .acl_user("reader", "reader-secret", "~* +@read")
        .start();

    let list = server.cli(&["ACL", "LIST"]);
    assert!(list.contains("user app on"), "{list}");
    assert!(list.contains("~app:*"), "{list}");
    assert!(list.contains("user reader on"), "{list}");
    assert!(!list.contains("app-secret"), "{list}");
    // The default user is untouched: cli() works without a password.
    assert_eq!(server.cli(&["ACL", "WHOAMI"]), "default");

    let port = server.port().to_string();
    let as_app = [
        "-p",
        &port,
        "--user",
        "app",
        "--pass",
        "app-secret",
        "--no-auth-warning",
    ];
    assert_eq!(redis_cli_ok(&[&as_app[..], &["ACL", "WHOAMI"]].concat()), "app");
    assert_eq!(redis_cli_ok(&[&as_app[..], &["SET", "app:1", "x"]].concat()), "OK");
    let denied = redis_cli_ok(&[&as_app[..], &["SET", "other", "x"]].concat());
    assert!(denied.starts_with("NOPERM"), "{denied}");

    let wrong = redis_cli(&[
        "-p",
        &port,
        "--user",
        "app",
        "--pass",
        "nope",
        "--no-auth-warning",
        "PING",
    ]);
    let wrong = String::from_utf8_lossy(&wrong.stdout) + String::from_utf8_lossy(&wrong.stderr);
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
}

#[test]
fn the_admin_password_protects_the_default_user_and_cli_uses_it() {
    let server = RedisServer::builder()
        .require_admin_password("admin secret")
        .acl_user("app", "app-secret", "~* +@all")
        .start();
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["ACL", "WHOAMI"]), "default");
    assert!(server.cli(&["ACL", "LIST"]).contains("user app on"));

    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.write_all(b"PING\r\n").expect("send PING");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("read the reply");
    assert!(line.starts_with("-NOAUTH"), "{line}");
}

#[test]
fn users_and_password_survive_a_restart() {
    let mut server = RedisServer::builder()
        .require_admin_password("admin-secret")
        .acl_user("app", "app-secret", "~* +@all")
        .start();
    server.stop();
    server.restart();
    assert_eq!(server.cli(&["ACL", "WHOAMI"]), "default");
    let port = server.port().to_string();
    assert_eq!(
        redis_cli_ok(&[
            "-p",
            &port,
            "--user",
            "app",
            "--pass",
            "app-secret",
            "--no-auth-warning",
            "ACL",
            "WHOAMI"
        ]),
        "app"
    );
}
