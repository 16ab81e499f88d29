//! External programs that `test`, `demo` and `bench` need, found on PATH or installed with apt-get.

use std::env::consts::EXE_SUFFIX;
use std::path::PathBuf;
use std::process::Command;

use anyhow::bail;

use crate::cmd;

/// A program that must be on PATH and where it comes from.
#[derive(Debug)]
struct Tool {
    /// The executable's name on PATH.
    binary: &'static str,
    /// The Debian/Ubuntu package that installs it.
    package: &'static str,
    /// What to install elsewhere, for the error message.
    upstream: &'static str,
}

/// Every external program the tests, the demo and the benchmarks run. Add a row when one needs a new
/// program (and check that the package really puts `binary` on PATH: `ensure` verifies it after
/// installing).
const REQUIRED: &[Tool] = &[
    Tool {
        binary: "redis-server",
        package: "redis-server",
        upstream: "Redis >= 7",
    },
    Tool {
        binary: "redis-cli",
        package: "redis-tools",
        upstream: "Redis >= 7",
    },
    Tool {
        binary: "redis-benchmark",
        package: "redis-tools",
        upstream: "Redis >= 7",
    },
    // The alert tests: a real Alertmanager, and promtool for the shipped Prometheus rules.
    Tool {
        binary: "prometheus-alertmanager",
        package: "prometheus-alertmanager",
        upstream: "Prometheus Alertmanager >= 0.25 (as `prometheus-alertmanager` on PATH)",
    },
    Tool {
        binary: "promtool",
        package: "prometheus",
        upstream: "Prometheus >= 2.40 (for promtool)",
    },
    // The scrape test of the Prometheus endpoint: a real Prometheus server.
    Tool {
        binary: "prometheus",
        package: "prometheus",
        upstream: "Prometheus >= 2.40",
    },
    // The fleet tests: its dashboard in a real terminal, its HTML report in a real browser.
    Tool {
        binary: "tmux",
        package: "tmux",
        upstream: "tmux",
    },
    Tool {
        binary: "chromium",
        package: "chromium",
        upstream: "Chromium (as `chromium` on PATH)",
    },
];

/// Makes sure every [`REQUIRED`] program is on PATH.
///
/// Missing ones are installed with apt-get when running as root on a machine that has it (a fresh
/// CI box); otherwise this fails with the command to run.
pub(crate) fn ensure() -> anyhow::Result<()> {
    ensure_these(REQUIRED)
}

/// Makes sure the Redis programs are on PATH: what `demo` and `bench` run (the alerting
/// tools are for the tests only).
pub(crate) fn ensure_redis() -> anyhow::Result<()> {
    ensure_these(&REQUIRED[..3])
}

fn ensure_these(required: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = required
        .iter()
        .filter(|tool| find_on_path(tool.binary).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = unique(missing.iter().map(|tool| tool.package));
    if !(is_root() && find_on_path("apt-get").is_some()) {
        bail!("{}", install_hint(&missing, &packages));
    }

    let names: Vec<&str> = missing.iter().map(|tool| tool.binary).collect();
    eprintln!("{} missing: installing with apt-get", names.join(", "));
    cmd::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;

    let still_missing: Vec<&str> = names
        .into_iter()
        .filter(|binary| find_on_path(binary).is_none())
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "installed {} but {} still not on PATH",
            packages.join(" "),
            still_missing.join(", ")
        );
    }
    Ok(())
}

/// The error for missing programs that this process cannot install itself.
fn install_hint(missing: &[&Tool], packages: &[&str]) -> String {
    let names: Vec<&str> = missing.iter().map(|tool| tool.binary).collect();
    let verb = if names.len() == 1 { "is" } else { "are" };
    let upstream = unique(missing.iter().map(|tool| tool.upstream));
    let all: Vec<&str> = REQUIRED.iter().map(|tool| tool.binary).collect();
    format!(
        "{} {verb} not installed: run `sudo apt-get install {}` (Debian/Ubuntu) or install {} so \
         that {} are on PATH",
        join_and(&names),
        packages.join(" "),
        join_and(&upstream),
        join_and(&all),
    )
}

/// The first full path of executable `name` in PATH, like `which`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let file = format!("{name}{EXE_SUFFIX}");
    std::env::split_paths(&path)
        .map(|dir| dir.join(&file))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file this user may execute.
#[cfg(unix)]
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether `path` is a file (there is no execute bit to check here).
#[cfg(not(unix))]
fn is_executable(path: &std::path::Path) -> bool {
    path.is_file()
}

/// Whether this process runs as root, according to `id -u`.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// The items in order of first appearance, without repeats.
fn unique<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
