//! What every example shares: the Redis it runs against, and a namespace of its own there.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use stateful_redis::{ExecutorConfig, RedisUrl};
use stateful_redis_test_support::{RedisServer, redis_server_available};

/// The Redis of one run: the URL given as the first argument or in `REDIS_URL`, else a
/// throw-away `redis-server` on a free loopback port, stopped when this is dropped.
pub(crate) struct Redis {
    url: RedisUrl,
    _server: Option<RedisServer>,
}

impl Redis {
    /// Takes the URL given, or starts a server (and says so); fails with how to install
    /// `redis-server` when there is neither.
    pub(crate) fn given_or_started() -> Result<Redis, NoRedis> {
        if let Some(url) = std::env::args().nth(1).or_else(|| std::env::var("REDIS_URL").ok()) {
            let url = RedisUrl::new(url);
            println!("using the Redis at {url}");
            return Ok(Redis { url, _server: None });
        }
        if !redis_server_available() {
            return Err(NoRedis);
        }
        let server = RedisServer::start();
        println!(
            "started a throw-away redis-server at {} (stopped when the example ends)",
            server.url()
        );
        Ok(Redis {
            url: RedisUrl::new(server.url()),
            _server: Some(server),
        })
    }

    /// The default configuration, pointed at this Redis.
    pub(crate) fn config(&self) -> ExecutorConfig {
        let mut config = ExecutorConfig::default();
        config.redis.url = self.url.clone();
        config
    }
}

/// Neither a URL nor `redis-server`; its `Debug`, which `main` prints, says what to do.
pub(crate) struct NoRedis;

impl fmt::Debug for NoRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exe = std::env::current_exe().ok();
        let example = exe.as_deref().and_then(|p| p.file_stem()?.to_str()).unwrap_or("NAME");
        write!(
            f,
            "no Redis URL given and redis-server is not on PATH: install it \
             (`apt-get install redis-server`), or pass a URL \
             (`cargo run -p stateful-redis --example {example} -- redis://127.0.0.1:6379`)"
        )
    }
}

impl fmt::Display for NoRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for NoRedis {}

/// `name` with a suffix unique to this run, so that a run against a shared Redis never sees the
/// keys (leases, message ids) of an earlier one.
pub(crate) fn namespace(name: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("example-{name}-{:x}", nanos ^ u128::from(std::process::id()))
}
