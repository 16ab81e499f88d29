//! How the CLI fails: exit statuses, errors as JSON, messages that say what to change.

use std::process::Output;

use stateful_redis_test_support::RedisServer;

use crate::bin;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `{"error": …}` line under `--json`: the last line on stderr.
fn json_error(output: &Output) -> serde_json::Value {
    let stderr = stderr(output);
    let last = stderr.lines().last().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(line["error"]["message"].is_string(), "{line}");
    line["error"].clone()
}

/// A URL of a port nobody listens on (a server started and stopped).
fn closed_url() -> String {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    url
}

/// A scratch directory for configuration files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sr-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn a_value_size_over_the_limit_is_refused_before_the_run_naming_both() {
    // No server is needed: the refusal comes first.
    let output = bin()
        .args([
            "load",
            "--redis",
            &closed_url(),
            "--ops",
            "10",
            "--value-size",
            "600000",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("--value-size 600000") && text.contains("state.max_value_size 524288"),
        "{text}"
    );
    assert!(stdout(&output).is_empty(), "no run, no summary");

    // The limit of the configuration file counts.
    let dir = scratch("value-size");
    let file = dir.join("small.toml");
    std::fs::write(&file, "[state]\nmax_value_size = 1000\n").expect("write");
    let output = bin()
        .args(["load", "--ops", "10", "--value-size", "2000", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("--value-size 2000") && text.contains("state.max_value_size 1000"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_under_json_are_one_json_line_on_stderr_with_a_kind() {
    let url = closed_url();
    let output = bin()
        .args(["load", "--redis", &url, "--ops", "10", "--json"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    let error = json_error(&output);
    assert_eq!(error["kind"], "connect", "{error}");
    assert!(error["message"].as_str().unwrap_or("").contains(&url), "{error}");

    // Bad flags too, when --json is among them.
    let output = bin()
        .args(["load", "--json", "--concurrency", "0"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let error = json_error(&output);
    assert_eq!(error["kind"], "usage", "{error}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("--concurrency"),
        "{error}"
    );

    // `check` prints its report on stdout and the error on stderr.
    let output = bin().args(["check", "--redis", &url, "--json"]).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("the report");
    assert_eq!(report["verdict"], "at_risk", "{report}");
    assert_eq!(json_error(&output)["kind"], "connect");

    // Without --json, plain text.
    let output = bin()
        .args(["load", "--redis", &url, "--ops", "10"])
        .output()
        .expect("run");
    let text = stderr(&output);
    assert!(
        text.contains("error: connecting to") && !text.contains("{\"error\""),
        "{text}"
    );
}

#[test]
fn exit_status_is_2_when_it_cannot_run_and_1_when_it_ran_and_failed() {
    let help = stdout(&bin().arg("--help").output().expect("run"));
    assert!(
        help.contains("Exit status: 0") && help.contains("2 when it could not run"),
        "{help}"
    );
    assert!(help.contains("one line {\"error\""), "{help}");

    // Misconfigured.
    let output = bin()
        .args(["load", "--ops", "10"])
        .env("STATEFUL_REDIS_BATCH__MAX_BATCH", "0")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    // Operations failed: a full server (maxmemory of 1 byte, noeviction) refuses every write.
    let server = RedisServer::builder().arg("maxmemory", "1").start();
    let output = bin()
        .args(["load", "--redis", &server.url(), "--ops", "20", "--json"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("the summary");
    assert_eq!(summary["errors"], 20, "{summary}");
    assert_eq!(json_error(&output)["kind"], "failed");

    // A guarantee at risk stays 1.
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let output = bin().args(["check", "--redis", &server.url()]).output().expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
}

#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    // An evicting server, allowed: the executor warns through tracing.
    let server = RedisServer::builder().arg("maxmemory-policy", "allkeys-lru").start();
    let output = bin()
        .args(["load", "--redis", &server.url(), "--ops", "10"])
        .env("STATEFUL_REDIS_REDIS__ALLOW_EVICTION", "true")
        .env_remove("NO_COLOR")
        .output()
        .expect("run");
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("WARN") && text.contains("allow_eviction"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape in a pipe: {text:?}");
}

#[test]
fn workloads_show_as_the_flag_takes_them() {
    let server = RedisServer::start();
    let output = bin()
        .args(["load", "--redis", &server.url(), "--ops", "10", "--workload", "cas"])
        .output()
        .expect("run");
    let text = stdout(&output);
    assert!(text.contains("workload cas,"), "{text}");
    let help = stdout(&bin().args(["load", "--help"]).output().expect("run"));
    assert!(help.contains("[default: put]") && help.contains("- put:"), "{help}");
    assert!(!help.contains("Put"), "{help}");
}

#[test]
fn config_help_points_at_what_exists() {
    let help = stdout(&bin().args(["config", "--help"]).output().expect("run"));
    assert!(!help.contains("docs/configuration"), "{help}");
    assert!(help.contains("README's Configuration section"), "{help}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    assert!(readme.contains("\n## Configuration\n"), "the section the help names");
}

#[test]
fn a_tls_url_to_a_plaintext_server_says_tls() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let output = bin()
        .args(["load", "--redis", &url, "--ops", "10"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("TLS handshake failed: is the server plaintext? use redis://"),
        "{text}"
    );
}

#[test]
fn errors_from_a_toml_file_name_the_file() {
    let dir = scratch("toml-errors");
    for (name, text, field) in [
        ("type.toml", "[batch]\nmax_batch = \"lots\"\n", "batch.max_batch"),
        ("range.toml", "[batch]\nmax_batch = 0\n", "batch.max_batch"),
        ("typo.toml", "[batch]\nmax_bach = 3\n", "batch.max_bach"),
        ("syntax.toml", "[batch\nmax_batch = 3\n", "line 1"),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write");
        for command in ["config", "load"] {
            let output = bin().args([command, "--config"]).arg(&file).output().expect("run");
            assert_eq!(output.status.code(), Some(2), "{name}");
            let text = stderr(&output);
            assert!(
                text.contains(&file.display().to_string()) && text.contains(field),
                "{command} {name}: {text}"
            );
        }
    }
    // A bad value from the environment names no file.
    let file = dir.join("fine.toml");
    std::fs::write(&file, "[batch]\nlinger = \"1ms\"\n").expect("write");
    let output = bin()
        .args(["config", "--config"])
        .arg(&file)
        .env("STATEFUL_REDIS_BATCH__MAX_BATCH", "0")
        .output()
        .expect("run");
    let text = stderr(&output);
    assert!(
        text.contains("batch.max_batch") && !text.contains("fine.toml"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
