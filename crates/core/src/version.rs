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

    /// The one definition of a version as Redis holds it, shared with the scripts: canonical
    /// decimal text from `0` to `9223372036854775807` (`HINCRBY`'s range), no sign, no leading
    /// zero, no space. `None` for anything else (`+7`, `007`, `7 `), which a script would
    /// compare as text and never match: such a record is corrupt, not a conflict.
    pub fn parse(text: &[u8]) -> Option<Version> {
        match text {
            [b'0'] => Some(Version::NONE),
            [b'1'..=b'9', rest @ ..] if rest.len() < 19 && rest.iter().all(u8::is_ascii_digit) => {
                let n = std::str::from_utf8(text).ok()?.parse::<u64>().ok()?;
                (n <= i64::MAX as u64).then_some(Version(n))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_text_is_a_version() {
        assert_eq!(Version::parse(b"0"), Some(Version(0)));
        assert_eq!(Version::parse(b"7"), Some(Version(7)));
        assert_eq!(Version::parse(b"9223372036854775807"), Some(Version(i64::MAX as u64)));
        for bad in [
            &b"+7"[..],
            b"007",
            b"00",
            b"-1",
            b"7 ",
            b" 7",
            b"",
            b"9223372036854775808",
            b"1e3",
            b"7.0",
        ] {
            assert_eq!(Version::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A value with the version it was read at, its status, its last update time and fence.
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
    /// The fencing token of the last fenced write ([`StateHandle::under`]); 0 when no fenced
    /// write was ever accepted. A plain write keeps it.
    ///
    /// [`StateHandle::under`]: https://docs.rs/stateful-redis/latest/stateful_redis/struct.StateHandle.html#method.under
    pub fence: u64,
}

impl<T> Versioned<T> {
    /// Maps the value, keeping the version and metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Versioned<U> {
        Versioned {
            version: self.version,
            value: f(self.value),
            status: self.status,
            updated_ms: self.updated_ms,
            fence: self.fence,
        }
    }
}
