//! Presence: devices send heartbeats, and the service counts how many were active within a
//! window, without scanning the keyspace; devices that fall silent drop out of the count, and
//! `expire_stale` removes them.
//!
//! Run it with `cargo run -p stateful-redis --example presence [REDIS_URL]`; without a URL
//! (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own. It takes about 1 s.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use std::time::Duration;

use stateful_redis::StatefulExecutor;

/// A device counts as active for this long after its last heartbeat (`presence.window`, 60 s by
/// default; short here so the example does not wait long).
const WINDOW: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let executor = StatefulExecutor::builder().config(redis.config()).build().await?;
    let presence = executor.presence(&common::namespace("devices"))?.with_window(WINDOW);

    // 1000 devices check in; one call per shard, pipelined.
    let devices: Vec<String> = (0..1000).map(|i| format!("device-{i}")).collect();
    let all: Vec<&str> = devices.iter().map(String::as_str).collect();
    presence.heartbeat_many(&all).await?;
    let active = presence.active_count().await?;
    println!("{active} devices active after the first round of heartbeats");
    assert_eq!(active, 1000);

    // A device that beats again is still counted once.
    presence.heartbeat("device-7").await?;
    assert_eq!(presence.active_count().await?, 1000);

    // Only the first 400 keep beating; the window passes for the other 600.
    let alive = &all[..400];
    for _ in 0..3 {
        tokio::time::sleep(WINDOW / 2).await;
        presence.heartbeat_many(alive).await?;
    }
    let active = presence.active_count().await?;
    println!("{active} devices active after 600 fell silent");
    assert_eq!(active, 400);

    // The silent ones still take memory until they are expired (run this now and then).
    let removed = presence.expire_stale().await?;
    println!("expire_stale removed {removed} silent devices");
    assert_eq!(removed, 600);
    // The monitor keeps the last count, for metrics and alerts (`entities.active`).
    let gauge = executor.snapshot().metric("entities.active");
    println!("the monitor's entities.active: {}", gauge.unwrap_or(f64::NAN));
    assert_eq!(gauge, Some(400.0));

    executor.shutdown().await;
    Ok(())
}
