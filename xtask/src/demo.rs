//! `cargo xtask demo`: a fleet of devices on a throw-away Redis, watched live on the dashboard,
//! ending with the verification verdict and the report's path.

use std::ffi::OsString;

use crate::{cmd, tools};

/// Runs `stateful-redis fleet` from a release build; `args` are appended to its options, so
/// `cargo xtask demo --duration 60` replaces the default duration.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    tools::ensure_redis()?;
    let root = cmd::project_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let report = target.join("demo");
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
            "fleet",
            "--duration",
            "30",
            "--report",
        ])
        .arg(&report)
        .args(args);
    cmd::run(&mut cargo)
}
