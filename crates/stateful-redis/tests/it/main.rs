//! Integration tests of the executor against real `redis-server` processes.

mod advisor;
mod alerts;
mod batching;
mod input;
mod leases;
mod monitor;
mod once;
mod resilience;
mod security;
mod state;

use std::time::Duration;

use stateful_redis::{ExecutorConfig, StatefulExecutor};
use stateful_redis_test_support::RedisServer;

/// A counter value, as tests store it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counter {
    pub(crate) n: u64,
}

pub(crate) fn config_for(url: &str) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.redis.url = stateful_redis::RedisUrl::new(url);
    config.redis.connect_timeout = Duration::from_millis(500);
    config.redis.response_timeout = Duration::from_millis(1000);
    config
}

pub(crate) async fn executor(server: &RedisServer) -> StatefulExecutor {
    StatefulExecutor::builder()
        .config(config_for(&server.url()))
        .build()
        .await
        .expect("executor connects")
}

/// Parses `INFO commandstats` into (command, calls), leaving out the commands tests and
/// health checks send themselves.
pub(crate) fn command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    let info = server.cli(&["INFO", "commandstats"]);
    let mut calls: Vec<(String, u64)> = info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let n = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), n))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "ping" | "client|setinfo"))
        .collect();
    calls.sort();
    calls
}
