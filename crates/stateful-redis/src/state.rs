//! Typed handles on the entities of one namespace: reads, writes (plain, fenced, exactly
//! once) and read-modify-write.

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use stateful_redis_core::{
    AUTO_MESSAGES_SUFFIX, AUTO_OUTCOMES_SUFFIX, Codec, CodecError, Error, KeyLayout, MESSAGES_SUFFIX, Namespace,
    OUTCOMES_SUFFIX, STATE_SUFFIX, SealError, Version, Versioned, validate_entity_id, validate_message_id,
    validate_status,
};
use stateful_redis_metrics::Operation;
use stateful_redis_scripts::{GET, Get, GuardKeys, MessageWindow, WRITE, Write, WriteOp, WriteResult};

use crate::executor::{Encoded, Inner};
use crate::leases::{Lease, LeaseGuard, Leases};
use crate::listing::EntityScan;
use crate::presence::Presence;

/// The outcome of [`StateHandle::update`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Updated<T> {
    /// The version written.
    pub version: Version,
    /// The value written.
    pub value: T,
    /// Attempts it took (1 when no other writer interfered).
    pub attempts: u32,
}

/// One change, as [`StateHandle::apply_once`] applies it.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, T> {
    /// Write unconditionally.
    Put(&'a T),
    /// Write only at this version ([`Version::NONE`]: only if absent).
    Cas(Version, &'a T),
    /// Move to status `to` from one of `from` (`""`: no status yet), maybe with a new value.
    Transition {
        /// Allowed current statuses.
        from: &'a [&'a str],
        /// The new status.
        to: &'a str,
        /// A new value, if any.
        value: Option<&'a T>,
    },
    /// Delete only at this version.
    Delete(Version),
    /// Delete whatever the version ([`StateHandle::delete`]); [`Error::NotFound`] when absent.
    DeleteAny,
}

/// The outcome of [`StateHandle::apply_once`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// The version the change produced (0 after a delete), the first time it was applied.
    pub version: Version,
    /// True when another delivery of the message was applied before: this call changed
    /// nothing. A call whose own first attempt applied (its reply lost, then retried by the
    /// executor) is not a replay: it made the change.
    pub replayed: bool,
}

/// A fencing token, the entity it was issued for and the owner of its lease; see
/// [`StateHandle::under`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    entity: String,
    token: u64,
    owner: String,
}

impl Fence {
    /// A fence for `entity` with `token`, as issued to `owner` by a lease of that entity.
    pub fn new(entity: impl Into<String>, token: u64, owner: impl Into<String>) -> Self {
        Self {
            entity: entity.into(),
            token,
            owner: owner.into(),
        }
    }

    /// The owner of the lease.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The entity.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The token.
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl From<&Lease> for Fence {
    fn from(lease: &Lease) -> Self {
        Fence::new(lease.entity(), lease.token(), lease.owner())
    }
}

impl From<&LeaseGuard> for Fence {
    fn from(guard: &LeaseGuard) -> Self {
        let lease = guard.lease();
        Fence::new(lease.entity(), lease.token(), lease.owner())
    }
}

/// Operations on the entities of one namespace, with values of type `T` stored by
/// codec `C`. Cheap to clone.
///
/// Every operation validates the entity id (and value size) before anything is sent,
/// and runs as one Lua script, atomic on the server.
pub struct StateHandle<T, C> {
    exec: Arc<Inner>,
    namespace: Namespace,
    keys: KeyLayout,
    codec: Arc<C>,
    ttl_ms: u64,
    _values: PhantomData<fn() -> T>,
}

impl<T, C> Clone for StateHandle<T, C> {
    fn clone(&self) -> Self {
        Self {
            exec: Arc::clone(&self.exec),
            namespace: self.namespace.clone(),
            keys: self.keys.clone(),
            codec: Arc::clone(&self.codec),
            ttl_ms: self.ttl_ms,
            _values: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for StateHandle<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateHandle")
            .field("namespace", &self.namespace)
            .field("ttl_ms", &self.ttl_ms)
            .field("value_type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// What a write sends, once validated (the value is sealed when the call is encoded).
struct Prepared<'a, T> {
    op: WriteOp<'a>,
    value: Option<&'a T>,
}

/// A thread's buffers for the call being encoded: the entity's key and its sealed value.
/// They are used only while a call is encoded, with no await in between, and the command
/// keeps a copy of both; reused from one call to the next, they allocate nothing per call.
#[derive(Default)]
struct Scratch {
    key: String,
    value: BytesMut,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers, emptied (fresh ones, should they be in use).
fn with_scratch<R>(f: impl FnOnce(&mut String, &mut BytesMut) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let scratch = &mut *scratch;
            scratch.key.clear();
            scratch.value.clear();
            f(&mut scratch.key, &mut scratch.value)
        }
        Err(_) => f(&mut String::new(), &mut BytesMut::new()),
    })
}

impl<T, C: Codec<T>> StateHandle<T, C> {
    pub(crate) fn new(exec: Arc<Inner>, namespace: Namespace, codec: C) -> Self {
        Self {
            keys: KeyLayout::new(&namespace),
            exec,
            namespace,
            codec: Arc::new(codec),
            ttl_ms: 0,
            _values: PhantomData,
        }
    }

    /// The same handle, but every write also sets the entity to expire `ttl` later
    /// (rounded up to whole milliseconds). Without it, or with `Duration::ZERO`, writes
    /// leave expiry as it is: an expiry set here, which the record's header remembers. Set
    /// expiries through this, not with `EXPIRE` on the key: a bundle's puts keep only the
    /// expiries the header knows of (they write other records with one `MSET`, which drops
    /// expiries; see `Record`'s `expires`).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        // Redis refuses expiries past i64 ms; a century is the most we ask for.
        self.ttl_ms = ttl.as_nanos().div_ceil(1_000_000).min(MAX_TTL_MS) as u64;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The Redis key of an entity's state record.
    pub fn state_key(&self, entity: &str) -> Result<String, Error> {
        validate_entity_id(entity)?;
        Ok(self.keys.state(entity))
    }

    /// Writes that carry `fence` (a lease's token): each is refused with
    /// [`Error::Fenced`] inside the same script if a newer lease was granted on the entity
    /// or the lease is gone. The lease must belong to this handle's namespace.
    pub fn under(&self, fence: impl Into<Fence>) -> Fenced<'_, T, C> {
        Fenced {
            handle: self,
            fence: fence.into(),
        }
    }

    /// Seals `value` into `out` (one call in [`crate::sampled`] timed).
    fn seal_into(&self, entity: &str, value: &T, out: &mut BytesMut) -> Result<(), Error> {
        let sealed = if crate::sampled() {
            let (sealed, timings) = self.exec.envelope.seal_into_timed(&*self.codec, value, out);
            self.exec.codec_timings(timings);
            sealed
        } else {
            self.exec.envelope.seal_into(&*self.codec, value, out)
        };
        sealed.map_err(|e| match e {
            SealError::TooLarge { size, max } => Error::ValueTooLarge {
                entity: entity.to_owned(),
                size,
                max,
            },
            SealError::Codec(source) => Error::Encode {
                entity: entity.to_owned(),
                source,
            },
            other => Error::Encode {
                entity: entity.to_owned(),
                source: CodecError::Serde {
                    format: "envelope",
                    source: other.to_string().into(),
                },
            },
        })
    }

    /// Checks a write's fence, message id, entity id and statuses.
    fn prepare<'a>(
        &self,
        entity: &str,
        change: Change<'a, T>,
        fence: Option<&Fence>,
        message: Option<&str>,
    ) -> Result<Prepared<'a, T>, Error> {
        check_fence(fence)?;
        if let Some(id) = message {
            validate_message_id(id)?;
        }
        validate_entity_id(entity)?;
        let (op, value) = match change {
            Change::Put(v) => (WriteOp::Put, Some(v)),
            Change::Cas(expected, v) => (WriteOp::Cas { expected: expected.0 }, Some(v)),
            Change::Transition { from, to, value } => {
                validate_status(to)?;
                for status in from.iter().filter(|s| !s.is_empty()) {
                    validate_status(status)?;
                }
                (WriteOp::Transition { from, to }, value)
            }
            Change::Delete(expected) => (WriteOp::Delete { expected: expected.0 }, None),
            Change::DeleteAny => (WriteOp::DeleteAny, None),
        };
        Ok(Prepared { op, value })
    }

    /// How long a write's message ids are kept: the configured window, or for automatic ids
    /// (fenced writes without one) twice the longest a retried write can take.
    fn message_window(&self, automatic: bool) -> MessageWindow {
        let config = &self.exec.config;
        if !automatic {
            return MessageWindow {
                keep: config.idempotency.keep,
                keep_ms: config.idempotency.keep_for.as_millis().max(1) as u64,
            };
        }
        // Twice the longest a call and its retries take (at least a minute).
        let budget = config
            .retry
            .span(config.redis.response_timeout)
            .saturating_mul(2)
            .max(Duration::from_secs(60));
        MessageWindow {
            keep: 1000,
            keep_ms: budget.as_millis().min(MAX_TTL_MS) as u64,
        }
    }

    /// Sends a prepared write. Fenced and idempotent writes are retried when their outcome
    /// is unknown: a fenced write without a message id gets one of its own, so that a
    /// retry of a write that did apply replays its outcome instead of applying again.
    /// Plain writes are never retried.
    async fn send(
        &self,
        entity: &str,
        prepared: &Prepared<'_, T>,
        fence: Option<&Fence>,
        message: Option<&str>,
        operation: Operation,
    ) -> Result<Applied, Error> {
        let auto_id;
        let automatic = fence.is_some() && message.is_none();
        let message = if automatic {
            auto_id = automatic_message_id();
            Some(auto_id.as_str())
        } else {
            message
        };
        let guarded = fence.is_some() || message.is_some();
        // Automatic ids live under their own keys with a short window, so that they never
        // push callers' `apply_once` ids out of theirs.
        let (messages_suffix, outcomes_suffix) = if automatic {
            (AUTO_MESSAGES_SUFFIX, AUTO_OUTCOMES_SUFFIX)
        } else {
            (MESSAGES_SUFFIX, OUTCOMES_SUFFIX)
        };
        let guard_keys = guarded.then(|| {
            [
                self.keys.fence(entity),
                self.keys.lease(entity),
                self.keys.key(entity, messages_suffix),
                self.keys.key(entity, outcomes_suffix),
            ]
        });
        // Only a write with a message id needs its window.
        let message = message.map(|id| (id, self.message_window(automatic)));
        // A caller's id gets a nonce of this call, stored with the first outcome: a retry of
        // an attempt that applied finds it and is not a replay (an automatic id is unique to
        // this call already).
        let nonce_text;
        let nonce = if message.is_some() && !automatic {
            nonce_text = call_nonce();
            nonce_text.as_str()
        } else {
            ""
        };
        // The key and the sealed value are built in the thread's scratch buffers, for
        // each attempt: the command copies them, and nothing is allocated for them.
        let encode = || -> Result<Encoded, Error> {
            with_scratch(|key, sealed| {
                self.keys.write_key(entity, STATE_SUFFIX, key);
                let data = match prepared.value {
                    Some(value) => {
                        self.seal_into(entity, value, sealed)?;
                        Some(&sealed[..])
                    }
                    None => None,
                };
                let call = Write {
                    key,
                    op: prepared.op,
                    data,
                    ttl_ms: self.ttl_ms,
                    guard: guard_keys.as_ref().map(|[fence, lease, messages, outcomes]| GuardKeys {
                        fence,
                        lease,
                        messages,
                        outcomes,
                    }),
                    fence: fence.map(|f| (f.token, f.owner.as_str())),
                    message,
                    nonce,
                };
                Ok(self.exec.encode(&call, operation))
            })
        };
        let _op = self.exec.begin()?;
        let reply = self
            .exec
            .run_encoded(&WRITE, guarded, encode, |reply| Write::parse_reply_for(reply, nonce))
            .await?;
        let expected = match prepared.op {
            WriteOp::Cas { expected } | WriteOp::Delete { expected } => Version(expected),
            _ => Version::NONE,
        };
        match reply.result {
            WriteResult::Applied(v) => Ok(Applied {
                version: Version(v),
                replayed: reply.replayed && !automatic,
            }),
            WriteResult::Corrupt(detail) => Err(Error::Corrupt {
                entity: entity.to_owned(),
                detail,
            }),
            WriteResult::Conflict(current) => {
                // Every conflicting write (update attempts too) counts for the advisor's hot entities.
                self.exec.monitor.record_conflict(entity);
                Err(Error::Conflict {
                    entity: entity.to_owned(),
                    expected,
                    current: Version(current),
                })
            }
            WriteResult::NotFound => Err(Error::NotFound {
                entity: entity.to_owned(),
            }),
            WriteResult::Refused(actual) => Err(Error::TransitionRefused {
                entity: entity.to_owned(),
                actual,
            }),
            WriteResult::Fenced(current) => Err(Error::Fenced {
                entity: entity.to_owned(),
                token: fence.map_or(0, |f| f.token),
                current,
            }),
        }
    }

    async fn write(
        &self,
        entity: &str,
        change: Change<'_, T>,
        fence: Option<&Fence>,
        message: Option<&str>,
    ) -> Result<Applied, Error> {
        let operation = match (&change, message) {
            (_, Some(_)) => Operation::ApplyOnce,
            (Change::Put(_), None) => Operation::Put,
            (Change::Cas(..), None) => Operation::Cas,
            (Change::Transition { .. }, None) => Operation::Transition,
            (Change::Delete(_) | Change::DeleteAny, None) => Operation::Delete,
        };
        let started = std::time::Instant::now();
        // Checked here, before the one await: a nested async fn would add a level to every
        // write's future.
        let span = crate::spans::operation(operation, Some(entity));
        let result = match self.prepare(entity, change, fence, message) {
            Ok(prepared) => {
                tracing::Instrument::instrument(self.send(entity, &prepared, fence, message, operation), span.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        crate::spans::finish(&span, &result);
        self.exec.observe(operation, started, &result);
        result
    }

    /// Reads an entity: `None` if it does not exist.
    pub async fn get(&self, entity: &str) -> Result<Option<Versioned<T>>, Error> {
        let started = std::time::Instant::now();
        let span = crate::spans::operation(Operation::Get, Some(entity));
        let result = tracing::Instrument::instrument(self.read(entity, Operation::Get), span.clone()).await;
        crate::spans::finish(&span, &result);
        self.exec.observe(Operation::Get, started, &result);
        result
    }

    /// Reads an entity for `operation` (`get`, or an `update`'s read).
    async fn read(&self, entity: &str, operation: Operation) -> Result<Option<Versioned<T>>, Error> {
        validate_entity_id(entity)?;
        let _op = self.exec.begin()?;
        // The key in the thread's scratch buffer, as for writes.
        let encode = || {
            Ok(with_scratch(|key, _| {
                self.keys.write_key(entity, STATE_SUFFIX, key);
                self.exec.encode(&Get { key }, operation)
            }))
        };
        let Some(record) = self.exec.run_encoded(&GET, true, encode, Get::parse_reply).await? else {
            return Ok(None);
        };
        let record = record.map_err(|m| Error::Corrupt {
            entity: entity.to_owned(),
            detail: m.0,
        })?;
        let opened = if crate::sampled() {
            let (opened, timings) = self.exec.envelope.open_timed(&*self.codec, &record.data);
            self.exec.codec_timings(timings);
            opened
        } else {
            self.exec.envelope.open(&*self.codec, &record.data)
        };
        let value = opened.map_err(|source| Error::Decode {
            entity: entity.to_owned(),
            source,
        })?;
        Ok(Some(Versioned {
            version: Version(record.version),
            value,
            status: record.status,
            updated_ms: record.updated_ms,
            fence: record.fence,
        }))
    }

    /// Writes unconditionally and returns the new version.
    pub async fn put(&self, entity: &str, value: &T) -> Result<Version, Error> {
        self.write(entity, Change::Put(value), None, None)
            .await
            .map(|a| a.version)
    }

    /// Writes only if the entity is at `expected` ([`Version::NONE`]: only if it does not
    /// exist). Returns the new version, or [`Error::Conflict`] with the current one.
    pub async fn cas(&self, entity: &str, expected: Version, value: &T) -> Result<Version, Error> {
        self.write(entity, Change::Cas(expected, value), None, None)
            .await
            .map(|a| a.version)
    }

    /// Read-modify-write: reads the entity (`None` if absent), applies `change`, and
    /// writes the result at the version read. On a conflict it backs off briefly and
    /// tries again, up to `state.update_max_attempts` times; [`Updated::attempts`] says how
    /// many it took. No update is ever lost: every write is a compare-and-set.
    pub async fn update<F>(&self, entity: &str, mut change: F) -> Result<Updated<T>, Error>
    where
        F: FnMut(Option<T>) -> T,
    {
        let change = move |old| Ok::<_, Infallible>(change(old));
        self.update_fenced(entity, change, None, Operation::Update)
            .await
            .map_err(TryUpdateError::into_error)
    }

    /// [`update`](Self::update) whose `change` may refuse: `Err(e)` ends the loop at once
    /// with [`TryUpdateError::Aborted`]`(e)` and writes nothing (what that attempt read is
    /// left as it was). To leave an entity unchanged when there is nothing to do, abort with
    /// an error of your own that says so. `change` runs once per attempt, each time on the
    /// value just read; a failure of Redis is [`TryUpdateError::Failed`].
    pub async fn try_update<F, E>(&self, entity: &str, change: F) -> Result<Updated<T>, TryUpdateError<E>>
    where
        F: FnMut(Option<T>) -> Result<T, E>,
    {
        self.update_fenced(entity, change, None, Operation::Update).await
    }

    async fn update_fenced<F, E>(
        &self,
        entity: &str,
        change: F,
        fence: Option<&Fence>,
        operation: Operation,
    ) -> Result<Updated<T>, TryUpdateError<E>>
    where
        F: FnMut(Option<T>) -> Result<T, E>,
    {
        let started = std::time::Instant::now();
        let span = crate::spans::operation(operation, Some(entity));
        let result = tracing::Instrument::instrument(self.update_unobserved(entity, change, fence), span.clone()).await;
        // An abort is the caller's verdict, not a failure of the operation.
        match &result {
            Err(TryUpdateError::Failed(e)) => {
                let failed = Err::<(), _>(e.duplicate());
                crate::spans::finish(&span, &failed);
                self.exec.observe(operation, started, &failed);
            }
            _ => self.exec.observe(operation, started, &Ok::<(), Error>(())),
        }
        result
    }

    async fn update_unobserved<F, E>(
        &self,
        entity: &str,
        mut change: F,
        fence: Option<&Fence>,
    ) -> Result<Updated<T>, TryUpdateError<E>>
    where
        F: FnMut(Option<T>) -> Result<T, E>,
    {
        validate_entity_id(entity).map_err(Error::from)?;
        check_fence(fence)?;
        // One in-flight slot for the whole loop: shutdown waits for the update to finish.
        let _op = self.exec.begin()?;
        let max = self.exec.config.state.update_max_attempts;
        for attempt in 1..=max {
            let (expected, old) = match self.read(entity, Operation::Update).await? {
                Some(v) => (v.version, Some(v.value)),
                None => (Version::NONE, None),
            };
            let value = change(old).map_err(TryUpdateError::Aborted)?;
            let prepared = Prepared {
                op: WriteOp::Cas { expected: expected.0 },
                value: Some(&value),
            };
            match self.send(entity, &prepared, fence, None, Operation::Update).await {
                Ok(applied) => {
                    return Ok(Updated {
                        version: applied.version,
                        value,
                        attempts: attempt,
                    });
                }
                Err(Error::Conflict { .. }) if attempt < max => backoff(attempt).await,
                Err(Error::Conflict { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::TooManyConflicts {
            entity: entity.to_owned(),
            attempts: max,
        }
        .into())
    }

    /// Moves the entity to status `to` if its status is one of `from` (`""` in `from`
    /// stands for "no status yet"), writing `value` too if given. Returns the new
    /// version; [`Error::TransitionRefused`] with the actual status otherwise, or
    /// [`Error::NotFound`].
    pub async fn transition(&self, entity: &str, from: &[&str], to: &str, value: Option<&T>) -> Result<Version, Error> {
        let change = Change::Transition { from, to, value };
        self.write(entity, change, None, None).await.map(|a| a.version)
    }

    /// Deletes the entity if it is at `expected`; [`Error::Conflict`] or
    /// [`Error::NotFound`] otherwise.
    pub async fn delete_if(&self, entity: &str, expected: Version) -> Result<(), Error> {
        self.write(entity, Change::Delete(expected), None, None)
            .await
            .map(|_| ())
    }

    /// Deletes the entity whatever its version: `true` if it existed, `false` if there was
    /// nothing to delete. Like [`put`](Self::put) it is never re-sent when its outcome is
    /// unknown (a timeout): the error says so, and deleting again is harmless. Under a lease,
    /// use [`Fenced::delete`].
    pub async fn delete(&self, entity: &str) -> Result<bool, Error> {
        self.delete_fenced(entity, None).await
    }

    async fn delete_fenced(&self, entity: &str, fence: Option<&Fence>) -> Result<bool, Error> {
        let started = std::time::Instant::now();
        let span = crate::spans::operation(Operation::Delete, Some(entity));
        let result = match self.prepare(entity, Change::DeleteAny, fence, None) {
            Ok(prepared) => {
                let sent = self.send(entity, &prepared, fence, None, Operation::Delete);
                match tracing::Instrument::instrument(sent, span.clone()).await {
                    Ok(_) => Ok(true),
                    // Nothing to delete is an answer, not a failure.
                    Err(Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        crate::spans::finish(&span, &result);
        self.exec.observe(Operation::Delete, started, &result);
        result
    }

    /// Reads many entities at once: one result per id of `entities`, in their order (`None`
    /// where an entity does not exist). Every id is checked before anything is sent (a bad
    /// one is the error, and nothing is read); the reads are then submitted together, so the
    /// batcher sends them in a few pipelines, each to the server (or cluster master) of its
    /// entity. At most 1024 are in flight at once, so a long list does not fill the queues.
    /// The reads are not one snapshot: each entity is read atomically, on its own. The first
    /// failure (Redis, or a value that does not decode) is the error.
    pub async fn get_many(&self, entities: &[&str]) -> Result<Vec<Option<Versioned<T>>>, Error> {
        use futures_util::StreamExt;

        for entity in entities {
            validate_entity_id(entity)?;
        }
        // A window of reads in flight, refilled as the oldest answer (no closure held across
        // an await, so the future stays `Send`).
        let mut values = Vec::with_capacity(entities.len());
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let mut next = entities.iter();
        loop {
            while in_flight.len() < GET_MANY_IN_FLIGHT {
                let Some(entity) = next.next() else { break };
                in_flight.push_back(self.get(entity));
            }
            match in_flight.next().await {
                Some(value) => values.push(value?),
                None => return Ok(values),
            }
        }
    }

    /// Lists the entities of this namespace, page by page, without blocking the server:
    /// `SCAN` on every server; see [`EntityScan`] for what it guarantees. Nothing is sent
    /// until the first [`next_page`](EntityScan::next_page).
    pub fn entities(&self) -> EntityScan {
        EntityScan::new(Arc::clone(&self.exec), self.namespace.clone())
    }

    /// Ownership leases on this handle's namespace: a lease taken here fences the writes of
    /// this handle ([`under`](Self::under)), with no chance of naming another namespace.
    pub fn leases(&self) -> Leases {
        Leases::new(Arc::clone(&self.exec), self.namespace.clone())
    }

    /// Presence (heartbeats, the active count and members) of this handle's namespace.
    pub fn presence(&self) -> Presence {
        Presence::new(Arc::clone(&self.exec), self.namespace.clone())
    }

    /// Applies `change` exactly once per `message_id`: the change and the record of the id
    /// happen in one script, so a replay (a redelivered message, or a retry after a timeout)
    /// changes nothing and returns the first outcome — [`Applied::replayed`] tells, and a
    /// first outcome that was an error (a conflict, say) comes back as that error again.
    /// Ids are remembered per entity within `idempotency.keep` / `idempotency.keep_for`.
    pub async fn apply_once(&self, entity: &str, message_id: &str, change: Change<'_, T>) -> Result<Applied, Error> {
        self.write(entity, change, None, Some(message_id)).await
    }
}

/// Writes under a lease's fencing token; see [`StateHandle::under`].
#[derive(Debug)]
pub struct Fenced<'h, T, C> {
    handle: &'h StateHandle<T, C>,
    fence: Fence,
}

impl<T, C: Codec<T>> Fenced<'_, T, C> {
    /// [`StateHandle::put`], fenced.
    pub async fn put(&self, value: &T) -> Result<Version, Error> {
        let f = &self.fence;
        self.handle
            .write(&f.entity, Change::Put(value), Some(f), None)
            .await
            .map(|a| a.version)
    }

    /// [`StateHandle::cas`], fenced.
    pub async fn cas(&self, expected: Version, value: &T) -> Result<Version, Error> {
        let f = &self.fence;
        let change = Change::Cas(expected, value);
        self.handle
            .write(&f.entity, change, Some(f), None)
            .await
            .map(|a| a.version)
    }

    /// [`StateHandle::update`], fenced: every attempt carries the token.
    pub async fn update<F>(&self, mut change: F) -> Result<Updated<T>, Error>
    where
        F: FnMut(Option<T>) -> T,
    {
        let change = move |old| Ok::<_, Infallible>(change(old));
        self.handle
            .update_fenced(&self.fence.entity, change, Some(&self.fence), Operation::Update)
            .await
            .map_err(TryUpdateError::into_error)
    }

    /// [`StateHandle::try_update`], fenced: every attempt carries the token.
    pub async fn try_update<F, E>(&self, change: F) -> Result<Updated<T>, TryUpdateError<E>>
    where
        F: FnMut(Option<T>) -> Result<T, E>,
    {
        self.handle
            .update_fenced(&self.fence.entity, change, Some(&self.fence), Operation::Update)
            .await
    }

    /// [`StateHandle::delete`], fenced: refused with [`Error::Fenced`] (nothing deleted) when
    /// the lease is stale. Re-sent when its outcome is unknown, as every fenced write is; a
    /// retry of a delete that did apply returns its first outcome.
    pub async fn delete(&self) -> Result<bool, Error> {
        self.handle.delete_fenced(&self.fence.entity, Some(&self.fence)).await
    }

    /// [`StateHandle::transition`], fenced.
    pub async fn transition(&self, from: &[&str], to: &str, value: Option<&T>) -> Result<Version, Error> {
        let f = &self.fence;
        let change = Change::Transition { from, to, value };
        self.handle
            .write(&f.entity, change, Some(f), None)
            .await
            .map(|a| a.version)
    }

    /// [`StateHandle::delete_if`], fenced.
    pub async fn delete_if(&self, expected: Version) -> Result<(), Error> {
        let f = &self.fence;
        self.handle
            .write(&f.entity, Change::Delete(expected), Some(f), None)
            .await
            .map(|_| ())
    }

    /// [`StateHandle::apply_once`], fenced.
    pub async fn apply_once(&self, message_id: &str, change: Change<'_, T>) -> Result<Applied, Error> {
        let f = &self.fence;
        self.handle.write(&f.entity, change, Some(f), Some(message_id)).await
    }
}

/// Why [`StateHandle::try_update`] ended without writing.
#[derive(Debug)]
#[non_exhaustive]
pub enum TryUpdateError<E> {
    /// The closure returned `Err`: nothing was written.
    Aborted(E),
    /// The update failed ([`Error::TooManyConflicts`], a fence, Redis…).
    Failed(Error),
}

impl<E> TryUpdateError<E> {
    /// The closure's error, if it aborted.
    pub fn aborted(self) -> Option<E> {
        match self {
            TryUpdateError::Aborted(e) => Some(e),
            TryUpdateError::Failed(_) => None,
        }
    }
}

impl TryUpdateError<Infallible> {
    fn into_error(self) -> Error {
        match self {
            TryUpdateError::Failed(e) => e,
            TryUpdateError::Aborted(never) => match never {},
        }
    }
}

impl<E> From<Error> for TryUpdateError<E> {
    fn from(e: Error) -> Self {
        TryUpdateError::Failed(e)
    }
}

impl<E: fmt::Display> fmt::Display for TryUpdateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryUpdateError::Aborted(e) => write!(f, "update aborted: {e}"),
            TryUpdateError::Failed(e) => write!(f, "update failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TryUpdateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryUpdateError::Aborted(e) => Some(e),
            TryUpdateError::Failed(e) => Some(e),
        }
    }
}

/// Most reads of one [`StateHandle::get_many`] in flight at once.
const GET_MANY_IN_FLIGHT: usize = 1024;

/// Refuses a hand-made fence with token 0: no lease ever has it.
fn check_fence(fence: Option<&Fence>) -> Result<(), Error> {
    if fence.is_some_and(|f| f.token == 0) {
        return Err(Error::InvalidArgument {
            name: "fence",
            reason: "token 0 is never issued".into(),
        });
    }
    Ok(())
}

/// The longest expiry a write sets: 100 years, in ms (the write script refuses more).
const MAX_TTL_MS: u128 = 3_153_600_000_000;

/// A message id no caller chooses: `~` and two hashes keyed by the process's random
/// `RandomState` keys (unique per call within a process, unpredictable across processes).
fn automatic_message_id() -> String {
    let a = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let b = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("~{a:016x}{b:016x}")
}

/// A token of one call, the same for each of its retries: 16 hex digits from the process's
/// random `RandomState` keys.
fn call_nonce() -> String {
    let n = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{n:016x}")
}

/// Sleeps a random time, growing with the attempt, so that contending writers spread out.
async fn backoff(attempt: u32) {
    let cap_us = 100u64 << attempt.min(6); // 200 µs .. 6.4 ms
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    tokio::time::sleep(Duration::from_micros(random % cap_us)).await;
}
