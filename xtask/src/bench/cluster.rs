//! The cluster figures: the executor's put on a local Redis Cluster of three masters, with each
//! master's share of the commands.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use stateful_redis_test_support::RedisCluster;

/// The cluster's figures: a JSON object for report.json and a section for report.md.
pub(super) struct ClusterReport {
    pub(super) json: Value,
    pub(super) markdown: String,
}

struct Run {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    client_cpu_per_100k: f64,
    /// Commands per master.
    nodes: Vec<u64>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs `load --cluster` `rounds` times with `ops` puts from `callers` callers;
/// `standalone_ops_per_sec` (the single server's executor put of the same run) gives the ratio.
pub(super) fn run(
    load: &Path,
    rounds: usize,
    ops: u64,
    callers: u32,
    entities: u64,
    value_size: usize,
    standalone_ops_per_sec: Option<f64>,
) -> anyhow::Result<ClusterReport> {
    eprintln!("bench: starting a local Redis Cluster (3 masters)");
    let cluster = std::panic::catch_unwind(|| RedisCluster::start_with(3, 0))
        .map_err(|_| anyhow::anyhow!("the local Redis Cluster did not start (see the message above)"))?;
    let seeds = cluster.urls().join(",");
    let line = format!(
        "load --cluster --redis {seeds} --workload put --concurrency {callers} --ops {ops} \
         --entities {entities} --value-size {value_size} --json"
    );
    let mut runs = Vec::new();
    for round in 0..rounds {
        eprintln!("bench: cluster round {}/{rounds}", round + 1);
        for i in 0..3 {
            cluster.cli(i, &["FLUSHALL"]);
        }
        let cpu_before = super::sample::children_cpu()?;
        let out = Command::new(load)
            .args(line.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to start `{}`", load.display()))?;
        let cpu = super::sample::children_cpu()? - cpu_before;
        if !out.status.success() {
            bail!(
                "`stateful-redis {line}` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("no JSON summary")
            .and_then(|l| serde_json::from_str(l).context("bad JSON summary"))?;
        if summary["errors"].as_u64() != Some(0) || summary["topology"] != "cluster" {
            bail!("the cluster run failed or did not run on the cluster: {summary}");
        }
        let number = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
        let done = number("ops");
        runs.push(Run {
            ops_per_sec: number("ops_per_sec"),
            p50_us: number("p50_us"),
            p99_us: number("p99_us"),
            client_cpu_per_100k: cpu / done * 100_000.0,
            nodes: summary["nodes"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        });
    }
    drop(cluster);
    let ops_per_sec = median(runs.iter().map(|r| r.ops_per_sec).collect());
    let spread = median(
        runs.iter()
            .map(|r| {
                let (min, max) = (r.nodes.iter().min(), r.nodes.iter().max());
                let mean = r.nodes.iter().sum::<u64>() as f64 / r.nodes.len().max(1) as f64;
                match (min, max) {
                    (Some(&min), Some(&max)) if mean > 0.0 => (max - min) as f64 / mean,
                    _ => f64::NAN,
                }
            })
            .collect(),
    );
    let ratio = standalone_ops_per_sec.map(|s| ops_per_sec / s);
    let json = json!({
        "command": format!("stateful-redis {line}"),
        "masters": 3,
        "ops_per_sec": ops_per_sec,
        "p50_us": median(runs.iter().map(|r| r.p50_us).collect()),
        "p99_us": median(runs.iter().map(|r| r.p99_us).collect()),
        "client_cpu_s_per_100k": median(runs.iter().map(|r| r.client_cpu_per_100k).collect()),
        "per_node_spread": spread,
        "vs_standalone_executor_put": ratio,
        "runs": runs.iter().map(|r| json!({
            "ops_per_sec": r.ops_per_sec, "p50_us": r.p50_us, "p99_us": r.p99_us,
            "client_cpu_s_per_100k": r.client_cpu_per_100k, "commands_per_node": r.nodes,
        })).collect::<Vec<_>>(),
    });
    let mut markdown = String::new();
    let _ = writeln!(
        markdown,
        "\n## Cluster (3 masters on loopback)\n\nThe executor's put through `load --cluster`, {callers} callers, \
         medians of {rounds} run{}. On two cores the three masters share the CPUs with the client, so no gain \
         over one server is expected; this shows the routing's cost and how evenly the slots spread the load.\n",
        if rounds == 1 { "" } else { "s" }
    );
    let _ = writeln!(markdown, "| figure | value |\n|---|---:|");
    let _ = writeln!(markdown, "| ops/s | {ops_per_sec:.0} |");
    let _ = writeln!(
        markdown,
        "| p50 µs | {:.0} |",
        json["p50_us"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        markdown,
        "| p99 µs | {:.0} |",
        json["p99_us"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        markdown,
        "| client CPU s/100k | {:.3} |",
        json["client_cpu_s_per_100k"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        markdown,
        "| per-master spread of commands (max − min) / mean | {:.1} % |",
        spread * 100.0
    );
    if let Some(ratio) = ratio {
        let _ = writeln!(markdown, "| ops/s vs the single server's executor put | {ratio:.2}× |");
    }
    let _ = writeln!(markdown, "\n```sh\nstateful-redis {line}\n```");
    Ok(ClusterReport { json, markdown })
}
