//! `stateful-redis config`: the effective configuration (defaults ← file ← environment ←
//! flags), every secret redacted.

use std::path::PathBuf;

use stateful_redis::{RedisUrl, load_config, redacted_toml};

use crate::failure::Failure;

/// Options of `config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// A TOML configuration file, one section per part (`[redis]`, `[batch]`, …; see the
    /// README's Configuration section,
    /// https://github.com/stateful-redis/stateful-redis#configuration): what this command prints
    /// is a valid one. The environment goes over it (`STATEFUL_REDIS_BATCH__MAX_BATCH=64`, `__`
    /// between levels).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Redis URL, over the file's and the environment's (a password in it never shows).
    #[arg(long)]
    redis: Option<String>,
}

/// Prints the effective configuration as TOML on stdout.
pub(crate) fn run(args: ConfigArgs) -> Result<(), Failure> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(url) = args.redis {
        config.redis.url = RedisUrl::new(url);
        config.validate().map_err(stateful_redis::Error::Config)?;
    }
    #[allow(clippy::print_stdout, reason = "the command's output")]
    {
        print!("{}", redacted_toml(&config));
    }
    Ok(())
}
