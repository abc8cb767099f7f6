//! One-shot completions: a request whose completion runs a closure of its
//! own, once, with a result a Rust user can match on (`io::Result`) and the
//! buffer, instead of the CLR-shaped `(Status, bytes, Request)` of the
//! handle's callback or the sink.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::StartError;
use crate::future::Completed;
use crate::handle::Handle;
use crate::buf::{Buffer, IoBuf, IoBufMut};
use crate::request::{Op, Request, RequestId};
use crate::status::Status;
use crate::sink::CompletionSink;
use crate::sync::Mutex;

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

impl Handle {
    /// Starts a request whose completion runs `f` once, on a pool thread,
    /// instead of the handle's callback or the sink. `f` is `FnOnce`: it
    /// may own a one-shot sender or the next step of a state machine. A
    /// request that cannot start returns its error and buffer, and `f` is
    /// dropped without running (S23).
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
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// conn.read_then(Vec::with_capacity(64), move |n, buf| tx.send((n.ok(), buf)).unwrap())?;
    /// peer.write_all(b"hi")?;
    /// assert_eq!(rx.recv()?, (Some(2), b"hi".to_vec()));
    /// # rt.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn start_then<F>(&self, op: Op, buffer: Buffer, f: F) -> Result<RequestId, StartError>
    where
        F: FnOnce(Completed) + Send + 'static,
    {
        let target: Arc<dyn CompletionSink> = Arc::new(Once(Mutex::new(Some(f))));
        self.start_targeted(op, buffer, 0, Some(target), None)
    }

    /// [`Handle::start_then`] with a deadline (S33, see
    /// [`Handle::start_before`]): past it the request is cancelled and `f`
    /// gets the timed-out status and the buffer.
    pub fn start_then_before<F>(
        &self,
        op: Op,
        buffer: Buffer,
        deadline: std::time::Instant,
        f: F,
    ) -> Result<RequestId, StartError>
    where
        F: FnOnce(Completed) + Send + 'static,
    {
        let target: Arc<dyn CompletionSink> = Arc::new(Once(Mutex::new(Some(f))));
        self.start_targeted(op, buffer, 0, Some(target), Some(deadline))
    }

    /// Reads from a stream into `buf` up to its capacity (S32); `f` gets
    /// the result and the buffer, its length set to the bytes read. Any
    /// [`IoBufMut`] will do; the same type comes back.
    pub fn read_then<B, F>(&self, buf: B, f: F) -> Result<RequestId, StartError>
    where
        B: IoBufMut + Default,
        F: FnOnce(io::Result<usize>, B) + Send + 'static,
    {
        self.buf_then(Op::Read, Buffer::from_buf_mut(buf), f)
    }

    /// A request with a buffer whose closure gets the result and the
    /// buffer, as the caller's type.
    fn buf_then<B, F>(&self, op: Op, buffer: Buffer, f: F) -> Result<RequestId, StartError>
    where
        B: IoBuf + Default,
        F: FnOnce(io::Result<usize>, B) + Send + 'static,
    {
        self.start_then(op, buffer, move |c| {
            let r = c.result();
            let (r, b) = crate::future::give_back(r, c.into_buffer(), Buffer::into_buf);
            f(r, b)
        })
    }

    /// Writes the whole buffer to a stream; `f` gets the result and the
    /// buffer.
    pub fn write_then<B, F>(&self, buf: B, f: F) -> Result<RequestId, StartError>
    where
        B: IoBuf + Default,
        F: FnOnce(io::Result<usize>, B) + Send + 'static,
    {
        self.buf_then(Op::Write, Buffer::from_buf(buf), f)
    }

    /// Accepts a connection; `f` gets it, with the peer's address where
    /// the OS tells it.
    pub fn accept_then<F>(&self, f: F) -> Result<RequestId, StartError>
    where
        F: FnOnce(io::Result<(Handle, Option<SocketAddr>)>) + Send + 'static,
    {
        // Weak: the closure lives in the request, which the handle may hold
        // while it is pending; a strong clone would keep the handle open.
        let this = self.downgrade();
        self.start_then(Op::Accept, Buffer::None, move |c| f(crate::future::accepted(c, || this.upgrade())))
    }

    /// Connects a TCP socket to `addr`; `f` gets the result.
    pub fn connect_then<F>(&self, addr: SocketAddr, f: F) -> Result<RequestId, StartError>
    where
        F: FnOnce(io::Result<()>) + Send + 'static,
    {
        self.start_then(Op::Connect(addr), Buffer::None, move |c| f(c.result().map(drop)))
    }
}

// Run under Miri too (`.ci/run`).
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
}
