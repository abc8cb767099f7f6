//! Tasks on the pool: [`Runtime::spawn`](crate::Runtime::spawn) and
//! [`Runtime::block_on`](crate::Runtime::block_on).
//!
//! A task is a future the runtime owns. Each wake posts it to the
//! runtime's default port as a packet whose target is the task, so the
//! pool runs it like any completion, under the same thread limits; a task
//! waiting on I/O or a timer holds no thread, only its future. The
//! scheduling state (the `state` module) makes one thread at a time poll it and
//! turns a wake during a poll into one more run.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::buf::Buffer;
use crate::port::Port;
use crate::request::{Op, Request};
use crate::sink::CompletionSink;
use crate::status::Status;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, OnceLock, Ordering, Weak};

pub(crate) mod state;

use state::TaskState;

/// Why a task gave no output: it was aborted ([`JoinHandle::abort`]),
/// dropped at shutdown, or it panicked.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panic(Mutex<Box<dyn Any + Send + 'static>>),
}

impl JoinError {
    /// True when the task was aborted or dropped at shutdown before it
    /// finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// True when the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic's payload, as `std::panic::resume_unwind` takes it; an
    /// `Err` with the error itself when the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(p) => Ok(p.into_inner()),
            Repr::Cancelled => Err(self),
        }
    }

    /// The panic's payload. A cancelled task has none: this gives a
    /// payload that says so.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic().unwrap_or_else(|_| Box::new("the task was cancelled, it did not panic"))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(_) => f.write_str("JoinError::Panic(..)"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("task was cancelled"),
            Repr::Panic(p) => {
                let p = p.lock();
                let msg = p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()));
                match msg {
                    Some(m) => write!(f, "task panicked: {m}"),
                    None => f.write_str("task panicked"),
                }
            }
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
}

/// The tasks of one runtime: the live ones (dropped at shutdown), the
/// panics counted, and the runtime itself for [`crate::Runtime::current`].
pub(crate) struct Scheduler {
    /// The live tasks, in shards so that spawns and finishes on several
    /// threads seldom meet on one lock.
    shards: Box<[Mutex<Live>]>,
    next_shard: AtomicUsize,
    pub(crate) panics: AtomicU64,
    closed: AtomicBool,
    pub(crate) runtime: OnceLock<Weak<crate::runtime::RuntimeState>>,
}

/// Shards of the live-task registry.
const SHARDS: usize = 32;

#[derive(Default)]
struct Live {
    tasks: slab::Slab<Arc<dyn Cancel>>,
    closed: bool,
}

impl Scheduler {
    pub(crate) fn new() -> Scheduler {
        Scheduler {
            shards: (0..SHARDS).map(|_| Mutex::new(Live::default())).collect(),
            next_shard: AtomicUsize::new(0),
            panics: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            runtime: OnceLock::new(),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Registers a new task; false once closed. Its key is its index in
    /// its shard times `SHARDS`, plus the shard.
    fn register(&self, task: Arc<dyn Cancel>, key: &AtomicUsize) -> bool {
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
        let mut live = self.shards[shard].lock();
        if live.closed {
            return false;
        }
        key.store(live.tasks.insert(task) * SHARDS + shard, Ordering::Relaxed);
        true
    }

    fn unregister(&self, key: usize) {
        let gone = self.shards[key % SHARDS].lock().tasks.try_remove(key / SHARDS);
        // The last reference may be this one: dropped with no lock held.
        drop(gone);
    }

    /// Shutdown: refuses new tasks and drops the future of every task not
    /// running now (a running one drops its own when its poll returns).
    /// Their join handles resolve as cancelled.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for shard in self.shards.iter() {
            let tasks = {
                let mut live = shard.lock();
                live.closed = true;
                std::mem::take(&mut live.tasks)
            };
            for (_, t) in tasks {
                t.cancel_if_idle();
            }
        }
    }

    /// The number of tasks alive (spawned and not finished).
    pub(crate) fn live(&self) -> usize {
        self.shards.iter().map(|s| s.lock().tasks.len()).sum()
    }
}

// The initializers are `const` already; clippy 1.96 still reports
// missing_const_for_thread_local on them when checking x86_64-pc-windows-gnu.
thread_local! {
    // The scheduler of the task this thread polls now, or of the
    // `block_on` it runs: what [`crate::Runtime::current`] gives.
    #[allow(clippy::missing_const_for_thread_local)]
    static CURRENT: Cell<*const Scheduler> = const { Cell::new(std::ptr::null()) };

    // The scheduler whose pool thread this is, while it hands a
    // completion to its target (an I/O future's slot, a callback) and no
    // task runs: a task of it woken there runs at once, here, instead of
    // being posted (once per completion).
    #[allow(clippy::missing_const_for_thread_local)]
    static DELIVERING: Cell<*const Scheduler> = const { Cell::new(std::ptr::null()) };
}

/// Marks this pool thread as delivering a completion for `sched` (see
/// `DELIVERING`) for as long as it lives.
pub(crate) struct Delivering<'a> {
    prev: *const Scheduler,
    _sched: PhantomData<&'a Scheduler>,
}

impl<'a> Delivering<'a> {
    pub(crate) fn new(sched: &'a Scheduler) -> Delivering<'a> {
        let prev = DELIVERING.with(|c| c.replace(sched as *const Scheduler));
        Delivering { prev, _sched: PhantomData }
    }
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        DELIVERING.with(|c| c.set(self.prev));
    }
}

/// True (once) when a task of `sched` woken now may run on this thread at
/// once: a completion of its runtime is being delivered here and no task
/// runs. Clears the mark, so a second wake in the same delivery posts.
fn take_inline(sched: &Scheduler) -> bool {
    DELIVERING.with(|d| {
        if std::ptr::eq(d.get(), sched) && CURRENT.with(|c| c.get().is_null()) {
            d.set(std::ptr::null());
            true
        } else {
            false
        }
    })
}

/// Sets `CURRENT` for as long as it lives, and restores the one before.
pub(crate) struct Enter<'a> {
    prev: *const Scheduler,
    // Borrows the scheduler the pointer points to, for as long as it is set.
    _sched: PhantomData<&'a Scheduler>,
}

impl<'a> Enter<'a> {
    pub(crate) fn new(sched: &'a Scheduler) -> Enter<'a> {
        let prev = CURRENT.with(|c| c.replace(sched as *const Scheduler));
        Enter { prev, _sched: PhantomData }
    }
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// The runtime whose task or `block_on` this thread runs now.
pub(crate) fn current() -> Option<Arc<crate::runtime::RuntimeState>> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer was set by an `Enter` of this thread that
    // is still alive (they nest and restore in order), and that `Enter`
    // borrows the scheduler, so it points to a live one.
    let sched = unsafe { &*p };
    sched.runtime.get().and_then(Weak::upgrade)
}

/// What the live-task registry and the join handle need of a task,
/// whatever its future's type.
trait Cancel: Send + Sync {
    /// Shutdown: drops the future if no thread polls it now.
    fn cancel_if_idle(&self);
}

/// The typed side of a task, for its [`JoinHandle`].
trait Join<T>: Send + Sync {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn abort(&self);
    fn is_finished(&self) -> bool;
}

enum Output<T> {
    Waiting(Option<Waker>),
    Done(Result<T, JoinError>),
    Taken,
}

/// A task: its future, state and output, in one allocation.
struct Task<F: Future> {
    state: TaskState,
    aborted: AtomicBool,
    key: AtomicUsize,
    /// Only the thread that holds the task RUNNING touches it.
    future: UnsafeCell<Option<F>>,
    output: Mutex<Output<F::Output>>,
    /// The default port of the runtime; none when it had none to give.
    port: Option<Port>,
    sched: Arc<Scheduler>,
    me: Weak<Task<F>>,
}

// SAFETY: the future is touched only by the one thread that holds the task
// in the RUNNING state (`TaskState`), so sharing the task never shares the
// future; it is `Send`, so that thread may be any thread. The other fields
// are `Sync` (the output is behind a lock and `Send`).
unsafe impl<F: Future + Send> Sync for Task<F> where F::Output: Send {}

impl<F> Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Posts the task (the caller moved it to SCHEDULED). When the port
    /// refuses (closed), the task is dropped here instead.
    fn schedule(self: &Arc<Self>) {
        let mut req = match Request::alloc(Op::Post, Buffer::None, 0) {
            Ok(r) => r,
            Err(_) => return self.cancel_scheduled(),
        };
        req.set_callback(self.clone());
        let refused = match &self.port {
            Some(port) => port.post_unbounded(req).err(),
            None => Some(req),
        };
        if let Some(req) = refused {
            drop(req);
            self.cancel_scheduled();
        }
    }

    fn cancel_scheduled(&self) {
        if self.state.start() {
            self.finish(Err(JoinError { repr: Repr::Cancelled }));
        }
    }

    /// One posted run.
    fn run(self: &Arc<Self>) {
        if !self.state.start() {
            return;
        }
        if self.aborted.load(Ordering::Acquire) || self.sched.is_closed() {
            return self.finish(Err(JoinError { repr: Repr::Cancelled }));
        }
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let polled = {
            let _enter = Enter::new(&self.sched);
            // SAFETY: this thread moved the task to RUNNING (`start`), so it
            // alone touches the future until `pause` or `finish`.
            let slot = unsafe { &mut *self.future.get() };
            let Some(fut) = slot.as_mut() else {
                return self.state.finish();
            };
            // SAFETY: the future lives inside the task's allocation and is
            // never moved: it is dropped in place (`finish`).
            let fut = unsafe { Pin::new_unchecked(fut) };
            catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx)))
        };
        match polled {
            Ok(Poll::Ready(v)) => self.finish(Ok(v)),
            Ok(Poll::Pending) => {
                if self.state.pause() {
                    self.schedule();
                } else if self.sched.is_closed() && self.state.claim_idle() {
                    // Shutdown passed it while it ran: drop it now.
                    self.finish(Err(JoinError { repr: Repr::Cancelled }));
                }
            }
            Err(payload) => {
                self.sched.panics.fetch_add(1, Ordering::Relaxed);
                self.finish(Err(JoinError { repr: Repr::Panic(Mutex::new(payload)) }));
            }
        }
    }

    /// The owner (RUNNING) ends the task: drops its future in place, hands
    /// the output to the join handle, leaves the registry.
    fn finish(&self, out: Result<F::Output, JoinError>) {
        // SAFETY: the caller holds the task RUNNING, so no other thread
        // touches the future.
        let slot = unsafe { &mut *self.future.get() };
        // Dropping the future is user code: a panic there is counted, and
        // the task still finishes.
        if catch_unwind(AssertUnwindSafe(|| *slot = None)).is_err() {
            self.sched.panics.fetch_add(1, Ordering::Relaxed);
        }
        let waker = {
            let mut o = self.output.lock();
            match &mut *o {
                Output::Waiting(w) => {
                    let w = w.take();
                    *o = Output::Done(out);
                    w
                }
                // Finished twice cannot happen (RUNNING is exclusive); the
                // output would be dropped below, after the lock.
                _ => {
                    drop(o);
                    drop(out);
                    None
                }
            }
        };
        self.state.finish();
        self.sched.unregister(self.key.load(Ordering::Relaxed));
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<F> Wake for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.wake() {
            if take_inline(&self.sched) {
                // On a pool thread of its runtime, handing over the
                // completion the task waited for: run it here, now, as a
                // callback would, rather than post it to be run later.
                self.run();
            } else {
                self.schedule();
            }
        }
    }
}

impl<F> CompletionSink for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn on_complete(&self, _status: Status, _bytes: usize, request: Request) {
        drop(request);
        // The request held the task (its target), so it is alive here.
        if let Some(me) = self.me.upgrade() {
            me.run();
        }
    }
}

impl<F> Cancel for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn cancel_if_idle(&self) {
        if self.state.claim_idle() {
            self.finish(Err(JoinError { repr: Repr::Cancelled }));
        }
    }
}

impl<F> Join<F::Output> for Task<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        let mut o = self.output.lock();
        match std::mem::replace(&mut *o, Output::Taken) {
            Output::Done(r) => Poll::Ready(r),
            Output::Waiting(w) => {
                let w = match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *o = Output::Waiting(Some(w));
                Poll::Pending
            }
            Output::Taken => {
                *o = Output::Taken;
                Poll::Ready(Err(JoinError { repr: Repr::Cancelled }))
            }
        }
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        if let Some(me) = self.me.upgrade() {
            me.wake_by_ref();
        }
    }

    fn is_finished(&self) -> bool {
        !matches!(*self.output.lock(), Output::Waiting(_))
    }
}

/// Spawns `future` on `port`'s pool for `sched`; without a port (the
/// runtime has none to give) it is cancelled at once.
pub(crate) fn spawn<F>(sched: &Arc<Scheduler>, port: Option<Port>, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = Arc::new_cyclic(|me| Task {
        state: TaskState::new_scheduled(),
        aborted: AtomicBool::new(false),
        key: AtomicUsize::new(usize::MAX),
        future: UnsafeCell::new(Some(future)),
        output: Mutex::new(Output::Waiting(None)),
        port,
        sched: sched.clone(),
        me: me.clone(),
    });
    if sched.register(task.clone(), &task.key) {
        task.schedule();
    } else {
        task.cancel_scheduled();
    }
    JoinHandle { task, _t: PhantomData }
}

/// An owned permission to await a task's output (see
/// [`Runtime::spawn`](crate::Runtime::spawn)).
///
/// It is a future of `Result<T, JoinError>`: the output, or why there is
/// none. Dropping it detaches the task, which runs on;
/// [`JoinHandle::abort`] cancels it.
#[must_use = "dropping a JoinHandle detaches the task; await it or call abort to cancel"]
pub struct JoinHandle<T> {
    task: Arc<dyn Join<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped (on the pool, at its next
    /// run, or at once when idle), unless it finished first, and the
    /// handle resolves to a cancelled [`JoinError`]. Dropping the future
    /// drops its requests' futures, which cancels those requests; each
    /// still completes once, with its buffer.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// True once the task finished, was cancelled or panicked (its output
    /// is ready, or was taken).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// Wakes a `block_on` thread.
struct Parker {
    thread: std::thread::Thread,
    notified: AtomicBool,
}

impl Wake for Parker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }
}

/// How long a parked `block_on` sleeps before it looks at its flag again
/// (a guard only: a wake unparks it at once).
const PARK_GUARD: Duration = Duration::from_secs(1);

/// Runs `future` on this thread to its end, parking between polls.
pub(crate) fn block_on<F: Future>(sched: &Scheduler, future: F) -> F::Output {
    let _enter = Enter::new(sched);
    let parker = Arc::new(Parker { thread: std::thread::current(), notified: AtomicBool::new(false) });
    let waker = Waker::from(parker.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        while !parker.notified.swap(false, Ordering::AcqRel) {
            std::thread::park_timeout(PARK_GUARD);
        }
    }
}

/// Yields once: the task is posted to the back of the port's queue and
/// other work runs first.
///
/// ```
/// let rt = iocompletion::Runtime::builder().build()?;
/// rt.block_on(iocompletion::task::yield_now());
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    YieldNow(false).await
}
