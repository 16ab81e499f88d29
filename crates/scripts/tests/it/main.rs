//! The scripts against a real redis-server: replies, preload, NOSCRIPT recovery alone and in pipelines.

use std::sync::Arc;

use stateful_redis_core::{Error, RedisConfig};
use stateful_redis_pool::{ConnectHook, Pool};
use stateful_redis_scripts::{
    ALL, Acquire, AcquireReply, Get, GuardKeys, Invocation, LeaseReply, MessageWindow, Release, Renew, Scripts, WRITE,
    Write, WriteOp, WriteReply, WriteResult,
};
use stateful_redis_test_support::RedisServer;

/// Parses write replies (the reply format does not depend on the call's arguments).
const WRITE_PARSER: Write<'static> = Write {
    key: "",
    op: WriteOp::Put,
    data: None,
    ttl_ms: 0,
    guard: None,
    fence: None,
    message: None,
};

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
    // One preload per link opened: the default single direct link.
    assert_eq!(scripts.stats().preloads, 1);
}

fn applied(result: WriteResult) -> WriteReply {
    WriteReply {
        result,
        replayed: false,
    }
}

#[tokio::test]
async fn typed_replies_of_every_script() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    let mut conn = pool.shared().await.expect("conn");
    let key = "t:{a}:s";
    assert_eq!(scripts.invoke(&mut conn, &Get { key }, t).await.expect("get"), None);
    let cas = Write::new(key, WriteOp::Cas { expected: 0 }, Some(b"one"));
    assert_eq!(
        scripts.invoke(&mut conn, &cas, t).await.expect("cas"),
        applied(WriteResult::Applied(1))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &cas, t).await.expect("cas"),
        applied(WriteResult::Conflict(1))
    );
    let put = Write::new(key, WriteOp::Put, Some(b"two"));
    assert_eq!(
        scripts.invoke(&mut conn, &put, t).await.expect("put"),
        applied(WriteResult::Applied(2))
    );
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
    let tr = Write::new(
        key,
        WriteOp::Transition {
            from: &["x", ""],
            to: "on",
        },
        None,
    );
    assert_eq!(
        scripts.invoke(&mut conn, &tr, t).await.expect("tr"),
        applied(WriteResult::Applied(3))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &tr, t).await.expect("tr"),
        applied(WriteResult::Refused(Some("on".into())))
    );
    let missing = Write {
        key: "t:{none}:s",
        ..tr
    };
    assert_eq!(
        scripts.invoke(&mut conn, &missing, t).await.expect("tr"),
        applied(WriteResult::NotFound)
    );
    let del = |expected| Write::new(key, WriteOp::Delete { expected }, None);
    assert_eq!(
        scripts.invoke(&mut conn, &del(1), t).await.expect("del"),
        applied(WriteResult::Conflict(3))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &del(3), t).await.expect("del"),
        applied(WriteResult::Applied(0))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &del(3), t).await.expect("del"),
        applied(WriteResult::NotFound)
    );
}

#[tokio::test]
async fn leases_fences_and_message_ids_in_the_scripts() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    let mut conn = pool.shared().await.expect("conn");
    let (lease, fence) = ("t:{e}:l", "t:{e}:f");
    let acquire = |owner| Acquire {
        lease,
        fence,
        owner,
        ttl_ms: 10_000,
    };
    assert_eq!(
        scripts.invoke(&mut conn, &acquire("a"), t).await.expect("acq"),
        AcquireReply::Granted(1)
    );
    match scripts.invoke(&mut conn, &acquire("b"), t).await.expect("acq") {
        AcquireReply::Held { owner, remaining_ms } => {
            assert_eq!(owner, "a");
            assert!(remaining_ms > 0 && remaining_ms <= 10_000);
        }
        other => panic!("{other:?}"),
    }
    let renew = |token, owner| Renew {
        lease,
        token,
        owner,
        ttl_ms: 10_000,
    };
    assert_eq!(
        scripts.invoke(&mut conn, &renew(1, "a"), t).await.expect("renew"),
        LeaseReply::Done
    );
    assert_eq!(
        scripts.invoke(&mut conn, &renew(1, "b"), t).await.expect("renew"),
        LeaseReply::Lost(Some("a".into()))
    );
    let guard = GuardKeys {
        fence,
        lease,
        messages: "t:{e}:m",
        outcomes: "t:{e}:mr",
    };
    let window = MessageWindow {
        keep: 2,
        keep_ms: 60_000,
    };
    let fenced = |token, owner| Write {
        guard: Some(guard),
        fence: Some((token, owner)),
        ..Write::new("t:{e}:s", WriteOp::Put, Some(b"x"))
    };
    assert_eq!(
        scripts.invoke(&mut conn, &fenced(1, "a"), t).await.expect("w"),
        applied(WriteResult::Applied(1))
    );
    assert_eq!(server.cli(&["HGET", "t:{e}:s", "f"]), "1");
    // Even its holder cannot acquire it again: leases are exclusive.
    assert!(matches!(
        scripts.invoke(&mut conn, &acquire("a"), t).await.expect("acq"),
        AcquireReply::Held { .. }
    ));
    // Release by a stale token is refused and changes nothing.
    let release = |token, owner| Release { lease, token, owner };
    assert!(matches!(
        scripts.invoke(&mut conn, &release(7, "a"), t).await.expect("rel"),
        LeaseReply::Lost(_)
    ));
    assert_eq!(
        scripts.invoke(&mut conn, &release(1, "a"), t).await.expect("rel"),
        LeaseReply::Done
    );
    // The next grant has token 2: token 1 is fenced from then on.
    assert_eq!(
        scripts.invoke(&mut conn, &acquire("b"), t).await.expect("acq"),
        AcquireReply::Granted(2)
    );
    assert_eq!(
        scripts.invoke(&mut conn, &fenced(1, "a"), t).await.expect("w"),
        applied(WriteResult::Fenced(2))
    );
    // The right token under another owner's name is refused too.
    assert_eq!(
        scripts.invoke(&mut conn, &fenced(2, "a"), t).await.expect("w"),
        applied(WriteResult::Fenced(2))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &fenced(2, "b"), t).await.expect("w"),
        applied(WriteResult::Applied(2))
    );
    assert_eq!(
        scripts.invoke(&mut conn, &release(2, "b"), t).await.expect("rel"),
        LeaseReply::Done
    );
    // With the lease gone, even the newest token may not write.
    assert_eq!(
        scripts.invoke(&mut conn, &fenced(2, "b"), t).await.expect("w"),
        applied(WriteResult::Fenced(2))
    );

    let once = |id| Write {
        guard: Some(guard),
        message: Some((id, window)),
        ..Write::new("t:{e}:s", WriteOp::Put, Some(b"y"))
    };
    assert_eq!(
        scripts.invoke(&mut conn, &once("m1"), t).await.expect("w"),
        applied(WriteResult::Applied(3))
    );
    let replay = scripts.invoke(&mut conn, &once("m1"), t).await.expect("w");
    assert_eq!(
        replay,
        WriteReply {
            result: WriteResult::Applied(3),
            replayed: true
        }
    );
    assert_eq!(server.cli(&["HGET", "t:{e}:s", "v"]), "3");
    // A fenced refusal is not recorded: the message stays for the rightful holder.
    let stale = Write {
        guard: Some(guard),
        fence: Some((1, "a")),
        message: Some(("m-fenced", window)),
        ..Write::new("t:{e}:s", WriteOp::Put, Some(b"z"))
    };
    assert_eq!(
        scripts.invoke(&mut conn, &stale, t).await.expect("w"),
        applied(WriteResult::Fenced(2))
    );
    assert_eq!(server.cli(&["HEXISTS", "t:{e}:mr", "m-fenced"]), "0");
    // Only the newest `keep` ids are remembered.
    for id in ["m2", "m3"] {
        scripts.invoke(&mut conn, &once(id), t).await.expect("w");
    }
    assert_eq!(server.cli(&["ZCARD", "t:{e}:m"]), "2");
    assert_eq!(server.cli(&["HLEN", "t:{e}:mr"]), "2");
    assert_eq!(server.cli(&["HEXISTS", "t:{e}:mr", "m1"]), "0");
    assert_eq!(server.cli(&["HEXISTS", "t:{e}:mr", "m3"]), "1", "the newest id is kept");
}

#[tokio::test]
async fn noscript_is_recovered_alone_and_inside_pipelines() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    let mut conn = pool.shared().await.expect("conn");
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let put = Write::new("t:{a}:s", WriteOp::Put, Some(b"x"));
    let reply = scripts.invoke(&mut conn, &put, t).await.expect("put after flush");
    assert_eq!(reply.result, WriteResult::Applied(1));
    assert_eq!(scripts.stats().reloads, 1);

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let keys: Vec<String> = (0..10).map(|i| format!("t:{{p{i}}}:s")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|key| (&WRITE, Write::new(key, WriteOp::Put, Some(b"y")).command()))
        .collect();
    let results = scripts.invoke_pipeline(&mut conn, calls, t).await.expect("pipeline");
    assert_eq!(results.len(), 10);
    for result in results {
        let reply = WRITE_PARSER.parse(result.expect("each call applied")).expect("parse");
        assert_eq!(reply.result, WriteResult::Applied(1));
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
    let calls: Vec<_> = ["t:{ok}:s", "t:{str}:s", "t:{ok2}:s"]
        .into_iter()
        .map(|key| (&WRITE, Write::new(key, WriteOp::Put, Some(b"1")).command()))
        .collect();
    let results = scripts
        .invoke_pipeline(&mut conn, calls, pool.response_timeout())
        .await
        .expect("pipeline");
    assert!(results[0].is_ok() && results[2].is_ok());
    match &results[1] {
        Err(Error::Script { script, message }) => {
            assert_eq!(*script, "write");
            assert!(message.contains("WRONGTYPE"), "{message}");
        }
        other => panic!("expected a script error, got {other:?}"),
    }
}
