//! Bad input is refused before any I/O; corrupt data in Redis is a typed error.

use stateful_redis::{Error, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, command_calls, config_for, executor};

#[tokio::test]
async fn invalid_ids_and_oversized_values_send_nothing() {
    let server = RedisServer::start();
    let mut config = config_for(&server.url());
    config.state.max_value_size = 64;
    let exec = stateful_redis::StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("connect");
    let counters = exec.state::<Counter>("it").expect("namespace");
    let blobs = exec.state::<String>("it").expect("namespace");
    let before = command_calls(&server);
    let long = "x".repeat(257);
    for bad in ["", "a{b}", "tab\there", "nul\0", long.as_str()] {
        match counters.put(bad, &Counter { n: 1 }).await {
            Err(Error::InvalidId(_)) => {}
            other => panic!("{bad:?}: expected an invalid id, got {other:?}"),
        }
        assert!(matches!(counters.get(bad).await, Err(Error::InvalidId(_))));
        assert!(matches!(
            counters.cas(bad, Version::NONE, &Counter::default()).await,
            Err(Error::InvalidId(_))
        ));
    }
    match blobs.put("ok", &"y".repeat(100)).await {
        Err(Error::ValueTooLarge { entity, size, max }) => {
            assert_eq!((entity.as_str(), max), ("ok", 64));
            assert!(size > 64);
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(matches!(
        counters.transition("ok", &["a"], "bad\nstatus", None).await,
        Err(Error::InvalidId(_))
    ));
    assert!(exec.state::<Counter>("bad{ns}").is_err());
    assert_eq!(command_calls(&server), before, "a refused operation reached Redis");
}

#[tokio::test]
async fn corrupt_records_are_typed_errors_naming_the_entity() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    server.cli(&["HSET", "it:{broken}:s", "v", "3", "d", "not a format byte"]);
    match counters.get("broken").await {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("\"broken\""), "{e}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    server.cli(&["HSET", "it:{json}:s", "v", "1", "d", "\u{1}{\"n\": \"many\"}"]);
    assert!(matches!(counters.get("json").await, Err(Error::Decode { entity, .. }) if entity == "json"));
    server.cli(&["HSET", "it:{noversion}:s", "d", "\u{1}{\"n\":1}"]);
    assert!(matches!(counters.get("noversion").await, Err(Error::Corrupt { entity, .. }) if entity == "noversion"));
    server.cli(&["HSET", "it:{badversion}:s", "v", "seven", "d", "\u{1}{\"n\":1}"]);
    assert!(matches!(counters.get("badversion").await, Err(Error::Corrupt { .. })));
    // A write onto a corrupt version fails in the script, naming it, and changes nothing.
    match counters.put("badversion", &Counter { n: 2 }).await {
        Err(Error::Script { script, message }) => {
            assert_eq!(script, "write");
            assert!(message.contains("not an integer"), "{message}");
        }
        other => panic!("expected a script error, got {other:?}"),
    }
    // A key of the wrong type.
    server.cli(&["SET", "it:{string}:s", "x"]);
    assert!(matches!(
        counters.get("string").await,
        Err(Error::Script { script: "get", .. })
    ));
}
