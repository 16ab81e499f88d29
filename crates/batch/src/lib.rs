//! Batching: operations from many callers coalesced into pipelines.
//!
//! A [`Batcher`] keeps one bounded queue per shard (a connection, or a cluster node) and
//! a flusher task per queue. The flusher sends whatever is queued as one pipeline as
//! soon as one of the shard's pipeline slots is free, so a lone caller waits for
//! nothing, while under load operations pile up behind the pipelines in flight and
//! leave in large batches (up to `max_batch`). An optional `linger` lets a busy shard
//! wait a little for a fuller batch. Each caller awaits its own reply.
//!
//! Operations with the same shard hint go to the same queue, leave it in order, and
//! their pipelines are sent in order on one connection: order per entity is kept.
//! When a queue is full the [`OverloadPolicy`] decides: wait up to a deadline, reject
//! with [`Error::Overloaded`](stateful_redis_core::Error::Overloaded), or drop the oldest queued operation (its caller gets
//! [`Error::Dropped`](stateful_redis_core::Error::Dropped)). Every rejection and drop is counted in [`BatchStats`].
//!
//! The batcher knows nothing of Redis: it is generic over a [`PipelineSink`], and its
//! tests use an in-memory one.
//!
//! ```
//! use stateful_redis_batch::{Batcher, PipelineSink};
//! use stateful_redis_core::{BatchConfig, Error};
//!
//! struct Doubler;
//!
//! impl PipelineSink for Doubler {
//!     type Op = u64;
//!     type Reply = u64;
//!     async fn send(&self, _shard: usize, ops: Vec<u64>) -> Vec<Result<u64, Error>> {
//!         ops.into_iter().map(|n| Ok(n * 2)).collect()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let batcher = Batcher::new(Doubler, 2, &BatchConfig::default());
//! assert_eq!(batcher.submit(7, 21).await?, 42);
//! batcher.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//! None.

mod batcher;

pub use crate::batcher::{BatchStats, Batcher, PipelineSink, QUEUE_WAIT_SAMPLE};
pub use stateful_redis_core::{BatchConfig, OverloadPolicy};
