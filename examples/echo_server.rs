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
//! Each completion runs on a pool worker and starts the connection's next
//! request: an accept starts a wait for data, data starts a read, a read
//! starts a write of the bytes it got, a write starts the next wait. A
//! read of 0 bytes (the peer closed) or an error ends the connection.
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
//! Every wait for data carries a deadline (S33): a connection that sends
//! nothing for `IDLE` (5 minutes) is closed, so a peer that vanished
//! without a FIN or RST does not hold its descriptor for ever.

use std::collections::HashMap;
use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iocompletion::{Handle, Op, Request, Runtime, Status};

/// Bytes read per request.
const BUF_SIZE: usize = 16 * 1024;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(300);
/// Accepts kept pending, so a burst of connections is taken at once.
const ACCEPTS: usize = 32;

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    closed: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    idle_closed: AtomicU64,
}

struct Server {
    rt: Runtime,
    /// Keep a buffer in a pending read instead of waiting with a zero-byte read.
    hold_buffers: bool,
    /// Set each connection to skip the port on success.
    skip: bool,
    listener: Handle,
    /// Open connections: the table owns them. Callbacks reach their handle
    /// through their request and hold the server only weakly, so nothing
    /// owns itself.
    conns: Mutex<HashMap<u64, Handle>>,
    next_id: AtomicU64,
    /// Accepts pending on the listener (kept at `ACCEPTS` while the
    /// process has descriptors to spare).
    armed: AtomicUsize,
    counters: Counters,
}

impl Server {
    fn start(
        rt: &Runtime,
        addr: SocketAddr,
        hold_buffers: bool,
        skip: bool,
    ) -> Result<Arc<Server>, Box<dyn Error>> {
        let listener = Handle::from(TcpListener::bind(addr)?);
        let server = Arc::new(Server {
            rt: rt.clone(),
            hold_buffers,
            skip,
            listener,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            armed: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        let weak = Arc::downgrade(&server);
        rt.bind_io_completion_callback(
            &server.listener,
            Arc::new(move |status: Status, _bytes: usize, req: Request| {
                if let Some(server) = weak.upgrade() {
                    server.on_accept(status, req);
                }
            }),
            0,
        )?;
        server.top_up_accepts();
        if server.armed.load(Ordering::Acquire) == 0 {
            return Err("no accept could start".into());
        }
        Ok(server)
    }

    fn on_accept(self: &Arc<Self>, status: Status, mut req: Request) {
        if status.is_aborted() {
            return; // the listener was closed
        }
        self.armed.fetch_sub(1, Ordering::AcqRel);
        // An accept that failed for lack of descriptors (EMFILE, ENFILE,
        // ENOBUFS; S37) is not restarted at once, which would fail again:
        // top_up_accepts runs again when a connection closes and every few
        // seconds from main.
        if !status.is_out_of_resources() {
            self.top_up_accepts();
        }
        if let Err(e) = status.result(0) {
            eprintln!("accept failed: {e}");
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let conn = req.take_accepted().expect("a successful accept holds its connection");
        if self.skip {
            // Before the bind; false where the OS has nothing to skip.
            if let Err(e) = conn.skip_completion_port_on_success() {
                eprintln!("skip_completion_port_on_success: {e}");
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let weak: Weak<Server> = Arc::downgrade(self);
        let bound = self.rt.bind_io_completion_callback(
            &conn,
            Arc::new(move |status: Status, bytes: usize, req: Request| {
                if let Some(server) = weak.upgrade() {
                    server.on_io(id, status, bytes, req);
                }
            }),
            0,
        );
        if let Err(e) = bound {
            eprintln!("bind: {e}");
            return;
        }
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().unwrap().insert(id, conn.clone());
        if self.wait_for_data(&conn, Vec::new()).is_err() {
            self.close(id);
        }
    }

    /// The connection's next read: a zero-byte wait for data (the buffer,
    /// emptied, is dropped), or with `--hold-buffers` the real read.
    fn wait_for_data(&self, conn: &Handle, mut buf: Vec<u8>) -> Result<(), iocompletion::StartError> {
        let buf = if self.hold_buffers {
            // Room for the read, not zeroed: a read fills the capacity.
            buf.clear();
            buf.reserve(BUF_SIZE);
            buf
        } else {
            Vec::new()
        };
        conn.start_before(Op::Read, buf.into(), Instant::now() + IDLE).map(drop)
    }

    fn on_io(&self, id: u64, status: Status, bytes: usize, mut req: Request) {
        // The request knows its handle: no table lookup (and no lock shared
        // by every connection) per completion.
        let Some(conn) = req.handle() else { return };
        let op = req.op();
        let buf = req.take_buffer().into_vec();
        let next = match op {
            _ if !status.is_success() => {
                let timed_out = status.result(0).is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                let counter = if timed_out { &self.counters.idle_closed } else { &self.counters.errors };
                if !status.is_aborted() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                return self.close(id);
            }
            // The zero-byte wait ended (its buffer has no room): data is
            // waiting, or the stream ended or failed; the real read tells.
            Op::Read if buf.capacity() == 0 => conn.read(Vec::with_capacity(BUF_SIZE)).map(drop),
            Op::Read if bytes == 0 => return self.close(id), // the peer closed
            // Echo what came in: the read set the length to the bytes read.
            Op::Read => conn.write(buf).map(drop),
            Op::Write => {
                self.counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                self.wait_for_data(&conn, buf)
            }
            other => unreachable!("no {other:?} is started on a connection"),
        };
        if next.is_err() {
            self.close(id);
        }
    }

    /// Drops the connection from the table; the last clone closes it. A
    /// closed connection frees a descriptor: accepts that failed for lack
    /// of one start again.
    fn close(&self, id: u64) {
        let conn = self.conns.lock().unwrap().remove(&id);
        if conn.is_some() {
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
            drop(conn);
            self.top_up_accepts();
        }
    }

    /// Starts accepts until `ACCEPTS` are pending, or one fails to start
    /// (with no descriptor left, accept fails at once; it is retried later,
    /// never in a loop).
    fn top_up_accepts(&self) {
        loop {
            let n = self.armed.load(Ordering::Acquire);
            if n >= ACCEPTS {
                return;
            }
            if self.armed.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            if let Err(e) = self.listener.accept() {
                self.armed.fetch_sub(1, Ordering::AcqRel);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("accept could not start: {e} (retried when a connection closes)");
                return;
            }
        }
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
                    "unknown argument {other:?} (expected --hold-buffers or --skip-completion-port)"
                )
                .into())
            }
        }
    }

    let rt = Runtime::builder().min_threads(min).max_threads(max).build()?;
    let server = Server::start(&rt, addr, hold_buffers, skip)?;
    println!("echo server on {addr} ({min}..{max} threads); Ctrl-C to stop");

    let start = Instant::now();
    let mut last_bytes = 0;
    loop {
        std::thread::sleep(Duration::from_secs(5));
        // Descriptors may have been freed by something other than a closed
        // connection: restart any accept that could not start.
        server.top_up_accepts();
        let c = &server.counters;
        let bytes = c.bytes.load(Ordering::Relaxed);
        let stats = rt.stats();
        println!(
            "[{:>5.0}s] connections: {} open, {} accepted, {} closed ({} idle); echoed {:.1} MiB ({:.1} MiB/s); errors {}; \
             threads {} (peak {}), completions {} ({} without a kernel packet); RSS {}",
            start.elapsed().as_secs_f64(),
            server.conns.lock().unwrap().len(),
            c.accepted.load(Ordering::Relaxed),
            c.closed.load(Ordering::Relaxed),
            c.idle_closed.load(Ordering::Relaxed),
            bytes as f64 / (1 << 20) as f64,
            (bytes - last_bytes) as f64 / (1 << 20) as f64 / 5.0,
            c.errors.load(Ordering::Relaxed),
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
