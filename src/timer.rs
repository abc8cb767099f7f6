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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use crate::handle::WeakHandle;
use crate::request::RequestId;
use crate::status::Status;

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
    let slot = std::sync::Arc::new(Mutex::new(Some(f)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new().name("iocompletion-timer-abort".into()).spawn(move || {
        let f = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            f()
        }
    });
    if spawned.is_err() {
        // No thread to be had: here rather than never (it completes once).
        let f = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            f()
        }
    }
}

enum Entry {
    /// A request's deadline.
    Deadline(WeakHandle),
    /// A timer of the runtime `owner`.
    Timer { owner: u64, fire: Fire },
}

/// Where an entry is: its due instant and a unique id (a request's id for
/// a deadline).
pub(crate) type Key = (Instant, u64);

#[derive(Default)]
struct State {
    entries: BTreeMap<Key, Entry>,
    /// Requests whose deadline passed and whose completion has not been
    /// taken yet.
    fired: HashSet<u64>,
    thread: bool,
}

struct Timers {
    state: Mutex<State>,
    cv: Condvar,
}

fn timers() -> &'static Timers {
    static T: OnceLock<Timers> = OnceLock::new();
    T.get_or_init(|| Timers { state: Mutex::new(State::default()), cv: Condvar::new() })
}

/// Adds an entry; starts the timer thread on first use. Fails only when the
/// thread cannot be started.
fn add(key: Key, entry: Entry) -> std::io::Result<()> {
    let t = timers();
    let mut st = t.state.lock().unwrap_or_else(|e| e.into_inner());
    if !st.thread {
        std::thread::Builder::new().name("iocompletion-timer".into()).spawn(run)?;
        st.thread = true;
    }
    let first = st.entries.keys().next().map_or(true, |k| key < *k);
    st.entries.insert(key, entry);
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
    let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
    if st.entries.remove(&(deadline, id.0)).is_some() {
        st.fired.insert(id.0);
    }
}

/// Forgets a deadline whose request could not start after all.
pub(crate) fn unwatch(deadline: Instant, id: RequestId) {
    let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
    st.entries.remove(&(deadline, id.0));
}

/// The completion of a request that carried `deadline` was taken: forgets
/// the deadline and returns true when it had passed (the request was
/// cancelled for it).
pub(crate) fn completed(deadline: Instant, id: u64) -> bool {
    let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
    if st.entries.remove(&(deadline, id)).is_some() {
        return false;
    }
    st.fired.remove(&id)
}

static NEXT_TIMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 62);

/// Schedules `fire` for `at`, for the runtime `owner`; returns the key
/// that cancels it.
pub(crate) fn schedule(at: Instant, owner: u64, fire: Fire) -> std::io::Result<Key> {
    let key = (at, NEXT_TIMER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    add(key, Entry::Timer { owner, fire })?;
    Ok(key)
}

/// Cancels a timer: runs it now with the aborted status. False when it
/// already fired or was cancelled.
pub(crate) fn cancel(key: Key) -> bool {
    let entry = {
        let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
        st.entries.remove(&key)
    };
    match entry {
        Some(Entry::Timer { fire, .. }) => {
            fire(Status::ABORTED);
            true
        }
        Some(other) => {
            // Not a timer's key: put it back untouched.
            let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
            st.entries.insert(key, other);
            false
        }
        None => false,
    }
}

/// Cancels every timer of the runtime `owner` (it is shutting down).
pub(crate) fn cancel_owner(owner: u64) {
    let fires: Vec<Fire> = {
        let mut st = timers().state.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<Key> = st
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Timer { owner: o, .. } if *o == owner))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| match st.entries.remove(&k) {
                Some(Entry::Timer { fire, .. }) => Some(fire),
                _ => None,
            })
            .collect()
    };
    for fire in fires {
        fire(Status::ABORTED);
    }
}

/// The timer thread: waits for the earliest entry, acts on what is due.
fn run() {
    ON_TIMER_THREAD.with(|t| t.set(true));
    let t = timers();
    let mut st = t.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let due = match st.entries.first_key_value() {
            None => {
                st = t.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            Some((&(at, _), _)) if at > now => {
                st = t.cv.wait_timeout(st, at - now).unwrap_or_else(|e| e.into_inner()).0;
                continue;
            }
            Some((&key, _)) => key,
        };
        let Some(entry) = st.entries.remove(&due) else { continue };
        match entry {
            Entry::Deadline(handle) => {
                st.fired.insert(due.1);
                drop(st);
                if let Some(h) = handle.upgrade() {
                    // "Not found": it is being performed or just completed;
                    // its completion clears the mark either way.
                    let _ = h.cancel(RequestId(due.1));
                }
            }
            Entry::Timer { fire, .. } => {
                drop(st);
                fire(Status::SUCCESS);
            }
        }
        st = t.state.lock().unwrap_or_else(|e| e.into_inner());
    }
}
