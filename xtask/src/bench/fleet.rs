//! The fleet figures: `stateful-redis fleet` on a throw-away server (driver instances with
//! leases, takeover, fenced writes, exactly-once messages and presence), its operations per
//! second and per CPU second, and the takeover time after an instance dies against the lease
//! ttl; its HTML report (the charts) beside the benchmark's.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// The fleet's figures: a JSON object for report.json and a section for report.md.
pub(super) struct FleetReport {
    pub(super) json: Value,
    pub(super) markdown: String,
}

/// Runs one fleet of `devices` devices and 4 instances for `seconds`, writing its own report
/// into `out_dir/fleet/`.
pub(super) fn run(bin: &Path, out_dir: &Path, devices: u32, seconds: u32) -> anyhow::Result<FleetReport> {
    let dir = out_dir.join("fleet");
    let args = [
        "fleet".to_owned(),
        "--json".into(),
        "--devices".into(),
        devices.to_string(),
        "--instances".into(),
        "4".into(),
        "--duration".into(),
        seconds.to_string(),
        "--lease-ttl".into(),
        "2".into(),
        "--report".into(),
        dir.display().to_string(),
    ];
    eprintln!("bench: fleet: {} {}", bin.display(), args.join(" "));
    let output = Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "the fleet run printed no JSON verdict (exit {:?}): {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if summary["passed"] != true {
        bail!("the fleet run's verification failed, its figures mean nothing: {summary}");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ops_per_sec = summary["ops_per_sec"].as_f64().unwrap_or(f64::NAN);
    let json = json!({
        "devices": devices,
        "instances": 4,
        "seconds": seconds,
        "ops_per_sec": ops_per_sec,
        "ops_per_sec_per_core": (ops_per_sec / cores).round(),
        "ops_per_client_cpu_sec": summary["ops_per_cpu_sec"],
        "lease_ttl_ms": summary["lease_ttl_ms"],
        "takeovers": summary["takeovers"],
        "takeover_p50_ms": summary["takeover_p50_ms"],
        "takeover_max_ms": summary["takeover_max_ms"],
        "fenced_refusals": summary["fenced_refusals"],
        "report": dir.join("report.html"),
    });
    let mut markdown = String::from("\n## Fleet\n\n");
    let _ = writeln!(
        markdown,
        "`stateful-redis fleet`: {devices} devices, 4 driver instances, {seconds} s, one instance killed and one paused \
         past its lease; verification passed. Charts: [fleet/report.html](fleet/report.html).\n"
    );
    markdown.push_str("| figure | value |\n|---|---|\n");
    let number = |v: &Value| v.as_f64().map_or_else(|| "n/a".to_owned(), |x| format!("{x:.0}"));
    let _ = writeln!(markdown, "| fleet operations/s | {} |", number(&json["ops_per_sec"]));
    let _ = writeln!(
        markdown,
        "| per core ({cores} cores) | {} |",
        number(&json["ops_per_sec_per_core"])
    );
    let _ = writeln!(
        markdown,
        "| per CPU second of the client | {} |",
        number(&json["ops_per_client_cpu_sec"])
    );
    let _ = writeln!(
        markdown,
        "| takeover after an instance dies, lease expiry to the new owner's first fenced write (p50 / max) | {} / {} ms (lease ttl {} ms, {} devices) |",
        number(&json["takeover_p50_ms"]),
        number(&json["takeover_max_ms"]),
        number(&json["lease_ttl_ms"]),
        number(&json["takeovers"]),
    );
    Ok(FleetReport { json, markdown })
}
