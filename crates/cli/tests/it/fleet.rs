//! `stateful-redis fleet`: the verification passes on a single server and on a cluster, a
//! deliberately broken run is caught, the dashboard draws in a real terminal, and the HTML
//! report renders in a browser.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stateful_redis_test_support::{RedisCluster, RedisServer};

use super::{bin, json_of};

/// A short run: 200 devices, 3 instances, 5 s of traffic with a 1 s lease ttl.
const SHORT: [&str; 8] = [
    "--devices",
    "200",
    "--instances",
    "3",
    "--duration",
    "5",
    "--lease-ttl",
    "1",
];

fn checks_of(summary: &serde_json::Value) -> Vec<(String, bool)> {
    summary["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["passed"].as_bool().expect("passed"),
            )
        })
        .collect()
}

fn assert_run_passed(summary: &serde_json::Value) {
    let checks = checks_of(summary);
    assert_eq!(checks.len(), 5, "{summary}");
    assert!(checks.iter().all(|(_, passed)| *passed), "{summary}");
    assert_eq!(summary["passed"], true, "{summary}");
    // The run did what it claims: devices were taken over from the killed instance, the
    // paused one's late writes and the zombie's were refused, and redeliveries were replays.
    assert!(summary["takeovers"].as_u64().expect("takeovers") > 0, "{summary}");
    assert!(summary["fenced_refusals"].as_u64().expect("fenced") > 0, "{summary}");
    assert!(
        summary["stale_writes_refused"].as_u64().expect("late writes") > 0,
        "{summary}"
    );
    assert!(summary["replays"].as_u64().expect("replays") > 0, "{summary}");
    assert!(
        summary["by_operation"]["message"].as_u64().expect("messages") > 0,
        "{summary}"
    );
}

#[test]
fn fleet_verification_passes_on_a_single_server_and_its_report_renders() {
    let server = RedisServer::start();
    let dir = tempdir("fleet-report");
    let output = bin()
        .args(["fleet", "--redis", &server.url(), "--json", "--report"])
        .arg(&dir)
        .args(SHORT)
        .output()
        .expect("run");
    let summary = json_of(&output);
    assert_run_passed(&summary);
    assert_eq!(summary["topology"], "standalone");
    // The run's device records were deleted after the verdict: the server is left clean
    // but for the fence counters (which must never go) and what expires by itself.
    let count = |pattern: &str| server.cli(&["EVAL", "return #redis.call('KEYS', ARGV[1])", "0", pattern]);
    assert_eq!(count("fleet-*:s"), "0");
    assert_ne!(count("fleet-*:f"), "0");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report.json")).expect("JSON");
    assert!(
        json["timeline"]["samples"].as_array().expect("samples").len() >= 5,
        "{json}"
    );
    assert!(
        json["timeline"]["marks"].as_array().expect("marks").len() >= 2,
        "{json}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    // Self-contained: nothing is fetched.
    for fetch in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(fetch), "report.html fetches something: {fetch}");
    }
    // Rendered by a real browser, the charts are there with their data.
    let dom = chromium_dom(&dir.join("report.html"));
    assert!(dom.contains(r#"id="verdict""#) && dom.contains("PASSED"), "{dom}");
    for chart in ["throughput", "latency", "ownership", "alerts"] {
        assert!(
            dom.contains(&format!(r#"<svg id="{chart}""#)),
            "no {chart} chart in the rendered page"
        );
    }
    let lines = dom.matches("<polyline").count();
    assert!(lines >= 6, "{lines} chart lines");
    assert!(!dom.contains(r#"data-points="0""#), "an empty series in {dom}");
    assert!(dom.contains("class=\"mark\""), "no failover marks in the charts");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fleet_verification_passes_on_a_cluster() {
    let cluster = RedisCluster::start_with(3, 0);
    let urls = cluster.urls();
    let output = bin()
        .args(["fleet", "--cluster", "--redis", &urls.join(","), "--json"])
        .args(SHORT)
        .output()
        .expect("run");
    let summary = json_of(&output);
    assert_run_passed(&summary);
    assert_eq!(summary["topology"], "cluster");
}

#[test]
fn a_broken_run_is_caught_by_the_verification() {
    let server = RedisServer::start();
    for (fault, check) in [
        ("stale-write", "no write accepted from a stale holder"),
        ("duplicate-apply", "no duplicate apply"),
    ] {
        let output = bin()
            .args(["fleet", "--redis", &server.url(), "--json", "--inject-fault", fault])
            .args([
                "--devices",
                "60",
                "--instances",
                "2",
                "--duration",
                "3",
                "--lease-ttl",
                "0.6",
            ])
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{fault}: {stdout}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON verdict");
        assert_eq!(summary["passed"], false, "{summary}");
        let failed: Vec<String> = checks_of(&summary)
            .into_iter()
            .filter(|(_, passed)| !passed)
            .map(|(name, _)| name)
            .collect();
        assert!(failed.iter().any(|f| f == check), "{fault}: failed {failed:?}");
        // Both faults also change a version the run did not write.
        assert!(
            failed.iter().any(|f| f == "no lost update"),
            "{fault}: failed {failed:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error: serde_json::Value = serde_json::from_str(stderr.lines().last().expect("error line")).expect("JSON");
        assert_eq!(error["error"]["kind"], "failed", "{stderr}");
    }
}

#[test]
fn fleet_refuses_a_run_too_short_for_its_failover() {
    let output = bin()
        .args(["fleet", "--duration", "2", "--lease-ttl", "1", "--json"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--duration 2 is too short for --lease-ttl 1"),
        "{stderr}"
    );
}

#[test]
fn the_dashboard_draws_its_panels_in_a_terminal_and_updates_them() {
    let server = RedisServer::start();
    let dir = tempdir("fleet-tmux");
    let socket = format!("fleet-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("tmux is installed (cargo xtask test installs it)")
    };
    let stdout = dir.join("stdout");
    let command = format!(
        "{} fleet --redis {} {} > {}",
        env!("CARGO_BIN_EXE_stateful-redis"),
        server.url(),
        "--devices 200 --instances 3 --duration 8 --lease-ttl 1",
        stdout.display()
    );
    let started = tmux(&["new-session", "-d", "-x", "160", "-y", "50", "-s", "fleet", &command]);
    assert!(started.status.success(), "{started:?}");
    let capture = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "fleet"]).stdout).into_owned();
    // The first capture once the panels are up, the second a few seconds later.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first = String::new();
    while Instant::now() < deadline {
        first = capture();
        if first.contains("Leases per instance") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for panel in [
        "stateful-redis fleet",
        "Throughput",
        "Latency (ms)",
        "Leases per instance",
        "Errors by kind",
        "Pool / queue",
        "Alerts",
        "Events",
        "Advisor",
        "driver-0@",
    ] {
        assert!(first.contains(panel), "no {panel:?} on the screen:\n{first}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let second = capture();
    assert!(second.contains("Throughput"), "{second}");
    assert_ne!(first, second, "the dashboard did not update");
    // The run ends with the verdict on stdout once the dashboard has closed.
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline
        && !std::fs::read_to_string(&stdout)
            .unwrap_or_default()
            .contains("verdict:")
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = tmux(&["kill-server"]);
    let verdict = std::fs::read_to_string(&stdout).unwrap_or_default();
    assert!(verdict.contains("verdict: PASSED"), "{verdict}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The DOM of `page` after headless Chromium rendered it.
fn chromium_dom(page: &Path) -> String {
    let profile = tempdir("fleet-chromium");
    let output = Command::new("chromium")
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is installed (cargo xtask test installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
