//! The Lua scripts of stateful-redis and how they run.
//!
//! Every atomic operation is a Lua script in the crate's [`lua/`][lua] folder, embedded at
//! build time, its SHA1 computed once. [`Scripts`] loads them all on every new
//! connection (as a [`ConnectHook`](stateful_redis_pool::ConnectHook)) and runs them
//! with `EVALSHA`, recovering from `NOSCRIPT` transparently, alone
//! ([`Scripts::invoke`]) or inside pipelines ([`Scripts::invoke_pipeline`]). Each
//! script has one typed invocation ([`Get`], [`Write`], [`Acquire`], …) and one typed reply.
//!
//! A batch of calls can also go in bundles ([`Scripts::run_direct`], [`Scripts::run_cluster`],
//! [`Scripts::run_pipeline`], limited by a [`Combine`]): a bundle is one `EVALSHA` of the
//! [`MANY`] script that applies several calls one after another, each as atomic as alone, and
//! answers each with its own reply or error. A batch is a slice of [`Call`]s (a script, its encoded
//! `EVALSHA`, the cluster slot of its keys); [`plan`] shows how it is grouped:
//!
//! ```
//! use stateful_redis_scripts::{Call, Combine, Unit, Write, WriteOp, plan};
//!
//! // Each call encoded once, with the cluster slot of its keys (0 on a standalone server).
//! let calls: Vec<Call> = ["app:{a}:s", "app:{b}:s", "app:{c}:s"]
//!     .into_iter()
//!     .map(|key| Call::new(&Write::new(key, WriteOp::Put, Some(b"\x03v")), 0))
//!     .collect();
//! let batch = plan(&calls, Combine::up_to(2));
//! // Bundles of at most two calls: the first two share one `EVALSHA many`, the third goes alone.
//! assert!(matches!(batch.units[0].1, Unit::Many(_)));
//! assert!(matches!(batch.units[1].1, Unit::One(_)));
//! assert_eq!(batch.members().map(<[usize]>::len).collect::<Vec<_>>(), [2, 1]);
//! ```
//!
//! ```no_run
//! use stateful_redis_scripts::{Scripts, Write, WriteOp, WriteResult};
//! # async fn run(pool: stateful_redis_pool::Pool) -> Result<(), stateful_redis_core::Error> {
//! let scripts = Scripts::new();
//! let mut conn = pool.shared().await?;
//! let call = Write::new("app:{dev-1}:s", WriteOp::Cas { expected: 0 }, Some(b"\x03hello"));
//! match scripts.invoke(&mut conn, &call, pool.response_timeout()).await?.result {
//!     WriteResult::Applied(version) => println!("created at version {version}"),
//!     WriteResult::Conflict(current) => println!("already exists at version {current}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! [lua]: https://github.com/stateful-redis/stateful-redis/tree/main/crates/scripts/lua

mod combine;
mod invocation;
mod runner;
mod script;

pub use crate::combine::{Call, Combine, Members, Plan, Unit, fan_out, plan};
pub use crate::invocation::{
    Acquire, AcquireReply, Args, Get, GuardKeys, Invocation, LeaseReply, Malformed, MessageWindow, Presence,
    PresenceMembers, PresenceOp, RawRecord, Release, Renew, Write, WriteOp, WriteReply, WriteResult,
};
pub use crate::runner::{ScriptStats, Scripts};
pub use crate::script::{ACL_COMMANDS, ACQUIRE, ALL, GET, MANY, MANY_SCRIPTS, PRESENCE, RELEASE, RENEW, Script, WRITE};
