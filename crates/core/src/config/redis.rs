//! The `[redis]` section: where Redis is ([`RedisUrl`], password redacted), timeouts and the pool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::{at_least, positive};
use super::{ConfigError, duration};

/// A Redis URL (`redis://`, `rediss://` or `redis+unix://`); its password never shows in
/// `Debug`, `Display` or serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL; [`validate`](Self::validate) checks it.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, in the authority and in the query
    /// (`redis+unix:///path?pass=…`).
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) => {
                if parsed.password().is_some() {
                    // Cannot fail for URLs that have a password.
                    let _ = parsed.set_password(Some("***"));
                }
                if parsed.query().is_some() {
                    let pairs: Vec<(String, String)> = parsed
                        .query_pairs()
                        .map(|(k, v)| {
                            let secret = matches!(k.as_ref(), "pass" | "password");
                            (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                        })
                        .collect();
                    parsed.query_pairs_mut().clear().extend_pairs(pairs);
                }
                parsed.to_string()
            }
            // Unparseable: show nothing of it that could be a secret (the last `@` ends
            // the credentials, whatever they hold).
            Err(_) => match self.0.rsplit_once('@') {
                Some((_, host)) => format!("<unparseable>@{host}"),
                None => "<unparseable URL>".to_owned(),
            },
        }
    }

    /// Checks the scheme and host; the error never holds the password.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let parsed = url::Url::parse(&self.0)
            .map_err(|e| ConfigError::new(field, self.redacted(), format!("not a URL: {e}")))?;
        match parsed.scheme() {
            "redis" | "rediss" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(ConfigError::new(field, self.redacted(), "the URL has no host"));
                }
            }
            "redis+unix" | "unix" => {}
            other => {
                return Err(ConfigError::new(
                    field,
                    self.redacted(),
                    format!("scheme {other:?} is not one of redis, rediss, redis+unix"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.0
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(RedisUrl)
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Connection pool settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Pipeline links to the server (to each master of a cluster) that carry the executor's
    /// batched operations, each with its own batch queue; an entity's operations always take
    /// the same link (default 1: one link keeps batches largest and client CPU lowest, and two
    /// pipelines in flight on it keep the server busy; measured with `cargo xtask bench`).
    /// Also read under its former name, `shared_connections`.
    #[serde(alias = "shared_connections")]
    pub pipeline_links: u32,
    /// Most connections in the exclusive (bb8) pool (default 8).
    pub max_size: u32,
    /// The largest `max_size` may become: `optimize_connection_pool()` and live resizes
    /// stay at or below it (default 64).
    pub max_size_limit: u32,
    /// Idle connections the exclusive pool keeps open (default 0).
    pub min_idle: u32,
    /// Longest wait for an exclusive connection (default 1 s).
    #[serde(with = "duration")]
    pub checkout_timeout: Duration,
    /// How often idle connections are checked with PING (default 5 s).
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pipeline_links: 1,
            max_size: 8,
            max_size_limit: 64,
            min_idle: 0,
            checkout_timeout: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(5),
        }
    }
}

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host:port[/db]`, or `rediss://` for TLS. With `cluster`,
    /// the first seed node.
    pub url: RedisUrl,
    /// Run on a Redis Cluster: `url` and `seeds` are nodes to learn the topology from;
    /// operations go to the master of their entity's slot (default false).
    pub cluster: bool,
    /// More cluster nodes to learn the topology from when `url`'s does not answer
    /// (`redis://host:port`; their credentials are `url`'s).
    pub seeds: Vec<RedisUrl>,
    /// PEM file of the CA to trust for `rediss://` instead of the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Longest wait to open a connection (default 1 s).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Longest wait for a reply (default 1 s).
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// Build even when a server's `maxmemory-policy` is not `noeviction` (default false:
    /// `build()` fails with `Error::UnsafeEviction`). Under memory pressure such a policy
    /// evicts keys the guarantees rest on: `volatile-*` the leases (a second holder while the
    /// first still writes) and remembered message ids (`apply_once` applies a redelivery
    /// again); `allkeys-*` also state (lost updates) and fence counters (an old fencing token
    /// is accepted again). With this on, the executor logs a warning naming the server and
    /// what breaks, and `PoolStats::evicting_servers` counts such servers; the health check
    /// reads the policies again on every round. Acceptable only where Redis is a cache that
    /// never reaches `maxmemory`.
    pub allow_eviction: bool,
    /// Pool settings.
    pub pool: PoolConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: RedisUrl::new("redis://127.0.0.1:6379"),
            cluster: false,
            seeds: Vec::new(),
            tls_ca_file: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            allow_eviction: false,
            pool: PoolConfig::default(),
        }
    }
}

impl RedisConfig {
    /// The defaults, with `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: RedisUrl::new(url),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.url.validate("redis.url")?;
        for (i, seed) in self.seeds.iter().enumerate() {
            seed.validate(&format!("redis.seeds[{i}]"))?;
        }
        if !self.seeds.is_empty() && !self.cluster {
            return Err(ConfigError::new(
                "redis.seeds",
                self.seeds.len(),
                "seed nodes are for a cluster: set redis.cluster = true",
            ));
        }
        if self.cluster && self.url.is_tls() {
            return Err(ConfigError::new(
                "redis.cluster",
                true,
                "a cluster over TLS (rediss://) is not supported yet: use redis:// nodes",
            ));
        }
        positive("redis.connect_timeout", self.connect_timeout)?;
        positive("redis.response_timeout", self.response_timeout)?;
        let p = &self.pool;
        at_least("redis.pool.pipeline_links", p.pipeline_links, 1, 64)?;
        at_least("redis.pool.max_size", p.max_size, 1, 1024)?;
        at_least("redis.pool.max_size_limit", p.max_size_limit, 1, 1024)?;
        if p.max_size > p.max_size_limit {
            return Err(ConfigError::new(
                "redis.pool.max_size",
                p.max_size,
                format!("must not exceed redis.pool.max_size_limit ({})", p.max_size_limit),
            ));
        }
        if p.min_idle > p.max_size {
            return Err(ConfigError::new(
                "redis.pool.min_idle",
                p.min_idle,
                format!("must not exceed redis.pool.max_size ({})", p.max_size),
            ));
        }
        positive("redis.pool.checkout_timeout", p.checkout_timeout)?;
        positive("redis.pool.health_check_interval", p.health_check_interval)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExecutorConfig, Secret};

    #[test]
    fn passwords_never_show() {
        let mut config = ExecutorConfig::default();
        config.redis.url = RedisUrl::new("redis://app:hunter2@127.0.0.1:6379/0");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("app:***@127.0.0.1"), "{debug}");
        let json = serde_json::to_string(&config).expect("serialize");
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "\"***\"");
        let bad = RedisUrl::new("http://app:hunter2@host");
        let err = bad.validate("redis.url").expect_err("bad scheme").to_string();
        assert!(
            !err.contains("hunter2") && err.contains("redis.url") && err.contains("http"),
            "{err}"
        );
        let garbage = RedisUrl::new("not a url :hunter2@x");
        let err = garbage.validate("redis.url").expect_err("unparseable").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let at_in_password = RedisUrl::new("no scheme:hun@ter2@host");
        assert!(
            !at_in_password.redacted().contains("ter2"),
            "{}",
            at_in_password.redacted()
        );
        let unix = RedisUrl::new("redis+unix:///run/redis.sock?db=1&user=app&pass=hunter2");
        let shown = format!("{unix:?} {unix}");
        assert!(!shown.contains("hunter2") && shown.contains("db=1"), "{shown}");
    }
}
