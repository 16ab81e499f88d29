//! `stateful-redis check`: whether a Redis deployment keeps stateful-redis's guarantees, and
//! a verdict (non-zero exit when one is at risk).

mod judge;
mod probe;

use stateful_redis::{Error, Pool, RedisUrl};

use self::judge::{Finding, Level};
use crate::failure::{Failure, Kind};

/// Options of `check` (what it checks is its `--help`, in main.rs).
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Redis URL to check, as the application connects (its user and password; the password
    /// never shows). With --cluster, one or more seed nodes separated by commas.
    #[arg(long)]
    redis: Option<String>,
    /// Check a Redis Cluster (the nodes of --redis are seeds to learn it from).
    #[arg(long)]
    cluster: bool,
    /// A TOML configuration file (its redis section); the environment and the flags go over it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Print one JSON object on stdout instead of the text report (errors: one JSON line on
    /// stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// Every guarantee holds as far as the check can see.
    Ok,
    /// Nothing at risk, but something weakens a guarantee or could not be verified.
    Warnings,
    /// At least one guarantee is at risk.
    AtRisk,
}

/// What `check` prints.
#[derive(Debug, serde::Serialize)]
struct Report {
    verdict: Verdict,
    /// The URL checked, password redacted.
    redis: String,
    /// `standalone` or `cluster`.
    topology: &'static str,
    /// The servers asked: the standalone server, or every master.
    servers: Vec<String>,
    findings: Vec<Finding>,
}

pub(crate) async fn run(args: CheckArgs) -> Result<(), Failure> {
    let mut config = stateful_redis::load_config(args.config.as_deref())?;
    config.redis.cluster |= args.cluster;
    let configured = args.config.is_some() || std::env::var_os("STATEFUL_REDIS_REDIS__URL").is_some();
    match &args.redis {
        Some(urls) if config.redis.cluster => {
            let mut urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
            config.redis.url = RedisUrl::new(urls.next().unwrap_or_default());
            config.redis.seeds = urls.map(RedisUrl::new).collect();
        }
        Some(url) => config.redis.url = RedisUrl::new(url.clone()),
        None if configured => {}
        None => {
            return Err(Failure::config(
                "check needs the server to check: --redis URL (or --config FILE, or STATEFUL_REDIS_REDIS__URL); \
                 a throw-away server would say nothing about yours",
            ));
        }
    }
    config.validate().map_err(Error::Config)?;
    let shown = config.redis.url.redacted();
    let topology = if config.redis.cluster { "cluster" } else { "standalone" };
    let mut unreachable = None;
    let report = match Pool::connect(&config.redis, Vec::new()).await {
        Ok(pool) => {
            let report = check(&pool, shown, topology).await;
            pool.close();
            report
        }
        Err(e @ Error::Config(_)) => return Err(e.into()),
        Err(e) => {
            let check = if matches!(e, Error::Auth { .. }) {
                "auth"
            } else {
                "connectivity"
            };
            let finding = Finding {
                level: Level::Risk,
                check,
                server: None,
                guarantee: None,
                message: format!("cannot connect to {shown}: {e}"),
                fix: Some("check the URL (host, port, user, password, TLS) and that the server is up".into()),
            };
            unreachable = Some(finding.message.clone());
            Report {
                verdict: Verdict::AtRisk,
                redis: shown,
                topology,
                servers: Vec::new(),
                findings: vec![finding],
            }
        }
    };
    print_report(&report, args.json)?;
    if let Some(message) = unreachable {
        return Err(Failure::new(Kind::Connect, anyhow::anyhow!("{message}")));
    }
    if report.verdict == Verdict::AtRisk {
        let risks = report.findings.iter().filter(|f| f.level == Level::Risk).count();
        return Err(Failure::new(
            Kind::Failed,
            anyhow::anyhow!("{risks} finding(s) put a guarantee at risk"),
        ));
    }
    Ok(())
}

async fn check(pool: &Pool, redis: String, topology: &'static str) -> Report {
    let facts = probe::gather(pool).await;
    let mut findings: Vec<Finding> = facts.iter().flat_map(judge::judge_server).collect();
    if let Some(stats) = pool.cluster_stats() {
        findings.push(judge::slots(stats.uncovered_slots, stats.nodes.len()));
    }
    let verdict = match findings.iter().map(|f| f.level).max() {
        Some(Level::Risk) => Verdict::AtRisk,
        Some(Level::Warning) => Verdict::Warnings,
        _ => Verdict::Ok,
    };
    Report {
        verdict,
        redis,
        topology,
        servers: facts.into_iter().map(|f| f.address).collect(),
        findings,
    }
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("check of {} ({})", report.redis, report.topology);
    for f in &report.findings {
        let level = match f.level {
            Level::Ok => "ok     ",
            Level::Warning => "WARNING",
            Level::Risk => "RISK   ",
        };
        let server = f.server.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
        println!("{level}{server} {}: {}", f.check, f.message);
        if let Some(guarantee) = f.guarantee
            && f.level == Level::Risk
        {
            println!("        at risk: {guarantee}");
        }
        if let Some(fix) = &f.fix
            && f.level != Level::Ok
        {
            println!("        fix: {fix}");
        }
    }
    let count = |level| report.findings.iter().filter(|f| f.level == level).count();
    match report.verdict {
        Verdict::Ok => println!("verdict: ok, every guarantee holds as far as this check can see"),
        Verdict::Warnings => println!("verdict: ok with {} warning(s); nothing at risk", count(Level::Warning)),
        Verdict::AtRisk => println!(
            "verdict: AT RISK, {} risk(s), {} warning(s)",
            count(Level::Risk),
            count(Level::Warning)
        ),
    }
    Ok(())
}
