//! Handles: OS files and sockets that requests run on (S21-S27).

use std::fmt;
#[cfg(any(unix, windows))]
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use crate::sync::OnceLock;

use crate::error::{Error, Result, StartError};
use crate::manager::IoCompletionManager;
use crate::port::Port;
use crate::buf::{Buffer, IoBuf, IoBufMut};
use crate::future::Waiter;
use crate::start::{Accepted, Any, Bytes, Connected, ReadBuf, Received, Sent, Start, WriteBuf};
use crate::request::{Op, Request, RequestId};
use crate::sink::CompletionSink;
use crate::sync::{Arc, Mutex, Weak};
use crate::sys::{self, HandleDriver};

pub use crate::shared::HandleKind;

#[cfg(unix)]
mod unix;
#[cfg(windows)]
pub(crate) mod windows;

impl HandleKind {
    /// True for the socket kinds (TCP, UDP, Unix-domain).
    pub fn is_socket(self) -> bool {
        <sys::Handle as HandleDriver>::is_socket(self)
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

pub(crate) struct HandleState {
    pub(crate) sys: sys::Handle,
    binding: OnceLock<Binding>,
    bind_lock: Mutex<()>,
    pub(crate) metrics: crate::metrics::HandleCounters,
}

impl HandleState {
    /// The port the handle is bound to, if it is.
    pub(crate) fn bound_port(&self) -> Option<&Port> {
        self.binding.get().map(|b| &b.port)
    }
}

impl Drop for HandleState {
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
/// assert!(udp.port().is_some());
/// udp.close();                                   // pending requests would complete aborted
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handle {
    pub(crate) inner: Arc<HandleState>,
}

/// A handle held weakly (`WeakHandle::from(&handle)`): it does not keep the
/// handle open. What a callback bound to a handle should hold when it needs
/// the handle: a callback holding a [`Handle`] of its own handle keeps that
/// handle open for ever, since the handle owns its binding and the binding
/// owns the callback. (A completion also carries its handle:
/// [`Request::handle`](crate::Request::handle).)
#[derive(Clone)]
pub struct WeakHandle {
    inner: Weak<HandleState>,
}

impl WeakHandle {
    /// A weak handle of no handle.
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

/// A [`WeakHandle`] of the handle, which does not keep it open.
impl From<&Handle> for WeakHandle {
    fn from(h: &Handle) -> WeakHandle {
        h.weak()
    }
}

impl Handle {
    pub(crate) fn weak(&self) -> WeakHandle {
        WeakHandle { inner: Arc::downgrade(&self.inner) }
    }

    /// The backend's handle.
    pub(crate) fn sys(&self) -> &sys::Handle {
        &self.inner.sys
    }

    pub(crate) fn from_sys(sys: sys::Handle) -> Handle {
        Handle { inner: Arc::new(HandleState {
            sys,
            binding: OnceLock::new(),
            bind_lock: Mutex::new(()),
            metrics: Default::default(),
        }) }
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

    /// The port the handle is bound to.
    pub fn port(&self) -> Option<Port> {
        self.inner.binding.get().map(|b| b.port.clone())
    }

    /// The socket's local address.
    #[cfg(any(unix, windows))]
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner
            .sys
            .with_sock(|s| s.local_addr())?
            .as_socket()
            .ok_or_else(|| Error::invalid("handle", self.describe(), "has no IP address"))
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
    #[cfg(any(unix, windows))]
    pub fn with_socket<T>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<T>) -> Result<T> {
        self.inner.sys.with_sock(f)
    }

    fn describe(&self) -> String {
        self.inner.sys.describe()
    }

    /// A request of any kind, with any buffer: the CLR's overlapped call.
    /// `handle.request(op, buffer).start()` completes to the handle's
    /// callback or the host's sink; the typed methods below make the same
    /// value with the caller's own buffer type. A read into a [`Buffer`]
    /// given read-only ([`Buffer::from_buf`]) is refused at start with
    /// `InvalidArgument`; the typed [`Handle::read`] refuses it at compile
    /// time.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use iocompletion::{Buffer, Handle, Op, Request, Runtime, Status};
    ///
    /// let rt = Runtime::builder().build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let udp = Handle::from(std::net::UdpSocket::bind("127.0.0.1:0")?);
    /// let to = udp.local_addr()?;
    /// let tx = std::sync::Mutex::new(tx);
    /// rt.bind_io_completion_callback(&udp, Arc::new(move |status: Status, bytes: usize, req: Request| {
    ///     tx.lock().unwrap().send((status.is_success(), bytes, req.user_data())).unwrap();
    /// }), 0)?;
    /// udp.request(Op::SendTo(to), Buffer::from(b"ping".to_vec())).user_data(7).start()?;
    /// assert_eq!(rx.recv()?, (true, 4, 7));
    /// # rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(&self, op: Op, buffer: Buffer) -> Start<'_, Any> {
        Start::new(self, op, buffer)
    }

    /// Reads from a stream into `buf`, from its start up to its capacity;
    /// the completion hands it back with its length set to the bytes read
    /// (S32), so `Vec::with_capacity(n)` needs no zeroing. Any
    /// [`IoBufMut`](crate::IoBufMut) will do, or a [`Vectored`](crate::Vectored) list of
    /// them, filled in order; the same type comes back. [`Start::at`] makes
    /// it a positional read of a regular file.
    ///
    /// A read with no room (`buf` of capacity 0) is the zero-byte read of IOCP
    /// (S31): it completes, with 0 bytes and taking no data, once the
    /// stream is readable (data waiting, its end, or an error, which it
    /// completes with). A server holds idle connections this way without a
    /// buffer each, and starts the real read when it completes:
    ///
    /// ```no_run
    /// # fn f(conn: &iocompletion::Handle) -> Result<(), iocompletion::StartError<Vec<u8>>> {
    /// conn.read(Vec::new()).start()?; // completes when data arrives; then:
    /// conn.read(Vec::with_capacity(16 * 1024)).start()?; // finds the data at once
    /// # Ok(()) }
    /// ```
    pub fn read<B: ReadBuf>(&self, buf: B) -> Start<'_, Bytes<B>> {
        Start::new(self, Op::Read, buf.into_buffer_mut())
    }

    /// Writes `buf` to a stream (the completion tells how much was
    /// written): any [`IoBuf`](crate::IoBuf), or a [`Vectored`](crate::Vectored) list of
    /// them, sent in order. [`Start::at`] makes it a positional write of a
    /// regular file.
    pub fn write<B: WriteBuf>(&self, buf: B) -> Start<'_, Bytes<B>> {
        Start::new(self, Op::Write, buf.into_buffer())
    }

    /// Accepts one connection on a listener; the completion's request holds
    /// it ([`Request::take_accepted`]) and its peer address.
    ///
    /// On Windows, on the server end of a named pipe, it waits for a client
    /// to connect (`ConnectNamedPipe`); the connection is the pipe handle
    /// itself, so the request holds none. After the pipe is disconnected
    /// the same instance accepts again.
    pub fn accept(&self) -> Start<'_, Accepted> {
        Start::new(self, Op::Accept, Buffer::None)
    }

    /// Connects a TCP socket (made from a `socket2::Socket`, unconnected)
    /// to `addr`.
    pub fn connect(&self, addr: SocketAddr) -> Start<'_, Connected> {
        Start::new(self, Op::Connect(addr), Buffer::None)
    }

    /// Sends `buf` as one datagram to `addr`.
    pub fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> Start<'_, Sent<B>> {
        Start::new(self, Op::SendTo(addr), Buffer::from_buf(buf))
    }

    /// Receives one datagram into `buf`, up to its capacity; the request's
    /// [`addr`](Request::addr) is its source.
    pub fn recv_from<B: IoBufMut>(&self, buf: B) -> Start<'_, Received<B>> {
        Start::new(self, Op::RecvFrom, Buffer::from_buf_mut(buf))
    }

    /// Starts a request whose completion resolves the returned waiter.
    pub(crate) fn start_waiter(
        &self,
        op: Op,
        buffer: Buffer,
        user_data: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<Waiter, StartError> {
        let (waiter, target) = Waiter::new(RequestId(0));
        let id = self.start_targeted(op, buffer, user_data, Some(target), deadline)?;
        Ok(waiter.started(id, self.weak()))
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
                    "is bound with bind_async: start its requests with .await or .then(f)",
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
            if let Err(e) = crate::timer::watch(d, id, self.weak()) {
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

    /// `CancelIoEx` for one request (S25). The request still completes
    /// exactly once: aborted, or normally if it won the race. A request that
    /// already completed, or was never started here, gives a "not found" `Io` error.
    ///
    /// ```
    /// use std::future::IntoFuture;
    /// use iocompletion::{Handle, Runtime};
    ///
    /// let rt = Runtime::builder().build()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let _peer = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let conn = Handle::from(listener.accept()?.0);
    /// rt.bind_async(&conn)?;
    ///
    /// let read = conn.read(Vec::<u8>::with_capacity(16)).into_future(); // started now
    /// conn.cancel(read.id().expect("started"))?; // nothing was sent: the read is pending
    /// let (r, buf) = futures::executor::block_on(read);
    /// assert!(iocompletion::Status::from_io_error(&r.unwrap_err()).is_aborted());
    /// assert_eq!(buf.capacity(), 16, "the buffer comes back");
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
            .field("bound", &self.port().is_some())
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

/// Two handles are equal when they are the same handle (clones of one).
impl PartialEq for Handle {
    fn eq(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Handle {}
