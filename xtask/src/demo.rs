//! `cargo xtask demo`: a ten-second load run against a throw-away Redis, to see the toolkit work.

use std::ffi::OsString;

use crate::{cmd, tools};

/// Runs `stateful-redis load` from a release build; `args` are appended to the load options, so
/// `cargo xtask demo --duration 30` replaces the default duration.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    tools::ensure_redis()?;
    let mut cargo = cmd::cargo();
    cargo
        .args([
            "run",
            "--release",
            "--package",
            "stateful-redis-cli",
            "--bin",
            "stateful-redis",
            "--",
            "load",
            "--duration",
            "10",
            "--concurrency",
            "50",
            "--workload",
            "put",
        ])
        .args(args);
    cmd::run(&mut cargo)
}
