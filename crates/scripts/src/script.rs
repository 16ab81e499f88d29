//! Script sources, their SHA1 digests, and the registry of every script we run.

use std::sync::OnceLock;

/// A Lua script: its name, source and SHA1 (computed once).
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            sha: OnceLock::new(),
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

    /// The SHA1 of the source, lower-case hex, as `EVALSHA` wants it.
    pub fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

/// Reads an entity's state.
pub static GET: Script = Script::new("get", include_str!("../lua/get.lua"));
/// Writes unconditionally.
pub static PUT: Script = Script::new("put", include_str!("../lua/put.lua"));
/// Writes at an expected version.
pub static CAS: Script = Script::new("cas", include_str!("../lua/cas.lua"));
/// Moves between statuses.
pub static TRANSITION: Script = Script::new("transition", include_str!("../lua/transition.lua"));
/// Deletes at an expected version.
pub static DELETE_IF: Script = Script::new("delete_if", include_str!("../lua/delete_if.lua"));

/// The commands an ACL user needs for every script, as ACL rules: grant them with a key
/// pattern for your namespaces, e.g. `ACL SETUSER app on >secret ~fleet:* <ACL_COMMANDS>`.
/// Scripts run their commands as the calling user, so these include what the scripts call.
pub const ACL_COMMANDS: &str = "+evalsha +script|load +ping +time +hget +hmget +hset +hincrby +pexpire +exists +del";

/// Every script, in the order they are preloaded.
pub static ALL: [&Script; 5] = [&GET, &PUT, &CAS, &TRANSITION, &DELETE_IF];

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
