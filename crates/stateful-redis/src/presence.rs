//! Presence: heartbeats of active entities in sharded sorted sets, and the active count.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use stateful_redis_core::{Error, KeyLayout, Namespace, validate_entity_id};
use stateful_redis_scripts::{Presence as PresenceCall, PresenceMembers, PresenceOp};

use crate::executor::Inner;

/// Most entities sent in one heartbeat call.
const BEAT_CHUNK: usize = 1000;

/// Which entities are active (heartbeat within the window), counted without scanning the
/// keyspace: entities spread over `presence.shards` sorted sets, each under its own hash
/// tag (`<ns>:presence:{<n>}`), so the count is one `ZCOUNT` per shard and shards spread
/// over a Redis Cluster. Times are the server's. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    exec: Arc<Inner>,
    namespace: Namespace,
    shard_keys: Arc<[String]>,
    window: Duration,
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence")
            .field("namespace", &self.namespace)
            .field("shards", &self.shard_keys.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// FNV-1a: stable across processes and versions, unlike std's hasher.
fn shard_of(entity: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in entity.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

impl Presence {
    pub(crate) fn new(exec: Arc<Inner>, namespace: Namespace) -> Self {
        let keys = KeyLayout::new(&namespace);
        let config = &exec.config.presence;
        let shard_keys = (0..config.shards).map(|n| keys.presence(n)).collect();
        Self {
            window: config.window,
            exec,
            namespace,
            shard_keys,
        }
    }

    /// The same presence with another activity window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn window_ms(&self) -> u64 {
        self.window.as_millis().max(1) as u64
    }

    /// Marks `entity` active now.
    pub async fn heartbeat(&self, entity: &str) -> Result<(), Error> {
        self.heartbeat_many(&[entity]).await
    }

    /// Marks every entity of `entities` active now: one call per shard and per thousand
    /// entities, all issued at once (the batcher pipelines them).
    pub async fn heartbeat_many(&self, entities: &[&str]) -> Result<(), Error> {
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); self.shard_keys.len()];
        for entity in entities {
            validate_entity_id(entity)?;
            by_shard[shard_of(entity, self.shard_keys.len())].push(entity);
        }
        let calls: Vec<PresenceCall<'_>> = by_shard
            .iter()
            .enumerate()
            .flat_map(|(shard, entities)| {
                entities.chunks(BEAT_CHUNK).map(move |chunk| PresenceCall {
                    shard: &self.shard_keys[shard],
                    op: PresenceOp::Beat(chunk),
                })
            })
            .collect();
        self.run(&calls).await.map(|_| ())
    }

    /// How many entities had a heartbeat within the window.
    pub async fn active_count(&self) -> Result<u64, Error> {
        let op = PresenceOp::Count(self.window_ms());
        let count = self.on_every_shard(op).await?;
        self.exec.monitor.set_active_entities(count);
        Ok(count)
    }

    /// Whether `entity` had a heartbeat within the window (by the server's clock): one call,
    /// to the entity's shard. The ACL user needs `+zscore` for it.
    pub async fn is_active(&self, entity: &str) -> Result<bool, Error> {
        validate_entity_id(entity)?;
        let call = PresenceCall {
            shard: &self.shard_keys[shard_of(entity, self.shard_keys.len())],
            op: PresenceOp::Active {
                window_ms: self.window_ms(),
                entity,
            },
        };
        let found = self.run(std::slice::from_ref(&call)).await?;
        Ok(found.first().is_some_and(|&n| n > 0))
    }

    /// The entities that had a heartbeat within the window, sorted: one call per shard, all
    /// at once, each `O(log n + m)` on the server for a shard of `n` entities with `m` active
    /// (a reply of every active entity of the shard: for millions of them, prefer
    /// [`active_count`](Self::active_count) and your own records).
    pub async fn members(&self) -> Result<Vec<String>, Error> {
        let started = std::time::Instant::now();
        let result = self.members_unobserved().await;
        self.exec
            .observe(stateful_redis_metrics::Operation::Presence, started, &result);
        result
    }

    async fn members_unobserved(&self) -> Result<Vec<String>, Error> {
        let window_ms = self.window_ms();
        let calls: Vec<PresenceMembers<'_>> = self
            .shard_keys
            .iter()
            .map(|shard| PresenceMembers { shard, window_ms })
            .collect();
        let _op = self.exec.begin()?;
        let mut members = Vec::new();
        for shard in self.exec.run_many_safe(&calls).await {
            members.extend(shard?);
        }
        // An entity lives in one shard: no repeats to remove.
        members.sort_unstable();
        Ok(members)
    }

    /// Removes entities whose last heartbeat is older than the window; returns how many.
    pub async fn expire_stale(&self) -> Result<u64, Error> {
        let op = PresenceOp::Expire(self.window_ms());
        self.on_every_shard(op).await
    }

    async fn on_every_shard(&self, op: PresenceOp<'_>) -> Result<u64, Error> {
        let calls: Vec<_> = self.shard_keys.iter().map(|shard| PresenceCall { shard, op }).collect();
        Ok(self.run(&calls).await?.into_iter().sum())
    }

    async fn run(&self, calls: &[PresenceCall<'_>]) -> Result<Vec<u64>, Error> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let result = self.run_unobserved(calls).await;
        self.exec
            .observe(stateful_redis_metrics::Operation::Presence, started, &result);
        result
    }

    async fn run_unobserved(&self, calls: &[PresenceCall<'_>]) -> Result<Vec<u64>, Error> {
        let _op = self.exec.begin()?;
        // Heartbeats, counts and expiry are all safe to repeat.
        self.exec.run_many_safe(calls).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("device-1", 16), shard_of("device-1", 16));
        let mut seen = [0u32; 16];
        for i in 0..16_000 {
            seen[shard_of(&format!("device-{i}"), 16)] += 1;
        }
        assert!(seen.iter().all(|&n| (700..1300).contains(&n)), "{seen:?}");
    }
}
