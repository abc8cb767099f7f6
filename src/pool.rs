//! The bounded, elastic thread pool that runs completions (S12-S17).
//!
//! Every worker serves one port. It takes one packet at a time from the
//! port (whose queue is the pool's injector: no packet waits in a private
//! batch while a sibling sleeps) and runs its callback under
//! `catch_unwind`. The port decides who is woken (see `sys::queue`); the
//! pool decides how many threads there are:
//!
//! - **Growth** (S14): when a worker takes a packet, leaves more queued and
//!   no other thread waits on the port, the pool adds a thread at once below
//!   `min_threads`; above it the gate thread adds at most one per gate
//!   interval, and only while that lasts. Raising `min_threads` while work
//!   waits starts the missing threads at once.
//! - **Limits** (S12): lowering `max_threads` interrupts the ports' waits;
//!   every worker checks the count before it waits again, so from the call
//!   on at most the new maximum run callbacks, and the others leave as they
//!   finish.
//! - **Retirement** (S15): a worker idle for the keep-alive leaves when the
//!   pool is above its minimum, unless it is the last worker of its port.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::census::{Census, Leave, Refused};
use crate::error::{Error, Result};
use crate::metrics::{Growth, Shrink};
use crate::port::{Packet, Port};
use crate::sync::{thread, Arc, AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, Weak};
use crate::sys::{self, PortDriver, SlotOps};

mod metrics;

/// Runs one packet; false when nothing could take it (no request and no
/// sink). The pool catches a panic from it (S6).
pub(crate) type Dispatch = dyn Fn(Packet) -> bool + Send + Sync;

/// Settings of a pool, from the runtime's builder.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) name: String,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) gate_interval: Duration,
    pub(crate) stack_size: Option<usize>,
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolStats {
    /// Worker threads alive now.
    pub threads: usize,
    /// Workers running a completion now.
    pub busy: usize,
    /// Most threads alive at once since the pool started.
    pub peak_threads: usize,
    /// Threads started since the pool started.
    pub started: u64,
    /// Threads that retired after the keep-alive.
    pub retired: u64,
    /// Completions run (callbacks returned or panicked).
    pub completions: u64,
    /// Callbacks that panicked; each was caught and the pool went on (S6).
    pub panics: u64,
    /// Packets that reached a port with no request and no sink to take them.
    pub unclaimed: u64,
    /// Workers that failed outside a callback (a bug in the crate, never the
    /// user's code) and were replaced; each is also reported on stderr by
    /// the panic hook.
    pub replaced: u64,
    /// Workers a shutdown or a port's close stopped waiting for: blocked in
    /// the OS on a file request performed on the pool (the epoll driver's
    /// file reads and writes) for longer than the close's bound (2 s), as
    /// when a network or FUSE file system never answers. Each is left
    /// running, not joined, and no longer counted in `threads` nor against
    /// `max_threads`; it holds its thread, the request and its buffer, and
    /// its port's memory. If the OS ever returns, it delivers that
    /// request's completion (aborted, the port being closed: its callback
    /// runs, after the close or the shutdown returned) and exits. A worker
    /// anywhere else (in a callback, or slow for any other reason) is
    /// waited for.
    pub abandoned: u64,
}

// The initializer is `const` already; clippy 1.96 still reports
// missing_const_for_thread_local here when checking x86_64-pc-windows-gnu.
#[allow(clippy::missing_const_for_thread_local)]
mod worker_tls {
    thread_local! {
        /// The port the calling worker serves (null outside the pool).
        pub(super) static SERVING: std::cell::Cell<*const super::ServedPort> =
            const { std::cell::Cell::new(std::ptr::null()) };
        /// The calling worker (none outside the pool).
        pub(super) static WORKER: std::cell::RefCell<Option<crate::sync::Arc<super::WorkerInfo>>> =
            const { std::cell::RefCell::new(None) };
    }
}
use worker_tls::{SERVING, WORKER};

/// What the pool and the gate thread see of one worker.
struct WorkerInfo {
    /// True while the worker runs a completion.
    busy: AtomicBool,
    /// Completions this worker ran; written only by it.
    seq: AtomicU64,
    /// `seq` as the gate thread saw it at its previous tick.
    seen: AtomicU64,
    /// The port concurrency slot the worker holds, if the backend has one.
    concurrency_slot: Mutex<Option<<sys::Port as PortDriver>::Slot>>,
    /// The worker's thread (a shutdown leaves a worker stuck in the OS).
    thread: thread::ThreadId,
    /// Since when the worker is blocked in the OS on a file request
    /// ([`blocking_call`]); `None` anywhere else.
    in_file_call: Mutex<Option<Instant>>,
    /// The worker holds its place in the census and in its port's count;
    /// whoever takes this from true to false gives both back: the worker
    /// as it leaves, or a close that leaves it behind.
    counted: AtomicBool,
}

/// Runs `f`, a call that may block in the OS for as long as a file system
/// takes (a file request performed on a pool thread). While it runs, a
/// shutdown or a port's close that waits for the calling worker knows it
/// is blocked there, and leaves it behind once that lasted longer than
/// the bound (S11, S17). Outside a pool worker it only runs `f`.
/// The backends get it as their `sys::BlockingCall`.
pub(crate) fn blocking_call(f: &mut dyn FnMut()) {
    struct Mark(Option<Arc<WorkerInfo>>);
    impl Drop for Mark {
        fn drop(&mut self) {
            if let Some(w) = &self.0 {
                *w.in_file_call.lock() = None;
            }
        }
    }
    let mark = Mark(WORKER.with(|w| w.borrow().clone()));
    if let Some(w) = &mark.0 {
        *w.in_file_call.lock() = Some(Instant::now());
    }
    f()
}

/// The workers of one port.
struct ServedPort {
    port: Port,
    threads: AtomicUsize,
    workers: Mutex<Vec<Arc<WorkerInfo>>>,
    exited: Condvar,
    exited_lock: Mutex<()>,
}

impl ServedPort {
    /// Work waits on the port and no thread waits for it.
    fn starving(&self) -> bool {
        self.port.has_backlog() && self.port.waiting_threads() == 0
    }

    /// Frees the concurrency slots of workers that finished no completion
    /// for a whole gate interval while busy: the kernel frees the slot of a
    /// thread that blocks; user space can only see that a callback has run
    /// long, so it treats that as blocked (S7).
    fn release_stuck(&self) {
        for w in self.workers.lock().iter() {
            let seq = w.seq.load(Ordering::Acquire);
            let seen = w.seen.swap(seq, Ordering::AcqRel);
            if w.busy.load(Ordering::Acquire) && seq == seen {
                if let Some(s) = w.concurrency_slot.lock().as_ref() {
                    s.release();
                }
            }
        }
    }

    fn completions(&self) -> u64 {
        self.workers.lock().iter().map(|w| w.seq.load(Ordering::Acquire)).sum()
    }

    fn busy(&self) -> usize {
        self.workers.lock().iter().filter(|w| w.busy.load(Ordering::Acquire)).count()
    }

    /// Waits until the port's workers have exited, the calling thread
    /// aside (a worker of this port that stops the pool from a callback),
    /// and returns the threads it left behind.
    ///
    /// Every worker is waited for, however slow, except one blocked in the
    /// OS on a file request ([`blocking_call`]) for longer than
    /// [`GIVE_UP`]: a read the file system never answers would hold the
    /// caller for ever (S11, S17). Once `give_up` has passed and every
    /// worker left is blocked so, they are left: counted as abandoned and
    /// given back to the census (they no longer count against the
    /// maximum); each exits by itself if the OS ever returns.
    fn wait_for_exit(&self, shared: &Shared, give_up: Instant) -> Vec<thread::ThreadId> {
        let me = thread::current().id();
        let mine = usize::from(SERVING.with(|s| std::ptr::eq(s.get(), self)));
        let mut g = self.exited_lock.lock();
        loop {
            if self.threads.load(Ordering::Acquire) <= mine {
                return Vec::new();
            }
            let now = Instant::now();
            if now >= give_up {
                let workers = self.workers.lock();
                let others: Vec<&Arc<WorkerInfo>> = workers.iter().filter(|w| w.thread != me).collect();
                let stuck = |w: &WorkerInfo| {
                    w.in_file_call.lock().is_some_and(|since| now.saturating_duration_since(since) >= GIVE_UP)
                };
                if !others.is_empty() && others.iter().all(|w| stuck(w)) {
                    for w in &others {
                        if w.counted.swap(false, Ordering::AcqRel) {
                            shared.census.exit();
                            self.threads.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    shared.abandoned.fetch_add(others.len() as u64, Ordering::Relaxed);
                    return others.iter().map(|w| w.thread).collect();
                }
                drop(workers);
                #[cfg(test)]
                faults::looked_late(&shared.config.name);
            }
            self.exited.wait_for(&mut g, EXIT_POLL);
        }
    }
}

/// How long a shutdown or a port's close waits for a worker blocked in the
/// OS on a file request before it leaves it (as a port's close gives up on
/// requests the kernel keeps).
const GIVE_UP: Duration = Duration::from_secs(2);

/// How often a wait for workers to exit looks again (each exit also wakes
/// it).
const EXIT_POLL: Duration = Duration::from_millis(10);

struct State {
    served_ports: Vec<Arc<ServedPort>>,
    joins: Vec<thread::JoinHandle<()>>,
    last_spawn: Option<Instant>,
    next_worker: usize,
    shutdown: bool,
}

pub(crate) struct Shared {
    config: PoolConfig,
    census: Arc<Census>,
    peak: AtomicUsize,
    started: AtomicU64,
    retired: AtomicU64,
    completions: AtomicU64,
    panics: AtomicU64,
    unclaimed: AtomicU64,
    replaced: AtomicU64,
    abandoned: AtomicU64,
    /// Why the pool last grew and shrank (`metrics`).
    metrics: crate::metrics::PoolCounters,
    state: Mutex<State>,
    gate: Condvar,
    dispatch: Box<Dispatch>,
}

/// The pool. Cheap to share through its `Arc`.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    stopped: AtomicBool,
}

fn refused(r: Refused, n: usize) -> Error {
    match r {
        Refused::MaxZero => Error::invalid("max_threads", n, "must be at least 1"),
        Refused::MaxBelowMin(min) => Error::invalid("max_threads", n, &format!("less than min_threads ({min})")),
        Refused::MinAboveMax(max) => Error::invalid("min_threads", n, &format!("greater than max_threads ({max})")),
    }
}

impl Pool {
    pub(crate) fn new(config: PoolConfig, dispatch: Box<Dispatch>) -> Result<Pool> {
        let census = Census::new(config.min, config.max).map_err(|r| {
            let n = if matches!(r, Refused::MinAboveMax(_)) { config.min } else { config.max };
            refused(r, n)
        })?;
        let shared = Arc::new(Shared {
            config,
            census: Arc::new(census),
            peak: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            unclaimed: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            metrics: Default::default(),
            state: Mutex::new(State {
                served_ports: Vec::new(),
                joins: Vec::new(),
                last_spawn: None,
                next_worker: 1,
                shutdown: false,
            }),
            gate: Condvar::new(),
            dispatch,
        });
        let weak = Arc::downgrade(&shared);
        let name = format!("{}-gate", shared.config.name);
        let gate = thread::Builder::new().name(name).spawn(move || gate(weak)).map_err(Error::Io)?;
        shared.state.lock().joins.push(gate);
        Ok(Pool { shared, stopped: AtomicBool::new(false) })
    }

    /// Starts serving `port` with one worker (a port is never left without one).
    pub(crate) fn serve(&self, port: Port) -> Result<()> {
        let served = Arc::new(ServedPort {
            port,
            threads: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            exited: Condvar::new(),
            exited_lock: Mutex::new(()),
        });
        let mut st = self.shared.state.lock();
        if st.shutdown {
            return Err(Error::Unavailable);
        }
        if !self.shared.census.try_grow(false) {
            return Err(Error::invalid(
                "max_threads",
                self.shared.census.max(),
                "every thread the pool may have is in use; a new port needs one of its own",
            ));
        }
        st.served_ports.push(served.clone());
        // Work queued while every worker of the port is busy: below the
        // minimum a thread starts at once (S14). The census is checked
        // first, so above the minimum this costs two loads.
        let (census, shared, weak_served) =
            (self.shared.census.clone(), Arc::downgrade(&self.shared), Arc::downgrade(&served));
        served.port.set_starving(Box::new(move || {
            if census.threads() < census.min() {
                if let (Some(shared), Some(served)) = (shared.upgrade(), weak_served.upgrade()) {
                    on_starving(&shared, &served);
                }
            }
        }));
        self.shared.metrics.grew(Growth::NewPort);
        let r = spawn_counted(&self.shared, &mut st, &served);
        if r.is_err() {
            st.served_ports.retain(|s| !Arc::ptr_eq(s, &served));
        }
        r
    }

    /// Stops serving `port` after it was closed: waits for its workers to
    /// run what is left on it and exit (S11), unless called from one of them.
    pub(crate) fn forget(&self, port: &Port) {
        let served = {
            let mut st = self.shared.state.lock();
            let Some(i) = st.served_ports.iter().position(|s| s.port.same(port)) else { return };
            st.served_ports.remove(i)
        };
        if SERVING.with(|s| std::ptr::eq(s.get(), Arc::as_ptr(&served))) {
            // A worker of this very port cannot wait for itself; its
            // siblings, and it after its callback returns, drain the port.
            return;
        }
        let left = served.wait_for_exit(&self.shared, Instant::now() + GIVE_UP);
        if !left.is_empty() {
            // Left running: a shutdown does not join them either.
            self.shared.state.lock().joins.retain(|j| !left.contains(&j.thread().id()));
        }
    }

    pub(crate) fn min(&self) -> usize {
        self.shared.census.min()
    }

    pub(crate) fn max(&self) -> usize {
        self.shared.census.max()
    }

    /// S12, S14: a raised minimum starts the threads that work waiting on a
    /// port needs at once.
    pub(crate) fn set_min(&self, n: usize) -> Result<()> {
        self.shared.census.set_min(n).map_err(|r| refused(r, n))?;
        let mut st = self.shared.state.lock();
        if st.shutdown {
            return Ok(());
        }
        let served_ports = st.served_ports.clone();
        for served in &served_ports {
            while served.port.has_backlog() && self.shared.census.try_grow(true) {
                self.shared.metrics.grew(Growth::MinimumRaised);
                if spawn_counted(&self.shared, &mut st, served).is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// S12: from the call on, at most `n` threads run callbacks; workers
    /// above it leave as they finish, idle ones at once.
    pub(crate) fn set_max(&self, n: usize) -> Result<()> {
        let lowered = n < self.shared.census.max();
        self.shared.census.set_max(n).map_err(|r| refused(r, n))?;
        if lowered {
            for s in &self.shared.state.lock().served_ports {
                s.port.interrupt();
            }
        }
        Ok(())
    }

    /// `max - busy`, never negative (S16).
    pub(crate) fn available(&self) -> usize {
        self.max().saturating_sub(self.busy())
    }

    fn busy(&self) -> usize {
        self.shared.state.lock().served_ports.iter().map(|s| s.busy()).sum()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let s = &self.shared;
        let (busy, live) = {
            let st = s.state.lock();
            (st.served_ports.iter().map(|p| p.busy()).sum(), st.served_ports.iter().map(|p| p.completions()).sum::<u64>())
        };
        PoolStats {
            threads: s.census.threads(),
            busy,
            peak_threads: s.peak.load(Ordering::Acquire),
            started: s.started.load(Ordering::Acquire),
            retired: s.retired.load(Ordering::Acquire),
            completions: s.completions.load(Ordering::Acquire) + live,
            panics: s.panics.load(Ordering::Acquire),
            unclaimed: s.unclaimed.load(Ordering::Acquire),
            replaced: s.replaced.load(Ordering::Acquire),
            abandoned: s.abandoned.load(Ordering::Acquire),
        }
    }

    /// Stops the pool: closes the ports (so workers drain them and exit) and
    /// joins the workers. Idempotent (S17).
    pub(crate) fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let (joins, served_ports) = {
            let mut st = self.shared.state.lock();
            st.shutdown = true;
            for s in &st.served_ports {
                let _ = s.port.close();
            }
            self.shared.gate.notify_all();
            (std::mem::take(&mut st.joins), st.served_ports.clone())
        };
        // Workers blocked in the OS on a file request past the bound are
        // left, not joined.
        let give_up = Instant::now() + GIVE_UP;
        let left: Vec<thread::ThreadId> =
            served_ports.iter().flat_map(|s| s.wait_for_exit(&self.shared, give_up)).collect();
        let me = thread::current().id();
        for j in joins {
            if j.thread().id() != me && !left.contains(&j.thread().id()) {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a worker for `served`; the census already counts it.
fn spawn_counted(shared: &Arc<Shared>, st: &mut State, served: &Arc<ServedPort>) -> Result<()> {
    let n = st.next_worker;
    st.next_worker += 1;
    let name = format!("{}-{n}", shared.config.name);
    let mut b = thread::Builder::new().name(name);
    if let Some(size) = shared.config.stack_size {
        b = b.stack_size(size);
    }
    let weak = Arc::downgrade(shared);
    let served2 = served.clone();
    served.threads.fetch_add(1, Ordering::AcqRel);
    match b.spawn(move || worker(weak, served2)) {
        Ok(j) => {
            st.joins.retain(|j| !j.is_finished());
            st.joins.push(j);
            st.last_spawn = Some(Instant::now());
            shared.started.fetch_add(1, Ordering::Relaxed);
            shared.peak.fetch_max(shared.census.threads(), Ordering::AcqRel);
            Ok(())
        }
        Err(e) => {
            shared.census.exit();
            served.threads.fetch_sub(1, Ordering::AcqRel);
            Err(Error::Io(e))
        }
    }
}

/// Work waits on the port and no thread waits for it: a worker took a
/// packet and left more, or work was queued while every worker was busy.
/// Below the minimum a thread starts at once (S14); above it the gate
/// thread decides at its next interval, so this costs one atomic load then.
fn on_starving(shared: &Arc<Shared>, served: &Arc<ServedPort>) {
    if shared.census.threads() >= shared.census.min() {
        return;
    }
    let mut st = shared.state.lock();
    if st.shutdown || !served.starving() {
        return;
    }
    if shared.census.try_grow(true) {
        // A failed spawn is survived while other workers live.
        shared.metrics.grew(Growth::BelowMinimum);
        let _ = spawn_counted(shared, &mut st, served);
    }
}

/// How often the gate thread lets the ports do their upkeep.
const WATCHDOG: Duration = Duration::from_millis(10);

/// The gate thread, alive as long as the pool (S14). Every few milliseconds
/// it lets each port do its upkeep, with the pool's lock let go (the upkeep
/// polls the OS); every gate interval, for each port with
/// work waiting and no thread waiting for it, it frees the concurrency slots
/// of workers stuck in long callbacks and starts one thread.
fn gate(weak: Weak<Shared>) {
    let mut last_round = Instant::now();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let interval = shared.config.gate_interval;
        let mut st = shared.state.lock();
        if !st.shutdown {
            shared.gate.wait_for(&mut st, interval.min(WATCHDOG));
        }
        if st.shutdown {
            return;
        }
        // The upkeep polls the OS and performs the I/O it finds ready: done
        // with the pool's lock let go, so that growth, the limits and a
        // port's close never wait behind it.
        let served_ports = st.served_ports.clone();
        drop(st);
        #[cfg(test)]
        faults::before_maintain(&shared.config.name);
        for s in &served_ports {
            s.port.maintain();
        }
        drop(served_ports);
        let mut st = shared.state.lock();
        if st.shutdown {
            return;
        }
        // Completions the backend queued by itself (the kernel's, on
        // Windows) while every worker was busy: below the minimum they get
        // a thread within a tick.
        if shared.census.threads() < shared.census.min() {
            for s in st.served_ports.clone() {
                if s.starving() && shared.census.try_grow(true) {
                    shared.metrics.grew(Growth::BelowMinimum);
                    let _ = spawn_counted(&shared, &mut st, &s);
                }
            }
        }
        if last_round.elapsed() < interval {
            continue;
        }
        last_round = Instant::now();
        let starving: Vec<Arc<ServedPort>> = st.served_ports.iter().filter(|s| s.starving()).cloned().collect();
        for s in &starving {
            s.release_stuck();
        }
        let due = st.last_spawn.map_or(true, |t| t.elapsed() >= interval);
        if let Some(served) = starving.first() {
            if due && shared.census.try_grow(false) {
                shared.metrics.grew(Growth::Starving);
                let _ = spawn_counted(&shared, &mut st, served);
            }
        }
    }
}

/// Leaves the pool if the census allows it for `why`. The port's last
/// worker never leaves: its place in the port's count is taken first,
/// atomically (`census::leave_port`), and given back if the census refuses.
///
/// A worker a close left behind (no longer counted) leaves at once.
fn try_leave(shared: &Shared, served: &ServedPort, me: &WorkerInfo, why: Leave) -> bool {
    if !me.counted.swap(false, Ordering::AcqRel) {
        return true;
    }
    if crate::census::leave_port(&served.threads) {
        if shared.census.try_leave(why, false) {
            shared.metrics.shrank(if why == Leave::Idle { Shrink::Idle } else { Shrink::MaximumLowered });
            shared.retired.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        crate::census::rejoin_port(&served.threads);
    }
    me.counted.store(true, Ordering::Release);
    false
}

fn worker(weak: Weak<Shared>, served: Arc<ServedPort>) {
    let Some(shared) = weak.upgrade() else { return };
    let _span = crate::metrics::trace::worker();
    SERVING.with(|s| s.set(Arc::as_ptr(&served)));
    let me = Arc::new(WorkerInfo {
        busy: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        seen: AtomicU64::new(0),
        concurrency_slot: Mutex::new(None),
        thread: thread::current().id(),
        in_file_call: Mutex::new(None),
        counted: AtomicBool::new(true),
    });
    WORKER.with(|w| *w.borrow_mut() = Some(me.clone()));
    served.workers.lock().push(me.clone());
    // Callbacks run under their own `catch_unwind`; this one guards the
    // worker's own code, so that a panic there (a bug, or a fault test)
    // still leaves the counts true and the port served.
    let outcome = catch_unwind(AssertUnwindSafe(|| serve(&shared, &served, &me)));
    // True when the census let the worker go already (it retired, or a
    // close left it behind).
    let retired = matches!(outcome, Ok(true));
    {
        let mut workers = served.workers.lock();
        shared.completions.fetch_add(me.seq.load(Ordering::Acquire), Ordering::AcqRel);
        workers.retain(|w| !Arc::ptr_eq(w, &me));
    }
    if !retired && me.counted.swap(false, Ordering::AcqRel) {
        shared.metrics.shrank(Shrink::Closed);
        shared.census.exit();
        served.threads.fetch_sub(1, Ordering::AcqRel);
    }
    // Work this worker's last callback queued without a wake-up (it meant
    // to take it itself) gets a thread now.
    served.port.maintain();
    // Give the concurrency slot back now, not at thread-local teardown.
    if let Some(s) = sys::Port::current_slot() {
        s.release();
    }
    SERVING.with(|s| s.set(std::ptr::null()));
    WORKER.with(|w| *w.borrow_mut() = None);
    if outcome.is_err() {
        shared.replaced.fetch_add(1, Ordering::Relaxed);
        replace(&shared, &served);
    }
    let _g = served.exited_lock.lock();
    served.exited.notify_all();
}

/// Starts a thread in place of one that failed outside a callback, unless
/// the pool is stopping or no longer serves the port.
fn replace(shared: &Arc<Shared>, served: &Arc<ServedPort>) {
    let mut st = shared.state.lock();
    if st.shutdown || served.port.is_closed() || !st.served_ports.iter().any(|s| Arc::ptr_eq(s, served)) {
        return;
    }
    if shared.census.try_grow(false) {
        shared.metrics.grew(Growth::Replacement);
        let _ = spawn_counted(shared, &mut st, served);
    }
}

/// How long a worker waits before it polls again after its port's wait
/// failed with an OS error (a failing poller must not spin a CPU).
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(10);

/// The worker's loop; true when it retired (the census already let it go).
fn serve(shared: &Arc<Shared>, served: &Arc<ServedPort>, me: &WorkerInfo) -> bool {
    let mut batch = Vec::with_capacity(1);
    let keep_alive = shared.config.keep_alive;
    // The backend's concurrency slot object is the same for all of this worker's waits
    // on its port: looked up once, after the first packet.
    let mut concurrency_slot_known = false;
    // Callbacks run since this worker last timed one (`metrics`).
    let mut callback_tick = 0u32;
    loop {
        #[cfg(test)]
        faults::hit(&shared.config.name);
        // The port's interrupt count is read before the limits, so a
        // lowered maximum either is seen here or ends the wait below.
        let interrupts = served.port.interrupts();
        if shared.census.above_max() && try_leave(shared, served, me, Leave::AboveMax) {
            return true;
        }
        match served.port.get_for_pool(&mut batch, Some(keep_alive), interrupts) {
            Ok(_) => {
                // Empty when the wait was interrupted: look at the limits again.
                if let Some(packet) = batch.pop() {
                    if !concurrency_slot_known {
                        *me.concurrency_slot.lock() = sys::Port::current_slot();
                        concurrency_slot_known = true;
                    }
                    if served.starving() {
                        on_starving(shared, served);
                    }
                    #[cfg(test)]
                    faults::before_run(&shared.config.name);
                    let began = served.port.inner.metrics.callback_begins(&packet, &mut callback_tick);
                    run(shared, me, packet);
                    served.port.inner.metrics.callback_done(began);
                }
            }
            // The whole keep-alive passed without a packet.
            Err(Error::Timeout) => {
                if try_leave(shared, served, me, Leave::Idle) {
                    return true;
                }
            }
            // The port closed and is drained.
            Err(Error::Abandoned) => return false,
            // The backend's wait failed (the poller): the port still needs
            // this thread, so it waits again, unless the port is closing.
            Err(_) => {
                if served.port.is_closed() {
                    return false;
                }
                thread::sleep(RETRY_AFTER_ERROR);
            }
        }
    }
}

fn run(shared: &Shared, me: &WorkerInfo, packet: Packet) {
    me.busy.store(true, Ordering::Release);
    match catch_unwind(AssertUnwindSafe(|| (shared.dispatch)(packet))) {
        Ok(true) => {}
        Ok(false) => {
            shared.unclaimed.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            shared.panics.fetch_add(1, Ordering::Relaxed);
        }
    }
    me.busy.store(false, Ordering::Release);
    // Only this worker writes `seq`: a plain load and store, no locked op.
    me.seq.store(me.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// Fault injection for the tests of this module: makes the next worker of
/// a pool with a given thread name panic outside any callback.
#[cfg(test)]
// Tests keep std's primitives (`crate::sync` is for the library's own).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod faults {
    use std::sync::Mutex;

    static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub(super) fn arm(name: &str) {
        ARMED.lock().unwrap().push(name.to_string());
    }

    /// A test's hold on a pool's gate thread, by the pool's thread name.
    struct Hold {
        name: String,
        reached: std::sync::mpsc::Sender<()>,
        go: std::sync::mpsc::Receiver<()>,
    }

    static HOLD: Mutex<Option<Hold>> = Mutex::new(None);

    /// Holds the gate thread of the pool named `name` at its next upkeep:
    /// it tells `reached`, then waits for `go` (at most a minute).
    pub(super) fn hold_gate(name: &str, reached: std::sync::mpsc::Sender<()>, go: std::sync::mpsc::Receiver<()>) {
        *HOLD.lock().unwrap() = Some(Hold { name: name.to_string(), reached, go });
    }

    /// The gate thread is about to let the ports do their upkeep, which
    /// polls the OS (and may perform I/O): a test holds it here, as a slow
    /// poll would.
    pub(super) fn before_maintain(name: &str) {
        let mut hold = HOLD.lock().unwrap();
        if hold.as_ref().is_some_and(|h| h.name == name) {
            let h = hold.take().unwrap();
            drop(hold);
            let _ = h.reached.send(());
            let _ = h.go.recv_timeout(std::time::Duration::from_secs(60));
        }
    }

    static HOLD_RUN: Mutex<Option<Hold>> = Mutex::new(None);

    /// Holds the next worker of the pool named `name` that took a packet,
    /// before it runs it (outside any callback and any call into the OS),
    /// as a thread the scheduler left aside would be.
    pub(super) fn hold_before_run(
        name: &str,
        reached: std::sync::mpsc::Sender<()>,
        go: std::sync::mpsc::Receiver<()>,
    ) {
        *HOLD_RUN.lock().unwrap() = Some(Hold { name: name.to_string(), reached, go });
    }

    pub(super) fn before_run(name: &str) {
        let mut hold = HOLD_RUN.lock().unwrap();
        if hold.as_ref().is_some_and(|h| h.name == name) {
            let h = hold.take().unwrap();
            drop(hold);
            let _ = h.reached.send(());
            let _ = h.go.recv_timeout(std::time::Duration::from_secs(60));
        }
    }

    /// Looks a wait for workers to exit took past its bound, by pool name.
    static LATE_LOOKS: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

    pub(super) fn looked_late(name: &str) {
        let mut looks = LATE_LOOKS.lock().unwrap();
        match looks.iter_mut().find(|(n, _)| n == name) {
            Some((_, k)) => *k += 1,
            None => looks.push((name.to_string(), 1)),
        }
    }

    pub(super) fn late_looks(name: &str) -> usize {
        LATE_LOOKS.lock().unwrap().iter().find(|(n, _)| n == name).map_or(0, |(_, k)| *k)
    }

    pub(super) fn hit(name: &str) {
        let mut armed = ARMED.lock().unwrap();
        if let Some(i) = armed.iter().position(|n| n == name) {
            armed.remove(i);
            drop(armed);
            panic!("injected fault in a worker of {name}");
        }
    }
}

#[cfg(test)]
// Tests keep std's primitives (`crate::sync` is for the library's own).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::Runtime;

    /// S6: a worker that panics outside a callback is replaced; the port
    /// goes on running posts and the counts stay true.
    #[test]
    fn s6_a_worker_that_fails_outside_a_callback_is_replaced() {
        let name = "fault-replaced";
        // Minimum 0 and a gate interval of an hour: neither growth below the
        // minimum nor the gate would start a thread for the port.
        let rt = Runtime::builder()
            .min_threads(0)
            .max_threads(1)
            .gate_interval(Duration::from_secs(3600))
            .thread_name(name)
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let post = |n: u32| {
            let tx = std::sync::Mutex::new(tx.clone());
            rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(n).unwrap()).unwrap();
        };
        let wait = Duration::from_secs(20);
        post(1);
        assert_eq!(rx.recv_timeout(wait), Ok(1));
        // The only worker fails when it comes back to the port.
        super::faults::arm(name);
        post(2);
        assert_eq!(rx.recv_timeout(wait), Ok(2));
        post(3);
        assert_eq!(rx.recv_timeout(wait), Ok(3), "the port is served after the failure");
        let s = rt.stats();
        assert_eq!(s.replaced, 1);
        assert_eq!(s.threads, 1, "the failed worker is not counted");
        assert_eq!(s.panics, 0, "no callback panicked");
        // A completion is counted once its callback has returned, which may
        // be just after the callback sent its number.
        let end = std::time::Instant::now() + wait;
        while rt.stats().completions < 3 {
            assert!(std::time::Instant::now() < end, "completions counted: {:?}", rt.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rt.stats().completions, 3);
        rt.shutdown();
    }

    /// S12, S14: the gate thread's upkeep of the ports (a poll of the OS,
    /// and the I/O it finds ready) runs without the pool's lock: while it
    /// takes long, the limits change, the counters are read and a port
    /// closes. Before, all of them waited for the upkeep.
    #[test]
    fn s14_the_gate_polls_without_the_pool_lock() {
        use crate::IoCompletionManager;

        let name = "gate-unlocked";
        let rt = Runtime::builder().min_threads(1).max_threads(4).thread_name(name).build().unwrap();
        let port = rt.create_port().unwrap();
        let (reached_tx, reached_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        super::faults::hold_gate(name, reached_tx, go_rx);
        reached_rx.recv_timeout(Duration::from_secs(20)).expect("the gate reaches its upkeep");
        let (rt2, (tx, rx)) = (rt.clone(), mpsc::channel());
        let t = std::thread::spawn(move || {
            rt2.set_max_threads(3).unwrap();
            let _ = rt2.stats();
            let _ = tx.send(rt2.close_port(&port).is_ok());
        });
        let r = rx.recv_timeout(Duration::from_secs(20));
        go_tx.send(()).unwrap();
        assert_eq!(r, Ok(true), "the pool's calls waited for the gate's upkeep");
        t.join().unwrap();
        rt.shutdown();
    }

    /// S11, S17: a shutdown waits for a worker that is slow outside any
    /// callback and outside any file request, however long past the bound
    /// (here a test seam holds it between taking a post and running it),
    /// and the post's callback has run when it returns. Before, a worker
    /// not in a callback that finished nothing over one look past 2 s was
    /// left behind, and its callback ran after the shutdown returned.
    #[test]
    fn s17_a_shutdown_waits_for_a_worker_slow_outside_a_callback() {
        use std::time::Instant;

        let name = "slow-not-stuck";
        let rt = Runtime::builder().min_threads(1).max_threads(1).thread_name(name).build().unwrap();
        let (reached_tx, reached_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        super::faults::hold_before_run(name, reached_tx, go_rx);
        let (ran_tx, ran_rx) = mpsc::channel();
        let ran_tx = std::sync::Mutex::new(ran_tx);
        rt.post_callback(0, move |_, _, _| ran_tx.lock().unwrap().send(()).unwrap()).unwrap();
        reached_rx.recv_timeout(Duration::from_secs(20)).expect("a worker takes the post");
        let (rt2, (done_tx, done_rx)) = (rt.clone(), mpsc::channel());
        let stopper = std::thread::spawn(move || {
            rt2.shutdown();
            let _ = done_tx.send(());
        });
        // The shutdown looks at the held worker past its bound, more times
        // than it needed before to leave it behind.
        let end = Instant::now() + Duration::from_secs(20);
        while super::faults::late_looks(name) < 3 {
            assert!(done_rx.try_recv().is_err(), "the shutdown returned while a worker still held a packet");
            assert!(Instant::now() < end, "the shutdown never looked past its bound");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(done_rx.try_recv().is_err(), "the shutdown returned while a worker still held a packet");
        go_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(20)), Ok(()), "the shutdown did not return");
        stopper.join().unwrap();
        assert!(ran_rx.try_recv().is_ok(), "the post's callback ran before the shutdown returned");
        let s = rt.stats();
        assert_eq!((s.abandoned, s.threads), (0, 0), "{s:?}");
    }

    /// S11, S17: a pool thread stuck in the OS on a file request (a read
    /// the file system never answers; here a test seam holds it) keeps
    /// neither a port's close nor the shutdown waiting for ever: past the
    /// bound they leave it, count it, and give its place in the census
    /// back (it counted against the maximum for as long as it was stuck).
    /// Its read completes, aborted, once the OS lets it go.
    #[cfg(target_os = "linux")]
    #[test]
    fn s17_a_shutdown_leaves_a_thread_stuck_on_a_file_request() {
        stuck_file_request(true);
        stuck_file_request(false);
    }

    /// A file read held in the OS on a port of its own; `close_port`
    /// first when `close`, then the shutdown.
    #[cfg(target_os = "linux")]
    fn stuck_file_request(close: bool) {
        use std::os::fd::AsRawFd;
        use std::sync::Arc;

        use crate::{DriverKind, Handle, IoCompletionManager};

        let path = std::env::temp_dir().join(format!("iocompletion-stuck-{}-{close}", std::process::id()));
        std::fs::write(&path, b"data").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let fd = file.as_raw_fd();
        // The file pool runs on the epoll driver (io_uring reads files in
        // the kernel, where a port's close gives up on them instead).
        let rt = Runtime::builder().min_threads(1).max_threads(2).driver(DriverKind::Epoll).build().unwrap();
        let port = rt.create_port().unwrap();
        let h = Handle::from(file);
        let (seen_tx, seen_rx) = mpsc::channel();
        let seen_tx = std::sync::Mutex::new(seen_tx);
        h.attach(
            &port,
            Arc::new(rt.clone()),
            Some(Arc::new(move |_: crate::Status, _: usize, _: crate::Request| {
                let _ = seen_tx.lock().unwrap().send(());
            })),
        )
        .unwrap();
        let (reached_tx, reached_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        crate::sys::stuck::hold(fd, reached_tx, go_rx);
        h.read(vec![0u8; 4]).at(0).start().unwrap();
        reached_rx.recv_timeout(Duration::from_secs(20)).expect("a pool thread performs the read");
        if close {
            let (rt2, port2, (tx, rx)) = (rt.clone(), port.clone(), mpsc::channel());
            let closer = std::thread::spawn(move || {
                let _ = tx.send(rt2.close_port(&port2).is_ok());
            });
            assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(true), "close_port did not return");
            closer.join().unwrap();
            assert_eq!(rt.stats().abandoned, 1, "the stuck thread is counted");
            // Left behind, it no longer counts against the maximum (the
            // port's other workers have exited).
            assert_eq!(rt.stats().threads, 0, "the stuck thread is still counted: {:?}", rt.stats());
        }
        let (rt2, (tx, rx)) = (rt.clone(), mpsc::channel());
        let stopper = std::thread::spawn(move || {
            rt2.shutdown();
            let _ = tx.send(());
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(()), "the shutdown did not return");
        stopper.join().unwrap();
        assert_eq!(rt.stats().abandoned, 1, "the stuck thread is counted once");
        // Let the thread go: its read completes aborted (the port closed).
        go_tx.send(()).unwrap();
        assert!(seen_rx.recv_timeout(Duration::from_secs(20)).is_ok(), "the read completed once");
        // Its exit does not give its census place back a second time.
        assert_eq!(rt.stats().threads, 0, "{:?}", rt.stats());
    }

    /// S17: a runtime's shutdown returns, with its workers joined, while a
    /// request of one of its handles stays in the kernel (its cancel
    /// dropped); the port counts it as leaked.
    #[cfg(target_os = "linux")]
    #[test]
    fn s17_a_shutdown_gives_up_on_a_request_the_kernel_keeps() {
        use std::net::{TcpListener, TcpStream};

        use crate::sync::Arc;
        use crate::{DriverKind, Handle, Request, Status};

        let Ok(rt) = Runtime::builder().min_threads(1).max_threads(2).driver(DriverKind::IoUring).build() else {
            return; // no io_uring here: nothing to test
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let server = l.accept().unwrap().0;
        let h = Handle::from(server);
        rt.bind_io_completion_callback(&h, Arc::new(|_: Status, _: usize, _: Request| {}), 0).unwrap();
        h.read(vec![0u8; 16]).start().unwrap();
        let port = rt.default_port().unwrap();
        let deaf = crate::sys::DeafRing::new(&port.inner.sys);
        let (rt2, (done_tx, done_rx)) = (rt.clone(), mpsc::channel());
        let stopper = std::thread::spawn(move || {
            rt2.shutdown();
            let _ = done_tx.send(());
        });
        let stopped = done_rx.recv_timeout(Duration::from_secs(20));
        drop(deaf);
        assert_eq!(stopped, Ok(()), "the shutdown did not return");
        stopper.join().unwrap();
        assert_eq!(port.leaked_requests(), 1);
        assert_eq!(rt.stats().threads, 0, "every worker was joined");
    }
}
