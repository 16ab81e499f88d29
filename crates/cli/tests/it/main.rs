//! The `stateful-redis` binary, run as users run it.

mod check;
mod errors;
mod fleet;

use std::process::Command;

use stateful_redis_test_support::{RedisCluster, RedisServer};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stateful-redis"))
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON line on stdout: {stdout}");
    serde_json::from_str(&stdout).expect("stdout is JSON")
}

#[test]
fn load_json_against_a_given_server() {
    let server = RedisServer::start();
    for workload in ["put", "cas", "update"] {
        let output = bin()
            .args(["load", "--redis", &server.url(), "--ops", "3000", "--concurrency", "8"])
            .args([
                "--entities",
                "50",
                "--value-size",
                "64",
                "--workload",
                workload,
                "--json",
            ])
            .output()
            .expect("run");
        let summary = json_of(&output);
        for key in [
            "ops",
            "ok",
            "conflicts",
            "errors",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "redis",
            "suggestions",
            "alerts_firing",
            "topology",
        ] {
            assert!(summary.get(key).is_some(), "{workload}: missing {key} in {summary}");
        }
        assert_eq!(summary["ops"], 3000, "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
        assert_eq!(
            summary["ok"].as_u64().expect("ok") + summary["conflicts"].as_u64().expect("conflicts"),
            3000
        );
        if workload != "cas" {
            assert_eq!(summary["ok"], 3000, "{summary}");
        }
        assert_eq!(summary["redis"], server.url());
    }
    // The put workload wrote each entity's versioned state through the script.
    let keys: u64 = server.cli(&["DBSIZE"]).parse().expect("DBSIZE");
    assert_eq!(keys, 50);
    let version: u64 = server
        .record("load:{e000000000000}:s", "version")
        .parse()
        .expect("a record");
    assert!(version >= 1);
}

#[test]
fn load_without_redis_starts_its_own_server() {
    let output = bin().args(["load", "--ops", "500", "--json"]).output().expect("run");
    let summary = json_of(&output);
    assert_eq!(summary["errors"], 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("started a throw-away redis-server"), "{stderr}");
}

#[test]
fn load_without_redis_server_installed_says_how_to_install() {
    let output = bin()
        .args(["load", "--ops", "10"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
}

#[test]
fn bad_arguments_and_unreachable_servers_are_clear_errors() {
    let output = bin().args(["load", "--concurrency", "0"]).output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--concurrency"));

    let mut server = RedisServer::start();
    let url = format!("redis://user:sup3r-secret@127.0.0.1:{}", server.port());
    server.stop();
    let output = bin()
        .args(["load", "--redis", &url, "--ops", "10"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to redis://user:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("sup3r-secret"), "{stderr}");
}

#[test]
fn config_layers_file_then_environment_and_hides_secrets() {
    let dir = std::env::temp_dir().join(format!("sr-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("stateful-redis.toml");
    std::fs::write(
        &file,
        "[redis]\nurl = \"redis://app:file-secret@127.0.0.1:6400\"\n[batch]\nmax_batch = 64\nlinger = \"2ms\"\n",
    )
    .expect("write");
    let output = bin()
        .args(["config", "--config"])
        .arg(&file)
        .env("STATEFUL_REDIS_BATCH__MAX_BATCH", "32")
        .env("STATEFUL_REDIS_TELEMETRY__HEADERS__X-API-KEY", "env-secret")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: toml::Table = toml::from_str(&stdout).expect("TOML on stdout");
    // The environment wins over the file, the file over the defaults.
    assert_eq!(shown["batch"]["max_batch"].as_integer(), Some(32), "{stdout}");
    assert_eq!(shown["batch"]["linger"].as_str(), Some("2ms"), "{stdout}");
    assert_eq!(shown["batch"]["queue_capacity"].as_integer(), Some(10_000), "{stdout}");
    assert!(stdout.contains("127.0.0.1:6400"), "{stdout}");
    for secret in ["file-secret", "env-secret", "url-secret"] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
    // A URL on the command line wins, and its password does not show either.
    let output = bin()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--redis", "redis://:url-secret@127.0.0.1:6500"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("127.0.0.1:6500") && !stdout.contains("url-secret"),
        "{stdout}"
    );
    // A bad value names the field and the value.
    let output = bin()
        .args(["config", "--config"])
        .arg(&file)
        .env("STATEFUL_REDIS_BATCH__MAX_BATCH", "0")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("batch.max_batch") && stderr.contains('0'), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_takes_its_server_and_batch_settings_from_a_config_file() {
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("sr-cli-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("load.toml");
    std::fs::write(
        &file,
        format!("[redis]\nurl = \"{}\"\n[batch]\nmax_batch = 4\n", server.url()),
    )
    .expect("write");
    let output = bin()
        .args(["load", "--config"])
        .arg(&file)
        .args(["--ops", "2000", "--concurrency", "16", "--json"])
        .output()
        .expect("run");
    let summary = json_of(&output);
    assert_eq!(summary["ops"], 2000, "{summary}");
    assert_eq!(
        summary["redis"],
        server.url(),
        "the file's server, no throw-away one: {summary}"
    );
    assert!(summary["max_batch"].as_u64().expect("max_batch") <= 4, "{summary}");
    assert!(summary["suggestions"].is_array(), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_runs_on_a_cluster_from_seed_urls_and_says_so() {
    let cluster = RedisCluster::start_with(3, 0);
    let urls = cluster.urls();
    let output = bin()
        .args(["load", "--cluster", "--redis", &format!("{},{}", urls[0], urls[1])])
        .args(["--ops", "3000", "--concurrency", "16", "--entities", "300", "--json"])
        .output()
        .expect("run");
    let summary = json_of(&output);
    assert_eq!(summary["topology"], "cluster", "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["ops"], 3000, "{summary}");
    let nodes = summary["nodes"].as_object().expect("per-node counts");
    assert_eq!(nodes.len(), 3, "{summary}");
    assert!(
        nodes.values().all(|n| n.as_u64().unwrap_or(0) > 0),
        "every master served: {summary}"
    );
    // Standalone runs say so too.
    let server = RedisServer::start();
    let output = bin()
        .args(["load", "--redis", &server.url(), "--ops", "100", "--json"])
        .output()
        .expect("run");
    assert_eq!(json_of(&output)["topology"], "standalone");
    // --cluster without seeds is a clear error.
    let output = bin().args(["load", "--cluster", "--ops", "10"]).output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--redis"));
}

/// GET `/metrics` from 127.0.0.1:`port`: the body of a 200, or `None`.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

#[test]
fn load_serves_its_metrics_for_prometheus_while_it_runs() {
    let server = RedisServer::start();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = bin()
        .args([
            "load",
            "--redis",
            &server.url(),
            "--duration",
            "120",
            "--concurrency",
            "4",
        ])
        .args(["--metrics-listen", &listen, "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        if let Some(text) = scrape(port).filter(|t| t.contains("stateful_redis_operations_total{")) {
            break text;
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!("no metrics at {listen}: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.lines()
            .any(|l| l.starts_with("db_client_operation_duration_seconds_bucket{")
                && l.contains("stateful_redis_operation=\"put\"")),
        "{text}"
    );
    assert!(
        text.contains("# TYPE stateful_redis_operations_total counter"),
        "{text}"
    );

    // A port in use: a clear error naming the setting, before any load.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = bin()
        .args([
            "load",
            "--redis",
            &server.url(),
            "--ops",
            "10",
            "--metrics-listen",
            &addr,
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("telemetry.prometheus_listen"), "{stderr}");
}
