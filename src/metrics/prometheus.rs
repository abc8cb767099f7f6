//! The Prometheus text exposition of a runtime's figures.

use std::fmt::Write;

use super::{LatencyHistogram, PortMetrics, RuntimeMetrics};

/// Reads one figure of a port.
type Figure = fn(&PortMetrics) -> u64;
/// Reads one histogram of a port.
type Histo = fn(&PortMetrics) -> &LatencyHistogram;

/// Writes a `# HELP`/`# TYPE` header.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    let mut cumulative = 0;
    for (upper, count) in h.buckets() {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{:e}\"}} {cumulative}", upper.as_secs_f64());
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum{{{labels}}} {:e}", h.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}

impl RuntimeMetrics {
    /// The figures in Prometheus's text exposition format (version
    /// 0.0.4), every name starting with `iocompletion_`, the ports told
    /// apart by a `port` label: what a `/metrics` page serves (see
    /// `examples/metrics_server.rs`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let p = &self.pool;
        let gauges: [(&str, &str, usize); 6] = [
            ("threads", "Pool threads alive.", p.threads),
            ("busy_threads", "Pool threads running a completion.", p.busy),
            ("idle_threads", "Pool threads waiting for work.", p.idle),
            ("min_threads", "The pool's minimum.", p.min),
            ("max_threads", "The pool's maximum.", p.max),
            ("peak_threads", "Most pool threads alive at once.", p.peak),
        ];
        for (name, help, v) in gauges {
            let name = format!("iocompletion_pool_{name}");
            header(&mut out, &name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let counters: [(&str, &str, u64); 6] = [
            ("threads_started", "Pool threads started.", p.started),
            ("threads_retired", "Pool threads retired (keep-alive, lowered maximum).", p.retired),
            ("threads_replaced", "Pool threads replaced after a failure outside a callback.", p.replaced),
            ("completions", "Completions the pool ran.", p.completions),
            ("panics", "Callbacks and tasks that panicked.", p.panics),
            ("threads_abandoned", "Pool threads left blocked in the OS by a close.", p.abandoned),
        ];
        for (name, help, v) in counters {
            let name = format!("iocompletion_pool_{name}_total");
            header(&mut out, &name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let per_port: [(&str, &str, &str, Figure); 6] = [
            ("queued", "gauge", "Packets waiting on the port's queue.", |m| m.queued),
            ("posts_total", "counter", "Completions posted to the port.", |m| m.posts),
            ("refused_total", "counter", "Starts and posts refused at the port's bound.", |m| m.refused),
            ("os_entries_total", "counter", "Calls into the OS's queue.", |m| m.os.entries),
            ("os_completions_total", "counter", "Completions or events those calls returned.", |m| m.os.completions),
            ("cq_overflows_total", "counter", "Completion-queue overflows the kernel reported.", |m| m.os.overflows),
        ];
        for (name, kind, help, f) in per_port {
            let name = format!("iocompletion_port_{name}");
            header(&mut out, &name, kind, help);
            for m in &self.ports {
                let _ = writeln!(out, "{name}{{port=\"{}\"}} {}", m.port, f(m));
            }
        }
        let name = "iocompletion_port_in_flight";
        header(&mut out, name, "gauge", "Requests started on the port's handles and not completed, by kind.");
        for m in &self.ports {
            for (kind, v) in m.in_flight.by_kind() {
                let _ = writeln!(out, "{name}{{port=\"{}\",kind=\"{kind}\"}} {v}", m.port);
            }
        }
        let name = "iocompletion_port_completions_total";
        header(&mut out, name, "counter", "Completions of requests started on the port's handles, by outcome.");
        for m in &self.ports {
            let c = &m.completions;
            let outcomes = [
                ("success", c.success),
                ("error", c.error),
                ("cancelled", c.cancelled),
                ("aborted", c.aborted),
                ("timed_out", c.timed_out),
            ];
            for (outcome, v) in outcomes {
                let _ = writeln!(out, "{name}{{port=\"{}\",outcome=\"{outcome}\"}} {v}", m.port);
            }
        }
        let hists: [(&str, &str, Histo); 3] = [
            ("start_to_completion_seconds", "From a request's start to its completion by the OS.", |m| {
                &m.start_to_completion
            }),
            ("completion_to_callback_seconds", "From a completion (or post) to the start of its callback.", |m| {
                &m.completion_to_callback
            }),
            ("callback_seconds", "How long the pool's callbacks ran.", |m| &m.callback),
        ];
        for (name, help, f) in hists {
            let name = format!("iocompletion_port_{name}");
            header(&mut out, &name, "histogram", help);
            for m in &self.ports {
                histogram(&mut out, &name, &format!("port=\"{}\"", m.port), f(m));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_prometheus_text_is_well_formed() {
        let rt = crate::Runtime::builder().min_threads(1).max_threads(3).build().unwrap();
        let port = rt.default_port().unwrap();
        port.post(0, 0, None).unwrap();
        let text = rt.metrics().to_prometheus();
        assert!(text.contains("iocompletion_pool_max_threads 3\n"), "{text}");
        assert!(text.contains(&format!("iocompletion_port_posts_total{{port=\"{}\"}} 1\n", port.id())), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("iocompletion_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        rt.shutdown();
    }
}
