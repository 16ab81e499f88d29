//! The executor: one entry point through which every state operation goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use stateful_redis_core::{Codec, Envelope, Error, ExecutorConfig, Namespace, RedisConfig, SerdeCodec};
use stateful_redis_pool::{ConnectHook, Pool, PoolStats, SharedConnection};
use stateful_redis_scripts::{Invocation, ScriptStats, Scripts};
use tokio::sync::Notify;

use crate::leases::Leases;
use crate::presence::Presence;
use crate::state::StateHandle;

/// Builds a [`StatefulExecutor`] from a configuration.
#[derive(Debug, Default)]
#[must_use]
pub struct ExecutorBuilder {
    config: ExecutorConfig,
}

impl ExecutorBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ExecutorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the Redis URL (`redis://user:password@host:port/db`, `rediss://…` for TLS).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.redis.url = stateful_redis_core::RedisUrl::new(url);
        self
    }

    /// Replaces the Redis connection settings.
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.config.redis = redis;
        self
    }

    /// Edits the configuration in place.
    pub fn with(mut self, edit: impl FnOnce(&mut ExecutorConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Validates the configuration, connects (failing at once on a wrong address or
    /// password) and loads the scripts.
    pub async fn build(self) -> Result<StatefulExecutor, Error> {
        self.config.validate()?;
        let scripts = Arc::new(Scripts::new());
        let hook: Arc<dyn ConnectHook> = Arc::clone(&scripts) as Arc<dyn ConnectHook>;
        let pool = Pool::connect(&self.config.redis, vec![hook]).await?;
        let envelope = Envelope::new(self.config.state.max_value_size, self.config.state.compress_above);
        Ok(StatefulExecutor {
            inner: Arc::new(Inner {
                pool,
                scripts,
                envelope,
                config: self.config,
                in_flight: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                drained: Notify::new(),
                retries: AtomicU64::new(0),
            }),
        })
    }
}

/// Versioned, atomic per-entity state in Redis.
///
/// Cheap to clone; clones share connections. Get typed handles with
/// [`state`](Self::state); stop with [`shutdown`](Self::shutdown).
#[derive(Debug, Clone)]
pub struct StatefulExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) envelope: Envelope,
    pub(crate) config: ExecutorConfig,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    drained: Notify,
    retries: AtomicU64,
}

/// Counts an operation in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.closed.load(Ordering::Acquire) {
            self.0.drained.notify_waiters();
        }
    }
}

impl Inner {
    /// Admits an operation, or refuses it once shutdown began.
    pub(crate) fn begin(&self) -> Result<InFlight<'_>, Error> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        Ok(guard)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.pool.response_timeout()
    }

    async fn connection(&self) -> Result<SharedConnection, Error> {
        self.pool.shared().await
    }

    /// Runs one script call on a shared connection.
    pub(crate) async fn run<I: Invocation>(&self, call: &I) -> Result<I::Reply, Error> {
        let mut conn = self.connection().await?;
        self.scripts.invoke(&mut conn, call, self.timeout()).await
    }

    /// Runs a call that is safe to repeat (a read, a fenced or idempotent write, a lease
    /// call): when its outcome is unknown (timeout, broken connection) it is sent again,
    /// up to `retry.attempts` in all, with doubling pauses. Never use it for plain writes.
    pub(crate) async fn run_safe<I: Invocation>(&self, call: &I) -> Result<I::Reply, Error> {
        let retry = &self.config.retry;
        let mut pause = retry.backoff;
        let mut attempt = 1;
        loop {
            match self.run(call).await {
                Err(e) if e.is_outcome_unknown() && attempt < retry.attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(script = call.script().name(), attempt, error = %e, "retrying a safe call");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs calls as one pipeline on a shared connection (safe calls only: the whole
    /// pipeline is retried when its outcome is unknown).
    pub(crate) async fn run_many_safe<I: Invocation>(
        &self,
        calls: &[I],
    ) -> Result<Vec<Result<I::Reply, Error>>, Error> {
        let commands: Vec<_> = calls.iter().map(|c| (c.script(), c.command())).collect();
        let retry = &self.config.retry;
        let mut pause = retry.backoff;
        let mut attempt = 1;
        let results = loop {
            let mut conn = self.connection().await;
            let result = match &mut conn {
                Ok(conn) => self.scripts.invoke_pipeline(conn, &commands, self.timeout()).await,
                Err(_) => conn.map(|_| Vec::new()),
            };
            match result {
                Err(e) if e.is_outcome_unknown() && attempt < retry.attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                other => break other?,
            }
        };
        Ok(calls
            .iter()
            .zip(results)
            .map(|(call, result)| {
                result.and_then(|value| {
                    call.parse(value).map_err(|detail| Error::UnexpectedReply {
                        what: call.script().name(),
                        detail,
                    })
                })
            })
            .collect())
    }
}

impl StatefulExecutor {
    /// A builder with the default configuration.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// A handle on the entities of `namespace`, whose values are `T` stored with serde
    /// JSON. Fails if the namespace is invalid.
    pub fn state<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
        &self,
        namespace: &str,
    ) -> Result<StateHandle<T, SerdeCodec>, Error> {
        self.state_with_codec(namespace, SerdeCodec::json())
    }

    /// A handle on the entities of `namespace`, whose values are `T` stored with `codec`.
    pub fn state_with_codec<T, C: Codec<T>>(&self, namespace: &str, codec: C) -> Result<StateHandle<T, C>, Error> {
        Ok(StateHandle::new(
            Arc::clone(&self.inner),
            Namespace::new(namespace)?,
            codec,
        ))
    }

    /// The connection pool, for its statistics, resizing, or commands of your own.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The pool's statistics.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// How often scripts were loaded and reloaded.
    pub fn script_stats(&self) -> ScriptStats {
        self.inner.scripts.stats()
    }

    /// The configuration the executor runs with (secrets redacted in its `Debug`).
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    /// Calls re-sent after their outcome was unknown (only calls safe to repeat are).
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Ownership leases on the entities of `namespace` (the namespace of the state they guard).
    pub fn leases(&self, namespace: &str) -> Result<Leases, Error> {
        Ok(Leases::new(Arc::clone(&self.inner), Namespace::new(namespace)?))
    }

    /// Presence (heartbeats and the active count) of the entities of `namespace`.
    pub fn presence(&self, namespace: &str) -> Result<Presence, Error> {
        Ok(Presence::new(Arc::clone(&self.inner), Namespace::new(namespace)?))
    }

    /// Operations running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Refuses new operations ([`Error::Shutdown`]), waits for those in flight to finish,
    /// then closes the connections. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        loop {
            let drained = self.inner.drained.notified();
            tokio::pin!(drained);
            // Register before checking, so a wake-up between the check and the await is not lost.
            drained.as_mut().enable();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            drained.await;
        }
        self.inner.pool.close();
    }
}
