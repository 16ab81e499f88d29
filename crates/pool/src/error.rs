//! Turning driver errors into the shared error vocabulary, without leaking secrets.

use std::time::Duration;

use redis::{ErrorKind as RedisKind, RedisError, ServerErrorKind};
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
        RedisKind::Server(ServerErrorKind::NoPerm) => Error::NoPermission {
            message: err.to_string(),
        },
        RedisKind::Io | RedisKind::ClusterConnectionNotFound => Error::Connection {
            message: err.to_string(),
            source: Some(Box::new(err)),
        },
        RedisKind::InvalidClientConfig => Error::Connection {
            message: format!("invalid client configuration: {}", err.detail().unwrap_or("")),
            source: None,
        },
        RedisKind::Server(_) | RedisKind::Extension => {
            // WRONGPASS arrives as a server error from AUTH/HELLO on some paths.
            if err.code() == Some("WRONGPASS") {
                return Error::Auth {
                    message: err.to_string(),
                };
            }
            Error::Server {
                message: err.to_string(),
            }
        }
        _ => Error::UnexpectedReply {
            what: "Redis request",
            detail: err.to_string(),
        },
    }
}

/// Whether the error means the connection is gone and must be replaced.
pub(crate) fn breaks_connection(err: &RedisError) -> bool {
    !err.is_timeout() && (err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error())
}
