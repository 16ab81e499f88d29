//! `cargo xtask publish-check`: packages every published crate and builds each package alone, as
//! `cargo publish` would, without uploading anything.

use std::ffi::OsString;

use anyhow::{Context as _, bail};

use crate::cmd;

/// Runs `cargo publish --workspace --dry-run --allow-dirty`. Cargo skips the `publish = false`
/// members, packages the others in dependency order and resolves a package's not yet published
/// workspace dependencies from the packages it made before, so no crate has to be on crates.io;
/// the crates.io index is still read for the external dependencies. `--allow-dirty` lets it run
/// on a working tree with uncommitted changes.
pub(crate) fn run(args: &[OsString]) -> anyhow::Result<()> {
    if !args.is_empty() {
        bail!("`cargo xtask publish-check` takes no arguments");
    }
    let mut publish = cmd::cargo();
    publish.args(["publish", "--workspace", "--dry-run", "--allow-dirty"]);
    cmd::run(&mut publish).context(
        "publish check failed: a crate would not package or its package would not build alone (a \
         file outside the crate, a dependency without a version, missing metadata)",
    )?;
    eprintln!("publish-check: every published crate packages and builds");
    Ok(())
}
