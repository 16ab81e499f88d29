//! Typed handles on the entities of one namespace: get, put, cas, update, transition, delete_if.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stateful_redis_core::{
    Codec, Error, KeyLayout, Namespace, SealError, Version, Versioned, validate_entity_id, validate_status,
};
use stateful_redis_scripts::{Cas, CasReply, DeleteIf, DeleteReply, Get, Put, Transition, TransitionReply};

use crate::executor::Inner;

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
    /// (rounded up to whole milliseconds). Without it, writes leave expiry as it is.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = (ttl.as_nanos().div_ceil(1_000_000)).clamp(1, u64::MAX as u128) as u64;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The Redis key of an entity's state hash.
    pub fn state_key(&self, entity: &str) -> Result<String, Error> {
        validate_entity_id(entity)?;
        Ok(self.keys.state(entity))
    }

    fn seal(&self, entity: &str, value: &T) -> Result<Bytes, Error> {
        self.exec.envelope.seal(&*self.codec, value).map_err(|e| match e {
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
                source: stateful_redis_core::CodecError::Serde {
                    format: "envelope",
                    source: other.to_string().into(),
                },
            },
        })
    }

    /// Reads an entity: `None` if it does not exist.
    pub async fn get(&self, entity: &str) -> Result<Option<Versioned<T>>, Error> {
        let key = self.state_key(entity)?;
        let _op = self.exec.begin()?;
        let Some(record) = self.exec.run_idempotent(&Get { key: &key }).await? else {
            return Ok(None);
        };
        let record = record.map_err(|m| Error::Corrupt {
            entity: entity.to_owned(),
            detail: m.0,
        })?;
        let value = self
            .exec
            .envelope
            .open(&*self.codec, &record.data)
            .map_err(|source| Error::Decode {
                entity: entity.to_owned(),
                source,
            })?;
        Ok(Some(Versioned {
            version: Version(record.version),
            value,
            status: record.status,
            updated_ms: record.updated_ms,
        }))
    }

    /// Writes unconditionally and returns the new version.
    pub async fn put(&self, entity: &str, value: &T) -> Result<Version, Error> {
        let key = self.state_key(entity)?;
        let data = self.seal(entity, value)?;
        let _op = self.exec.begin()?;
        let call = Put {
            key: &key,
            data: &data,
            ttl_ms: self.ttl_ms,
        };
        self.exec.run(&call).await.map(Version)
    }

    /// Writes only if the entity is at `expected` ([`Version::NONE`]: only if it does not
    /// exist). Returns the new version, or [`Error::Conflict`] with the current one.
    pub async fn cas(&self, entity: &str, expected: Version, value: &T) -> Result<Version, Error> {
        let key = self.state_key(entity)?;
        let data = self.seal(entity, value)?;
        let _op = self.exec.begin()?;
        self.cas_sealed(entity, &key, expected, &data).await
    }

    async fn cas_sealed(&self, entity: &str, key: &str, expected: Version, data: &[u8]) -> Result<Version, Error> {
        let call = Cas {
            key,
            expected: expected.0,
            data,
            ttl_ms: self.ttl_ms,
        };
        match self.exec.run(&call).await? {
            CasReply::Applied(v) => Ok(Version(v)),
            CasReply::Conflict(current) => Err(Error::Conflict {
                entity: entity.to_owned(),
                expected,
                current: Version(current),
            }),
        }
    }

    /// Read-modify-write: reads the entity (`None` if absent), applies `change`, and
    /// writes the result at the version read. On a conflict it backs off briefly and
    /// tries again, up to `state.update_max_attempts` times; [`Updated::attempts`] says how
    /// many it took. No update is ever lost: every write is a compare-and-set.
    pub async fn update<F>(&self, entity: &str, mut change: F) -> Result<Updated<T>, Error>
    where
        F: FnMut(Option<T>) -> T,
    {
        let key = self.state_key(entity)?;
        let max = self.exec.config.state.update_max_attempts;
        for attempt in 1..=max {
            let current = self.get(entity).await?;
            let (expected, old) = match current {
                Some(v) => (v.version, Some(v.value)),
                None => (Version::NONE, None),
            };
            let value = change(old);
            let data = self.seal(entity, &value)?;
            let _op = self.exec.begin()?;
            match self.cas_sealed(entity, &key, expected, &data).await {
                Ok(version) => {
                    return Ok(Updated {
                        version,
                        value,
                        attempts: attempt,
                    });
                }
                Err(Error::Conflict { .. }) if attempt < max => backoff(attempt).await,
                Err(Error::Conflict { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyConflicts {
            entity: entity.to_owned(),
            attempts: max,
        })
    }

    /// Moves the entity to status `to` if its status is one of `from` (`""` in `from`
    /// stands for "no status yet"), writing `value` too if given. Returns the new
    /// version; [`Error::TransitionRefused`] with the actual status otherwise, or
    /// [`Error::NotFound`].
    pub async fn transition(&self, entity: &str, from: &[&str], to: &str, value: Option<&T>) -> Result<Version, Error> {
        let key = self.state_key(entity)?;
        validate_status(to)?;
        for status in from.iter().filter(|s| !s.is_empty()) {
            validate_status(status)?;
        }
        let data = value.map(|v| self.seal(entity, v)).transpose()?;
        let _op = self.exec.begin()?;
        let call = Transition {
            key: &key,
            from,
            to,
            data: data.as_deref(),
            ttl_ms: self.ttl_ms,
        };
        match self.exec.run(&call).await? {
            TransitionReply::Applied(v) => Ok(Version(v)),
            TransitionReply::Refused(actual) => Err(Error::TransitionRefused {
                entity: entity.to_owned(),
                actual,
            }),
            TransitionReply::NotFound => Err(Error::NotFound {
                entity: entity.to_owned(),
            }),
        }
    }

    /// Deletes the entity if it is at `expected`; [`Error::Conflict`] or
    /// [`Error::NotFound`] otherwise.
    pub async fn delete_if(&self, entity: &str, expected: Version) -> Result<(), Error> {
        let key = self.state_key(entity)?;
        let _op = self.exec.begin()?;
        match self
            .exec
            .run(&DeleteIf {
                key: &key,
                expected: expected.0,
            })
            .await?
        {
            DeleteReply::Deleted => Ok(()),
            DeleteReply::Conflict(current) => Err(Error::Conflict {
                entity: entity.to_owned(),
                expected,
                current: Version(current),
            }),
            DeleteReply::NotFound => Err(Error::NotFound {
                entity: entity.to_owned(),
            }),
        }
    }
}

/// Sleeps a random time, growing with the attempt, so that contending writers spread out.
async fn backoff(attempt: u32) {
    let cap_us = 100u64 << attempt.min(6); // 200 µs .. 6.4 ms
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    tokio::time::sleep(Duration::from_micros(random % cap_us)).await;
}
