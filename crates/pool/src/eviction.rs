//! What each server evicts under `maxmemory`: read at connect and on every health check.

use redis::Value;
use stateful_redis_core::Error;

use crate::direct::Reply;
use crate::pool::Pool;

/// The `maxmemory-policy` of one server (each master of a cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictionPolicy {
    /// The server's `host:port`.
    pub node: String,
    /// Its `maxmemory-policy` (`noeviction`, `volatile-lru`, `allkeys-lru`, …).
    pub policy: String,
}

impl EvictionPolicy {
    /// The policy `policy` of the server `node`, as read elsewhere (a report of `check`).
    pub fn new(node: impl Into<String>, policy: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            policy: policy.into(),
        }
    }

    /// Whether the policy never evicts: only `noeviction` keeps every guarantee. Any other
    /// policy removes keys under memory pressure: `volatile-*` exactly those with an expiry
    /// (leases and remembered message ids), `allkeys-*` any key (state and fence counters too).
    pub fn keeps_every_key(&self) -> bool {
        self.policy == "noeviction"
    }

    /// Which guarantees this policy breaks, in a sentence (empty for `noeviction`).
    pub fn what_it_breaks(&self) -> &'static str {
        match self.policy.as_str() {
            "noeviction" => "",
            p if p.starts_with("volatile-") => {
                "it evicts keys with an expiry: a lease can vanish while its holder still writes \
                 (two owners) and a remembered message id can be forgotten (apply_once applies twice)"
            }
            _ => {
                "it evicts any key: besides leases and message ids, an entity's state (a lost update) \
                 and its fence counter (an old fencing token is accepted again)"
            }
        }
    }
}

impl Pool {
    /// The `maxmemory-policy` of the server, or of every master of a cluster. Read with
    /// `INFO memory` (the `+info` of [`ACL_COMMANDS`](https://docs.rs/stateful-redis-scripts)),
    /// or `CONFIG GET maxmemory-policy` where `INFO` is refused; an error when neither may run.
    pub async fn eviction_policies(&self) -> Result<Vec<EvictionPolicy>, Error> {
        let commands = [
            {
                let mut cmd = redis::cmd("INFO");
                cmd.arg("memory");
                cmd
            },
            {
                let mut cmd = redis::cmd("CONFIG");
                cmd.arg("GET").arg("maxmemory-policy");
                cmd
            },
        ];
        self.to_each_server(&commands)
            .await
            .into_iter()
            .map(|(node, replies)| {
                let replies = replies?;
                let policy = policy_of(&replies).map_err(|refused| Error::NoPermission {
                    message: format!(
                        "cannot read maxmemory-policy on {node} ({refused}): grant the ACL user +info \
                         (one of ACL_COMMANDS)"
                    ),
                })?;
                Ok(EvictionPolicy { node, policy })
            })
            .collect()
    }
}

/// The policy from the replies to `INFO memory` and `CONFIG GET maxmemory-policy`; `Err`
/// with the server's refusal when neither answered with it.
fn policy_of(replies: &[Reply]) -> Result<String, String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    };
    if let Some(Ok(info)) = replies.first()
        && let Some(info) = text(info)
        && let Some(policy) = info.lines().find_map(|line| line.strip_prefix("maxmemory_policy:"))
    {
        return Ok(policy.trim().to_owned());
    }
    match replies.get(1) {
        Some(Ok(Value::Array(items))) if items.len() == 2 => {
            text(&items[1]).ok_or_else(|| "an unreadable reply".into())
        }
        Some(Ok(Value::Map(pairs))) if pairs.len() == 1 => {
            text(&pairs[0].1).ok_or_else(|| "an unreadable reply".into())
        }
        Some(Err(refused)) => Err(match replies.first() {
            Some(Err(first)) => format!("{first}; {refused}"),
            _ => refused.clone(),
        }),
        _ => Err("no maxmemory_policy in INFO memory".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_read_from_info_or_config() {
        let info = Ok(Value::BulkString(
            b"# Memory\r\nused_memory:1\r\nmaxmemory_policy:volatile-lru\r\n".to_vec(),
        ));
        assert_eq!(policy_of(&[info, Err("NOPERM".into())]), Ok("volatile-lru".into()));
        let config = Ok(Value::Array(vec![
            Value::BulkString(b"maxmemory-policy".to_vec()),
            Value::BulkString(b"noeviction".to_vec()),
        ]));
        assert_eq!(policy_of(&[Err("NOPERM info".into()), config]), Ok("noeviction".into()));
        let refused = policy_of(&[Err("NOPERM info".into()), Err("NOPERM config".into())]);
        assert_eq!(refused, Err("NOPERM info; NOPERM config".into()));
        assert!(policy_of(&[]).is_err());
    }

    #[test]
    fn only_noeviction_keeps_every_key() {
        let policy = |p: &str| EvictionPolicy {
            node: "n".into(),
            policy: p.into(),
        };
        assert!(policy("noeviction").keeps_every_key());
        assert!(policy("noeviction").what_it_breaks().is_empty());
        assert!(policy("volatile-lru").what_it_breaks().contains("apply_once"));
        assert!(policy("allkeys-lfu").what_it_breaks().contains("fence"));
    }
}
