//! The configuration from its sources: defaults ← TOML file ← environment, validated, with
//! errors that name the field and never show a secret.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use stateful_redis_core::{ConfigError, Error, ExecutorConfig};

/// The prefix of the environment variables that set configuration fields.
pub const ENV_PREFIX: &str = "STATEFUL_REDIS_";

/// Fields whose values are secrets, or may hold one (a password in a URL): an error about
/// them never repeats the value.
fn is_secret_path(path: &str) -> bool {
    ["url", "seeds", "password", "headers", "token", "secret"]
        .iter()
        .any(|s| path.split('.').any(|part| part.contains(s)))
}

/// Loads the effective configuration: the defaults, then the TOML `file` (if given), then
/// the environment. Variables are `STATEFUL_REDIS_` and the field's path with `__` between
/// levels: `STATEFUL_REDIS_REDIS__URL`, `STATEFUL_REDIS_BATCH__MAX_BATCH=64`,
/// `STATEFUL_REDIS_ALERTS__INTERVAL=5s`. The result is validated.
///
/// Errors are [`Error::Config`] naming the field (`batch.max_batch`) and the bad value,
/// except for secrets, whose values never appear; a file that cannot be read or is not
/// TOML names the file and the line.
///
/// ```no_run
/// let config = stateful_redis::load_config(Some("stateful-redis.toml".as_ref()))?;
/// println!("{}", stateful_redis::redacted_toml(&config));
/// # Ok::<(), stateful_redis::Error>(())
/// ```
pub fn load_config(file: Option<&Path>) -> Result<ExecutorConfig, Error> {
    load_with_env(file, Env::prefixed(ENV_PREFIX).split("__"))
}

/// [`load_config`] from the TOML `text` alone (no file, no environment): for tests and for
/// configuration held elsewhere.
pub fn parse_config(text: &str) -> Result<ExecutorConfig, Error> {
    let figment = Figment::new().merge(Toml::string(&checked_toml(text, "the configuration")?));
    extract(figment)
}

fn load_with_env(file: Option<&Path>, env: Env) -> Result<ExecutorConfig, Error> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(ConfigError::new(
                "config file",
                path.display(),
                format!("cannot be read: {e}"),
            ))
        })?;
        checked_toml(&text, &path.display().to_string())?;
        // Read by figment as a file, so that errors about its values name it.
        figment = figment.merge(Toml::file_exact(path));
    }
    extract(figment.merge(env))
}

/// The TOML text back if it parses; else an error naming the line and column, without
/// the line's text (it may hold a secret).
fn checked_toml(text: &str, what: &str) -> Result<String, Error> {
    match toml::from_str::<toml::Table>(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, column)
            });
            Err(Error::Config(ConfigError::new(
                "config file",
                what,
                format!("is not valid TOML at line {line}, column {column}: {}", e.message()),
            )))
        }
    }
}

fn extract(figment: Figment) -> Result<ExecutorConfig, Error> {
    let config: ExecutorConfig = figment.extract().map_err(|e| Error::Config(from_figment(e)))?;
    config.validate().map_err(|mut e| {
        // A value from a file: say which file.
        if let Some(file) = figment.find_metadata(&e.field).and_then(file_of) {
            e.reason = format!("{} (from {})", e.reason, file.display());
        }
        e
    })?;
    Ok(config)
}

/// The file a value came from, if it came from one.
fn file_of(metadata: &figment::Metadata) -> Option<&Path> {
    match &metadata.source {
        Some(figment::Source::File(path)) => Some(path),
        _ => None,
    }
}

/// The first error of figment's chain, as a [`ConfigError`] naming the field.
fn from_figment(error: figment::Error) -> ConfigError {
    use figment::error::Kind;
    // `alerts.rules[0].threshold`, as the TOML reads.
    let mut field = String::new();
    for part in &error.path {
        if part.parse::<usize>().is_ok() {
            field.push_str(&format!("[{part}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(part);
        }
    }
    let (value, reason) = match &error.kind {
        Kind::UnknownField(name, expected) => {
            if error.path.last() != Some(name) {
                field = if field.is_empty() {
                    name.clone()
                } else {
                    format!("{field}.{name}")
                };
            }
            (
                name.clone(),
                format!("is not a setting; expected one of: {}", expected.join(", ")),
            )
        }
        Kind::UnknownVariant(name, expected) => (name.clone(), format!("expected one of: {}", expected.join(", "))),
        Kind::InvalidType(actual, expected) => (actual.to_string(), format!("expected {expected}")),
        Kind::InvalidValue(actual, expected) => (actual.to_string(), format!("expected {expected}")),
        Kind::Message(message) => (String::new(), message.clone()),
        other => (String::new(), other.to_string()),
    };
    if field.is_empty() {
        field = "config".into();
    }
    if is_secret_path(&field) {
        return ConfigError::new(field, "<redacted>", "is not valid");
    }
    let source = error
        .metadata
        .as_ref()
        .map(|m| file_of(m).map_or_else(|| m.name.to_string(), |file| file.display().to_string()))
        .unwrap_or_default();
    let reason = if source.is_empty() {
        reason
    } else {
        format!("{reason} (from {source})")
    };
    ConfigError::new(field, value, reason)
}

/// The configuration as TOML, with every secret (passwords, also one inside the Redis URL,
/// header values, webhook URLs) redacted: what `stateful-redis config` prints.
pub fn redacted_toml(config: &ExecutorConfig) -> String {
    // Secrets serialize redacted (`Secret`, `RedisUrl`), so the plain serialization is safe.
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# the configuration cannot be shown as TOML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> (String, String) {
        match err {
            Error::Config(e) => (e.field.clone(), e.to_string()),
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn toml_overrides_defaults() {
        let text = "[batch]\nmax_batch = 64\n[redis]\nurl = \"redis://127.0.0.1:7000\"\n";
        let config = parse_config(text).expect("valid");
        assert_eq!(config.batch.max_batch, 64);
        assert_eq!(
            config.batch.queue_capacity,
            ExecutorConfig::default().batch.queue_capacity
        );
        let dir = std::env::temp_dir().join(format!("sr-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, text).expect("write");
        let missing = load_with_env(
            Some(&dir.join("missing.toml")),
            Env::prefixed("SR_TEST_NO_SUCH_PREFIX_"),
        );
        assert!(missing.expect_err("no file").to_string().contains("missing.toml"));
        // The environment is tested through the CLI (a child process with its own variables).
        let config = load_with_env(Some(&file), Env::prefixed("SR_TEST_NO_SUCH_PREFIX_")).expect("valid");
        assert_eq!(config.batch.max_batch, 64);
    }

    #[test]
    fn errors_about_a_value_from_the_file_name_the_file() {
        let dir = std::env::temp_dir().join(format!("sr-settings-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let no_env = || Env::prefixed("SR_TEST_NO_SUCH_PREFIX_");
        for (text, field) in [
            ("[batch]\nmax_batch = \"lots\"\n", "batch.max_batch"),
            ("[batch]\nmax_batch = 0\n", "batch.max_batch"),
            ("[batch]\nmax_bach = 3\n", "batch.max_bach"),
        ] {
            let file = dir.join("bad.toml");
            std::fs::write(&file, text).expect("write");
            let (got, message) = field_of(load_with_env(Some(&file), no_env()).expect_err(text));
            assert_eq!(got, field, "{message}");
            assert!(message.contains(&file.display().to_string()), "{message}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_renamed_setting_is_read_under_its_former_name() {
        let config = parse_config("[batch]\ncalls_per_run = 8\n").expect("valid");
        assert_eq!(config.batch.calls_per_bundle, 8);
        let config = parse_config("[redis.pool]\nshared_connections = 3\n").expect("valid");
        assert_eq!(config.redis.pool.pipeline_links, 3);
    }

    #[test]
    fn bad_values_name_the_field_and_hide_secrets() {
        let (field, text) = field_of(parse_config("[batch]\nmax_batch = \"lots\"\n").expect_err("bad type"));
        assert_eq!(field, "batch.max_batch", "{text}");
        assert!(text.contains("lots"), "{text}");
        let (field, text) = field_of(parse_config("[batch]\nmax_bach = 3\n").expect_err("typo"));
        assert_eq!(field, "batch.max_bach", "{text}");
        let (field, _) = field_of(parse_config("[batch]\nmax_batch = 0\n").expect_err("invalid"));
        assert_eq!(field, "batch.max_batch");
        let (field, text) = field_of(parse_config("[redis]\nurl = 17\n").expect_err("bad url type"));
        assert_eq!(field, "redis.url");
        assert!(!text.contains("17"), "{text}");
        let (field, text) = field_of(
            parse_config("[redis]\ncluster = true\nseeds = \"redis://:hunter2@h:7000\"\n").expect_err("a string"),
        );
        assert_eq!(field, "redis.seeds");
        assert!(!text.contains("hunter2"), "{text}");
        let (field, text) = field_of(parse_config("[redis]\nurl = \"redis://:hunter2@host\n").expect_err("syntax"));
        assert_eq!(field, "config file");
        assert!(text.contains("line 2") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_printed_config_hides_the_url_password() {
        let config = parse_config("[redis]\nurl = \"redis://app:hunter2@127.0.0.1:6379\"\n").expect("valid");
        let shown = redacted_toml(&config);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
    }
}

#[cfg(test)]
mod proptests;
