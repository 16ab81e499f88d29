//! Exactly-once handling of at-least-once messages: each credit to an account is applied with
//! `apply_once` under its message id, so a redelivered message (the consumer crashed before it
//! acknowledged, or two consumers got the same message) changes nothing and is reported
//! `replayed: true` with the first outcome.
//!
//! Run it with `cargo run -p stateful-redis --example exactly_once [REDIS_URL]`; without a URL
//! (argument or `REDIS_URL`) it starts a throw-away `redis-server` of its own.

#![allow(clippy::print_stdout, reason = "an example shows what it does on stdout")]

mod common;

use serde::{Deserialize, Serialize};
use stateful_redis::{Applied, Change, Error, SerdeCodec, StateHandle, StatefulExecutor, Version};

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Account {
    balance: i64,
    credits: u32,
}

/// A message as a queue delivers it: at least once, each with the id its producer gave it.
struct Credit {
    id: &'static str,
    account: &'static str,
    amount: i64,
}

/// Applies a credit once per message id: the new balance is written at the version it was
/// computed from, and the write and the record of the id happen in one script. A conflict is
/// an outcome too (a redelivery gets it again), so each account's messages go to one consumer
/// at a time, as a partitioned queue delivers them.
async fn handle(accounts: &StateHandle<Account, SerdeCodec>, credit: &Credit) -> Result<Applied, Error> {
    let (version, mut account) = match accounts.get(credit.account).await? {
        Some(current) => (current.version, current.value),
        None => (Version::NONE, Account::default()),
    };
    account.balance += credit.amount;
    account.credits += 1;
    accounts
        .apply_once(credit.account, credit.id, Change::Cas(version, &account))
        .await
}

fn outcome(applied: &Applied) -> String {
    match applied.replayed {
        false => format!("applied at {}", applied.version),
        true => format!("replayed, nothing changed (first applied at {})", applied.version),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::Redis::given_or_started()?;
    let executor = StatefulExecutor::builder().config(redis.config()).build().await?;
    let accounts = executor.state::<Account>(&common::namespace("accounts"))?;

    let m1 = Credit {
        id: "msg-1",
        account: "acct-42",
        amount: 10,
    };
    let m2 = Credit {
        id: "msg-2",
        account: "acct-42",
        amount: 5,
    };
    let m3 = Credit {
        id: "msg-3",
        account: "acct-42",
        amount: 20,
    };
    // The consumer crashed after applying msg-1 but before acknowledging it: it comes again.
    let mut replays = 0;
    for credit in [&m1, &m2, &m1] {
        let applied = handle(&accounts, credit).await?;
        println!("{} (+{}): {}", credit.id, credit.amount, outcome(&applied));
        replays += u32::from(applied.replayed);
    }
    assert_eq!(replays, 1, "the redelivered msg-1 is a replay");

    // Two consumers get msg-3 at the same time: one applies it, the other sees a replay.
    let (first, second) = tokio::join!(handle(&accounts, &m3), handle(&accounts, &m3));
    let (first, second) = (first?, second?);
    println!(
        "msg-3 on two consumers at once: {}; {}",
        outcome(&first),
        outcome(&second)
    );
    assert!(first.replayed != second.replayed, "exactly one of them applied msg-3");
    assert_eq!(first.version, second.version, "the replay reports the first outcome");

    let account = accounts.get("acct-42").await?.ok_or("acct-42 is missing")?;
    println!(
        "acct-42: balance {} from {} credits, at {}",
        account.value.balance, account.value.credits, account.version
    );
    assert_eq!((account.value.balance, account.value.credits), (35, 3));
    assert_eq!(account.version, Version(3));

    executor.shutdown().await;
    Ok(())
}
