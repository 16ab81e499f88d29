//! The pool against a real redis-server: statistics, exhaustion, live resize, healing.

use std::time::Duration;

use stateful_redis_core::{Error, RedisConfig};
use stateful_redis_pool::Pool;
use stateful_redis_test_support::RedisServer;

fn config(server: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::with_url(server.url());
    config.pool.max_size = 2;
    config.pool.checkout_timeout = Duration::from_millis(200);
    config.connect_timeout = Duration::from_millis(500);
    config
}

async fn ping(conn: &mut (impl redis::aio::ConnectionLike + Send)) -> String {
    redis::cmd("PING").query_async(conn).await.expect("PING")
}

#[tokio::test]
async fn exhaustion_is_a_typed_error_and_counted() {
    let server = RedisServer::start();
    let pool = Pool::connect(&config(&server), Vec::new()).await.expect("connect");
    let mut a = pool.exclusive().await.expect("first");
    let _b = pool.exclusive().await.expect("second");
    assert_eq!(ping(&mut a).await, "PONG");
    let stats = pool.stats();
    assert_eq!((stats.max_size, stats.connections, stats.in_use), (2, 2, 2));
    match pool.exclusive().await {
        Err(Error::PoolExhausted { waited }) => assert_eq!(waited, Duration::from_millis(200)),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(pool.stats().timeouts, 1);
    drop(a);
    let _c = pool.exclusive().await.expect("a returned connection is reused");
    assert_eq!(pool.stats().connections, 2);
}

#[tokio::test]
async fn resize_takes_effect_live_and_keeps_counters() {
    let server = RedisServer::start();
    let pool = Pool::connect(&config(&server), Vec::new()).await.expect("connect");
    let held = [pool.exclusive().await.expect("1"), pool.exclusive().await.expect("2")];
    assert!(matches!(pool.exclusive().await, Err(Error::PoolExhausted { .. })));
    pool.resize(4).expect("resize");
    assert_eq!(pool.stats().max_size, 4);
    let more = [pool.exclusive().await.expect("3"), pool.exclusive().await.expect("4")];
    let stats = pool.stats();
    assert_eq!(stats.timeouts, 1, "counters survive the resize");
    assert!(stats.created >= 4 + 2, "{stats:?}");
    assert!(matches!(pool.resize(0), Err(Error::Config(e)) if e.field == "redis.pool.max_size"));
    drop((held, more));
}

#[tokio::test]
async fn shared_links_reopen_after_the_server_kills_them() {
    let server = RedisServer::start();
    let pool = Pool::connect(&config(&server), Vec::new()).await.expect("connect");
    let links = pool.stats().shared_links;
    let mut conn = pool.shared().await.expect("shared");
    let before = conn.generation();
    assert_eq!(ping(&mut conn).await, "PONG");
    server.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    // A request on a killed connection fails and retires it; the pool then probes its
    // other links at once. At most one request per link fails before all serve again.
    let mut failures = 0;
    let mut served = 0;
    for _ in 0..50 {
        let mut conn = pool.shared().await.expect("shared");
        match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => served += 1,
            Err(_) => failures += 1,
        }
        if served == 2 * links {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, 2 * links, "the pool never healed");
    assert!(failures <= links, "{failures} failures for {links} links");
    assert!(pool.shared().await.expect("shared").generation() > before);
    assert!(pool.stats().closed >= 1);
}

#[tokio::test]
async fn unreachable_server_fails_at_connect_with_a_typed_error() {
    let mut server = RedisServer::start();
    let config = config(&server);
    server.stop();
    let err = tokio::time::timeout(Duration::from_secs(10), Pool::connect(&config, Vec::new()))
        .await
        .expect("connect must not hang")
        .expect_err("nothing listens");
    assert!(
        matches!(err, Error::Connection { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn closed_pool_refuses() {
    let server = RedisServer::start();
    let pool = Pool::connect(&config(&server), Vec::new()).await.expect("connect");
    pool.close();
    assert!(matches!(pool.shared().await, Err(Error::Shutdown)));
    assert!(matches!(pool.exclusive().await, Err(Error::Shutdown)));
}
