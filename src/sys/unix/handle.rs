//! Unix handles: an owned fd, its kind, and its queues of pending requests.

use crate::sync::OnceLock;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use mio::unix::SourceFd;
use socket2::{SockRef, Type};

use super::epoll::Streams;
use super::filepool::Work;
use super::io::{Driver, Io};
use super::op::aborted;
use super::port::{Item, Port, UnixPortState};
use crate::request::Request;
use crate::shared::error::{Error, Result};
use crate::shared::HandleKind;
use crate::shared::RequestId;
use crate::sync::{Arc, Ordering, Weak};
use crate::sys::HandleDriver;

/// The backend's handle.
pub(crate) struct Handle {
    io: Arc<Io>,
    /// The port it is bound to.
    port: OnceLock<Weak<UnixPortState>>,
    /// The handle's entry in its port's list.
    key: OnceLock<usize>,
}

fn closed_handle() -> Error {
    Error::invalid("handle", "closed", "is closed")
}

fn closed_port() -> Error {
    Error::invalid("port", "bound", "is closed")
}

impl Handle {
    fn describe_fd(&self, fd: &OwnedFd) -> String {
        format!("fd {} ({:?})", fd.as_raw_fd(), self.io.kind())
    }

    pub(crate) fn new(fd: OwnedFd, kind: HandleKind) -> Handle {
        Handle { io: Arc::new(Io::new(fd, kind)), port: OnceLock::new(), key: OnceLock::new() }
    }
}

impl HandleDriver for Handle {
    type Port = Port;

    /// Every kind but files and other streams; a local stream is a
    /// Unix-domain socket.
    fn is_socket(kind: HandleKind) -> bool {
        use HandleKind as K;
        matches!(kind, K::TcpStream | K::TcpListener | K::Udp | K::LocalStream | K::LocalListener)
    }

    /// The listeners (a Unix-domain stream does not accept, its listener
    /// does).
    fn accepts(kind: HandleKind) -> bool {
        matches!(kind, HandleKind::TcpListener | HandleKind::LocalListener)
    }

    /// `ETIMEDOUT`.
    fn timed_out_code(_kind: Option<HandleKind>) -> u32 {
        libc::ETIMEDOUT as u32
    }

    fn kind(&self) -> HandleKind {
        self.io.kind()
    }

    fn is_closed(&self) -> bool {
        self.io.is_closed()
    }

    fn describe(&self) -> String {
        match self.io.fd.read().as_ref() {
            Some(fd) => self.describe_fd(fd),
            None => format!("closed fd ({:?})", self.io.kind()),
        }
    }

    /// Runs `f` on the socket behind the handle (closed, or not a socket:
    /// `InvalidArgument`).
    fn with_sock<T>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> Result<T> {
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        if matches!(self.io.kind(), HandleKind::File | HandleKind::Stream) {
            return Err(Error::invalid("handle", format!("{:?}", self.io.kind()), "is not a socket"));
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

    /// Chooses the handle's driver, once (S29, S36): on a ring's port the
    /// ring, which needs no registration; on a readiness port the pool for
    /// a regular file (never ready, so never watched), else readiness: the
    /// fd is set non-blocking and registered with the port's poller, once,
    /// edge-triggered, for both directions.
    ///
    /// S38, the same on every driver: what cannot be read or written as a
    /// stream (a directory, an `O_PATH` descriptor) is refused here; a
    /// device epoll cannot watch (it has no readiness: always ready) is
    /// served by the pool, in blocking mode, as a file is.
    fn associate(&self, port: &Port) -> Result<()> {
        let inner = &port.inner;
        let fd = self.io.fd.read();
        let fd = fd.as_ref().ok_or_else(closed_handle)?;
        if self.io.kind() == HandleKind::Stream {
            undrivable(fd).map_err(|why| Error::invalid("handle", self.describe_fd(fd), why))?;
        }
        // Set before the handle joins the port's list, so that a close of
        // the port that finds it there aborts it as its driver says.
        let choose = |driver: Driver| self.io.state.lock().driver = driver;
        let added = match inner.mio() {
            None => {
                // io_uring: files too go through the ring.
                if self.io.kind() != HandleKind::File {
                    set_nonblocking(fd)?;
                }
                choose(Driver::ring());
                inner.add(&self.io, None)
            }
            Some(_) if self.io.kind() == HandleKind::File => {
                choose(Driver::Pool(Work::default()));
                inner.add(&self.io, None)
            }
            Some(_) => {
                let flags = set_nonblocking(fd)?;
                let raw = fd.as_raw_fd();
                choose(Driver::Epoll(Streams::default()));
                match inner.add(&self.io, Some(&mut SourceFd(&raw))) {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && is_device(fd) => {
                        set_flags(fd, flags)?;
                        choose(Driver::Pool(Work::default()));
                        inner.add(&self.io, None)
                    }
                    r => r,
                }
            }
        };
        let key = added.map_err(|e| {
            choose(Driver::Unbound);
            match e.kind() {
                io::ErrorKind::InvalidInput => closed_port(),
                _ => Error::Io(e),
            }
        })?;
        let _ = self.key.set(key);
        let _ = self.port.set(Arc::downgrade(inner));
        Ok(())
    }

    /// Starts `req` (S23) on the handle's driver.
    fn submit(&self, req: Request, port: &Port) -> std::result::Result<(), (Error, Request)> {
        let queue = &*port.inner.queue;
        let io = &self.io;
        // A cached file read on the ring's port is done at once, with no
        // lock of the handle.
        #[cfg(target_os = "linux")]
        let req = match read_cached_at_once(io, &port.inner, req) {
            Ok(()) => return Ok(()),
            Err(req) => req,
        };
        let mut st = io.state.lock();
        if st.closed {
            return Err((closed_handle(), req));
        }
        if st.port_closed {
            return Err((closed_port(), req));
        }
        match &mut st.driver {
            Driver::Unbound => Err((Error::invalid("handle", "unbound", "is not bound to a port"), req)),
            Driver::Pool(w) => {
                w.start(req);
                queue.push(Item::Work(io.clone()));
                Ok(())
            }
            Driver::Epoll(s) => {
                let fd_guard = io.fd.read();
                let Some(fd) = fd_guard.as_ref() else {
                    return Err((closed_handle(), req));
                };
                s.start(io.kind(), fd, req, queue).map_err(|(e, req)| (Error::Io(e), req))
            }
            #[cfg(target_os = "linux")]
            Driver::Ring(s) => {
                let Some(ring) = port.inner.ring() else {
                    return Err((closed_port(), req));
                };
                let fd_guard = io.fd.read();
                let Some(fd) = fd_guard.as_ref() else {
                    return Err((closed_handle(), req));
                };
                let ring = ring.for_start(queue);
                s.start(&ring, io, fd, req).map_err(|(e, req)| (Error::Io(e), req))?;
                drop((fd_guard, st));
                ring.pushed(queue);
                Ok(())
            }
        }
    }

    fn cancel(&self, id: RequestId) -> Result<()> {
        let port = self.port.get().and_then(Weak::upgrade);
        let mut st = self.io.state.lock();
        let found = match &mut st.driver {
            Driver::Unbound => None,
            Driver::Epoll(s) => s.remove(id),
            Driver::Pool(w) => w.remove(id),
            #[cfg(target_os = "linux")]
            Driver::Ring(s) => {
                // In the kernel: its completion entry comes, aborted or
                // done, as its one completion (S25).
                if let Some(at) = s.cancel(id) {
                    if let Some(ring) = port.as_ref().and_then(|p| p.ring()) {
                        let pushed = ring.cancel([at]);
                        drop(st);
                        ring.submit_if(pushed);
                    }
                    return Ok(());
                }
                s.remove(id)
            }
        };
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
        let Some(port) = self.port.get().and_then(Weak::upgrade) else { return 0 };
        let mut st = self.io.state.lock();
        let (mut n, pushed) = port.cancel_in_kernel(&mut st.driver);
        n += st.driver.abort_waiting(&*port.queue);
        drop(st);
        port.submit_cancels(pushed);
        n
    }

    /// Aborts what is pending (S24), deregisters and closes the fd. False
    /// when it was closed before.
    fn close(&self) -> bool {
        let io = &self.io;
        let port = self.port.get().and_then(Weak::upgrade);
        let (fd, watched, pushed) = {
            let mut st = io.state.lock();
            if st.closed {
                return false;
            }
            st.closed = true;
            io.closed.store(true, Ordering::Release);
            let mut pushed = Vec::new();
            if let Some(port) = &port {
                st.driver.abort_waiting(&*port.queue);
                // Each completes once its entry comes back (S24).
                pushed = port.cancel_in_kernel(&mut st.driver).1;
            }
            (io.fd.write().take(), matches!(st.driver, Driver::Epoll(_)), pushed)
        };
        if let Some(port) = port {
            // The cancels go to the kernel now. The fd itself closes when
            // the last request in the kernel that names it completes (each
            // holds it), so its number is never reused under an entry.
            port.submit_cancels(pushed);
            if let (Some(fd), true) = (fd.as_ref(), watched) {
                port.deregister(fd);
            }
            if let Some(&key) = self.key.get() {
                port.remove(key);
            }
        }
        drop(fd);
        true
    }
}

/// A cached read of a regular file on a ring's port, done at once (see
/// [`uring::read_cached`](super::uring::read_cached)) with no lock of the
/// handle: two threads read one file side by side, as `pread` does. The
/// post guard keeps the port's close from ending before its completion is
/// queued; holding the fd keeps the handle's close from closing it under
/// the read. `Err` gives the request back for the ring.
#[cfg(target_os = "linux")]
fn read_cached_at_once(io: &Io, port: &UnixPortState, mut req: Request) -> std::result::Result<(), Request> {
    if io.kind() != HandleKind::File || port.ring().is_none() || io.is_closed() {
        return Err(req);
    }
    let fd_guard = io.fd.read();
    if let (Some(post), Some(fd)) = (port.queue.begin_post(), fd_guard.as_ref()) {
        if let Some(r) = super::uring::read_cached(fd.as_raw_fd(), &mut req) {
            post.push(Item::Packet(match r {
                Ok(n) => super::op::done(req, n),
                Err(e) => super::op::failed(req, &e),
            }));
            return Ok(());
        }
    }
    Err(req)
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

/// A regular file is served by the pool, anything else by readiness (see
/// [`kind_of`]).
impl From<File> for Handle {
    fn from(f: File) -> Handle {
        let fd = OwnedFd::from(f);
        let kind = kind_of(&fd);
        Handle::new(fd, kind)
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

impl From<UnixStream> for Handle {
    fn from(s: UnixStream) -> Handle {
        Handle::new(s.into(), HandleKind::LocalStream)
    }
}

impl From<UnixListener> for Handle {
    fn from(s: UnixListener) -> Handle {
        Handle::new(s.into(), HandleKind::LocalListener)
    }
}

/// An owned fd of any kind, told by [`kind_of`].
impl From<OwnedFd> for Handle {
    fn from(fd: OwnedFd) -> Handle {
        let kind = kind_of(&fd);
        Handle::new(fd, kind)
    }
}
