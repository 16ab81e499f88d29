//! `stateful-redis fleet`: devices driven by several driver instances, with failover, a live
//! dashboard, a verification from Redis at the end, and a report.
//!
//! Jobs by file: `instance` (one driver instance on its own thread), `device` (the device
//! model and the run's ledger), `sample` (the timeline), `dashboard` (the terminal view),
//! `verify` (the verdict), `report` (report.json and report.html).

mod dashboard;
mod device;
mod instance;
mod report;
mod sample;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stateful_redis::{Error, ExecutorConfig, StatefulExecutor};

use self::device::{Device, Ledger};
use self::instance::{Control, Fleet, Life, Op};
use self::sample::{Mark, Sampler, Timeline};
use self::verify::{Check, Fault};
use crate::embedded::choose_server;
use crate::failure::{Failure, Kind};

/// How long the run's device state and message ids stay in Redis after it (its namespace is
/// its own, `fleet-<start time>`).
pub(crate) const KEEP_STATE: Duration = Duration::from_secs(3600);

/// How often the run looks at its fleet (chaos, phases, convergence).
const TICK: Duration = Duration::from_millis(250);

/// Ticks between two samples (and dashboard frames): one a second.
const SAMPLE_EVERY: u64 = 4;

/// The longest the run waits for every device to be held before its traffic clock starts.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Options of `fleet`.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// Redis URL; without it (and without one in --config or STATEFUL_REDIS_REDIS__URL) a
    /// throw-away redis-server is started from PATH for the run. With --cluster: the seed
    /// nodes, comma-separated.
    #[arg(long)]
    redis: Option<String>,
    /// Talk to a Redis Cluster (--redis names its seed nodes).
    #[arg(long)]
    cluster: bool,
    /// A configuration file (TOML), as for `load`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Devices in the fleet.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    devices: u32,
    /// Driver instances, each with its own executor and connections (at least 2: one is
    /// killed and one paused during the run).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    instances: u32,
    /// Seconds of device traffic, counted from the moment every device is held (the start,
    /// the settling after the traffic and the verification come on top).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds a device lease lasts; a dead instance's devices are taken over after about
    /// this long. The run needs at least 5 of them (--duration >= 5 x --lease-ttl).
    #[arg(long, default_value_t = 2.0)]
    lease_ttl: f64,
    /// Share of applied messages delivered a second time (each must be a replay).
    #[arg(long, default_value_t = 0.05)]
    dup_rate: f64,
    /// Server stalls to inject (`CLIENT PAUSE` of 200 ms each), spread over the run.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    stalls: u32,
    /// Concurrent device workers per instance.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    tasks: u32,
    /// Write report.json and report.html (charts as inline SVG, no network) into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// No terminal dashboard: a progress line a second on stderr (also when stderr is not a
    /// terminal, and under --json).
    #[arg(long)]
    no_dashboard: bool,
    /// Print one JSON object on stdout instead of the text verdict.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep the run's device and membership records in the given Redis (by default they are
    /// deleted after the verdict; they expire after an hour anyway). Leases and message ids
    /// expire by themselves; fence counters stay, as they must.
    #[arg(long)]
    keep: bool,
    /// For tests of the verification: inject a fault through Redis before verifying.
    #[arg(long, value_enum, hide = true)]
    inject_fault: Option<Fault>,
}

/// The result of a run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) passed: bool,
    pub(crate) checks: Vec<Check>,
    pub(crate) devices: u32,
    pub(crate) instances: u32,
    pub(crate) duration_s: f64,
    pub(crate) lease_ttl_ms: u64,
    pub(crate) redis: String,
    pub(crate) topology: &'static str,
    pub(crate) namespace: String,
    /// Device operations (messages, redeliveries, telemetry, transitions, acquisitions,
    /// heartbeat calls) during the traffic phase.
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    /// Operations per second of the process's CPU time (the client side; `None` where the
    /// CPU time cannot be read).
    pub(crate) ops_per_cpu_sec: Option<f64>,
    pub(crate) by_operation: std::collections::BTreeMap<&'static str, u64>,
    pub(crate) takeovers: usize,
    /// From a dead holder's lease expiry to the new owner's first fenced write, in ms.
    pub(crate) takeover_p50_ms: Option<f64>,
    pub(crate) takeover_max_ms: Option<f64>,
    pub(crate) fenced_refusals: u64,
    pub(crate) stale_writes_refused: u64,
    pub(crate) replays: u64,
    pub(crate) errors: std::collections::BTreeMap<String, u64>,
    pub(crate) alerts_fired: Vec<String>,
    pub(crate) suggestions: Vec<stateful_redis::Suggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) report: Option<PathBuf>,
}

impl FleetArgs {
    /// Whether the run draws the dashboard (else it prints a progress line).
    pub(crate) fn draws_dashboard(&self) -> bool {
        !self.json && !self.no_dashboard && dashboard::available()
    }
}

pub(crate) async fn run(args: FleetArgs) -> Result<(), Failure> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err(Failure::config(format_args!(
            "--duration must be a positive number of seconds, not {}",
            args.duration
        )));
    }
    if !(args.lease_ttl.is_finite() && (0.2..=600.0).contains(&args.lease_ttl)) {
        return Err(Failure::config(format_args!(
            "--lease-ttl must be between 0.2 and 600 seconds, not {}",
            args.lease_ttl
        )));
    }
    if args.duration < 5.0 * args.lease_ttl {
        return Err(Failure::config(format_args!(
            "--duration {} is too short for --lease-ttl {}: the kill, the pause and their takeovers need at \
             least 5 lease ttls (lower --lease-ttl or raise --duration)",
            args.duration, args.lease_ttl
        )));
    }
    if !(0.0..=1.0).contains(&args.dup_rate) {
        return Err(Failure::config(format_args!(
            "--dup-rate must be between 0 and 1, not {}",
            args.dup_rate
        )));
    }
    let mut config = stateful_redis::load_config(args.config.as_deref())?;
    config.redis.cluster |= args.cluster;
    if config.redis.cluster && args.redis.is_none() && args.config.is_none() {
        return Err(Failure::config(
            "--cluster needs the seed nodes: --redis redis://host:port[,redis://host:port...]",
        ));
    }
    let embedded = choose_server(args.redis.as_deref(), args.config.is_some(), &mut config)?;
    let ttl = Duration::from_secs_f64(args.lease_ttl);
    let dashboard = args.draws_dashboard();
    // Alerts are evaluated every second, so that a run of seconds shows them; their log
    // lines would tear the dashboard, which shows them instead.
    config.alerts.interval = Duration::from_secs(1);
    config.alerts.log &= !dashboard;
    config.idempotency.keep_for = KEEP_STATE;
    config.validate().map_err(Error::Config)?;
    let shown = config.redis.url.redacted();
    let observer = match StatefulExecutor::builder().config(config.clone()).build().await {
        Ok(exec) => exec,
        Err(e @ Error::Config(_)) => return Err(e.into()),
        Err(e) => {
            return Err(Failure::new(
                Kind::Connect,
                anyhow::Error::new(e).context(format!("connecting to {shown}")),
            ));
        }
    };
    let topology = if observer.pool().is_cluster() {
        "cluster"
    } else {
        "standalone"
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let namespace = format!("fleet-{stamp}");
    let pid = std::process::id();
    let fleet = Arc::new(Fleet {
        members: format!("{namespace}-members"),
        namespace,
        devices: args.devices,
        names: (0..args.instances).map(|n| format!("driver-{n}@{pid}")).collect(),
        ttl,
        window: ttl.max(Duration::from_millis(500)),
        dup_rate: args.dup_rate,
        tasks: args.tasks,
        ledger: Ledger::new(args.devices),
    });
    let controls: Vec<Arc<Control>> = fleet
        .names
        .iter()
        .enumerate()
        .map(|(n, name)| Arc::new(Control::new(n, name.clone())))
        .collect();
    let mut threads = Vec::new();
    for control in &controls {
        let thread =
            instance::spawn(Arc::clone(&fleet), Arc::clone(control), instance_config(&config)).map_err(|e| {
                Failure::new(
                    Kind::Failed,
                    anyhow::Error::new(e).context("starting a driver instance"),
                )
            })?;
        threads.push(thread);
    }
    let started = Instant::now();
    let mut sampler = Sampler::new(started);
    let mut timeline = Timeline::default();
    let mut screen = if dashboard {
        dashboard::Screen::open().ok()
    } else {
        None
    };
    let presence = observer.presence(&fleet.namespace)?.with_window(fleet.window);
    let plan = Plan::new(&args, controls.len());
    let mut done_chaos = 0usize;
    // Chaos, phases and convergence are looked at every tick; the fleet is sampled (and
    // drawn) every SAMPLE_EVERY ticks.
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u64;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut interrupted = false;
    // The traffic's clock starts once every device is held (or after READY_WAIT): the
    // chaos needs owners to kill and pause, whatever the machine's load at start.
    let mut ready: Option<(Instant, f64, u64, Option<f64>)> = None;
    let mut ops_at_end = None;
    let mut settle_deadline = None;
    let mut converged_at = None;
    let mut settled_since = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
            }
        }
        ticks += 1;
        let sample_due = ticks % SAMPLE_EVERY == 1;
        let t = sampler.elapsed();
        let held: u64 = controls
            .iter()
            .filter(|c| !c.is_killed())
            .map(|c| c.stats.held.load(Ordering::Relaxed))
            .sum();
        if ready.is_none() && (held == u64::from(args.devices) || started.elapsed() >= READY_WAIT || interrupted) {
            ready = Some((Instant::now(), t, total_ops(&controls), cpu_seconds()));
            timeline.marks.push(Mark {
                t,
                what: format!("{held} of {} devices held: traffic clock starts", args.devices),
            });
        }
        let Some((ready_at, ready_t, ops_at_ready, cpu_at_ready)) = ready else {
            if !sample_due {
                continue;
            }
            let sample = sampler.sample(&controls, None);
            if let Some(screen) = &mut screen {
                let _ = screen.draw(&sample, &timeline, &fleet, args.duration);
            } else if !args.json {
                eprintln!("{}", dashboard::progress_line(&sample, args.devices));
            }
            timeline.samples.push(sample);
            continue;
        };
        let traffic_end = ready_at + Duration::from_secs_f64(args.duration);
        while let Some(event) = plan.events.get(done_chaos).filter(|e| e.at <= t - ready_t) {
            done_chaos += 1;
            let what = chaos(event, &controls, &observer).await;
            timeline.marks.push(Mark { t, what });
        }
        let now = Instant::now();
        if (now >= traffic_end || interrupted) && ops_at_end.is_none() {
            ops_at_end = Some((
                total_ops(&controls) - ops_at_ready,
                now.duration_since(ready_at).as_secs_f64(),
                cpu_at_ready,
                cpu_seconds(),
            ));
            for control in &controls {
                control.settle();
            }
            timeline.marks.push(Mark {
                t,
                what: "traffic stops; the fleet settles".into(),
            });
            settle_deadline = Some(now + ttl * 4 + Duration::from_secs(2));
            settled_since = Some(now);
        }
        if sample_due {
            let active = presence.active_count().await.ok();
            let sample = sampler.sample(&controls, active);
            if timeline.samples.len() % 5 == 0 {
                let now = sample::suggestions(&controls);
                if !now.is_empty() {
                    timeline.suggestions = now;
                }
            }
            match &mut screen {
                Some(screen) => {
                    let _ = screen.draw(&sample, &timeline, &fleet, args.duration);
                }
                None if !args.json => eprintln!("{}", dashboard::progress_line(&sample, args.devices)),
                None => {}
            }
            timeline.samples.push(sample);
        }
        if let Some(deadline) = settle_deadline {
            if held == u64::from(args.devices) && converged_at.is_none() {
                converged_at = Some(now);
            }
            // Converged, and a presence window since the traffic stopped: devices that
            // went offline have aged out.
            let aged = converged_at.is_some() && settled_since.is_some_and(|t| now >= t + fleet.window + fleet.beat());
            if aged || now >= deadline {
                break;
            }
        }
    }
    drop(screen);
    // One fresh heartbeat of every active device, so that the count does not hang on
    // the timing of the periodic ones.
    // Frozen first: no takeover writes while the verdict is read.
    let running: Vec<&Arc<Control>> = controls.iter().filter(|c| c.life() == Life::Running).collect();
    for c in &running {
        c.freeze();
        c.beat_now(fleet.tasks, true);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !running.iter().all(|c| c.beat_now(fleet.tasks, false)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The zombie: the killed instance's late writes with the fences it held.
    let zombie = zombie_writes(&observer, &fleet, &controls).await;
    if let Some(fault) = args.inject_fault {
        verify::inject(&observer, &fleet, fault).await?;
    }
    let checks = verify::verify(&observer, &fleet, &controls, zombie).await?;
    for control in &controls {
        control.finish();
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(Err(e)) => Some(e),
                Err(_) => Some("a driver instance panicked".to_owned()),
                Ok(Ok(())) => None,
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for failure in &joined {
        tracing::error!(%failure, "driver instance failed");
    }
    let (ops, elapsed, cpu_start, cpu_end) =
        ops_at_end.unwrap_or((total_ops(&controls), started.elapsed().as_secs_f64(), None, None));
    let mut summary = summarize(
        &args,
        &fleet,
        &controls,
        &timeline,
        checks,
        (ops, elapsed),
        shown,
        topology,
    );
    summary.ops_per_cpu_sec = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if b > a => Some((ops as f64 / (b - a)).round()),
        _ => None,
    };
    if !joined.is_empty() {
        summary.passed = false;
        summary.checks.push(Check {
            name: "every instance ran to the end",
            passed: false,
            detail: joined.join("; "),
        });
    }
    if let Some(dir) = &args.report {
        report::write(dir, &summary, &timeline, &fleet).map_err(|e| {
            Failure::new(
                Kind::Failed,
                e.context(format!("writing the report into {}", dir.display())),
            )
        })?;
        summary.report = Some(dir.join("report.html"));
    }
    if embedded.is_none()
        && !args.keep
        && let Err(e) = clean_up(&observer, &fleet).await
    {
        eprintln!("warning: the run's records stay in Redis (they expire in an hour): {e:#}");
    }
    observer.shutdown().await;
    drop(embedded);
    print_summary(&summary, args.json)?;
    if summary.passed {
        Ok(())
    } else {
        let failed: Vec<&str> = summary.checks.iter().filter(|c| !c.passed).map(|c| c.name).collect();
        Err(Failure::new(
            Kind::Failed,
            anyhow::anyhow!("verification failed: {}", failed.join(", ")),
        ))
    }
}

/// The instances' configuration: the run's, with few connections each.
fn instance_config(config: &ExecutorConfig) -> ExecutorConfig {
    let mut config = config.clone();
    config.redis.pool.max_size = config.redis.pool.max_size.min(4);
    config.redis.pool.min_idle = config.redis.pool.min_idle.min(1);
    config
}

/// One chaos event of the plan.
#[derive(Debug)]
struct Event {
    at: f64,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Kill(usize),
    Pause(usize, Duration),
    Stall(Duration),
}

/// When the run kills, pauses and stalls.
#[derive(Debug)]
struct Plan {
    events: Vec<Event>,
}

impl Plan {
    fn new(args: &FleetArgs, instances: usize) -> Self {
        let d = args.duration;
        let ttl = args.lease_ttl;
        // The kill early; the pause a ttl later at least, so that it ends (1.5 ttl on) with
        // 1.5 ttl or more of traffic left for its late writes and the takeovers.
        let kill = d * 0.15;
        let mut events = vec![
            Event {
                at: kill,
                action: Action::Kill(instances - 1),
            },
            Event {
                at: (d * 0.4).max(kill + ttl),
                // Past the lease ttl: its leases expire while it sleeps.
                action: Action::Pause(0, Duration::from_secs_f64(ttl * 1.5)),
            },
        ];
        for n in 0..args.stalls {
            events.push(Event {
                at: d * (0.3 + 0.6 * f64::from(n + 1) / f64::from(args.stalls + 1)),
                action: Action::Stall(Duration::from_millis(200)),
            });
        }
        events.sort_by(|a, b| a.at.total_cmp(&b.at));
        Self { events }
    }
}

/// Carries out `event`; what it did, for the timeline.
async fn chaos(event: &Event, controls: &[Arc<Control>], observer: &StatefulExecutor) -> String {
    match event.action {
        Action::Kill(n) => {
            controls[n].kill();
            format!("{} killed", controls[n].name)
        }
        Action::Pause(n, d) => {
            controls[n].pause(d);
            format!("{} paused for {:.1} s", controls[n].name, d.as_secs_f64())
        }
        Action::Stall(d) => {
            let mut cmd = stateful_redis::redis::cmd("CLIENT");
            cmd.arg("PAUSE").arg(d.as_millis() as u64).arg("ALL");
            let pool = observer.pool();
            let ok = if pool.is_cluster() {
                pool.to_every_master(std::slice::from_ref(&cmd))
                    .await
                    .iter()
                    .all(|(_, r)| r.is_ok())
            } else {
                pool.pipeline(0, [&cmd]).await.is_ok()
            };
            if ok {
                format!("server stalled {} ms", d.as_millis())
            } else {
                "server stall refused".into()
            }
        }
    }
}

/// Deletes the run's device and membership records (`StateHandle::delete`, 16 at a time).
async fn clean_up(observer: &StatefulExecutor, fleet: &Fleet) -> anyhow::Result<()> {
    const PARTS: u32 = 16;
    let devices = observer.state::<Device>(&fleet.namespace)?;
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..PARTS {
        let (devices, n) = (devices.clone(), fleet.devices);
        tasks.spawn(async move {
            for i in (part..n).step_by(PARTS as usize) {
                devices.delete(&device::device_id(i)).await?;
            }
            Ok::<(), Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let members = observer.state::<u64>(&fleet.members)?;
    for name in &fleet.names {
        members.delete(name).await?;
    }
    Ok(())
}

/// The killed instance comes back as a zombie and writes with the fences it held: every
/// write must be refused. Returns how many it tried and how many were accepted.
async fn zombie_writes(observer: &StatefulExecutor, fleet: &Fleet, controls: &[Arc<Control>]) -> (u64, u64) {
    let Ok(devices) = observer.state::<Device>(&fleet.namespace) else {
        return (0, 0);
    };
    let (mut tried, mut accepted) = (0, 0);
    for control in controls {
        let zombies = control.zombies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for zombie in zombies.iter().take(100) {
            let mut record = zombie.record.clone();
            record.telemetry += 1;
            tried += 1;
            match devices.under(zombie.fence.clone()).cas(zombie.version, &record).await {
                Ok(_) => accepted += 1,
                Err(_) => {
                    control.stats.fenced.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    (tried, accepted)
}

/// For each device the killed instance held: from the end of its lease to the first fenced
/// write of the instance that took it over, in ms.
fn takeover_times(controls: &[Arc<Control>]) -> Vec<f64> {
    let mut first: std::collections::HashMap<u32, Vec<Instant>> = std::collections::HashMap::new();
    for c in controls {
        for &(device, at) in c.stats.first_writes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            first.entry(device).or_default().push(at);
        }
    }
    let mut times = Vec::new();
    for c in controls {
        for zombie in c.zombies.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let after = first
                .get(&zombie.device)
                .and_then(|writes| writes.iter().filter(|&&at| at >= zombie.expires).min());
            if let Some(at) = after {
                times.push(at.duration_since(zombie.expires).as_secs_f64() * 1e3);
            }
        }
    }
    times
}

fn total_ops(controls: &[Arc<Control>]) -> u64 {
    controls
        .iter()
        .map(|c| Op::ALL.iter().map(|&op| c.stats.op(op)).sum::<u64>())
        .sum()
}

/// The process's CPU time (user + system) in seconds, from /proc; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at its closing paren.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux the CLI targets.
    Some((utime + stime) / 100.0)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument a different part of the run"
)]
fn summarize(
    args: &FleetArgs,
    fleet: &Fleet,
    controls: &[Arc<Control>],
    timeline: &Timeline,
    checks: Vec<Check>,
    (ops, elapsed): (u64, f64),
    redis: String,
    topology: &'static str,
) -> Summary {
    let mut takeovers = takeover_times(controls);
    takeovers.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let by_operation = Op::ALL
        .iter()
        .map(|&op| (op.name(), controls.iter().map(|c| c.stats.op(op)).sum()))
        .collect();
    let mut alerts_fired: Vec<String> = timeline
        .samples
        .iter()
        .flat_map(|s| s.alerts.iter().filter(|a| a.state == "firing").map(|a| a.rule.clone()))
        .collect();
    alerts_fired.sort();
    alerts_fired.dedup();
    Summary {
        passed: checks.iter().all(|c| c.passed),
        checks,
        devices: args.devices,
        instances: args.instances,
        duration_s: round(elapsed),
        lease_ttl_ms: fleet.ttl.as_millis() as u64,
        redis,
        topology,
        namespace: fleet.namespace.clone(),
        ops,
        ops_per_sec: round(ops as f64 / elapsed.max(1e-3)),
        ops_per_cpu_sec: None,
        by_operation,
        takeovers: takeovers.len(),
        takeover_p50_ms: takeovers.get(takeovers.len() / 2).copied().map(round),
        takeover_max_ms: takeovers.last().copied().map(round),
        fenced_refusals: controls.iter().map(|c| c.stats.fenced.load(Ordering::Relaxed)).sum(),
        stale_writes_refused: controls
            .iter()
            .map(|c| c.stats.late_refused.load(Ordering::Relaxed))
            .sum(),
        replays: controls.iter().map(|c| c.stats.op(Op::Redelivery)).sum(),
        errors: timeline.samples.last().map(|s| s.errors.clone()).unwrap_or_default(),
        alerts_fired,
        suggestions: timeline.suggestions.clone(),
        report: None,
    }
}

#[allow(clippy::print_stdout, reason = "the verdict is the command's output")]
fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    println!(
        "fleet of {} devices, {} instances, {:.1} s on {} ({}): {} operations, {:.0}/s{}",
        s.devices,
        s.instances,
        s.duration_s,
        s.redis,
        s.topology,
        s.ops,
        s.ops_per_sec,
        s.ops_per_cpu_sec
            .map(|c| format!(", {c:.0} per CPU second"))
            .unwrap_or_default()
    );
    if let (Some(p50), Some(max)) = (s.takeover_p50_ms, s.takeover_max_ms) {
        println!(
            "takeovers: {} devices, lease expiry to the new owner's first write p50 {p50} ms, max {max} ms (lease ttl {} ms)",
            s.takeovers, s.lease_ttl_ms
        );
    }
    println!(
        "fenced writes refused: {}, redeliveries answered as replays: {}",
        s.fenced_refusals, s.replays
    );
    if !s.alerts_fired.is_empty() {
        println!("alerts fired: {}", s.alerts_fired.join(", "));
    }
    for suggestion in &s.suggestions {
        println!(
            "suggestion ({:?}): {} -> {}",
            suggestion.area, suggestion.finding, suggestion.change
        );
    }
    for check in &s.checks {
        println!(
            "{} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    println!("verdict: {}", if s.passed { "PASSED" } else { "FAILED" });
    if let Some(report) = &s.report {
        println!("report: {}", report.display());
    }
    Ok(())
}
