//! Bad input is refused before any I/O; corrupt data in Redis is a typed error.

use stateful_redis::{Change, Error, Version};
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
    server.write_record("it:{broken}:s", 3, "", "not a format byte");
    match counters.get("broken").await {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("\"broken\""), "{e}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    server.write_record("it:{json}:s", 1, "", "\u{1}{\"n\": \"many\"}");
    assert!(matches!(counters.get("json").await, Err(Error::Decode { entity, .. }) if entity == "json"));
    server.write_record("it:{noversion}:s", 0, "", "\u{1}{\"n\":1}");
    assert!(matches!(counters.get("noversion").await, Err(Error::Corrupt { entity, .. }) if entity == "noversion"));
    server.cli(&["SET", "it:{foreign}:s", "seven"]);
    assert!(matches!(counters.get("foreign").await, Err(Error::Corrupt { .. })));
    // A write onto what is not a record is refused as corrupt, saying why, and changes nothing.
    match counters.put("foreign", &Counter { n: 2 }).await {
        Err(Error::Corrupt { entity, detail }) => {
            assert_eq!(entity, "foreign");
            assert!(detail.contains("not a record"), "{detail}");
        }
        other => panic!("expected a corrupt record, got {other:?}"),
    }
    assert_eq!(server.cli(&["GET", "it:{foreign}:s"]), "seven");
    // A key of the wrong type (a hash: the layout before records were strings).
    server.cli(&["HSET", "it:{hash}:s", "v", "1"]);
    assert!(matches!(
        counters.get("hash").await,
        Err(Error::Script { script: "get", .. })
    ));
}

/// A record whose header is out of range, or bytes that are no record, are corrupt for every
/// operation: none reads a wrong version or writes over them.
#[tokio::test]
async fn a_record_that_is_not_one_is_corrupt_for_reads_and_every_write() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    for entity in ["zero", "huge", "short", "format"] {
        let key = format!("it:{{{entity}}}:s");
        match entity {
            "zero" => server.write_record(&key, 0, "", "\u{1}{\"n\":1}"),
            "huge" => server.write_record(&key, 1 << 60, "", "\u{1}{\"n\":1}"),
            "short" => drop(server.cli(&["SET", &key, "x"])),
            _ => drop(server.cli(&["SET", &key, "A record of another format, long enough"])),
        }
        let stored = server.cli(&["GET", &key]);
        let corrupt = |result: Result<_, Error>, what: &str| match result {
            Err(Error::Corrupt { entity: e, .. }) => assert_eq!(e, entity, "{what}"),
            other => panic!("{what} of {entity:?}: expected a corrupt record, got {other:?}"),
        };
        corrupt(counters.get(entity).await.map(|_| ()), "get");
        corrupt(
            counters
                .update(entity, |c| Counter {
                    n: c.map_or(0, |c| c.n) + 1,
                })
                .await
                .map(|_| ()),
            "update",
        );
        corrupt(
            counters.cas(entity, Version(7), &Counter { n: 2 }).await.map(|_| ()),
            "cas",
        );
        corrupt(counters.delete_if(entity, Version(7)).await, "delete_if");
        corrupt(counters.put(entity, &Counter { n: 2 }).await.map(|_| ()), "put");
        corrupt(
            counters.transition(entity, &[""], "on", None).await.map(|_| ()),
            "transition",
        );
        corrupt(
            counters
                .apply_once(entity, "m-1", Change::Put(&Counter { n: 3 }))
                .await
                .map(|_| ()),
            "apply_once",
        );
        // Nothing changed, and the message was not recorded as handled.
        assert_eq!(server.cli(&["GET", &key]), stored);
        assert_eq!(server.cli(&["EXISTS", &format!("it:{{{entity}}}:mr")]), "0");
    }
}
