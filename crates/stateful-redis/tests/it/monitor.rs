//! The PerformanceMonitor on a known workload.

use std::sync::Arc;
use std::time::Duration;

use stateful_redis::{Error, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_counts_and_percentiles_match_a_known_workload() {
    let server = Arc::new(RedisServer::start());
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    // 95 quick puts, then 5 that wait behind a 300 ms DEBUG SLEEP each.
    for i in 0..95u64 {
        counters.put(&format!("e{i}"), &Counter { n: i }).await.expect("put");
    }
    for i in 0..5u64 {
        let sleeper = {
            let server = Arc::clone(&server);
            std::thread::spawn(move || server.cli(&["DEBUG", "SLEEP", "0.3"]))
        };
        // Let the sleep reach the server first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        counters
            .put(&format!("slow{i}"), &Counter { n: i })
            .await
            .expect("slow put");
        sleeper.join().expect("sleeper");
    }
    // Conflicts are answers, not failures; a timeout would be a failure.
    for _ in 0..3 {
        let stale = counters.cas("e1", Version(99), &Counter { n: 0 }).await;
        assert!(matches!(stale, Err(Error::Conflict { .. })));
    }
    // One update: recorded as an update; its read is not a `get`.
    counters
        .update("e2", |c| Counter {
            n: c.unwrap_or_default().n + 1,
        })
        .await
        .expect("update");
    let snapshot = exec.snapshot();
    let put = snapshot.operation("put").expect("puts were recorded");
    assert_eq!((put.count, put.failures), (100, 0));
    // The 95th fastest is quick; the 99th is one of the slowed ones.
    assert!(put.p50 < Duration::from_millis(100), "p50 {:?}", put.p50);
    assert!(put.p90 < Duration::from_millis(100), "p90 {:?}", put.p90);
    assert!(put.p99 >= Duration::from_millis(200), "p99 {:?}", put.p99);
    assert!(put.max >= Duration::from_millis(200), "max {:?}", put.max);
    let cas = snapshot.operation("cas").expect("cas");
    assert_eq!((cas.count, cas.failures), (3, 0));
    assert_eq!(snapshot.errors.get("conflict"), Some(&3));
    assert_eq!(snapshot.operation("update").map(|u| u.count), Some(1));
    assert_eq!(snapshot.total.count, 104);
    assert!(
        snapshot.operation("get").is_none(),
        "update's read was counted as a get"
    );
    // The gauges come from the pool and the batcher: the update sent a read and a cas.
    assert_eq!(snapshot.gauges.batched_operations, 105);
    assert!(
        snapshot.gauges.batches >= 1 && snapshot.gauges.connections >= 1,
        "{:?}",
        snapshot.gauges
    );
    assert_eq!(snapshot.gauges.in_flight, 0);
    // Thresholds are validated by name.
    exec.monitor()
        .set_alert_threshold("operations.p99_ms", 250.0)
        .expect("known metric");
    assert!(exec.monitor().set_alert_threshold("p99", 1.0).is_err());
    assert!(snapshot.metric("operations.p99_ms").expect("metric") >= 200.0);
}
