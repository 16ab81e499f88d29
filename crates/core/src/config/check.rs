//! Checks the sections' `validate` share: ranges, durations, HTTP URLs and header names.

use std::path::Path;
use std::time::Duration;

use super::{ConfigError, duration};

/// An `http://` or `https://` URL with a host; a `secret` URL never shows in the error.
pub(super) fn http_url(field: &str, text: &str, secret: bool) -> Result<url::Url, ConfigError> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            let shown = if secret {
                "<redacted>".to_owned()
            } else {
                shown_url(text)
            };
            ConfigError::new(field, shown, "must be an http:// or https:// URL with a host")
        })
}

/// An HTTP header (or gRPC metadata) name: letters, digits, `-`, `_` and `.`.
pub(super) fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            name,
            "a header name has only letters, digits, '-', '_' and '.'",
        ))
    }
}

/// The path of a CA file: not empty (whether it holds certificates is checked where it is
/// read, when the TLS client is built: `core` reads no files).
pub(super) fn ca_file(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::new(field, "\"\"", "must be the path of a PEM file"));
    }
    Ok(())
}

/// A URL for an error message, with any password replaced by `***`.
pub(super) fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Cannot fail for URLs that have a password.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => text.to_owned(),
        Err(_) if text.contains('@') => "<redacted>".to_owned(),
        Err(_) => text.to_owned(),
    }
}

/// A timeout or interval: above zero and at most a day (sums of them must not overflow).
pub(super) fn positive(field: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(
            field,
            duration::format(d),
            "must be greater than zero",
        ));
    }
    if d > Duration::from_secs(24 * 3600) && field != "idempotency.keep_for" && field != "presence.window" {
        return Err(ConfigError::new(field, duration::format(d), "must be at most 24 h"));
    }
    Ok(())
}

pub(super) fn at_least(field: &str, value: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(field, value, format!("must be from {min} to {max}")));
    }
    Ok(())
}
