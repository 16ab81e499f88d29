//! The pool against a real redis-server: statistics, exhaustion, live resize, healing.

use std::time::Duration;

use stateful_redis_core::{Error, RedisConfig};
use stateful_redis_pool::Pool;
use stateful_redis_test_support::RedisServer;

fn config(server: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::with_url(server.url());
    config.pool.max_size = 2;
    // Two links, so that the tests see more than one.
    config.pool.pipeline_links = 2;
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

fn packed(commands: &[&[&str]]) -> Vec<redis::Cmd> {
    commands
        .iter()
        .map(|args| {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            cmd
        })
        .collect()
}

#[tokio::test]
async fn direct_links_answer_pipelines_in_order_and_reconnect() {
    let server = RedisServer::start();
    let pool = Pool::connect(&config(&server), Vec::new()).await.expect("connect");
    assert_eq!(pool.direct_links(), 2);
    let batch = packed(&[&["SET", "k", "v"], &["GET", "k"], &["INCR", "k"], &["GET", "missing"]]);
    let replies = pool.pipeline(0, &batch).await.expect("pipeline");
    assert_eq!(replies[0], Ok(redis::Value::Okay));
    assert_eq!(replies[1], Ok(redis::Value::BulkString(b"v".to_vec())));
    assert!(
        replies[2].as_ref().is_err_and(|e| e.contains("not an integer")),
        "{:?}",
        replies[2]
    );
    assert_eq!(replies[3], Ok(redis::Value::Nil));
    // Many pipelines in flight on one link come back each with its own replies.
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let pool = pool.clone();
            async move {
                let key = format!("n{i}");
                let batch = packed(&[&["INCRBY", &key, &i.to_string()], &["GET", &key]]);
                let replies = pool.pipeline(1, &batch).await.expect("pipeline");
                assert_eq!(replies[0], Ok(redis::Value::Int(i)));
                assert_eq!(replies[1], Ok(redis::Value::BulkString(i.to_string().into_bytes())));
            }
        })
        .collect();
    futures_util::future::join_all(calls).await;
    // A killed connection fails what is on it, then the link reopens.
    server.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let mut healed = false;
    for _ in 0..20 {
        if pool.pipeline(0, &packed(&[&["PING"]])).await.is_ok() {
            healed = true;
            break;
        }
    }
    assert!(healed, "the direct link never reconnected");
    assert!(pool.stats().direct_connected >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_direct_link_is_reopened_by_the_health_check() {
    let server = std::sync::Arc::new(RedisServer::start());
    let mut config = config(&server);
    config.response_timeout = Duration::from_millis(200);
    config.pool.health_check_interval = Duration::from_millis(100);
    let pool = Pool::connect(&config, Vec::new()).await.expect("connect");
    let closed_before = pool.stats().closed;
    // The server stops answering (as a peer gone silent would) for longer than the timeout.
    let sleeper = {
        let server = std::sync::Arc::clone(&server);
        std::thread::spawn(move || server.cli(&["DEBUG", "SLEEP", "1.5"]))
    };
    let mut broke = false;
    for _ in 0..100 {
        if pool.stats().direct_connected < 2 {
            broke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(broke, "the health check never gave up on the silent links");
    assert_eq!(sleeper.join().expect("sleeper"), "OK");
    // The next use opens a fresh connection, which answers.
    let replies = pool.pipeline(0, &packed(&[&["PING"]])).await.expect("reconnected");
    assert_eq!(replies[0], Ok(redis::Value::SimpleString("PONG".into())));
    assert!(pool.stats().closed > closed_before, "{:?}", pool.stats());
}

#[tokio::test]
async fn to_each_server_answers_alike_on_direct_and_shared_links() {
    let socket = std::env::temp_dir().join(format!("sr-pool-each-{}.sock", std::process::id()));
    let socket = socket.to_str().expect("utf-8 path").to_owned();
    let server = RedisServer::builder()
        .acl_user("app", "app-pw", "~* +ping")
        .arg("unixsocket", &socket)
        .start();
    let commands = [redis::cmd("PING"), redis::cmd("CONFIG").arg("GET").arg("save").clone()];
    let tcp = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let unix = format!("redis+unix://{socket}?user=app&pass=app-pw");
    let mut answers = Vec::new();
    for url in [tcp, unix] {
        let pool = Pool::connect(&RedisConfig::with_url(url), Vec::new())
            .await
            .expect("connect");
        let mut each = pool.to_each_server(&commands).await;
        assert_eq!(each.len(), 1, "one standalone server");
        let (address, replies) = each.pop().expect("one");
        answers.push((address, replies.expect("replies")));
    }
    // Direct link (TCP) and shared link (unix socket): the same replies, error replies as
    // the server sent them, so that `server_error` classifies both alike.
    assert_eq!(answers[0].0, format!("127.0.0.1:{}", server.port()));
    assert_eq!(answers[1].0, socket);
    assert_eq!(answers[0].1, answers[1].1);
    assert_eq!(answers[0].1[0], Ok(redis::Value::SimpleString("PONG".into())));
    let refused = answers[1].1[1].clone().expect_err("CONFIG refused");
    assert!(refused.starts_with("NOPERM "), "{refused}");
    assert!(matches!(
        stateful_redis_pool::server_error(None, refused),
        Error::NoPermission { .. }
    ));
    drop(server);
    let _ = std::fs::remove_file(&socket);
}
