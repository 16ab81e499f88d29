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
    /// `redis-benchmark` with this many connections and this pipeline depth, sending `command`;
    /// reads `--csv`.
    RedisBenchmark {
        clients: u32,
        pipeline: u32,
        command: Anchor,
    },
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

/// What a `redis-benchmark` case sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Anchor {
    /// `EVALSHA` of the executor's write script, with a plain put's arguments.
    Write,
    /// `EVALSHA` of [`MINIMAL_PUT`]: the least a versioned put can do in a script.
    MinimalPut,
    /// `GET` of a record, the command the executor's reads send.
    Get,
}

/// The minimal hand-written versioned put, the anchor of the server-cost figures: one
/// `EVALSHA` per operation, no fence, no message id, no checks.
pub(super) const MINIMAL_PUT: &str =
    "local v = redis.call('HINCRBY', KEYS[1], 'v', 1) redis.call('HSET', KEYS[1], 'd', ARGV[1], 't', ARGV[2]) return v";

/// What a run leaves in Redis, checked after it so that a client sending the wrong
/// arguments is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// Records of the value under `load:{e<n, 12 digits>}:s`.
    Records,
    /// [`MINIMAL_PUT`]'s hashes under `min:{e<n>}`.
    MinimalHashes,
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
    /// Run (untimed) after the server is flushed and before the case: the records a read
    /// case reads.
    pub(super) prepare: Option<(PathBuf, Vec<OsString>)>,
    pub(super) written: Written,
}

/// The write script's source as the scripts crate loads it, from `plain --print-write-script`.
pub(super) fn write_script(plain: &Path) -> anyhow::Result<String> {
    let out = Command::new(plain)
        .arg("--print-write-script")
        .output()
        .with_context(|| format!("running {}", plain.display()))?;
    if !out.status.success() {
        bail!(
            "`plain --print-write-script` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut source = String::from_utf8(out.stdout).context("the write script is not UTF-8")?;
    // println!'s newline.
    source.pop();
    Ok(source)
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
/// The SHAs of the scripts the `redis-benchmark` cases call.
#[derive(Debug)]
pub(super) struct Shas {
    pub(super) write: String,
    pub(super) minimal_put: String,
}

pub(super) fn cases(plan: Plan, server: &Server, bins: &Bins, shas: &Shas, put_args: &[String]) -> Vec<Case> {
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
                command: Anchor::Write,
            },
        ),
        (
            "redis-benchmark-P16",
            "redis-benchmark -c 50 -P 16",
            Throughput,
            RedisBenchmark {
                clients: C,
                pipeline: 16,
                command: Anchor::Write,
            },
        ),
        (
            "redis-benchmark-minimal-P16",
            "redis-benchmark -c 50 -P 16, minimal versioned put script",
            Throughput,
            RedisBenchmark {
                clients: C,
                pipeline: 16,
                command: Anchor::MinimalPut,
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
            "executor-get",
            "executor get",
            Throughput,
            Load {
                workload: "get",
                callers: C,
            },
        ),
        (
            "redis-benchmark-get-P16",
            "redis-benchmark -c 50 -P 16 GET",
            Throughput,
            RedisBenchmark {
                clients: C,
                pipeline: 16,
                command: Anchor::Get,
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
                command: Anchor::Write,
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
                RedisBenchmark {
                    clients,
                    pipeline,
                    command,
                } => (
                    PathBuf::from("redis-benchmark"),
                    format!(
                        "-h 127.0.0.1 -p {port} -c {clients} -n {ops} -r {ENTITIES} -P {pipeline} --csv {}",
                        match command {
                            Anchor::Write => format!("EVALSHA {}", shas.write),
                            Anchor::MinimalPut => format!("EVALSHA {} 1 min:{{e__rand_int__}}", shas.minimal_put),
                            Anchor::Get => "GET load:{e__rand_int__}:s".to_owned(),
                        }
                    ),
                ),
                Plain { mode, tasks } => (
                    bins.plain.clone(),
                    format!(
                        "--url {url} --mode {mode} --concurrency {tasks} --ops {ops} --value-size {VALUE_SIZE} \
                         --entities {ENTITIES} --sha {} --json",
                        shas.write
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
            match client {
                RedisBenchmark {
                    command: Anchor::Write, ..
                } => {
                    // The executor's put, argument for argument (from `Write::write_args` in crates/scripts).
                    args.extend(put_args.iter().map(|arg| match arg.as_str() {
                        "{key}" => "load:{e__rand_int__}:s".to_owned(),
                        "{value}" => value.clone(),
                        other => other.to_owned(),
                    }));
                }
                RedisBenchmark {
                    command: Anchor::MinimalPut,
                    ..
                } => args.extend([value.clone(), "1765000000000".to_owned()]),
                _ => {}
            }
            let reads = matches!(
                client,
                RedisBenchmark {
                    command: Anchor::Get,
                    ..
                } | Load { workload: "get", .. }
            );
            // A read case reads records one put of each entity wrote.
            let prepare = reads.then(|| {
                let line = format!(
                    "load --redis {url} --workload put --concurrency {C} --ops {ENTITIES} --entities {ENTITIES} \
                     --value-size {VALUE_SIZE} --json"
                );
                (bins.load.clone(), line.split_whitespace().map(OsString::from).collect())
            });
            let written = match client {
                RedisBenchmark {
                    command: Anchor::MinimalPut,
                    ..
                } => Written::MinimalHashes,
                _ => Written::Records,
            };
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
                prepare,
                written,
            }
        })
        .collect()
}
