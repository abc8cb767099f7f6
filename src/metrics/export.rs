//! The `metrics` feature: a runtime's figures published to the `metrics`
//! crate's global recorder.

use std::collections::HashMap;

use ::metrics::{counter, gauge, histogram};

use super::LatencyHistogram;
use crate::Runtime;

/// Publishes a runtime's figures to the recorder installed with the
/// `metrics` crate (`metrics::set_global_recorder`, or an exporter such
/// as `metrics-exporter-prometheus`), each time [`Exporter::export`] is
/// called: every second or so, from a thread of the program's own.
///
/// Names: gauges `iocompletion_pool_threads`, `iocompletion_pool_busy_threads`,
/// `iocompletion_pool_idle_threads`, `iocompletion_pool_min_threads`,
/// `iocompletion_pool_max_threads`, `iocompletion_port_queued` and
/// `iocompletion_port_in_flight` (label `kind`); counters
/// `iocompletion_pool_threads_started_total`,
/// `iocompletion_pool_threads_retired_total`,
/// `iocompletion_pool_completions_total`,
/// `iocompletion_port_completions_total` (label `outcome`),
/// `iocompletion_port_posts_total`, `iocompletion_port_refused_total`,
/// `iocompletion_port_os_entries_total`,
/// `iocompletion_port_os_completions_total`,
/// `iocompletion_port_cq_overflows_total`; histograms in seconds
/// `iocompletion_port_start_to_completion_seconds`,
/// `iocompletion_port_completion_to_callback_seconds`,
/// `iocompletion_port_callback_seconds`. Every per-port figure has a
/// `port` label. A histogram's values are published as the upper bound
/// of their log2 bucket (the values recorded since the last export).
///
/// ```
/// let rt = iocompletion::Runtime::builder().build()?;
/// let mut exporter = iocompletion::metrics::Exporter::new(&rt);
/// exporter.export(); // with no recorder installed, this does nothing
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Exporter {
    rt: Runtime,
    /// Each port's histograms at the last export, to publish only what
    /// came since.
    last: HashMap<u64, [LatencyHistogram; 3]>,
}

impl Exporter {
    /// An exporter of `rt`'s figures.
    pub fn new(rt: &Runtime) -> Exporter {
        Exporter { rt: rt.clone(), last: HashMap::new() }
    }

    /// Publishes the figures now.
    pub fn export(&mut self) {
        let m = self.rt.metrics();
        let p = &m.pool;
        gauge!("iocompletion_pool_threads").set(p.threads as f64);
        gauge!("iocompletion_pool_busy_threads").set(p.busy as f64);
        gauge!("iocompletion_pool_idle_threads").set(p.idle as f64);
        gauge!("iocompletion_pool_min_threads").set(p.min as f64);
        gauge!("iocompletion_pool_max_threads").set(p.max as f64);
        counter!("iocompletion_pool_threads_started_total").absolute(p.started);
        counter!("iocompletion_pool_threads_retired_total").absolute(p.retired);
        counter!("iocompletion_pool_completions_total").absolute(p.completions);
        for port in &m.ports {
            let id = port.port.to_string();
            gauge!("iocompletion_port_queued", "port" => id.clone()).set(port.queued as f64);
            for (kind, v) in port.in_flight.by_kind() {
                gauge!("iocompletion_port_in_flight", "port" => id.clone(), "kind" => kind).set(v as f64);
            }
            let c = &port.completions;
            for (outcome, v) in [
                ("success", c.success),
                ("error", c.error),
                ("cancelled", c.cancelled),
                ("aborted", c.aborted),
                ("timed_out", c.timed_out),
            ] {
                counter!("iocompletion_port_completions_total", "port" => id.clone(), "outcome" => outcome)
                    .absolute(v);
            }
            counter!("iocompletion_port_posts_total", "port" => id.clone()).absolute(port.posts);
            counter!("iocompletion_port_refused_total", "port" => id.clone()).absolute(port.refused);
            counter!("iocompletion_port_os_entries_total", "port" => id.clone()).absolute(port.os.entries);
            counter!("iocompletion_port_os_completions_total", "port" => id.clone()).absolute(port.os.completions);
            counter!("iocompletion_port_cq_overflows_total", "port" => id.clone()).absolute(port.os.overflows);
            let now = [port.start_to_completion.clone(), port.completion_to_callback.clone(), port.callback.clone()];
            let names = [
                "iocompletion_port_start_to_completion_seconds",
                "iocompletion_port_completion_to_callback_seconds",
                "iocompletion_port_callback_seconds",
            ];
            let before = self.last.remove(&port.port).unwrap_or_default();
            for ((name, now), before) in names.into_iter().zip(&now).zip(&before) {
                let h = histogram!(name, "port" => id.clone());
                let earlier: HashMap<_, _> = before.buckets().collect();
                for (upper, count) in now.buckets() {
                    let new = count - earlier.get(&upper).copied().unwrap_or(0).min(count);
                    if new > 0 {
                        h.record_many(upper.as_secs_f64(), new as usize);
                    }
                }
            }
            self.last.insert(port.port, now);
        }
        // Ports closed since: forgotten.
        self.last.retain(|id, _| m.ports.iter().any(|p| p.port == *id));
    }
}
