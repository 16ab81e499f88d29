//! `stateful-redis check`: verdicts and exit codes against servers set up to pass or fail.

use stateful_redis_test_support::{RedisCluster, RedisServer};

use crate::bin;

fn check(args: &[&str]) -> (bool, String, String) {
    let output = bin().arg("check").args(args).output().expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    assert_eq!(stdout.lines().count(), 1, "one JSON line on stdout: {stdout}");
    serde_json::from_str(stdout).expect("stdout is JSON")
}

/// The findings of `check` (as JSON) for one check name.
fn findings<'a>(report: &'a serde_json::Value, check: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

#[test]
fn a_noeviction_server_with_aof_always_is_ok_and_an_evicting_one_is_at_risk() {
    let server = RedisServer::builder()
        .arg("appendonly", "yes")
        .arg("appendfsync", "always")
        .start();
    let (ok, stdout, stderr) = check(&["--redis", &server.url()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: ok, every guarantee holds"), "{stdout}");
    assert!(
        stdout.contains("noeviction") && stdout.contains("appendfsync always"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = check(&["--redis", &server.url(), "--json"]);
    assert!(ok, "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["verdict"], "ok", "{report}");
    assert_eq!(report["topology"], "standalone", "{report}");
    for check in ["version", "maxmemory-policy", "persistence", "acl", "scripts"] {
        let found = findings(&report, check);
        assert!(
            !found.is_empty() && found.iter().all(|f| f["level"] == "ok"),
            "{check}: {report}"
        );
    }
    // Nothing written but the script cache.
    assert_eq!(server.cli(&["DBSIZE"]), "0");

    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let (ok, stdout, stderr) = check(&["--redis", &server.url()]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("RISK") && stdout.contains("maxmemory-policy"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: AT RISK"), "{stdout}");
    assert!(stderr.contains("at risk"), "{stderr}");
    let (ok, stdout, _) = check(&["--redis", &server.url(), "--json"]);
    assert!(!ok);
    let report = json(&stdout);
    assert_eq!(report["verdict"], "at_risk", "{report}");
    let policy = findings(&report, "maxmemory-policy");
    assert_eq!(policy[0]["level"], "risk", "{report}");
    assert!(
        policy[0]["fix"].as_str().unwrap_or("").contains("noeviction"),
        "{report}"
    );
}

#[test]
fn a_user_lacking_a_command_the_scripts_call_is_named_and_its_password_never_shows() {
    let rules: Vec<&str> = stateful_redis::ACL_COMMANDS
        .split_whitespace()
        .filter(|rule| *rule != "+getrange")
        .collect();
    let server = RedisServer::builder()
        .require_admin_password("admin-pw")
        .acl_user("app", "app-s3cret", &format!("~app:* {}", rules.join(" ")))
        .start();
    let url = format!("redis://app:app-s3cret@127.0.0.1:{}", server.port());
    let (ok, stdout, stderr) = check(&["--redis", &url, "--json"]);
    assert!(!ok, "{stdout}");
    assert!(
        !stdout.contains("app-s3cret") && !stderr.contains("app-s3cret"),
        "{stdout}\n{stderr}"
    );
    let report = json(&stdout);
    assert_eq!(report["verdict"], "at_risk", "{report}");
    let acl = findings(&report, "acl");
    assert_eq!(acl.len(), 1, "every other command verified: {report}");
    assert_eq!(acl[0]["level"], "risk", "{report}");
    assert!(
        acl[0]["message"].as_str().unwrap_or("").contains("getrange"),
        "{report}"
    );
    // This user may not read CONFIG, but INFO (one of ACL_COMMANDS) tells the policy; the RDB
    // schedule only CONFIG tells: not verified, not failed.
    let policy = findings(&report, "maxmemory-policy");
    assert_eq!(policy[0]["level"], "ok", "{report}");
    let persistence = findings(&report, "persistence");
    assert!(
        persistence[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not verified"),
        "{report}"
    );
}

#[test]
fn a_cluster_reports_every_slot_served_by_its_masters() {
    let mut cluster = RedisCluster::start_with(3, 0);
    let urls = cluster.urls();
    let (ok, stdout, stderr) = check(&["--cluster", "--redis", &urls[0], "--json"]);
    // The test servers keep nothing on disk: warnings, nothing at risk.
    assert!(ok, "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["topology"], "cluster", "{report}");
    assert_eq!(report["verdict"], "warnings", "{report}");
    assert_eq!(report["servers"].as_array().map(Vec::len), Some(3), "{report}");
    let slots = findings(&report, "slots");
    assert_eq!(slots[0]["level"], "ok", "{report}");
    assert!(
        slots[0]["message"].as_str().unwrap_or("").contains("all 16384 slots"),
        "{report}"
    );
    assert_eq!(
        findings(&report, "maxmemory-policy").len(),
        3,
        "one per master: {report}"
    );
    assert!(
        findings(&report, "persistence").iter().all(|f| f["level"] == "warning"),
        "{report}"
    );

    // A master down (no replica to take over): at risk, and the report names it.
    let down = cluster.nodes()[2].port();
    cluster.stop_node(2);
    let (ok, stdout, _) = check(&["--cluster", "--redis", &urls[0], "--json"]);
    assert!(!ok, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["verdict"], "at_risk", "{report}");
    let unreachable = findings(&report, "connectivity");
    assert_eq!(unreachable.len(), 1, "{report}");
    assert_eq!(unreachable[0]["server"], format!("127.0.0.1:{down}"), "{report}");
}

#[test]
fn check_needs_a_server_and_says_so() {
    let (ok, _, stderr) = check(&[]);
    assert!(!ok);
    assert!(stderr.contains("--redis"), "{stderr}");
}
