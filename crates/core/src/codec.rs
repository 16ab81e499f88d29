//! Value codecs and the stored envelope: a format byte, then the (maybe compressed) payload.
//!
//! The first byte of every stored value names its format; its high bit marks LZ4
//! compression. Decoding goes by that byte, never by the current settings, so data
//! written under any codec or compression setting still decodes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::time::{Duration, Instant};

/// Format byte of serde JSON.
pub const FORMAT_JSON: u8 = 0x01;
/// Format byte of MessagePack.
pub const FORMAT_MSGPACK: u8 = 0x02;
/// Format byte of raw bytes.
pub const FORMAT_RAW: u8 = 0x03;
/// High bit of the format byte: the payload is LZ4 compressed (size prepended).
pub const COMPRESSED: u8 = 0x80;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The stored value is empty: not even a format byte.
    #[error("the stored value is empty (no format byte)")]
    Empty,
    /// The format byte is not one this codec reads.
    #[error("unknown format byte 0x{0:02x}")]
    UnknownFormat(u8),
    /// The value is compressed but compression support is not compiled in.
    #[error("the value is LZ4 compressed but the `compression` feature is off")]
    CompressionUnsupported,
    /// The compressed payload is corrupt or declares a size over the limit.
    #[error("corrupt compressed payload: {0}")]
    Decompress(String),
    /// The payload does not parse in its format.
    #[error("{format}: {source}")]
    Serde {
        /// The format's name.
        format: &'static str,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Encodes values of type `T` for storage, and decodes them by their format byte.
///
/// Implement it for your own formats (pick a format byte from 0x10 to 0x7f); the
/// envelope around it (compression, size limit) is [`Envelope`]'s job.
pub trait Codec<T>: Send + Sync + 'static {
    /// The format byte written before values this codec encodes (below 0x80).
    fn format(&self) -> u8;
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut BytesMut) -> Result<(), CodecError>;
    /// Decodes `payload`, which was written with format byte `format`.
    fn decode(&self, format: u8, payload: &[u8]) -> Result<T, CodecError>;

    /// A guess of the encoded size, to allocate once (default 64 bytes).
    fn size_hint(&self, _value: &T) -> usize {
        64
    }
}

/// Which serde format [`SerdeCodec`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SerdeFormat {
    /// serde JSON (the default).
    #[default]
    Json,
    /// MessagePack (feature `msgpack`).
    #[cfg(feature = "msgpack")]
    MessagePack,
}

/// Any serde type, written as JSON (default) or MessagePack, read from either.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerdeCodec {
    write: SerdeFormat,
}

impl SerdeCodec {
    /// Writes JSON.
    pub fn json() -> Self {
        Self {
            write: SerdeFormat::Json,
        }
    }

    /// Writes MessagePack.
    #[cfg(feature = "msgpack")]
    pub fn msgpack() -> Self {
        Self {
            write: SerdeFormat::MessagePack,
        }
    }
}

/// The deepest nesting a payload may have (serde_json's own limit).
#[cfg(feature = "msgpack")]
const MAX_DEPTH: usize = 128;

fn serde_error(format: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> CodecError {
    CodecError::Serde {
        format,
        source: Box::new(e),
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Codec<T> for SerdeCodec {
    fn format(&self) -> u8 {
        match self.write {
            SerdeFormat::Json => FORMAT_JSON,
            #[cfg(feature = "msgpack")]
            SerdeFormat::MessagePack => FORMAT_MSGPACK,
        }
    }

    fn encode(&self, value: &T, out: &mut BytesMut) -> Result<(), CodecError> {
        match self.write {
            SerdeFormat::Json => serde_json::to_writer(out.writer(), value).map_err(|e| serde_error("JSON", e)),
            #[cfg(feature = "msgpack")]
            SerdeFormat::MessagePack => {
                rmp_serde::encode::write_named(&mut out.writer(), value).map_err(|e| serde_error("MessagePack", e))
            }
        }
    }

    fn decode(&self, format: u8, payload: &[u8]) -> Result<T, CodecError> {
        match format {
            FORMAT_JSON => serde_json::from_slice(payload).map_err(|e| serde_error("JSON", e)),
            #[cfg(feature = "msgpack")]
            FORMAT_MSGPACK => {
                let mut parser = rmp_serde::Deserializer::from_read_ref(payload);
                // rmp-serde allows 1024 levels, which overflow a 2 MiB thread stack on a
                // payload of nested arrays; serde_json stops at 128, and so do we.
                parser.set_max_depth(MAX_DEPTH);
                serde::Deserialize::deserialize(&mut parser).map_err(|e| serde_error("MessagePack", e))
            }
            other => Err(CodecError::UnknownFormat(other)),
        }
    }
}

/// Raw bytes, stored as they are (after the format byte).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<Bytes> for BytesCodec {
    fn format(&self) -> u8 {
        FORMAT_RAW
    }

    fn encode(&self, value: &Bytes, out: &mut BytesMut) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, format: u8, payload: &[u8]) -> Result<Bytes, CodecError> {
        match format {
            FORMAT_RAW => Ok(Bytes::copy_from_slice(payload)),
            other => Err(CodecError::UnknownFormat(other)),
        }
    }

    fn size_hint(&self, value: &Bytes) -> usize {
        value.len()
    }
}

/// Why [`Envelope::seal`] refused a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The encoded value is over the limit.
    #[error("value is {size} bytes encoded; the limit is {max}")]
    TooLarge {
        /// Encoded size in bytes (before compression).
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

/// The stored form of values: format byte, size limit and optional compression.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    max_value_size: usize,
    compress_above: Option<usize>,
}

impl Envelope {
    /// Values over `max_value_size` bytes encoded are refused; with `compress_above`, values
    /// over that many bytes are LZ4 compressed (when the `compression` feature is on).
    pub fn new(max_value_size: usize, compress_above: Option<usize>) -> Self {
        Self {
            max_value_size,
            compress_above,
        }
    }

    /// The size limit in bytes.
    pub fn max_value_size(&self) -> usize {
        self.max_value_size
    }

    /// Encodes `value` into its stored form.
    pub fn seal<T, C: Codec<T> + ?Sized>(&self, codec: &C, value: &T) -> Result<Bytes, SealError> {
        let mut out = BytesMut::new();
        self.seal_into(codec, value, &mut out)?;
        Ok(out.freeze())
    }

    /// [`seal`](Self::seal) into `out`, whose content it replaces: a buffer reused from one
    /// value to the next allocates nothing.
    pub fn seal_into<T, C: Codec<T> + ?Sized>(
        &self,
        codec: &C,
        value: &T,
        out: &mut BytesMut,
    ) -> Result<(), SealError> {
        out.clear();
        self.seal_with(codec, value, out, &mut Untimed)
    }

    /// [`seal_into`](Self::seal_into), also saying how long the codec and the compression took.
    pub fn seal_into_timed<T, C: Codec<T> + ?Sized>(
        &self,
        codec: &C,
        value: &T,
        out: &mut BytesMut,
    ) -> (Result<(), SealError>, CodecTimings) {
        out.clear();
        let mut clock = Timed::default();
        let sealed = self.seal_with(codec, value, out, &mut clock);
        (sealed, clock.timings)
    }

    /// Appends the stored form of `value` to `out` (empty).
    fn seal_with<T, C: Codec<T> + ?Sized>(
        &self,
        codec: &C,
        value: &T,
        out: &mut BytesMut,
        clock: &mut impl Clock,
    ) -> Result<(), SealError> {
        let format = codec.format();
        if format & COMPRESSED != 0 {
            // Its values would read back as compressed: refuse the codec, not the value.
            return Err(SealError::Codec(CodecError::UnknownFormat(format)));
        }
        let started = clock.start();
        out.reserve(1 + codec.size_hint(value));
        out.put_u8(format);
        codec.encode(value, out)?;
        clock.codec(started);
        let size = out.len() - 1;
        if size > self.max_value_size {
            return Err(SealError::TooLarge {
                size,
                max: self.max_value_size,
            });
        }
        if let Some(threshold) = self.compress_above
            && size > threshold
        {
            let started = clock.start();
            let packed = compress(format, &out[1..]);
            clock.compression(started);
            if let Some(packed) = packed {
                out.clear();
                out.extend_from_slice(&packed);
            }
        }
        Ok(())
    }

    /// Decodes a stored value, whatever format and compression it was written with.
    pub fn open<T, C: Codec<T> + ?Sized>(&self, codec: &C, stored: &[u8]) -> Result<T, CodecError> {
        self.open_with(codec, stored, &mut Untimed)
    }

    /// [`open`](Self::open), also saying how long the decompression and the codec took.
    pub fn open_timed<T, C: Codec<T> + ?Sized>(
        &self,
        codec: &C,
        stored: &[u8],
    ) -> (Result<T, CodecError>, CodecTimings) {
        let mut clock = Timed::default();
        let opened = self.open_with(codec, stored, &mut clock);
        (opened, clock.timings)
    }

    fn open_with<T, C: Codec<T> + ?Sized>(
        &self,
        codec: &C,
        stored: &[u8],
        clock: &mut impl Clock,
    ) -> Result<T, CodecError> {
        let (&first, payload) = stored.split_first().ok_or(CodecError::Empty)?;
        if first & COMPRESSED == 0 {
            let started = clock.start();
            let value = codec.decode(first, payload);
            clock.codec(started);
            return value;
        }
        let started = clock.start();
        let plain = decompress(payload, self.max_value_size)?;
        clock.compression(started);
        let started = clock.start();
        let value = codec.decode(first & !COMPRESSED, &plain);
        clock.codec(started);
        value
    }
}

/// How long the parts of one [`Envelope::seal_into_timed`] or [`Envelope::open_timed`] took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CodecTimings {
    /// Encoding or decoding with the codec.
    pub codec: Duration,
    /// Compressing or decompressing; `None` when the value was not (de)compressed.
    pub compression: Option<Duration>,
}

/// Reads the clock for the timed forms only: the plain ones pay nothing.
trait Clock {
    fn start(&self) -> Option<Instant>;
    fn codec(&mut self, started: Option<Instant>);
    fn compression(&mut self, started: Option<Instant>);
}

struct Untimed;

impl Clock for Untimed {
    #[inline]
    fn start(&self) -> Option<Instant> {
        None
    }
    #[inline]
    fn codec(&mut self, _: Option<Instant>) {}
    #[inline]
    fn compression(&mut self, _: Option<Instant>) {}
}

#[derive(Default)]
struct Timed {
    timings: CodecTimings,
}

impl Clock for Timed {
    fn start(&self) -> Option<Instant> {
        Some(Instant::now())
    }
    fn codec(&mut self, started: Option<Instant>) {
        if let Some(started) = started {
            self.timings.codec += started.elapsed();
        }
    }
    fn compression(&mut self, started: Option<Instant>) {
        if let Some(started) = started {
            *self.timings.compression.get_or_insert(Duration::ZERO) += started.elapsed();
        }
    }
}

#[cfg(feature = "compression")]
fn compress(format: u8, plain: &[u8]) -> Option<Bytes> {
    let packed = lz4_flex::block::compress_prepend_size(plain);
    // Keep the plain form when compression does not pay.
    if packed.len() >= plain.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(packed.len() + 1);
    out.put_u8(format | COMPRESSED);
    out.extend_from_slice(&packed);
    Some(out.freeze())
}

#[cfg(not(feature = "compression"))]
fn compress(_format: u8, _plain: &[u8]) -> Option<Bytes> {
    None
}

#[cfg(feature = "compression")]
fn decompress(payload: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let declared = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| CodecError::Decompress("shorter than its size header".into()))?;
    // Refuse a declared size over the limit before allocating it (a decompression bomb).
    if declared > max {
        return Err(CodecError::Decompress(format!(
            "declares {declared} bytes, over the limit of {max}"
        )));
    }
    lz4_flex::block::decompress_size_prepended(payload).map_err(|e| CodecError::Decompress(e.to_string()))
}

#[cfg(not(feature = "compression"))]
fn decompress(_payload: &[u8], _max: usize) -> Result<Vec<u8>, CodecError> {
    Err(CodecError::CompressionUnsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Device {
        name: String,
        readings: Vec<u32>,
    }

    fn device(n: usize) -> Device {
        Device {
            name: "thermo".into(),
            readings: vec![7; n],
        }
    }

    #[test]
    fn json_round_trip_with_format_byte() {
        let env = Envelope::new(1024, None);
        let stored = env.seal(&SerdeCodec::json(), &device(3)).expect("seal");
        assert_eq!(stored[0], FORMAT_JSON);
        assert_eq!(&stored[1..], br#"{"name":"thermo","readings":[7,7,7]}"#);
        let back: Device = env.open(&SerdeCodec::json(), &stored).expect("open");
        assert_eq!(back, device(3));
    }

    #[test]
    fn too_large_is_refused_with_sizes() {
        let env = Envelope::new(10, None);
        match env.seal(&SerdeCodec::json(), &device(10)) {
            Err(SealError::TooLarge { size, max: 10 }) => assert!(size > 10),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compressed_values_decode_whatever_the_current_setting() {
        let with = Envelope::new(1 << 20, Some(64));
        let without = Envelope::new(1 << 20, None);
        let stored = with.seal(&SerdeCodec::json(), &device(1000)).expect("seal");
        assert_eq!(stored[0], FORMAT_JSON | COMPRESSED);
        assert!(stored.len() < 500, "compressed to {}", stored.len());
        let back: Device = without.open(&SerdeCodec::json(), &stored).expect("open");
        assert_eq!(back, device(1000));
        // Small values stay plain even with compression on.
        let small = with.seal(&SerdeCodec::json(), &device(1)).expect("seal");
        assert_eq!(small[0], FORMAT_JSON);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn timed_forms_give_the_same_bytes_and_say_what_ran() {
        let env = Envelope::new(1 << 20, Some(64));
        // One buffer for both: each seal replaces what it held.
        let mut out = BytesMut::new();
        let (sealed, timings) = env.seal_into_timed(&SerdeCodec::json(), &device(1000), &mut out);
        sealed.expect("seal");
        assert_eq!(
            &out[..],
            &env.seal(&SerdeCodec::json(), &device(1000)).expect("seal")[..]
        );
        assert!(timings.compression.is_some(), "{timings:?}");
        let (back, timings) = env.open_timed::<Device, _>(&SerdeCodec::json(), &out);
        assert_eq!(back.expect("open"), device(1000));
        assert!(timings.compression.is_some(), "{timings:?}");
        // Below the threshold nothing is compressed, so no compression time is claimed.
        let (sealed, timings) = env.seal_into_timed(&SerdeCodec::json(), &device(1), &mut out);
        sealed.expect("seal");
        assert_eq!(out[0], FORMAT_JSON);
        assert_eq!(&out[..], &env.seal(&SerdeCodec::json(), &device(1)).expect("seal")[..]);
        assert_eq!(timings.compression, None);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn decompression_bomb_and_corruption_are_errors() {
        let env = Envelope::new(100, None);
        let mut bomb = vec![FORMAT_JSON | COMPRESSED];
        bomb.extend_from_slice(&(1u32 << 30).to_le_bytes());
        bomb.extend_from_slice(b"xx");
        assert!(matches!(
            env.open::<Device, _>(&SerdeCodec::json(), &bomb),
            Err(CodecError::Decompress(_))
        ));
        let truncated = [FORMAT_JSON | COMPRESSED, 1];
        assert!(matches!(
            env.open::<Device, _>(&SerdeCodec::json(), &truncated),
            Err(CodecError::Decompress(_))
        ));
    }

    #[test]
    fn corrupt_values_are_typed_errors() {
        let env = Envelope::new(100, None);
        let codec = SerdeCodec::json();
        assert!(matches!(env.open::<Device, _>(&codec, b""), Err(CodecError::Empty)));
        assert!(matches!(
            env.open::<Device, _>(&codec, b"\x7fxx"),
            Err(CodecError::UnknownFormat(0x7f))
        ));
        assert!(matches!(
            env.open::<Device, _>(&codec, b"\x01{not json"),
            Err(CodecError::Serde { .. })
        ));
        assert!(matches!(
            env.open::<Device, _>(&codec, b"garbage"),
            Err(CodecError::UnknownFormat(b'g'))
        ));
    }

    #[test]
    fn raw_bytes_round_trip() {
        let env = Envelope::new(100, None);
        let stored = env.seal(&BytesCodec, &Bytes::from_static(b"abc")).expect("seal");
        assert_eq!(&stored[..], b"\x03abc");
        assert_eq!(
            env.open(&BytesCodec, &stored).expect("open"),
            Bytes::from_static(b"abc")
        );
    }

    /// Found by the property tests: 100 000 nested MessagePack arrays overflowed the stack
    /// (rmp-serde allows 1024 levels) and aborted the process.
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let env = Envelope::new(1 << 20, None);
        let mut json = vec![FORMAT_JSON];
        json.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(matches!(
            env.open::<serde_json::Value, _>(&SerdeCodec::json(), &json),
            Err(CodecError::Serde { .. })
        ));
        #[cfg(feature = "msgpack")]
        {
            // 0x91: an array of one element.
            let mut packed = vec![FORMAT_MSGPACK];
            packed.extend(std::iter::repeat_n(0x91, 100_000));
            assert!(matches!(
                env.open::<serde_json::Value, _>(&SerdeCodec::msgpack(), &packed),
                Err(CodecError::Serde { .. })
            ));
            // Deep nesting within the limit still reads.
            let mut packed = vec![FORMAT_MSGPACK];
            packed.extend(std::iter::repeat_n(0x91, 100));
            packed.push(0x90);
            assert!(
                env.open::<serde_json::Value, _>(&SerdeCodec::msgpack(), &packed)
                    .is_ok()
            );
        }
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_reads_json_too() {
        let env = Envelope::new(1024, None);
        let packed = env.seal(&SerdeCodec::msgpack(), &device(2)).expect("seal");
        assert_eq!(packed[0], FORMAT_MSGPACK);
        let json = env.seal(&SerdeCodec::json(), &device(2)).expect("seal");
        let codec = SerdeCodec::msgpack();
        assert_eq!(env.open::<Device, _>(&codec, &packed).expect("open"), device(2));
        assert_eq!(env.open::<Device, _>(&codec, &json).expect("open"), device(2));
    }
}

#[cfg(test)]
mod proptests;
