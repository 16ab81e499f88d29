//! Presence: which entities are active, one by one and all together.

use std::time::Duration;

use stateful_redis::Error;

use crate::Counter;

crate::on_both! {
    async fn is_active_and_members_show_the_entities_seen_within_the_window(topology: &Topology) {
        let exec = topology.executor().await;
        let devices = exec.state::<Counter>("it").expect("namespace");
        let presence = devices.presence();
        let ids: Vec<String> = (0..200).map(|i| format!("dev-{i}")).collect();
        let beating: Vec<&str> = ids.iter().step_by(2).map(String::as_str).collect();
        presence.heartbeat_many(&beating).await.expect("heartbeat");
        // Another namespace's presence is its own.
        exec.presence("other").expect("namespace").heartbeat("dev-1").await.expect("heartbeat");

        for (i, id) in ids.iter().enumerate() {
            assert_eq!(presence.is_active(id).await.expect("is_active"), i % 2 == 0, "{id}");
        }
        let mut expected: Vec<String> = beating.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(presence.members().await.expect("members"), expected);
        assert_eq!(presence.active_count().await.expect("count"), 100);
        assert!(matches!(presence.is_active("a{b}").await, Err(Error::InvalidId(_))));

        // Past the window they are no longer active, though not yet expired.
        let short = presence.clone().with_window(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!short.is_active("dev-0").await.expect("is_active"));
        assert_eq!(short.members().await.expect("members"), Vec::<String>::new());
        short.heartbeat("dev-3").await.expect("heartbeat");
        assert!(short.is_active("dev-3").await.expect("is_active"));
        assert_eq!(short.members().await.expect("members"), vec!["dev-3".to_owned()]);
        exec.shutdown().await;
    }
}
