//! Script cache flushes, a server that goes away and comes back, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stateful_redis::{Error, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flushes_during_a_run_fail_nothing() {
    let server = Arc::new(RedisServer::start());
    let exec = executor(&server).await;
    let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (server, done) = (Arc::clone(&server), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut flushes = 0u32;
            while !done.load(Ordering::Relaxed) || flushes < 3 {
                assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
                flushes += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            flushes
        })
    };
    let mut tasks = Vec::new();
    for t in 0..20 {
        let counters = Arc::clone(&counters);
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let id = format!("e{}", (t * 500 + i) % 100);
                match i % 4 {
                    0 => drop(counters.get(&id).await.expect("get")),
                    1 => drop(counters.put(&id, &Counter { n: i }).await.expect("put")),
                    2 => drop(
                        counters
                            .update(&id, |c| Counter {
                                n: c.unwrap_or_default().n + 1,
                            })
                            .await
                            .expect("update"),
                    ),
                    _ => match counters.cas(&id, Version(u64::MAX), &Counter { n: i }).await {
                        Err(Error::Conflict { .. }) => {}
                        other => panic!("expected a conflict, got {other:?}"),
                    },
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("no operation failed");
    }
    done.store(true, Ordering::Relaxed);
    let flushes = flusher.join().expect("flusher");
    assert!(flushes >= 3);
    // Flushes really hit us: the scripts had to be loaded again.
    assert!(exec.script_stats().reloads > 0, "{:?}", exec.script_stats());
}

#[tokio::test]
async fn stopped_server_fails_fast_and_restart_heals() {
    let mut server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    counters.put("e", &Counter { n: 1 }).await.expect("put");
    let created_before = exec.pool_stats().created;
    server.stop();
    // Every call must come back with a typed error, never hang.
    for _ in 0..5 {
        let result = tokio::time::timeout(Duration::from_secs(10), counters.put("e", &Counter { n: 2 }))
            .await
            .expect("an operation hung while the server was down");
        match result {
            Err(Error::Connection { .. } | Error::Timeout { .. }) => {}
            other => panic!("expected a connection error, got {other:?}"),
        }
        let read = tokio::time::timeout(Duration::from_secs(10), counters.get("e"))
            .await
            .expect("a read hung while the server was down");
        assert!(read.as_ref().is_err_and(|e| e.is_outcome_unknown()), "{read:?}");
    }
    server.restart();
    // The same executor reconnects (and reloads its scripts) on its own.
    let mut healed = None;
    for _ in 0..50 {
        match counters.put("e", &Counter { n: 3 }).await {
            Ok(v) => {
                healed = Some(v);
                break;
            }
            Err(e) => {
                assert!(e.is_outcome_unknown(), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        healed,
        Some(Version(1)),
        "the executor did not heal (the restarted server keeps no data)"
    );
    assert_eq!(
        counters.get("e").await.expect("get").expect("exists").value,
        Counter { n: 3 }
    );
    // It healed on new connections.
    assert!(exec.pool_stats().created > created_before, "{:?}", exec.pool_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_work_then_refuses() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let counters = Arc::clone(&counters);
        tasks.push(tokio::spawn(async move {
            counters.put(&format!("e{i}"), &Counter { n: i }).await
        }));
    }
    tokio::task::yield_now().await;
    exec.shutdown().await;
    assert_eq!(exec.in_flight(), 0);
    let mut applied = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(v) => {
                assert_eq!(v, Version(1));
                applied += 1;
            }
            Err(Error::Shutdown) => {}
            Err(e) => panic!("an operation in flight failed: {e}"),
        }
    }
    let keys: usize = server.cli(&["DBSIZE"]).parse().expect("DBSIZE");
    assert_eq!(keys, applied, "every acknowledged write is in Redis, and only those");
    assert!(matches!(counters.get("e1").await, Err(Error::Shutdown)));
}
