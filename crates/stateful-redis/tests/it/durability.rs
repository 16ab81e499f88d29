//! Crash durability: a server with `appendfsync always` is killed (SIGKILL) in the middle of
//! `apply_once` and fenced writes, and restarted from its append-only file.
//!
//! A SIGKILL leaves the OS running, so what Redis wrote but did not fsync yet survives in the
//! page cache: `appendfsync everysec` passes this test too on a quiet disk. What `always` adds
//! (surviving a host crash) cannot be shown without crashing the host; see docs/leases.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use stateful_redis::{Applied, Change, Error, Fence, LeaseStatus, SerdeCodec, StateHandle, Version};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, executor};

/// Consumers that apply plain `apply_once`, each on an entity of its own.
const PLAIN: u64 = 4;
/// Consumers that apply `apply_once` fenced by a guarded lease, each on an entity of its own.
const FENCED: u64 = 2;
/// Messages every consumer has acknowledged before the server is killed.
const BEFORE_KILL: u64 = 30;
/// Messages every consumer applies after it saw the restart.
const AFTER_RESTART: u64 = 30;

/// What a consumer applied to its entity: the number of every message, in order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Delivered {
    messages: Vec<u64>,
}

/// One consumer, as the test body sees it.
#[derive(Debug, Default)]
struct Progress {
    /// Messages acknowledged (`Ok`) so far: number 0 to `acked - 1`.
    acked: AtomicU64,
    /// Deliveries that failed with an unknown outcome and were delivered again.
    redeliveries: AtomicU64,
    /// Deliveries answered as a replay: the failed delivery before had been applied.
    replays: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fsync_always_server_loses_no_acknowledged_write_and_applies_each_message_once() {
    let mut server = RedisServer::builder().persistent().start();
    let exec = executor(&server).await;
    let state = exec.state::<Delivered>("it").expect("namespace");
    let leases = exec.leases("it").expect("namespace");

    // Fenced consumers hold their entity under a guarded lease, long enough to outlive the
    // outage. The short lease runs out during the test (while the server is down, or later).
    let mut guards = Vec::new();
    for f in 0..FENCED {
        let guard = leases
            .acquire_guarded(&format!("fenced-{f}"), "holder", Duration::from_secs(20))
            .await
            .expect("acquire");
        guards.push(guard);
    }
    let short = leases
        .acquire("short", "holder", Duration::from_secs(2))
        .await
        .expect("acquire");
    let counters = exec.state::<Counter>("it").expect("namespace");
    counters.under(&short).put(&Counter { n: 1 }).await.expect("fenced put");
    // A message applied whose acknowledgement the consumer never got: it is delivered again
    // after the restart.
    let first = Delivered { messages: vec![7] };
    let lost_ack = state
        .apply_once("lost-ack", "msg-7", Change::Cas(Version::NONE, &first))
        .await
        .expect("apply_once");
    assert_eq!((lost_ack.version, lost_ack.replayed), (Version(1), false));

    let restarted = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for c in 0..PLAIN + FENCED {
        let (entity, fence) = if c < PLAIN {
            (format!("plain-{c}"), None)
        } else {
            let guard = &guards[usize::try_from(c - PLAIN).expect("index")];
            (guard.entity().to_owned(), Some(Fence::from(guard)))
        };
        let progress = Arc::new(Progress::default());
        let task = tokio::spawn(consume(
            state.clone(),
            entity.clone(),
            fence,
            Arc::clone(&progress),
            Arc::clone(&restarted),
        ));
        consumers.push((entity, progress, task));
    }

    // Kill the server in the middle of the run: every consumer is past its first messages
    // and cannot finish before it has seen the restart.
    while consumers
        .iter()
        .any(|(_, progress, _)| progress.acked.load(Ordering::SeqCst) < BEFORE_KILL)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let script_loads = exec.script_stats().preloads + exec.script_stats().reloads;
    let created = exec.pool_stats().created;
    server.stop();
    // Whatever was acknowledged up to here was fsynced before its reply was sent.
    let acked_at_kill: Vec<u64> = consumers
        .iter()
        .map(|(_, progress, _)| progress.acked.load(Ordering::SeqCst))
        .collect();
    // The consumers keep delivering meanwhile and see their calls fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    restarted.store(true, Ordering::SeqCst);

    // Every write acknowledged before the kill is there after the restart, read by the same
    // executor (a read is retried, and the consumers only ever append).
    for ((entity, _, _), &acked) in consumers.iter().zip(&acked_at_kill) {
        let stored = read_until_answered(&state, entity).await;
        let n = usize::try_from(acked).expect("count");
        assert!(
            stored.value.messages.len() >= n && stored.value.messages[..n] == (0..acked).collect::<Vec<_>>()[..],
            "{entity}: {acked} messages acknowledged before the kill, but Redis has {:?}",
            stored.value.messages
        );
    }

    let mut redeliveries = 0;
    for (entity, progress, task) in consumers {
        task.await.expect("consumer");
        let acked = progress.acked.load(Ordering::SeqCst);
        redeliveries += progress.redeliveries.load(Ordering::SeqCst);
        let stored = state.get(&entity).await.expect("get").expect("exists");
        // Each message exactly once, in order, none lost; one version per message.
        assert_eq!(
            stored.value.messages,
            (0..acked).collect::<Vec<_>>(),
            "{entity}: {} redeliveries, {} of them replays",
            progress.redeliveries.load(Ordering::SeqCst),
            progress.replays.load(Ordering::SeqCst)
        );
        assert_eq!(stored.version, Version(acked), "{entity}");
    }
    assert!(redeliveries > 0, "the kill failed no call: it hit no work in flight");

    // The redelivered message finds its id in the AOF: a replay of the first outcome, although
    // the consumer, reading the entity afresh, sends a change that would append it again.
    let stored = state.get("lost-ack").await.expect("get").expect("exists");
    let mut again = stored.value.clone();
    again.messages.push(7);
    let redelivered = state
        .apply_once("lost-ack", "msg-7", Change::Cas(stored.version, &again))
        .await
        .expect("apply_once");
    assert_eq!((redelivered.version, redelivered.replayed), (Version(1), true));
    let stored = state.get("lost-ack").await.expect("get").expect("exists");
    assert_eq!((stored.version, stored.value), (Version(1), first));

    // The same executor serves: it connected again and loaded its scripts into the new process.
    assert!(exec.pool_stats().created > created, "{:?}", exec.pool_stats());
    let stats = exec.script_stats();
    assert!(stats.preloads + stats.reloads > script_loads, "{stats:?}");

    // The guarded leases survived in the AOF: still held, by the same grant, and their holder's
    // fenced writes (the consumers' last ones above) were accepted after the restart.
    for guard in &guards {
        assert!(
            matches!(guard.status(), LeaseStatus::Held { .. }),
            "{:?}",
            guard.status()
        );
        match leases.acquire(guard.entity(), "rival", Duration::from_secs(1)).await {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "holder"),
            other => panic!("{}: expected the lease held, got {other:?}", guard.entity()),
        }
        let fence_key = format!("it:{{{}}}:f", guard.entity());
        assert_eq!(server.cli(&["GET", &fence_key]), guard.token().to_string());
    }

    // Once the short lease has run out, its holder's writes are fenced and the entity is granted
    // again, with a larger token: the fence counter came back from the AOF, no token is reused.
    let successor = loop {
        match leases.acquire("short", "holder", Duration::from_secs(10)).await {
            Ok(lease) => break lease,
            Err(Error::LeaseHeld { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("acquire after the restart: {e}"),
        }
    };
    assert!(
        successor.token() > short.token(),
        "token {} granted again after the restart (before: {})",
        successor.token(),
        short.token()
    );
    assert!(matches!(
        counters.under(&short).put(&Counter { n: 2 }).await,
        Err(Error::Fenced { .. })
    ));
    counters
        .under(&successor)
        .put(&Counter { n: 3 })
        .await
        .expect("the new holder writes");
    let stored = counters.get("short").await.expect("get").expect("exists");
    assert_eq!((stored.version, stored.value), (Version(2), Counter { n: 3 }));

    for guard in guards {
        guard.release().await.expect("release");
    }
}

/// Applies messages 0, 1, 2, ... to `entity`, each appending its number, until it has applied
/// [`AFTER_RESTART`] more after `restarted` is set. A message whose outcome is unknown is
/// delivered again with the same id, as a transport that redelivers unacknowledged messages
/// would, until it gets an answer.
async fn consume(
    state: StateHandle<Delivered, SerdeCodec>,
    entity: String,
    fence: Option<Fence>,
    progress: Arc<Progress>,
    restarted: Arc<AtomicBool>,
) {
    let mut stop_at = None;
    for n in 0.. {
        if restarted.load(Ordering::SeqCst) && n >= *stop_at.get_or_insert(n + AFTER_RESTART) {
            return;
        }
        let message = format!("msg-{n}");
        let applied = loop {
            match deliver(&state, &entity, fence.as_ref(), n, &message).await {
                Ok(applied) => break applied,
                // LOADING, should a call reach the server before it finished loading.
                Err(e) if e.is_outcome_unknown() || matches!(e, Error::Unavailable { .. }) => {
                    progress.redeliveries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{entity} {message}: {e}"),
            }
        };
        if applied.replayed {
            progress.replays.fetch_add(1, Ordering::SeqCst);
        }
        // Message n made version n + 1, whichever delivery applied it.
        assert_eq!(applied.version, Version(n + 1), "{entity} {message}");
        progress.acked.store(n + 1, Ordering::SeqCst);
    }
}

/// One delivery: read the entity, append `n`, write it back at the version read, once per
/// `message` id. A redelivery after an applied first delivery reads `n` already appended;
/// its write is a replay and changes nothing.
async fn deliver(
    state: &StateHandle<Delivered, SerdeCodec>,
    entity: &str,
    fence: Option<&Fence>,
    n: u64,
    message: &str,
) -> Result<Applied, Error> {
    let (version, mut value) = match state.get(entity).await? {
        Some(current) => (current.version, current.value),
        None => (Version::NONE, Delivered::default()),
    };
    value.messages.push(n);
    let change = Change::Cas(version, &value);
    match fence {
        Some(fence) => state.under(fence.clone()).apply_once(message, change).await,
        None => state.apply_once(entity, message, change).await,
    }
}

/// Reads `entity`, retrying while the executor reconnects.
async fn read_until_answered(
    state: &StateHandle<Delivered, SerdeCodec>,
    entity: &str,
) -> stateful_redis::Versioned<Delivered> {
    for _ in 0..100 {
        match state.get(entity).await {
            Ok(Some(stored)) => return stored,
            Ok(None) => panic!("{entity}: acknowledged writes, but the entity is gone after the restart"),
            Err(e) if e.is_outcome_unknown() || matches!(e, Error::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{entity}: {e}"),
        }
    }
    panic!("{entity}: the executor did not recover within 100 reads")
}
