//! The advisor on real Redis: a saturated pool grows and waits fall,
//! scripts are loaded ahead of traffic, findings name what was measured.

use std::sync::Arc;
use std::time::Duration;

use stateful_redis::{Area, ExecutorConfig, StatefulExecutor, redis};
use stateful_redis_test_support::RedisServer;
use tokio::sync::Barrier;

use crate::{Counter, config_for, executor};

/// Tasks checking out exclusive connections together.
const TASKS: usize = 16;
/// Rounds each task makes.
const ROUNDS: usize = 20;

/// An executor config with a two-connection exclusive pool that may grow to `limit`.
fn small_pool(server: &RedisServer, limit: u32) -> ExecutorConfig {
    let mut config = config_for(&server.url());
    config.redis.pool.max_size = 2;
    config.redis.pool.min_idle = 0;
    config.redis.pool.max_size_limit = limit;
    // The workload waits for connections by design and must never time out.
    config.redis.pool.checkout_timeout = Duration::from_secs(10);
    // No health check holding idle connections while the test reads the pool's use.
    config.redis.pool.health_check_interval = Duration::from_secs(3600);
    config
}

async fn build(config: ExecutorConfig) -> StatefulExecutor {
    StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor connects")
}

/// `TASKS` tasks start each of `ROUNDS` rounds together, each checking out an exclusive
/// connection and holding it for a 2 ms `DEBUG SLEEP`: in every round, the checkouts beyond
/// the connections free must wait. Returns how many checkouts waited.
async fn saturate(exec: &StatefulExecutor) -> u64 {
    let before = exec.pool_stats().waits;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (exec, barrier) = (exec.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    barrier.wait().await;
                    let mut conn = exec.pool().exclusive().await.expect("checkout");
                    redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg("0.002")
                        .query_async::<()>(&mut conn)
                        .await
                        .expect("DEBUG SLEEP");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    exec.pool_stats().waits - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_connection_pool_grows_a_saturated_pool_and_waits_fall() {
    let server = RedisServer::start();
    let exec = build(small_pool(&server, 16)).await;
    assert_eq!(exec.pool_stats().max_size, 2);
    let first = saturate(&exec).await;
    assert!(first > 0, "16 tasks on 2 connections never waited");
    // Grow between rounds of the same workload until no checkout waits or the limit is reached.
    let mut size = 2;
    let mut last = first;
    while last > 0 && size < 16 {
        let change = exec.optimize_connection_pool().expect("optimize");
        assert_eq!((change.from, change.to), (size, (size * 2).min(16)), "{change:?}");
        size = change.to;
        assert_eq!(exec.pool_stats().max_size, size);
        last = saturate(&exec).await;
    }
    assert!(size > 2);
    // Counters, not timings: the same workload waited less often on the larger pool.
    assert!(last < first, "waits: {first} on 2 connections, {last} on {size}");
    assert_eq!(exec.pool_stats().max_size, size);
    if size == 16 {
        // At the limit it keeps the size, though checkouts waited.
        let kept = exec.optimize_connection_pool().expect("optimize");
        assert_eq!((kept.from, kept.to), (16, 16), "{kept:?}");
        assert!(kept.reason.contains("max_size_limit"), "{kept:?}");
    }
    // No checkout since the previous call, nothing in use then or now: a quarter less.
    let shrunk = exec.optimize_connection_pool().expect("optimize");
    assert_eq!((shrunk.from, shrunk.to), (size, size - size.div_ceil(4)), "{shrunk:?}");
    assert_eq!(exec.pool_stats().max_size, shrunk.to);
    exec.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_lua_scripts_loads_after_a_flush() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    // Preloaded on connect: all cached, nothing to load.
    let report = exec.optimize_lua_scripts().await.expect("optimize");
    assert!(report.scripts > 0);
    assert_eq!(
        (report.nodes, report.already_cached, report.loaded),
        (1, report.scripts, 0)
    );

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let report = exec.optimize_lua_scripts().await.expect("optimize");
    assert_eq!(
        (report.already_cached, report.loaded),
        (0, report.scripts),
        "{report:?}"
    );
    let again = exec.optimize_lua_scripts().await.expect("optimize");
    assert_eq!((again.already_cached, again.loaded), (again.scripts, 0), "{again:?}");
    // Operations find their scripts: no NOSCRIPT, no reload.
    let reloads = exec.script_stats().reloads;
    counters.put("e1", &Counter { n: 1 }).await.expect("put");
    let read = counters.get("e1").await.expect("get").expect("exists");
    assert_eq!(read.value, Counter { n: 1 });
    assert_eq!(exec.script_stats().reloads, reloads);

    // A flush that traffic meets first: the advisor's analysis says so until the advisor loads them.
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    counters.put("e1", &Counter { n: 2 }).await.expect("put after a flush");
    assert!(exec.script_stats().reloads > reloads);
    let suggestions = exec.optimization_suggestions();
    let scripts = suggestions
        .iter()
        .find(|s| s.area == Area::Scripts)
        .unwrap_or_else(|| panic!("no scripts finding: {suggestions:?}"));
    assert!(scripts.automatic);
    // The put reloaded its own script; the others are loaded now.
    let report = exec.optimize_lua_scripts().await.expect("optimize");
    assert_eq!(report.already_cached + report.loaded, report.scripts);
    assert!(report.already_cached >= 1 && report.loaded >= 1, "{report:?}");
    let suggestions = exec.optimization_suggestions();
    assert!(suggestions.iter().all(|s| s.area != Area::Scripts), "{suggestions:?}");
    exec.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_name_the_pool_after_waits() {
    let server = RedisServer::start();
    let exec = build(small_pool(&server, 64)).await;
    assert!(
        exec.optimization_suggestions().iter().all(|s| s.area != Area::Pool),
        "a fresh pool drew a finding"
    );
    let waits = saturate(&exec).await;
    assert!(waits > 0);
    let suggestions = exec.optimization_suggestions();
    let pool = suggestions
        .iter()
        .find(|s| s.area == Area::Pool)
        .unwrap_or_else(|| panic!("no pool finding after {waits} waits: {suggestions:?}"));
    assert_eq!(pool.setting, Some(("redis.pool.max_size", "4".to_owned())));
    assert!(pool.automatic);
    assert!(pool.change.contains("from 2 to 4"), "{}", pool.change);
    assert!(
        pool.evidence.get("pool.waits").is_some_and(|&w| w >= waits as f64),
        "{:?}",
        pool.evidence
    );
    // Once the advisor acted on them, those waits are no longer a finding.
    let change = exec.optimize_connection_pool().expect("optimize");
    assert_eq!((change.from, change.to), (2, 4));
    let suggestions = exec.optimization_suggestions();
    assert!(suggestions.iter().all(|s| s.area != Area::Pool), "{suggestions:?}");
    exec.shutdown().await;
}
