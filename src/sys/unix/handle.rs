//! Unix handles: an owned fd, its kind, and its queues of pending requests.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::OnceLock;

use mio::unix::SourceFd;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::port::{aborted, Inner as PortInner, Item, Port, PortQueue};
use crate::error::{Error, Result};
use crate::handle::HandleKind;
use crate::port::Packet;
use crate::request::{Buffer, Op, Request, RequestId, Status};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, RwLock, Weak};
use crate::sys::HandleDriver;

struct Queues {
    /// Stream reads, accepts and receives, in order.
    reads: VecDeque<Request>,
    /// Stream writes, connects and sends, in order.
    writes: VecDeque<Request>,
    /// File requests waiting for a pool thread (one work item each in the
    /// port's queue).
    work: VecDeque<Request>,
    closed: bool,
    port_closed: bool,
}

impl Queues {
    /// Every request still pending, in the order they were started per queue.
    fn take_all(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.reads.drain(..).chain(self.writes.drain(..)).chain(self.work.drain(..))
    }
}

/// The I/O state of one handle, shared with its port's poller.
///
/// Every completion of this handle is pushed to the port while `q` is
/// locked: a start that completes at once, the poller's transfers, a cancel,
/// a close. The port's close aborts each handle under the same lock, so a
/// handle's completions are all queued before its abort or never started
/// (the close argument of `sys::queue`).
pub(crate) struct Io {
    kind: HandleKind,
    /// Taken (and closed) by `close`; read-locked by every call on it.
    fd: RwLock<Option<OwnedFd>>,
    q: Mutex<Queues>,
    port: OnceLock<Weak<PortInner>>,
    /// The handle's entry in its port's list.
    key: OnceLock<usize>,
    /// Mirror of `Queues::closed`, readable without the lock.
    closed: AtomicBool,
    /// Set (release) just before the fd is registered with the poller; the
    /// poller reads it (acquire) before it touches the handle for an event.
    /// The kernel orders the registration before the event, but only this
    /// pair says so in the language's memory model (and to ThreadSanitizer).
    pub(super) registered: AtomicBool,
}

/// The backend's handle.
pub(crate) struct Handle {
    io: Arc<Io>,
}

fn is_write_side(op: Op) -> bool {
    matches!(op, Op::Write | Op::Connect(_) | Op::SendTo(_))
}

fn closed_handle() -> Error {
    Error::invalid("handle", "closed", "is closed")
}

fn closed_port() -> Error {
    Error::invalid("port", "bound", "is closed")
}

impl Handle {
    pub(crate) fn new(fd: OwnedFd, kind: HandleKind) -> Handle {
        Handle {
            io: Arc::new(Io {
                kind,
                fd: RwLock::new(Some(fd)),
                q: Mutex::new(Queues {
                    reads: VecDeque::new(),
                    writes: VecDeque::new(),
                    work: VecDeque::new(),
                    closed: false,
                    port_closed: false,
                }),
                port: OnceLock::new(),
                key: OnceLock::new(),
                closed: AtomicBool::new(false),
                registered: AtomicBool::new(false),
            }),
        }
    }
}

impl HandleDriver for Handle {
    type Port = Port;

    fn tcp_socket_for(addr: &SocketAddr) -> io::Result<Handle> {
        let s = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
        Ok(Handle::new(s.into(), HandleKind::TcpStream))
    }

    fn kind(&self) -> HandleKind {
        self.io.kind
    }

    fn is_closed(&self) -> bool {
        self.io.closed.load(Ordering::Acquire)
    }

    fn describe(&self) -> String {
        match self.io.fd.read().as_ref() {
            Some(fd) => format!("fd {} ({:?})", fd.as_raw_fd(), self.io.kind),
            None => format!("closed fd ({:?})", self.io.kind),
        }
    }

    /// Runs `f` on the socket behind the handle (closed: `InvalidArgument`).
    /// Runs `f` on the socket behind the handle (closed, or not a socket:
    /// `InvalidArgument`).
    fn with_sock<T>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> Result<T> {
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        if matches!(self.io.kind, HandleKind::File | HandleKind::Stream) {
            return Err(Error::invalid("handle", format!("{:?}", self.io.kind), "is not a socket"));
        }
        Ok(f(SockRef::from(fd))?)
    }

    /// Nothing to set: a request that completes at once already goes to
    /// the port's own queue with no kernel call. False (not closed).
    fn skip_completion_port_on_success(&self) -> Result<bool> {
        if self.io.closed.load(Ordering::Acquire) {
            return Err(closed_handle());
        }
        Ok(false)
    }

    /// Sets non-blocking mode and registers the fd with the port's poller,
    /// once, edge-triggered, for both directions (S29). Regular files are
    /// never ready, so they are not watched: their requests run on the pool.
    fn associate(&self, port: &Port) -> Result<()> {
        let inner = &port.inner;
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        let key = if self.io.kind == HandleKind::File {
            inner.add(&self.io, None)
        } else {
            set_nonblocking(fd)?;
            let raw = fd.as_raw_fd();
            inner.add(&self.io, Some(&mut SourceFd(&raw)))
        };
        let key = key.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => closed_port(),
            _ => Error::Io(e),
        })?;
        let _ = self.io.key.set(key);
        let _ = self.io.port.set(Arc::downgrade(inner));
        Ok(())
    }

    /// Starts `req` (S23, S29): file requests are queued for the pool;
    /// others are tried at once when nothing is queued before them (the edge
    /// may already have passed), and queued when the call would block.
    fn submit(&self, mut req: Request, port: &Port) -> std::result::Result<(), (Error, Request)> {
        let queue = &port.inner.queue;
        let io = &self.io;
        let mut q = io.q.lock();
        if q.closed {
            return Err((closed_handle(), req));
        }
        if q.port_closed {
            return Err((closed_port(), req));
        }
        if io.kind == HandleKind::File {
            q.work.push_back(req);
            queue.push(Item::Work(io.clone()));
            return Ok(());
        }
        let fd_guard = io.fd.read();
        let Some(fd) = fd_guard.as_ref() else {
            return Err((closed_handle(), req));
        };
        let pending = if is_write_side(req.op()) { &mut q.writes } else { &mut q.reads };
        if !pending.is_empty() {
            pending.push_back(req);
            return Ok(());
        }
        match perform(io.kind, fd, &mut req, false) {
            Ok(Some(n)) => {
                queue.push(Item::Packet(done(req, n)));
                Ok(())
            }
            Ok(None) => {
                pending.push_back(req);
                Ok(())
            }
            Err(e) => Err((Error::Io(e), req)),
        }
    }

    fn cancel(&self, id: RequestId) -> Result<()> {
        let port = self.io.port.get().and_then(Weak::upgrade);
        let mut q = self.io.q.lock();
        let Queues { reads, writes, work, .. } = &mut *q;
        let found = [reads, writes, work].into_iter().find_map(|queue| {
            let i = queue.iter().position(|r| r.id() == id)?;
            queue.remove(i)
        });
        match (found, port) {
            (Some(req), Some(port)) => {
                port.queue.push(Item::Packet(aborted(req)));
                Ok(())
            }
            // Unreachable in practice: a request is only queued on a bound
            // handle, and its port outlives the handles' queues.
            (Some(req), None) => {
                drop(req);
                Ok(())
            }
            (None, _) => Err(Error::Io(super::not_found())),
        }
    }

    /// Aborts every request still pending on the handle (S25); how many.
    fn cancel_all(&self) -> usize {
        let port = self.io.port.get().and_then(Weak::upgrade);
        let mut q = self.io.q.lock();
        let mut n = 0;
        if let Some(port) = port {
            for req in q.take_all() {
                port.queue.push(Item::Packet(aborted(req)));
                n += 1;
            }
        }
        n
    }

    /// Aborts what is pending (S24), deregisters and closes the fd. False
    /// when it was closed before.
    fn close(&self) -> bool {
        let io = &self.io;
        let port = io.port.get().and_then(Weak::upgrade);
        let fd = {
            let mut q = io.q.lock();
            if q.closed {
                return false;
            }
            q.closed = true;
            io.closed.store(true, Ordering::Release);
            if let Some(port) = &port {
                for req in q.take_all() {
                    port.queue.push(Item::Packet(aborted(req)));
                }
            }
            io.fd.write().take()
        };
        if let Some(port) = port {
            if let (Some(fd), false) = (fd.as_ref(), io.kind == HandleKind::File) {
                let _ = port.poller().registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
            if let Some(&key) = io.key.get() {
                port.remove(key);
            }
        }
        drop(fd);
        true
    }
}

impl Io {
    /// The port is closing: abort what is queued and stop watching the fd.
    pub(super) fn abort_for_port_close(&self, queue: &PortQueue) {
        let mut q = self.q.lock();
        q.port_closed = true;
        for req in q.take_all() {
            queue.push(Item::Packet(aborted(req)));
        }
        if let (Some(fd), false) = (self.fd.read().as_ref(), self.kind == HandleKind::File) {
            if let Some(port) = self.port.get().and_then(Weak::upgrade) {
                let _ = port.poller().registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
    }

    /// The handle became ready: perform queued requests until one would
    /// block, pushing their completions under the handle's lock.
    pub(super) fn on_ready(&self, queue: &PortQueue, readable: bool, writable: bool) {
        let mut q = self.q.lock();
        let fd = self.fd.read();
        let Some(fd) = fd.as_ref() else { return };
        let Queues { reads, writes, .. } = &mut *q;
        if readable {
            drain(self.kind, fd, reads, queue);
        }
        if writable {
            drain(self.kind, fd, writes, queue);
        }
    }

    /// Performs the oldest file request of this handle on the calling pool
    /// thread (S29); `None` when it was cancelled meanwhile. After the port
    /// began closing, it completes aborted instead (S11).
    pub(super) fn perform_work(&self, port_closing: bool) -> Option<Packet> {
        let mut req = self.q.lock().work.pop_front()?;
        if port_closing {
            return Some(aborted(req));
        }
        let guard = self.fd.read();
        let Some(fd) = guard.as_ref() else { return Some(aborted(req)) };
        let file = borrow::<File>(fd);
        let r = match (req.op(), req.buffer_mut()) {
            (Op::ReadAt(off), Buffer::Single(b)) => retry(|| pread_into(fd, b, off)),
            (Op::WriteAt(off), Buffer::Single(b)) => file.write_all_at(b, off).map(|()| b.len()),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        drop(guard);
        Some(match r {
            Ok(n) => done(req, n),
            Err(e) => failed(req, &e),
        })
    }
}

fn done(req: Request, n: usize) -> Packet {
    Packet { status: Status::SUCCESS, bytes: n, key: 0, request: Some(req) }
}

fn failed(req: Request, e: &io::Error) -> Packet {
    Packet { status: Status::from_io_error(e), bytes: 0, key: 0, request: Some(req) }
}

/// Performs the queued requests of one direction until one would block.
/// The event that called it vouches for the first request's readiness.
fn drain(kind: HandleKind, fd: &OwnedFd, pending: &mut VecDeque<Request>, queue: &PortQueue) {
    let mut ready = true;
    while let Some(req) = pending.front_mut() {
        let r = perform(kind, fd, req, std::mem::take(&mut ready));
        let p = match r {
            Ok(None) => break,
            Ok(Some(n)) => done(pending.pop_front().expect("front exists"), n),
            Err(e) => failed(pending.pop_front().expect("front exists"), &e),
        };
        queue.push(Item::Packet(p));
    }
}

/// A std object over `fd` that does not close it.
fn borrow<T: FromRawFd>(fd: &OwnedFd) -> ManuallyDrop<T> {
    // SAFETY: `fd` is open for as long as the caller holds the borrow (the
    // handle's fd lock is held), and ManuallyDrop keeps T from closing it.
    ManuallyDrop::new(unsafe { T::from_raw_fd(fd.as_raw_fd()) })
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// `Ok(None)` while the call would block.
fn pending<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// One non-blocking attempt at `req`: `Ok(Some(bytes))` when it finished,
/// `Ok(None)` when it would block, `Err` when it failed. `ready`: a
/// readiness event for this direction just arrived.
fn perform(kind: HandleKind, fd: &OwnedFd, req: &mut Request, ready: bool) -> io::Result<Option<usize>> {
    let op = req.op();
    let h = req.header_mut();
    match op {
        Op::Read if h.buffer.capacity() == 0 => readable(kind, fd, ready),
        Op::Read => pending(retry(|| read_into(fd, &mut h.buffer))),
        Op::Write => write_stream(kind, fd, &h.buffer, &mut h.os.progress),
        Op::Accept => {
            let accepted = match kind {
                HandleKind::TcpListener => pending(retry(|| borrow::<TcpListener>(fd).accept()))?
                    .map(|(s, a)| (crate::Handle::from(s), Some(a))),
                _ => pending(retry(|| borrow::<UnixListener>(fd).accept()))?
                    .map(|(s, _)| (crate::Handle::from(s), None)),
            };
            Ok(accepted.map(|(h2, addr)| {
                h.accepted = Some(h2);
                h.addr = addr;
                0
            }))
        }
        Op::Connect(addr) => {
            let sock = SockRef::from(fd);
            if !h.os.started {
                h.os.started = true;
                return first_connect(sock.connect(&addr.into()));
            }
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            match sock.peer_addr() {
                Ok(_) => Ok(Some(0)),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Op::SendTo(addr) => match &h.buffer {
            Buffer::Single(b) => pending(retry(|| borrow::<UdpSocket>(fd).send_to(b, addr))),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        },
        Op::RecvFrom => match &mut h.buffer {
            Buffer::Single(b) => {
                // SAFETY: the whole allocation, viewed as possibly
                // uninitialized bytes; the vector is not touched meanwhile.
                let room = unsafe {
                    std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<MaybeUninit<u8>>(), b.capacity())
                };
                Ok(pending(retry(|| SockRef::from(fd).recv_from(room)))?.map(|(n, a)| {
                    // SAFETY: recv_from wrote the first `n` bytes.
                    unsafe { b.set_len(n) };
                    h.addr = a.as_socket();
                    n
                }))
            }
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        },
        Op::Post | Op::ReadAt(_) | Op::WriteAt(_) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

/// One `read` (or `readv`) into the buffer's room, from the start of each
/// part up to its capacity (S32); on success the lengths say what was read.
fn read_into(fd: &OwnedFd, buf: &mut Buffer) -> io::Result<usize> {
    let n = match buf {
        Buffer::None => return Ok(0),
        // SAFETY: the pointer and capacity describe the vector's whole
        // allocation, which the read may fill; `fd` is open (fd lock held).
        Buffer::Single(b) => unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.capacity()) },
        Buffer::Vectored(v) => {
            let iov: Vec<libc::iovec> = v
                .iter_mut()
                .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.capacity() })
                .collect();
            let count = iov.len().min(libc::c_int::MAX as usize) as libc::c_int;
            // SAFETY: each iovec describes one part's whole allocation; the
            // array lives for the call; `fd` is open (fd lock held).
            unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), count) }
        }
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the read wrote its first `n` bytes into the room, in order.
    unsafe { buf.set_filled(n) };
    Ok(n)
}

/// One `pread` at `off` into the vector's room (S32).
fn pread_into(fd: &OwnedFd, b: &mut Vec<u8>, off: u64) -> io::Result<usize> {
    // An offset past off_t's range is the OS's EINVAL, as pread gives for
    // one whose end overflows.
    let off = libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the pointer and capacity describe the vector's allocation;
    // `fd` is open (the caller holds the fd lock).
    let n = unsafe { libc::pread(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.capacity(), off) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pread wrote the first `n` bytes.
    unsafe { b.set_len(n as usize) };
    Ok(n as usize)
}

/// A read with no room (S31): completes, with 0 bytes, once the stream is
/// readable (data waiting, its end, or an error, which it completes with),
/// without taking any data. Asked of the OS with a zero-timeout `poll`
/// unless a readiness event just said so.
fn readable(kind: HandleKind, fd: &OwnedFd, ready: bool) -> io::Result<Option<usize>> {
    if !ready {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `p` is one valid pollfd for the duration of the call;
        // `fd` is open (the caller holds the handle's fd lock).
        let n = retry(|| match unsafe { libc::poll(&mut p, 1, 0) } {
            -1 => Err(io::Error::last_os_error()),
            n => Ok(n),
        })?;
        if n == 0 {
            return Ok(None);
        }
    }
    if matches!(kind, HandleKind::TcpStream | HandleKind::LocalStream) {
        if let Some(e) = SockRef::from(fd).take_error()? {
            return Err(e);
        }
    }
    Ok(Some(0))
}

/// What a non-blocking `connect` answered: connected, in progress (the
/// socket turns writable when it ends), or failed. `EAGAIN` is a failure:
/// for TCP it means no local port is free, nothing is in progress, and no
/// readiness would ever end the wait.
fn first_connect(r: io::Result<()>) -> io::Result<Option<usize>> {
    match r {
        Ok(()) => Ok(Some(0)),
        // EINTR: the connection goes on in the background, as EINPROGRESS.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the whole buffer, as IOCP does for a stream: progress is kept in
/// the request across readiness rounds; completes with the total.
fn write_stream(
    kind: HandleKind,
    fd: &OwnedFd,
    buf: &Buffer,
    progress: &mut usize,
) -> io::Result<Option<usize>> {
    let total = buf.len();
    while *progress < total {
        let r = match buf {
            Buffer::Single(b) => stream_write(kind, fd, &[IoSlice::new(&b[*progress..])]),
            Buffer::Vectored(v) => {
                let mut skip = *progress;
                let mut slices = Vec::with_capacity(v.len());
                for b in v {
                    if skip >= b.len() {
                        skip -= b.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&b[skip..]));
                    skip = 0;
                }
                stream_write(kind, fd, &slices)
            }
            Buffer::None => Ok(0),
        };
        match r {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => *progress += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(total))
}

/// Sockets go through `send`/`sendmsg` with `MSG_NOSIGNAL` (std does that
/// for TCP and Unix streams), so a closed peer is an `EPIPE`, not a signal.
fn stream_write(kind: HandleKind, fd: &OwnedFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match kind {
        HandleKind::TcpStream => borrow::<TcpStream>(fd).write_vectored(slices),
        HandleKind::LocalStream => borrow::<UnixStream>(fd).write_vectored(slices),
        _ => borrow::<File>(fd).write_vectored(slices),
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: fcntl on an fd we own, with valid commands and flags.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl From<TcpStream> for Handle {
    fn from(s: TcpStream) -> Handle {
        Handle::new(s.into(), HandleKind::TcpStream)
    }
}

impl From<TcpListener> for Handle {
    fn from(s: TcpListener) -> Handle {
        Handle::new(s.into(), HandleKind::TcpListener)
    }
}

impl From<UdpSocket> for Handle {
    fn from(s: UdpSocket) -> Handle {
        Handle::new(s.into(), HandleKind::Udp)
    }
}

impl TryFrom<File> for Handle {
    type Error = Error;

    /// Always succeeds on Unix: a regular file is served by the pool,
    /// anything else by readiness (see [`kind_of`]).
    fn try_from(f: File) -> Result<Handle> {
        let fd = OwnedFd::from(f);
        let kind = kind_of(&fd);
        Ok(Handle::new(fd, kind))
    }
}

/// What an fd is: a socket by its type, domain and whether it listens; a
/// regular file; else a stream (pipe, tty, character device).
fn kind_of(fd: &OwnedFd) -> HandleKind {
    let sock = SockRef::from(fd);
    match sock.r#type() {
        Ok(Type::STREAM) => {
            let local = sock.local_addr().ok().and_then(|a| a.as_socket()).is_none();
            match (local, listening(fd)) {
                (true, true) => HandleKind::LocalListener,
                (true, false) => HandleKind::LocalStream,
                (false, true) => HandleKind::TcpListener,
                (false, false) => HandleKind::TcpStream,
            }
        }
        Ok(Type::DGRAM) => HandleKind::Udp,
        Ok(_) => HandleKind::Stream,
        Err(_) if is_regular_file(fd) => HandleKind::File,
        Err(_) => HandleKind::Stream,
    }
}

/// True for a regular file (`fstat`).
fn is_regular_file(fd: &OwnedFd) -> bool {
    // A borrowed File, never dropped: the fd stays with its owner.
    // SAFETY: the fd is open for the duration of the call (borrowed from
    // `fd`), and ManuallyDrop keeps the File from closing it.
    let f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    f.metadata().map(|m| m.is_file()).unwrap_or(false)
}

/// `SO_ACCEPTCONN`: whether the socket listens.
fn listening(fd: &OwnedFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the fd is open (borrowed); the option value is a c_int with
    // its exact length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && v != 0
}

impl Handle {
    /// The fd, or -1 once closed.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.io.fd.read().as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Runs `f` with the fd borrowed; a close waits until it returns.
    pub(crate) fn with_fd<T>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> T) -> Result<T> {
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        Ok(f(fd.as_fd()))
    }
}

impl From<UnixStream> for crate::Handle {
    fn from(s: UnixStream) -> crate::Handle {
        crate::Handle::from_sys(Handle::new(s.into(), HandleKind::LocalStream))
    }
}

impl From<UnixListener> for crate::Handle {
    fn from(s: UnixListener) -> crate::Handle {
        crate::Handle::from_sys(Handle::new(s.into(), HandleKind::LocalListener))
    }
}

impl crate::Handle {
    /// A handle over any file descriptor (S38): see
    /// [`From<OwnedFd>`](#impl-From%3COwnedFd%3E-for-Handle).
    pub fn from_fd(fd: OwnedFd) -> crate::Handle {
        crate::Handle::from(fd)
    }

    /// Lends the fd to `f` for what the crate does not wrap (S38), without
    /// undoing the binding. The handle cannot be closed while `f` runs (a
    /// close waits for it). Fails with `InvalidArgument` once closed.
    ///
    /// A handle can be closed through any of its clones, so it lends its
    /// fd for a call rather than implementing `AsFd`, whose borrow would
    /// outlive a close; [`AsRawFd`] gives the raw number.
    pub fn with_fd<T>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> T) -> Result<T> {
        self.sys().with_fd(f)
    }
}

/// An owned fd of any kind (S38): a socket keeps its kind (TCP stream or
/// listener, UDP, Unix-domain stream or listener, told by its type, address
/// and `SO_ACCEPTCONN`); a regular file is served by the pool with positional
/// requests; anything else (pipe, tty, character device) is a stream driven
/// by readiness. An fd that epoll cannot watch is refused when bound.
impl From<OwnedFd> for crate::Handle {
    fn from(fd: OwnedFd) -> crate::Handle {
        let kind = kind_of(&fd);
        crate::Handle::from_sys(Handle::new(fd, kind))
    }
}

/// The fd number, or -1 once the handle is closed. The number is only
/// valid while the handle is open; use [`Handle::with_fd`](crate::Handle::with_fd)
/// to hold it open meanwhile.
impl AsRawFd for crate::Handle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sys().raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::first_connect;
    use std::io;

    /// A connect refused with `EAGAIN` completes with that error at once
    /// instead of waiting for a readiness that never comes.
    #[test]
    fn a_connect_refused_with_eagain_fails_instead_of_waiting() {
        let e = first_connect(Err(io::Error::from_raw_os_error(libc::EAGAIN))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        assert!(matches!(first_connect(Err(io::Error::from_raw_os_error(libc::EINPROGRESS))), Ok(None)));
        assert!(matches!(first_connect(Ok(())), Ok(Some(0))));
    }
}
