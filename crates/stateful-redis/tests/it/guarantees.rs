//! The guarantees under what operators do and what Redis does under pressure: eviction
//! policies, keys of the wrong type, clock steps, retries after an unknown outcome, and the
//! limits the configuration must keep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stateful_redis::{Change, Error, ExecutorConfig, OverloadPolicy, StatefulExecutor, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, config_for, executor};

async fn build(config: ExecutorConfig) -> Result<StatefulExecutor, Error> {
    StatefulExecutor::builder().config(config).build().await
}

/// Waits (at most 10 s) until `done`; a bound for a background check, not a timing assertion.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// `volatile-*` evicts exactly the keys with an expiry (leases, message ids), `allkeys-*` any
/// key: an executor is not built on such a server unless the user accepts it, and a policy
/// changed at run time is seen by the health check.
#[tokio::test]
async fn an_evicting_maxmemory_policy_is_refused_unless_allowed_and_is_watched() {
    let server = RedisServer::start();
    for policy in ["volatile-lru", "allkeys-lfu"] {
        assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory-policy", policy]), "OK");
        match build(config_for(&server.url())).await {
            Err(e @ Error::UnsafeEviction { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(policy) && text.contains(&server.port().to_string()),
                    "{text}"
                );
                assert!(text.contains("redis.allow_eviction"), "{text}");
            }
            other => panic!("{policy}: expected UnsafeEviction, got {other:?}"),
        }
    }

    let mut config = config_for(&server.url());
    config.redis.allow_eviction = true;
    config.redis.pool.health_check_interval = Duration::from_millis(100);
    let exec = build(config).await.expect("allowed explicitly");
    assert_eq!(exec.pool_stats().evicting_servers, 1);
    assert_eq!(exec.snapshot().metric("servers.evicting"), Some(1.0));
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "OK");
    eventually("the health check sees noeviction", || {
        exec.pool_stats().evicting_servers == 0
    })
    .await;

    // Built on noeviction, an operator's change is seen too.
    let mut config = config_for(&server.url());
    config.redis.pool.health_check_interval = Duration::from_millis(100);
    let exec = build(config).await.expect("noeviction");
    assert_eq!(exec.pool_stats().evicting_servers, 0);
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]), "OK");
    eventually("the health check sees volatile-ttl", || {
        exec.pool_stats().evicting_servers == 1
    })
    .await;
}

/// A least-privilege user without `+info` (from an older `ACL_COMMANDS`) cannot show the
/// policy: the build says which permission is missing.
#[tokio::test]
async fn a_policy_that_cannot_be_read_names_the_missing_permission() {
    let rules: Vec<&str> = stateful_redis::ACL_COMMANDS
        .split_whitespace()
        .filter(|rule| *rule != "+info")
        .collect();
    let server = RedisServer::builder()
        .require_admin_password("admin-pw")
        .acl_user("app", "app-pw", &format!("~it:* {}", rules.join(" ")))
        .start();
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    match build(config_for(&url)).await {
        Err(Error::NoPermission { message }) => {
            assert!(
                message.contains("maxmemory-policy") && message.contains("+info"),
                "{message}"
            );
        }
        other => panic!("expected NoPermission, got {other:?}"),
    }
}

/// A key of the wrong type under a message-id key used to fail only after the state was
/// written: the write was applied, the caller got an error, and the outcome was not recorded.
#[tokio::test]
async fn a_key_of_the_wrong_type_fails_before_anything_is_written() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    for (entity, junk) in [("a", "it:{a}:m"), ("b", "it:{b}:mr")] {
        server.cli(&["SET", junk, "junk"]);
        match counters
            .apply_once(entity, "msg-1", Change::Put(&Counter { n: 1 }))
            .await
        {
            Err(Error::Script { message, .. }) => assert!(message.contains("WRONGTYPE"), "{message}"),
            other => panic!("{junk}: expected WRONGTYPE, got {other:?}"),
        }
        assert_eq!(
            server.cli(&["EXISTS", &format!("it:{{{entity}}}:s")]),
            "0",
            "{junk}: state written"
        );
        assert_eq!(server.cli(&["DBSIZE"]), if entity == "a" { "1" } else { "2" });
    }
    // The same for a fenced write's keys.
    let lease = exec
        .leases("it")
        .expect("namespace")
        .acquire("c", "me", Duration::from_secs(30))
        .await
        .expect("acquire");
    server.cli(&["SET", "it:{c}:a", "junk"]);
    assert!(matches!(
        counters.under(&lease).put(&Counter { n: 1 }).await,
        Err(Error::Script { .. })
    ));
    assert_eq!(server.cli(&["EXISTS", "it:{c}:s"]), "0");
}

/// Message ids were forgotten oldest-by-clock first: after the server's clock stepped back (or a
/// failover to a replica whose clock is behind), a new id was the oldest and was forgotten at
/// once, so its redelivery applied again.
#[tokio::test]
async fn a_clock_step_back_never_makes_a_new_message_id_forget_itself() {
    let server = RedisServer::start();
    let mut config = config_for(&server.url());
    config.idempotency.keep = 4;
    let exec = build(config).await.expect("connect");
    let counters = exec.state::<Counter>("it").expect("namespace");
    counters.put("e", &Counter { n: 0 }).await.expect("seed");
    // Four ids remembered an hour ahead of the server's clock now, in the stored format of
    // earlier versions ('code|detail').
    let time = server.cli(&["TIME"]);
    let seconds: u64 = time.lines().next().and_then(|s| s.parse().ok()).expect("TIME");
    let ahead = (seconds + 3600) * 1_000_000;
    for i in 0..4u64 {
        let id = format!("old-{i}");
        server.cli(&["ZADD", "it:{e}:m", &(ahead + i).to_string(), &id]);
        server.cli(&["HSET", "it:{e}:mr", &id, "1|1"]);
    }
    let first = counters
        .apply_once("e", "new", Change::Put(&Counter { n: 1 }))
        .await
        .expect("first delivery");
    assert_eq!((first.version, first.replayed), (Version(2), false));
    let again = counters
        .apply_once("e", "new", Change::Put(&Counter { n: 2 }))
        .await
        .expect("redelivery");
    assert_eq!((again.version, again.replayed), (Version(2), true), "applied twice");
    let now = counters.get("e").await.expect("get").expect("exists");
    assert_eq!((now.version, now.value), (Version(2), Counter { n: 1 }));
    // The oldest of the count went instead; an old id still replays in the old format.
    assert_eq!(server.cli(&["ZSCORE", "it:{e}:m", "old-0"]), "");
    let old = counters
        .apply_once("e", "old-3", Change::Put(&Counter { n: 9 }))
        .await
        .expect("old id");
    assert_eq!((old.version, old.replayed), (Version(1), true));
}

/// Once an attempt's outcome is unknown (it may have applied), a retry refused by a full queue
/// ("nothing was sent") must not hide it: the caller gets the unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_after_an_unknown_outcome_reports_the_unknown_outcome() {
    let server = Arc::new(RedisServer::start());
    let mut config = config_for(&server.url());
    config.redis.response_timeout = Duration::from_millis(300);
    config.redis.pool.pipeline_links = 1;
    config.retry.attempts = 2;
    config.retry.backoff = Duration::from_millis(10);
    config.batch.queue_capacity = 1;
    config.batch.pipelines_in_flight = 1;
    config.batch.overload = OverloadPolicy::Reject;
    let exec = build(config).await.expect("connect");
    let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    let sleeper = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.cli(&["DEBUG", "SLEEP", "2"]))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first attempt is sent (the queue is empty) and waits for the sleeping server.
    let victim = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move { counters.apply_once("v", "msg-1", Change::Put(&Counter { n: 1 })).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Others keep the queue full, so the retry is most likely refused.
    let stop = Arc::new(AtomicBool::new(false));
    let fillers: Vec<_> = (0..50)
        .map(|i| {
            let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = counters.put(&format!("f{i}"), &Counter { n: 1 }).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let outcome = victim.await.expect("task");
    stop.store(true, Ordering::Relaxed);
    for filler in fillers {
        filler.await.expect("filler");
    }
    match outcome {
        Err(e) if e.is_outcome_unknown() => {}
        other => panic!("the first attempt may have applied; expected an unknown outcome, got {other:?}"),
    }
    assert_eq!(sleeper.join().expect("sleeper"), "OK");
    assert!(exec.retries() >= 1);
    // Whatever happened, a redelivery applies it at most once.
    let again = counters
        .apply_once("v", "msg-1", Change::Put(&Counter { n: 1 }))
        .await
        .expect("redelivery");
    assert_eq!(again.version, Version(1));
}

/// `idempotency.keep_for` shorter than a call and its retries would let the executor's own
/// retry of an applied write find its id forgotten and apply again.
#[tokio::test]
async fn a_message_window_shorter_than_the_retries_is_refused() {
    let server = RedisServer::start();
    let mut config = config_for(&server.url());
    config.idempotency.keep_for = Duration::from_secs(2);
    match build(config.clone()).await {
        Err(Error::Config(e)) => {
            assert_eq!(e.field, "idempotency.keep_for");
            assert!(e.reason.contains("retries"), "{e}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    config.idempotency.keep_for = Duration::from_secs(10);
    build(config)
        .await
        .expect("longer than 3 attempts of 1 s and their pauses");
}
