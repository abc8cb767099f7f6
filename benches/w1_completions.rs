//! W1: completion throughput. 1-2 producer threads post empty completions;
//! the pool runs a no-op callback (counts it) for each.
//!
//! Comparators in the same run:
//! - on Linux, the same runtime on the epoll driver (the default one is
//!   io_uring, S36), so the two drivers are compared round by round;
//! - crossbeam-channel MPMC, unbounded, the same producers and as many
//!   consumer threads as the pool's minimum: a queue alone, the ceiling;
//! - tokio's multi-thread runtime (as many workers), one spawned no-op task
//!   per item.
//!
//! Also post-to-callback latency (p50/p99): one item in flight at a time,
//! stamped when posted and read in the callback.
//!
//! `W1_CALLGRIND=N` runs only N posted completions through the pool, at most
//! 64 in flight, from the main thread (no comparators, no criterion): the
//! fixed workload counted under callgrind, see docs/benchmarks.md.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use common::{Better, Case, Settings};
use iocompletion::{Buffer, Builder, IoCompletionManager, Request, Runtime, Status};

/// Counts items and wakes the waiting thread when the target is reached.
struct Counter {
    done: AtomicU64,
    target: AtomicU64,
    waiter: Mutex<Option<Thread>>,
}

impl Counter {
    const fn new() -> Counter {
        Counter { done: AtomicU64::new(0), target: AtomicU64::new(u64::MAX), waiter: Mutex::new(None) }
    }

    fn arm(&self, n: u64) {
        *self.waiter.lock().unwrap() = Some(thread::current());
        self.done.store(0, Ordering::Release);
        self.target.store(n, Ordering::Release);
    }

    #[inline]
    fn hit(&self) {
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            if let Some(t) = self.waiter.lock().unwrap().as_ref() {
                t.unpark();
            }
        }
    }

    fn wait(&self) {
        let n = self.target.load(Ordering::Acquire);
        while self.done.load(Ordering::Acquire) < n {
            thread::park_timeout(Duration::from_millis(5));
        }
        self.target.store(u64::MAX, Ordering::Release);
    }
}

static OURS: Counter = Counter::new();
#[cfg(target_os = "linux")]
static OURS_EPOLL: Counter = Counter::new();
static CHAN: Counter = Counter::new();
static TOKIO: Counter = Counter::new();

/// Latency slot: the callback stores the ns (since EPOCH) at which it ran.
static SEEN: AtomicU64 = AtomicU64::new(0);

fn threads() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

/// Splits `n` items over `p` producers, runs `post(count)` on each.
fn produce(n: u64, p: usize, post: impl Fn(u64) + Sync) {
    thread::scope(|s| {
        for i in 0..p as u64 {
            let share = n / p as u64 + u64::from(i < n % p as u64);
            let post = &post;
            s.spawn(move || post(share));
        }
    });
}

struct Ours {
    rt: Runtime,
    epoch: Instant,
    latency: Arc<std::sync::atomic::AtomicBool>,
    count: &'static Counter,
}

impl Ours {
    fn new() -> Ours {
        Ours::with(Runtime::builder(), &OURS)
    }

    fn with(builder: Builder, count: &'static Counter) -> Ours {
        let rt = builder.min_threads(threads()).max_threads(64).build().expect("runtime");
        let epoch = Instant::now();
        let latency = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lat = latency.clone();
        rt.set_completion_sink(Arc::new(move |_s: Status, _b: usize, _r: Request| {
            if lat.load(Ordering::Relaxed) {
                SEEN.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
            } else {
                count.hit();
            }
        }))
        .expect("sink");
        Ours { rt, epoch, latency, count }
    }

    fn run(&self, n: u64, p: usize) -> Duration {
        self.count.arm(n);
        let start = Instant::now();
        produce(n, p, |k| {
            for _ in 0..k {
                let req = self.rt.new_request(Buffer::None).expect("request");
                self.rt.post(None, 0, req).expect("post");
            }
        });
        self.count.wait();
        start.elapsed()
    }

    fn latency(&self, k: usize) -> Vec<u64> {
        self.latency.store(true, Ordering::Release);
        let v = sample_latency(k, self.epoch, || {
            let req = self.rt.new_request(Buffer::None).expect("request");
            self.rt.post(None, 0, req).expect("post");
        });
        self.latency.store(false, Ordering::Release);
        v
    }
}

struct Chan {
    tx: crossbeam_channel::Sender<u64>,
    epoch: Instant,
    _consumers: Vec<thread::JoinHandle<()>>,
}

impl Chan {
    fn new() -> Chan {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let epoch = Instant::now();
        let consumers = (0..threads())
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    while let Ok(v) = rx.recv() {
                        if v == 1 {
                            SEEN.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                        } else {
                            CHAN.hit();
                        }
                    }
                })
            })
            .collect();
        Chan { tx, epoch, _consumers: consumers }
    }

    fn run(&self, n: u64, p: usize) -> Duration {
        CHAN.arm(n);
        let start = Instant::now();
        produce(n, p, |k| {
            for _ in 0..k {
                self.tx.send(0).expect("send");
            }
        });
        CHAN.wait();
        start.elapsed()
    }

    fn latency(&self, k: usize) -> Vec<u64> {
        sample_latency(k, self.epoch, || self.tx.send(1).expect("send"))
    }
}

struct Tokio {
    rt: tokio::runtime::Runtime,
    epoch: Instant,
}

impl Tokio {
    fn new() -> Tokio {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads()).build().expect("tokio");
        Tokio { rt, epoch: Instant::now() }
    }

    fn run(&self, n: u64, p: usize) -> Duration {
        TOKIO.arm(n);
        let h = self.rt.handle();
        let start = Instant::now();
        produce(n, p, |k| {
            for _ in 0..k {
                drop(h.spawn(async { TOKIO.hit() }));
            }
        });
        TOKIO.wait();
        start.elapsed()
    }

    fn latency(&self, k: usize) -> Vec<u64> {
        let epoch = self.epoch;
        let h = self.rt.handle();
        sample_latency(k, epoch, || {
            drop(h.spawn(async move { SEEN.store(epoch.elapsed().as_nanos() as u64, Ordering::Release) }));
        })
    }
}

/// `k` samples of post-to-callback latency in ns, one item in flight.
fn sample_latency(k: usize, epoch: Instant, post: impl Fn()) -> Vec<u64> {
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        SEEN.store(0, Ordering::Release);
        let t0 = epoch.elapsed().as_nanos() as u64;
        post();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = SEEN.load(Ordering::Acquire);
            if seen != 0 {
                out.push(seen.saturating_sub(t0));
                break;
            }
            assert!(Instant::now() < deadline, "a completion did not run within 5 s");
            thread::yield_now();
        }
    }
    out
}

/// The crate's runtimes: the default one, and on Linux the same on epoll.
fn ours_all() -> Vec<(&'static str, Ours)> {
    // Only Linux has a second driver to add.
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut v = vec![("iocompletion", Ours::new())];
    #[cfg(target_os = "linux")]
    v.push((
        "iocompletion epoll",
        Ours::with(Runtime::builder().driver(iocompletion::DriverKind::Epoll), &OURS_EPOLL),
    ));
    for (name, o) in &v {
        eprintln!("W1: {name} runs on {}", o.rt.driver().expect("driver"));
    }
    v
}

fn harness(s: &Settings, ours: &[(&str, Ours)], chan: &Chan, tok: &Tokio) -> Vec<Case> {
    let n: u64 = s.pick(400_000, 50_000);
    let mut names: Vec<&str> = ours.iter().map(|(name, _)| *name).collect();
    names.extend(["crossbeam-channel", "tokio multi-thread"]);
    let k = ours.len();
    let mut cases = Vec::new();
    for p in [1usize, 2] {
        // Warm-up: threads started, allocator primed.
        for (_, o) in ours {
            o.run(n / 4, p);
        }
        chan.run(n / 4, p);
        tok.run(n / 4, p);
        let mut case = Case::new(
            "W1",
            &format!("{p} producer(s), {n} completions"),
            "completions/s",
            Better::Higher,
            &names,
        );
        case.run_rounds(s.rounds, |c| {
            let d = match c {
                c if c < k => ours[c].1.run(n, p),
                c if c == k => chan.run(n, p),
                _ => tok.run(n, p),
            };
            n as f64 / d.as_secs_f64()
        });
        cases.push(case);
    }
    let samples = s.pick(5000, 1000);
    let mut p50 = Case::new("W1", "post-to-callback latency p50, 1 in flight", "us", Better::Lower, &names);
    let mut p99 = Case::new("W1", "post-to-callback latency p99, 1 in flight", "us", Better::Lower, &names);
    let mut p99s = vec![Vec::new(); names.len()];
    p50.run_rounds(s.rounds, |c| {
        let mut v = match c {
            c if c < k => ours[c].1.latency(samples),
            c if c == k => chan.latency(samples),
            _ => tok.latency(samples),
        };
        let q = common::percentiles_us(&mut v, &[0.5, 0.99]);
        p99s[c].push(q[1]);
        q[0]
    });
    p99.values = p99s;
    cases.push(p50);
    cases.push(p99);
    cases
}

fn criterion_groups(ours: &[(&str, Ours)], chan: &Chan, tok: &Tokio) {
    let mut c = common::criterion();
    for p in [1usize, 2] {
        let mut g = c.benchmark_group(format!("w1_completions/{p}_producers"));
        g.throughput(criterion::Throughput::Elements(1));
        for (name, o) in ours {
            g.bench_function(name.replace(' ', "_"), |b| b.iter_custom(|i| o.run(i, p)));
        }
        g.bench_function("crossbeam_channel", |b| b.iter_custom(|i| chan.run(i, p)));
        g.bench_function("tokio_spawn", |b| b.iter_custom(|i| tok.run(i, p)));
        g.finish();
    }
    c.final_summary();
}

/// The fixed workload for callgrind: `n` completions, one producer.
fn callgrind_run(n: u64) {
    let ours = Ours::new();
    // At most 64 completions in flight, posted from this thread. Callgrind
    // runs one thread at a time; without a bound the producer would post
    // everything before a worker ran, and no freed request could come back
    // to it, which never happens natively at steady state.
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(64);
        OURS.arm(k);
        for _ in 0..k {
            let req = ours.rt.new_request(Buffer::None).expect("request");
            ours.rt.post(None, 0, req).expect("post");
        }
        OURS.wait();
        left -= k;
    }
    let d = start.elapsed();
    ours.rt.shutdown();
    println!("{n} completions in {d:?}");
}

fn main() {
    if let Some(n) = std::env::var("W1_CALLGRIND").ok().and_then(|v| v.parse().ok()) {
        return callgrind_run(n);
    }
    if !common::benchmarking() {
        return; // `cargo test --benches`: nothing to check here
    }
    let s = Settings::from_env();
    let ours = ours_all();
    let chan = Chan::new();
    let tok = Tokio::new();
    if s.harness {
        let cases = harness(&s, &ours, &chan, &tok);
        common::report("w1", &cases);
    }
    if s.criterion {
        criterion_groups(&ours, &chan, &tok);
    }
}
