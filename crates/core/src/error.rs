//! The error vocabulary shared by every layer.

use std::time::Duration;

use crate::codec::CodecError;
use crate::config::ConfigError;
use crate::id::InvalidId;
use crate::version::Version;

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with an operation.
///
/// Messages name what was wrong (the entity, the limit, the script) and never hold
/// secrets: connection errors are built from the driver's error kind and message,
/// never from the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An entity id, namespace or status was refused before anything was sent.
    #[error("invalid input: {0}")]
    InvalidId(#[from] InvalidId),
    /// An argument is out of range (a zero TTL, say); nothing was sent.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A compare-and-set found another version.
    #[error("conflict on entity {entity:?}: expected {expected}, found {current}")]
    Conflict {
        /// The entity.
        entity: String,
        /// The version the caller expected.
        expected: Version,
        /// The version in Redis (`v0` if it does not exist).
        current: Version,
    },
    /// A read-modify-write gave up after conflicting on every attempt.
    #[error("entity {entity:?}: update gave up after {attempts} conflicting attempts")]
    TooManyConflicts {
        /// The entity.
        entity: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The entity does not exist.
    #[error("entity {entity:?} not found")]
    NotFound {
        /// The entity.
        entity: String,
    },
    /// A transition was refused: the entity's status is not one of those allowed.
    #[error("entity {entity:?}: transition refused from status {actual:?}")]
    TransitionRefused {
        /// The entity.
        entity: String,
        /// Its actual status (`None`: no status set yet).
        actual: Option<String>,
    },
    /// A lease is held by someone else.
    #[error("entity {entity:?}: lease held by {holder:?} for {expires_in:?} more")]
    LeaseHeld {
        /// The entity.
        entity: String,
        /// Who holds it.
        holder: String,
        /// How long its lease still runs.
        expires_in: Duration,
    },
    /// The lease expired or was taken over: its holder no longer owns the entity.
    #[error("entity {entity:?}: lease with token {token} is lost (now held by {holder:?})")]
    LeaseLost {
        /// The entity.
        entity: String,
        /// The token of the lost lease.
        token: u64,
        /// Who holds the entity now, if anyone.
        holder: Option<String>,
    },
    /// A fenced write was refused: its token is older than the entity's newest, or its
    /// lease is gone. Nothing was changed.
    #[error("entity {entity:?}: write with fence {token} refused; the current fence is {current}")]
    Fenced {
        /// The entity.
        entity: String,
        /// The token the write carried.
        token: u64,
        /// The entity's newest token.
        current: u64,
    },
    /// A value is larger than the configured limit; nothing was sent.
    #[error("entity {entity:?}: value is {size} bytes encoded, over the limit of {max}")]
    ValueTooLarge {
        /// The entity.
        entity: String,
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be encoded.
    #[error("entity {entity:?}: cannot encode value: {source}")]
    Encode {
        /// The entity.
        entity: String,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// A stored record could not be decoded (corrupt or foreign data).
    #[error("entity {entity:?}: stored record does not decode: {source}")]
    Decode {
        /// The entity.
        entity: String,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// A stored record is missing fields or holds malformed ones.
    #[error("entity {entity:?}: stored record is malformed: {detail}")]
    Corrupt {
        /// The entity.
        entity: String,
        /// What is wrong.
        detail: String,
    },
    /// No reply within the configured time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The configured limit.
        after: Duration,
    },
    /// Redis could not be reached, or the connection broke.
    #[error("connection to Redis failed: {message}")]
    Connection {
        /// What the driver said.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// Redis refused the credentials.
    #[error("authentication failed: {message}")]
    Auth {
        /// What the server said (never the password).
        message: String,
    },
    /// The ACL user lacks a permission.
    #[error("permission denied: {message}")]
    NoPermission {
        /// What the server said.
        message: String,
    },
    /// No pooled connection became free in time.
    #[error("connection pool exhausted: no connection free after {waited:?}")]
    PoolExhausted {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The queue was full and the operation was not accepted; nothing was sent.
    #[error("overloaded: the queue of {capacity} operations is full")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The operation was queued, then dropped to make room for newer ones; nothing was sent.
    #[error("dropped: the queue of {capacity} operations was full and this was the oldest")]
    Dropped {
        /// The queue's capacity.
        capacity: usize,
    },
    /// Redis refused to run the command for now, and said so: it is over `maxmemory`
    /// (`OOM`), or the entity's cluster slot stayed in migration (`TRYAGAIN`) or the cluster
    /// stayed down (`CLUSTERDOWN`) for longer than the response timeout. Nothing was
    /// applied: the same call may be sent again later.
    #[error("not applied, Redis refused it for now: {message}")]
    Unavailable {
        /// What Redis said.
        message: String,
    },
    /// A server's `maxmemory-policy` may evict keys the guarantees rest on, and
    /// `redis.allow_eviction` is off: the executor was not built.
    #[error(
        "maxmemory-policy {policy} on {node} breaks the guarantees: {reason}; set it to noeviction \
         (CONFIG SET maxmemory-policy noeviction), or accept the risk with redis.allow_eviction = true"
    )]
    UnsafeEviction {
        /// The server (`host:port`).
        node: String,
        /// Its policy.
        policy: String,
        /// What the policy breaks.
        reason: &'static str,
    },
    /// A script failed on the server.
    #[error("script {script} failed: {message}")]
    Script {
        /// The script's name.
        script: &'static str,
        /// Redis's message.
        message: String,
    },
    /// Redis refused a command with an error reply.
    #[error("Redis error: {message}")]
    Server {
        /// Redis's message.
        message: String,
    },
    /// Redis answered with something the client did not expect.
    #[error("unexpected reply to {what}: {detail}")]
    UnexpectedReply {
        /// The command or script.
        what: &'static str,
        /// What came back.
        detail: String,
    },
    /// The executor is shutting down or shut down.
    #[error("the executor is shut down")]
    Shutdown,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A stable, low-cardinality name for each error, for metrics (`error.type`) and matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidId`].
    InvalidId,
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::TooManyConflicts`].
    TooManyConflicts,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::TransitionRefused`].
    TransitionRefused,
    /// [`Error::LeaseHeld`].
    LeaseHeld,
    /// [`Error::LeaseLost`].
    LeaseLost,
    /// [`Error::Fenced`].
    Fenced,
    /// [`Error::ValueTooLarge`].
    ValueTooLarge,
    /// [`Error::Encode`].
    Encode,
    /// [`Error::Decode`].
    Decode,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Connection`].
    Connection,
    /// [`Error::Auth`].
    Auth,
    /// [`Error::NoPermission`].
    NoPermission,
    /// [`Error::PoolExhausted`].
    PoolExhausted,
    /// [`Error::Overloaded`].
    Overloaded,
    /// [`Error::Dropped`].
    Dropped,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::UnsafeEviction`].
    UnsafeEviction,
    /// [`Error::Script`].
    Script,
    /// [`Error::Server`].
    Server,
    /// [`Error::UnexpectedReply`].
    UnexpectedReply,
    /// [`Error::Shutdown`].
    Shutdown,
    /// [`Error::Config`].
    Config,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 27] = [
        ErrorKind::InvalidId,
        ErrorKind::InvalidArgument,
        ErrorKind::Conflict,
        ErrorKind::TooManyConflicts,
        ErrorKind::NotFound,
        ErrorKind::TransitionRefused,
        ErrorKind::LeaseHeld,
        ErrorKind::LeaseLost,
        ErrorKind::Fenced,
        ErrorKind::ValueTooLarge,
        ErrorKind::Encode,
        ErrorKind::Decode,
        ErrorKind::Corrupt,
        ErrorKind::Timeout,
        ErrorKind::Connection,
        ErrorKind::Auth,
        ErrorKind::NoPermission,
        ErrorKind::PoolExhausted,
        ErrorKind::Overloaded,
        ErrorKind::Dropped,
        ErrorKind::Unavailable,
        ErrorKind::UnsafeEviction,
        ErrorKind::Script,
        ErrorKind::Server,
        ErrorKind::UnexpectedReply,
        ErrorKind::Shutdown,
        ErrorKind::Config,
    ];

    /// How many kinds there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The kind's position in [`ALL`](Self::ALL), for arrays of counters.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }

    /// Whether it is a failure (Redis unreachable, slow or refusing, a bug, corrupt data,
    /// overload) rather than an answer a caller expects and handles (a conflict, a refused
    /// transition, a held or lost lease, a fenced write, not found, bad input).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            ErrorKind::InvalidId
                | ErrorKind::InvalidArgument
                | ErrorKind::Conflict
                | ErrorKind::TooManyConflicts
                | ErrorKind::NotFound
                | ErrorKind::TransitionRefused
                | ErrorKind::LeaseHeld
                | ErrorKind::LeaseLost
                | ErrorKind::Fenced
                | ErrorKind::ValueTooLarge
        )
    }

    /// The snake_case name, as used for `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidId => "invalid_id",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooManyConflicts => "too_many_conflicts",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TransitionRefused => "transition_refused",
            ErrorKind::LeaseHeld => "lease_held",
            ErrorKind::LeaseLost => "lease_lost",
            ErrorKind::Fenced => "fenced",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::Encode => "encode",
            ErrorKind::Decode => "decode",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Auth => "auth",
            ErrorKind::NoPermission => "no_permission",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Dropped => "dropped",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::UnsafeEviction => "unsafe_eviction",
            ErrorKind::Script => "script",
            ErrorKind::Server => "server",
            ErrorKind::UnexpectedReply => "unexpected_reply",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Config => "config",
        }
    }
}

impl Error {
    /// The prefix of the error reply Redis gave ([`Error::Script`], [`Error::Server`]): its
    /// first word when that is an upper-case code such as `WRONGTYPE`, `OOM` or `ERR`
    /// (OpenTelemetry's `db.response.status_code`); `None` for every other error.
    pub fn response_code(&self) -> Option<&str> {
        let (Error::Script { message, .. } | Error::Server { message }) = self else {
            return None;
        };
        let word = message.split_ascii_whitespace().next()?;
        let code = (2..=32).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_uppercase());
        code.then_some(word)
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId(_) => ErrorKind::InvalidId,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::TooManyConflicts { .. } => ErrorKind::TooManyConflicts,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::TransitionRefused { .. } => ErrorKind::TransitionRefused,
            Error::LeaseHeld { .. } => ErrorKind::LeaseHeld,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::Fenced { .. } => ErrorKind::Fenced,
            Error::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Connection { .. } => ErrorKind::Connection,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::NoPermission { .. } => ErrorKind::NoPermission,
            Error::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            Error::Overloaded { .. } => ErrorKind::Overloaded,
            Error::Dropped { .. } => ErrorKind::Dropped,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::UnsafeEviction { .. } => ErrorKind::UnsafeEviction,
            Error::Script { .. } => ErrorKind::Script,
            Error::Server { .. } => ErrorKind::Server,
            Error::UnexpectedReply { .. } => ErrorKind::UnexpectedReply,
            Error::Shutdown => ErrorKind::Shutdown,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// A copy of this error for another caller (when one failure hits many operations, as a
    /// lost pipeline does). Variants that hold only text are copied as they are; the others
    /// become [`Error::Connection`] with this error's message (their cause is not cloneable).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Timeout { operation, after } => Error::Timeout {
                operation,
                after: *after,
            },
            Error::Shutdown => Error::Shutdown,
            Error::Auth { message } => Error::Auth {
                message: message.clone(),
            },
            Error::NoPermission { message } => Error::NoPermission {
                message: message.clone(),
            },
            Error::Script { script, message } => Error::Script {
                script,
                message: message.clone(),
            },
            Error::Server { message } => Error::Server {
                message: message.clone(),
            },
            Error::Unavailable { message } => Error::Unavailable {
                message: message.clone(),
            },
            Error::UnexpectedReply { what, detail } => Error::UnexpectedReply {
                what,
                detail: detail.clone(),
            },
            other => Error::Connection {
                message: other.to_string(),
                source: None,
            },
        }
    }

    /// Whether the request may not have reached Redis, or its reply was lost: the
    /// operation's effect is unknown. Only idempotent operations may be retried then.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Connection { .. })
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_response_code_is_the_upper_case_prefix_of_a_server_error() {
        let script = |message: &str| Error::Script {
            script: "write",
            message: message.to_owned(),
        };
        assert_eq!(
            script("WRONGTYPE Operation against a key holding the wrong kind of value").response_code(),
            Some("WRONGTYPE")
        );
        let server = Error::Server {
            message: "OOM command not allowed".into(),
        };
        assert_eq!(server.response_code(), Some("OOM"));
        assert_eq!(script("user_script:1: bad argument").response_code(), None);
        assert_eq!(script("").response_code(), None);
        assert_eq!(Error::Shutdown.response_code(), None);
    }
}
