//! A local Redis Cluster: it starts, routes by slot, migrates a slot and fails over.

use stateful_redis_test_support::RedisCluster;

#[test]
fn a_cluster_starts_migrates_a_slot_and_fails_over() {
    let cluster = RedisCluster::start();
    let topology = cluster.topology();
    assert_eq!(topology.iter().filter(|n| n.master).count(), 3);
    assert_eq!(topology.len(), 6);
    let key = "it:{cluster-key}:s";
    let slot = RedisCluster::slot_of(key);
    let owner = cluster.master_of_slot(slot);
    assert_eq!(cluster.cli(owner, &["SET", key, "v"]), "OK");
    // Another master redirects.
    let other = (0..6)
        .find(|&i| i != owner && cluster.cli(i, &["ROLE"]).starts_with("master"))
        .expect("another master");
    assert!(cluster.cli(other, &["GET", key]).starts_with("MOVED"));
    // Move the slot (and its key) to the other master.
    let from = cluster.begin_migration(slot, other);
    assert_eq!(from, owner);
    assert_eq!(cluster.migrate_keys(slot, from, other, 100), 1);
    cluster.finish_migration(slot, other);
    assert_eq!(cluster.cli(other, &["GET", key]), "v");
    // Its replica takes over, with the key.
    let replica = cluster.replica_of(other);
    cluster.failover(replica);
    assert_eq!(cluster.master_of_slot(slot), replica);
    assert_eq!(cluster.cli(replica, &["GET", key]), "v");
}
