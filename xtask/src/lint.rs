//! `cargo xtask lint`: the one definition of the static checks CI runs.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// Checks formatting, clippy lints and rustdoc, all with warnings denied; stops at the first failure.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("`cargo xtask lint` takes no arguments");
    }

    let mut fmt = cmd::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    cmd::run(&mut fmt).context("formatting check failed: run `cargo fmt --all` and commit the result")?;

    let mut clippy = cmd::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    cmd::run(&mut clippy).context(
        "clippy check failed: fix the lints reported above (`cargo clippy --fix --workspace \
         --all-targets --all-features` fixes some; an `#[allow]` needs a `reason`)",
    )?;

    cmd::run(&mut doc()).context(
        "documentation check failed: fix the rustdoc warnings reported above (missing docs, broken \
         intra-doc links)",
    )?;

    eprintln!("lint: all checks passed");
    Ok(())
}

/// `cargo doc` for the workspace's own crates with rustdoc warnings as errors.
fn doc() -> Command {
    let mut doc = cmd::cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    doc
}
