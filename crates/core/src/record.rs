//! The stored form of an entity's state: one string, a short binary header before the value.
//!
//! ```text
//! byte 0        RECORD_FORMAT (1): the layout of what follows
//! byte 1        s, the status length in bytes (0: no status; at most MAX_STATUS_LEN),
//!               plus EXPIRES (0x80) when a write gave the record an expiry
//! bytes 2..10   version, u64 big-endian, 1 ..= MAX_VERSION
//! bytes 10..16  last update, ms since the Unix epoch by the server's clock, u48 big-endian
//! bytes 16..22  fencing token of the last fenced write, u48 big-endian (0: not fenced)
//! bytes 22..22+s the status, UTF-8
//! the rest      the encoded value (its format byte first; never empty)
//! ```
//!
//! `write.lua` writes it (with Lua's `struct.pack('>BBI8I6I6', …)`); reads are a plain `GET`
//! decoded here. One string per entity costs about what the value alone costs as a plain
//! string; see docs/adr/002-one-write-script.md for the measurements behind the layout.

use bytes::Bytes;

use crate::id::MAX_STATUS_LEN;

/// The first byte of every record: the layout version of the header.
pub const RECORD_FORMAT: u8 = 1;

/// The flag in the status-length byte of a record a write gave an expiry (a ttl): a
/// bundle's puts keep such a record's expiry by writing it on its own (`SET … KEEPTTL`),
/// where the others go in one `MSET`, which drops expiries.
pub const EXPIRES: u8 = 0x80;

/// Bytes of the fixed part of the header, before the status.
pub const HEADER_LEN: usize = 22;

/// The highest version a record holds: 2^53 − 1, the largest integer the server's Lua
/// counts exactly (at a million writes a second, 285 years of writes to one entity).
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// An entity's state as stored: version, encoded value, status, update time and fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The version (1 or more).
    pub version: u64,
    /// The stored (encoded) value.
    pub data: Bytes,
    /// The status, if a transition ever set one.
    pub status: Option<String>,
    /// Last update, ms since the Unix epoch (server clock).
    pub updated_ms: u64,
    /// The fencing token of the last fenced write (0: the last write was not fenced).
    pub fence: u64,
    /// Whether a write gave the record an expiry ([`EXPIRES`]).
    pub expires: bool,
}

impl Record {
    /// Reads a stored record; `Err` says what is wrong with it (corrupt or foreign data).
    pub fn decode(stored: Bytes) -> Result<Record, String> {
        let n = stored.len();
        if n < HEADER_LEN {
            return Err(format!(
                "{n} bytes, shorter than the {HEADER_LEN}-byte record header: not written by stateful-redis"
            ));
        }
        if stored[0] != RECORD_FORMAT {
            return Err(format!(
                "record format byte {:#04x}, expected {RECORD_FORMAT:#04x}: not written by this version of stateful-redis",
                stored[0]
            ));
        }
        let expires = stored[1] & EXPIRES != 0;
        let status_len = usize::from(stored[1] & !EXPIRES);
        if status_len > MAX_STATUS_LEN {
            return Err(format!("status length {status_len} is over {MAX_STATUS_LEN}"));
        }
        let be = |range: std::ops::Range<usize>| stored[range].iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let version = be(2..10);
        if version == 0 || version > MAX_VERSION {
            return Err(format!("version {version} is out of range 1..={MAX_VERSION}"));
        }
        let updated_ms = be(10..16);
        let fence = be(16..22);
        let value_at = HEADER_LEN + status_len;
        if n <= value_at {
            return Err(format!("{n} bytes hold the header and status but no value"));
        }
        let status = match status_len {
            0 => None,
            _ => Some(
                std::str::from_utf8(&stored[HEADER_LEN..value_at])
                    .map_err(|e| format!("status is not UTF-8: {e}"))?
                    .to_owned(),
            ),
        };
        Ok(Record {
            version,
            data: stored.slice(value_at..),
            status,
            updated_ms,
            fence,
            expires,
        })
    }

    /// The stored form of this record, as `write.lua` writes it (for tests and tools that
    /// write records directly). The status is cut to its first [`MAX_STATUS_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let status = self.status.as_deref().unwrap_or("").as_bytes();
        let status = &status[..status.len().min(MAX_STATUS_LEN)];
        let mut out = Vec::with_capacity(HEADER_LEN + status.len() + self.data.len());
        out.push(RECORD_FORMAT);
        out.push(status.len() as u8 | if self.expires { EXPIRES } else { 0 });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.updated_ms.to_be_bytes()[2..]);
        out.extend_from_slice(&self.fence.to_be_bytes()[2..]);
        out.extend_from_slice(status);
        out.extend_from_slice(&self.data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Option<&str>) -> Record {
        Record {
            version: 7,
            data: Bytes::from_static(b"\x01{}"),
            status: status.map(str::to_owned),
            updated_ms: 1_765_000_000_123,
            fence: 42,
            expires: status.is_some(),
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        for status in [None, Some("online")] {
            let r = record(status);
            assert_eq!(Record::decode(Bytes::from(r.encode())), Ok(r));
        }
    }

    #[test]
    fn foreign_or_damaged_bytes_say_what_is_wrong() {
        let good = record(Some("on")).encode();
        let cases: [(Vec<u8>, &str); 6] = [
            (b"hello".to_vec(), "shorter than"),
            ([&[9u8][..], &good[1..]].concat(), "format byte 0x09"),
            ([&good[..1], &[100u8][..], &good[2..]].concat(), "status length 100"),
            ([&good[..2], &[0u8; 8][..], &good[10..]].concat(), "version 0"),
            (good[..HEADER_LEN + 2].to_vec(), "no value"),
            (
                [&good[..HEADER_LEN], &[0xff, 0xfe][..], &good[HEADER_LEN + 2..]].concat(),
                "not UTF-8",
            ),
        ];
        for (bytes, says) in cases {
            let err = Record::decode(Bytes::from(bytes)).expect_err(says);
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
    }
}
