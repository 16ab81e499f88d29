//! The Prometheus rules shipped in `dashboards/`: valid for promtool, passing their own
//! promtool unit tests, and the same rule set as the built-in in-process one.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use stateful_redis_alert::{Comparison, built_in_rules};

fn dashboards() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dashboards())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install it with `apt-get install prometheus` (cargo xtask test does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "prometheus-rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "prometheus-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// One `- alert:` block of the rules file: name, the number its expression compares with,
/// `for`, severity.
#[derive(Debug)]
struct PromRule {
    name: String,
    threshold: f64,
    for_duration: Duration,
    severity: String,
}

fn parse_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.len() - 1);
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("bad duration {text:?}"));
    match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        "h" => Duration::from_secs(3600 * n),
        _ => panic!("bad duration {text:?}"),
    }
}

fn prometheus_rules() -> Vec<PromRule> {
    let text = std::fs::read_to_string(dashboards().join("prometheus-rules.yml")).expect("rules file");
    let mut rules: Vec<PromRule> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix("- alert:") {
            rules.push(PromRule {
                name: name.trim().to_owned(),
                threshold: f64::NAN,
                for_duration: Duration::ZERO,
                severity: String::new(),
            });
            continue;
        }
        let Some(rule) = rules.last_mut() else { continue };
        if let Some(d) = line.strip_prefix("for:") {
            rule.for_duration = parse_duration(d.trim());
        } else if let Some(s) = line.strip_prefix("severity:") {
            rule.severity = s.trim().to_owned();
        } else if let Some((_, number)) = line.rsplit_once("> ")
            && let Ok(n) = number.trim().parse::<f64>()
        {
            rule.threshold = n;
        }
    }
    rules
}

#[test]
fn the_prometheus_rules_are_the_built_in_rule_set() {
    let built_in = built_in_rules();
    let shipped = prometheus_rules();
    let mut shipped_names: Vec<&str> = shipped.iter().map(|r| r.name.as_str()).collect();
    let mut built_in_names: Vec<&str> = built_in.iter().map(|r| r.name.as_str()).collect();
    shipped_names.sort_unstable();
    built_in_names.sort_unstable();
    assert_eq!(shipped_names, built_in_names);
    for rule in &built_in {
        let prom = shipped.iter().find(|p| p.name == rule.name).expect("same names");
        assert_eq!(prom.for_duration, rule.for_duration, "{}: for", rule.name);
        assert_eq!(prom.severity, rule.severity.as_str(), "{}: severity", rule.name);
        assert_eq!(
            rule.comparison,
            Comparison::Greater,
            "{}: the rules file compares with >",
            rule.name
        );
        // Prometheus has seconds where the in-process metric has milliseconds.
        let expected = if rule.metric.ends_with("_ms") {
            rule.threshold / 1000.0
        } else {
            rule.threshold
        };
        assert!(
            (prom.threshold - expected).abs() < 1e-9,
            "{}: threshold {} in the rules file, {expected} built in",
            rule.name,
            prom.threshold
        );
    }
}
