//! Running commands: the workspace root, the cargo to call, and echo-then-run with errors that name
//! the command.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// The workspace root: the parent of xtask's own directory, fixed at compile time.
pub(crate) fn project_root() -> anyhow::Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask's manifest directory has no parent")
}

/// A `cargo` command: the cargo that runs xtask (`$CARGO`) so the same toolchain is used, else `cargo`
/// from PATH.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Prints `cmd` to stderr, runs it from the workspace root and fails, naming it, unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(project_root()?);
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("failed to start `{shown}`"))?;
    if !status.success() {
        bail!("command failed: `{shown}` ({status})");
    }
    Ok(())
}

/// `cmd` as a shell line: the environment it sets, the program and its arguments.
pub(crate) fn display(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| value.map(|value| format!("{}={}", key.to_string_lossy(), quote(value))))
        .collect();
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Single-quotes a word when a shell would otherwise split or expand it.
pub(crate) fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
