//! Script sources, their SHA1 digests, and the registry of every script we run.

use std::sync::OnceLock;

use stateful_redis_pool::PackedCommand;

/// A Lua script: its name, source and SHA1 (computed once).
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    source: &'static str,
    sha: OnceLock<String>,
    evalsha: OnceLock<PackedCommand>,
}

impl Script {
    const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            sha: OnceLock::new(),
            evalsha: OnceLock::new(),
        }
    }

    /// The script's name (`put`, `cas`, …), as used in errors, spans and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua source.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// `SCRIPT LOAD <source>`: what puts it in a server's script cache.
    pub fn load_command(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
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
            .get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

/// Reads an entity's state.
pub static GET: Script = Script::new("get", include_str!("../lua/get.lua"));
/// Every state change (put, cas, transition, delete), with fencing and idempotency.
pub static WRITE: Script = Script::new("write", include_str!("../lua/write.lua"));
/// Takes a lease and issues a fencing token.
pub static ACQUIRE: Script = Script::new("acquire", include_str!("../lua/acquire.lua"));
/// Extends a lease.
pub static RENEW: Script = Script::new("renew", include_str!("../lua/renew.lua"));
/// Gives a lease up.
pub static RELEASE: Script = Script::new("release", include_str!("../lua/release.lua"));
/// Presence heartbeats, counts and expiry.
pub static PRESENCE: Script = Script::new("presence", include_str!("../lua/presence.lua"));

/// The commands an ACL user needs for every script, as ACL rules: grant them with a key
/// pattern for your namespaces, e.g. `ACL SETUSER app on >secret ~fleet:* <ACL_COMMANDS>`.
/// Scripts run their commands as the calling user, so these include what the scripts call.
pub const ACL_COMMANDS: &str = "+evalsha +script|load +ping +select +time +exists +del +get +set +incr +pttl +pexpire \
     +hget +hmget +hset +hdel +hincrby \
     +zadd +zcard +zcount +zrange +zrangebyscore +zremrangebyscore +zremrangebyrank";

/// Every script, in the order they are preloaded.
pub static ALL: [&Script; 6] = [&GET, &WRITE, &ACQUIRE, &RENEW, &RELEASE, &PRESENCE];

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
            assert!(script.source().contains("KEYS[1]"), "{}", script.name());
        }
    }
}
