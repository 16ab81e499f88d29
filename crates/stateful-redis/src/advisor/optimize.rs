//! The advisor: the changes it applies live, which do I/O: resizing the exclusive pool
//! from measured waits, and loading the scripts on every server ahead of traffic.

use redis::{Cmd, Value};
use stateful_redis_core::Error;
use stateful_redis_pool::{Reply, server_error};
use stateful_redis_scripts::Script;

use crate::executor::StatefulExecutor;

/// What [`StatefulExecutor::optimize_connection_pool`] did: `from == to` when it kept the size.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolChange {
    /// `redis.pool.max_size` before the call.
    pub from: u32,
    /// `redis.pool.max_size` after the call.
    pub to: u32,
    /// Why, with the figures.
    pub reason: String,
}

/// What [`StatefulExecutor::optimize_lua_scripts`] did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScriptsReport {
    /// Servers the scripts were loaded on (1 for a standalone Redis).
    pub nodes: u32,
    /// Scripts the executor uses.
    pub scripts: u32,
    /// Scripts the servers had cached already (`SCRIPT EXISTS`), summed over the nodes; they
    /// are not loaded again.
    pub already_cached: u32,
    /// Scripts loaded now (`SCRIPT LOAD`), summed over the nodes.
    pub loaded: u32,
}
/// The exclusive pool's figures at an `optimize_connection_pool` call.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolSample {
    waits: u64,
    timeouts: u64,
    in_use: u32,
    max_size: u32,
}

impl StatefulExecutor {
    /// Resizes the exclusive pool live from measured waits and use, within
    /// `[redis.pool.min_idle.max(1), redis.pool.max_size_limit]`.
    ///
    /// It doubles the size (up to the limit) when checkouts waited or timed out since the
    /// previous call, or callers wait now; it shrinks it by a quarter (not below the lower
    /// bound) only when no checkout waited since the previous call and at most half the
    /// connections were in use at this call and at the previous one; otherwise it keeps
    /// it. The first call compares with the start. Call it periodically (every minute, say).
    /// Only callers of [`Pool::exclusive`](stateful_redis_pool::Pool::exclusive) use this
    /// pool: the executor's operations go over the pipeline links.
    pub fn optimize_connection_pool(&self) -> Result<PoolChange, Error> {
        // The pool's own settings: live changes (apply_config) included.
        let configured = &self.pool().config();
        let limit = configured.max_size_limit;
        let lower = configured.min_idle.max(1);
        let pool = self.pool();
        // Held across the resize: two concurrent calls must not both double the pool.
        let mut remembered = self.inner.advisor.lock();
        let stats = pool.stats();
        let from = stats.max_size;
        if from == 0 {
            // The exclusive pool is gone: the executor was shut down.
            return Err(Error::Shutdown);
        }
        let previous = remembered.previous.replace(PoolSample {
            waits: stats.waits,
            timeouts: stats.timeouts,
            in_use: stats.in_use,
            max_size: from,
        });
        let (waits, timeouts) = match previous {
            Some(p) => (
                stats.waits.saturating_sub(p.waits),
                stats.timeouts.saturating_sub(p.timeouts),
            ),
            None => (stats.waits, stats.timeouts),
        };
        let waiters = stats.waiters;
        let at_most_half = |in_use: u32, max_size: u32| u64::from(in_use) * 2 <= u64::from(max_size);
        let (to, reason) = if waits > 0 || timeouts > 0 || waiters > 0 {
            let to = from.saturating_mul(2).min(limit).max(lower);
            if to > from {
                let reason = format!(
                    "{waits} checkouts waited and {timeouts} timed out since the previous call, \
                     {waiters} waiting now"
                );
                (to, reason)
            } else {
                let reason = format!(
                    "{waits} checkouts waited and {timeouts} timed out since the previous call, but the \
                     pool is at redis.pool.max_size_limit ({limit})"
                );
                (from, reason)
            }
        } else {
            match previous {
                None => (
                    from,
                    "no checkout waited; the first call only records the figures to compare with".to_owned(),
                ),
                Some(p) if at_most_half(p.in_use, p.max_size) && at_most_half(stats.in_use, from) => {
                    let to = (from - from.div_ceil(4)).max(lower);
                    if to < from {
                        let reason = format!(
                            "no checkout waited since the previous call, and at most half the connections \
                             were in use ({} of {} then, {} of {from} now)",
                            p.in_use, p.max_size, stats.in_use
                        );
                        (to, reason)
                    } else {
                        (
                            from,
                            format!("the pool is quiet but already at its lower bound ({lower})"),
                        )
                    }
                }
                Some(p) => {
                    let reason = format!(
                        "no checkout waited, and more than half the connections were in use at this call \
                         or the previous one ({} of {} then, {} of {from} now)",
                        p.in_use, p.max_size, stats.in_use
                    );
                    (from, reason)
                }
            }
        };
        if to != from {
            pool.resize(to)?;
            remembered.baseline.pool_waits = stats.waits;
            remembered.baseline.pool_timeouts = stats.timeouts;
            tracing::info!(from, to, reason = %reason, "advisor resized the exclusive pool");
        }
        Ok(PoolChange { from, to, reason })
    }

    /// Loads every script the executor uses on every server ahead of traffic (after a
    /// restart, a failover or `SCRIPT FLUSH`), so that no operation meets `NOSCRIPT`: the
    /// standalone server, or every master of a cluster. It asks each server `SCRIPT EXISTS`
    /// first and loads only the scripts a server lacks, on the links the executor's
    /// operations use (already open, so no connect hook runs in between).
    ///
    /// With an ACL user that may not run `SCRIPT EXISTS`, it loads every script and
    /// reports none as already cached.
    pub async fn optimize_lua_scripts(&self) -> Result<ScriptsReport, Error> {
        let scripts: &[&'static Script] = &stateful_redis_scripts::ALL;
        let pool = self.pool();
        let mut exists = redis::cmd("SCRIPT");
        exists.arg("EXISTS");
        for script in scripts {
            exists.arg(script.sha());
        }
        // Per server, one flag per script: whether it holds it.
        let mut cached: Vec<Vec<bool>> = Vec::new();
        for (address, replies) in pool.to_each_server(std::slice::from_ref(&exists)).await {
            let flags = match one_per_command(&address, replies, 1)?.pop() {
                Some(Ok(value)) => exists_flags(&value, scripts.len()).ok_or_else(|| Error::UnexpectedReply {
                    what: "SCRIPT EXISTS",
                    detail: format!("{address}: {value:?}"),
                })?,
                Some(Err(message)) => match server_error(None, message) {
                    Error::NoPermission { message } => {
                        tracing::debug!(server = %address, %message, "SCRIPT EXISTS refused; loading every script");
                        vec![false; scripts.len()]
                    }
                    other => return Err(other),
                },
                None => {
                    return Err(Error::UnexpectedReply {
                        what: "SCRIPT EXISTS",
                        detail: format!("{address}: no reply"),
                    });
                }
            };
            cached.push(flags);
        }
        // A script some server lacks is loaded on every server: a load of a cached script
        // changes nothing, and every server gets one pipeline.
        let missing: Vec<&'static Script> = scripts
            .iter()
            .enumerate()
            .filter(|(i, _)| cached.iter().any(|flags| flags.get(*i) != Some(&true)))
            .map(|(_, script)| *script)
            .collect();
        if !missing.is_empty() {
            let loads: Vec<Cmd> = missing.iter().map(|script| script.load_command()).collect();
            for (address, replies) in pool.to_each_server(&loads).await {
                for (script, reply) in missing.iter().zip(one_per_command(&address, replies, loads.len())?) {
                    let value = reply.map_err(|message| server_error(None, message))?;
                    if text(&value).as_deref() != Some(script.sha()) {
                        return Err(Error::UnexpectedReply {
                            what: "SCRIPT LOAD",
                            detail: format!(
                                "{address}: {}: expected digest {}, got {value:?}",
                                script.name(),
                                script.sha()
                            ),
                        });
                    }
                }
            }
        }
        let nodes = cached.len() as u32;
        let already_cached = cached.iter().flatten().filter(|&&held| held).count() as u32;
        let total = nodes * scripts.len() as u32;
        let report = ScriptsReport {
            nodes,
            scripts: scripts.len() as u32,
            already_cached,
            loaded: total - already_cached.min(total),
        };
        // Reloads before this call are dealt with: the advisor's analysis looks at those after it.
        self.inner.advisor.lock().baseline.script_reloads = self.script_stats().reloads;
        if report.loaded > 0 {
            tracing::info!(
                nodes = report.nodes,
                loaded = report.loaded,
                cached = report.already_cached,
                "advisor loaded scripts"
            );
        }
        Ok(report)
    }
}

/// A server's replies to a pipeline of `commands` commands: its connection's error, or
/// exactly one reply per command.
fn one_per_command(address: &str, replies: Result<Vec<Reply>, Error>, commands: usize) -> Result<Vec<Reply>, Error> {
    let replies = replies?;
    if replies.len() != commands {
        return Err(Error::UnexpectedReply {
            what: "pipeline",
            detail: format!("{address}: {} replies to {commands} commands", replies.len()),
        });
    }
    Ok(replies)
}

/// `SCRIPT EXISTS`'s answer: one flag per script asked about.
fn exists_flags(value: &Value, n: usize) -> Option<Vec<bool>> {
    let Value::Array(items) = value else {
        return None;
    };
    if items.len() != n {
        return None;
    }
    items
        .iter()
        .map(|item| match item {
            Value::Int(i) => Some(*i != 0),
            Value::Boolean(b) => Some(*b),
            _ => None,
        })
        .collect()
}

/// A string reply's text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
