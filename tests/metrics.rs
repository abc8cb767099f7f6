//! The runtime's metrics (`iocompletion::metrics`): each test drives a
//! runtime, a port or a handle into a known state (callbacks blocked on a
//! gate, reads waiting on a socket with no data, a port full to its
//! bound) and reads each figure back exactly. No figure depends on time;
//! every wait is bounded by `util::DEADLINE`. The histograms' counts are
//! exact with every operation timed (`set_latency_sampling(1)`, which
//! each test sets: they share the process).

mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use iocompletion::metrics::{Growth, Shrink};
use iocompletion::{Error, Handle, IoCompletionManager, Op, Port, Runtime};
use util::{bind, started, tcp_pair, wait_until, Gate};

/// `n` callbacks posted to `rt`'s default port, each blocking on `gate`.
fn block_callbacks(rt: &Runtime, gate: &Gate, n: usize) {
    for _ in 0..n {
        let g = gate.clone();
        rt.post_callback(0, move |_, _, _| g.wait()).unwrap();
    }
}

/// S13, S14: N callbacks blocked on a gate read back as N busy threads;
/// the rest of the pool is idle; the limits read back as set.
#[test]
fn metrics_busy_and_idle_threads_are_exact() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(3).max_threads(8).port_concurrency(8).build().unwrap();
    let gate = Gate::default();
    block_callbacks(&rt, &gate, 3);
    wait_until("three callbacks block", || gate.arrived() == 3);
    let m = rt.metrics();
    assert_eq!(m.pool.busy, 3, "{:?}", m.pool);
    assert_eq!((m.pool.min, m.pool.max), (3, 8));
    assert_eq!(m.pool.idle, m.pool.threads - 3, "{:?}", m.pool);
    assert!(m.pool.started >= 3, "{:?}", m.pool);
    assert!(m.pool.last_growth.is_some(), "{:?}", m.pool);
    assert_eq!(m.ports.len(), 1, "the default port");
    gate.open();
    wait_until("the callbacks return", || rt.metrics().pool.busy == 0);
    assert_eq!(rt.metrics().pool.idle, rt.metrics().pool.threads);
    rt.shutdown();
}

/// K reads on a socket with no data are K reads in flight, on the handle
/// and on its port; once data comes they complete, counting the bytes.
#[test]
fn metrics_reads_waiting_for_data_are_in_flight() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(1).max_threads(4).build().unwrap();
    let (mut peer, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(&rt, &h);
    const K: u64 = 5;
    for _ in 0..K {
        started(h.read(vec![0; 4]).start());
    }
    let port = h.port().unwrap();
    assert_eq!(h.metrics().in_flight.read, K);
    assert_eq!(h.metrics().in_flight.total(), K);
    assert_eq!(port.metrics().in_flight.read, K);
    assert_eq!(port.metrics().in_flight.total(), K);
    assert_eq!(port.metrics().completions.total(), 0);

    // 20 bytes: each read takes 4.
    peer.write_all(&[7; 20]).unwrap();
    for d in c.recv_n(K as usize) {
        assert_eq!(d.ok(), 4);
    }
    let m = port.metrics();
    assert_eq!(m.in_flight.total(), 0, "{m:?}");
    assert_eq!(m.completions.success, K);
    assert_eq!(m.start_to_completion.count(), K);
    let hm = h.metrics();
    assert_eq!((hm.in_flight.total(), hm.bytes_read, hm.bytes_written), (0, 20, 0));

    started(h.write(b"abc".to_vec()).start());
    assert_eq!(c.recv().ok(), 3);
    assert_eq!(h.metrics().bytes_written, 3);
    assert_eq!(port.metrics().completions.success, K + 1);
    rt.shutdown();
}

/// S24, S33, S11: a cancel, a deadline, a close and an OS error each
/// count under their own outcome, on the port of the handles.
#[test]
fn s24_metrics_count_each_outcome() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(1).max_threads(4).build().unwrap();
    let (mut peer, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(&rt, &h);
    let port = h.port().unwrap();

    // Success.
    peer.write_all(b"hi").unwrap();
    started(h.read(vec![0; 2]).start());
    assert_eq!(c.recv().ok(), 2);
    // Cancelled.
    let id = started(h.read(vec![0; 2]).start());
    h.cancel(id).unwrap();
    assert!(c.recv().status.is_aborted());
    // Timed out: the deadline passes with no data.
    started(
        h.request(Op::Read, vec![0u8; 2].into()).deadline(Instant::now() + Duration::from_millis(20)).start(),
    );
    let d = c.recv();
    assert!(!d.status.is_success() && !d.status.is_aborted(), "{:?}", d.status);
    // Aborted by the handle's close.
    started(h.read(vec![0; 2]).start());
    h.close();
    assert!(c.recv().status.is_aborted());
    // An OS error: a connect nobody answers.
    let addr = util::unused_addr();
    let conn = Handle::from(
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap(),
    );
    let c2 = bind(&rt, &conn);
    assert_eq!(conn.port().unwrap().id(), port.id(), "both on the default port");
    started(conn.connect(addr).start());
    assert!(!c2.recv().status.is_success());

    let o = port.metrics().completions;
    assert_eq!((o.success, o.cancelled, o.timed_out, o.aborted, o.error), (1, 1, 1, 1, 1), "{o:?}");
    assert_eq!(port.metrics().in_flight.total(), 0);
    assert_eq!(h.metrics().in_flight.total(), 0);
    rt.shutdown();
}

/// S35, S9: posts up to a port's bound are counted and queued; the one
/// past it is refused and counted; taking them empties the queue.
#[test]
fn s35_metrics_count_posts_queue_depth_and_refusals() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let port = Port::bounded(1, 3).unwrap();
    for i in 0..3 {
        port.post(i, 0, None).unwrap();
    }
    let e = port.post(9, 0, None).unwrap_err();
    assert!(matches!(e.error, Error::Full { bound: 3 }));
    let m = port.metrics();
    assert_eq!((m.posts, m.refused, m.queued), (3, 1, 3), "{m:?}");
    for _ in 0..3 {
        port.get(Some(util::DEADLINE)).unwrap();
    }
    let m = port.metrics();
    assert_eq!((m.posts, m.refused, m.queued), (3, 1, 0), "{m:?}");
    port.close().unwrap();
}

/// S8: every request's completion and every post with a request are
/// timed: one value per completion in each histogram the pool records.
#[test]
fn metrics_histograms_count_each_completion() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let tx = std::sync::Arc::new(tx);
    const N: u64 = 10;
    for _ in 0..N {
        let tx = tx.clone();
        rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    }
    for _ in 0..N {
        rx.recv_timeout(util::DEADLINE).unwrap();
    }
    let port = rt.default_port().unwrap();
    wait_until("the last callback is timed", || port.metrics().callback.count() == N);
    let m = port.metrics();
    assert_eq!(m.posts, N);
    assert_eq!(m.completion_to_callback.count(), N);
    assert_eq!(m.start_to_completion.count(), 0, "posts start no request");
    assert!(m.callback.percentile(0.5).is_some());
    assert!(m.callback.percentile(0.5) <= m.callback.percentile(1.0));
    assert_eq!(rt.metrics().total().posts, N);
    rt.shutdown();
}

/// The OS side of a port: a completion that came from the OS was
/// returned by at least one call into it; no overflow on a quiet port.
#[test]
fn metrics_os_entries_and_their_completions() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let (mut peer, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(&rt, &h);
    started(h.read(vec![0; 1]).start());
    peer.write_all(b"x").unwrap();
    assert_eq!(c.recv().ok(), 1);
    let os = h.port().unwrap().metrics().os;
    assert!(os.entries >= 1, "{os:?}");
    assert!(os.completions >= 1, "{os:?}");
    assert_eq!(os.overflows, 0, "{os:?}");
    rt.shutdown();
}

/// S12, S14: a minimum raised while work waits starts a thread for it,
/// and the pool says so.
#[test]
fn s14_metrics_say_why_the_pool_grew() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .gate_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let gate = Gate::default();
    block_callbacks(&rt, &gate, 2);
    wait_until("one callback blocks", || gate.arrived() == 1);
    assert_eq!(rt.metrics().pool.last_growth, Some(Growth::NewPort));
    assert_eq!(rt.metrics().total().queued, 1, "the second post waits");
    rt.set_min_threads(2).unwrap();
    wait_until("both callbacks block", || gate.arrived() == 2);
    let m = rt.metrics();
    assert_eq!(m.pool.last_growth, Some(Growth::MinimumRaised));
    assert_eq!((m.pool.busy, m.total().queued), (2, 0));
    gate.open();
    rt.shutdown();
}

/// S15: a thread idle for the keep-alive above the minimum retires, and
/// the pool says why.
#[test]
fn s15_metrics_say_why_the_pool_shrank() {
    iocompletion::metrics::set_latency_sampling(1); // every value timed
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .keep_alive(Duration::from_millis(20))
        .gate_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let gate = Gate::default();
    block_callbacks(&rt, &gate, 2);
    wait_until("one callback blocks", || gate.arrived() == 1);
    rt.set_min_threads(2).unwrap();
    wait_until("both callbacks block", || gate.arrived() == 2);
    rt.set_min_threads(1).unwrap();
    assert_eq!(rt.metrics().pool.last_shrink, None);
    gate.open();
    wait_until("one thread retires", || rt.metrics().pool.retired == 1);
    let m = rt.metrics();
    assert_eq!(m.pool.last_shrink, Some(Shrink::Idle));
    assert_eq!(m.pool.threads, 1);
    rt.shutdown();
}
