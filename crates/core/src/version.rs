//! Versions and versioned values.

use std::fmt;

/// The version of an entity's state: 0 means "does not exist", every write adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u64);

impl Version {
    /// The version of an entity that does not exist: `cas(Version::NONE, v)` creates.
    pub const NONE: Version = Version(0);

    /// The version as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A value with the version it was read at, its status and its last update time.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The version the value was read at.
    pub version: Version,
    /// The value.
    pub value: T,
    /// The state-machine status, if one was ever set by a transition.
    pub status: Option<String>,
    /// When it was last written, in milliseconds since the Unix epoch (server clock).
    pub updated_ms: u64,
}

impl<T> Versioned<T> {
    /// Maps the value, keeping the version and metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Versioned<U> {
        Versioned {
            version: self.version,
            value: f(self.value),
            status: self.status,
            updated_ms: self.updated_ms,
        }
    }
}
