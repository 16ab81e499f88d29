//! What `check` reads from each server: version, settings, scripts, and the permissions of
//! the connected user, in two pipelines per server.

use stateful_redis::redis::{self, Value};
use stateful_redis::{ACL_COMMANDS, Error, Pool, Reply, SCRIPTS};

/// A setting as read from one server, or why it could not be read.
pub(crate) type Read<T> = Result<T, String>;

/// Everything `check` learned from one server (a cluster master, or the standalone server).
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerFacts {
    /// `host:port`.
    pub(crate) address: String,
    /// Why the server could not be asked anything; the rest is empty then.
    pub(crate) unreachable: Option<String>,
    /// `redis_version` of `INFO server`.
    pub(crate) version: Option<String>,
    pub(crate) maxmemory_policy: Option<Read<String>>,
    pub(crate) appendonly: Option<Read<bool>>,
    pub(crate) appendfsync: Option<Read<String>>,
    /// `save`: the RDB snapshot schedule, empty for none.
    pub(crate) save: Option<Read<String>>,
    /// How many of the scripts the server had cached before the check loaded them.
    pub(crate) scripts_cached: Option<Read<usize>>,
    /// A script the server refused to load, with its reason (not for lack of permission).
    pub(crate) script_errors: Vec<(&'static str, String)>,
    /// Why this user may not load the scripts (`SCRIPT LOAD` refused), if so.
    pub(crate) scripts_refused: Option<String>,
    /// Each ACL rule of [`ACL_COMMANDS`] and what the probe found.
    pub(crate) permissions: Vec<(String, Permission)>,
    /// The digest of the loaded permission probe.
    pub(super) probe: Option<String>,
}

/// Whether the connected user may run one command the scripts need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Permission {
    Granted,
    Denied,
    /// The probe could not tell, and why.
    NotVerified(String),
}

impl Permission {
    /// What a call in the probe script answered: the ACL check comes before anything
    /// else that can refuse the call (no-writes, cluster slots, bad arguments), so every
    /// answer but a refusal to run the command means the command is granted. Refusing the
    /// key means the command itself is granted (the key is the probe's, not the app's).
    fn of_probe_reply(reply: &str) -> Self {
        if reply.contains("can't run this command") {
            Permission::Denied
        } else if [
            "Wrong number of args",
            "not allowed from script",
            "Unknown Redis command",
        ]
        .iter()
        .any(|m| reply.contains(m))
        {
            Permission::NotVerified(reply.to_owned())
        } else {
            Permission::Granted
        }
    }
}

/// The key the probe names in its calls; nothing is written to it (the probe may not write)
/// and reading it reads nothing.
const PROBE_KEY: &str = "stateful-redis:check:{probe}";

/// Runs each of `ARGV` (words separated by spaces) as this user and answers, for each, `ok`
/// or the error. `no-writes`: a write command stops at "Write commands are not allowed from
/// read-only scripts", which the server checks after the ACL, so nothing is written.
/// (Not `redis.acl_check_cmd`: Redis 7.0 crashes on it for a key command without a key.)
const PROBE_SCRIPT: &str = "#!lua flags=no-writes,allow-stale
local out = {}
for i, form in ipairs(ARGV) do
  local args = {}
  for word in string.gmatch(form, '%S+') do args[#args + 1] = word end
  local r = redis.pcall(unpack(args))
  if type(r) == 'table' and r.err then out[i] = r.err else out[i] = 'ok' end
end
return out
";

/// Arguments that make a probe call well-formed, by command (`K` is [`PROBE_KEY`]);
/// commands not listed take none. A command added to `ACL_COMMANDS` that takes arguments
/// needs its line here, or it shows as not verified (wrong number of args), which the
/// CLI's check test catches.
const PROBE_ARGS: &[(&str, &str)] = &[
    ("select", "x"),
    ("del", "K"),
    ("get", "K"),
    ("getrange", "K 0 1"),
    ("set", "K v"),
    ("mget", "K"),
    ("mset", "K v"),
    ("incr", "K"),
    ("pttl", "K"),
    ("pexpire", "K 1"),
    ("hget", "K f"),
    ("hset", "K f v"),
    ("hdel", "K f"),
    ("zadd", "K 1 m"),
    ("zcard", "K"),
    ("zcount", "K 0 1"),
    ("zscore", "K m"),
    ("zrange", "K 0 1"),
    ("zrangebyscore", "K 0 1"),
    ("zremrangebyscore", "K 0 1"),
    ("zremrangebyrank", "K 0 1"),
    ("setrange", "K 0 x"),
    ("info", "memory"),
    ("scan", "0"),
];

/// The commands of [`ACL_COMMANDS`] (`+script|load` is `script|load`).
pub(crate) fn needed_commands() -> Vec<String> {
    ACL_COMMANDS
        .split_whitespace()
        .filter_map(|rule| rule.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

/// The probe call of one ACL rule: `script|load` → `script load`, plus its arguments.
fn probe_form(rule: &str) -> String {
    let mut form = rule.replace('|', " ");
    if let Some((_, args)) = PROBE_ARGS.iter().find(|(name, _)| *name == rule) {
        form.push(' ');
        form.push_str(&args.replace('K', PROBE_KEY));
    }
    form
}

/// Rules the probe script cannot call and that its own run proves: `SCRIPT LOAD` loaded it,
/// `EVALSHA` ran it.
const PROVEN_BY_THE_PROBE: [&str; 2] = ["script|load", "evalsha"];

// Positions in the first pipeline.
const INFO_SERVER: usize = 0;
const INFO_MEMORY: usize = 1;
const INFO_PERSISTENCE: usize = 2;
const CONFIG_POLICY: usize = 3;
const CONFIG_APPENDONLY: usize = 4;
const CONFIG_APPENDFSYNC: usize = 5;
const CONFIG_SAVE: usize = 6;
const SCRIPT_EXISTS: usize = 7;
const PROBE_LOAD: usize = 8;
const SCRIPT_LOADS: usize = 9;

fn first_pipeline() -> Vec<redis::Cmd> {
    let mut cmds = Vec::new();
    for section in ["server", "memory", "persistence"] {
        cmds.push(redis::cmd("INFO").arg(section).clone());
    }
    for setting in ["maxmemory-policy", "appendonly", "appendfsync", "save"] {
        cmds.push(redis::cmd("CONFIG").arg("GET").arg(setting).clone());
    }
    let mut exists = redis::cmd("SCRIPT");
    exists.arg("EXISTS");
    for script in SCRIPTS {
        exists.arg(script.sha());
    }
    cmds.push(exists);
    cmds.push(redis::cmd("SCRIPT").arg("LOAD").arg(PROBE_SCRIPT).clone());
    // Loading the scripts is what every executor does on connect; here it shows they
    // compile on this server.
    cmds.extend(SCRIPTS.iter().map(|script| script.load_command()));
    cmds
}

/// Asks every server (the standalone one, or every master) what `check` judges.
pub(crate) async fn gather(pool: &Pool) -> Vec<ServerFacts> {
    let rules = needed_commands();
    let first = pool.to_each_server(&first_pipeline()).await;
    let mut facts: Vec<ServerFacts> = first
        .into_iter()
        .map(|(address, r)| facts_of(address, r, &rules))
        .collect();
    // The probe's digest, from a server that loaded it (the same on all).
    let probe_sha = facts.iter().find_map(|f| f.probe_sha().map(str::to_owned));
    if let Some(sha) = probe_sha {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&sha).arg(0);
        let asked: Vec<&String> = rules
            .iter()
            .filter(|rule| !PROVEN_BY_THE_PROBE.contains(&rule.as_str()))
            .collect();
        for rule in &asked {
            evalsha.arg(probe_form(rule));
        }
        for (address, replies) in pool.to_each_server(std::slice::from_ref(&evalsha)).await {
            if let Some(f) = facts.iter_mut().find(|f| f.address == address && f.probe_loaded()) {
                f.take_probe_reply(&asked, replies);
            }
        }
    }
    for f in &mut facts {
        f.not_verified("the permission probe did not answer");
    }
    facts
}

fn facts_of(address: String, replies: Result<Vec<Reply>, Error>, rules: &[String]) -> ServerFacts {
    let mut facts = ServerFacts {
        address,
        ..ServerFacts::default()
    };
    let replies = match replies {
        Ok(r) if r.len() == SCRIPT_LOADS + SCRIPTS.len() => r,
        Ok(r) => {
            facts.unreachable = Some(format!(
                "{} replies to {} commands",
                r.len(),
                SCRIPT_LOADS + SCRIPTS.len()
            ));
            return facts;
        }
        Err(e) => {
            facts.unreachable = Some(e.to_string());
            return facts;
        }
    };
    let info = |i: usize| -> Read<String> {
        match &replies[i] {
            Ok(value) => text(value).ok_or_else(|| format!("INFO answered {value:?}")),
            Err(message) => Err(message.clone()),
        }
    };
    let server = info(INFO_SERVER);
    facts.version = server.as_ref().ok().and_then(|i| info_field(i, "redis_version"));
    let memory = info(INFO_MEMORY);
    let persistence = info(INFO_PERSISTENCE);
    let config = |i: usize| -> Read<String> {
        match &replies[i] {
            // [name, value] (RESP2) or {name: value} (RESP3).
            Ok(Value::Array(pair)) if pair.len() == 2 => text(&pair[1]).ok_or_else(|| format!("{pair:?}")),
            Ok(Value::Map(pairs)) if pairs.len() == 1 => text(&pairs[0].1).ok_or_else(|| format!("{pairs:?}")),
            Ok(other) => Err(format!("CONFIG GET answered {other:?}")),
            Err(message) => Err(message.clone()),
        }
    };
    // CONFIG GET first; INFO when CONFIG is refused (managed Redis, ACL users).
    let from_info = |config: Read<String>, section: &Read<String>, field: &str| -> Read<String> {
        config.or_else(|config_error| match section {
            Ok(info) => info_field(info, field).ok_or_else(|| format!("{config_error}; INFO has no {field}")),
            Err(info_error) => Err(format!("{config_error}; INFO: {info_error}")),
        })
    };
    facts.maxmemory_policy = Some(from_info(config(CONFIG_POLICY), &memory, "maxmemory_policy"));
    facts.appendonly =
        Some(from_info(config(CONFIG_APPENDONLY), &persistence, "aof_enabled").map(|v| v == "yes" || v == "1"));
    facts.appendfsync = Some(config(CONFIG_APPENDFSYNC));
    facts.save = Some(config(CONFIG_SAVE));
    facts.scripts_cached = Some(match &replies[SCRIPT_EXISTS] {
        Ok(Value::Array(flags)) => Ok(flags.iter().filter(|f| matches!(f, Value::Int(1))).count()),
        Ok(other) => Err(format!("SCRIPT EXISTS answered {other:?}")),
        Err(message) => Err(message.clone()),
    });
    for (script, reply) in SCRIPTS.iter().zip(&replies[SCRIPT_LOADS..]) {
        if let Err(message) = reply {
            match stateful_redis::server_error(None, message.clone()) {
                Error::NoPermission { .. } => facts.scripts_refused = Some(message.clone()),
                _ => facts.script_errors.push((script.name(), message.clone())),
            }
        }
    }
    // Unknown until the probe answers (an empty reason: not asked yet).
    facts.permissions = rules
        .iter()
        .map(|r| (r.clone(), Permission::NotVerified(String::new())))
        .collect();
    match &replies[PROBE_LOAD] {
        Ok(value) => {
            facts.set_permission("script|load", Permission::Granted);
            facts.probe = text(value);
        }
        Err(message) => {
            let refused = matches!(
                stateful_redis::server_error(None, message.clone()),
                Error::NoPermission { .. }
            );
            if refused {
                facts.set_permission("script|load", Permission::Denied);
            }
            facts.not_verified(&format!("the permission probe could not be loaded: {message}"));
        }
    }
    facts
}

impl ServerFacts {
    fn probe_sha(&self) -> Option<&str> {
        self.probe.as_deref()
    }

    fn probe_loaded(&self) -> bool {
        self.probe.is_some()
    }

    fn set_permission(&mut self, rule: &str, permission: Permission) {
        if let Some(entry) = self.permissions.iter_mut().find(|(r, _)| r == rule) {
            entry.1 = permission;
        }
    }

    /// Marks every permission not known yet as not verified, for `why`.
    fn not_verified(&mut self, why: &str) {
        for (_, p) in &mut self.permissions {
            if *p == Permission::NotVerified(String::new()) {
                *p = Permission::NotVerified(why.to_owned());
            }
        }
    }

    fn take_probe_reply(&mut self, asked: &[&String], replies: Result<Vec<Reply>, Error>) {
        let reply = match replies {
            Ok(mut r) if r.len() == 1 => r.pop().unwrap_or_else(|| Err("no reply".into())),
            Ok(r) => Err(format!("{} replies to one command", r.len())),
            Err(e) => Err(e.to_string()),
        };
        match reply {
            Ok(Value::Array(answers)) if answers.len() == asked.len() => {
                self.set_permission("evalsha", Permission::Granted);
                for (rule, answer) in asked.iter().zip(&answers) {
                    let answer = text(answer).unwrap_or_default();
                    self.set_permission(rule, Permission::of_probe_reply(&answer));
                }
            }
            Ok(other) => self.not_verified(&format!("the permission probe answered {other:?}")),
            Err(message) => {
                if matches!(
                    stateful_redis::server_error(None, message.clone()),
                    Error::NoPermission { .. }
                ) {
                    self.set_permission("evalsha", Permission::Denied);
                }
                self.not_verified(&format!("the permission probe could not run: {message}"));
            }
        }
    }
}

/// A string reply as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        _ => None,
    }
}

/// `field:value` of an `INFO` section.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_replies_tell_a_refused_command_from_other_errors() {
        let denied = "ERR The user executing the script can't run this command or subcommand";
        assert_eq!(Permission::of_probe_reply(denied), Permission::Denied);
        for granted in [
            "ok",
            "ERR Write commands are not allowed from read-only scripts.",
            "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments",
            "ERR This instance has cluster support disabled",
            "ERR value is not an integer or out of range",
        ] {
            assert_eq!(Permission::of_probe_reply(granted), Permission::Granted, "{granted}");
        }
        assert!(matches!(
            Permission::of_probe_reply("ERR Wrong number of args calling Redis command from script"),
            Permission::NotVerified(_)
        ));
    }

    #[test]
    fn probe_forms_and_info_fields() {
        let rules = needed_commands();
        assert!(rules.iter().any(|r| r == "script|load"), "{rules:?}");
        assert_eq!(probe_form("script|load"), "script load");
        assert_eq!(probe_form("hset"), format!("hset {PROBE_KEY} f v"));
        assert_eq!(
            info_field("# Server\r\nredis_version:7.0.15\r\n", "redis_version").as_deref(),
            Some("7.0.15")
        );
    }
}
