//! A TCP echo server driven entirely by completions.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [MIN_THREADS] [MAX_THREADS] [--hold-buffers] [--skip-completion-port]
//! ```
//!
//! Defaults: `127.0.0.1:7878`, the number of CPUs, 64. Every few seconds it
//! prints its counters and its resident memory; stop it with Ctrl-C. Try
//! it with `cargo run --release --example echo_client`.
//!
//! Each request carries its own one-shot callback, run once on a pool
//! worker, which starts the connection's next request: an accept starts a
//! wait for data, data starts a read, a read starts a write of the bytes
//! it got, a write starts the next wait. A read of 0 bytes (the peer
//! closed) or an error ends the connection.
//!
//! The wait for data is a zero-byte read (S31): it holds no buffer, so an
//! idle connection costs no buffer memory; the buffer is allocated when
//! data is there and dropped after the echo. `--hold-buffers` starts the
//! real read at once instead, each connection keeping its buffer while it
//! waits (one request and one completion fewer per round trip).
//!
//! `--skip-completion-port` sets each connection to skip the port on
//! success before it is bound (`Handle::skip_completion_port_on_success`):
//! on Windows a read or write that completes at once then costs no kernel
//! packet. The counters line shows how many completions went that way.
//!
//! Every read carries a deadline (S33): a connection that sends nothing
//! for `IDLE` (5 minutes) is closed, so a peer that vanished without a FIN
//! or RST does not hold its descriptor for ever.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocompletion::{Completed, Handle, Op, Runtime, Status};

#[path = "common/listen.rs"]
mod listen;

const BUF_SIZE: usize = 16 * 1024; // bytes read per request
const IDLE: Duration = Duration::from_secs(300); // a connection idle this long is closed
const ACCEPTS: usize = 32; // accepts kept pending, so a burst is taken at once
const RETRY: Duration = Duration::from_millis(100); // an accept with no descriptor to spare waits this long

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    closed: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    idle: AtomicU64,
}

struct Server {
    rt: Runtime,
    listener: Handle,
    hold_buffers: bool,
    skip: bool, // skip the port on success (Windows)
    counters: Counters,
}

impl Server {
    /// Starts one accept; `ACCEPTS` of them run side by side, each starting
    /// the next when it completes.
    fn accept(self: &Arc<Self>) {
        let server = self.clone();
        if let Err(e) = self.listener.accept().then(move |r| server.accepted(r)) {
            self.accept_failed(&e.error.into(), false);
        }
    }

    fn accepted(self: &Arc<Self>, r: io::Result<(Handle, Option<SocketAddr>)>) {
        let conn = match r {
            Ok((conn, _)) => conn,
            Err(e) => return self.accept_failed(&e, true),
        };
        self.accept();
        self.counters.accepted.fetch_add(1, Relaxed);
        // Before the bind; false where the OS has nothing to skip.
        let skipped = if self.skip { conn.skip_completion_port_on_success().map(drop) } else { Ok(()) };
        match skipped.and_then(|()| self.rt.bind_async(&conn)) {
            Ok(()) => self.read(conn, Vec::new()),
            Err(_) => self.close(&conn, &self.counters.errors),
        }
    }

    /// With no descriptor to spare (S37) the next accept starts a moment
    /// later, not at once in a loop; after other errors, at once.
    fn accept_failed(self: &Arc<Self>, e: &io::Error, again: bool) {
        let (status, server) = (Status::from_io_error(e), self.clone());
        if status.is_aborted() {
            return; // the listener closed
        }
        self.counters.errors.fetch_add(1, Relaxed);
        if status.is_out_of_resources() {
            let _ = self.rt.timer_after(RETRY, move |_| server.accept());
        } else if again {
            self.accept();
        }
    }

    /// The connection's next read: `buf` without room is the zero-byte wait
    /// for data; with `--hold-buffers` every read has room.
    fn read(self: &Arc<Self>, conn: Handle, mut buf: Vec<u8>) {
        if self.hold_buffers {
            buf.clear();
            buf.reserve(BUF_SIZE); // not zeroed: a read fills the capacity (S32)
        }
        let (server, c, idle) = (self.clone(), conn.clone(), Instant::now() + IDLE); // no table, no lock
        let read =
            conn.request(Op::Read, buf.into()).deadline(idle).then(move |done| server.on_read(c, done));
        if read.is_err() {
            self.close(&conn, &self.counters.errors);
        }
    }

    fn on_read(self: &Arc<Self>, conn: Handle, done: Completed) {
        let (room, c, server) = (done.request.buffer().capacity(), conn.clone(), self.clone());
        let written = match done.result() {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return self.close(&conn, &self.counters.idle),
            Err(_) => return self.close(&conn, &self.counters.errors),
            Ok(_) if room == 0 => return self.read(conn, Vec::with_capacity(BUF_SIZE)), // data, or the end
            Ok(0) => return self.close(&conn, &self.counters.closed),                   // the peer closed
            Ok(_) => conn.write(done.into_buffer().into_vec()).then(move |(r, buf)| match r {
                Ok(n) => server.echoed(c, n, buf),
                Err(_) => server.close(&c, &server.counters.errors),
            }),
        };
        if written.is_err() {
            self.close(&conn, &self.counters.errors);
        }
    }

    fn echoed(self: &Arc<Self>, conn: Handle, n: usize, buf: Vec<u8>) {
        self.counters.bytes.fetch_add(n as u64, Relaxed);
        self.read(conn, if self.hold_buffers { buf } else { Vec::new() })
    }

    /// Closes the connection and counts why.
    fn close(&self, conn: &Handle, why: &AtomicU64) {
        conn.close();
        why.fetch_add(1, Relaxed);
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7878").parse()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let min: usize = args.next().map_or(Ok(cpus), |s| s.parse())?;
    let max: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let (mut hold_buffers, mut skip) = (false, false);
    for flag in args {
        match flag.as_str() {
            "--hold-buffers" => hold_buffers = true,
            "--skip-completion-port" => skip = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (expected --hold-buffers, --skip-completion-port)"
                )
                .into())
            }
        }
    }

    let rt = Runtime::builder().min_threads(min).max_threads(max).build()?;
    let listener = Handle::from(listen::listen(addr)?);
    rt.bind_async(&listener)?;
    let server =
        Arc::new(Server { rt: rt.clone(), listener, hold_buffers, skip, counters: Counters::default() });
    (0..ACCEPTS).for_each(|_| server.accept());
    println!("echo server on {addr} ({min}..{max} threads, driver {}); Ctrl-C to stop", rt.driver()?);

    let start = Instant::now();
    let mut last_bytes = 0;
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let c = &server.counters;
        let (accepted, bytes) = (c.accepted.load(Relaxed), c.bytes.load(Relaxed));
        let ended = c.closed.load(Relaxed) + c.idle.load(Relaxed) + c.errors.load(Relaxed);
        let stats = rt.stats();
        println!(
            "[{:>5.0}s] connections: {} open, {accepted} accepted, {} closed ({} idle); echoed {:.1} MiB \
             ({:.1} MiB/s); errors {}; threads {} (peak {}), completions {} ({} without a kernel packet); RSS {}",
            start.elapsed().as_secs_f64(),
            accepted.saturating_sub(ended),
            c.closed.load(Relaxed),
            c.idle.load(Relaxed),
            bytes as f64 / (1 << 20) as f64,
            (bytes - last_bytes) as f64 / (1 << 20) as f64 / 5.0,
            c.errors.load(Relaxed),
            stats.threads,
            stats.peak_threads,
            stats.completions,
            server.listener.port().map_or(0, |p| p.direct_completions()),
            rss().map_or_else(|| "unknown".into(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0)),
        );
        last_bytes = bytes;
    }
}

/// Resident memory in KiB, where the OS tells it (`/proc/self/status`).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
