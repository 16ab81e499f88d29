//! The batcher: per-shard bounded queues, flusher tasks and overload policies.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use stateful_redis_core::{BatchConfig, Error, OverloadPolicy};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where batches go: sends a batch of operations to one shard as one pipeline.
pub trait PipelineSink: Send + Sync + 'static {
    /// One operation.
    type Op: Send + 'static;
    /// One operation's reply.
    type Reply: Send + 'static;
    /// Sends `ops` to shard `shard` and returns one result per operation, in order.
    /// A failure that loses the whole pipeline is an error for each operation.
    fn send(&self, shard: usize, ops: Vec<Self::Op>) -> impl Future<Output = Vec<Result<Self::Reply, Error>>> + Send;

    /// Told how long a sampled operation (one in [`QUEUE_WAIT_SAMPLE`] per submitting
    /// thread) waited in its queue before a pipeline took it. Does nothing by default.
    fn queue_wait(&self, waited: Duration) {
        let _ = waited;
    }
}

/// One operation in this many has its queue wait measured (a clock read per operation
/// would be measurable on the hot path).
pub const QUEUE_WAIT_SAMPLE: u32 = 64;

thread_local! {
    static SAMPLE_TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this submission is one of the sampled ones.
fn sampled() -> bool {
    SAMPLE_TICK.with(|tick| {
        let n = tick.get().wrapping_add(1);
        tick.set(n);
        n % QUEUE_WAIT_SAMPLE == 1
    })
}

/// Counts of the batcher; cumulative except the gauges noted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Operations accepted into a queue.
    pub submitted: u64,
    /// Operations sent in pipelines.
    pub sent: u64,
    /// Pipelines sent.
    pub batches: u64,
    /// Largest pipeline sent.
    pub max_batch: u64,
    /// Operations refused because a queue was full (reject policy, or wait deadline passed).
    pub rejected: u64,
    /// Queued operations dropped to make room (drop-oldest policy).
    pub dropped: u64,
    /// Queued operations skipped because their caller stopped waiting before they were sent.
    pub cancelled: u64,
    /// Operations queued now (gauge).
    pub queued: u64,
    /// Pipelines in flight now (gauge).
    pub in_flight: u64,
}

struct Entry<O, R> {
    op: O,
    reply: oneshot::Sender<Result<R, Error>>,
    /// When it was queued; read only with a linger or when sampled, so taken only then (a
    /// clock read per operation is measurable).
    at: Option<Instant>,
    /// Its queue wait is reported to the sink.
    sampled: bool,
}

/// An entry of sink `S`'s operations.
type SinkEntry<S> = Entry<<S as PipelineSink>::Op, <S as PipelineSink>::Reply>;

struct Shard<O, R> {
    queue: Mutex<Queue<O, R>>,
    /// Wakes the flusher: work arrived, or shutdown.
    work: Notify,
    /// Wakes submitters waiting for room.
    room: Notify,
    /// Pipelines in flight now.
    in_flight: AtomicU64,
}

/// A shard's queue; once sealed (shutdown, after its flusher ended) it takes nothing more.
struct Queue<O, R> {
    entries: VecDeque<Entry<O, R>>,
    sealed: bool,
}

impl<O, R> std::ops::Deref for Queue<O, R> {
    type Target = VecDeque<Entry<O, R>>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl<O, R> std::ops::DerefMut for Queue<O, R> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

impl<O, R> Shard<O, R> {
    fn queue(&self) -> MutexGuard<'_, Queue<O, R>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    sent: AtomicU64,
    batches: AtomicU64,
    max_batch: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    cancelled: AtomicU64,
}

/// The batch settings, changeable while running ([`Batcher::reconfigure`]): reading them
/// is a few relaxed loads, no lock.
#[derive(Debug)]
struct LiveConfig {
    max_batch: AtomicUsize,
    linger_ns: AtomicU64,
    queue_capacity: AtomicUsize,
    pipelines_in_flight: AtomicUsize,
    overload: AtomicU8,
    wait_deadline_ns: AtomicU64,
}

impl LiveConfig {
    fn new(config: &BatchConfig) -> Self {
        let live = Self {
            max_batch: AtomicUsize::new(0),
            linger_ns: AtomicU64::new(0),
            queue_capacity: AtomicUsize::new(0),
            pipelines_in_flight: AtomicUsize::new(0),
            overload: AtomicU8::new(0),
            wait_deadline_ns: AtomicU64::new(0),
        };
        live.store(config);
        live
    }

    fn store(&self, config: &BatchConfig) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_batch.store(config.max_batch, Ordering::Relaxed);
        self.linger_ns.store(nanos(config.linger), Ordering::Relaxed);
        self.queue_capacity.store(config.queue_capacity, Ordering::Relaxed);
        self.pipelines_in_flight
            .store(config.pipelines_in_flight, Ordering::Relaxed);
        let overload = match config.overload {
            OverloadPolicy::Reject => 1,
            OverloadPolicy::DropOldest => 2,
            _ => 0,
        };
        self.overload.store(overload, Ordering::Relaxed);
        self.wait_deadline_ns
            .store(nanos(config.wait_deadline), Ordering::Relaxed);
    }

    fn linger(&self) -> Duration {
        Duration::from_nanos(self.linger_ns.load(Ordering::Relaxed))
    }

    fn queue_capacity(&self) -> usize {
        self.queue_capacity.load(Ordering::Relaxed)
    }

    fn overload(&self) -> OverloadPolicy {
        match self.overload.load(Ordering::Relaxed) {
            1 => OverloadPolicy::Reject,
            2 => OverloadPolicy::DropOldest,
            _ => OverloadPolicy::Wait,
        }
    }

    fn get(&self) -> BatchConfig {
        let mut config = BatchConfig::default();
        config.max_batch = self.max_batch.load(Ordering::Relaxed);
        config.linger = self.linger();
        config.queue_capacity = self.queue_capacity.load(Ordering::Relaxed);
        config.pipelines_in_flight = self.pipelines_in_flight.load(Ordering::Relaxed);
        config.overload = self.overload();
        config.wait_deadline = Duration::from_nanos(self.wait_deadline_ns.load(Ordering::Relaxed));
        config
    }
}

struct Shared<S: PipelineSink> {
    sink: S,
    shards: Box<[Shard<S::Op, S::Reply>]>,
    config: LiveConfig,
    counters: Counters,
    closed: AtomicBool,
}

/// Coalesces operations from many callers into pipelines; see the crate docs.
/// Cheap to clone; clones share the queues.
pub struct Batcher<S: PipelineSink> {
    shared: Arc<Shared<S>>,
    flushers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Held for a whole shutdown: a second caller waits for the first to finish draining.
    shutting_down: Arc<tokio::sync::Mutex<()>>,
}

impl<S: PipelineSink> Clone for Batcher<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            flushers: Arc::clone(&self.flushers),
            shutting_down: Arc::clone(&self.shutting_down),
        }
    }
}

impl<S: PipelineSink> std::fmt::Debug for Batcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("shards", &self.shared.shards.len())
            .field("config", &self.shared.config.get())
            .finish_non_exhaustive()
    }
}

impl<S: PipelineSink> Batcher<S> {
    /// A batcher over `shards` queues (at least one) sending to `sink`. Starts one flusher
    /// task per shard: needs a Tokio runtime.
    pub fn new(sink: S, shards: usize, config: &BatchConfig) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Shard {
                queue: Mutex::new(Queue {
                    entries: VecDeque::with_capacity(config.max_batch),
                    sealed: false,
                }),
                work: Notify::new(),
                room: Notify::new(),
                in_flight: AtomicU64::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            sink,
            shards,
            config: LiveConfig::new(config),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
        });
        let flushers = (0..shared.shards.len())
            .map(|i| tokio::spawn(flusher(Arc::clone(&shared), i)))
            .collect();
        Self {
            shared,
            flushers: Arc::new(Mutex::new(flushers)),
            shutting_down: Arc::default(),
        }
    }

    /// The batch settings in force now.
    pub fn config(&self) -> BatchConfig {
        self.shared.config.get()
    }

    /// Changes the batch settings while running: the next batch each flusher takes, and
    /// the next operation queued, use them. Operations queued beyond a smaller
    /// `queue_capacity` stay queued (new ones wait, are refused or drop the oldest as the
    /// policy says); a smaller `pipelines_in_flight` lets the pipelines in flight finish.
    /// An invalid configuration is refused and the old one stays.
    pub fn reconfigure(&self, config: &BatchConfig) -> Result<(), Error> {
        config.validate()?;
        self.shared.config.store(config);
        // Let flushers waiting for a slot or a fuller batch look again.
        for shard in self.shared.shards.iter() {
            shard.work.notify_one();
            shard.room.notify_waiters();
        }
        Ok(())
    }

    /// Queues `op` on the shard of `hint` and waits for its reply.
    ///
    /// Dropping the returned future before the operation is sent withdraws it; after, the
    /// operation still runs and its reply is discarded. Either way no other caller's
    /// reply is affected.
    pub async fn submit(&self, hint: u64, op: S::Op) -> Result<S::Reply, Error> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let shard = &shared.shards[(hint % shared.shards.len() as u64) as usize];
        let (tx, rx) = oneshot::channel();
        let sampled = sampled();
        let entry = Entry {
            op,
            reply: tx,
            at: (sampled || !shared.config.linger().is_zero()).then(Instant::now),
            sampled,
        };
        // A queue with room takes it at once; the wait for room (queue full, wait policy)
        // is boxed: kept out of this future, which every caller's future contains, its
        // size would be copied on every call.
        if let Some(entry) = self.enqueue(shard, entry)? {
            Box::pin(self.wait_for_room(shard, entry)).await?;
        }
        shared.counters.submitted.fetch_add(1, Ordering::Relaxed);
        shard.work.notify_one();
        // The flusher always answers; a closed channel means the runtime is going away.
        rx.await.unwrap_or(Err(Error::Shutdown))
    }

    /// Queues `entry` if its queue has room, or applies the overload policy: refused
    /// (`Overloaded`), queued in place of the oldest (`DropOldest`), or handed back to
    /// wait for room (`Wait`).
    fn enqueue(
        &self,
        shard: &Shard<S::Op, S::Reply>,
        entry: Entry<S::Op, S::Reply>,
    ) -> Result<Option<SinkEntry<S>>, Error> {
        // Only the capacity on the way in: the rest is read when the queue is full.
        let config = &self.shared.config;
        let capacity = config.queue_capacity();
        let counters = &self.shared.counters;
        let mut queue = shard.queue();
        let Some(entry) = push_if_room(&mut queue, entry, capacity)? else {
            return Ok(None);
        };
        match config.overload() {
            OverloadPolicy::Reject => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Error::Overloaded { capacity })
            }
            OverloadPolicy::DropOldest => {
                let oldest = queue.pop_front();
                queue.push_back(entry);
                drop(queue);
                if let Some(oldest) = oldest {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    let _ = oldest.reply.send(Err(Error::Dropped { capacity }));
                }
                Ok(None)
            }
            // Wait (the policy enum is non-exhaustive: anything new waits, the gentlest).
            _ => Ok(Some(entry)),
        }
    }

    /// Waits until `entry`'s queue has room and queues it, or refuses it (`Overloaded`)
    /// once the wait deadline passes. Never holds the queue's lock across an await.
    async fn wait_for_room(
        &self,
        shard: &Shard<S::Op, S::Reply>,
        mut entry: Entry<S::Op, S::Reply>,
    ) -> Result<(), Error> {
        let config = &self.shared.config;
        let counters = &self.shared.counters;
        let deadline = Instant::now() + Duration::from_nanos(config.wait_deadline_ns.load(Ordering::Relaxed));
        loop {
            let room = shard.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Read again each time: `reconfigure` may have raised it (and woke us).
            let capacity = config.queue_capacity();
            let Some(back) = push_if_room(&mut shard.queue(), entry, capacity)? else {
                return Ok(());
            };
            entry = back;
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Overloaded {
                    capacity: config.queue_capacity(),
                });
            }
        }
    }

    /// A snapshot of the counts.
    pub fn stats(&self) -> BatchStats {
        let c = &self.shared.counters;
        let queued = self.shared.shards.iter().map(|s| s.queue().len() as u64).sum();
        let in_flight = self
            .shared
            .shards
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum();
        BatchStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            queued,
            in_flight,
        }
    }

    /// Refuses new operations and lets the flushers end once what is queued is sent,
    /// without waiting: for owners dropped without [`shutdown`](Self::shutdown), so that
    /// the flusher tasks (and the connections they hold) do not outlive them.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for shard in self.shared.shards.iter() {
            shard.work.notify_one();
            shard.room.notify_waiters();
        }
    }

    /// Refuses new operations ([`Error::Shutdown`]), sends everything already queued,
    /// and returns once every pipeline has been answered. Idempotent.
    pub async fn shutdown(&self) {
        let _one_at_a_time = self.shutting_down.lock().await;
        self.shared.closed.store(true, Ordering::Release);
        for shard in self.shared.shards.iter() {
            shard.work.notify_one();
            shard.room.notify_waiters();
        }
        // A flusher ends once its queue is empty and its last pipeline answered.
        let flushers = std::mem::take(&mut *self.flushers.lock().unwrap_or_else(|p| p.into_inner()));
        for flusher in flushers {
            let _ = flusher.await;
        }
        // A submit that raced the shutdown may have queued after its flusher ended: seal
        // every queue and answer what is left, so no caller waits forever.
        for shard in self.shared.shards.iter() {
            let leftovers: Vec<_> = {
                let mut queue = shard.queue();
                queue.sealed = true;
                queue.drain(..).collect()
            };
            for entry in leftovers {
                let _ = entry.reply.send(Err(Error::Shutdown));
            }
        }
    }
}

/// A crowd at least this large, queued while no pipeline is in flight on any link, goes out
/// as two pipelines instead of one.
const SPLIT_AT: usize = 16;

/// Sends what is queued (up to `max_batch`) whenever fewer than `pipelines_in_flight`
/// pipelines are in flight, and drives those pipelines itself: being one task, it pushes
/// new pipelines in queue order and polls them in that order, and each takes its link's
/// (FIFO) locks on its first poll, so pipelines are written in queue order.
///
/// Three rules keep batches large without making anyone wait for a timer:
/// - after a pipeline comes back, the flusher yields once, so that the callers it just
///   answered queue their next operations and go out together;
/// - beside a pipeline in flight, a further one goes out only when at least half as many
///   operations as the last batch are waiting; a trickle waits for the next round trip;
/// - with nothing in flight on any link, a crowd of at least [`SPLIT_AT`] goes out in two
///   halves, so that the server works on the first while the second is written and the
///   first's callers make their next operations (two batches then alternate).
async fn flusher<S: PipelineSink>(shared: Arc<Shared<S>>, index: usize) {
    let shard = &shared.shards[index];
    let mut in_flight = FuturesUnordered::new();
    let mut last_batch = 0usize;
    let mut settle = false;
    loop {
        // Read each round: `Batcher::reconfigure` may have changed them.
        let config = &shared.config.get();
        let slots = config.pipelines_in_flight.max(1);
        if settle {
            // Let the callers just woken by a finished batch queue their next operations
            // first: they join one batch instead of trickling out one syscall each.
            YieldOnce(false).await;
            settle = false;
        }
        // Fill the free slots. While all are busy, operations pile up: that is the batching.
        let mut linger_until = None;
        let mut held = false;
        while in_flight.len() < slots {
            // Beside a pipeline in flight, only a crowd goes out at once; a trickle waits for
            // the next round trip and joins one larger batch.
            let queued = shard.queue().len();
            if !in_flight.is_empty() && queued < (last_batch / 2).max(1) {
                held = true;
                break;
            }
            if !config.linger.is_zero() && last_batch > 1 {
                // A busy shard may wait a little for a fuller batch; a lone caller never does.
                let queue = shard.queue();
                if let Some(at) = queue.front().and_then(|oldest| oldest.at)
                    && queue.len() < config.max_batch
                    && Instant::now() < at + config.linger
                {
                    linger_until = Some(at + config.linger);
                    break;
                }
            }
            let idle = || shared.shards.iter().all(|s| s.in_flight.load(Ordering::Relaxed) == 0);
            let take = if in_flight.is_empty() && slots > 1 && queued >= SPLIT_AT && idle() {
                queued.div_ceil(2).min(config.max_batch)
            } else {
                config.max_batch
            };
            let (ops, replies) = take_batch(shard, take, &shared.counters, |w| shared.sink.queue_wait(w));
            if ops.is_empty() {
                break;
            }
            shard.room.notify_waiters();
            last_batch = ops.len();
            let c = &shared.counters;
            c.sent.fetch_add(ops.len() as u64, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
            c.max_batch.fetch_max(ops.len() as u64, Ordering::Relaxed);
            shard.in_flight.fetch_add(1, Ordering::Relaxed);
            in_flight.push(send(&shared, index, ops, replies));
        }
        let work = shard.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        if in_flight.is_empty() && shard.queue().is_empty() && shared.closed.load(Ordering::Acquire) {
            return;
        }
        let can_take = in_flight.len() < slots && linger_until.is_none() && !held;
        if can_take && !shard.queue().is_empty() {
            continue;
        }
        let linger = async {
            match linger_until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {
                shard.in_flight.fetch_sub(1, Ordering::Relaxed);
                settle = true;
            }
            _ = &mut work, if in_flight.len() < slots => {}
            _ = linger => {}
        }
    }
}

/// Goes to the back of the runtime's queue once: the tasks woken before it run first.
///
/// Unlike `tokio::task::yield_now`, which on the current-thread runtime also polls the
/// I/O driver before it resumes (one more `epoll_wait` per pipeline), this is a plain
/// self-wake, which both runtimes queue behind the tasks already woken.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Queues `entry` if the queue has room (`None`), or hands it back (`Some`); a sealed
/// queue refuses it.
fn push_if_room<O, R>(
    queue: &mut Queue<O, R>,
    entry: Entry<O, R>,
    capacity: usize,
) -> Result<Option<Entry<O, R>>, Error> {
    if queue.sealed {
        return Err(Error::Shutdown);
    }
    if queue.len() < capacity {
        queue.push_back(entry);
        return Ok(None);
    }
    Ok(Some(entry))
}

type Batch<O, R> = (Vec<O>, Vec<oneshot::Sender<Result<R, Error>>>);

fn take_batch<O, R>(
    shard: &Shard<O, R>,
    max_batch: usize,
    counters: &Counters,
    queue_wait: impl Fn(Duration),
) -> Batch<O, R> {
    let mut now = None;
    let mut waits: Vec<Duration> = Vec::new();
    let mut queue = shard.queue();
    let n = queue.len().min(max_batch);
    let mut ops = Vec::with_capacity(n);
    let mut replies = Vec::with_capacity(n);
    while ops.len() < max_batch {
        let Some(entry) = queue.pop_front() else { break };
        // Its caller gave up before it was sent: withdraw it.
        if entry.reply.is_closed() {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if entry.sampled
            && let Some(at) = entry.at
        {
            let now = *now.get_or_insert_with(Instant::now);
            waits.push(now.saturating_duration_since(at));
        }
        ops.push(entry.op);
        replies.push(entry.reply);
    }
    drop(queue);
    // Reported outside the queue's lock: the sink records metrics.
    for waited in waits {
        queue_wait(waited);
    }
    (ops, replies)
}

async fn send<S: PipelineSink>(
    shared: &Shared<S>,
    index: usize,
    ops: Vec<S::Op>,
    replies: Vec<oneshot::Sender<Result<S::Reply, Error>>>,
) {
    let expected = replies.len();
    let results = shared.sink.send(index, ops).await;
    let got = results.len();
    let mut results = results.into_iter();
    for reply in replies {
        let result = results.next().unwrap_or_else(|| {
            Err(Error::UnexpectedReply {
                what: "pipeline",
                detail: format!("{got} replies to {expected} operations"),
            })
        });
        // A caller that stopped waiting just does not get it.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests;
