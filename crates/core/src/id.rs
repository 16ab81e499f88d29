//! Validated entity ids, namespaces and statuses: checked before any I/O.

use std::fmt;

/// The longest entity id accepted, in bytes of UTF-8.
pub const MAX_ENTITY_ID_LEN: usize = 256;
/// The longest namespace accepted, in bytes of UTF-8.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// The longest status accepted, in bytes of UTF-8.
pub const MAX_STATUS_LEN: usize = 64;

/// Why an id, namespace or status was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The text is empty.
    #[error("{what} is empty")]
    Empty {
        /// `entity id`, `namespace` or `status`.
        what: &'static str,
    },
    /// The text is longer than allowed.
    #[error("{what} {shown} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// `entity id`, `namespace` or `status`.
        what: &'static str,
        /// The start of the text, escaped.
        shown: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text holds a character that is not allowed.
    #[error("{what} {shown} contains {found:?} at byte {at}: {why}")]
    BadChar {
        /// `entity id`, `namespace` or `status`.
        what: &'static str,
        /// The text, escaped and shortened.
        shown: String,
        /// The character refused.
        found: char,
        /// Its byte offset.
        at: usize,
        /// Why it is refused.
        why: &'static str,
    },
}

/// Escapes and shortens user text for an error message.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(64) + 2);
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == 48 {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// Printable ASCII, space included: the bytes an id may hold without a closer look.
const PLAIN: [bool; 256] = plain_bytes(false);
/// [`PLAIN`] without the braces of a Redis Cluster hash tag.
const PLAIN_NO_BRACES: [bool; 256] = plain_bytes(true);

const fn plain_bytes(no_braces: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = !(no_braces && (b == b'{' as usize || b == b'}' as usize));
        b += 1;
    }
    table
}

fn check(what: &'static str, text: &str, max: usize, braces: bool) -> Result<(), InvalidId> {
    if text.is_empty() {
        return Err(InvalidId::Empty { what });
    }
    if text.len() > max {
        return Err(InvalidId::TooLong {
            what,
            shown: shown(text),
            len: text.len(),
            max,
        });
    }
    // Plain ASCII without control characters (or braces) is fine: one table lookup per byte
    // (every operation checks its entity id). Anything else (non-ASCII text, or a refusal to
    // explain) takes the full check below.
    let plain = if braces { &PLAIN_NO_BRACES } else { &PLAIN };
    if text.bytes().all(|b| plain[usize::from(b)]) {
        return Ok(());
    }
    for (at, c) in text.char_indices() {
        let why = if c.is_control() {
            "control characters are not allowed"
        } else if braces && (c == '{' || c == '}') {
            "braces are reserved for the Redis Cluster hash tag"
        } else {
            continue;
        };
        return Err(InvalidId::BadChar {
            what,
            shown: shown(text),
            found: c,
            at,
            why,
        });
    }
    Ok(())
}

/// Checks an entity id: 1 to 256 bytes of UTF-8, no braces, no control characters.
pub fn validate_entity_id(id: &str) -> Result<(), InvalidId> {
    check("entity id", id, MAX_ENTITY_ID_LEN, true)
}

/// Checks a status name: 1 to 64 bytes of UTF-8, no control characters.
pub fn validate_status(status: &str) -> Result<(), InvalidId> {
    check("status", status, MAX_STATUS_LEN, false)
}

/// The longest lease owner or message id accepted, in bytes of UTF-8.
pub const MAX_TOKEN_LEN: usize = 256;

/// Checks a lease owner name: 1 to 256 bytes of UTF-8, no control characters.
pub fn validate_owner(owner: &str) -> Result<(), InvalidId> {
    check("lease owner", owner, MAX_TOKEN_LEN, false)
}

/// Checks a message id for `apply_once`: 1 to 256 bytes of UTF-8, no control characters.
pub fn validate_message_id(id: &str) -> Result<(), InvalidId> {
    check("message id", id, MAX_TOKEN_LEN, false)
}

/// A key namespace: 1 to 64 bytes of UTF-8, no braces, no control characters.
///
/// The namespace stays outside the hash tag, so entities of one namespace spread
/// over every slot of a Redis Cluster.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Box<str>);

impl Namespace {
    /// Validates `name` as a namespace.
    pub fn new(name: &str) -> Result<Self, InvalidId> {
        check("namespace", name, MAX_NAMESPACE_LEN, true)?;
        Ok(Self(name.into()))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["a", "device-42", "tenant:7/device:9", "Ünïcødé ✓", &"x".repeat(256)] {
            assert_eq!(validate_entity_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_bad_ids_with_a_reason() {
        assert!(matches!(validate_entity_id(""), Err(InvalidId::Empty { .. })));
        let long = "é".repeat(129); // 258 bytes
        match validate_entity_id(&long) {
            Err(InvalidId::TooLong { len: 258, max: 256, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        for (id, found) in [
            ("a{b", '{'),
            ("a}b", '}'),
            ("a\nb", '\n'),
            ("a\0", '\0'),
            ("x\u{7f}", '\u{7f}'),
            // Non-ASCII text takes the full check: a C1 control character after a letter.
            ("é\u{85}", '\u{85}'),
        ] {
            match validate_entity_id(id) {
                Err(InvalidId::BadChar { found: f, .. }) => assert_eq!(f, found),
                other => panic!("{id:?}: unexpected {other:?}"),
            }
        }
        let message = validate_entity_id("dev{1}").map_err(|e| e.to_string()).unwrap_err();
        assert!(
            message.contains("\"dev{1}\"") && message.contains("hash tag"),
            "{message}"
        );
    }

    #[test]
    fn namespaces_and_statuses() {
        assert!(Namespace::new("app").is_ok());
        assert!(Namespace::new("a{").is_err());
        assert!(Namespace::new(&"n".repeat(65)).is_err());
        assert!(validate_status("online").is_ok());
        assert!(validate_status("").is_err());
        assert!(validate_status("a\tb").is_err());
        // Braces are reserved in entity ids only.
        assert!(validate_status("a{b}").is_ok());
    }
}
