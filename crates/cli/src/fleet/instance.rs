//! One driver instance: its own executor and connections on its own thread and runtime,
//! owning a share of the devices through guarded leases, taking over the devices of
//! instances that stop heartbeating, and writing every change under its fence.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stateful_redis::{
    Change, Error, ExecutorConfig, Fence, LeaseGuard, LeaseLoss, LeaseStatus, Leases, Presence, SerdeCodec,
    StateHandle, StatefulExecutor, Version,
};

use super::device::{Device, Ledger, OFFLINE, ONLINE, Rng, device_id, message_id, next_status};

/// What every instance shares: the run's settings and its ledger.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) namespace: String,
    pub(crate) members: String,
    pub(crate) devices: u32,
    pub(crate) names: Vec<String>,
    pub(crate) ttl: Duration,
    /// The presence window: a device is active while its last heartbeat is this recent.
    pub(crate) window: Duration,
    pub(crate) dup_rate: f64,
    pub(crate) tasks: u32,
    pub(crate) ledger: Ledger,
}

impl Fleet {
    /// How often owners heartbeat their devices' presence.
    pub(crate) fn beat(&self) -> Duration {
        self.window / 4
    }
}

/// The operations an instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A message applied (`apply_once`, first delivery).
    Message,
    /// A redelivered message (`apply_once`, answered as a replay).
    Redelivery,
    /// A telemetry write (fenced `cas`).
    Telemetry,
    /// A state-machine step (fenced `transition`).
    Transition,
    /// A lease acquisition attempt.
    Acquire,
    /// A presence heartbeat call.
    Heartbeat,
}

impl Op {
    pub(crate) const ALL: [Op; 6] = [
        Op::Message,
        Op::Redelivery,
        Op::Telemetry,
        Op::Transition,
        Op::Acquire,
        Op::Heartbeat,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Message => "message",
            Op::Redelivery => "redelivery",
            Op::Telemetry => "telemetry",
            Op::Transition => "transition",
            Op::Acquire => "acquire",
            Op::Heartbeat => "heartbeat",
        }
    }
}

/// An instance's counters, read by the dashboard and the report.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Leases held now.
    pub(crate) held: AtomicU64,
    /// Leases acquired.
    pub(crate) acquired: AtomicU64,
    /// Leases lost (taken, expired, or found fenced).
    pub(crate) lost: AtomicU64,
    /// Devices taken over from another instance.
    pub(crate) taken_over: AtomicU64,
    /// Operations by [`Op`].
    pub(crate) ops: [AtomicU64; 6],
    /// Writes refused as fenced (a lease lost while the write was on its way).
    pub(crate) fenced: AtomicU64,
    /// Late writes made after a pause, as a holder that may be stale, and how many were
    /// refused (fenced, or a replay of a message the new owner applied). The others went
    /// through under a lease the watchdog had renewed before it ran out.
    pub(crate) late_writes: AtomicU64,
    pub(crate) late_refused: AtomicU64,
    /// Conflicts and refused transitions an owner met: a change it did not make, the mark
    /// of another writer.
    pub(crate) intrusions: AtomicU64,
    /// Redeliveries that were applied again instead of answered as replays.
    pub(crate) duplicate_applies: AtomicU64,
    /// Failed operations by error kind.
    pub(crate) errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Devices taken over from another instance, and when the new owner's first fenced
    /// write landed.
    pub(crate) first_writes: Mutex<Vec<(u32, Instant)>>,
}

impl Stats {
    fn count(&self, op: Op) {
        self.ops[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, e: &Error) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(e.kind().as_str()).or_default() += 1;
    }

    pub(crate) fn op(&self, op: Op) -> u64 {
        self.ops[op as usize].load(Ordering::Relaxed)
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Life {
    Starting,
    Running,
    Paused,
    Killed,
    Stopped,
}

impl Life {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Life::Starting => "starting",
            Life::Running => "running",
            Life::Paused => "paused",
            Life::Killed => "killed",
            Life::Stopped => "stopped",
        }
    }
}

/// The run's phases, as the instances see them.
const RUN: u8 = 0;
/// No more device traffic: only takeovers, renewals and heartbeats, while the fleet settles.
const SETTLE: u8 = 1;
/// Release everything and stop.
const DONE: u8 = 2;
/// Hold still for the verdict: no takeover starts or finishes (waits are given up), leases
/// are renewed and heartbeats go on.
const FREEZE: u8 = 3;

/// A lease the killed instance held when it died, for the late writes of a "zombie".
#[derive(Debug, Clone)]
pub(crate) struct Zombie {
    pub(crate) device: u32,
    /// The end of its lease's validity, on this process's clock.
    pub(crate) expires: Instant,
    pub(crate) fence: Fence,
    pub(crate) version: Version,
    pub(crate) record: Device,
}

/// The coordinator's handle on one instance.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) index: usize,
    pub(crate) name: String,
    phase: AtomicU8,
    killed: AtomicBool,
    pause: Mutex<Option<Duration>>,
    /// Bumped when a pause ends: tasks then make one late write per device they believed held.
    resumed: AtomicU64,
    /// Final heartbeats asked for by the coordinator, and the workers' answers.
    beats_asked: AtomicU64,
    beats_done: AtomicU64,
    life: Mutex<Life>,
    pub(crate) stats: Stats,
    pub(crate) exec: Mutex<Option<StatefulExecutor>>,
    pub(crate) zombies: Mutex<Vec<Zombie>>,
}

impl Control {
    pub(crate) fn new(index: usize, name: String) -> Self {
        Self {
            index,
            name,
            phase: AtomicU8::new(RUN),
            killed: AtomicBool::new(false),
            pause: Mutex::new(None),
            resumed: AtomicU64::new(0),
            beats_asked: AtomicU64::new(0),
            beats_done: AtomicU64::new(0),
            life: Mutex::new(Life::Starting),
            stats: Stats::default(),
            exec: Mutex::new(None),
            zombies: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn life(&self) -> Life {
        *self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_life(&self, life: Life) {
        *self.life.lock().unwrap_or_else(|p| p.into_inner()) = life;
    }

    /// The instance's executor while it lives.
    pub(crate) fn executor(&self) -> Option<StatefulExecutor> {
        self.exec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Crash: stop at once, releasing nothing; the leases expire on the server.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Freeze the whole instance (its runtime thread, watchdogs included) for `d`.
    pub(crate) fn pause(&self, d: Duration) {
        *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    /// Asks every worker for one heartbeat of its active devices now; true once all of
    /// them did (call again to wait).
    pub(crate) fn beat_now(&self, tasks: u32, first: bool) -> bool {
        if first {
            self.beats_asked.fetch_add(1, Ordering::SeqCst);
        }
        let asked = self.beats_asked.load(Ordering::SeqCst);
        self.beats_done.load(Ordering::SeqCst) >= asked * u64::from(tasks)
    }

    pub(crate) fn settle(&self) {
        self.phase.store(SETTLE, Ordering::SeqCst);
    }

    pub(crate) fn freeze(&self) {
        self.phase.store(FREEZE, Ordering::SeqCst);
    }

    pub(crate) fn finish(&self) {
        self.phase.store(DONE, Ordering::SeqCst);
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }
}

/// Starts the instance on a thread of its own, with its own runtime and executor.
pub(crate) fn spawn(
    fleet: Arc<Fleet>,
    control: Arc<Control>,
    config: ExecutorConfig,
) -> std::io::Result<std::thread::JoinHandle<Result<(), String>>> {
    std::thread::Builder::new().name(control.name.clone()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{}: cannot start its runtime: {e}", control.name))?;
        let result = runtime.block_on(run(fleet, Arc::clone(&control), config));
        // Dropping the runtime drops the killed instance's lease watchdogs unrun: its
        // leases are neither renewed nor released, as after a crash.
        drop(runtime);
        control.exec.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !control.is_killed() {
            control.set_life(Life::Stopped);
        }
        result.map_err(|e| format!("{}: {e:#}", control.name))
    })
}

async fn run(fleet: Arc<Fleet>, control: Arc<Control>, config: ExecutorConfig) -> anyhow::Result<()> {
    let exec = StatefulExecutor::builder().config(config).build().await?;
    *control.exec.lock().unwrap_or_else(|p| p.into_inner()) = Some(exec.clone());
    let devices = exec.state::<Device>(&fleet.namespace)?.with_ttl(super::KEEP_STATE);
    // The handle's own leases and presence: one namespace for the state, its leases and fences.
    let leases = devices.leases();
    let presence = devices.presence().with_window(fleet.window);
    let members = exec.state::<u64>(&fleet.members)?.with_ttl(super::KEEP_STATE);
    let dead = Arc::new(Mutex::new(vec![false; fleet.names.len()]));
    control.set_life(Life::Running);
    let membership = tokio::spawn(membership(
        Arc::clone(&fleet),
        Arc::clone(&control),
        members,
        Arc::clone(&dead),
    ));
    let pauser = tokio::spawn(pauser(Arc::clone(&control)));
    let mut workers = Vec::new();
    for task in 0..fleet.tasks {
        let worker = Worker {
            fleet: Arc::clone(&fleet),
            control: Arc::clone(&control),
            devices: devices.clone(),
            leases: leases.clone(),
            presence: presence.clone(),
            dead: Arc::clone(&dead),
            rng: Rng::new((control.index as u64) << 32 | u64::from(task)),
            slots: (0..fleet.devices)
                .filter(|i| i % fleet.tasks == task)
                .map(|i| Slot::new(i, (i as usize) % fleet.names.len()))
                .collect(),
            resumed: 0,
            beats: 0,
        };
        workers.push(tokio::spawn(worker.run()));
    }
    for worker in workers {
        worker.await?;
    }
    membership.abort();
    pauser.abort();
    if !control.is_killed() {
        exec.shutdown().await;
    }
    Ok(())
}

/// Heartbeats the instance's own membership record (a version bump every ttl/8) and marks
/// another instance dead while its record has not moved for half a lease ttl, on this clock.
/// Early is harmless: a takeover attempt on a live lease learns when it expires, and waits.
async fn membership(
    fleet: Arc<Fleet>,
    control: Arc<Control>,
    members: StateHandle<u64, SerdeCodec>,
    dead: Arc<Mutex<Vec<bool>>>,
) {
    let mut seen: Vec<(Version, Instant)> = vec![(Version::NONE, Instant::now()); fleet.names.len()];
    let mut beat = 0u64;
    loop {
        if control.is_killed() || control.phase() == DONE {
            return;
        }
        beat += 1;
        let _ = members.put(&control.name, &beat).await;
        let mut view = dead.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (j, name) in fleet.names.iter().enumerate() {
            if j == control.index {
                continue;
            }
            // A failed read says nothing about the other instance: its verdict stays.
            if let Ok(record) = members.get(name).await {
                let now = Instant::now();
                let version = record.map_or(Version::NONE, |r| r.version);
                if version != seen[j].0 {
                    seen[j] = (version, now);
                }
                view[j] = now.duration_since(seen[j].1) > fleet.ttl / 2;
            }
        }
        *dead.lock().unwrap_or_else(|p| p.into_inner()) = view;
        tokio::time::sleep(fleet.ttl / 8).await;
    }
}

/// Carries out a requested pause by blocking the runtime's only thread: every task of the
/// instance, lease watchdogs included, stops as in a long GC pause or a frozen VM.
async fn pauser(control: Arc<Control>) {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let requested = control.pause.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(d) = requested {
            control.set_life(Life::Paused);
            std::thread::sleep(d);
            control.set_life(Life::Running);
            control.resumed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The believed holder of a device nobody is known to hold.
const NOBODY: usize = usize::MAX;

/// One device as a worker sees it.
struct Slot {
    index: u32,
    id: String,
    /// Who holds its lease, as far as this instance knows.
    holder: usize,
    retry_at: Instant,
    owned: Option<Owned>,
    /// A takeover waiting for a dead holder's lease to run out (`acquire_guarded_wait`).
    waiting: Option<tokio::task::JoinHandle<Result<LeaseGuard, Error>>>,
}

impl Slot {
    fn new(index: u32, holder: usize) -> Self {
        Self {
            index,
            id: device_id(index),
            holder,
            retry_at: Instant::now(),
            owned: None,
            waiting: None,
        }
    }
}

/// A device this instance holds the lease of, with what it last wrote.
struct Owned {
    guard: LeaseGuard,
    fence: Fence,
    version: Version,
    record: Device,
    status: String,
    /// A pause ended since the last write: the next write is a stale holder's late write.
    late: bool,
    /// The value was not read back after a write of unknown outcome.
    unsure: bool,
    /// That write, to recognise it when reading back.
    tried: Option<Tried>,
}

/// A write whose outcome is unknown (a timeout, a lost connection): what it would have left.
struct Tried {
    record: Device,
    status: String,
    message: bool,
    /// A transition to online looks like a new owner's takeover write: if the version moved
    /// by one, it may be either.
    ambiguous: bool,
}

/// What a write was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Message,
    Telemetry,
    Transition,
}

struct Worker {
    fleet: Arc<Fleet>,
    control: Arc<Control>,
    devices: StateHandle<Device, SerdeCodec>,
    leases: Leases,
    presence: Presence,
    dead: Arc<Mutex<Vec<bool>>>,
    rng: Rng,
    slots: Vec<Slot>,
    resumed: u64,
    beats: u64,
}

impl Worker {
    async fn run(mut self) {
        let mut next_beat = Instant::now();
        loop {
            if self.control.is_killed() {
                self.crash();
                return;
            }
            let phase = self.control.phase();
            if phase == DONE {
                self.release_all().await;
                return;
            }
            let resumed = self.control.resumed.load(Ordering::SeqCst);
            if resumed != self.resumed {
                self.resumed = resumed;
                for owned in self.slots.iter_mut().filter_map(|s| s.owned.as_mut()) {
                    owned.late = true;
                }
            }
            let asked = self.control.beats_asked.load(Ordering::SeqCst);
            if asked != self.beats {
                self.beats = asked;
                if self.control.phase() == FREEZE {
                    self.give_up_waits().await;
                }
                self.heartbeat().await;
                self.control.beats_done.fetch_add(1, Ordering::SeqCst);
            }
            let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut busy = false;
            for n in 0..self.slots.len() {
                if self.control.is_killed() || self.control.phase() != phase {
                    break;
                }
                if self.slots[n].owned.is_some() {
                    if self.check_lost(n, phase) {
                        continue;
                    }
                    if phase == RUN {
                        self.step(n).await;
                        busy = true;
                    }
                } else if phase == FREEZE {
                    // No takeover starts or ends while the verdict is read.
                } else if self.slots[n].waiting.as_ref().is_some_and(|w| w.is_finished()) {
                    self.waited(n).await;
                    busy = true;
                } else if self.slots[n].waiting.is_none()
                    && Instant::now() >= self.slots[n].retry_at
                    && self.wants(n, &dead)
                {
                    self.acquire(n, &dead).await;
                    busy = true;
                }
                if Instant::now() >= next_beat {
                    next_beat = Instant::now() + self.fleet.beat();
                    self.heartbeat().await;
                }
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + self.fleet.beat();
                self.heartbeat().await;
            }
            if !busy {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Whether this instance should try to take the lease of slot `n`: its own devices,
    /// and those of a dead holder that fall to it among the live instances.
    fn wants(&self, n: usize, dead: &[bool]) -> bool {
        let me = self.control.index;
        let slot = &self.slots[n];
        if slot.holder == me || slot.holder == NOBODY {
            return true;
        }
        if !dead.get(slot.holder).copied().unwrap_or(true) {
            return false;
        }
        let live: Vec<usize> = (0..dead.len()).filter(|&j| !dead[j]).collect();
        if live.is_empty() {
            return false;
        }
        let spread = (u64::from(slot.index).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize;
        live[spread % live.len()] == me
    }

    /// Handles a lease the watchdog reports lost; true when the slot is no longer owned.
    fn check_lost(&mut self, n: usize, phase: u8) -> bool {
        let slot = &mut self.slots[n];
        let Some(owned) = &slot.owned else { return true };
        // A stale holder's late write goes out before the watchdog's verdict is looked at,
        // as when a pause falls between the check and the write: the server must refuse it.
        if owned.late && phase == RUN {
            return false;
        }
        let LeaseStatus::Lost(loss) = owned.guard.status() else {
            return false;
        };
        slot.holder = match loss {
            LeaseLoss::Taken { holder: Some(h) } => self.fleet.names.iter().position(|x| *x == h).unwrap_or(NOBODY),
            _ => self.control.index,
        };
        self.drop_owned(n);
        true
    }

    fn drop_owned(&mut self, n: usize) {
        if self.slots[n].owned.take().is_some() {
            self.control.stats.held.fetch_sub(1, Ordering::Relaxed);
            self.control.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        self.slots[n].retry_at = Instant::now();
    }

    async fn acquire(&mut self, n: usize, dead: &[bool]) {
        let stats = &self.control.stats;
        stats.count(Op::Acquire);
        let (id, previous) = {
            let slot = &self.slots[n];
            (slot.id.clone(), slot.holder)
        };
        match self.leases.acquire(&id, &self.control.name, self.fleet.ttl).await {
            Ok(lease) => {
                let guard = self.leases.keep_alive(lease);
                self.adopt(n, guard, previous).await;
            }
            Err(Error::LeaseHeld { holder, expires_in, .. }) => {
                let holder = self.fleet.names.iter().position(|x| *x == holder).unwrap_or(NOBODY);
                let slot = &mut self.slots[n];
                slot.holder = holder;
                if holder == NOBODY || dead.get(holder).copied().unwrap_or(false) {
                    // A dead holder's lease runs out by itself: wait for it in the background
                    // (cancel-safe: a grant nobody takes is released), a ttl past its expiry.
                    let (leases, id, name) = (self.leases.clone(), slot.id.clone(), self.control.name.clone());
                    let (ttl, wait) = (self.fleet.ttl, expires_in + self.fleet.ttl);
                    slot.waiting = Some(tokio::spawn(async move {
                        leases.acquire_guarded_wait(&id, &name, ttl, wait).await
                    }));
                } else {
                    // Its holder lives: look again when its lease would run out.
                    slot.retry_at = Instant::now() + expires_in + Duration::from_millis(1);
                }
            }
            Err(e) => {
                stats.error(&e);
                self.slots[n].retry_at = Instant::now() + self.fleet.ttl / 4;
            }
        }
    }

    /// Takes a device over with a fresh lease: reads it, then the new owner's first write
    /// (create it, or bring it online) under the new fence. `previous` is who held it.
    async fn adopt(&mut self, n: usize, guard: LeaseGuard, previous: usize) {
        let stats = &self.control.stats;
        let me = self.control.index;
        let id = self.slots[n].id.clone();
        let fence = Fence::from(&guard);
        let current = match self.devices.get(&id).await {
            Ok(current) => current,
            Err(e) => {
                stats.error(&e);
                // Give it back and try again later.
                self.give_back(n, guard).await;
                return;
            }
        };
        let (version, record, status) = current
            .map(|v| (v.version, v.value, v.status.unwrap_or_default()))
            .unwrap_or_else(|| (Version::NONE, Device::default(), String::new()));
        let expected = &self.fleet.ledger.devices[n_index(&self.slots[n])];
        let fenced = self.devices.under(fence.clone());
        // The new owner's first write: create the device, or bring it online.
        if version == Version::NONE {
            match fenced.cas(Version::NONE, &record).await {
                Ok(_) => expected.wrote(false),
                Err(e) => {
                    stats.error(&e);
                    if e.kind().is_failure() {
                        expected.uncertain.fetch_add(1, Ordering::Relaxed);
                    }
                    self.give_back(n, guard).await;
                    return;
                }
            }
        }
        let from = [status.as_str()];
        let stamped = fenced.transition(&from, ONLINE, None).await;
        let written = Instant::now();
        let version = match stamped {
            Ok(v) => {
                expected.wrote(false);
                v
            }
            Err(e) => {
                stats.error(&e);
                if e.kind().is_failure() {
                    expected.uncertain.fetch_add(1, Ordering::Relaxed);
                }
                self.give_back(n, guard).await;
                return;
            }
        };
        stats.acquired.fetch_add(1, Ordering::Relaxed);
        stats.held.fetch_add(1, Ordering::Relaxed);
        if previous != me && previous != NOBODY {
            stats.taken_over.fetch_add(1, Ordering::Relaxed);
            let device = self.slots[n].index;
            stats
                .first_writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((device, written));
        }
        let slot = &mut self.slots[n];
        slot.holder = me;
        slot.owned = Some(Owned {
            guard,
            fence,
            version,
            record,
            status: ONLINE.to_owned(),
            late: false,
            unsure: false,
            tried: None,
        });
    }

    /// Stops every background wait for a lease; a lease one got goes back at once.
    async fn give_up_waits(&mut self) {
        for slot in &mut self.slots {
            let Some(waiting) = slot.waiting.take() else { continue };
            waiting.abort();
            if let Ok(Ok(guard)) = waiting.await {
                let _ = guard.release().await;
            }
            slot.retry_at = Instant::now();
        }
    }

    /// The end of a background wait for a lease.
    async fn waited(&mut self, n: usize) {
        let Some(waiting) = self.slots[n].waiting.take() else {
            return;
        };
        let previous = self.slots[n].holder;
        match waiting.await {
            Ok(Ok(guard)) => {
                self.control.stats.count(Op::Acquire);
                self.adopt(n, guard, previous).await;
            }
            Ok(Err(Error::LeaseHeld { holder, expires_in, .. })) => {
                let slot = &mut self.slots[n];
                slot.holder = self.fleet.names.iter().position(|x| *x == holder).unwrap_or(NOBODY);
                slot.retry_at = Instant::now() + expires_in + Duration::from_millis(1);
            }
            Ok(Err(e)) => {
                self.control.stats.error(&e);
                self.slots[n].retry_at = Instant::now() + self.fleet.ttl / 4;
            }
            Err(_) => self.slots[n].retry_at = Instant::now() + self.fleet.ttl / 4,
        }
    }

    /// A takeover that could not make its first write: the lease goes back, and this
    /// instance tries again later (the next acquisition says who holds it by then).
    async fn give_back(&mut self, n: usize, guard: LeaseGuard) {
        let _ = guard.release().await;
        let slot = &mut self.slots[n];
        slot.holder = NOBODY;
        slot.retry_at = Instant::now() + self.fleet.ttl / 4;
    }

    /// One step of an owned device: a message (maybe redelivered), a telemetry reading or a
    /// state-machine transition, each written under the lease's fence.
    async fn step(&mut self, n: usize) {
        let roll = self.rng.below(100);
        let redeliver = self.rng.chance(self.fleet.dup_rate);
        let reading = self.rng.next() as u32;
        let next_roll = self.rng.below(100);
        let index = n_index(&self.slots[n]);
        let id = self.slots[n].id.clone();
        let Some(owned) = self.slots[n].owned.as_mut() else {
            return;
        };
        let stats = &self.control.stats;
        let expected = &self.fleet.ledger.devices[index];
        if owned.unsure {
            resync(&self.devices, &id, owned, expected, stats).await;
            if owned.unsure {
                return;
            }
        }
        let late = std::mem::take(&mut owned.late);
        let fenced = self.devices.under(owned.fence.clone());
        let (kind, result, next) = if roll < 70 {
            let seq = owned.record.last_seq + 1;
            let mut next = owned.record.clone();
            next.messages += 1;
            next.last_seq = seq;
            let message = message_id(&id, seq);
            let result = fenced.apply_once(&message, Change::Cas(owned.version, &next)).await;
            if let (Ok(applied), true) = (&result, redeliver)
                && !applied.replayed
                && !late
            {
                // The broker delivers the same message again: it must be a replay.
                match fenced.apply_once(&message, Change::Cas(owned.version, &next)).await {
                    Ok(again) if again.replayed => {
                        stats.count(Op::Redelivery);
                    }
                    Ok(_) => {
                        stats.duplicate_applies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => stats.error(&e),
                }
            }
            let result = match result {
                // Someone applied this message already: a new owner that took the device
                // over while this instance was paused. Nothing changed; read what did.
                Ok(applied) if applied.replayed => {
                    stats.count(Op::Redelivery);
                    if late {
                        stats.late_writes.fetch_add(1, Ordering::Relaxed);
                        stats.late_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    owned.unsure = true;
                    resync(&self.devices, &id, owned, expected, stats).await;
                    return;
                }
                other => other.map(|a| a.version),
            };
            (Write::Message, result, Some((next, None)))
        } else if roll < 90 {
            let mut next = owned.record.clone();
            next.telemetry += 1;
            next.reading = reading;
            let result = fenced.cas(owned.version, &next).await;
            (Write::Telemetry, result, Some((next, None)))
        } else {
            let to = next_status(&owned.status, next_roll);
            let from = [owned.status.as_str()];
            let result = fenced.transition(&from, to, None).await;
            (Write::Transition, result, Some((owned.record.clone(), Some(to))))
        };
        if late {
            stats.late_writes.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(version) => {
                owned.version = version;
                if let Some((record, status)) = next {
                    owned.record = record;
                    if let Some(status) = status {
                        owned.status = status.to_owned();
                    }
                }
                expected.wrote(kind == Write::Message);
                stats.count(match kind {
                    Write::Message => Op::Message,
                    Write::Telemetry => Op::Telemetry,
                    Write::Transition => Op::Transition,
                });
            }
            Err(Error::Fenced { .. }) => {
                stats.fenced.fetch_add(1, Ordering::Relaxed);
                if late {
                    stats.late_refused.fetch_add(1, Ordering::Relaxed);
                }
                // Our lease is gone: stop acting as the owner; the acquire attempt says who has it.
                self.slots[n].holder = NOBODY;
                self.drop_owned(n);
            }
            Err(e) => {
                stats.error(&e);
                if matches!(
                    e,
                    Error::Conflict { .. } | Error::TransitionRefused { .. } | Error::NotFound { .. }
                ) {
                    stats.intrusions.fetch_add(1, Ordering::Relaxed);
                }
                if e.kind().is_failure() {
                    // Maybe applied: read back and recognise it.
                    if let Some((record, status)) = next {
                        let status = status.map_or_else(|| owned.status.clone(), str::to_owned);
                        owned.tried = Some(Tried {
                            ambiguous: kind == Write::Transition && status == ONLINE,
                            record,
                            status,
                            message: kind == Write::Message,
                        });
                    }
                }
                owned.unsure = true;
                resync(&self.devices, &id, owned, expected, stats).await;
            }
        }
    }

    async fn heartbeat(&mut self) {
        let active: Vec<&str> = self
            .slots
            .iter()
            .filter_map(|s| s.owned.as_ref().map(|o| (s, o)))
            .filter(|(_, o)| o.status != OFFLINE && matches!(o.guard.status(), LeaseStatus::Held { .. }))
            .map(|(s, _)| s.id.as_str())
            .collect();
        if active.is_empty() {
            return;
        }
        self.control.stats.count(Op::Heartbeat);
        if let Err(e) = self.presence.heartbeat_many(&active).await {
            self.control.stats.error(&e);
        }
    }

    /// The crash: every lease stays on the server until it expires; the fences are kept
    /// for the late writes a zombie of this instance makes.
    fn crash(&mut self) {
        let mut zombies = self.control.zombies.lock().unwrap_or_else(|p| p.into_inner());
        for slot in &mut self.slots {
            if let Some(waiting) = slot.waiting.take() {
                waiting.abort();
            }
            if let Some(owned) = slot.owned.take() {
                zombies.push(Zombie {
                    device: slot.index,
                    expires: owned.guard.lease().valid_until(),
                    fence: owned.fence.clone(),
                    version: owned.version,
                    record: owned.record.clone(),
                });
                self.control.stats.held.fetch_sub(1, Ordering::Relaxed);
                // Neither renewed nor released: the watchdog dies with the runtime.
                std::mem::forget(owned.guard);
            }
        }
        self.control.set_life(Life::Killed);
    }

    async fn release_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(waiting) = slot.waiting.take() {
                // Cancel-safe: a lease granted to the aborted wait is released.
                waiting.abort();
            }
            if let Some(owned) = slot.owned.take() {
                let _ = owned.guard.release().await;
                self.control.stats.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

fn n_index(slot: &Slot) -> usize {
    slot.index as usize
}

/// Reads the device back. After a write of unknown outcome ([`Owned::tried`]) counts it
/// when the device shows exactly it, one version on; when something else moved the version
/// too (a new owner), its outcome stays unknown (`uncertain`).
async fn resync(
    devices: &StateHandle<Device, SerdeCodec>,
    id: &str,
    owned: &mut Owned,
    expected: &super::device::Expected,
    stats: &Stats,
) {
    match devices.get(id).await {
        Ok(current) => {
            let (version, record, status) = current
                .map(|v| (v.version, v.value, v.status.unwrap_or_default()))
                .unwrap_or_else(|| (Version::NONE, Device::default(), String::new()));
            if let Some(tried) = owned.tried.take() {
                let moved = version.0.saturating_sub(owned.version.0);
                let shows_it = moved == 1 && record == tried.record && status == tried.status;
                if shows_it && !tried.ambiguous {
                    expected.wrote(tried.message);
                } else if moved > 1 || shows_it {
                    expected.uncertain.fetch_add(1, Ordering::Relaxed);
                }
            }
            owned.version = version;
            owned.record = record;
            owned.status = status;
            owned.unsure = false;
        }
        Err(e) => stats.error(&e),
    }
}
