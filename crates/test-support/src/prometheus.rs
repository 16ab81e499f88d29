//! A real Prometheus server (Debian's `prometheus`) on a free loopback port, scraping given
//! targets every second and evaluating given rule files every second.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{create_temp_dir, free_ports};

const BINARY: &str = "prometheus";
const NOT_FOUND: &str = "prometheus not found on PATH: install it with `apt-get install prometheus` \
    (cargo xtask test does this when run as root)";

/// A running Prometheus; dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Prometheus {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts one on a free port of 127.0.0.1 whose job `job` scrapes `targets` (`host:port`,
    /// path `/metrics`) every second, with `rule_files` evaluated every second, and waits
    /// until it is ready.
    pub fn start(job: &str, targets: &[String], rule_files: &[&Path]) -> Prometheus {
        assert!(crate::find_on_path(BINARY).is_some(), "{NOT_FOUND}");
        let dir = create_temp_dir();
        let config = dir.join("prometheus.yml");
        let quoted = |items: Vec<String>| items.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(", ");
        let rules = quoted(rule_files.iter().map(|p| p.display().to_string()).collect());
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n  - job_name: '{job}'\n    static_configs:\n      - targets: [{}]\n",
                quoted(targets.to_vec())
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let mut last_error = String::new();
        for _ in 0..5 {
            let (port, _) = free_ports(false);
            let log = fs::File::create(dir.join("prometheus.log"))
                .unwrap_or_else(|e| panic!("cannot create the prometheus log: {e}"));
            let child = Command::new(BINARY)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
            let mut prometheus = Prometheus {
                port,
                child,
                dir: dir.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = prometheus.child.try_wait() {
                    last_error = format!("exited with {status}: {}", prometheus.log_tail());
                    break;
                }
                if prometheus.get("/-/ready").is_some_and(|(code, _)| code == 200) {
                    return prometheus;
                }
                thread::sleep(Duration::from_millis(100));
            }
            if last_error.is_empty() {
                last_error = format!("not ready within 30 s: {}", prometheus.log_tail());
            }
            let _ = prometheus.child.kill();
            let _ = prometheus.child.wait();
            prometheus.dir = PathBuf::new();
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("starting {BINARY} failed: {last_error}");
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET `path` over HTTP/1.0: the status code and the body, or `None` when it does not
    /// answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::http_get(self.port, path, None)
    }

    /// `GET /api/v1/query?query=<promql>` (an instant query, now): the status code and the
    /// JSON body as text.
    pub fn query(&self, promql: &str) -> (u16, String) {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        self.get(&path)
            .unwrap_or_else(|| panic!("prometheus did not answer {path}: {}", self.log_tail()))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every byte but the unreserved ones of RFC 3986 as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
