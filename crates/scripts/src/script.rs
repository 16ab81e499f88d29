//! Script sources, their SHA1 digests, and the registry of every script we run.

use std::sync::OnceLock;

use stateful_redis_pool::PackedCommand;

/// A Lua script: its name, source and SHA1 (computed once).
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    source: &'static str,
    /// For a script built from others (`many`): builds its source, once, into `built`.
    build: Option<fn() -> String>,
    built: OnceLock<String>,
    sha: OnceLock<String>,
    evalsha: OnceLock<PackedCommand>,
}

impl Script {
    const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            build: None,
            built: OnceLock::new(),
            sha: OnceLock::new(),
            evalsha: OnceLock::new(),
        }
    }

    const fn built(name: &'static str, build: fn() -> String) -> Self {
        Self {
            name,
            source: "",
            build: Some(build),
            built: OnceLock::new(),
            sha: OnceLock::new(),
            evalsha: OnceLock::new(),
        }
    }

    /// The script's name (`put`, `cas`, …), as used in errors, spans and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        match self.build {
            Some(build) => self.built.get_or_init(build),
            None => self.source,
        }
    }

    /// `SCRIPT LOAD <source>`: what puts it in a server's script cache.
    pub fn load_command(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source());
        cmd
    }

    /// `EVALSHA <sha>`, encoded once: the start of every call.
    pub fn evalsha(&self) -> &PackedCommand {
        self.evalsha.get_or_init(|| {
            let mut cmd = PackedCommand::with_capacity(64);
            cmd.arg("EVALSHA").arg(self.sha());
            cmd
        })
    }

    /// The SHA1 of the source, lower-case hex, as `EVALSHA` wants it.
    pub fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| sha1_smol::Sha1::from(self.source()).digest().to_string())
    }
}

/// Reads an entity's state: the name of the plain `GET` reads are sent as (see [`Get`](crate::Get)).
pub static GET: Script = Script::new("get", include_str!("../lua/get.lua"));
/// Every state change (put, cas, transition, delete), with fencing and idempotency:
/// `lua/record.lua` then `lua/write.lua`.
pub static WRITE: Script = Script::built("write", build_write);
/// Takes a lease and issues a fencing token.
pub static ACQUIRE: Script = Script::new("acquire", include_str!("../lua/acquire.lua"));
/// Extends a lease.
pub static RENEW: Script = Script::new("renew", include_str!("../lua/renew.lua"));
/// Gives a lease up.
pub static RELEASE: Script = Script::new("release", include_str!("../lua/release.lua"));
/// Presence heartbeats, counts and expiry.
pub static PRESENCE: Script = Script::new("presence", include_str!("../lua/presence.lua"));

/// Several calls of the scripts above in one bundle ([`MANY_SCRIPTS`], see `lua/many.lua`):
/// how a batch of calls becomes one `EVALSHA` (see [`Scripts::invoke_direct`](crate::Scripts::invoke_direct)).
pub static MANY: Script = Script::built("many", build_many);

/// The scripts [`MANY`] runs, in the order of their numbers there (from 1).
pub static MANY_SCRIPTS: [&Script; 5] = [&WRITE, &ACQUIRE, &RENEW, &RELEASE, &PRESENCE];

/// How each script reads the clock inside `many`: the calls of one bundle share one reading,
/// except a write with a message id (its `ARGV[6]`), which reads its own.
const CLOCKS: [(&str, &str); 2] = [("write", "clock(ARGV[6])"), ("presence", "clock()")];

/// What reads and writes a state record, put before the scripts that use it.
const RECORD_LUA: &str = include_str!("../lua/record.lua");

/// The source of [`WRITE`]: record.lua's functions, then lua/write.lua.
fn build_write() -> String {
    format!("{RECORD_LUA}\n{}", include_str!("../lua/write.lua"))
}

/// The source of [`MANY`]: `lua/many.lua` with record.lua's functions and every script of
/// [`MANY_SCRIPTS`] made a local function of `(KEYS, ARGV)` in place of its line `--@scripts`.
fn build_many() -> String {
    const TIME: &str = "redis.call('TIME')";
    // Through the bundle's maxmemory check (see many.lua).
    let through = |lua: &str| lua.replace("redis.call(", "call(").replace("redis.pcall(", "pcall_(");
    let mut functions = through(RECORD_LUA);
    for script in MANY_SCRIPTS {
        let mut body = match script.name() {
            "write" => include_str!("../lua/write.lua").to_owned(),
            _ => script.source().to_owned(),
        };
        if let Some((_, clock)) = CLOCKS.iter().find(|(name, _)| *name == script.name()) {
            body = body.replacen(TIME, clock, 1);
        }
        body = through(&body);
        functions.push_str(&format!(
            "local function script_{}(KEYS, ARGV)\n{}\nend\n",
            script.name(),
            body.trim_end()
        ));
    }
    let names: Vec<String> = MANY_SCRIPTS.iter().map(|s| format!("script_{}", s.name())).collect();
    functions.push_str(&format!("local scripts = {{{}}}", names.join(", ")));
    include_str!("../lua/many.lua").replacen("\n--@scripts\n", &format!("\n{functions}\n"), 1)
}

/// The commands an ACL user needs for every script, as ACL rules: grant them with a key
/// pattern for your namespaces, e.g. `ACL SETUSER app on >secret ~fleet:* <ACL_COMMANDS>`.
/// Scripts run their commands as the calling user, so these include what the scripts call.
/// On a Redis Cluster the executor also reads the topology (`CLUSTER SLOTS`) and follows
/// `ASK` redirects during a slot migration (`ASKING`). `SCAN` lists a namespace's entities
/// (`StateHandle::entities`).
pub const ACL_COMMANDS: &str = "+evalsha +script|load +ping +select +time +del +get +getrange +set +mget +mset +incr +pttl +pexpire \
     +hget +hset +hdel \
     +zadd +zcard +zcount +zscore +zrange +zrangebyscore +zremrangebyscore +zremrangebyrank \
     +setrange +info +scan \
     +asking +cluster|slots";

/// Every script, in the order they are preloaded.
pub static ALL: [&Script; 7] = [&GET, &WRITE, &ACQUIRE, &RENEW, &RELEASE, &PRESENCE, &MANY];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_matches_redis_digest_of_the_source() {
        // SHA1 of the empty string, as a sanity check of the digest formatting.
        let empty = Script::new("empty", "");
        assert_eq!(empty.sha(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        for script in ALL {
            assert_eq!(script.sha().len(), 40);
            assert!(script.source().contains("KEYS"), "{}", script.name());
        }
    }

    #[test]
    fn many_holds_every_script_as_a_function_and_shares_the_clock() {
        let many = MANY.source();
        assert!(!many.contains("--@scripts"));
        for (i, script) in MANY_SCRIPTS.iter().enumerate() {
            let function = format!("local function script_{}(KEYS, ARGV)", script.name());
            assert_eq!(many.matches(&function).count(), 1, "{}", script.name());
            assert!(i < 9, "numbers are one digit in many.lua's comment");
        }
        // Every script that reads the clock reads it through `clock` there, once.
        for script in MANY_SCRIPTS {
            let reads = script.source().matches("redis.call('TIME')").count();
            let clock = CLOCKS.iter().any(|(name, _)| *name == script.name());
            assert_eq!(reads, usize::from(clock), "{}", script.name());
        }
        // `clock` itself reads it twice: the shared reading and a fresh one.
        assert_eq!(many.matches("redis.call('TIME')").count(), 2);
        assert_eq!(many.matches("clock(ARGV[6])").count(), 1);
        // presence's; the plain puts read it under `pcall` (in a run and one by one).
        assert_eq!(many.matches("clock()").count(), 1);
        assert_eq!(many.matches("pcall(clock)").count(), 2);
    }
}
