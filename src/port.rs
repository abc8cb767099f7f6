//! Completion ports (S7-S11).

use std::fmt;
use crate::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result, StartError};
use crate::buf::Buffer;
use crate::request::Request;
use crate::status::Status;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering};
use crate::sys::{self, HandleDriver, PortDriver};

pub use crate::request::Packet;
pub use crate::shared::{DriverInfo, DriverKind};

static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// What taking a packet settles for its request: a deadline (S33) is
/// forgotten, and a request cancelled because its deadline passed reports
/// the OS's timed-out status instead of the aborted one.
///
/// The port's metrics count each packet here, as it leaves the port.
#[inline]
fn settle(port: Option<&PortState>, packets: &mut [Packet]) {
    for p in packets {
        // Most packets are posts and requests without a deadline: their
        // whole settling is the inlined check in `metrics::taken`.
        let timed_out = match p.request.as_mut() {
            Some(req) if req.header().deadline.is_some() => deadline_passed(req, &mut p.status),
            _ => false,
        };
        crate::metrics::taken(port.map(|i| &i.metrics), p, timed_out, || port.map_or(true, |i| i.sys.is_closed()));
    }
}

/// Ends the deadline of a request leaving its port; true when the deadline
/// is what cancelled it (its status becomes the OS's timeout code).
#[inline(never)]
fn deadline_passed(req: &mut Request, status: &mut Status) -> bool {
    let Some(deadline) = req.header_mut().deadline.take() else { return false };
    if crate::timer::completed(deadline, req.id().as_u64()) && status.is_aborted() {
        let kind = req.handle().map(|h| h.kind());
        *status = Status::from_raw(<sys::Handle as HandleDriver>::timed_out_code(kind));
        return true;
    }
    false
}

/// What the pool serving a port runs when work reaches the port while no
/// thread waits on it (S14: below the minimum a thread starts at once).
pub(crate) type Starving = Box<dyn Fn() + Send + Sync>;

pub(crate) struct PortState {
    pub(crate) sys: sys::Port,
    id: u64,
    owner: u64,
    /// Set once, by the pool that serves the port.
    starving: OnceLock<Starving>,
    /// S35: the most requests and packets the port holds at once.
    bound: Option<usize>,
    /// Requests started on the port's handles or posted to it, not yet
    /// taken as packets (counted only with a bound).
    held: AtomicUsize,
    /// S2, S34: second deliveries of a request's own target by a custom
    /// host, counted and ignored (see [`Port::duplicate_deliveries`]).
    pub(crate) duplicates: AtomicUsize,
    /// What `Port::metrics` reads.
    pub(crate) metrics: crate::metrics::PortCounters,
}

/// An I/O completion port: a queue of completion packets that threads wait
/// on. Cheap to clone; clones are the same port.
///
/// The port belongs to the backend: on Windows it is the kernel's IOCP
/// handle, elsewhere a portable queue joined to mio's poller, whose waiting
/// threads also perform the ready I/O. Packets come out FIFO; waiting threads
/// are woken LIFO, the most recently idle first (S8).
///
/// ```
/// use iocompletion::Port;
/// use std::time::Duration;
///
/// let port = Port::new(0)?;
/// port.post(7, 42, None)?;
/// let p = port.get(Some(Duration::from_secs(5)))?;
/// assert_eq!((p.bytes, p.key), (7, 42));
/// port.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Port {
    pub(crate) inner: Arc<PortState>,
}

impl Port {
    /// Creates a port (`CreateIoCompletionPort(INVALID_HANDLE_VALUE, …)`).
    /// `concurrency` is the number of threads allowed to run its
    /// completions at once; 0 means the number of CPUs (S7).
    ///
    /// A port made this way is served by nobody: the program takes its
    /// packets itself, as with a raw IOCP.
    ///
    /// ```
    /// use std::time::Duration;
    /// use iocompletion::{Error, Port};
    ///
    /// let port = Port::new(0)?;
    /// port.post(42, 7, None)?; // bytes, key, no request
    /// let p = port.get(Some(Duration::from_secs(1)))?;
    /// assert_eq!((p.bytes, p.key), (42, 7));
    /// assert!(matches!(port.get(Some(Duration::ZERO)), Err(Error::Timeout)));
    /// port.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(concurrency: usize) -> Result<Port> {
        Port::with_owner(concurrency, 0, None, None)
    }

    /// Like [`Port::new`], with a bound (S35): at most `bound` requests and
    /// packets held at once (started on its handles or posted, and not yet
    /// taken). At the bound a start or a post fails with [`Error::Full`],
    /// handing the request and its buffer back; nothing accepted before is
    /// lost. `bound` must be at least 1.
    pub fn bounded(concurrency: usize, bound: usize) -> Result<Port> {
        if bound == 0 {
            return Err(Error::invalid("bound", bound, "must be at least 1"));
        }
        Port::with_owner(concurrency, 0, Some(bound), None)
    }

    /// The port's bound (S35), if it has one.
    pub fn bound(&self) -> Option<usize> {
        self.inner.bound
    }

    pub(crate) fn with_owner(
        concurrency: usize,
        owner: u64,
        bound: Option<usize>,
        driver: Option<DriverKind>,
    ) -> Result<Port> {
        let concurrency = if concurrency == 0 { num_cpus::get().max(1) } else { concurrency };
        let sys = sys::Port::new(concurrency, driver, crate::pool::blocking_call).map_err(|e| match e.kind() {
            std::io::ErrorKind::OutOfMemory => Error::OutOfMemory,
            std::io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
            _ => Error::Io(e),
        })?;
        let port = Port { inner: Arc::new(PortState {
            sys,
            id: NEXT_PORT.fetch_add(1, Ordering::Relaxed),
            owner,
            starving: OnceLock::new(),
            bound,
            held: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            metrics: crate::metrics::PortCounters::new(),
        }) };
        crate::metrics::trace::port_created(&port);
        Ok(port)
    }

    /// The port's concurrency value.
    pub fn concurrency(&self) -> usize {
        self.inner.sys.concurrency()
    }

    /// A number unique to this port within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn owner(&self) -> u64 {
        self.inner.owner
    }

    /// True when both values are the same port.
    pub fn same(&self, other: &Port) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How many threads are blocked in [`Port::get`] or [`Port::get_many`]
    /// on this port right now, waiting for a packet (a diagnostic; the value
    /// may change at once).
    ///
    /// On the portable backend a thread counts from the moment it is
    /// registered to be woken (parked, or polling for readiness), so once
    /// this reaches `n`, the order in which `n` waiting threads are woken is
    /// fixed. On Windows a thread counts from just before it enters
    /// `GetQueuedCompletionStatusEx`.
    pub fn waiting_threads(&self) -> usize {
        self.inner.sys.waiting()
    }

    /// The driver the port runs on (S36): on Linux io_uring where the
    /// kernel allows it, else epoll with the reason; see [`DriverInfo`].
    ///
    /// ```
    /// let port = iocompletion::Port::new(0)?;
    /// println!("driver: {}", port.driver());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn driver(&self) -> DriverInfo {
        self.inner.sys.driver()
    }

    /// How many packets this port dropped because the crate did not make
    /// them (S39): on Windows, the completions of overlapped I/O that other
    /// code issued on a handle bound to this port (through a duplicate of
    /// it, or its raw handle). Such a packet is told apart by its address
    /// before anything is read from it, and never reaches a consumer; the
    /// memory it points to is its issuer's to free. Always 0 elsewhere.
    pub fn foreign_packets(&self) -> usize {
        self.inner.sys.stats().foreign_packets
    }

    /// How many completions of requests on this port's handles the crate
    /// delivered itself because the OS queued no packet for them: on
    /// Windows, requests that completed at once on a handle set with
    /// [`Handle::skip_completion_port_on_success`](crate::Handle::skip_completion_port_on_success),
    /// and reads that met the end of a file or pipe at once. They go
    /// through the port's own queue, which a take looks at before the
    /// kernel's, and cost no kernel call while a thread is on its way back
    /// to the port. Always 0 elsewhere, where the port has no kernel queue
    /// (every completion goes through the crate's own).
    pub fn direct_completions(&self) -> usize {
        self.inner.sys.stats().direct_completions
    }

    /// How many requests the port's close gave up waiting for (S11): a
    /// request the OS neither finishes nor cancels (a read of a network or
    /// FUSE file system that never answers) would hold up the close, and a
    /// pool's shutdown, for ever, so the close waits for such requests a
    /// bounded time (2 s) and then ends without them. They never complete;
    /// each is leaked with its buffer, never freed, since the OS may still
    /// write to it. 0 on a port whose close waited for everything, and
    /// always 0 on Windows and on readiness drivers, whose close does not
    /// wait for the OS.
    pub fn leaked_requests(&self) -> usize {
        self.inner.sys.stats().leaked_requests
    }

    /// How many times a host delivered a completion a second time to the
    /// target of a request of this port's handles (S2, S34): the callback
    /// it took with [`Request::take_callback`](crate::Request::take_callback),
    /// called again. A request completes once: the first delivery stands,
    /// each later one is counted here and ignored (the request it carried
    /// is dropped), whether the target is the handle's callback, a
    /// closure or a future. Always 0 with the crate's own host.
    pub fn duplicate_deliveries(&self) -> usize {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// True once the port is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.sys.is_closed()
    }

    /// `PostQueuedCompletionStatus`: queues a packet whose bytes, key and
    /// request come back verbatim, with a success status (S9).
    ///
    /// On a closed port it fails and hands the request's buffer back.
    pub fn post(&self, bytes: usize, key: usize, mut request: Option<Request>) -> Result<(), StartError> {
        if let Err(e) = self.admit() {
            return Err(match request {
                Some(r) => StartError::of(e, r),
                None => StartError::new(e, Buffer::None),
            });
        }
        // Counted first: its packet may be taken before `post` returns.
        self.inner.metrics.user_posts(request.as_mut());
        if let Err((e, p)) = self.inner.sys.post(Packet { status: Status::SUCCESS, bytes, key, request }) {
            self.inner.metrics.post_failed(true);
            self.taken(1);
            return Err(match p.request {
                Some(r) => StartError::of(e, r),
                None => StartError::new(e, Buffer::None),
            });
        }
        self.pushed();
        Ok(())
    }

    /// Posts the crate's own completion (a timer's, S33; a woken task's
    /// run, see `task`) with a success status, past the bound (S35): it is
    /// part of work already accepted, so it is never refused for lack of
    /// room, but it is counted as held, so that taking it keeps the count
    /// true. On a closed port it hands the request back.
    pub(crate) fn post_unbounded(&self, mut request: Request) -> std::result::Result<(), Request> {
        if self.inner.bound.is_some() {
            self.inner.held.fetch_add(1, Ordering::AcqRel);
        }
        request.header_mut().completed_ns = crate::metrics::post_stamp();
        self.inner.metrics.queued_post();
        let packet = Packet { status: Status::SUCCESS, bytes: 0, key: 0, request: Some(request) };
        match self.inner.sys.post(packet) {
            Ok(()) => {
                self.pushed();
                Ok(())
            }
            Err((_, p)) => {
                self.inner.metrics.post_failed(false);
                self.taken(1);
                match p.request {
                    Some(r) => Err(r),
                    None => Ok(()),
                }
            }
        }
    }

    /// Counts one more request or packet held, or refuses it at the bound.
    pub(crate) fn admit(&self) -> Result<()> {
        let Some(bound) = self.inner.bound else { return Ok(()) };
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < bound).then_some(n + 1))
            .map(drop)
            .map_err(|_| {
                self.inner.metrics.refused(bound);
                Error::Full { bound }
            })
    }

    /// `n` admitted requests or packets left the port (taken, or refused
    /// after all).
    pub(crate) fn taken(&self, n: usize) {
        if self.inner.bound.is_some() && n > 0 {
            // Saturating: a packet the crate did not admit (none today)
            // must not wrap the count.
            let _ = self.inner.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| Some(h.saturating_sub(n)));
        }
    }

    /// Called after work was queued on the port from outside the driver
    /// (a post, a request that completed or was queued as it started): when
    /// no thread waits for it, the serving pool decides whether a thread
    /// starts (S14). A waiting thread is woken by the push itself, so this
    /// costs one load while any thread waits.
    pub(crate) fn pushed(&self) {
        if self.inner.sys.waiting() == 0 {
            if let Some(hook) = self.inner.starving.get() {
                hook();
            }
        }
    }

    /// Installs the serving pool's growth hook; false if one was set.
    pub(crate) fn set_starving(&self, hook: Starving) -> bool {
        self.inner.starving.set(hook).is_ok()
    }

    /// `GetQueuedCompletionStatus`: waits for one packet (S10). `None` waits
    /// without limit. Gives `Timeout` when none came in time, and
    /// `Abandoned` once the port is closed and drained.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Packet> {
        let mut v = Vec::with_capacity(1);
        let n = self.inner.sys.get_many(&mut v, 1, timeout, None)?;
        self.taken(n);
        settle(Some(&self.inner), &mut v);
        v.pop().ok_or(Error::Timeout)
    }

    /// `GetQueuedCompletionStatusEx`: waits like [`Port::get`], then appends
    /// up to `max` packets to `out` in one call; returns how many (S10).
    pub fn get_many(&self, out: &mut Vec<Packet>, max: usize, timeout: Option<Duration>) -> Result<usize> {
        if max == 0 {
            return Err(Error::invalid("max", max, "must be at least 1"));
        }
        let before = out.len();
        let n = self.inner.sys.get_many(out, max, timeout, None)?;
        self.taken(n);
        settle(Some(&self.inner), &mut out[before..]);
        Ok(n)
    }

    /// The pool's wait for one packet: like [`Port::get`], and also ended
    /// with `Ok(0)` by an [`Port::interrupt`] after `interrupts` was read.
    pub(crate) fn get_for_pool(
        &self,
        out: &mut Vec<Packet>,
        timeout: Option<Duration>,
        interrupts: usize,
    ) -> Result<usize> {
        let before = out.len();
        let n = self.inner.sys.get_many(out, 1, timeout, Some(interrupts))?;
        self.taken(n);
        settle(Some(&self.inner), &mut out[before..]);
        Ok(n)
    }

    /// How many times [`Port::interrupt`] was called.
    pub(crate) fn interrupts(&self) -> usize {
        self.inner.sys.interrupts()
    }

    /// Ends the pool's waits in progress, so its workers see new limits.
    pub(crate) fn interrupt(&self) {
        self.inner.sys.interrupt();
    }

    /// Closes the port (S11): requests pending on handles bound to it
    /// complete with the aborted status (their packets can still be taken),
    /// then waiting threads wake with `Abandoned`. A second close gives
    /// `InvalidArgument`.
    pub fn close(&self) -> Result<()> {
        if self.inner.sys.close() {
            Ok(())
        } else {
            Err(Error::invalid("port", self.inner.id, "already closed"))
        }
    }

    /// The backend's periodic duty (the pool calls this every few
    /// milliseconds): on the portable backend, making sure readiness is
    /// watched while the last poller runs a long completion.
    pub(crate) fn maintain(&self) {
        self.inner.sys.maintain();
    }

    /// True when packets or pending work wait on the port (a hint for the
    /// pool's growth decision).
    pub(crate) fn has_backlog(&self) -> bool {
        self.inner.sys.has_backlog()
    }
}

impl Drop for PortState {
    /// The last reference is gone (the user's clones, the handles bound to
    /// the port, the pool serving it): nobody can take its packets any
    /// more, so the port closes as [`Port::close`] does (S11) and every
    /// request still on it, pending ones completed aborted (S24), is
    /// handed to its own target here: a future resolves, a request's or
    /// handle's callback runs. A request without one (a host's sink would
    /// have taken it) is dropped with its buffer. A panic in a callback is
    /// caught, so a drop never unwinds.
    ///
    /// On the process's timer thread (a deadline's cancel held the last
    /// reference of a handle, and so of its port), all of this runs on a
    /// thread of its own: the timer thread runs no user code and does not
    /// wait for a close (S33).
    fn drop(&mut self) {
        let sys = self.sys.clone();
        crate::timer::run_elsewhere(move || {
            let mut left = Vec::new();
            sys.close_dropped(&mut left);
            drop(sys);
            settle(None, &mut left);
            for p in left {
                let Some(mut req) = p.request else { continue };
                if let Some(target) = req.take_callback() {
                    let (status, bytes) = (p.status, p.bytes);
                    let run = std::panic::AssertUnwindSafe(move || target.on_complete(status, bytes, req));
                    let _ = std::panic::catch_unwind(run);
                }
            }
        });
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.inner.id)
            .field("concurrency", &self.concurrency())
            .field("closed", &self.is_closed())
            .finish()
    }
}
