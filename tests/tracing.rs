//! The `tracing` feature: pool thread spans and the events for growth,
//! retirement, refusals at a bound and driver fallbacks reach a
//! subscriber. One test: the subscriber is the process's global one.

mod util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use iocompletion::{Error, Port, Runtime};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records span names and events as "target: message".
#[derive(Default)]
struct Recorder {
    spans: Mutex<Vec<String>>,
    events: Mutex<Vec<String>>,
    next: AtomicU64,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

struct Shared(Arc<Recorder>);

impl Subscriber for Shared {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.spans.lock().unwrap().push(span.metadata().name().to_string());
        Id::from_u64(self.0.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.events.lock().unwrap().push(format!("{}: {}", event.metadata().target(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn tracing_reports_pool_threads_growth_refusals_and_fallbacks() {
    let rec = Arc::new(Recorder::default());
    tracing::subscriber::set_global_default(Shared(rec.clone())).unwrap();
    let has_event = |s: &str| rec.events.lock().unwrap().iter().any(|e| e == s);
    // Copies, so that a failed assertion does not panic holding the lock.
    let events = || rec.events.lock().unwrap().clone();
    let spans = || rec.spans.lock().unwrap().clone();

    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    rx.recv_timeout(util::DEADLINE).unwrap();
    assert!(has_event("iocompletion::pool: pool thread starting"), "{:?}", events());
    assert!(rec.spans.lock().unwrap().iter().any(|s| s == "worker"), "{:?}", spans());
    rt.shutdown();
    assert!(has_event("iocompletion::pool: pool thread leaving"), "{:?}", events());

    let port = Port::bounded(1, 1).unwrap();
    port.post(0, 0, None).unwrap();
    assert!(matches!(port.post(0, 0, None).map_err(|e| e.error), Err(Error::Full { bound: 1 })));
    assert!(has_event("iocompletion::port: refused at the port's bound"), "{:?}", events());
    port.close().unwrap();

    // A kernel that refuses io_uring (the crate's test seam says so): the
    // port falls back to epoll, and says why. Choosing epoll in the builder
    // is no fallback and says nothing. (When the environment picks the
    // driver, `IOCOMPLETION_DRIVER`, every port says so already.)
    #[cfg(target_os = "linux")]
    if std::env::var_os("IOCOMPLETION_DRIVER").is_none() {
        let rt = Runtime::builder().driver(iocompletion::DriverKind::Epoll).build().unwrap();
        let _ = rt.default_port().unwrap();
        assert!(!has_event("iocompletion::port: driver fallback"), "{:?}", events());
        rt.shutdown();
        // The only test of this binary: no other thread reads the variable.
        std::env::set_var("IOCOMPLETION_IO_URING_REFUSE", "EPERM");
        let rt = Runtime::builder().build().unwrap();
        let _ = rt.default_port().unwrap();
        std::env::remove_var("IOCOMPLETION_IO_URING_REFUSE");
        assert!(has_event("iocompletion::port: driver fallback"), "{:?}", events());
        rt.shutdown();
    }
}
