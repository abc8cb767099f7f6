//! Awaitable requests (S34): a request whose completion resolves a future
//! instead of calling a callback, on any executor.
//!
//! The future is the request's own completion target: the pool thread that
//! takes the completion stores it and wakes the task; no thread of the
//! crate ever polls. Dropping the future before it resolves cancels the
//! request; its one completion still arrives, after the OS has released the
//! buffer, and the buffer is freed then.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::handle::{Handle, WeakHandle};
use crate::buf::{Buffer, IoBuf, IoBufMut};
use crate::request::{Request, RequestId};
use crate::status::Status;
use crate::sink::CompletionSink;
use crate::sync::Mutex;

/// The completion of an awaited request: its status, the bytes transferred
/// and the request, which hands the buffer back (S26).
#[derive(Debug)]
#[non_exhaustive]
pub struct Completed {
    /// Success or the OS error of the request (S8).
    pub status: Status,
    /// Bytes transferred.
    pub bytes: usize,
    /// The request, with its buffer and, for an accept, the connection.
    pub request: Request,
}

impl Completed {
    /// `Ok(bytes)` on success, else the OS error.
    pub fn result(&self) -> io::Result<usize> {
        self.status.result(self.bytes)
    }

    /// The request's buffer.
    pub fn into_buffer(self) -> Buffer {
        self.request.into_buffer()
    }
}

enum State {
    /// Started, not completed; the waker of the last poll.
    Waiting(Option<Waker>),
    /// Completed, not yet taken by a poll.
    Done(Completed),
    /// Taken by a poll, or the future was dropped.
    Gone,
}

/// The shared slot between a future and its request's completion.
struct Slot(Mutex<State>);

impl CompletionSink for Slot {
    fn on_complete(&self, status: Status, bytes: usize, request: Request) {
        let mut st = self.0.lock();
        match std::mem::replace(&mut *st, State::Gone) {
            State::Waiting(waker) => {
                *st = State::Done(Completed { status, bytes, request });
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            // The future is gone: the OS has released the request, so its
            // buffer is dropped here (outside the lock).
            State::Gone => {
                drop(st);
                drop(request);
            }
            // A second delivery (S2, S34): the first result stands. The
            // crate's own paths deliver once and `Request::take_callback`
            // hands a host a guard that ignores later calls, so this is
            // only a last defence, never a panic.
            State::Done(first) => {
                *st = State::Done(first);
                drop(st);
                drop(request);
            }
        }
    }
}

/// A started request that resolves to its [`Completed`] (S34).
///
/// Made by [`Handle::start_async`]. It needs no particular executor: the
/// pool thread that takes the completion wakes the task. Dropping it before
/// it resolves cancels the request ([`Handle::cancel`]); the request still
/// completes once, and its buffer is freed when it does.
#[must_use = "a dropped IoFuture cancels its request"]
pub struct IoFuture {
    slot: Arc<Slot>,
    id: RequestId,
    handle: WeakHandle,
    /// False once detached: the request then runs on when this is dropped.
    cancel_on_drop: bool,
}

impl IoFuture {
    /// The id of the request, as [`Handle::cancel`] takes it.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Drops the future without cancelling its request: the request runs
    /// on, and its completion frees it with its buffer (a write the crate
    /// accepted is not taken back).
    pub(crate) fn detach(mut self) {
        self.cancel_on_drop = false;
    }
}

impl fmt::Debug for IoFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFuture").field("id", &self.id).finish()
    }
}

impl Future for IoFuture {
    type Output = Completed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completed> {
        let mut st = self.slot.0.lock();
        match std::mem::replace(&mut *st, State::Gone) {
            State::Done(c) => Poll::Ready(c),
            State::Waiting(w) => {
                let w = match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *st = State::Waiting(Some(w));
                Poll::Pending
            }
            State::Gone => panic!("IoFuture polled after it resolved"),
        }
    }
}

impl Drop for IoFuture {
    fn drop(&mut self) {
        let pending = {
            let mut st = self.slot.0.lock();
            let pending = matches!(*st, State::Waiting(_));
            // A completion that already came (not taken) is dropped with
            // the slot's state; one still to come finds `Gone`.
            let old = std::mem::replace(&mut *st, State::Gone);
            drop(st);
            drop(old);
            pending
        };
        if pending && self.cancel_on_drop {
            if let Some(h) = self.handle.upgrade() {
                // "Not found" means it completed meanwhile: nothing to do.
                let _ = h.cancel(self.id);
            }
        }
    }
}

impl Handle {
    /// Starts a request whose completion resolves the returned future
    /// instead of going to the handle's callback or the sink (S34).
    ///
    /// The handle must be bound to a runtime's port (or to a host that
    /// dispatches a request's own callback, see [`Request::take_callback`]).
    /// A request that cannot start returns its error and buffer at once
    /// (S23).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Write;
    /// use iocompletion::{Handle, Runtime};
    ///
    /// let rt = Runtime::builder().build()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut peer = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let conn = Handle::from(listener.accept()?.0);
    /// rt.bind_async(&conn)?;
    ///
    /// let read = conn.read_async(Vec::with_capacity(64));
    /// peer.write_all(b"hello")?;
    /// let (n, buf) = futures_lite_block_on(read);
    /// assert_eq!((n?, &buf[..]), (5, &b"hello"[..]));
    /// # rt.shutdown();
    /// # Ok(()) }
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct W(std::thread::Thread);
    /// #     impl std::task::Wake for W { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(W(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// ```
    pub fn start_async(&self, op: crate::Op, buffer: Buffer) -> Result<IoFuture, crate::StartError> {
        self.start_future(op, buffer, None)
    }

    fn start_future(
        &self,
        op: crate::Op,
        buffer: Buffer,
        deadline: Option<std::time::Instant>,
    ) -> Result<IoFuture, crate::StartError> {
        let slot = Arc::new(Slot(Mutex::new(State::Waiting(None))));
        let target: Arc<dyn CompletionSink> = slot.clone();
        let id = self.start_targeted(op, buffer, 0, Some(target), deadline)?;
        Ok(IoFuture { slot, id, handle: self.downgrade(), cancel_on_drop: true })
    }

    /// [`Handle::start_async`] with a deadline (S33, see
    /// [`Handle::start_before`]): past it the future resolves with the
    /// timed-out status and the buffer.
    pub fn start_async_before(
        &self,
        op: crate::Op,
        buffer: Buffer,
        deadline: std::time::Instant,
    ) -> Result<IoFuture, crate::StartError> {
        self.start_future(op, buffer, Some(deadline))
    }

    /// [`Handle::read_async`] that gives up after `timeout` (S33): the
    /// result is then an error of kind `TimedOut`, with the buffer.
    pub fn read_async_timeout<B: IoBufMut + Default>(
        &self,
        buf: B,
        timeout: std::time::Duration,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        let buffer = Buffer::from_buf_mut(buf);
        let started = match std::time::Instant::now().checked_add(timeout) {
            Some(d) => self.start_async_before(crate::Op::Read, buffer, d),
            None => self.start_async(crate::Op::Read, buffer),
        };
        buf_future(started, Buffer::into_buf)
    }

    /// Reads from a stream into `buf` up to its capacity (S32) and resolves
    /// to the result and the buffer, its length set to the bytes read. The
    /// read starts now; awaiting only waits for it. Any [`IoBufMut`] will
    /// do (`Vec<u8>`, `Box<[u8]>`, `BytesMut` with the `bytes` feature);
    /// the same type comes back.
    pub fn read_async<B: IoBufMut + Default>(
        &self,
        buf: B,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        buf_future(self.start_async(crate::Op::Read, Buffer::from_buf_mut(buf)), Buffer::into_buf)
    }

    /// Reads from a stream into several buffers in order, each up to its
    /// capacity; resolves to the result and the buffers.
    pub fn read_vectored_async<B: IoBufMut + Default>(
        &self,
        bufs: Vec<B>,
    ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> + Send + 'static {
        buf_future(self.start_async(crate::Op::Read, Buffer::from_bufs_mut(bufs)), Buffer::into_bufs)
    }

    /// Writes the whole buffer to a stream and resolves to the result and
    /// the buffer. The write starts now.
    pub fn write_async<B: IoBuf + Default>(
        &self,
        buf: B,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        buf_future(self.start_async(crate::Op::Write, Buffer::from_buf(buf)), Buffer::into_buf)
    }

    /// Writes several buffers to a stream in order; resolves to the result
    /// and the buffers.
    pub fn write_vectored_async<B: IoBuf + Default>(
        &self,
        bufs: Vec<B>,
    ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> + Send + 'static {
        buf_future(self.start_async(crate::Op::Write, Buffer::from_bufs(bufs)), Buffer::into_bufs)
    }

    /// Reads a regular file at `offset` into `buf` up to its capacity; see
    /// [`Handle::read_async`].
    pub fn read_at_async<B: IoBufMut + Default>(
        &self,
        offset: u64,
        buf: B,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        buf_future(self.start_async(crate::Op::ReadAt(offset), Buffer::from_buf_mut(buf)), Buffer::into_buf)
    }

    /// Writes `buf` to a regular file at `offset`; see [`Handle::write_async`].
    pub fn write_at_async<B: IoBuf + Default>(
        &self,
        offset: u64,
        buf: B,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        buf_future(self.start_async(crate::Op::WriteAt(offset), Buffer::from_buf(buf)), Buffer::into_buf)
    }

    /// Sends `buf` as one datagram to `addr`; resolves to the result and
    /// the buffer.
    pub fn send_to_async<B: IoBuf + Default>(
        &self,
        buf: B,
        addr: std::net::SocketAddr,
    ) -> impl Future<Output = (io::Result<usize>, B)> + Send + 'static {
        buf_future(self.start_async(crate::Op::SendTo(addr), Buffer::from_buf(buf)), Buffer::into_buf)
    }

    /// Receives one datagram into `buf` up to its capacity; resolves to the
    /// bytes and the source address, and the buffer.
    pub fn recv_from_async<B: IoBufMut + Default>(
        &self,
        buf: B,
    ) -> impl Future<Output = (io::Result<(usize, std::net::SocketAddr)>, B)> + Send + 'static {
        let started = self.start_async(crate::Op::RecvFrom, Buffer::from_buf_mut(buf));
        async move {
            match started {
                Ok(f) => {
                    let c = f.await;
                    let addr = c.request.addr();
                    let r = c.result().and_then(|n| match addr {
                        Some(a) => Ok((n, a)),
                        None => Err(io::Error::other("the datagram carried no source address")),
                    });
                    give_back(r, c.into_buffer(), Buffer::into_buf)
                }
                Err(e) => give_back(Err(e.error.into()), e.buffer, Buffer::into_buf),
            }
        }
    }

    /// Accepts a connection on a listener and resolves to it, with the
    /// peer's address where the OS tells it. The accept starts now. On the
    /// server end of a Windows named pipe the connection is the pipe
    /// handle itself (see [`Handle::accept`]).
    pub fn accept_async(
        &self,
    ) -> impl Future<Output = io::Result<(Handle, Option<std::net::SocketAddr>)>> + Send + 'static {
        let started = self.start_async(crate::Op::Accept, Buffer::None);
        let this = self.clone();
        async move {
            let c = started.map_err(|e| io::Error::from(e.error))?.await;
            accepted(c, || Some(this))
        }
    }

    /// Connects a TCP socket (see [`Handle::tcp_socket_for`]) to `addr`.
    /// The connect starts now.
    pub fn connect_async(&self, addr: std::net::SocketAddr) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let started = self.start_async(crate::Op::Connect(addr), Buffer::None);
        async move { started.map_err(|e| io::Error::from(e.error))?.await.result().map(drop) }
    }
}

/// The connection an accept produced: the accepted handle, or on the server
/// end of a named pipe the pipe itself (`this`, asked for only then).
pub(crate) fn accepted(
    mut c: Completed,
    this: impl FnOnce() -> Option<Handle>,
) -> io::Result<(Handle, Option<std::net::SocketAddr>)> {
    c.result()?;
    let addr = c.request.addr();
    match c.request.take_accepted() {
        Some(conn) => Ok((conn, addr)),
        None => match this() {
            Some(pipe) if pipe.kind() == crate::HandleKind::LocalStream => Ok((pipe, None)),
            _ => Err(io::Error::other("the accept carried no connection")),
        },
    }
}

/// The `(result, buffer)` future of a request with a buffer (`Send` and
/// `'static`: it owns everything it needs); `back` turns the buffer into
/// the caller's type.
async fn buf_future<T: Default>(
    started: Result<IoFuture, crate::StartError>,
    back: fn(Buffer) -> Result<T, Buffer>,
) -> (io::Result<usize>, T) {
    match started {
        Ok(f) => {
            let c = f.await;
            give_back(c.result(), c.into_buffer(), back)
        }
        Err(e) => give_back(Err(e.error.into()), e.buffer, back),
    }
}

/// The result with the buffer as the caller's type. They differ only when
/// a custom host replaced the request's buffer (against S26); the result
/// then says so and an empty buffer comes back.
pub(crate) fn give_back<R, T: Default>(
    r: io::Result<R>,
    buffer: Buffer,
    back: fn(Buffer) -> Result<T, Buffer>,
) -> (io::Result<R>, T) {
    match back(buffer) {
        Ok(b) => (r, b),
        Err(_) => (Err(io::Error::other("the host replaced the request's buffer")), T::default()),
    }
}

// Run under Miri too (`.ci/run`): the slot between a future and its
// request's completion, driven by hand with a waker that counts.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn future() -> (IoFuture, Arc<dyn CompletionSink>) {
        let slot = Arc::new(Slot(Mutex::new(State::Waiting(None))));
        let target: Arc<dyn CompletionSink> = slot.clone();
        (IoFuture { slot, id: RequestId(0), handle: WeakHandle::none(), cancel_on_drop: true }, target)
    }

    fn request(data: &[u8]) -> Request {
        Request::new(data.to_vec().into())
    }

    #[test]
    fn s34_a_future_resolves_once_with_its_completion_and_wakes_its_task() {
        let (mut fut, target) = future();
        let wakes = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending(), "polled again, the same waker is kept");
        target.on_complete(Status::SUCCESS, 3, request(b"abc"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut cx) else { panic!("resolved") };
        assert_eq!((c.bytes, c.result().unwrap()), (3, 3));
        assert_eq!(c.into_buffer().into_vec(), b"abc");
    }

    #[test]
    fn s34_a_completion_before_the_first_poll_is_ready_at_once() {
        let (mut fut, target) = future();
        target.on_complete(Status::ABORTED, 0, request(b"x"));
        let waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)) else { panic!() };
        assert!(c.status.is_aborted());
    }

    #[test]
    fn s34_a_dropped_future_frees_the_buffer_when_its_completion_comes() {
        let (fut, target) = future();
        drop(fut);
        // Miri checks that the request and its buffer are freed here.
        target.on_complete(Status::ABORTED, 0, request(b"late"));
        // And a completion that came but was never taken goes with the future.
        let (fut, target) = future();
        target.on_complete(Status::SUCCESS, 4, request(b"kept"));
        drop(fut);
    }

    #[test]
    fn s2_a_second_delivery_leaves_the_first_result() {
        // Straight into the slot, before and after the future took it.
        let (mut fut, target) = future();
        target.on_complete(Status::SUCCESS, 1, request(b"1"));
        target.on_complete(Status::ABORTED, 0, request(b"2"));
        let waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)) else { panic!() };
        assert_eq!(c.into_buffer().into_vec(), b"1");
        target.on_complete(Status::ABORTED, 0, request(b"3"));

        // Through the guard a host gets from `take_callback`: the second
        // call never reaches the slot.
        let (mut fut, target) = future();
        let mut r = request(b"first");
        r.set_callback(target);
        let guard = r.take_callback().unwrap();
        guard.on_complete(Status::SUCCESS, 5, r);
        guard.on_complete(Status::ABORTED, 0, request(b"second"));
        let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)) else { panic!() };
        assert_eq!(c.into_buffer().into_vec(), b"first");
    }

    #[test]
    fn s34_a_completion_on_another_thread_wakes_the_polling_one() {
        let (mut fut, target) = future();
        let wakes = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let t = std::thread::spawn(move || target.on_complete(Status::SUCCESS, 2, request(b"ok")));
        // Polled while the completion comes, as a busy executor would.
        let mut got = None;
        for _ in 0..5 {
            if let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut cx) {
                got = Some(c);
                break;
            }
        }
        t.join().unwrap();
        let c = match got {
            Some(c) => c,
            None => match Pin::new(&mut fut).poll(&mut cx) {
                Poll::Ready(c) => c,
                Poll::Pending => panic!("the completion came: the future is ready"),
            },
        };
        assert_eq!(c.into_buffer().into_vec(), b"ok");
        assert!(wakes.0.load(Ordering::SeqCst) <= 1, "woken at most once");
    }
}
