//! Posts completions through the runtime's pool and measures how many it
//! runs per second.
//!
//! ```text
//! cargo run --release --example post_completions -- [COUNT] [MIN_THREADS] [MAX_THREADS]
//! ```
//!
//! Defaults: 1,000,000 completions, the number of CPUs, 64 threads. Each
//! post is `PostQueuedCompletionStatus`; each completion runs the sink on a
//! pool worker, which counts it. The program waits for the last one, then
//! prints the rate and the pool's counters.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use iocompletion::{Buffer, IoCompletionManager, Request, Runtime, Status};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |s| s.replace('_', "").parse())?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let min: usize = args.next().map_or(Ok(cpus), |s| s.parse())?;
    let max: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    if count == 0 {
        return Err("COUNT must be at least 1".into());
    }

    let rt = Runtime::builder().min_threads(min).max_threads(max).build()?;

    // The sink counts completions and checks each carries the value posted;
    // the one that completes the count says so.
    let done = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let (all_done, wait) = mpsc::sync_channel::<()>(1);
    {
        let (done, sum) = (done.clone(), sum.clone());
        rt.set_completion_sink(Arc::new(move |status: Status, bytes: usize, _req: Request| {
            assert!(status.is_success());
            sum.fetch_add(bytes as u64, Ordering::Relaxed);
            if done.fetch_add(1, Ordering::AcqRel) + 1 == count {
                let _ = all_done.send(());
            }
        }))?;
    }

    let start = Instant::now();
    for i in 0..count {
        rt.post(None, (i % 1000) as usize, rt.new_request(Buffer::None)?)?;
    }
    let posted = start.elapsed();
    wait.recv()?;
    let elapsed = start.elapsed();

    let expect_sum: u64 = (0..count).map(|i| i % 1000).sum();
    assert_eq!(sum.load(Ordering::Relaxed), expect_sum, "every posted value came back once");
    let stats = rt.stats();
    println!(
        "{count} completions posted in {:.3} s, all run in {:.3} s",
        posted.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  {:.0} completions/s with {min}..{max} threads", count as f64 / elapsed.as_secs_f64());
    println!(
        "  threads used: peak {} (alive now {}, started {}, retired {})",
        stats.peak_threads, stats.threads, stats.started, stats.retired
    );
    println!("  pool counters: {stats:?}");
    rt.shutdown();
    Ok(())
}
