//! S12-S17: the pool's bounds, growth, retirement, availability, shutdown.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use iocompletion::{Error, Handle, IoCompletionManager, Runtime};
use util::{collector, wait_until, Gate};

const HOUR: Duration = Duration::from_secs(3600);

fn post_blocking(rt: &Runtime, gate: &Gate, n: usize) {
    for _ in 0..n {
        let g = gate.clone();
        rt.post_callback(0, move |_, _, _| g.wait()).unwrap();
    }
}

#[test]
fn s12_set_max_below_min_is_rejected() {
    let rt = Runtime::builder().min_threads(4).max_threads(8).build().unwrap();
    assert!(matches!(rt.set_max_threads(3), Err(Error::InvalidArgument(_))));
    assert_eq!(rt.max_threads().unwrap(), 8, "a rejected value changes nothing");
}

#[test]
fn s12_set_max_zero_is_rejected() {
    let rt = Runtime::builder().min_threads(0).max_threads(8).build().unwrap();
    assert!(matches!(rt.set_max_threads(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Runtime::builder().min_threads(0).max_threads(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn s12_set_min_above_max_is_rejected() {
    let rt = Runtime::builder().min_threads(1).max_threads(8).build().unwrap();
    assert!(matches!(rt.set_min_threads(9), Err(Error::InvalidArgument(_))));
    assert_eq!(rt.min_threads().unwrap(), 1);
}

#[test]
fn s12_changes_take_effect_at_once_on_a_running_pool() {
    let rt = Runtime::builder().min_threads(1).max_threads(8).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap(); // the pool is running
    rt.set_max_threads(16).unwrap();
    rt.set_min_threads(16).unwrap(); // min may equal max
    assert_eq!((rt.min_threads().unwrap(), rt.max_threads().unwrap()), (16, 16));
    rt.set_min_threads(2).unwrap();
    rt.set_max_threads(2).unwrap();
    assert_eq!((rt.min_threads().unwrap(), rt.max_threads().unwrap()), (2, 2));
    // The callback has sent; it counts as busy until it has returned.
    wait_until("the callback returned", || rt.stats().busy == 0);
    assert_eq!(rt.available_threads().unwrap(), 2);
}

#[test]
fn s13_defaults_are_cpu_count_and_1000() {
    let rt = Runtime::new().unwrap();
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    assert_eq!(rt.min_threads().unwrap(), cpus);
    assert_eq!(rt.max_threads().unwrap(), 1000);
}

#[test]
fn s14_never_more_than_max_threads() {
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(3)
        .gate_interval(Duration::from_millis(5))
        .port_concurrency(16)
        .build()
        .unwrap();
    let gate = Gate::default();
    post_blocking(&rt, &gate, 12);
    wait_until("3 callbacks block", || gate.arrived() == 3);
    // Give the gate many intervals in which it could wrongly add threads.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(gate.arrived(), 3);
    assert_eq!(rt.stats().peak_threads, 3);
    gate.open();
    wait_until("all 12 ran", || gate.arrived() == 12);
    assert_eq!(rt.stats().peak_threads, 3);
    rt.shutdown();
}

#[test]
fn s14_below_min_a_thread_starts_at_once_when_work_waits() {
    // With a gate interval of an hour, only growth below the minimum can
    // get four callbacks running together.
    let rt = Runtime::builder()
        .min_threads(4)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    let gate = Gate::default();
    post_blocking(&rt, &gate, 4);
    wait_until("4 callbacks run at once", || gate.arrived() == 4);
    gate.open();
    rt.shutdown();
}

#[test]
fn s14_above_min_growth_waits_for_the_gate() {
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    let gate = Gate::default();
    post_blocking(&rt, &gate, 2);
    wait_until("the first callback runs", || gate.arrived() == 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(gate.arrived(), 1, "no second thread before a gate interval passed");
    assert_eq!(rt.stats().threads, 1);
    gate.open();
    rt.shutdown();
}

#[test]
fn s14_above_min_the_gate_grows_the_pool_while_work_waits() {
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .gate_interval(Duration::from_millis(20))
        .port_concurrency(8)
        .build()
        .unwrap();
    let gate = Gate::default();
    post_blocking(&rt, &gate, 4);
    wait_until("the gate grows the pool to 4", || gate.arrived() == 4);
    assert_eq!(rt.stats().threads, 4);
    gate.open();
    rt.shutdown();
}

#[test]
fn s14_blocked_callbacks_do_not_starve_a_port_with_low_concurrency() {
    // Concurrency 1: on the portable backend the pool frees the slot of a
    // callback that has been busy for a gate interval, as the kernel does
    // for a thread that blocks, so more callbacks can run.
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(3)
        .gate_interval(Duration::from_millis(20))
        .port_concurrency(1)
        .build()
        .unwrap();
    let gate = Gate::default();
    post_blocking(&rt, &gate, 3);
    wait_until("3 blocked callbacks run", || gate.arrived() == 3);
    gate.open();
    rt.shutdown();
}

fn grow_to(rt: &Runtime, n: usize) {
    let gate = Gate::default();
    post_blocking(rt, &gate, n);
    wait_until("the pool grows", || gate.arrived() == n);
    gate.open();
}

#[test]
fn s15_idle_threads_above_min_retire_after_keep_alive() {
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .keep_alive(Duration::from_millis(100))
        .gate_interval(Duration::from_millis(10))
        .port_concurrency(8)
        .build()
        .unwrap();
    grow_to(&rt, 4);
    assert_eq!(rt.stats().threads, 4);
    wait_until("the pool shrinks back to min", || rt.stats().threads == 1);
    assert_eq!(rt.stats().retired, 3);
    // And it still works.
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    rt.post_callback(0, move |_, _, _| {
        d.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    wait_until("a completion after shrinking", || done.load(Ordering::SeqCst) == 1);
    rt.shutdown();
}

#[test]
fn s15_threads_at_or_below_min_do_not_retire() {
    let rt = Runtime::builder()
        .min_threads(3)
        .max_threads(4)
        .keep_alive(Duration::from_millis(20))
        .port_concurrency(8)
        .build()
        .unwrap();
    grow_to(&rt, 3);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(rt.stats().threads, 3);
    assert_eq!(rt.stats().retired, 0);
    rt.shutdown();
}

/// A pool that grows to 3 and retires idle workers quickly, with a sink.
fn retiring_pool() -> (Runtime, util::Collector) {
    let rt = Runtime::builder()
        .min_threads(0)
        .max_threads(3)
        .keep_alive(Duration::from_millis(50))
        .gate_interval(Duration::from_millis(10))
        .port_concurrency(8)
        .build()
        .unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    (rt, rx)
}

/// Accepts pending on a listener are not tied to the worker that started
/// them, on any backend: on Unix they wait in their handle's queue, and
/// IOCP (Wine included) completes them whatever thread issued them. So such
/// a worker retires like any idle one, and its accepts still complete
/// exactly once.
#[test]
fn s15_a_worker_with_accepts_pending_still_retires() {
    let (rt, rx) = retiring_pool();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listening = Handle::from(listener);
    rt.bind(None, &listening).unwrap();
    // Three callbacks run at once; two start an accept.
    let gate = Gate::default();
    let starts = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (g, n, l) = (gate.clone(), starts.clone(), listening.clone());
        rt.post_callback(0, move |_, _, _| {
            if n.fetch_add(1, Ordering::SeqCst) < 2 {
                l.accept().start().unwrap();
            }
            g.wait();
        })
        .unwrap();
    }
    wait_until("3 callbacks run", || gate.arrived() == 3);
    gate.open();
    wait_until("the pool shrinks to the port's last worker", || rt.stats().threads == 1);
    // The accepts are still pending and complete once each.
    let _clients: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for _ in 0..2 {
        let mut d = rx.recv_for("accept");
        assert!(d.status.is_success(), "{d:?}");
        assert!(d.request.take_accepted().is_some());
    }
    rx.expect_none(Duration::from_millis(100));
    rt.shutdown();
}

/// Reads and sends pending on sockets do not keep the worker that started
/// them either: Unix queues them on the handle, Windows does not tie them to
/// a thread, and under Wine, which does, the crate issues them from a thread
/// of its own (docs/backends.md). The worker retires; they complete once.
#[test]
fn s15_a_worker_with_transfers_pending_still_retires() {
    let (rt, rx) = retiring_pool();
    const BIG: usize = 32 << 20; // more than loopback buffers hold: it stays pending
    let (mut reading_peer, reading) = util::tcp_pair();
    let (writing_peer, writing) = util::tcp_pair();
    let (reading, writing) = (Handle::from(reading), Handle::from(writing));
    rt.bind(None, &reading).unwrap();
    rt.bind(None, &writing).unwrap();
    // Three callbacks run at once: one starts a read nothing answers yet,
    // one a send nobody reads yet.
    let gate = Gate::default();
    let starts = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (g, n, r, w) = (gate.clone(), starts.clone(), reading.clone(), writing.clone());
        rt.post_callback(0, move |_, _, _| {
            match n.fetch_add(1, Ordering::SeqCst) {
                0 => drop(r.read(vec![0; 8]).start().unwrap()),
                1 => drop(w.write(vec![7; BIG]).start().unwrap()),
                _ => {}
            }
            g.wait();
        })
        .unwrap();
    }
    wait_until("3 callbacks run", || gate.arrived() == 3);
    gate.open();
    wait_until("the pool shrinks to the port's last worker", || rt.stats().threads == 1);
    // The peers answer; each transfer completes once, whole.
    reading_peer.write_all(b"x").unwrap();
    let drain = thread::spawn(move || {
        let mut p = writing_peer;
        let mut buf = vec![0; 1 << 16];
        let mut total = 0;
        while total < BIG {
            let n = std::io::Read::read(&mut p, &mut buf).unwrap();
            assert!(n > 0, "the peer saw the end of stream after {total} bytes");
            total += n;
        }
        total
    });
    let mut got: Vec<(iocompletion::Op, usize)> = (0..2)
        .map(|_| {
            let d = rx.recv_for("read or send");
            assert!(d.status.is_success(), "{d:?}");
            (d.request.op(), d.bytes)
        })
        .collect();
    got.sort_by_key(|&(op, _)| op == iocompletion::Op::Write);
    assert_eq!(got, [(iocompletion::Op::Read, 1), (iocompletion::Op::Write, BIG)]);
    assert_eq!(drain.join().unwrap(), BIG);
    wait_until("the pool shrinks to the port's last worker", || rt.stats().threads == 1);
    rt.shutdown();
}

/// After an echo load ends, the pool shrinks back to `min_threads`: the
/// accepts and reads left pending by the load keep no worker alive.
#[test]
fn s15_after_an_echo_load_the_pool_shrinks_back_to_min() {
    const CLIENTS: usize = 16;
    const ACCEPTS: usize = 6;
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(ACCEPTS + 2)
        .keep_alive(Duration::from_millis(100))
        .gate_interval(Duration::from_millis(10))
        .port_concurrency(16)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listening = Handle::from(listener);
    let server = util::EchoServer::start(&rt, &listening);
    // Grow the pool: ACCEPTS callbacks run at once, each starting an accept
    // from its own worker.
    let gate = Gate::default();
    for _ in 0..ACCEPTS {
        let (g, l) = (gate.clone(), listening.clone());
        rt.post_callback(0, move |_, _, _| {
            l.accept().start().unwrap();
            g.wait();
        })
        .unwrap();
    }
    wait_until("the pool grows", || gate.arrived() == ACCEPTS);
    gate.open();
    assert!(rt.stats().threads >= ACCEPTS);
    // The load: clients connect, echo, close; every accepted connection is
    // echoed and closed by the server when its client closes.
    let clients: Vec<_> =
        (0..CLIENTS).map(|i| thread::spawn(move || util::echo_client(addr, 20, i))).collect();
    for c in clients {
        c.join().unwrap();
    }
    wait_until("every connection is closed by the server", || server.closed() == CLIENTS);
    wait_until("the pool shrinks back to min", || rt.stats().threads == 1);
    // And it still serves.
    util::echo_client(addr, 3, 99);
    assert_eq!(server.lost(), 0);
    rt.shutdown();
}

#[test]
fn s16_available_threads_is_max_minus_busy() {
    let rt = Runtime::builder().min_threads(4).max_threads(5).port_concurrency(8).build().unwrap();
    assert_eq!(rt.available_threads().unwrap(), 5);
    let gate = Gate::default();
    post_blocking(&rt, &gate, 2);
    wait_until("2 callbacks busy", || gate.arrived() == 2);
    assert_eq!(rt.available_threads().unwrap(), 3);
    // Lowering max below the busy count never gives a negative number.
    rt.set_min_threads(1).unwrap();
    rt.set_max_threads(1).unwrap();
    assert_eq!(rt.available_threads().unwrap(), 0);
    gate.open();
    wait_until("nothing busy", || rt.stats().busy == 0);
    assert_eq!(rt.available_threads().unwrap(), 1);
    rt.shutdown();
}

#[test]
fn s17_shutdown_runs_queued_completions_aborts_pending_and_joins() {
    let rt = Runtime::builder().min_threads(2).max_threads(4).build().unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let server = Handle::from(listener.accept().unwrap().0);
    rt.bind(None, &server).unwrap();
    server.read(vec![0; 8]).start().unwrap();

    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let r = ran.clone();
        rt.post_callback(0, move |_, _, _| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    rt.shutdown();
    assert_eq!(ran.load(Ordering::SeqCst), 100, "queued completions ran before shutdown returned");
    let d = rx.recv_for("the pending read");
    assert!(d.status.is_aborted());
    assert_eq!(d.request.into_buffer().len(), 8);
    assert_eq!(rt.stats().threads, 0, "workers were joined");
    // New work is refused; a second shutdown is harmless.
    assert!(matches!(rt.post_callback(0, |_, _, _| {}).unwrap_err().error, Error::Unavailable));
    rt.shutdown();
}

#[test]
fn s17_dropping_the_last_clone_shuts_down() {
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
        let rt2 = rt.clone();
        for _ in 0..50 {
            let r = ran.clone();
            rt2.post_callback(0, move |_, _, _| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 50);
}

#[test]
fn s17_shutdown_from_a_callback_does_not_deadlock() {
    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let rt2 = rt.clone();
    rt.post_callback(0, move |_, _, _| {
        rt2.shutdown();
        tx.lock().unwrap().send(()).unwrap();
    })
    .unwrap();
    rx.recv_timeout(util::DEADLINE).expect("shutdown inside a callback returned");
    assert!(rt.is_shut_down());
}

#[test]
fn s6_workers_are_named() {
    let rt = Runtime::builder().min_threads(1).thread_name("my-io").build().unwrap();
    let (sink, rx) = collector();
    let mut req = rt.new_request(iocompletion::Buffer::None).unwrap();
    req.set_callback(sink);
    rt.post(None, 0, req).unwrap();
    let d = rx.recv_for("post");
    assert!(d.thread.starts_with("my-io-"), "thread name {:?}", d.thread);
    rt.shutdown();
}

/// How long a callback in the tests below waits for what it needs before it
/// gives up and lets the test fail: a failure detector, never reached when
/// the pool is right.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(10);

/// Brings the pool to (at least) `n` live threads, all idle: `n` callbacks
/// run at once (with `min_threads() >= n`, a thread starts at once for each,
/// S14), then return.
fn warm_idle(rt: &Runtime, n: usize) {
    let gate = Gate::default();
    let returned = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let (g, r) = (gate.clone(), returned.clone());
        rt.post_callback(0, move |_, _, _| {
            g.wait();
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    wait_until("the warm-up callbacks run at once", || gate.arrived() == n);
    gate.open();
    wait_until("the pool is warm and idle", || {
        let s = rt.stats();
        returned.load(Ordering::SeqCst) == n && s.threads >= n && s.busy == 0
    });
    // Give the idle threads a moment to settle into their wait on the port,
    // where a wake-up has to find them. Not required: a correct pool passes
    // whether or not they got there.
    let port = rt.default_port().unwrap();
    let settle = Instant::now() + Duration::from_millis(500);
    while port.waiting_threads() < n && Instant::now() < settle {
        thread::sleep(Duration::from_millis(2));
    }
}

/// Counts the callbacks that run at once, and the most ever seen at once.
#[derive(Default)]
struct Meter {
    state: Mutex<MeterState>,
    cv: Condvar,
}

#[derive(Default, Debug, Clone, Copy)]
struct MeterState {
    /// Callbacks inside [`Meter::hold`] now.
    now: usize,
    /// The most that were inside at once.
    max: usize,
    /// Callbacks that left.
    done: usize,
    released: bool,
}

impl Meter {
    /// Called inside a callback: counts it in, waits until `enough` holds,
    /// the meter is released, or `until` passes, then counts it out.
    /// Returns whether `enough` held.
    fn hold(&self, until: Instant, enough: impl Fn(&MeterState) -> bool) -> bool {
        let mut g = self.state.lock().unwrap();
        g.now += 1;
        g.max = g.max.max(g.now);
        self.cv.notify_all();
        while !enough(&g) && !g.released {
            let now = Instant::now();
            if now >= until {
                break;
            }
            g = self.cv.wait_timeout(g, until - now).unwrap().0;
        }
        let ok = enough(&g);
        g.now -= 1;
        g.done += 1;
        self.cv.notify_all();
        ok
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.cv.notify_all();
    }

    fn get(&self) -> MeterState {
        *self.state.lock().unwrap()
    }
}

/// Posts `n` callbacks that each hold `meter` until `enough` holds, the
/// meter is released, or `until` passes.
fn post_held(
    rt: &Runtime,
    meter: &Arc<Meter>,
    n: usize,
    until: Instant,
    enough: impl Fn(&MeterState) -> bool + Clone + Send + Sync + 'static,
) {
    for _ in 0..n {
        let (m, enough) = (meter.clone(), enough.clone());
        rt.post_callback(0, move |_, _, _| {
            m.hold(until, &enough);
        })
        .unwrap();
    }
}

/// S14: work posted from outside the pool never waits behind a callback
/// that blocks while another thread idles. Callback A waits for a signal
/// that callback B, posted right after it, sends; with two warm idle
/// threads, B must run while A waits. A gate interval of an hour leaves no
/// rescue to the gate thread.
#[test]
fn s14_a_post_behind_a_blocking_callback_runs_on_an_idle_thread() {
    let rt = Runtime::builder()
        .min_threads(2)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    warm_idle(&rt, 2);

    let (signal_tx, signal_rx) = mpsc::channel::<()>();
    let (result_tx, result_rx) = mpsc::channel::<bool>();
    let (signal_rx, result_tx) = (Mutex::new(signal_rx), Mutex::new(result_tx));
    rt.post_callback(0, move |_, _, _| {
        let got = signal_rx.lock().unwrap().recv_timeout(CALLBACK_DEADLINE).is_ok();
        result_tx.lock().unwrap().send(got).unwrap();
    })
    .unwrap();
    let signal_tx = Mutex::new(signal_tx);
    rt.post_callback(0, move |_, _, _| {
        let _ = signal_tx.lock().unwrap().send(());
    })
    .unwrap();
    let got = result_rx.recv_timeout(util::DEADLINE).expect("callback A ran and reported");
    assert!(got, "callback B never ran while callback A blocked, with an idle thread in the pool");
    rt.shutdown();
}

/// S14: below the minimum, work queued while every thread is busy starts a
/// thread at once. The pool's one worker runs callback A, which blocks
/// until B runs; B is posted only once A is running, so no worker can see
/// B queued when it takes A: the post itself must start the thread. A gate
/// interval of an hour leaves no throttled growth to fall back on.
#[test]
fn s14_below_min_a_post_while_every_thread_is_busy_starts_a_thread() {
    let rt = Runtime::builder().min_threads(2).max_threads(8).gate_interval(HOUR).build().unwrap();
    let gate = Gate::default();
    let g = gate.clone();
    rt.post_callback(0, move |_, _, _| g.wait()).unwrap();
    wait_until("callback A runs", || gate.arrived() == 1);
    let g = gate.clone();
    rt.post_callback(0, move |_, _, _| g.wait()).unwrap();
    wait_until("callback B runs beside A", || gate.arrived() == 2);
    gate.open();
    assert!(rt.stats().threads <= 2, "growth below the minimum stops at the minimum");
    rt.shutdown();
}

/// S14: four idle threads run four blocking callbacks at once.
#[test]
fn s14_four_idle_threads_run_four_blocking_callbacks_at_once() {
    let rt = Runtime::builder()
        .min_threads(4)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    warm_idle(&rt, 4);

    let meter = Arc::new(Meter::default());
    post_held(&rt, &meter, 4, Instant::now() + CALLBACK_DEADLINE, |s| s.max >= 4);
    wait_until("the four callbacks return", || meter.get().done == 4);
    let max = meter.get().max;
    assert_eq!(max, 4, "with four idle threads, only {max} of four blocking callbacks ran at once");
    rt.shutdown();
}

/// S7: work a thread takes from a sibling counts against the port's
/// concurrency value like work taken from the port. With concurrency 1 and
/// three threads, three callbacks run one at a time. Each holds on for a
/// while (or until it sees a second one running) so that a second one has
/// the chance to run beside it if the pool lets it.
#[test]
fn s7_stolen_work_counts_against_the_port_concurrency() {
    if util::skip_on_wine("Wine ignores the concurrency value of a completion port") {
        return;
    }
    let rt = Runtime::builder()
        .min_threads(3)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(1)
        .build()
        .unwrap();
    let meter = Arc::new(Meter::default());
    for _ in 0..3 {
        let m = meter.clone();
        rt.post_callback(0, move |_, _, _| {
            m.hold(Instant::now() + Duration::from_millis(200), |s| s.max >= 2);
        })
        .unwrap();
    }
    wait_until("the three callbacks return", || meter.get().done == 3);
    let max = meter.get().max;
    assert_eq!(max, 1, "{max} callbacks ran at once on a port of concurrency 1");
    rt.shutdown();
}

/// S12, S14: a lowered `max_threads` holds at once on a running pool, even
/// one with more threads alive than the new maximum: from the call on, at
/// most that many callbacks run at once. Six idle threads; the maximum goes
/// down to 2; two callbacks that block run (the pool may run two), then four
/// more are posted, and none of them may run beside the two.
#[test]
fn s12_lowered_max_threads_bounds_the_callbacks_running_at_once() {
    let rt = Runtime::builder()
        .min_threads(6)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    warm_idle(&rt, 6);
    rt.set_min_threads(2).unwrap();
    rt.set_max_threads(2).unwrap();

    let meter = Arc::new(Meter::default());
    let until = Instant::now() + util::DEADLINE;
    let violation = |s: &MeterState| s.max >= 3;
    post_held(&rt, &meter, 1, until, violation);
    wait_until("the first callback runs", || meter.get().now == 1);
    post_held(&rt, &meter, 1, until, violation);
    wait_until("the second callback runs beside it", || meter.get().now == 2);
    post_held(&rt, &meter, 4, until, violation);
    // Give the idle threads beyond the maximum the chance to take the
    // waiting callbacks; a right pool never lets a third one run, however
    // long this lasts.
    let window = Instant::now() + Duration::from_millis(300);
    while meter.get().max < 3 && Instant::now() < window {
        thread::sleep(Duration::from_millis(2));
    }
    meter.release();
    wait_until("the six callbacks return", || meter.get().done == 6);
    let max = meter.get().max;
    assert!(max <= 2, "{max} callbacks ran at once after set_max_threads(2)");
    rt.shutdown();
}

/// S12, S14: a raised `min_threads` takes effect at once: with work waiting
/// and no thread idle, the pool starts threads up to the new minimum at
/// once, without waiting for the gate (an hour here). Four callbacks that
/// block until all four run are posted to a pool of one thread; once the
/// first runs, the minimum goes up to 4.
#[test]
fn s12_raised_min_threads_starts_threads_at_once_for_waiting_work() {
    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    let meter = Arc::new(Meter::default());
    post_held(&rt, &meter, 4, Instant::now() + CALLBACK_DEADLINE, |s| s.max >= 4);
    // The pool's one thread is busy with the first; three wait.
    wait_until("the first callback runs", || meter.get().now >= 1);
    rt.set_min_threads(4).unwrap();
    wait_until("the four callbacks return", || meter.get().done == 4);
    let max = meter.get().max;
    assert_eq!(max, 4, "after set_min_threads(4), only {max} of four blocking callbacks ran at once");
    rt.shutdown();
}

/// S14: a callback posts follow-up work, then blocks until it has run. With
/// another thread idle, the follow-up runs there at once; it does not wait
/// for the posting thread to come back, nor for the gate (an hour here).
#[test]
fn s14_follow_up_work_posted_by_a_blocked_callback_runs_on_an_idle_thread() {
    let rt = Runtime::builder()
        .min_threads(2)
        .max_threads(8)
        .gate_interval(HOUR)
        .port_concurrency(8)
        .build()
        .unwrap();
    warm_idle(&rt, 2);

    let (result_tx, result_rx) = mpsc::channel::<bool>();
    let result_tx = Mutex::new(result_tx);
    let rt2 = rt.clone();
    rt.post_callback(0, move |_, _, _| {
        let (tx, rx) = mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        rt2.post_callback(0, move |_, _, _| {
            let _ = tx.lock().unwrap().send(());
        })
        .unwrap();
        let ran = rx.recv_timeout(CALLBACK_DEADLINE).is_ok();
        result_tx.lock().unwrap().send(ran).unwrap();
    })
    .unwrap();
    let ran = result_rx.recv_timeout(util::DEADLINE).expect("the first callback ran and reported");
    assert!(ran, "the follow-up never ran while its poster blocked, with an idle thread in the pool");
    rt.shutdown();
}
