//! The `stateful-redis` binary, run as users run it.

use std::process::Command;

use stateful_redis_test_support::RedisServer;

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
    assert_eq!(server.cli(&["HEXISTS", "load:{e0}:s", "v"]), "1");
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
