//! `Runtime::metrics`.

use super::Runtime;
use crate::metrics::RuntimeMetrics;
use crate::sync::Ordering;

impl Runtime {
    /// A snapshot of the runtime's figures: its pool's threads (and why
    /// it last grew and shrank) and each of its open ports (see
    /// [`metrics`](crate::metrics)).
    pub fn metrics(&self) -> RuntimeMetrics {
        let mut pool = self.inner.pool.metrics();
        pool.panics += self.inner.sched.panics.load(Ordering::Relaxed);
        let ports = self.inner.all_ports().iter().filter(|p| !p.is_closed()).map(|p| p.metrics()).collect();
        RuntimeMetrics { pool, ports }
    }
}
