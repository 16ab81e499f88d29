//! Running scripts: preload, `EVALSHA` with transparent `NOSCRIPT` recovery, alone or in pipelines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use stateful_redis_core::Error;
use stateful_redis_pool::{
    ConnectHook, HookFuture, Packable, PackedCommand, Pool, Reply, map_redis_error, reply_text, server_error,
};

use crate::combine::{self, Call, Combine, Members, Unit};
use crate::invocation::Invocation;
use crate::script::{ALL, Script};

/// Loads the scripts on connect and runs them with `NOSCRIPT` recovery.
///
/// A script cache flushed by `SCRIPT FLUSH`, a restart or a failover costs one
/// `SCRIPT LOAD` and a resend: `NOSCRIPT` means the server did not run the command, so
/// resending is always safe. Install it as a [`ConnectHook`] so every new connection
/// (including every reconnect) loads the scripts before serving anyone.
#[derive(Debug, Default)]
pub struct Scripts {
    preloads: AtomicU64,
    reloads: AtomicU64,
    bundles: AtomicU64,
    bundled_calls: AtomicU64,
}

/// Counts of script loading, for metrics and the advisor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScriptStats {
    /// Times all scripts were loaded on a new connection (a redis-rs link or a direct link).
    pub preloads: u64,
    /// Times a `NOSCRIPT` reply made a script load again.
    pub reloads: u64,
    /// Bundles of the `many` script sent: each carries several calls in one `EVALSHA`.
    pub bundles: u64,
    /// Calls those bundles carried.
    pub bundled_calls: u64,
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

fn script_error(script: &'static Script, e: RedisError, timeout: Duration) -> Error {
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => server_error(Some(script.name()), reply_text(&e)),
        _ => map_redis_error(e, timeout),
    }
}

fn into_result(value: Value) -> RedisResult<Value> {
    match value {
        Value::ServerError(e) => Err(e.into()),
        other => Ok(other),
    }
}

impl Scripts {
    /// A registry with zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every script on `conn` in one pipeline and checks the digests Redis returns.
    pub async fn preload<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for script in ALL {
            pipe.add_command(script.load_command());
        }
        let shas: Vec<String> = pipe.query_async(conn).await?;
        for (script, sha) in ALL.iter().zip(&shas) {
            if sha != script.sha() {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "SCRIPT LOAD returned an unexpected digest",
                    format!("{}: expected {}, got {sha}", script.name(), script.sha()),
                )));
            }
        }
        self.preloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn load<C: ConnectionLike + Send>(&self, conn: &mut C, script: &'static Script) -> RedisResult<()> {
        let _: String = script.load_command().query_async(conn).await?;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(script = script.name(), "script reloaded after NOSCRIPT");
        Ok(())
    }

    /// Runs one invocation, reloading the script once if the server lost it.
    /// `timeout` is the response timeout, for the error it names.
    pub async fn invoke<I: Invocation, C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        invocation: &I,
        timeout: Duration,
    ) -> Result<I::Reply, Error> {
        let script = invocation.script();
        let cmd = invocation.command();
        let mut result = cmd.query_async::<Value>(conn).await.and_then(into_result);
        if matches!(&result, Err(e) if is_noscript(e)) {
            self.load(conn, script)
                .await
                .map_err(|e| script_error(script, e, timeout))?;
            result = cmd.query_async::<Value>(conn).await.and_then(into_result);
        }
        let reply = result.map_err(|e| script_error(script, e, timeout))?;
        invocation.parse(reply).map_err(|detail| Error::UnexpectedReply {
            what: script.name(),
            detail,
        })
    }

    /// Sends `calls` as one pipeline and returns each call's own result. Calls that met
    /// `NOSCRIPT` are resent (after loading their scripts) in their original order; the
    /// outer error is for a transport failure that lost every reply.
    pub async fn invoke_pipeline<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        calls: Vec<(&'static Script, Cmd)>,
        timeout: Duration,
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let scripts: Vec<&'static Script> = calls.iter().map(|(script, _)| *script).collect();
        let mut results: Vec<Option<Result<Value, Error>>> = (0..calls.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..calls.len()).collect();
        // The commands move into the first pipeline; only those that meet NOSCRIPT are
        // copied back out to be sent again.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (_, cmd) in calls {
            pipe.add_command(cmd);
        }
        // The second round can only meet NOSCRIPT again if the cache is flushed between
        // our SCRIPT LOAD and the resend; a third try covers that race too.
        for round in 0..3 {
            if pending.is_empty() {
                break;
            }
            let replies: Vec<Value> = match pipe.query_async::<Vec<Value>>(conn).await {
                Ok(replies) if replies.len() == pending.len() => replies,
                outcome => {
                    let error = match outcome {
                        Err(e) => map_redis_error(e, timeout),
                        Ok(replies) => Error::UnexpectedReply {
                            what: "pipeline",
                            detail: format!("{} replies to {} commands", replies.len(), pending.len()),
                        },
                    };
                    // The first round lost every reply; a resend loses only its own calls:
                    // those answered before keep their results.
                    if round == 0 {
                        return Err(error);
                    }
                    for &i in &pending {
                        results[i] = Some(Err(error.duplicate()));
                    }
                    break;
                }
            };
            // Each NOSCRIPT call with its command, to be sent again once its script loads.
            let mut missing: Vec<(usize, Cmd)> = Vec::new();
            for ((&i, reply), cmd) in pending.iter().zip(replies).zip(pipe.cmd_iter()) {
                match into_result(reply) {
                    Err(e) if is_noscript(&e) && round < 2 => missing.push((i, cmd.clone())),
                    Err(e) => results[i] = Some(Err(script_error(scripts[i], e, timeout))),
                    Ok(v) => results[i] = Some(Ok(v)),
                }
            }
            let mut loaded: Vec<&'static str> = Vec::new();
            for &(i, _) in &missing {
                let script = scripts[i];
                if !loaded.contains(&script.name()) {
                    if let Err(e) = self.load(conn, script).await {
                        // Its calls fail with the reason; the others go on.
                        let error = script_error(script, e, timeout);
                        for &(j, _) in &missing {
                            if scripts[j].name() == script.name() {
                                results[j] = Some(Err(error.duplicate()));
                            }
                        }
                    }
                    loaded.push(script.name());
                }
            }
            // The resend carries exactly the calls still pending: a call whose script failed
            // to load is answered above and must not take a place among the replies.
            missing.retain(|(i, _)| results[*i].is_none());
            pipe = redis::pipe();
            pipe.ignore_errors();
            pending = missing
                .into_iter()
                .map(|(i, cmd)| {
                    pipe.add_command(cmd);
                    i
                })
                .collect();
        }
        Ok(answered(results))
    }

    /// Sends `calls` as one pipeline on the pool's direct link `link` and returns each
    /// call's own result, with the same `NOSCRIPT` recovery as
    /// [`invoke_pipeline`](Self::invoke_pipeline): the calls that met it are resent, in their
    /// order, after their scripts are loaded on that link.
    pub async fn invoke_direct<C: Packable + Sync>(
        &self,
        pool: &Pool,
        link: usize,
        calls: Vec<(&'static Script, C)>,
    ) -> Vec<Result<Value, Error>> {
        let n = calls.len();
        let mut results: Vec<Option<Result<Value, Error>>> = (0..n).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..n).collect();
        for round in 0..3 {
            if pending.is_empty() {
                break;
            }
            let replies = match pool.pipeline(link, pending.iter().map(|&i| &calls[i].1)).await {
                Ok(replies) => replies,
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(e.duplicate()));
                    }
                    break;
                }
            };
            let mut missing = Vec::new();
            for (&i, reply) in pending.iter().zip(replies) {
                match reply {
                    Err(message) if message.starts_with("NOSCRIPT") && round < 2 => missing.push(i),
                    other => results[i] = Some(reply_result(calls[i].0, other)),
                }
            }
            // Load each missing script once, on the same link, before the resend.
            let mut scripts: Vec<&'static Script> = Vec::new();
            for &i in &missing {
                if !scripts.iter().any(|s| s.name() == calls[i].0.name()) {
                    scripts.push(calls[i].0);
                }
            }
            if !scripts.is_empty() {
                let loads: Vec<Cmd> = scripts.iter().map(|script| script.load_command()).collect();
                match pool.pipeline(link, &loads).await {
                    Ok(replies) => {
                        // A load the server refused (an ACL without SCRIPT LOAD, say) fails
                        // its calls now, with the server's reason.
                        for (script, reply) in scripts.iter().zip(replies) {
                            match reply {
                                Ok(_) => {
                                    self.reloads.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(message) => {
                                    missing.retain(|&i| {
                                        if calls[i].0.name() != script.name() {
                                            return true;
                                        }
                                        results[i] = Some(reply_result(script, Err(message.clone())));
                                        false
                                    });
                                }
                            }
                        }
                    }
                    Err(e) => {
                        for &i in &missing {
                            results[i] = Some(Err(e.duplicate()));
                        }
                        missing.clear();
                    }
                }
            }
            pending = missing;
        }
        answered(results)
    }

    /// Cluster only: sends each call to the master of its slot (`(script, command, slot)`),
    /// and returns each call's own result. Redirects are the pool's business
    /// ([`Pool::cluster_pipeline`]); a `NOSCRIPT` (a master that lost its script cache: a
    /// restart, a promoted replica, `SCRIPT FLUSH`) loads the script on that master and
    /// resends the calls that met it, in their order.
    pub async fn invoke_cluster<C: Packable + Sync>(
        &self,
        pool: &Pool,
        calls: Vec<(&'static Script, C, u16)>,
    ) -> Vec<Result<Value, Error>> {
        let n = calls.len();
        let mut results: Vec<Option<Result<Value, Error>>> = (0..n).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..n).collect();
        for round in 0..3 {
            if pending.is_empty() {
                break;
            }
            let commands: Vec<(u16, &C)> = pending.iter().map(|&i| (calls[i].2, &calls[i].1)).collect();
            let replies = pool.cluster_pipeline(&commands).await;
            let mut missing = Vec::new();
            for (&i, reply) in pending.iter().zip(replies) {
                match reply {
                    Ok(Err(message)) if message.starts_with("NOSCRIPT") && round < 2 => missing.push(i),
                    Ok(reply) => results[i] = Some(reply_result(calls[i].0, reply)),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            // One load per script and master, routed by the slot of a call that needs it.
            let mut loads: Vec<(u16, &'static Script, Cmd)> = Vec::new();
            let mut seen: Vec<(&'static str, Option<String>)> = Vec::new();
            for &i in &missing {
                let (script, _, slot) = &calls[i];
                let key = (script.name(), pool.master_of_slot(*slot));
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                loads.push((*slot, script, script.load_command()));
            }
            if !loads.is_empty() {
                let commands: Vec<(u16, &Cmd)> = loads.iter().map(|(slot, _, cmd)| (*slot, cmd)).collect();
                let replies = pool.cluster_pipeline(&commands).await;
                for (((_, script, _), reply), (_, master)) in loads.iter().zip(replies).zip(&seen) {
                    // A failed load fails the calls of that script on that master only.
                    let mut fail = |result: &dyn Fn() -> Result<Value, Error>| {
                        missing.retain(|&i| {
                            if calls[i].0.name() != script.name() || pool.master_of_slot(calls[i].2) != *master {
                                return true;
                            }
                            results[i] = Some(result());
                            false
                        });
                    };
                    match reply {
                        Ok(Ok(_)) => {
                            self.reloads.fetch_add(1, Ordering::Relaxed);
                        }
                        // A refused load fails its calls now, with the server's reason.
                        Ok(Err(message)) => fail(&|| reply_result(script, Err(message.clone()))),
                        Err(e) => fail(&|| Err(e.duplicate())),
                    }
                }
            }
            pending = missing;
        }
        answered(results)
    }

    /// Sends a batch of calls on the pool's direct link `link`,
    /// calls of one slot combined up to `combine`'s limits into bundles of the `many` script
    /// (one `EVALSHA` for several calls, each still atomic and answered on its own), with
    /// the `NOSCRIPT` recovery of [`invoke_direct`](Self::invoke_direct). Returns each call's
    /// own result, in the order of `calls`.
    pub async fn run_direct(
        &self,
        pool: &Pool,
        link: usize,
        calls: &[Call],
        combine: Combine,
    ) -> Vec<Result<Value, Error>> {
        let (units, batch) = self.plan(calls, combine);
        let units = units.into_iter().map(|(script, unit, _)| (script, unit)).collect();
        let replies = self.invoke_direct(pool, link, units).await;
        let (mut results, alone) = batch.fan_out(calls, replies);
        if !alone.is_empty() {
            let units = alone.iter().map(|&i| (calls[i].script, &calls[i].command)).collect();
            let replies = self.invoke_direct(pool, link, units).await;
            for (&i, reply) in alone.iter().zip(replies) {
                results[i] = Some(reply);
            }
        }
        answered(results)
    }

    /// [`run_direct`](Self::run_direct) on a Redis Cluster: each unit goes to the master of
    /// its slot, as [`invoke_cluster`](Self::invoke_cluster) sends it. Only calls of the
    /// same slot share a bundle.
    pub async fn run_cluster(&self, pool: &Pool, calls: &[Call], combine: Combine) -> Vec<Result<Value, Error>> {
        let (units, batch) = self.plan(calls, combine);
        let replies = self.invoke_cluster(pool, units).await;
        let (mut results, alone) = batch.fan_out(calls, replies);
        if !alone.is_empty() {
            let units = alone
                .iter()
                .map(|&i| (calls[i].script, &calls[i].command, calls[i].slot))
                .collect();
            let replies = self.invoke_cluster(pool, units).await;
            for (&i, reply) in alone.iter().zip(replies) {
                results[i] = Some(reply);
            }
        }
        answered(results)
    }

    /// [`run_direct`](Self::run_direct) on a redis-rs connection (TLS, unix sockets), sent
    /// as [`invoke_pipeline`](Self::invoke_pipeline) sends it. A transport failure is each
    /// call's error.
    pub async fn run_pipeline<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        calls: &[Call],
        combine: Combine,
        timeout: Duration,
    ) -> Vec<Result<Value, Error>> {
        let (units, batch) = self.plan(calls, combine);
        let commands = units.iter().map(|(script, unit, _)| (*script, unit.to_cmd())).collect();
        let replies = self.pipeline_or_each(conn, commands, timeout).await;
        let (mut results, alone) = batch.fan_out(calls, replies);
        if !alone.is_empty() {
            let commands = alone
                .iter()
                .map(|&i| (calls[i].script, calls[i].command.to_cmd()))
                .collect();
            let replies = self.pipeline_or_each(conn, commands, timeout).await;
            for (&i, reply) in alone.iter().zip(replies) {
                results[i] = Some(reply);
            }
        }
        answered(results)
    }

    /// [`invoke_pipeline`](Self::invoke_pipeline), a transport failure made each call's error.
    async fn pipeline_or_each<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        calls: Vec<(&'static Script, Cmd)>,
        timeout: Duration,
    ) -> Vec<Result<Value, Error>> {
        let n = calls.len();
        match self.invoke_pipeline(conn, calls, timeout).await {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.duplicate())).collect(),
        }
    }

    /// The units of a batch (see [`combine::plan`]), counted.
    fn plan<'a>(&self, calls: &'a [Call], combine: Combine) -> (Vec<(&'static Script, Unit<'a>, u16)>, Batch) {
        let plan = combine::plan(calls, combine);
        let (mut bundles, mut carried) = (0, 0);
        for members in plan.members().filter(|m| m.len() > 1) {
            bundles += 1;
            carried += members.len();
        }
        if bundles > 0 {
            self.bundles.fetch_add(bundles, Ordering::Relaxed);
            self.bundled_calls.fetch_add(carried as u64, Ordering::Relaxed);
        }
        let (units, members) = plan.into_parts();
        (units, Batch { members })
    }

    /// Preload and reload counts so far.
    pub fn stats(&self) -> ScriptStats {
        ScriptStats {
            preloads: self.preloads.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            bundles: self.bundles.load(Ordering::Relaxed),
            bundled_calls: self.bundled_calls.load(Ordering::Relaxed),
        }
    }
}

impl ConnectHook for Scripts {
    fn on_connect<'a>(&'a self, conn: &'a mut MultiplexedConnection) -> HookFuture<'a> {
        Box::pin(self.preload(conn))
    }

    fn on_connect_commands_done(&self) {
        self.preloads.fetch_add(1, Ordering::Relaxed);
    }

    fn on_connect_commands(&self) -> Vec<Cmd> {
        ALL.iter().map(|script| script.load_command()).collect()
    }
}

/// Which calls each unit of a batch carries, for its replies.
struct Batch {
    members: Members,
}

impl Batch {
    /// Each call's result from its unit's reply, and the calls of bundles refused as a whole
    /// (an ACL that denies some of their keys), to be sent again one by one for their own
    /// answers.
    fn fan_out(
        self,
        calls: &[Call],
        replies: Vec<Result<Value, Error>>,
    ) -> (Vec<Option<Result<Value, Error>>>, Vec<usize>) {
        let mut results: Vec<Option<Result<Value, Error>>> = (0..calls.len()).map(|_| None).collect();
        let mut alone = Vec::new();
        // The units refused as a whole, by their place in the pipeline.
        let mut refused = Vec::new();
        for (unit, (members, reply)) in self.members.iter().zip(replies).enumerate() {
            let before = alone.len();
            combine::fan_out(calls, members, reply, &mut results, &mut alone);
            if alone.len() > before {
                refused.push(unit);
            }
        }
        if !refused.is_empty() {
            self.hold_back_out_of_order(calls, &refused, &mut results, &mut alone);
        }
        (results, alone)
    }

    /// Keeps each entity's order when bundles were refused. A refused bundle's calls are sent again
    /// after the whole pipeline; a call whose entity (the hash tag of its first key) also had
    /// a call in a later unit of this pipeline, which the server did run, would then apply after
    /// it. Such a call is not sent again: it gets an error that says it was not applied.
    fn hold_back_out_of_order(
        &self,
        calls: &[Call],
        refused: &[usize],
        results: &mut [Option<Result<Value, Error>>],
        alone: &mut Vec<usize>,
    ) {
        let units: Vec<&[usize]> = self.members.iter().collect();
        let mut held = Vec::new();
        for (k, &unit) in refused.iter().enumerate() {
            // Units after this one that were not refused: the server ran them.
            let ran_later: std::collections::HashSet<&str> = (unit + 1..units.len())
                .filter(|u| !refused[k + 1..].contains(u))
                .flat_map(|u| units[u].iter())
                .filter_map(|&i| entity_tag(&calls[i].command))
                .collect();
            held.extend(
                units[unit]
                    .iter()
                    .copied()
                    .filter(|&i| entity_tag(&calls[i].command).is_some_and(|tag| ran_later.contains(tag))),
            );
        }
        for &i in &held {
            results[i] = Some(Err(Error::Server {
                message: format!(
                    "not applied: Redis refused the bundle of calls this {} call was sent in (NOPERM: \
                     another call's key is outside the ACL user's keys), and a later call of the same \
                     entity has run since; sent again now it would apply out of order",
                    calls[i].script.name()
                ),
            }));
        }
        alone.retain(|i| !held.contains(i));
    }
}

/// The hash tag of a call's first key: what its entity's keys share. `None` for a call
/// without keys.
fn entity_tag(cmd: &PackedCommand) -> Option<&str> {
    let mut args = cmd.args();
    let key = if args.next()? == b"GET" {
        // A read: `GET <key>`.
        args.next()?
    } else {
        // `EVALSHA`, the sha, `numkeys`, then the first key.
        if args.nth(1)? == b"0" {
            return None;
        }
        args.next()?
    };
    Some(stateful_redis_core::hash_tag(std::str::from_utf8(key).ok()?))
}

/// Every call's result; one that got none (which a pipeline that answered at all never
/// leaves) is an error rather than a panic.
fn answered(results: Vec<Option<Result<Value, Error>>>) -> Vec<Result<Value, Error>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::UnexpectedReply {
                    what: "pipeline",
                    detail: "no reply".into(),
                })
            })
        })
        .collect()
}

/// One call's result from a direct link's reply.
fn reply_result(script: &'static Script, reply: Reply) -> Result<Value, Error> {
    reply.map_err(|message| server_error(Some(script.name()), message))
}
