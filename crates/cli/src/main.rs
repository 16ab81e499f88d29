//! `stateful-redis`: drive and inspect stateful-redis against a Redis server.

mod check;
mod config;
mod embedded;
mod load;

use clap::{Parser, Subcommand};

/// mimalloc, as the benchmark's other clients (redis-benchmark, linked with jemalloc) have a
/// fast allocator too; glibc's is slow when a pipeline frees many small buffers at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stateful services on Redis: load generation and checks.
#[derive(Debug, Parser)]
#[command(name = "stateful-redis", version, about, args_override_self = true)]
struct Cli {
    /// Runtime worker threads; 1 runs everything on one thread (the least CPU per operation).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// at risk or the server cannot be reached.
    ///
    /// It needs the server to check (--redis, --config or STATEFUL_REDIS_REDIS__URL): unlike
    /// `load`, it starts no throw-away server, whose settings would say nothing about yours.
    Check(check::CheckArgs),
    /// Print the effective configuration (defaults, file, environment, flags), secrets redacted.
    Config(config::ConfigArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
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
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Load(args) => load::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Config(args) => config::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
