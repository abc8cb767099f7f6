//! The default host: a `Runtime` built on the platform backend and the pool.

use std::fmt;
use std::future::Future;
use crate::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result, StartError};
use crate::handle::Handle;
use crate::manager::IoCompletionManager;
use crate::pool::{Pool, PoolStats};
use crate::port::Port;
use crate::buf::Buffer;
use crate::request::{Op, Request};
use crate::sink::CompletionSink;
use crate::task::JoinHandle;
#[cfg(doc)]
use crate::task::JoinError;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};

/// The host's initializer for the extension of each request (S19).
pub type Initializer = dyn Fn(&mut Request) -> Result<()> + Send + Sync;

mod builder;
mod metrics;
mod sink;

pub use builder::{Builder, MAX_HOST_OVERLAPPED_SIZE};
use sink::SinkCell;

pub(crate) struct RuntimeState {
    id: u64,
    /// The tasks spawned on it.
    sched: Arc<crate::task::Scheduler>,
    pool: Pool,
    sink: SinkCell,
    ext_size: usize,
    initializer: Option<Arc<Initializer>>,
    port_concurrency: usize,
    /// S35: the bound of every port the runtime creates.
    bound: Option<usize>,
    /// The driver its ports ask for (S36).
    driver: Option<crate::port::DriverKind>,
    /// Created on first use (S21); once closed, it stays closed.
    default_port: OnceLock<Port>,
    default_lock: Mutex<()>,
    ports: Mutex<Vec<Port>>,
    poisoned: AtomicBool,
    shut: AtomicBool,
}

impl RuntimeState {
    fn all_ports(&self) -> Vec<Port> {
        let mut v: Vec<Port> = self.ports.lock().clone();
        v.extend(self.default_port.get().cloned());
        v
    }

    fn stop(&self) {
        // Tasks first: the idle ones are dropped now (their requests are
        // cancelled while the ports still run), the others when their run
        // comes or their poll ends.
        self.sched.close();
        for p in self.all_ports() {
            let _ = p.close();
        }
        self.pool.shutdown();
    }
}

impl Drop for RuntimeState {
    fn drop(&mut self) {
        self.shut.store(true, Ordering::Release);
        // Timers of a runtime that is gone complete aborted (here).
        crate::timer::cancel_owner(self.id);
        self.stop();
    }
}

/// Identifies a timer, for [`Runtime::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(crate::timer::Key);

/// The default host: completion ports from the platform backend (IOCP on
/// Windows, mio elsewhere) served by the crate's elastic thread pool.
///
/// A `Runtime` is a cheap handle: clones share the same ports and pool.
/// Every handle bound to it also holds it, so it lives while they do;
/// [`Runtime::shutdown`] stops it explicitly, completing or aborting
/// everything pending (S17).
///
/// ```
/// use iocompletion::{IoCompletionManager, Request, Runtime, Status};
/// use std::sync::mpsc;
///
/// let rt = Runtime::builder().min_threads(1).max_threads(4).build()?;
/// let (tx, rx) = mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// rt.set_completion_sink(std::sync::Arc::new(move |status: Status, bytes: usize, req: Request| {
///     tx.lock().unwrap().send((status, bytes, req.into_buffer().into_vec())).unwrap();
/// }))?;
/// rt.post(None, 5, rt.new_request(b"hello".to_vec().into())?)?;
/// let (status, bytes, buf) = rx.recv()?;
/// assert!(status.is_success());
/// assert_eq!((bytes, &buf[..]), (5, &b"hello"[..]));
/// rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeState>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("id", &self.inner.id)
            .field("min_threads", &self.inner.pool.min())
            .field("max_threads", &self.inner.pool.max())
            .field("stats", &self.inner.pool.stats())
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults of S13.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime with the default settings.
    pub fn new() -> Result<Runtime> {
        Builder::default().build()
    }

    fn check(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) || self.inner.shut.load(Ordering::Acquire) {
            return Err(Error::Unavailable);
        }
        Ok(())
    }

    /// Marks the runtime unusable after a `Fatal` (S5): closes its ports so
    /// pending requests complete aborted, and nothing waits on it again.
    fn poison(&self) {
        if !self.inner.poisoned.swap(true, Ordering::AcqRel) {
            for p in self.inner.all_ports() {
                let _ = p.close();
            }
        }
    }

    /// Passes `r` through, poisoning the runtime when it is `Fatal`.
    fn guard<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if e.is_fatal() {
                self.poison();
            }
        }
        r
    }

    /// The default port, created (and served) on first use (S21). Once it
    /// is closed (by `close_port`), using it gives `InvalidArgument`.
    pub fn default_port(&self) -> Result<Port> {
        self.default_port_ref().cloned()
    }

    fn default_port_ref(&self) -> Result<&Port> {
        self.check()?;
        let port = match self.inner.default_port.get() {
            Some(p) => p,
            None => {
                let _g = self.inner.default_lock.lock();
                match self.inner.default_port.get() {
                    Some(p) => p,
                    None => {
                        let port = Port::with_owner(self.inner.port_concurrency, self.inner.id, self.inner.bound, self.inner.driver)?;
                        self.inner.pool.serve(port.clone())?;
                        self.inner.default_port.get_or_init(|| port)
                    }
                }
            }
        };
        if port.is_closed() {
            return Err(Error::invalid("port", port.id(), "the default port is closed"));
        }
        Ok(port)
    }

    fn resolve(&self, port: Option<&Port>) -> Result<Port> {
        match port {
            None => self.default_port(),
            Some(p) => {
                self.check_owned(p)?;
                Ok(p.clone())
            }
        }
    }

    fn check_owned(&self, p: &Port) -> Result<()> {
        if p.owner() != self.inner.id {
            return Err(Error::invalid("port", p.id(), "was not created by this runtime"));
        }
        if p.is_closed() {
            return Err(Error::invalid("port", p.id(), "is closed"));
        }
        Ok(())
    }

    /// A request for a user post, with the host extension initialized (S19).
    pub fn new_request(&self, buffer: Buffer) -> Result<Request, StartError> {
        if let Err(e) = self.check() {
            return Err(StartError::new(e, buffer));
        }
        let mut req = match Request::alloc(Op::Post, buffer, self.inner.ext_size) {
            Ok(r) => r,
            Err(b) => return Err(StartError::new(Error::OutOfMemory, b)),
        };
        match self.initialize_host_overlapped(&mut req) {
            Ok(()) => Ok(req),
            Err(e) => Err(StartError::of(e, req)),
        }
    }

    /// Posts a user completion to `port` (default port on `None`): a pool
    /// worker hands `request` to its callback
    /// ([`Request::set_callback`]) or else to the sink, with a success
    /// status and `bytes` (S9).
    ///
    /// The request must carry this runtime's host extension (S18): one made
    /// by [`Runtime::new_request`], or by [`Request::new`] when the
    /// extension size is 0. Any other is refused with `InvalidArgument`
    /// and its buffer handed back.
    pub fn post(&self, port: Option<&Port>, bytes: usize, request: Request) -> Result<(), StartError> {
        let port = match port {
            None => self.default_port_ref(),
            Some(p) => self.check_owned(p).map(|()| p),
        };
        let port = match port {
            Ok(p) => p,
            Err(e) => return Err(StartError::of(e, request)),
        };
        if request.extension().len() != self.inner.ext_size {
            // S18: every request this runtime hands its sink carries the
            // host's extension; one made elsewhere (`Request::new`, another
            // runtime) does not.
            let e = Error::invalid(
                "request",
                request.id().as_u64(),
                &format!(
                    "carries a host extension of {} bytes, not this runtime's {} (make it with Runtime::new_request)",
                    request.extension().len(),
                    self.inner.ext_size
                ),
            );
            return Err(StartError::of(e, request));
        }
        if request.target().is_none() && !self.inner.sink.is_set.load(Ordering::Acquire) {
            let e = Error::invalid("request", request.id().as_u64(), "has no callback and no sink is set");
            return Err(StartError::of(e, request));
        }
        port.post(bytes, 0, Some(request))
    }

    /// Posts `bytes` to the default port with `callback` as the request's
    /// target: the shortest way to run a completion on the pool.
    ///
    /// ```
    /// let rt = iocompletion::Runtime::builder().build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// rt.post_callback(5, move |status, bytes, _request| {
    ///     tx.lock().unwrap().send((status.is_success(), bytes)).unwrap();
    /// })?;
    /// assert_eq!(rx.recv()?, (true, 5));
    /// rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_callback<F>(&self, bytes: usize, callback: F) -> Result<(), StartError>
    where
        F: Fn(crate::Status, usize, Request) + Send + Sync + 'static,
    {
        let mut req = self.new_request(Buffer::None)?;
        req.set_callback(Arc::new(callback));
        self.post(None, bytes, req)
    }

    /// Binds `handle` to the default port for awaited requests only (S34):
    /// requests started on it with `.await` or [`Start::then`](crate::Start::then)
    /// methods resolve their futures; no sink or callback is needed, and a
    /// request started any other way is refused at start (nothing would
    /// take its completion).
    pub fn bind_async(&self, handle: &Handle) -> Result<()> {
        self.check()?;
        let port = self.resolve(None)?;
        let r = handle.attach_as(&port, Arc::new(self.clone()), None, true);
        self.guard(r)
    }

    /// `BindIoCompletionCallback(handle, callback, flags)` (S22): binds the
    /// handle to the pool's default port; each completion on it runs
    /// `callback` on a pool worker with (status, bytes, request). `flags`
    /// must be 0. A second bind of the same handle gives `InvalidArgument`.
    ///
    /// The handle keeps `callback` for its lifetime, so a callback must not
    /// hold a [`Handle`] of the handle it is bound to: the two would keep
    /// each other open for ever. Reach the handle through the completed
    /// request ([`Request::handle`]), or hold a [`WeakHandle`](crate::WeakHandle):
    ///
    /// ```
    /// # fn f(rt: &iocompletion::Runtime, conn: iocompletion::Handle) -> iocompletion::Result<()> {
    /// use std::sync::Arc;
    /// let weak = iocompletion::WeakHandle::from(&conn);
    /// rt.bind_io_completion_callback(
    ///     &conn,
    ///     Arc::new(move |_status, _bytes, _req| {
    ///         if let Some(conn) = weak.upgrade() {
    ///             let _ = conn.read(vec![0; 4096]).start(); // the next read
    ///         }
    ///     }),
    ///     0,
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn bind_io_completion_callback(
        &self,
        handle: &Handle,
        callback: Arc<dyn CompletionSink>,
        flags: u32,
    ) -> Result<()> {
        self.check()?;
        if flags != 0 {
            return Err(Error::invalid("flags", flags, "must be 0"));
        }
        let port = self.default_port()?;
        let r = handle.attach(&port, Arc::new(self.clone()), Some(callback));
        self.guard(r)
    }

    /// The driver of the runtime's default port (S36), and on Linux why
    /// not io_uring when it fell back to epoll. Creates the default port
    /// if there is none yet.
    ///
    /// ```
    /// let rt = iocompletion::Runtime::builder().build()?;
    /// println!("driver: {}", rt.driver()?); // e.g. "io_uring", or "epoll (fallback: …)"
    /// # rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn driver(&self) -> Result<crate::port::DriverInfo> {
        Ok(self.default_port()?.driver())
    }

    /// A snapshot of the pool's counters. `panics` counts the callbacks
    /// and the tasks ([`Runtime::spawn`]) that panicked.
    pub fn stats(&self) -> PoolStats {
        let mut s = self.inner.pool.stats();
        s.panics += self.inner.sched.panics.load(Ordering::Relaxed);
        s
    }

    /// Runs `future` as a task on the pool and returns its [`JoinHandle`].
    ///
    /// Each wake of the task posts it to the default port, so a pool thread
    /// runs it like any completion, under the same thread limits (S14); a
    /// task waiting for I/O or a timer holds no thread. One thread at a
    /// time polls a task; a wake during its poll runs it once more.
    ///
    /// A panic in the task is caught: it is counted in `stats().panics`
    /// and its join handle gives it back ([`JoinError::is_panic`]).
    /// At [`Runtime::shutdown`] (or when the last clone of the runtime is
    /// dropped: tasks do not keep it alive) every task still alive is
    /// dropped, which cancels the requests of its futures (each still
    /// completes once, with its buffer), and its join handle resolves as
    /// cancelled. A spawn on a runtime that is shut down gives a handle
    /// that resolves so at once.
    ///
    /// ```
    /// let rt = iocompletion::Runtime::builder().build()?;
    /// let task = rt.spawn(async { 6 * 7 });
    /// assert_eq!(rt.block_on(task)?, 42);
    /// # rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let port = self.default_port_ref().ok().cloned();
        crate::task::spawn(&self.inner.sched, port, future)
    }

    /// The tasks alive now: spawned, and not yet finished, cancelled or
    /// dropped at shutdown.
    pub fn live_tasks(&self) -> usize {
        self.inner.sched.live()
    }

    /// Runs `future` to its end on the calling thread, parking it between
    /// polls, and returns its output. While it runs,
    /// [`Runtime::current`] gives this runtime, and tasks spawned from it
    /// run on the pool. A panic of `future` goes on to the caller.
    ///
    /// Called from a task, it holds that pool thread until `future` ends.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rt = iocompletion::Runtime::builder().build()?;
    /// let out = rt.block_on(async {
    ///     iocompletion::time::sleep(Duration::from_millis(1)).await;
    ///     "slept"
    /// });
    /// assert_eq!(out, "slept");
    /// # rt.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        crate::task::block_on(&self.inner.sched, future)
    }

    /// The runtime whose task this thread runs now, or whose
    /// [`Runtime::block_on`] it runs; `Unavailable` elsewhere, or when that
    /// runtime is gone.
    ///
    /// ```
    /// use iocompletion::Runtime;
    /// let rt = Runtime::builder().build()?;
    /// assert!(Runtime::current().is_err());
    /// let inner = rt.block_on(async { Runtime::current() })?;
    /// inner.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current() -> Result<Runtime> {
        crate::task::current().map(|inner| Runtime { inner }).ok_or(Error::Unavailable)
    }

    /// Stops the runtime (S17): no new work is accepted, every port is
    /// closed (pending requests complete aborted, queued completions run),
    /// the workers are joined. Dropping the last clone does the same;
    /// calling it twice is harmless. Called from a worker thread, it does
    /// not wait for that thread.
    ///
    /// The waits are bounded for what the OS keeps (S17): a request the
    /// kernel never gives back is given up on after 2 s and leaked
    /// ([`Port::leaked_requests`]), and a worker blocked in the OS on a
    /// file request performed on the pool (the epoll driver's file reads
    /// and writes) for longer than that, as when a network or FUSE file
    /// system never answers, is left running, not joined
    /// ([`PoolStats::abandoned`]). Such a worker holds its thread, the
    /// request and its buffer, and its port's memory; it no longer counts
    /// in the pool's threads. If the OS ever returns, the request completes
    /// aborted and its completion is delivered (the callback runs) after
    /// `shutdown` returned, then the thread exits. Every other worker is
    /// joined, however slow: one in a callback is waited for as long as
    /// the callback runs.
    pub fn shutdown(&self) {
        // Pending timers complete aborted, on the pool while it still runs.
        crate::timer::cancel_owner(self.inner.id);
        if self.inner.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.stop();
    }

    /// A timer (S33): runs `f` once on a pool thread after `delay`, with a
    /// success status; or once with the aborted status when cancelled
    /// ([`Runtime::cancel_timer`]) or when the runtime shuts down first.
    /// One thread serves every timer and deadline of the process: no
    /// thread per timer, and `f` never runs on it.
    ///
    /// A timer is the runtime's own work, not a request of the port's
    /// users: the bound of [`Builder::max_pending`] does not hold it back.
    /// It is refused when it is set (a shut-down runtime, a host
    /// initializer that fails), never when it is due. A `delay` of
    /// `Duration::MAX` (or too far to be an `Instant`) is no deadline, as
    /// for a request's [`Start::timeout`](crate::Start::timeout): the timer
    /// completes only when cancelled or at shutdown.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let rt = iocompletion::Runtime::builder().build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.timer_after(Duration::from_millis(10), move |status| tx.send(status).unwrap())?;
    /// assert!(rx.recv()?.is_success());
    /// # rt.shutdown();
    /// # Ok(()) }
    /// ```
    pub fn timer_after<F>(&self, delay: Duration, f: F) -> Result<TimerId>
    where
        F: FnOnce(crate::Status) + Send + 'static,
    {
        // `Duration::MAX` (or any delay too far to be an `Instant`) is no
        // deadline, as for a request's `.timeout`: the timer is set as far
        // ahead as the clock reaches, so only a cancel or a shutdown ends it.
        let now = std::time::Instant::now();
        let mut ahead = delay;
        let at = loop {
            if let Some(at) = now.checked_add(ahead) {
                break at;
            }
            ahead /= 2;
        };
        self.timer_at(at, f)
    }

    /// A timer for the instant `at`; see [`Runtime::timer_after`]. An
    /// instant already past fires at once.
    pub fn timer_at<F>(&self, at: std::time::Instant, f: F) -> Result<TimerId>
    where
        F: FnOnce(crate::Status) + Send + 'static,
    {
        self.check()?;
        // Everything that may fail or run the host's code is done here, on
        // the caller's thread: the port, and the request (its extension
        // initialized) whose completion runs `f` on the pool.
        let port = self.default_port()?;
        let cell: Arc<Mutex<(Option<F>, crate::Status)>> = Arc::new(Mutex::new((Some(f), crate::Status::SUCCESS)));
        let mut req = self.new_request(Buffer::None).map_err(|e| e.error)?;
        let run = cell.clone();
        req.set_callback(Arc::new(move |_: crate::Status, _: usize, _: Request| {
            // Taken out first: the closure runs with no lock held.
            let (f, status) = {
                let mut c = run.lock();
                (c.0.take(), c.1)
            };
            if let Some(f) = f {
                f(status)
            }
        }));
        let fire = Box::new(move |status: crate::Status| {
            cell.lock().1 = status;
            // Past the bound (S35): the timer was accepted when it was set.
            if port.post_unbounded(req).is_err() {
                // The port is closed: the runtime stopped while the timer
                // fired. Aborted, and off the timer thread.
                let f = cell.lock().0.take();
                if let Some(f) = f {
                    crate::timer::run_elsewhere(move || f(crate::Status::ABORTED));
                }
            }
        });
        let key = crate::timer::schedule(at, self.inner.id, fire)?;
        Ok(TimerId(key))
    }

    /// Cancels a timer: it completes once, now, with the aborted status,
    /// on a pool thread.
    /// A timer that already fired or was cancelled gives a "not found"
    /// `Io` error (S25).
    pub fn cancel_timer(&self, id: TimerId) -> Result<()> {
        if crate::timer::cancel(id.0) {
            Ok(())
        } else {
            Err(Error::Io(<crate::sys::Port as crate::sys::PortDriver>::not_found()))
        }
    }

    /// True once [`Runtime::shutdown`] ran or a `Fatal` poisoned it.
    pub fn is_shut_down(&self) -> bool {
        self.check().is_err()
    }
}

impl IoCompletionManager for Runtime {
    fn create_port(&self) -> Result<Port> {
        self.check()?;
        let port = Port::with_owner(self.inner.port_concurrency, self.inner.id, self.inner.bound, self.inner.driver)?;
        self.inner.pool.serve(port.clone())?;
        self.inner.ports.lock().push(port.clone());
        Ok(port)
    }

    fn close_port(&self, port: &Port) -> Result<()> {
        self.check()?;
        if port.owner() != self.inner.id {
            return Err(Error::invalid("port", port.id(), "was not created by this runtime"));
        }
        port.close()?;
        self.inner.pool.forget(port);
        self.inner.ports.lock().retain(|p| !p.same(port));
        Ok(())
    }

    /// Binds for the sink: set it first with `set_completion_sink` (the CLR
    /// does too), so no completion can arrive with nowhere to go; without
    /// one this gives `InvalidArgument`. `bind_io_completion_callback` needs
    /// no sink.
    fn bind(&self, port: Option<&Port>, handle: &Handle) -> Result<()> {
        self.check()?;
        if !self.inner.sink.is_set.load(Ordering::Acquire) {
            return Err(Error::invalid(
                "sink",
                "None",
                "set a completion sink before bind, or use bind_io_completion_callback",
            ));
        }
        let port = self.resolve(port)?;
        let r = handle.attach(&port, Arc::new(self.clone()), None);
        self.guard(r)
    }

    fn available_threads(&self) -> Result<usize> {
        self.check()?;
        Ok(self.inner.pool.available())
    }

    fn host_overlapped_size(&self) -> Result<usize> {
        self.check()?;
        Ok(self.inner.ext_size)
    }

    fn max_threads(&self) -> Result<usize> {
        self.check()?;
        Ok(self.inner.pool.max())
    }

    fn set_max_threads(&self, n: usize) -> Result<()> {
        self.check()?;
        self.inner.pool.set_max(n)
    }

    fn min_threads(&self) -> Result<usize> {
        self.check()?;
        Ok(self.inner.pool.min())
    }

    fn set_min_threads(&self, n: usize) -> Result<()> {
        self.check()?;
        self.inner.pool.set_min(n)
    }

    fn initialize_host_overlapped(&self, request: &mut Request) -> Result<()> {
        self.check()?;
        if request.extension().len() != self.inner.ext_size {
            return Err(Error::invalid(
                "request",
                request.id().as_u64(),
                &format!(
                    "extension is {} bytes, host_overlapped_size is {}",
                    request.extension().len(),
                    self.inner.ext_size
                ),
            ));
        }
        match &self.inner.initializer {
            Some(init) => {
                let r = init(request);
                self.guard(r)
            }
            None => Ok(()),
        }
    }

    fn set_completion_sink(&self, sink: Arc<dyn CompletionSink>) -> Result<()> {
        self.check()?;
        self.inner.sink.set(sink);
        Ok(())
    }
}
