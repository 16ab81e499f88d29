//! Bundles: several script calls in one `EVALSHA` of [`MANY`], so that a batch of calls costs
//! the server one `EVALSHA` instead of one per call.
//!
//! A batch's calls are grouped by cluster slot (a standalone server has one), in their order;
//! each group of two or more becomes one `EVALSHA many` whose keys are its calls' keys and
//! whose arguments say, for each call, its script, its number of keys and of arguments, then
//! its arguments (copied as the RESP bytes they were encoded as). The reply is an array with
//! each call's own reply or error, which [`fan_out`] hands back call by call.

use redis::Value;
use stateful_redis_core::Error;
use stateful_redis_pool::{Packable, PackedCommand, ScriptCall, write_int};

use crate::invocation::Invocation;
use crate::script::{GET, MANY, MANY_SCRIPTS, Script, WRITE};

/// One script call of a batch, encoded: what [`plan`] groups and the runners send.
#[derive(Debug, Clone)]
pub struct Call {
    /// The script it calls.
    pub script: &'static Script,
    /// Its `EVALSHA`, encoded once (by [`Invocation::packed`]).
    pub command: PackedCommand,
    /// The cluster slot of its keys (0 on a standalone server): only calls of one slot
    /// share a bundle.
    pub slot: u16,
    /// A hash of its entity (the hash tag of its keys): a read goes ahead of the calls of
    /// other entities, never of its own.
    pub entity: u64,
}

impl Call {
    /// `invocation` encoded, for the keys of cluster slot `slot` (0 on a standalone server).
    pub fn new<I: Invocation>(invocation: &I, slot: u16) -> Self {
        Self {
            script: invocation.script(),
            command: invocation.packed(),
            slot,
            entity: entity_hash(invocation.routing_key()),
        }
    }
}

/// FNV-1a of a key's hash tag: equal for the keys of one entity.
fn entity_hash(key: &str) -> u64 {
    stateful_redis_core::hash_tag(key)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// How many calls one bundle (one `EVALSHA` of [`MANY`]) may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combine {
    /// Most calls in one bundle; 1 sends every call as its own `EVALSHA`.
    pub max_calls: usize,
    /// Most bytes of calls in one bundle; a call larger than this goes alone.
    pub max_bytes: usize,
}

impl Combine {
    /// Every call its own `EVALSHA`.
    pub const OFF: Combine = Combine {
        max_calls: 1,
        max_bytes: 0,
    };

    /// Up to `max_calls` calls and 256 KiB of them in one bundle.
    pub fn up_to(max_calls: usize) -> Self {
        Self {
            max_calls,
            max_bytes: 256 * 1024,
        }
    }
}

/// One command of a pipeline: a call alone, or several calls in one bundle.
#[derive(Debug)]
pub enum Unit<'a> {
    /// A call as it was encoded.
    One(&'a PackedCommand),
    /// An `EVALSHA many` made of several calls, written straight from their bytes.
    Many(Bundle<'a>),
}

/// A bundle: several calls as one `EVALSHA many`, their parts read from their encoded bytes.
#[derive(Debug)]
pub struct Bundle<'a> {
    /// Each call's number in [`MANY`] ([`PLAIN_PUT`] for a plain put) and its keys and
    /// arguments.
    calls: Vec<(u64, ScriptCall<'a>)>,
    keys: usize,
    /// Arguments in all: `EVALSHA`, the SHA, numkeys, the keys, three plus its own for
    /// each call, and two for each run of plain puts plus their values.
    count: usize,
    bytes: usize,
}

impl Bundle<'_> {
    fn write<W: Args>(&self, cmd: &mut W) {
        cmd.int(self.keys as u64);
        for (_, call) in &self.calls {
            cmd.encoded(call.key_bytes, call.keys);
        }
        for (i, (number, call)) in self.calls.iter().enumerate() {
            if *number != PLAIN_PUT {
                cmd.call_header(*number, call.keys as u64, call.args as u64);
            } else if i == 0 || self.calls[i - 1].0 != PLAIN_PUT {
                // A run of plain puts: `P`, how many, then their values.
                let run = self.calls[i..].iter().take_while(|(n, _)| *n == PLAIN_PUT).count();
                cmd.encoded(b"$1\r\nP\r\n", 1).int(run as u64);
            }
            cmd.encoded(call.arg_bytes, call.args);
        }
    }
}

/// Where a bundle's arguments go: a pipeline's buffer, or a command of its own.
trait Args {
    fn int(&mut self, n: u64) -> &mut Self;
    fn encoded(&mut self, bytes: &[u8], count: usize) -> &mut Self;

    /// A call's script number, number of keys and number of arguments.
    fn call_header(&mut self, number: u64, keys: u64, args: u64) {
        self.int(number).int(keys).int(args);
    }
}

impl Args for PackedCommand {
    fn int(&mut self, n: u64) -> &mut Self {
        PackedCommand::int(self, n)
    }

    fn encoded(&mut self, bytes: &[u8], count: usize) -> &mut Self {
        self.extend_encoded(bytes, count)
    }
}

/// Bulk strings written straight into a pipeline's buffer.
struct Raw<'a>(&'a mut Vec<u8>);

impl Args for Raw<'_> {
    fn int(&mut self, n: u64) -> &mut Self {
        write_int(self.0, n);
        self
    }

    fn encoded(&mut self, bytes: &[u8], _: usize) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn call_header(&mut self, number: u64, keys: u64, args: u64) {
        if number < 10 && keys < 10 && args < 10 {
            // The usual call: three one-digit bulk strings in one append.
            let digit = |n: u64| b'0' + n as u8;
            #[rustfmt::skip]
            self.0.extend_from_slice(&[
                b'$', b'1', b'\r', b'\n', digit(number), b'\r', b'\n',
                b'$', b'1', b'\r', b'\n', digit(keys), b'\r', b'\n',
                b'$', b'1', b'\r', b'\n', digit(args), b'\r', b'\n',
            ]);
        } else {
            self.int(number).int(keys).int(args);
        }
    }
}

impl Packable for Unit<'_> {
    fn pack_into(&self, out: &mut Vec<u8>) {
        match self {
            Unit::One(cmd) => cmd.pack_into(out),
            Unit::Many(bundle) => {
                out.reserve(bundle.bytes + 64);
                out.push(b'*');
                out.extend_from_slice(itoa::Buffer::new().format(bundle.count).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(MANY.evalsha().encoded().0);
                bundle.write(&mut Raw(out));
            }
        }
    }

    fn packed_len_hint(&self) -> usize {
        match self {
            Unit::One(cmd) => cmd.packed_len_hint(),
            Unit::Many(bundle) => bundle.bytes + 64,
        }
    }
}

impl Unit<'_> {
    /// The command for a redis-rs connection.
    pub fn to_cmd(&self) -> redis::Cmd {
        match self {
            Unit::One(cmd) => cmd.to_cmd(),
            Unit::Many(_) => self.to_packed().to_cmd(),
        }
    }

    /// The command as one [`PackedCommand`] (a copy, for a bundle).
    pub fn to_packed(&self) -> PackedCommand {
        match self {
            Unit::One(cmd) => (*cmd).clone(),
            Unit::Many(bundle) => {
                let mut cmd = PackedCommand::starting_with(MANY.evalsha(), bundle.bytes);
                bundle.write(&mut cmd);
                cmd
            }
        }
    }
}

/// The pipeline of a batch: its units, and which calls each one carries.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Each unit with its script ([`MANY`] for a combined one) and its slot.
    pub units: Vec<(&'static Script, Unit<'a>, u16)>,
    members: Members,
}

impl<'a> Plan<'a> {
    /// The calls of each unit, in their order.
    pub fn members(&self) -> impl Iterator<Item = &[usize]> {
        self.members.iter()
    }

    /// The units (which go to be sent) apart from the calls each one carries.
    pub fn into_parts(self) -> (Vec<(&'static Script, Unit<'a>, u16)>, Members) {
        (self.units, self.members)
    }
}

/// Which calls each unit of a [`Plan`] carries.
#[derive(Debug)]
pub struct Members {
    /// The calls (indexes into the batch), unit after unit.
    order: Vec<usize>,
    /// Where each unit's calls end in `order`.
    ends: Vec<usize>,
}

impl Members {
    /// The calls of each unit, in their order.
    pub fn iter(&self) -> impl Iterator<Item = &[usize]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.order[start..end])
    }
}

/// The number of `script` in [`MANY`], if it runs there.
fn number(script: &Script) -> Option<u64> {
    MANY_SCRIPTS
        .iter()
        .position(|s| std::ptr::eq(*s, script))
        .map(|i| i as u64 + 1)
}

/// Groups `calls` into units: calls of one slot, in order, up
/// to `combine`'s limits, go as one bundle. Calls of different slots may change places
/// (an entity's calls all have its slot, so each entity keeps its order). A read (a plain
/// `GET`, which no bundle holds) goes ahead of the open bundle unless a call of its own
/// entity is in it, so that reads do not cut a batch's writes into small bundles.
pub fn plan<'a>(calls: &'a [Call], combine: Combine) -> Plan<'a> {
    let n = calls.len();
    // Calls of several slots (a cluster's) are grouped by slot; stable, so each slot's calls
    // keep their order. A single server's batch is taken as it is.
    let sorted: Option<Vec<usize>> = calls.iter().any(|c| c.slot != calls[0].slot).then(|| {
        let mut sorted: Vec<usize> = (0..n).collect();
        sorted.sort_by_key(|&i| calls[i].slot);
        sorted
    });
    let mut plan = Plan {
        units: Vec::with_capacity(n),
        members: Members {
            order: Vec::with_capacity(n),
            ends: Vec::with_capacity(n),
        },
    };
    // The open group: `plan.members.order[group..]`, of `bytes` bytes.
    let mut group = 0;
    let mut bytes = 0;
    for k in 0..n {
        let i = sorted.as_ref().map_or(k, |sorted| sorted[k]);
        let Call {
            script,
            command: cmd,
            slot,
            entity,
        } = &calls[i];
        let open = &plan.members.order[group..];
        if combine.max_calls > 1
            && !open.is_empty()
            && std::ptr::eq(*script, &GET)
            && open.iter().all(|&j| calls[j].entity != *entity)
        {
            // Ahead of the open bundle, which is not in `plan.units` yet.
            plan.members.order.insert(group, i);
            plan.units.push((script, Unit::One(cmd), *slot));
            group += 1;
            plan.members.ends.push(group);
            continue;
        }
        let size = cmd.packed_len_hint();
        let fits = combine.max_calls > 1 && size <= combine.max_bytes && number(script).is_some();
        let open = plan.members.order.len() - group;
        let joins = fits
            && open < combine.max_calls
            && bytes + size <= combine.max_bytes
            && plan
                .members
                .order
                .get(group)
                .is_none_or(|&first| calls[first].slot == *slot);
        if !joins {
            close(calls, group, &mut plan);
            group = plan.members.order.len();
            bytes = 0;
        }
        plan.members.order.push(i);
        if fits {
            bytes += size;
        } else {
            plan.units.push((script, Unit::One(cmd), *slot));
            plan.members.ends.push(plan.members.order.len());
            group = plan.members.order.len();
        }
    }
    close(calls, group, &mut plan);
    plan
}

/// Ends the open group `plan.members.order[group..]`: one call alone, or several in one
/// bundle.
fn close<'a>(calls: &'a [Call], group: usize, plan: &mut Plan<'a>) {
    let members = &plan.members.order[group..];
    match members.len() {
        0 => return,
        1 => {
            let Call {
                script,
                command: cmd,
                slot,
                ..
            } = &calls[members[0]];
            plan.units.push((script, Unit::One(cmd), *slot));
        }
        _ => match bundle(calls, members) {
            Some(bundle) => plan.units.push((&MANY, Unit::Many(bundle), calls[members[0]].slot)),
            None => {
                // Not script calls as `Invocation::packed` writes them: each goes alone.
                for k in group..plan.members.order.len() {
                    let Call {
                        script,
                        command: cmd,
                        slot,
                        ..
                    } = &calls[plan.members.order[k]];
                    plan.units.push((script, Unit::One(cmd), *slot));
                    if k + 1 < plan.members.order.len() {
                        plan.members.ends.push(k + 1);
                    }
                }
            }
        },
    }
    plan.members.ends.push(plan.members.order.len());
}

/// The number that stands for a plain put in a bundle: a run of them is sent as `P`, how
/// many, and their values (see many.lua).
const PLAIN_PUT: u64 = 0;

/// A plain put's arguments (`put`, the value, ttl `0`, as [`Write`](crate::Write) encodes
/// them) cut to the value: what a bundle sends of it. `None` for any other call.
fn plain_put<'a>(script: &Script, call: &ScriptCall<'a>) -> Option<ScriptCall<'a>> {
    const OP: &[u8] = b"$3\r\nput\r\n";
    const NO_TTL: &[u8] = b"$1\r\n0\r\n";
    if !std::ptr::eq(script, &WRITE) || call.keys != 1 || call.args != 3 {
        return None;
    }
    let value = call.arg_bytes.strip_prefix(OP)?.strip_suffix(NO_TTL)?;
    Some(ScriptCall {
        args: 1,
        arg_bytes: value,
        ..*call
    })
}

/// The bundle of `members`' calls: each one's number in [`MANY`], keys and arguments.
fn bundle<'a>(calls: &'a [Call], members: &[usize]) -> Option<Bundle<'a>> {
    let mut bundle = Bundle {
        calls: Vec::with_capacity(members.len()),
        keys: 0,
        count: 3,
        bytes: 0,
    };
    for &i in members {
        let Call {
            script, command: cmd, ..
        } = &calls[i];
        let call = cmd.script_call_after(script.evalsha())?;
        let (number, call) = match plain_put(script, &call) {
            Some(put) => (PLAIN_PUT, put),
            None => (number(script)?, call),
        };
        let run_goes_on = number == PLAIN_PUT && bundle.calls.last().is_some_and(|(n, _)| *n == PLAIN_PUT);
        let header = match number {
            PLAIN_PUT if run_goes_on => 0,
            PLAIN_PUT => 2,
            _ => 3,
        };
        bundle.keys += call.keys;
        bundle.count += call.keys + header + call.args;
        bundle.bytes += call.key_bytes.len() + call.arg_bytes.len() + 24;
        bundle.calls.push((number, call));
    }
    Some(bundle)
}

/// Hands a unit's reply to its calls: `results[i]` for each member `i` (a unit of several
/// calls is a bundle). A combined unit the
/// server refused for lack of permission (an ACL that denies one of its calls' keys) ran
/// nothing: its calls are pushed to `alone`, to be sent again one by one, so that each gets
/// its own answer.
pub fn fan_out(
    calls: &[Call],
    members: &[usize],
    reply: Result<Value, Error>,
    results: &mut [Option<Result<Value, Error>>],
    alone: &mut Vec<usize>,
) {
    if let [one] = members {
        results[*one] = Some(reply);
        return;
    }
    match reply {
        Ok(Value::Array(items)) if items.len() <= members.len() && !items.is_empty() => {
            let answered = items.len();
            for (&i, item) in members.iter().zip(items) {
                results[i] = Some(match item {
                    Value::ServerError(e) => Err(call_error(calls[i].script, e.code(), e.details())),
                    value => Ok(value),
                });
            }
            // A bundle stops at a call it cannot read (see many.lua): those after it did not run.
            for &i in &members[answered..] {
                results[i] = Some(Err(Error::UnexpectedReply {
                    what: MANY.name(),
                    detail: format!(
                        "no reply: the bundle stopped after {answered} of {} calls",
                        members.len()
                    ),
                }));
            }
        }
        Ok(other) => {
            let detail = match &other {
                Value::Array(items) => format!("{} replies for {} calls", items.len(), members.len()),
                _ => format!("{other:?} for {} calls", members.len()),
            };
            for &i in members {
                results[i] = Some(Err(Error::UnexpectedReply {
                    what: MANY.name(),
                    detail: detail.clone(),
                }));
            }
        }
        Err(Error::NoPermission { .. }) => alone.extend_from_slice(members),
        Err(Error::Script { message, .. }) => {
            // The bundle's error is each call's, under the call's own script.
            for &i in members {
                results[i] = Some(Err(Error::Script {
                    script: calls[i].script.name(),
                    message: message.clone(),
                }));
            }
        }
        Err(e) => {
            for &i in members {
                results[i] = Some(Err(e.duplicate()));
            }
        }
    }
}

/// The error of one call inside a bundle, as it would be had the call run alone.
fn call_error(script: &'static Script, code: &str, details: Option<&str>) -> Error {
    let message = match details {
        Some(details) => format!("{code} {details}"),
        None => code.to_owned(),
    };
    stateful_redis_pool::server_error(Some(script.name()), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{Get, Write, WriteOp};

    fn put(entity: &str, slot: u16) -> Call {
        let key = format!("ns:{{{entity}}}:s");
        Call::new(&Write::new(&key, WriteOp::Put, Some(b"\x03value")), slot)
    }

    fn get(entity: &str, slot: u16) -> Call {
        let key = format!("ns:{{{entity}}}:s");
        Call::new(&Get { key: &key }, slot)
    }

    #[test]
    fn calls_of_one_slot_become_one_bundle_with_every_key_and_argument() {
        let cas = |entity: &str| {
            let key = format!("ns:{{{entity}}}:s");
            Call::new(&Write::new(&key, WriteOp::Cas { expected: 1 }, Some(b"\x03value")), 0)
        };
        let calls = vec![
            put("a", 0),
            get("b", 0),
            put("d", 0),
            put("e", 0),
            cas("c"),
            put("f", 0),
        ];
        let plan = plan(&calls, Combine::up_to(64));
        // The read of b goes ahead, as a plain GET; the writes share one bundle.
        assert_eq!(members(&plan), vec![vec![1], vec![0, 2, 3, 4, 5]]);
        assert_eq!(plan.units[0].0.name(), "get");
        let (script, unit, _) = &plan.units[1];
        assert_eq!(script.name(), "many");
        let packed = unit.to_packed();
        let mut bytes = Vec::new();
        unit.pack_into(&mut bytes);
        assert_eq!(
            bytes,
            packed.to_bytes(),
            "written straight or as a command, the same bytes"
        );
        let args: Vec<Vec<u8>> = packed.args().map(<[u8]>::to_vec).collect();
        let text: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        assert_eq!(text[0], "EVALSHA");
        assert_eq!(text[1], MANY.sha());
        assert_eq!(
            text[2..8],
            ["5", "ns:{a}:s", "ns:{d}:s", "ns:{e}:s", "ns:{c}:s", "ns:{f}:s"]
        );
        // A run of plain puts is `P`, how many, and their values; any other call is (number,
        // keys, arguments, arguments…), write being script 1 of many.
        assert_eq!(text[8..13], ["P", "3", "\u{3}value", "\u{3}value", "\u{3}value"]);
        assert_eq!(text[13..16], ["1", "1", "10"]);
        assert_eq!(text[16..26], ["cas", "\u{3}value", "0", "0", "", "", "0", "0", "", "1"]);
        assert_eq!(text[26..], ["P", "1", "\u{3}value"]);
    }

    #[test]
    fn a_read_never_goes_ahead_of_a_call_of_its_own_entity() {
        let calls = vec![put("a", 0), put("b", 0), get("a", 0), put("c", 0), get("d", 0)];
        let plan = plan(&calls, Combine::up_to(64));
        assert_eq!(members(&plan), vec![vec![0, 1], vec![2], vec![4], vec![3]]);
        let names: Vec<&str> = plan.units.iter().map(|u| u.0.name()).collect();
        assert_eq!(names, ["many", "get", "get", "write"]);
    }

    #[test]
    fn limits_split_runs_and_slots_keep_their_order() {
        let calls: Vec<_> = (0..5).map(|i| put(&format!("e{i}"), 0)).collect();
        let split = plan(&calls, Combine::up_to(2));
        assert_eq!(members(&split), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert!(matches!(split.units[2].1, Unit::One(_)));
        assert_eq!(split.units[2].0.name(), "write");

        let calls = vec![put("a", 7), put("b", 3), put("c", 7), put("d", 9), put("e", 3)];
        let slots = plan(&calls, Combine::up_to(64));
        assert_eq!(members(&slots), vec![vec![1, 4], vec![0, 2], vec![3]]);
        assert_eq!(slots.units.iter().map(|u| u.2).collect::<Vec<_>>(), [3, 7, 9]);

        // Off, or a call larger than a bundle may be: each alone, in order.
        let calls = vec![put("a", 0), put("b", 0)];
        assert_eq!(plan_members(&calls, Combine::OFF), vec![vec![0], vec![1]]);
        let small = Combine {
            max_calls: 64,
            max_bytes: 10,
        };
        assert_eq!(plan_members(&calls, small), vec![vec![0], vec![1]]);
    }

    fn plan_members(calls: &[Call], combine: Combine) -> Vec<Vec<usize>> {
        members(&plan(calls, combine))
    }

    fn members(plan: &Plan<'_>) -> Vec<Vec<usize>> {
        plan.members().map(<[usize]>::to_vec).collect()
    }

    #[test]
    fn a_bundle_reply_goes_back_call_by_call() {
        let calls = vec![put("a", 0), put("b", 0), put("c", 0)];
        let error =
            redis::parse_redis_value(b"*3\r\n:1\r\n-WRONGTYPE Operation against a key\r\n:7\r\n").expect("parses");
        let mut results = vec![None, None, None];
        let mut alone = Vec::new();
        fan_out(&calls, &[0, 1, 2], Ok(error), &mut results, &mut alone);
        assert!(matches!(results[0], Some(Ok(Value::Int(1)))));
        match &results[1] {
            Some(Err(Error::Script { script, message })) => {
                assert_eq!(*script, "write");
                assert_eq!(message, "WRONGTYPE Operation against a key");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(results[2], Some(Ok(Value::Int(7)))));

        // Refused as a whole for lack of permission: each call goes again alone.
        let mut results = vec![None, None, None];
        let refused = Err(Error::NoPermission {
            message: "NOPERM no permissions to access one of the keys".into(),
        });
        fan_out(&calls, &[0, 2], refused, &mut results, &mut alone);
        assert_eq!(alone, [0, 2]);
        assert!(results.iter().all(Option::is_none));

        // A reply of the wrong shape is an error for each call, never a panic.
        fan_out(&calls, &[0, 1], Ok(Value::Int(3)), &mut results, &mut alone);
        assert!(matches!(
            results[0],
            Some(Err(Error::UnexpectedReply { what: "many", .. }))
        ));
        assert!(matches!(results[1], Some(Err(Error::UnexpectedReply { .. }))));
        // A bundle that stopped early: the calls it answered keep their replies.
        let short =
            redis::parse_redis_value(b"*2\r\n:4\r\n-ERR many: malformed call at argument 7\r\n").expect("parses");
        let mut results = vec![None, None, None];
        fan_out(&calls, &[0, 1, 2], Ok(short), &mut results, &mut alone);
        assert!(matches!(results[0], Some(Ok(Value::Int(4)))));
        assert!(matches!(&results[1], Some(Err(Error::Script { message, .. })) if message.contains("malformed")));
        assert!(matches!(
            results[2],
            Some(Err(Error::UnexpectedReply { what: "many", .. }))
        ));
    }
}
