//! The verdict: what Redis holds at the end of the run, checked against what the run
//! acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stateful_redis::redis::Value;
use stateful_redis::{Record, SerdeCodec, StateHandle, StatefulExecutor, Version, Versioned};

use super::device::{Device, OFFLINE, device_id};
use super::instance::{Control, Fleet};

/// One check of the verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) passed: bool,
    pub(crate) detail: String,
}

/// What one device holds in Redis.
#[derive(Debug, Default)]
struct Found {
    record: Option<Versioned<Device>>,
    /// The fence token of the last fenced write (`Versioned::fence`; 0 when none was fenced).
    last_fence: u64,
    /// The lease: token and owner, if held.
    lease: Option<(u64, String)>,
}

/// Faults a test injects through Redis directly, to show that verification catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Fault {
    /// A write accepted from an older lease holder: device 0's state is bumped with the
    /// previous token as its writer.
    StaleWrite,
    /// A message applied twice: device 0's message count grows without a new message.
    DuplicateApply,
}

/// Injects `fault` on device 0.
pub(crate) async fn inject(exec: &StatefulExecutor, fleet: &Fleet, fault: Fault) -> anyhow::Result<()> {
    let devices = exec.state::<Device>(&fleet.namespace)?;
    let id = device_id(0);
    let state = devices.state_key(&id)?;
    match fault {
        Fault::StaleWrite => {
            // The record as if a holder of the previous token had written it: one version on,
            // its fence one below the lease's.
            let found = read_ownership(exec, &devices, std::slice::from_ref(&id)).await?;
            let token = found.first().and_then(|f| f.lease.as_ref()).map_or(1, |l| l.0);
            let mut get = stateful_redis::redis::cmd("GET");
            get.arg(&state);
            let Some(Value::BulkString(stored)) = run_raw(exec, &[(state.clone(), get)]).await?.pop() else {
                anyhow::bail!("device 0 has no record to corrupt");
            };
            let mut record = Record::decode(stored.into()).map_err(anyhow::Error::msg)?;
            record.version += 1;
            record.fence = token.saturating_sub(1).max(1);
            let mut set = stateful_redis::redis::cmd("SET");
            set.arg(&state).arg(record.encode()).arg("KEEPTTL");
            run_raw(exec, &[(state, set)]).await?;
        }
        Fault::DuplicateApply => {
            if let Some(current) = devices.get(&id).await? {
                let mut record = current.value;
                record.messages += 1;
                devices.put(&id, &record).await?;
            }
        }
    }
    Ok(())
}

/// Checks the fleet from Redis.
pub(crate) async fn verify(
    exec: &StatefulExecutor,
    fleet: &Fleet,
    controls: &[Arc<Control>],
    (zombie_tried, zombie_accepted): (u64, u64),
) -> anyhow::Result<Vec<Check>> {
    let devices = exec.state::<Device>(&fleet.namespace)?;
    // First, while the last heartbeats are fresh.
    let presence = devices.presence().with_window(fleet.window);
    let active: std::collections::BTreeSet<String> = presence.members().await?.into_iter().collect();
    // Every key of the namespace names one of the fleet's devices, and all are there.
    let listed = devices.entities().all().await?;
    let ids: Vec<String> = (0..fleet.devices).map(device_id).collect();
    let records = read_records(&devices, &ids).await?;
    let mut found = read_ownership(exec, &devices, &ids).await?;
    for (f, record) in found.iter_mut().zip(records) {
        f.last_fence = record.as_ref().map_or(0, |r| r.fence);
        f.record = record;
    }
    let live: Vec<&str> = controls
        .iter()
        .filter(|c| !c.is_killed())
        .map(|c| c.name.as_str())
        .collect();
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut stale = Vec::new();
    let mut unowned = Vec::new();
    let mut online = 0u64;
    let mut presence_wrong = Vec::new();
    let mut uncertain = 0u64;
    for (n, f) in found.iter().enumerate() {
        let id = &ids[n];
        let expected = &fleet.ledger.devices[n];
        let (applied, writes) = (
            expected.applied.load(Ordering::Relaxed),
            expected.writes.load(Ordering::Relaxed),
        );
        let slack = expected.uncertain.load(Ordering::Relaxed);
        uncertain += slack;
        let (version, record, status) = match &f.record {
            Some(r) => (r.version, r.value.clone(), r.status.as_deref().unwrap_or_default()),
            None => (Version::NONE, Device::default(), ""),
        };
        let connected = status != OFFLINE && f.record.is_some();
        online += u64::from(connected);
        if connected != active.contains(id) {
            presence_wrong.push(format!(
                "{id}: {} but {} in presence",
                if connected { status } else { "offline" },
                if connected { "not active" } else { "active" }
            ));
        }
        if version.0 < writes
            || version.0 > writes + slack
            || record.messages < applied
            || record.messages > applied + slack
        {
            lost.push(format!(
                "{id}: version {} and {} messages in Redis, {writes} writes and {applied} messages acknowledged",
                version.0, record.messages
            ));
        }
        if record.messages != record.last_seq {
            duplicated.push(format!(
                "{id}: {} messages applied for {} delivered",
                record.messages, record.last_seq
            ));
        }
        match &f.lease {
            Some((token, owner)) => {
                if !live.contains(&owner.as_str()) {
                    unowned.push(format!("{id}: held by {owner}, which is not running"));
                }
                if f.last_fence != *token {
                    stale.push(format!(
                        "{id}: last written under token {}, the lease's is {token}",
                        f.last_fence
                    ));
                }
            }
            None => unowned.push(format!("{id}: no lease")),
        }
    }
    let sum = |f: fn(&Control) -> u64| controls.iter().map(|c| f(c)).sum::<u64>();
    let late_refused = sum(|c| c.stats.late_refused.load(Ordering::Relaxed));
    let intrusions = sum(|c| c.stats.intrusions.load(Ordering::Relaxed));
    let duplicates: u64 = controls
        .iter()
        .map(|c| c.stats.duplicate_applies.load(Ordering::Relaxed))
        .sum();
    let summary = |problems: &[String], ok: String| {
        if problems.is_empty() {
            ok
        } else {
            let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
            format!("{} devices: {}", problems.len(), shown.join("; "))
        }
    };
    Ok(vec![
        Check {
            name: "no lost update",
            passed: lost.is_empty(),
            detail: summary(
                &lost,
                format!(
                    "every device's version and message count match the {} acknowledged writes ({uncertain} of unknown outcome)",
                    fleet
                        .ledger
                        .devices
                        .iter()
                        .map(|e| e.writes.load(Ordering::Relaxed))
                        .sum::<u64>()
                ),
            ),
        },
        Check {
            name: "no duplicate apply",
            passed: duplicated.is_empty() && duplicates == 0,
            detail: if duplicates > 0 {
                format!("{duplicates} redeliveries were applied again")
            } else {
                summary(
                    &duplicated,
                    "every message applied once; redeliveries were replays".into(),
                )
            },
        },
        Check {
            name: "no write accepted from a stale holder",
            passed: stale.is_empty() && zombie_accepted == 0 && intrusions == 0,
            detail: if zombie_accepted > 0 {
                format!("{zombie_accepted} late writes of the killed instance were accepted")
            } else if intrusions > 0 {
                format!("owners met {intrusions} changes they did not make (conflicts, refused transitions)")
            } else {
                summary(
                    &stale,
                    format!(
                        "every device last written under its current lease, no owner met another writer's change; \
                         {} late writes of stale holders refused",
                        late_refused + zombie_tried
                    ),
                )
            },
        },
        Check {
            name: "every device owned by a live instance",
            passed: unowned.is_empty() && listed.len() == ids.len(),
            detail: if unowned.is_empty() && listed.len() != ids.len() {
                format!(
                    "the namespace lists {} devices, the fleet has {}",
                    listed.len(),
                    ids.len()
                )
            } else {
                summary(
                    &unowned,
                    format!(
                        "{} devices (as many as the namespace lists) held by {}",
                        ids.len(),
                        live.join(", ")
                    ),
                )
            },
        },
        Check {
            name: "presence count equals the live devices",
            passed: presence_wrong.is_empty() && active.len() as u64 == online,
            detail: summary(
                &presence_wrong,
                format!(
                    "{} active in presence, exactly the {online} devices not offline",
                    active.len()
                ),
            ),
        },
    ])
}

/// Every device's record: `get_many` in chunks (each a few pipelines).
async fn read_records(
    devices: &StateHandle<Device, SerdeCodec>,
    ids: &[String],
) -> anyhow::Result<Vec<Option<Versioned<Device>>>> {
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(2048) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        records.extend(devices.get_many(&chunk).await?);
    }
    Ok(records)
}

/// Every device's lease (token and owner), read with one `GET` per device.
async fn read_ownership(
    exec: &StatefulExecutor,
    devices: &StateHandle<Device, SerdeCodec>,
    ids: &[String],
) -> anyhow::Result<Vec<Found>> {
    let mut commands = Vec::with_capacity(ids.len());
    for id in ids {
        let state = devices.state_key(id)?;
        let lease = format!("{}:l", state.strip_suffix(":s").unwrap_or(&state));
        let mut cmd = stateful_redis::redis::cmd("GET");
        cmd.arg(&lease);
        commands.push((lease, cmd));
    }
    let mut found = Vec::with_capacity(ids.len());
    for chunk in commands.chunks(500) {
        for reply in run_raw(exec, chunk).await? {
            let lease = match reply {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => String::new(),
            };
            found.push(Found {
                lease: lease
                    .split_once(':')
                    .and_then(|(token, owner)| Some((token.parse().ok()?, owner.to_owned()))),
                ..Found::default()
            });
        }
    }
    Ok(found)
}

/// Sends commands (each with the key that routes it) as pipelines, to the key's master on
/// a cluster; every reply or the first error.
async fn run_raw(
    exec: &StatefulExecutor,
    commands: &[(String, stateful_redis::redis::Cmd)],
) -> anyhow::Result<Vec<Value>> {
    let pool = exec.pool();
    let replies: Vec<stateful_redis::Reply> = if pool.is_cluster() {
        let routed: Vec<(u16, &stateful_redis::redis::Cmd)> = commands
            .iter()
            .map(|(key, cmd)| (key_slot(key.as_bytes()), cmd))
            .collect();
        pool.cluster_pipeline(&routed)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
    } else {
        pool.pipeline(0, commands.iter().map(|(_, cmd)| cmd)).await?
    };
    replies
        .into_iter()
        .map(|r| r.map_err(|e| anyhow::anyhow!("Redis refused a verification read: {e}")))
        .collect()
}

/// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, modulo 16384).
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's CRC16 reference ("123456789" -> 0x31C3).
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"fleet:{dev-1}:s"), key_slot(b"dev-1"));
    }
}
