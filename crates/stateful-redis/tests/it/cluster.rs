//! A real local Redis Cluster under the executor: routing by slot, scripts that heal on
//! every master, a slot migrating under load, a failover under load, and a master lost
//! with nobody to replace it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use stateful_redis::{Change, Error, Fence, StatefulExecutor, Version};
use stateful_redis_test_support::RedisCluster;

use crate::{Counter, Topology};

fn cluster_config(cluster: &RedisCluster) -> stateful_redis::ExecutorConfig {
    let urls = cluster.urls();
    let mut config = crate::config_for(&urls[0]);
    config.redis.cluster = true;
    config.redis.seeds = urls[1..].iter().map(stateful_redis::RedisUrl::new).collect();
    config.state.update_max_attempts = 100_000;
    config
}

async fn cluster_executor(cluster: &RedisCluster) -> StatefulExecutor {
    StatefulExecutor::builder()
        .config(cluster_config(cluster))
        .build()
        .await
        .expect("executor on the cluster")
}

/// `count` entity ids whose state keys (`it:{id}:s`) share one slot, and that slot.
fn entities_in_one_slot(count: usize) -> (Vec<String>, u16) {
    let slot = RedisCluster::slot_of("it:{busy-0}:s");
    let mut ids = vec!["busy-0".to_owned()];
    let mut n = 1u64;
    while ids.len() < count {
        let id = format!("busy-{n}");
        if RedisCluster::slot_of(&format!("it:{{{id}}}:s")) == slot {
            ids.push(id);
        }
        n += 1;
    }
    (ids, slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_go_to_the_master_of_their_slot_and_scripts_heal_on_every_master() {
    let topology = Topology::cluster();
    let Topology::Cluster(cluster) = &topology else {
        unreachable!("a cluster")
    };
    let exec = topology.executor().await;
    let state = exec.state::<Counter>("it").expect("namespace");
    for i in 0..300u64 {
        state.put(&format!("e{i}"), &Counter { n: i }).await.expect("put");
    }
    // Each value lives on the master of its slot, and every master got its share.
    for i in [0u64, 17, 123, 299] {
        let key = format!("it:{{e{i}}}:s");
        let owner = cluster.master_of_slot(RedisCluster::slot_of(&key));
        assert_eq!(cluster.cli(owner, &["EXISTS", &key]), "1", "{key}");
    }
    let stats = exec.pool().cluster_stats().expect("a cluster pool");
    assert_eq!(stats.nodes.len(), 3, "{stats:?}");
    assert!(stats.nodes.iter().all(|n| n.commands > 0 && n.connected), "{stats:?}");
    assert_eq!(stats.nodes.iter().map(|n| n.slots).sum::<u32>(), 16_384);
    assert_eq!(stats.uncovered_slots, 0);
    // Calls made together share a pipeline per master, each call its own `EVALSHA` (no bundles
    // of `many` on a cluster, ADR 008), and each gets its own answer.
    let (same_slot, _) = entities_in_one_slot(8);
    let ids: Vec<String> = same_slot
        .into_iter()
        .chain((0..8).map(|i| format!("apart-{i}")))
        .collect();
    let before = exec.script_stats();
    let values: Vec<Counter> = (0..ids.len() as u64).map(|n| Counter { n: n + 1000 }).collect();
    let versions =
        futures_util::future::join_all(ids.iter().zip(&values).map(|(id, value)| state.put(id, value))).await;
    for ((n, id), version) in ids.iter().enumerate().zip(versions) {
        assert_eq!(version.expect("put").0, 1, "{id}");
        let now = state.get(id).await.expect("get").expect("stored");
        assert_eq!(now.value.n, n as u64 + 1000, "{id}");
    }
    let after = exec.script_stats();
    assert_eq!(
        (after.bundles, after.bundled_calls),
        (before.bundles, before.bundled_calls)
    );
    // Every master forgets its scripts: the next calls load them again, on each master.
    let reloads = exec.script_stats().reloads;
    for i in 0..3 {
        assert_eq!(cluster.cli(i, &["SCRIPT", "FLUSH"]), "OK");
    }
    // (Reads are plain GETs: the writes need the scripts.)
    for i in 0..300u64 {
        let id = format!("e{i}");
        state
            .update(&id, |c| Counter {
                n: c.map_or(0, |c| c.n) + 1,
            })
            .await
            .expect("update");
        assert_eq!(state.get(&id).await.expect("get").expect("stored").value.n, i + 1);
    }
    assert!(exec.script_stats().reloads >= reloads + 3, "{:?}", exec.script_stats());
    // optimize_lua_scripts loads on every master.
    let report = exec.optimize_lua_scripts().await.expect("preload");
    assert_eq!(report.nodes, 3, "{report:?}");
    exec.shutdown().await;
}

/// Increments acknowledged per entity, and the failures (`entity: error`).
type Outcome = (BTreeMap<String, u64>, Vec<String>);

/// Increments `entities` with `update` from `tasks` callers until `stop`; returns the
/// increments acknowledged per entity and the operations that failed.
fn spawn_load(
    exec: &StatefulExecutor,
    entities: &[String],
    tasks: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let state = Arc::new(exec.state::<Counter>("it").expect("namespace"));
    (0..tasks)
        .map(|t| {
            let (state, stop, entities) = (Arc::clone(&state), Arc::clone(stop), entities.to_vec());
            tokio::spawn(async move {
                let mut acked: BTreeMap<String, u64> = BTreeMap::new();
                let mut failed = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let entity = &entities[i % entities.len()];
                    i += 1;
                    match state
                        .update(entity, |c| Counter {
                            n: c.unwrap_or_default().n + 1,
                        })
                        .await
                    {
                        Ok(_) => *acked.entry(entity.clone()).or_default() += 1,
                        Err(e) => failed.push(format!("{entity}: {e}")),
                    }
                }
                (acked, failed)
            })
        })
        .collect()
}

async fn collect(load: Vec<tokio::task::JoinHandle<Outcome>>) -> Outcome {
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = Vec::new();
    for task in load {
        let (a, f) = task.await.expect("load task");
        for (entity, n) in a {
            *acked.entry(entity).or_default() += n;
        }
        failed.extend(f);
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrating_under_load_fails_nothing_and_loses_nothing() {
    let cluster = Arc::new(RedisCluster::start_with(3, 0));
    let exec = cluster_executor(&cluster).await;
    let (entities, slot) = entities_in_one_slot(5);
    let from = cluster.master_of_slot(slot);
    let to = (0..3).find(|&i| i != from).expect("another master");
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&exec, &entities, 8, &stop);
    let progress = Arc::new(AtomicU64::new(0));
    // The migration, step by step as `redis-cli --cluster reshard` does it, while the load runs.
    let migration = {
        let (cluster, progress) = (Arc::clone(&cluster), Arc::clone(&progress));
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            cluster.begin_migration(slot, to);
            // A few keys at a time: the entities' keys are split between the nodes for a while.
            loop {
                std::thread::sleep(Duration::from_millis(30));
                if cluster.migrate_keys(slot, from, to, 2) == 0 {
                    break;
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
            cluster.finish_migration(slot, to);
        })
    };
    migration.await.expect("migration");
    // Some more load on the new owner, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = collect(load).await;
    assert!(failed.is_empty(), "operations failed during the migration: {failed:?}");
    assert!(progress.load(Ordering::Relaxed) > 0, "no key was migrated");
    assert_eq!(cluster.master_of_slot(slot), to);
    let state = exec.state::<Counter>("it").expect("namespace");
    for entity in &entities {
        let stored = state.get(entity).await.expect("get").map_or(0, |v| v.value.n);
        assert_eq!(
            stored,
            acked.get(entity).copied().unwrap_or(0),
            "{entity}: lost or doubled updates"
        );
    }
    let stats = exec.pool().cluster_stats().expect("cluster");
    assert!(
        stats.ask + stats.moved > 0,
        "the load never met the migration: {stats:?}"
    );
    exec.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_no_acknowledged_write() {
    let cluster = Arc::new(RedisCluster::start());
    let exec = cluster_executor(&cluster).await;
    let entities: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&exec, &entities, 8, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slot = RedisCluster::slot_of("it:{f0}:s");
    let master = cluster.master_of_slot(slot);
    let replica = cluster.replica_of(master);
    {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.failover(replica))
            .await
            .expect("failover");
    }
    // Operations go on, on the new master.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = collect(load).await;
    let state = exec.state::<Counter>("it").expect("namespace");
    state
        .update("f0", |c| Counter {
            n: c.unwrap_or_default().n,
        })
        .await
        .expect("the failed-over slot serves again");
    assert_eq!(
        exec.pool().master_of_slot(slot),
        Some(format!("127.0.0.1:{}", cluster.nodes()[replica].port()))
    );
    for entity in &entities {
        let stored = state.get(entity).await.expect("get").map_or(0, |v| v.value.n);
        let acknowledged = acked.get(entity).copied().unwrap_or(0);
        // An update whose reply was lost may have applied; an acknowledged one always did.
        let unknown = failed.iter().filter(|f| f.starts_with(&format!("{entity}:"))).count() as u64;
        assert!(
            (acknowledged..=acknowledged + unknown).contains(&stored),
            "{entity}: stored {stored}, acknowledged {acknowledged}, unknown {unknown}"
        );
    }
    exec.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_master_without_replica_fails_its_slots_only_and_in_time() {
    let mut cluster = RedisCluster::start_with(3, 0);
    let mut config = cluster_config(&cluster);
    config.redis.connect_timeout = Duration::from_millis(300);
    config.redis.response_timeout = Duration::from_millis(500);
    config.retry.attempts = 2;
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    let state = exec.state::<Counter>("it").expect("namespace");
    // One entity on each master.
    let mut on: BTreeMap<usize, String> = BTreeMap::new();
    let mut n = 0;
    while on.len() < 3 {
        let id = format!("k{n}");
        on.entry(cluster.master_of_slot(RedisCluster::slot_of(&format!("it:{{{id}}}:s"))))
            .or_insert(id);
        n += 1;
    }
    for id in on.values() {
        state.put(id, &Counter { n: 1 }).await.expect("put");
    }
    let (&lost, lost_entity) = on.iter().next().expect("three masters");
    cluster.stop_node(lost);
    for _ in 0..5 {
        // Bounded: a hang fails here, not at the CI's timeout.
        let result = tokio::time::timeout(Duration::from_secs(10), state.get(lost_entity))
            .await
            .expect("an operation on a lost master comes back within its timeouts");
        assert!(
            matches!(result, Err(Error::Connection { .. } | Error::Timeout { .. })),
            "{result:?}"
        );
        for (&node, id) in &on {
            if node != lost {
                let got = state.get(id).await.expect("the other masters serve on");
                assert_eq!(got.expect("stored").value.n, 1);
            }
        }
    }
    exec.shutdown().await;
}

/// `count` entity ids `{prefix}-{n}` whose keys fall into `slot`.
fn entities_in_slot(prefix: &str, slot: u16, count: usize) -> Vec<String> {
    (0u64..)
        .map(|n| format!("{prefix}-{n}"))
        .filter(|id| RedisCluster::slot_of(id) == slot)
        .take(count)
        .collect()
}

/// What the guarded load saw, per entity: fenced increments acknowledged, messages
/// applied; and every failure and broken guarantee, as text.
#[derive(Debug, Default)]
struct Guarded {
    fenced: BTreeMap<String, u64>,
    messages: BTreeMap<String, u64>,
    failures: Vec<String>,
}

/// The lease holder and newest token of each entity, as the holders believe.
#[derive(Debug, Default)]
struct Holders {
    holder: BTreeMap<String, u64>,
    newest: BTreeMap<String, (u64, String)>,
}

/// On every entity until `stop`: two owners take turns with its lease (acquire, a fenced
/// increment, a write under the previous holder's fence that must be refused, renew,
/// another fenced increment, release), and a consumer applies messages once each through
/// `apply_once`, every message delivered twice at once and again after the next one.
/// Leases and fenced counters live in `namespace`, the messages' counters in
/// `{namespace}once` (same entity, same slot).
fn spawn_guarded_load(
    exec: &StatefulExecutor,
    namespace: &str,
    entities: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Guarded>> {
    let leases = exec.leases(namespace).expect("namespace");
    let state = Arc::new(exec.state::<Counter>(namespace).expect("namespace"));
    let once = Arc::new(exec.state::<Counter>(&format!("{namespace}once")).expect("namespace"));
    let holders = Arc::new(std::sync::Mutex::new(Holders::default()));
    let mut tasks = Vec::new();
    for entity in entities {
        for owner in ["owner-a", "owner-b"] {
            let (leases, state, holders, stop) = (
                leases.clone(),
                Arc::clone(&state),
                Arc::clone(&holders),
                Arc::clone(stop),
            );
            let entity = entity.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Guarded::default();
                while !stop.load(Ordering::Relaxed) {
                    match take_turn(&leases, &state, &holders, &entity, owner).await {
                        Ok(increments) => *seen.fenced.entry(entity.clone()).or_default() += increments,
                        Err(failure) => seen.failures.push(format!("{entity} {owner}: {failure}")),
                    }
                }
                seen
            }));
        }
        let (once, stop, entity) = (Arc::clone(&once), Arc::clone(stop), entity.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Guarded::default();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Message k moves the counter from version k to k + 1: a second application
                // of any message would be refused as a conflict, or show in the count.
                let value = Counter { n: k + 1 };
                let id = format!("msg-{k}");
                let (first, second) = futures_util::join!(
                    once.apply_once(&entity, &id, Change::Cas(Version(k), &value)),
                    once.apply_once(&entity, &id, Change::Cas(Version(k), &value)),
                );
                match (first, second) {
                    (Ok(a), Ok(b))
                        if a.version == Version(k + 1) && b.version == a.version && a.replayed != b.replayed => {}
                    other => {
                        seen.failures.push(format!("{entity} {id}: {other:?}"));
                        break;
                    }
                }
                if k > 0 {
                    let id = format!("msg-{}", k - 1);
                    let again = once
                        .apply_once(&entity, &id, Change::Cas(Version(k - 1), &Counter { n: k }))
                        .await;
                    if !matches!(again, Ok(a) if a.replayed && a.version == Version(k)) {
                        seen.failures.push(format!("{entity} {id} redelivered: {again:?}"));
                        break;
                    }
                }
                k += 1;
            }
            seen.messages.insert(entity, k);
            seen
        }));
    }
    tasks
}

/// One owner's turn with `entity`'s lease; the fenced increments it made, or what failed.
/// A lease held by the other owner is no failure: the turn makes nothing.
async fn take_turn(
    leases: &stateful_redis::Leases,
    state: &stateful_redis::StateHandle<Counter, stateful_redis::SerdeCodec>,
    holders: &std::sync::Mutex<Holders>,
    entity: &str,
    owner: &str,
) -> Result<u64, String> {
    let mut lease = match leases.acquire(entity, owner, Duration::from_secs(30)).await {
        Ok(lease) => lease,
        Err(Error::LeaseHeld { .. }) => {
            tokio::time::sleep(Duration::from_millis(2)).await;
            return Ok(0);
        }
        Err(e) => return Err(format!("acquire: {e}")),
    };
    let previous = {
        let mut h = holders.lock().expect("holders");
        if let Some(other) = h.holder.insert(entity.to_owned(), lease.token()) {
            return Err(format!("token {} granted while token {other} is held", lease.token()));
        }
        let previous = h.newest.insert(entity.to_owned(), (lease.token(), owner.to_owned()));
        if let Some((token, _)) = &previous
            && *token >= lease.token()
        {
            return Err(format!("token {} granted after token {token}", lease.token()));
        }
        previous
    };
    let increment = |c: Option<Counter>| Counter {
        n: c.unwrap_or_default().n + 1,
    };
    state
        .under(&lease)
        .update(increment)
        .await
        .map_err(|e| format!("fenced update: {e}"))?;
    if let Some((token, old_owner)) = previous {
        let stale = Fence::new(entity, token, old_owner);
        match state.under(stale).put(&Counter { n: 0 }).await {
            Err(Error::Fenced { .. }) => {}
            other => return Err(format!("a write under the older token {token}: {other:?}")),
        }
    }
    leases.renew(&mut lease).await.map_err(|e| format!("renew: {e}"))?;
    state
        .under(&lease)
        .update(increment)
        .await
        .map_err(|e| format!("fenced update after renew: {e}"))?;
    holders.lock().expect("holders").holder.remove(entity);
    leases.release(&lease).await.map_err(|e| format!("release: {e}"))?;
    Ok(2)
}

async fn collect_guarded(load: Vec<tokio::task::JoinHandle<Guarded>>) -> Guarded {
    let mut all = Guarded::default();
    for task in load {
        let seen = task.await.expect("load task");
        for (entity, n) in seen.fenced {
            *all.fenced.entry(entity).or_default() += n;
        }
        all.messages.extend(seen.messages);
        all.failures.extend(seen.failures);
    }
    all
}

/// The counters stored match what the load was told: no fenced increment lost or doubled,
/// every message applied exactly once.
async fn check_guarded(exec: &StatefulExecutor, namespace: &str, entities: &[String], seen: &Guarded) {
    assert!(seen.failures.is_empty(), "failures: {:#?}", seen.failures);
    let state = exec.state::<Counter>(namespace).expect("namespace");
    let once = exec.state::<Counter>(&format!("{namespace}once")).expect("namespace");
    for entity in entities {
        let fenced = seen.fenced.get(entity).copied().unwrap_or(0);
        assert!(fenced > 0, "{entity}: no lease turn completed");
        let stored = state.get(entity).await.expect("get").map_or(0, |v| v.value.n);
        assert_eq!(stored, fenced, "{entity}: fenced increments lost or doubled");
        let messages = seen.messages.get(entity).copied().unwrap_or(0);
        let stored = once.get(entity).await.expect("get").map(|v| (v.version, v.value.n));
        assert_eq!(
            stored.unwrap_or_default(),
            (Version(messages), messages),
            "{entity}: messages applied other than once each"
        );
    }
}

/// A slot moved key by key, then another by `redis-cli --cluster reshard`, while leases
/// change hands on their entities, fenced writes run and messages are applied once: nothing
/// fails, no message applies twice, no two holders overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_fences_and_apply_once_hold_through_a_resharding() {
    let cluster = Arc::new(RedisCluster::start_with(3, 0));
    let mut config = cluster_config(&cluster);
    // An operation on a migrating slot may wait until the migration ends, up to the response
    // timeout: each slot here moves in well under a second, on a busy machine in a few.
    config.redis.response_timeout = Duration::from_secs(5);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    // Key by key: a slot of master 0 to master 1.
    let by_key = entities_in_slot("mig", RedisCluster::slot_of("mig-0"), 3);
    let slot = RedisCluster::slot_of(&by_key[0]);
    let from = cluster.master_of_slot(slot);
    let to = (0..3).find(|&i| i != from).expect("another master");
    // By redis-cli: the lowest slot of a third master.
    let third = (0..3).find(|&i| i != from && i != to).expect("a third master");
    let resharded = entities_in_slot("resh", cluster.first_slot_of(third), 3);
    let entities: Vec<String> = by_key.iter().chain(&resharded).cloned().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_guarded_load(&exec, "it", &entities, &stop);
    let moved = {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || {
            let moved = migrate_key_by_key(&cluster, slot, from, to);
            cluster.reshard(third, from, 1, 2);
            std::thread::sleep(Duration::from_millis(300));
            moved
        })
        .await
        .expect("migration")
    };
    stop.store(true, Ordering::Relaxed);
    let seen = collect_guarded(load).await;
    assert!(moved > 0, "no key was migrated");
    assert_eq!(cluster.master_of_slot(slot), to);
    assert_eq!(cluster.master_of_slot(RedisCluster::slot_of(&resharded[0])), from);
    check_guarded(&exec, "it", &entities, &seen).await;
    let stats = exec.pool().cluster_stats().expect("cluster");
    // An ASK (a key already moved) or a TRYAGAIN (keys split between the nodes): either way,
    // commands met the slot in migration.
    assert!(
        stats.ask + stats.retried > 0,
        "the load never met the migration: {stats:?}"
    );
    exec.shutdown().await;
}

/// Moves `slot` from master `from` to `to` two keys at a time with pauses between, while a
/// load runs (blocking: call it from `spawn_blocking`); the keys moved.
fn migrate_key_by_key(cluster: &RedisCluster, slot: u16, from: usize, to: usize) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    cluster.begin_migration(slot, to);
    let mut moved = 0;
    loop {
        std::thread::sleep(Duration::from_millis(30));
        match cluster.migrate_keys(slot, from, to, 2) {
            0 => break,
            n => moved += n,
        }
    }
    cluster.finish_migration(slot, to);
    std::thread::sleep(Duration::from_millis(200));
    moved
}

/// A user with exactly [`stateful_redis::ACL_COMMANDS`] and its namespace's keys starts on a
/// cluster (`CLUSTER SLOTS`) and keeps working while a slot migrates (`ASKING`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_user_works_on_a_cluster_through_a_migration() {
    let rules = format!("~app:* ~apponce:* {}", stateful_redis::ACL_COMMANDS);
    let cluster = Arc::new(
        RedisCluster::builder()
            .replicas(0)
            .acl_user("app", "app-pw-5up3r", &rules)
            .start(),
    );
    let mut config = cluster_config(&cluster);
    let port = cluster.nodes()[0].port();
    config.redis.url = stateful_redis::RedisUrl::new(format!("redis://app:app-pw-5up3r@127.0.0.1:{port}"));
    config.redis.response_timeout = Duration::from_secs(5);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("the limited user starts on the cluster");
    let entities = entities_in_slot("acl", RedisCluster::slot_of("acl-0"), 2);
    let slot = RedisCluster::slot_of(&entities[0]);
    let from = cluster.master_of_slot(slot);
    let to = (0..3).find(|&i| i != from).expect("another master");
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_guarded_load(&exec, "app", &entities, &stop);
    {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || migrate_key_by_key(&cluster, slot, from, to))
            .await
            .expect("migration");
    }
    stop.store(true, Ordering::Relaxed);
    let seen = collect_guarded(load).await;
    check_guarded(&exec, "app", &entities, &seen).await;
    let stats = exec.pool().cluster_stats().expect("cluster");
    assert!(
        stats.ask + stats.retried > 0,
        "the load never met the migration: {stats:?}"
    );
    exec.shutdown().await;
}

/// A migration that stalls with an entity's keys split: its multi-key operations wait the
/// response timeout, then fail with `Unavailable` having changed nothing, and go on once the
/// slot has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_migration_fails_multi_key_operations_as_unavailable_after_the_response_timeout() {
    let cluster = RedisCluster::start_with(3, 0);
    let mut config = cluster_config(&cluster);
    config.redis.response_timeout = Duration::from_millis(500);
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("executor");
    let leases = exec.leases("it").expect("namespace");
    let first = leases
        .acquire("stall", "me", Duration::from_secs(30))
        .await
        .expect("acquire");
    leases.release(&first).await.expect("release");
    // Left: the fence counter; a state value beside it.
    let state = exec.state::<Counter>("it").expect("namespace");
    state.put("stall", &Counter { n: 1 }).await.expect("put");
    let slot = RedisCluster::slot_of("stall");
    let from = cluster.master_of_slot(slot);
    let to = (0..3).find(|&i| i != from).expect("another master");
    cluster.begin_migration(slot, to);
    assert_eq!(cluster.migrate_keys(slot, from, to, 1), 1);
    // The lease key is missing on both nodes: acquire meets TRYAGAIN until the slot moves.
    match leases.acquire("stall", "me", Duration::from_secs(30)).await {
        Err(Error::Unavailable { message }) => assert!(message.starts_with("TRYAGAIN"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(exec.pool().cluster_stats().expect("cluster").retried > 1);
    while cluster.migrate_keys(slot, from, to, 10) > 0 {}
    cluster.finish_migration(slot, to);
    let next = leases
        .acquire("stall", "me", Duration::from_secs(30))
        .await
        .expect("acquire after the migration");
    assert_eq!(next.token(), first.token() + 1, "the refused acquire took no token");
    exec.shutdown().await;
}
