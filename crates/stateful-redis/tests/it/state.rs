//! Versioned state semantics: no lost update, conflicts, transitions, deletes, TTLs.

use std::sync::Arc;
use std::time::Duration;

use stateful_redis::{Error, StatefulExecutor, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, config_for, executor};

crate::on_both! {
    async fn concurrent_updates_lose_nothing(topology: &Topology) {
        let mut config = topology.config();
        // 64 writers on one key: bounded, but high enough that contention never gives up.
        config.state.update_max_attempts = 100_000;
        let exec = StatefulExecutor::builder()
            .config(config)
            .build()
            .await
            .expect("connect");
        let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let counters = Arc::clone(&counters);
            tasks.push(tokio::spawn(async move {
                let mut retries = 0u64;
                for _ in 0..200 {
                    let updated = counters
                        .update("hot", |c| Counter {
                            n: c.unwrap_or_default().n + 1,
                        })
                        .await
                        .expect("update");
                    retries += u64::from(updated.attempts - 1);
                }
                retries
            }));
        }
        let mut retries = 0;
        for task in tasks {
            retries += task.await.expect("task");
        }
        let end = counters.get("hot").await.expect("get").expect("exists");
        assert_eq!(end.value.n, 12_800);
        assert_eq!(end.version, Version(12_800));
        // With 64 writers on one entity some attempts must have conflicted and been retried.
        assert!(retries > 0, "no update ever conflicted");
    }
}

crate::on_both! {
    async fn stale_cas_conflicts_with_current_version_and_changes_nothing(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        let v1 = counters
            .cas("e", Version::NONE, &Counter { n: 1 })
            .await
            .expect("create");
        assert_eq!(v1, Version(1));
        // Creating again must conflict: it exists.
        match counters.cas("e", Version::NONE, &Counter { n: 9 }).await {
            Err(Error::Conflict { current, expected, .. }) => {
                assert_eq!((current, expected), (Version(1), Version::NONE));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let v2 = counters.cas("e", v1, &Counter { n: 2 }).await.expect("cas at v1");
        assert_eq!(v2, Version(2));
        match counters.cas("e", v1, &Counter { n: 3 }).await {
            Err(Error::Conflict { entity, current, .. }) => {
                assert_eq!(entity, "e");
                assert_eq!(current, Version(2));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let now = counters.get("e").await.expect("get").expect("exists");
        assert_eq!((now.version, now.value), (Version(2), Counter { n: 2 }));
        assert!(
            now.updated_ms > 1_600_000_000_000,
            "server time in ms: {}",
            now.updated_ms
        );
    }
}

crate::on_both! {
    async fn transitions_only_from_allowed_statuses(topology: &Topology) {
        let exec = topology.executor().await;
        let devices = exec.state::<Counter>("it").expect("namespace");
        match devices.transition("ghost", &[""], "online", None).await {
            Err(Error::NotFound { entity }) => assert_eq!(entity, "ghost"),
            other => panic!("expected not found, got {other:?}"),
        }
        let v1 = devices.put("d", &Counter { n: 1 }).await.expect("put");
        // No status yet: "" allows it.
        let v2 = devices
            .transition("d", &["", "offline"], "online", None)
            .await
            .expect("to online");
        assert_eq!(v2, Version(v1.0 + 1));
        match devices
            .transition("d", &["offline"], "maintenance", Some(&Counter { n: 7 }))
            .await
        {
            Err(Error::TransitionRefused { entity, actual }) => {
                assert_eq!(entity, "d");
                assert_eq!(actual.as_deref(), Some("online"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let v3 = devices
            .transition("d", &["online"], "offline", Some(&Counter { n: 5 }))
            .await
            .expect("to offline");
        assert_eq!(v3, Version(v2.0 + 1));
        let now = devices.get("d").await.expect("get").expect("exists");
        assert_eq!(now.status.as_deref(), Some("offline"));
        assert_eq!(now.value, Counter { n: 5 });
        assert_eq!(now.version, v3);
    }
}

crate::on_both! {
    async fn delete_if_only_at_the_expected_version(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        let v1 = counters.put("e", &Counter { n: 1 }).await.expect("put");
        let v2 = counters.put("e", &Counter { n: 2 }).await.expect("put");
        assert!(matches!(counters.delete_if("e", v1).await, Err(Error::Conflict { current, .. }) if current == v2));
        assert!(counters.get("e").await.expect("get").is_some());
        counters.delete_if("e", v2).await.expect("delete");
        assert!(counters.get("e").await.expect("get").is_none());
        assert!(matches!(counters.delete_if("e", v2).await, Err(Error::NotFound { .. })));
    }
}

#[tokio::test]
async fn writes_with_a_ttl_expire() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let sessions = exec
        .state::<Counter>("it")
        .expect("namespace")
        .with_ttl(Duration::from_millis(300));
    sessions.put("s", &Counter { n: 1 }).await.expect("put");
    let pttl: i64 = server.cli(&["PTTL", "it:{s}:s"]).parse().expect("PTTL");
    assert!(pttl > 0 && pttl <= 300, "PTTL {pttl}");
    // A handle without TTL leaves the expiry alone.
    let plain = exec.state::<Counter>("it").expect("namespace");
    plain.put("s", &Counter { n: 2 }).await.expect("put");
    assert_ne!(server.cli(&["PTTL", "it:{s}:s"]), "-1");
    let mut gone = false;
    for _ in 0..100 {
        if sessions.get("s").await.expect("get").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the entity never expired");
}

#[tokio::test]
async fn raw_bytes_and_compressed_values_round_trip() {
    let server = RedisServer::start();
    let mut config = config_for(&server.url());
    config.state.compress_above = Some(256);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("connect");
    let blobs = exec
        .state_with_codec::<stateful_redis::bytes::Bytes, _>("it", stateful_redis::BytesCodec)
        .expect("namespace");
    let big = stateful_redis::bytes::Bytes::from(vec![b'x'; 10_000]);
    blobs.put("b", &big).await.expect("put");
    let stored = server.cli(&["STRLEN", "it:{b}:s"]);
    assert!(
        stored.parse::<usize>().expect("len") < 1_000,
        "stored {stored} bytes: not compressed"
    );
    assert_eq!(blobs.get("b").await.expect("get").expect("exists").value, big);
}

/// A record keeps its status, fence and expiry across writes that do not change them: the
/// header is rewritten with each write, so each field must be carried over.
#[tokio::test]
async fn a_record_keeps_what_a_write_does_not_change() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    let lease = exec
        .leases("it")
        .expect("namespace")
        .acquire("d", "me", Duration::from_secs(30))
        .await
        .expect("acquire");
    counters.put("d", &Counter { n: 1 }).await.expect("put");
    counters
        .transition("d", &[""], "online", None)
        .await
        .expect("transition");
    counters.under(&lease).put(&Counter { n: 2 }).await.expect("fenced put");
    counters.put("d", &Counter { n: 3 }).await.expect("plain put");
    let now = counters.get("d").await.expect("get").expect("stored");
    assert_eq!((now.version, now.value.n), (Version(4), 3));
    assert_eq!(now.status.as_deref(), Some("online"), "a put keeps the status");
    assert_eq!(now.fence, lease.token(), "a plain write keeps the last fence");
    assert!(now.updated_ms > 1_700_000_000_000, "server ms: {}", now.updated_ms);
    // A transition without a value keeps the value; an expiry set once stays through puts.
    counters
        .transition("d", &["online"], "updating", None)
        .await
        .expect("transition");
    assert_eq!(counters.get("d").await.expect("get").expect("stored").value.n, 3);
    let expiring = exec
        .state::<Counter>("it")
        .expect("namespace")
        .with_ttl(Duration::from_secs(100));
    expiring.put("d", &Counter { n: 4 }).await.expect("put with ttl");
    counters.put("d", &Counter { n: 5 }).await.expect("put");
    let ttl: i64 = server.cli(&["PTTL", "it:{d}:s"]).parse().expect("PTTL");
    assert!(ttl > 0, "the expiry was dropped: PTTL {ttl}");
}
