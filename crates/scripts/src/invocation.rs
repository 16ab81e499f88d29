//! Typed invocations of each script and the parsing of their replies.

use bytes::Bytes;
use redis::{Cmd, Value};

use crate::script::{CAS, DELETE_IF, GET, PUT, Script, TRANSITION};

/// A call of one script: what it sends and how its reply reads.
pub trait Invocation {
    /// The parsed reply.
    type Reply;
    /// The script it calls.
    fn script(&self) -> &'static Script;
    /// Appends `numkeys`, the keys and the arguments after `EVALSHA <sha>`.
    fn write_args(&self, cmd: &mut Cmd);
    /// Reads the script's reply; `Err` says what was unexpected.
    fn parse(&self, reply: Value) -> Result<Self::Reply, String>;

    /// The full `EVALSHA` command.
    fn command(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script().sha());
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

/// What a conditional write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasReply {
    /// Applied; the new version.
    Applied(u64),
    /// Not applied; the current version (0: the entity does not exist).
    Conflict(u64),
}

/// What a transition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionReply {
    /// Applied; the new version.
    Applied(u64),
    /// Refused; the actual status (`None`: no status yet).
    Refused(Option<String>),
    /// The entity does not exist.
    NotFound,
}

/// What a conditional delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReply {
    /// Deleted.
    Deleted,
    /// Not deleted; the current version.
    Conflict(u64),
    /// The entity does not exist.
    NotFound,
}

/// `get`: reads the state hash.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    /// The state hash key.
    pub key: &'a str,
}

/// `put`: writes unconditionally.
#[derive(Debug, Clone, Copy)]
pub struct Put<'a> {
    /// The state hash key.
    pub key: &'a str,
    /// The encoded value.
    pub data: &'a [u8],
    /// Expiry in ms; 0 leaves it as it is.
    pub ttl_ms: u64,
}

/// `cas`: writes at an expected version.
#[derive(Debug, Clone, Copy)]
pub struct Cas<'a> {
    /// The state hash key.
    pub key: &'a str,
    /// The expected version; 0: the entity must not exist.
    pub expected: u64,
    /// The encoded value.
    pub data: &'a [u8],
    /// Expiry in ms; 0 leaves it as it is.
    pub ttl_ms: u64,
}

/// `transition`: moves to `to` from one of `from`, optionally writing a value.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The state hash key.
    pub key: &'a str,
    /// Allowed current statuses; `""` stands for "no status yet".
    pub from: &'a [&'a str],
    /// The new status.
    pub to: &'a str,
    /// A new encoded value, if any.
    pub data: Option<&'a [u8]>,
    /// Expiry in ms; 0 leaves it as it is.
    pub ttl_ms: u64,
}

/// `delete_if`: deletes at an expected version.
#[derive(Debug, Clone, Copy)]
pub struct DeleteIf<'a> {
    /// The state hash key.
    pub key: &'a str,
    /// The expected version.
    pub expected: u64,
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

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(1).arg(self.key);
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply, String> {
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
                other => int(other).map_err(|e| format!("field `v`: {e}"))?,
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

impl Invocation for Put<'_> {
    type Reply = u64;

    fn script(&self) -> &'static Script {
        &PUT
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(1).arg(self.key).arg(self.data).arg(self.ttl_ms);
    }

    fn parse(&self, reply: Value) -> Result<u64, String> {
        int(&reply)
    }
}

impl Invocation for Cas<'_> {
    type Reply = CasReply;

    fn script(&self) -> &'static Script {
        &CAS
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(1)
            .arg(self.key)
            .arg(self.expected)
            .arg(self.data)
            .arg(self.ttl_ms);
    }

    fn parse(&self, reply: Value) -> Result<CasReply, String> {
        let (tag, items) = tagged(reply)?;
        let version = int(&first(items)?)?;
        match tag {
            1 => Ok(CasReply::Applied(version)),
            0 => Ok(CasReply::Conflict(version)),
            other => Err(format!("unknown outcome {other}")),
        }
    }
}

impl Invocation for Transition<'_> {
    type Reply = TransitionReply;

    fn script(&self) -> &'static Script {
        &TRANSITION
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(1).arg(self.key).arg(self.to);
        match self.data {
            Some(data) => cmd.arg("1").arg(data),
            None => cmd.arg("0").arg(""),
        };
        cmd.arg(self.ttl_ms).arg(self.from);
    }

    fn parse(&self, reply: Value) -> Result<TransitionReply, String> {
        let (tag, items) = tagged(reply)?;
        match tag {
            1 => Ok(TransitionReply::Applied(int(&first(items)?)?)),
            0 => Ok(TransitionReply::Refused(
                Some(text(first(items)?)?).filter(|s| !s.is_empty()),
            )),
            -1 => Ok(TransitionReply::NotFound),
            other => Err(format!("unknown outcome {other}")),
        }
    }
}

impl Invocation for DeleteIf<'_> {
    type Reply = DeleteReply;

    fn script(&self) -> &'static Script {
        &DELETE_IF
    }

    fn write_args(&self, cmd: &mut Cmd) {
        cmd.arg(1).arg(self.key).arg(self.expected);
    }

    fn parse(&self, reply: Value) -> Result<DeleteReply, String> {
        let (tag, items) = tagged(reply)?;
        match tag {
            1 => Ok(DeleteReply::Deleted),
            0 => Ok(DeleteReply::Conflict(int(&first(items)?)?)),
            -1 => Ok(DeleteReply::NotFound),
            other => Err(format!("unknown outcome {other}")),
        }
    }
}
