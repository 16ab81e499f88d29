//! Typed invocations of each script and the parsing of their replies.

use bytes::Bytes;
use redis::{Cmd, ToRedisArgs, Value};
use stateful_redis_core::Version;
use stateful_redis_pool::PackedCommand;

use crate::script::{ACQUIRE, GET, PRESENCE, RELEASE, RENEW, Script, WRITE};

/// Where a call's arguments go: a `redis::Cmd` (the redis-rs connections) or a
/// [`PackedCommand`] (the direct links: RESP bytes, written once).
pub trait Args {
    /// Appends an argument (or several, for a slice).
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self;

    /// Appends one argument of bytes (a key, a value): the hot path's shortcut.
    fn bytes(&mut self, arg: &[u8]) -> &mut Self {
        self.arg(arg)
    }

    /// Appends a number as its decimal text: the hot path's shortcut.
    fn int(&mut self, n: u64) -> &mut Self {
        self.arg(n)
    }

    /// Appends `numkeys` and the keys. A [`PackedCommand`] remembers where they end, so
    /// that calls combined into one bundle are not read again to find them.
    fn keys(&mut self, keys: &[&[u8]]) -> &mut Self {
        self.int(keys.len() as u64);
        for key in keys {
            self.bytes(key);
        }
        self
    }
}

impl Args for Cmd {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        Cmd::arg(self, arg)
    }
}

impl Args for PackedCommand {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        PackedCommand::arg(self, arg)
    }

    fn bytes(&mut self, arg: &[u8]) -> &mut Self {
        PackedCommand::bytes(self, arg)
    }

    fn int(&mut self, n: u64) -> &mut Self {
        PackedCommand::int(self, n)
    }

    fn keys(&mut self, keys: &[&[u8]]) -> &mut Self {
        PackedCommand::keys(self, keys)
    }
}

/// A call of one script: what it sends and how its reply reads.
pub trait Invocation {
    /// The parsed reply.
    type Reply;
    /// The script it calls.
    fn script(&self) -> &'static Script;
    /// A key it touches: its hash tag decides the connection (or cluster node) it goes to.
    fn routing_key(&self) -> &str;
    /// Appends `numkeys`, the keys and the arguments after `EVALSHA <sha>`.
    fn write_args<A: Args>(&self, cmd: &mut A);
    /// Reads the script's reply; `Err` says what was unexpected.
    fn parse(&self, reply: Value) -> Result<Self::Reply, String>;

    /// A guess of the bytes of keys and arguments, to allocate the command once.
    fn size_hint(&self) -> usize {
        128
    }

    /// The full `EVALSHA` command, for a redis-rs connection.
    fn command(&self) -> Cmd {
        let mut cmd = Cmd::with_capacity(16, 64 + self.size_hint());
        cmd.arg("EVALSHA");
        cmd.arg(self.script().sha());
        self.write_args(&mut cmd);
        cmd
    }

    /// The full `EVALSHA` command as RESP bytes, for the pool's pipelines
    /// ([`Pool::pipeline`](stateful_redis_pool::Pool::pipeline)): encoded once, here.
    fn packed(&self) -> PackedCommand {
        let mut cmd = PackedCommand::starting_with(self.script().evalsha(), self.size_hint());
        self.write_args(&mut cmd);
        cmd
    }
}

/// An entity's state as stored: version, encoded value, status and update time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The version.
    pub version: u64,
    /// The stored (encoded) value.
    pub data: Bytes,
    /// The status, if a transition ever set one.
    pub status: Option<String>,
    /// Last update, ms since the Unix epoch (server clock).
    pub updated_ms: u64,
}

/// A record whose fields are present but malformed, or partly missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// `get`: reads the state hash.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    /// The state hash key.
    pub key: &'a str,
}

/// A version as Redis holds it: canonical decimal text (see [`Version::parse`]).
fn version(v: &Value) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        Value::BulkString(b) => Version::parse(b)
            .map(Version::get)
            .ok_or_else(|| format!("{:?} is not a version", String::from_utf8_lossy(b))),
        other => Err(format!("expected a version, got {other:?}")),
    }
}

fn int(v: &Value) -> Result<u64, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{:?} is not a version", String::from_utf8_lossy(b))),
        other => Err(format!("expected a number, got {other:?}")),
    }
}

fn text(v: Value) -> Result<String, String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|e| format!("status is not UTF-8: {e}")),
        Value::SimpleString(s) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn tagged(reply: Value) -> Result<(i64, Vec<Value>), String> {
    match reply {
        Value::Array(mut items) if !items.is_empty() => match items.remove(0) {
            Value::Int(tag) => Ok((tag, items)),
            other => Err(format!("expected a status number, got {other:?}")),
        },
        other => Err(format!("expected an array, got {other:?}")),
    }
}

fn first(items: Vec<Value>) -> Result<Value, String> {
    items
        .into_iter()
        .next()
        .ok_or_else(|| "reply is missing a field".to_owned())
}

impl Invocation for Get<'_> {
    type Reply = Option<Result<RawRecord, Malformed>>;

    fn script(&self) -> &'static Script {
        &GET
    }

    fn routing_key(&self) -> &str {
        self.key
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.key.as_bytes()]);
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply, String> {
        Self::parse_reply(reply)
    }
}

impl Get<'_> {
    /// Reads a reply of the `get` script (what [`Invocation::parse`] does, without a call).
    pub fn parse_reply(reply: Value) -> Result<Option<Result<RawRecord, Malformed>>, String> {
        let Value::Array(items) = reply else {
            return Err(format!("expected an array, got {reply:?}"));
        };
        let [v, d, st, t]: [Value; 4] = items
            .try_into()
            .map_err(|items: Vec<Value>| format!("expected 4 fields, got {}", items.len()))?;
        if [&v, &d, &st, &t].iter().all(|x| matches!(x, Value::Nil)) {
            return Ok(None);
        }
        // Something is stored: from here on, a bad field is corrupt data, not a protocol error.
        let record = (|| {
            let version = match &v {
                Value::Nil => return Err("the version field `v` is missing".to_owned()),
                other => match version(other).map_err(|e| format!("field `v`: {e}"))? {
                    0 => return Err("field `v`: \"0\" is not a version".to_owned()),
                    n => n,
                },
            };
            let data = match d {
                Value::BulkString(b) => Bytes::from(b),
                Value::Nil => return Err("the value field `d` is missing".to_owned()),
                other => return Err(format!("field `d`: unexpected {other:?}")),
            };
            let status = match st {
                Value::Nil => None,
                other => Some(text(other).map_err(|e| format!("field `st`: {e}"))?).filter(|s| !s.is_empty()),
            };
            let updated_ms = match &t {
                Value::Nil => 0,
                other => int(other).map_err(|e| format!("field `t`: {e}"))?,
            };
            Ok(RawRecord {
                version,
                data,
                status,
                updated_ms,
            })
        })();
        Ok(Some(record.map_err(Malformed)))
    }
}

/// What a write does.
#[derive(Debug, Clone, Copy)]
pub enum WriteOp<'a> {
    /// Write unconditionally.
    Put,
    /// Write only at this version (0: only if absent).
    Cas {
        /// The expected version.
        expected: u64,
    },
    /// Move to status `to` from one of `from` (`""`: no status yet).
    Transition {
        /// Allowed current statuses.
        from: &'a [&'a str],
        /// The new status.
        to: &'a str,
    },
    /// Delete only at this version.
    Delete {
        /// The expected version.
        expected: u64,
    },
    /// Delete at any version (the script's expected version `'*'`).
    DeleteAny,
}

/// The keys a fenced or idempotent write also touches (all under the entity's hash tag).
#[derive(Debug, Clone, Copy)]
pub struct GuardKeys<'a> {
    /// The fence counter.
    pub fence: &'a str,
    /// The lease.
    pub lease: &'a str,
    /// The message ids (zset).
    pub messages: &'a str,
    /// The first outcomes of messages (hash).
    pub outcomes: &'a str,
}

/// How long message ids are remembered per entity.
#[derive(Debug, Clone, Copy)]
pub struct MessageWindow {
    /// Most ids kept per entity.
    pub keep: u32,
    /// Longest an id is kept, in ms.
    pub keep_ms: u64,
}

/// `write`: one state change, optionally fenced and/or idempotent.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The state hash key.
    pub key: &'a str,
    /// What to do.
    pub op: WriteOp<'a>,
    /// A new encoded value (required for put and cas; never empty: stored values start
    /// with their format byte).
    pub data: Option<&'a [u8]>,
    /// Expiry in ms; 0 leaves it as it is.
    pub ttl_ms: u64,
    /// Keys for fencing and idempotency; required when `fence` or `message` is set.
    pub guard: Option<GuardKeys<'a>>,
    /// Fencing token and the owner of its lease (`None`: not fenced).
    pub fence: Option<(u64, &'a str)>,
    /// Message id for exactly-once application, and how long ids are kept.
    pub message: Option<(&'a str, MessageWindow)>,
    /// With a message id: a token of this call (the same for each of its retries), stored
    /// with the first outcome, so that a retry of an attempt that did apply is told from
    /// another delivery of the message (`""`: none; every replay then counts as one).
    pub nonce: &'a str,
}

impl<'a> Write<'a> {
    /// A plain write of `op` on `key`.
    pub fn new(key: &'a str, op: WriteOp<'a>, data: Option<&'a [u8]>) -> Self {
        Self {
            key,
            op,
            data,
            ttl_ms: 0,
            guard: None,
            fence: None,
            message: None,
            nonce: "",
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Applied; the new version (0 after a delete).
    Applied(u64),
    /// Not applied: the version differs; the current one (0: absent).
    Conflict(u64),
    /// Not applied: the entity does not exist.
    NotFound,
    /// Not applied: the status is not an allowed one; the actual status.
    Refused(Option<String>),
    /// Not applied: the fence is stale, or its lease is gone or held by another owner;
    /// the entity's current fence.
    Fenced(u64),
    /// Not applied: the stored version is not a version (see [`Version::parse`]); what is
    /// stored instead.
    Corrupt(String),
}

/// A write's result, and whether it is the stored first outcome of a replayed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReply {
    /// What happened (the first time, for a replay).
    pub result: WriteResult,
    /// True when the message id was seen before and nothing changed now.
    pub replayed: bool,
}

fn write_result(code: i64, detail: Value) -> Result<WriteResult, String> {
    Ok(match code {
        1 => WriteResult::Applied(version(&detail)?),
        0 => WriteResult::Conflict(version(&detail)?),
        -1 => WriteResult::NotFound,
        3 => WriteResult::Refused(Some(text(detail)?).filter(|s| !s.is_empty())),
        -2 => WriteResult::Fenced(int(&detail)?),
        5 => WriteResult::Corrupt(match detail {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::Nil => String::new(),
            other => format!("{other:?}"),
        }),
        other => return Err(format!("unknown outcome {other}")),
    })
}

impl Invocation for Write<'_> {
    type Reply = WriteReply;

    fn size_hint(&self) -> usize {
        128 + self.data.map_or(0, <[u8]>::len)
    }

    fn script(&self) -> &'static Script {
        &WRITE
    }

    fn routing_key(&self) -> &str {
        self.key
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        match (&self.guard, self.fence.is_some() || self.message.is_some()) {
            (Some(g), true) => cmd.keys(&[
                self.key.as_bytes(),
                g.fence.as_bytes(),
                g.lease.as_bytes(),
                g.messages.as_bytes(),
                g.outcomes.as_bytes(),
            ]),
            _ => cmd.keys(&[self.key.as_bytes()]),
        };
        let op = match self.op {
            WriteOp::Put => "put",
            WriteOp::Cas { .. } => "cas",
            WriteOp::Transition { .. } => "tr",
            WriteOp::Delete { .. } | WriteOp::DeleteAny => "del",
        };
        cmd.bytes(op.as_bytes())
            .bytes(self.data.unwrap_or_default())
            .int(self.ttl_ms);
        if matches!(self.op, WriteOp::Put) && self.fence.is_none() && self.message.is_none() {
            // The hot path: the script needs nothing more.
            return;
        }
        let (message, window) = match self.message {
            Some((id, w)) => (id, w),
            None => ("", MessageWindow { keep: 0, keep_ms: 0 }),
        };
        let (token, owner) = self.fence.unwrap_or((0, ""));
        cmd.arg(token)
            .arg(owner)
            .arg(message)
            .arg(window.keep)
            .arg(window.keep_ms)
            .arg(self.nonce);
        match self.op {
            WriteOp::Cas { expected } | WriteOp::Delete { expected } => cmd.arg(expected),
            WriteOp::DeleteAny => cmd.arg("*"),
            WriteOp::Transition { from, to } => cmd.arg(0).arg(to).arg(from),
            WriteOp::Put => cmd.arg(0),
        };
    }

    fn parse(&self, reply: Value) -> Result<WriteReply, String> {
        Self::parse_reply_for(reply, self.nonce)
    }
}

impl Write<'_> {
    /// Reads a reply of the `write` script for a call without a nonce: every stored first
    /// outcome is a replay.
    pub fn parse_reply(reply: Value) -> Result<WriteReply, String> {
        Self::parse_reply_for(reply, "")
    }

    /// Reads a reply of the `write` script (what [`Invocation::parse`] does, without a call)
    /// for the call with `nonce`: a stored first outcome with the same (non-empty) nonce is
    /// this call's own earlier attempt, not a replay.
    pub fn parse_reply_for(reply: Value, nonce: &str) -> Result<WriteReply, String> {
        if let Value::Int(version) = reply {
            return Ok(WriteReply {
                result: WriteResult::Applied(u64::try_from(version).map_err(|_| format!("version {version}"))?),
                replayed: false,
            });
        }
        let (code, items) = tagged(reply)?;
        let detail = first(items)?;
        if code != 2 {
            return Ok(WriteReply {
                result: write_result(code, detail)?,
                replayed: false,
            });
        }
        // A stored first outcome: 'code:nonce|detail' ('code|detail' before nonces).
        let stored = text(detail)?;
        let (head, detail) = stored
            .split_once('|')
            .ok_or_else(|| format!("stored outcome {stored:?} has no separator"))?;
        let (code, first_nonce) = head.split_once(':').unwrap_or((head, ""));
        let code: i64 = code.parse().map_err(|_| format!("stored outcome {stored:?}"))?;
        Ok(WriteReply {
            result: write_result(code, Value::BulkString(detail.as_bytes().to_vec()))?,
            replayed: nonce.is_empty() || first_nonce != nonce,
        })
    }
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireReply {
    /// Granted with this fencing token.
    Granted(u64),
    /// Held by someone else for this many more ms.
    Held {
        /// The holder.
        owner: String,
        /// Remaining ms of its lease.
        remaining_ms: u64,
    },
}

/// `acquire`: takes a lease.
#[derive(Debug, Clone, Copy)]
pub struct Acquire<'a> {
    /// The lease key.
    pub lease: &'a str,
    /// The fence counter key.
    pub fence: &'a str,
    /// Who takes it.
    pub owner: &'a str,
    /// For how long, in ms.
    pub ttl_ms: u64,
}

impl Invocation for Acquire<'_> {
    type Reply = AcquireReply;

    fn script(&self) -> &'static Script {
        &ACQUIRE
    }

    fn routing_key(&self) -> &str {
        self.lease
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.lease.as_bytes(), self.fence.as_bytes()])
            .arg(self.owner)
            .arg(self.ttl_ms);
    }

    fn parse(&self, reply: Value) -> Result<AcquireReply, String> {
        let (code, items) = tagged(reply)?;
        let mut items = items.into_iter();
        match code {
            1 => Ok(AcquireReply::Granted(int(&items.next().ok_or("missing token")?)?)),
            0 => {
                let owner = text(items.next().ok_or("missing holder")?)?;
                let remaining_ms = match items.next() {
                    Some(Value::Int(ms)) => ms.max(0) as u64,
                    other => return Err(format!("expected remaining ms, got {other:?}")),
                };
                Ok(AcquireReply::Held { owner, remaining_ms })
            }
            other => Err(format!("unknown outcome {other}")),
        }
    }
}

/// What a renew or release found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseReply {
    /// Done.
    Done,
    /// The lease is gone or held under another token; who holds it now (`None`: nobody).
    Lost(Option<String>),
}

/// `renew`: extends a lease for its holder.
#[derive(Debug, Clone, Copy)]
pub struct Renew<'a> {
    /// The lease key.
    pub lease: &'a str,
    /// The token.
    pub token: u64,
    /// The holder.
    pub owner: &'a str,
    /// New ttl in ms.
    pub ttl_ms: u64,
}

/// `release`: gives a lease up, for its holder only.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The lease key.
    pub lease: &'a str,
    /// The token.
    pub token: u64,
    /// The holder.
    pub owner: &'a str,
}

fn lease_reply(reply: Value) -> Result<LeaseReply, String> {
    let (code, items) = tagged(reply)?;
    match code {
        1 => Ok(LeaseReply::Done),
        0 => {
            let now = text(first(items)?)?;
            // 'token:owner' of whoever holds it now.
            Ok(LeaseReply::Lost(
                now.split_once(':')
                    .map(|(_, owner)| owner.to_owned())
                    .filter(|o| !o.is_empty()),
            ))
        }
        other => Err(format!("unknown outcome {other}")),
    }
}

impl Invocation for Renew<'_> {
    type Reply = LeaseReply;

    fn script(&self) -> &'static Script {
        &RENEW
    }

    fn routing_key(&self) -> &str {
        self.lease
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.lease.as_bytes()])
            .arg(self.token)
            .arg(self.owner)
            .arg(self.ttl_ms);
    }

    fn parse(&self, reply: Value) -> Result<LeaseReply, String> {
        lease_reply(reply)
    }
}

impl Invocation for Release<'_> {
    type Reply = LeaseReply;

    fn script(&self) -> &'static Script {
        &RELEASE
    }

    fn routing_key(&self) -> &str {
        self.lease
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.lease.as_bytes()]).arg(self.token).arg(self.owner);
    }

    fn parse(&self, reply: Value) -> Result<LeaseReply, String> {
        lease_reply(reply)
    }
}

/// What a presence call does on one shard.
#[derive(Debug, Clone, Copy)]
pub enum PresenceOp<'a> {
    /// Record a heartbeat of these entities now.
    Beat(&'a [&'a str]),
    /// Count entities seen within the window (ms).
    Count(u64),
    /// Remove entities not seen within the window (ms).
    Expire(u64),
    /// Whether an entity was seen within the window: 1 or 0.
    Active {
        /// The window, in ms.
        window_ms: u64,
        /// The entity.
        entity: &'a str,
    },
}

/// `presence`: one operation on one presence shard.
#[derive(Debug, Clone, Copy)]
pub struct Presence<'a> {
    /// The shard key.
    pub shard: &'a str,
    /// What to do.
    pub op: PresenceOp<'a>,
}

impl Invocation for Presence<'_> {
    type Reply = u64;

    fn script(&self) -> &'static Script {
        &PRESENCE
    }

    fn routing_key(&self) -> &str {
        self.shard
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.shard.as_bytes()]);
        match self.op {
            PresenceOp::Beat(entities) => cmd.arg("beat").arg(0).arg(entities),
            PresenceOp::Count(window) => cmd.arg("count").arg(window),
            PresenceOp::Expire(window) => cmd.arg("expire").arg(window),
            PresenceOp::Active { window_ms, entity } => cmd.arg("active").arg(window_ms).arg(entity),
        };
    }

    fn parse(&self, reply: Value) -> Result<u64, String> {
        int(&reply)
    }
}

/// `presence` `members`: the entities of one shard seen within a window.
#[derive(Debug, Clone, Copy)]
pub struct PresenceMembers<'a> {
    /// The shard key.
    pub shard: &'a str,
    /// The window, in ms.
    pub window_ms: u64,
}

impl Invocation for PresenceMembers<'_> {
    type Reply = Vec<String>;

    fn script(&self) -> &'static Script {
        &PRESENCE
    }

    fn routing_key(&self) -> &str {
        self.shard
    }

    fn write_args<A: Args>(&self, cmd: &mut A) {
        cmd.keys(&[self.shard.as_bytes()]).arg("members").arg(self.window_ms);
    }

    fn parse(&self, reply: Value) -> Result<Vec<String>, String> {
        match reply {
            Value::Array(items) => items.into_iter().map(text).collect(),
            other => Err(format!("expected an array, got {other:?}")),
        }
    }
}
