//! Async I/O traits on a bound stream: [`Stream`] and its halves.
//!
//! A [`Stream`] wraps a connected stream [`Handle`] (TCP, a Unix domain
//! stream, a named pipe on Windows) bound to a runtime, and implements
//! `futures_io::AsyncRead`/`AsyncWrite` (feature `futures-io`),
//! `tokio::io::AsyncRead`/`AsyncWrite` (feature `tokio-io`, tokio's traits
//! only, no tokio runtime) and `hyper::rt::Read`/`Write` (feature `hyper`).
//! It is `Send` and needs no particular executor: the pool thread that
//! takes a completion wakes the task that waits for it.
//!
//! ## Copies
//! The stream owns the buffers the kernel fills and drains, so a byte is
//! copied once on each side, and no more:
//! - read: the kernel fills the stream's read buffer (one request at a
//!   time, up to its capacity); `poll_read` copies out of it into the
//!   caller's slice. What the caller did not take stays for the next call.
//! - write: `poll_write` copies the caller's bytes (up to the write
//!   capacity) into the stream's write buffer and starts a write request
//!   with it; the kernel sends from there.
//!
//! ## Writes and errors
//! `poll_write` reports `n` bytes written once the crate has taken them (a
//! write request is started with them); one write is in flight at a time,
//! so the next `poll_write` waits for the previous one. A write that fails
//! reports its error to the next `poll_write`, `poll_flush` or
//! `poll_shutdown`/`poll_close`, whichever comes first. `poll_flush` is
//! ready once every byte taken is in a write request the OS holds (as a
//! tokio `TcpStream`'s flush is ready once the bytes are in the socket's
//! buffer); it does not wait for that write to complete, so a flush after
//! each response costs no wake-up. `poll_shutdown` and `poll_close` wait for
//! it. `poll_shutdown`
//! (`poll_close`) flushes, then half-closes the socket
//! (`shutdown(Write)`): the peer reads the end of the stream while this
//! side can still read. (A named pipe has no half-close: there it only
//! flushes.) Dropping a stream with a write in flight lets that write run
//! on; shut it down first to know its result.
//!
//! ```
//! # #[cfg(feature = "futures-io")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_io::{AsyncRead, AsyncWrite};
//! use iocompletion::{io::Stream, Handle, Runtime};
//! use std::io::{Read, Write};
//!
//! let rt = Runtime::builder().build()?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let mut peer = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let conn = Handle::from(listener.accept()?.0);
//! rt.bind_async(&conn)?;
//! let mut stream = Stream::new(conn)?;
//!
//! peer.write_all(b"ping")?;
//! let got = rt.block_on(async {
//!     let mut buf = [0u8; 4];
//!     let n = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_read(cx, &mut buf)).await?;
//!     std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_write(cx, b"pong")).await?;
//!     std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_close(cx)).await?;
//!     Ok::<_, std::io::Error>(buf[..n].to_vec())
//! })?;
//! assert_eq!(got, b"ping");
//! let mut back = Vec::new();
//! peer.read_to_end(&mut back)?; // ends: the stream half-closed
//! assert_eq!(back, b"pong");
//! # rt.shutdown();
//! # Ok(()) }
//! # #[cfg(not(feature = "futures-io"))]
//! # fn main() {}
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::buf::Buffer;
use crate::error::{Error, Result};
use crate::future::{Completed, Waiter};
use crate::handle::{Handle, HandleKind};
use crate::request::Op;

#[cfg(feature = "futures-io")]
mod futures_impl;
#[cfg(feature = "hyper")]
mod hyper_impl;
#[cfg(feature = "tokio-io")]
mod tokio_impl;

/// The default capacity of a stream's read buffer.
pub const DEFAULT_READ_CAPACITY: usize = 16 * 1024;
/// The default capacity of a stream's write buffer (the most one
/// `poll_write` takes).
pub const DEFAULT_WRITE_CAPACITY: usize = 64 * 1024;

/// A connected stream with async read and write traits; see the
/// [module](self) for what it implements and how it copies.
///
/// [`Stream::into_split`] gives a [`ReadHalf`] and a [`WriteHalf`] to use on
/// two tasks.
pub struct Stream {
    read: ReadHalf,
    write: WriteHalf,
}

/// The reading half of a [`Stream`] ([`Stream::into_split`]).
pub struct ReadHalf {
    handle: Handle,
    /// Bytes read and not yet taken: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
    pending: Option<Waiter>,
}

/// The writing half of a [`Stream`] ([`Stream::into_split`]).
pub struct WriteHalf {
    handle: Handle,
    /// The buffer between writes (the one in flight has it otherwise).
    spare: Vec<u8>,
    capacity: usize,
    pending: Option<Waiter>,
    shut: bool,
}

impl Stream {
    /// A stream over `handle`, a connected stream bound to a runtime (for
    /// example with [`Runtime::bind_async`](crate::Runtime::bind_async)),
    /// with the default buffer capacities. A handle of another kind, or
    /// one not bound, gives `InvalidArgument`.
    pub fn new(handle: Handle) -> Result<Stream> {
        Stream::with_capacity(handle, DEFAULT_READ_CAPACITY, DEFAULT_WRITE_CAPACITY)
    }

    /// [`Stream::new`] with the capacities of the read and the write
    /// buffer (each at least 1 byte, else `InvalidArgument`).
    pub fn with_capacity(handle: Handle, read_capacity: usize, write_capacity: usize) -> Result<Stream> {
        if !matches!(handle.kind(), HandleKind::TcpStream | HandleKind::LocalStream | HandleKind::Stream) {
            return Err(Error::invalid("handle", format!("{:?}", handle.kind()), "is not a stream"));
        }
        if handle.port().is_none() {
            return Err(Error::invalid("handle", format!("{handle:?}"), "is not bound to a port"));
        }
        if read_capacity == 0 || write_capacity == 0 {
            return Err(Error::invalid(
                "capacity",
                format!("{read_capacity}/{write_capacity}"),
                "must be at least 1 byte",
            ));
        }
        Ok(Stream {
            read: ReadHalf { handle: handle.clone(), buf: Vec::new(), pos: 0, capacity: read_capacity, pending: None },
            write: WriteHalf { handle, spare: Vec::new(), capacity: write_capacity, pending: None, shut: false },
        })
    }

    /// The handle it runs on.
    pub fn handle(&self) -> &Handle {
        &self.read.handle
    }

    /// Splits it into a reading and a writing half, for two tasks. The
    /// handle closes when both are dropped.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

    /// Puts the halves of one stream back together; hands them back when
    /// they are of two streams.
    // The halves come back by value, as tokio's `reunite` gives them.
    #[allow(clippy::result_large_err)]
    pub fn reunite(read: ReadHalf, write: WriteHalf) -> std::result::Result<Stream, (ReadHalf, WriteHalf)> {
        if read.handle == write.handle {
            Ok(Stream { read, write })
        } else {
            Err((read, write))
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("handle", &self.read.handle).finish()
    }
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf").field("handle", &self.handle).field("buffered", &(self.buf.len() - self.pos)).finish()
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf").field("handle", &self.handle).field("in_flight", &self.pending.is_some()).finish()
    }
}

impl ReadHalf {
    /// The handle it reads from.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Ready when bytes are buffered (`buf[pos..]` not empty) or at the end
    /// of the stream (empty); starts a read when none is in flight.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.buf.len() {
                return Poll::Ready(Ok(()));
            }
            match &mut self.pending {
                Some(f) => {
                    let done = match Pin::new(f).poll(cx) {
                        Poll::Ready(c) => c,
                        Poll::Pending => return Poll::Pending,
                    };
                    self.pending = None;
                    let r = done.result();
                    self.buf = done.into_buffer().into_buf::<Vec<u8>>().unwrap_or_default();
                    self.pos = 0;
                    match r {
                        Err(e) => {
                            self.buf.clear();
                            return Poll::Ready(Err(e));
                        }
                        // The end of the stream.
                        Ok(0) => return Poll::Ready(Ok(())),
                        Ok(_) => {}
                    }
                }
                None => {
                    let mut b = std::mem::take(&mut self.buf);
                    b.clear();
                    if b.capacity() < self.capacity {
                        b.reserve_exact(self.capacity);
                    }
                    self.pos = 0;
                    match self.handle.start_waiter(Op::Read, Buffer::from_buf_mut(b), 0, None) {
                        Ok(f) => self.pending = Some(f),
                        Err(e) => {
                            self.buf = e.buffer.into_buf::<Vec<u8>>().unwrap_or_default();
                            self.buf.clear();
                            return Poll::Ready(Err(e.error.into()));
                        }
                    }
                }
            }
        }
    }

    /// Copies buffered bytes (reading first if there are none) with `put`,
    /// which takes a slice and returns how many bytes it took.
    fn poll_read_with(&mut self, cx: &mut Context<'_>, put: impl FnOnce(&[u8]) -> usize) -> Poll<io::Result<usize>> {
        match self.poll_fill(cx) {
            Poll::Ready(Ok(())) => {
                let n = put(&self.buf[self.pos..]);
                self.pos += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_read_with(cx, |src| {
            let n = src.len().min(out.len());
            out[..n].copy_from_slice(&src[..n]);
            n
        })
    }
}

impl WriteHalf {
    /// The handle it writes to.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Ready when no write is in flight; the error of the one that was.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(f) = &mut self.pending {
            let done = match Pin::new(f).poll(cx) {
                Poll::Ready(c) => c,
                Poll::Pending => return Poll::Pending,
            };
            self.pending = None;
            self.finished(done)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes the completion of the write that was in flight: its buffer
    /// becomes the spare, a short write's rest is started again (it goes
    /// out before anything else), a failure is returned.
    fn finished(&mut self, done: Completed) -> io::Result<()> {
        let r = done.result();
        let mut buf = done.into_buffer().into_buf::<Vec<u8>>().unwrap_or_default();
        match r {
            Err(e) => {
                buf.clear();
                self.spare = buf;
                Err(e)
            }
            Ok(n) if n >= buf.len() => {
                buf.clear();
                self.spare = buf;
                Ok(())
            }
            Ok(0) => {
                buf.clear();
                self.spare = buf;
                Err(io::ErrorKind::WriteZero.into())
            }
            Ok(n) => {
                buf.drain(..n);
                self.start(buf)
            }
        }
    }

    fn start(&mut self, buf: Vec<u8>) -> io::Result<()> {
        match self.handle.start_waiter(Op::Write, Buffer::from_buf(buf), 0, None) {
            Ok(f) => {
                self.pending = Some(f);
                Ok(())
            }
            Err(e) => {
                let mut b = e.buffer.into_buf::<Vec<u8>>().unwrap_or_default();
                b.clear();
                self.spare = b;
                Err(e.error.into())
            }
        }
    }

    /// Takes up to the write capacity from `bufs`, in order, and starts a
    /// write with them.
    fn poll_write_slices(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the stream was shut down for writing")));
        }
        match self.poll_idle(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        for s in bufs {
            let room = self.capacity - b.len();
            if room == 0 {
                break;
            }
            b.extend_from_slice(&s[..s.len().min(room)]);
        }
        let n = b.len();
        if n == 0 {
            self.spare = b;
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(self.start(b).map(|()| n))
    }

    /// Ready once every byte taken is in a write request the OS holds, or
    /// with the error of a write that failed. It does not wait for the
    /// write in flight to complete (the next write or the shutdown does),
    /// and it leaves no waker with it: a flush after each response, as
    /// hyper makes, costs no wake-up of the task when the write completes.
    fn poll_flush_inner(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let quiet_waker = noop_waker();
        let mut quiet = Context::from_waker(&quiet_waker);
        while let Some(f) = &mut self.pending {
            let done = match Pin::new(f).poll(&mut quiet) {
                Poll::Ready(c) => c,
                Poll::Pending => break,
            };
            self.pending = None;
            self.finished(done)?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_idle(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if !self.shut {
            self.shut = true;
            #[cfg(any(unix, windows))]
            if self.handle.kind().is_socket() {
                self.handle.with_socket(|s| s.shutdown(std::net::Shutdown::Write)).map_err(io::Error::from)?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        // A write the crate took runs on (see the module's docs).
        if let Some(f) = self.pending.take() {
            f.detach();
        }
    }
}

macro_rules! inherent_read {
    ($t:ty) => {
        impl $t {
            /// Reads into `buf`: at least 1 byte, at most `buf.len()`; 0 at
            /// the end of the stream (or for an empty `buf`). The same as
            /// the traits' `poll_read`, without a feature.
            pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::future::poll_fn(|cx| self.rd().poll_read_slice(cx, buf)).await
            }
        }
    };
}

macro_rules! inherent_write {
    ($t:ty) => {
        impl $t {
            /// Writes some of `buf` (up to the write capacity): done once
            /// the crate has taken the bytes; see the [module](self).
            pub async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                std::future::poll_fn(|cx| self.wr().poll_write_slices(cx, &[io::IoSlice::new(buf)])).await
            }

            /// Writes all of `buf` (taken by the crate; shut down to know it
            /// was written).
            pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
                while !buf.is_empty() {
                    let n = self.write(buf).await?;
                    buf = &buf[n..];
                }
                Ok(())
            }

            /// Ready once every byte taken is in a write request the OS
            /// holds; the error of a write that failed. It does not wait
            /// for the write in flight ([`shutdown`](Self::shutdown) does).
            pub async fn flush(&mut self) -> io::Result<()> {
                std::future::poll_fn(|cx| self.wr().poll_flush_inner(cx)).await
            }

            /// Flushes, then half-closes (`shutdown(Write)`): the peer
            /// reads the end of the stream.
            pub async fn shutdown(&mut self) -> io::Result<()> {
                std::future::poll_fn(|cx| self.wr().poll_shutdown_inner(cx)).await
            }
        }
    };
}

inherent_read!(Stream);
inherent_read!(ReadHalf);
inherent_write!(Stream);
inherent_write!(WriteHalf);

// The methods and the trait impls (one macro each, for the stream and its
// halves) reach the halves through `rd` and `wr`.
#[allow(dead_code)]
impl Stream {
    fn rd(&mut self) -> &mut ReadHalf {
        &mut self.read
    }
    fn wr(&mut self) -> &mut WriteHalf {
        &mut self.write
    }
}

impl ReadHalf {
    #[allow(dead_code)]
    fn rd(&mut self) -> &mut ReadHalf {
        self
    }
}

impl WriteHalf {
    #[allow(dead_code)]
    fn wr(&mut self) -> &mut WriteHalf {
        self
    }
}

/// A waker that does nothing (`Waker::noop` is newer than the crate's
/// minimum Rust version).
fn noop_waker() -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn nothing(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, nothing, nothing, nothing);
    // SAFETY: every function of the vtable ignores the data pointer (null)
    // and does nothing, which meets `RawWaker`'s contract: `clone` gives a
    // waker with the same vtable, and none of them is unsafe to call from
    // any thread, any number of times.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}
