//! One run of a case: runs the client, takes its CPU time and the server's, and reads its figures.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::cases::{Case, Client};
use super::otlp::otlp_sink;
use super::server::{Server, pinned};

/// The figures of one run of one case.
#[derive(Debug, Clone, Default)]
pub(super) struct Sample {
    pub(super) ops: u64,
    pub(super) ops_per_sec: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) errors: u64,
    pub(super) conflicts: Option<u64>,
    pub(super) wall_s: f64,
    pub(super) client_cpu_s: f64,
    pub(super) server_cpu_s: Option<f64>,
    /// `stateful-redis load`'s own figure: the CPU of the one thread that runs the executor
    /// and its callers, over the operations (start-up and other threads left out).
    pub(super) executor_cpu_s: Option<f64>,
}

impl Sample {
    pub(super) fn client_cpu_per_100k(&self) -> f64 {
        per_100k(self.client_cpu_s, self.ops)
    }

    pub(super) fn server_cpu_per_100k(&self) -> Option<f64> {
        self.server_cpu_s.map(|s| per_100k(s, self.ops))
    }

    pub(super) fn executor_cpu_per_100k(&self) -> Option<f64> {
        self.executor_cpu_s.map(|s| per_100k(s, self.ops))
    }
}

fn per_100k(seconds: f64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        seconds / ops as f64 * 100_000.0
    }
}

/// User + system CPU seconds of the waited-for children of this process so far.
pub(super) fn children_cpu() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

impl Case {
    /// Empties the database, runs the client once and reads its figures. The client's CPU time is
    /// the change of this process's children's rusage across the run: the client is the only child
    /// waited for in between.
    pub(super) fn run(&self, server: &Server) -> anyhow::Result<Sample> {
        server.cli(&["FLUSHALL"])?;
        if let Some((program, args)) = &self.prepare {
            let out = pinned(program, server.clients.as_deref())
                .args(args)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("failed to start `{}`", program.display()))?;
            if !out.status.success() {
                bail!(
                    "preparing `{}` failed ({}):\n{}",
                    self.shown,
                    out.status,
                    tail(&out.stderr)
                );
            }
        }
        let mut command = pinned(&self.program, server.clients.as_deref());
        command.args(&self.args).stdin(Stdio::null());
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        if let Client::LoadOtel { .. } = self.client {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", otlp_sink()?))
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                .env("OTEL_METRIC_EXPORT_INTERVAL", "1000");
        }
        let server_before = server.cpu_seconds();
        let cpu_before = children_cpu()?;
        let start = Instant::now();
        let out = command
            .output()
            .with_context(|| format!("failed to start `{}`", self.program.display()))?;
        let wall_s = start.elapsed().as_secs_f64();
        let client_cpu_s = children_cpu()? - cpu_before;
        let server_cpu_s = server
            .cpu_seconds()
            .zip(server_before)
            .map(|(after, before)| after - before);
        if !out.status.success() {
            bail!(
                "`{}` failed ({}):\n{}{}",
                self.shown,
                out.status,
                tail(&out.stdout),
                tail(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut sample = match self.client {
            Client::RedisBenchmark { .. } => parse_redis_benchmark(&stdout, self.ops)?,
            Client::Plain { .. } | Client::Load { .. } | Client::LoadAlone { .. } | Client::LoadOtel { .. } => {
                parse_json_summary(&stdout)?
            }
        };
        if sample.errors > 0 {
            bail!(
                "`{}` reported {} errors:\n{}",
                self.shown,
                sample.errors,
                tail(&out.stderr)
            );
        }
        server
            .check_written(self.written)
            .with_context(|| format!("after `{}`", self.shown))?;
        sample.wall_s = wall_s;
        sample.client_cpu_s = client_cpu_s;
        sample.server_cpu_s = server_cpu_s;
        Ok(sample)
    }
}

/// The last lines of a client's output, for an error message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(20)..].join("\n");
    out.push('\n');
    out
}

/// `redis-benchmark --csv`: a header, then `"<command>","rps","avg","min","p50","p95","p99","max"`
/// (latencies in ms). The command holds no `,` or `"` here, so the last seven fields are the figures.
fn parse_redis_benchmark(text: &str, ops: u64) -> anyhow::Result<Sample> {
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with("\"EVALSHA") || line.starts_with("\"GET"))
        .with_context(|| format!("no result line in redis-benchmark's output:\n{text}"))?;
    let fields: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|field| field.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected redis-benchmark line {line:?}"))?;
    // Reversed: max, p99, p95, p50, min, avg, rps.
    let [_max, p99, _p95, p50, _min, _avg, rps] = fields[..] else {
        bail!("unexpected redis-benchmark line {line:?}");
    };
    Ok(Sample {
        ops,
        ops_per_sec: rps,
        p50_us: p50 * 1000.0,
        p99_us: p99 * 1000.0,
        ..Sample::default()
    })
}

/// The JSON line of `plain --json` and `stateful-redis load --json`.
fn parse_json_summary(text: &str) -> anyhow::Result<Sample> {
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("no JSON summary in the output:\n{text}"))?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("bad JSON summary {line}"))?;
    let number = |key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("the summary has no number `{key}`: {line}"))
    };
    Ok(Sample {
        ops: number("ops")? as u64,
        ops_per_sec: number("ops_per_sec")?,
        p50_us: number("p50_us")?,
        p99_us: number("p99_us")?,
        errors: number("errors")? as u64,
        conflicts: v.get("conflicts").and_then(Value::as_u64),
        executor_cpu_s: v.get("executor_cpu_s").and_then(Value::as_f64),
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let stdout = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                      \"EVALSHA abc 1 load:{e__rand_int__}:s put 0  0 0 0 1 \u{3}vvv 0 \",\"69204.15\",\"11.160\",\"1.320\",\"10.303\",\"18.927\",\"24.303\",\"24.511\"\n";
        let sample = parse_redis_benchmark(stdout, 1000).expect("parses");
        assert_eq!(sample.ops_per_sec, 69204.15);
        assert!((sample.p50_us - 10_303.0).abs() < 1e-6);
        assert!((sample.p99_us - 24_303.0).abs() < 1e-6);
    }
}
