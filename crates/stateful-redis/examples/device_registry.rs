//! A device registry: create a device only if it is new (`cas` at `Version::NONE`), change it
//! without losing concurrent updates (`update`), refuse a stale write (`cas` conflict), move it
//! through a small state machine (`transition`), and delete it only at the version last seen.
//!
//! Run it with `cargo run -p stateful-redis --example device_registry [REDIS_URL]`; without a URL
//! (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use serde::{Deserialize, Serialize};
use stateful_redis::{Error, StatefulExecutor, Version};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Device {
    firmware: String,
    reboots: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let executor = StatefulExecutor::builder().config(redis.config()).build().await?;
    let devices = executor.state::<Device>(&common::namespace("devices"))?;

    // Register: only if no device "dev-1" exists yet. A second registration is refused.
    let first = Device {
        firmware: "1.0.0".into(),
        reboots: 0,
    };
    let v1 = devices.cas("dev-1", Version::NONE, &first).await?;
    println!("registered dev-1 at {v1}");
    let Err(again) = devices.cas("dev-1", Version::NONE, &first).await else {
        return Err("a second registration of dev-1 was accepted".into());
    };
    println!("registering dev-1 again is refused: {again}");
    assert!(matches!(again, Error::Conflict { current, .. } if current == v1));

    // Ten tasks count reboots at once: `update` re-reads and retries on a conflict, so none is lost.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let devices = devices.clone();
            tokio::spawn(async move {
                devices
                    .update("dev-1", |d| {
                        let mut d = d.unwrap_or_default();
                        d.reboots += 1;
                        d
                    })
                    .await
            })
        })
        .collect();
    let mut attempts = 0;
    for task in tasks {
        attempts += task.await??.attempts;
    }
    let counted = devices.get("dev-1").await?.ok_or("dev-1 is gone")?;
    println!(
        "10 concurrent updates took {attempts} attempts; reboots = {}",
        counted.value.reboots
    );
    assert_eq!(counted.value.reboots, 10);

    // A writer still holding version 1 is refused, and told the current version.
    let old = Device {
        firmware: "0.9.0".into(),
        reboots: 0,
    };
    let Err(stale) = devices.cas("dev-1", v1, &old).await else {
        return Err("a write at a stale version was accepted".into());
    };
    println!("a write at the stale {v1} is refused: {stale}");
    assert!(matches!(stale, Error::Conflict { current, .. } if current == counted.version));

    // A state machine: "" (no status yet) or offline -> online -> updating -> online.
    devices.transition("dev-1", &["", "offline"], "online", None).await?;
    let upgraded = Device {
        firmware: "1.1.0".into(),
        ..counted.value
    };
    devices
        .transition("dev-1", &["online"], "updating", Some(&upgraded))
        .await?;
    let Err(refused) = devices.transition("dev-1", &["offline"], "online", None).await else {
        return Err("a transition from the wrong status was accepted".into());
    };
    println!("offline -> online while updating is refused: {refused}");
    assert!(matches!(&refused, Error::TransitionRefused { actual, .. } if actual.as_deref() == Some("updating")));
    devices.transition("dev-1", &["updating"], "online", None).await?;
    let now = devices.get("dev-1").await?.ok_or("dev-1 is gone")?;
    let status = now.status.as_deref().unwrap_or("");
    println!(
        "dev-1 is {status} with firmware {} at {}",
        now.value.firmware, now.version
    );
    assert_eq!((status, now.value.firmware.as_str()), ("online", "1.1.0"));

    // Decommission: only at the version just read.
    devices.delete_if("dev-1", now.version).await?;
    assert!(devices.get("dev-1").await?.is_none());
    println!("dev-1 deleted at {}", now.version);

    executor.shutdown().await;
    Ok(())
}
