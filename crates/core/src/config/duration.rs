//! Durations in config files: `"250ms"`, `"2s"`, `"1m"`, or a number of milliseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` or plain milliseconds `"250"`.
/// Exact to the nanosecond (decimal digits, not a float): what [`format()`] writes reads
/// back as the same duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{text:?} is not a duration like \"250ms\", \"2s\" or \"1m\""));
    }
    let unit_nanos: u128 = match unit.trim() {
        "" | "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    let too_long = || format!("{text:?} is longer than a duration can be");
    // Fraction digits past the 20th are below a nanosecond in every unit.
    let fraction = &fraction[..fraction.len().min(20)];
    let scale = 10u128.pow(fraction.len() as u32);
    let digits = |d: &str| if d.is_empty() { Ok(0) } else { d.parse::<u128>() };
    let nanos = digits(whole)
        .ok()
        .and_then(|w| w.checked_mul(unit_nanos))
        .and_then(|w| {
            let f = digits(fraction).ok()?;
            w.checked_add(f * unit_nanos / scale)
        })
        .ok_or_else(too_long)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration the way [`parse`] reads it.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// `serde(with = "duration")`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// `serde(with = "duration")`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
    }
}

/// `serde(with = "duration::optional")`: an optional duration, written as [`format`] writes one.
pub(super) mod optional {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::config) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "crate::config::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolConfig, duration};

    #[test]
    fn durations_parse_from_text_and_numbers() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration::parse("40"), Ok(Duration::from_millis(40)));
        assert!(duration::parse("fast").is_err());
        assert!(duration::parse("3 parsecs").is_err());
        // Found by the property tests: read as a float, a duration came back a nanosecond
        // short of what `format` wrote (32148175.457541998s).
        let d = Duration::from_micros(32_148_175_457_542);
        assert_eq!(duration::parse(&duration::format(d)), Ok(d));
        assert_eq!(duration::parse("0.000001s"), Ok(Duration::from_micros(1)));
        assert_eq!(duration::parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(duration::parse("1.5µs"), Ok(Duration::from_nanos(1500)));
        for bad in [".", "", "1.2.3s", "99999999999999999999999h", "1e3s", "-1s"] {
            assert!(duration::parse(bad).is_err(), "{bad:?}");
        }
        let config: PoolConfig =
            serde_json::from_str(r#"{"checkout_timeout": "30ms", "health_check_interval": 2000}"#).expect("parse");
        assert_eq!(config.checkout_timeout, Duration::from_millis(30));
        assert_eq!(config.health_check_interval, Duration::from_secs(2));
        let err = serde_json::from_str::<PoolConfig>(r#"{"max_sise": 3}"#).expect_err("unknown field");
        assert!(err.to_string().contains("max_sise"), "{err}");
    }
}
