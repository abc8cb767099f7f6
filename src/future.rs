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
use crate::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::handle::{Handle, WeakHandle};
use crate::buf::Buffer;
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

/// The handoff between a future and its request's completion.
struct Handoff(Mutex<State>);

impl CompletionSink for Handoff {
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

/// A started request that resolves to its [`Completed`] (S34): what the
/// public [`Waiter`](crate::Waiter) and the streams wait on.
///
/// It needs no particular executor: the pool thread that takes the
/// completion wakes the task. Dropping it before it resolves cancels the
/// request ([`Handle::cancel`]); the request still completes once, and its
/// buffer is freed when it does.
pub(crate) struct Waiter {
    handoff: Arc<Handoff>,
    id: RequestId,
    handle: WeakHandle,
    /// False once detached: the request then runs on when this is dropped.
    cancel_on_drop: bool,
}

impl Waiter {
    /// The id of the request, as [`Handle::cancel`] takes it.
    pub(crate) fn id(&self) -> RequestId {
        self.id
    }

    /// Drops the future without cancelling its request: the request runs
    /// on, and its completion frees it with its buffer (a write the crate
    /// accepted is not taken back).
    pub(crate) fn detach(mut self) {
        self.cancel_on_drop = false;
    }
}

impl Waiter {
    /// A waiter and the completion target that resolves it; the request's
    /// id is set once it started ([`Waiter::started`]).
    pub(crate) fn new(id: RequestId) -> (Waiter, Arc<dyn CompletionSink>) {
        let handoff = Arc::new(Handoff(Mutex::new(State::Waiting(None))));
        let target: Arc<dyn CompletionSink> = handoff.clone();
        (Waiter { handoff, id, handle: WeakHandle::none(), cancel_on_drop: true }, target)
    }

    /// Records the request that started, and the handle to cancel it on.
    pub(crate) fn started(mut self, id: RequestId, handle: WeakHandle) -> Waiter {
        self.id = id;
        self.handle = handle;
        self
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

impl Future for Waiter {
    type Output = Completed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completed> {
        let mut st = self.handoff.0.lock();
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
            State::Gone => panic!("Waiter polled after it resolved"),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let pending = {
            let mut st = self.handoff.0.lock();
            let pending = matches!(*st, State::Waiting(_));
            // A completion that already came (not taken) is dropped with
            // the handoff's state; one still to come finds `Gone`.
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

// Run under Miri too (`.ci/run`): the handoff between a future and its
// request's completion, driven by hand with a waker that counts.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn future() -> (Waiter, Arc<dyn CompletionSink>) {
        Waiter::new(RequestId(0))
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
        // Straight into the handoff, before and after the future took it.
        let (mut fut, target) = future();
        target.on_complete(Status::SUCCESS, 1, request(b"1"));
        target.on_complete(Status::ABORTED, 0, request(b"2"));
        let waker = Waker::from(Arc::new(Counter(AtomicUsize::new(0))));
        let Poll::Ready(c) = Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)) else { panic!() };
        assert_eq!(c.into_buffer().into_vec(), b"1");
        target.on_complete(Status::ABORTED, 0, request(b"3"));

        // Through the guard a host gets from `take_callback`: the second
        // call never reaches the handoff.
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
