//! What a bound on the port (S35) does when the consumer stalls: the only
//! worker blocks in a callback while the main thread posts COUNT requests
//! of 1 KiB each. Unbounded, every post is accepted and held; with a bound,
//! the posts past it are refused with `Error::Full` and their buffers come
//! back to the caller, so memory stays flat.
//!
//! ```text
//! cargo run --release --example bounded_posts -- [COUNT] [BOUND]
//! ```
//!
//! Defaults: 1,000,000 posts, no bound. Prints how many were accepted and
//! refused and the resident memory before and after (Linux).

use std::error::Error;
use std::sync::{Arc, Barrier};

use iocompletion::Runtime;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |s| s.replace('_', "").parse())?;
    let bound: Option<usize> = args.next().map(|s| s.replace('_', "").parse()).transpose()?;

    let mut builder = Runtime::builder().min_threads(1).max_threads(1);
    if let Some(n) = bound {
        builder = builder.max_pending(n);
    }
    let rt = builder.build()?;

    // Block the only worker until every post is made.
    let (started, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (s, r) = (started.clone(), release.clone());
    rt.post_callback(0, move |_, _, _| {
        s.wait();
        r.wait();
    })?;
    started.wait();

    let before = rss_mib();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..count {
        let mut req = rt.new_request(vec![1u8; 1024].into())?;
        req.set_callback(Arc::new(|_, _, _| {}));
        match rt.post(None, 0, req) {
            Ok(()) => accepted += 1,
            Err(e) => {
                // The refused request's buffer comes back whole.
                assert_eq!(e.buffer.len(), 1024);
                refused += 1;
            }
        }
    }
    let after = rss_mib();
    println!(
        "bound {}: {accepted} posts accepted, {refused} refused; RSS {before} -> {after}",
        bound.map_or_else(|| "none".to_string(), |n| n.to_string()),
    );
    release.wait();
    rt.shutdown();
    Ok(())
}

/// Resident memory, where the OS tells it (`/proc/self/status`).
fn rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kib: f64 =
                s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} MiB", kib / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}
