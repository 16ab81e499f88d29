//! Property tests of configuration parsing and validation: the values come from files and
//! the environment.

use proptest::prelude::*;

use super::*;

/// A password no other part of a generated URL can spell: the rest is lowercase.
fn password() -> impl Strategy<Value = String> {
    "[A-Z0-9]{4,12}".prop_map(|p| format!("PW{p}"))
}

/// Anything that could follow the credentials of a URL, well-formed or not.
fn url_rest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{1,12}(:[0-9]{1,6})?(/[0-9]{1,3})?",
        "[a-z0-9.:/?=&%@#\\[\\] -]{0,24}",
    ]
}

/// One field set to a value, and the fields an error about it may name.
type Setter = (&'static str, &'static [&'static str], fn(&mut ExecutorConfig, u64, f64));

/// The numeric fields and what they are set to from a random integer and float. Several
/// fields constrain each other: an error may name the other one.
const SETTERS: &[Setter] = &[
    ("batch.max_batch", &["batch.max_batch"], |c, n, _| {
        c.batch.max_batch = n as usize
    }),
    ("batch.queue_capacity", &["batch.queue_capacity"], |c, n, _| {
        c.batch.queue_capacity = n as usize
    }),
    (
        "batch.pipelines_in_flight",
        &["batch.pipelines_in_flight"],
        |c, n, _| c.batch.pipelines_in_flight = n as usize,
    ),
    ("batch.calls_per_bundle", &["batch.calls_per_bundle"], |c, n, _| {
        c.batch.calls_per_bundle = n as usize
    }),
    ("batch.linger", &["batch.linger"], |c, n, _| {
        c.batch.linger = Duration::from_micros(n)
    }),
    ("batch.wait_deadline", &["batch.wait_deadline"], |c, n, _| {
        c.batch.wait_deadline = Duration::from_micros(n)
    }),
    ("state.max_value_size", &["state.max_value_size"], |c, n, _| {
        c.state.max_value_size = n as usize
    }),
    ("state.compress_above", &["state.compress_above"], |c, n, _| {
        c.state.compress_above = Some(n as usize)
    }),
    (
        "state.update_max_attempts",
        &["state.update_max_attempts"],
        |c, n, _| c.state.update_max_attempts = n as u32,
    ),
    ("idempotency.keep", &["idempotency.keep"], |c, n, _| {
        c.idempotency.keep = n as u32
    }),
    ("idempotency.keep_for", &["idempotency.keep_for"], |c, n, _| {
        c.idempotency.keep_for = Duration::from_millis(n)
    }),
    ("leases.drift_factor", &["leases.drift_factor"], |c, _, x| {
        c.leases.drift_factor = x
    }),
    ("leases.drift_min", &["leases.drift_min"], |c, n, _| {
        c.leases.drift_min = Duration::from_micros(n)
    }),
    ("presence.shards", &["presence.shards"], |c, n, _| {
        c.presence.shards = n as u32
    }),
    ("presence.window", &["presence.window"], |c, n, _| {
        c.presence.window = Duration::from_millis(n)
    }),
    (
        "retry.attempts",
        &["retry.attempts", "idempotency.keep_for"],
        |c, n, _| c.retry.attempts = n as u32,
    ),
    (
        "retry.backoff",
        &["retry.backoff", "idempotency.keep_for"],
        |c, n, _| c.retry.backoff = Duration::from_micros(n),
    ),
    ("redis.connect_timeout", &["redis.connect_timeout"], |c, n, _| {
        c.redis.connect_timeout = Duration::from_micros(n)
    }),
    (
        "redis.response_timeout",
        &["redis.response_timeout", "idempotency.keep_for"],
        |c, n, _| c.redis.response_timeout = Duration::from_micros(n),
    ),
    (
        "redis.pool.pipeline_links",
        &["redis.pool.pipeline_links"],
        |c, n, _| c.redis.pool.pipeline_links = n as u32,
    ),
    ("redis.pool.max_size", &["redis.pool.max_size"], |c, n, _| {
        c.redis.pool.max_size = n as u32
    }),
    (
        "redis.pool.max_size_limit",
        &["redis.pool.max_size_limit", "redis.pool.max_size"],
        |c, n, _| c.redis.pool.max_size_limit = n as u32,
    ),
    ("redis.pool.min_idle", &["redis.pool.min_idle"], |c, n, _| {
        c.redis.pool.min_idle = n as u32
    }),
    (
        "redis.pool.checkout_timeout",
        &["redis.pool.checkout_timeout"],
        |c, n, _| c.redis.pool.checkout_timeout = Duration::from_micros(n),
    ),
    ("telemetry.sample_ratio", &["telemetry.sample_ratio"], |c, _, x| {
        c.telemetry.sample_ratio = Some(x)
    }),
    (
        "telemetry.shutdown_timeout",
        &["telemetry.shutdown_timeout"],
        |c, n, _| c.telemetry.shutdown_timeout = Duration::from_micros(n),
    ),
    ("alerts.interval", &["alerts.interval"], |c, n, _| {
        c.alerts.interval = Duration::from_micros(n)
    }),
    ("alerts.hysteresis", &["alerts.hysteresis"], |c, _, x| {
        c.alerts.hysteresis = x
    }),
];

/// Integers around the edges the validation draws: 0, 1, small, large, the type's ends.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        0u64..2_000,
        0u64..20_000_000,
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1.0f64..2.0,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        Just(0.5),
        any::<f64>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text as a duration: a duration or an error, never a panic.
    #[test]
    fn any_text_as_duration(text in prop_oneof![".{0,16}", "[0-9.]{0,24}(ms|us|µs|s|m|h|x)?", "[0-9]{15,30}(h|m|s)"]) {
        let _ = duration::parse(&text);
    }

    /// What `format` writes, `parse` reads back exactly (to the microsecond it keeps).
    #[test]
    fn durations_round_trip(micros in prop_oneof![0u64..10_000_000, 0u64..(1u64 << 50)]) {
        let d = Duration::from_micros(micros);
        prop_assert_eq!(duration::parse(&duration::format(d)), Ok(d), "{}", duration::format(d));
    }

    /// Whole numbers in every unit read exactly (as floats they did not, past 2^53); past
    /// what a duration holds, an error.
    #[test]
    fn whole_durations_in_every_unit(n in number(), unit in prop_oneof![Just(""), Just("ms"), Just("s"), Just("m"), Just("h")]) {
        let parsed = duration::parse(&format!("{n}{unit}"));
        let exact = match unit {
            "" | "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            _ => n.checked_mul(3600).map(Duration::from_secs),
        };
        prop_assert_eq!(parsed.ok(), exact);
    }

    /// The span of a call and its retries, in closed form, is the sum of its attempts and
    /// pauses (saturating), for any number of attempts.
    #[test]
    fn retry_span_is_the_sum(attempts in prop_oneof![0u32..130, Just(u32::MAX)], backoff in number(), timeout in number()) {
        let retry = RetryConfig { attempts, backoff: Duration::from_nanos(backoff), ..RetryConfig::default() };
        let timeout = Duration::from_nanos(timeout);
        let mut sum = Duration::ZERO;
        let mut pause = retry.backoff;
        // The loop `span` was: past 130 attempts every case here has saturated.
        for attempt in 0..attempts.min(130) {
            sum = sum.saturating_add(timeout);
            if attempt + 1 < attempts {
                sum = sum.saturating_add(pause);
                pause = pause.saturating_mul(2);
            }
        }
        if attempts > 130 {
            sum = if backoff == 0 { timeout.saturating_mul(attempts) } else { Duration::MAX };
        }
        prop_assert_eq!(retry.span(timeout), sum);
    }

    /// Any text as a Redis URL: shown and checked without a panic, and a password in it
    /// never shows, whether or not the rest parses.
    #[test]
    fn redis_urls_never_show_their_password(
        scheme in prop_oneof!["redis|rediss|redis\\+unix|unix|http", "[a-z+]{0,6}"],
        user in "[a-z]{0,6}",
        password in password(),
        rest in url_rest(),
    ) {
        let url = RedisUrl::new(format!("{scheme}://{user}:{password}@{rest}"));
        let shown = url.redacted();
        prop_assert!(!shown.contains(&password), "{}", shown);
        let printed = format!("{url} {url:?}");
        prop_assert!(!printed.contains(&password), "{}", printed);
        if let Err(e) = url.validate("redis.url") {
            prop_assert_eq!(&e.field, "redis.url");
            prop_assert!(!e.to_string().contains(&password), "{}", e);
        }
        let _ = url.is_tls();
    }

    /// Any text as a Redis URL, not only URL-shaped: no panic.
    #[test]
    fn any_text_as_redis_url(text in ".{0,40}") {
        let url = RedisUrl::new(text);
        let _ = (url.redacted(), url.validate("redis.url"), url.is_tls());
    }

    /// Webhook URLs are secret; the Alertmanager URL shows, but not its password.
    #[test]
    fn notifier_urls_never_show_a_password(
        scheme in prop_oneof!["https?", "[a-z]{0,5}"],
        password in password(),
        rest in url_rest(),
    ) {
        let text = format!("{scheme}://u:{password}@{rest}");
        let mut config = ExecutorConfig::default();
        config.alerts.webhook = Some(WebhookConfig::new(text.clone()));
        if let Err(e) = config.validate() {
            prop_assert!(e.field.starts_with("alerts.webhook"), "{}", e);
            prop_assert!(!e.to_string().contains(&password), "{}", e);
        }
        let mut config = ExecutorConfig::default();
        config.alerts.alertmanager = Some(AlertmanagerConfig::new(text));
        if let Err(e) = config.validate() {
            prop_assert!(e.field.starts_with("alerts.alertmanager"), "{}", e);
            prop_assert!(!e.to_string().contains(&password), "{}", e);
        }
    }

    /// One field set to any value: valid, or an error naming that field (or the one it
    /// is checked against).
    #[test]
    fn validation_names_the_field(setter in proptest::sample::select(SETTERS), n in number(), x in float()) {
        let (name, named, set) = setter;
        let mut config = ExecutorConfig::default();
        set(&mut config, n, x);
        if let Err(e) = config.validate() {
            prop_assert!(named.contains(&e.field.as_str()), "setting {} gave {}", name, e);
            prop_assert!(e.to_string().contains(&e.field));
        }
    }

    /// Alert rules, labels and header names of any text: valid, or an error naming where.
    #[test]
    fn alert_rules_and_names_of_any_text(
        rule_name in ".{0,12}",
        label in ".{0,8}",
        header in ".{0,8}",
        threshold in float(),
        twice in any::<bool>(),
    ) {
        let mut config = ExecutorConfig::default();
        let mut rule = AlertRule::new(rule_name, "operations.failure_rate", threshold);
        rule.labels.insert(label.clone(), "v".into());
        config.alerts.rules = if twice { vec![rule.clone(), rule] } else { vec![rule] };
        if let Err(e) = config.validate() {
            prop_assert!(e.field.starts_with("alerts.rules["), "{}", e);
        }
        let mut config = ExecutorConfig::default();
        config.alerts.labels.insert(label, "v".into());
        config.telemetry.headers.insert(header, Secret::new("v"));
        if let Err(e) = config.validate() {
            prop_assert!(e.field == "alerts.labels" || e.field == "telemetry.headers", "{}", e);
        }
    }
}
