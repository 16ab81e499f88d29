//! The scripts against a real redis-server: replies, preload, NOSCRIPT recovery alone and in pipelines.

use std::sync::Arc;

use redis::Value;
use stateful_redis_core::{Error, RedisConfig};
use stateful_redis_pool::{ConnectHook, Pool};
use stateful_redis_scripts::{
    ALL, Cas, CasReply, DeleteIf, DeleteReply, Get, Invocation, PUT, Put, Scripts, Transition, TransitionReply,
};
use stateful_redis_test_support::RedisServer;

async fn setup(server: &RedisServer) -> (Pool, Arc<Scripts>) {
    let scripts = Arc::new(Scripts::new());
    let hook: Arc<dyn ConnectHook> = Arc::clone(&scripts) as Arc<dyn ConnectHook>;
    let pool = Pool::connect(&RedisConfig::with_url(server.url()), vec![hook])
        .await
        .expect("connect");
    (pool, scripts)
}

#[tokio::test]
async fn preload_puts_every_script_in_the_cache() {
    let server = RedisServer::start();
    let (_pool, scripts) = setup(&server).await;
    let mut args = vec!["SCRIPT", "EXISTS"];
    args.extend(ALL.iter().map(|s| s.sha()));
    assert_eq!(server.cli(&args), vec!["1"; ALL.len()].join("\n"));
    // One preload per shared link opened.
    assert_eq!(scripts.stats().preloads, 2);
}

#[tokio::test]
async fn typed_replies_of_every_script() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    let mut conn = pool.shared().await.expect("conn");
    let key = "t:{a}:s";
    assert_eq!(scripts.invoke(&mut conn, &Get { key }, t).await.expect("get"), None);
    let cas = Cas {
        key,
        expected: 0,
        data: b"one",
        ttl_ms: 0,
    };
    assert_eq!(
        scripts.invoke(&mut conn, &cas, t).await.expect("cas"),
        CasReply::Applied(1)
    );
    assert_eq!(
        scripts.invoke(&mut conn, &cas, t).await.expect("cas"),
        CasReply::Conflict(1)
    );
    let put = Put {
        key,
        data: b"two",
        ttl_ms: 0,
    };
    assert_eq!(scripts.invoke(&mut conn, &put, t).await.expect("put"), 2);
    let record = scripts
        .invoke(&mut conn, &Get { key }, t)
        .await
        .expect("get")
        .expect("some")
        .expect("well formed");
    assert_eq!(
        (record.version, &record.data[..], record.status),
        (2, &b"two"[..], None)
    );
    let tr = Transition {
        key,
        from: &["x", ""],
        to: "on",
        data: None,
        ttl_ms: 0,
    };
    assert_eq!(
        scripts.invoke(&mut conn, &tr, t).await.expect("tr"),
        TransitionReply::Applied(3)
    );
    assert_eq!(
        scripts.invoke(&mut conn, &tr, t).await.expect("tr"),
        TransitionReply::Refused(Some("on".into()))
    );
    let missing = Transition {
        key: "t:{none}:s",
        ..tr
    };
    assert_eq!(
        scripts.invoke(&mut conn, &missing, t).await.expect("tr"),
        TransitionReply::NotFound
    );
    assert_eq!(
        scripts
            .invoke(&mut conn, &DeleteIf { key, expected: 1 }, t)
            .await
            .expect("del"),
        DeleteReply::Conflict(3)
    );
    assert_eq!(
        scripts
            .invoke(&mut conn, &DeleteIf { key, expected: 3 }, t)
            .await
            .expect("del"),
        DeleteReply::Deleted
    );
    assert_eq!(
        scripts
            .invoke(&mut conn, &DeleteIf { key, expected: 3 }, t)
            .await
            .expect("del"),
        DeleteReply::NotFound
    );
}

#[tokio::test]
async fn noscript_is_recovered_alone_and_inside_pipelines() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    let mut conn = pool.shared().await.expect("conn");
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let put = Put {
        key: "t:{a}:s",
        data: b"x",
        ttl_ms: 0,
    };
    assert_eq!(scripts.invoke(&mut conn, &put, t).await.expect("put after flush"), 1);
    assert_eq!(scripts.stats().reloads, 1);

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let keys: Vec<String> = (0..10).map(|i| format!("t:{{p{i}}}:s")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|key| {
            (
                &PUT,
                Put {
                    key,
                    data: b"y",
                    ttl_ms: 0,
                }
                .command(),
            )
        })
        .collect();
    let results = scripts.invoke_pipeline(&mut conn, &calls, t).await.expect("pipeline");
    assert_eq!(results.len(), 10);
    for result in results {
        assert_eq!(result.expect("each call applied"), Value::Int(1));
    }
    // One load for the one script the whole pipeline missed.
    assert_eq!(scripts.stats().reloads, 2);
    // Each call ran exactly once.
    for key in &keys {
        assert_eq!(server.cli(&["HGET", key, "v"]), "1");
    }
}

#[tokio::test]
async fn a_failing_call_in_a_pipeline_fails_alone() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let mut conn = pool.shared().await.expect("conn");
    server.cli(&["SET", "t:{str}:s", "not a hash"]);
    let calls = vec![
        (
            &PUT,
            Put {
                key: "t:{ok}:s",
                data: b"1",
                ttl_ms: 0,
            }
            .command(),
        ),
        (
            &PUT,
            Put {
                key: "t:{str}:s",
                data: b"1",
                ttl_ms: 0,
            }
            .command(),
        ),
        (
            &PUT,
            Put {
                key: "t:{ok2}:s",
                data: b"1",
                ttl_ms: 0,
            }
            .command(),
        ),
    ];
    let results = scripts
        .invoke_pipeline(&mut conn, &calls, pool.response_timeout())
        .await
        .expect("pipeline");
    assert!(results[0].is_ok() && results[2].is_ok());
    match &results[1] {
        Err(Error::Script { script, message }) => {
            assert_eq!(*script, "put");
            assert!(message.contains("WRONGTYPE"), "{message}");
        }
        other => panic!("expected a script error, got {other:?}"),
    }
}
