//! The Lua scripts of stateful-redis and how they run.
//!
//! Every atomic operation is a Lua script under `crates/scripts/lua/`, embedded at
//! build time, its SHA1 computed once. [`Scripts`] loads them all on every new
//! connection (as a [`ConnectHook`](stateful_redis_pool::ConnectHook)) and runs them
//! with `EVALSHA`, recovering from `NOSCRIPT` transparently, alone
//! ([`Scripts::invoke`]) or inside pipelines ([`Scripts::invoke_pipeline`]). Each
//! script has one typed invocation ([`Put`], [`Cas`], …) and one typed reply.
//!
//! ```no_run
//! use stateful_redis_scripts::{Cas, CasReply, Scripts};
//! # async fn run(pool: stateful_redis_pool::Pool) -> Result<(), stateful_redis_core::Error> {
//! let scripts = Scripts::new();
//! let mut conn = pool.shared().await?;
//! let call = Cas { key: "app:{dev-1}:s", expected: 0, data: b"\x03hello", ttl_ms: 0 };
//! match scripts.invoke(&mut conn, &call, pool.response_timeout()).await? {
//!     CasReply::Applied(version) => println!("created at version {version}"),
//!     CasReply::Conflict(current) => println!("already exists at version {current}"),
//! }
//! # Ok(()) }
//! ```

mod invocation;
mod runner;
mod script;

pub use crate::invocation::{
    Cas, CasReply, DeleteIf, DeleteReply, Get, Invocation, Malformed, Put, RawRecord, Transition, TransitionReply,
};
pub use crate::runner::{ScriptStats, Scripts};
pub use crate::script::{ACL_COMMANDS, ALL, CAS, DELETE_IF, GET, PUT, Script, TRANSITION};
