//! S12-S17: the pool's bounds, growth, retirement, availability, shutdown.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

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
    rt.post_callback(0, |_, _, _| {}).unwrap(); // the pool is running
    rt.set_max_threads(16).unwrap();
    rt.set_min_threads(16).unwrap(); // min may equal max
    assert_eq!((rt.min_threads().unwrap(), rt.max_threads().unwrap()), (16, 16));
    rt.set_min_threads(2).unwrap();
    rt.set_max_threads(2).unwrap();
    assert_eq!((rt.min_threads().unwrap(), rt.max_threads().unwrap()), (2, 2));
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

#[test]
fn s15_a_thread_with_a_request_in_flight_does_not_retire() {
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
    // Two silent connections whose reads stay pending.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        clients.push(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let h = Handle::from(listener.accept().unwrap().0);
        rt.bind(None, &h).unwrap();
        servers.push(h);
    }
    // Three callbacks run at once; two of them start a read.
    let gate = Gate::default();
    let starters = Arc::new(Mutex::new(servers.clone()));
    for _ in 0..3 {
        let (g, s) = (gate.clone(), starters.clone());
        rt.post_callback(0, move |_, _, _| {
            if let Some(h) = s.lock().unwrap().pop() {
                h.read(vec![0; 8]).unwrap();
            }
            g.wait();
        })
        .unwrap();
    }
    wait_until("3 callbacks run", || gate.arrived() == 3);
    gate.open();
    // The thread without a request retires; the two with one stay.
    wait_until("the idle thread retires", || rt.stats().threads == 2);
    thread::sleep(Duration::from_millis(400)); // many keep-alives
    assert_eq!(rt.stats().threads, 2, "threads with a read in flight must not retire");
    // The reads complete; their threads may go (the port keeps its last one).
    for c in &mut clients {
        c.write_all(b"x").unwrap();
    }
    for _ in 0..2 {
        assert_eq!(rx.recv_for("read").bytes, 1);
    }
    wait_until("the pool shrinks to the port's last worker", || rt.stats().threads == 1);
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
    server.read(vec![0; 8]).unwrap();

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
