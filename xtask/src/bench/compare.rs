//! The comparison with the previous report: every median against its old value and this run's noise.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::divan::spread_micro;
use super::report::{Report, utc};
use super::stats::METRICS;

/// Changes smaller than this are never flagged, however quiet the run was.
const MIN_NOISE: f64 = 0.05;

/// The markdown section comparing every median with the previous report's.
pub(super) fn compare(report: &Report<'_>, now: &Value, path: &Path, prev: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Compared with the previous report\n\n{} (commit {}, {} UTC, {} run). A change is **flagged** \
         when it is larger than this run's noise: max(2 × spread, {:.0}%), where spread is (max − min) / \
         median over this run's repetitions (for micro-benchmarks, (median − fastest) / median of divan's \
         samples). \"better\"/\"worse\" say which way a flagged change goes. The ratios come first: a \
         busier or quieter machine moves every client's figures, and the ratios much less.\n",
        path.display(),
        prev["machine"]["git_commit"].as_str().unwrap_or("?"),
        prev["created_unix"].as_u64().map_or("?".to_owned(), utc),
        if prev["settings"]["quick"].as_bool() == Some(true) {
            "quick"
        } else {
            "full"
        },
        MIN_NOISE * 100.0,
    );
    let keys = [
        "quick",
        "ops",
        "single_caller_ops",
        "concurrency",
        "entities",
        "value_size",
    ];
    if keys.iter().any(|k| prev["settings"][k] != now["settings"][k]) {
        let _ = writeln!(
            md,
            "Note: the previous report was made with other settings ({}), so the changes are not like for like.\n",
            keys.iter()
                .map(|k| format!("{k} {}", prev["settings"][k]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if prev["machine"]["nproc"] != now["machine"]["nproc"]
        || prev["machine"]["redis_server"] != now["machine"]["redis_server"]
    {
        let _ = writeln!(
            md,
            "Note: the previous report ran on {} CPUs with redis-server {}.\n",
            prev["machine"]["nproc"], prev["machine"]["redis_server"]
        );
    }
    if prev["machine"]["pinning"] != now["machine"]["pinning"] {
        let _ = writeln!(
            md,
            "Note: the previous report {} its server and clients to CPUs; this one {}.\n",
            if prev["machine"]["pinning"].is_object() {
                "pinned"
            } else {
                "did not pin"
            },
            if now["machine"]["pinning"].is_object() {
                "does"
            } else {
                "does not"
            },
        );
    }
    let _ = writeln!(
        md,
        "| Figure | Previous | Now | Change | Noise | |\n|---|---:|---:|---:|---:|---|"
    );
    let mut flagged = 0;
    let mut row = |md: &mut String, label: String, before: Option<f64>, now: f64, spread: f64, higher_better: bool| {
        let Some(before) = before else {
            let _ = writeln!(md, "| {label} | – | {} | new | | |", fmt_figure(now));
            return;
        };
        if before == 0.0 {
            return;
        }
        let change = (now - before) / before;
        let noise = (2.0 * spread).max(MIN_NOISE);
        let flag = if change.abs() > noise {
            flagged += 1;
            if (change > 0.0) == higher_better {
                "**better**"
            } else {
                "**worse**"
            }
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:+.1}% | ±{:.0}% | {flag} |",
            fmt_figure(before),
            fmt_figure(now),
            change * 100.0,
            noise * 100.0
        );
    };
    for r in report.ratios() {
        let Some(stat) = r.stat else { continue };
        // Older reports stored a ratio as a bare number.
        let before = prev["ratios"][r.id]["median"]
            .as_f64()
            .or_else(|| prev["ratios"][r.id].as_f64());
        row(
            &mut md,
            format!("ratio {}", r.label),
            before,
            stat.median,
            stat.spread,
            r.higher_better,
        );
    }
    for r in &report.results {
        for (name, higher_better, shown) in METRICS {
            let Some(stat) = r.stat(name) else { continue };
            let before = prev["cases"][r.case.id]["median"][name].as_f64();
            row(
                &mut md,
                format!("{}: {shown}", r.case.label),
                before,
                stat.median,
                stat.spread,
                *higher_better,
            );
        }
    }
    for b in &report.micro.benchmarks {
        let before = prev["micro"]["benchmarks"][&b.name]["median_ns"].as_f64();
        row(
            &mut md,
            format!("micro {}: ns", b.name),
            before,
            b.median_ns,
            spread_micro(b),
            false,
        );
    }
    let _ = writeln!(
        md,
        "\n{flagged} change{} beyond the noise.",
        if flagged == 1 { "" } else { "s" }
    );
    md
}

fn fmt_figure(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
