//! Durations in config files: `"250ms"`, `"2s"`, `"1m"`, or a number of milliseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` or plain milliseconds `"250"`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"250ms\", \"2s\" or \"1m\""))?;
    let seconds = match unit.trim() {
        "" | "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
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
        let config: PoolConfig =
            serde_json::from_str(r#"{"checkout_timeout": "30ms", "health_check_interval": 2000}"#).expect("parse");
        assert_eq!(config.checkout_timeout, Duration::from_millis(30));
        assert_eq!(config.health_check_interval, Duration::from_secs(2));
        let err = serde_json::from_str::<PoolConfig>(r#"{"max_sise": 3}"#).expect_err("unknown field");
        assert!(err.to_string().contains("max_sise"), "{err}");
    }
}
