//! The `tracing` feature with a subscriber that panics on every call: the
//! pool loses no thread to it and a shutdown ends (S6, S17). One test: the
//! subscriber is the process's global one.

mod util;

use std::sync::mpsc;

use iocompletion::Runtime;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

struct Panics;

impl Subscriber for Panics {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        panic!("the subscriber fails on a span")
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        panic!("the subscriber fails on an event")
    }
    fn enter(&self, _: &Id) {
        panic!("the subscriber fails on enter")
    }
    fn exit(&self, _: &Id) {
        panic!("the subscriber fails on exit")
    }
}

#[test]
fn s17_a_subscriber_that_panics_loses_no_pool_thread_and_shutdown_ends() {
    tracing::subscriber::set_global_default(Panics).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = Runtime::builder().min_threads(2).max_threads(4).build().unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..8 {
            let tx = std::sync::Mutex::new(tx.clone());
            rt.post_callback(i, move |_, _, _| tx.lock().unwrap().send(i).unwrap()).unwrap();
        }
        let mut got: Vec<usize> = (0..8).map(|_| rx.recv_timeout(util::DEADLINE).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        let stats = rt.stats();
        rt.shutdown();
        done_tx.send(stats).unwrap();
    });
    let stats = done_rx.recv_timeout(util::DEADLINE).expect("the shutdown ended");
    assert_eq!(stats.replaced, 0, "no pool thread failed outside a callback: {stats:?}");
}
