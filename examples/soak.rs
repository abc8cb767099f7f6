//! A soak run: echo traffic with peers that reset mid-transfer, reads that
//! are cancelled or cut by a close, and file writes read back, all at once
//! on one runtime for a fixed time. Every started request is tracked until
//! its one completion.
//!
//! ```text
//! cargo run --release --example soak -- [SECONDS]
//! ```
//!
//! Default 20 seconds. Every second it prints the requests started,
//! completed and in flight, the process's open descriptors and resident
//! memory (Linux). At the end it shuts the runtime down and exits non-zero
//! if a request completed twice, never completed, a file read returned
//! other bytes than were written, or descriptors were left open.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocompletion::WeakHandle;
use iocompletion::{Handle, Op, Request, RequestId, Runtime, Status};

/// Every request started and not yet completed, and the faults seen.
#[derive(Default)]
struct Ledger {
    in_flight: Mutex<HashSet<RequestId>>,
    started: AtomicU64,
    completed: AtomicU64,
    wrong_data: AtomicU64,
    round_trips: AtomicU64,
}

impl Ledger {
    fn started<B>(&self, r: Result<RequestId, iocompletion::StartError<B>>) -> Option<RequestId> {
        let id = r.ok()?;
        // A completion may arrive before this insert: it then finds the id
        // missing and records it, and the insert below removes it again.
        let mut f = self.in_flight.lock().unwrap();
        if !f.insert(id) {
            f.remove(&id);
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    fn completed(&self, id: RequestId) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.in_flight.lock().unwrap();
        if !f.remove(&id) {
            // Not started yet as far as the ledger knows (the race above),
            // or completed before: a second completion of the same id
            // finds it absent again after the start removed it.
            f.insert(id);
        }
    }
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Open server connections, by number: the table owns them, their
/// callbacks hold them weakly.
type Conns = Arc<Mutex<HashMap<u64, Handle>>>;

/// The server side of one echo connection: read, then write back what came.
fn serve(rt: &Runtime, ledger: &Arc<Ledger>, conns: &Conns, number: u64, conn: Handle) {
    let (l, weak, table) = (ledger.clone(), WeakHandle::from(&conn), conns.clone());
    let bound = rt.bind_io_completion_callback(
        &conn,
        Arc::new(move |status: Status, bytes: usize, mut req: Request| {
            l.completed(req.id());
            let Some(conn) = weak.upgrade() else { return };
            let close = |conn: Handle| {
                table.lock().unwrap().remove(&number);
                conn.close();
            };
            if !status.is_success() || (req.op() == Op::Read && bytes == 0) {
                return close(conn);
            }
            let mut buf = req.take_buffer().into_vec();
            // A read sets the length to the bytes read (S32); a cleared
            // buffer keeps its capacity for the next read.
            let next = if req.op() == Op::Read {
                conn.write(buf)
            } else {
                buf.clear();
                conn.read(buf)
            };
            if l.started(next.start()).is_none() {
                close(conn);
            }
        }),
        0,
    );
    if bound.is_ok() {
        conns.lock().unwrap().insert(number, conn.clone());
        if ledger.started(conn.read(vec![0; 4096]).start()).is_none() {
            conns.lock().unwrap().remove(&number);
        }
    }
}

/// One echo client: round trips of varying sizes; every 50th connection
/// resets mid-transfer.
fn client(addr: std::net::SocketAddr, ledger: Arc<Ledger>, stop: Arc<AtomicBool>, seed: u64) {
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else { continue };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        n += 1;
        for round in 0..20u64 {
            let len = 1 + ((n * 7919 + round * 104_729) % 8000) as usize;
            let msg: Vec<u8> = (0..len).map(|i| (i as u64 ^ n ^ round) as u8).collect();
            if n % 50 == 0 && round == 3 {
                let _ = s.write_all(&msg[..len / 2]);
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                break;
            }
            s.write_all(&msg).unwrap();
            let mut back = vec![0; len];
            s.read_exact(&mut back).unwrap();
            if back != msg {
                ledger.wrong_data.fetch_add(1, Ordering::Relaxed);
            }
            ledger.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let secs: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let fds_before = open_fds();
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = Runtime::builder().min_threads(2).max_threads(16).build()?;

    // Echo: a listener whose accepts start connections.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let lh = Handle::from(listener);
    let conns: Conns = Arc::default();
    let next = AtomicU64::new(0);
    let (l, r2, weak, table) = (ledger.clone(), rt.clone(), WeakHandle::from(&lh), conns.clone());
    rt.bind_io_completion_callback(
        &lh,
        Arc::new(move |status: Status, _: usize, mut req: Request| {
            l.completed(req.id());
            if status.is_aborted() {
                return;
            }
            if let Some(lh) = weak.upgrade() {
                l.started(lh.accept().start());
            }
            if let Some(conn) = req.take_accepted() {
                serve(&r2, &l, &table, next.fetch_add(1, Ordering::Relaxed), conn);
            }
        }),
        0,
    )?;
    for _ in 0..8 {
        ledger.started(lh.accept().start());
    }
    let mut threads = Vec::new();
    for seed in 0..6 {
        let (l, s) = (ledger.clone(), stop.clone());
        threads.push(std::thread::spawn(move || client(addr, l, s, seed * 1000)));
    }

    // Cancels and closes: reads that never get data, cancelled or cut.
    let (l, s, r2) = (ledger.clone(), stop.clone(), rt.clone());
    threads.push(std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
            let _peer = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
            let h = Handle::from(l2.accept().unwrap().0);
            let lc = l.clone();
            let cb = Arc::new(move |_: Status, _: usize, req: Request| lc.completed(req.id()));
            if r2.bind_io_completion_callback(&h, cb, 0).is_err() {
                continue;
            }
            let ids: Vec<_> = (0..4).filter_map(|_| l.started(h.read(vec![0; 256]).start())).collect();
            for id in ids.iter().take(2) {
                let _ = h.cancel(*id);
            }
            h.close();
        }
    }));

    // Files: blocks written, then read back and compared.
    let (l, s, r2) = (ledger.clone(), stop.clone(), rt.clone());
    threads.push(std::thread::spawn(move || {
        let path = std::env::temp_dir().join(format!("iocompletion-soak-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let h = file_handle(f).expect("a file handle");
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let (lc, tx) = (l.clone(), Mutex::new(tx));
        let cb = Arc::new(move |_: Status, _: usize, req: Request| {
            lc.completed(req.id());
            let _ = tx.lock().unwrap().send(req);
        });
        r2.bind_io_completion_callback(&h, cb, 0).unwrap();
        let mut round = 0u64;
        while !s.load(Ordering::Relaxed) {
            round += 1;
            let block: Vec<u8> = (0..4096u64).map(|i| (i * 31 + round) as u8).collect();
            let at = (round % 64) * 4096;
            if l.started(h.write(block.clone()).at(at).start()).is_none() {
                break;
            }
            let _ = rx.recv_timeout(Duration::from_secs(20));
            if l.started(h.read(vec![0; 4096]).at(at).start()).is_none() {
                break;
            }
            if let Ok(mut req) = rx.recv_timeout(Duration::from_secs(20)) {
                if req.take_buffer().into_vec() != block {
                    l.wrong_data.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        drop(h);
        let _ = std::fs::remove_file(&path);
    }));

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "[{:>3}s] round trips {}, requests started {}, completed {}, in flight {}; fds {}; RSS {}",
            start.elapsed().as_secs(),
            ledger.round_trips.load(Ordering::Relaxed),
            ledger.started.load(Ordering::Relaxed),
            ledger.completed.load(Ordering::Relaxed),
            ledger.in_flight.lock().unwrap().len(),
            open_fds().map_or("?".into(), |n| n.to_string()),
            rss_mib().map_or("?".into(), |m| format!("{m:.1} MiB")),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a soak thread panicked")?;
    }
    drop(lh);
    conns.lock().unwrap().clear();
    rt.shutdown();
    drop(rt);

    let started = ledger.started.load(Ordering::Relaxed);
    let completed = ledger.completed.load(Ordering::Relaxed);
    let left = ledger.in_flight.lock().unwrap().len();
    let wrong = ledger.wrong_data.load(Ordering::Relaxed);
    let fds_after = open_fds();
    println!(
        "done: {} round trips; {started} requests started, {completed} completed, {left} without exactly one completion; \
         {wrong} wrong data; fds {} before, {} after",
        ledger.round_trips.load(Ordering::Relaxed),
        fds_before.map_or("?".into(), |n| n.to_string()),
        fds_after.map_or("?".into(), |n| n.to_string()),
    );
    if started != completed || left != 0 || wrong != 0 || fds_before != fds_after {
        return Err("the soak lost or repeated a completion, saw wrong data, or leaked descriptors".into());
    }
    Ok(())
}

/// A handle over a std `File`: `From` on Unix, where it cannot fail.
#[cfg(unix)]
fn file_handle(f: std::fs::File) -> iocompletion::Result<Handle> {
    Ok(Handle::from(f))
}

/// A handle over a std `File`: `TryFrom` on Windows, which reopens the
/// file for overlapped I/O (and can fail).
#[cfg(windows)]
fn file_handle(f: std::fs::File) -> iocompletion::Result<Handle> {
    Handle::try_from(f)
}
