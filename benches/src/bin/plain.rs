//! `plain`: the baseline client of `cargo xtask bench`. Plain `redis` crate code that does the
//! server-side work of the executor's `put` (one `EVALSHA` of `write.lua` on `load:{e<n>}:s`), with
//! none of stateful-redis's client code in the timed loop, so the report can show what the library's
//! client side costs.
//!
//! ```text
//! plain --url redis://127.0.0.1:6379 --mode shared|pipeline16 --concurrency 50 --ops 200000 \
//!       --value-size 100 --entities 100000 [--sha SHA] [--json]
//! plain --print-put-args
//! plain --print-write-script
//! ```
//!
//! `shared`: one multiplexed connection cloned to every task; each task awaits one `EVALSHA` at a
//! time, and the latency is per command. `pipeline16`: each task sends explicit pipelines of 16
//! `EVALSHA`s on the shared connection, and the latency is per pipeline.
//!
//! The script's arguments are whatever the scripts crate sends for a plain put: they are read once
//! at start from `Write::command` with stand-ins for the key and the value, so the baseline follows
//! the script's protocol. `--print-put-args` prints that list as JSON (`{key}` and `{value}` mark
//! the stand-ins); `cargo xtask bench` builds its `redis-benchmark` command line from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

/// mimalloc, as the benchmark's other clients (redis-benchmark, linked with jemalloc) have a
/// fast allocator too; glibc's is slow when a pipeline frees many small buffers at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use redis::aio::MultiplexedConnection;
use redis::{Arg, Value};
use stateful_redis_scripts::{Invocation as _, Write, WriteOp};

/// Commands per pipeline in `pipeline16` mode.
const PIPELINE_DEPTH: u64 = 16;
/// Stand-ins for the key and the value in the argument template.
const KEY_MARK: &str = "\0key\0";
const VALUE_MARK: &[u8] = b"\0value\0";

/// How the tasks send their commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// One command at a time per task, all tasks on one multiplexed connection.
    Shared,
    /// Explicit pipelines of 16 commands per task, all tasks on one multiplexed connection.
    #[value(name = "pipeline16")]
    #[serde(rename = "pipeline16")]
    Pipeline16,
}

/// Options.
#[derive(Debug, clap::Parser)]
#[command(
    name = "plain",
    about = "Plain redis-crate baseline: EVALSHA write.lua put, like `stateful-redis load`"
)]
struct Args {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// How commands are sent.
    #[arg(long, value_enum, default_value_t = Mode::Shared)]
    mode: Mode,
    /// Concurrent tasks.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Total commands.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    ops: u64,
    /// Bytes of each value (a format byte 0x03 is put in front, as `BytesCodec` does).
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct entities the commands spread over.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    entities: u64,
    /// SHA1 of write.lua as loaded on the server; without it the script is loaded first.
    #[arg(long)]
    sha: Option<String>,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Print the arguments of a put after `EVALSHA <sha>` as a JSON array and exit.
    #[arg(long)]
    print_put_args: bool,
    /// Print the source of the write script, as the scripts crate loads it, and exit.
    #[arg(long)]
    print_write_script: bool,
}

/// The result of a run.
#[derive(Debug, serde::Serialize)]
struct Summary {
    ops: u64,
    errors: u64,
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// `command` (shared) or `pipeline` (pipeline16): what one latency sample is.
    latency_per: &'static str,
    mode: Mode,
    concurrency: u32,
    elapsed_s: f64,
}

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One argument of the put after `EVALSHA <sha>`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Literal(Vec<u8>),
    Key,
    Value,
}

/// The arguments the scripts crate sends for a plain put, with stand-ins for the key and the value.
fn put_template() -> anyhow::Result<Vec<Slot>> {
    let cmd = Write::new(KEY_MARK, WriteOp::Put, Some(VALUE_MARK)).command();
    let slots: Vec<Slot> = cmd
        .args_iter()
        .skip(2) // EVALSHA <sha>
        .map(|arg| match arg {
            Arg::Simple(bytes) if bytes == KEY_MARK.as_bytes() => Ok(Slot::Key),
            Arg::Simple(bytes) if bytes == VALUE_MARK => Ok(Slot::Value),
            Arg::Simple(bytes) => Ok(Slot::Literal(bytes.to_vec())),
            _ => Err(anyhow::anyhow!("a put has an argument that is not plain bytes")),
        })
        .collect::<anyhow::Result<_>>()?;
    if !(slots.contains(&Slot::Key) && slots.contains(&Slot::Value)) {
        bail!("the put command {slots:?} carries no key or no value");
    }
    Ok(slots)
}

#[allow(clippy::print_stdout, reason = "the script is what was asked for")]
fn print_write_script() -> anyhow::Result<()> {
    println!("{}", stateful_redis_scripts::WRITE.source());
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the argument list is what was asked for")]
fn print_put_args(template: &[Slot]) -> anyhow::Result<()> {
    let words = template
        .iter()
        .map(|slot| match slot {
            Slot::Key => Ok("{key}".to_owned()),
            Slot::Value => Ok("{value}".to_owned()),
            Slot::Literal(bytes) => String::from_utf8(bytes.clone()).context("a put argument is not UTF-8"),
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    println!("{}", serde_json::to_string(&words)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let template = put_template()?;
    if args.print_put_args {
        return print_put_args(&template);
    }
    if args.print_write_script {
        return print_write_script();
    }
    #[allow(clippy::disallowed_methods, reason = "the baseline must be plain redis crate code")]
    let client = redis::Client::open(args.url.as_str()).with_context(|| format!("bad URL {}", args.url))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let sha = match &args.sha {
        Some(sha) => sha.clone(),
        None => redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(stateful_redis_scripts::WRITE.source())
            .query_async(&mut conn)
            .await
            .context("SCRIPT LOAD write.lua")?,
    };
    let mut value = vec![0x03];
    value.resize(args.value_size + 1, b'v');
    let job = Arc::new(Job {
        sha,
        template,
        value,
        entities: args.entities,
        limit: args.ops,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency as usize);
    for task in 0..args.concurrency {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (u64::from(task) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        tasks.push(tokio::spawn(Arc::clone(&job).run(conn.clone(), args.mode, seed)));
    }
    let mut histogram = new_histogram()?;
    for task in tasks {
        histogram
            .add(task.await.context("task")??)
            .context("merging latencies")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = job.done.load(Ordering::Relaxed);
    let summary = Summary {
        ops,
        errors: job.errors.load(Ordering::Relaxed),
        ops_per_sec: (ops as f64 / elapsed * 10.0).round() / 10.0,
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        latency_per: match args.mode {
            Mode::Shared => "command",
            Mode::Pipeline16 => "pipeline",
        },
        mode: args.mode,
        concurrency: args.concurrency,
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
    };
    print_summary(&summary, args.json)?;
    if summary.errors > 0 {
        bail!("{} commands failed", summary.errors);
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the summary is the program's output")]
fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "{} commands ({} errors) in {:.2} s: {:.0} ops/s, latency per {} p50 {} µs, p99 {} µs, max {} µs",
            s.ops, s.errors, s.elapsed_s, s.ops_per_sec, s.latency_per, s.p50_us, s.p99_us, s.max_us
        );
    }
    Ok(())
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

/// What every task shares: the command's parts and the counters.
struct Job {
    sha: String,
    template: Vec<Slot>,
    value: Vec<u8>,
    entities: u64,
    limit: u64,
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

impl Job {
    /// Claims up to `n` of the remaining commands; 0 when none are left.
    fn claim(&self, n: u64) -> u64 {
        let start = self.issued.fetch_add(n, Ordering::Relaxed);
        self.limit.saturating_sub(start).min(n)
    }

    /// `EVALSHA <sha> <the put's arguments>` on `load:{e<n>}:s`, n random below `entities`.
    fn command(&self, rng: &mut u64) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha);
        for slot in &self.template {
            match slot {
                Slot::Literal(bytes) => cmd.arg(bytes.as_slice()),
                Slot::Key => cmd.arg(format!("load:{{e{}}}:s", next(rng) % self.entities)),
                Slot::Value => cmd.arg(self.value.as_slice()),
            };
        }
        cmd
    }

    async fn run(
        self: Arc<Self>,
        mut conn: MultiplexedConnection,
        mode: Mode,
        mut rng: u64,
    ) -> anyhow::Result<Histogram<u64>> {
        let mut histogram = new_histogram()?;
        let mut reported = 0;
        let batch = match mode {
            Mode::Shared => 1,
            Mode::Pipeline16 => PIPELINE_DEPTH,
        };
        loop {
            let n = self.claim(batch);
            if n == 0 {
                break;
            }
            let start = Instant::now();
            let failed = match mode {
                Mode::Shared => {
                    let reply: redis::RedisResult<Value> = self.command(&mut rng).query_async(&mut conn).await;
                    match reply {
                        Ok(reply) => u64::from(!applied(&reply, &mut reported)),
                        Err(e) => {
                            report(&e, &mut reported);
                            1
                        }
                    }
                }
                Mode::Pipeline16 => {
                    let mut pipe = redis::pipe();
                    for _ in 0..n {
                        pipe.add_command(self.command(&mut rng));
                    }
                    match pipe.query_async::<Vec<Value>>(&mut conn).await {
                        Ok(replies) => {
                            let good = replies.iter().filter(|reply| applied(reply, &mut reported)).count();
                            n - good as u64
                        }
                        Err(e) => {
                            report(&e, &mut reported);
                            n
                        }
                    }
                }
            };
            let micros = (start.elapsed().as_micros() as u64).max(1);
            let _ = histogram.record(micros);
            self.done.fetch_add(n, Ordering::Relaxed);
            self.errors.fetch_add(failed, Ordering::Relaxed);
        }
        Ok(histogram)
    }
}

/// Whether `reply` is the write script's "applied": the new version (`[1, version]` from older
/// versions of write.lua); reports what else it is.
fn applied(reply: &Value, reported: &mut u32) -> bool {
    let ok = match reply {
        Value::Int(version) => *version > 0,
        Value::Array(items) => matches!(items.first(), Some(Value::Int(1))),
        _ => false,
    };
    if !ok {
        report(&format!("unexpected reply {reply:?}"), reported);
    }
    ok
}

/// Prints the first few failures of a task on stderr.
fn report(error: &dyn std::fmt::Display, reported: &mut u32) {
    if *reported < 3 {
        *reported += 1;
        eprintln!("warning: command failed: {error}");
    }
}

/// xorshift64*, as `stateful-redis load` uses to pick entities.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
