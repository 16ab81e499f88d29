//! The pool: shared multiplexed links for pipelined traffic, a bb8 pool for exclusive
//! use, a background health check, statistics and live resize.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use stateful_redis_core::{Error, PoolConfig, RedisConfig};

use crate::cluster::{ClusterRouter, ClusterStats};
use crate::connect::{ConnectHook, Connector};
use crate::direct::{DirectLink, Reply, Target};
use crate::eviction::EvictionPolicy;
use crate::exclusive::{ExclusiveConnection, Manager, ping};
use crate::packed::Packable;
use crate::shared::{Link, LinkCounters, SharedConnection};

/// Counts and gauges of one pool. Cumulative counters never go down, across resizes too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Shared multiplexed links configured.
    pub shared_links: u32,
    /// Shared links connected now.
    pub shared_connected: u32,
    /// Most exclusive connections allowed now.
    pub max_size: u32,
    /// Exclusive connections open now.
    pub connections: u32,
    /// Exclusive connections idle now.
    pub idle: u32,
    /// Exclusive connections checked out now.
    pub in_use: u32,
    /// Callers waiting for an exclusive connection now.
    pub waiters: u64,
    /// Checkouts that had to wait.
    pub waits: u64,
    /// Total time callers waited for a checkout.
    pub wait_time: Duration,
    /// Checkouts that gave up waiting.
    pub timeouts: u64,
    /// Connections opened (shared and exclusive).
    pub created: u64,
    /// Connections closed because they broke, failed a check or expired.
    pub closed: u64,
    /// Attempts to open a shared connection that failed.
    pub failed_connects: u64,
    /// Direct pipeline links (the executor's hot path; 0 for TLS and unix sockets; on a
    /// cluster, one per master).
    pub direct_links: u32,
    /// Direct pipeline links connected now.
    pub direct_connected: u32,
    /// Bytes written to Redis on the direct links (cumulative).
    pub bytes_sent: u64,
    /// Bytes read from Redis on the direct links (cumulative).
    pub bytes_received: u64,
    /// Servers (masters) whose `maxmemory-policy` may evict keys, as the last health check
    /// read it: above 0, leases and exactly-once are at risk (see [`EvictionPolicy`]).
    pub evicting_servers: u32,
}

/// Called with how long each checkout of an exclusive connection took (see
/// [`Pool::on_checkout`]).
pub type CheckoutObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Connections to one standalone Redis.
///
/// Pipelined traffic goes over direct links ([`pipeline`](Self::pipeline)) on plain TCP, or
/// over a few shared multiplexed links ([`shared`](Self::shared)), so work in flight is not
/// capped by a checkout per operation; the bb8 pool ([`exclusive`](Self::exclusive)) serves
/// what needs a connection of its own. Every new
/// connection runs the [`ConnectHook`]s (script preload) before serving anyone.
/// Clones share the same connections.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    links: Box<[Arc<Link>]>,
    direct: Box<[DirectLink]>,
    next: AtomicUsize,
    link_counters: Arc<LinkCounters>,
    /// `None` once closed.
    exclusive: RwLock<Option<bb8::Pool<Manager>>>,
    /// Statistics of exclusive pools replaced by a resize.
    retired: Mutex<PoolStats>,
    config: Mutex<PoolConfig>,
    closed: AtomicBool,
    on_checkout: OnCheckout,
    /// With `redis.cluster`: the slot map and a link per master.
    cluster: Option<ClusterRouter>,
    /// Every server's `maxmemory-policy` as last read.
    policies: Mutex<Vec<EvictionPolicy>>,
    /// The standalone server's `host:port` (no credentials), as [`Pool::to_each_server`]
    /// names it.
    server: String,
}

#[derive(Default)]
struct OnCheckout(RwLock<Option<CheckoutObserver>>);

impl std::fmt::Debug for OnCheckout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnCheckout")
    }
}

impl Pool {
    /// Connects to the Redis of `config`, runs `hooks` on every new connection, and
    /// starts the background health check. Opens the links the hot path uses at once (the
    /// direct links on plain TCP; the shared links for TLS and unix sockets) and fails if
    /// they cannot be opened (wrong address, wrong password), so a bad configuration shows
    /// at once.
    ///
    /// Needs a Tokio runtime.
    pub async fn connect(config: &RedisConfig, hooks: Vec<Arc<dyn ConnectHook>>) -> Result<Self, Error> {
        let connector = Connector::new(config, hooks)?;
        let link_counters = Arc::new(LinkCounters::default());
        let links = (0..config.pool.pipeline_links)
            .map(|_| Arc::new(Link::new(Arc::clone(&link_counters))))
            .collect::<Box<[_]>>();
        let exclusive = build_exclusive(&connector, &config.pool);
        let cluster = if config.cluster {
            Some(ClusterRouter::connect(config, Arc::clone(&connector.hooks), Arc::clone(&link_counters)).await?)
        } else {
            None
        };
        let direct: Box<[DirectLink]> = match Target::of(config, Arc::clone(&connector.hooks))? {
            // A cluster's traffic goes over its masters' links.
            Some(_) if cluster.is_some() => Box::new([]),
            Some(target) => (0..config.pool.pipeline_links)
                .map(|_| DirectLink::new(target.clone(), Arc::clone(&link_counters)))
                .collect(),
            None => Box::new([]),
        };
        let inner = Arc::new(Inner {
            connector,
            links,
            direct,
            next: AtomicUsize::new(0),
            link_counters,
            exclusive: RwLock::new(Some(exclusive)),
            retired: Mutex::new(PoolStats::default()),
            config: Mutex::new(config.pool.clone()),
            closed: AtomicBool::new(false),
            on_checkout: OnCheckout::default(),
            cluster,
            policies: Mutex::new(Vec::new()),
            server: server_address(config),
        });
        // Open the links the hot path uses now: a bad address or password fails here. With
        // direct links, the redis-rs shared links open on first use of `shared()`.
        if inner.direct.is_empty() && inner.cluster.is_none() {
            for link in inner.links.iter() {
                link.get(&inner.connector).await?;
            }
        }
        for link in inner.direct.iter() {
            link.pipeline(&[], 0).await?;
        }
        tokio::spawn(health_check(Arc::downgrade(&inner), config.pool.health_check_interval));
        Ok(Self { inner })
    }

    /// A shared multiplexed connection (round robin over the links), reopened first if it
    /// broke. Use it for single commands and pipelines; never for `MULTI`/`WATCH`,
    /// blocking commands or `SELECT`, which need [`exclusive`](Self::exclusive).
    pub async fn shared(&self) -> Result<SharedConnection, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.links.len();
        self.inner.links[i].get(&self.inner.connector).await
    }

    /// The shared connection of link `index` (modulo the number of links), reopened first
    /// if it broke. Traffic that must keep its order (a batcher's shard) uses one link.
    pub async fn shared_at(&self, index: usize) -> Result<SharedConnection, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let link = &self.inner.links[index % self.inner.links.len()];
        link.get(&self.inner.connector).await
    }

    /// How many shared links there are.
    pub fn shared_links(&self) -> usize {
        self.inner.links.len()
    }

    /// Direct pipeline links: as many as shared links for a plain `redis://` URL, none
    /// for TLS or unix sockets (use [`shared_at`](Self::shared_at) then).
    pub fn direct_links(&self) -> usize {
        self.inner.direct.len()
    }

    /// Sends `commands` as one pipeline on direct link `index` (modulo their number) and
    /// returns each command's reply, in order: a value, or the server's error message.
    /// Pipelines on one link are written and answered in the order of the calls. The link
    /// reconnects (and runs the connect hooks' commands) after it breaks.
    ///
    /// Send only commands with exactly one reply that leave the connection as they found
    /// it: never `SELECT`, `CLIENT REPLY`, `SUBSCRIBE`, `MULTI` or blocking commands, which
    /// would derail the link for the executor's traffic (use [`exclusive`](Self::exclusive)).
    pub async fn pipeline<'c, C: Packable + 'c>(
        &self,
        index: usize,
        commands: impl IntoIterator<Item = &'c C>,
    ) -> Result<Vec<Reply>, Error> {
        let (packed, count) = pack(commands);
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let Some(link) = self.inner.direct.get(index % self.inner.direct.len().max(1)) else {
            return Err(Error::Connection {
                message: "no direct pipeline link for this URL (TLS or unix socket)".into(),
                source: None,
            });
        };
        link.pipeline(&packed, count).await
    }

    /// Whether this pool talks to a Redis Cluster (`redis.cluster`).
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// Cluster only: sends each command to the master of its slot (one pipeline per
    /// master, all at once) and returns each command's reply in order, or the error of
    /// the connection it went on. `MOVED` and `ASK` redirects are followed and `TRYAGAIN`
    /// retried, so a reply is never a redirect; the topology is read again after a
    /// redirect or a lost node. Commands with exactly one reply only (as for
    /// [`pipeline`](Self::pipeline)).
    pub async fn cluster_pipeline<C: Packable + Sync>(&self, commands: &[(u16, &C)]) -> Vec<Result<Reply, Error>> {
        let Some(router) = &self.inner.cluster else {
            let e = Error::Connection {
                message: "not a cluster pool (redis.cluster is false)".into(),
                source: None,
            };
            return commands.iter().map(|_| Err(e.duplicate())).collect();
        };
        if self.inner.closed.load(Ordering::Acquire) {
            return commands.iter().map(|_| Err(Error::Shutdown)).collect();
        }
        router.pipeline(commands).await
    }

    /// Cluster only: sends `commands` to every master (one pipeline each); each master's
    /// `host:port` with its replies or its error. Empty for a standalone pool.
    pub async fn to_every_master(&self, commands: &[redis::Cmd]) -> Vec<(String, Result<Vec<Reply>, Error>)> {
        match &self.inner.cluster {
            Some(router) => router.to_every_master(commands).await,
            None => Vec::new(),
        }
    }

    /// Reads every server's `maxmemory-policy` ([`eviction_policies`](Self::eviction_policies)),
    /// keeps it for [`PoolStats::evicting_servers`], and logs a warning when a server's policy
    /// changed to one that evicts. The health check calls it on every round.
    pub async fn check_eviction(&self) -> Result<Vec<EvictionPolicy>, Error> {
        let policies = self.eviction_policies().await?;
        let mut known = self.inner.policies.lock().unwrap_or_else(|p| p.into_inner());
        for policy in policies.iter().filter(|p| !p.keeps_every_key()) {
            if !known.contains(policy) {
                tracing::warn!(
                    server = %policy.node,
                    policy = %policy.policy,
                    "maxmemory-policy evicts keys: {}",
                    policy.what_it_breaks()
                );
            }
        }
        known.clone_from(&policies);
        Ok(policies)
    }

    /// Sends `commands` as one pipeline to every server the pool writes to (the standalone
    /// server, or every master of a cluster, all at once) and returns each server's
    /// `host:port` with each command's reply in order, or the error of its connection.
    /// For what every server must answer for itself: settings, script loads, the checks of
    /// `stateful-redis check`. Commands with exactly one reply only (as for
    /// [`pipeline`](Self::pipeline)).
    pub async fn to_each_server(&self, commands: &[redis::Cmd]) -> Vec<(String, Result<Vec<Reply>, Error>)> {
        if let Some(router) = &self.inner.cluster {
            return router.to_every_master(commands).await;
        }
        let replies = if self.direct_links() > 0 {
            self.pipeline(0, commands).await
        } else {
            self.shared_pipeline(commands).await
        };
        vec![(self.inner.server.clone(), replies)]
    }

    /// `commands` on a shared link, each answered on its own (an error reply does not fail
    /// the others) and error replies as the server sent them (`NOPERM this user…`), as on
    /// the direct links, so that [`server_error`](crate::server_error) classifies them alike.
    async fn shared_pipeline(&self, commands: &[redis::Cmd]) -> Result<Vec<Reply>, Error> {
        let mut conn = self.shared_at(0).await?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in commands {
            pipe.add_command(cmd.clone());
        }
        let values: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| crate::error::map_redis_error(e, self.response_timeout()))?;
        Ok(values
            .into_iter()
            .map(|value| match value {
                redis::Value::ServerError(e) => Err(match e.details() {
                    Some(details) => format!("{} {details}", e.code()),
                    None => e.code().to_owned(),
                }),
                other => Ok(other),
            })
            .collect())
    }

    /// Cluster only: the `host:port` of the master serving `slot` in the pool's map.
    pub fn master_of_slot(&self, slot: u16) -> Option<String> {
        self.inner.cluster.as_ref()?.address_of(slot)
    }

    /// Cluster only: reads the topology again now.
    pub async fn refresh_topology(&self) -> Result<(), Error> {
        match &self.inner.cluster {
            Some(router) => router.refresh(true).await,
            None => Ok(()),
        }
    }

    /// Cluster only: the routing's counts and each master's figures.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.inner.cluster.as_ref().map(ClusterRouter::stats)
    }

    /// A connection of its own, waiting up to the checkout timeout.
    pub async fn exclusive(&self) -> Result<ExclusiveConnection, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let pool = self.exclusive_pool().ok_or(Error::Shutdown)?;
        let observer = self
            .inner
            .on_checkout
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let started = observer.is_some().then(std::time::Instant::now);
        let got = pool.get_owned().await;
        if let (Some(observe), Some(started)) = (observer, started) {
            observe(started.elapsed());
        }
        match got {
            Ok(inner) => Ok(ExclusiveConnection { inner }),
            Err(bb8::RunError::User(e)) => Err(e),
            Err(bb8::RunError::TimedOut) => Err(Error::PoolExhausted {
                waited: pool.config().connection_timeout,
            }),
        }
    }

    /// Calls `observe` with the time each checkout of an exclusive connection took (waits
    /// that timed out included), replacing the observer set before: the executor feeds
    /// its pool wait histogram with it.
    pub fn on_checkout(&self, observe: CheckoutObserver) {
        *self.inner.on_checkout.0.write().unwrap_or_else(|p| p.into_inner()) = Some(observe);
    }

    fn exclusive_pool(&self) -> Option<bb8::Pool<Manager>> {
        self.inner.exclusive.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The reply timeout every request is held to.
    pub fn response_timeout(&self) -> Duration {
        self.inner.connector.response_timeout
    }

    /// Changes the most exclusive connections allowed, live (at most
    /// `max_size_limit`). Connections checked out now finish their work and close when
    /// returned; new checkouts use the new size.
    pub fn resize(&self, max_size: u32) -> Result<(), Error> {
        let mut next = self.config();
        next.max_size = max_size;
        next.min_idle = next.min_idle.min(max_size);
        self.apply(&next).map(|_| ())
    }

    /// Takes the exclusive pool's settings of `next` live (`max_size`, `max_size_limit`,
    /// `min_idle`, `checkout_timeout`), validated first: on error nothing changes. Returns
    /// the fields that cannot change without reconnecting (`pipeline_links`,
    /// `health_check_interval`), which keep their old values.
    pub fn apply(&self, next: &PoolConfig) -> Result<Vec<&'static str>, Error> {
        let mut config = self.inner.config.lock().unwrap_or_else(|p| p.into_inner());
        let mut restart = Vec::new();
        let mut next = next.clone();
        if next.pipeline_links != config.pipeline_links {
            restart.push("redis.pool.pipeline_links");
            next.pipeline_links = config.pipeline_links;
        }
        if next.health_check_interval != config.health_check_interval {
            restart.push("redis.pool.health_check_interval");
            next.health_check_interval = config.health_check_interval;
        }
        let rebuild = next.max_size != config.max_size
            || next.min_idle != config.min_idle
            || next.checkout_timeout != config.checkout_timeout;
        let mut check = RedisConfig::default();
        check.pool = next.clone();
        check.validate()?;
        if !rebuild {
            *config = next;
            return Ok(restart);
        }
        let fresh = build_exclusive(&self.inner.connector, &next);
        let mut slot = self.inner.exclusive.write().unwrap_or_else(|p| p.into_inner());
        let Some(old) = slot.replace(fresh) else {
            *slot = None;
            return Err(Error::Shutdown);
        };
        drop(slot);
        let mut retired = self.inner.retired.lock().unwrap_or_else(|p| p.into_inner());
        add_cumulative(&mut retired, &old.state().statistics);
        tracing::info!(from = config.max_size, to = next.max_size, "exclusive pool resized");
        *config = next;
        Ok(restart)
    }

    /// The current configuration of the pool.
    pub fn config(&self) -> PoolConfig {
        self.inner.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A snapshot of the pool's counts and gauges.
    pub fn stats(&self) -> PoolStats {
        let mut stats = self.inner.retired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(pool) = self.exclusive_pool() {
            let state = pool.state();
            add_cumulative(&mut stats, &state.statistics);
            stats.max_size = pool.config().max_size;
            stats.connections = state.connections;
            stats.idle = state.idle_connections;
            stats.in_use = state.connections.saturating_sub(state.idle_connections);
            stats.waiters = state.statistics.pending_gets();
        }
        stats.shared_links = self.inner.links.len() as u32;
        stats.shared_connected = self.inner.links.iter().filter(|l| l.is_connected()).count() as u32;
        let links = &self.inner.link_counters;
        stats.created += links.opened.load(Ordering::Relaxed);
        stats.closed += links.closed.load(Ordering::Relaxed);
        stats.failed_connects = links.failed_connects.load(Ordering::Relaxed);
        stats.direct_links = self.inner.direct.len() as u32;
        stats.direct_connected = self.inner.direct.iter().filter(|l| l.is_connected()).count() as u32;
        if let Some(router) = &self.inner.cluster {
            // A cluster's pipeline links are its masters'.
            let cluster = router.stats();
            stats.direct_links = cluster.nodes.len() as u32;
            stats.direct_connected = cluster.nodes.iter().filter(|n| n.connected).count() as u32;
        }
        stats.bytes_sent = links.bytes_sent.load(Ordering::Relaxed);
        stats.bytes_received = links.bytes_received.load(Ordering::Relaxed);
        let policies = self.inner.policies.lock().unwrap_or_else(|p| p.into_inner());
        stats.evicting_servers = policies.iter().filter(|p| !p.keeps_every_key()).count() as u32;
        stats
    }

    /// Stops handing out connections and closes the links. Requests already sent on a
    /// shared link finish; pipelines waiting on a direct link fail with
    /// [`Error::Connection`]; idle exclusive connections close now, checked-out ones when
    /// returned.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(pool) = self.inner.exclusive.write().unwrap_or_else(|p| p.into_inner()).take() {
            let mut retired = self.inner.retired.lock().unwrap_or_else(|p| p.into_inner());
            add_cumulative(&mut retired, &pool.state().statistics);
        }
        for link in self.inner.links.iter() {
            link.close();
        }
        for link in self.inner.direct.iter() {
            link.close_now();
        }
        if let Some(router) = &self.inner.cluster {
            router.close();
        }
    }
}

/// `host:port` of the configured URL, or its path when it has no host (a unix socket);
/// never its credentials.
fn server_address(config: &RedisConfig) -> String {
    match url::Url::parse(config.url.expose()) {
        Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
            format!("{}:{}", url.host_str().unwrap_or_default(), url.port().unwrap_or(6379))
        }
        Ok(url) => url.path().to_owned(),
        Err(_) => config.url.redacted(),
    }
}

/// The commands as one RESP buffer, and how many there are. Sized for the batch at once:
/// growing it by doubling would copy it several times.
fn pack<'c, C: Packable + 'c>(commands: impl IntoIterator<Item = &'c C>) -> (Vec<u8>, usize) {
    let mut commands = commands.into_iter();
    let mut packed = Vec::new();
    let Some(first) = commands.next() else {
        return (packed, 0);
    };
    // The first command's size, times how many there are.
    packed.reserve(first.packed_len_hint() * commands.size_hint().0.saturating_add(1));
    first.pack_into(&mut packed);
    let mut count = 1;
    for cmd in commands {
        cmd.pack_into(&mut packed);
        count += 1;
    }
    (packed, count)
}

fn add_cumulative(into: &mut PoolStats, from: &bb8::Statistics) {
    into.waits += from.get_waited;
    into.wait_time += from.get_wait_time;
    into.timeouts += from.get_timed_out;
    into.created += from.connections_created;
    into.closed += from.connections_closed_broken
        + from.connections_closed_invalid
        + from.connections_closed_max_lifetime
        + from.connections_closed_idle_timeout;
}

fn build_exclusive(connector: &Connector, config: &PoolConfig) -> bb8::Pool<Manager> {
    bb8::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(config.min_idle).filter(|&n| n > 0))
        // A PING per checkout halves throughput; the health check runs in the background.
        .test_on_check_out(false)
        .connection_timeout(config.checkout_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .retry_connection(false)
        .build_unchecked(Manager {
            connector: connector.clone(),
        })
}

/// Pings every shared link in use (reopening broken ones, so the pool heals without
/// traffic), every connected direct link (breaking one that stays silent), and the idle
/// exclusive connections. Ends when the pool is dropped or closed.
async fn health_check(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let Some(counters) = inner.upgrade().map(|i| Arc::clone(&i.link_counters)) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = counters.broken.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let timeout = inner.connector.response_timeout;
        for link in inner.links.iter() {
            // With direct links (or a cluster's), a shared link no one has used stays closed.
            if (!inner.direct.is_empty() || inner.cluster.is_some()) && !link.is_connected() {
                continue;
            }
            // A failed PING retires the connection (SharedConnection does that), and a
            // missing one is reopened here.
            if let Ok(mut conn) = link.get(&inner.connector).await
                && let Err(e) = ping(&mut conn, timeout).await
            {
                tracing::warn!(error = %e, "health check: shared connection failed PING");
            }
        }
        for link in inner.direct.iter() {
            link.probe().await;
        }
        if let Some(router) = &inner.cluster {
            // Failovers show here even when no command met a redirect.
            if let Err(e) = router.refresh(false).await {
                tracing::warn!(error = %e, "health check: cannot read the cluster's topology");
            }
            router.probe().await;
        }
        // An operator may change the policy at run time, or a failover bring a master with
        // another one.
        if let Err(e) = (Pool {
            inner: Arc::clone(&inner),
        })
        .check_eviction()
        .await
        {
            tracing::debug!(error = %e, "health check: cannot read maxmemory-policy");
        }
        let Some(pool) = inner.exclusive.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let state = pool.state();
        // Only when nobody waits, and only as many as are idle, so that a check never
        // makes a user wait. No timeout around the checkout: bb8 would count a cancelled
        // one as a waiter forever.
        if state.statistics.pending_gets() > 0 {
            continue;
        }
        let mut held = Vec::with_capacity(state.idle_connections as usize);
        for _ in 0..state.idle_connections {
            match pool.get_owned().await {
                Ok(conn) => held.push(ExclusiveConnection { inner: conn }),
                Err(_) => break,
            }
        }
        for conn in &mut held {
            if ping(conn, timeout).await.is_err() {
                conn.discard();
            }
        }
    }
}
