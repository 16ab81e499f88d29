//! Commands encoded once, as the RESP bytes the direct links send.
//!
//! A [`redis::Cmd`] keeps its arguments in two vectors and is encoded again each time it is
//! sent. The executor's hot path instead writes each script call's arguments straight into
//! one buffer as RESP, once, when the call is made: a batch is then the concatenation of its
//! calls' bytes, and a resend (after `NOSCRIPT` or a redirect) copies the same bytes again.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;

use redis::{RedisWrite, ToRedisArgs};

/// One command as RESP bytes: an array of bulk strings.
///
/// Build it with [`arg`](Self::arg) (anything `redis` can send as arguments); a pipeline
/// takes it through [`Packable`], which writes the `*<count>` header and then its bytes.
///
/// ```
/// use stateful_redis_pool::PackedCommand;
///
/// let mut cmd = PackedCommand::with_capacity(64);
/// cmd.arg("SET").arg("key").arg(42);
/// assert_eq!(cmd.to_bytes(), b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$2\r\n42\r\n");
/// assert_eq!(cmd.args().collect::<Vec<_>>(), [&b"SET"[..], b"key", b"42"]);
/// ```
#[derive(Clone)]
pub struct PackedCommand {
    /// The arguments, each `$<len>\r\n<bytes>\r\n`.
    buf: Vec<u8>,
    count: u32,
    /// Where [`keys`](Self::keys) wrote a script call's `numkeys` and how its keys ended, so
    /// that [`script_call`](Self::script_call) finds them without reading the bytes again.
    keys: Option<KeysWritten>,
}

/// What [`PackedCommand::keys`] wrote: `numkeys` at byte `numkeys_at`, the keys from
/// `keys_at` to `keys_end`, `count` of them.
#[derive(Debug, Clone, Copy)]
struct KeysWritten {
    numkeys_at: u32,
    keys_at: u32,
    keys_end: u32,
    count: u32,
}

impl std::fmt::Debug for PackedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The arguments may hold credentials or user data: only their number and size.
        f.debug_struct("PackedCommand")
            .field("args", &self.count)
            .field("bytes", &self.buf.len())
            .finish()
    }
}

impl Default for PackedCommand {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl PackedCommand {
    /// An empty command with room for `bytes` bytes of arguments (and their framing).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            count: 0,
            keys: None,
        }
    }

    /// A copy of `start` with room for `bytes` more bytes of arguments: for commands that
    /// all begin alike (`EVALSHA <sha>`), encoded once. Its buffer is one this thread
    /// recycled, when it has one.
    pub fn starting_with(start: &PackedCommand, bytes: usize) -> Self {
        let size = start.buf.len() + bytes;
        // A command larger than a spare buffer gets its own (a spare would be grown, and then
        // freed, not kept).
        let mut buf = if size <= SPARE_CAPACITY_MAX {
            SPARE
                .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut spare| spare.pop()))
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        buf.reserve(size);
        buf.extend_from_slice(&start.buf);
        Self {
            buf,
            count: start.count,
            keys: None,
        }
    }

    /// Appends an argument (or several, for a slice or a tuple).
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(self);
        self
    }

    /// Appends one argument of bytes.
    pub fn bytes(&mut self, arg: &[u8]) -> &mut Self {
        self.push(arg);
        self
    }

    /// Appends a number as its decimal text (as `arg(n)` does).
    pub fn int(&mut self, n: u64) -> &mut Self {
        write_int(&mut self.buf, n);
        self.count += 1;
        self
    }

    /// Appends a script call's `numkeys` and its keys, and remembers where they are: a
    /// command written so is read back as a [`ScriptCall`] without parsing its bytes.
    pub fn keys(&mut self, keys: &[&[u8]]) -> &mut Self {
        let numkeys_at = self.buf.len();
        self.int(keys.len() as u64);
        let keys_at = self.buf.len();
        for key in keys {
            self.push(key);
        }
        // Offsets past u32 (a 4 GiB command) are simply not remembered: read back by parsing.
        let at = |n: usize| u32::try_from(n).ok();
        self.keys = (|| {
            Some(KeysWritten {
                numkeys_at: at(numkeys_at)?,
                keys_at: at(keys_at)?,
                keys_end: at(self.buf.len())?,
                count: at(keys.len())?,
            })
        })();
        self
    }

    /// The arguments written so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no argument was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The whole command, as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.packed_len_hint());
        self.pack_into(&mut out);
        out
    }

    /// Each argument's bytes, in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.buf[..];
        std::iter::from_fn(move || {
            // `$<len>\r\n<bytes>\r\n`, as `push` wrote it.
            let digits = rest.iter().position(|&b| b == b'\r')?;
            let len: usize = std::str::from_utf8(rest.get(1..digits)?).ok()?.parse().ok()?;
            let arg = rest.get(digits + 2..digits + 2 + len)?;
            rest = rest.get(digits + 4 + len..)?;
            Some(arg)
        })
    }

    /// Reads the command as a script call, `EVALSHA <sha> <numkeys> <keys…> <arguments…>`:
    /// its keys and its arguments, each as the RESP bulk strings they were written as (for
    /// [`extend_encoded`](Self::extend_encoded)). `None` if it is not shaped so.
    ///
    /// ```
    /// use stateful_redis_pool::PackedCommand;
    ///
    /// let mut cmd = PackedCommand::default();
    /// cmd.arg("EVALSHA").arg("abc").arg(1).arg("k").arg("v1").arg("v2");
    /// let call = cmd.script_call().expect("a script call");
    /// assert_eq!((call.keys, call.args), (1, 2));
    /// assert_eq!(call.key_bytes, b"$1\r\nk\r\n");
    /// assert_eq!(call.arg_bytes, b"$2\r\nv1\r\n$2\r\nv2\r\n");
    /// ```
    pub fn script_call(&self) -> Option<ScriptCall<'_>> {
        let after_sha = bulk_end(&self.buf, bulk_end(&self.buf, 0)?)?;
        self.script_call_from(after_sha)
    }

    /// [`script_call`](Self::script_call) of a command made with
    /// [`starting_with(start, …)`](Self::starting_with), where `start` is its
    /// `EVALSHA <sha>`: its first two arguments are not read again. `None` if it does not
    /// start so.
    pub fn script_call_after(&self, start: &PackedCommand) -> Option<ScriptCall<'_>> {
        if start.count != 2 || !self.buf.starts_with(&start.buf) {
            return None;
        }
        self.script_call_from(start.buf.len())
    }

    /// The script call whose `numkeys` starts at `after_sha`.
    fn script_call_from(&self, after_sha: usize) -> Option<ScriptCall<'_>> {
        let buf = &self.buf[..];
        if let Some(k) = self.keys
            && k.numkeys_at as usize == after_sha
        {
            // Written by `keys`: `numkeys` and the keys are where it put them.
            let args = (self.count as usize).checked_sub(3 + k.count as usize)?;
            return Some(ScriptCall {
                keys: k.count as usize,
                key_bytes: buf.get(k.keys_at as usize..k.keys_end as usize)?,
                args,
                arg_bytes: buf.get(k.keys_end as usize..)?,
            });
        }
        let (after_numkeys, digits) = bulk_at(buf, after_sha)?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let keys = digits.iter().try_fold(0usize, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
        })?;
        let total = (self.count as usize).checked_sub(3)?;
        if keys > total {
            return None;
        }
        let mut keys_end = after_numkeys;
        for _ in 0..keys {
            keys_end = bulk_end(buf, keys_end)?;
        }
        Some(ScriptCall {
            keys,
            key_bytes: &buf[after_numkeys..keys_end],
            args: total - keys,
            arg_bytes: &buf[keys_end..],
        })
    }

    /// Appends `count` arguments already encoded as RESP bulk strings (the parts of a
    /// [`ScriptCall`]).
    pub fn extend_encoded(&mut self, encoded: &[u8], count: usize) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self.count += u32::try_from(count).unwrap_or(u32::MAX);
        self
    }

    /// Its arguments as RESP bulk strings, without the `*<count>` header (what
    /// [`extend_encoded`](Self::extend_encoded) appends), and their number.
    pub fn encoded(&self) -> (&[u8], usize) {
        (&self.buf, self.count as usize)
    }

    /// The same command as a `redis::Cmd`, for the redis-rs connections.
    pub fn to_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(self.len(), self.buf.len());
        for arg in self.args() {
            cmd.arg(arg);
        }
        cmd
    }

    fn push(&mut self, arg: &[u8]) {
        write_bulk(&mut self.buf, arg);
        self.count += 1;
    }
}

/// Appends `arg` to `out` as a RESP bulk string, `$<len>\r\n<arg>\r\n`: how
/// [`PackedCommand`] writes an argument, for bytes written straight into a pipeline.
#[inline]
pub fn write_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    let n = arg.len();
    out.reserve(n + 24);
    // `$<len>\r\n`: most arguments are shorter than 1000 bytes, and a header of known
    // size is a few stores, where formatting the length and appending a slice of
    // unknown size would each be a call.
    if n < 10 {
        out.extend_from_slice(&[b'$', digit(n), b'\r', b'\n']);
    } else if n < 100 {
        out.extend_from_slice(&[b'$', digit(n / 10), digit(n % 10), b'\r', b'\n']);
    } else if n < 1000 {
        out.extend_from_slice(&[b'$', digit(n / 100), digit(n / 10 % 10), digit(n % 10), b'\r', b'\n']);
    } else {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` to `out` as the bulk string of its decimal text (as [`PackedCommand::int`]).
#[inline]
pub fn write_int(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        // One digit: the usual numkeys, a zero ttl.
        out.extend_from_slice(&[b'$', b'1', b'\r', b'\n', digit(n as usize), b'\r', b'\n']);
    } else {
        write_bulk(out, itoa::Buffer::new().format(n).as_bytes());
    }
}

/// A script call's keys and arguments, as [`PackedCommand::script_call`] reads them.
#[derive(Debug, Clone, Copy)]
pub struct ScriptCall<'a> {
    /// The number of keys.
    pub keys: usize,
    /// The keys, as RESP bulk strings.
    pub key_bytes: &'a [u8],
    /// The number of arguments after the keys.
    pub args: usize,
    /// The arguments, as RESP bulk strings.
    pub arg_bytes: &'a [u8],
}

/// Where the bulk string `$<len>\r\n<bytes>\r\n` that starts at `at` ends, and its bytes.
fn bulk_at(buf: &[u8], at: usize) -> Option<(usize, &[u8])> {
    if *buf.get(at)? != b'$' {
        return None;
    }
    // One pass over the length's digits (a call's headers are read for every call batched).
    let mut len = 0usize;
    let mut i = at + 1;
    loop {
        let b = *buf.get(i)?;
        if b == b'\r' {
            break;
        }
        if !b.is_ascii_digit() || i - at > 12 {
            return None;
        }
        len = len * 10 + usize::from(b - b'0');
        i += 1;
    }
    if i == at + 1 {
        return None;
    }
    let start = i + 2;
    let end = start + len + 2;
    (end <= buf.len()).then(|| (end, &buf[start..start + len]))
}

fn bulk_end(buf: &[u8], at: usize) -> Option<usize> {
    bulk_at(buf, at).map(|(end, _)| end)
}

/// The ASCII digit of `d` (0 to 9).
fn digit(d: usize) -> u8 {
    b'0' + (d % 10) as u8
}

/// Buffers of dropped commands, kept for the next ones made on the same thread: a command is
/// made in its caller's task and dropped once its pipeline is answered, so in a steady flow
/// each buffer serves one command after another instead of being allocated and freed each
/// time. Bounded in number and in size.
const SPARE_MAX: usize = 64;
/// Larger buffers (big values) go back to the allocator.
const SPARE_CAPACITY_MAX: usize = 4096;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Drop for PackedCommand {
    fn drop(&mut self) {
        if self.buf.capacity() == 0 || self.buf.capacity() > SPARE_CAPACITY_MAX {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // During thread teardown the spare list may be gone: then the buffer is just freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.len() < SPARE_MAX
            {
                spare.push(buf);
            }
        });
    }
}

impl RedisWrite for PackedCommand {
    fn write_arg(&mut self, arg: &[u8]) {
        self.push(arg);
    }

    fn write_arg_fmt(&mut self, arg: impl std::fmt::Display) {
        let mut text = String::new();
        let _ = write!(text, "{arg}");
        self.push(text.as_bytes());
    }

    fn writer_for_next_arg(&mut self) -> impl io::Write + '_ {
        /// Collects one argument, and appends it when dropped.
        struct NextArg<'a> {
            cmd: &'a mut PackedCommand,
            bytes: Vec<u8>,
        }
        impl io::Write for NextArg<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Drop for NextArg<'_> {
            fn drop(&mut self) {
                let bytes = std::mem::take(&mut self.bytes);
                self.cmd.push(&bytes);
            }
        }
        NextArg {
            cmd: self,
            bytes: Vec::new(),
        }
    }

    fn reserve_space_for_args(&mut self, additional: impl IntoIterator<Item = usize>) {
        let bytes: usize = additional.into_iter().map(|len| len + 16).sum();
        self.buf.reserve(bytes);
    }
}

/// A command a pipeline can carry: writes its RESP bytes.
pub trait Packable {
    /// Appends the command's RESP bytes to `out`.
    fn pack_into(&self, out: &mut Vec<u8>);
    /// A guess of its size in bytes, to size a pipeline's buffer once.
    fn packed_len_hint(&self) -> usize;
}

impl<T: Packable + ?Sized> Packable for &T {
    fn pack_into(&self, out: &mut Vec<u8>) {
        (**self).pack_into(out);
    }

    fn packed_len_hint(&self) -> usize {
        (**self).packed_len_hint()
    }
}

impl Packable for redis::Cmd {
    fn pack_into(&self, out: &mut Vec<u8>) {
        self.write_packed_command(out);
    }

    fn packed_len_hint(&self) -> usize {
        256
    }
}

impl Packable for PackedCommand {
    fn pack_into(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(self.count).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.buf);
    }

    fn packed_len_hint(&self) -> usize {
        self.buf.len() + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same arguments written to a `PackedCommand` and to a `redis::Cmd`.
    macro_rules! both {
        ($($arg:expr),* $(,)?) => {{
            let mut packed = PackedCommand::default();
            let mut cmd = redis::Cmd::new();
            $(
                packed.arg($arg);
                cmd.arg($arg);
            )*
            (packed, cmd)
        }};
    }

    #[test]
    fn encodes_like_redis_rs_for_every_kind_of_argument() {
        let big = vec![7u8; 70_000];
        let (packed, cmd) = both!(
            "EVALSHA",
            1,
            u64::MAX,
            -5i64,
            &b""[..],
            &["a", "bc"][..],
            &big[..],
            1.5f64
        );
        assert_eq!(packed.to_bytes(), cmd.get_packed_command());
        assert_eq!(packed.len(), 9);
        assert_eq!(packed.to_cmd().get_packed_command(), cmd.get_packed_command());
        let mut out = Vec::new();
        packed.pack_into(&mut out);
        assert_eq!(out, cmd.get_packed_command());
    }

    #[test]
    fn a_command_starting_like_another_has_its_arguments_first() {
        let mut start = PackedCommand::default();
        start.arg("EVALSHA").arg("abc");
        let mut packed = PackedCommand::starting_with(&start, 0);
        packed.arg(1).arg("k");
        let mut cmd = redis::Cmd::new();
        cmd.arg("EVALSHA").arg("abc").arg(1).arg("k");
        assert_eq!(packed.to_bytes(), cmd.get_packed_command());
    }

    #[test]
    fn arguments_of_every_length_width() {
        for len in (0..=1100).chain([9_999, 10_000, 123_456]) {
            let arg = vec![b'x'; len];
            let (packed, cmd) = both!(&arg[..], "after");
            assert_eq!(packed.to_bytes(), cmd.get_packed_command(), "argument of {len} bytes");
            assert_eq!(packed.args().map(<[u8]>::len).collect::<Vec<_>>(), [len, 5]);
        }
    }

    #[test]
    fn the_shortcuts_encode_like_arg() {
        let mut packed = PackedCommand::default();
        let mut cmd = redis::Cmd::new();
        for n in [0, 1, 9, 10, 99, 12_345, u64::MAX] {
            packed.int(n);
            cmd.arg(n);
        }
        packed.bytes(b"").bytes(b"key");
        cmd.arg(&b""[..]).arg("key");
        assert_eq!(packed.to_bytes(), cmd.get_packed_command());
    }

    #[test]
    fn headers_of_every_width_and_no_argument() {
        assert_eq!(PackedCommand::default().to_bytes(), b"*0\r\n");
        let mut packed = PackedCommand::default();
        for i in 0..1234 {
            packed.arg(i);
        }
        let mut cmd = redis::Cmd::new();
        for i in 0..1234 {
            cmd.arg(i);
        }
        assert_eq!(packed.to_bytes(), cmd.get_packed_command());
        assert_eq!(packed.args().count(), 1234);
    }

    #[test]
    fn a_dropped_command_lends_its_buffer_to_the_next_one() {
        let mut start = PackedCommand::default();
        start.arg("EVALSHA").arg("abc");
        let mut first = PackedCommand::starting_with(&start, 100);
        first.bytes(b"value");
        let reused = first.buf.as_ptr();
        drop(first);
        let mut second = PackedCommand::starting_with(&start, 100);
        assert_eq!(second.buf.as_ptr(), reused);
        // Nothing of the first command is left in it.
        second.int(1);
        let mut cmd = redis::Cmd::new();
        cmd.arg("EVALSHA").arg("abc").arg(1);
        assert_eq!(second.to_bytes(), cmd.get_packed_command());
        // A big buffer goes back to the allocator instead.
        let big = PackedCommand::starting_with(&start, 2 * SPARE_CAPACITY_MAX);
        let big_ptr = big.buf.as_ptr();
        drop(big);
        drop(second);
        let third = PackedCommand::starting_with(&start, 0);
        assert_ne!(third.buf.as_ptr(), big_ptr);
    }

    #[test]
    fn a_script_call_splits_into_keys_and_arguments_and_joins_again() {
        let long = "x".repeat(1500);
        for keys in 0..3usize {
            let mut cmd = PackedCommand::default();
            cmd.arg("EVALSHA").arg("0123456789abcdef").int(keys as u64);
            let names: Vec<String> = (0..keys).map(|k| format!("ns:{{e{k}}}:s")).collect();
            for name in &names {
                cmd.arg(name.as_str());
            }
            cmd.arg("put").arg(long.as_str()).int(0).arg(&b""[..]);
            let call = cmd.script_call().expect("a script call");
            assert_eq!((call.keys, call.args), (keys, 4));
            // Read after a known start, the same.
            let mut start = PackedCommand::default();
            start.arg("EVALSHA").arg("0123456789abcdef");
            let after = cmd.script_call_after(&start).expect("starts so");
            assert_eq!((after.key_bytes, after.arg_bytes), (call.key_bytes, call.arg_bytes));
            let mut other = PackedCommand::default();
            other.arg("EVALSHA").arg("fedcba9876543210");
            assert!(cmd.script_call_after(&other).is_none(), "another script's start");
            // The parts, appended after the same start, give the same command back.
            let mut again = PackedCommand::default();
            again.arg("EVALSHA").arg("0123456789abcdef").int(keys as u64);
            again.extend_encoded(call.key_bytes, call.keys);
            again.extend_encoded(call.arg_bytes, call.args);
            assert_eq!(again.to_bytes(), cmd.to_bytes());
            // Written with `keys`: the same bytes, and the same call read back from where
            // `keys` put them (not parsed), whole or after the start.
            let mut written = PackedCommand::starting_with(&start, 0);
            let key_refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            written
                .keys(&key_refs)
                .arg("put")
                .arg(long.as_str())
                .int(0)
                .arg(&b""[..]);
            assert_eq!(written.to_bytes(), cmd.to_bytes());
            for read in [written.script_call(), written.script_call_after(&start)] {
                let read = read.expect("a script call");
                assert_eq!((read.keys, read.args), (keys, 4));
                assert_eq!((read.key_bytes, read.arg_bytes), (call.key_bytes, call.arg_bytes));
            }
            assert!(written.script_call_after(&other).is_none(), "another script's start");
        }
    }

    #[test]
    fn what_is_not_a_script_call_is_none() {
        let mut cmd = PackedCommand::default();
        cmd.arg("GET").arg("k");
        assert!(cmd.script_call().is_none());
        let mut cmd = PackedCommand::default();
        cmd.arg("EVALSHA").arg("abc").arg("two").arg("k");
        assert!(cmd.script_call().is_none(), "numkeys is not a number");
        let mut cmd = PackedCommand::default();
        cmd.arg("EVALSHA").arg("abc").arg(3).arg("k");
        assert!(cmd.script_call().is_none(), "more keys than arguments");
        assert!(PackedCommand::default().script_call().is_none());
    }

    #[test]
    fn debug_shows_no_argument() {
        let mut packed = PackedCommand::default();
        packed.arg("AUTH").arg("s3cret");
        let shown = format!("{packed:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
