//! Alerts and advice: sixteen workers bump one hot counter with a naive read-then-`cas`, and
//! most of their writes conflict. An alert rule of the app's own (the rate of conflicts) fires
//! and is logged, the advisor names the hot entity and says what to change, and once the
//! workers use `update` (which retries) the counter is right and the alert resolves.
//!
//! Run it with `cargo run -p stateful-redis --example alerts_and_advice [REDIS_URL]`; without a
//! URL (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stateful_redis::{Aggregation, AlertRule, Area, StatefulExecutor, Version};
use tokio::sync::Barrier;

const WORKERS: usize = 16;
const ROUNDS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The log notifier writes through `tracing`: "alert firing" and "alert resolved" lines.
    tracing_subscriber::fmt()
        .with_env_filter("warn,stateful_redis_alert=info")
        .init();
    let redis = common::Redis::given_or_started()?;
    let mut config = redis.config();
    // Conflicts per second, over each evaluation interval (10 s by default; short here).
    let mut rule = AlertRule::new("HotEntityConflicts", "errors.conflict", 1.0);
    rule.aggregation = Aggregation::Rate;
    rule.summary = "compare-and-set writes conflict: some entity is hot".into();
    config.alerts.rules.push(rule);
    config.alerts.interval = Duration::from_millis(100);
    let executor = StatefulExecutor::builder().config(config).build().await?;
    let counters = executor.state::<u64>(&common::namespace("counters"))?;

    // The naive way: all workers read the counter, then each writes +1 at the version it read.
    let barrier = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (counters, barrier) = (counters.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut lost = 0;
                for _ in 0..ROUNDS {
                    let read = counters.get("hits").await?;
                    barrier.wait().await;
                    let (version, n) = read.map_or((Version::NONE, 0), |v| (v.version, v.value));
                    lost += u32::from(counters.cas("hits", version, &(n + 1)).await.is_err());
                    barrier.wait().await;
                }
                Ok::<_, stateful_redis::Error>(lost)
            })
        })
        .collect();
    let mut lost = 0;
    for worker in workers {
        lost += worker.await??;
    }
    println!(
        "naive read-then-cas: {lost} of {} increments conflicted",
        WORKERS * ROUNDS
    );
    assert_eq!(lost as usize, (WORKERS - 1) * ROUNDS, "one writer wins each round");

    // The alert rule sees the conflicts at its next evaluation.
    wait_for("the alert to fire", || executor.alerts().stats().fired >= 1).await?;
    for alert in executor
        .alerts()
        .alerts()
        .iter()
        .filter(|a| a.rule == "HotEntityConflicts")
    {
        let rate = alert.value.unwrap_or(0.0);
        println!("alert {}: {}, {} at {rate:.0}/s", alert.rule, alert.state, alert.metric);
    }

    // The advisor turns the figures into advice, naming the hot entity.
    let advice = executor.optimization_suggestions();
    for s in &advice {
        println!(
            "advice ({:?}, {}): {}\n  -> {}",
            s.area,
            s.severity.as_str(),
            s.finding,
            s.change
        );
    }
    let contention = advice.iter().find(|s| s.area == Area::Contention);
    assert!(contention.is_some_and(|s| s.finding.contains("\"hits\"")), "{advice:?}");

    // The fix: `update` re-reads and retries on a conflict, so every increment counts.
    let before = counters.get("hits").await?.map_or(0, |v| v.value);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move { counters.update("hits", |n| n.unwrap_or(0) + 1).await })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let after = counters.get("hits").await?.map_or(0, |v| v.value);
    println!("with update: {} increments, counter {before} -> {after}", WORKERS);
    assert_eq!(after, before + WORKERS as u64);

    // No conflicts since the naive phase: the alert resolves.
    wait_for("the alert to resolve", || executor.alerts().stats().resolved >= 1).await?;
    let stats = executor.alerts().stats();
    println!(
        "alerts: {} fired, {} resolved, {} evaluations",
        stats.fired, stats.resolved, stats.evaluations
    );

    executor.shutdown().await;
    Ok(())
}

/// Polls `done` for up to 5 s (a bound against hangs, not a timing claim).
async fn wait_for(what: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("waited 5 s for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
