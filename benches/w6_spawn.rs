//! W6: spawning tiny tasks. One thread spawns `N` tasks that each return
//! a number, then awaits every join handle; the figure is tasks per second
//! from the first spawn to the last join.
//!
//! - iocompletion: `Runtime::spawn` on a pool of as many threads as CPUs
//!   (min = max), awaited in `Runtime::block_on`;
//! - tokio: `tokio::spawn` on a multi-thread runtime with as many workers,
//!   awaited in its `block_on`.
//!
//! Goal: at least 1.0x tokio.

mod common;

use std::time::{Duration, Instant};

use common::{Better, Case, Settings};
use iocompletion::Runtime;

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn ours(rt: &Runtime, n: u64) -> Duration {
    let start = Instant::now();
    let sum = rt.block_on(async {
        let handles: Vec<_> = (0..n).map(|i| rt.spawn(async move { i & 1 })).collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.expect("the task ran");
        }
        sum
    });
    let t = start.elapsed();
    assert_eq!(sum, n / 2);
    t
}

fn tokio(rt: &tokio::runtime::Runtime, n: u64) -> Duration {
    let start = Instant::now();
    let sum = rt.block_on(async {
        let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i & 1 })).collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.expect("the task ran");
        }
        sum
    });
    let t = start.elapsed();
    assert_eq!(sum, n / 2);
    t
}

fn main() {
    if !common::benchmarking() {
        return;
    }
    let s = Settings::from_env();
    let threads = cpus();
    let rt = Runtime::builder().min_threads(threads).max_threads(threads).build().expect("runtime");
    let tok = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).build().expect("tokio");
    let n: u64 = s.pick(1_000_000, 100_000);
    if s.harness {
        // Warm both (threads started, allocator caches filled).
        ours(&rt, n / 10);
        tokio(&tok, n / 10);
        let mut case = Case::new(
            "W6",
            &format!("spawn + join {n} tiny tasks, {threads} threads"),
            "tasks/s",
            Better::Higher,
            &["iocompletion", "tokio spawn"],
        );
        case.run_rounds(s.rounds, |c| {
            let t = if c == 0 { ours(&rt, n) } else { tokio(&tok, n) };
            n as f64 / t.as_secs_f64()
        });
        common::report("w6", &[case]);
    }
    if s.criterion {
        let mut cr = common::criterion();
        let mut g = cr.benchmark_group("w6_spawn/10k_tasks");
        g.throughput(criterion::Throughput::Elements(10_000));
        g.bench_function("iocompletion", |b| b.iter_custom(|i| (0..i).map(|_| ours(&rt, 10_000)).sum()));
        g.bench_function("tokio_spawn", |b| b.iter_custom(|i| (0..i).map(|_| tokio(&tok, 10_000)).sum()));
        g.finish();
        cr.final_summary();
    }
    rt.shutdown();
}
