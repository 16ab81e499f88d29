//! Watching a configuration file (the `config-file` feature):
//! [`StatefulExecutor::watch_config`] re-reads it when it changes and applies it live.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use stateful_redis_core::Error;

use crate::executor::{Inner, StatefulExecutor};

impl StatefulExecutor {
    /// Watches `file` (TOML) and applies it when its contents change, checking every
    /// `every`: the file is read as [`load_config`](crate::load_config) reads it (defaults ←
    /// file ← environment) and applied with [`apply_config`](Self::apply_config). A
    /// change that does not load or validate is rejected with an error log naming the
    /// field, and the running configuration stays. The watch ends when the returned
    /// [`ConfigWatch`] is dropped or stopped, or the executor goes away.
    ///
    /// The first check happens after `every`: load the file yourself to build the executor.
    pub fn watch_config(&self, file: impl Into<PathBuf>, every: Duration) -> ConfigWatch {
        let file = file.into();
        let stats = Arc::new(WatchStats::default());
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(watch(
            weak,
            file.clone(),
            every.max(Duration::from_millis(10)),
            Arc::clone(&stats),
        ));
        ConfigWatch { file, stats, task }
    }
}

#[derive(Debug, Default)]
struct WatchStats {
    applied: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A running watch of a configuration file ([`StatefulExecutor::watch_config`]); dropping
/// it stops the watch.
#[derive(Debug)]
pub struct ConfigWatch {
    file: PathBuf,
    stats: Arc<WatchStats>,
    task: tokio::task::JoinHandle<()>,
}

impl ConfigWatch {
    /// The file watched.
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    /// Changes applied so far.
    pub fn applied(&self) -> u64 {
        self.stats.applied.load(Ordering::Relaxed)
    }

    /// Changes rejected so far (the running configuration stayed).
    pub fn rejected(&self) -> u64 {
        self.stats.rejected.load(Ordering::Relaxed)
    }

    /// Why the last rejected change was rejected (it names the field; secrets never show).
    pub fn last_error(&self) -> Option<String> {
        self.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops watching.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(inner: Weak<Inner>, file: PathBuf, every: Duration, stats: Arc<WatchStats>) {
    // What the file held at the last look; a change is a different content (mtimes can be
    // coarse, and an editor may rewrite the same bytes).
    let mut seen = std::fs::read(&file).ok();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let exec = StatefulExecutor { inner };
        if exec.inner.is_closed() {
            return;
        }
        let now = std::fs::read(&file).ok();
        if now == seen {
            continue;
        }
        seen = now;
        let result = crate::load_config(Some(&file)).and_then(|config| exec.apply_config(&config));
        match result {
            Ok(change) => {
                stats.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %file.display(), applied = ?change.applied, "configuration file reloaded");
            }
            Err(e) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                let field = match &e {
                    Error::Config(c) => c.field.clone(),
                    _ => String::new(),
                };
                tracing::error!(
                    file = %file.display(),
                    field = %field,
                    error = %e,
                    "configuration change rejected; the running configuration stays"
                );
                *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }
}
