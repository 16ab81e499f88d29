//! `cargo xtask test`: install the external tools the tests start, then `cargo test --workspace`.

use std::ffi::OsString;

use crate::{cmd, tools};

/// Runs every test of the workspace (lib, bins, integration and doc tests); `args` go to cargo test.
///
/// `--workspace` is left out when `args` pick packages themselves: cargo ignores `-p` next to
/// `--workspace` and rejects a second `--workspace`.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    tools::ensure()?;
    let mut cargo = cmd::cargo();
    cargo.args(["test", "--all-features"]);
    if !selects_packages(args) {
        cargo.arg("--workspace");
    }
    cargo.args(args);
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        cargo.env("RUST_BACKTRACE", "1");
    }
    cmd::run(&mut cargo)
}

/// Whether cargo options in `args` (before any `--`) choose the packages to test.
fn selects_packages(args: &[OsString]) -> bool {
    args.iter()
        .map(|arg| arg.to_string_lossy())
        .take_while(|arg| arg != "--")
        .any(|arg| {
            arg.starts_with("-p")
                || arg.starts_with("--package")
                || arg.starts_with("--manifest-path")
                || arg == "--workspace"
                || arg == "--all"
        })
}
