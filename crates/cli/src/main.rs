//! `stateful-redis`: drive and inspect stateful-redis against a Redis server.

mod check;
mod config;
mod embedded;
mod failure;
mod fleet;
mod load;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use self::failure::{EXIT_STATUS_HELP, Failure, Kind};

/// mimalloc, as the benchmark's other clients (redis-benchmark, linked with jemalloc) have a
/// fast allocator too; glibc's is slow when a pipeline frees many small buffers at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stateful services on Redis: load generation and checks.
#[derive(Debug, Parser)]
#[command(
    name = "stateful-redis",
    version,
    about,
    args_override_self = true,
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// Runtime worker threads; 1 runs everything on one thread (the least CPU per operation).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a fleet of devices with several driver instances (leases and failover, state
    /// machines, exactly-once messages, fenced writes, presence), with a live dashboard,
    /// then verify from Redis that nothing was lost, applied twice or written by a stale
    /// holder.
    ///
    /// During the run one instance is killed (its leases expire and the others take its
    /// devices over) and one is frozen past its lease ttl (its late writes must be refused
    /// as fenced). Exit status: 0 when every check passes, 1 when one fails, 2 when the run
    /// cannot start. The dashboard is drawn on stderr when it is a terminal; a progress
    /// line a second otherwise.
    Fleet(fleet::FleetArgs),
    /// Run many concurrent callers against Redis and report throughput and latency.
    Load(load::LoadArgs),
    /// Check that a Redis deployment keeps the guarantees (eviction, persistence, ACL,
    /// scripts, cluster slots); exits non-zero when one is at risk.
    ///
    /// Checks the standalone server, or every master of a cluster: connectivity and auth, the
    /// server version, `maxmemory-policy` (anything but `noeviction` can evict leases, message
    /// ids, state or fence counters), persistence (AOF and `appendfsync`, RDB `save`) and what
    /// it means for durability, that the scripts load, and that the connected user may run
    /// every command the scripts need (`ACL_COMMANDS`); on a cluster also that all 16384
    /// slots are served. Settings come from `CONFIG GET`, else from `INFO`; what this user
    /// may not read is reported as not verified (a warning).
    ///
    /// Permissions are probed by a read-only script (`#!lua flags=no-writes`) that calls each
    /// command once as this user: the server checks the ACL before it refuses a write, so
    /// nothing is written. The check loads that script and the stateful-redis scripts into
    /// the script cache, as every executor does on connect, and changes nothing else.
    ///
    /// Exit status: 0 when nothing is at risk (warnings are printed), 1 when a guarantee is
    /// at risk, 2 when the server cannot be reached (the report says why) or the
    /// configuration is invalid.
    ///
    /// It needs the server to check (--redis, --config or STATEFUL_REDIS_REDIS__URL): unlike
    /// `load`, it starts no throw-away server, whose settings would say nothing about yours.
    Check(check::CheckArgs),
    /// Print the effective configuration (defaults, file, environment, flags), secrets redacted.
    Config(config::ConfigArgs),
}

impl Command {
    /// Whether the command was asked for JSON (its errors are JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Load(args) => args.json,
            Command::Fleet(args) => args.json,
            Command::Check(args) => args.json,
            Command::Config(_) => false,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are not errors; clap prints them, and other errors under plain text.
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first);
            return Failure::new(Kind::Usage, anyhow::anyhow!("{message}")).report(true);
        }
        Err(e) => e.exit(),
    };
    // The fleet dashboard owns the terminal: log lines would tear it (RUST_LOG still applies).
    let default_filter = match &cli.command {
        Command::Fleet(args) if args.draws_dashboard() => "off",
        // A lost lease is a warning for a service, and the run loses many on purpose.
        Command::Fleet(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    let json = cli.command.json();
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let error = anyhow::Error::new(e).context("cannot start the async runtime");
            return Failure::new(Kind::Failed, error).report(json);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Load(args) => load::run(args).await,
            Command::Fleet(args) => fleet::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Config(args) => config::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}
