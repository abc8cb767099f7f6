//! The `metrics` feature: `metrics::Exporter` publishes a runtime's
//! figures to the `metrics` crate's recorder, under `iocompletion_*`
//! names, with exact values for a runtime at rest.

mod util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use iocompletion::Runtime;

/// Every value set, by "name{label=value,...}".
#[derive(Default)]
struct Values(Mutex<HashMap<String, f64>>);

struct Cell(Arc<Values>, String);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() -= v;
    }
    fn set(&self, v: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v);
    }
}

impl HistogramFn for Cell {
    /// Counts the values recorded.
    fn record(&self, _: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += 1.0;
    }
}

struct Rec(Arc<Values>);

fn key_text(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.0.clone(), key_text(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.0.clone(), key_text(key))))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Cell(self.0.clone(), key_text(key))))
    }
}

#[test]
fn metrics_exporter_publishes_iocompletion_figures() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(1).max_threads(3).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    for _ in 0..4 {
        let tx = tx.lock().unwrap().clone();
        let tx = Mutex::new(tx);
        rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    }
    for _ in 0..4 {
        rx.recv_timeout(util::DEADLINE).unwrap();
    }
    let port = rt.default_port().unwrap();
    util::wait_until("the callbacks are timed", || port.metrics().callback.count() == 4);
    let values = Arc::new(Values::default());
    let rec = Rec(values.clone());
    let mut exporter = iocompletion::metrics::Exporter::new(&rt);
    ::metrics::with_local_recorder(&rec, || exporter.export());
    let get = |k: &str| values.0.lock().unwrap().get(k).copied();
    let id = port.id();
    assert_eq!(get("iocompletion_pool_max_threads{}"), Some(3.0));
    assert_eq!(get(&format!("iocompletion_port_posts_total{{port={id}}}")), Some(4.0));
    assert_eq!(get(&format!("iocompletion_port_queued{{port={id}}}")), Some(0.0));
    assert_eq!(get(&format!("iocompletion_port_in_flight{{port={id},kind=read}}")), Some(0.0));
    assert_eq!(get(&format!("iocompletion_port_callback_seconds{{port={id}}}")), Some(4.0));
    // A second export publishes only the values recorded since.
    ::metrics::with_local_recorder(&rec, || exporter.export());
    assert_eq!(get(&format!("iocompletion_port_callback_seconds{{port={id}}}")), Some(4.0));
    rt.shutdown();
}
