//! Connections to Redis for stateful-redis.
//!
//! A [`Pool`] holds three kinds of connection: direct pipeline links for the executor's hot
//! path on plain TCP ([`Pool::pipeline`]: one writer, a RESP2 reader task, replies matched
//! to pipelines in order), a few shared redis-rs multiplexed links ([`Pool::shared`]; the
//! hot path for TLS and unix sockets; opened on first use when direct links exist), and a
//! bb8 pool of connections for exclusive use. It checks health in the
//! background (no PING per checkout), reopens broken links on next use and runs
//! [`ConnectHook`]s (such as script preload) on every new connection. [`PoolStats`]
//! reports connections, waits, timeouts and churn; [`Pool::resize`] changes the
//! exclusive pool's size live.
//!
//! This is the only crate that opens Redis connections.
//!
//! ```no_run
//! use stateful_redis_core::RedisConfig;
//! use stateful_redis_pool::Pool;
//!
//! # async fn run() -> Result<(), stateful_redis_core::Error> {
//! let pool = Pool::connect(&RedisConfig::with_url("redis://127.0.0.1:6379"), Vec::new()).await?;
//! let mut conn = pool.shared().await?;
//! let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| {
//!     stateful_redis_pool::map_redis_error(e, pool.response_timeout())
//! })?;
//! assert_eq!(pong, "PONG");
//! println!("{:?}", pool.stats());
//! # Ok(()) }
//! ```

mod cluster;
mod connect;
mod direct;
mod error;
mod eviction;
mod exclusive;
mod packed;
mod pool;
mod shared;

pub use crate::cluster::{ClusterStats, NodeStats, SLOTS, key_slot};
pub use crate::connect::{ConnectHook, HookFuture};
pub use crate::direct::Reply;
pub use crate::error::{map_redis_error, reply_text, server_error};
pub use crate::eviction::EvictionPolicy;
pub use crate::exclusive::ExclusiveConnection;
pub use crate::packed::{Packable, PackedCommand, ScriptCall, write_bulk, write_int};
pub use crate::pool::{CheckoutObserver, Pool, PoolStats};
pub use crate::shared::SharedConnection;
pub use redis;
