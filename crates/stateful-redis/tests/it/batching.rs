//! Batching on real Redis: many callers, each its own reply; overload accounting.

use std::sync::Arc;
use std::time::Duration;

use stateful_redis::{Error, OverloadPolicy, StatefulExecutor, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, config_for, executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_each_get_their_own_reply() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    let mut tasks = Vec::new();
    for caller in 0..200u64 {
        let counters = Arc::clone(&counters);
        tasks.push(tokio::spawn(async move {
            let entity = format!("caller-{caller}");
            for seq in 0..250u64 {
                let value = Counter {
                    n: caller * 1_000_000 + seq,
                };
                let version = counters.put(&entity, &value).await.expect("put");
                // Its own entity: the version says this reply is for this call.
                assert_eq!(version, Version(seq + 1), "caller {caller}");
                let read = counters.get(&entity).await.expect("get").expect("exists");
                assert_eq!((read.version, read.value), (version, value), "caller {caller}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller");
    }
    let stats = exec.batch_stats();
    assert_eq!(stats.submitted, 100_000);
    assert_eq!(stats.sent, 100_000);
    assert!(stats.max_batch > 1, "nothing was batched: {stats:?}");
    assert!(stats.batches < 100_000, "{stats:?}");
    assert_eq!((stats.rejected, stats.dropped, stats.queued), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_while_stalled_equals_the_count_and_accepted_all_apply() {
    let server = Arc::new(RedisServer::start());
    let mut config = config_for(&server.url());
    config.redis.response_timeout = Duration::from_secs(10);
    config.batch.queue_capacity = 1000;
    config.batch.overload = OverloadPolicy::Reject;
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("connect");
    let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    // Stall the server: everything sent meanwhile waits, and the queues fill up.
    let sleeper = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.cli(&["DEBUG", "SLEEP", "1.5"]))
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tasks = Vec::new();
    for i in 0..5_000u64 {
        let counters = Arc::clone(&counters);
        tasks.push(tokio::spawn(async move {
            (i, counters.put(&format!("e{i}"), &Counter { n: i }).await)
        }));
    }
    let mut applied = Vec::new();
    let mut overloaded = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (i, Ok(version)) => {
                assert_eq!(version, Version(1));
                applied.push(i);
            }
            (i, Err(Error::Overloaded { capacity: 1000 })) => overloaded.push(i),
            (i, Err(e)) => panic!("operation {i}: {e}"),
        }
    }
    assert_eq!(sleeper.join().expect("sleeper"), "OK");
    assert!(!overloaded.is_empty(), "the queues never filled");
    assert_eq!(exec.batch_stats().rejected, overloaded.len() as u64);
    // Every accepted write is in Redis; no rejected one is.
    let keys: usize = server.cli(&["DBSIZE"]).parse().expect("DBSIZE");
    assert_eq!(keys, applied.len());
    for i in overloaded.iter().take(50) {
        assert_eq!(server.cli(&["EXISTS", &format!("it:{{e{i}}}:s")]), "0");
    }
    for i in applied.iter().take(50) {
        assert_eq!(server.record(&format!("it:{{e{i}}}:s"), "version"), "1");
    }
}
