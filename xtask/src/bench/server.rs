//! The throw-away `redis-server` the cases run against, and the CPUs it and the clients are pinned to.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::cases::Written;
use super::value;
use crate::cmd;

/// A throw-away `redis-server` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub(super) struct Server {
    child: Child,
    pub(super) port: u16,
    /// Clock ticks per second of `/proc/<pid>/stat`.
    ticks: f64,
    /// The CPUs the clients run on (`taskset -c` list), when the run is pinned.
    pub(super) clients: Option<String>,
}

/// Which CPUs the server and the clients run on: the server on CPU 0, every client on the
/// others, so that the client never takes the server's core (on 2 cores the scheduler would
/// otherwise put them together now and then, slowing both, and the figures would jump).
#[derive(Debug, Clone)]
pub(super) struct Pinning {
    pub(super) server: String,
    pub(super) clients: String,
}

/// Pinning when the machine has 2 CPUs or more and `taskset` (util-linux) works; `None` (with
/// a note) otherwise, and the processes run where the scheduler puts them.
pub(super) fn pinning() -> Option<Pinning> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus < 2 {
        eprintln!("bench: 1 CPU: the server and the clients are not pinned");
        return None;
    }
    let works = Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("bench: `taskset` (util-linux) does not run here: the server and the clients are not pinned");
        return None;
    }
    Some(Pinning {
        server: "0".to_owned(),
        clients: if cpus == 2 {
            "1".to_owned()
        } else {
            format!("1-{}", cpus - 1)
        },
    })
}

/// `program`, run through `taskset -c <cpus>` when `cpus` is given (taskset execs it: the
/// process, its pid and its rusage are the program's).
pub(super) fn pinned(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Server {
    /// Starts it with its log in `log`, on the CPUs `pinning` gives it, if any.
    pub(super) fn start(log: &Path, pinning: Option<&Pinning>) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port")?
            .port();
        let mut command = pinned("redis-server", pinning.map(|p| p.server.as_str()));
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null());
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command.stdout(file.try_clone()?).stderr(file);
        eprintln!("$ {} > {}", cmd::display(&command), log.display());
        let child = command.spawn().context("starting redis-server")?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100.0, |t| t as f64);
        let mut server = Self {
            child,
            port,
            ticks,
            clients: pinning.map(|p| p.clients.clone()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("redis-server exited at start ({status}):\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && server.cli(&["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` with `args`; its trimmed output.
    pub(super) fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli_with_input(args, None)
    }

    pub(super) fn cli_with_input(&self, args: &[&str], input: Option<&Path>) -> anyhow::Result<String> {
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args);
        match input {
            Some(path) => {
                command.stdin(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
            }
            None => command.stdin(Stdio::null()),
        };
        let out = command.output().context("running redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || text.starts_with("ERR") || text.starts_with("(error)") {
            bail!(
                "`redis-cli {}` failed: {text} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// `SCRIPT LOAD` of the file's exact bytes (`-x` reads the last argument from stdin); the SHA.
    pub(super) fn load_script(&self, path: &Path) -> anyhow::Result<String> {
        let sha = self.cli_with_input(&["-x", "SCRIPT", "LOAD"], Some(path))?;
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("SCRIPT LOAD returned {sha:?}, not a SHA1");
        }
        Ok(sha)
    }

    /// Checks that the run stored what a put stores: a random key holds a record (the layout of
    /// `stateful_redis_core::Record`) of the value at a version of 1 or more. A client that sends
    /// the wrong arguments is caught here even when the script does not answer with an error.
    pub(super) fn check_written(&self, written: Written) -> anyhow::Result<()> {
        let key = self.cli(&["RANDOMKEY"])?;
        if key.is_empty() {
            bail!("the database is empty: nothing was written");
        }
        if written == Written::MinimalHashes {
            let data = self.cli(&["HGET", &key, "d"])?;
            if data != value() {
                bail!("{key} holds d = {data:?}: not the value written");
            }
            return Ok(());
        }
        // The value after the header and status, and the version (bytes 3 to 10).
        const READ: &str = "local r = redis.call('GET', KEYS[1]) \
            return {string.sub(r, 23 + string.byte(r, 2)), string.format('%d', struct.unpack('>I8', r, 3))}";
        let read = self.cli(&["EVAL", READ, "1", &key])?;
        let (data, version) = read.split_once('\n').unwrap_or((&read, ""));
        if data != value() || version.parse::<u64>().map_or(true, |v| v == 0) {
            bail!("{key} holds value {data:?}, version {version:?}: not the value written");
        }
        Ok(())
    }

    pub(super) fn version(&self) -> anyhow::Result<String> {
        let info = self.cli(&["INFO", "server"])?;
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .context("INFO server has no redis_version")
    }

    /// The server's CPU seconds so far (user + system), from `/proc`; `None` where there is none.
    pub(super) fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
