//! Exactly-once application of messages, the retry policy, and presence.

use std::sync::Arc;
use std::time::Duration;

use stateful_redis::{Applied, Change, Error, StatefulExecutor, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, config_for};

crate::on_both! {
    async fn the_same_message_from_many_tasks_applies_once(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
        counters.put("e", &Counter { n: 0 }).await.expect("seed");
        let mut tasks = Vec::new();
        for t in 0..16u32 {
            let counters = Arc::clone(&counters);
            tasks.push(tokio::spawn(async move {
                let calls = if t < 8 { 63 } else { 62 }; // 1,000 in all
                let mut seen = Vec::new();
                for _ in 0..calls {
                    // A change that would show every extra application: cas from version 1.
                    let change = Change::Cas(Version(1), &Counter { n: 1 });
                    seen.push(counters.apply_once("e", "msg-1", change).await.expect("apply_once"));
                }
                seen
            }));
        }
        let mut outcomes: Vec<Applied> = Vec::new();
        for task in tasks {
            outcomes.extend(task.await.expect("task"));
        }
        assert_eq!(outcomes.len(), 1000);
        assert!(
            outcomes.iter().all(|a| a.version == Version(2)),
            "every caller sees the same version"
        );
        assert_eq!(
            outcomes.iter().filter(|a| !a.replayed).count(),
            1,
            "applied exactly once"
        );
        let now = counters.get("e").await.expect("get").expect("exists");
        assert_eq!((now.version, now.value), (Version(2), Counter { n: 1 }));
        // A first outcome that was a refusal is replayed as that refusal.
        let stale = Change::Cas(Version(7), &Counter { n: 9 });
        assert!(
            matches!(counters.apply_once("e", "msg-2", stale).await, Err(Error::Conflict { current, .. }) if current == Version(2))
        );
        counters.put("e", &Counter { n: 5 }).await.expect("put");
        let retry = Change::Cas(Version(3), &Counter { n: 9 });
        assert!(
            matches!(counters.apply_once("e", "msg-2", retry).await, Err(Error::Conflict { current, .. }) if current == Version(2))
        );
        assert_eq!(
            counters.get("e").await.expect("get").expect("exists").value,
            Counter { n: 5 }
        );
        assert!(matches!(
            counters.apply_once("e", "", Change::Put(&Counter::default())).await,
            Err(Error::InvalidId(_))
        ));
    }
}

fn paused_config(server: &RedisServer) -> stateful_redis::ExecutorConfig {
    let mut config = config_for(&server.url());
    config.redis.response_timeout = Duration::from_millis(250);
    config.retry.attempts = 8;
    config.retry.backoff = Duration::from_millis(25);
    config
}

async fn build(config: stateful_redis::ExecutorConfig) -> StatefulExecutor {
    StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_mid_apply_once_retries_into_exactly_once() {
    let server = Arc::new(RedisServer::start());
    let exec = build(paused_config(&server)).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    // Writes (scripts included) wait while the server is paused; then our connections die.
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "2000", "WRITE"]), "OK");
    let pending = {
        let counters = counters.clone();
        tokio::spawn(async move {
            counters
                .apply_once("k", "msg-kill", Change::Put(&Counter { n: 1 }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed: u32 = server
        .cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .parse()
        .expect("killed count");
    assert!(killed >= 1);
    assert_eq!(server.cli(&["CLIENT", "UNPAUSE"]), "OK");
    let applied = pending.await.expect("task").expect("the retry succeeds");
    assert_eq!(applied.version, Version(1));
    assert!(exec.retries() >= 1, "the killed attempt was retried");
    // Once more with the same id: nothing changes.
    let again = counters
        .apply_once("k", "msg-kill", Change::Put(&Counter { n: 1 }))
        .await
        .expect("replay");
    assert_eq!((again.version, again.replayed), (Version(1), true));
    assert_eq!(server.record("it:{k}:s", "version"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_retry_idempotent_writes_but_never_plain_ones() {
    let server = RedisServer::start();
    let exec = build(paused_config(&server)).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    // Every attempt times out while paused but stays queued on the server: when the
    // pause ends, all of them run. Only the message id keeps this exactly once.
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "700", "WRITE"]), "OK");
    let applied = counters
        .apply_once("lost", "msg-lost", Change::Put(&Counter { n: 1 }))
        .await
        .expect("a later attempt sees the first one's outcome");
    assert_eq!(applied.version, Version(1));
    // That outcome is this call's own: its first attempt applied, it is no replay.
    assert!(!applied.replayed, "a first delivery reported as a replay");
    assert!(exec.retries() >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.record("it:{lost}:s", "version"), "1", "applied more than once");

    // A fenced write is retried too, and its own message id keeps it to one application,
    // even for an update (which would otherwise re-read its own write and apply again).
    let lease = exec
        .leases("it")
        .expect("namespace")
        .acquire("fenced", "me", Duration::from_secs(30))
        .await
        .expect("acquire");
    let fenced = counters.under(&lease);
    fenced.put(&Counter { n: 0 }).await.expect("seed");
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "700", "WRITE"]), "OK");
    let updated = fenced
        .update(|c| Counter {
            n: c.unwrap_or_default().n + 1,
        })
        .await
        .expect("fenced update");
    assert_eq!(updated.value, Counter { n: 1 });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        counters.get("fenced").await.expect("get").expect("exists").value,
        Counter { n: 1 }
    );
    assert_eq!(
        server.record("it:{fenced}:s", "version"),
        "2",
        "the update applied more than once"
    );

    // A plain put is never re-sent: the caller gets the timeout, and it runs once.
    let retries = exec.retries();
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "500", "WRITE"]), "OK");
    match counters.put("plain", &Counter { n: 1 }).await {
        Err(e @ Error::Timeout { .. }) => assert!(e.is_outcome_unknown()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(exec.retries(), retries);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.record("it:{plain}:s", "version"), "1");
}

crate::on_both! {
    async fn presence_counts_exactly_and_forgets_the_stale(topology: &Topology) {
        let exec = topology.executor().await;
        // Long enough that 100 000 heartbeats sent on a loaded 2-core machine are all still
        // inside it when counted (2 s once was not).
        let window = Duration::from_secs(8);
        let presence = exec.presence("it").expect("namespace").with_window(window);
        let ids: Vec<String> = (0..100_000).map(|i| format!("device-{i}")).collect();
        for chunk in ids.chunks(10_000) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            presence.heartbeat_many(&chunk).await.expect("heartbeats");
        }
        assert_eq!(presence.active_count().await.expect("count"), 100_000);
        // Heartbeats of active devices again do not double count.
        presence.heartbeat("device-7").await.expect("heartbeat");
        assert_eq!(presence.active_count().await.expect("count"), 100_000);
        tokio::time::sleep(window + Duration::from_millis(300)).await;
        let alive: Vec<&str> = ids[..30_000].iter().map(String::as_str).collect();
        presence.heartbeat_many(&alive).await.expect("heartbeats");
        assert_eq!(presence.active_count().await.expect("count"), 30_000);
        assert_eq!(presence.expire_stale().await.expect("expire"), 70_000);
        assert_eq!(presence.active_count().await.expect("count"), 30_000);
        // Each shard is its own key under its own hash tag; nothing else was created.
        let shards: u64 = topology.keys();
        assert_eq!(shards, u64::from(exec.config().presence.shards));
        assert!(matches!(presence.heartbeat("bad{id}").await, Err(Error::InvalidId(_))));
    }
}
