//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback
//! port, with a configuration that receives alerts and notifies nobody; plain HTTP, or TLS
//! with a [`TestCa`](crate::TestCa)'s certificate (`--web.config.file`).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{create_temp_dir, free_ports};

/// The Alertmanager binary as Debian names it.
const BINARY: &str = "prometheus-alertmanager";
const NOT_FOUND: &str = "prometheus-alertmanager not found on PATH: install it with \
    `apt-get install prometheus-alertmanager` (cargo xtask test does this when run as root)";

/// A running Alertmanager; dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Alertmanager {
    port: u16,
    child: Child,
    dir: PathBuf,
    /// The client side of its TLS, when it serves TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Alertmanager {
    /// Starts one on a free port of 127.0.0.1 (clustering off) and waits until it is ready.
    pub fn start() -> Alertmanager {
        Self::start_with(None)
    }

    /// Starts one that serves HTTPS only, with `ca`'s server certificate (for 127.0.0.1).
    pub fn start_tls(ca: &crate::TestCa) -> Alertmanager {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&crate::TestCa>) -> Alertmanager {
        assert!(crate::find_on_path(BINARY).is_some(), "{NOT_FOUND}");
        let dir = create_temp_dir();
        let web_config = dir.join("web.yml");
        if let Some(ca) = ca {
            fs::write(
                &web_config,
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                    ca.cert_path().display(),
                    ca.key_path().display()
                ),
            )
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", web_config.display()));
        }
        let config = dir.join("alertmanager.yml");
        fs::write(
            &config,
            "route:\n  receiver: nobody\n  group_wait: 1h\nreceivers:\n  - name: nobody\n",
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let mut last_error = String::new();
        for _ in 0..5 {
            let (port, _) = free_ports(false);
            let log = fs::File::create(dir.join("alertmanager.log"))
                .unwrap_or_else(|e| panic!("cannot create the alertmanager log: {e}"));
            let mut command = Command::new(BINARY);
            if ca.is_some() {
                command.arg(format!("--web.config.file={}", web_config.display()));
            }
            let child = command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // No gossip port: an empty address turns clustering off.
                .arg("--cluster.listen-address=")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
            let mut am = Alertmanager {
                port,
                child,
                dir: dir.clone(),
                tls: ca.map(crate::TestCa::client_config),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = am.child.try_wait() {
                    last_error = format!("exited with {status}: {}", am.log_tail());
                    break;
                }
                if am.get("/-/ready").is_some_and(|(code, _)| code == 200) {
                    return am;
                }
                thread::sleep(Duration::from_millis(50));
            }
            if last_error.is_empty() {
                last_error = format!("not ready within 20 s: {}", am.log_tail());
            }
            // Keep the directory for the next attempt: forget this handle's ownership of it.
            let _ = am.child.kill();
            let _ = am.child.wait();
            am.dir = PathBuf::new();
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("starting {BINARY} failed: {last_error}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}`, or `https://…` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// GET `path` over HTTP/1.0 (in TLS when it serves TLS): the status code and the body, or
    /// `None` when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::http_get(self.port, path, self.tls.as_ref())
    }

    /// The alerts it holds now (`GET /api/v2/alerts`), as JSON text.
    pub fn alerts_json(&self) -> String {
        match self.get("/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true") {
            Some((200, body)) => body,
            other => panic!("GET /api/v2/alerts failed: {other:?}"),
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
