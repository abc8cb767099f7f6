//! W5: pool elasticity. A burst of `MAX` callbacks that block until
//! released: how long until `MAX` run at once (the pool grew to its
//! maximum), and, once released, how long until the pool is back to its
//! minimum.
//!
//! - iocompletion: min = CPUs, max = 16, keep-alive 1 s, gate interval
//!   100 ms (above the minimum the pool adds one thread per gate interval,
//!   as the CLR does, so growth is throttled by design);
//! - tokio spawn_blocking: as many workers, max_blocking_threads 16,
//!   thread_keep_alive 1 s; its minimum is the workers (no blocking threads).
//!
//! Goal: back to the minimum within keep-alive + 1 s.
//!
//! Only the round harness runs here: one sample takes seconds, which
//! criterion's repeated sampling cannot use meaningfully.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Better, Case, Settings};
use iocompletion::Runtime;

const MAX: usize = 16;
const KEEP_ALIVE: Duration = Duration::from_secs(1);
const GATE: Duration = Duration::from_millis(100);
/// Give up waiting after this long.
const LIMIT: Duration = Duration::from_secs(20);

fn cpus() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

/// Waits until `cond` holds, polling every millisecond; the time it took.
fn until(start: Instant, cond: impl Fn() -> bool) -> Duration {
    while !cond() {
        if start.elapsed() > LIMIT {
            return LIMIT;
        }
        thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

fn block(running: &AtomicUsize, release: &AtomicBool) {
    running.fetch_add(1, Ordering::AcqRel);
    while !release.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(1));
    }
    running.fetch_sub(1, Ordering::AcqRel);
}

/// (time to grow to MAX running, time back to the minimum after release)
fn ours(rt: &Runtime, min: usize) -> (Duration, Duration) {
    let running = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    assert_eq!(rt.stats().threads, min, "pool at its minimum before the burst");
    let start = Instant::now();
    for _ in 0..MAX {
        let (r, g) = (running.clone(), release.clone());
        rt.post_callback(0, move |_, _, _| block(&r, &g)).expect("post");
    }
    let grow = until(start, || running.load(Ordering::Acquire) == MAX);
    release.store(true, Ordering::Release);
    let t = Instant::now();
    let shrink = until(t, || rt.stats().threads <= min && running.load(Ordering::Acquire) == 0);
    (grow, shrink)
}

struct Tokio {
    rt: tokio::runtime::Runtime,
    live: Arc<AtomicUsize>,
    base: usize,
}

impl Tokio {
    fn new() -> Tokio {
        let live = Arc::new(AtomicUsize::new(0));
        let (a, b) = (live.clone(), live.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus())
            .max_blocking_threads(MAX)
            .thread_keep_alive(KEEP_ALIVE)
            .on_thread_start(move || {
                a.fetch_add(1, Ordering::AcqRel);
            })
            .on_thread_stop(move || {
                b.fetch_sub(1, Ordering::AcqRel);
            })
            .build()
            .expect("tokio");
        let start = Instant::now();
        until(start, || live.load(Ordering::Acquire) >= cpus());
        Tokio { rt, live, base: cpus() }
    }

    fn run(&self) -> (Duration, Duration) {
        let running = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        for _ in 0..MAX {
            let (r, g) = (running.clone(), release.clone());
            drop(self.rt.spawn_blocking(move || block(&r, &g)));
        }
        let grow = until(start, || running.load(Ordering::Acquire) == MAX);
        release.store(true, Ordering::Release);
        let t = Instant::now();
        let shrink = until(t, || {
            self.live.load(Ordering::Acquire) <= self.base && running.load(Ordering::Acquire) == 0
        });
        (grow, shrink)
    }
}

fn main() {
    if !common::benchmarking() {
        return;
    }
    let s = Settings::from_env();
    if !s.harness {
        return;
    }
    let min = cpus();
    let rt = Runtime::builder()
        .min_threads(min)
        .max_threads(MAX)
        .keep_alive(KEEP_ALIVE)
        .gate_interval(GATE)
        .build()
        .expect("runtime");
    // Start the pool's minimum: one completion per thread, then settle.
    for _ in 0..min {
        rt.post_callback(0, |_, _, _| thread::sleep(Duration::from_millis(20))).expect("post");
    }
    let t = Instant::now();
    until(t, || rt.stats().threads == min && rt.stats().busy == 0);
    let tok = Tokio::new();

    let names = ["iocompletion", "tokio spawn_blocking"];
    let mut grow = Case::new(
        "W5",
        &format!("grow to {MAX} threads under blocking callbacks"),
        "ms",
        Better::Lower,
        &names,
    );
    let mut shrink = Case::new(
        "W5",
        &format!("back to min after the burst (keep-alive {} s)", KEEP_ALIVE.as_secs()),
        "ms",
        Better::Lower,
        &names,
    );
    let rounds = s.pick(s.rounds, s.rounds.min(2));
    for r in 0..rounds {
        let mut got = [(Duration::ZERO, Duration::ZERO); 2];
        for k in 0..2 {
            let c = (r + k) % 2;
            got[c] = if c == 0 { ours(&rt, min) } else { tok.run() };
        }
        for (c, (g, s)) in got.iter().enumerate() {
            grow.values[c].push(g.as_secs_f64() * 1e3);
            shrink.values[c].push(s.as_secs_f64() * 1e3);
        }
        eprintln!(
            "  [W5] round {}/{rounds}: iocompletion grow {:.3} s shrink {:.3} s; tokio grow {:.3} s shrink {:.3} s",
            r + 1,
            got[0].0.as_secs_f64(),
            got[0].1.as_secs_f64(),
            got[1].0.as_secs_f64(),
            got[1].1.as_secs_f64()
        );
    }
    let limit = (KEEP_ALIVE + Duration::from_secs(1)).as_secs_f64();
    let worst = shrink.values[0].iter().cloned().fold(0.0, f64::max) / 1e3;
    println!(
        "W5 goal: back to min within keep-alive + 1 s = {limit:.1} s: median {:.3} s, worst {worst:.3} s: {}",
        common::median(&shrink.values[0]) / 1e3,
        if worst <= limit { "met" } else { "missed" }
    );
    common::report("w5", &[grow, shrink]);
    rt.shutdown();
}
