//! What a running runtime is doing, read as snapshots: [`Runtime::metrics`]
//! (the pool and every port), [`Port::metrics`] and [`Handle::metrics`].
//!
//! The figures are always kept (no feature turns them on): counters are
//! plain atomic adds, spread over a few shards that threads write
//! separately and summed when read, and the latency histograms have fixed
//! log2 buckets ([`LatencyHistogram`]). The counters are exact; the
//! histograms time one operation in [`DEFAULT_SAMPLING`] per thread (a
//! timed request reads the clock four times: start, OS completion,
//! callback start and end), which [`set_latency_sampling`] changes.
//!
//! A snapshot is not taken at one instant: each figure is read on its
//! own, so two figures may disagree by the work done while they were read.
//! A runtime at rest (every request waiting, every callback blocked) gives
//! exact figures, which is what the tests check.
//!
//! ```
//! use iocompletion::Runtime;
//!
//! let rt = Runtime::builder().min_threads(1).max_threads(4).build()?;
//! let m = rt.metrics();
//! assert_eq!((m.pool.min, m.pool.max), (1, 4));
//! println!("threads {} busy {} queued {}", m.pool.threads, m.pool.busy, m.total().queued);
//! rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Runtime::metrics`]: crate::Runtime::metrics


use crate::handle::Handle;
use crate::op::Op;
use crate::port::{DriverKind, Packet, Port};
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use crate::sys::PortDriver;

pub use crate::shared::OsMetrics;

#[cfg(feature = "metrics")]
mod export;
mod histogram;
mod prometheus;
pub(crate) mod trace;

#[cfg(feature = "metrics")]
pub use export::Exporter;
pub use histogram::{LatencyHistogram, BUCKETS};

/// Counter shards: a thread writes the one it was given at its first
/// count, so threads on different shards never share a cache line.
pub(crate) const SHARDS: usize = 8;

// The initializer is `const` already; clippy 1.96 still reports
// missing_const_for_thread_local here when checking x86_64-pc-windows-gnu.
#[allow(clippy::missing_const_for_thread_local)]
mod local {
    thread_local! {
        /// The calling thread's counting state: one thread-local, so a post
        /// reads it once for its shard and its sampling tick.
        pub(super) static LOCAL: super::Local = const { super::Local::new() };
    }
}
use local::LOCAL;

/// A thread's counting state ([`LOCAL`]).
struct Local {
    /// The thread's counter shard, `usize::MAX` until its first count.
    shard: std::cell::Cell<usize>,
    /// Operations of each timed kind (start, post) since this thread last
    /// timed one of that kind; a pool worker counts its callbacks in a
    /// local of its own.
    ticks: [std::cell::Cell<u32>; 2],
}

impl Local {
    const fn new() -> Local {
        Local { shard: std::cell::Cell::new(usize::MAX), ticks: [std::cell::Cell::new(0), std::cell::Cell::new(0)] }
    }

    /// True when this operation of `kind` is timed.
    #[inline]
    fn sampled(&self, kind: usize) -> bool {
        let t = &self.ticks[kind];
        let n = t.get() + 1;
        if n >= SAMPLE_EVERY.load(Ordering::Relaxed) {
            t.set(0);
            true
        } else {
            t.set(n);
            false
        }
    }

    /// The thread's shard, in `0..SHARDS`.
    #[inline]
    fn shard(&self) -> usize {
        let i = self.shard.get();
        if i != usize::MAX {
            return i % SHARDS;
        }
        let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        self.shard.set(i);
        i
    }
}

/// One in how many operations each thread times ([`set_latency_sampling`]).
static SAMPLE_EVERY: AtomicU32 = AtomicU32::new(DEFAULT_SAMPLING);

/// The default of [`set_latency_sampling`].
pub const DEFAULT_SAMPLING: u32 = 64;

/// Sets how many operations each thread lets pass per one it times, for
/// the latency histograms, process-wide: 1 times every request, post and
/// callback; the default, [`DEFAULT_SAMPLING`] (64), keeps the clock
/// reads (tens of nanoseconds each on a virtual machine) off all but one
/// in 64. Counters are exact whatever this is; only the histograms are
/// sampled, so their counts are those of the values timed. A user's posts
/// are picked by the port's count of them rather than per thread, one in
/// `every` rounded up to a power of two.
pub fn set_latency_sampling(every: u32) {
    SAMPLE_EVERY.store(every.max(1), Ordering::Relaxed);
    SAMPLE_MASK.store(u64::from(every.max(1).next_power_of_two()) - 1, Ordering::Relaxed);
}

/// [`set_latency_sampling`]'s rate rounded up to a power of two, less one:
/// where a counter's value picks the operations timed (a user's posts).
static SAMPLE_MASK: AtomicU64 = AtomicU64::new(DEFAULT_SAMPLING as u64 - 1);

// The kinds of operation timed, each sampled on its own count: with one
// count for all, a thread whose operations come in a fixed cycle (a
// callback that starts a request, over and over) would time only one kind.
const START: usize = 0;
const POST: usize = 1;

/// True when the calling thread times this operation of `kind`.
#[inline]
fn sampled(kind: usize) -> bool {
    LOCAL.with(|l| l.sampled(kind))
}

/// A start time: the clock for a timed operation, else 1 ("started,
/// not timed"; a request's `started_ns` is 0 when not started).
#[inline]
pub(crate) fn start_stamp() -> u64 {
    if sampled(START) {
        now_ns()
    } else {
        1
    }
}

/// A post's completion time: the clock for a timed post, else 0.
#[inline]
pub(crate) fn post_stamp() -> u64 {
    if sampled(POST) {
        now_ns()
    } else {
        0
    }
}


static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's shard.
#[inline]
pub(crate) fn shard_index() -> usize {
    LOCAL.with(Local::shard)
}

/// Nanoseconds of a monotonic clock, never 0 (0 means "not stamped" in a
/// request).
#[inline]
pub(crate) fn now_ns() -> u64 {
    crate::sys::clock::now_ns()
}

/// The request kinds counted in flight, in [`InFlight`]'s order.
const KINDS: usize = 8;

fn kind_of(op: Op) -> Option<usize> {
    Some(match op {
        Op::Read => 0,
        Op::Write => 1,
        Op::ReadAt(_) => 2,
        Op::WriteAt(_) => 3,
        Op::Accept => 4,
        Op::Connect(_) => 5,
        Op::SendTo(_) => 6,
        Op::RecvFrom => 7,
        Op::Post => return None,
    })
}

/// Requests started and not yet completed (their packet not yet taken from
/// the port), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct InFlight {
    /// Stream reads (`read`, `read_vectored`).
    pub read: u64,
    /// Stream writes (`write`, `write_vectored`).
    pub write: u64,
    /// Positional file reads.
    pub read_at: u64,
    /// Positional file writes.
    pub write_at: u64,
    /// Accepts.
    pub accept: u64,
    /// Connects.
    pub connect: u64,
    /// Datagram sends.
    pub send_to: u64,
    /// Datagram receives.
    pub recv_from: u64,
}

impl InFlight {
    fn from_array(a: [u64; KINDS]) -> InFlight {
        let [read, write, read_at, write_at, accept, connect, send_to, recv_from] = a;
        InFlight { read, write, read_at, write_at, accept, connect, send_to, recv_from }
    }

    fn as_array(&self) -> [u64; KINDS] {
        [self.read, self.write, self.read_at, self.write_at, self.accept, self.connect, self.send_to, self.recv_from]
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.as_array().iter().sum()
    }

    /// Each kind's name (as in the exported metrics' `kind` label) and its
    /// count.
    pub fn by_kind(&self) -> [(&'static str, u64); KINDS] {
        let names = ["read", "write", "read_at", "write_at", "accept", "connect", "send_to", "recv_from"];
        let a = self.as_array();
        std::array::from_fn(|i| (names[i], a[i]))
    }
}

/// How the completions of requests started on a port's handles ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Outcomes {
    /// Succeeded.
    pub success: u64,
    /// Failed with an OS error (other than the four below).
    pub error: u64,
    /// Aborted by [`Handle::cancel`] or [`Handle::cancel_all`] (S24).
    pub cancelled: u64,
    /// Aborted by the close of their handle or port (S11, S24).
    pub aborted: u64,
    /// Cancelled because their deadline passed (S33).
    pub timed_out: u64,
}

impl Outcomes {
    /// All outcomes together.
    pub fn total(&self) -> u64 {
        self.success + self.error + self.cancelled + self.aborted + self.timed_out
    }
}

/// A snapshot of one port's figures ([`Port::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortMetrics {
    /// The port's [`Port::id`] (0 in [`RuntimeMetrics::total`]).
    pub port: u64,
    /// The driver it runs on (`None` in [`RuntimeMetrics::total`]).
    pub driver: Option<DriverKind>,
    /// Packets on the port's queue, waiting to be taken. On Windows, where
    /// the kernel's queue cannot be read, only the posts not yet taken.
    pub queued: u64,
    /// Requests started on the port's handles and not yet completed.
    pub in_flight: InFlight,
    /// How the requests started on its handles completed.
    pub completions: Outcomes,
    /// Completions posted to it ([`Port::post`], `Runtime::post`,
    /// `Runtime::post_callback`).
    pub posts: u64,
    /// Starts and posts refused at the port's bound (S35).
    pub refused: u64,
    /// What its OS queue did.
    pub os: OsMetrics,
    /// From a request's start to its completion by the OS (on Windows: to
    /// the take of its packet from the kernel's queue).
    pub start_to_completion: LatencyHistogram,
    /// From a request's completion by the OS (or a post) to the start of
    /// its callback on the pool.
    pub completion_to_callback: LatencyHistogram,
    /// How long the pool's callbacks for the port's packets ran.
    pub callback: LatencyHistogram,
}

impl PortMetrics {
    fn add(&mut self, o: &PortMetrics) {
        self.queued += o.queued;
        let (a, b) = (self.in_flight.as_array(), o.in_flight.as_array());
        self.in_flight = InFlight::from_array(std::array::from_fn(|i| a[i] + b[i]));
        let (c, d) = (&mut self.completions, &o.completions);
        c.success += d.success;
        c.error += d.error;
        c.cancelled += d.cancelled;
        c.aborted += d.aborted;
        c.timed_out += d.timed_out;
        self.posts += o.posts;
        self.refused += o.refused;
        self.os.entries += o.os.entries;
        self.os.completions += o.os.completions;
        self.os.overflows += o.os.overflows;
        self.start_to_completion.merge(&o.start_to_completion);
        self.completion_to_callback.merge(&o.completion_to_callback);
        self.callback.merge(&o.callback);
    }
}

// Slots of a port's sharded counters.
const STARTED: usize = 0;
const ENDED: usize = STARTED + KINDS;
const OUTCOME: usize = ENDED + KINDS;
const POSTS: usize = OUTCOME + 5;
const POSTED_ALL: usize = POSTS + 1;
const POSTS_TAKEN: usize = POSTED_ALL + 1;
const REFUSED: usize = POSTS_TAKEN + 1;
const SLOTS: usize = REFUSED + 1;

#[repr(align(64))]
struct CounterShard([AtomicU64; SLOTS]);

/// A port's counters and histograms, the crate's side.
pub(crate) struct PortCounters {
    shards: Box<[CounterShard; SHARDS]>,
    start_to_completion: histogram::Histogram,
    completion_to_callback: histogram::Histogram,
    callback: histogram::Histogram,
}

/// Which of [`Outcomes`] a taken packet counts as.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Success = 0,
    Error = 1,
    Cancelled = 2,
    Aborted = 3,
    TimedOut = 4,
}

impl PortCounters {
    pub(crate) fn new() -> PortCounters {
        PortCounters {
            shards: Box::new(std::array::from_fn(|_| CounterShard(std::array::from_fn(|_| AtomicU64::new(0))))),
            start_to_completion: histogram::Histogram::new(),
            completion_to_callback: histogram::Histogram::new(),
            callback: histogram::Histogram::new(),
        }
    }

    #[inline]
    fn add(&self, slot: usize) {
        self.shards[shard_index()].0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, slot: usize) -> u64 {
        self.shards.iter().map(|s| s.0[slot].load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }

    /// A request of kind `op` is about to start on one of the port's handles.
    pub(crate) fn started(&self, op: Op) {
        if let Some(k) = kind_of(op) {
            self.add(STARTED + k);
        }
    }

    /// A request counted by [`PortCounters::started`] failed to start.
    pub(crate) fn start_failed(&self, op: Op) {
        if let Some(k) = kind_of(op) {
            self.add(ENDED + k);
        }
    }

    /// The user posts a packet (with `request`, whose time of completion is
    /// stamped when the post is timed): one read of the thread's state for
    /// both.
    #[inline]
    pub(crate) fn user_posts(&self, request: Option<&mut crate::request::Request>) {
        // The shard's count of posts before this one picks the posts timed:
        // one in every `SAMPLE_MASK + 1` of the shard's.
        let n = self.shards[shard_index()].0[POSTS].fetch_add(1, Ordering::Relaxed);
        if let Some(r) = request {
            let mask = SAMPLE_MASK.load(Ordering::Relaxed);
            r.header_mut().completed_ns = if n & mask == mask { now_ns() } else { 0 };
        }
        self.queued_post();
    }

    /// A packet was posted, by the user or by the crate (a timer's, a
    /// task's run): counted only where the backend cannot count its queue.
    #[inline]
    pub(crate) fn queued_post(&self) {
        if !crate::sys::QUEUE_LEN_KNOWN {
            self.add(POSTED_ALL);
        }
    }

    /// A start or a post was refused at the bound.
    pub(crate) fn refused(&self, bound: usize) {
        trace::refused(bound);
        self.add(REFUSED);
    }

    /// A post counted by [`PortCounters::posted`] was refused after all.
    pub(crate) fn post_failed(&self, user: bool) {
        // Counted as taken: the queued figure stays true.
        if !crate::sys::QUEUE_LEN_KNOWN {
            self.add(POSTS_TAKEN);
        }
        if !user {
            return;
        }
        // A refused post is no post: taken back from the user's count by
        // counting it as a negative (wrapping) add.
        self.shards[shard_index()].0[POSTS].fetch_sub(1, Ordering::Relaxed);
    }

    /// A pool worker is about to run `p`'s callback; gives the time to hand
    /// to [`PortCounters::callback_done`], 0 when this callback is not
    /// timed. A request's callback is timed when its request was (its
    /// completion stamped), so a timed request is timed from its start to
    /// its callback's end; a packet without a request is timed one in
    /// [`set_latency_sampling`], counted in the worker's `tick` (a local:
    /// this runs once per packet).
    #[inline]
    pub(crate) fn callback_begins(&self, p: &Packet, tick: &mut u32) -> u64 {
        let done = match &p.request {
            Some(r) => r.header().completed_ns,
            None => {
                *tick += 1;
                if *tick < SAMPLE_EVERY.load(Ordering::Relaxed) {
                    return 0;
                }
                *tick = 0;
                0
            }
        };
        if done == 0 && p.request.is_some() {
            return 0;
        }
        self.callback_timed(done)
    }

    /// [`PortCounters::callback_begins`] for a callback that is timed.
    #[inline(never)]
    fn callback_timed(&self, done: u64) -> u64 {
        let now = now_ns();
        if done != 0 {
            self.completion_to_callback.record(now.saturating_sub(done));
        }
        now
    }

    /// The callback begun at `began` returned.
    #[inline]
    pub(crate) fn callback_done(&self, began: u64) {
        if began != 0 {
            self.callback.record(now_ns().saturating_sub(began));
        }
    }

    /// Posts queued and not yet taken.
    pub(crate) fn posts_queued(&self) -> u64 {
        // Taken first: each post is counted before its packet can be taken.
        let taken = self.sum(POSTS_TAKEN);
        self.sum(POSTED_ALL).saturating_sub(taken)
    }

    pub(crate) fn snapshot(&self, port: &Port) -> PortMetrics {
        let ended: [u64; KINDS] = std::array::from_fn(|k| self.sum(ENDED + k));
        let started: [u64; KINDS] = std::array::from_fn(|k| self.sum(STARTED + k));
        let o: [u64; 5] = std::array::from_fn(|i| self.sum(OUTCOME + i));
        PortMetrics {
            port: port.id(),
            driver: Some(port.driver().kind),
            queued: port.inner.sys.queued().map_or_else(|| self.posts_queued(), |n| n as u64),
            in_flight: InFlight::from_array(std::array::from_fn(|k| started[k].saturating_sub(ended[k]))),
            completions: Outcomes { success: o[0], error: o[1], cancelled: o[2], aborted: o[3], timed_out: o[4] },
            posts: self.sum(POSTS),
            refused: self.sum(REFUSED),
            os: port.inner.sys.os_metrics(),
            start_to_completion: self.start_to_completion.snapshot(),
            completion_to_callback: self.completion_to_callback.snapshot(),
            callback: self.callback.snapshot(),
        }
    }
}

/// A request is about to be submitted on `handle`, bound to `port`:
/// counted in flight on both, and its start time stamped.
pub(crate) fn starting(port: &Port, handle: &crate::handle::HandleState, req: &mut crate::request::Request) {
    let h = req.header_mut();
    h.started_ns = start_stamp();
    port.inner.metrics.started(h.op);
    handle.metrics.started(h.op);
}

/// The submit of a request counted by [`starting`] failed: no packet will
/// come for it.
pub(crate) fn start_failed(port: &Port, handle: &crate::handle::HandleState, op: Op, e: &crate::Error) {
    if let crate::Error::Io(e) = e {
        let s = crate::Status::from_io_error(e);
        if s.is_out_of_resources() {
            trace::out_of_resources(op, s.code());
        }
    }
    port.inner.metrics.start_failed(op);
    handle.metrics.ended(op, None);
}

/// A packet leaves its port (`counters`; `None` when the port is being
/// dropped): a request's completion ends here, for its port's and its
/// handle's counts. `timed_out`: its deadline cancelled it.
#[inline]
pub(crate) fn taken(
    counters: Option<&PortCounters>,
    p: &mut Packet,
    timed_out: bool,
    port_closed: impl FnOnce() -> bool,
) {
    match p.request.as_ref().map(|r| r.header()) {
        // A post, or a request counted already (a host that took it and
        // posted it again): the common case stays this check.
        Some(h) if h.started_ns == 0 => {
            if !crate::sys::QUEUE_LEN_KNOWN && kind_of(h.op).is_none() {
                if let Some(c) = counters {
                    c.add(POSTS_TAKEN);
                }
            }
        }
        Some(_) => request_taken(counters, p, timed_out, port_closed),
        None => {
            if let Some(c) = counters {
                if !crate::sys::QUEUE_LEN_KNOWN {
                    c.add(POSTS_TAKEN);
                }
            }
        }
    }
}

/// [`taken`] for a started request.
#[inline(never)]
fn request_taken(counters: Option<&PortCounters>, p: &mut Packet, timed_out: bool, port_closed: impl FnOnce() -> bool) {
    let Some(req) = p.request.as_mut() else { return };
    let op = req.header().op;
    let Some(k) = kind_of(op) else {
        if let Some(c) = counters {
            if !crate::sys::QUEUE_LEN_KNOWN {
                c.add(POSTS_TAKEN);
            }
        }
        return;
    };
    let h = req.header_mut();
    let (started, mut completed) = (h.started_ns, h.completed_ns);
    if started == 0 {
        // Counted already (a host that took it and posted it again).
        return;
    }
    if started > 1 && completed == 0 {
        completed = now_ns();
        h.completed_ns = completed;
    }
    h.started_ns = 0;
    let handle = h.handle.as_ref().and_then(|w| w.upgrade());
    let (status, bytes) = (p.status, p.bytes);
    let outcome = if status.is_success() {
        Outcome::Success
    } else if timed_out {
        Outcome::TimedOut
    } else if status.is_aborted() {
        use crate::sys::HandleDriver;
        if handle.as_ref().map_or(true, |h| h.sys.is_closed()) || port_closed() {
            Outcome::Aborted
        } else {
            Outcome::Cancelled
        }
    } else {
        if status.is_out_of_resources() {
            trace::out_of_resources(op, status.code());
        }
        Outcome::Error
    };
    if let Some(h) = &handle {
        h.metrics.ended(op, status.is_success().then_some(bytes));
    }
    if let Some(c) = counters {
        if started > 1 {
            c.start_to_completion.record(completed.saturating_sub(started));
        }
        c.add(ENDED + k);
        c.add(OUTCOME + outcome as usize);
    }
}

/// A handle's counters, the crate's side.
pub(crate) struct HandleCounters {
    in_flight: [AtomicU64; KINDS],
    read: AtomicU64,
    written: AtomicU64,
}

impl Default for HandleCounters {
    fn default() -> Self {
        HandleCounters {
            in_flight: std::array::from_fn(|_| AtomicU64::new(0)),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }
}

impl HandleCounters {
    pub(crate) fn started(&self, op: Op) {
        if let Some(k) = kind_of(op) {
            self.in_flight[k].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request of kind `op` ended (completed, or failed to start); `bytes`
    /// moved when it succeeded.
    pub(crate) fn ended(&self, op: Op, bytes: Option<usize>) {
        if let Some(k) = kind_of(op) {
            // Never below zero: a request is counted in before it is
            // submitted, so its end (after its completion, or its failed
            // start) comes after that add in the atomic's own order. One
            // read-modify-write, not a load and a compare-and-swap: the
            // handle's line is often another thread's.
            self.in_flight[k].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(n) = bytes.filter(|&n| n > 0) {
            let counter = match op {
                Op::Read | Op::ReadAt(_) | Op::RecvFrom => &self.read,
                Op::Write | Op::WriteAt(_) | Op::SendTo(_) => &self.written,
                _ => return,
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// A snapshot of one handle's figures ([`Handle::metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HandleMetrics {
    /// Requests started on the handle and not yet completed.
    pub in_flight: InFlight,
    /// Bytes its completed reads (stream, file, datagram) transferred.
    pub bytes_read: u64,
    /// Bytes its completed writes (stream, file, datagram) transferred.
    pub bytes_written: u64,
}

impl Handle {
    /// A snapshot of the handle's figures: requests in flight by kind, and
    /// the bytes its completed requests read and wrote (see
    /// [`metrics`](crate::metrics)).
    pub fn metrics(&self) -> HandleMetrics {
        let c = &self.inner.metrics;
        HandleMetrics {
            in_flight: InFlight::from_array(std::array::from_fn(|k| c.in_flight[k].load(Ordering::Relaxed))),
            bytes_read: c.read.load(Ordering::Relaxed),
            bytes_written: c.written.load(Ordering::Relaxed),
        }
    }
}

impl Port {
    /// A snapshot of the port's figures: queue depth, requests in flight
    /// by kind, completions by outcome, posts, refusals at the bound, what
    /// its OS queue did, and three latency histograms (see
    /// [`metrics`](crate::metrics)).
    pub fn metrics(&self) -> PortMetrics {
        self.inner.metrics.snapshot(self)
    }
}

/// Why the pool last started a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Growth {
    /// A new port's first worker (a port is never left without one).
    NewPort,
    /// Work waited with no thread for it while the pool was below its
    /// minimum (S14).
    BelowMinimum,
    /// The minimum was raised while work waited (S12, S14).
    MinimumRaised,
    /// The gate thread saw work wait a whole gate interval with no thread
    /// for it (S14).
    Starving,
    /// A worker failed outside a callback and was replaced (S6).
    Replacement,
}

/// Why the pool last lost a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shrink {
    /// It was idle for the keep-alive above the minimum (S15).
    Idle,
    /// The maximum was lowered below the threads alive (S12).
    MaximumLowered,
    /// Its port closed, or the runtime shut down (S11, S17).
    Closed,
}

const GROWTHS: [Growth; 5] =
    [Growth::NewPort, Growth::BelowMinimum, Growth::MinimumRaised, Growth::Starving, Growth::Replacement];
const SHRINKS: [Shrink; 3] = [Shrink::Idle, Shrink::MaximumLowered, Shrink::Closed];

/// The pool's reasons, the crate's side (0: none yet).
#[derive(Default)]
pub(crate) struct PoolCounters {
    grew: AtomicU8,
    shrank: AtomicU8,
}

impl PoolCounters {
    pub(crate) fn grew(&self, why: Growth) {
        trace::grew(why);
        let i = GROWTHS.iter().position(|&g| g == why).unwrap_or(0);
        self.grew.store(i as u8 + 1, Ordering::Relaxed);
    }

    pub(crate) fn shrank(&self, why: Shrink) {
        trace::shrank(why);
        let i = SHRINKS.iter().position(|&s| s == why).unwrap_or(0);
        self.shrank.store(i as u8 + 1, Ordering::Relaxed);
    }

    pub(crate) fn last_growth(&self) -> Option<Growth> {
        GROWTHS.get((self.grew.load(Ordering::Relaxed) as usize).checked_sub(1)?).copied()
    }

    pub(crate) fn last_shrink(&self) -> Option<Shrink> {
        SHRINKS.get((self.shrank.load(Ordering::Relaxed) as usize).checked_sub(1)?).copied()
    }
}

/// A snapshot of the pool's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Worker threads alive now.
    pub threads: usize,
    /// The pool's minimum.
    pub min: usize,
    /// The pool's maximum.
    pub max: usize,
    /// Workers waiting for work (`threads - busy`).
    pub idle: usize,
    /// Workers running a completion now.
    pub busy: usize,
    /// Most threads alive at once.
    pub peak: usize,
    /// Threads started.
    pub started: u64,
    /// Threads that retired after the keep-alive, or above a lowered
    /// maximum.
    pub retired: u64,
    /// Workers that failed outside a callback and were replaced (S6).
    pub replaced: u64,
    /// Workers left behind blocked in the OS (see
    /// [`PoolStats::abandoned`](crate::PoolStats::abandoned)).
    pub abandoned: u64,
    /// Completions run.
    pub completions: u64,
    /// Callbacks and tasks that panicked.
    pub panics: u64,
    /// Why the pool last started a thread (`None`: never).
    pub last_growth: Option<Growth>,
    /// Why the pool last lost a thread (`None`: never).
    pub last_shrink: Option<Shrink>,
}

/// A snapshot of a runtime's figures ([`Runtime::metrics`](crate::Runtime::metrics)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// The pool.
    pub pool: PoolMetrics,
    /// Each port the runtime created and has not closed, its default port
    /// included once created.
    pub ports: Vec<PortMetrics>,
}

impl RuntimeMetrics {
    /// The figures of all its ports together.
    pub fn total(&self) -> PortMetrics {
        let mut t = PortMetrics::default();
        for p in &self.ports {
            t.add(p);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    /// One operation in `every` per thread is timed; the counters are not
    /// sampled.
    #[test]
    fn metrics_latency_sampling_times_one_in_n_per_thread() {
        // On a thread of its own: the tick is per thread. The rate is
        // process-wide, so it is put back before the test ends.
        let timed = std::thread::spawn(|| {
            super::set_latency_sampling(4);
            let n = (0..8).filter(|_| super::sampled(super::START)).count();
            // Another kind's count is its own.
            assert!(!super::sampled(super::POST));
            super::set_latency_sampling(super::DEFAULT_SAMPLING);
            n
        })
        .join()
        .unwrap();
        assert_eq!(timed, 2);
    }
}
