//! The advisor: findings with evidence from measured figures,
//! and the safe changes applied live.
//!
//! [`StatefulExecutor::optimization_suggestions`] reads the monitor's snapshot, the pool,
//! batcher and script statistics and the configuration, and turns what stands out into
//! [`Suggestion`]s: what was seen, the numbers it rests on, and the change to make. It never
//! does I/O. The advisor applies the safe changes: [`StatefulExecutor::optimize_connection_pool`]
//! resizes the exclusive pool from measured waits, and
//! [`StatefulExecutor::optimize_lua_scripts`] loads the scripts ahead of traffic.
//!
//! `analysis` is the pure part (figures in, findings out), `optimize` the part that
//! changes the pool and talks to the servers; this module gathers the figures and holds
//! what the advisor remembers for the advisor's analysis.

mod analysis;
mod optimize;

use std::sync::{Mutex, MutexGuard};

use crate::executor::StatefulExecutor;

pub use self::analysis::{Area, Suggestion};
pub use self::optimize::{PoolChange, ScriptsReport};

use self::analysis::{Baseline, Inputs, analyze};
use self::optimize::PoolSample;

/// What the advisor remembers between calls; one per executor.
#[derive(Debug, Default)]
pub(crate) struct AdvisorState {
    remembered: Mutex<Remembered>,
}

impl AdvisorState {
    fn lock(&self) -> MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
struct Remembered {
    /// The pool at the previous `optimize_connection_pool` call.
    previous: Option<PoolSample>,
    /// Counters when the advisor last acted: the advisor's analysis judges what came after, so
    /// that a pool already grown is not reported again for the waits that made it grow.
    baseline: Baseline,
}

impl StatefulExecutor {
    /// The advisor's analysis: findings from the monitor's snapshot, the pool, batcher and script
    /// statistics and the configuration, most urgent first. Empty when nothing stands
    /// out. Never does I/O.
    ///
    /// Pool waits and script reloads count from the advisor's last change (from the
    /// start before any), so a pool the advisor already grew is not reported again for
    /// the waits that made it grow.
    pub fn optimization_suggestions(&self) -> Vec<Suggestion> {
        let baseline = self.inner.advisor.lock().baseline;
        let live = self.live_config();
        analyze(&Inputs {
            snapshot: self.snapshot(),
            pool: self.pool_stats(),
            batch: self.batch_stats(),
            scripts: self.script_stats(),
            config: &live,
            hot_entities: self.monitor().hot_entities(),
            baseline,
        })
    }
}
