//! How a command fails: what kind of failure it is, the exit status that says so, and how it
//! is printed (text, or one JSON line under `--json`).

use std::process::ExitCode;

/// What `--help` says about exit statuses and errors; [`Kind::exit_code`] keeps to it.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status: 0 on success; 1 when the command ran and failed (operations failed, or `check` \
found a guarantee at risk); 2 when it could not run: invalid arguments or configuration, or \
Redis cannot be reached (address, TLS, credentials).

Errors go to stderr: `error: …`, or with --json one line \
{\"error\": {\"kind\": …, \"message\": …}} where kind is usage, config, connect or failed. \
Under --json, stdout holds only the command's result.";

/// Why a command did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The command line does not parse (exit 2).
    Usage,
    /// An invalid configuration or flag value (exit 2).
    Config,
    /// Redis cannot be reached or refused the connection: address, TLS, credentials (exit 2).
    Connect,
    /// The command ran and failed: operations failed, or a guarantee is at risk (exit 1).
    Failed,
}

impl Kind {
    /// The name under `--json`.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Config => "config",
            Kind::Connect => "connect",
            Kind::Failed => "failed",
        }
    }

    /// The process's exit status.
    fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage | Kind::Config | Kind::Connect => 2,
        }
    }
}

/// A command's error, with its [`Kind`].
#[derive(Debug)]
pub(crate) struct Failure {
    kind: Kind,
    error: anyhow::Error,
}

impl Failure {
    /// `error` as a failure of `kind`.
    pub(crate) fn new(kind: Kind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    /// An invalid configuration or flag value, said in `message`.
    pub(crate) fn config(message: impl std::fmt::Display) -> Self {
        Self::new(Kind::Config, anyhow::anyhow!("{message}"))
    }

    /// Prints the error on stderr, as text or as one JSON line, and returns the exit status.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        let message = format!("{:#}", self.error);
        if json {
            let line = serde_json::json!({ "error": { "kind": self.kind.as_str(), "message": message } });
            eprintln!("{line}");
        } else {
            eprintln!("error: {message}");
        }
        ExitCode::from(self.kind.exit_code())
    }
}

/// A library error: a configuration error is [`Kind::Config`], anything else [`Kind::Failed`]
/// (the call sites that connect say [`Kind::Connect`] themselves).
impl From<stateful_redis::Error> for Failure {
    fn from(error: stateful_redis::Error) -> Self {
        let kind = match error {
            stateful_redis::Error::Config(_) => Kind::Config,
            _ => Kind::Failed,
        };
        Self::new(kind, error)
    }
}

/// As for [`stateful_redis::Error`] when one is in the chain, else [`Kind::Failed`].
impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let config = error
            .chain()
            .any(|e| matches!(e.downcast_ref(), Some(stateful_redis::Error::Config(_))));
        Self::new(if config { Kind::Config } else { Kind::Failed }, error)
    }
}
