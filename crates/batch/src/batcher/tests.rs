//! The batcher with an in-memory sink: flushes, order, overload policies, shutdown, cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stateful_redis_core::{BatchConfig, Error, OverloadPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Batcher, PipelineSink};

/// Every pipeline sent: its shard and its operations.
type Log = Arc<Mutex<Vec<(usize, Vec<u64>)>>>;

/// Records every pipeline; replies `op * 10`; holds pipelines while the gate is shut.
#[derive(Clone)]
struct Sink {
    log: Log,
    gate: watch::Receiver<bool>,
    waits: Arc<Mutex<Vec<Duration>>>,
}

impl PipelineSink for Sink {
    type Op = u64;
    type Reply = u64;

    async fn send(&self, shard: usize, ops: Vec<u64>) -> Vec<Result<u64, Error>> {
        // Recorded before any await: this is the moment a real sink writes to the socket.
        self.log.lock().expect("log").push((shard, ops.clone()));
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        ops.into_iter().map(|op| Ok(op * 10)).collect()
    }

    fn queue_wait(&self, waited: Duration) {
        self.waits.lock().expect("waits").push(waited);
    }
}

fn sink(open: bool) -> (Sink, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(open);
    let sink = Sink {
        log: Arc::default(),
        gate: rx,
        waits: Arc::default(),
    };
    (sink, tx)
}

fn config(edit: impl FnOnce(&mut BatchConfig)) -> BatchConfig {
    let mut config = BatchConfig::default();
    edit(&mut config);
    config
}

fn batch_sizes(sink: &Sink) -> Vec<usize> {
    sink.log.lock().expect("log").iter().map(|(_, ops)| ops.len()).collect()
}

/// Lets the flusher and the submitters run until they block.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_lone_caller_waits_for_nothing() {
    let (sink, _gate) = sink(true);
    let batcher = Batcher::new(sink.clone(), 1, &config(|c| c.linger = Duration::from_millis(50)));
    let start = Instant::now();
    for i in 0..10 {
        assert_eq!(batcher.submit(0, i).await.expect("reply"), i * 10);
    }
    // On the paused clock any linger would show as elapsed time.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batch_sizes(&sink), vec![1; 10]);
}

#[tokio::test(start_paused = true)]
async fn a_crowd_gets_batches_up_to_the_maximum() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &config(|c| c.pipelines_in_flight = 1));
    let mut calls = Vec::new();
    for i in 0..300u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
    }
    settle().await;
    gate.send_replace(true);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.expect("task").expect("reply"),
            i as u64 * 10,
            "each caller its own reply"
        );
    }
    let sizes = batch_sizes(&sink);
    assert_eq!(sizes.iter().sum::<usize>(), 300);
    assert!(sizes.iter().all(|&n| n <= 128), "{sizes:?}");
    assert!(sizes.contains(&128), "no full batch: {sizes:?}");
    let stats = batcher.stats();
    assert_eq!((stats.submitted, stats.sent, stats.max_batch), (300, 300, 128));
    assert_eq!(stats.batches as usize, sizes.len());
}

#[tokio::test(start_paused = true)]
async fn an_idle_link_sends_a_crowd_as_two_pipelines_in_flight() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &config(|_| {}));
    // Forty callers queue before the flusher runs: nothing is in flight anywhere, so the
    // crowd goes out in two halves, both in flight at once (the server starts on the first
    // while the second is written).
    let mut calls = Vec::new();
    for i in 0..40u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
    }
    settle().await;
    assert_eq!(batch_sizes(&sink), vec![20, 20]);
    // Both slots busy: a late caller waits for the next free slot.
    let late = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 40).await })
    };
    settle().await;
    assert_eq!(batch_sizes(&sink), vec![20, 20]);
    gate.send_replace(true);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.expect("task").expect("reply"), i as u64 * 10);
    }
    assert_eq!(late.await.expect("task").expect("reply"), 400);
    let sent: Vec<u64> = sink
        .log
        .lock()
        .expect("log")
        .iter()
        .flat_map(|(_, ops)| ops.clone())
        .collect();
    assert_eq!(sent, (0..=40).collect::<Vec<_>>(), "sent once each, in order");
}

#[tokio::test(start_paused = true)]
async fn a_trickle_beside_a_pipeline_in_flight_waits_to_join_one_batch() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &config(|_| {}));
    let mut calls = Vec::new();
    for i in 0..10u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
    }
    settle().await;
    assert_eq!(batch_sizes(&sink), vec![10]);
    // A free slot, but only a few operations: they wait for the pipeline in flight to
    // come back rather than each taking a round trip of its own.
    for i in 10..13u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
        settle().await;
    }
    assert_eq!(batch_sizes(&sink), vec![10]);
    gate.send_replace(true);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.expect("task").expect("reply"), i as u64 * 10);
    }
    assert_eq!(batch_sizes(&sink), vec![10, 3]);
}

#[tokio::test(start_paused = true)]
async fn linger_fills_batches_on_a_busy_shard() {
    let (sink, gate) = sink(false);
    let linger = Duration::from_millis(50);
    let batcher = Batcher::new(
        sink.clone(),
        1,
        &config(|c| {
            c.pipelines_in_flight = 1;
            c.linger = linger;
        }),
    );
    // Make the shard busy: one pipeline in flight, four operations behind it.
    let mut calls = Vec::new();
    for i in 0..5u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
        if i == 0 {
            settle().await;
        }
    }
    settle().await;
    gate.send_replace(true);
    for call in calls {
        call.await.expect("task").expect("reply");
    }
    assert_eq!(batch_sizes(&sink), vec![1, 4]);
    // The last batch held 4: the next operations linger for company.
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..3u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in calls {
        call.await.expect("task").expect("reply");
    }
    assert_eq!(batch_sizes(&sink), vec![1, 4, 3]);
    assert!(
        start.elapsed() >= linger,
        "sent before the linger: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_entity_is_kept() {
    let (sink, _gate) = sink(true);
    let batcher = Batcher::new(sink.clone(), 3, &config(|c| c.max_batch = 7));
    let mut tasks = Vec::new();
    for entity in 0..12u64 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            // Each entity's operations are issued in order without waiting for replies.
            let calls: Vec<_> = (0..200u64)
                .map(|seq| batcher.submit(entity, entity * 1000 + seq))
                .collect();
            for (seq, reply) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
                assert_eq!(reply.expect("reply"), (entity * 1000 + seq as u64) * 10);
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let log = sink.log.lock().expect("log");
    for entity in 0..12u64 {
        let seen: Vec<u64> = log
            .iter()
            .flat_map(|(_, ops)| ops.iter().copied())
            .filter(|op| op / 1000 == entity)
            .collect();
        assert_eq!(
            seen,
            (0..200).map(|seq| entity * 1000 + seq).collect::<Vec<_>>(),
            "entity {entity}"
        );
        let shards: std::collections::HashSet<usize> = log
            .iter()
            .filter(|(_, ops)| ops.iter().any(|op| op / 1000 == entity))
            .map(|(shard, _)| *shard)
            .collect();
        assert_eq!(shards.len(), 1, "entity {entity} spread over shards");
    }
}

/// One operation in flight (gate shut), then `queued` more behind it.
async fn fill(batcher: &Batcher<Sink>, queued: u64) -> Vec<tokio::task::JoinHandle<Result<u64, Error>>> {
    let mut calls = Vec::new();
    for i in 0..=queued {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
        settle().await;
    }
    calls
}

fn small(policy: OverloadPolicy) -> BatchConfig {
    config(|c| {
        c.pipelines_in_flight = 1;
        c.queue_capacity = 10;
        c.overload = policy;
        c.wait_deadline = Duration::from_millis(100);
    })
}

#[tokio::test(start_paused = true)]
async fn reject_policy_refuses_at_once_and_counts() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &small(OverloadPolicy::Reject));
    let accepted = fill(&batcher, 10).await;
    for i in 0..5 {
        match batcher.submit(0, 100 + i).await {
            Err(Error::Overloaded { capacity: 10 }) => {}
            other => panic!("expected overloaded, got {other:?}"),
        }
    }
    assert_eq!(batcher.stats().rejected, 5);
    assert_eq!(batcher.stats().queued, 10);
    gate.send_replace(true);
    for call in accepted {
        call.await.expect("task").expect("every accepted operation is applied");
    }
    assert_eq!(batch_sizes(&sink).iter().sum::<usize>(), 11);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_policy_tells_the_dropped_caller() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &small(OverloadPolicy::DropOldest));
    let mut calls = fill(&batcher, 10).await;
    for i in 0..3 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, 100 + i).await }));
        settle().await;
    }
    gate.send_replace(true);
    let results: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    // The one in flight survives; the three oldest queued (1, 2, 3) were dropped.
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (1..=3, Err(Error::Dropped { capacity: 10 })) => {}
            (1..=3, other) => panic!("operation {i} should have been dropped: {other:?}"),
            (_, Ok(_)) => {}
            (_, other) => panic!("operation {i} failed: {other:?}"),
        }
    }
    assert_eq!(batcher.stats().dropped, 3);
    let sent: Vec<u64> = sink
        .log
        .lock()
        .expect("log")
        .iter()
        .flat_map(|(_, ops)| ops.clone())
        .collect();
    assert!(
        !sent.iter().any(|op| (1..=3).contains(op)),
        "a dropped operation was sent: {sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_policy_waits_for_room_until_its_deadline() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &small(OverloadPolicy::Wait));
    let accepted = fill(&batcher, 10).await;
    // Nothing frees up: the deadline passes.
    let start = Instant::now();
    assert!(matches!(batcher.submit(0, 99).await, Err(Error::Overloaded { .. })));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(batcher.stats().rejected, 1);
    // Room frees up within the deadline: accepted.
    let waiting = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 77).await })
    };
    settle().await;
    gate.send_replace(true);
    assert_eq!(waiting.await.expect("task").expect("accepted after waiting"), 770);
    for call in accepted {
        call.await.expect("task").expect("reply");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_everything_queued_first() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 2, &config(|c| c.pipelines_in_flight = 1));
    let mut calls = Vec::new();
    for i in 0..50u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(i, i).await }));
    }
    settle().await;
    let shutdown = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.shutdown().await })
    };
    settle().await;
    assert!(!shutdown.is_finished(), "shutdown returned with work queued");
    assert!(matches!(batcher.submit(0, 1).await, Err(Error::Shutdown)));
    gate.send_replace(true);
    shutdown.await.expect("shutdown");
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.expect("task").expect("drained"), i as u64 * 10);
    }
    let stats = batcher.stats();
    assert_eq!((stats.sent, stats.queued, stats.in_flight), (50, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_caller_is_withdrawn_and_harms_no_one() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &config(|c| c.pipelines_in_flight = 1));
    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 1).await })
    };
    settle().await;
    let quitter = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 2).await })
    };
    let last = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 3).await })
    };
    settle().await;
    quitter.abort();
    settle().await;
    gate.send_replace(true);
    assert_eq!(first.await.expect("task").expect("reply"), 10);
    assert_eq!(last.await.expect("task").expect("reply"), 30);
    assert_eq!(batcher.stats().cancelled, 1);
    let sent: Vec<u64> = sink
        .log
        .lock()
        .expect("log")
        .iter()
        .flat_map(|(_, ops)| ops.clone())
        .collect();
    assert_eq!(sent, vec![1, 3]);
    // A caller that gives up after its pipeline left does not disturb the next ones.
    gate.send_replace(false);
    let gone = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 4).await })
    };
    settle().await;
    gone.abort();
    let next = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 5).await })
    };
    settle().await;
    gate.send_replace(true);
    assert_eq!(next.await.expect("task").expect("reply"), 50);
}

#[tokio::test(start_paused = true)]
async fn a_sample_of_operations_reports_its_queue_wait() {
    let (sink, gate) = sink(false);
    let batcher = Batcher::new(sink.clone(), 1, &config(|c| c.pipelines_in_flight = 1));
    let first = {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(0, 0).await })
    };
    settle().await;
    // Queued behind a pipeline the server holds for a second.
    let mut calls = Vec::new();
    for i in 1..=640u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
    }
    settle().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    gate.send(true).expect("gate");
    assert_eq!(first.await.expect("task").expect("reply"), 0);
    for call in calls {
        call.await.expect("task").expect("reply");
    }
    let waits = sink.waits.lock().expect("waits").clone();
    // One in 64 of the 641 submissions (the count runs per thread, across tests).
    assert!((10..=11).contains(&waits.len()), "{} waits reported", waits.len());
    // Those queued behind the held pipeline report the second they waited.
    assert!(
        waits.iter().filter(|w| **w >= Duration::from_secs(1)).count() >= 9,
        "{waits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reconfigure_applies_to_the_next_batches_and_refuses_bad_settings() {
    let (sink, gate) = sink(true);
    let batcher = Batcher::new(sink.clone(), 1, &config(|c| c.pipelines_in_flight = 1));
    let bad = config(|c| c.max_batch = 0);
    assert!(matches!(batcher.reconfigure(&bad), Err(Error::Config(e)) if e.field == "batch.max_batch"));
    assert_eq!(batcher.config().max_batch, 128, "the old settings stay");
    batcher
        .reconfigure(&config(|c| {
            c.max_batch = 4;
            c.pipelines_in_flight = 1;
        }))
        .expect("valid");
    assert_eq!(batcher.config().max_batch, 4);
    gate.send(false).expect("gate");
    let mut calls = Vec::new();
    for i in 0..40u64 {
        let batcher = batcher.clone();
        calls.push(tokio::spawn(async move { batcher.submit(0, i).await }));
    }
    settle().await;
    gate.send(true).expect("gate");
    for call in calls {
        call.await.expect("task").expect("reply");
    }
    let sizes = batch_sizes(&sink);
    assert_eq!(sizes.iter().sum::<usize>(), 40);
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
}
