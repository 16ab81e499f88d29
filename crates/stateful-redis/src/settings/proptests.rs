//! Property tests of loading the configuration: the TOML comes from a file anyone wrote.

use proptest::prelude::*;

use super::*;

/// The configuration error of `result`, failing the case on any other error.
fn config_error(result: Result<ExecutorConfig, Error>) -> Result<Option<ConfigError>, TestCaseError> {
    match result {
        Ok(_) => Ok(None),
        Err(Error::Config(e)) => Ok(Some(e)),
        Err(other) => Err(TestCaseError::fail(format!("not a config error: {other}"))),
    }
}

/// Sections and the keys they hold, with a few that do not exist.
const KEYS: &[(&str, &[&str])] = &[
    (
        "redis",
        &[
            "url",
            "cluster",
            "seeds",
            "tls_ca_file",
            "connect_timeout",
            "response_timeout",
            "nope",
        ],
    ),
    (
        "redis.pool",
        &[
            "pipeline_links",
            "max_size",
            "max_size_limit",
            "min_idle",
            "checkout_timeout",
            "health_check_interval",
        ],
    ),
    ("state", &["max_value_size", "compress_above", "update_max_attempts"]),
    (
        "batch",
        &[
            "max_batch",
            "linger",
            "queue_capacity",
            "pipelines_in_flight",
            "overload",
            "wait_deadline",
            "calls_per_bundle",
        ],
    ),
    ("idempotency", &["keep", "keep_for"]),
    ("leases", &["drift_factor", "drift_min"]),
    ("presence", &["shards", "window"]),
    ("retry", &["attempts", "backoff"]),
    (
        "telemetry",
        &[
            "enabled",
            "protocol",
            "endpoint",
            "timeout",
            "headers",
            "metrics_interval",
            "traces",
            "sample_ratio",
            "service_name",
            "shutdown_timeout",
        ],
    ),
    (
        "alerts",
        &[
            "enabled",
            "interval",
            "default_rules",
            "rules",
            "hysteresis",
            "labels",
            "log",
            "webhook",
            "alertmanager",
        ],
    ),
    ("alerts.webhook", &["url", "timeout", "retries", "headers"]),
    ("alerts.alertmanager", &["url", "timeout", "retries", "resend_interval"]),
    ("nowhere", &["thing"]),
];

/// `text` as a TOML string, escaped as TOML escapes.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML value of any type, with the edges validation draws.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(u32::MAX.into()), Just(i64::MAX)].prop_map(|n| n.to_string()),
        prop_oneof![
            Just("nan".to_owned()),
            Just("inf".to_owned()),
            Just("-0.0".to_owned()),
            Just("0.5".to_owned())
        ],
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| format!("{x:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,4}(\\.[0-9]{1,3})?(ms|s|m|h|us|x)?".prop_map(|s| quoted(&s)),
        prop_oneof![
            Just("redis://127.0.0.1:6379"),
            Just("rediss://h:1"),
            Just("http://h:9"),
            Just("wait"),
            Just("reject"),
            Just("grpc"),
            Just("")
        ]
        .prop_map(quoted),
        ".{0,12}".prop_map(|s| quoted(&s)),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..3).prop_map(|kv| {
                let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

/// One key of one section, and a value for it.
fn assignment() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    proptest::sample::select(KEYS)
        .prop_flat_map(|(section, keys)| (Just(section), proptest::sample::select(keys), value()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, TOML or not, multi-byte characters included: a configuration or a
    /// configuration error, never a panic or another error.
    #[test]
    fn any_text_gives_a_config_or_a_config_error(
        text in prop_oneof![".{0,60}", "[\\[\\]{}=\"'a-z_.0-9 \n#,é€😀-]{0,80}"],
    ) {
        if let Some(e) = config_error(parse_config(&text))? {
            prop_assert!(!e.field.is_empty(), "{}", e);
        }
    }

    /// A syntax error names the line and column, also after multi-byte characters.
    #[test]
    fn syntax_errors_name_the_line(before in "([a-z]{1,4} = \"[é€😀a-z]{0,4}\"\n){0,4}", bad in "[é€😀]{0,3}[=\\[\"]") {
        let text = format!("{before}{bad}\n");
        if let Some(e) = config_error(parse_config(&text))? {
            prop_assert_eq!(&e.field, "config file");
            prop_assert!(e.reason.contains("line "), "{}", e);
        }
    }

    /// One key set to any value: a configuration, or an error naming that key (or the
    /// field it is checked against).
    #[test]
    fn an_error_names_the_key_set((section, key, value) in assignment()) {
        let text = format!("[{section}]\n{key} = {value}\n");
        let Some(e) = config_error(parse_config(&text))? else { return Ok(()) };
        let path = format!("{section}.{key}");
        let named = e.field.starts_with(&path)
            // A section that is a table set as a whole.
            || (section.starts_with("alerts.") && e.field.starts_with(section))
            || (path == "redis.pool.max_size_limit" && e.field == "redis.pool.max_size")
            // The retries' span is checked against the message window, which the error names
            // (with the settings the span comes from in its reason).
            || (matches!(path.as_str(), "redis.response_timeout" | "retry.attempts" | "retry.backoff")
                && e.field == "idempotency.keep_for")
            // A section that does not exist.
            || (section == "nowhere" && e.field == section);
        prop_assert!(named, "{:?} gave {}", text, e);
    }

    /// Several keys at once: the error names one of the sections written.
    #[test]
    fn an_error_names_a_section_written(assignments in proptest::collection::vec(assignment(), 1..6)) {
        let mut text = String::new();
        let mut sections: Vec<&str> = Vec::new();
        for (section, key, value) in &assignments {
            // TOML refuses a table defined twice: one header per section, and no key
            // that is also a section.
            if sections.contains(section) || matches!(*key, "webhook" | "alertmanager") {
                continue;
            }
            sections.push(section);
            text.push_str(&format!("[{section}]\n{key} = {value}\n"));
        }
        if let Some(e) = config_error(parse_config(&text))? {
            prop_assert!(
                sections.iter().any(|s| e.field.starts_with(s.split('.').next().unwrap_or(s))),
                "{:?} gave {}", text, e
            );
        }
    }

    /// A secret in any field that holds one never shows in the error, whatever else is wrong.
    #[test]
    fn secrets_never_show(
        secret in "[A-Z]{6,10}",
        at in 0usize..5,
        junk in "[a-z0-9:/@.%?=\\[\\] -]{0,16}",
        others in proptest::collection::vec(assignment(), 0..3),
    ) {
        let secret = format!("PW{secret}");
        let (section, body) = match at {
            0 => ("redis", format!("url = \"redis://u:{secret}@{junk}\"")),
            1 => ("redis", format!("cluster = true\nseeds = [\"redis://:{secret}@{junk}\", 7]")),
            2 => ("alerts.webhook", format!("url = \"{junk}{secret}\"")),
            3 => ("alerts.webhook", format!("url = \"http://h\"\nheaders = {{ x = \"{secret}\\u0001{junk}\" }}")),
            _ => ("telemetry", format!("headers = {{ x = \"{secret}\", \"{junk}\" = \"{secret}\" }}")),
        };
        let mut text = format!("[{section}]\n{body}\n");
        for (other, key, value) in others {
            if !text.contains(&format!("[{other}]")) && !other.starts_with(section) && !section.starts_with(other) {
                text.push_str(&format!("[{other}]\n{key} = {value}\n"));
            }
        }
        if let Some(e) = config_error(parse_config(&text))? {
            prop_assert!(!e.to_string().contains(&secret), "{:?} gave {}", text, e);
        }
    }
}
