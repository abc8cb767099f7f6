//! Helpers shared by the integration tests: a completion collector, waiting
//! with a deadline, a gate for blocking callbacks, loopback sockets,
//! temporary files, byte patterns, and telling Wine from Windows.
//!
//! Nothing here asserts a time: every wait polls until its condition holds
//! or fails with a message after [`DEADLINE`].
#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iocompletion::{
    CompletionSink, Handle, IoCompletionManager, Packet, Port, Request, RequestId, Runtime, StartError,
    Status,
};

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One completion as a sink received it.
pub struct Completion {
    pub status: Status,
    pub bytes: usize,
    pub request: Request,
    /// The name of the thread that ran the sink.
    pub thread: String,
}

impl Completion {
    /// The id of the completed request.
    pub fn id(&self) -> RequestId {
        self.request.id()
    }

    /// Panics unless the request succeeded; returns the bytes transferred.
    #[track_caller]
    pub fn ok(&self) -> usize {
        assert!(self.status.is_success(), "expected a successful completion, got {self:?}");
        self.bytes
    }

    /// The buffer handed back, cut to the bytes transferred.
    pub fn data(self) -> Vec<u8> {
        let mut v = self.request.into_buffer().into_vec();
        v.truncate(self.bytes);
        v
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("status", &self.status)
            .field("bytes", &self.bytes)
            .field("request", &self.request)
            .field("thread", &self.thread)
            .finish()
    }
}

/// A sink that sends every completion into a channel, and ways to wait for
/// them with a deadline.
pub struct Collector {
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

impl Collector {
    pub fn new() -> Collector {
        let (tx, rx) = mpsc::channel();
        Collector { tx, rx }
    }

    /// A sink (or handle callback) feeding this collector.
    pub fn sink(&self) -> Arc<dyn CompletionSink> {
        let tx = self.tx.clone();
        let tx = std::sync::Mutex::new(tx);
        Arc::new(move |status: Status, bytes: usize, request: Request| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            // The test may have finished and dropped the collector already.
            let _ = tx.lock().unwrap().send(Completion { status, bytes, request, thread });
        })
    }

    /// The next completion; fails the test after [`DEADLINE`].
    #[track_caller]
    pub fn recv(&self) -> Completion {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => panic!("no completion within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the collector holds a sender"),
        }
    }

    /// The next completion; fails the test naming `what` after [`DEADLINE`].
    #[track_caller]
    pub fn recv_for(&self, what: &str) -> Completion {
        self.rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no completion for {what} within {DEADLINE:?}"))
    }

    /// Fails the test if anything arrives within 200 ms: `what` must not
    /// complete (a request that failed at start posts nothing, S23).
    #[track_caller]
    pub fn expect_quiet(&self, what: &str) {
        if let Ok(c) = self.rx.recv_timeout(Duration::from_millis(200)) {
            panic!("unexpected completion ({what}): {c:?}");
        }
    }

    /// The next `n` completions, in arrival order; each may take up to
    /// [`DEADLINE`] to come.
    #[track_caller]
    pub fn recv_n(&self, n: usize) -> Vec<Completion> {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            match self.rx.recv_timeout(DEADLINE) {
                Ok(c) => v.push(c),
                Err(_) => panic!("only {i} of {n} completions came within {DEADLINE:?} of each other"),
            }
        }
        v
    }

    /// A completion if one is queued now.
    pub fn try_recv(&self) -> Option<Completion> {
        self.rx.try_recv().ok()
    }

    /// Fails the test if a completion arrives within `grace`. Used after all
    /// expected completions came, to catch a duplicate.
    #[track_caller]
    pub fn expect_none(&self, grace: Duration) {
        if let Ok(c) = self.rx.recv_timeout(grace) {
            panic!("unexpected extra completion: {c:?}");
        }
    }
}

/// A small runtime for one test.
pub fn runtime() -> Runtime {
    Runtime::builder().min_threads(2).max_threads(16).build().expect("runtime")
}

/// Binds `handle` to `rt` with a new collector as its callback.
#[track_caller]
pub fn bind(rt: &Runtime, handle: &Handle) -> Collector {
    let c = Collector::new();
    rt.bind_io_completion_callback(handle, c.sink(), 0).expect("bind_io_completion_callback");
    c
}

/// Unwraps a start, failing with the start error.
#[track_caller]
pub fn started<B>(r: Result<RequestId, StartError<B>>) -> RequestId {
    match r {
        Ok(id) => id,
        Err(e) => panic!("request did not start: {e} ({e:?})"),
    }
}

/// Polls `cond` until it holds; fails naming `what` after [`DEADLINE`].
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "not true within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A listener on an ephemeral loopback port.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// A connected loopback pair: (client, server side).
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = listener();
    let client = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
    let (server, _) = l.accept().expect("accept");
    (client, server)
}

/// A loopback address nobody listens on: a port that was just bound and
/// released.
pub fn unused_addr() -> SocketAddr {
    listener().local_addr().unwrap()
}

/// `len` bytes that differ with `seed` and with position, so a misplaced or
/// repeated chunk shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file under the system temp dir with a unique name, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// A new, empty file.
    pub fn new(tag: &str) -> TempFile {
        TempFile::with_contents(tag, &[])
    }

    /// A new file holding `data`.
    pub fn with_contents(tag: &str, data: &[u8]) -> TempFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("iocompletion-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        fs::write(&path, data).expect("create temp file");
        TempFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Raises the soft limit on open files to at least `want` (up to the hard
/// limit) and returns the limit in force.
#[cfg(unix)]
pub fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a
    // local rlimit.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if (r.rlim_cur as u64) < want {
            let new = libc::rlimit { rlim_cur: (want as libc::rlim_t).min(r.rlim_max), rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                r = new;
            }
        }
        r.rlim_cur as u64
    }
}

/// Windows has no per-process descriptor limit to speak of.
#[cfg(not(unix))]
pub fn raise_fd_limit(want: u64) -> u64 {
    want
}

/// A new collector and its sink, for binding or `set_completion_sink`.
pub fn collector() -> (Arc<dyn CompletionSink>, Collector) {
    let c = Collector::new();
    (c.sink(), c)
}

/// A gate that blocking callbacks wait on until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>);

impl Gate {
    /// Called inside a callback: counts the arrival and blocks until open
    /// (or the deadline, so a broken test still ends).
    pub fn wait(&self) {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        g.1 += 1;
        cv.notify_all();
        let end = Instant::now() + DEADLINE;
        while !g.0 && Instant::now() < end {
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }

    /// How many callbacks are blocked in [`Gate::wait`] or passed it.
    pub fn arrived(&self) -> usize {
        self.0 .0.lock().unwrap().1
    }

    /// Lets every waiting callback go.
    pub fn open(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().0 = true;
        cv.notify_all();
    }
}

/// True when the tests run under Wine, whose IOCP differs from Windows in
/// a few documented ways (see docs/backends.md). Tests that Wine cannot
/// exercise skip themselves there, by name, and still run on Windows.
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: both names are NUL-terminated; ntdll is always loaded.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
    #[cfg(not(windows))]
    false
}

/// Skips the calling test under Wine, saying why; true when skipped.
pub fn skip_on_wine(why: &str) -> bool {
    let skip = under_wine();
    if skip {
        eprintln!("skip_on_wine: {why}");
    }
    skip
}

/// A small echo server on the crate's callbacks, for tests of the pool
/// under an echo load: every accepted connection is read and echoed until
/// its client closes, then closed. It starts no accept itself: the test
/// starts them (from whichever threads it wants), and each completed accept
/// starts the next one.
pub struct EchoServer {
    state: Arc<EchoState>,
}

struct EchoState {
    conns: std::sync::Mutex<Vec<Handle>>,
    closed: std::sync::atomic::AtomicUsize,
    lost: std::sync::atomic::AtomicUsize,
}

impl EchoServer {
    /// Binds `listener` to `rt` with the server's accept callback.
    pub fn start(rt: &Runtime, listener: &Handle) -> EchoServer {
        let state = Arc::new(EchoState {
            conns: std::sync::Mutex::new(Vec::new()),
            closed: Default::default(),
            lost: Default::default(),
        });
        let (st, rt2) = (state.clone(), rt.clone());
        let on_conn: Arc<dyn CompletionSink> = {
            let st = state.clone();
            Arc::new(move |status: Status, bytes: usize, mut req: Request| {
                let Some(conn) = req.handle() else { return };
                let was_read = req.op() == iocompletion::Op::Read;
                let again = if !status.is_success() {
                    st.lost.fetch_add(1, Ordering::SeqCst);
                    false
                } else if was_read && bytes == 0 {
                    false
                } else if was_read {
                    let mut buf = req.take_buffer().into_vec();
                    buf.truncate(bytes);
                    conn.write(buf).start().is_ok()
                } else {
                    conn.read(vec![0; 256]).start().is_ok()
                };
                if !again {
                    conn.close();
                    st.conns.lock().unwrap().retain(|c| *c != conn);
                    st.closed.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        rt.bind_io_completion_callback(
            listener,
            Arc::new(move |status: Status, _bytes: usize, mut req: Request| {
                let listener = req.handle();
                match req.take_accepted() {
                    Some(conn) if status.is_success() => {
                        rt2.bind_io_completion_callback(&conn, on_conn.clone(), 0).unwrap();
                        st.conns.lock().unwrap().push(conn.clone());
                        conn.read(vec![0; 256]).start().unwrap();
                    }
                    _ => {
                        if status != Status::ABORTED {
                            st.lost.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                }
                if let Some(l) = listener {
                    let _ = l.accept().start();
                }
            }),
            0,
        )
        .unwrap();
        EchoServer { state }
    }

    /// Connections the server closed after their client closed.
    pub fn closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Completions that failed while the server ran.
    pub fn lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

/// Connects to an echo server, sends `rounds` messages of 64 bytes, checks
/// each echo, and closes.
pub fn echo_client(addr: SocketAddr, rounds: usize, seed: usize) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    for r in 0..rounds {
        let msg = pattern(64, (seed * 1000 + r) as u64);
        s.write_all(&msg).unwrap();
        let mut got = vec![0; 64];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg, "the echo differs");
    }
}

/// `h` bound to a port of its own that no thread serves, with a runtime as
/// the host (the host only supplies the extension size, here 0): the test
/// takes every packet itself, so "not completed yet" is a fact of the
/// queue (`get` with a zero timeout), not a guess about timing.
pub fn on_own_port(h: &Handle) -> (Port, Runtime) {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let port = Port::new(1).unwrap();
    let host: Arc<dyn IoCompletionManager> = Arc::new(rt.clone());
    h.attach(&port, host, None).unwrap();
    (port, rt)
}

/// The next packet of `port`, within [`DEADLINE`].
pub fn next_packet(port: &Port) -> Packet {
    port.get(Some(DEADLINE)).expect("a packet within the deadline")
}

/// A write far bigger than a stalled connection's socket buffers hold.
pub const BIG_WRITE: usize = 8 << 20;

/// A connection whose peer reads nothing until the test says so, its
/// socket buffers kept small, so a write of [`BIG_WRITE`] bytes stays
/// pending after it sent part: (the peer, the writing handle, unbound).
pub fn stalled_pair() -> (TcpStream, Handle) {
    let (peer, mine) = tcp_pair();
    socket2::SockRef::from(&peer).set_recv_buffer_size(64 << 10).unwrap();
    socket2::SockRef::from(&mine).set_send_buffer_size(64 << 10).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    (peer, Handle::from(mine))
}

/// Blocks until a write on the other side of `peer` has sent something:
/// reads its first byte.
pub fn first_byte(peer: &mut TcpStream) -> u8 {
    use std::io::Read;
    let mut one = [0u8; 1];
    peer.read_exact(&mut one).expect("the write sent its first byte");
    one[0]
}

/// Once the writer's request completed: closes `writer` and reads `peer`
/// to the end; everything the peer received, `first` included.
pub fn drain_peer(peer: &mut TcpStream, writer: &Handle, first: u8) -> Vec<u8> {
    use std::io::Read;
    writer.close();
    let mut got = vec![first];
    peer.read_to_end(&mut got).expect("the peer reads to the end");
    got
}

/// A handle over a std `File`: `From` on Unix, where it cannot fail.
#[cfg(unix)]
#[allow(dead_code)]
pub fn file_handle(f: fs::File) -> Handle {
    Handle::from(f)
}

/// A handle over a std `File`: `TryFrom` on Windows, which reopens the
/// file for overlapped I/O.
#[cfg(windows)]
#[allow(dead_code)]
pub fn file_handle(f: fs::File) -> Handle {
    Handle::try_from(f).expect("a handle over the file")
}
