//! Turning driver errors into the shared error vocabulary, without leaking secrets.

use std::time::Duration;

use redis::{ErrorKind as RedisKind, RedisError};
use stateful_redis_core::Error;

/// Maps a driver error to [`Error`]. `response_timeout` is the limit that applied.
///
/// The driver's messages hold the server's reply or the OS error, never the URL,
/// so no password can reach the result.
pub fn map_redis_error(err: RedisError, response_timeout: Duration) -> Error {
    if err.is_timeout() {
        return Error::Timeout {
            operation: "Redis request",
            after: response_timeout,
        };
    }
    match err.kind() {
        RedisKind::AuthenticationFailed => Error::Auth {
            message: err.detail().unwrap_or("the server refused the credentials").to_owned(),
        },
        RedisKind::Io | RedisKind::ClusterConnectionNotFound => Error::Connection {
            message: err.to_string(),
            source: Some(Box::new(err)),
        },
        RedisKind::InvalidClientConfig => Error::Connection {
            message: format!("invalid client configuration: {}", err.detail().unwrap_or("")),
            source: None,
        },
        // WRONGPASS arrives as a server error from AUTH/HELLO on some paths.
        RedisKind::Server(_) | RedisKind::Extension => server_error(None, reply_text(&err)),
        _ => Error::UnexpectedReply {
            what: "Redis request",
            detail: err.to_string(),
        },
    }
}

/// An error reply as the server sent it (`OOM command not allowed…`), not as the driver
/// displays it (`"OOM": command not allowed…`).
pub fn reply_text(err: &RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => err.to_string(),
    }
}

/// Maps an error reply of the server (`-ERR …`, `-NOPERM …`) to [`Error`]: the one place
/// where error replies are told apart (before a reply gets here, the cluster router reads
/// `MOVED`, `ASK`, `TRYAGAIN` and `CLUSTERDOWN`, and the script runner `NOSCRIPT`).
/// `script` names the script the reply answered, if any.
///
/// A refusal to run for now (`OOM`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`) is
/// [`Error::Unavailable`]: the server did not apply the command. A script that raised one
/// of these from inside (`OOM` on its first write) did not apply anything either, since our
/// scripts check everything before their first write.
pub fn server_error(script: Option<&'static str>, message: String) -> Error {
    let code = message.split(' ').next().unwrap_or("");
    match code {
        "NOPERM" => Error::NoPermission { message },
        "WRONGPASS" | "NOAUTH" => Error::Auth { message },
        "OOM" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "LOADING" => Error::Unavailable { message },
        // A script refused by ACL from inside (`redis.call` of a denied command).
        _ if message.contains("can't run this command") || message.contains("No permissions to access") => {
            Error::NoPermission { message }
        }
        _ => match script {
            Some(script) => Error::Script { script, message },
            None => Error::Server { message },
        },
    }
}

/// Whether the error means the connection is gone and must be replaced.
pub(crate) fn breaks_connection(err: &RedisError) -> bool {
    !err.is_timeout() && (err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error())
}
