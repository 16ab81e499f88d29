//! A throw-away `redis-server` on a free loopback port, for runs without `--redis`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stateful_redis::{ExecutorConfig, RedisUrl};

use crate::failure::{Failure, Kind};

/// Points `config` at the server a run talks to: `redis` (`--redis`; on a cluster its first
/// URL, the others as seeds), else the URL a config file or `STATEFUL_REDIS_REDIS__URL`
/// names, else a throw-away `redis-server` started here, which the returned value keeps
/// alive.
pub(crate) fn choose_server(
    redis: Option<&str>,
    config_file: bool,
    config: &mut ExecutorConfig,
) -> Result<Option<EmbeddedRedis>, Failure> {
    let configured = config_file || std::env::var_os("STATEFUL_REDIS_REDIS__URL").is_some();
    let (embedded, url) = match redis {
        Some(urls) if config.redis.cluster => {
            let mut urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
            let first = urls.next().unwrap_or_default().to_owned();
            config.redis.seeds = urls.map(RedisUrl::new).collect();
            (None, first)
        }
        Some(url) => (None, url.to_owned()),
        None if configured => return Ok(None),
        None => {
            let server = EmbeddedRedis::start().map_err(|e| Failure::new(Kind::Connect, e))?;
            let url = server.url();
            eprintln!("no --redis given: started a throw-away redis-server at {url}; it stops when the run ends");
            (Some(server), url)
        }
    };
    config.redis.url = RedisUrl::new(url);
    Ok(embedded)
}

/// A `redis-server` child process; killed on drop.
#[derive(Debug)]
pub(crate) struct EmbeddedRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

const INSTALL_HINT: &str = "no redis-server on PATH: install it (Debian/Ubuntu: `sudo apt-get install redis-server`; \
     macOS: `brew install redis`) or pass --redis URL";

impl EmbeddedRedis {
    /// Starts `redis-server` on a free port, keeping nothing on disk, and waits until it answers.
    pub(crate) fn start() -> anyhow::Result<Self> {
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
            let dir = std::env::temp_dir().join(format!("stateful-redis-load-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let spawned = Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(INSTALL_HINT),
                Err(e) => return Err(e).context("starting redis-server"),
            };
            let mut server = Self { child, port, dir };
            if server.wait_ready()? {
                return Ok(server);
            }
            // Port taken between our probe and its bind: try another.
            drop(server);
        }
        bail!("redis-server did not start on any of 5 free ports")
    }

    fn wait_ready(&mut self) -> anyhow::Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                stream.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return Ok(true);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server on port {} did not answer within 10 s", self.port)
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
