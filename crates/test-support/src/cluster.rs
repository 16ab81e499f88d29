//! A local Redis Cluster: masters and replicas as [`RedisServer`]s on free loopback ports,
//! joined with `redis-cli --cluster create`.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::{RedisServer, find_on_path};

/// How long the cluster may take to agree on its state after a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis Cluster. Dropping it stops every node.
///
/// Nodes run with `cluster-node-timeout 3000` (a failed master is noticed in a few
/// seconds, and a busy test machine does not look failed) and
/// `cluster-require-full-coverage no` (slots that lost their master fail alone; the others
/// go on serving).
///
/// ```no_run
/// use stateful_redis_test_support::RedisCluster;
///
/// let cluster = RedisCluster::start(); // 3 masters, 3 replicas
/// let slot = RedisCluster::slot_of("app:{device-7}:s");
/// let owner = cluster.master_of_slot(slot);
/// assert_eq!(cluster.cli(owner, &["PING"]), "PONG");
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// Configures a [`RedisCluster`] before it starts; from [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a ClusterBuilder starts nothing until `.start()`"]
pub struct ClusterBuilder {
    masters: usize,
    replicas: usize,
    users: Vec<(String, String, String)>,
}

impl ClusterBuilder {
    /// How many masters (at least 3; default 3).
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// How many replicas each master has (default 1).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Adds the ACL user `name` on every node, as [`ServerBuilder::acl_user`] does. The
    /// default user keeps every right: the cluster is created and driven (`MIGRATE`,
    /// `SETSLOT`) as it.
    ///
    /// [`ServerBuilder::acl_user`]: crate::ServerBuilder::acl_user
    pub fn acl_user(mut self, name: &str, password: &str, rules: &str) -> Self {
        self.users
            .push((name.to_owned(), password.to_owned(), rules.to_owned()));
        self
    }

    /// Starts the nodes, joins them with `redis-cli --cluster create`, and waits until
    /// every node agrees and every replica is in sync.
    pub fn start(self) -> RedisCluster {
        RedisCluster::start_from(self)
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// Whether it is a master now.
    pub master: bool,
    /// Whether others consider it failed.
    pub failed: bool,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// The slot ranges it serves (masters).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Three masters with one replica each.
    pub fn start() -> RedisCluster {
        Self::start_with(3, 1)
    }

    /// `masters` masters with `replicas` replicas each; waits until every node reports
    /// `cluster_state:ok`, knows every other node, and every replica is in sync.
    pub fn start_with(masters: usize, replicas: usize) -> RedisCluster {
        Self::builder().masters(masters).replicas(replicas).start()
    }

    /// A builder for a cluster of another shape, or with ACL users on its nodes.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            masters: 3,
            replicas: 1,
            users: Vec::new(),
        }
    }

    fn start_from(builder: ClusterBuilder) -> RedisCluster {
        let ClusterBuilder {
            masters,
            replicas,
            users,
        } = builder;
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let mut server = RedisServer::builder()
                    .arg("cluster-enabled", "yes")
                    .arg("cluster-config-file", "nodes.conf")
                    .arg("cluster-node-timeout", "3000")
                    .arg("cluster-require-full-coverage", "no")
                    .arg("cluster-allow-replica-migration", "no");
                for (name, password, rules) in &users {
                    server = server.acl_user(name, password, rules);
                }
                server.start()
            })
            .collect();
        let redis_cli = find_on_path("redis-cli")
            .unwrap_or_else(|| panic!("redis-cli not found on PATH: install it with `apt-get install redis-tools`"));
        let mut create = Command::new(redis_cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let output = create
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{text}"
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until("every node agrees and every replica is in sync", |c| {
            let all = c.nodes.len();
            (0..all).all(|i| {
                let info = c.cli(i, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{all}"))
            }) && c.topology().iter().filter(|n| n.master).count() == masters
                && (0..all).all(|i| {
                    let replication = c.cli(i, &["INFO", "replication"]);
                    replication.contains("role:master") || replication.contains("master_link_status:up")
                })
        });
        cluster
    }

    /// `redis://127.0.0.1:{port}` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis-cli` against node `i` (see [`RedisServer::cli`]).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        self.nodes[i].cli(args)
    }

    /// The node index listening on `port`.
    pub fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// `CLUSTER NODES` as one running node sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        let i = (0..self.nodes.len())
            .find(|&i| self.nodes[i].is_running())
            .unwrap_or_else(|| panic!("no node of the cluster is running"));
        parse_nodes(&self.cli(i, &["CLUSTER", "NODES"]))
    }

    /// The index of the master serving `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let node = self
            .topology()
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of_port(node.port)
    }

    /// The index of a replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.node_id(master);
        let node = self
            .topology()
            .into_iter()
            .find(|n| n.master_id.as_deref() == Some(id.as_str()) && !n.failed)
            .unwrap_or_else(|| panic!("master {master} has no replica"));
        self.index_of_port(node.port)
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> String {
        self.cli(i, &["CLUSTER", "MYID"])
    }

    /// Kills node `i` (it keeps its port; see [`RedisServer::stop`]).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, modulo 16384).
    pub fn slot_of(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        });
        crc16(tagged.unwrap_or(bytes)) % 16384
    }

    /// Starts moving `slot` from its master to master `to`: `IMPORTING` on `to`,
    /// `MIGRATING` on the owner. Returns the owner's index.
    pub fn begin_migration(&self, slot: u16, to: usize) -> usize {
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot = slot.to_string();
        assert_eq!(
            self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
            "OK"
        );
        assert_eq!(
            self.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
            "OK"
        );
        from
    }

    /// Moves up to `count` keys of `slot` from node `from` to node `to` with `MIGRATE`;
    /// returns how many it moved.
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize, count: usize) -> usize {
        let keys = self.cli(
            from,
            &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), &count.to_string()],
        );
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return 0;
        }
        let port = self.nodes[to].port().to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().copied());
        let reply = self.cli(from, &args);
        assert!(reply == "OK" || reply == "NOKEY", "MIGRATE failed: {reply}");
        keys.len()
    }

    /// Moves `slots` slots from master `from` to master `to` with `redis-cli --cluster
    /// reshard`, `pipeline` keys per `MIGRATE`; waits until every node agrees. It takes the
    /// lowest slots `from` serves.
    pub fn reshard(&self, from: usize, to: usize, slots: usize, pipeline: usize) {
        let moving = self.first_slot_of(from);
        let redis_cli = find_on_path("redis-cli")
            .unwrap_or_else(|| panic!("redis-cli not found on PATH: install it with `apt-get install redis-tools`"));
        let output = Command::new(redis_cli)
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.nodes[from].port()),
            ])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .args(["--cluster-pipeline", &pipeline.to_string()])
            .arg("--cluster-yes")
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster reshard: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !text.contains("[ERR]"),
            "redis-cli --cluster reshard failed:\n{text}"
        );
        let to_port = self.nodes[to].port();
        self.wait_until("every node sees the resharded slots' new owner", |c| {
            (0..c.nodes.len()).filter(|&i| c.nodes[i].is_running()).all(|i| {
                parse_nodes(&c.cli(i, &["CLUSTER", "NODES"]))
                    .iter()
                    .any(|n| n.port == to_port && n.slots.iter().any(|&(a, b)| (a..=b).contains(&moving)))
            })
        });
    }

    /// The lowest slot master `i` serves.
    pub fn first_slot_of(&self, i: usize) -> u16 {
        let port = self.nodes[i].port();
        self.topology()
            .into_iter()
            .filter(|n| n.port == port)
            .flat_map(|n| n.slots)
            .map(|(a, _)| a)
            .min()
            .unwrap_or_else(|| panic!("node {i} serves no slot"))
    }

    /// Ends a migration: every master learns that `slot` is served by `to`.
    pub fn finish_migration(&self, slot: u16, to: usize) {
        let to_id = self.node_id(to);
        let slot_text = slot.to_string();
        // The importing node first, then the old owner, then everyone else (the order the
        // Redis documentation gives).
        let mut order: Vec<usize> = vec![to];
        order.extend((0..self.nodes.len()).filter(|&i| i != to && self.nodes[i].is_running()));
        for i in order {
            if self.cli(i, &["ROLE"]).starts_with("master") {
                let reply = self.cli(i, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
                assert_eq!(reply, "OK", "SETSLOT NODE on node {i}");
            }
        }
        self.wait_until("every node sees the slot's new owner", |c| c.master_of_slot(slot) == to);
    }

    /// `CLUSTER FAILOVER` on replica `replica`; waits until it is a master that every running
    /// node sees serving its slots.
    pub fn failover(&self, replica: usize) {
        assert_eq!(self.cli(replica, &["CLUSTER", "FAILOVER"]), "OK");
        self.wait_until("the replica took over", |c| {
            c.cli(replica, &["ROLE"]).starts_with("master")
                && c.topology()
                    .iter()
                    .any(|n| n.port == c.nodes[replica].port() && n.master && !n.slots.is_empty())
        });
    }

    /// Polls `done` until it holds, for at most 30 seconds.
    pub fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !done(self) {
            assert!(Instant::now() < deadline, "the cluster never settled: {what}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let n = s.parse().ok()?;
                        Some((n, n))
                    }
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// CRC16/XMODEM, as Redis Cluster uses for key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // From the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(RedisCluster::slot_of("foo"), 12182);
        assert_eq!(
            RedisCluster::slot_of("{user1000}.following"),
            RedisCluster::slot_of("user1000")
        );
        assert_eq!(RedisCluster::slot_of("a{}b"), RedisCluster::slot_of("a{}b"));
    }
}
