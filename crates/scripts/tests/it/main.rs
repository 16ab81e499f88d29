//! The scripts against a real redis-server: replies, preload, NOSCRIPT recovery alone and in pipelines.

use std::sync::Arc;

use stateful_redis_core::{Error, RedisConfig};
use stateful_redis_pool::{ConnectHook, Pool};
use stateful_redis_scripts::{
    ALL, Acquire, AcquireReply, Call, Combine, Get, GuardKeys, Invocation, LeaseReply, MessageWindow, Release, Renew,
    Scripts, WRITE, Write, WriteOp, WriteReply, WriteResult,
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
    nonce: "",
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
    assert_eq!(server.record("t:{e}:s", "fence"), "1");
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
    assert_eq!(server.record("t:{e}:s", "version"), "3");
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
        assert_eq!(server.record(key, "version"), "1");
    }
}

#[tokio::test]
async fn a_failing_call_in_a_pipeline_fails_alone() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let mut conn = pool.shared().await.expect("conn");
    server.cli(&["HSET", "t:{str}:s", "f", "not a string"]);
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

/// The same calls, of every script, for one bundle of `many` and for one `EVALSHA` each.
fn every_kind_of_call() -> Vec<Call> {
    const GUARD: GuardKeys<'static> = GuardKeys {
        fence: "t:{g}:f",
        lease: "t:{g}:l",
        messages: "t:{g}:m",
        outcomes: "t:{g}:mr",
    };
    let window = MessageWindow {
        keep: 10,
        keep_ms: 60_000,
    };
    let once = |id: &'static str, data: &'static [u8]| Write {
        guard: Some(GUARD),
        message: Some((id, window)),
        ..Write::new("t:{g}:s", WriteOp::Put, Some(data))
    };
    let mut calls = Vec::new();
    let mut push = |call: &dyn Fn() -> Call| calls.push(call());
    fn packed<I: Invocation>(call: I) -> Call {
        Call::new(&call, 0)
    }
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Put, Some(b"one"))));
    push(&|| packed(Get { key: "t:{a}:s" }));
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Cas { expected: 1 }, Some(b"two"))));
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Cas { expected: 1 }, Some(b"lost"))));
    push(&|| {
        packed(Write::new(
            "t:{a}:s",
            WriteOp::Transition { from: &[""], to: "on" },
            None,
        ))
    });
    push(&|| {
        packed(Write::new(
            "t:{a}:s",
            WriteOp::Transition {
                from: &["off"],
                to: "on",
            },
            None,
        ))
    });
    push(&|| packed(Get { key: "t:{a}:s" }));
    push(&|| packed(Get { key: "t:{none}:s" }));
    // A call that fails (a key of the wrong type) between calls that succeed.
    push(&|| packed(Write::new("t:{str}:s", WriteOp::Put, Some(b"x"))));
    push(&|| {
        packed(Write {
            ttl_ms: 3_153_600_000_001,
            ..Write::new("t:{b}:s", WriteOp::Put, Some(b"x"))
        })
    });
    push(&|| packed(Write::new("t:{b}:s", WriteOp::Put, Some(b"three"))));
    push(&|| {
        packed(Write {
            ttl_ms: 60_000,
            ..Write::new("t:{exp}:s", WriteOp::Put, Some(b"expires"))
        })
    });
    // Leases and a fenced write.
    push(&|| {
        packed(Acquire {
            lease: "t:{g}:l",
            fence: "t:{g}:f",
            owner: "me",
            ttl_ms: 60_000,
        })
    });
    push(&|| {
        packed(Acquire {
            lease: "t:{g}:l",
            fence: "t:{g}:f",
            owner: "you",
            ttl_ms: 60_000,
        })
    });
    push(&|| {
        packed(Renew {
            lease: "t:{g}:l",
            token: 1,
            owner: "me",
            ttl_ms: 60_000,
        })
    });
    push(&|| {
        packed(Write {
            guard: Some(GUARD),
            fence: Some((1, "me")),
            ..Write::new("t:{g}:s", WriteOp::Put, Some(b"fenced"))
        })
    });
    push(&|| {
        packed(Write {
            guard: Some(GUARD),
            fence: Some((1, "you")),
            ..Write::new("t:{g}:s", WriteOp::Put, Some(b"refused"))
        })
    });
    // Message ids: two of them, then a replay of the first.
    push(&|| packed(once("m1", b"first")));
    push(&|| packed(once("m2", b"second")));
    push(&|| packed(once("m1", b"replayed")));
    push(&|| {
        packed(Release {
            lease: "t:{g}:l",
            token: 1,
            owner: "me",
        })
    });
    push(&|| {
        packed(Stateless::presence(
            "t:presence:{0}",
            stateful_redis_scripts::PresenceOp::Beat(&["a", "b"]),
        ))
    });
    push(&|| {
        packed(Stateless::presence(
            "t:presence:{0}",
            stateful_redis_scripts::PresenceOp::Count(60_000),
        ))
    });
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Delete { expected: 3 }, None)));
    // A run of plain puts (a bundle sends them by position, reads them with one MGET and
    // writes them with one MSET): onto a deleted record, twice onto one record, onto a record
    // with an expiry (kept), onto a key of another type, onto what is not a record, and at
    // the highest version (corrupt, as alone).
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Put, Some(b"again"))));
    push(&|| packed(Write::new("t:{a}:s", WriteOp::Put, Some(b"and again"))));
    push(&|| packed(Write::new("t:{b}:s", WriteOp::Put, Some(b"four"))));
    push(&|| packed(Write::new("t:{b}:s", WriteOp::Put, Some(b"five"))));
    push(&|| packed(Write::new("t:{exp}:s", WriteOp::Put, Some(b"still expires"))));
    push(&|| packed(Write::new("t:{b}:s", WriteOp::Put, Some(b"six"))));
    push(&|| packed(Write::new("t:{str}:s", WriteOp::Put, Some(b"x"))));
    push(&|| packed(Write::new("t:{bad}:s", WriteOp::Put, Some(b"x"))));
    push(&|| packed(Write::new("t:{top}:s", WriteOp::Put, Some(b"x"))));
    calls
}

/// Builds presence calls (a unit struct, so that `every_kind_of_call` reads as a list).
struct Stateless;

impl Stateless {
    fn presence<'a>(
        shard: &'a str,
        op: stateful_redis_scripts::PresenceOp<'a>,
    ) -> stateful_redis_scripts::Presence<'a> {
        stateful_redis_scripts::Presence { shard, op }
    }
}

/// What a call's outcome says, without the parts that differ between a call alone and the
/// same call inside a bundle: the server's wording around an error, and the clock.
fn outcome(result: &Result<redis::Value, Error>) -> String {
    /// Times (ms since the epoch, 13 digits) as `time`, and the remaining ms of a lease held
    /// by another owner (`[0, owner, ms]`, which the clock moves between two servers) as
    /// `remaining`, once checked to be within the lease's 60 s.
    fn timeless(value: &redis::Value) -> redis::Value {
        match value {
            redis::Value::BulkString(b) if b.len() == 13 && b.iter().all(u8::is_ascii_digit) => {
                redis::Value::SimpleString("time".into())
            }
            // A state record: its fields without the update time.
            redis::Value::BulkString(b) if b.first() == Some(&stateful_redis_core::RECORD_FORMAT) => {
                match stateful_redis_core::Record::decode(bytes::Bytes::from(b.clone())) {
                    Ok(r) => redis::Value::SimpleString(format!(
                        "record v={} st={:?} f={} d={:?}",
                        r.version, r.status, r.fence, r.data
                    )),
                    Err(e) => redis::Value::SimpleString(format!("not a record: {e}")),
                }
            }
            redis::Value::Array(items) => match items.as_slice() {
                [
                    zero @ redis::Value::Int(0),
                    owner @ redis::Value::BulkString(_),
                    redis::Value::Int(ms),
                ] => {
                    assert!((1..=60_000).contains(ms), "remaining ms {ms}");
                    redis::Value::Array(vec![
                        zero.clone(),
                        owner.clone(),
                        redis::Value::SimpleString("remaining".into()),
                    ])
                }
                _ => redis::Value::Array(items.iter().map(timeless).collect()),
            },
            other => other.clone(),
        }
    }
    match result {
        Ok(value) => format!("{:?}", timeless(value)),
        Err(Error::Script { script, message }) => {
            let code = message.split_whitespace().next().unwrap_or_default();
            let what = if message.contains("WRONGTYPE") {
                "WRONGTYPE"
            } else {
                message.split(':').next().unwrap_or_default()
            };
            format!("script error {script}: {code} {what}")
        }
        Err(e) => format!("{e:?}"),
    }
}

/// Every key the calls touch, with its type, whether it expires, and its content (a record's
/// update time left out).
fn dump(server: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = server.cli(&["KEYS", "t:*"]).lines().map(str::to_owned).collect();
    keys.sort();
    keys.iter()
        .map(|key| {
            let kind = server.cli(&["TYPE", key]);
            let content = match kind.as_str() {
                "hash" => {
                    let mut fields: Vec<String> = server
                        .cli(&["HGETALL", key])
                        .lines()
                        .collect::<Vec<_>>()
                        .chunks(2)
                        .filter(|kv| kv[0] != "t")
                        .map(|kv| kv.join("="))
                        .collect();
                    fields.sort();
                    fields.join(",")
                }
                "zset" => server.cli(&["ZRANGE", key, "0", "-1"]),
                "string" if key.ends_with(":s") => ["version", "status", "fence", "value"]
                    .map(|field| format!("{field}={}", server.record(key, field)))
                    .join(","),
                _ => server.cli(&["GET", key]),
            };
            let expires = server.cli(&["PTTL", key]) != "-1";
            format!("{key} {kind} expires={expires} {content}")
        })
        .collect()
}

#[tokio::test]
async fn calls_of_every_script_in_one_bundle_answer_and_apply_as_if_alone() {
    let combined_server = RedisServer::start();
    let alone_server = RedisServer::start();
    let mut outcomes = Vec::new();
    for (server, combine) in [(&combined_server, Combine::up_to(64)), (&alone_server, Combine::OFF)] {
        let (pool, scripts) = setup(server).await;
        server.cli(&["HSET", "t:{str}:s", "f", "not a string"]);
        server.cli(&["SET", "t:{bad}:s", "not a record"]);
        server.write_record("t:{top}:s", (1 << 53) - 1, "", "x");
        let calls = every_kind_of_call();
        let results = scripts.run_direct(&pool, 0, &calls, combine).await;
        assert_eq!(results.len(), calls.len());
        let stats = scripts.stats();
        if combine == Combine::OFF {
            assert_eq!((stats.bundles, stats.bundled_calls), (0, 0));
        } else {
            // The first put, then the three reads, go alone: each read has a call of its
            // entity before it, or nothing to go ahead of. Two bundles hold the rest.
            assert_eq!((stats.bundles, stats.bundled_calls), (2, calls.len() as u64 - 4));
        }
        outcomes.push((results.iter().map(outcome).collect::<Vec<_>>(), dump(server)));
    }
    let (combined, alone) = (&outcomes[0], &outcomes[1]);
    for (i, (c, a)) in combined.0.iter().zip(&alone.0).enumerate() {
        assert_eq!(c, a, "call {i}");
    }
    assert_eq!(combined.1, alone.1, "the data each left");
    // What the list promises, spelled out on the combined server's answers.
    let answers = &combined.0;
    assert_eq!(answers[0], "int(1)");
    assert_eq!(
        answers[3],
        format!(
            "{:?}",
            redis::Value::Array(vec![redis::Value::Int(0), redis::Value::Int(2)])
        )
    );
    assert!(
        answers[8].starts_with("script error write: WRONGTYPE"),
        "{}",
        answers[8]
    );
    assert!(answers[9].contains("ttl out of range"), "{}", answers[9]);
    assert_eq!(answers[10], "int(1)", "the calls after a failed one run");
    let n = answers.len();
    assert!(answers[n - 2].contains("not a record"), "{}", answers[n - 2]);
    assert!(
        answers[n - 1].contains("the highest a record holds"),
        "{}",
        answers[n - 1]
    );
    // Both message ids kept, in their order of arrival; the replay changed nothing.
    assert_eq!(combined_server.cli(&["ZRANGE", "t:{g}:m", "0", "-1"]), "m1\nm2");
    assert_eq!(combined_server.record("t:{g}:s", "value"), "second");
}

#[tokio::test]
async fn a_bundle_the_server_lost_is_loaded_again_and_each_call_applies_once() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let keys: Vec<String> = (0..10).map(|i| format!("t:{{p{i}}}:s")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|key| Call::new(&Write::new(key, WriteOp::Put, Some(b"y")), 0))
        .collect();
    let results = scripts.run_direct(&pool, 0, &calls, Combine::up_to(4)).await;
    for result in results {
        let reply = WRITE_PARSER.parse(result.expect("each call applied")).expect("parse");
        assert_eq!(reply.result, WriteResult::Applied(1));
    }
    let stats = scripts.stats();
    // Bundles of 4, 4 and 2 calls; one load of `many` for all of them.
    assert_eq!((stats.bundles, stats.bundled_calls, stats.reloads), (3, 10, 1));
    for key in &keys {
        assert_eq!(server.record(key, "version"), "1");
    }
}

/// A server whose user `app` may touch only keys under `t:`, and a pool of that user with the
/// scripts preloaded.
async fn limited_user() -> (RedisServer, Arc<Scripts>, Pool) {
    limited_user_without("").await
}

/// A user allowed `t:*` and `ACL_COMMANDS`, then `denied` (ACL rules, such as `-mget`).
async fn limited_user_without(denied: &str) -> (RedisServer, Arc<Scripts>, Pool) {
    let server = RedisServer::builder()
        .require_admin_password("admin-pw")
        .acl_user(
            "app",
            "app-pw",
            &format!("~t:* {} {denied}", stateful_redis_scripts::ACL_COMMANDS),
        )
        .start();
    let scripts = Arc::new(Scripts::new());
    let hook: Arc<dyn ConnectHook> = Arc::clone(&scripts) as Arc<dyn ConnectHook>;
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let pool = Pool::connect(&RedisConfig::with_url(url), vec![hook])
        .await
        .expect("connect");
    (server, scripts, pool)
}

#[tokio::test]
async fn a_bundle_with_keys_the_user_may_not_touch_answers_each_call_on_its_own() {
    let (server, scripts, pool) = limited_user().await;
    let keys = ["t:{a}:s", "x:{b}:s", "t:{c}:s", "x:{d}:s"];
    let calls: Vec<_> = keys
        .iter()
        .map(|key| Call::new(&Write::new(key, WriteOp::Put, Some(b"v")), 0))
        .collect();
    let results = scripts.run_direct(&pool, 0, &calls, Combine::up_to(64)).await;
    assert_eq!(scripts.stats().bundles, 1);
    for (key, result) in keys.iter().zip(&results) {
        if key.starts_with("t:") {
            assert!(result.is_ok(), "{key}: {result:?}");
            assert_eq!(server.record(key, "version"), "1");
        } else {
            assert!(matches!(result, Err(Error::NoPermission { .. })), "{key}: {result:?}");
        }
    }
}

#[tokio::test]
async fn a_bundle_for_a_user_without_mget_or_mset_applies_each_call_once() {
    // A user set up with an older ACL_COMMANDS: a run of plain puts falls back to one put at a
    // time, and the call before the run (which changed data) is not sent a second time.
    for denied in ["-mget", "-mset", "-mget -mset"] {
        let (server, scripts, pool) = limited_user_without(denied).await;
        server.write_record("t:{a}:s", 1, "", "\u{3}a");
        server.write_record("t:{b}:s", 1, "", "\u{3}b");
        let calls = vec![
            Call::new(
                &Write {
                    ttl_ms: 60_000,
                    ..Write::new("t:{c}:s", WriteOp::Put, Some(b"c"))
                },
                0,
            ),
            Call::new(&Write::new("t:{a}:s", WriteOp::Put, Some(b"a2")), 0),
            Call::new(&Write::new("t:{b}:s", WriteOp::Put, Some(b"b2")), 0),
            Call::new(&Write::new("t:{a}:s", WriteOp::Put, Some(b"a3")), 0),
        ];
        let results = scripts.run_direct(&pool, 0, &calls, Combine::up_to(64)).await;
        let versions: Vec<String> = results.iter().map(outcome).collect();
        assert_eq!(versions, ["int(1)", "int(2)", "int(2)", "int(3)"], "{denied}");
        assert_eq!(scripts.stats().bundles, 1, "{denied}");
        for (key, version, value) in [("t:{c}:s", "1", "c"), ("t:{a}:s", "3", "a3"), ("t:{b}:s", "2", "b2")] {
            assert_eq!(server.record(key, "version"), version, "{denied}: {key}");
            assert_eq!(server.record(key, "value"), value, "{denied}: {key}");
        }
    }
}

#[tokio::test]
async fn a_refused_bundle_never_applies_a_call_after_a_later_call_of_its_entity() {
    let (server, scripts, pool) = limited_user().await;
    // Bundles of two: [x first, a denied key], then [x second, y] runs. The first bundle is refused
    // as a whole; x's first put must not be applied after its second, y's runs once.
    let writes = [
        ("t:{x}:s", "first"),
        ("x:{d}:s", "denied"),
        ("t:{x}:s", "second"),
        ("t:{y}:s", "y"),
        ("t:{z}:s", "z"),
        ("x:{d}:s", "denied again"),
    ];
    let calls: Vec<_> = writes
        .iter()
        .map(|(key, value)| Call::new(&Write::new(key, WriteOp::Put, Some(value.as_bytes())), 0))
        .collect();
    let results = scripts.run_direct(&pool, 0, &calls, Combine::up_to(2)).await;
    assert_eq!(scripts.stats().bundles, 3);
    assert!(
        matches!(&results[0], Err(Error::Server { message }) if message.contains("not applied")),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Err(Error::NoPermission { .. })),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(results[3].is_ok(), "{:?}", results[3]);
    // z's bundle was refused too and no later call of z ran: z is sent again and applied.
    assert!(results[4].is_ok(), "{:?}", results[4]);
    assert!(
        matches!(results[5], Err(Error::NoPermission { .. })),
        "{:?}",
        results[5]
    );
    assert_eq!(server.record("t:{x}:s", "value"), "second");
    assert_eq!(server.record("t:{x}:s", "version"), "1", "x was written once");
    assert_eq!(server.record("t:{y}:s", "version"), "1");
    assert_eq!(server.record("t:{z}:s", "value"), "z");
}

/// Redis checks `maxmemory` once per script, before its first write: in a bundle of `many`, a
/// delete used to be that write, and the put after it then wrote past `maxmemory`.
#[tokio::test]
async fn over_maxmemory_a_bundle_refuses_what_each_call_alone_would_be_refused() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let t = pool.response_timeout();
    server.write_record("t:{c}:s", 1, "", "x");
    server.write_record("t:{d}:s", 1, "", "x");
    assert_eq!(server.cli(&["DEBUG", "POPULATE", "20000", "fill", "100"]), "OK");
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "OK");
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1mb"]), "OK");

    // Alone: the put is refused, the delete (which frees memory) is not.
    let mut conn = pool.shared().await.expect("conn");
    let put = |key| Write::new(key, WriteOp::Put, Some(b"v"));
    match scripts.invoke(&mut conn, &put("t:{a}:s"), t).await {
        Err(Error::Unavailable { message }) => assert!(message.starts_with("OOM"), "{message}"),
        other => panic!("a put alone over maxmemory: expected Unavailable, got {other:?}"),
    }

    // In bundles: the same answers, call by call.
    let calls = vec![
        Call::new(&Write::new("t:{c}:s", WriteOp::Delete { expected: 1 }, None), 0),
        Call::new(&put("t:{c}:s"), 0),
        Call::new(&Write::new("t:{d}:s", WriteOp::Delete { expected: 1 }, None), 0),
        Call::new(&put("t:{d}:s"), 0),
    ];
    let results = scripts.run_direct(&pool, 0, &calls, Combine::up_to(2)).await;
    assert_eq!(scripts.stats().bundles, 2);
    for (i, result) in results.into_iter().enumerate() {
        if i % 2 == 0 {
            let reply = result.expect("delete");
            assert_eq!(
                WRITE_PARSER.parse(reply).expect("parse").result,
                WriteResult::Applied(0)
            );
        } else {
            assert!(
                matches!(&result, Err(Error::Unavailable { message }) if message.starts_with("OOM")),
                "call {i}, a put after a delete in one bundle: {result:?}"
            );
        }
    }
    for key in ["t:{a}:s", "t:{c}:s", "t:{d}:s"] {
        assert_eq!(server.cli(&["EXISTS", key]), "0", "{key} was written past maxmemory");
    }

    // Under maxmemory again, bundles write as before.
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let results = scripts
        .run_direct(&pool, 0, &[calls[1].clone(), calls[3].clone()], Combine::up_to(2))
        .await;
    for result in results {
        assert_eq!(
            WRITE_PARSER.parse(result.expect("put")).expect("parse").result,
            WriteResult::Applied(1)
        );
    }
}

/// A connection to a real server that fails the `SCRIPT LOAD` of one script, as a broken
/// link or a timeout would.
struct FailingLoad<C> {
    conn: C,
    script: &'static stateful_redis_scripts::Script,
}

impl<C: redis::aio::ConnectionLike + Send> redis::aio::ConnectionLike for FailingLoad<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        let source = self.script.source().as_bytes();
        let is_its_load = cmd
            .args_iter()
            .any(|arg| matches!(arg, redis::Arg::Simple(a) if a == source));
        if is_its_load {
            return Box::pin(async {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "load failed (injected)",
                )))
            });
        }
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// After NOSCRIPT for two scripts, the reload of one fails: its calls fail, and the calls of
/// the other are sent again and answered with their own replies (the resend once carried the
/// failed calls too, got more replies than calls, and failed calls that had applied).
#[tokio::test]
async fn a_failed_reload_fails_only_its_own_calls_on_a_redis_rs_link() {
    let server = RedisServer::start();
    let (pool, scripts) = setup(&server).await;
    let conn = pool.shared().await.expect("conn");
    let mut conn = FailingLoad {
        conn,
        script: &stateful_redis_scripts::RELEASE,
    };
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]), "OK");
    let calls = vec![
        (&WRITE, Write::new("t:{a}:s", WriteOp::Put, Some(b"x")).command()),
        (
            &stateful_redis_scripts::RELEASE,
            Release {
                lease: "t:{b}:l",
                token: 1,
                owner: "me",
            }
            .command(),
        ),
        (&WRITE, Write::new("t:{c}:s", WriteOp::Put, Some(b"x")).command()),
    ];
    let results = scripts
        .invoke_pipeline(&mut conn, calls, pool.response_timeout())
        .await
        .expect("pipeline");
    assert!(matches!(results[1], Err(Error::Connection { .. })), "{:?}", results[1]);
    for (i, result) in results.into_iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let reply = result.unwrap_or_else(|e| panic!("write {i} was applied: {e}"));
        assert_eq!(
            WRITE_PARSER.parse(reply).expect("parse").result,
            WriteResult::Applied(1)
        );
    }
    assert_eq!(server.record("t:{a}:s", "version"), "1");
    assert_eq!(server.record("t:{c}:s", "version"), "1");
}
