//! Ownership leases: exclusive validity windows, fencing of paused holders, the watchdog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stateful_redis::{Error, LeaseLoss, LeaseStatus, StatefulExecutor};
use stateful_redis_test_support::RedisServer;
use std::time::Instant;

use crate::{Counter, executor};

#[derive(Debug, Clone)]
struct Grant {
    token: u64,
    /// When the holder learned of the grant.
    start: Instant,
    /// When the holder stopped acting as owner (validity end, or release).
    end: Instant,
}

#[derive(Debug, Clone)]
struct Accepted {
    token: u64,
    version: u64,
    sent: Instant,
}

#[derive(Default)]
struct Log {
    grants: HashMap<String, Vec<Grant>>,
    writes: HashMap<String, Vec<Accepted>>,
    paused_writes: u64,
    fenced: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

crate::on_both! {
    async fn contending_executors_never_overlap_and_paused_holders_are_fenced(topology: &Topology) {
        const ENTITIES: u64 = 200;
        const TTL: Duration = Duration::from_secs(1);
        const RUN: Duration = Duration::from_secs(20);
        let log = Arc::new(Mutex::new(Log::default()));
        let deadline = Instant::now() + RUN;
        // Separate executors: separate connections, as separate instances would have.
        let mut tasks = Vec::new();
        for e in 0..8u64 {
            let exec = topology.executor().await;
            for w in 0..4u64 {
                let (exec, log) = (exec.clone(), Arc::clone(&log));
                tasks.push(tokio::spawn(async move {
                    worker(
                        exec,
                        log,
                        format!("exec{e}/worker{w}"),
                        deadline,
                        Rng(0x2545_F491 + e * 31 + w * 7),
                        ENTITIES,
                        TTL,
                    )
                    .await
                }));
            }
        }
        for task in tasks {
            task.await.expect("worker");
        }
        let log = log.lock().expect("log");
        let grants: usize = log.grants.values().map(Vec::len).sum();
        let writes: usize = log.writes.values().map(Vec::len).sum();
        // Enough happened for the checks below to mean something (far below what a run does).
        assert!(
            grants > 100 && writes > 200,
            "too little happened: {grants} grants, {writes} writes"
        );
        assert!(log.paused_writes > 3, "too few paused holders: {}", log.paused_writes);
        for (entity, grants) in &log.grants {
            let mut grants = grants.clone();
            grants.sort_by_key(|g| g.token);
            for pair in grants.windows(2) {
                assert!(pair[0].token < pair[1].token, "{entity}: token reused");
                assert!(
                    pair[0].end <= pair[1].start,
                    "{entity}: validity of token {} overlaps token {}",
                    pair[0].token,
                    pair[1].token
                );
            }
            let mut writes = log.writes.get(entity).cloned().unwrap_or_default();
            writes.sort_by_key(|w| w.version);
            for pair in writes.windows(2) {
                assert!(
                    pair[0].token <= pair[1].token,
                    "{entity}: an older token wrote after a newer one"
                );
            }
            for write in &writes {
                // No grant with a newer token was known before this write was sent.
                for g in &grants {
                    assert!(
                        !(g.token > write.token && g.start < write.sent),
                        "{entity}: write with token {} accepted after token {} was granted",
                        write.token,
                        g.token
                    );
                }
            }
        }
    }
}

async fn worker(
    exec: StatefulExecutor,
    log: Arc<Mutex<Log>>,
    owner: String,
    deadline: Instant,
    mut rng: Rng,
    entities: u64,
    ttl: Duration,
) {
    let leases = exec.leases("it").expect("namespace");
    let state = exec.state::<Counter>("it").expect("namespace");
    while Instant::now() < deadline {
        let entity = format!("e{}", rng.next(entities));
        let lease = match leases.acquire(&entity, &owner, ttl).await {
            Ok(lease) => lease,
            Err(Error::LeaseHeld { .. }) => continue,
            Err(e) => panic!("acquire: {e}"),
        };
        let start = Instant::now();
        let fenced = state.under(&lease);
        let mut end = lease.valid_until();
        for _ in 0..1 + rng.next(4) {
            // Write only while the lease is valid on our clock.
            if !lease.is_valid() {
                break;
            }
            let sent = Instant::now();
            match fenced.put(&Counter { n: lease.token() }).await {
                Ok(version) => log
                    .lock()
                    .expect("log")
                    .writes
                    .entry(entity.clone())
                    .or_default()
                    .push(Accepted {
                        token: lease.token(),
                        version: version.0,
                        sent,
                    }),
                Err(Error::Fenced { .. }) => log.lock().expect("log").fenced += 1,
                Err(e) => panic!("write: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(rng.next(30))).await;
        }
        match rng.next(10) {
            0 => {
                // A holder that stalls (GC pause, swapped out) past its lease, then writes.
                tokio::time::sleep(ttl + Duration::from_millis(150 + rng.next(300))).await;
                match fenced.put(&Counter { n: 0 }).await {
                    Err(Error::Fenced { token, .. }) => assert_eq!(token, lease.token()),
                    other => panic!("{owner}: a paused former holder's write was not fenced: {other:?}"),
                }
                log.lock().expect("log").paused_writes += 1;
                assert!(matches!(leases.release(&lease).await, Err(Error::LeaseLost { .. })));
            }
            1 => {} // Abandon it: it expires.
            _ => {
                end = end.min(Instant::now());
                match leases.release(&lease).await {
                    Ok(()) | Err(Error::LeaseLost { .. }) => {}
                    Err(e) => panic!("release: {e}"),
                }
            }
        }
        log.lock().expect("log").grants.entry(entity).or_default().push(Grant {
            token: lease.token(),
            start,
            end,
        });
    }
}

#[tokio::test]
async fn guard_keeps_a_short_lease_alive_and_reports_its_loss() {
    let server = RedisServer::start();
    let exec = executor(&server).await;
    let leases = exec.leases("it").expect("namespace");
    let guard = leases
        .acquire_guarded("g", "holder", Duration::from_millis(300))
        .await
        .expect("acquire");
    let (tx, rx) = std::sync::mpsc::channel();
    guard.on_lost(move |loss| tx.send(loss).expect("send"));
    // Ten times the ttl: nobody else can take it meanwhile.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match leases.acquire("g", "rival", Duration::from_millis(300)).await {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "holder"),
            other => panic!("the guarded lease was lost: {other:?}"),
        }
        assert!(guard.is_valid());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renewals = match guard.status() {
        LeaseStatus::Held { renewals, .. } => renewals,
        other => panic!("{other:?}"),
    };
    assert!(renewals >= 2, "only {renewals} renewals in 3 s");
    server.cli(&["DEL", "it:{g}:l"]);
    let loss = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("the loss was never reported");
    // Found by the next renewal (not by running out of validity).
    assert_eq!(loss, Some(LeaseLoss::Taken { holder: None }));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).expect("callback ran"),
        LeaseLoss::Taken { holder: None }
    );
    assert!(!guard.is_valid());
    // Writes under the lost lease are fenced.
    let state = exec.state::<Counter>("it").expect("namespace");
    assert!(matches!(
        state.under(&guard).put(&Counter { n: 1 }).await,
        Err(Error::Fenced { .. })
    ));
}

crate::on_both! {
    async fn only_the_holder_releases_and_tokens_grow_across_expiry(topology: &Topology) {
        let exec = topology.executor().await;
        let leases = exec.leases("it").expect("namespace");
        let ttl = Duration::from_millis(200);
        let old = leases.acquire("x", "A", ttl).await.expect("A");
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(!old.is_valid());
        let mut current = leases
            .acquire("x", "B", Duration::from_secs(10))
            .await
            .expect("B after A expired");
        assert!(current.token() > old.token());
        // A's stale lease cannot release B's.
        match leases.release(&old).await {
            Err(Error::LeaseLost { holder, token, .. }) => {
                assert_eq!(holder.as_deref(), Some("B"));
                assert_eq!(token, old.token());
            }
            other => panic!("expected lease lost, got {other:?}"),
        }
        leases.renew(&mut current).await.expect("B still holds it");
        let pttl: i64 = topology.cli_for("it:{x}:l", &["PTTL", "it:{x}:l"]).parse().expect("PTTL");
        assert!(pttl > 0);
        assert!(matches!(leases.acquire("x", "C", ttl).await, Err(Error::LeaseHeld { holder, .. }) if holder == "B"));
        // Expired, even the fence counter's key gone from view, tokens still grow.
        topology.cli_for("it:{x}:l", &["DEL", "it:{x}:l"]);
        let next = leases.acquire("x", "C", ttl).await.expect("C");
        assert!(next.token() > current.token());
        assert!(matches!(leases.renew(&mut current).await, Err(Error::LeaseLost { .. })));
        // Bad arguments are refused before anything is sent.
        assert!(matches!(
            leases.acquire("x", "C", Duration::ZERO).await,
            Err(Error::InvalidArgument { name: "ttl", .. })
        ));
        assert!(matches!(leases.acquire("x{", "C", ttl).await, Err(Error::InvalidId(_))));
        assert!(matches!(leases.acquire("x", "", ttl).await, Err(Error::InvalidId(_))));
    }
}

crate::on_both! {
    async fn a_released_guard_says_so_and_frees_the_entity(topology: &Topology) {
        let exec = topology.executor().await;
        let leases = exec.leases("it").expect("namespace");
        let guard = leases
            .acquire_guarded("r", "holder", Duration::from_secs(5))
            .await
            .expect("acquire");
        let mut status = guard.subscribe();
        guard.release().await.expect("release");
        assert_eq!(*status.borrow_and_update(), LeaseStatus::Released);
        let next = leases
            .acquire("r", "next", Duration::from_secs(5))
            .await
            .expect("free at once");
        assert!(next.token() > 1);
        // A zero token is never issued: a hand-made fence with it is refused before any I/O.
        let state = exec.state::<Counter>("it").expect("namespace");
        let forged = stateful_redis::Fence::new("r", 0, "next");
        assert!(matches!(
            state.under(forged).put(&Counter { n: 1 }).await,
            Err(Error::InvalidArgument { .. })
        ));
        // The right token under another owner's name is refused.
        let impostor = stateful_redis::Fence::new("r", next.token(), "impostor");
        assert!(matches!(
            state.under(impostor).put(&Counter { n: 1 }).await,
            Err(Error::Fenced { .. })
        ));
        state
            .under(&next)
            .put(&Counter { n: 1 })
            .await
            .expect("the holder writes");
    }
}

crate::on_both! {
    async fn acquire_wait_gets_the_lease_once_released_or_expired_and_gives_up_after_wait(topology: &Topology) {
        let exec = topology.executor().await;
        let leases = exec.state::<Counter>("it").expect("namespace").leases();
        let long = Duration::from_secs(30);
        // Released: the waiter gets it, with a newer token.
        let first = leases.acquire("w", "A", long).await.expect("A");
        let waiter = {
            let leases = leases.clone();
            tokio::spawn(async move { leases.acquire_wait("w", "B", long, Duration::from_secs(20)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        leases.release(&first).await.expect("A releases");
        let second = waiter.await.expect("task").expect("B once A released");
        assert_eq!(second.owner(), "B");
        assert!(second.token() > first.token());
        // Expired (never renewed): the waiter gets it.
        let short = leases.acquire("e", "A", Duration::from_millis(300)).await.expect("A");
        let after = leases
            .acquire_wait("e", "B", long, Duration::from_secs(20))
            .await
            .expect("B once A expired");
        assert!(after.token() > short.token());
        // Still held after `wait`: the holder's error.
        match leases.acquire_wait("w", "C", long, Duration::from_millis(200)).await {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "B"),
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        match leases.acquire_wait("w", "C", long, Duration::ZERO).await {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "B"),
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        // A wait too long to measure is no error.
        let free = leases.acquire_wait("free", "C", long, Duration::MAX).await.expect("free");
        leases.release(&free).await.expect("release");
        // Bad arguments at once.
        assert!(matches!(
            leases.acquire_wait("w{", "C", long, long).await,
            Err(Error::InvalidId(_))
        ));
        assert!(matches!(
            leases.acquire_wait("w", "C", Duration::ZERO, long).await,
            Err(Error::InvalidArgument { name: "ttl", .. })
        ));
        // The guarded form keeps it.
        leases.release(&second).await.expect("B releases");
        let guard = leases
            .acquire_guarded_wait("w", "D", long, Duration::from_secs(5))
            .await
            .expect("D");
        assert!(guard.is_valid());
        guard.release().await.expect("D releases");
        exec.shutdown().await;
    }
}

crate::on_both! {
    async fn a_cancelled_acquire_wait_leaves_no_lease_behind(topology: &Topology) {
        let exec = topology.executor().await;
        let leases = exec.leases("it").expect("namespace");
        let ttl = Duration::from_secs(60);
        let mut cancelled = 0;
        // Cancelled at every phase: before sending, with the grant in flight, with the reply
        // on its way back.
        for i in 0..60u64 {
            let entity = format!("c{i}");
            let mut attempt = std::pin::pin!(leases.acquire_wait(&entity, "gone", ttl, ttl));
            // Polled once, then after 0 to 5 turns of the runtime, then dropped if not done.
            let mut granted = None;
            for _ in 0..=(i % 6) {
                let poll = std::future::poll_fn(|cx| std::task::Poll::Ready(attempt.as_mut().poll(cx))).await;
                if let std::task::Poll::Ready(result) = poll {
                    granted = Some(result.expect("granted"));
                    break;
                }
                tokio::task::yield_now().await;
            }
            match granted {
                Some(lease) => leases.release(&lease).await.expect("release"),
                None => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "no acquire_wait was cancelled");
        // Waiting while a lease is held, then cancelled: it stops trying.
        let held = leases.acquire("h", "holder", ttl).await.expect("holder");
        let attempt = leases.acquire_wait("h", "gone", ttl, ttl);
        assert!(tokio::time::timeout(Duration::from_millis(100), attempt).await.is_err());
        leases.release(&held).await.expect("release");
        // Every entity is free well before the 60 s a forgotten grant would hold it.
        for i in 0..60u64 {
            let entity = format!("c{i}");
            let lease = leases
                .acquire_wait(&entity, "checker", ttl, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{entity} is still held: {e}"));
            leases.release(&lease).await.expect("release");
        }
        let lease = leases
            .acquire_wait("h", "checker", ttl, Duration::from_secs(5))
            .await
            .expect("h is free");
        assert_eq!(lease.owner(), "checker");
        // Cancelled while the grant is in flight (the server holds the call back): the grant
        // arrives after the caller left, and is released.
        let keys = stateful_redis::KeyLayout::new(&stateful_redis::Namespace::new("it").expect("namespace"));
        let (lease_key, fence_key) = (keys.lease("p"), keys.fence("p"));
        assert_eq!(topology.cli_for(&lease_key, &["CLIENT", "PAUSE", "500", "WRITE"]), "OK");
        let attempt = leases.acquire_wait("p", "gone", ttl, ttl);
        assert!(tokio::time::timeout(Duration::from_millis(100), attempt).await.is_err());
        // Granted once the pause ends (the fence counter says so), then released.
        let mut seen = (String::new(), String::new());
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = (
                topology.cli_for(&fence_key, &["GET", &fence_key]),
                topology.cli_for(&lease_key, &["EXISTS", &lease_key]),
            );
            if seen == ("1".into(), "0".into()) {
                break;
            }
        }
        assert_eq!(seen, ("1".into(), "0".into()), "(fence, lease exists): granted after the cancellation and kept");
        exec.shutdown().await;
    }
}
