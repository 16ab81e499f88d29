//! The comparison with the previous report: every median against its old value and this run's
//! noise, and `--fail-on-regression`'s verdict.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::report::utc;
use super::stats::METRICS;

/// Changes smaller than this are never flagged, however quiet the run was.
const MIN_NOISE: f64 = 0.05;

/// The markdown section comparing every median with the previous report's.
pub(super) fn compare(now: &Value, path: &Path, prev: &Value) -> Comparison {
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
    let rows = rows(now, prev);
    for r in &rows {
        let Some(before) = r.before else {
            let _ = writeln!(md, "| {} | – | {} | new | | |", r.label, fmt_figure(r.now));
            continue;
        };
        let Some(change) = r.change() else { continue };
        let flag = match r.verdict() {
            Some(Verdict::Better) => "**better**",
            Some(Verdict::Worse) => "**worse**",
            None => "",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:+.1}% | ±{:.0}% | {flag} |",
            r.label,
            fmt_figure(before),
            fmt_figure(r.now),
            change * 100.0,
            r.noise * 100.0
        );
    }
    let flagged = rows.iter().filter(|r| r.verdict().is_some()).count();
    let _ = writeln!(
        md,
        "\n{flagged} change{} beyond the noise.",
        if flagged == 1 { "" } else { "s" }
    );
    let worse = rows
        .into_iter()
        .filter(|r| r.verdict() == Some(Verdict::Worse))
        .collect();
    Comparison { markdown: md, worse }
}

/// The comparison of a report with a baseline.
#[derive(Debug)]
pub(super) struct Comparison {
    /// The markdown section for report.md.
    pub(super) markdown: String,
    /// The figures that moved the worse way by more than this run's noise.
    pub(super) worse: Vec<Row>,
}

impl Comparison {
    /// `--fail-on-regression`: an error naming every figure that got worse beyond the noise.
    pub(super) fn fail_on_regression(&self) -> anyhow::Result<()> {
        if self.worse.is_empty() {
            return Ok(());
        }
        let figures: Vec<String> = self
            .worse
            .iter()
            .map(|r| {
                format!(
                    "{}: {} -> {} ({:+.1}%, noise ±{:.0}%)",
                    r.label,
                    r.before.map_or_else(|| "–".to_owned(), fmt_figure),
                    fmt_figure(r.now),
                    r.change().unwrap_or(0.0) * 100.0,
                    r.noise * 100.0
                )
            })
            .collect();
        anyhow::bail!(
            "{} figure{} worse than the baseline beyond this run's noise (--fail-on-regression):\n  {}",
            figures.len(),
            if figures.len() == 1 { "" } else { "s" },
            figures.join("\n  ")
        )
    }
}

/// Which way a change beyond the noise goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Better,
    Worse,
}

/// One figure of this report next to the baseline's.
#[derive(Debug)]
pub(super) struct Row {
    label: String,
    /// The baseline's median; `None` for a figure it does not have.
    before: Option<f64>,
    /// This run's median.
    now: f64,
    /// The smallest change that counts: max(2 × this run's spread, [`MIN_NOISE`]).
    noise: f64,
    /// Throughput and its ratios: higher is better; latency, CPU and nanoseconds: lower.
    higher_better: bool,
}

impl Row {
    fn new(label: String, before: Option<f64>, now: f64, spread: f64, higher_better: bool) -> Self {
        Self {
            label,
            before,
            now,
            noise: (2.0 * spread).max(MIN_NOISE),
            higher_better,
        }
    }

    /// (now − before) / before; `None` without a (non-zero) baseline.
    fn change(&self) -> Option<f64> {
        self.before.filter(|b| *b != 0.0).map(|b| (self.now - b) / b)
    }

    /// Better or worse when the change is larger than the noise.
    fn verdict(&self) -> Option<Verdict> {
        let change = self.change()?;
        if change.abs() <= self.noise {
            return None;
        }
        Some(if (change > 0.0) == self.higher_better {
            Verdict::Better
        } else {
            Verdict::Worse
        })
    }
}

/// Every figure of the report `now` (as report.json holds it) with the baseline's: the ratios,
/// then each case's figures, then the micro-benchmarks.
fn rows(now: &Value, prev: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    for (id, r) in entries(&now["ratios"]) {
        let Some(median) = r["median"].as_f64() else { continue };
        // Older reports stored a ratio as a bare number.
        let before = prev["ratios"][id]["median"]
            .as_f64()
            .or_else(|| prev["ratios"][id].as_f64());
        rows.push(Row::new(
            format!("ratio {}", r["label"].as_str().unwrap_or(id)),
            before,
            median,
            r["spread"].as_f64().unwrap_or(0.0),
            r["higher_better"].as_bool().unwrap_or(true),
        ));
    }
    for (id, case) in entries(&now["cases"]) {
        for (name, higher_better, shown) in METRICS {
            let Some(median) = case["median"][name].as_f64() else {
                continue;
            };
            rows.push(Row::new(
                format!("{}: {shown}", case["label"].as_str().unwrap_or(id)),
                prev["cases"][id]["median"][name].as_f64(),
                median,
                case["spread"][name].as_f64().unwrap_or(0.0),
                *higher_better,
            ));
        }
    }
    for (name, b) in entries(&now["micro"]["benchmarks"]) {
        let Some(median) = b["median_ns"].as_f64() else {
            continue;
        };
        rows.push(Row::new(
            format!("micro {name}: ns"),
            prev["micro"]["benchmarks"][name]["median_ns"].as_f64(),
            median,
            b["spread"].as_f64().unwrap_or(0.0),
            false,
        ));
    }
    rows
}

/// The entries of a JSON object; none for anything else.
fn entries(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A report as report.json holds it, with one ratio, one case and one micro-benchmark.
    fn report(ratio: f64, ops_per_sec: f64, p99_us: f64, cpu: f64, micro_ns: f64) -> Value {
        json!({
            "settings": { "quick": false },
            "machine": { "git_commit": "abc1234", "nproc": 2 },
            "created_unix": 1_780_000_000u64,
            "ratios": {
                "executor_put_vs_redis_benchmark_p16": {
                    "label": "executor put / redis-benchmark -P 16: ops/s",
                    "higher_better": true,
                    "median": ratio,
                    "spread": 0.04,
                },
            },
            "cases": {
                "executor-put": {
                    "label": "executor put",
                    "median": { "ops_per_sec": ops_per_sec, "p99_us": p99_us, "client_cpu_s_per_100k": cpu },
                    // Noise: ±10 % for ops/s, ±5 % (the floor) for the others.
                    "spread": { "ops_per_sec": 0.05, "p99_us": 0.01, "client_cpu_s_per_100k": 0.02 },
                },
            },
            "micro": { "benchmarks": { "key_build": { "median_ns": micro_ns, "spread": 0.1 } } },
        })
    }

    #[test]
    fn changes_within_the_noise_pass() {
        let before = report(1.50, 100_000.0, 800.0, 0.120, 40.0);
        // ops/s 8 % lower (noise 10 %), p99 4 % higher, CPU 4 % higher, micro 15 % slower (noise 20 %).
        let now = report(1.46, 92_000.0, 832.0, 0.1248, 46.0);
        let comparison = compare(&now, Path::new("old.json"), &before);
        assert!(comparison.worse.is_empty(), "{comparison:?}");
        comparison.fail_on_regression().expect("within the noise");
        assert!(
            comparison.markdown.contains("0 changes beyond the noise"),
            "{}",
            comparison.markdown
        );
    }

    #[test]
    fn a_figure_worse_beyond_the_noise_fails_naming_it() {
        let before = report(1.50, 100_000.0, 800.0, 0.120, 40.0);
        // ops/s 20 % lower, p99 20 % lower (better), CPU 10 % higher: two worse, one better.
        let now = report(1.50, 80_000.0, 640.0, 0.132, 40.0);
        let comparison = compare(&now, Path::new("old.json"), &before);
        let err = comparison
            .fail_on_regression()
            .expect_err("beyond the noise")
            .to_string();
        assert!(err.starts_with("2 figures worse"), "{err}");
        assert!(
            err.contains("executor put: ops/s: 100000 -> 80000 (-20.0%, noise ±10%)"),
            "{err}"
        );
        assert!(err.contains("executor put: client CPU s/100k"), "{err}");
        assert!(
            !err.contains("p99"),
            "a lower latency is better, not a regression: {err}"
        );
        assert!(comparison.markdown.contains("**better**"), "{}", comparison.markdown);
        assert!(
            comparison.markdown.contains("3 changes beyond the noise"),
            "{}",
            comparison.markdown
        );
    }

    #[test]
    fn a_lower_ratio_and_a_slower_micro_benchmark_are_worse_and_new_figures_are_not() {
        let before = report(1.50, 100_000.0, 800.0, 0.120, 40.0);
        let mut now = report(1.30, 100_000.0, 800.0, 0.120, 50.0);
        now["cases"]["executor-cas"] = json!({
            "label": "executor cas",
            "median": { "ops_per_sec": 1.0 },
            "spread": { "ops_per_sec": 0.0 },
        });
        let comparison = compare(&now, Path::new("old.json"), &before);
        let worse: Vec<&str> = comparison.worse.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            worse,
            [
                "ratio executor put / redis-benchmark -P 16: ops/s",
                "micro key_build: ns"
            ]
        );
        assert!(comparison.markdown.contains("| executor cas: ops/s | – | 1.00 | new |"));
    }
}
