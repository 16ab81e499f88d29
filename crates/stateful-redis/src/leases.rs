//! Ownership leases with fencing tokens, and the watchdog that keeps one alive.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stateful_redis_core::{Error, KeyLayout, Namespace, validate_entity_id, validate_owner};
use stateful_redis_scripts::{Acquire, AcquireReply, LeaseReply, Release, Renew};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use stateful_redis_metrics::Operation;

use crate::executor::Inner;

/// A granted lease: who holds which entity, with which fencing token, until when.
///
/// Validity is measured on the local monotonic clock from a moment taken *before* the
/// request was sent, minus an allowance for clock drift, so the holder stops believing
/// it owns the entity no later than Redis lets the lease expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    entity: String,
    owner: String,
    token: u64,
    ttl: Duration,
    valid_until: Instant,
}

impl Lease {
    /// The entity.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The holder.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The fencing token: strictly increasing per entity, never reused.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The ttl it was granted (or last renewed) with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Until when the holder may act as owner (local monotonic clock).
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the lease is still valid now.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    /// How long it stays valid (zero once it is not).
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }
}

/// Takes, renews and releases the leases of one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Leases {
    exec: Arc<Inner>,
    namespace: Namespace,
    keys: KeyLayout,
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn ttl_ms(ttl: Duration) -> Result<u64, Error> {
    let ms = ttl.as_millis();
    if !(10..=(1u128 << 40)).contains(&ms) {
        return Err(Error::InvalidArgument {
            name: "ttl",
            reason: format!("{ttl:?} is not from 10 ms to about 34 years"),
        });
    }
    Ok(ms as u64)
}

impl Leases {
    pub(crate) fn new(exec: Arc<Inner>, namespace: Namespace) -> Self {
        Self {
            keys: KeyLayout::new(&namespace),
            exec,
            namespace,
        }
    }

    fn drift(&self, ttl: Duration) -> Duration {
        let config = &self.exec.config.leases;
        ttl.mul_f64(config.drift_factor) + config.drift_min
    }

    /// The end of validity of a lease of `ttl_ms` (what Redis was told) requested at `started`.
    fn valid_until(&self, started: Instant, ttl_ms: u64) -> Instant {
        let ttl = Duration::from_millis(ttl_ms);
        started + ttl.saturating_sub(self.drift(ttl))
    }

    /// Takes the lease of `entity` for `owner`, for `ttl`. While anyone holds it (`owner`
    /// included: leases are exclusive, so validity windows never overlap):
    /// [`Error::LeaseHeld`] with who and for how long. Extend a lease with
    /// [`renew`](Self::renew).
    ///
    /// Owners must be unique per process incarnation (e.g. `host/pid/start-time`).
    pub async fn acquire(&self, entity: &str, owner: &str, ttl: Duration) -> Result<Lease, Error> {
        let started = Instant::now();
        let result = self.acquire_unobserved(entity, owner, ttl).await;
        self.exec.observe(Operation::Acquire, started, &result);
        if result.is_ok() {
            self.exec.monitor.record_lease_acquired();
        }
        result
    }

    async fn acquire_unobserved(&self, entity: &str, owner: &str, ttl: Duration) -> Result<Lease, Error> {
        validate_entity_id(entity)?;
        validate_owner(owner)?;
        let ttl_ms = ttl_ms(ttl)?;
        if self.drift(Duration::from_millis(ttl_ms)) >= Duration::from_millis(ttl_ms) {
            return Err(Error::InvalidArgument {
                name: "ttl",
                reason: format!(
                    "{ttl:?} is not longer than the clock-drift allowance (leases.drift_factor, leases.drift_min)"
                ),
            });
        }
        let (lease, fence) = (self.keys.lease(entity), self.keys.fence(entity));
        let call = Acquire {
            lease: &lease,
            fence: &fence,
            owner,
            ttl_ms,
        };
        let _op = self.exec.begin()?;
        // Measured before the request leaves: the lease cannot outlive this on our clock.
        let started = Instant::now();
        // Not retried: a grant whose reply was lost would make the retry see the lease held
        // (by us); the caller learns the outcome is unknown and may try again after the ttl.
        match self.exec.run(&call).await? {
            AcquireReply::Granted(token) => Ok(Lease {
                entity: entity.to_owned(),
                owner: owner.to_owned(),
                token,
                ttl,
                valid_until: self.valid_until(started, ttl_ms),
            }),
            AcquireReply::Held { owner, remaining_ms } => Err(Error::LeaseHeld {
                entity: entity.to_owned(),
                holder: owner,
                expires_in: Duration::from_millis(remaining_ms),
            }),
        }
    }

    /// [`acquire`](Self::acquire), waiting while the lease is held: tries again with
    /// jittered, doubling pauses (from 5 ms to at most 500 ms, and never past the holder's
    /// remaining ttl, when the lease frees by itself), until it gets it or `wait` runs out;
    /// then one last try, and its [`Error::LeaseHeld`]. `Duration::ZERO` tries once. A
    /// released lease is seen at the next try; an expired one at once.
    ///
    /// Failures whose outcome is unknown (a timeout, a broken connection) are tried again
    /// within `wait` too; after `wait` the last of them is the error. Bad arguments and
    /// [`Error::Shutdown`] end it at once.
    ///
    /// **Cancel-safe.** The tries run in a task of their own, and a lease granted after the
    /// caller dropped this future (or while its reply was on the way) is released at once:
    /// dropping the future never leaves a lease held that nobody holds, *as long as the grant's
    /// reply arrives*. A reply lost in flight (timeout, broken connection) leaves the outcome
    /// unknown: the lease may be granted, with a token nobody learned. It then blocks the
    /// entity until its ttl runs out (the next try sees it held by `owner`, and waits for it
    /// like any holder), and nobody can write under it, since a fenced write needs its token.
    /// Each try is recorded in the monitor only when it is the last one.
    pub async fn acquire_wait(&self, entity: &str, owner: &str, ttl: Duration, wait: Duration) -> Result<Lease, Error> {
        // Checked here, so that a bad argument is an error at once, not after a spawn.
        validate_entity_id(entity)?;
        validate_owner(owner)?;
        ttl_ms(ttl)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(wait_for_lease(
            self.clone(),
            entity.to_owned(),
            owner.to_owned(),
            ttl,
            wait,
            tx,
        ));
        match rx.await {
            Ok(Ok(mut granted)) => granted.take().ok_or(Error::Shutdown),
            Ok(Err(e)) => Err(e),
            // The task ended without an answer: it panicked, or the runtime is shutting down.
            Err(_) => {
                task.abort();
                Err(Error::Shutdown)
            }
        }
    }

    /// [`acquire_wait`](Self::acquire_wait), then [`keep_alive`](Self::keep_alive).
    pub async fn acquire_guarded_wait(
        &self,
        entity: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseGuard, Error> {
        Ok(self.keep_alive(self.acquire_wait(entity, owner, ttl, wait).await?))
    }

    /// Extends `lease` by its ttl from now; [`Error::LeaseLost`] if it expired or was taken.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), Error> {
        let started = Instant::now();
        let result = self.renew_unobserved(lease).await;
        self.exec.observe(Operation::Renew, started, &result);
        result
    }

    async fn renew_unobserved(&self, lease: &mut Lease) -> Result<(), Error> {
        let key = self.keys.lease(&lease.entity);
        let call = Renew {
            lease: &key,
            token: lease.token,
            owner: &lease.owner,
            ttl_ms: ttl_ms(lease.ttl)?,
        };
        let _op = self.exec.begin()?;
        let started = Instant::now();
        match self.exec.run_safe(&call).await? {
            LeaseReply::Done => {
                lease.valid_until = self.valid_until(started, call.ttl_ms);
                Ok(())
            }
            LeaseReply::Lost(holder) => Err(Error::LeaseLost {
                entity: lease.entity.clone(),
                token: lease.token,
                holder,
            }),
        }
    }

    /// Gives the lease up so others may take it at once; refused with
    /// [`Error::LeaseLost`] (and nothing changed) if `lease` is not the current one.
    pub async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let started = Instant::now();
        let result = self.release_unobserved(lease).await;
        self.exec.observe(Operation::Release, started, &result);
        result
    }

    async fn release_unobserved(&self, lease: &Lease) -> Result<(), Error> {
        let key = self.keys.lease(&lease.entity);
        let call = Release {
            lease: &key,
            token: lease.token,
            owner: &lease.owner,
        };
        let _op = self.exec.begin()?;
        // Not retried: a release whose reply was lost would be reported as lost.
        match self.exec.run(&call).await? {
            LeaseReply::Done => Ok(()),
            LeaseReply::Lost(holder) => Err(Error::LeaseLost {
                entity: lease.entity.clone(),
                token: lease.token,
                holder,
            }),
        }
    }

    /// Keeps `lease` alive in the background, renewing at a third of its ttl (sooner if
    /// less than twice that validity is left), and tells the holder the moment it is lost.
    pub fn keep_alive(&self, lease: Lease) -> LeaseGuard {
        LeaseGuard::start(self.clone(), lease)
    }

    /// [`acquire`](Self::acquire), then [`keep_alive`](Self::keep_alive).
    pub async fn acquire_guarded(&self, entity: &str, owner: &str, ttl: Duration) -> Result<LeaseGuard, Error> {
        Ok(self.keep_alive(self.acquire(entity, owner, ttl).await?))
    }
}

/// A lease granted to [`Leases::acquire_wait`] on its way to the caller: released if the
/// caller is gone before taking it.
struct Unclaimed {
    leases: Leases,
    lease: Option<Lease>,
}

impl Unclaimed {
    fn take(&mut self) -> Option<Lease> {
        self.lease.take()
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let leases = self.leases.clone();
            runtime.spawn(async move {
                // If this fails too, the lease expires after its ttl.
                let _ = leases.release(&lease).await;
            });
        }
    }
}

/// First pause of [`Leases::acquire_wait`]; each one doubles, up to [`WAIT_MAX_PAUSE`].
const WAIT_FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two tries of [`Leases::acquire_wait`].
const WAIT_MAX_PAUSE: Duration = Duration::from_millis(500);

/// The tries of [`Leases::acquire_wait`], in their own task; stops trying once the caller is
/// gone, and releases a grant nobody takes.
async fn wait_for_lease(
    leases: Leases,
    entity: String,
    owner: String,
    ttl: Duration,
    wait: Duration,
    mut reply: tokio::sync::oneshot::Sender<Result<Unclaimed, Error>>,
) {
    // `None`: a wait too long to measure (`Duration::MAX`), so without end.
    let deadline = Instant::now().checked_add(wait);
    let mut cap = WAIT_FIRST_PAUSE;
    let outcome = loop {
        let started = Instant::now();
        let result = leases.acquire_unobserved(&entity, &owner, ttl).await;
        let now = Instant::now();
        let pause = match &result {
            // Not past the moment the lease frees by itself (a few ms after, for the clocks).
            Err(Error::LeaseHeld { expires_in, .. }) => Some(jitter(cap).min(*expires_in + Duration::from_millis(2))),
            Err(e) if e.is_outcome_unknown() => Some(jitter(cap)),
            _ => None,
        };
        let Some(pause) = pause.filter(|_| deadline.is_none_or(|d| now < d) && !reply.is_closed()) else {
            leases.exec.observe(Operation::Acquire, started, &result);
            if result.is_ok() {
                leases.exec.monitor.record_lease_acquired();
            }
            break result;
        };
        cap = (cap * 2).min(WAIT_MAX_PAUSE);
        // The last try comes at the deadline at the latest.
        let until = deadline.map_or(now + pause, |d| (now + pause).min(d));
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            // The caller is gone: no try more.
            _ = reply.closed() => return,
        }
    };
    let outcome = outcome.map(|lease| Unclaimed {
        leases: leases.clone(),
        lease: Some(lease),
    });
    // If the caller is gone, the value comes back and its drop releases the lease.
    drop(reply.send(outcome));
}

/// A random pause from half of `cap` to `cap`.
fn jitter(cap: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let half = cap / 2;
    half + Duration::from_nanos(random % (half.as_nanos().max(1) as u64))
}

/// Why a guarded lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLoss {
    /// A renewal found the lease gone or held by someone else (`holder`).
    Taken {
        /// Who holds it now, if anyone.
        holder: Option<String>,
    },
    /// Renewals kept failing (Redis unreachable or slow) until the validity ran out.
    Expired,
    /// The executor shut down.
    Shutdown,
}

/// The state of a guarded lease, as [`LeaseGuard::subscribe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseStatus {
    /// Held and valid until `valid_until`.
    Held {
        /// End of validity on the local monotonic clock.
        valid_until: Instant,
        /// Successful renewals so far.
        renewals: u64,
        /// Renewals that failed since the last success (the lease may still be valid).
        failed_renewals: u32,
    },
    /// Lost; the holder must stop acting as owner.
    Lost(LeaseLoss),
    /// Released by its holder.
    Released,
}

type LossCallback = Box<dyn FnOnce(LeaseLoss) + Send>;

struct GuardShared {
    stop: Notify,
    on_lost: Mutex<Option<LossCallback>>,
    status: watch::Sender<LeaseStatus>,
}

/// A lease kept alive by a watchdog task that renews it at a third of its ttl, never later
/// than halfway through the validity left.
///
/// The moment a renewal finds the lease gone, or renewals fail until its validity runs
/// out, the status turns [`LeaseStatus::Lost`]: [`lost`](Self::lost) resolves,
/// [`subscribe`](Self::subscribe)rs see it, and the [`on_lost`](Self::on_lost) callback runs.
/// [`release`](Self::release) gives the lease up; dropping the guard stops the watchdog
/// and releases the lease in the background.
pub struct LeaseGuard {
    leases: Leases,
    lease: Lease,
    status: watch::Receiver<LeaseStatus>,
    shared: Arc<GuardShared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("entity", &self.lease.entity)
            .field("token", &self.lease.token)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    fn start(leases: Leases, lease: Lease) -> Self {
        let (tx, rx) = watch::channel(LeaseStatus::Held {
            valid_until: lease.valid_until,
            renewals: 0,
            failed_renewals: 0,
        });
        let shared = Arc::new(GuardShared {
            stop: Notify::new(),
            on_lost: Mutex::new(None),
            status: tx,
        });
        let task = tokio::spawn(watchdog(leases.clone(), lease.clone(), Arc::clone(&shared)));
        Self {
            leases,
            lease,
            status: rx,
            shared,
            task: Some(task),
        }
    }

    /// The entity.
    pub fn entity(&self) -> &str {
        &self.lease.entity
    }

    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.lease.token
    }

    /// The lease, with its latest validity (none once it is lost or released).
    pub fn lease(&self) -> Lease {
        let mut lease = self.lease.clone();
        lease.valid_until = match *self.status.borrow() {
            LeaseStatus::Held { valid_until, .. } => valid_until,
            _ => lease.valid_until.min(Instant::now()),
        };
        lease
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// Whether the lease is held and valid now.
    pub fn is_valid(&self) -> bool {
        matches!(*self.status.borrow(), LeaseStatus::Held { valid_until, .. } if Instant::now() < valid_until)
    }

    /// A receiver that sees every status change (renewals, failures, loss).
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Resolves when the lease is lost, with why; `None` if it was released instead.
    pub async fn lost(&self) -> Option<LeaseLoss> {
        let mut status = self.status.clone();
        let result = status
            .wait_for(|s| matches!(s, LeaseStatus::Lost(_) | LeaseStatus::Released))
            .await;
        match result.as_deref() {
            Ok(LeaseStatus::Lost(loss)) => Some(loss.clone()),
            // The watchdog ended without a verdict only if the guard is going away.
            _ => None,
        }
    }

    /// Runs `callback` once, the moment the lease is lost (at once if it already is).
    pub fn on_lost(&self, callback: impl FnOnce(LeaseLoss) + Send + 'static) {
        let mut slot = self.shared.on_lost.lock().unwrap_or_else(|p| p.into_inner());
        if let LeaseStatus::Lost(loss) = &*self.status.borrow() {
            drop(slot);
            callback(loss.clone());
            return;
        }
        *slot = Some(Box::new(callback));
    }

    /// Stops renewing and gives the lease up; [`Error::LeaseLost`] if it was lost already.
    /// Subscribers see [`LeaseStatus::Released`] once it is released.
    pub async fn release(mut self) -> Result<(), Error> {
        self.stop_watchdog().await;
        let lease = self.lease();
        let result = self.leases.release(&lease).await;
        if result.is_ok() {
            self.shared.status.send_replace(LeaseStatus::Released);
        }
        result
    }

    async fn stop_watchdog(&mut self) {
        self.shared.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        self.shared.stop.notify_one();
        task.abort();
        // Give the entity back early; if this fails, the lease just expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (leases, lease) = (self.leases.clone(), self.lease.clone());
            runtime.spawn(async move {
                let _ = leases.release(&lease).await;
            });
        }
    }
}

async fn watchdog(leases: Leases, mut lease: Lease, shared: Arc<GuardShared>) {
    let status = &shared.status;
    let interval = lease.ttl / 3;
    let retry_after = (lease.ttl / 10).max(Duration::from_millis(5));
    // At a third of the ttl, but never later than halfway through what validity is left
    // (large drift settings, or a lease handed over late).
    let schedule = |from: Instant, valid_until: Instant| {
        (from + interval).min(from + valid_until.saturating_duration_since(from) / 2)
    };
    let mut next = schedule(Instant::now(), lease.valid_until);
    let mut renewals = 0u64;
    let mut failed = 0u32;
    let loss = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = shared.stop.notified() => return,
        }
        let now = Instant::now();
        if now >= lease.valid_until {
            break LeaseLoss::Expired;
        }
        // Never wait for a reply past the validity: by then the lease is lost anyway.
        let renew = tokio::time::timeout(lease.valid_until - now, leases.renew(&mut lease));
        let result = tokio::select! {
            result = renew => result,
            _ = shared.stop.notified() => return,
        };
        match result {
            Ok(Ok(())) => {
                renewals += 1;
                failed = 0;
                next = schedule(now, lease.valid_until);
                status.send_replace(LeaseStatus::Held {
                    valid_until: lease.valid_until,
                    renewals,
                    failed_renewals: 0,
                });
            }
            Ok(Err(Error::LeaseLost { holder, .. })) => break LeaseLoss::Taken { holder },
            Ok(Err(Error::Shutdown)) => break LeaseLoss::Shutdown,
            Ok(Err(e)) => {
                failed += 1;
                tracing::warn!(entity = lease.entity(), token = lease.token(), error = %e, "lease renewal failed");
                next = (now + retry_after).min(lease.valid_until);
                status.send_replace(LeaseStatus::Held {
                    valid_until: lease.valid_until,
                    renewals,
                    failed_renewals: failed,
                });
            }
            Err(_elapsed) => break LeaseLoss::Expired,
        }
    };
    tracing::warn!(entity = lease.entity(), token = lease.token(), ?loss, "lease lost");
    if loss != LeaseLoss::Shutdown {
        leases.exec.monitor.record_lease_lost();
    }
    status.send_replace(LeaseStatus::Lost(loss.clone()));
    let callback = shared.on_lost.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(callback) = callback {
        callback(loss);
    }
}
