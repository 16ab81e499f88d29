//! Starts real `redis-server` processes on free loopback ports for the integration tests of the
//! stateful-redis crates, and stops them again.
//!
//! Every [`RedisServer`] is its own process with its own temporary directory (configuration,
//! log, certificates). It listens on `127.0.0.1` only, keeps nothing on disk (`save ""`,
//! `appendonly no`) unless built [`persistent`](ServerBuilder::persistent), allows `DEBUG`
//! (tests use `DEBUG SLEEP`) and never daemonizes. Dropping the `RedisServer` kills the
//! process, reaps it and removes the directory. A test process that is
//! itself killed can leave its servers behind; nothing here can prevent that.
//!
//! Readiness is checked over raw TCP (`INFO server`, which also tells whether the answering
//! process is ours), so this crate does not depend on the `redis` crate. [`RedisServer::cli`]
//! runs `redis-cli` for setup and assertions.
//!
//! ```no_run
//! use stateful_redis_test_support::RedisServer;
//!
//! let mut server = RedisServer::builder()
//!     .require_admin_password("admin-secret")
//!     .acl_user("app", "app-secret", "~app:* +@all")
//!     .tls()
//!     .start();
//! assert_eq!(server.cli(&["PING"]), "PONG");
//! let url = server.url(); // "redis://127.0.0.1:{port}", no credentials
//! let tls_url = server.tls_url(); // Some("rediss://127.0.0.1:{tls_port}")
//! # let _ = (url, tls_url);
//!
//! server.stop();
//! server.restart(); // same port(s), same configuration, data gone
//! assert_eq!(server.cli(&["PING"]), "PONG");
//!
//! // An append-only file fsynced before every reply: a crash loses nothing acknowledged.
//! let mut durable = RedisServer::builder().persistent().start();
//! durable.cli(&["SET", "k", "v"]);
//! durable.stop(); // SIGKILL, as in a crash: no clean shutdown
//! durable.restart(); // same port, same directory: the AOF is loaded again
//! assert_eq!(durable.cli(&["GET", "k"]), "v");
//! ```
//!
//! [`RedisCluster`] starts a local Redis Cluster (3 masters and 3 replicas by default) from such
//! servers with `redis-cli --cluster create`, and drives slot migrations and failovers.
//! [`Alertmanager`] starts a real Prometheus Alertmanager (`prometheus-alertmanager`) the same
//! way, for the alerting tests (over TLS too), and [`Prometheus`] a real Prometheus server
//! that scrapes given targets. [`TestCa`] makes a throwaway CA and server certificate.
//!
//! ## Panics
//!
//! This is test support: panicking is how it reports errors, unlike every other crate of the
//! workspace. Starting a server panics when `redis-server` is not on `PATH` (with a hint how to
//! install it), when it does not answer within 10 seconds (with the last lines of its log), and
//! when no free port could be found. [`RedisServer::cli`] panics when `redis-cli` fails.
//!
//! ## Feature flags
//!
//! None.

mod alertmanager;
mod cluster;
mod prometheus;
mod tls;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::tls::TlsFiles;

pub use crate::alertmanager::Alertmanager;
pub use crate::cluster::{ClusterBuilder, ClusterNode, RedisCluster};
pub use crate::prometheus::Prometheus;
pub use crate::tls::TestCa;

const NOT_FOUND: &str = "redis-server not found on PATH: install it with \
    `apt-get install redis-server redis-tools` (cargo xtask test does this when run as root)";
/// How long a server may take to answer after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports `start` tries when the chosen one was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// The server's log, in its temporary directory.
const LOG_FILE: &str = "redis.log";
/// How many lines of the server's log go into a panic message.
const LOG_TAIL_LINES: usize = 30;
/// Settings the harness owns; overriding them with `arg` would break it.
const RESERVED_ARGS: &[&str] = &["bind", "port", "tls-port", "daemonize", "dir", "logfile"];

/// Whether a `redis-server` executable is on `PATH`.
pub fn redis_server_available() -> bool {
    find_on_path("redis-server").is_some()
}

/// A running (or stopped, see [`RedisServer::stop`]) `redis-server` process on a loopback port.
///
/// Dropping it kills the process, waits for it and removes its temporary directory.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    tls: Option<TlsServer>,
    admin_password: Option<String>,
    extra_args: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
}

#[derive(Debug)]
struct TlsServer {
    port: u16,
    files: TlsFiles,
}

/// Configures a [`RedisServer`] before it starts; from [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "a ServerBuilder starts nothing until `.start()`"]
pub struct ServerBuilder {
    users: Vec<AclUser>,
    admin_password: Option<String>,
    tls: bool,
    persistent: bool,
    args: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct AclUser {
    name: String,
    password: String,
    rules: String,
}

impl RedisServer {
    /// Starts a server with the default configuration; the same as `RedisServer::builder().start()`.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// A builder for a server with ACL users, an admin password, TLS or extra arguments.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The plain TCP port on `127.0.0.1`. It stays the same across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`, without credentials.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port, when the server was built with [`ServerBuilder::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|tls| tls.port)
    }

    /// `rediss://127.0.0.1:{tls_port}`, when the server was built with [`ServerBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port().map(|port| format!("rediss://127.0.0.1:{port}"))
    }

    /// PEM of the CA certificate that signed the server certificate, for a client's root store.
    pub fn ca_cert_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|tls| tls.files.ca_cert_pem.as_slice())
    }

    /// The file holding [`ca_cert_pem`](Self::ca_cert_pem), e.g. for `redis-cli --cacert`.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.files.ca_cert_path.as_path())
    }

    /// Kills the process (SIGKILL) and waits for it. The port number and the temporary directory
    /// are kept for [`restart`](Self::restart). Does nothing when the server is not running.
    ///
    /// This is a crash, not a shutdown: the server gets no chance to flush, fsync or save
    /// anything. What a [`persistent`](ServerBuilder::persistent) server acknowledged is on
    /// disk all the same; see [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(child) = child {
            kill_and_reap(child);
        }
    }

    /// Starts the server again on the same port(s) with the same configuration and waits until
    /// it answers. Stops it first if it is still running (SIGKILL, see [`stop`](Self::stop)).
    ///
    /// The server starts in the same directory. By default nothing survives: the server keeps
    /// no data on disk. A [`persistent`](ServerBuilder::persistent) server loads its
    /// append-only file before it answers, so it comes back with every write it acknowledged
    /// (a record cut short by the kill is dropped: `aof-load-truncated` is on by default).
    ///
    /// Retries for up to 10 seconds while the port is still held by something else.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_until_ready(deadline) {
                Attempt::Ready => return,
                Attempt::PortTaken(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Attempt::PortTaken(why) | Attempt::Failed(why) => {
                    self.fail(&format!("restarting redis-server failed: {why}"))
                }
            }
        }
    }

    /// Whether the process is alive. False after [`stop`](Self::stop), and after the server
    /// exited by itself (`SHUTDOWN`, a crash).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` against the plain port and returns its
    /// trimmed stdout. When the server has an admin password, `redis-cli` authenticates as the
    /// default user with it.
    ///
    /// Output is `redis-cli`'s raw format (stdout is not a terminal): `PONG`, `OK`, one line per
    /// array element, an empty string for nil. An error reply is returned as its text
    /// (`ERR unknown command ...`): `redis-cli` 7.0 exits successfully on those.
    ///
    /// # Panics
    ///
    /// When `redis-cli` is not on `PATH` or exits unsuccessfully (e.g. it cannot connect because
    /// the server is stopped); the message holds its stderr and stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let Some(redis_cli) = find_on_path("redis-cli") else {
            panic!("redis-cli not found on PATH: install it with `apt-get install redis-tools`")
        };
        let port = self.port.to_string();
        let mut command = Command::new(redis_cli);
        command.args(["-h", "127.0.0.1", "-p", &port]);
        if let Some(password) = &self.admin_password {
            command.args(["--user", "default", "--pass", password, "--no-auth-warning"]);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        if !output.status.success() {
            panic!(
                "`redis-cli -p {port} {}` failed ({}):\nstderr: {}\nstdout: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim(),
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A field of the state record at `key`, read on the server (the record's layout is
    /// `stateful_redis_core::Record`): `"version"`, `"value"` (the stored, encoded value),
    /// `"status"`, `"fence"` or `"updated"`; `""` when there is no record.
    pub fn record(&self, key: &str, field: &str) -> String {
        self.cli(&["EVAL", RECORD_FIELD_LUA, "1", key, field])
    }

    /// Stores a state record at `key` as the executor would: `version`, `status` (`""`: none)
    /// and the stored `value` (its format byte first), updated now, not fenced.
    pub fn write_record(&self, key: &str, version: u64, status: &str, value: &str) {
        self.cli(&["EVAL", WRITE_RECORD_LUA, "1", key, &version.to_string(), status, value]);
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// stdout and stderr of the process: errors before the log file is open go there.
    fn output_path(&self) -> PathBuf {
        self.dir.join("redis-server.out")
    }

    /// Spawns `redis-server` with the configuration file in the temp dir and waits until it
    /// answers on the plain port (the TLS listener is bound before the plain port answers).
    /// On success the child is kept; otherwise it is killed and reaped.
    fn spawn_until_ready(&self, deadline: Instant) -> Attempt {
        let Some(redis_server) = find_on_path("redis-server") else {
            panic!("{NOT_FOUND}")
        };
        let log_start = file_len(&self.log_path());
        let output_start = file_len(&self.output_path());
        let output = match OpenOptions::new().create(true).append(true).open(self.output_path()) {
            Ok(file) => file,
            Err(e) => return Attempt::Failed(format!("cannot open the output file: {e}")),
        };
        let stderr = match output.try_clone() {
            Ok(file) => file,
            Err(e) => return Attempt::Failed(format!("cannot open the output file: {e}")),
        };
        let mut command = Command::new(redis_server);
        command.arg(self.config_path());
        for (name, value) in &self.extra_args {
            command.arg(format!("--{name}")).arg(value);
        }
        let mut child = match command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return Attempt::Failed(format!("cannot spawn redis-server: {e}")),
        };

        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let new_output =
                        read_from(&self.log_path(), log_start) + &read_from(&self.output_path(), output_start);
                    let why = format!("redis-server exited early ({status})");
                    return if new_output.contains("Address already in use") {
                        Attempt::PortTaken(why)
                    } else {
                        Attempt::Failed(why)
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(child);
                    return Attempt::Failed(format!("cannot check on redis-server: {e}"));
                }
            }
            match probe(self.port, self.admin_password.as_deref()) {
                Probe::NotReady => {}
                Probe::Ready(Some(pid)) if pid == child.id() => {
                    return self.keep(child);
                }
                Probe::Ready(Some(pid)) => {
                    // Someone took the port between choosing it and binding it; our server will
                    // fail to bind and exit.
                    kill_and_reap(child);
                    return Attempt::PortTaken(format!(
                        "port {} is served by another redis-server (pid {pid})",
                        self.port
                    ));
                }
                Probe::Ready(None) => {
                    // The answer did not say which process it came from (the default user may
                    // not run INFO). A server that lost the port exits within milliseconds of
                    // starting, so one that is still alive a little later owns it.
                    thread::sleep(Duration::from_millis(50));
                    if matches!(child.try_wait(), Ok(None)) {
                        return self.keep(child);
                    }
                }
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Attempt::Failed(format!(
                    "redis-server did not answer on port {} within {} s",
                    self.port,
                    READY_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn keep(&self, child: Child) -> Attempt {
        let mut slot = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.replace(child) {
            kill_and_reap(old);
        }
        Attempt::Ready
    }

    /// Panics with `why` and the end of the server's log. Unwinding drops `self`, which removes
    /// the temporary directory, so the log has to go into the message.
    fn fail(&self, why: &str) -> ! {
        let mut message = format!("{why}\n(port {}, directory {})", self.port, self.dir.display());
        for path in [self.output_path(), self.log_path()] {
            let tail = tail_lines(&read_from(&path, 0), LOG_TAIL_LINES);
            if !tail.is_empty() {
                let _ = write!(message, "\n--- last lines of {} ---\n{tail}", path.display());
            }
        }
        panic!("{message}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        // Best effort: a leftover directory in the temp dir is harmless.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl ServerBuilder {
    /// Adds the ACL user `NAME` with password `PASSWORD` and the ACL rules `RULES` (space
    /// separated, e.g. `"~app:* +@all"`), as `user NAME on >PASSWORD RULES` in the configuration.
    /// May be called several times. The default user stays as it is: without a password unless
    /// [`require_admin_password`](Self::require_admin_password) is set.
    pub fn acl_user(mut self, name: &str, password: &str, rules: &str) -> Self {
        self.users.push(AclUser {
            name: name.to_owned(),
            password: password.to_owned(),
            rules: rules.to_owned(),
        });
        self
    }

    /// Sets `requirepass` (the default user's password); [`RedisServer::cli`] then authenticates
    /// with it.
    pub fn require_admin_password(mut self, password: &str) -> Self {
        self.admin_password = Some(password.to_owned());
        self
    }

    /// Also listens with TLS on a second free port, with a CA and a server certificate for
    /// `127.0.0.1` and `localhost` generated for this server. Clients are not asked for
    /// certificates (`tls-auth-clients no`). See [`RedisServer::ca_cert_pem`].
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Keeps the data on disk, in an append-only file that the server fsyncs before it replies
    /// (`appendonly yes`, `appendfsync always`): everything it acknowledged survives
    /// [`RedisServer::stop`] (a SIGKILL) and is back after [`RedisServer::restart`]. RDB
    /// snapshots stay off (`save ""`).
    ///
    /// [`arg`](Self::arg) overrides either setting, e.g. `.arg("appendfsync", "everysec")`.
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// Passes `--NAME VALUE` to `redis-server`, after the generated configuration, so it wins.
    /// A leading `--` on `name` is ignored. An empty value is passed as `""`.
    ///
    /// # Panics
    ///
    /// For the settings the harness owns: `bind`, `port`, `tls-port`, `daemonize`, `dir`,
    /// `logfile`.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        let name = name.trim_start_matches("--");
        assert!(
            !RESERVED_ARGS.contains(&name.to_ascii_lowercase().as_str()),
            "`{name}` is set by stateful-redis-test-support and cannot be overridden"
        );
        self.args.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the server on a free loopback port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not on `PATH`, when it exits or does not answer within 10 seconds
    /// (the message holds the end of its log), or when several fresh ports were all taken
    /// before the server could bind them.
    pub fn start(self) -> RedisServer {
        assert!(redis_server_available(), "{NOT_FOUND}");
        let dir = create_temp_dir();
        // From here on, a panic drops `server`, which removes `dir`.
        let mut server = RedisServer {
            tls: None,
            port: 0,
            admin_password: self.admin_password.clone(),
            extra_args: self.args.clone(),
            child: Mutex::new(None),
            dir,
        };
        if self.tls {
            server.tls = Some(TlsServer {
                port: 0,
                files: tls::write_files(&server.dir),
            });
        }
        let mut attempt = 1;
        loop {
            let (port, tls_port) = free_ports(self.tls);
            server.port = port;
            if let (Some(tls), Some(tls_port)) = (server.tls.as_mut(), tls_port) {
                tls.port = tls_port;
            }
            let config = self.render_config(&server.dir, port, server.tls.as_ref());
            if let Err(e) = fs::write(server.config_path(), config) {
                server.fail(&format!("cannot write redis.conf: {e}"));
            }
            match server.spawn_until_ready(Instant::now() + READY_TIMEOUT) {
                Attempt::Ready => return server,
                Attempt::PortTaken(_) if attempt < START_ATTEMPTS => attempt += 1,
                Attempt::PortTaken(why) => server.fail(&format!(
                    "starting redis-server failed {START_ATTEMPTS} times, each time the port \
                     was taken: {why}"
                )),
                Attempt::Failed(why) => server.fail(&format!("starting redis-server failed: {why}")),
            }
        }
    }

    /// The contents of `redis.conf` for a server in `dir` on `port` (and `tls.port`).
    fn render_config(&self, dir: &Path, port: u16, tls: Option<&TlsServer>) -> String {
        let log = dir.join(LOG_FILE);
        let mut config = format!(
            "# Written by stateful-redis-test-support.\n\
             bind 127.0.0.1\n\
             port {port}\n\
             protected-mode no\n\
             daemonize no\n\
             dir {dir}\n\
             logfile {log}\n\
             save \"\"\n\
             enable-debug-command yes\n",
            dir = quote(&dir.to_string_lossy()),
            log = quote(&log.to_string_lossy()),
        );
        if self.persistent {
            config.push_str("appendonly yes\nappendfsync always\n");
        } else {
            config.push_str("appendonly no\n");
        }
        if let Some(password) = &self.admin_password {
            let _ = writeln!(config, "requirepass {}", quote(password));
        }
        for user in &self.users {
            let _ = write!(
                config,
                "user {} on {}",
                quote(&user.name),
                quote(&format!(">{}", user.password))
            );
            for rule in user.rules.split_whitespace() {
                let _ = write!(config, " {}", quote(rule));
            }
            config.push('\n');
        }
        if let Some(tls) = tls {
            let _ = write!(
                config,
                "tls-port {}\n\
                 tls-cert-file {}\n\
                 tls-key-file {}\n\
                 tls-ca-cert-file {}\n\
                 tls-auth-clients no\n",
                tls.port,
                quote(&tls.files.cert_path.to_string_lossy()),
                quote(&tls.files.key_path.to_string_lossy()),
                quote(&tls.files.ca_cert_path.to_string_lossy()),
            );
        }
        config
    }
}

/// The outcome of spawning a server once.
enum Attempt {
    Ready,
    /// The port was taken by another process; trying again (later, or elsewhere) may work.
    PortTaken(String),
    /// Anything else; trying again will not help.
    Failed(String),
}

/// What a server on a port answered to `INFO server`.
enum Probe {
    /// No connection, no answer, or the server is still loading.
    NotReady,
    /// A Redis server answered, with the `process_id` from `INFO` when it would tell.
    Ready(Option<u32>),
}

/// Asks whatever listens on `127.0.0.1:port` for `INFO server` over raw RESP, after `AUTH` with
/// the default user's `password` if there is one.
fn probe(port: u16, password: Option<&str>) -> Probe {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return Probe::NotReady;
    };
    let timeout = Some(Duration::from_secs(1));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return Probe::NotReady;
    }
    let mut request = Vec::new();
    if let Some(password) = password {
        request.extend(resp_command(&["AUTH", password]));
    }
    request.extend(resp_command(&["INFO", "server"]));
    if (&stream).write_all(&request).is_err() {
        return Probe::NotReady;
    }
    let mut reader = BufReader::new(stream);
    if password.is_some() {
        // +OK, or an error that INFO's answer will repeat.
        match read_line(&mut reader) {
            Some(line) if !line.starts_with("-LOADING") => {}
            _ => return Probe::NotReady,
        }
    }
    let Some(line) = read_line(&mut reader) else {
        return Probe::NotReady;
    };
    if let Some(len) = line.strip_prefix('$') {
        let Ok(len) = len.parse::<usize>() else {
            return Probe::NotReady;
        };
        let mut body = vec![0; len + 2];
        if reader.read_exact(&mut body).is_err() {
            return Probe::NotReady;
        }
        let pid = String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok());
        Probe::Ready(pid)
    } else if line.starts_with("-LOADING") || !line.starts_with('-') {
        Probe::NotReady
    } else {
        // NOAUTH, NOPERM, WRONGPASS: a Redis server is answering.
        Probe::Ready(None)
    }
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

/// Quotes a value for `redis.conf`, whose lines are split like `sdssplitargs` does.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Free ports on 127.0.0.1, as the kernel hands them out. Both listeners are held until both
/// ports are known so they differ; another process may still take one before the server binds
/// it, which the callers handle by retrying.
fn free_ports(with_tls: bool) -> (u16, Option<u16>) {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a free port on 127.0.0.1: {e}"))
    };
    let port_of = |listener: &TcpListener| {
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the port of a listener: {e}"))
            .port()
    };
    let plain = bind();
    let tls = with_tls.then(bind);
    (port_of(&plain), tls.as_ref().map(port_of))
}

/// GET `path` from 127.0.0.1:`port` over HTTP/1.0, in TLS when `tls` is given: the status
/// code and the body, or `None` when it does not answer.
fn http_get(port: u16, path: &str, tls: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "GET {path} HTTP/1.0
Host: 127.0.0.1

"
    );
    let mut response = Vec::new();
    match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let connection = rustls::ClientConnection::new(std::sync::Arc::clone(config), name).ok()?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            tls.write_all(request.as_bytes()).ok()?;
            read_all(&mut tls, &mut response)?;
        }
        None => {
            stream.write_all(request.as_bytes()).ok()?;
            read_all(&mut stream, &mut response)?;
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Reads to the end; a peer that closes without a TLS close_notify has still said it all.
fn read_all(reader: &mut impl Read, into: &mut Vec<u8>) -> Option<()> {
    match reader.read_to_end(into) {
        Ok(_) => Some(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !into.is_empty() => Some(()),
        Err(_) => None,
    }
}

/// A new directory under the system temp dir, unique to this server.
fn create_temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let path = std::env::temp_dir().join(format!(
            "stateful-redis-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&path) {
            Ok(()) => return path,
            // Left behind by an earlier process with the same pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot create {}: {e}", path.display()),
        }
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn kill_and_reap(mut child: Child) {
    // Fails only when the child has already exited, which `wait` then reaps.
    let _ = child.kill();
    let _ = child.wait();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The contents of `path` from byte `start` on; empty when it cannot be read.
fn read_from(path: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads one field of a state record (`stateful_redis_core::Record`'s layout).
const RECORD_FIELD_LUA: &str = "local r = redis.call('GET', KEYS[1]) if not r then return '' end \
    local s = string.byte(r, 2) % 128 local f = ARGV[1] \
    if f == 'version' then return string.format('%d', struct.unpack('>I8', r, 3)) end \
    if f == 'updated' then return string.format('%d', struct.unpack('>I6', r, 11)) end \
    if f == 'fence' then return string.format('%d', struct.unpack('>I6', r, 17)) end \
    if f == 'status' then return string.sub(r, 23, 22 + s) end \
    return string.sub(r, 23 + s)";

/// Writes a state record (`stateful_redis_core::Record`'s layout).
const WRITE_RECORD_LUA: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
    return redis.call('SET', KEYS[1], struct.pack('>BBI8I6I6', 1, #ARGV[2], tonumber(ARGV[1]), now, 0) .. ARGV[2] .. ARGV[3])";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_redis_conf_would_split_on() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(r#"say "hi"\"#), r#""say \"hi\"\\""#);
        assert_eq!(quote("two\nlines"), "\"two\\nlines\"");
    }

    #[test]
    fn resp_command_encodes_bulk_strings() {
        assert_eq!(
            resp_command(&["AUTH", "pässword"]),
            b"*2\r\n$4\r\nAUTH\r\n$9\r\np\xc3\xa4ssword\r\n"
        );
    }

    #[test]
    fn tail_lines_keeps_the_last_non_empty_lines() {
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a\n", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }

    #[test]
    fn arg_strips_dashes() {
        let builder = RedisServer::builder().arg("--maxmemory", "10mb");
        assert_eq!(builder.args, [("maxmemory".to_owned(), "10mb".to_owned())]);
    }

    #[test]
    fn config_has_users_and_password() {
        let builder =
            RedisServer::builder()
                .require_admin_password("admin pw")
                .acl_user("app", "secret", "~app:*  +@all");
        let config = builder.render_config(Path::new("/tmp/x y"), 7000, None);
        assert!(config.contains("\nport 7000\n"), "{config}");
        assert!(config.contains("\nsave \"\"\n"), "{config}");
        assert!(config.contains("\nrequirepass \"admin pw\"\n"), "{config}");
        assert!(
            config.contains("\nuser \"app\" on \">secret\" \"~app:*\" \"+@all\"\n"),
            "{config}"
        );
        assert!(config.contains("\ndir \"/tmp/x y\"\n"), "{config}");
        assert!(config.contains("\nlogfile \"/tmp/x y/redis.log\"\n"), "{config}");
        assert!(config.contains("\nappendonly no\n"), "{config}");
    }

    #[test]
    fn persistent_config_fsyncs_an_append_only_file() {
        let config = RedisServer::builder()
            .persistent()
            .render_config(Path::new("/tmp/x"), 7000, None);
        assert!(config.contains("\nappendonly yes\nappendfsync always\n"), "{config}");
        assert!(!config.contains("appendonly no"), "{config}");
        assert!(config.contains("\nsave \"\"\n"), "{config}");
    }
}
