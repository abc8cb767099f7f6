//! Unix handles: an owned fd, its kind, and its queues of pending requests.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::OnceLock;

use mio::unix::SourceFd;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::op::{self, is_write_side, perform, Event};
use super::port::{aborted, Inner as PortInner, Item, Port, PortQueue};
use crate::error::{Error, Result};
use crate::handle::HandleKind;
use crate::port::Packet;
use crate::request::{Request, RequestId};
use crate::status::Status;
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
    /// io_uring: requests in the kernel, by id (for cancel and close).
    #[cfg(target_os = "linux")]
    in_flight: std::collections::HashMap<u64, InKernel>,
    /// io_uring: a stream request of each direction (read, write) is in
    /// the kernel; later ones wait in `reads`/`writes`, so a socket's reads
    /// take the stream in start order and its writes never interleave.
    #[cfg(target_os = "linux")]
    ring_busy: [bool; 2],
    closed: bool,
    port_closed: bool,
}

/// A request in the ring (io_uring).
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
struct InKernel {
    /// The request's address: its entry's `user_data`.
    addr: usize,
    /// A cancel, a close or a deadline asked for its end: an `ECANCELED`
    /// completion is then its abort, where otherwise it is the kernel
    /// cancelling the requests of a thread that exited, and the request
    /// starts again (S24).
    cancelled: bool,
}

#[cfg(target_os = "linux")]
impl InKernel {
    fn new(addr: usize) -> InKernel {
        InKernel { addr, cancelled: false }
    }
}

impl Queues {
    /// Every request still pending, in the order they were started per queue.
    fn take_all(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.reads.drain(..).chain(self.writes.drain(..)).chain(self.work.drain(..))
    }

    /// Marks every request in the ring cancelled; their addresses, for
    /// [`Ring::cancel`](super::uring::Ring::cancel).
    #[cfg(target_os = "linux")]
    fn cancel_in_kernel(&mut self) -> Vec<usize> {
        self.in_flight
            .values_mut()
            .map(|k| {
                k.cancelled = true;
                k.addr
            })
            .collect()
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
    /// Taken by `close`; read-locked by every call on it. Shared with the
    /// io_uring requests in the kernel, which keep it open until their
    /// completion entries come (the last one out closes it).
    fd: RwLock<Option<Arc<OwnedFd>>>,
    q: Mutex<Queues>,
    port: OnceLock<Weak<PortInner>>,
    /// The handle's entry in its port's list.
    key: OnceLock<usize>,
    /// Mirror of `Queues::closed`, readable without the lock.
    closed: AtomicBool,
    /// epoll: a device epoll cannot watch (`/dev/zero`, `/dev/null`: always
    /// ready), whose stream requests the pool performs, as a file's. Set
    /// at bind, before any request can start.
    pooled: AtomicBool,
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

fn closed_handle() -> Error {
    Error::invalid("handle", "closed", "is closed")
}

fn closed_port() -> Error {
    Error::invalid("port", "bound", "is closed")
}

impl Handle {
    fn describe_fd(&self, fd: &OwnedFd) -> String {
        format!("fd {} ({:?})", fd.as_raw_fd(), self.io.kind)
    }

    pub(crate) fn new(fd: OwnedFd, kind: HandleKind) -> Handle {
        Handle {
            io: Arc::new(Io {
                kind,
                fd: RwLock::new(Some(Arc::new(fd))),
                q: Mutex::new(Queues {
                    reads: VecDeque::new(),
                    writes: VecDeque::new(),
                    work: VecDeque::new(),
                    #[cfg(target_os = "linux")]
                    in_flight: std::collections::HashMap::new(),
                    #[cfg(target_os = "linux")]
                    ring_busy: [false; 2],
                    closed: false,
                    port_closed: false,
                }),
                port: OnceLock::new(),
                key: OnceLock::new(),
                closed: AtomicBool::new(false),
                pooled: AtomicBool::new(false),
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
            Some(fd) => self.describe_fd(fd),
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
    ///
    /// S38, the same on every driver: what cannot be read or written as a
    /// stream (a directory, an `O_PATH` descriptor) is refused here; a
    /// device epoll cannot watch (it has no readiness: always ready) is
    /// served by the pool, in blocking mode, as a file is.
    fn associate(&self, port: &Port) -> Result<()> {
        let inner = &port.inner;
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        if self.io.kind == HandleKind::Stream {
            undrivable(fd).map_err(|why| Error::invalid("handle", self.describe_fd(fd), why))?;
        }
        let key = if self.io.kind == HandleKind::File {
            inner.add(&self.io, None)
        } else if inner.mio().is_none() {
            // io_uring needs no registration (S36).
            set_nonblocking(fd)?;
            inner.add(&self.io, None)
        } else {
            let flags = set_nonblocking(fd)?;
            let raw = fd.as_raw_fd();
            match inner.add(&self.io, Some(&mut SourceFd(&raw))) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && is_device(fd) => {
                    set_flags(fd, flags)?;
                    self.io.pooled.store(true, Ordering::Release);
                    inner.add(&self.io, None)
                }
                r => r,
            }
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
        // A cached file read on the ring's port is done at once, with no
        // lock of the handle: two threads read one file side by side, as
        // `pread` does. The post guard keeps the port's close from ending
        // before its completion is queued; holding the fd keeps the
        // handle's close from closing it under the read.
        #[cfg(target_os = "linux")]
        if io.kind == HandleKind::File && port.inner.ring().is_some() && !io.closed.load(Ordering::Acquire) {
            let fd_guard = io.fd.read();
            if let (Some(post), Some(fd)) = (queue.begin_post(), fd_guard.as_ref()) {
                if let Some(r) = super::uring::read_cached(fd.as_raw_fd(), &mut req) {
                    post.push(Item::Packet(match r {
                        Ok(n) => done(req, n),
                        Err(e) => failed(req, &e),
                    }));
                    return Ok(());
                }
            }
        }
        let mut q = io.q.lock();
        if q.closed {
            return Err((closed_handle(), req));
        }
        if q.port_closed {
            return Err((closed_port(), req));
        }
        #[cfg(target_os = "linux")]
        if let Some(ring) = port.inner.ring() {
            let fd_guard = io.fd.read();
            let Some(fd) = fd_guard.as_ref() else {
                return Err((closed_handle(), req));
            };
            let dir = usize::from(is_write_side(req.op()));
            let ordered = io.kind != HandleKind::File;
            if ordered && q.ring_busy[dir] {
                let waiting = if dir == 1 { &mut q.writes } else { &mut q.reads };
                waiting.push_back(req);
                return Ok(());
            }
            let id = req.id().as_u64();
            let p = ring.start(io, fd, req).map_err(|(e, req)| (Error::Io(e), req))?;
            q.in_flight.insert(id, InKernel::new(p));
            q.ring_busy[dir] |= ordered;
            drop((fd_guard, q));
            ring.pushed(queue);
            return Ok(());
        }
        if io.kind == HandleKind::File || io.pooled.load(Ordering::Acquire) {
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
        match perform(io.kind, fd, &mut req, Event::None) {
            Ok(Some(n)) => {
                queue.push(Item::Packet(done(req, n)));
                Ok(())
            }
            Ok(None) => {
                pending.push_back(req);
                Ok(())
            }
            // A write that sent part before its error is under way: it
            // completes, with what it sent.
            Err(e) if op::sent(&req) > 0 => {
                queue.push(Item::Packet(failed(req, &e)));
                Ok(())
            }
            Err(e) => Err((Error::Io(e), req)),
        }
    }

    fn cancel(&self, id: RequestId) -> Result<()> {
        let port = self.io.port.get().and_then(Weak::upgrade);
        let mut q = self.io.q.lock();
        #[cfg(target_os = "linux")]
        if let Some(k) = q.in_flight.get_mut(&id.as_u64()) {
            // Its completion entry comes, aborted or done, as its one
            // completion (S25).
            k.cancelled = true;
            let addr = k.addr;
            if let Some(ring) = port.as_ref().and_then(|p| p.ring()) {
                let pushed = ring.cancel([addr]);
                drop(q);
                ring.submit_if(pushed);
            }
            return Ok(());
        }
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
        #[cfg(target_os = "linux")]
        let mut pushed = false;
        #[cfg(target_os = "linux")]
        if let Some(ring) = port.as_ref().and_then(|p| p.ring()) {
            n += q.in_flight.len();
            pushed = ring.cancel(q.cancel_in_kernel());
        }
        if let Some(port) = &port {
            for req in q.take_all() {
                port.queue.push(Item::Packet(aborted(req)));
                n += 1;
            }
        }
        drop(q);
        #[cfg(target_os = "linux")]
        if let Some(ring) = port.as_ref().and_then(|p| p.ring()) {
            ring.submit_if(pushed);
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
                // Each completes once its entry comes back (S24).
                #[cfg(target_os = "linux")]
                if let Some(ring) = port.ring() {
                    ring.cancel(q.cancel_in_kernel());
                }
            }
            io.fd.write().take()
        };
        if let Some(port) = port {
            // The cancels go to the kernel now. The fd itself closes when
            // the last request in the kernel that names it completes (each
            // holds it), so its number is never reused under an entry.
            #[cfg(target_os = "linux")]
            if let Some(ring) = port.ring() {
                ring.submit_if(true);
            }
            if let (Some(fd), false, Some(mio)) = (fd.as_ref(), io.kind == HandleKind::File, port.mio()) {
                let _ = mio.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
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
        let port = self.port.get().and_then(Weak::upgrade);
        // The port's close submits the cancels as it drains the ring.
        #[cfg(target_os = "linux")]
        if let Some(ring) = port.as_ref().and_then(|p| p.ring()) {
            ring.cancel(q.cancel_in_kernel());
        }
        if let (Some(fd), false) = (self.fd.read().as_ref(), self.kind == HandleKind::File) {
            if let Some(mio) = port.as_ref().and_then(|p| p.mio()) {
                let _ = mio.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
    }

    pub(super) fn kind(&self) -> HandleKind {
        self.kind
    }

    /// Runs `f` on the fd while it is open.
    #[cfg(target_os = "linux")]
    pub(super) fn with_raw<T>(&self, f: impl FnOnce(&OwnedFd) -> T) -> Option<T> {
        self.fd.read().as_deref().map(f)
    }

    /// A ring request of this handle completed: forget it and queue its
    /// packet, under the handle's lock (so a close sees it done or pending).
    #[cfg(target_os = "linux")]
    pub(super) fn ring_done(
        self: &Arc<Self>,
        ring: &super::uring::Ring,
        id: crate::RequestId,
        write: bool,
        queue: &PortQueue,
        packet: Packet,
    ) {
        let mut q = self.q.lock();
        q.in_flight.remove(&id.as_u64());
        queue.push(Item::Packet(packet));
        if self.kind == HandleKind::File {
            return;
        }
        // The next waiting request of this direction goes to the kernel;
        // one that cannot start completes with its error.
        let dir = usize::from(write);
        q.ring_busy[dir] = false;
        let fd = self.fd.read();
        let Some(fd) = fd.as_ref() else { return };
        loop {
            let waiting = if write { &mut q.writes } else { &mut q.reads };
            let Some(req) = waiting.pop_front() else { return };
            let id = req.id().as_u64();
            match ring.start(self, fd, req) {
                Ok(p) => {
                    q.in_flight.insert(id, InKernel::new(p));
                    q.ring_busy[dir] = true;
                    break;
                }
                Err((e, req)) => queue.push(Item::Packet(failed(req, &e))),
            }
        }
        drop((fd, q));
        ring.pushed(queue);
    }

    /// Starts the rest of a partly done ring write, unless the handle or
    /// its port closed meanwhile (`ECANCELED`).
    #[cfg(target_os = "linux")]
    pub(super) fn ring_again(
        self: &Arc<Self>,
        ring: &super::uring::Ring,
        queue: &PortQueue,
        req: Request,
    ) -> std::result::Result<(), (io::Error, Request)> {
        let mut q = self.q.lock();
        let fd = self.fd.read();
        let cancelled = q.in_flight.get(&req.id().as_u64()).is_some_and(|k| k.cancelled);
        let Some(fd) = fd.as_ref().filter(|_| !q.closed && !q.port_closed && !cancelled) else {
            q.in_flight.remove(&req.id().as_u64());
            drop(q);
            return Err((io::Error::from_raw_os_error(libc::ECANCELED), req));
        };
        let id = req.id().as_u64();
        let p = ring.start(self, fd, req)?;
        q.in_flight.insert(id, InKernel::new(p));
        drop((fd, q));
        ring.pushed(queue);
        Ok(())
    }

    /// The handle became ready (`error`: with an error pending on it):
    /// perform queued requests until one would block, pushing their
    /// completions under the handle's lock.
    pub(super) fn on_ready(&self, queue: &PortQueue, readable: bool, writable: bool, error: bool) {
        let mut q = self.q.lock();
        let fd = self.fd.read();
        let Some(fd) = fd.as_ref() else { return };
        let Queues { reads, writes, .. } = &mut *q;
        let event = if error { Event::Error } else { Event::Ready };
        if readable {
            drain(self.kind, fd, reads, queue, event);
        }
        if writable {
            drain(self.kind, fd, writes, queue, event);
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
        let r = op::perform_file(fd, &mut req);
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

/// A request that failed with `e`; a write reports the bytes it sent
/// before the error with it, as IOCP does.
fn failed(req: Request, e: &io::Error) -> Packet {
    let bytes = op::sent(&req);
    Packet { status: Status::from_io_error(e), bytes, key: 0, request: Some(req) }
}

/// Performs the queued requests of one direction until one would block.
/// The `event` that called it vouches for the first request's readiness.
fn drain(kind: HandleKind, fd: &OwnedFd, pending: &mut VecDeque<Request>, queue: &PortQueue, event: Event) {
    let mut event = event;
    while let Some(req) = pending.front_mut() {
        let r = perform(kind, fd, req, std::mem::replace(&mut event, Event::None));
        let p = match r {
            Ok(None) => break,
            Ok(Some(n)) => done(pending.pop_front().expect("front exists"), n),
            Err(e) => failed(pending.pop_front().expect("front exists"), &e),
        };
        queue.push(Item::Packet(p));
    }
}

/// Sets `O_NONBLOCK`; the status flags it had before.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<libc::c_int> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: fcntl on an fd we own, with valid commands and flags.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    set_flags(fd, flags | libc::O_NONBLOCK)?;
    Ok(flags)
}

/// Sets the fd's status flags (`F_SETFL`).
fn set_flags(fd: &OwnedFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with a valid command and flags.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why a descriptor of kind `Stream` cannot be driven, if it cannot: a
/// directory (every read would fail with `EISDIR`), or an `O_PATH`
/// descriptor (every request would fail with `EBADF`).
fn undrivable(fd: &OwnedFd) -> std::result::Result<(), &'static str> {
    // SAFETY: fcntl on an open fd (borrowed), with a valid command.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if flags >= 0 && flags & libc::O_PATH != 0 {
        return Err("is an O_PATH descriptor, which cannot be read or written");
    }
    let _ = flags;
    match file_type(fd) {
        Some(t) if t == libc::S_IFDIR => Err("is a directory, which cannot be read or written as a stream"),
        _ => Ok(()),
    }
}

/// True for a character or block device (`fstat`).
fn is_device(fd: &OwnedFd) -> bool {
    matches!(file_type(fd), Some(t) if t == libc::S_IFCHR || t == libc::S_IFBLK)
}

/// The `S_IFMT` bits of the fd's mode, if `fstat` answers.
fn file_type(fd: &OwnedFd) -> Option<libc::mode_t> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on an open fd (borrowed), into a stat it fills.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled the whole struct.
    Some(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
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
/// by readiness. One that cannot be read or written as a stream (a
/// directory, an `O_PATH` fd) is refused when bound, on every driver; a
/// device that epoll cannot watch (`/dev/zero`, `/dev/null`) is served by
/// the pool on epoll.
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
