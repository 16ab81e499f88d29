//! Property tests of the RESP2 reply parser: the bytes come from the server, not from us.

use proptest::prelude::*;

use super::*;

/// A reply as the server writes it, and what the parser must make of it.
#[derive(Debug, Clone)]
enum Resp {
    Simple(String),
    /// An error reply: its code and detail, as `-CODE detail`.
    Error(String, String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Simple(text) => out.extend_from_slice(format!("+{text}\r\n").as_bytes()),
            Self::Error(code, detail) => out.extend_from_slice(format!("-{code} {detail}\r\n").as_bytes()),
            Self::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Self::Bulk(None) | Self::Array(None) => {
                out.push(if matches!(self, Self::Bulk(_)) { b'$' } else { b'*' });
                out.extend_from_slice(b"-1\r\n");
            }
            Self::Bulk(Some(data)) => {
                out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Self::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// The reply the parser must give for it at the top level.
    fn reply(&self) -> Reply {
        match self {
            Self::Error(code, detail) => Err(format!("{code} {detail}")),
            other => Ok(other.value()),
        }
    }

    /// The value, inside an array. Errors are checked by [`same`], not built here.
    fn value(&self) -> Value {
        match self {
            Self::Simple(text) if text == "OK" => Value::Okay,
            Self::Simple(text) => Value::SimpleString(text.clone()),
            Self::Error(..) => Value::Nil,
            Self::Int(n) => Value::Int(*n),
            Self::Bulk(None) | Self::Array(None) => Value::Nil,
            Self::Bulk(Some(data)) => Value::BulkString(data.clone()),
            Self::Array(Some(items)) => Value::Array(items.iter().map(Self::value).collect()),
        }
    }
}

/// Whether `value` is what the parser must make of `resp` inside an array: an error stays
/// a server error with its code and detail, as redis-rs reads it.
fn same(resp: &Resp, value: &Value) -> bool {
    match (resp, value) {
        (Resp::Error(code, detail), Value::ServerError(e)) => e.code() == code && e.details() == Some(detail.as_str()),
        (Resp::Array(Some(items)), Value::Array(values)) => {
            items.len() == values.len() && items.iter().zip(values).all(|(i, v)| same(i, v))
        }
        (other, value) => other.value() == *value,
    }
}

fn resp() -> impl Strategy<Value = Resp> {
    let leaf = prop_oneof![
        // Any text without CRLF, lone CRs and LFs included; "OK" is `Value::Okay`.
        prop_oneof![Just("OK".to_owned()), "[^\r\n]{0,20}", "[a-z\r\n]{0,12}"]
            .prop_filter("a line holds no CRLF", |s| !s.contains("\r\n"))
            .prop_map(Resp::Simple),
        ("[A-Z]{1,12}", "[a-z]([a-zA-Z0-9 ]{0,18}[a-z])?")
            .prop_filter("redis-rs reads MOVED and ASK as redirects", |(code, _)| {
                code != "MOVED" && code != "ASK"
            })
            .prop_map(|(code, detail)| Resp::Error(code, detail)),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1), any::<i64>()].prop_map(Resp::Int),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)).prop_map(Resp::Bulk),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Resp::Array)
    })
}

/// Checks `parse` on `input`, whatever it holds: it returns, and what it says it read is
/// within the input and not empty.
fn parse_checked(input: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let parsed = parse(input);
    if let Ok(Some((_, used))) = &parsed {
        assert!(
            *used > 0 && *used <= input.len(),
            "read {used} of {} bytes",
            input.len()
        );
    }
    parsed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes at all: no panic, and a reply read is one every shorter cut waits for.
    #[test]
    fn any_bytes_parse_without_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((reply, used))) = parse_checked(&input) {
            prop_assert_eq!(parse(&input[..used]), Ok(Some((reply, used))));
            for cut in 0..used {
                prop_assert_eq!(parse(&input[..cut]), Ok(None), "cut at {}", cut);
            }
        }
    }

    /// Bytes that look like RESP (type bytes, digits, CRLF, signs): they reach the deeper
    /// paths that random bytes rarely do.
    #[test]
    fn resp_like_bytes_parse_without_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"*"[..]), Just(&b"$"[..]), Just(&b":"[..]), Just(&b"+"[..]), Just(&b"-"[..]),
                Just(&b"\r\n"[..]), Just(&b"\r"[..]), Just(&b"\n"[..]), Just(&b"0"[..]), Just(&b"1"[..]),
                Just(&b"2"[..]), Just(&b"9"[..]), Just(&b"-1"[..]), Just(&b"x"[..]),
                Just(&b"9223372036854775808"[..]), Just(&b"18446744073709551615"[..]),
            ],
            0..64,
        )
    ) {
        let input = parts.concat();
        if let Ok(Some((reply, used))) = parse_checked(&input) {
            prop_assert_eq!(parse(&input[..used]), Ok(Some((reply, used))));
        }
    }

    /// Every well-formed reply reads back as the value it encodes, using all its bytes and
    /// none of what follows it.
    #[test]
    fn well_formed_replies_round_trip(reply in resp(), after in proptest::collection::vec(any::<u8>(), 0..16)) {
        let bytes = reply.bytes();
        let Some((parsed, used)) = parse_checked(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))? else {
            return Err(TestCaseError::fail("incomplete"));
        };
        prop_assert_eq!(used, bytes.len());
        match (&reply, &parsed) {
            (Resp::Array(Some(_)), Ok(value)) => prop_assert!(same(&reply, value), "{:?}", value),
            _ => prop_assert_eq!(&parsed, &reply.reply()),
        }
        let followed = [bytes.clone(), after].concat();
        let Ok(Some((again, used))) = parse(&followed) else {
            return Err(TestCaseError::fail("not read when followed by more"));
        };
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(again, parsed);
    }

    /// A well-formed reply cut short anywhere asks for more bytes: no error, no value.
    #[test]
    fn truncated_replies_wait_for_more(reply in resp()) {
        let bytes = reply.bytes();
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    /// Integers read exactly over the whole of i64; one past either end is an error.
    #[test]
    fn integers_and_their_overflow(n in any::<i64>()) {
        prop_assert_eq!(parse(format!(":{n}\r\n").as_bytes()).map(|r| r.map(|r| r.0)), Ok(Some(Ok(Value::Int(n)))));
        let past = if n < 0 { i128::from(i64::MIN) - 1 - i128::from(n).abs() % 1000 } else { i128::from(i64::MAX) + 1 + i128::from(n) % 1000 };
        for input in [format!(":{past}\r\n"), format!("*1\r\n:{past}\r\n"), format!("${past}\r\n")] {
            prop_assert!(matches!(parse(input.as_bytes()), Err(Malformed::BadNumber(_))), "{:?}", input);
        }
    }

    /// A number line with anything but an optional minus and digits is an error, wherever
    /// a number is read (integer, bulk length, array length, an integer inside an array).
    #[test]
    fn non_digit_numbers_are_errors(
        kind in prop_oneof![Just(":"), Just("$"), Just("*"), Just("*1\r\n:")],
        text in "[-+ 0-9a-z.]{0,6}[^-0-9\r\n][-0-9]{0,4}",
    ) {
        let input = format!("{kind}{text}\r\n");
        prop_assert!(
            matches!(parse(input.as_bytes()), Err(Malformed::BadNumber(_))),
            "{:?} gave {:?}", input, parse(input.as_bytes())
        );
    }

    /// Lengths below -1 are errors, not null.
    #[test]
    fn negative_lengths_are_errors(kind in prop_oneof![Just("$"), Just("*")], len in i64::MIN..-1) {
        prop_assert_eq!(parse(format!("{kind}{len}\r\n").as_bytes()), Err(Malformed::NegativeLength(len)));
    }

    /// A bulk string is followed by CRLF; anything else there is an error.
    #[test]
    fn bulk_data_is_followed_by_crlf(data in proptest::collection::vec(any::<u8>(), 0..20), tail in any::<[u8; 2]>()) {
        let mut input = format!("${}\r\n", data.len()).into_bytes();
        input.extend_from_slice(&data);
        input.extend_from_slice(&tail);
        let parsed = parse(&input);
        if &tail == b"\r\n" {
            prop_assert_eq!(parsed, Ok(Some((Ok(Value::BulkString(data)), input.len()))));
        } else {
            prop_assert_eq!(parsed, Err(Malformed::MissingCrlf));
        }
    }

    /// A type byte that is not RESP2 is an error at once, before its line is complete.
    #[test]
    fn unknown_type_bytes_are_errors(kind in any::<u8>(), rest in proptest::collection::vec(any::<u8>(), 0..8)) {
        prop_assume!(!b"+-:$*".contains(&kind));
        let input = [&[kind][..], &rest].concat();
        prop_assert_eq!(parse(&input), Err(Malformed::UnknownType(kind)));
    }

    /// Arrays nest up to [`MAX_DEPTH`] deep; deeper is an error, not a stack overflow.
    #[test]
    fn nesting_is_limited(depth in 0..3 * MAX_DEPTH) {
        let input = [b"*1\r\n".repeat(depth), b"$1\r\nx\r\n".to_vec()].concat();
        let parsed = parse(&input);
        if depth <= MAX_DEPTH {
            prop_assert!(matches!(parsed, Ok(Some((Ok(_), used))) if used == input.len()));
        } else {
            prop_assert_eq!(parsed, Err(Malformed::TooDeep));
        }
    }
}
