//! `cargo xtask lint`: the one definition of the static checks CI runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// The README stays a front page: what it is, a first program, the commands, links.
const README_MAX_LINES: usize = 200;
/// ARCHITECTURE.md stays a map (rust-analyzer's is 27 KB for ten times our code).
const ARCHITECTURE_MAX_LINES: usize = 400;
const ARCHITECTURE_MAX_BYTES: usize = 30_000;
/// All of docs/ together, in bytes (decimal KB: 120,000, not 120 KiB): ADRs keep the decision and
/// its reasons, and every fact has one home.
const DOCS_MAX_BYTES: u64 = 120_000;
/// How many of the largest files a failing docs/ check names.
const DOCS_LARGEST_SHOWN: usize = 5;

/// Checks the docs' sizes, formatting, clippy lints and rustdoc, all with warnings denied; stops
/// at the first failure.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("`cargo xtask lint` takes no arguments");
    }

    docs_size()?;

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

    // The facade with its default features off (no HTTP notifiers, no config files): what a
    // team that turns them off builds.
    let mut lean = cmd::cargo();
    lean.args([
        "clippy",
        "--package",
        "stateful-redis",
        "--no-default-features",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    cmd::run(&mut lean).context(
        "clippy check of `stateful-redis --no-default-features` failed: gate what needs a feature \
         with `#[cfg(feature = ...)]` or `required-features`",
    )?;

    cmd::run(&mut doc()).context(
        "documentation check failed: fix the rustdoc warnings reported above (missing docs, broken \
         intra-doc links)",
    )?;

    eprintln!("lint: all checks passed");
    Ok(())
}

/// Fails when README.md, docs/ARCHITECTURE.md or docs/ as a whole outgrow their limits: each
/// fact has one home (settings and API caveats in rustdoc), and the others only point to it.
fn docs_size() -> anyhow::Result<()> {
    let root = cmd::project_root()?;
    let read = |path: &str| std::fs::read_to_string(root.join(path)).with_context(|| format!("cannot read {path}"));
    let readme = read("README.md")?;
    let lines = readme.lines().count();
    if lines > README_MAX_LINES {
        bail!(
            "README.md has {lines} lines, more than {README_MAX_LINES}: move detail to docs/ or \
             rustdoc and link to it"
        );
    }
    let architecture = read("docs/ARCHITECTURE.md")?;
    let (lines, bytes) = (architecture.lines().count(), architecture.len());
    if lines > ARCHITECTURE_MAX_LINES || bytes > ARCHITECTURE_MAX_BYTES {
        bail!(
            "docs/ARCHITECTURE.md has {lines} lines and {bytes} bytes, more than \
             {ARCHITECTURE_MAX_LINES} lines or {ARCHITECTURE_MAX_BYTES} bytes: keep it a map \
             (invariants and boundaries), with details in rustdoc"
        );
    }
    let mut files = Vec::new();
    collect_files(&root.join("docs"), &mut files)?;
    let total: u64 = files.iter().map(|(_, bytes)| bytes).sum();
    if total > DOCS_MAX_BYTES {
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let largest = files
            .iter()
            .take(DOCS_LARGEST_SHOWN)
            .map(|(path, bytes)| {
                let path = path.strip_prefix(root).unwrap_or(path);
                format!("{} ({bytes})", path.display())
            })
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "docs/ holds {total} bytes in {} files, more than {DOCS_MAX_BYTES} bytes (120 KB, \
             decimal): cut ADRs to the decision and its reasons, state each fact once and link to \
             it; largest: {largest}",
            files.len()
        );
    }
    Ok(())
}

/// Every file under `dir`, recursively, with its size in bytes.
fn collect_files(dir: &Path, files: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push((path, meta.len()));
        }
    }
    Ok(())
}

/// `cargo doc` for the workspace's own crates with rustdoc warnings as errors.
fn doc() -> Command {
    let mut doc = cmd::cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    doc
}
