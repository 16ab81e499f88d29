//! `cargo xtask bench`: divan micro-benchmarks, then end-to-end throughput, latency and client CPU
//! of the executor against `redis-benchmark` and plain redis-crate code on one `redis-server` in one
//! run; writes `target/bench/report.{json,md}` and compares them with the previous report.
//!
//! Benchmarks report, they never fail on a figure: a missed target is shown as "not met". The run
//! fails only when a client fails (an error reply, a crash), because its figures would mean nothing.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{cmd, tools};

/// Concurrent callers of the throughput runs.
const CONCURRENCY: u32 = 50;
/// Distinct entities (keys) the writes spread over: redis-benchmark's `-r`.
const ENTITIES: u64 = 100_000;
/// Bytes of each value, before the format byte.
const VALUE_SIZE: usize = 100;
/// Changes smaller than this are never flagged, however quiet the run was.
const MIN_NOISE: f64 = 0.05;

/// The targets of the batching issue: executor put throughput at least this times `redis-benchmark -P16`.
const TARGET_THROUGHPUT_VS_P16: f64 = 1.0;
/// Executor put client CPU at most this many seconds per 100k operations.
const TARGET_CPU_PER_100K: f64 = 0.15;
/// Single-caller executor put p50 at most this times `redis-benchmark -c1 -P1`'s.
const TARGET_SINGLE_P50_VS_RB: f64 = 1.2;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    quick: bool,
    /// Rounds; each runs every case once, so repetitions interleave.
    rounds: usize,
    /// Operations of each throughput run.
    ops: u64,
    /// Operations of each single-caller run.
    single_ops: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                rounds: 1,
                ops: 50_000,
                single_ops: 10_000,
            }
        } else {
            Self {
                quick,
                // Five: on a shared 2-core machine one run can be 20 % off; the median of five
                // interleaved rounds holds still where that of three did not.
                rounds: 5,
                ops: 200_000,
                single_ops: 20_000,
            }
        }
    }
}

/// Runs the benchmarks; `args` are `[--quick] [--baseline FILE]`.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    let mut quick = false;
    let mut baseline: Option<PathBuf> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--quick") => quick = true,
            Some("--baseline") => {
                baseline = Some(args.next().context("`--baseline` needs a file")?.into());
            }
            _ => bail!(
                "unknown argument `{}`: `cargo xtask bench` takes `--quick` and `--baseline FILE`",
                arg.to_string_lossy()
            ),
        }
    }
    let plan = Plan::new(quick);
    let started = Instant::now();
    tools::ensure_redis()?;
    let root = cmd::project_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out_dir = target.join("bench");

    // The previous report, read before anything is written.
    let baseline_path = baseline.unwrap_or_else(|| out_dir.join("report.json"));
    let previous = match std::fs::read_to_string(&baseline_path) {
        Ok(text) => Some((
            baseline_path.clone(),
            text.clone(),
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("the baseline {} is not JSON", baseline_path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && baseline_path == out_dir.join("report.json") => None,
        Err(e) => return Err(e).with_context(|| format!("reading the baseline {}", baseline_path.display())),
    };

    let mut build = cmd::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "stateful-redis-cli",
        "-p",
        "stateful-redis-benches",
    ]);
    cmd::run(&mut build)?;
    let bins = Bins {
        load: target.join("release").join("stateful-redis"),
        plain: target.join("release").join("plain"),
    };

    let micro = micro(plan)?;

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let pinning = pinning();
    let server = Server::start(&out_dir.join("redis-server.log"), pinning.as_ref())?;
    let sha = server.load_script(&root.join("crates/scripts/lua/write.lua"))?;
    let put_args = put_args(&bins.plain)?;
    let cases = cases(plan, &server, &bins, &sha, &put_args);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for round in 0..plan.rounds {
        for (case, samples) in cases.iter().zip(&mut samples) {
            eprintln!("bench: round {}/{}: {}", round + 1, plan.rounds, case.label);
            if round == 0 {
                eprintln!("$ {}", case.shown);
            }
            samples.push(case.run(&server).with_context(|| format!("benchmark `{}`", case.id))?);
        }
    }
    let redis_version = server.version()?;
    drop(server);

    let results: Vec<CaseResult<'_>> = cases
        .iter()
        .zip(samples)
        .map(|(case, samples)| CaseResult { case, samples })
        .collect();
    let report = Report {
        plan,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        machine: machine(root, &redis_version, pinning.as_ref()),
        micro,
        results,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let cluster = crate::bench_cluster::run(
        &bins.load,
        plan.rounds,
        plan.ops,
        CONCURRENCY,
        ENTITIES,
        VALUE_SIZE,
        report.median("executor-put", "ops_per_sec"),
    )?;
    let mut json = report.to_json();
    json["cluster"] = cluster.json;
    let comparison = previous
        .as_ref()
        .map(|(path, _, prev)| compare(&report, &json, path, prev));
    let mut markdown = report.markdown(&sha, comparison.as_deref());
    markdown.push_str(&cluster.markdown);

    if let Some((_, text, _)) = &previous {
        write(&out_dir.join("report.prev.json"), text)?;
    }
    write(&out_dir.join("report.json"), &serde_json::to_string_pretty(&json)?)?;
    write(&out_dir.join("report.md"), &markdown)?;
    print_report(&markdown);
    eprintln!(
        "bench: wrote {} and report.md in {:.0} s",
        out_dir.join("report.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[allow(
    clippy::print_stdout,
    reason = "the report is what `cargo xtask bench` was asked for; xtask is a command-line tool"
)]
fn print_report(markdown: &str) {
    println!("{markdown}");
}

// ---------------------------------------------------------------------------------------------
// Micro-benchmarks

/// One divan benchmark: the median time and what it allocates per iteration.
#[derive(Debug, Clone)]
struct Micro {
    name: String,
    fastest_ns: f64,
    median_ns: f64,
    /// Allocations (alloc + grow) per iteration, median.
    allocs: Option<f64>,
    /// Bytes allocated (alloc + grow) per iteration, median.
    alloc_bytes: Option<f64>,
}

/// Divan's output and what was parsed from it.
#[derive(Debug)]
struct MicroReport {
    command: String,
    table: String,
    benchmarks: Vec<Micro>,
}

fn micro(plan: Plan) -> anyhow::Result<MicroReport> {
    let mut bench = cmd::cargo();
    bench.args([
        "bench",
        "-p",
        "stateful-redis-benches",
        "--bench",
        "micro",
        "--",
        "--color",
        "never",
    ]);
    if plan.quick {
        bench.args(["--sample-count", "30"]);
    }
    // Shown as `cargo …`: the full path of the toolchain's cargo says nothing to a reader.
    let command = std::iter::once("cargo".to_owned())
        .chain(bench.get_args().map(cmd::quote))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("$ {command}");
    bench.current_dir(cmd::project_root()?).stderr(Stdio::inherit());
    let out = bench.output().with_context(|| format!("failed to start `{command}`"))?;
    if !out.status.success() {
        bail!("command failed: `{command}` ({})", out.status);
    }
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let benchmarks = parse_divan(&table);
    if benchmarks.is_empty() {
        bail!("found no benchmark in divan's output:\n{table}");
    }
    Ok(MicroReport {
        command,
        table,
        benchmarks,
    })
}

/// Reads divan's tree table: a row per benchmark (`├─ name  fastest │ slowest │ median │ …`), then
/// counter rows (`alloc:`, `grow:`, …) each followed by a count row and a bytes row.
fn parse_divan(table: &str) -> Vec<Micro> {
    let mut out: Vec<Micro> = Vec::new();
    // The counter being read and how many of its value rows were seen.
    let mut counter = String::new();
    let mut row = 0;
    for line in table.lines() {
        let line = line.trim_start_matches(['│', '├', '╰', '─', ' ']).trim_end();
        let cells: Vec<&str> = line.split('│').map(str::trim).collect();
        let [first, _slowest, median, ..] = cells.as_slice() else {
            continue;
        };
        if let Some(label) = first.strip_suffix(':') {
            counter = label.to_owned();
            row = 0;
            continue;
        }
        let words: Vec<&str> = first.split_whitespace().collect();
        match words.as_slice() {
            // A benchmark row: name, fastest value and unit.
            [name, value, unit] if cells.len() >= 6 => {
                if let (Some(fastest), Some(median)) = (nanos(value, unit), parse_time(median)) {
                    out.push(Micro {
                        name: (*name).to_owned(),
                        fastest_ns: fastest,
                        median_ns: median,
                        allocs: None,
                        alloc_bytes: None,
                    });
                    counter.clear();
                }
            }
            // A counter's count row, then its bytes row.
            _ if !counter.is_empty() => {
                row += 1;
                let Some(bench) = out.last_mut() else { continue };
                if counter != "alloc" && counter != "grow" {
                    continue;
                }
                let value = if row == 1 {
                    median.parse::<f64>().ok()
                } else {
                    parse_bytes(median)
                };
                let slot = if row == 1 {
                    &mut bench.allocs
                } else {
                    &mut bench.alloc_bytes
                };
                if let Some(value) = value {
                    *slot = Some(slot.unwrap_or(0.0) + value);
                }
            }
            _ => {}
        }
    }
    out
}

/// `"26.6 ns"` in nanoseconds.
fn parse_time(cell: &str) -> Option<f64> {
    let (value, unit) = cell.split_once(' ')?;
    nanos(value, unit)
}

fn nanos(value: &str, unit: &str) -> Option<f64> {
    let factor = match unit {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * factor)
}

/// `"152 B"`, `"1.5 KB"` in bytes.
fn parse_bytes(cell: &str) -> Option<f64> {
    let (value, unit) = cell.split_once(' ')?;
    let factor = match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * factor)
}

// ---------------------------------------------------------------------------------------------
// The server

/// A throw-away `redis-server` on a free loopback port, killed when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    port: u16,
    /// Clock ticks per second of `/proc/<pid>/stat`.
    ticks: f64,
    /// The CPUs the clients run on (`taskset -c` list), when the run is pinned.
    clients: Option<String>,
}

/// Which CPUs the server and the clients run on: the server on CPU 0, every client on the
/// others, so that the client never takes the server's core (on 2 cores the scheduler would
/// otherwise put them together now and then, slowing both, and the figures would jump).
#[derive(Debug, Clone)]
struct Pinning {
    server: String,
    clients: String,
}

/// Pinning when the machine has 2 CPUs or more and `taskset` (util-linux) works; `None` (with
/// a note) otherwise, and the processes run where the scheduler puts them.
fn pinning() -> Option<Pinning> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus < 2 {
        eprintln!("bench: 1 CPU: the server and the clients are not pinned");
        return None;
    }
    let works = Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("bench: `taskset` (util-linux) does not run here: the server and the clients are not pinned");
        return None;
    }
    Some(Pinning {
        server: "0".to_owned(),
        clients: if cpus == 2 {
            "1".to_owned()
        } else {
            format!("1-{}", cpus - 1)
        },
    })
}

/// `program`, run through `taskset -c <cpus>` when `cpus` is given (taskset execs it: the
/// process, its pid and its rusage are the program's).
fn pinned(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Server {
    /// Starts it with its log in `log`, on the CPUs `pinning` gives it, if any.
    fn start(log: &Path, pinning: Option<&Pinning>) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port")?
            .port();
        let mut command = pinned("redis-server", pinning.map(|p| p.server.as_str()));
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null());
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command.stdout(file.try_clone()?).stderr(file);
        eprintln!("$ {} > {}", cmd::display(&command), log.display());
        let child = command.spawn().context("starting redis-server")?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100.0, |t| t as f64);
        let mut server = Self {
            child,
            port,
            ticks,
            clients: pinning.map(|p| p.clients.clone()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("redis-server exited at start ({status}):\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && server.cli(&["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` with `args`; its trimmed output.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli_with_input(args, None)
    }

    fn cli_with_input(&self, args: &[&str], input: Option<&Path>) -> anyhow::Result<String> {
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args);
        match input {
            Some(path) => {
                command.stdin(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
            }
            None => command.stdin(Stdio::null()),
        };
        let out = command.output().context("running redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || text.starts_with("ERR") || text.starts_with("(error)") {
            bail!(
                "`redis-cli {}` failed: {text} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// `SCRIPT LOAD` of the file's exact bytes (`-x` reads the last argument from stdin); the SHA.
    fn load_script(&self, path: &Path) -> anyhow::Result<String> {
        let sha = self.cli_with_input(&["-x", "SCRIPT", "LOAD"], Some(path))?;
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("SCRIPT LOAD returned {sha:?}, not a SHA1");
        }
        Ok(sha)
    }

    /// Checks that the run stored what a put stores: a random key's hash holds the value under `d`
    /// and a version under `v`. A client that sends the wrong arguments is caught here even when
    /// the script does not answer with an error.
    fn check_written(&self) -> anyhow::Result<()> {
        let key = self.cli(&["RANDOMKEY"])?;
        if key.is_empty() {
            bail!("the database is empty: nothing was written");
        }
        let data = self.cli(&["HGET", &key, "d"])?;
        let version = self.cli(&["HGET", &key, "v"])?;
        if data != value() || version.parse::<u64>().map_or(true, |v| v == 0) {
            bail!("{key} holds d = {data:?}, v = {version:?}: not the value written");
        }
        Ok(())
    }

    fn version(&self) -> anyhow::Result<String> {
        let info = self.cli(&["INFO", "server"])?;
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .context("INFO server has no redis_version")
    }

    /// The server's CPU seconds so far (user + system), from `/proc`; `None` where there is none.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The cases

/// The release binaries the cases run.
#[derive(Debug)]
struct Bins {
    load: PathBuf,
    plain: PathBuf,
}

/// Which table a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Throughput,
    SingleCaller,
}

/// The client of a case and how it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
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
    fn latency_per(self) -> &'static str {
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
struct Case {
    id: &'static str,
    label: &'static str,
    group: Group,
    client: Client,
    program: PathBuf,
    args: Vec<OsString>,
    /// The command as a shell line, the value shown as `"$VALUE"`.
    shown: String,
    /// Operations it is asked for.
    ops: u64,
}

/// The stored value: the raw format byte 0x03, then `VALUE_SIZE` times `v`.
fn value() -> String {
    let mut value = String::from('\u{3}');
    value.extend(std::iter::repeat_n('v', VALUE_SIZE));
    value
}

/// The arguments of a plain put after `EVALSHA <sha>`, as the scripts crate sends them, from
/// `plain --print-put-args`: `{key}` and `{value}` stand for the key and the value.
fn put_args(plain: &Path) -> anyhow::Result<Vec<String>> {
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
fn cases(plan: Plan, server: &Server, bins: &Bins, sha: &str, put_args: &[String]) -> Vec<Case> {
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

/// The figures of one run of one case.
#[derive(Debug, Clone, Default)]
struct Sample {
    ops: u64,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    conflicts: Option<u64>,
    wall_s: f64,
    client_cpu_s: f64,
    server_cpu_s: Option<f64>,
}

impl Sample {
    fn client_cpu_per_100k(&self) -> f64 {
        per_100k(self.client_cpu_s, self.ops)
    }

    fn server_cpu_per_100k(&self) -> Option<f64> {
        self.server_cpu_s.map(|s| per_100k(s, self.ops))
    }
}

fn per_100k(seconds: f64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        seconds / ops as f64 * 100_000.0
    }
}

/// A minimal OTLP/HTTP sink on a loopback port, started once: it reads each request and
/// answers `200` with an empty protobuf body (a valid, empty export response).
fn otlp_sink() -> anyhow::Result<std::net::SocketAddr> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    static SINK: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    if let Some(addr) = SINK.get() {
        return Ok(*addr);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => return,
                });
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(*SINK.get_or_init(|| addr))
}

/// User + system CPU seconds of the waited-for children of this process so far.
pub(crate) fn children_cpu() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

impl Case {
    /// Empties the database, runs the client once and reads its figures. The client's CPU time is
    /// the change of this process's children's rusage across the run: the client is the only child
    /// waited for in between.
    fn run(&self, server: &Server) -> anyhow::Result<Sample> {
        server.cli(&["FLUSHALL"])?;
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
            .check_written()
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
        .find(|line| line.starts_with("\"EVALSHA"))
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
        ..Sample::default()
    })
}

// ---------------------------------------------------------------------------------------------
// The report

/// The figures taken per run: their JSON names, whether higher is better, and how tables name them.
const METRICS: &[(&str, bool, &str)] = &[
    ("ops_per_sec", true, "ops/s"),
    ("p50_us", false, "p50 µs"),
    ("p99_us", false, "p99 µs"),
    ("client_cpu_s_per_100k", false, "client CPU s/100k"),
    ("server_cpu_s_per_100k", false, "server CPU s/100k"),
];

fn metric(sample: &Sample, name: &str) -> Option<f64> {
    match name {
        "ops_per_sec" => Some(sample.ops_per_sec),
        "p50_us" => Some(sample.p50_us),
        "p99_us" => Some(sample.p99_us),
        "client_cpu_s_per_100k" => Some(sample.client_cpu_per_100k()),
        "server_cpu_s_per_100k" => sample.server_cpu_per_100k(),
        _ => None,
    }
}

/// A median and its spread over the repetitions.
#[derive(Debug, Clone, Copy)]
struct Stat {
    median: f64,
    /// (max - min) / median; 0 for one repetition.
    spread: f64,
}

fn stat(values: &[f64]) -> Option<Stat> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    };
    let spread = if median == 0.0 {
        0.0
    } else {
        (sorted[n - 1] - sorted[0]) / median.abs()
    };
    Some(Stat { median, spread })
}

#[derive(Debug)]
struct CaseResult<'a> {
    case: &'a Case,
    samples: Vec<Sample>,
}

impl CaseResult<'_> {
    fn stat(&self, name: &str) -> Option<Stat> {
        let values: Vec<f64> = self.samples.iter().filter_map(|s| metric(s, name)).collect();
        stat(&values)
    }

    fn median(&self, name: &str) -> Option<f64> {
        self.stat(name).map(|s| s.median)
    }
}

#[derive(Debug)]
struct Report<'a> {
    plan: Plan,
    created: u64,
    machine: Value,
    micro: MicroReport,
    results: Vec<CaseResult<'a>>,
    elapsed_s: f64,
}

/// A figure of one case divided by that of another, per round.
#[derive(Debug)]
struct Ratio {
    id: &'static str,
    label: &'static str,
    higher_better: bool,
    stat: Option<Stat>,
    runs: Vec<f64>,
}

/// The ids of the ratios the targets use.
const THROUGHPUT_RATIO: &str = "executor_put_vs_redis_benchmark_p16";
const SINGLE_P50_RATIO: &str = "single_caller_p50_vs_redis_benchmark_c1_p1";

/// A target of the issue: a figure, its limit and whether it was met.
#[derive(Debug)]
struct Target {
    id: &'static str,
    label: &'static str,
    value: Option<f64>,
    limit: f64,
    at_least: bool,
    unit: &'static str,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_least {
                v >= self.limit
            } else {
                v <= self.limit
            }
        })
    }
}

impl Report<'_> {
    fn result(&self, id: &str) -> Option<&CaseResult<'_>> {
        self.results.iter().find(|r| r.case.id == id)
    }

    fn median(&self, id: &str, metric: &str) -> Option<f64> {
        self.result(id)?.median(metric)
    }

    /// `metric` of case `of` divided by that of case `to`, round by round: the rounds interleave, so
    /// a ratio of one round compares runs made under the same conditions.
    fn ratio_runs(&self, of: &str, to: &str, name: &str) -> Vec<f64> {
        let (Some(of), Some(to)) = (self.result(of), self.result(to)) else {
            return Vec::new();
        };
        of.samples
            .iter()
            .zip(&to.samples)
            .filter_map(|(a, b)| {
                let (a, b) = (metric(a, name)?, metric(b, name)?);
                (b != 0.0).then(|| a / b)
            })
            .collect()
    }

    /// The executor's figures relative to the baselines'.
    fn ratios(&self) -> Vec<Ratio> {
        let ratio = |id, label, of, to, name, higher_better| {
            let runs = self.ratio_runs(of, to, name);
            Ratio {
                id,
                label,
                higher_better,
                stat: stat(&runs),
                runs,
            }
        };
        let put = "executor-put";
        vec![
            ratio(
                "executor_put_vs_redis_benchmark_p16",
                "executor put / redis-benchmark -P 16: ops/s",
                put,
                "redis-benchmark-P16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_alone_vs_redis_benchmark_p16",
                "executor put, one EVALSHA per call / redis-benchmark -P 16: ops/s",
                "executor-put-alone",
                "redis-benchmark-P16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_redis_benchmark_p1",
                "executor put / redis-benchmark -P 1: ops/s",
                put,
                "redis-benchmark-P1",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_plain_shared",
                "executor put / plain shared: ops/s",
                put,
                "plain-shared",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_vs_plain_pipeline16",
                "executor put / plain pipeline16: ops/s",
                put,
                "plain-pipeline16",
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_telemetry_on_vs_off",
                "executor put, telemetry on / off: ops/s",
                "executor-put-otel",
                put,
                "ops_per_sec",
                true,
            ),
            ratio(
                "executor_put_telemetry_on_vs_off_client_cpu",
                "executor put, telemetry on / off: client CPU",
                "executor-put-otel",
                put,
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_redis_benchmark_p16_client_cpu",
                "executor put / redis-benchmark -P 16: client CPU",
                put,
                "redis-benchmark-P16",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_plain_pipeline16_client_cpu",
                "executor put / plain pipeline16: client CPU",
                put,
                "plain-pipeline16",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                "executor_put_vs_plain_shared_client_cpu",
                "executor put / plain shared: client CPU",
                put,
                "plain-shared",
                "client_cpu_s_per_100k",
                false,
            ),
            ratio(
                SINGLE_P50_RATIO,
                "single-caller executor put / redis-benchmark -c 1 -P 1: p50",
                "executor-put-c1",
                "redis-benchmark-c1-P1",
                "p50_us",
                false,
            ),
        ]
    }

    fn ratio(&self, id: &str) -> Option<f64> {
        self.ratios().into_iter().find(|r| r.id == id)?.stat.map(|s| s.median)
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target {
                id: "throughput_vs_redis_benchmark_p16",
                label: "executor put throughput / redis-benchmark -P 16",
                value: self.ratio(THROUGHPUT_RATIO),
                limit: TARGET_THROUGHPUT_VS_P16,
                at_least: true,
                unit: "×",
            },
            Target {
                id: "client_cpu_s_per_100k",
                label: "executor put client CPU per 100k operations",
                value: self.median("executor-put", "client_cpu_s_per_100k"),
                limit: TARGET_CPU_PER_100K,
                at_least: false,
                unit: " s",
            },
            Target {
                id: "single_caller_p50_vs_redis_benchmark",
                label: "single-caller put p50 / redis-benchmark -c 1 -P 1 p50",
                value: self.ratio(SINGLE_P50_RATIO),
                limit: TARGET_SINGLE_P50_VS_RB,
                at_least: false,
                unit: "×",
            },
        ]
    }

    fn to_json(&self) -> Value {
        let cases: serde_json::Map<String, Value> = self
            .results
            .iter()
            .map(|r| {
                let runs: Vec<Value> = r
                    .samples
                    .iter()
                    .map(|s| {
                        json!({
                            "ops": s.ops,
                            "ops_per_sec": s.ops_per_sec,
                            "p50_us": s.p50_us,
                            "p99_us": s.p99_us,
                            "errors": s.errors,
                            "conflicts": s.conflicts,
                            "wall_s": s.wall_s,
                            "client_cpu_s": s.client_cpu_s,
                            "client_cpu_s_per_100k": s.client_cpu_per_100k(),
                            "server_cpu_s": s.server_cpu_s,
                            "server_cpu_s_per_100k": s.server_cpu_per_100k(),
                        })
                    })
                    .collect();
                let mut median = serde_json::Map::new();
                let mut spread = serde_json::Map::new();
                for (name, ..) in METRICS {
                    if let Some(stat) = r.stat(name) {
                        median.insert((*name).to_owned(), json!(stat.median));
                        spread.insert((*name).to_owned(), json!(stat.spread));
                    }
                }
                let case = json!({
                    "label": r.case.label,
                    "group": match r.case.group { Group::Throughput => "throughput", Group::SingleCaller => "single_caller" },
                    "command": r.case.shown,
                    "latency_per": r.case.client.latency_per(),
                    "runs": runs,
                    "median": median,
                    "spread": spread,
                });
                (r.case.id.to_owned(), case)
            })
            .collect();
        let micro: serde_json::Map<String, Value> = self
            .micro
            .benchmarks
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    json!({
                        "median_ns": m.median_ns,
                        "fastest_ns": m.fastest_ns,
                        "spread": spread_micro(m),
                        "allocs_per_iter": m.allocs,
                        "alloc_bytes_per_iter": m.alloc_bytes,
                    }),
                )
            })
            .collect();
        let ratios: serde_json::Map<String, Value> = self
            .ratios()
            .into_iter()
            .map(|r| {
                let ratio = json!({
                    "label": r.label,
                    "median": r.stat.map(|s| s.median),
                    "spread": r.stat.map(|s| s.spread),
                    "runs": r.runs,
                });
                (r.id.to_owned(), ratio)
            })
            .collect();
        let targets: serde_json::Map<String, Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                (
                    t.id.to_owned(),
                    json!({ "label": t.label, "value": t.value, "limit": t.limit,
                            "at_least": t.at_least, "met": t.met() }),
                )
            })
            .collect();
        json!({
            "schema": 1,
            "created_unix": self.created,
            "elapsed_s": self.elapsed_s,
            "machine": self.machine,
            "settings": {
                "quick": self.plan.quick,
                "repetitions": self.plan.rounds,
                "ops": self.plan.ops,
                "single_caller_ops": self.plan.single_ops,
                "concurrency": CONCURRENCY,
                "entities": ENTITIES,
                "value_size": VALUE_SIZE,
                "value": "0x03 followed by value_size bytes 'v' (BytesCodec's stored form)",
            },
            "micro": { "command": self.micro.command, "benchmarks": micro, "table": self.micro.table },
            "cases": cases,
            "ratios": ratios,
            "targets": targets,
        })
    }

    fn markdown(&self, sha: &str, comparison: Option<&str>) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let plan = self.plan;
        let _ = writeln!(md, "# stateful-redis benchmark report\n");
        let _ = writeln!(
            md,
            "{} UTC, commit {}{}, {} CPUs, redis-server {}. {} run: {} repetition{} in interleaved rounds, \
             medians shown; spread is (max − min) / median over the repetitions. {:.0} s in all.\n",
            utc(self.created),
            m["git_commit"].as_str().unwrap_or("?"),
            if m["git_dirty"].as_bool() == Some(true) {
                " (uncommitted changes)"
            } else {
                ""
            },
            m["nproc"],
            m["redis_server"].as_str().unwrap_or("?"),
            if plan.quick { "Quick" } else { "Full" },
            plan.rounds,
            if plan.rounds == 1 { "" } else { "s" },
            self.elapsed_s,
        );
        let _ = writeln!(
            md,
            "Every client runs against the same redis-server in this run, which starts empty (`FLUSHALL`) \
             before each run. {} The absolute numbers are noisy; the ratios between clients are the figures to \
             read.\n",
            match (m["pinning"]["server"].as_str(), m["pinning"]["clients"].as_str()) {
                (Some(server), Some(clients)) => format!(
                    "The server runs on CPU {server} and every client on CPU {clients} (`taskset -c`), so that \
                     a client never takes the server's core."
                ),
                _ => "The server and the clients share the machine's CPUs (not pinned).".to_owned(),
            }
        );

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| Target | Value | Limit | |\n|---|---:|---:|---|");
        for t in self.targets() {
            let _ = writeln!(
                md,
                "| {} | {} | {} {:.2}{} | {} |",
                t.label,
                // Three digits: a value rounded onto its limit would read as met.
                t.value.map_or("–".to_owned(), |v| format!("{v:.3}{}", t.unit)),
                if t.at_least { "≥" } else { "≤" },
                t.limit,
                t.unit,
                match t.met() {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "no figure",
                }
            );
        }

        let _ = writeln!(
            md,
            "\n## Ratios\n\nThe figures to read: each is taken within one round (the rounds interleave the \
             clients), then the median over the rounds is shown.\n"
        );
        let _ = writeln!(md, "| Ratio | Median | spread |\n|---|---:|---:|");
        for r in self.ratios() {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                r.label,
                fmt_ratio(r.stat.map(|s| s.median)),
                r.stat.map_or("–".to_owned(), |s| format!("{:.1}%", s.spread * 100.0)),
            );
        }

        let _ = writeln!(
            md,
            "\n## Throughput\n\n{CONCURRENCY} concurrent callers, {} operations per run, {ENTITIES} entities, \
             {VALUE_SIZE}-byte values. Every client does the executor's put on the server (`EVALSHA` of \
             write.lua), except `cas` and `update`. The executor sends the calls of a pipeline as one \
             bundle, one `EVALSHA` of its `many` script (`batch.calls_per_bundle`), which applies them one by one, each \
             atomic and answered on its own; \"one EVALSHA per call\" turns that off and sends them as \
             redis-benchmark does.\n",
            plan.ops
        );
        self.case_table(&mut md, Group::Throughput);
        let _ = writeln!(
            md,
            "\nLatency is per request for redis-benchmark (with `-P 16`, from the pipeline's send), per \
             command for plain shared, per pipeline of 16 for plain pipeline16, and per operation for the \
             executor. CPU is user + system seconds per 100 000 operations: the client's from its rusage, \
             the server's from /proc."
        );

        let _ = writeln!(
            md,
            "\n## Single caller\n\nOne caller, one request at a time, {} operations per run.\n",
            plan.single_ops
        );
        self.case_table(&mut md, Group::SingleCaller);
        md.push('\n');

        let _ = writeln!(
            md,
            "## Micro-benchmarks\n\nDivan, one thread; allocations are counted by divan's allocation profiler \
             (alloc + grow per iteration).\n"
        );
        let _ = writeln!(
            md,
            "| Benchmark | Median | Fastest | Allocations | Bytes |\n|---|---:|---:|---:|---:|"
        );
        for b in &self.micro.benchmarks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                b.name,
                fmt_ns(b.median_ns),
                fmt_ns(b.fastest_ns),
                b.allocs.map_or("0".to_owned(), |a| format!("{a}")),
                b.alloc_bytes.map_or("0".to_owned(), |a| format!("{a}")),
            );
        }
        if let Some(crowd) = self.micro.benchmarks.iter().find(|b| b.name == "executor_put_25") {
            let _ = writeln!(
                md,
                "\nAllocations per put, when 25 share a pipeline (`executor_put_25` / 25, the connection's \
                 reader included): **{:.2}** ({:.0} bytes). `executor_put` is one put alone, whose pipeline's \
                 own allocations it does not share.",
                crowd.allocs.unwrap_or(0.0) / 25.0,
                crowd.alloc_bytes.unwrap_or(0.0) / 25.0,
            );
        }

        match comparison {
            Some(comparison) => md.push_str(comparison),
            None => {
                let _ = writeln!(md, "\n## Compared with the previous report\n\nNo previous report.");
            }
        }

        let _ = writeln!(
            md,
            "\n## Commands\n\n`$VALUE` is the byte 0x03 (`BytesCodec`'s format byte) followed by {VALUE_SIZE} × \
             `v`; write.lua is loaded as {sha}.\n\n```sh\n{}",
            self.micro.command
        );
        for r in &self.results {
            let _ = writeln!(md, "{}", r.case.shown);
        }
        let _ = writeln!(md, "```");
        md
    }

    fn case_table(&self, md: &mut String, group: Group) {
        let _ = writeln!(
            md,
            "| Client | ops/s | spread | p50 µs | p99 µs | client CPU s/100k | server CPU s/100k | conflicts |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in self.results.iter().filter(|r| r.case.group == group) {
            let conflicts: Vec<f64> = r
                .samples
                .iter()
                .filter_map(|s| Some(s.conflicts? as f64 / s.ops.max(1) as f64))
                .collect();
            let conflicts = stat(&conflicts);
            let fmt = |name: &str, digits: usize| r.median(name).map_or("–".to_owned(), |v| format!("{v:.digits$}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case.label,
                fmt("ops_per_sec", 0),
                r.stat("ops_per_sec")
                    .map_or("–".to_owned(), |s| format!("{:.1}%", s.spread * 100.0)),
                fmt("p50_us", 0),
                fmt("p99_us", 0),
                fmt("client_cpu_s_per_100k", 3),
                fmt("server_cpu_s_per_100k", 3),
                conflicts.map_or("–".to_owned(), |s| format!("{:.0}%", s.median * 100.0)),
            );
        }
    }
}

/// Divan's samples stand in for repetitions: (median − fastest) / median.
fn spread_micro(m: &Micro) -> f64 {
    if m.median_ns > 0.0 {
        (m.median_ns - m.fastest_ns) / m.median_ns
    } else {
        0.0
    }
}

fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}×"))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The markdown section comparing every median with the previous report's.
fn compare(report: &Report<'_>, now: &Value, path: &Path, prev: &Value) -> String {
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

/// Machine and source facts for the report.
fn machine(root: &Path, redis_version: &str, pinning: Option<&Pinning>) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "cpu_model": cpu_model,
        "os": std::env::consts::OS,
        "redis_server": redis_version,
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "pinning": pinning.map(|p| json!({ "server": p.server, "clients": p.clients })),
    })
}

/// `YYYY-MM-DD HH:MM` of a Unix time (civil-from-days, proleptic Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_divan_table() {
        let table = "\
Timer precision: 20 ns
micro                    fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ key_state             26 ns         │ 63.57 ns      │ 26.6 ns       │ 28.05 ns      │ 100     │ 3200
│                        max alloc:    │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          15 B        │ 15 B          │ 15 B          │ 15 B          │         │
│                        alloc:        │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          15 B        │ 15 B          │ 15 B          │ 15 B          │         │
├─ parse_write_reply     69.1 ns       │ 658 ns        │ 70.04 ns      │ 75.85 ns      │ 100     │ 3200
│                        dealloc:      │               │               │               │         │
│                          1           │ 1             │ 1             │ 1             │         │
│                          112 B       │ 112 B         │ 112 B         │ 112 B         │         │
╰─ write_command         307.5 ns      │ 11.28 µs      │ 1.327 µs      │ 454.1 ns      │ 100     │ 100
                         alloc:        │               │               │               │         │
                           2           │ 3             │ 2             │ 2.01          │         │
                           72 B        │ 80 B          │ 72 B          │ 72.08 B       │         │
                         grow:         │               │               │               │         │
                           5           │ 8             │ 5             │ 5.03          │         │
                           372 B       │ 428 B         │ 372 B         │ 372.5 B       │         │
";
        let parsed = parse_divan(table);
        let names: Vec<&str> = parsed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["key_state", "parse_write_reply", "write_command"]);
        assert_eq!(parsed[0].median_ns, 26.6);
        assert_eq!(parsed[0].allocs, Some(1.0));
        assert_eq!(parsed[0].alloc_bytes, Some(15.0));
        assert_eq!(parsed[1].allocs, None);
        assert_eq!(parsed[2].median_ns, 1327.0);
        assert_eq!(parsed[2].fastest_ns, 307.5);
        assert_eq!(parsed[2].allocs, Some(7.0));
        assert_eq!(parsed[2].alloc_bytes, Some(444.0));
    }

    #[test]
    fn reads_redis_benchmark_csv() {
        let stdout = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                      \"EVALSHA abc 1 load:{e__rand_int__}:s put 0  0 0 0 1 \u{3}vvv 0 \",\"69204.15\",\"11.160\",\"1.320\",\"10.303\",\"18.927\",\"24.303\",\"24.511\"\n";
        let sample = parse_redis_benchmark(stdout, 1000).expect("parses");
        assert_eq!(sample.ops_per_sec, 69204.15);
        assert!((sample.p50_us - 10_303.0).abs() < 1e-6);
        assert!((sample.p99_us - 24_303.0).abs() < 1e-6);
    }

    #[test]
    fn medians_and_spread() {
        let s = stat(&[3.0, 1.0, 2.0]).expect("a stat");
        assert_eq!(s.median, 2.0);
        assert_eq!(s.spread, 1.0);
        assert_eq!(stat(&[1.0, 3.0]).expect("a stat").median, 2.0);
        assert!(stat(&[]).is_none());
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_709_251_200), "2024-03-01 00:00");
    }
}
