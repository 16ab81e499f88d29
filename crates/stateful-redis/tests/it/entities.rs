//! Operations across the entities of a namespace: batched reads, the listing, unconditional
//! deletes, and updates the caller aborts.

use std::time::Duration;

use stateful_redis::{Error, TryUpdateError, Version};

use crate::Counter;

crate::on_both! {
    async fn get_many_returns_each_entity_in_order_with_none_for_missing(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        let ids: Vec<String> = (0..300).map(|i| format!("dev-{i}")).collect();
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            counters.put(id, &Counter { n: i as u64 }).await.expect("put");
        }
        let asked: Vec<&str> = ids.iter().map(String::as_str).rev().collect();
        let got = counters.get_many(&asked).await.expect("get_many");
        // Its future is `Send`: it runs in a task too.
        let (handle, owned) = (counters.clone(), ids.clone());
        let spawned = tokio::spawn(async move {
            let ids: Vec<&str> = owned.iter().map(String::as_str).collect();
            handle.get_many(&ids).await.map(|values| values.iter().filter(|v| v.is_some()).count())
        });
        assert_eq!(spawned.await.expect("task").expect("get_many"), 200);
        assert_eq!(got.len(), asked.len());
        for (id, value) in asked.iter().zip(&got) {
            let i: u64 = id["dev-".len()..].parse().expect("number");
            match value {
                None => assert_eq!(i % 3, 0, "{id} was written but read as missing"),
                Some(v) => {
                    assert_ne!(i % 3, 0, "{id} was never written");
                    assert_eq!(v.value, Counter { n: i }, "{id}");
                    assert_eq!(v.version, Version(1));
                }
            }
        }
        assert!(counters.get_many(&[]).await.expect("empty").is_empty());
        exec.shutdown().await;
    }
}

#[tokio::test]
async fn get_many_refuses_a_bad_id_before_reading_anything() {
    let topology = crate::Topology::standalone();
    let exec = topology.executor().await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    counters.put("a", &Counter { n: 1 }).await.expect("put");
    let before = exec.snapshot();
    match counters.get_many(&["a", "bad{id}", "b"]).await {
        Err(Error::InvalidId(_)) => {}
        other => panic!("expected InvalidId, got {other:?}"),
    }
    let after = exec.snapshot();
    assert_eq!(
        before.operations.iter().map(|o| o.count).sum::<u64>(),
        after.operations.iter().map(|o| o.count).sum::<u64>(),
        "a read was made"
    );
    exec.shutdown().await;
}

crate::on_both! {
    async fn delete_removes_whatever_the_version_and_says_if_it_existed(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        for n in 0..3 {
            counters.put("d", &Counter { n }).await.expect("put");
        }
        assert!(counters.delete("d").await.expect("delete"));
        assert_eq!(counters.get("d").await.expect("get"), None);
        assert!(!counters.delete("d").await.expect("delete again"));
        assert!(!counters.delete("never").await.expect("delete absent"));
        // A new life starts at version 1.
        assert_eq!(counters.put("d", &Counter { n: 9 }).await.expect("put"), Version(1));
        assert!(matches!(counters.delete("x}").await, Err(Error::InvalidId(_))));
        exec.shutdown().await;
    }
}

crate::on_both! {
    async fn a_fenced_delete_with_a_stale_fence_is_refused(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        let leases = counters.leases();
        let ttl = Duration::from_millis(200);
        let old = leases.acquire("f", "old-owner", ttl).await.expect("acquire");
        counters.under(&old).put(&Counter { n: 1 }).await.expect("fenced put");
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        let new = leases.acquire("f", "new-owner", Duration::from_secs(10)).await.expect("takeover");
        match counters.under(&old).delete().await {
            Err(Error::Fenced { token, .. }) => assert_eq!(token, old.token()),
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert!(counters.get("f").await.expect("get").is_some(), "the stale holder deleted");
        assert!(counters.under(&new).delete().await.expect("current holder deletes"));
        assert!(!counters.under(&new).delete().await.expect("nothing left"));
        assert_eq!(counters.get("f").await.expect("get"), None);
        exec.shutdown().await;
    }
}

#[derive(Debug, PartialEq)]
struct TooBig(u64);

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is too big", self.0)
    }
}

#[tokio::test]
async fn try_update_aborts_with_the_callers_error_and_writes_nothing() {
    let topology = crate::Topology::standalone();
    let exec = topology.executor().await;
    let counters = exec.state::<Counter>("it").expect("namespace");
    let bump = |c: Option<Counter>| {
        let n = c.unwrap_or_default().n;
        if n >= 2 {
            Err(TooBig(n))
        } else {
            Ok(Counter { n: n + 1 })
        }
    };
    let first = counters.try_update("t", bump).await.expect("first");
    assert_eq!((first.value.n, first.version), (1, Version(1)));
    counters.try_update("t", bump).await.expect("second");
    match counters.try_update("t", bump).await {
        Err(TryUpdateError::Aborted(e)) => assert_eq!(e, TooBig(2)),
        other => panic!("expected the caller's error, got {other:?}"),
    }
    let stored = counters.get("t").await.expect("get").expect("exists");
    assert_eq!(
        (stored.value.n, stored.version),
        (2, Version(2)),
        "the aborted update wrote"
    );
    // Fenced too: the closure's error ends it before any write.
    let lease = counters
        .leases()
        .acquire("t", "me", Duration::from_secs(10))
        .await
        .expect("lease");
    let aborted = counters.under(&lease).try_update(bump).await;
    assert_eq!(
        aborted.map(|u| u.version).map_err(TryUpdateError::aborted),
        Err(Some(TooBig(2)))
    );
    assert_eq!(
        counters.get("t").await.expect("get").expect("exists").version,
        Version(2)
    );
    exec.shutdown().await;
}

crate::on_both! {
    async fn the_listing_finds_every_entity_once_and_nothing_of_other_namespaces(topology: &Topology) {
        let exec = topology.executor().await;
        let counters = exec.state::<Counter>("it").expect("namespace");
        let mut expected: Vec<String> = (0..500).map(|i| format!("dev-{i}")).collect();
        // Ids that look like glob patterns or other keys are listed as they are.
        expected.extend(["a*b", "q?", "[x]", "dev:1:s", "back\\slash", "ü"].map(String::from));
        for id in &expected {
            counters.put(id, &Counter { n: 1 }).await.expect("put");
        }
        // Other namespaces, an entity's other keys, presence: none of them is listed.
        for namespace in ["other", "it:sub", "i", "it*"] {
            let others = exec.state::<Counter>(namespace).expect("namespace");
            others.put("dev-0", &Counter { n: 2 }).await.expect("put");
            others.put("intruder", &Counter { n: 2 }).await.expect("put");
        }
        let lease = counters.leases().acquire("only-leased", "me", Duration::from_secs(30)).await.expect("lease");
        counters.under(&lease).put(&Counter { n: 3 }).await.expect("fenced put");
        expected.push("only-leased".into());
        counters.presence().heartbeat("only-present").await.expect("heartbeat");
        counters.put("deleted", &Counter { n: 4 }).await.expect("put");
        assert!(counters.delete("deleted").await.expect("delete"));
        expected.sort();

        // The listing runs in a task of its own too (its futures are `Send`).
        let scan = counters.entities();
        let all = tokio::spawn(async move { scan.all().await }).await.expect("task");
        assert_eq!(all.expect("all"), expected);
        // Small pages: each page without repeats, together every entity.
        let mut scan = counters.entities().with_count(7);
        let mut seen = std::collections::BTreeSet::new();
        let mut pages = 0;
        while let Some(page) = scan.next_page().await.expect("page") {
            assert!(!page.is_empty());
            let unique: std::collections::HashSet<&String> = page.iter().collect();
            assert_eq!(unique.len(), page.len(), "a page repeats an entity");
            seen.extend(page);
            pages += 1;
        }
        assert!(pages > 1, "count 7 gave one page");
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(scan.next_page().await.expect("after the end"), None);
        // An empty namespace lists nothing.
        let empty = exec.state::<Counter>("empty").expect("namespace");
        assert_eq!(empty.entities().all().await.expect("all"), Vec::<String>::new());
        exec.shutdown().await;
    }
}

/// The futures of the fleet's API run in spawned tasks: each is `Send` (checked when this compiles).
#[allow(dead_code, reason = "a compile-time check, never called")]
fn futures_are_send(
    handle: &stateful_redis::StateHandle<Counter, stateful_redis::SerdeCodec>,
    scan: &mut stateful_redis::EntityScan,
) {
    fn send<T: Send>(_: T) {}
    send(handle.get_many(&[]));
    send(handle.delete(""));
    send(handle.try_update("", |_| Err::<Counter, TooBig>(TooBig(0))));
    send(scan.next_page());
    let leases = handle.leases();
    send(leases.acquire_wait("", "", Duration::ZERO, Duration::ZERO));
    send(leases.acquire_guarded_wait("", "", Duration::ZERO, Duration::ZERO));
    let presence = handle.presence();
    send(presence.is_active(""));
    send(presence.members());
    let lease = stateful_redis::Fence::new("e", 1, "o");
    let fenced = handle.under(lease);
    send(fenced.delete());
    send(fenced.try_update(|_| Err::<Counter, TooBig>(TooBig(0))));
}
