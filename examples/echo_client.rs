//! A load client for any TCP echo server: many connections, each sending a
//! message and checking every byte of its echo, over and over.
//!
//! ```text
//! cargo run --release --example echo_client -- [ADDR] [CONNECTIONS] [MESSAGE_BYTES] [SECONDS]
//! ```
//!
//! Defaults: `127.0.0.1:7878`, 50 connections, 4096 bytes, 5 seconds. It
//! prints round trips per second and exits non-zero if any echoed byte was
//! wrong or any connection failed.
//!
//! Each connection is a small state machine run by its completions on the
//! pool: connect, then per round one write of the message and reads until
//! the whole echo is back; the next round starts when both are done.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iocompletion::{Handle, Op, Request, Runtime, Status};

/// Largest read per request.
const READ_SIZE: usize = 64 * 1024;

/// What every connection shares: the end time and the totals.
struct Totals {
    deadline: Instant,
    round_trips: AtomicU64,
    failures: AtomicU64,
    finished: AtomicUsize,
}

/// The round in progress on one connection.
struct Round {
    number: u64,
    message: Vec<u8>,
    received: usize,
    written: bool,
    over: bool,
}

struct Conn {
    id: usize,
    handle: Handle,
    size: usize,
    round: Mutex<Round>,
    totals: Arc<Totals>,
}

/// The message of round `round` on connection `id`: different every time,
/// so a stale or misplaced echo shows.
fn message(id: usize, round: u64, size: usize) -> Vec<u8> {
    let mut x =
        (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Conn {
    fn on_complete(&self, status: Status, bytes: usize, req: Request) {
        let mut round = self.round.lock().unwrap();
        if round.over {
            return;
        }
        if let Err(e) = status.result(bytes) {
            return self.fail(&mut round, &format!("{:?} failed: {e}", req.op()));
        }
        match req.op() {
            Op::Connect(_) => self.start_round(&mut round),
            Op::Write => round.written = true,
            Op::Read => {
                if bytes == 0 {
                    return self.fail(&mut round, "the server closed the connection");
                }
                let at = round.received;
                let buf = req.into_buffer().into_vec();
                if at + bytes > self.size || buf[..bytes] != round.message[at..at + bytes] {
                    return self.fail(&mut round, &format!("wrong echo at bytes {at}..{}", at + bytes));
                }
                round.received += bytes;
                if round.received < self.size {
                    if let Err(e) = self.handle.read(buf).start() {
                        return self.fail(&mut round, &format!("read: {e}"));
                    }
                }
            }
            other => unreachable!("no {other:?} is started here"),
        }
        if round.written && round.received == self.size {
            self.totals.round_trips.fetch_add(1, Ordering::Relaxed);
            if Instant::now() < self.totals.deadline {
                round.number += 1;
                self.start_round(&mut round);
            } else {
                self.finish(&mut round);
            }
        }
    }

    fn start_round(&self, round: &mut Round) {
        round.message = message(self.id, round.number, self.size);
        round.received = 0;
        round.written = false;
        let started = self
            .handle
            .write(round.message.clone())
            .start()
            .and_then(|_| self.handle.read(vec![0; self.size.min(READ_SIZE)]).start());
        if let Err(e) = started {
            self.fail(round, &format!("start: {e}"));
        }
    }

    fn fail(&self, round: &mut Round, why: &str) {
        eprintln!("connection {}: {why}", self.id);
        self.totals.failures.fetch_add(1, Ordering::Relaxed);
        self.finish(round);
    }

    fn finish(&self, round: &mut Round) {
        round.over = true;
        self.handle.close();
        self.totals.finished.fetch_add(1, Ordering::Release);
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7878").parse()?;
    let conns: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    let size: usize = args.next().map_or(Ok(4096), |s| s.parse())?;
    let secs: f64 = args.next().map_or(Ok(5.0), |s| s.parse())?;
    if size == 0 || conns == 0 {
        return Err("connections and message size must be at least 1".into());
    }

    let rt = Runtime::builder().max_threads(64).build()?;
    let start = Instant::now();
    let totals = Arc::new(Totals {
        deadline: start + Duration::from_secs_f64(secs),
        round_trips: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
    });

    let mut all = Vec::with_capacity(conns);
    for id in 0..conns {
        let conn = Arc::new(Conn {
            id,
            handle: Handle::from(socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?),
            size,
            round: Mutex::new(Round {
                number: 0,
                message: Vec::new(),
                received: 0,
                written: false,
                over: false,
            }),
            totals: totals.clone(),
        });
        // The callback holds the connection weakly; `all` owns it.
        let weak: Weak<Conn> = Arc::downgrade(&conn);
        rt.bind_io_completion_callback(
            &conn.handle,
            Arc::new(move |status: Status, bytes: usize, req: Request| {
                if let Some(conn) = weak.upgrade() {
                    conn.on_complete(status, bytes, req);
                }
            }),
            0,
        )?;
        conn.handle.connect(addr).start()?;
        all.push(conn);
    }

    // Wait for every connection to finish its last round (or fail).
    let give_up = totals.deadline + Duration::from_secs(30);
    while totals.finished.load(Ordering::Acquire) < conns {
        if Instant::now() > give_up {
            return Err("some connections did not finish 30 s after the deadline".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let trips = totals.round_trips.load(Ordering::Relaxed);
    let failures = totals.failures.load(Ordering::Relaxed);
    let stats = rt.stats();
    println!("{conns} connections x {size} bytes to {addr} for {elapsed:.2} s");
    println!(
        "  {trips} round trips, {:.0} round trips/s, {:.1} MiB/s each way, every byte checked",
        trips as f64 / elapsed,
        (trips * size as u64) as f64 / elapsed / (1 << 20) as f64
    );
    println!(
        "  failures: {failures}; pool: peak {} threads, {} completions",
        stats.peak_threads, stats.completions
    );
    rt.shutdown();
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
