//! A tour of iocompletion in one process, finished in a few seconds:
//!
//! 1. a runtime: completion ports served by an elastic thread pool;
//! 2. a completion posted by hand, run on a pool worker;
//! 3. a TCP echo server whose completions drive it from callbacks;
//! 4. a few clients that connect, send, and check their echo, driven from
//!    the main thread through a channel;
//! 5. a file copied with positional requests, several in flight;
//! 6. a summary of the pool's counters.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocompletion::{CompletionSink, Handle, Op, Request, Runtime, Status};

const CLIENTS: usize = 4;
const MESSAGE: usize = 256 * 1024;

/// A completion as the main thread receives it: who it is for, and what the
/// runtime handed back.
struct Done {
    tag: usize,
    status: Status,
    bytes: usize,
    request: Request,
}

/// A callback that tags each completion and sends it to the main thread.
fn to_channel(tx: &Sender<Done>, tag: usize) -> Arc<dyn CompletionSink> {
    let tx = Mutex::new(tx.clone());
    Arc::new(move |status: Status, bytes: usize, request: Request| {
        let _ = tx.lock().unwrap().send(Done { tag, status, bytes, request });
    })
}

fn recv(rx: &Receiver<Done>) -> Result<Done, Box<dyn Error>> {
    Ok(rx.recv_timeout(Duration::from_secs(20)).map_err(|_| "no completion for 20 s")?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();

    // 1. The runtime. Handles bound to it complete on its pool.
    let rt = Runtime::builder().min_threads(2).max_threads(16).build()?;
    // S36: IOCP on Windows; on Linux io_uring, or epoll and the reason why not.
    println!("driver: {}", rt.driver()?);

    // 2. PostQueuedCompletionStatus: the simplest completion there is.
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(42, move |status, bytes, _request| {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let _ = tx.lock().unwrap().send(format!("{status:?}, {bytes} bytes, on thread {name}"));
    })?;
    println!("posted completion: {}", rx.recv_timeout(Duration::from_secs(20))?);

    // 3. The echo server.
    let listener = echo_server(&rt, CLIENTS)?;
    let addr = listener.local_addr()?;
    println!("echo server listening on {addr}");

    // 4. The clients.
    let echoed = run_clients(&rt, addr)?;
    println!(
        "{CLIENTS} clients: each sent {} KiB and checked its echo, {echoed} bytes in all",
        MESSAGE / 1024
    );
    listener.close(); // nothing more to accept

    // 5. The file copy.
    let (copied, secs) = copy_a_file(&rt)?;
    println!("file copy: {copied} bytes with positional requests in {:.1} ms, checked", secs * 1000.0);

    // 6. What the pool did.
    let s = rt.stats();
    println!(
        "pool: {} completions on {} threads (peak {}), {} panics; all done in {:.2} s",
        s.completions,
        s.threads,
        s.peak_threads,
        s.panics,
        started.elapsed().as_secs_f64()
    );
    rt.shutdown();
    Ok(())
}

/// Starts an echo server that accepts `accepts` connections and returns its
/// listener; dropping or closing that closes the listener. Each accepted
/// connection reads, writes back what it read, and reads again, all from
/// its completion callback, until its peer closes.
fn echo_server(rt: &Runtime, accepts: usize) -> Result<Handle, Box<dyn Error>> {
    let listener = Handle::from(TcpListener::bind("127.0.0.1:0")?);
    let rt2 = rt.clone();
    rt.bind_io_completion_callback(
        &listener,
        Arc::new(move |status: Status, _bytes: usize, mut request: Request| {
            if !status.is_success() {
                return; // aborted: the listener closed
            }
            // An accept hands its new connection back in the request.
            let conn = request.take_accepted().expect("an accepted connection");
            if let Err(e) = echo(&rt2, conn) {
                eprintln!("echo: {e}");
            }
        }),
        0,
    )?;
    for _ in 0..accepts {
        listener.accept().start()?;
    }
    Ok(listener)
}

/// Echoes one connection from its own callback.
fn echo(rt: &Runtime, conn: Handle) -> Result<(), Box<dyn Error>> {
    // The callback reaches its connection through this slot. Emptying the
    // slot drops the last handle, which closes the connection.
    let slot = Arc::new(Mutex::new(Some(conn.clone())));
    let cb_slot = slot.clone();
    rt.bind_io_completion_callback(
        &conn,
        Arc::new(move |status: Status, bytes: usize, mut request: Request| {
            let mut slot = cb_slot.lock().unwrap();
            let Some(conn) = slot.clone() else { return };
            let mut buf = request.take_buffer().into_vec();
            let next = match request.op() {
                // The read set the length to the bytes read: send them back.
                Op::Read if status.is_success() && bytes > 0 => conn.write(buf),
                Op::Write if status.is_success() => {
                    buf.clear(); // the next read fills the capacity again
                    conn.read(buf)
                }
                _ => {
                    // 0 bytes (the peer closed), an error, or an abort.
                    slot.take();
                    return;
                }
            };
            if next.start().is_err() {
                slot.take();
            }
        }),
        0,
    )?;
    conn.read(Vec::with_capacity(64 * 1024)).start()?;
    Ok(())
}

/// Connects the clients, sends each a message of its own, and checks each
/// echoed byte; returns the number of bytes checked.
fn run_clients(rt: &Runtime, addr: SocketAddr) -> Result<usize, Box<dyn Error>> {
    let (tx, rx) = mpsc::channel();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let h = Handle::from(socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?);
        rt.bind_io_completion_callback(&h, to_channel(&tx, i), 0)?;
        h.connect(addr).start()?;
        let message: Vec<u8> = (0..MESSAGE).map(|j| (i * 7 + j % 251) as u8).collect();
        clients.push((h, message, 0usize));
    }

    let (mut finished, mut checked) = (0, 0);
    while finished < CLIENTS {
        let done = recv(&rx)?;
        let (h, message, received) = &mut clients[done.tag];
        done.status.result(done.bytes).map_err(|e| format!("client {}: {e}", done.tag))?;
        match done.request.op() {
            Op::Connect(_) => {
                // The write owns its copy of the message until it completes.
                h.write(message.clone()).start()?;
                h.read(vec![0; 64 * 1024]).start()?;
            }
            Op::Write => {}
            Op::Read => {
                let n = done.bytes;
                let buf = done.request.into_buffer().into_vec();
                if n == 0 || buf[..n] != message[*received..*received + n] {
                    return Err(format!("client {}: bad echo at byte {received}", done.tag).into());
                }
                *received += n;
                checked += n;
                if *received < MESSAGE {
                    h.read(buf).start()?;
                } else {
                    h.close(); // the server reads 0 bytes and closes its side
                    finished += 1;
                }
            }
            other => unreachable!("no {other:?} was started"),
        }
    }
    Ok(checked)
}

/// Writes a 4 MiB file, copies it chunk by chunk with `read_at` and
/// `write_at`, 8 reads in flight, and compares; returns (bytes, seconds).
fn copy_a_file(rt: &Runtime) -> Result<(u64, f64), Box<dyn Error>> {
    const CHUNK: usize = 128 * 1024;
    let dir = std::env::temp_dir();
    let (src, dst) = (
        dir.join(format!("quickstart-src-{}", std::process::id())),
        dir.join(format!("quickstart-dst-{}", std::process::id())),
    );
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&src, &data)?;

    let input = file_handle(std::fs::File::open(&src)?)?;
    let output = file_handle(std::fs::File::create(&dst)?)?;
    let (tx, rx) = mpsc::channel();
    rt.bind_io_completion_callback(&input, to_channel(&tx, 0), 0)?;
    rt.bind_io_completion_callback(&output, to_channel(&tx, 1), 0)?;

    let start = Instant::now();
    let len = data.len() as u64;
    let (mut next, mut pending, mut copied) = (0u64, 0, 0u64);
    while next < len && pending < 8 {
        input.read(vec![0; CHUNK]).at(next).start()?;
        next += CHUNK as u64;
        pending += 1;
    }
    while pending > 0 {
        let done = recv(&rx)?;
        pending -= 1;
        done.status.result(done.bytes)?;
        match done.request.op() {
            Op::ReadAt(offset) => {
                let mut buf = done.request.into_buffer().into_vec();
                buf.truncate(done.bytes);
                output.write(buf).at(offset).start()?; // same offset in the copy
                pending += 1;
                if next < len {
                    input.read(vec![0; CHUNK]).at(next).start()?;
                    next += CHUNK as u64;
                    pending += 1;
                }
            }
            Op::WriteAt(_) => copied += done.bytes as u64,
            other => unreachable!("no {other:?} was started"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop((input, output));
    let same = std::fs::read(&dst)? == data;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    if !same || copied != len {
        return Err("the copy differs from the source".into());
    }
    Ok((copied, secs))
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
