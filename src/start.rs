//! One way to start a request: a [`Handle`] method per request kind
//! returns a [`Start`], and the value chooses how the request completes
//! (the handle's sink, a closure, or a future), its deadline and its user
//! data, then starts it.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::future::IntoFuture;
//! use std::io::Write;
//! use std::time::Duration;
//! use iocompletion::{Handle, Runtime};
//!
//! let rt = Runtime::builder().build()?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let mut peer = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let conn = Handle::from(listener.accept()?.0);
//! rt.bind_async(&conn)?;
//!
//! peer.write_all(b"hello")?;
//! // A future: the result and the caller's own buffer come back.
//! let read = conn.read(Vec::with_capacity(64)).timeout(Duration::from_secs(30));
//! let (n, buf) = futures::executor::block_on(read.into_future()); // or read.await
//! assert_eq!((n?, &buf[..]), (5, &b"hello"[..]));
//!
//! // A closure, run once on a pool thread.
//! let (tx, rx) = std::sync::mpsc::channel();
//! conn.read(Vec::with_capacity(64)).then(move |(n, buf)| tx.send((n.ok(), buf)).unwrap())?;
//! peer.write_all(b"hi")?;
//! assert_eq!(rx.recv()?, (Some(2), b"hi".to_vec()));
//! # rt.shutdown();
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::buf::{Buffer, IoBuf, IoBufMut};
use crate::error::StartError;
use crate::future::{Completed, Waiter};
use crate::handle::{Handle, WeakHandle};
use crate::op::Op;
use crate::request::{Request, RequestId};
use crate::sink::CompletionSink;
use crate::status::Status;
use crate::sync::{Arc, Mutex};

mod sealed {
    pub trait Sealed {}
}

/// Several buffers as the parts of one vectored request: a read fills
/// them in order, each up to its capacity (S32); a write sends them in
/// order. The parts come back as they were given.
///
/// ```no_run
/// # fn f(conn: &iocompletion::Handle) -> Result<(), iocompletion::StartError<iocompletion::Vectored<Vec<u8>>>> {
/// use iocompletion::Vectored;
/// conn.write(Vectored(vec![b"head".to_vec(), b"body".to_vec()])).start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vectored<B>(pub Vec<B>);

/// A buffer a request can send from: any [`IoBuf`], or a [`Vectored`] list
/// of them. Sealed; it comes back as the type it was given.
pub trait WriteBuf: Sized + Send + Sync + 'static + sealed::Sealed {
    #[doc(hidden)]
    fn into_buffer(self) -> Buffer;
    #[doc(hidden)]
    fn from_buffer(buffer: Buffer) -> Result<Self, Buffer>;
}

/// A buffer a request can read into: any [`IoBufMut`], or a [`Vectored`]
/// list of them. A buffer given as [`IoBuf`] only (a `&'static [u8]`, a
/// `Bytes`) cannot be read into, and the compiler says so:
///
/// ```compile_fail
/// # fn f(conn: &iocompletion::Handle) {
/// conn.read(b"read-only".as_slice()).start(); // error: `&[u8]: ReadBuf` is not satisfied
/// # }
/// ```
pub trait ReadBuf: WriteBuf {
    #[doc(hidden)]
    fn into_buffer_mut(self) -> Buffer;
}

impl<B: IoBuf> sealed::Sealed for B {}
impl<B: IoBuf> sealed::Sealed for Vectored<B> {}

impl<B: IoBuf> WriteBuf for B {
    fn into_buffer(self) -> Buffer {
        Buffer::from_buf(self)
    }
    fn from_buffer(buffer: Buffer) -> Result<B, Buffer> {
        buffer.into_buf()
    }
}

impl<B: IoBufMut> ReadBuf for B {
    fn into_buffer_mut(self) -> Buffer {
        Buffer::from_buf_mut(self)
    }
}

impl<B: IoBuf> WriteBuf for Vectored<B> {
    fn into_buffer(self) -> Buffer {
        Buffer::from_bufs(self.0)
    }
    fn from_buffer(buffer: Buffer) -> Result<Vectored<B>, Buffer> {
        buffer.into_bufs().map(Vectored)
    }
}

impl<B: IoBufMut> ReadBuf for Vectored<B> {
    fn into_buffer_mut(self) -> Buffer {
        Buffer::from_bufs_mut(self.0)
    }
}

/// The caller's buffer back from the one the request carried. They differ
/// only when a custom host replaced the request's buffer, against S26.
fn typed<B: WriteBuf>(buffer: Buffer) -> B {
    match B::from_buffer(buffer) {
        Ok(b) => b,
        Err(other) => panic!(
            "the host replaced the request's buffer (S26): expected {}, found {other:?}",
            std::any::type_name::<B>()
        ),
    }
}

/// What a kind of request hands back: to a failed start, to its closure,
/// and to its future. Sealed; the kinds are the types of this module.
pub trait Kind: Send + 'static + sealed::Sealed {
    /// The buffer a failed start hands back: the caller's own type.
    type Buf: Send + 'static;
    /// What the closure of [`Start::then`] gets.
    type Output: Send + 'static;
    /// What awaiting the request gives.
    type Awaited: Send + 'static;
    /// True when the result needs the handle (an accept on a named pipe's
    /// server end gives the pipe itself): only then is it held, weakly.
    #[doc(hidden)]
    const NEEDS_HANDLE: bool = false;
    #[doc(hidden)]
    fn back(buffer: Buffer) -> Self::Buf;
    #[doc(hidden)]
    fn done(c: Completed, handle: &WeakHandle) -> Self::Output;
    #[doc(hidden)]
    fn awaited(out: Self::Output) -> Self::Awaited;
    #[doc(hidden)]
    fn refused(e: StartError<Self::Buf>) -> Self::Awaited;
}

/// A request of any kind ([`Handle::request`]): the closure gets its
/// [`Completed`]; awaiting it gives the `Completed`, or the [`StartError`]
/// of a start that failed.
#[derive(Debug)]
pub struct Any(());

/// A read or a write ([`Handle::read`], [`Handle::write`]), at a position
/// ([`Start::at`]) or not: the result is the bytes moved, with the buffer.
#[derive(Debug)]
pub struct Bytes<B>(PhantomData<fn() -> B>);

/// A datagram sent ([`Handle::send_to`]): the result is the bytes sent,
/// with the buffer.
#[derive(Debug)]
pub struct Sent<B>(PhantomData<fn() -> B>);

/// A datagram received ([`Handle::recv_from`]): the result is the bytes
/// and the source address, with the buffer.
#[derive(Debug)]
pub struct Received<B>(PhantomData<fn() -> B>);

/// An accept ([`Handle::accept`]): the result is the connection and the
/// peer's address where the OS tells it.
#[derive(Debug)]
pub struct Accepted(());

/// A connect ([`Handle::connect`]).
#[derive(Debug)]
pub struct Connected(());

impl sealed::Sealed for Any {}
impl<B> sealed::Sealed for Bytes<B> {}
impl<B> sealed::Sealed for Sent<B> {}
impl<B> sealed::Sealed for Received<B> {}
impl sealed::Sealed for Accepted {}
impl sealed::Sealed for Connected {}

impl Kind for Any {
    type Buf = Buffer;
    type Output = Completed;
    type Awaited = Result<Completed, StartError>;
    fn back(buffer: Buffer) -> Buffer {
        buffer
    }
    fn done(c: Completed, _: &WeakHandle) -> Completed {
        c
    }
    fn awaited(out: Completed) -> Self::Awaited {
        Ok(out)
    }
    fn refused(e: StartError) -> Self::Awaited {
        Err(e)
    }
}

/// The `(result, buffer)` kinds.
macro_rules! bytes_kind {
    ($($k:ident),*) => {$(
        impl<B: WriteBuf> Kind for $k<B> {
            type Buf = B;
            type Output = (io::Result<usize>, B);
            type Awaited = (io::Result<usize>, B);
            fn back(buffer: Buffer) -> B {
                typed(buffer)
            }
            fn done(c: Completed, _: &WeakHandle) -> Self::Output {
                (c.result(), typed(c.into_buffer()))
            }
            fn awaited(out: Self::Output) -> Self::Awaited {
                out
            }
            fn refused(e: StartError<B>) -> Self::Awaited {
                (Err(e.error.into()), e.buffer)
            }
        }
    )*};
}
bytes_kind!(Bytes, Sent);

impl<B: ReadBuf> Kind for Received<B> {
    type Buf = B;
    type Output = (io::Result<(usize, SocketAddr)>, B);
    type Awaited = Self::Output;
    fn back(buffer: Buffer) -> B {
        typed(buffer)
    }
    fn done(c: Completed, _: &WeakHandle) -> Self::Output {
        let addr = c.request.addr();
        let r = c.result().and_then(|n| match addr {
            Some(a) => Ok((n, a)),
            None => Err(io::Error::other("the datagram carried no source address")),
        });
        (r, typed(c.into_buffer()))
    }
    fn awaited(out: Self::Output) -> Self::Awaited {
        out
    }
    fn refused(e: StartError<B>) -> Self::Awaited {
        (Err(e.error.into()), e.buffer)
    }
}

impl Kind for Accepted {
    type Buf = ();
    type Output = io::Result<(Handle, Option<SocketAddr>)>;
    type Awaited = Self::Output;
    const NEEDS_HANDLE: bool = true;
    fn back(_: Buffer) {}
    fn done(c: Completed, handle: &WeakHandle) -> Self::Output {
        crate::future::accepted(c, || handle.upgrade())
    }
    fn awaited(out: Self::Output) -> Self::Awaited {
        out
    }
    fn refused(e: StartError<()>) -> Self::Awaited {
        Err(e.error.into())
    }
}

impl Kind for Connected {
    type Buf = ();
    type Output = io::Result<()>;
    type Awaited = Self::Output;
    fn back(_: Buffer) {}
    fn done(c: Completed, _: &WeakHandle) -> Self::Output {
        c.result().map(drop)
    }
    fn awaited(out: Self::Output) -> Self::Awaited {
        out
    }
    fn refused(e: StartError<()>) -> Self::Awaited {
        Err(e.error.into())
    }
}

/// A request not started yet, made by a [`Handle`] method of its kind
/// ([`Handle::read`], [`Handle::write`], [`Handle::accept`], ...). Set its
/// deadline and user data, then start it one of three ways:
///
/// - [`start`](Start::start): its completion goes to the handle's callback
///   (`BindIoCompletionCallback`) or the host's sink, as
///   `(Status, bytes, Request)`; the CLR's way.
/// - [`then`](Start::then): its completion runs a closure of its own, once,
///   on a pool thread.
/// - `.await` (or [`IntoFuture::into_future`]): its completion resolves a
///   future on any executor (S34); a read or write gives the result and the
///   caller's own buffer back.
///
/// Each start either returns the request's id, and the request then
/// completes exactly once, or fails with a [`StartError`] holding the
/// caller's buffer as the type it was given, and nothing is posted (S23).
///
/// There is no per-request target port: a request completes to the port
/// its handle is bound to (IOCP's rule; see [`Handle::port`]).
///
/// # Panics
/// A custom host that replaces the buffer of a typed request (against
/// S26) makes its typed result panic where it is made (the closure's pool
/// thread, the polling task, or the failed start): the caller's type
/// cannot be made up. [`Handle::request`] hands back any [`Buffer`].
#[must_use = "a request does nothing until it is started: .start(), .then(f) or .await"]
pub struct Start<'h, K: Kind> {
    handle: &'h Handle,
    op: Op,
    buffer: Buffer,
    user_data: usize,
    deadline: Option<Instant>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> fmt::Debug for Start<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Start")
            .field("handle", self.handle)
            .field("op", &self.op)
            .field("user_data", &self.user_data)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<'h, K: Kind> Start<'h, K> {
    pub(crate) fn new(handle: &'h Handle, op: Op, buffer: Buffer) -> Start<'h, K> {
        Start { handle, op, buffer, user_data: 0, deadline: None, kind: PhantomData }
    }

    /// Sets the request's user data, given back by the completion's
    /// [`Request::user_data`] (and set before the host's
    /// `initialize_host_overlapped` runs).
    pub fn user_data(mut self, data: usize) -> Self {
        self.user_data = data;
        self
    }

    /// The request must complete before `deadline` (S33). When the
    /// deadline passes first, the request is cancelled and completes once,
    /// with the OS's timed-out status (`ETIMEDOUT` on Unix; `WSAETIMEDOUT`
    /// for a socket, `ERROR_TIMEOUT` otherwise, on Windows) and its buffer;
    /// a completion that wins the race is reported as it is. A deadline
    /// that has already passed refuses the start with `Error::Timeout`.
    /// One thread serves every deadline and timer of the process.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// [`deadline`](Start::deadline) `timeout` from now. `Duration::MAX`
    /// (or any timeout too far to be an `Instant`) means no deadline, as it
    /// does for the runtime's timers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = if timeout == Duration::MAX { None } else { Instant::now().checked_add(timeout) };
        self
    }

    /// Starts the request; its completion goes to the handle's callback,
    /// or to the host's sink, as `(Status, bytes, Request)`.
    ///
    /// Order of events: the request is checked against the handle's kind,
    /// it is allocated with the host extension zeroed, the host's
    /// `initialize_host_overlapped` runs (its error stops the request,
    /// S19), then the backend starts the I/O.
    pub fn start(self) -> Result<RequestId, StartError<K::Buf>> {
        self.handle
            .start_targeted(self.op, self.buffer, self.user_data, None, self.deadline)
            .map_err(|e| e.map_buffer(K::back))
    }

    /// Starts the request; its completion runs `f` once, on a pool thread,
    /// instead of the handle's callback or the sink. `f` is `FnOnce`: it
    /// may own a one-shot sender or the next step of a state machine. A
    /// request that cannot start returns its error and buffer, and `f` is
    /// dropped without running (S23).
    pub fn then<F>(self, f: F) -> Result<RequestId, StartError<K::Buf>>
    where
        F: FnOnce(K::Output) + Send + 'static,
    {
        let weak = if K::NEEDS_HANDLE { self.handle.weak() } else { WeakHandle::none() };
        let target: Arc<dyn CompletionSink> = Arc::new(Once(Mutex::new(Some(move |c| f(K::done(c, &weak))))));
        self.handle
            .start_targeted(self.op, self.buffer, self.user_data, Some(target), self.deadline)
            .map_err(|e| e.map_buffer(K::back))
    }
}

impl<'h, B: WriteBuf> Start<'h, Bytes<B>> {
    /// Makes a read or write positional: at `offset` in a regular file
    /// (`ReadAt`, `WriteAt`). A read gets 0 bytes at or past the file's end.
    pub fn at(mut self, offset: u64) -> Self {
        self.op = match self.op {
            Op::Read | Op::ReadAt(_) => Op::ReadAt(offset),
            Op::Write | Op::WriteAt(_) => Op::WriteAt(offset),
            other => other,
        };
        self
    }
}

impl<K: Kind> IntoFuture for Start<'_, K> {
    type Output = K::Awaited;
    type IntoFuture = IoFuture<K>;

    /// Starts the request; its completion resolves the future (S34). The
    /// handle must be bound to a runtime's port (or to a host that
    /// dispatches a request's own callback, see [`Request::take_callback`]).
    fn into_future(self) -> IoFuture<K> {
        let state = match self.handle.start_waiter(self.op, self.buffer, self.user_data, self.deadline) {
            Ok(w) => {
                let weak = if K::NEEDS_HANDLE { self.handle.weak() } else { WeakHandle::none() };
                Pending::Started(w, weak)
            }
            Err(e) => Pending::Refused(Some(e.map_buffer(K::back))),
        };
        IoFuture { state }
    }
}

enum Pending<K: Kind> {
    Started(Waiter, WeakHandle),
    Refused(Option<StartError<K::Buf>>),
}

/// A started request that resolves to what its kind gives (S34): for a
/// read or a write, `(io::Result<usize>, B)` with the caller's own buffer.
///
/// Made by awaiting a [`Start`] (or its [`IntoFuture::into_future`]). It
/// needs no particular executor: the pool thread that takes the completion
/// wakes the task. Dropping it before it resolves cancels the request
/// ([`Handle::cancel`]); the request still completes once, and its buffer
/// is freed when it does. A start that failed resolves at once, with the
/// error and the buffer.
#[must_use = "a dropped IoFuture cancels its request"]
pub struct IoFuture<K: Kind> {
    state: Pending<K>,
}

// The future never relies on being pinned: it holds no self-reference.
impl<K: Kind> Unpin for IoFuture<K> {}

impl<K: Kind> IoFuture<K> {
    /// The id of the request, as [`Handle::cancel`] takes it; `None` when
    /// its start failed.
    pub fn id(&self) -> Option<RequestId> {
        match &self.state {
            Pending::Started(w, _) => Some(w.id()),
            Pending::Refused(_) => None,
        }
    }
}

impl<K: Kind> fmt::Debug for IoFuture<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFuture").field("id", &self.id()).finish()
    }
}

impl<K: Kind> Future for IoFuture<K> {
    type Output = K::Awaited;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<K::Awaited> {
        match &mut self.get_mut().state {
            Pending::Started(w, handle) => match Pin::new(w).poll(cx) {
                Poll::Ready(c) => Poll::Ready(K::awaited(K::done(c, handle))),
                Poll::Pending => Poll::Pending,
            },
            Pending::Refused(e) => Poll::Ready(K::refused(e.take().expect("IoFuture polled after it resolved"))),
        }
    }
}

/// A closure run by the request's one completion (S2), taken out before it
/// runs so it runs at most once.
struct Once<F>(Mutex<Option<F>>);

impl<F> CompletionSink for Once<F>
where
    F: FnOnce(Completed) + Send + 'static,
{
    fn on_complete(&self, status: Status, bytes: usize, request: Request) {
        let f = self.0.lock().take();
        if let Some(f) = f {
            f(Completed { status, bytes, request });
        }
    }
}

// Run under Miri too (`.ci/run`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{AtomicUsize, Ordering};

    #[test]
    fn s2_a_one_shot_closure_runs_once_with_the_first_completion() {
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = runs.clone();
        let target: Arc<dyn CompletionSink> = Arc::new(Once(Mutex::new(Some(move |c: Completed| {
            assert_eq!(c.into_buffer().into_vec(), b"first");
            seen.fetch_add(1, Ordering::SeqCst);
        }))));
        let mut r = Request::new(b"first".to_vec().into());
        r.set_callback(target.clone());
        let guard = r.take_callback().unwrap();
        guard.on_complete(Status::SUCCESS, 5, r);
        guard.on_complete(Status::ABORTED, 0, Request::new(b"second".to_vec().into()));
        // Straight to the closure's target too: still once.
        target.on_complete(Status::ABORTED, 0, Request::new(Buffer::None));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn s26_a_typed_buffer_comes_back_as_the_type_it_was_given() {
        let v: Vec<u8> = typed(b"abc".to_vec().into_buffer_mut());
        assert_eq!(v, b"abc");
        let s: &'static str = typed("xy".into_buffer());
        assert_eq!(s, "xy");
        let parts: Vectored<Box<[u8]>> = typed(Vectored(vec![Box::from(&b"p"[..])]).into_buffer_mut());
        assert_eq!(&*parts.0[0], b"p");
    }
}
