//! Deadlines and timers (S33), served by one thread for the whole process.
//!
//! Entries sit in an ordered map keyed by (instant, id). The timer thread
//! sleeps until the earliest one is due (or a nearer one is added), then
//! acts on it outside the lock:
//!
//! - a request's deadline cancels the request (`Handle::cancel`, as the
//!   user would), after moving its entry to the `fired` set. Its one
//!   completion, taken from the port, removes the entry: a request that
//!   completed first removed it before it fired; one that fired and then
//!   completed aborted is reported with the OS's timed-out status instead
//!   (see [`completed`]). Either way the request completes exactly once.
//! - a timer's entry posts the timer's completion to its runtime's pool,
//!   past the port's bound, with success; a cancelled timer, or one of a
//!   runtime that shuts down, posts it at once with the aborted status.
//!   Each entry fires once: whoever removes it from the map fires it. No
//!   user closure runs on the timer thread.
//!
//! The map and its rules are in `table`, where loom models check them.

use std::time::Instant;

use crate::handle::WeakHandle;
use crate::request::RequestId;
use crate::status::Status;
use crate::sync::{Arc, AtomicU64, Condvar, Mutex, OnceLock, Ordering};

mod table;
use table::{Due, Entry, Table};
pub(crate) use table::Key;

/// What a timer runs, once, with success or the aborted status. It runs
/// no user code itself: it posts the timer's completion to the pool.
pub(crate) type Fire = Box<dyn FnOnce(Status) + Send>;

// The initializer is `const` already; clippy 1.96 still reports
// missing_const_for_thread_local here when checking x86_64-pc-windows-gnu
// (as in `pool`).
#[allow(clippy::missing_const_for_thread_local)]
mod timer_tls {
    std::thread_local! {
        /// True on the timer thread.
        pub(super) static ON_TIMER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
}
use timer_tls::ON_TIMER_THREAD;

/// Runs `f` now, or on a thread of its own when called on the timer
/// thread, which runs no user code (S33). For a timer whose runtime
/// stopped as it fired: its pool is gone.
pub(crate) fn run_elsewhere(f: impl FnOnce() + Send + 'static) {
    if !ON_TIMER_THREAD.with(|t| t.get()) {
        return f();
    }
    let slot = Arc::new(Mutex::new(Some(f)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new().name("iocompletion-timer-abort".into()).spawn(move || {
        let f = theirs.lock().take();
        if let Some(f) = f {
            f()
        }
    });
    if spawned.is_err() {
        // No thread to be had: here rather than never (it completes once).
        let f = slot.lock().take();
        if let Some(f) = f {
            f()
        }
    }
}

struct Timers {
    table: Table<WeakHandle, Fire>,
    cv: Condvar,
}

fn timers() -> &'static Timers {
    static T: OnceLock<Timers> = OnceLock::new();
    T.get_or_init(|| Timers { table: Table::new(), cv: Condvar::new() })
}

/// Adds an entry; starts the timer thread on first use. Fails only when the
/// thread cannot be started.
fn add(key: Key, entry: Entry<WeakHandle, Fire>) -> std::io::Result<()> {
    let t = timers();
    let mut st = t.table.state.lock();
    if !st.thread {
        std::thread::Builder::new().name("iocompletion-timer".into()).spawn(run)?;
        st.thread = true;
    }
    let first = st.insert(key, entry);
    drop(st);
    if first {
        t.cv.notify_one();
    }
    Ok(())
}

/// Watches `id`, started on `handle`, until `deadline`.
pub(crate) fn watch(deadline: Instant, id: RequestId, handle: WeakHandle) -> std::io::Result<()> {
    add((deadline, id.0), Entry::Deadline(handle))
}

/// The deadline of `id` has passed as its start returns: marks it fired
/// (if the timer thread has not yet), so that the cancel the caller makes
/// now is reported as a timeout.
pub(crate) fn expire_now(deadline: Instant, id: RequestId) {
    timers().table.expire_now((deadline, id.0));
}

/// Forgets a deadline whose request could not start after all.
pub(crate) fn unwatch(deadline: Instant, id: RequestId) {
    timers().table.unwatch((deadline, id.0));
}

/// The completion of a request that carried `deadline` was taken: forgets
/// the deadline and returns true when it had passed (the request was
/// cancelled for it).
pub(crate) fn completed(deadline: Instant, id: u64) -> bool {
    timers().table.completed((deadline, id))
}

static NEXT_TIMER: AtomicU64 = AtomicU64::new(1 << 62);

/// Schedules `fire` for `at`, for the runtime `owner`; returns the key
/// that cancels it.
pub(crate) fn schedule(at: Instant, owner: u64, fire: Fire) -> std::io::Result<Key> {
    let key = (at, NEXT_TIMER.fetch_add(1, Ordering::Relaxed));
    add(key, Entry::Timer { owner, fire })?;
    Ok(key)
}

/// Cancels a timer: runs it now with the aborted status. False when it
/// already fired or was cancelled.
pub(crate) fn cancel(key: Key) -> bool {
    match timers().table.cancel(key) {
        Some(fire) => {
            fire(Status::ABORTED);
            true
        }
        None => false,
    }
}

/// Cancels every timer of the runtime `owner` (it is shutting down).
pub(crate) fn cancel_owner(owner: u64) {
    for fire in timers().table.cancel_owner(owner) {
        fire(Status::ABORTED);
    }
}

/// The timer thread: waits for the earliest entry, acts on what is due.
fn run() {
    ON_TIMER_THREAD.with(|t| t.set(true));
    let t = timers();
    let mut st = t.table.state.lock();
    loop {
        match st.take_due(Instant::now()) {
            Due::Wait(None) => t.cv.wait(&mut st),
            Due::Wait(Some(at)) => {
                t.cv.wait_until(&mut st, at);
            }
            Due::Deadline(id, handle) => {
                drop(st);
                if let Some(h) = handle.upgrade() {
                    // "Not found": it is being performed or just completed;
                    // its completion clears the mark either way.
                    let _ = h.cancel(RequestId(id));
                }
                st = t.table.state.lock();
            }
            Due::Timer(fire) => {
                drop(st);
                fire(Status::SUCCESS);
                st = t.table.state.lock();
            }
        }
    }
}
