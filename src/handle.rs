//! Handles: OS files and sockets that requests run on (S21-S27).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::OnceLock;

use crate::error::{Error, Result, StartError};
use crate::manager::IoCompletionManager;
use crate::port::Port;
use crate::buf::{Buffer, IoBuf, IoBufMut};
use crate::request::{Op, Request, RequestId};
use crate::sink::CompletionSink;
use crate::sync::{Arc, Mutex, Weak};
use crate::sys::{self, HandleDriver};

/// What kind of OS object a [`Handle`] is; it decides which requests the
/// handle takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandleKind {
    /// A regular file: positional requests, served by the pool on Unix.
    File,
    /// A connected (or connectable) TCP socket.
    TcpStream,
    /// A listening TCP socket.
    TcpListener,
    /// A UDP socket.
    Udp,
    /// A local stream: a Unix domain socket, or a named pipe on Windows.
    LocalStream,
    /// A local listener: a Unix domain listener.
    LocalListener,
    /// Any other stream-like object (pipes, ttys, devices).
    Stream,
}

impl HandleKind {
    /// True for the socket kinds (TCP, UDP, Unix-domain).
    pub fn is_socket(self) -> bool {
        matches!(
            self,
            HandleKind::TcpStream | HandleKind::TcpListener | HandleKind::Udp | HandleKind::LocalListener
        ) || (sys::LOCAL_STREAM_IS_SOCKET && self == HandleKind::LocalStream)
    }
}

/// Checks that `op` suits a handle of `kind` and its buffer, before any
/// allocation or I/O.
fn check(kind: HandleKind, op: Op, buffer: &Buffer) -> Result<()> {
    let bad =
        |why: &str| Err(Error::invalid("op", format!("{op:?}"), &format!("{why} (the handle is {kind:?})")));
    if op.needs_buffer() && matches!(buffer, Buffer::None) {
        return bad("this request needs a buffer");
    }
    if op.takes_one_buffer() && buffer.is_vectored() {
        return bad("this request takes one buffer, not a vectored one");
    }
    if op.fills_buffer() && !buffer.is_writable() {
        return bad("a read needs a writable buffer (given as IoBufMut)");
    }
    op.suits(kind).or_else(bad)
}

/// What a bind fixed for the handle's lifetime.
pub(crate) struct Binding {
    pub(crate) port: Port,
    host: Arc<dyn IoCompletionManager>,
    /// `host_overlapped_size()`, asked once at bind (S18).
    ext_len: usize,
    /// The `BindIoCompletionCallback` callback, if bound that way (S22).
    callback: Option<Arc<dyn CompletionSink>>,
    /// Bound with `Runtime::bind_async`: only requests with a target of
    /// their own (futures) may start, since nothing else would take them.
    futures_only: bool,
}

pub(crate) struct HandleInner {
    pub(crate) sys: sys::Handle,
    binding: OnceLock<Binding>,
    bind_lock: Mutex<()>,
    pub(crate) metrics: crate::metrics::HandleCounters,
}

impl HandleInner {
    /// The port the handle is bound to, if it is.
    pub(crate) fn bound_port(&self) -> Option<&Port> {
        self.binding.get().map(|b| &b.port)
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // Pending requests complete aborted, with their buffers (S24).
        self.sys.close();
    }
}

/// An OS file or socket that requests run on. Cheap to clone; clones are
/// the same handle. Dropping the last clone closes it, which aborts every
/// request still pending on it (S24).
///
/// Make one from a std type (`TcpStream`, `TcpListener`, `UdpSocket`,
/// `File`, and on Unix `UnixStream`, `UnixListener` or any `OwnedFd`), bind
/// it to a port with [`IoCompletionManager::bind`] or
/// [`Runtime::bind_io_completion_callback`](crate::Runtime::bind_io_completion_callback),
/// then start requests. Each request owns its buffer until its completion
/// hands it back (S26).
///
/// A start either returns the request's id, and the request then completes
/// exactly once, or returns a [`StartError`] with the buffer, and nothing is
/// posted (S23).
#[derive(Clone)]
///
/// ```
/// use iocompletion::{Handle, HandleKind, Runtime};
///
/// let rt = Runtime::builder().build()?;
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let udp = Handle::from(socket);               // the handle owns the socket now
/// assert_eq!(udp.kind(), HandleKind::Udp);
/// rt.bind_io_completion_callback(&udp, std::sync::Arc::new(|_, _, _| {}), 0)?;
/// assert!(udp.is_bound());
/// udp.close();                                   // pending requests would complete aborted
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handle {
    pub(crate) inner: Arc<HandleInner>,
}

/// A handle held weakly ([`Handle::downgrade`]): it does not keep the
/// handle open. What a callback bound to a handle should hold when it needs
/// the handle: a callback holding a [`Handle`] of its own handle keeps that
/// handle open for ever, since the handle owns its binding and the binding
/// owns the callback. (A completion also carries its handle:
/// [`Request::handle`](crate::Request::handle).)
#[derive(Clone)]
pub struct WeakHandle {
    inner: Weak<HandleInner>,
}

impl WeakHandle {
    /// A weak handle of no handle, for the unit tests of the future.
    #[cfg(test)]
    pub(crate) fn none() -> WeakHandle {
        WeakHandle { inner: Weak::new() }
    }

    /// The handle, while a [`Handle`] of it is alive somewhere.
    pub fn upgrade(&self) -> Option<Handle> {
        self.inner.upgrade().map(|inner| Handle { inner })
    }
}

impl fmt::Debug for WeakHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakHandle").field("alive", &(self.inner.strong_count() > 0)).finish()
    }
}

impl Handle {
    /// A [`WeakHandle`] of this handle, which does not keep it open.
    pub fn downgrade(&self) -> WeakHandle {
        WeakHandle { inner: Arc::downgrade(&self.inner) }
    }

    /// The backend's handle.
    pub(crate) fn sys(&self) -> &sys::Handle {
        &self.inner.sys
    }

    pub(crate) fn from_sys(sys: sys::Handle) -> Handle {
        Handle { inner: Arc::new(HandleInner {
            sys,
            binding: OnceLock::new(),
            bind_lock: Mutex::new(()),
            metrics: Default::default(),
        }) }
    }

    /// A new, unconnected TCP socket of the address family of `addr`, ready
    /// for [`Handle::connect`] once bound.
    pub fn tcp_socket_for(addr: &SocketAddr) -> Result<Handle> {
        Ok(Handle::from_sys(sys::Handle::tcp_socket_for(addr)?))
    }

    /// Binds the handle to `port` for `host` (the primitive behind
    /// [`IoCompletionManager::bind`]; a custom host's `bind` calls it).
    ///
    /// Associates the OS handle with the port once, asks the host for its
    /// `host_overlapped_size()` once, and records `callback` (if any) as the
    /// handle's completion target. A second attach gives `InvalidArgument`
    /// (S21), as does a closed handle or port.
    pub fn attach(
        &self,
        port: &Port,
        host: Arc<dyn IoCompletionManager>,
        callback: Option<Arc<dyn CompletionSink>>,
    ) -> Result<()> {
        self.attach_as(port, host, callback, false)
    }

    pub(crate) fn attach_as(
        &self,
        port: &Port,
        host: Arc<dyn IoCompletionManager>,
        callback: Option<Arc<dyn CompletionSink>>,
        futures_only: bool,
    ) -> Result<()> {
        // The host is user code: asked before the bind lock is taken, so a
        // host that looks at this handle does not deadlock (S18: the size
        // is fixed for the host's lifetime).
        let ext_len = host.host_overlapped_size()?;
        let _g = self.inner.bind_lock.lock();
        if self.inner.binding.get().is_some() {
            return Err(Error::invalid("handle", self.describe(), "is already bound to a port"));
        }
        if self.inner.sys.is_closed() {
            return Err(Error::invalid("handle", self.describe(), "is closed"));
        }
        if port.is_closed() {
            return Err(Error::invalid("port", port.id(), "is closed"));
        }
        self.inner.sys.associate(&port.inner.sys)?;
        let _ = self.inner.binding.set(Binding { port: port.clone(), host, ext_len, callback, futures_only });
        Ok(())
    }

    /// Asks the OS to queue no completion packet for a request on this
    /// handle that completes at once (Windows:
    /// `SetFileCompletionNotificationModes` with
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`). Such a request still
    /// completes exactly once, with its buffer, through the port: the
    /// crate hands it to the port's own queue as the start returns, where
    /// the next take finds it without a kernel call (no packet is posted
    /// unless a thread is blocked on the port). A request that fails at
    /// once still returns its error from the start and completes never
    /// (S23). Call it before the handle is bound (afterwards:
    /// `InvalidArgument`), so that no request can start under the other
    /// mode.
    ///
    /// Returns whether the handle is now set so: true for a TCP stream or
    /// listener (of a socket provider without layered non-IFS providers),
    /// a disk file and a byte-type pipe on Windows; false for a UDP socket
    /// and a message-type pipe, whose "buffer too small" results come at
    /// once with an error code yet with a packet (which a skipping handle
    /// could not tell apart), for other handles, and on every other OS,
    /// where a request that completes at once already goes to the port's
    /// own queue with no kernel call. [`Port::direct_completions`] counts
    /// the completions delivered this way.
    ///
    /// Completions of such a handle may overtake packets the kernel queued
    /// earlier on the same port (a take looks at the port's own queue
    /// first, and at the kernel's at least every 16 packets in a row).
    /// Under Wine, file reads and writes, `AcceptEx` and `ConnectEx` never
    /// complete at once, so only socket sends and receives and pipe reads
    /// and writes take this path there (docs/backends.md).
    pub fn skip_completion_port_on_success(&self) -> Result<bool> {
        let _g = self.inner.bind_lock.lock();
        if self.inner.binding.get().is_some() {
            return Err(Error::invalid(
                "handle",
                self.describe(),
                "is bound already: set skip_completion_port_on_success before binding",
            ));
        }
        self.inner.sys.skip_completion_port_on_success()
    }

    /// What kind of OS object the handle is.
    pub fn kind(&self) -> HandleKind {
        self.inner.sys.kind()
    }

    /// True once the handle is bound to a port.
    pub fn is_bound(&self) -> bool {
        self.inner.binding.get().is_some()
    }

    /// The port the handle is bound to.
    pub fn port(&self) -> Option<Port> {
        self.inner.binding.get().map(|b| b.port.clone())
    }

    /// True when both values are the same handle.
    pub fn same(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner
            .sys
            .with_sock(|s| s.local_addr())?
            .as_socket()
            .ok_or_else(|| Error::invalid("handle", self.describe(), "has no IP address"))
    }

    /// The connected socket's peer address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.inner
            .sys
            .with_sock(|s| s.peer_addr())?
            .as_socket()
            .ok_or_else(|| Error::invalid("handle", self.describe(), "has no IP peer"))
    }

    /// Lends the socket behind the handle to `f` as a [`socket2::SockRef`],
    /// for the socket options and calls the crate does not wrap (S38): the
    /// binding to the port is not undone. The handle cannot be closed
    /// while `f` runs (a close waits for it). Fails with `InvalidArgument`
    /// when the handle is not a socket or is closed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use iocompletion::Handle;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let h = Handle::from(std::net::TcpStream::connect(listener.local_addr()?)?);
    /// h.with_socket(|s| s.set_keepalive(true))?;
    /// assert!(h.with_socket(|s| s.keepalive())?);
    /// # Ok(()) }
    /// ```
    pub fn with_socket<T>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<T>) -> Result<T> {
        self.inner.sys.with_sock(f)
    }

    /// `TCP_NODELAY`: sends small writes at once instead of waiting to
    /// coalesce them (Nagle's algorithm off).
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.with_socket(|s| s.set_nodelay(nodelay))
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> Result<bool> {
        self.with_socket(|s| s.nodelay())
    }

    /// Shuts down the read side, the write side or both of a connected
    /// socket (`shutdown`): after `Shutdown::Write` the peer reads the end
    /// of the stream while this side can still read. The handle stays open
    /// and bound; pending requests complete as the OS decides (a pending
    /// read after `Shutdown::Read` ends with 0 bytes or an error).
    pub fn shutdown(&self, how: std::net::Shutdown) -> Result<()> {
        self.with_socket(|s| s.shutdown(how))
    }

    fn describe(&self) -> String {
        self.inner.sys.describe()
    }

    /// Starts a request of any kind. The typed methods below call this.
    ///
    /// Order of events: the op is checked against the handle's kind, the
    /// request is allocated with the host extension zeroed, the host's
    /// `initialize_host_overlapped` runs (its error stops the request, S19),
    /// then the backend starts the I/O.
    pub fn start(&self, op: Op, buffer: Buffer) -> Result<RequestId, StartError> {
        self.start_with(op, buffer, 0)
    }

    /// Like [`Handle::start`], with `user_data` set on the request before it
    /// starts (and before the host's initializer runs); the completion's
    /// [`Request::user_data`] gives it back.
    pub fn start_with(&self, op: Op, buffer: Buffer, user_data: usize) -> Result<RequestId, StartError> {
        self.start_targeted(op, buffer, user_data, None, None)
    }

    /// Starts a request that must complete before `deadline` (S33). When
    /// the deadline passes first, the request is cancelled and completes
    /// once, with the OS's timed-out status (`ETIMEDOUT` on Unix;
    /// `WSAETIMEDOUT` for a socket, `ERROR_TIMEOUT` otherwise, on Windows)
    /// and its buffer; a completion that wins the race is reported as it
    /// is. A deadline that has already passed refuses the start with
    /// `Error::Timeout`. One thread serves every deadline and timer of the
    /// process.
    pub fn start_before(&self, op: Op, buffer: Buffer, deadline: std::time::Instant) -> Result<RequestId, StartError> {
        self.start_targeted(op, buffer, 0, None, Some(deadline))
    }

    /// Starts a request whose completion goes to `target` when given, else
    /// to the handle's callback (or the host's sink).
    pub(crate) fn start_targeted(
        &self,
        op: Op,
        buffer: Buffer,
        user_data: usize,
        target: Option<Arc<dyn CompletionSink>>,
        deadline: Option<std::time::Instant>,
    ) -> Result<RequestId, StartError> {
        if deadline.is_some_and(|d| d <= std::time::Instant::now()) {
            return Err(StartError::new(Error::Timeout, buffer));
        }
        let Some(b) = self.inner.binding.get() else {
            return Err(StartError::new(
                Error::invalid("handle", self.describe(), "is not bound to a port"),
                buffer,
            ));
        };
        if let Err(e) = check(self.kind(), op, &buffer) {
            return Err(StartError::new(e, buffer));
        }
        if b.futures_only && target.is_none() {
            return Err(StartError::new(
                Error::invalid(
                    "handle",
                    self.describe(),
                    "is bound with bind_async: start its requests with start_async or the *_async methods",
                ),
                buffer,
            ));
        }
        if let Err(e) = b.port.admit() {
            return Err(StartError::new(e, buffer));
        }
        // From here every refusal gives the admission back.
        let refuse = |e: Error, buffer: Buffer| {
            b.port.taken(1);
            Err(StartError::new(e, buffer))
        };
        let refuse_request = |e: Error, req: Request| {
            b.port.taken(1);
            Err(StartError::of(e, req))
        };
        let mut req = match Request::alloc(op, buffer, b.ext_len) {
            Ok(r) => r,
            Err(buffer) => return refuse(Error::OutOfMemory, buffer),
        };
        {
            let h = req.header_mut();
            h.user_data = user_data;
            h.handle = Some(Arc::downgrade(&self.inner));
        }
        if let Err(e) = b.host.initialize_host_overlapped(&mut req) {
            return refuse_request(e, req);
        }
        req.header_mut().target = target.or_else(|| b.callback.clone());
        let id = req.id();
        if let Some(d) = deadline {
            // Watched before the request can complete, so its completion
            // always finds the entry (see `timer`).
            if let Err(e) = crate::timer::watch(d, id, self.downgrade()) {
                return refuse_request(Error::Io(e), req);
            }
            req.header_mut().deadline = Some(d);
        }
        crate::metrics::starting(&b.port, &self.inner, &mut req);
        match self.inner.sys.submit(req, &b.port.inner.sys) {
            Ok(()) => {
                b.port.pushed();
                if let Some(d) = deadline.filter(|&d| d <= std::time::Instant::now()) {
                    // It passed while the request started: the timer's
                    // cancel may have come too early to find it.
                    crate::timer::expire_now(d, id);
                    let _ = self.cancel(id);
                }
                Ok(id)
            }
            Err((e, mut req)) => {
                crate::metrics::start_failed(&b.port, &self.inner, op, &e);
                if let Some(d) = req.header_mut().deadline.take() {
                    crate::timer::unwatch(d, id);
                }
                refuse_request(e, req)
            }
        }
    }

    /// Reads from a stream into `buf`, from its start up to its capacity;
    /// the completion hands it back with its length set to the bytes read
    /// (S32), so `Vec::with_capacity(n)` needs no zeroing.
    ///
    /// A read with no room (`buf` of capacity 0) is the zero-byte read of IOCP
    /// (S31): it completes, with 0 bytes and taking no data, once the
    /// stream is readable (data waiting, its end, or an error, which it
    /// completes with). A server holds idle connections this way without a
    /// buffer each, and starts the real read when it completes:
    ///
    /// ```no_run
    /// # fn f(conn: &iocompletion::Handle) -> Result<(), iocompletion::StartError> {
    /// conn.read(Vec::new())?; // completes when data arrives; then:
    /// conn.read(Vec::with_capacity(16 * 1024))?; // finds the data at once
    /// # Ok(()) }
    /// ```
    pub fn read(&self, buf: impl IoBufMut) -> Result<RequestId, StartError> {
        self.start(Op::Read, Buffer::from_buf_mut(buf))
    }

    /// Reads from a stream into several buffers in order, each up to its
    /// capacity (S32).
    pub fn read_vectored<B: IoBufMut>(&self, bufs: Vec<B>) -> Result<RequestId, StartError> {
        self.start(Op::Read, Buffer::from_bufs_mut(bufs))
    }

    /// Writes `buf` to a stream (the completion tells how much was written).
    pub fn write(&self, buf: impl IoBuf) -> Result<RequestId, StartError> {
        self.start(Op::Write, Buffer::from_buf(buf))
    }

    /// Writes several buffers to a stream in order.
    pub fn write_vectored<B: IoBuf>(&self, bufs: Vec<B>) -> Result<RequestId, StartError> {
        self.start(Op::Write, Buffer::from_bufs(bufs))
    }

    /// Reads a regular file at `offset` into `buf`, up to its capacity
    /// (S32); 0 bytes at or past its end.
    pub fn read_at(&self, offset: u64, buf: impl IoBufMut) -> Result<RequestId, StartError> {
        self.start(Op::ReadAt(offset), Buffer::from_buf_mut(buf))
    }

    /// Writes `buf` to a regular file at `offset`.
    pub fn write_at(&self, offset: u64, buf: impl IoBuf) -> Result<RequestId, StartError> {
        self.start(Op::WriteAt(offset), Buffer::from_buf(buf))
    }

    /// Accepts one connection on a listener; the completion's request holds
    /// it ([`Request::take_accepted`]) and its peer address.
    ///
    /// On Windows, on the server end of a named pipe, it waits for a client
    /// to connect (`ConnectNamedPipe`); the connection is the pipe handle
    /// itself, so the request holds none. After
    /// `Handle::disconnect_named_pipe` the same instance accepts again.
    pub fn accept(&self) -> Result<RequestId, StartError> {
        self.start(Op::Accept, Buffer::None)
    }

    /// Connects a socket made with [`Handle::tcp_socket_for`].
    pub fn connect(&self, addr: SocketAddr) -> Result<RequestId, StartError> {
        self.start(Op::Connect(addr), Buffer::None)
    }

    /// Sends `buf` as one datagram to `addr`.
    pub fn send_to(&self, buf: impl IoBuf, addr: SocketAddr) -> Result<RequestId, StartError> {
        self.start(Op::SendTo(addr), Buffer::from_buf(buf))
    }

    /// Receives one datagram into `buf`; the request's
    /// [`addr`](Request::addr) is its source.
    pub fn recv_from(&self, buf: impl IoBufMut) -> Result<RequestId, StartError> {
        self.start(Op::RecvFrom, Buffer::from_buf_mut(buf))
    }

    /// `CancelIoEx` for one request (S25). The request still completes
    /// exactly once: aborted, or normally if it won the race. A request that
    /// already completed, or was never started here, gives a "not found" `Io` error.
    ///
    /// ```
    /// use iocompletion::{Handle, Op, Runtime};
    ///
    /// let rt = Runtime::builder().build()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let _peer = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let conn = Handle::from(listener.accept()?.0);
    /// rt.bind_async(&conn)?;
    ///
    /// let read = conn.start_async(Op::Read, Vec::<u8>::with_capacity(16).into())?;
    /// conn.cancel(read.id())?; // nothing was sent: the read is pending
    /// let done = futures::executor::block_on(read);
    /// assert!(done.status.is_aborted());
    /// assert_eq!(done.into_buffer().capacity(), 16, "the buffer comes back");
    /// # rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, id: RequestId) -> Result<()> {
        self.inner.sys.cancel(id)
    }

    /// `CancelIoEx(handle, NULL)`: cancels every pending request; returns
    /// how many were cancelled. Each completes aborted with its buffer (S24).
    pub fn cancel_all(&self) -> Result<usize> {
        Ok(self.inner.sys.cancel_all())
    }

    /// Closes the handle: every pending request completes aborted with its
    /// buffer (S24). Later requests fail at start. Closing twice is harmless.
    pub fn close(&self) {
        self.inner.sys.close();
    }

    /// True once the handle is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.sys.is_closed()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("handle", &self.describe())
            .field("bound", &self.is_bound())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl From<TcpStream> for Handle {
    fn from(s: TcpStream) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

impl From<TcpListener> for Handle {
    fn from(s: TcpListener) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

impl From<UdpSocket> for Handle {
    fn from(s: UdpSocket) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

/// A file, pipe or device opened by the standard library (S38).
///
/// On Unix this always succeeds: a regular file is served by the pool with
/// positional requests, anything else is driven by readiness. On Windows a
/// std `File` is opened for synchronous I/O, which a completion port cannot
/// drive, so it is reopened with `ReOpenFile(FILE_FLAG_OVERLAPPED)` with the
/// same access rights and the original handle is closed; when that fails
/// (a pipe or device that cannot be reopened) the conversion fails with
/// `NotImplemented` and no handle is made. Open such objects overlapped
/// yourself and use `Handle::from_overlapped_handle`.
impl TryFrom<std::fs::File> for Handle {
    type Error = Error;

    fn try_from(f: std::fs::File) -> Result<Handle> {
        Ok(Handle::from_sys(sys::Handle::try_from(f)?))
    }
}
