//! Property tests of the envelope and codecs: stored values are bytes anyone may have written.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// A value with the shapes a user's type has: text, bytes, integers at their edges,
/// optional and nested fields, a map. No floats: JSON need not give back their last bit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entity {
    name: String,
    data: Vec<u8>,
    small: i32,
    big: u64,
    signed: i64,
    flag: bool,
    note: Option<String>,
    tags: BTreeMap<String, Vec<i64>>,
    child: Option<Box<Entity>>,
}

fn leaf() -> impl Strategy<Value = Entity> {
    (
        ".{0,24}",
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<i32>(),
        prop_oneof![Just(u64::MAX), Just(0), any::<u64>()],
        prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
        any::<bool>(),
        proptest::option::of(".{0,12}"),
        proptest::collection::btree_map(".{0,8}", proptest::collection::vec(any::<i64>(), 0..8), 0..4),
    )
        .prop_map(|(name, data, small, big, signed, flag, note, tags)| Entity {
            name,
            data,
            small,
            big,
            signed,
            flag,
            note,
            tags,
            child: None,
        })
}

fn entity() -> impl Strategy<Value = Entity> {
    (leaf(), proptest::option::of(leaf())).prop_map(|(mut e, child)| {
        e.child = child.map(Box::new);
        e
    })
}

/// Every codec this build has, as the ones that write.
fn codecs() -> Vec<SerdeCodec> {
    vec![
        SerdeCodec::json(),
        #[cfg(feature = "msgpack")]
        SerdeCodec::msgpack(),
    ]
}

/// Envelopes with compression off, on for everything, and on above a threshold.
fn envelope() -> impl Strategy<Value = Envelope> {
    proptest::option::of(0usize..512).prop_map(|above| Envelope::new(1 << 20, above))
}

/// Opens `stored` with every codec, into a fixed type and into any JSON value: whatever it
/// holds, each gives a value or a typed error, never a panic.
fn open_anything(env: &Envelope, stored: &[u8]) -> Vec<Result<(), CodecError>> {
    let mut results = Vec::new();
    for codec in codecs() {
        results.push(env.open::<Entity, _>(&codec, stored).map(drop));
        results.push(env.open::<serde_json::Value, _>(&codec, stored).map(drop));
    }
    results.push(env.open(&BytesCodec, stored).map(drop));
    results
}

/// Whether `error` is what the first byte of `stored` allows.
fn fits_format(error: &CodecError, stored: &[u8]) -> bool {
    let Some(&first) = stored.first() else {
        return matches!(error, CodecError::Empty);
    };
    match error {
        CodecError::Empty => false,
        CodecError::UnknownFormat(format) => *format == first & !COMPRESSED,
        CodecError::CompressionUnsupported | CodecError::Decompress(_) => first & COMPRESSED != 0,
        CodecError::Serde { .. } => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: a value or a typed error that fits the format byte, never a panic.
    #[test]
    fn any_bytes_open_without_panic(stored in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..4096) {
        let env = Envelope::new(max, None);
        for result in open_anything(&env, &stored) {
            if let Err(e) = result {
                prop_assert!(fits_format(&e, &stored), "{e:?} for {stored:?}");
            }
        }
    }

    /// Bytes behind each known format byte, compressed or not, with a size header that
    /// is sometimes plausible: they reach the serde parsers and the decompressor.
    #[test]
    fn any_payload_opens_without_panic(
        format in prop_oneof![Just(FORMAT_JSON), Just(FORMAT_MSGPACK), Just(FORMAT_RAW), 0u8..0x80],
        compressed in any::<bool>(),
        declared in prop_oneof![0u32..64, Just(u32::MAX), any::<u32>()],
        payload in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut stored = vec![if compressed { format | COMPRESSED } else { format }];
        if compressed {
            stored.extend_from_slice(&declared.to_le_bytes());
        }
        stored.extend_from_slice(&payload);
        let env = Envelope::new(1024, None);
        for result in open_anything(&env, &stored) {
            if let Err(e) = result {
                prop_assert!(fits_format(&e, &stored), "{e:?}");
            }
        }
        // Raw bytes come back as they are.
        if !compressed && format == FORMAT_RAW {
            prop_assert_eq!(env.open(&BytesCodec, &stored).ok(), Some(Bytes::from(payload)));
        }
    }

    /// What is sealed opens to the same value, with every codec, compressed or not, and
    /// also through an envelope whose compression setting differs.
    #[test]
    fn sealed_values_open_to_the_same(value in entity(), env in envelope()) {
        let plain = Envelope::new(env.max_value_size(), None);
        for codec in codecs() {
            let stored = env.seal(&codec, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let format = <SerdeCodec as Codec<Entity>>::format(&codec);
            prop_assert_eq!(stored[0] & !COMPRESSED, format);
            prop_assert_eq!(env.open::<Entity, _>(&codec, &stored).ok(), Some(value.clone()));
            prop_assert_eq!(plain.open::<Entity, _>(&codec, &stored).ok(), Some(value.clone()));
            // Each codec reads what the others wrote.
            for reader in codecs() {
                prop_assert_eq!(env.open::<Entity, _>(&reader, &stored).ok(), Some(value.clone()));
            }
        }
    }

    /// Raw bytes round-trip, compressed or not.
    #[test]
    fn raw_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048), env in envelope()) {
        let data = Bytes::from(data);
        let stored = env.seal(&BytesCodec, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(env.open(&BytesCodec, &stored).ok(), Some(data));
    }

    /// Over the limit is refused with both sizes; under it, the value round-trips.
    #[test]
    fn the_size_limit_holds(value in entity(), max in 0usize..1024, above in proptest::option::of(0usize..256)) {
        let env = Envelope::new(max, above);
        let codec = SerdeCodec::json();
        match env.seal(&codec, &value) {
            Ok(stored) => prop_assert_eq!(env.open::<Entity, _>(&codec, &stored).ok(), Some(value)),
            Err(SealError::TooLarge { size, max: limit }) => prop_assert!(size > limit && limit == max),
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }

    /// A stored value damaged anywhere (a byte changed, or cut short) opens to a value or
    /// a typed error; cut short after compression, always an error.
    #[test]
    fn damaged_values_give_typed_errors(
        value in entity(),
        env in envelope(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let codec = SerdeCodec::json();
        let stored = env.seal(&codec, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut changed = stored.to_vec();
        let i = at.index(changed.len());
        changed[i] = byte;
        for result in open_anything(&env, &changed) {
            if let Err(e) = result {
                prop_assert!(fits_format(&e, &changed), "{e:?}");
            }
        }
        let cut = &stored[..at.index(stored.len())];
        let opened = env.open::<Entity, _>(&codec, cut);
        prop_assert!(opened.is_err(), "a cut value opened");
        if let Err(e) = opened {
            prop_assert!(fits_format(&e, cut), "{e:?}");
        }
    }
}
