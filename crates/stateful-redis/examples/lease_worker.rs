//! A worker that owns a shard through a lease and writes under its fencing token, and the
//! failover to a second instance: while worker A holds the lease, B cannot take it; once A stops
//! renewing (a long pause, a partition), B takes over with a higher token and a watchdog that
//! keeps the lease alive, and A's late write is refused with `Error::Fenced`.
//!
//! Run it with `cargo run -p stateful-redis --example lease_worker [REDIS_URL]`; without a URL
//! (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own. It takes about 3 s.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stateful_redis::{Error, LeaseStatus, StatefulExecutor};

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Progress {
    processed: u64,
    by: String,
}

const TTL: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let ns = common::namespace("shards");
    // Two instances of the service, each with its own executor (as two processes would have).
    let a = StatefulExecutor::builder().config(redis.config()).build().await?;
    let b = StatefulExecutor::builder().config(redis.config()).build().await?;
    let (leases_a, shards_a) = (a.leases(&ns)?, a.state::<Progress>(&ns)?);
    let (leases_b, shards_b) = (b.leases(&ns)?, b.state::<Progress>(&ns)?);

    // A owns shard-7 and writes under its lease.
    let lease_a = leases_a.acquire("shard-7", "worker-a", TTL).await?;
    let progress = Progress {
        processed: 1,
        by: "worker-a".into(),
    };
    shards_a.under(&lease_a).put(&progress).await?;
    println!(
        "worker-a holds shard-7 with token {} and wrote its progress",
        lease_a.token()
    );

    // B cannot take it while A holds it, and learns for how long.
    let Err(Error::LeaseHeld { holder, expires_in, .. }) = leases_b.acquire("shard-7", "worker-b", TTL).await else {
        return Err("worker-b took a lease that worker-a holds".into());
    };
    println!("worker-b is refused: held by {holder} for {expires_in:?} more");
    assert_eq!(holder, "worker-a");

    // A checks its lease, then stalls before its next write and stops renewing (a long pause, a
    // partition). Once the lease expires, B takes over, kept alive by a watchdog.
    assert!(lease_a.is_valid(), "worker-a checks its lease before it stalls");
    tokio::time::sleep(expires_in + Duration::from_millis(50)).await;
    let guard_b = leases_b.acquire_guarded("shard-7", "worker-b", TTL).await?;
    println!("worker-b took shard-7 over with token {}", guard_b.token());
    assert!(guard_b.token() > lease_a.token());
    let written = shards_b
        .under(&guard_b)
        .update(|p| {
            let p = p.unwrap_or_default();
            Progress {
                processed: p.processed + 1,
                by: "worker-b".into(),
            }
        })
        .await?;
    println!("worker-b continued from {} processed", written.value.processed - 1);

    // A resumes and makes the write it had checked its lease for: its token is stale, the write refused.
    let late = Progress {
        processed: 99,
        by: "worker-a".into(),
    };
    let Err(fenced) = shards_a.under(&lease_a).put(&late).await else {
        return Err("worker-a's write with a stale token was accepted".into());
    };
    println!("worker-a resumes; its late write is refused: {fenced}");
    assert!(matches!(fenced, Error::Fenced { token, .. } if token == lease_a.token()));

    // B's watchdog renews the lease past its ttl; B keeps writing, then hands the shard back.
    tokio::time::sleep(TTL + TTL / 2).await;
    let LeaseStatus::Held { renewals, .. } = guard_b.status() else {
        return Err(format!("worker-b lost its lease: {:?}", guard_b.status()).into());
    };
    println!("worker-b's watchdog renewed the lease {renewals} times");
    assert!(renewals >= 1 && guard_b.is_valid());
    shards_b
        .under(&guard_b)
        .update(|p| {
            let p = p.unwrap_or_default();
            Progress {
                processed: p.processed + 1,
                ..p
            }
        })
        .await?;
    guard_b.release().await?;

    let stored = shards_b.get("shard-7").await?.ok_or("shard-7 has no progress")?;
    println!(
        "shard-7: {} processed, last by {}",
        stored.value.processed, stored.value.by
    );
    assert_eq!((stored.value.processed, stored.value.by.as_str()), (3, "worker-b"));

    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
