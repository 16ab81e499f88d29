//! `cargo xtask`: the project's tasks (test, lint, demo, bench, publish-check), written in Rust so
//! that developers and CI run exactly the same commands.
//!
//! Reached through the alias in `.cargo/config.toml`; `cargo xtask` with no arguments prints the tasks.

mod bench;
mod cmd;
mod demo;
mod lint;
mod publish;
mod test;
mod tools;

use std::ffi::OsString;
use std::process::ExitCode;

/// What `cargo xtask`, `cargo xtask help` and an unknown task print.
const HELP: &str = "\
cargo xtask <TASK> [ARGS...]

Tasks:
  test [ARGS...]   install redis-server, redis-cli, tmux and chromium if missing (as root, with
                   apt-get: the fleet dashboard and report tests use the last two), then
                   `cargo test --workspace [ARGS...]` (unit, integration and doc tests), then
                   run every example of crates/stateful-redis/examples (each asserts what it
                   shows); ARGS go to cargo test, e.g. `cargo xtask test -p stateful-redis-core`
                   (ARGS that pick packages skip the examples)
  lint             `cargo fmt --check`, clippy and rustdoc with warnings denied: what CI checks
  demo [ARGS...]   install Redis tools if missing, then run the release CLI:
                   `stateful-redis fleet --duration 30 --report target/demo [ARGS...]` (10,000
                   devices, 4 driver instances, a kill and a pause, the live dashboard), ending
                   with the verification verdict and the report's path
  bench [--quick] [--baseline FILE] [--fail-on-regression] [--fleet-only]
                   install Redis tools if missing (redis-benchmark too), run the divan
                   micro-benchmarks, then the executor against redis-benchmark and plain
                   redis-crate code on one throw-away redis-server (5 interleaved rounds;
                   --quick: 1 round, fewer operations); writes target/bench/report.{json,md},
                   compares with the previous report.json (or FILE) and prints report.md;
                   --fail-on-regression: exit 1 when a figure got worse than the baseline's
                   (throughput lower, latency or CPU higher) by more than this run's noise,
                   max(2 x spread, 5%), naming each such figure; the fleet's figures (ops/s,
                   per core, takeover time vs the lease ttl; charts in target/bench/fleet/);
                   --fleet-only: only the fleet run (10 s), printed, nothing stored
  publish-check    `cargo publish --workspace --dry-run --allow-dirty`: packages every published
                   crate and builds each package alone, uploading nothing; reads the
                   crates.io index (2 to 5 minutes, so not part of `lint`)
  help             print this help";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Printed by hand: `main() -> Result` would add a backtrace under RUST_BACKTRACE=1,
            // which `test` sets and which says nothing about a failed command.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Dispatches the task named by the first argument.
fn run() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(task) = args.next() else {
        print_help();
        return Ok(());
    };
    let rest: Vec<OsString> = args.collect();
    match task.to_str() {
        Some("help" | "--help" | "-h") => {
            print_help();
            Ok(())
        }
        Some("test") => test::run(&rest),
        Some("lint") => lint::run(&rest),
        Some("demo") => demo::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("publish-check") => publish::run(&rest),
        _ => anyhow::bail!("unknown task `{}`\n\n{HELP}", task.to_string_lossy()),
    }
}

/// Prints [`HELP`] to stdout, where a user asking for help expects it.
#[allow(
    clippy::print_stdout,
    reason = "help that was asked for belongs on stdout; xtask is a command-line tool"
)]
fn print_help() {
    println!("{HELP}");
}
