//! ACL users, wrong passwords, and TLS.

use stateful_redis::{Error, StatefulExecutor};
use stateful_redis_test_support::RedisServer;

use crate::{Counter, config_for};

/// The keys and commands the executor needs, and nothing else.
fn app_rules() -> String {
    format!("~app:* {}", stateful_redis::ACL_COMMANDS)
}

/// A server whose user `app` may touch `app:*` keys only, and an executor connected as it.
async fn limited_user() -> (RedisServer, StatefulExecutor) {
    let server = RedisServer::builder()
        .require_admin_password("admin-pw")
        .acl_user("app", "app-pw-5up3r", &app_rules())
        .start();
    let url = format!("redis://app:app-pw-5up3r@127.0.0.1:{}", server.port());
    let exec = StatefulExecutor::builder()
        .config(config_for(&url))
        .build()
        .await
        .expect("the limited user connects");
    (server, exec)
}

#[tokio::test]
async fn least_privilege_acl_user_works() {
    let (_server, exec) = limited_user().await;
    let counters = exec.state::<Counter>("app").expect("namespace");
    let v = counters.put("e", &Counter { n: 1 }).await.expect("put");
    let got = counters.get("e").await.expect("get").expect("exists");
    assert_eq!((got.version, got.value), (v, Counter { n: 1 }));
    // Every script runs as this user: leases, fenced and exactly-once writes, presence.
    let leases = exec.leases("app").expect("namespace");
    let guard = leases
        .acquire_guarded("e", "me", std::time::Duration::from_secs(5))
        .await
        .expect("acquire");
    counters.under(&guard).put(&Counter { n: 2 }).await.expect("fenced put");
    let change = stateful_redis::Change::Put(&Counter { n: 3 });
    counters.apply_once("e", "m1", change).await.expect("apply_once");
    counters.transition("e", &[""], "on", None).await.expect("transition");
    let v = counters.get("e").await.expect("get").expect("exists").version;
    counters.delete_if("e", v).await.expect("delete_if");
    guard.release().await.expect("release");
    let presence = exec.presence("app").expect("namespace");
    presence.heartbeat("e").await.expect("heartbeat");
    assert_eq!(presence.active_count().await.expect("count"), 1);
    assert_eq!(presence.expire_stale().await.expect("expire"), 0);
    // Outside its key pattern the server refuses, and the error says so.
    let other = exec.state::<Counter>("other").expect("namespace");
    match other.put("e", &Counter { n: 1 }).await {
        Err(Error::NoPermission { .. } | Error::Script { .. }) => {}
        r => panic!("expected a permission error, got {r:?}"),
    }
    // The URL's password never shows in the executor's Debug output.
    let debug = format!("{exec:?}");
    assert!(!debug.contains("app-pw-5up3r"), "{debug}");
}

#[tokio::test]
async fn the_script_optimizer_loads_every_script_for_a_user_without_script_exists() {
    // ACL_COMMANDS grants `script|load` but not `script|exists`: the refusal is no error.
    let (_server, exec) = limited_user().await;
    let report = exec.optimize_lua_scripts().await.expect("optimize");
    assert_eq!(
        (report.nodes, report.already_cached, report.loaded),
        (1, 0, report.scripts),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_call_outside_the_users_keys_fails_alone_among_calls_made_together() {
    let (_server, exec) = limited_user().await;
    let allowed = exec.state::<Counter>("app").expect("namespace");
    let denied = exec.state::<Counter>("other").expect("namespace");
    // Made together, the calls share pipelines and bundles (`EVALSHA many`).
    let calls = (0..20u64).map(|i| {
        let (state, id) = if i % 4 == 1 {
            (&denied, format!("d{i}"))
        } else {
            (&allowed, format!("a{i}"))
        };
        async move { (i, state.put(&id, &Counter { n: i }).await) }
    });
    for (i, result) in futures_util::future::join_all(calls).await {
        if i % 4 == 1 {
            assert!(matches!(result, Err(Error::NoPermission { .. })), "{i}: {result:?}");
        } else {
            assert_eq!(result.expect("an allowed put").0, 1, "{i}");
            let stored = allowed.get(&format!("a{i}")).await.expect("get").expect("stored");
            assert_eq!(stored.value, Counter { n: i });
        }
    }
    assert!(exec.script_stats().bundles > 0, "{:?}", exec.script_stats());
    exec.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let server = RedisServer::builder()
        .require_admin_password("admin-pw")
        .acl_user("app", "right-pw", &app_rules())
        .start();
    let url = format!("redis://app:wr0ng-s3cret@127.0.0.1:{}", server.port());
    let err = StatefulExecutor::builder()
        .config(config_for(&url))
        .build()
        .await
        .expect_err("a wrong password must fail");
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("wr0ng-s3cret"), "{text}");
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let server = RedisServer::builder().tls().start();
    let mut config = config_for(&server.tls_url().expect("TLS port"));
    config.redis.tls_ca_file = Some(server.ca_cert_path().expect("CA").to_path_buf());
    let exec = StatefulExecutor::builder()
        .config(config)
        .build()
        .await
        .expect("TLS connects");
    let counters = exec.state::<Counter>("it").expect("namespace");
    counters.put("e", &Counter { n: 4 }).await.expect("put over TLS");
    assert_eq!(
        counters.get("e").await.expect("get").expect("exists").value,
        Counter { n: 4 }
    );
    // Without the CA, the server's certificate is not trusted.
    let untrusted = config_for(&server.tls_url().expect("TLS port"));
    let err = StatefulExecutor::builder()
        .config(untrusted)
        .build()
        .await
        .expect_err("untrusted CA");
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    // A TLS server it does not trust is not taken for a plaintext one.
    assert!(!err.to_string().contains("plaintext"), "{err}");
}
