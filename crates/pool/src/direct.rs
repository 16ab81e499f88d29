//! Direct pipeline links: the hot path's own connection to Redis.
//!
//! A batcher shard owns one. Its sender writes a whole batch of already packed commands
//! with one write, after registering how many replies the batch expects; a reader task
//! parses RESP2 replies as they arrive and hands each batch its replies in order. There is
//! no driver task between the two and no per-command future: the work per operation is
//! packing its command and parsing its reply. Plain TCP only; TLS and unix sockets use
//! the redis-rs shared links instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use stateful_redis_core::{ConfigError, Error, RedisConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::connect::ConnectHook;
use crate::error::server_error;
use crate::shared::LinkCounters;

/// One reply: a value, or the error message the server sent for that command.
pub type Reply = Result<Value, String>;

/// Where and as whom to connect.
#[derive(Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Their commands are sent on every new connection (script preload); errors are logged.
    hooks: Arc<[Arc<dyn ConnectHook>]>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credentials here.
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The same credentials, timeouts and hooks, at another address (a cluster node).
    pub(crate) fn at(&self, host: &str, port: u16) -> Self {
        let mut target = self.clone();
        target.host = host.to_owned();
        target.port = port;
        target
    }

    /// The target of a plain `redis://` URL; `None` for TLS and unix sockets.
    pub(crate) fn of(config: &RedisConfig, hooks: Arc<[Arc<dyn ConnectHook>]>) -> Result<Option<Self>, Error> {
        let info = config
            .url
            .expose()
            .into_connection_info()
            .map_err(|e| ConfigError::new("redis.url", config.url.redacted(), e.to_string()))?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Ok(None);
        };
        let redis = info.redis_settings();
        Ok(Some(Self {
            host: host.clone(),
            port: *port,
            username: redis.username().map(str::to_owned),
            password: redis.password().map(str::to_owned),
            db: redis.db(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            hooks,
        }))
    }
}

struct Pending {
    remaining: usize,
    replies: Vec<Reply>,
    done: oneshot::Sender<Vec<Reply>>,
}

/// One open connection: the write half, and the batches waiting for replies.
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Mutex<VecDeque<Pending>>,
    broken: AtomicBool,
    reader: tokio::task::JoinHandle<()>,
    counters: Arc<LinkCounters>,
}

impl Conn {
    fn pending(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks it broken; every batch waiting for replies learns it at once (its sender
    /// is dropped, which its receiver sees as a lost connection).
    /// `broken` is set under the `pending` lock, and senders check it under that lock
    /// before they register: no batch registers on a broken connection.
    fn break_off(&self) {
        let mut pending = self.pending();
        self.broken.store(true, Ordering::Release);
        pending.clear();
    }

    /// Registers a batch of `count` replies and writes it, in one step under the write lock,
    /// so that batches are written, and so answered, in the order they registered. A write
    /// that fails, times out or is abandoned half-way (its future dropped) breaks the
    /// connection: the stream can no longer be matched to batches.
    async fn send(
        &self,
        packed: &[u8],
        count: usize,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Vec<Reply>>, Error> {
        let (done, replies) = oneshot::channel();
        let mut writer = self.writer.lock().await;
        {
            let mut pending = self.pending();
            if self.broken.load(Ordering::Acquire) {
                return Err(lost("the connection broke"));
            }
            pending.push_back(Pending {
                remaining: count,
                replies: Vec::with_capacity(count),
                done,
            });
        }
        // Declared after the writer guard, so it drops first: a write that did not finish
        // marks the connection broken while this sender still holds the write lock, and no
        // other batch can follow the torn bytes onto the socket.
        let guard = BreakUnlessDone {
            conn: self,
            done: false,
        };
        let written = tokio::time::timeout(timeout, writer.write_all(packed)).await;
        match written {
            Ok(Ok(())) => {
                guard.disarm();
                self.counters
                    .bytes_sent
                    .fetch_add(packed.len() as u64, Ordering::Relaxed);
                Ok(replies)
            }
            Ok(Err(e)) => Err(lost(&e.to_string())),
            Err(_) => Err(Error::Timeout {
                operation: "Redis write",
                after: timeout,
            }),
        }
    }
}

/// Breaks the connection when dropped, unless disarmed: a write that did not finish.
struct BreakUnlessDone<'a> {
    conn: &'a Conn,
    done: bool,
}

impl BreakUnlessDone<'_> {
    fn disarm(mut self) {
        self.done = true;
    }
}

impl Drop for BreakUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.break_off();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lost(why: &str) -> Error {
    Error::Connection {
        message: format!("connection to Redis lost: {why}"),
        source: None,
    }
}

/// Reads replies and completes batches in order, until the connection ends.
async fn read_loop(conn: std::sync::Weak<Conn>, mut reader: tokio::net::tcp::OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = reader.read_buf(&mut buf).await;
        let Some(conn) = conn.upgrade() else { return };
        match read {
            Ok(0) | Err(_) => {
                conn.break_off();
                return;
            }
            Ok(n) => {
                conn.counters.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        loop {
            match parse(&buf) {
                Ok(Some((reply, used))) => {
                    buf.advance(used);
                    let mut pending = conn.pending();
                    let Some(front) = pending.front_mut() else {
                        drop(pending);
                        tracing::warn!("Redis sent a reply nobody asked for; closing the connection");
                        conn.break_off();
                        return;
                    };
                    front.replies.push(reply);
                    front.remaining -= 1;
                    if front.remaining == 0
                        && let Some(done) = pending.pop_front()
                    {
                        // A batch whose caller gave up (timeout) just drops its replies.
                        let _ = done.done.send(done.replies);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable reply from Redis; closing the connection");
                    conn.break_off();
                    return;
                }
            }
        }
    }
}

/// Parses one RESP2 reply from the start of `buf`: `None` if it is not complete yet.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    match parse_value(buf, 0, 0)? {
        Some((Parsed::Error(message), used)) => Ok(Some((Err(message), used))),
        Some((Parsed::Value(value), used)) => Ok(Some((Ok(value), used))),
        None => Ok(None),
    }
}

/// Arrays nested deeper than this are refused: each level is a level of recursion, and
/// no command this library sends is answered with more than a few.
const MAX_DEPTH: usize = 512;

/// Why the bytes from the server are not a RESP2 reply. The stream can no longer be
/// matched to batches, so the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Malformed {
    /// The first byte names no RESP2 type.
    UnknownType(u8),
    /// An integer or length that is not decimal digits within i64.
    BadNumber(String),
    /// A length below -1 (the null bulk string or array).
    NegativeLength(i64),
    /// A bulk string whose data is not followed by CRLF.
    MissingCrlf,
    /// Arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownType(byte) => write!(f, "unknown reply type byte 0x{byte:02x}"),
            Self::BadNumber(text) => write!(f, "bad number {text:?}"),
            Self::NegativeLength(len) => write!(f, "negative length {len}"),
            Self::MissingCrlf => f.write_str("a bulk string not followed by CRLF"),
            Self::TooDeep => write!(f, "arrays nested deeper than {MAX_DEPTH}"),
        }
    }
}

enum Parsed {
    Value(Value),
    Error(String),
}

/// The line at `at`, up to its CRLF, and where the next one starts; `None` if the CRLF has
/// not arrived yet.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let mut from = 0;
    loop {
        // A byte scan for CR: reply lines are short.
        let cr = from + rest[from..].iter().position(|&b| b == b'\r')?;
        match rest.get(cr + 1) {
            Some(b'\n') => return Some((&rest[..cr], at + cr + 2)),
            Some(_) => from = cr + 1,
            None => return None,
        }
    }
}

/// A RESP integer: an optional minus sign and decimal digits, within i64.
fn number(text: &[u8]) -> Result<i64, Malformed> {
    let bad = || Malformed::BadNumber(String::from_utf8_lossy(text).into_owned());
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        // Accumulated negative, so that i64::MIN fits.
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    if negative {
        Ok(n)
    } else {
        n.checked_neg().ok_or_else(bad)
    }
}

/// A bulk or array length: `None` for -1 (null), an error below that.
fn length(text: &[u8]) -> Result<Option<usize>, Malformed> {
    match number(text)? {
        -1 => Ok(None),
        len => usize::try_from(len)
            .map(Some)
            .map_err(|_| Malformed::NegativeLength(len)),
    }
}

/// The value at `at`, inside `depth` arrays.
fn parse_value(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Parsed, usize)>, Malformed> {
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    // Refused before its line is complete: nothing after a bad type byte can be read.
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(Malformed::UnknownType(kind));
    }
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let value = match kind {
        b'+' => {
            let text = String::from_utf8_lossy(text);
            if text == "OK" {
                Value::Okay
            } else {
                Value::SimpleString(text.into_owned())
            }
        }
        b'-' => return Ok(Some((Parsed::Error(String::from_utf8_lossy(text).into_owned()), next))),
        b':' => Value::Int(number(text)?),
        b'$' => {
            let Some(len) = length(text)? else {
                return Ok(Some((Parsed::Value(Value::Nil), next)));
            };
            // A length past usize cannot have arrived either: wait, as for any other.
            let end = next.saturating_add(len);
            let Some(crlf) = buf.get(end..end.saturating_add(2)) else {
                return Ok(None);
            };
            if crlf != b"\r\n" {
                return Err(Malformed::MissingCrlf);
            }
            return Ok(Some((
                Parsed::Value(Value::BulkString(buf[next..end].to_vec())),
                end + 2,
            )));
        }
        _ => {
            let Some(len) = length(text)? else {
                return Ok(Some((Parsed::Value(Value::Nil), next)));
            };
            if depth >= MAX_DEPTH {
                return Err(Malformed::TooDeep);
            }
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = next;
            for _ in 0..len {
                // An integer (a write's version: most replies of a bundle of calls) is read in
                // place, without a level of recursion.
                if buf.get(at) == Some(&b':') {
                    let Some((text, next)) = line(buf, at + 1) else {
                        return Ok(None);
                    };
                    items.push(Value::Int(number(text)?));
                    at = next;
                    continue;
                }
                match parse_value(buf, at, depth + 1)? {
                    Some((Parsed::Value(v), used)) => {
                        items.push(v);
                        at = used;
                    }
                    // An error inside an array (EXEC, the `many` script's replies) stays an
                    // error, as redis-rs reads it.
                    Some((Parsed::Error(_), used)) => {
                        items.push(nested_error(&buf[at..used]));
                        at = used;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Parsed::Value(Value::Array(items)), at)));
        }
    };
    Ok(Some((Parsed::Value(value), next)))
}

/// An error line (`-<text>\r\n`) inside an array, as the `Value::ServerError` redis-rs
/// makes of it.
fn nested_error(line: &[u8]) -> Value {
    match redis::parse_redis_value(line) {
        Ok(value @ Value::ServerError(_)) => value,
        Err(e) => match e.try_into() {
            Ok(server) => Value::ServerError(server),
            Err(_) => {
                Value::SimpleString(String::from_utf8_lossy(line.get(1..line.len() - 2).unwrap_or(line)).into_owned())
            }
        },
        Ok(other) => other,
    }
}

#[derive(Default)]
struct LinkState {
    conn: Option<Arc<Conn>>,
    failure: Option<(Instant, String)>,
}

/// A direct link: one connection at a time, reopened on next use after it breaks.
pub(crate) struct DirectLink {
    target: Target,
    state: tokio::sync::Mutex<LinkState>,
    counters: Arc<LinkCounters>,
}

impl std::fmt::Debug for DirectLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectLink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl DirectLink {
    pub(crate) fn new(target: Target, counters: Arc<LinkCounters>) -> Self {
        Self {
            target,
            state: tokio::sync::Mutex::new(LinkState::default()),
            counters,
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state
            .try_lock()
            .map(|s| s.conn.as_ref().is_some_and(|c| !c.broken.load(Ordering::Acquire)))
            .unwrap_or(true)
    }

    async fn conn(&self) -> Result<Arc<Conn>, Error> {
        let started = Instant::now();
        let mut state = self.state.lock().await;
        let reconnect = state.conn.is_some() || state.failure.is_some();
        if let Some(conn) = &state.conn {
            if !conn.broken.load(Ordering::Acquire) {
                return Ok(Arc::clone(conn));
            }
            state.conn = None;
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
        }
        // Callers queued behind a reconnect that failed get its error at once.
        if let Some((at, message)) = &state.failure
            && *at >= started
        {
            return Err(lost(message));
        }
        let span = connect_span(
            "direct",
            &format_args!("{}:{}", self.target.host, self.target.port),
            reconnect,
        );
        match tracing::Instrument::instrument(self.open(), span.clone()).await {
            Ok(conn) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                state.failure = None;
                state.conn = Some(Arc::clone(&conn));
                tracing::debug!(parent: &span, "connected");
                Ok(conn)
            }
            Err(e) => {
                tracing::warn!(parent: &span, error = %e, "connecting to Redis failed");
                self.counters.failed_connects.fetch_add(1, Ordering::Relaxed);
                state.failure = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<Arc<Conn>, Error> {
        let t = &self.target;
        let stream = match tokio::time::timeout(t.connect_timeout, TcpStream::connect((t.host.as_str(), t.port))).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Error::Connection {
                    message: format!("cannot connect to {}:{}: {e}", t.host, t.port),
                    source: Some(Box::new(e)),
                });
            }
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "connect to Redis",
                    after: t.connect_timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        // A peer that vanishes without a reset is noticed by keepalive probes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (read, write) = stream.into_split();
        let conn = Arc::new_cyclic(|weak| Conn {
            writer: tokio::sync::Mutex::new(write),
            pending: Mutex::new(VecDeque::new()),
            broken: AtomicBool::new(false),
            reader: tokio::spawn(read_loop(weak.clone(), read)),
            counters: Arc::clone(&self.counters),
        });
        // Handshake: AUTH and SELECT must succeed; the preload is best effort.
        let mut hello = Vec::new();
        let mut handshake = 0;
        if let Some(password) = &t.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &t.username {
                auth.arg(user);
            }
            auth.arg(password).write_packed_command(&mut hello);
            handshake += 1;
        }
        if t.db != 0 {
            redis::cmd("SELECT").arg(t.db).write_packed_command(&mut hello);
            handshake += 1;
        }
        let mut preload = 0;
        for hook in t.hooks.iter() {
            for cmd in hook.on_connect_commands() {
                cmd.write_packed_command(&mut hello);
                preload += 1;
            }
        }
        let count = handshake + preload;
        if count == 0 {
            return Ok(conn);
        }
        let replies = exchange(
            &conn,
            &hello,
            count,
            t.connect_timeout.saturating_add(t.response_timeout),
        )
        .await?;
        let preloaded = preload > 0 && replies.iter().skip(handshake).all(Result::is_ok);
        for (i, reply) in replies.into_iter().enumerate() {
            let Err(message) = reply else { continue };
            // A refused AUTH is a credentials problem whatever its text (`WRONGPASS`, or
            // `ERR … called without any password configured` from older servers).
            if i == 0 && t.password.is_some() {
                return Err(Error::Auth { message });
            }
            match server_error(None, message) {
                e if i < handshake => return Err(e),
                // No password given, but the server wants one (`NOAUTH`).
                e @ Error::Auth { .. } => return Err(e),
                e => tracing::warn!(error = %e, "preload on a new connection failed; continuing"),
            }
        }
        if preloaded {
            for hook in t.hooks.iter() {
                hook.on_connect_commands_done();
            }
        }
        Ok(conn)
    }

    /// Sends `count` packed commands (exactly that many: the caller packed them) as one
    /// pipeline and returns their replies in order.
    pub(crate) async fn pipeline(&self, packed: &[u8], count: usize) -> Result<Vec<Reply>, Error> {
        let conn = self.conn().await?;
        exchange(&conn, packed, count, self.target.response_timeout).await
    }

    /// PINGs the live connection, if any; one that does not answer in time is broken (a
    /// peer gone silent), so that the next use reconnects instead of queueing behind it.
    pub(crate) async fn probe(&self) {
        let conn = {
            let Ok(state) = self.state.try_lock() else { return };
            match &state.conn {
                Some(conn) if !conn.broken.load(Ordering::Acquire) => Arc::clone(conn),
                _ => return,
            }
        };
        let mut ping = Vec::new();
        redis::cmd("PING").write_packed_command(&mut ping);
        if let Err(Error::Timeout { .. }) = exchange(&conn, &ping, 1, self.target.response_timeout).await {
            tracing::warn!(host = %self.target.host, port = self.target.port, "direct link silent past the response timeout; reconnecting");
            conn.break_off();
        }
    }

    /// Closes the connection unless a reconnect holds the link right now (then it closes
    /// when the pool is dropped).
    pub(crate) fn close_now(&self) {
        if let Ok(mut state) = self.state.try_lock()
            && let Some(conn) = state.conn.take()
        {
            conn.break_off();
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `tracing` span of one connection attempt (target `stateful_redis::connect`, INFO):
/// `link` (`direct`, `shared`), `server` (its address) and `reconnect` (the link was connected,
/// or tried to, before).
pub(crate) fn connect_span(link: &'static str, server: &dyn std::fmt::Display, reconnect: bool) -> tracing::Span {
    tracing::info_span!(
        target: "stateful_redis::connect",
        "stateful_redis.connect",
        link,
        server = %server,
        reconnect,
    )
}

async fn exchange(conn: &Conn, packed: &[u8], count: usize, timeout: Duration) -> Result<Vec<Reply>, Error> {
    if count == 0 {
        return Ok(Vec::new());
    }
    // Large batches get longer to be written: one more timeout per whole MiB.
    let write_timeout = timeout.saturating_mul(1 + (packed.len() >> 20) as u32);
    let replies = conn.send(packed, count, write_timeout).await?;
    match tokio::time::timeout(timeout, replies).await {
        Ok(Ok(replies)) => Ok(replies),
        Ok(Err(_)) => Err(lost("the connection closed before the replies came")),
        // The batch stays registered: its replies, when they come, are read and dropped,
        // so the batches behind it still get their own.
        Err(_) => Err(Error::Timeout {
            operation: "Redis request",
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Option<(Reply, usize)> {
        parse(input).expect("parses")
    }

    #[test]
    fn parses_every_reply_type_and_waits_for_more() {
        assert_eq!(one(b":42\r\n"), Some((Ok(Value::Int(42)), 5)));
        assert_eq!(one(b"+OK\r\n"), Some((Ok(Value::Okay), 5)));
        assert_eq!(one(b"$3\r\nabc\r\n"), Some((Ok(Value::BulkString(b"abc".to_vec())), 9)));
        assert_eq!(one(b"$-1\r\n"), Some((Ok(Value::Nil), 5)));
        assert_eq!(
            one(b"-NOSCRIPT No matching script\r\n").map(|r| r.0),
            Some(Err("NOSCRIPT No matching script".into()))
        );
        let array = b"*3\r\n:0\r\n$2\r\n17\r\n$-1\r\n";
        assert_eq!(
            one(array),
            Some((
                Ok(Value::Array(vec![
                    Value::Int(0),
                    Value::BulkString(b"17".to_vec()),
                    Value::Nil
                ])),
                array.len()
            ))
        );
        // An error inside an array stays an error, as redis-rs reads it.
        let array = b"*2\r\n-WRONGTYPE Operation against a key\r\n:1\r\n";
        let Some((Ok(Value::Array(items)), _)) = one(array) else {
            panic!("an array");
        };
        let Value::ServerError(e) = &items[0] else {
            panic!("an error: {:?}", items[0]);
        };
        assert_eq!((e.code(), e.details()), ("WRONGTYPE", Some("Operation against a key")));
        assert_eq!(items[1], Value::Int(1));
        // Incomplete input of every kind is "not yet", never an error.
        for cut in 1..array.len() {
            assert_eq!(one(&array[..cut]), None, "cut at {cut}");
        }
        assert_eq!(one(b"$5\r\nab"), None);
        // A bundle's replies: integers read in place, each cut short is "not yet", a bad one
        // an error.
        let ints = b"*3\r\n:1\r\n:-22\r\n:333\r\n";
        assert_eq!(
            one(ints),
            Some((
                Ok(Value::Array(vec![Value::Int(1), Value::Int(-22), Value::Int(333)])),
                ints.len()
            ))
        );
        for cut in 1..ints.len() {
            assert_eq!(one(&ints[..cut]), None, "cut at {cut}");
        }
        assert!(parse(b"*2\r\n:1\r\n:1x\r\n").is_err());
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":x1\r\n").is_err());
        // Integers at and past the edges of i64.
        assert_eq!(
            one(b":-9223372036854775808\r\n").map(|r| r.0),
            Some(Ok(Value::Int(i64::MIN)))
        );
        assert_eq!(
            one(b":9223372036854775807\r\n").map(|r| r.0),
            Some(Ok(Value::Int(i64::MAX)))
        );
        assert_eq!(one(b":-0\r\n").map(|r| r.0), Some(Ok(Value::Int(0))));
        for bad in [
            &b":9223372036854775808\r\n"[..],
            b":-\r\n",
            b":\r\n",
            b":+1\r\n",
            b":1 \r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A lone CR inside a line is not its end.
        assert_eq!(
            one(b"+a\rb\r\n").map(|r| r.0),
            Some(Ok(Value::SimpleString("a\rb".into())))
        );
        assert_eq!(one(b"+ab\r"), None);
    }

    /// Cases the property tests (`proptests.rs`) found: each was accepted, or crashed.
    #[test]
    fn malformed_replies_are_typed_errors() {
        // Negative lengths other than -1 were read as null.
        assert_eq!(parse(b"$-2\r\n"), Err(Malformed::NegativeLength(-2)));
        assert_eq!(parse(b"*-5\r\n"), Err(Malformed::NegativeLength(-5)));
        assert_eq!(one(b"*-1\r\n"), Some((Ok(Value::Nil), 5)));
        // The two bytes after a bulk string's data were skipped unread.
        assert_eq!(parse(b"$3\r\nabcXY"), Err(Malformed::MissingCrlf));
        assert_eq!(one(b"$3\r\nabc\r"), None);
        // An unknown type byte waited for its line; nothing after it can be read.
        assert_eq!(parse(b"?"), Err(Malformed::UnknownType(b'?')));
        // Deep nesting overflowed the reader's stack (a crash of the whole process).
        let deep = b"*1\r\n".repeat(100_000);
        assert_eq!(parse(&deep), Err(Malformed::TooDeep));
        let within = [b"*1\r\n".repeat(MAX_DEPTH), b":7\r\n".to_vec()].concat();
        assert!(matches!(one(&within), Some((Ok(Value::Array(_)), used)) if used == within.len()));
        // A length past usize waits, as any bulk string not complete yet.
        assert_eq!(one(b"$9223372036854775807\r\nabc"), None);
    }
}

#[cfg(test)]
mod proptests;
