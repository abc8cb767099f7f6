//! The portable completion port, joined to a mio poller.
//!
//! One thread at a time among those waiting in `get_many` is the poller: it
//! sleeps in `epoll_wait`/`kevent`, performs the non-blocking calls of
//! handles that became ready, and takes the completions it produced itself,
//! with no wake-up. The others park, LIFO. A post wakes a parked thread, or
//! the poller (through mio's waker) only when no thread is parked, and only
//! once until it runs again. When the poller leaves with work, it wakes one
//! parked thread to take the poller's place, so readiness is always watched
//! while anyone waits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use super::handle::Io;
use crate::error::{Error, Result};
use crate::port::Packet;
use crate::request::{Request, Status};
use crate::sync::{thread, Arc, AtomicBool, AtomicUsize, Mutex, Ordering, Weak};

const WAKER: Token = Token(usize::MAX);
const EVENTS: usize = 256;

/// A packet, or a file request that the thread taking it performs first.
pub(super) enum Item {
    Packet(Packet),
    Work(Request, Arc<Io>),
}

struct Waiter {
    thread: thread::Thread,
    notified: AtomicBool,
}

struct State {
    queue: VecDeque<Item>,
    /// Parked threads, most recent last (woken LIFO).
    waiters: Vec<Arc<Waiter>>,
    /// Threads released to run completions (IOCP's concurrency count).
    active: usize,
    polling: bool,
    /// The poller was woken through mio's waker and has not yet come back
    /// to the queue: it is on its way to the work it was woken for.
    poll_woken: bool,
    /// Parked threads notified for queued work that have not yet come back
    /// to the queue. A thread is woken only for work no one is already on
    /// the way to take, so a wake-up is never spent twice on one packet and
    /// the thread chosen LIFO is the one that gets it.
    woken: usize,
    /// Threads spinning before they park: they will see new work unwoken.
    spinning: usize,
    closing: bool,
    closed: bool,
}

pub(super) struct Inner {
    state: Mutex<State>,
    concurrency: usize,
    poll: Mutex<(Poll, Events)>,
    pub(super) registry: Registry,
    waker: Waker,
    pub(super) sources: Mutex<Slab<Arc<Io>>>,
    /// Requests queued on handles of this port, waiting for readiness.
    pub(super) pending: AtomicUsize,
    /// `queue.len()`, readable without the lock by spinning threads.
    queued: AtomicUsize,
    /// Set once `close` starts; read without the lock by `is_closed`.
    closing: AtomicBool,
    me: Weak<Inner>,
}

/// A thread's claim on one of the port's concurrency slots. A thread holds
/// one from the moment it takes packets until it waits on a port again; the
/// pool releases it early for a thread that stays busy (as the kernel does
/// for a thread that blocks).
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotInner>);

struct SlotInner {
    port: Weak<Inner>,
    counted: AtomicBool,
}

impl Slot {
    /// Gives the slot back; harmless when already given back.
    pub(crate) fn release(&self) {
        if self.0.counted.swap(false, Ordering::AcqRel) {
            if let Some(p) = self.0.port.upgrade() {
                let mut st = p.state.lock();
                st.active -= 1;
                // Only work held back by the concurrency value needs a thread.
                if !st.queue.is_empty() {
                    p.wake_one(&mut st);
                }
            }
        }
    }
}

struct Assoc(Option<Slot>);

impl Drop for Assoc {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.release();
        }
    }
}

thread_local! {
    static ASSOC: RefCell<Assoc> = const { RefCell::new(Assoc(None)) };
    /// The port this thread serves and comes back to after each batch (a
    /// pool worker): work it queues there needs no wake-up.
    static RETURNS_TO: std::cell::Cell<*const Inner> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// How long a thread spins for new work before it parks.
const SPIN: Duration = Duration::from_micros(20);

/// The port. Cheap to share; the core holds it in an `Arc`.
pub(crate) struct Port {
    pub(super) inner: Arc<Inner>,
}

impl Port {
    pub(crate) fn new(concurrency: usize) -> io::Result<Port> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, WAKER)?;
        Ok(Port {
            inner: Arc::new_cyclic(|me| Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    waiters: Vec::new(),
                    active: 0,
                    polling: false,
                    poll_woken: false,
                    woken: 0,
                    spinning: 0,
                    closing: false,
                    closed: false,
                }),
                concurrency,
                poll: Mutex::new((poll, Events::with_capacity(EVENTS))),
                registry,
                waker,
                sources: Mutex::new(Slab::new()),
                pending: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                me: me.clone(),
            }),
        })
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    /// Threads blocked waiting for a packet: parked, or polling.
    pub(crate) fn waiting(&self) -> usize {
        let st = self.inner.state.lock();
        st.waiters.len() + usize::from(st.polling)
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.inner.state.lock().queue.is_empty() || self.inner.pending.load(Ordering::Acquire) > 0
    }

    /// Called by the pool every few milliseconds: if requests wait for
    /// readiness, nobody polls and a thread is parked, wake it to poll (the
    /// thread that left the poller may be held by a long callback).
    pub(crate) fn watchdog(&self) {
        let mut st = self.inner.state.lock();
        if !st.polling && !st.closed && self.inner.pending.load(Ordering::Acquire) > 0 {
            if let Some(w) = st.waiters.pop() {
                st.woken += 1;
                w.notify();
            }
        }
    }

    /// Marks the calling thread as one that serves this port and returns to
    /// it after every batch (a pool worker), or clears the mark.
    pub(crate) fn serve_from_this_thread(&self, serving: bool) {
        let p = if serving { Arc::as_ptr(&self.inner) } else { std::ptr::null() };
        RETURNS_TO.with(|r| r.set(p));
    }

    /// The calling thread's concurrency slot on any port, if it holds one.
    pub(crate) fn current_slot() -> Option<Slot> {
        ASSOC.with(|a| a.borrow().0.clone())
    }

    pub(crate) fn post(&self, p: Packet) -> std::result::Result<(), (Error, Packet)> {
        let mut st = self.inner.state.lock();
        if st.closing || st.closed {
            return Err((Error::invalid("port", "<closed>", "is closed"), p));
        }
        st.queue.push_back(Item::Packet(p));
        self.inner.queued_changed(&st);
        self.inner.wake_for_new_work(&mut st);
        Ok(())
    }

    pub(crate) fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        self.inner.get_many(out, max, timeout)
    }

    /// Closes the port: aborts what is pending on its handles and queued
    /// file work, then marks it closed and wakes every waiter. False when
    /// it was already closed.
    pub(crate) fn close(&self) -> bool {
        {
            let mut st = self.inner.state.lock();
            if st.closing || st.closed {
                return false;
            }
            st.closing = true;
            self.inner.closing.store(true, Ordering::Release);
        }
        let ios: Vec<Arc<Io>> = self.inner.sources.lock().drain().collect();
        let mut aborted = Vec::new();
        for io in ios {
            io.abort_for_port_close(&self.inner, &mut aborted);
        }
        let mut st = self.inner.state.lock();
        for item in st.queue.iter_mut() {
            abort_work(item);
        }
        st.queue.extend(aborted.into_iter().map(Item::Packet));
        self.inner.queued_changed(&st);
        st.closed = true;
        let n = st.waiters.len();
        for w in st.waiters.drain(..) {
            w.notify();
        }
        st.woken += n;
        if st.polling {
            let _ = self.inner.waker.wake();
        }
        true
    }
}

/// Turns a queued file request into its aborted completion.
fn abort_work(item: &mut Item) {
    if let Item::Work(..) = item {
        let Item::Work(req, _) = std::mem::replace(item, Item::Packet(placeholder())) else { unreachable!() };
        *item = Item::Packet(aborted(req));
    }
}

fn placeholder() -> Packet {
    Packet { status: Status::SUCCESS, bytes: 0, key: 0, request: None }
}

/// The aborted completion of `req` (S24).
pub(super) fn aborted(req: Request) -> Packet {
    Packet { status: Status::ABORTED, bytes: 0, key: 0, request: Some(req) }
}

impl Waiter {
    fn notify(&self) {
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Inner {
    fn queued_changed(&self, st: &State) {
        self.queued.store(st.queue.len(), Ordering::Release);
    }

    /// Work was queued by the calling thread: wake a thread for it, unless
    /// the caller serves this port and will take it after its batch.
    fn wake_for_new_work(&self, st: &mut State) {
        if !std::ptr::eq(RETURNS_TO.with(|r| r.get()), self) {
            self.wake_one(st);
        }
    }

    /// Wakes one thread for queued work: none if one is spinning (it will
    /// see the work) or if as many threads are already on their way as
    /// items are queued; else a parked one (LIFO), else the poller, once.
    fn wake_one(&self, st: &mut State) {
        if st.active >= self.concurrency || st.spinning > 0 {
            return;
        }
        if st.woken + usize::from(st.poll_woken) >= st.queue.len() {
            return;
        }
        if let Some(w) = st.waiters.pop() {
            st.woken += 1;
            w.notify();
        } else if st.polling && !st.poll_woken {
            st.poll_woken = true;
            let _ = self.waker.wake();
        }
    }

    /// Queues completions produced outside `get_many` (immediate results,
    /// cancels, closes), waking a thread for them.
    pub(super) fn push(&self, packets: impl IntoIterator<Item = Packet>) {
        let mut st = self.state.lock();
        let before = st.queue.len();
        st.queue.extend(packets.into_iter().map(Item::Packet));
        if st.queue.len() > before {
            self.queued_changed(&st);
            self.wake_for_new_work(&mut st);
        }
    }

    /// Queues a file request for the pool (S29).
    pub(super) fn push_work(&self, req: Request, io: Arc<Io>) -> std::result::Result<(), Request> {
        let mut st = self.state.lock();
        if st.closing || st.closed {
            return Err(req);
        }
        st.queue.push_back(Item::Work(req, io));
        self.queued_changed(&st);
        self.wake_for_new_work(&mut st);
        Ok(())
    }

    /// Turns the queued file requests of `io` (or the one with `id`) into
    /// aborted completions; returns how many.
    pub(super) fn abort_work_of(&self, io: &Arc<Io>, id: Option<u64>) -> usize {
        let mut st = self.state.lock();
        let mut n = 0;
        for item in st.queue.iter_mut() {
            let hit = matches!(item, Item::Work(r, w) if Arc::ptr_eq(w, io) && id.map_or(true, |id| r.header().id == id));
            if hit {
                abort_work(item);
                n += 1;
            }
        }
        if n > 0 {
            self.wake_one(&mut st);
        }
        n
    }

    fn get_many(&self, out: &mut Vec<Packet>, max: usize, timeout: Option<Duration>) -> Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut spun = false;
        // Give back the slot this thread held: on another port through that
        // port; on this one under the lock taken here anyway, with no wake-up
        // (this thread is about to look at the queue itself).
        let held = ASSOC.with(|a| a.borrow_mut().0.take());
        let mine = held.as_ref().is_some_and(|s| std::ptr::eq(s.0.port.as_ptr(), self));
        if let (Some(slot), false) = (&held, mine) {
            slot.release();
        }
        let mut st = self.state.lock();
        // This port's slot object is reused for the next claim: no allocation.
        let mut reuse = None;
        if let (Some(slot), true) = (held, mine) {
            if slot.0.counted.swap(false, Ordering::AcqRel) {
                st.active -= 1;
            }
            reuse = Some(slot);
        }
        loop {
            if !st.queue.is_empty() && st.active < self.concurrency {
                // A fair share when others wait too, so one thread does not
                // hoard a batch while its siblings sleep.
                let share = st.queue.len().div_ceil(st.waiters.len() + 1);
                let n = share.min(max);
                // Packets go straight to `out`; file work (performed below,
                // outside the lock) leaves a placeholder and a note.
                let before = out.len();
                let mut work = Vec::new();
                for item in st.queue.drain(..n) {
                    match item {
                        Item::Packet(p) => out.push(p),
                        Item::Work(req, io) => {
                            work.push((out.len(), req, io));
                            out.push(placeholder());
                        }
                    }
                }
                self.queued_changed(&st);
                st.active += 1;
                if !st.queue.is_empty() {
                    self.wake_one(&mut st);
                } else if n > 1
                    && !st.waiters.is_empty()
                    && self.pending.load(Ordering::Acquire) > 0
                    && !st.polling
                {
                    // A batch: someone else should watch readiness while this
                    // thread works. For a single packet this thread is soon
                    // back at the poller itself, and a wake-up would cost more
                    // than it saves; the watchdog covers a callback that stays.
                    // The thread woken to poll comes back to the queue
                    // first, so it counts as on its way like any other.
                    if let Some(w) = st.waiters.pop() {
                        st.woken += 1;
                        w.notify();
                    }
                }
                drop(st);
                let slot = match reuse {
                    Some(slot) => {
                        slot.0.counted.store(true, Ordering::Release);
                        slot
                    }
                    None => {
                        Slot(Arc::new(SlotInner { port: self.me.clone(), counted: AtomicBool::new(true) }))
                    }
                };
                ASSOC.with(|a| a.borrow_mut().0 = Some(slot));
                for (i, req, io) in work {
                    out[i] = io.perform_work(req);
                }
                return Ok(out.len() - before);
            }
            if st.closed && st.queue.is_empty() {
                return Err(Error::Abandoned);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            let remaining = deadline.map(|d| d - now);
            let io_unwatched = !st.polling && self.pending.load(Ordering::Acquire) > 0;
            if !spun && !st.closed && !io_unwatched && remaining.map_or(true, |r| r > SPIN) {
                // Spin briefly first: work that comes within microseconds
                // is taken with no park, no wake-up, no system call. Not
                // while requests wait for readiness and nobody polls: then
                // this thread goes straight to the poller.
                spun = true;
                st.spinning += 1;
                drop(st);
                let end = Instant::now() + SPIN;
                'spin: loop {
                    for _ in 0..32 {
                        if self.queued.load(Ordering::Acquire) > 0 {
                            break 'spin;
                        }
                        std::hint::spin_loop();
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
                st = self.state.lock();
                st.spinning -= 1;
                continue;
            }
            if !st.polling && !st.closed {
                st.polling = true;
                st.poll_woken = false;
                drop(st);
                let mut done = Vec::new();
                let r = self.poll_once(remaining, &mut done);
                st = self.state.lock();
                st.polling = false;
                st.poll_woken = false;
                st.queue.extend(done.into_iter().map(Item::Packet));
                self.queued_changed(&st);
                if let Err(e) = r {
                    return Err(Error::Io(e));
                }
                continue;
            }
            let w = Arc::new(Waiter { thread: thread::current(), notified: AtomicBool::new(false) });
            st.waiters.push(w.clone());
            drop(st);
            while !w.notified.load(Ordering::Acquire) {
                match deadline {
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break;
                        }
                        thread::park_timeout(d - now);
                    }
                    None => thread::park(),
                }
            }
            st = self.state.lock();
            if w.notified.load(Ordering::Acquire) {
                // Notified under the lock, and counted as on its way then.
                st.woken -= 1;
            } else {
                st.waiters.retain(|x| !Arc::ptr_eq(x, &w));
            }
        }
    }

    /// One round of `epoll_wait`/`kevent`: performs the ready handles'
    /// requests and appends their completions to `done`.
    fn poll_once(&self, timeout: Option<Duration>, done: &mut Vec<Packet>) -> io::Result<()> {
        let mut guard = self.poll.lock();
        let (poll, events) = &mut *guard;
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let io = self.sources.lock().get(ev.token().0).cloned();
            if let Some(io) = io {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                io.on_ready(self, readable, writable, done);
            }
        }
        Ok(())
    }

    pub(super) fn register(&self, io: &Arc<Io>, source: &mut impl mio::event::Source) -> io::Result<usize> {
        let mut sources = self.sources.lock();
        let entry = sources.vacant_entry();
        let token = entry.key();
        self.registry.register(source, Token(token), Interest::READABLE | Interest::WRITABLE)?;
        entry.insert(io.clone());
        Ok(token)
    }
}
