//! The bounded, elastic thread pool that runs completions (S12-S17).
//!
//! Every worker serves one port: it takes packets in batches with
//! `get_many`, keeps them in a small local queue that idle siblings may
//! steal from (so a callback that blocks never strands the rest of its
//! batch), and runs each packet's callback under `catch_unwind`.
//!
//! Growth: when the last worker waiting on a port takes work, the pool makes
//! sure another thread will wait. Below `min_threads` it starts one at once;
//! above, the gate thread starts at most one per gate interval, and only
//! while every worker of the port is busy and work waits. Idle workers above
//! the minimum retire after the keep-alive, unless they are the last worker
//! of their port. A request a worker started does not keep it: no backend
//! ties a request to the thread that issued it (under Wine, which does for
//! sockets, the Windows backend issues them from a thread of its own).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::port::{Packet, Port};
use crate::sync::{thread, Arc, AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, Weak};
use crate::sys;

/// How many packets a worker takes from its port in one call.
const BATCH: usize = 64;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

// The initializer is `const` already; clippy 1.96 still reports
// missing_const_for_thread_local here when checking x86_64-pc-windows-gnu.
#[allow(clippy::missing_const_for_thread_local)]
mod worker_tls {
    thread_local! {
        pub(super) static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
}
use worker_tls::WORKER_OF;

/// What the pool and the gate thread see of one worker.
struct WorkerInfo {
    /// Packets taken but not yet run; idle siblings steal from the back.
    local: Mutex<VecDeque<Packet>>,
    /// True while the worker runs completions (set per batch, not per packet).
    busy: AtomicBool,
    /// Completions this worker ran; written only by it, so counting costs
    /// no shared cache line.
    seq: AtomicU64,
    /// `seq` as the gate thread saw it at its previous tick.
    seen: AtomicU64,
    /// The port concurrency slot the worker holds, if the backend has one.
    slot: Mutex<Option<sys::Slot>>,
}

/// The workers of one port.
struct PortSlot {
    port: Port,
    threads: AtomicUsize,
    waiting: AtomicUsize,
    workers: Mutex<Vec<Arc<WorkerInfo>>>,
    /// Set when a worker may be stuck holding a batch (starvation, or the
    /// gate saw a stuck worker): only then do idle workers try to steal.
    steal_hint: AtomicBool,
    exited: Condvar,
    exited_lock: Mutex<()>,
}

impl PortSlot {
    /// Work waits: on the port, or taken into a worker's local queue.
    fn has_backlog(&self) -> bool {
        self.port.has_backlog() || self.workers.lock().iter().any(|w| !w.local.lock().is_empty())
    }

    fn steal(&self) -> Option<Packet> {
        let workers = self.workers.lock();
        workers.iter().find_map(|w| w.local.try_lock().and_then(|mut q| q.pop_back()))
    }

    /// Frees the concurrency slots of workers that finished no completion
    /// for a whole gate interval while busy: the kernel frees the slot of a
    /// thread that blocks; user space can only see that a callback has run
    /// long, so it treats that as blocked.
    fn release_stuck(&self) {
        for w in self.workers.lock().iter() {
            let seq = w.seq.load(Ordering::Acquire);
            let seen = w.seen.swap(seq, Ordering::AcqRel);
            if w.busy.load(Ordering::Acquire) && seq == seen {
                if let Some(s) = w.slot.lock().take() {
                    s.release();
                }
                if !w.local.lock().is_empty() {
                    self.steal_hint.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Completions run by the live workers.
    fn completions(&self) -> u64 {
        self.workers.lock().iter().map(|w| w.seq.load(Ordering::Acquire)).sum()
    }
}

struct State {
    threads: usize,
    slots: Vec<Arc<PortSlot>>,
    joins: Vec<thread::JoinHandle<()>>,
    last_spawn: Option<Instant>,
    next_worker: usize,
    shutdown: bool,
}

pub(crate) struct Shared {
    config: PoolConfig,
    min: AtomicUsize,
    max: AtomicUsize,
    busy: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
    retired: AtomicU64,
    completions: AtomicU64,
    panics: AtomicU64,
    unclaimed: AtomicU64,
    state: Mutex<State>,
    gate: Condvar,
    dispatch: Box<Dispatch>,
    id: usize,
}

/// The pool. Cheap to share through its `Arc`.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    stopped: AtomicBool,
}

static NEXT_POOL: AtomicUsize = AtomicUsize::new(1);

impl Pool {
    pub(crate) fn new(config: PoolConfig, dispatch: Box<Dispatch>) -> Result<Pool> {
        validate(config.min, config.max)?;
        let shared = Arc::new(Shared {
            min: AtomicUsize::new(config.min),
            max: AtomicUsize::new(config.max),
            config,
            busy: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            unclaimed: AtomicU64::new(0),
            state: Mutex::new(State {
                threads: 0,
                slots: Vec::new(),
                joins: Vec::new(),
                last_spawn: None,
                next_worker: 1,
                shutdown: false,
            }),
            gate: Condvar::new(),
            dispatch,
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
        });
        let weak = Arc::downgrade(&shared);
        let name = format!("{}-gate", shared.config.name);
        let gate = thread::Builder::new().name(name).spawn(move || gate(weak)).map_err(Error::Io)?;
        shared.state.lock().joins.push(gate);
        Ok(Pool { shared, stopped: AtomicBool::new(false) })
    }

    /// Starts serving `port` with one worker (a port is never left without one).
    pub(crate) fn serve(&self, port: Port) -> Result<()> {
        let slot = Arc::new(PortSlot {
            port,
            threads: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            steal_hint: AtomicBool::new(false),
            exited: Condvar::new(),
            exited_lock: Mutex::new(()),
        });
        let mut st = self.shared.state.lock();
        if st.shutdown {
            return Err(Error::Unavailable);
        }
        if st.threads >= self.shared.max.load(Ordering::Acquire) {
            return Err(Error::invalid(
                "max_threads",
                self.shared.max.load(Ordering::Acquire),
                "every thread the pool may have is in use; a new port needs one of its own",
            ));
        }
        st.slots.push(slot.clone());
        let r = spawn(&self.shared, &mut st, &slot);
        if r.is_err() {
            st.slots.retain(|s| !Arc::ptr_eq(s, &slot));
        }
        r
    }

    /// Stops serving `port` after it was closed: waits for its workers to
    /// drain it and exit, unless called from one of them.
    pub(crate) fn forget(&self, port: &Port) {
        let slot = {
            let mut st = self.shared.state.lock();
            let Some(i) = st.slots.iter().position(|s| s.port.same(port)) else { return };
            st.slots.remove(i)
        };
        if WORKER_OF.with(|w| w.get()) == self.shared.id {
            return;
        }
        let mut g = slot.exited_lock.lock();
        while slot.threads.load(Ordering::Acquire) > 0 {
            slot.exited.wait_for(&mut g, Duration::from_millis(50));
        }
    }

    pub(crate) fn min(&self) -> usize {
        self.shared.min.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> usize {
        self.shared.max.load(Ordering::Acquire)
    }

    pub(crate) fn set_min(&self, n: usize) -> Result<()> {
        let _st = self.shared.state.lock();
        let max = self.shared.max.load(Ordering::Acquire);
        if n > max {
            return Err(Error::invalid("min_threads", n, &format!("greater than max_threads ({max})")));
        }
        self.shared.min.store(n, Ordering::Release);
        Ok(())
    }

    pub(crate) fn set_max(&self, n: usize) -> Result<()> {
        let _st = self.shared.state.lock();
        let min = self.shared.min.load(Ordering::Acquire);
        if n == 0 {
            return Err(Error::invalid("max_threads", n, "must be at least 1"));
        }
        if n < min {
            return Err(Error::invalid("max_threads", n, &format!("less than min_threads ({min})")));
        }
        self.shared.max.store(n, Ordering::Release);
        Ok(())
    }

    /// `max - busy`, never negative (S16).
    pub(crate) fn available(&self) -> usize {
        self.max().saturating_sub(self.shared.busy.load(Ordering::Acquire))
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let s = &self.shared;
        let (threads, live) = {
            let st = s.state.lock();
            (st.threads, st.slots.iter().map(|p| p.completions()).sum::<u64>())
        };
        PoolStats {
            threads,
            busy: s.busy.load(Ordering::Acquire),
            peak_threads: s.peak.load(Ordering::Acquire),
            started: s.started.load(Ordering::Acquire),
            retired: s.retired.load(Ordering::Acquire),
            completions: s.completions.load(Ordering::Acquire) + live,
            panics: s.panics.load(Ordering::Acquire),
            unclaimed: s.unclaimed.load(Ordering::Acquire),
        }
    }

    /// Stops the pool: the ports must already be closed (so workers drain
    /// them and exit); joins the workers. Idempotent (S17).
    pub(crate) fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let joins = {
            let mut st = self.shared.state.lock();
            st.shutdown = true;
            for s in &st.slots {
                let _ = s.port.close();
            }
            self.shared.gate.notify_all();
            std::mem::take(&mut st.joins)
        };
        let me = thread::current().id();
        for j in joins {
            if j.thread().id() != me {
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

fn validate(min: usize, max: usize) -> Result<()> {
    if max == 0 {
        return Err(Error::invalid("max_threads", max, "must be at least 1"));
    }
    if min > max {
        return Err(Error::invalid("min_threads", min, &format!("greater than max_threads ({max})")));
    }
    Ok(())
}

fn spawn(shared: &Arc<Shared>, st: &mut State, slot: &Arc<PortSlot>) -> Result<()> {
    let n = st.next_worker;
    st.next_worker += 1;
    let name = format!("{}-{n}", shared.config.name);
    let mut b = thread::Builder::new().name(name);
    if let Some(size) = shared.config.stack_size {
        b = b.stack_size(size);
    }
    let weak = Arc::downgrade(shared);
    let slot2 = slot.clone();
    // Counted before the thread runs, so growth decisions see it at once.
    st.threads += 1;
    slot.threads.fetch_add(1, Ordering::AcqRel);
    match b.spawn(move || worker(weak, slot2)) {
        Ok(j) => {
            st.joins.retain(|j| !j.is_finished());
            st.joins.push(j);
            st.last_spawn = Some(Instant::now());
            shared.started.fetch_add(1, Ordering::Relaxed);
            shared.peak.fetch_max(st.threads, Ordering::AcqRel);
            Ok(())
        }
        Err(e) => {
            st.threads -= 1;
            slot.threads.fetch_sub(1, Ordering::AcqRel);
            Err(Error::Io(e))
        }
    }
}

/// The last waiter of `slot` took work: make sure someone will wait.
fn on_starving(shared: &Arc<Shared>, slot: &Arc<PortSlot>) {
    slot.steal_hint.store(true, Ordering::Release);
    let mut st = shared.state.lock();
    if st.shutdown || slot.waiting.load(Ordering::Acquire) > 0 {
        return;
    }
    if st.threads < shared.min.load(Ordering::Acquire) && st.threads < shared.max.load(Ordering::Acquire) {
        // Below the minimum: no throttle (S14). A failed spawn is survived
        // while other workers live.
        let _ = spawn(shared, &mut st, slot);
    } else {
        // Above it the gate thread decides, at most one per interval.
        shared.gate.notify_one();
    }
}

/// How often the gate thread checks that readiness is watched.
const WATCHDOG: Duration = Duration::from_millis(10);

/// The gate thread, alive as long as the pool (S14). Every few milliseconds
/// it makes sure each port's readiness is watched; every gate interval, for
/// each port with work waiting, it frees the concurrency slots of workers
/// stuck in long callbacks and starts one thread when none waits on the port.
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
        for s in &st.slots {
            s.port.watchdog();
        }
        if last_round.elapsed() < interval {
            continue;
        }
        last_round = Instant::now();
        let backlogged: Vec<Arc<PortSlot>> = st.slots.iter().filter(|s| s.has_backlog()).cloned().collect();
        for s in &backlogged {
            s.release_stuck();
        }
        let due = st.last_spawn.map_or(true, |t| t.elapsed() >= interval);
        let starving = backlogged.into_iter().find(|s| s.waiting.load(Ordering::Acquire) == 0);
        if let Some(slot) = starving {
            if due && st.threads < shared.max.load(Ordering::Acquire) {
                let _ = spawn(&shared, &mut st, &slot);
            }
        }
    }
}

/// Leaves the pool when the worker may retire (S15): idle, above the
/// minimum, not the last worker of its port.
fn try_retire(shared: &Shared, slot: &PortSlot) -> bool {
    let mut st = shared.state.lock();
    let may = st.threads > shared.min.load(Ordering::Acquire) && slot.threads.load(Ordering::Acquire) > 1;
    if may {
        st.threads -= 1;
        slot.threads.fetch_sub(1, Ordering::AcqRel);
        shared.retired.fetch_add(1, Ordering::Relaxed);
    }
    may
}

fn worker(weak: Weak<Shared>, slot: Arc<PortSlot>) {
    let Some(shared) = weak.upgrade() else { return };
    WORKER_OF.with(|w| w.set(shared.id));
    let me = Arc::new(WorkerInfo {
        local: Mutex::new(VecDeque::with_capacity(BATCH)),
        busy: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        seen: AtomicU64::new(0),
        slot: Mutex::new(None),
    });
    slot.workers.lock().push(me.clone());
    slot.port.serve_from_this_thread(true);
    let local = &me.local;
    let mut batch = Vec::with_capacity(BATCH);
    let keep_alive = shared.config.keep_alive;
    let mut retired = false;

    let mut busy = false;
    loop {
        let mut next = local.lock().pop_front();
        if next.is_none() && slot.steal_hint.load(Ordering::Acquire) {
            next = slot.steal();
            if next.is_none() {
                slot.steal_hint.store(false, Ordering::Release);
            }
            // Stolen work means a sibling is stuck with more: grow if no one waits.
            if next.is_some() && slot.waiting.load(Ordering::Acquire) == 0 {
                on_starving(&shared, &slot);
            }
        }
        if let Some(packet) = next {
            if !busy {
                busy = true;
                set_busy(&shared, &me, true);
            }
            run(&shared, &me, packet);
            continue;
        }
        if busy {
            busy = false;
            set_busy(&shared, &me, false);
        }
        slot.waiting.fetch_add(1, Ordering::AcqRel);
        let r = slot.port.get_many(&mut batch, BATCH, Some(keep_alive));
        let still_waiting = slot.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        match r {
            Ok(_) => {
                *me.slot.lock() = sys::Port::current_slot();
                local.lock().extend(batch.drain(..));
                if still_waiting == 0 {
                    on_starving(&shared, &slot);
                }
            }
            Err(Error::Timeout) => {
                if try_retire(&shared, &slot) {
                    retired = true;
                    break;
                }
            }
            Err(_) => break, // Abandoned: the port closed and is drained.
        }
    }

    // Run anything still queued locally before leaving.
    let rest: Vec<Packet> = local.lock().drain(..).collect();
    if !rest.is_empty() {
        set_busy(&shared, &me, true);
        for p in rest {
            run(&shared, &me, p);
        }
        set_busy(&shared, &me, false);
    }
    {
        let mut workers = slot.workers.lock();
        shared.completions.fetch_add(me.seq.load(Ordering::Acquire), Ordering::AcqRel);
        workers.retain(|w| !Arc::ptr_eq(w, &me));
    }
    if !retired {
        let mut st = shared.state.lock();
        st.threads -= 1;
        slot.threads.fetch_sub(1, Ordering::AcqRel);
    }
    slot.port.serve_from_this_thread(false);
    let _g = slot.exited_lock.lock();
    slot.exited.notify_all();
}

/// Marks the worker running completions or not: per batch, not per packet.
fn set_busy(shared: &Shared, me: &WorkerInfo, busy: bool) {
    me.busy.store(busy, Ordering::Release);
    if busy {
        shared.busy.fetch_add(1, Ordering::AcqRel);
    } else {
        shared.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run(shared: &Shared, me: &WorkerInfo, packet: Packet) {
    match catch_unwind(AssertUnwindSafe(|| (shared.dispatch)(packet))) {
        Ok(true) => {}
        Ok(false) => {
            shared.unclaimed.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            shared.panics.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Only this worker writes `seq`: a plain load and store, no locked op.
    me.seq.store(me.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
}
