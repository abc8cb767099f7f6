//! The completion queue of the user-space backends (readiness on Unix): a
//! lock-free FIFO of items, the threads waiting for them, the port's
//! concurrency slots, and its close. No OS type appears here; the one thing
//! a driver adds is a [`Poller`], the readiness source that one waiting
//! thread at a time sleeps in.
//!
//! # The protocol (checked by the loom models at the end of this file)
//!
//! - **Push** (O(1), no lock): the item goes into the injector; then, only
//!   if `sleepers > 0`, [`Queue::notify`] runs. A thread that is not asleep
//!   comes back to the queue by itself, so a push while every thread is busy
//!   touches nothing else. `sleepers` is raised by a thread *before* it looks
//!   at the queue a last time and sleeps, and a push reads it *after*
//!   inserting: with both sides sequentially consistent, at least one of
//!   them sees the other (the Dekker pattern), so no item is left behind
//!   by a sleeping thread.
//! - **Who is woken**: `searching` counts threads woken for work and not yet
//!   back at the queue. `notify` wakes nobody while one is on its way or
//!   every concurrency slot is taken; otherwise it pops the most recently
//!   parked thread (LIFO), or, when none is parked, wakes the poller out of
//!   its readiness wait. A woken thread that takes an item and sees more
//!   queued calls `notify` in turn, so a batch costs one wake-up per thread
//!   it needs, never one per item, and nothing waits behind a busy thread
//!   while another sleeps.
//! - **Slots** (S7): a thread claims one of `concurrency` slots before it
//!   takes an item and keeps it until it waits again. Giving a slot back
//!   calls `notify` when items wait (the Dekker pair `active` / `sleepers`).
//! - **The poller**: the first thread with nothing to take polls; others
//!   park. A poller that returns counts itself as on its way (`searching`)
//!   while it dispatches the events, so the completions it pushes wake no
//!   one; it then takes from the queue like any woken thread and wakes one
//!   sibling if it left more behind.
//! - **Collecting** ([`Queue::collect`]): when nobody polls (every thread
//!   is in a callback), the OS's completions are still collected, with a
//!   poll that does not wait: by the pool's gate thread every few
//!   milliseconds, and by a thread that keeps finding items every
//!   [`COLLECT_EVERY`] items it takes. It holds the poller's role
//!   meanwhile, so a thread that comes to sleep parks, and is handed the
//!   role afterwards.
//! - **Close**: `state` holds the CLOSING and CLOSED bits and the number of
//!   posts in progress. A post registers, then checks CLOSING; `close` sets
//!   CLOSING, lets the driver abort what is pending on its handles (each
//!   under that handle's own lock, so a handle's pushes all happen before
//!   its abort or not at all), then sets CLOSED and wakes everyone. A thread
//!   gives `Abandoned` only when CLOSED is set, no post is in progress and
//!   the queue is empty, so every packet queued before or during the close
//!   is taken first; the last post to finish after CLOSED wakes everyone
//!   again.

use std::io;
use std::time::{Duration, Instant};

use super::SlotOps;
use crate::sync::{fence, park, thread, Arc, AtomicBool, AtomicUsize, Injector, Mutex, Ordering, Weak};

/// The readiness source waiting threads share (epoll or kqueue through mio).
pub(crate) trait Poller<T>: Send + Sync + Sized {
    /// Blocks until readiness events arrive, [`Poller::wake`] is called, or
    /// the deadline passes; keeps the events for [`Poller::dispatch`].
    fn poll(&self, deadline: Option<Instant>) -> io::Result<()>;

    /// Performs the requests the last poll made ready, pushing their
    /// completions to `queue`, and forgets those events. Called by the
    /// thread that polled, with nobody polling meanwhile.
    fn dispatch(&self, queue: &Queue<T, Self>);

    /// Takes what the OS has ready now, without waiting, for
    /// [`Poller::dispatch`] (a thread that does not sleep collects the
    /// OS's completions this way; see [`Queue::collect`]).
    fn poll_now(&self) -> io::Result<()> {
        self.poll(Some(Instant::now()))
    }

    /// Makes a thread blocked in [`Poller::poll`] return.
    fn wake(&self);

    /// A thread comes (back) to the queue: work its callbacks left for
    /// the poller to start is handed over now if a thread is blocked in
    /// [`Poller::poll`] (a completion driver's submissions), and what the
    /// thread's own source of completions holds (a worker's ring) is
    /// pushed to `queue`.
    fn flush(&self, queue: &Queue<T, Self>) {
        let _ = queue;
    }

    /// A thread found nothing to take and is about to sleep: completions
    /// of its own source (a worker's ring) from now on reach the poller,
    /// and those there are now are pushed to `queue`.
    fn before_sleep(&self, queue: &Queue<T, Self>) {
        let _ = queue;
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The queue the calling pool worker comes back to after its callback,
    /// and whether it already deferred a wake-up for it.
    static RETURNS_TO: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
    /// Items the calling thread took without polling since it last
    /// collected the OS's completions (see [`COLLECT_EVERY`]).
    static TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A thread that keeps finding items in the queue collects the OS's
/// completions itself (a non-blocking poll) every this many items it took,
/// when no other thread polls: callbacks that keep the queue full never
/// keep I/O that is done from being delivered (S8). Cheap: one lock of the
/// idle list, and a poll that does not wait.
// Unused in the loom build, which leaves the pool and the port out.
#[cfg_attr(loom, allow(dead_code))]
const COLLECT_EVERY: usize = 32;

const CLOSING: usize = 1;
const CLOSED: usize = 2;
const POST: usize = 4;

/// Why a wait ended without items.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The timeout passed.
    Timeout,
    /// [`Queue::interrupt`] was called after the caller read the count.
    Interrupted,
    /// The queue is closed and drained: nothing will ever come.
    Abandoned,
    /// The poller failed.
    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    Io(io::Error),
}

struct Waiter {
    thread: thread::Thread,
    notified: AtomicBool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// No thread polls.
    Free,
    /// A thread sleeps in the poller; `woken` once `notify` woke it.
    Polling { woken: bool },
    /// The poller came back and dispatches what it got.
    Dispatching,
}

struct Idle {
    /// Parked threads, most recently parked last (woken LIFO).
    parked: Vec<Arc<Waiter>>,
    role: Role,
}

/// A thread's claim on one concurrency slot of a queue (S7), kept between
/// its waits so that a thread coming back to the same port does not give
/// the slot up and claim it again.
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotState>);

struct SlotState {
    owner: Weak<dyn SlotOwner>,
    counted: AtomicBool,
}

trait SlotOwner: Send + Sync {
    fn give_back(&self);
}

impl super::SlotOps for Slot {
    fn release(&self) {
        if self.0.counted.swap(false, Ordering::AcqRel) {
            if let Some(q) = self.0.owner.upgrade() {
                q.give_back();
            }
        }
    }
}

impl Slot {
    fn is_of<T, P>(&self, q: &Queue<T, P>) -> bool {
        std::ptr::addr_eq(self.0.owner.as_ptr(), q as *const Queue<T, P>)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("counted", &self.0.counted.load(Ordering::Relaxed)).finish()
    }
}

/// A post in progress ([`Queue::begin_post`]); ends when dropped.
pub(crate) struct PostGuard<'a, T: Send + 'static, P: Poller<T> + 'static> {
    queue: &'a Queue<T, P>,
}

impl<T: Send + 'static, P: Poller<T> + 'static> PostGuard<'_, T, P> {
    /// Queues the item and ends the post.
    pub(crate) fn push(self, item: T) {
        self.queue.push(item);
    }
}

impl<T: Send + 'static, P: Poller<T> + 'static> Drop for PostGuard<'_, T, P> {
    fn drop(&mut self) {
        let s = self.queue.state.fetch_sub(POST, Ordering::SeqCst) - POST;
        if s == CLOSING | CLOSED {
            // The last post in progress after the close: waiters that saw
            // it in progress sleep until told.
            self.queue.wake_all();
        }
    }
}

/// The queue. Always in an `Arc` (slots refer back to it).
pub(crate) struct Queue<T, P> {
    items: Injector<T>,
    concurrency: usize,
    /// Slots claimed.
    active: AtomicUsize,
    /// Threads registered to be woken: parked, or polling.
    sleepers: AtomicUsize,
    /// Threads woken for work (or back from the poller) not yet at the queue.
    searching: AtomicUsize,
    /// CLOSING | CLOSED | posts in progress * POST.
    state: AtomicUsize,
    /// Bumped by [`Queue::interrupt`]; interruptible waits end when it moves.
    epoch: AtomicUsize,
    idle: Mutex<Idle>,
    poller: Option<P>,
    me: Weak<Queue<T, P>>,
}

impl<T: Send + 'static, P: Poller<T> + 'static> Queue<T, P> {
    pub(crate) fn new(concurrency: usize, poller: Option<P>) -> Arc<Queue<T, P>> {
        Arc::new_cyclic(|me| Queue {
            items: Injector::new(),
            concurrency: concurrency.max(1),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            searching: AtomicUsize::new(0),
            state: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            idle: Mutex::new(Idle { parked: Vec::new(), role: Role::Free }),
            poller,
            me: me.clone(),
        })
    }

    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub(crate) fn poller(&self) -> Option<&P> {
        self.poller.as_ref()
    }

    /// Threads registered to be woken (parked or polling).
    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    pub(crate) fn has_items(&self) -> bool {
        !self.items.is_empty()
    }

    /// Items queued (`metrics`).
    #[cfg(not(loom))]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn is_closing(&self) -> bool {
        self.state.load(Ordering::SeqCst) & CLOSING != 0
    }

    /// Queues an item from inside the driver: a completion produced under
    /// the lock of the handle it belongs to, before that handle's close
    /// abort (see the module docs), so it needs no close check.
    pub(crate) fn push(&self, item: T) {
        self.items.push(item);
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 && !self.defer_wake() {
            self.notify();
        }
    }

    /// True when the calling thread is a pool worker of this queue and has
    /// not deferred a wake-up since it last took from it: it will take this
    /// item itself when its callback returns (as tokio's LIFO slot does), so
    /// a callback's next completion costs no wake-up. A second push wakes
    /// as usual, and [`Queue::maintain`] (every few milliseconds) wakes a
    /// thread for an item left behind by a callback that blocks.
    fn defer_wake(&self) -> bool {
        #[cfg(not(loom))]
        {
            let me = self as *const Self as usize;
            RETURNS_TO.with(|r| {
                let (q, used) = r.get();
                let defer = q == me && !used;
                if defer {
                    r.set((q, true));
                }
                defer
            })
        }
        #[cfg(loom)]
        false
    }

    /// True when the calling thread is a pool worker that comes back to
    /// this queue after the callback it runs (asked by io_uring's rings).
    #[cfg(all(target_os = "linux", not(loom)))]
    pub(crate) fn returns_here(&self) -> bool {
        let me = self as *const Self as usize;
        RETURNS_TO.with(|r| r.get().0 == me)
    }

    /// Queues an item from outside the driver (a user post): refused once
    /// the close began.
    pub(crate) fn post(&self, item: T) -> Result<(), T> {
        match self.begin_post() {
            Some(p) => {
                p.push(item);
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Registers a post in progress: `None` once the close began. While
    /// the guard lives the close cannot end (no thread is told the queue
    /// is drained), so an item it pushes, after work done without any
    /// lock, is taken before `Abandoned`.
    pub(crate) fn begin_post(&self) -> Option<PostGuard<'_, T, P>> {
        let guard = PostGuard { queue: self };
        let s = self.state.fetch_add(POST, Ordering::SeqCst);
        (s & CLOSING == 0).then_some(guard)
    }

    /// Starts the close; false when it was started before.
    pub(crate) fn begin_close(&self) -> bool {
        self.state.fetch_or(CLOSING, Ordering::SeqCst) & CLOSING == 0
    }

    /// Ends the close, once the driver aborted everything pending on its
    /// handles: from here on a thread that finds the queue empty gets
    /// `Abandoned`.
    pub(crate) fn finish_close(&self) {
        self.state.fetch_or(CLOSED, Ordering::SeqCst);
        self.wake_all();
    }

    /// Takes every item still queued, whoever holds the slots: for a
    /// queue that nobody can wait on any more (its port's last reference
    /// is gone), after its close.
    #[cfg(not(loom))]
    pub(crate) fn take_left(&self, out: &mut Vec<T>) {
        while let Some(v) = self.items.pop() {
            out.push(v);
        }
    }

    fn drained(&self) -> bool {
        let s = self.state.load(Ordering::SeqCst);
        s & CLOSED != 0 && s / POST == 0 && self.items.is_empty()
    }

    /// How many interrupts there were; a wait given this value ends at the
    /// next one.
    pub(crate) fn interrupts(&self) -> usize {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Makes every interruptible wait in progress end with `Timeout` (the
    /// pool uses it when its limits change).
    pub(crate) fn interrupt(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.wake_all();
    }

    /// Wakes one thread for queued work, if one is needed and none is on its
    /// way: the most recently parked, else the poller.
    fn notify(&self) {
        if self.searching.load(Ordering::SeqCst) > 0 || self.active.load(Ordering::SeqCst) >= self.concurrency
        {
            return;
        }
        let mut idle = self.idle.lock();
        if self.searching.load(Ordering::SeqCst) > 0 {
            return;
        }
        if let Some(w) = idle.parked.pop() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            self.searching.fetch_add(1, Ordering::SeqCst);
            w.notified.store(true, Ordering::SeqCst);
            w.thread.unpark();
        } else if idle.role == (Role::Polling { woken: false }) {
            idle.role = Role::Polling { woken: true };
            self.searching.fetch_add(1, Ordering::SeqCst);
            if let Some(p) = &self.poller {
                p.wake();
            }
        }
    }

    /// Wakes every parked thread and the poller (close, interrupt).
    fn wake_all(&self) {
        let mut idle = self.idle.lock();
        let woken = idle.parked.len();
        self.sleepers.fetch_sub(woken, Ordering::SeqCst);
        self.searching.fetch_add(woken, Ordering::SeqCst);
        for w in idle.parked.drain(..) {
            w.notified.store(true, Ordering::SeqCst);
            w.thread.unpark();
        }
        if idle.role == (Role::Polling { woken: false }) {
            idle.role = Role::Polling { woken: true };
            self.searching.fetch_add(1, Ordering::SeqCst);
            if let Some(p) = &self.poller {
                p.wake();
            }
        }
    }

    /// The pool's gate thread calls this every few milliseconds: wakes a
    /// thread for items a busy worker left behind (see `defer_wake`), and
    /// collects the OS's completions when nobody polls.
    pub(crate) fn maintain(&self) {
        if !self.items.is_empty() && self.sleepers.load(Ordering::SeqCst) > 0 {
            self.notify();
        }
        self.hand_off();
        // Every worker is in a callback: nobody waits on the OS, so its
        // completions are collected here (S14).
        self.collect();
    }

    /// Counts items the caller took without polling; every
    /// [`COLLECT_EVERY`] of them it collects the OS's completions.
    fn count_taken(&self, n: usize) {
        #[cfg(not(loom))]
        if self.poller.is_some() {
            let due = TAKEN.with(|t| {
                let v = t.get() + n;
                t.set(if v >= COLLECT_EVERY { 0 } else { v });
                v >= COLLECT_EVERY
            });
            if due {
                self.collect();
            }
        }
        #[cfg(loom)]
        let _ = n;
    }

    /// Collects the OS's completions now, without waiting, unless a thread
    /// polls already (it collects them itself): a non-blocking poll and its
    /// dispatch, under the poller's role so that nobody polls meanwhile.
    /// The pool's gate thread calls it every few milliseconds (through
    /// [`Queue::maintain`]), so I/O that completes while every worker is in
    /// a callback reaches the queue, where the pool sees it waiting and
    /// starts a thread for it (S14); a worker that keeps finding items
    /// calls it every few dozen (S8).
    pub(crate) fn collect(&self) {
        let Some(poller) = &self.poller else { return };
        {
            let mut idle = self.idle.lock();
            if idle.role != Role::Free {
                return;
            }
            idle.role = Role::Dispatching;
        }
        if poller.poll_now().is_ok() {
            poller.dispatch(self);
        }
        let parked = {
            let mut idle = self.idle.lock();
            idle.role = Role::Free;
            !idle.parked.is_empty()
        };
        // A thread that came to sleep meanwhile parked, as this one held
        // the role: one of them polls now.
        if parked {
            self.hand_off();
        }
    }

    /// Nobody polls while threads are parked (the last poller is running a
    /// long completion): wake one of them to take the poller's place.
    fn hand_off(&self) {
        if self.poller.is_none() || self.searching.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.role == Role::Free && self.searching.load(Ordering::SeqCst) == 0 {
            if let Some(w) = idle.parked.pop() {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                self.searching.fetch_add(1, Ordering::SeqCst);
                w.notified.store(true, Ordering::SeqCst);
                w.thread.unpark();
            }
        }
    }

    fn try_claim(&self) -> bool {
        let mut n = self.active.load(Ordering::SeqCst);
        while n < self.concurrency {
            match self.active.compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(m) => n = m,
            }
        }
        false
    }

    /// What a registered sleeper checks last: is there anything it could
    /// take, or a reason to stop waiting?
    fn should_wake(&self, epoch: Option<usize>) -> bool {
        (!self.items.is_empty() && self.active.load(Ordering::SeqCst) < self.concurrency)
            || self.drained()
            || epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst))
    }

    /// Takes up to `max` items into `out`, waiting until there are some, at
    /// most `timeout` (`None`: no limit). The clock is read only when the
    /// thread is about to sleep, so a take that finds items costs no clock
    /// read.
    ///
    /// `held` is the caller's slot, kept across calls: a slot held on this
    /// queue is kept while items come; one held on another queue is given
    /// back first. With `interrupts` (a value of [`Queue::interrupts`] read
    /// by the caller), an interrupt after that read ends the wait with
    /// `Timeout`.
    pub(crate) fn take(
        &self,
        held: &mut Option<Slot>,
        out: &mut Vec<T>,
        max: usize,
        timeout: Option<Duration>,
        interrupts: Option<usize>,
    ) -> Result<usize, Ended> {
        let epoch = interrupts;
        if let Some(p) = &self.poller {
            p.flush(self);
        }
        // Computed at the first look before sleeping; `None` inside: no limit.
        let mut deadline: Option<Option<Instant>> = None;
        #[cfg(not(loom))]
        {
            // Only the pool's workers (the interruptible waits) always come
            // back to the queue after a callback.
            let me = if interrupts.is_some() { self as *const Self as usize } else { 0 };
            RETURNS_TO.with(|r| r.set((me, false)));
        }
        // A slot this thread holds here passes to this call (the swap makes
        // the pool's release of a stuck thread's slot and this call agree
        // on who gives it back).
        let mut mine = match held {
            Some(s) if s.is_of(self) => s.0.counted.swap(false, Ordering::AcqRel),
            Some(s) => {
                s.release();
                *held = None;
                false
            }
            None => false,
        };
        let mut searching = false;
        loop {
            if mine || self.try_claim() {
                let before = out.len();
                while out.len() - before < max {
                    match self.items.pop() {
                        Some(v) => out.push(v),
                        None => break,
                    }
                }
                let n = out.len() - before;
                if n > 0 {
                    self.count_taken(n);
                    if searching {
                        self.searching.fetch_sub(1, Ordering::SeqCst);
                    }
                    // More left: a sibling takes them while this thread works.
                    if !self.items.is_empty() {
                        self.notify();
                    }
                    self.keep_slot(held);
                    return Ok(n);
                }
                // Nothing came: give the slot back. No wake-up: this thread
                // itself looks at the queue again before it sleeps.
                self.active.fetch_sub(1, Ordering::SeqCst);
                mine = false;
            }
            if searching {
                self.searching.fetch_sub(1, Ordering::SeqCst);
                // Items a notify skipped for this thread, which could not
                // take them (no slot): pass the turn on.
                if !self.items.is_empty() {
                    self.notify();
                }
            }
            if self.drained() {
                return Err(Ended::Abandoned);
            }
            if epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst)) {
                self.hand_off();
                return Err(Ended::Interrupted);
            }
            let deadline =
                *deadline.get_or_insert_with(|| timeout.and_then(|t| Instant::now().checked_add(t)));
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.hand_off();
                return Err(Ended::Timeout);
            }
            if let Some(p) = &self.poller {
                p.before_sleep(self);
            }
            match self.sleep(deadline, epoch) {
                Ok(s) => searching = s,
                Err(e) => {
                    self.hand_off();
                    return Err(Ended::Io(e));
                }
            }
        }
    }

    /// Sleeps once: in the poller when nobody polls, else parked. True when
    /// the thread comes back counted in `searching`.
    fn sleep(&self, deadline: Option<Instant>, epoch: Option<usize>) -> io::Result<bool> {
        let mut idle = self.idle.lock();
        if let (Some(poller), Role::Free) = (&self.poller, idle.role) {
            idle.role = Role::Polling { woken: false };
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            drop(idle);
            let r = if self.should_wake(epoch) { Ok(()) } else { poller.poll(deadline) };
            let mut idle = self.idle.lock();
            let woken = idle.role == Role::Polling { woken: true };
            idle.role = Role::Dispatching;
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !woken {
                self.searching.fetch_add(1, Ordering::SeqCst);
            }
            drop(idle);
            if r.is_ok() {
                poller.dispatch(self);
            }
            self.idle.lock().role = Role::Free;
            if r.is_err() {
                self.searching.fetch_sub(1, Ordering::SeqCst);
            }
            return r.map(|()| true);
        }
        let w = Arc::new(Waiter { thread: thread::current(), notified: AtomicBool::new(false) });
        idle.parked.push(w.clone());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        drop(idle);
        if !self.should_wake(epoch) {
            while !w.notified.load(Ordering::SeqCst) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                park(deadline);
            }
        }
        let mut idle = self.idle.lock();
        if w.notified.load(Ordering::SeqCst) {
            // Popped and counted as on its way by whoever notified it.
            return Ok(true);
        }
        idle.parked.retain(|x| !Arc::ptr_eq(x, &w));
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        Ok(false)
    }

    /// Records in `held` that the caller holds one of this queue's slots.
    fn keep_slot(&self, held: &mut Option<Slot>) {
        match held {
            Some(s) if s.is_of(self) => s.0.counted.store(true, Ordering::Release),
            _ => {
                let owner: Weak<dyn SlotOwner> = self.me.clone();
                *held = Some(Slot(Arc::new(SlotState { owner, counted: AtomicBool::new(true) })));
            }
        }
    }
}

impl<T: Send + 'static, P: Poller<T> + 'static> SlotOwner for Queue<T, P> {
    fn give_back(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        if !self.items.is_empty() && self.sleepers.load(Ordering::SeqCst) > 0 {
            self.notify();
        }
    }
}

#[cfg(all(test, loom))]
mod models {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release models`.

    use super::*;
    use loom::sync::atomic::AtomicUsize as LoomUsize;

    /// A poller with no events: it sleeps until woken, like an eventfd.
    struct Bell {
        rung: loom::sync::Mutex<bool>,
        cv: loom::sync::Condvar,
    }

    impl Bell {
        fn new() -> Bell {
            Bell { rung: loom::sync::Mutex::new(false), cv: loom::sync::Condvar::new() }
        }
    }

    impl Poller<usize> for Bell {
        fn poll(&self, _deadline: Option<Instant>) -> io::Result<()> {
            let mut rung = self.rung.lock().unwrap();
            while !*rung {
                rung = self.cv.wait(rung).unwrap();
            }
            *rung = false;
            Ok(())
        }
        fn dispatch(&self, _queue: &Queue<usize, Bell>) {}
        fn wake(&self) {
            *self.rung.lock().unwrap() = true;
            self.cv.notify_one();
        }
    }

    type Q = Queue<usize, Bell>;

    fn get(q: &Q, held: &mut Option<Slot>) -> Result<usize, Ended> {
        let mut out = Vec::new();
        q.take(held, &mut out, 1, None, None).map(|_| out[0])
    }

    /// Two posts, two waiters (one of them the poller): both items are
    /// taken, each once, whatever the interleaving; nobody sleeps forever.
    #[test]
    fn post_and_take_lose_nothing() {
        loom::model(|| {
            let q = Q::new(2, Some(Bell::new()));
            let got = Arc::new(LoomUsize::new(0));
            let mut ts = Vec::new();
            for _ in 0..2 {
                let (q, got) = (q.clone(), got.clone());
                ts.push(loom::thread::spawn(move || {
                    let mut held = None;
                    let v = get(&q, &mut held).expect("an item");
                    got.fetch_add(v, Ordering::SeqCst);
                    if let Some(s) = held {
                        s.release();
                    }
                }));
            }
            q.post(1).unwrap();
            q.post(2).unwrap();
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(got.load(Ordering::SeqCst), 3);
        });
    }

    /// A close racing a post: the post is refused, or its item is taken
    /// before the waiter hears `Abandoned`. Never both lost.
    #[test]
    fn close_racing_a_post_loses_nothing() {
        loom::model(|| {
            let q = Q::new(1, None);
            let q2 = q.clone();
            let poster = loom::thread::spawn(move || q2.post(7).is_ok());
            let q3 = q.clone();
            let closer = loom::thread::spawn(move || {
                assert!(q3.begin_close());
                q3.finish_close();
            });
            let mut held = None;
            let mut taken = 0;
            while let Ok(v) = get(&q, &mut held) {
                assert_eq!(v, 7);
                taken += 1;
            }
            let posted = poster.join().unwrap();
            closer.join().unwrap();
            assert_eq!(taken, usize::from(posted));
        });
    }

    /// A driver push (under a handle's lock, before the close finishes)
    /// racing a waiter and the close: the item is taken before `Abandoned`.
    #[test]
    fn close_after_a_driver_push_delivers_it_first() {
        loom::model(|| {
            let q = Q::new(1, Some(Bell::new()));
            let handle = Arc::new(crate::sync::Mutex::new(false)); // "aborted"
            let (q2, h2) = (q.clone(), handle.clone());
            let pusher = loom::thread::spawn(move || {
                let aborted = h2.lock();
                if !*aborted {
                    q2.push(9);
                    return true;
                }
                false
            });
            let (q3, h3) = (q.clone(), handle.clone());
            let closer = loom::thread::spawn(move || {
                assert!(q3.begin_close());
                *h3.lock() = true;
                q3.finish_close();
            });
            let mut held = None;
            let mut taken = 0;
            while get(&q, &mut held).is_ok() {
                taken += 1;
            }
            let pushed = pusher.join().unwrap();
            closer.join().unwrap();
            assert_eq!(taken, usize::from(pushed));
        });
    }

    /// Concurrency 1: while one thread holds the slot, a second takes
    /// nothing; once the slot is given back, the second gets the item.
    #[test]
    fn one_slot_is_never_held_twice() {
        loom::model(|| {
            let q = Q::new(1, None);
            let running = Arc::new(LoomUsize::new(0));
            q.post(1).unwrap();
            q.post(2).unwrap();
            let mut ts = Vec::new();
            for _ in 0..2 {
                let (q, running) = (q.clone(), running.clone());
                ts.push(loom::thread::spawn(move || {
                    let mut held = None;
                    get(&q, &mut held).unwrap();
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two threads ran at once");
                    running.fetch_sub(1, Ordering::SeqCst);
                    held.take().unwrap().release();
                }));
            }
            for t in ts {
                t.join().unwrap();
            }
        });
    }

    /// An interrupt ends an interruptible wait that began before it; a wait
    /// that began after it gets the item posted after the interrupt. Either
    /// way the wait ends, and the item is taken exactly once.
    #[test]
    fn interrupt_ends_a_wait_that_began_before_it() {
        loom::model(|| {
            let q = Q::new(2, Some(Bell::new()));
            let q2 = q.clone();
            let t = loom::thread::spawn(move || {
                let mut out = Vec::new();
                let mut held = None;
                let seen = q2.interrupts();
                q2.take(&mut held, &mut out, 1, None, Some(seen)).is_ok()
            });
            q.interrupt();
            q.post(5).unwrap();
            let took = t.join().unwrap();
            let mut left = Vec::new();
            let mut held = None;
            if !took {
                q.take(&mut held, &mut left, 1, None, None).unwrap();
            }
            assert!(!q.has_items());
        });
    }

    /// A completion driver's poller (io_uring's ring, in outline): the OS
    /// holds `done` completions until a poll takes them; a wake-up is an
    /// entry too, which a thread other than the poller can take: a port's
    /// close reaps the ring itself while it waits for the requests it
    /// cancelled (`Ring::drain`).
    struct Ring {
        /// (wake-up entries, completions) the OS holds.
        cq: loom::sync::Mutex<(usize, usize)>,
        cv: loom::sync::Condvar,
        /// Completions the last poll took, for `dispatch`.
        taken: LoomUsize,
    }

    impl Ring {
        fn new(done: usize) -> Ring {
            Ring {
                cq: loom::sync::Mutex::new((0, done)),
                cv: loom::sync::Condvar::new(),
                taken: LoomUsize::new(0),
            }
        }

        /// What a close's drain does with the entries there are: it takes
        /// them, and rings again when it took a wake-up meant for a poller.
        fn drain(&self, queue: &Queue<usize, Ring>) {
            let (wakes, done) = std::mem::take(&mut *self.cq.lock().unwrap());
            for v in 0..done {
                queue.push(100 + v);
            }
            if wakes > 0 {
                self.wake();
            }
        }
    }

    impl Poller<usize> for Ring {
        fn poll(&self, _deadline: Option<Instant>) -> io::Result<()> {
            let mut cq = self.cq.lock().unwrap();
            while *cq == (0, 0) {
                cq = self.cv.wait(cq).unwrap();
            }
            let (_, done) = std::mem::take(&mut *cq);
            self.taken.fetch_add(done, Ordering::SeqCst);
            Ok(())
        }
        fn poll_now(&self) -> io::Result<()> {
            let (_, done) = std::mem::take(&mut *self.cq.lock().unwrap());
            self.taken.fetch_add(done, Ordering::SeqCst);
            Ok(())
        }
        fn dispatch(&self, queue: &Queue<usize, Ring>) {
            for v in 0..self.taken.swap(0, Ordering::SeqCst) {
                queue.push(100 + v);
            }
        }
        fn wake(&self) {
            self.cq.lock().unwrap().0 += 1;
            self.cv.notify_all();
        }
    }

    /// A worker polls while a post rings it and the port's close takes the
    /// wake-up entry before the worker waits for it: the close rings again,
    /// so the worker takes the post and hears `Abandoned`, and never waits
    /// out its timeout (loom reports a worker blocked for ever).
    #[test]
    fn a_wake_up_taken_by_a_close_is_given_again() {
        loom::model(|| {
            let q = Queue::new(1, Some(Ring::new(0)));
            let q2 = q.clone();
            let worker = loom::thread::spawn(move || {
                let mut held = None;
                let mut got = Vec::new();
                while let Ok(v) = get_from(&q2, &mut held) {
                    got.push(v);
                }
                got
            });
            q.post(1).unwrap();
            assert!(q.begin_close());
            q.poller().unwrap().drain(&q);
            q.finish_close();
            assert_eq!(worker.join().unwrap(), [1]);
        });
    }

    /// A completion the OS holds while no thread polls (the only worker is
    /// in a callback) is collected by the pool's upkeep, racing a thread
    /// that comes to wait: it is taken once, and nobody sleeps for ever.
    #[test]
    fn maintain_collects_what_the_os_holds_while_nobody_polls() {
        loom::model(|| {
            let q = Queue::new(2, Some(Ring::new(1)));
            let q2 = q.clone();
            let gate = loom::thread::spawn(move || q2.maintain());
            let mut held = None;
            assert_eq!(get_from(&q, &mut held).unwrap(), 100);
            gate.join().unwrap();
            assert!(!q.has_items());
        });
    }

    fn get_from(q: &Queue<usize, Ring>, held: &mut Option<Slot>) -> Result<usize, Ended> {
        let mut out = Vec::new();
        q.take(held, &mut out, 1, None, None).map(|_| out[0])
    }

    /// io_uring with a ring per worker, in outline: the port's ring (as
    /// `Ring`: wake-ups and the events of its poll of the worker ring's
    /// eventfd) and one worker's own ring, whose completions the kernel
    /// counts in the eventfd only while `efd_on` (the owner sleeps, or
    /// exited). The owner takes its ring's completions into the queue when
    /// it comes back (`flush`) and before it sleeps (`before_sleep`, after
    /// turning the eventfd on); the port's poller takes them when the
    /// eventfd fired (`dispatch`); the gate takes them from a ring whose
    /// owner is busy (`hand_over`).
    struct Rings {
        port: Ring,
        /// Completions in the worker's ring.
        own: loom::sync::Mutex<usize>,
        efd_on: AtomicBool,
    }

    impl Rings {
        fn new(own: usize, efd_on: bool) -> Rings {
            Rings { port: Ring::new(0), own: loom::sync::Mutex::new(own), efd_on: AtomicBool::new(efd_on) }
        }

        /// The kernel posts a completion into the worker's ring, then
        /// signals the eventfd if the owner lets it (the poll in the port's
        /// ring completes).
        fn complete_own(&self) {
            *self.own.lock().unwrap() += 1;
            fence(Ordering::SeqCst);
            if self.efd_on.load(Ordering::SeqCst) {
                self.port.cq.lock().unwrap().1 += 1;
                self.port.cv.notify_all();
            }
        }

        /// Takes the worker ring's completions into the queue.
        fn hand_over(&self, queue: &Queue<usize, Rings>) {
            let n = std::mem::take(&mut *self.own.lock().unwrap());
            for v in 0..n {
                queue.push(200 + v);
            }
        }
    }

    impl Poller<usize> for Rings {
        fn poll(&self, deadline: Option<Instant>) -> io::Result<()> {
            self.port.poll(deadline)
        }
        fn poll_now(&self) -> io::Result<()> {
            self.port.poll_now()
        }
        fn dispatch(&self, queue: &Queue<usize, Rings>) {
            // Only eventfd events come from the port's ring here.
            self.port.taken.swap(0, Ordering::SeqCst);
            self.hand_over(queue);
        }
        fn wake(&self) {
            self.port.wake();
        }
        fn flush(&self, queue: &Queue<usize, Rings>) {
            self.efd_on.store(false, Ordering::SeqCst);
            self.hand_over(queue);
        }
        fn before_sleep(&self, queue: &Queue<usize, Rings>) {
            self.efd_on.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            self.hand_over(queue);
        }
    }

    fn get_rings(q: &Queue<usize, Rings>, held: &mut Option<Slot>) -> Result<usize, Ended> {
        let mut out = Vec::new();
        q.take(held, &mut out, 1, None, None).map(|_| out[0])
    }

    /// A completion the kernel posts into the ring of a worker that is
    /// going to sleep: it either sees the eventfd on (the poller wakes) or
    /// the owner, turning it on, takes the completion itself. The worker
    /// never sleeps for ever with it in its ring.
    #[test]
    fn a_completion_in_a_sleeping_owners_ring_wakes_it() {
        loom::model(|| {
            let q = Queue::new(1, Some(Rings::new(0, false)));
            let q2 = q.clone();
            let kernel = loom::thread::spawn(move || q2.poller().unwrap().complete_own());
            let mut held = None;
            assert_eq!(get_rings(&q, &mut held).unwrap(), 200);
            kernel.join().unwrap();
        });
    }

    /// The owner is in a long callback (its eventfd off) with a completion
    /// in its ring; another worker sleeps (it polls the port's ring). The
    /// gate hands the ring over: the sleeping worker takes the completion.
    #[test]
    fn the_gate_hands_a_busy_owners_ring_to_a_sleeping_worker() {
        loom::model(|| {
            let q = Queue::new(2, Some(Rings::new(1, false)));
            let q2 = q.clone();
            let gate = loom::thread::spawn(move || {
                q2.poller().unwrap().hand_over(&q2);
                q2.maintain();
            });
            let mut held = None;
            assert_eq!(get_rings(&q, &mut held).unwrap(), 200);
            gate.join().unwrap();
            assert!(!q.has_items());
        });
    }

    /// A worker exits: it turns its ring's eventfd on, then the kernel
    /// cancels its requests (their completions come to the ring after the
    /// thread's own last step). Another worker, asleep, takes them.
    #[test]
    fn an_exited_owners_completions_reach_a_sleeping_worker() {
        loom::model(|| {
            let q = Queue::new(2, Some(Rings::new(0, false)));
            let q2 = q.clone();
            let exiting = loom::thread::spawn(move || {
                let r = q2.poller().unwrap();
                r.efd_on.store(true, Ordering::SeqCst);
                r.complete_own();
            });
            let mut held = None;
            assert_eq!(get_rings(&q, &mut held).unwrap(), 200);
            exiting.join().unwrap();
        });
    }
}
