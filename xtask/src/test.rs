//! `cargo xtask test`: install the external tools the tests start, then `cargo test --workspace`,
//! then run every example of the facade.

use std::ffi::OsString;

use anyhow::{Context as _, bail};

use crate::{cmd, tools};

/// The facade's examples: every `.rs` file here is one, run by `cargo xtask test`.
const EXAMPLES_DIR: &str = "crates/stateful-redis/examples";

/// Runs every test of the workspace (lib, bins, integration and doc tests); `args` go to cargo test.
/// Then, unless `args` pick packages, runs every example ([`run_examples`]).
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
    cmd::run(&mut cargo)?;
    if selects_packages(args) {
        return Ok(());
    }
    run_examples()
}

/// Runs each example of [`EXAMPLES_DIR`] (found by listing it, so a new one is never left out)
/// with every feature, each against a throw-away redis-server it starts: `REDIS_URL` is
/// removed so that a developer's own Redis is never written to. An example asserts its own
/// claims; every example runs, and the error names those that failed.
fn run_examples() -> anyhow::Result<()> {
    let names = examples()?;
    let mut failed = Vec::new();
    for name in &names {
        let mut cargo = cmd::cargo();
        cargo
            .args([
                "run",
                "--quiet",
                "--all-features",
                "--package",
                "stateful-redis",
                "--example",
                name,
            ])
            .env_remove("REDIS_URL");
        if let Err(e) = cmd::run(&mut cargo) {
            eprintln!("example `{name}` failed: {e}");
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} examples failed: {}",
            failed.len(),
            names.len(),
            failed.join(", ")
        );
    }
    eprintln!("test: all {} examples ran", names.len());
    Ok(())
}

/// The names of the examples: the `.rs` files of [`EXAMPLES_DIR`] (its subdirectories hold
/// shared modules, not examples).
fn examples() -> anyhow::Result<Vec<String>> {
    let dir = cmd::project_root()?.join(EXAMPLES_DIR);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_file()
            && path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    if names.is_empty() {
        bail!("no examples in {}", dir.display());
    }
    names.sort();
    Ok(names)
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
