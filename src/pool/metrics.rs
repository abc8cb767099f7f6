//! The pool's figures for `metrics::PoolMetrics`.

use super::Pool;
use crate::metrics::PoolMetrics;

impl Pool {
    /// A snapshot of the pool's figures.
    pub(crate) fn metrics(&self) -> PoolMetrics {
        let s = self.stats();
        let counters = &self.shared.metrics;
        PoolMetrics {
            threads: s.threads,
            min: self.min(),
            max: self.max(),
            idle: s.threads.saturating_sub(s.busy),
            busy: s.busy,
            peak: s.peak_threads,
            started: s.started,
            retired: s.retired,
            replaced: s.replaced,
            abandoned: s.abandoned,
            completions: s.completions,
            panics: s.panics,
            last_growth: counters.last_growth(),
            last_shrink: counters.last_shrink(),
        }
    }
}
