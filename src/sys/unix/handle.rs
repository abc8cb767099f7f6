//! Unix handles: an owned fd, its kind, and its queues of pending requests.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::OnceLock;

use mio::unix::SourceFd;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::port::{aborted, Inner as PortInner};
use crate::error::{Error, Result};
use crate::handle::HandleKind;
use crate::port::{Packet, Port};
use crate::request::{Buffer, Op, Request, RequestId, Status};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, RwLock, Weak};

struct Queues {
    reads: VecDeque<Request>,
    writes: VecDeque<Request>,
    closed: bool,
    port_closed: bool,
}

/// The I/O state of one handle, shared with its port's poller.
pub(crate) struct Io {
    kind: HandleKind,
    /// Taken (and closed) by `close`; read-locked by every call on it.
    fd: RwLock<Option<OwnedFd>>,
    q: Mutex<Queues>,
    port: OnceLock<Weak<PortInner>>,
    token: OnceLock<usize>,
    /// Mirrors of `Queues::closed` / `Queues::port_closed`, for the file
    /// path, which never queues on the handle.
    closed: AtomicBool,
    port_closed: AtomicBool,
}

/// The backend's handle.
pub(crate) struct Handle {
    io: Arc<Io>,
}

fn is_write_side(op: Op) -> bool {
    matches!(op, Op::Write | Op::Connect(_) | Op::SendTo(_))
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
                    closed: false,
                    port_closed: false,
                }),
                port: OnceLock::new(),
                token: OnceLock::new(),
                closed: AtomicBool::new(false),
                port_closed: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn tcp_socket_for(addr: &SocketAddr) -> io::Result<Handle> {
        let s = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
        Ok(Handle::new(s.into(), HandleKind::TcpStream))
    }

    pub(crate) fn kind(&self) -> HandleKind {
        self.io.kind
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.io.closed.load(Ordering::Acquire)
    }

    pub(crate) fn describe(&self) -> String {
        match self.io.fd.read().as_ref() {
            Some(fd) => format!("fd {} ({:?})", fd.as_raw_fd(), self.io.kind),
            None => format!("closed fd ({:?})", self.io.kind),
        }
    }

    /// Runs `f` on the socket behind the handle (closed: `InvalidArgument`).
    pub(crate) fn with_sock<T>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> Result<T> {
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(|| Error::invalid("handle", "closed", "is closed"))?;
        Ok(f(SockRef::from(fd))?)
    }

    /// Sets non-blocking mode and registers the fd with the port's poller,
    /// once, edge-triggered, for both directions (S29). Regular files are
    /// never ready, so they are not registered: their requests run on the pool.
    pub(crate) fn associate(&self, port: &Port) -> Result<()> {
        let inner = &port.inner.sys.inner;
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(|| Error::invalid("handle", "closed", "is closed"))?;
        if self.io.kind != HandleKind::File {
            set_nonblocking(fd)?;
            let raw = fd.as_raw_fd();
            let token = inner.register(&self.io, &mut SourceFd(&raw))?;
            let _ = self.io.token.set(token);
        }
        let _ = self.io.port.set(Arc::downgrade(inner));
        Ok(())
    }

    /// Starts `req`: file requests go to the pool; others are tried at once
    /// when nothing is queued before them (the edge may already have passed),
    /// and queued when the call would block (S23, S29).
    pub(crate) fn submit(&self, mut req: Request, port: &Port) -> std::result::Result<(), (Error, Request)> {
        let inner = &port.inner.sys.inner;
        let io = &self.io;
        if io.kind == HandleKind::File {
            // No handle lock: a close racing this start finds the work in
            // the port's queue and aborts it, or the work finds no fd and
            // completes aborted; either way it completes once.
            if io.closed.load(Ordering::Acquire) {
                return Err((Error::invalid("handle", "closed", "is closed"), req));
            }
            if io.port_closed.load(Ordering::Acquire) {
                return Err((Error::invalid("port", port.id(), "is closed"), req));
            }
            return inner
                .push_work(req, io.clone())
                .map_err(|r| (Error::invalid("port", port.id(), "is closed"), r));
        }
        let mut q = io.q.lock();
        if q.closed {
            return Err((Error::invalid("handle", "closed", "is closed"), req));
        }
        if q.port_closed {
            return Err((Error::invalid("port", port.id(), "is closed"), req));
        }
        let fd_guard = io.fd.read();
        let Some(fd) = fd_guard.as_ref() else {
            return Err((Error::invalid("handle", "closed", "is closed"), req));
        };
        let write = is_write_side(req.op());
        let queue = if write { &mut q.writes } else { &mut q.reads };
        if !queue.is_empty() {
            queue.push_back(req);
            inner.pending.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
        match perform(io.kind, fd, &mut req) {
            Ok(Some(n)) => {
                drop(fd_guard);
                drop(q);
                inner.push([done(req, n)]);
                Ok(())
            }
            Ok(None) => {
                queue.push_back(req);
                inner.pending.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => Err((Error::Io(e), req)),
        }
    }

    pub(crate) fn cancel(&self, id: RequestId) -> Result<()> {
        let port = self.io.port.get().and_then(Weak::upgrade);
        let found = {
            let mut q = self.io.q.lock();
            let Queues { reads, writes, .. } = &mut *q;
            let found = [reads, writes].into_iter().find_map(|queue| {
                let i = queue.iter().position(|r| r.id() == id)?;
                queue.remove(i)
            });
            found
        };
        if let Some(req) = found {
            if let Some(port) = port {
                port.pending.fetch_sub(1, Ordering::AcqRel);
                port.push([aborted(req)]);
            }
            return Ok(());
        }
        if let Some(port) = port {
            if port.abort_work_of(&self.io, Some(id.0)) > 0 {
                return Ok(());
            }
        }
        Err(Error::Io(super::not_found()))
    }

    pub(crate) fn cancel_all(&self) -> usize {
        let port = self.io.port.get().and_then(Weak::upgrade);
        let mut out = Vec::new();
        self.io.take_all(&mut out);
        let mut n = out.len();
        if let Some(port) = port {
            port.pending.fetch_sub(n, Ordering::AcqRel);
            port.push(out);
            n += port.abort_work_of(&self.io, None);
        }
        n
    }

    /// Aborts what is pending (S24), deregisters and closes the fd. False
    /// when it was closed before.
    pub(crate) fn close(&self) -> bool {
        let io = &self.io;
        let mut out = Vec::new();
        let fd = {
            let mut q = io.q.lock();
            if q.closed {
                return false;
            }
            q.closed = true;
            io.closed.store(true, Ordering::Release);
            drop(q);
            io.take_all(&mut out);
            io.fd.write().take()
        };
        if let Some(port) = io.port.get().and_then(Weak::upgrade) {
            if let (Some(fd), Some(&token)) = (fd.as_ref(), io.token.get()) {
                let _ = port.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
                port.sources.lock().try_remove(token);
            }
            port.pending.fetch_sub(out.len(), Ordering::AcqRel);
            port.abort_work_of(io, None);
            port.push(out);
        }
        drop(fd);
        true
    }
}

impl Io {
    /// Moves every queued request into `out` as an aborted completion.
    fn take_all(&self, out: &mut Vec<Packet>) {
        let mut q = self.q.lock();
        let Queues { reads, writes, .. } = &mut *q;
        out.extend(reads.drain(..).chain(writes.drain(..)).map(aborted));
    }

    /// The port is closing: abort what is queued and stop watching the fd.
    pub(super) fn abort_for_port_close(&self, port: &PortInner, out: &mut Vec<Packet>) {
        let before = out.len();
        {
            let mut q = self.q.lock();
            q.port_closed = true;
            self.port_closed.store(true, Ordering::Release);
        }
        self.take_all(out);
        port.pending.fetch_sub(out.len() - before, Ordering::AcqRel);
        if let Some(fd) = self.fd.read().as_ref() {
            let _ = port.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
    }

    /// The handle became ready: perform queued requests until one would block.
    pub(super) fn on_ready(&self, port: &PortInner, readable: bool, writable: bool, out: &mut Vec<Packet>) {
        let mut q = self.q.lock();
        let fd = self.fd.read();
        let Some(fd) = fd.as_ref() else { return };
        let before = out.len();
        if readable {
            drain(self.kind, fd, &mut q.reads, out);
        }
        if writable {
            drain(self.kind, fd, &mut q.writes, out);
        }
        port.pending.fetch_sub(out.len() - before, Ordering::AcqRel);
    }

    /// Performs a positional file request on the calling pool thread (S29).
    pub(super) fn perform_work(&self, mut req: Request) -> Packet {
        let guard = self.fd.read();
        let Some(fd) = guard.as_ref() else { return aborted(req) };
        let file = borrow::<File>(fd);
        let r = match (req.op(), req.buffer_mut()) {
            (Op::ReadAt(off), Buffer::Single(b)) => retry(|| file.read_at(b, off)),
            (Op::WriteAt(off), Buffer::Single(b)) => file.write_all_at(b, off).map(|()| b.len()),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        drop(guard);
        match r {
            Ok(n) => done(req, n),
            Err(e) => failed(req, &e),
        }
    }
}

fn done(req: Request, n: usize) -> Packet {
    Packet { status: Status::SUCCESS, bytes: n, key: 0, request: Some(req) }
}

fn failed(req: Request, e: &io::Error) -> Packet {
    Packet { status: Status::from_io_error(e), bytes: 0, key: 0, request: Some(req) }
}

/// Performs the queued requests of one direction until one would block.
fn drain(kind: HandleKind, fd: &OwnedFd, queue: &mut VecDeque<Request>, out: &mut Vec<Packet>) {
    while let Some(req) = queue.front_mut() {
        let r = perform(kind, fd, req);
        let p = match r {
            Ok(None) => break,
            Ok(Some(n)) => done(queue.pop_front().expect("front exists"), n),
            Err(e) => failed(queue.pop_front().expect("front exists"), &e),
        };
        out.push(p);
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
/// `Ok(None)` when it would block, `Err` when it failed.
fn perform(kind: HandleKind, fd: &OwnedFd, req: &mut Request) -> io::Result<Option<usize>> {
    let op = req.op();
    let h = req.header_mut();
    match op {
        Op::Read => {
            let mut s = borrow::<File>(fd);
            pending(retry(|| match &mut h.buffer {
                Buffer::Single(b) => s.read(b),
                Buffer::Vectored(v) => {
                    let mut bufs: Vec<IoSliceMut<'_>> = v.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    s.read_vectored(&mut bufs)
                }
                Buffer::None => Ok(0),
            }))
        }
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
                return match sock.connect(&addr.into()) {
                    Ok(()) => Ok(Some(0)),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(None),
                    Err(e) => pending(Err(e)),
                };
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
                Ok(pending(retry(|| borrow::<UdpSocket>(fd).recv_from(b)))?.map(|(n, a)| {
                    h.addr = Some(a);
                    n
                }))
            }
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        },
        Op::Post | Op::ReadAt(_) | Op::WriteAt(_) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
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

impl From<File> for Handle {
    fn from(f: File) -> Handle {
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        let kind = if regular { HandleKind::File } else { HandleKind::Stream };
        Handle::new(f.into(), kind)
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
    /// A handle over any file descriptor: a regular file is served by the
    /// pool with positional requests; anything else is treated as a stream
    /// (pipes, ttys, character devices) and driven by readiness.
    pub fn from_fd(fd: OwnedFd) -> crate::Handle {
        crate::Handle::from(File::from(fd))
    }
}
