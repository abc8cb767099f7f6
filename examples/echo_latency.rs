//! A latency client for any TCP echo server: holds many connections open,
//! each sending one message per period and timing its echo, and prints the
//! percentiles of those round trips.
//!
//! ```text
//! cargo run --release --example echo_latency -- [ADDR] [CONNECTIONS] [MESSAGE_BYTES] [SECONDS] [PERIOD_MS]
//! ```
//!
//! Defaults: `127.0.0.1:7878`, 10000 connections, 64 bytes, 10 seconds,
//! one message per connection per 1000 ms (10,000 round trips a second in
//! all). The first second after all connections are up is not counted.
//! Written on tokio (a dev-dependency), so it measures the crate's server
//! and a tokio server alike; it is not built on the crate it measures.

use std::error::Error;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    let conns: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let period = Duration::from_millis(args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000));
    if conns == 0 || size == 0 || period.is_zero() {
        return Err("connections, message bytes and period must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(run(addr, conns, size, Duration::from_secs(secs), period))
}

async fn run(
    addr: String,
    conns: usize,
    size: usize,
    run_for: Duration,
    period: Duration,
) -> Result<(), Box<dyn Error>> {
    // Connect in waves, so the server's accept backlog never overflows.
    let gate = std::sync::Arc::new(Semaphore::new(128));
    let mut streams = Vec::with_capacity(conns);
    let mut pending = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (gate, addr) = (gate.clone(), addr.clone());
        pending.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        }));
    }
    for p in pending {
        streams.push(p.await??);
    }
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + run_for;
    let mut tasks = Vec::with_capacity(conns);
    for (i, mut s) in streams.into_iter().enumerate() {
        // Spread the connections' sends evenly over the period.
        let offset = period.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let msg = vec![(i % 251) as u8; size];
            let mut back = vec![0u8; size];
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval_at((Instant::now() + offset).into(), period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = Instant::now();
                if t >= end {
                    return Ok::<_, std::io::Error>(samples);
                }
                s.write_all(&msg).await?;
                s.read_exact(&mut back).await?;
                if back != msg {
                    return Err(std::io::Error::other("wrong echo"));
                }
                if t >= start {
                    samples.push(t.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    if all.is_empty() {
        return Err("no round trip was timed".into());
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} round trips over {conns} connections: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        all.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        all[all.len() - 1]
    );
    Ok(())
}
