//! Integration tests: real `redis-server` processes, checked through `redis-cli` and raw TCP.

mod acl;
mod cluster;
mod lifecycle;
mod tls;

use std::process::{Command, Output, Stdio};

/// Runs `redis-cli -h 127.0.0.1 ARGS...` without the admin credentials `RedisServer::cli` adds.
fn redis_cli(args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

/// Trimmed stdout of a successful `redis_cli` run.
fn redis_cli_ok(args: &[&str]) -> String {
    let output = redis_cli(args);
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
