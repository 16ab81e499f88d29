//! The server's memory per entity: bytes of a state record against a plain string of the
//! same value, and bytes per lease and per remembered message id (`MEMORY USAGE`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use super::cases::Bins;
use super::server::{Server, pinned};

/// Entities each figure is the mean of.
const SAMPLE: u32 = 200;
/// Entities with remembered message ids, and ids per entity.
const ID_ENTITIES: u32 = 20;
const IDS_PER_ENTITY: u32 = 100;

/// Bytes per entity, measured once after the rounds.
#[derive(Debug)]
pub(super) struct Cost {
    /// For each value size: (size, bytes of a record, bytes of the plain string).
    pub(super) records: Vec<(usize, f64, f64)>,
    /// A lease and its fence counter.
    pub(super) lease: f64,
    /// One remembered message id (its entries in the ids' zset and the outcomes' hash).
    pub(super) message_id: f64,
}

/// Sum of `MEMORY USAGE` of `<prefix><n><suffix>` for n below `ARGV[3]`, n in 12 digits as
/// `stateful-redis load` names its entities (`e000000000007`).
const SUM_MEMORY: &str = "local s = 0 for i = 0, tonumber(ARGV[3]) - 1 do \
    s = s + (redis.call('MEMORY', 'USAGE', ARGV[1] .. string.format('%012d', i) .. ARGV[2]) or 0) end return s";

pub(super) fn measure(server: &Server, bins: &Bins, write_lua: &Path) -> anyhow::Result<Cost> {
    let sum = |prefix: &str, suffix: &str, n: u32| -> anyhow::Result<f64> {
        let out = server.cli(&["EVAL", SUM_MEMORY, "0", prefix, suffix, &n.to_string()])?;
        out.parse::<f64>().with_context(|| format!("MEMORY USAGE sum {out:?}"))
    };
    let dir = write_lua.parent().context("the bench directory")?;
    let mut records = Vec::new();
    for size in [100, 1024] {
        server.cli(&["FLUSHALL"])?;
        // Records as the executor writes them, on entities e000000000000 … (12 digits).
        let out = pinned(&bins.load, server.clients.as_deref())
            .args([
                "load",
                "--redis",
                &server.url(),
                "--workload",
                "put",
                "--concurrency",
                "1",
            ])
            .args(["--ops", &(SAMPLE * 8).to_string(), "--entities", &SAMPLE.to_string()])
            .args(["--value-size", &size.to_string(), "--json"])
            .output()
            .context("running the executor for the memory figures")?;
        if !out.status.success() {
            bail!("the executor's puts failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The same value as plain strings, under keys of the same length.
        let value = format!("\u{3}{}", "v".repeat(size));
        let commands: String = (0..SAMPLE)
            .map(|n| resp(&["SET", &format!("load:{{e{n:012}}}:p"), &value]))
            .collect();
        pipe(server, &dir.join("plain.resp"), &commands)?;
        let record = sum("load:{e", "}:s", SAMPLE)? / f64::from(SAMPLE);
        let plain = sum("load:{e", "}:p", SAMPLE)? / f64::from(SAMPLE);
        records.push((size, record, plain));
    }

    server.cli(&["FLUSHALL"])?;
    let acquire = include_str!("../../../crates/scripts/lua/acquire.lua");
    let commands: String = (0..SAMPLE)
        .map(|n| {
            let (lease, fence) = (format!("load:{{e{n:012}}}:l"), format!("load:{{e{n:012}}}:f"));
            resp(&["EVAL", acquire, "2", &lease, &fence, "driver-1", "30000"])
        })
        .collect();
    pipe(server, &dir.join("leases.resp"), &commands)?;
    let lease = (sum("load:{e", "}:l", SAMPLE)? + sum("load:{e", "}:f", SAMPLE)?) / f64::from(SAMPLE);

    // `apply_once` puts with a caller's message id, as the scripts crate sends them
    // (`Write::write_args`: op, value, ttl, fence, owner, id, kept ids, kept ms, nonce, expected).
    let write = std::fs::read_to_string(write_lua).context("reading the write script")?;
    let mut commands = String::new();
    for n in 0..ID_ENTITIES {
        let keys = ["s", "f", "l", "m", "mr"].map(|kind| format!("load:{{e{n:012}}}:{kind}"));
        for m in 0..IDS_PER_ENTITY {
            let id = format!("msg-{m:06}");
            let mut args = vec!["EVAL", &write, "5"];
            args.extend(keys.iter().map(String::as_str));
            args.extend(["put", "\u{3}v", "0", "0", "", &id, "1000", "3600000", "", "0"]);
            commands.push_str(&resp(&args));
        }
    }
    pipe(server, &dir.join("ids.resp"), &commands)?;
    let ids = f64::from(ID_ENTITIES * IDS_PER_ENTITY);
    let message_id = (sum("load:{e", "}:m", ID_ENTITIES)? + sum("load:{e", "}:mr", ID_ENTITIES)?) / ids;
    Ok(Cost {
        records,
        lease,
        message_id,
    })
}

/// One command as RESP.
fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n{arg}\r\n", arg.len());
    }
    out
}

/// Sends `commands` (RESP) with `redis-cli --pipe`; fails when any got an error.
fn pipe(server: &Server, path: &Path, commands: &str) -> anyhow::Result<()> {
    std::fs::write(path, commands).with_context(|| format!("writing {}", path.display()))?;
    let out = server.cli_with_input(&["--pipe"], Some(path))?;
    if !out.contains("errors: 0,") {
        bail!("redis-cli --pipe reported errors: {out}");
    }
    Ok(())
}
