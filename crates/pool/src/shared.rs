//! Shared multiplexed links: one socket serves many callers' pipelined requests, and
//! heals itself (reconnect + hooks) after the connection breaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use stateful_redis_core::Error;

use crate::connect::Connector;
use crate::error::breaks_connection;

/// Counters shared by the links of one pool.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) failed_connects: AtomicU64,
    /// Bytes written to and read from direct links.
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// Woken when a request finds a connection broken: the health check then probes
    /// every link at once, since a server restart breaks them all.
    pub(crate) broken: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct LinkState {
    live: Option<(MultiplexedConnection, u64)>,
    /// When the last reconnect failed, and why.
    failure: Option<(Instant, String)>,
}

/// One shared connection slot.
#[derive(Debug)]
pub(crate) struct Link {
    state: RwLock<LinkState>,
    /// Single-flight reconnects.
    reconnect: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    counters: Arc<LinkCounters>,
}

impl Link {
    pub(crate) fn new(counters: Arc<LinkCounters>) -> Self {
        Self {
            state: RwLock::default(),
            reconnect: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            counters,
        }
    }

    fn current(self: &Arc<Self>) -> Option<SharedConnection> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.live.as_ref().map(|(conn, generation)| SharedConnection {
            conn: conn.clone(),
            link: Arc::clone(self),
            generation: *generation,
        })
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).live.is_some()
    }

    /// The live connection, opening one if there is none. Callers that queue behind a
    /// failing reconnect get its error at once instead of each waiting out a timeout.
    pub(crate) async fn get(self: &Arc<Self>, connector: &Connector) -> Result<SharedConnection, Error> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let started = Instant::now();
        let _guard = self.reconnect.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if let Some((at, message)) = &self.state.read().unwrap_or_else(|p| p.into_inner()).failure
            && *at >= started
        {
            return Err(Error::Connection {
                message: message.clone(),
                source: None,
            });
        }
        let span = crate::direct::connect_span(
            "shared",
            connector.server(),
            self.generation.load(Ordering::Relaxed) > 0,
        );
        match tracing::Instrument::instrument(connector.open(), span.clone()).await {
            Ok(conn) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                state.live = Some((conn, generation));
                state.failure = None;
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(parent: &span, generation, "shared Redis connection opened");
                drop(state);
                self.current().ok_or(Error::Shutdown)
            }
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "connecting to Redis failed");
                self.counters.failed_connects.fetch_add(1, Ordering::Relaxed);
                self.state.write().unwrap_or_else(|p| p.into_inner()).failure = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Drops the connection of `generation` (if it is still the live one).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if matches!(state.live, Some((_, g)) if g == generation) {
            state.live = None;
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
            self.counters.broken.notify_one();
            tracing::debug!(generation, "shared Redis connection broke; it reopens on next use");
        }
    }

    pub(crate) fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.live.take().is_some() {
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A handle on a shared multiplexed connection: cheap to clone, safe to use from many
/// tasks at once. A request that finds the connection broken retires it, so the next
/// [`Pool::shared`](crate::Pool::shared) opens a fresh one (and reloads scripts).
#[derive(Clone)]
pub struct SharedConnection {
    conn: MultiplexedConnection,
    link: Arc<Link>,
    generation: u64,
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SharedConnection {
    /// Which connection of its link this is: it changes after every reconnect.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn check<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &result
            && breaks_connection(e)
        {
            self.link.invalidate(self.generation);
        }
        result
    }
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.send_packed_command(cmd).await;
            self.check(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.send_packed_commands(pipeline, offset, count).await;
            self.check(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
