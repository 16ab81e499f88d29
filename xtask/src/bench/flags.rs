//! The arguments of `cargo xtask bench`: `[--quick] [--baseline FILE] [--fail-on-regression] [--fleet-only]`.

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
    /// `--fail-on-regression`: exit non-zero when a figure got worse than the baseline's by more
    /// than this run's noise.
    pub(super) fail_on_regression: bool,
    /// `--fleet-only`: only the fleet run (10 s), its figures printed, no report stored.
    pub(super) fleet_only: bool,
}

impl Flags {
    /// Reads `args`; an unknown argument is an error that names the ones there are.
    pub(super) fn parse(args: &[OsString]) -> anyhow::Result<Self> {
        let mut flags = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--quick") => flags.quick = true,
                Some("--fail-on-regression") => flags.fail_on_regression = true,
                Some("--fleet-only") => flags.fleet_only = true,
                Some("--baseline") => {
                    flags.baseline = Some(args.next().context("`--baseline` needs a file")?.into());
                }
                _ => bail!(
                    "unknown argument `{}`: `cargo xtask bench` takes `--quick`, `--baseline FILE`, `--fail-on-regression` and `--fleet-only`",
                    arg.to_string_lossy()
                ),
            }
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_flag_and_names_them_on_an_unknown_one() {
        let args: Vec<OsString> = ["--quick", "--baseline", "old.json", "--fail-on-regression"]
            .iter()
            .map(OsString::from)
            .collect();
        let flags = Flags::parse(&args).expect("valid");
        assert!(flags.quick && flags.fail_on_regression);
        assert_eq!(flags.baseline, Some(PathBuf::from("old.json")));
        let err = Flags::parse(&[OsString::from("--fail")]).expect_err("unknown");
        assert!(err.to_string().contains("--fail-on-regression"), "{err}");
    }
}
