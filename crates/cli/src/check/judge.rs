//! What the facts `check` read mean for the guarantees: findings, each ok, a warning, or a
//! risk to a named guarantee with how to fix it.

use stateful_redis::EvictionPolicy;

use super::probe::{Permission, Read, ServerFacts};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    /// Exit 0, but worth knowing.
    Warning,
    /// A guarantee is at risk: exit non-zero.
    Risk,
}

/// One thing `check` found.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Finding {
    pub(crate) level: Level,
    /// What was checked: `connectivity`, `version`, `maxmemory-policy`, `persistence`,
    /// `acl`, `scripts`, `slots`.
    pub(crate) check: &'static str,
    /// The server it is about (`host:port`), if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<String>,
    /// The guarantee at risk or weakened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) guarantee: Option<&'static str>,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

impl Finding {
    fn new(level: Level, check: &'static str, server: &str, message: impl Into<String>) -> Self {
        Self {
            level,
            check,
            server: Some(server.to_owned()),
            guarantee: None,
            message: message.into(),
            fix: None,
        }
    }

    fn guarantee(mut self, guarantee: &'static str) -> Self {
        self.guarantee = Some(guarantee);
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

const LEASES_AND_IDS: &str = "leases (one holder) and apply_once (at most once)";
const EVERY: &str = "leases, fencing, apply_once and acknowledged writes";
const DURABILITY: &str = "acknowledged writes, fences and message ids survive a crash";

/// The findings about one server.
pub(crate) fn judge_server(facts: &ServerFacts) -> Vec<Finding> {
    let at = facts.address.as_str();
    if let Some(why) = &facts.unreachable {
        return vec![
            Finding::new(Level::Risk, "connectivity", at, format!("cannot be asked: {why}"))
                .guarantee(EVERY)
                .fix("make the server reachable from here (address, firewall, TLS, password)"),
        ];
    }
    let mut findings = Vec::new();
    findings.push(version(at, facts.version.as_deref()));
    findings.push(maxmemory_policy(at, facts.maxmemory_policy.as_ref()));
    findings.push(persistence(at, facts));
    findings.extend(permissions(at, &facts.permissions));
    findings.push(scripts(at, facts));
    findings
}

fn version(at: &str, version: Option<&str>) -> Finding {
    let Some(version) = version else {
        return Finding::new(Level::Warning, "version", at, "not verified: INFO server refused")
            .fix("run check as a user with +info to see it");
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    if major < 7 {
        Finding::new(
            Level::Warning,
            "version",
            at,
            format!(
                "Redis {version} is older than 7.0, the oldest release stateful-redis is tested on \
                 (and the permission probe of this check needs 7.0)"
            ),
        )
        .fix("upgrade to Redis 7.0 or later")
    } else {
        Finding::new(Level::Ok, "version", at, format!("Redis {version}"))
    }
}

fn maxmemory_policy(at: &str, policy: Option<&Read<String>>) -> Finding {
    const FIX: &str = "CONFIG SET maxmemory-policy noeviction (and in redis.conf); \
                       at maxmemory, writes then fail with OOM, which the executor reports as unavailable";
    match policy {
        // What a policy breaks is the executor's own judgement (the one `build()` refuses by).
        Some(Ok(p)) => {
            let policy = EvictionPolicy::new(at, p.as_str());
            if policy.keeps_every_key() {
                return Finding::new(
                    Level::Ok,
                    "maxmemory-policy",
                    at,
                    "noeviction: no key is ever evicted (at maxmemory, writes fail instead)",
                );
            }
            let guarantee = if p.starts_with("volatile-") {
                LEASES_AND_IDS
            } else {
                EVERY
            };
            Finding::new(
                Level::Risk,
                "maxmemory-policy",
                at,
                format!("{p}: {}", policy.what_it_breaks()),
            )
            .guarantee(guarantee)
            .fix(FIX)
        }
        Some(Err(_)) | None => {
            let why = why_of(policy);
            Finding::new(Level::Warning, "maxmemory-policy", at, format!("not verified: {why}"))
                .guarantee(EVERY)
                .fix("run check as a user with +config|get or +info, or confirm the policy is noeviction")
        }
    }
}

fn why_of<T>(read: Option<&Read<T>>) -> String {
    match read {
        Some(Err(why)) => why.clone(),
        _ => "not read".into(),
    }
}

fn persistence(at: &str, facts: &ServerFacts) -> Finding {
    let warn = |message: String, fix: &str| {
        Finding::new(Level::Warning, "persistence", at, message)
            .guarantee(DURABILITY)
            .fix(fix)
    };
    const AOF_ALWAYS: &str = "CONFIG SET appendonly yes; CONFIG SET appendfsync always (and in redis.conf)";
    let save = match &facts.save {
        Some(Ok(s)) => Some(s.trim().to_owned()),
        _ => None,
    };
    match facts.appendonly.as_ref() {
        Some(Ok(true)) => match facts.appendfsync.as_ref() {
            Some(Ok(f)) if f == "always" => Finding::new(
                Level::Ok,
                "persistence",
                at,
                "AOF with appendfsync always: every acknowledged write is on disk",
            ),
            Some(Ok(f)) if f == "everysec" => warn(
                "AOF with appendfsync everysec: a crash of the server's host can lose the last second of \
                 acknowledged writes; an apply_once whose message id was lost can apply again on redelivery"
                    .into(),
                "CONFIG SET appendfsync always, if a second of lost writes is not acceptable",
            ),
            Some(Ok(f)) => warn(
                format!(
                    "AOF with appendfsync {f}: the OS decides when writes reach the disk; a crash of the host \
                     can lose acknowledged writes (tens of seconds), fences and message ids"
                ),
                AOF_ALWAYS,
            ),
            other => warn(
                format!("AOF on; appendfsync not verified: {}", why_of(other)),
                "run check as a user with +config|get, or confirm appendfsync always",
            ),
        },
        Some(Ok(false)) => match save {
            Some(s) if s.is_empty() => warn(
                "no persistence (appendonly no, no RDB save): a restart loses everything, acknowledged \
                 writes and fence counters included; treat the state as a cache"
                    .into(),
                AOF_ALWAYS,
            ),
            Some(s) => warn(
                format!(
                    "RDB snapshots only (save {s}): a crash loses the writes since the last snapshot, \
                     fences and message ids included (an old fence token could write again, a redelivered \
                     message apply again)"
                ),
                AOF_ALWAYS,
            ),
            None => warn(
                format!(
                    "appendonly no; RDB schedule not verified ({}): at best a crash loses the writes since \
                     the last snapshot",
                    why_of(facts.save.as_ref())
                ),
                AOF_ALWAYS,
            ),
        },
        other => warn(
            format!("not verified: {}", why_of(other)),
            "run check as a user with +config|get or +info",
        ),
    }
}

fn permissions(at: &str, permissions: &[(String, Permission)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let denied: Vec<&str> = permissions
        .iter()
        .filter(|(_, p)| *p == Permission::Denied)
        .map(|(rule, _)| rule.as_str())
        .collect();
    if !denied.is_empty() {
        let rules: Vec<String> = denied.iter().map(|r| format!("+{r}")).collect();
        findings.push(
            Finding::new(
                Level::Risk,
                "acl",
                at,
                format!(
                    "this user may not run {}: the scripts call these, so operations fail",
                    denied.join(", ")
                ),
            )
            .guarantee("every operation")
            .fix(format!("ACL SETUSER <user> {}", rules.join(" "))),
        );
    }
    let mut unverified: Vec<(&str, &str)> = permissions
        .iter()
        .filter_map(|(rule, p)| match p {
            Permission::NotVerified(why) => Some((rule.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    if !unverified.is_empty() {
        let why = unverified[0].1.to_owned();
        unverified.sort_unstable();
        let rules: Vec<&str> = unverified.iter().map(|(r, _)| *r).collect();
        findings.push(
            Finding::new(
                Level::Warning,
                "acl",
                at,
                format!("not verified: {} ({why})", rules.join(", ")),
            )
            .fix("grant stateful_redis::ACL_COMMANDS to the user (see its docs)"),
        );
    }
    if findings.is_empty() {
        findings.push(Finding::new(
            Level::Ok,
            "acl",
            at,
            format!("this user may run all {} commands the scripts need", permissions.len()),
        ));
    }
    findings
}

fn scripts(at: &str, facts: &ServerFacts) -> Finding {
    if !facts.script_errors.is_empty() {
        let errors: Vec<String> = facts
            .script_errors
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        return Finding::new(
            Level::Risk,
            "scripts",
            at,
            format!("the server does not load the scripts: {}", errors.join("; ")),
        )
        .guarantee("every operation")
        .fix("use Redis 7.0 or later with Lua scripting enabled");
    }
    let total = stateful_redis::SCRIPTS.len();
    if let Some(why) = &facts.scripts_refused {
        return Finding::new(Level::Warning, "scripts", at, format!("not verified: {why}"))
            .fix("grant +script|load (see acl)");
    }
    let cached = match &facts.scripts_cached {
        Some(Ok(n)) => format!("{n} of {total} were cached before"),
        _ => "SCRIPT EXISTS not allowed".to_owned(),
    };
    Finding::new(
        Level::Ok,
        "scripts",
        at,
        format!("all {total} scripts load ({cached}; every executor loads them on connect)"),
    )
}

/// Slot coverage of a cluster: `uncovered` slots no master serves.
pub(crate) fn slots(uncovered: u32, masters: usize) -> Finding {
    let total = SLOTS;
    if uncovered == 0 {
        Finding {
            level: Level::Ok,
            check: "slots",
            server: None,
            guarantee: None,
            message: format!("all {total} slots are served, by {masters} masters"),
            fix: None,
        }
    } else {
        Finding {
            level: Level::Risk,
            check: "slots",
            server: None,
            guarantee: Some("every operation on the entities of those slots"),
            message: format!(
                "{uncovered} of {total} slots are served by no master: their entities cannot be read or written"
            ),
            fix: Some("assign the slots (redis-cli --cluster fix) or bring their master back".into()),
        }
    }
}

/// Slots in a Redis Cluster.
const SLOTS: u32 = 16384;

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(policy: &str, aof: bool, fsync: &str, save: &str) -> ServerFacts {
        ServerFacts {
            address: "h:1".into(),
            version: Some("7.2.4".into()),
            maxmemory_policy: Some(Ok(policy.into())),
            appendonly: Some(Ok(aof)),
            appendfsync: Some(Ok(fsync.into())),
            save: Some(Ok(save.into())),
            scripts_cached: Some(Ok(0)),
            permissions: vec![("get".into(), Permission::Granted)],
            ..ServerFacts::default()
        }
    }

    fn level_of(findings: &[Finding], check: &str) -> Level {
        findings
            .iter()
            .filter(|f| f.check == check)
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    #[test]
    fn eviction_policies_other_than_noeviction_put_guarantees_at_risk() {
        let ok = judge_server(&facts("noeviction", true, "always", ""));
        assert!(ok.iter().all(|f| f.level == Level::Ok), "{ok:?}");
        for policy in ["volatile-lru", "volatile-ttl", "allkeys-lru", "allkeys-random"] {
            let found = judge_server(&facts(policy, true, "always", ""));
            assert_eq!(level_of(&found, "maxmemory-policy"), Level::Risk, "{policy}");
        }
        let fences = judge_server(&facts("allkeys-lfu", true, "always", ""));
        assert!(fences.iter().any(|f| f.message.contains("fence")), "{fences:?}");
    }

    #[test]
    fn weak_persistence_warns() {
        for (aof, fsync, save) in [
            (true, "everysec", ""),
            (true, "no", ""),
            (false, "always", "3600 1"),
            (false, "always", ""),
        ] {
            let found = judge_server(&facts("noeviction", aof, fsync, save));
            assert_eq!(
                level_of(&found, "persistence"),
                Level::Warning,
                "{aof} {fsync} {save:?}"
            );
        }
        let mut unknown = facts("noeviction", true, "always", "");
        unknown.maxmemory_policy = Some(Err("NOPERM".into()));
        assert_eq!(level_of(&judge_server(&unknown), "maxmemory-policy"), Level::Warning);
        let mut old = facts("noeviction", true, "always", "");
        old.version = Some("6.2.14".into());
        assert_eq!(level_of(&judge_server(&old), "version"), Level::Warning);
    }

    #[test]
    fn a_denied_command_is_named() {
        let mut f = facts("noeviction", true, "always", "");
        f.permissions.push(("hset".into(), Permission::Denied));
        let found = judge_server(&f);
        let acl = found.iter().find(|f| f.check == "acl").expect("acl finding");
        assert_eq!(acl.level, Level::Risk);
        assert!(acl.message.contains("hset") && acl.fix.as_deref().is_some_and(|f| f.contains("+hset")));
    }
}
