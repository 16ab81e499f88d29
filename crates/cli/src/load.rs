//! `stateful-redis load`: many concurrent callers driving one workload, then a summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::resource::UsageWho;
use stateful_redis::bytes::Bytes;
use stateful_redis::{BytesCodec, Error, Operation, StateHandle, StatefulExecutor, Version};

use crate::embedded::choose_server;
use crate::failure::{Failure, Kind};

/// What each operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// One unconditional versioned write (`put` script) per operation.
    Put,
    /// One compare-and-set per operation, at the caller's last known version.
    Cas,
    /// One read-modify-write (`get` + `cas`, retried on conflict) per operation.
    Update,
    /// One read (a plain `GET` of the entity's record) per operation; a missing entity is
    /// a read like any other.
    Get,
}

impl Workload {
    /// The name `--workload` takes.
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Cas => "cas",
            Workload::Update => "update",
            Workload::Get => "get",
        }
    }

    /// The executor operation each call is (the monitor's figures for it are the run's).
    fn operation(self) -> Operation {
        match self {
            Workload::Put => Operation::Put,
            Workload::Cas => Operation::Cas,
            Workload::Update => Operation::Update,
            Workload::Get => Operation::Get,
        }
    }
}

/// Options of `load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Redis URL; without it (and without one in --config or STATEFUL_REDIS_REDIS__URL) a
    /// throw-away redis-server is started on a free port. With --cluster, one or more
    /// seed nodes separated by commas.
    #[arg(long)]
    redis: Option<String>,
    /// Run on a Redis Cluster (the nodes of --redis are seeds to learn it from).
    #[arg(long)]
    cluster: bool,
    /// A TOML configuration file; the environment (`STATEFUL_REDIS_…`) and the flags
    /// here go over it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Distinct entities the operations spread over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    entities: u64,
    /// Total operations (default 100000 unless --duration is given).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    ops: Option<u64>,
    /// Run for this many seconds instead of a number of operations.
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Bytes of each value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// What each operation does.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Print one JSON object on stdout instead of the text summary (errors: one JSON line
    /// on stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Shared connections (and batch queues) to Redis (default: the configuration's,
    /// redis.pool.pipeline_links, 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    links: Option<u32>,
    /// Pipelines in flight per connection (default: batch.pipelines_in_flight, 2).
    #[arg(long)]
    pipelines_in_flight: Option<usize>,
    /// Most operations per pipeline (default: batch.max_batch, 128).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Most calls of a pipeline in one bundle (one EVALSHA of the `many` script); 1 sends
    /// each call as its own EVALSHA (default: batch.calls_per_bundle, 64).
    #[arg(long, alias = "calls-per-run")]
    calls_per_bundle: Option<usize>,
    /// Serve the run's metrics for Prometheus at http://ADDR/metrics while it runs (such as
    /// 127.0.0.1:9464), under the names the OTLP→Prometheus translation gives; nothing goes
    /// over OTLP then unless an OTLP endpoint is named too.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The summary of a run.
#[derive(Debug, serde::Serialize)]
struct Summary {
    ops: u64,
    ok: u64,
    conflicts: u64,
    errors: u64,
    ops_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    redis: String,
    workload: Workload,
    concurrency: u32,
    entities: u64,
    value_size: usize,
    elapsed_s: f64,
    /// CPU seconds of the whole process (every thread) from the first operation to the end
    /// of the executor's shutdown, its last exports included: the run's cost without the
    /// start-up (connecting, loading scripts, building telemetry providers).
    cpu_s: f64,
    /// On a one-thread runtime (`--threads 1`), the CPU seconds of that thread over the same
    /// span: the executor's and the callers' work, recording telemetry included, without
    /// what other threads do (an OpenTelemetry SDK's export, for one).
    executor_cpu_s: Option<f64>,
    update_retries: u64,
    batches: u64,
    avg_batch: f64,
    max_batch: u64,
    /// Calls sent inside bundles (several calls per `EVALSHA` of the `many` script).
    bundled_calls: u64,
    /// Those bundles.
    bundles: u64,
    /// Whether OpenTelemetry export was on (`OTEL_EXPORTER_OTLP_ENDPOINT` set).
    telemetry: bool,
    /// OTLP exports that failed, metrics and traces (none counted when telemetry is off).
    export_errors: u64,
    /// Alerts firing at the end of the run.
    alerts_firing: Vec<String>,
    /// The advisor's findings on the run.
    suggestions: Vec<stateful_redis::Suggestion>,
    /// `standalone` or `cluster`.
    topology: &'static str,
    /// On a cluster: the commands each master received (`host:port` → commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<std::collections::BTreeMap<String, u64>>,
}

#[derive(Default)]
struct Counters {
    issued: AtomicU64,
    done: AtomicU64,
    ok: AtomicU64,
    conflicts: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
}

enum Limit {
    Ops(u64),
    Until(Instant),
}

pub(crate) async fn run(args: LoadArgs) -> Result<(), Failure> {
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(Failure::config(format_args!(
            "--duration must be a positive number of seconds, not {d}"
        )));
    }
    let mut config = stateful_redis::load_config(args.config.as_deref())?;
    config.redis.cluster |= args.cluster;
    if config.redis.cluster && args.redis.is_none() && args.config.is_none() {
        return Err(Failure::config(
            "--cluster needs the seed nodes: --redis redis://host:port[,redis://host:port...]",
        ));
    }
    // Every write would fail: say so before the run, not as N failed operations after it.
    if args.value_size > config.state.max_value_size {
        return Err(Failure::config(format_args!(
            "--value-size {} is over state.max_value_size {}: every write would be refused; \
             lower --value-size, or raise state.max_value_size (in --config, or \
             STATEFUL_REDIS_STATE__MAX_VALUE_SIZE)",
            args.value_size, config.state.max_value_size
        )));
    }
    let _embedded = choose_server(args.redis.as_deref(), args.config.is_some(), &mut config)?;
    config.state.update_max_attempts = 1000;
    // Exports metrics and traces when the environment names an OTLP endpoint; every other
    // OTEL_* variable (protocol, headers, interval, sampler) is read too.
    config.telemetry.enabled |= stateful_redis::TelemetryConfig::enabled_by_env();
    if let Some(addr) = args.metrics_listen {
        config.telemetry.enabled = true;
        config.telemetry.prometheus_listen = Some(addr);
    }
    if let Some(links) = args.links {
        config.redis.pool.pipeline_links = links;
    }
    if let Some(n) = args.calls_per_bundle {
        config.batch.calls_per_bundle = n;
    }
    if let Some(n) = args.pipelines_in_flight {
        config.batch.pipelines_in_flight = n;
    }
    if let Some(n) = args.max_batch {
        config.batch.max_batch = n;
    }
    config.validate().map_err(Error::Config)?;
    let shown = config.redis.url.redacted();
    let exec = match StatefulExecutor::builder().config(config).build().await {
        Ok(exec) => exec,
        Err(e @ Error::Config(_)) => return Err(e.into()),
        Err(e) => {
            return Err(Failure::new(
                Kind::Connect,
                anyhow::Error::new(e).context(format!("connecting to {shown}")),
            ));
        }
    };
    let handle = exec.state_with_codec::<Bytes, _>("load", BytesCodec)?;
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let limit = match (args.ops, args.duration) {
        (_, Some(secs)) => Limit::Until(Instant::now() + Duration::from_secs_f64(secs)),
        (Some(n), None) => Limit::Ops(n),
        (None, None) => Limit::Ops(100_000),
    };
    let limit = Arc::new(limit);
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let one_thread = tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
    let cpu_before = (cpu_s(UsageWho::RUSAGE_SELF), cpu_s(UsageWho::RUSAGE_THREAD));
    let progress = tokio::spawn(progress(Arc::clone(&counters), Arc::clone(&stop), exec.clone()));
    let mut workers = Vec::with_capacity(args.concurrency as usize);
    for worker in 0..args.concurrency {
        let job = Worker {
            handle: handle.clone(),
            value: value.clone(),
            workload: args.workload,
            entities: args.entities,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (u64::from(worker) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            counters: Arc::clone(&counters),
            limit: Arc::clone(&limit),
        };
        workers.push(tokio::spawn(job.run()));
    }
    for worker in workers {
        worker.await.context("worker")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The latencies are the executor's own: its monitor times every operation (one clock
    // read at the start and one at the end), so the callers here time nothing.
    let latency = exec
        .snapshot()
        .operation(args.workload.operation().as_str())
        .map(|op| (op.p50, op.p90, op.p99, op.max))
        .unwrap_or_default();
    let micros = |d: Duration| d.as_micros() as u64;
    stop.store(true, Ordering::Relaxed);
    // Do not wait for its next tick: that would stretch the run by up to a second.
    progress.abort();
    let batch = exec.batch_stats();
    let scripts = exec.script_stats();
    let nodes = exec.pool().cluster_stats().map(|stats| {
        stats
            .nodes
            .into_iter()
            .map(|n| (n.address, n.commands))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    let suggestions = exec.optimization_suggestions();
    let alerts_firing = exec
        .alerts()
        .alerts()
        .into_iter()
        .filter(|a| a.state == "firing")
        .map(|a| a.rule)
        .collect();
    exec.shutdown().await;
    let cpu_used = (
        cpu_s(UsageWho::RUSAGE_SELF) - cpu_before.0,
        cpu_s(UsageWho::RUSAGE_THREAD) - cpu_before.1,
    );
    let export_errors = exec.telemetry_export_errors();
    let c = &counters;
    let ops = c.done.load(Ordering::Relaxed);
    let summary = Summary {
        ops,
        ok: c.ok.load(Ordering::Relaxed),
        conflicts: c.conflicts.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        ops_per_sec: (ops as f64 / elapsed * 10.0).round() / 10.0,
        p50_us: micros(latency.0),
        p90_us: micros(latency.1),
        p99_us: micros(latency.2),
        max_us: micros(latency.3),
        redis: shown,
        workload: args.workload,
        concurrency: args.concurrency,
        entities: args.entities,
        value_size: args.value_size,
        elapsed_s: (elapsed * 1000.0).round() / 1000.0,
        cpu_s: (cpu_used.0 * 10_000.0).round() / 10_000.0,
        executor_cpu_s: one_thread.then_some((cpu_used.1 * 10_000.0).round() / 10_000.0),
        update_retries: c.retries.load(Ordering::Relaxed),
        batches: batch.batches,
        avg_batch: (batch.sent as f64 / batch.batches.max(1) as f64 * 10.0).round() / 10.0,
        max_batch: batch.max_batch,
        bundled_calls: scripts.bundled_calls,
        bundles: scripts.bundles,
        telemetry: export_errors.is_some(),
        export_errors: export_errors.map_or(0, |(m, t)| m + t),
        alerts_firing,
        suggestions,
        topology: if nodes.is_some() { "cluster" } else { "standalone" },
        nodes,
    };
    print_summary(&summary, args.json)?;
    if summary.errors > 0 {
        return Err(Failure::new(
            Kind::Failed,
            anyhow::anyhow!("{} operations failed", summary.errors),
        ));
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the summary is the command's output")]
fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "{} ops ({} ok, {} conflicts, {} errors) in {:.2} s: {:.0} ops/s, latency p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
            s.ops, s.ok, s.conflicts, s.errors, s.elapsed_s, s.ops_per_sec, s.p50_us, s.p90_us, s.p99_us, s.max_us
        );
        println!(
            "workload {}, {} callers, {} entities, {}-byte values, on {}",
            s.workload.name(),
            s.concurrency,
            s.entities,
            s.value_size,
            s.redis
        );
        if !s.alerts_firing.is_empty() {
            println!("alerts firing: {}", s.alerts_firing.join(", "));
        }
        for suggestion in &s.suggestions {
            println!(
                "suggestion ({:?}): {} -> {}",
                suggestion.area, suggestion.finding, suggestion.change
            );
        }
    }
    Ok(())
}

/// One line a second on stderr: throughput and pool state.
async fn progress(counters: Arc<Counters>, stop: Arc<AtomicBool>, exec: StatefulExecutor) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut second = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        second += 1;
        let done = counters.done.load(Ordering::Relaxed);
        let pool = exec.pool_stats();
        eprintln!(
            "[{second:>3}s] {:>8} ops/s  total {done}  errors {}  in flight {}  links {}/{}",
            done - last,
            counters.errors.load(Ordering::Relaxed),
            exec.in_flight(),
            pool.direct_connected + pool.shared_connected,
            if pool.direct_links > 0 {
                pool.direct_links
            } else {
                pool.shared_links
            },
        );
        last = done;
    }
}

struct Worker {
    handle: StateHandle<Bytes, BytesCodec>,
    value: Bytes,
    workload: Workload,
    entities: u64,
    rng: u64,
    counters: Arc<Counters>,
    limit: Arc<Limit>,
}

impl Worker {
    fn next_entity(&mut self) -> u64 {
        // xorshift64*: cheap and good enough to spread keys.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.entities
    }

    /// Whether to make one more call. With a number of operations, claims them from the
    /// shared count a few at a time (`claimed` holds the rest), so that the callers do not
    /// all write one shared counter per call; the total stays exact.
    fn claim(&self, claimed: &mut u64) -> bool {
        match *self.limit {
            Limit::Ops(n) => {
                if *claimed == 0 {
                    let from = self.counters.issued.fetch_add(CLAIM, Ordering::Relaxed);
                    *claimed = n.saturating_sub(from).min(CLAIM);
                }
                if *claimed == 0 {
                    return false;
                }
                *claimed -= 1;
                true
            }
            Limit::Until(deadline) => Instant::now() < deadline,
        }
    }

    async fn run(mut self) {
        let mut known: std::collections::HashMap<u64, Version> = std::collections::HashMap::new();
        let mut id = String::with_capacity(24);
        let mut reported = 0u32;
        let mut claimed = 0;
        let mut tally = Tally::default();
        let mut digits = itoa::Buffer::new();
        while self.claim(&mut claimed) {
            let entity = self.next_entity();
            // `e` and 12 digits, as redis-benchmark writes `e__rand_int__`: the bench's anchors
            // read and write the same keys.
            let number = digits.format(entity);
            id.clear();
            id.push('e');
            id.extend(std::iter::repeat_n('0', 12usize.saturating_sub(number.len())));
            id.push_str(number);
            let result = match self.workload {
                Workload::Put => self.handle.put(&id, &self.value).await.map(|_| ()),
                Workload::Get => self.handle.get(&id).await.map(|_| ()),
                Workload::Cas => {
                    let expected = known.get(&entity).copied().unwrap_or(Version::NONE);
                    match self.handle.cas(&id, expected, &self.value).await {
                        Ok(v) => {
                            known.insert(entity, v);
                            Ok(())
                        }
                        Err(Error::Conflict { current, .. }) => {
                            known.insert(entity, current);
                            Err(Error::Conflict {
                                entity: String::new(),
                                expected,
                                current,
                            })
                        }
                        Err(e) => Err(e),
                    }
                }
                Workload::Update => {
                    let value = &self.value;
                    match self.handle.update(&id, |_| value.clone()).await {
                        Ok(updated) => {
                            self.counters
                                .retries
                                .fetch_add(u64::from(updated.attempts - 1), Ordering::Relaxed);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) => tally.ok += 1,
                Err(Error::Conflict { .. }) => tally.conflicts += 1,
                Err(e) => {
                    if reported < 3 {
                        reported += 1;
                        tracing::warn!(error = %e, "operation failed");
                    }
                    tally.errors += 1;
                }
            };
            tally.done += 1;
            if tally.done == TALLY {
                tally.add_to(&self.counters);
            }
        }
        tally.add_to(&self.counters);
    }
}

/// Operations a caller claims at a time: few, so that at the end of a run no caller is left
/// with many calls to make alone.
const CLAIM: u64 = 4;

/// Calls a caller counts before adding its counts to the shared ones.
const TALLY: u64 = 16;

/// A caller's own counts, added to the shared ones every [`TALLY`] calls.
#[derive(Default)]
struct Tally {
    done: u64,
    ok: u64,
    conflicts: u64,
    errors: u64,
}

impl Tally {
    fn add_to(&mut self, counters: &Counters) {
        counters.done.fetch_add(self.done, Ordering::Relaxed);
        counters.ok.fetch_add(self.ok, Ordering::Relaxed);
        counters.conflicts.fetch_add(self.conflicts, Ordering::Relaxed);
        counters.errors.fetch_add(self.errors, Ordering::Relaxed);
        *self = Self::default();
    }
}

/// User and system CPU seconds so far of this process (`RUSAGE_SELF`, every thread) or of the
/// calling thread (`RUSAGE_THREAD`); 0 if the OS will not say.
fn cpu_s(who: UsageWho) -> f64 {
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    nix::sys::resource::getrusage(who).map_or(0.0, |u| seconds(u.user_time()) + seconds(u.system_time()))
}
