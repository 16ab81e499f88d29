//! Integration tests of the executor against real `redis-server` processes.

mod advisor;
// A real Alertmanager and webhook, and a configuration file edited live.
#[cfg(all(feature = "alert-http", feature = "config-file"))]
mod alerts;
mod batching;
mod cluster;
mod durability;
mod entities;
mod guarantees;
mod input;
mod leases;
mod monitor;
mod once;
mod presence;
mod resilience;
mod security;
mod state;

use std::time::Duration;

use stateful_redis::{ExecutorConfig, StatefulExecutor};
use stateful_redis_test_support::{RedisCluster, RedisServer};

/// Where a test runs: one redis-server, or a local Redis Cluster (3 masters). The semantic
/// tests run the same body on both ([`on_both!`]).
pub(crate) enum Topology {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Topology {
    pub(crate) fn standalone() -> Self {
        Topology::Standalone(RedisServer::start())
    }

    /// Three masters, no replicas: what the semantics need, at half the processes.
    pub(crate) fn cluster() -> Self {
        Topology::Cluster(RedisCluster::start_with(3, 0))
    }

    /// The test configuration for this topology.
    pub(crate) fn config(&self) -> ExecutorConfig {
        match self {
            Topology::Standalone(server) => config_for(&server.url()),
            Topology::Cluster(cluster) => {
                let urls = cluster.urls();
                let mut config = config_for(&urls[0]);
                config.redis.cluster = true;
                config.redis.seeds = urls[1..].iter().map(stateful_redis::RedisUrl::new).collect();
                config
            }
        }
    }

    pub(crate) async fn executor(&self) -> StatefulExecutor {
        StatefulExecutor::builder()
            .config(self.config())
            .build()
            .await
            .expect("executor connects")
    }

    /// Keys stored, on every master together.
    pub(crate) fn keys(&self) -> u64 {
        let count = |text: String| text.parse::<u64>().expect("DBSIZE");
        match self {
            Topology::Standalone(server) => count(server.cli(&["DBSIZE"])),
            Topology::Cluster(cluster) => (0..cluster.nodes().len())
                .filter(|&i| cluster.cli(i, &["ROLE"]).starts_with("master"))
                .map(|i| count(cluster.cli(i, &["DBSIZE"])))
                .sum(),
        }
    }

    /// `redis-cli` on the node that holds `key` (its slot's master on a cluster).
    pub(crate) fn cli_for(&self, key: &str, args: &[&str]) -> String {
        match self {
            Topology::Standalone(server) => server.cli(args),
            Topology::Cluster(cluster) => cluster.cli(cluster.master_of_slot(RedisCluster::slot_of(key)), args),
        }
    }
}

/// Defines a test body that runs on a standalone server and on a cluster: a module named
/// after it with the tests `standalone` and `cluster`.
macro_rules! on_both {
    ($(#[$meta:meta])* async fn $name:ident($topology:ident: &Topology) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports, reason = "each body uses its own part of the parent's imports")]
            use super::*;

            async fn body($topology: &crate::Topology) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                body(&crate::Topology::standalone()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                body(&crate::Topology::cluster()).await;
            }
        }
    };
}
pub(crate) use on_both;

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
