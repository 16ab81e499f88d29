//! The cases: every client run and how it is set up, in the order each round runs them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::server::Server;
use super::{CONCURRENCY, ENTITIES, Plan, VALUE_SIZE, value};
use crate::cmd;

/// The release binaries the cases run.
#[derive(Debug)]
pub(super) struct Bins {
    pub(super) load: PathBuf,
    pub(super) plain: PathBuf,
}

/// Which table a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    Throughput,
    SingleCaller,
}

/// The client of a case and how it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Client {
    /// `redis-benchmark` with this many connections and this pipeline depth; reads `--csv`.
    RedisBenchmark { clients: u32, pipeline: u32 },
    /// `plain --mode <mode>` with this many tasks; reads `--json`.
    Plain { mode: &'static str, tasks: u32 },
    /// `stateful-redis load --workload <workload>` with this many callers; reads `--json`.
    Load { workload: &'static str, callers: u32 },
    /// The same with `--calls-per-bundle 1`: each call its own `EVALSHA`, as redis-benchmark sends
    /// them, no bundles (`EVALSHA many`).
    LoadAlone { workload: &'static str, callers: u32 },
    /// The same with OpenTelemetry on: metrics every second and spans (the default 1 % sampling)
    /// exported over OTLP/HTTP to a sink in this process that answers every export.
    LoadOtel { workload: &'static str, callers: u32 },
}

impl Client {
    /// What one latency sample is.
    pub(super) fn latency_per(self) -> &'static str {
        match self {
            Self::RedisBenchmark { pipeline: 1, .. } => "request",
            Self::RedisBenchmark { .. } => "request (sent in a pipeline)",
            Self::Plain { mode: "pipeline16", .. } => "pipeline of 16",
            Self::Plain { .. } => "command",
            Self::Load { .. } | Self::LoadAlone { .. } | Self::LoadOtel { .. } => "operation",
        }
    }
}

/// One client run, repeated once per round.
#[derive(Debug)]
pub(super) struct Case {
    pub(super) id: &'static str,
    pub(super) label: &'static str,
    pub(super) group: Group,
    pub(super) client: Client,
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// The command as a shell line, the value shown as `"$VALUE"`.
    pub(super) shown: String,
    /// Operations it is asked for.
    pub(super) ops: u64,
}

/// The arguments of a plain put after `EVALSHA <sha>`, as the scripts crate sends them, from
/// `plain --print-put-args`: `{key}` and `{value}` stand for the key and the value.
pub(super) fn put_args(plain: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(plain)
        .arg("--print-put-args")
        .output()
        .with_context(|| format!("running {}", plain.display()))?;
    if !out.status.success() {
        bail!(
            "`{} --print-put-args` failed ({}): {}",
            plain.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let args: Vec<String> = serde_json::from_slice(&out.stdout).context("reading the put's arguments")?;
    if !(args.iter().any(|a| a == "{key}") && args.iter().any(|a| a == "{value}")) {
        bail!("the put's arguments {args:?} have no key or no value");
    }
    Ok(args)
}

/// Every case, in the order each round runs them.
pub(super) fn cases(plan: Plan, server: &Server, bins: &Bins, sha: &str, put_args: &[String]) -> Vec<Case> {
    use Client::{Load, LoadAlone, LoadOtel, Plain, RedisBenchmark};
    use Group::{SingleCaller, Throughput};
    const C: u32 = CONCURRENCY;
    let specs = [
        (
            "redis-benchmark-P1",
            "redis-benchmark -c 50 -P 1",
            Throughput,
            RedisBenchmark {
                clients: C,
                pipeline: 1,
            },
        ),
        (
            "redis-benchmark-P16",
            "redis-benchmark -c 50 -P 16",
            Throughput,
            RedisBenchmark {
                clients: C,
                pipeline: 16,
            },
        ),
        (
            "plain-shared",
            "plain redis crate, shared connection",
            Throughput,
            Plain {
                mode: "shared",
                tasks: C,
            },
        ),
        (
            "plain-pipeline16",
            "plain redis crate, pipelines of 16",
            Throughput,
            Plain {
                mode: "pipeline16",
                tasks: C,
            },
        ),
        (
            "executor-put",
            "executor put",
            Throughput,
            Load {
                workload: "put",
                callers: C,
            },
        ),
        (
            "executor-put-alone",
            "executor put, one EVALSHA per call",
            Throughput,
            LoadAlone {
                workload: "put",
                callers: C,
            },
        ),
        (
            "executor-put-otel",
            "executor put, telemetry on",
            Throughput,
            LoadOtel {
                workload: "put",
                callers: C,
            },
        ),
        (
            "executor-cas",
            "executor cas",
            Throughput,
            Load {
                workload: "cas",
                callers: C,
            },
        ),
        (
            "executor-update",
            "executor update (get + cas)",
            Throughput,
            Load {
                workload: "update",
                callers: C,
            },
        ),
        (
            "redis-benchmark-c1-P1",
            "redis-benchmark -c 1 -P 1",
            SingleCaller,
            RedisBenchmark {
                clients: 1,
                pipeline: 1,
            },
        ),
        (
            "plain-shared-c1",
            "plain redis crate, 1 task",
            SingleCaller,
            Plain {
                mode: "shared",
                tasks: 1,
            },
        ),
        (
            "executor-put-c1",
            "executor put, 1 caller",
            SingleCaller,
            Load {
                workload: "put",
                callers: 1,
            },
        ),
    ];
    let (port, url, value) = (server.port, server.url(), value());
    let root = cmd::project_root().ok();
    specs
        .into_iter()
        .map(|(id, label, group, client)| {
            let ops = match group {
                Throughput => plan.ops,
                SingleCaller => plan.single_ops,
            };
            // Every value but `value` is free of whitespace.
            let (program, line) = match client {
                RedisBenchmark { clients, pipeline } => (
                    PathBuf::from("redis-benchmark"),
                    format!(
                        "-h 127.0.0.1 -p {port} -c {clients} -n {ops} -r {ENTITIES} -P {pipeline} --csv EVALSHA {sha}"
                    ),
                ),
                Plain { mode, tasks } => (
                    bins.plain.clone(),
                    format!(
                        "--url {url} --mode {mode} --concurrency {tasks} --ops {ops} --value-size {VALUE_SIZE} \
                         --entities {ENTITIES} --sha {sha} --json"
                    ),
                ),
                LoadAlone { workload, callers } => (
                    bins.load.clone(),
                    format!(
                        "load --redis {url} --workload {workload} --concurrency {callers} --ops {ops} \
                         --entities {ENTITIES} --value-size {VALUE_SIZE} --calls-per-bundle 1 --json"
                    ),
                ),
                Load { workload, callers } | LoadOtel { workload, callers } => (
                    bins.load.clone(),
                    format!(
                        "load --redis {url} --workload {workload} --concurrency {callers} --ops {ops} \
                         --entities {ENTITIES} --value-size {VALUE_SIZE} --json"
                    ),
                ),
            };
            let mut args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if let RedisBenchmark { .. } = client {
                // The executor's put, argument for argument (from `Write::write_args` in crates/scripts).
                args.extend(put_args.iter().map(|arg| match arg.as_str() {
                    "{key}" => "load:{e__rand_int__}:s".to_owned(),
                    "{value}" => value.clone(),
                    other => other.to_owned(),
                }));
            }
            let shown_program = root
                .and_then(|root| program.strip_prefix(root).ok())
                .unwrap_or(&program)
                .display()
                .to_string();
            let shown_args = args.iter().map(|arg| {
                if *arg == value {
                    "\"$VALUE\"".to_owned()
                } else {
                    cmd::quote(std::ffi::OsStr::new(arg))
                }
            });
            let shown = std::iter::once(shown_program)
                .chain(shown_args)
                .collect::<Vec<_>>()
                .join(" ");
            Case {
                id,
                label,
                group,
                client,
                program,
                args: args.into_iter().map(OsString::from).collect(),
                shown,
                ops,
            }
        })
        .collect()
}
