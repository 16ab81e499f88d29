//! The arguments of `cargo xtask bench`: `[--quick] [--baseline FILE]`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// What the command line asks for.
#[derive(Debug, Default)]
pub(super) struct Flags {
    /// `--quick`: one round, fewer operations.
    pub(super) quick: bool,
    /// `--baseline FILE`: the report to compare with instead of the previous `report.json`.
    pub(super) baseline: Option<PathBuf>,
}

impl Flags {
    /// Reads `args`; an unknown argument is an error that names the ones there are.
    pub(super) fn parse(args: &[OsString]) -> anyhow::Result<Self> {
        let mut flags = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--quick") => flags.quick = true,
                Some("--baseline") => {
                    flags.baseline = Some(args.next().context("`--baseline` needs a file")?.into());
                }
                _ => bail!(
                    "unknown argument `{}`: `cargo xtask bench` takes `--quick` and `--baseline FILE`",
                    arg.to_string_lossy()
                ),
            }
        }
        Ok(flags)
    }
}
