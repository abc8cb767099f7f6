//! The timers' table (checked by the loom models at the end of this file):
//! entries in an ordered map keyed by (instant, id), under one lock.
//! Whoever removes an entry acts on it (fires a timer, cancels a request
//! whose deadline passed), so each entry is acted on once, whichever of the
//! timer thread, a cancel and a shutdown gets there first.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use crate::sync::Mutex;

/// Where an entry is: its due instant and a unique id (a request's id for
/// a deadline).
pub(crate) type Key = (Instant, u64);

/// An entry: a request's deadline (`D` finds its handle) or a timer
/// (`F` fires it).
pub(crate) enum Entry<D, F> {
    /// A request's deadline.
    Deadline(D),
    /// A timer of the runtime `owner`.
    Timer { owner: u64, fire: F },
}

/// What the timer thread does next.
pub(crate) enum Due<D, F> {
    /// Waits until the instant, or until an entry is added (`None`).
    Wait(Option<Instant>),
    /// Cancels the request `id`: its deadline passed (it is marked fired).
    Deadline(u64, D),
    /// Fires a timer with success.
    Timer(F),
}

/// The table's state, under the table's lock.
pub(crate) struct State<D, F> {
    entries: BTreeMap<Key, Entry<D, F>>,
    /// Requests whose deadline passed and whose completion has not been
    /// taken yet.
    fired: HashSet<u64>,
    /// The timer thread was started.
    pub(crate) thread: bool,
}

impl<D, F> State<D, F> {
    /// Adds an entry; true when it is now the earliest, so the timer
    /// thread must be told (it may sleep until a later one, or for ever).
    pub(crate) fn insert(&mut self, key: Key, entry: Entry<D, F>) -> bool {
        let first = self.entries.keys().next().map_or(true, |k| key < *k);
        self.entries.insert(key, entry);
        first
    }

    /// Takes the earliest entry if it is due at `now`; a deadline's
    /// request is marked fired in the same step.
    pub(crate) fn take_due(&mut self, now: Instant) -> Due<D, F> {
        let due = match self.entries.first_key_value() {
            None => return Due::Wait(None),
            Some((&(at, _), _)) if at > now => return Due::Wait(Some(at)),
            Some((&key, _)) => key,
        };
        match self.entries.remove(&due) {
            Some(Entry::Deadline(d)) => {
                self.fired.insert(due.1);
                Due::Deadline(due.1, d)
            }
            Some(Entry::Timer { fire, .. }) => Due::Timer(fire),
            None => Due::Wait(None),
        }
    }
}

/// The table: its state behind its lock.
pub(crate) struct Table<D, F> {
    pub(crate) state: Mutex<State<D, F>>,
}

impl<D, F> Table<D, F> {
    pub(crate) fn new() -> Table<D, F> {
        Table { state: Mutex::new(State { entries: BTreeMap::new(), fired: HashSet::new(), thread: false }) }
    }

    /// The deadline `key` has passed as its request's start returns: marks
    /// the request fired (if the timer thread has not yet).
    pub(crate) fn expire_now(&self, key: Key) {
        let mut st = self.state.lock();
        if st.entries.remove(&key).is_some() {
            st.fired.insert(key.1);
        }
    }

    /// Forgets a deadline whose request could not start after all.
    pub(crate) fn unwatch(&self, key: Key) {
        self.state.lock().entries.remove(&key);
    }

    /// The completion of the request with the deadline `key` was taken:
    /// forgets the deadline; true when it had passed (the request was
    /// cancelled for it).
    pub(crate) fn completed(&self, key: Key) -> bool {
        let mut st = self.state.lock();
        if st.entries.remove(&key).is_some() {
            return false;
        }
        st.fired.remove(&key.1)
    }

    /// Takes the timer `key` to cancel it; `None` when it already fired or
    /// was cancelled, or `key` is not a timer's (left as it was).
    pub(crate) fn cancel(&self, key: Key) -> Option<F> {
        let mut st = self.state.lock();
        match st.entries.remove(&key) {
            Some(Entry::Timer { fire, .. }) => Some(fire),
            Some(other) => {
                st.entries.insert(key, other);
                None
            }
            None => None,
        }
    }

    /// Takes every timer of the runtime `owner` (it is shutting down).
    pub(crate) fn cancel_owner(&self, owner: u64) -> Vec<F> {
        let mut st = self.state.lock();
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
    }
}

#[cfg(all(test, loom))]
mod models {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release models`.
    //!
    //! The timer thread's step is the one `timer::run` takes each time it
    //! wakes: `take_due` under the table's lock, then acting on what it
    //! took outside the lock. A timer "fires" here by counting its status.

    use super::{Due, Entry, Key, Table};
    use crate::sync::{thread, Arc, AtomicUsize, Ordering};
    use std::time::Instant;

    const OWNER: u64 = 1;

    /// Fires of a timer with success and with the aborted status.
    struct Fires {
        success: AtomicUsize,
        aborted: AtomicUsize,
    }

    impl Fires {
        fn new() -> Arc<Fires> {
            Arc::new(Fires { success: AtomicUsize::new(0), aborted: AtomicUsize::new(0) })
        }

        fn fire(self: &Arc<Fires>) -> Fire {
            let me = self.clone();
            Box::new(move |success| {
                let n = if success { &me.success } else { &me.aborted };
                n.fetch_add(1, Ordering::Relaxed);
            })
        }

        fn counts(&self) -> (usize, usize) {
            (self.success.load(Ordering::Relaxed), self.aborted.load(Ordering::Relaxed))
        }
    }

    /// A timer's completion: true for success, false for aborted.
    type Fire = Box<dyn FnOnce(bool) + Send>;

    /// A deadline stands for its request's handle.
    type Timers = Table<(), Fire>;

    /// One step of the timer thread at `now`; what it took.
    fn timer_step(t: &Timers, now: Instant) -> Option<u64> {
        let due = t.state.lock().take_due(now);
        match due {
            Due::Wait(_) => None,
            Due::Deadline(id, ()) => Some(id),
            Due::Timer(fire) => {
                fire(true);
                Some(0)
            }
        }
    }

    fn is_empty(t: &Timers) -> bool {
        let st = t.state.lock();
        st.entries.is_empty() && st.fired.is_empty()
    }

    /// S33: a due timer that its owner cancels and its runtime shuts down
    /// as the timer thread fires it completes exactly once: with success
    /// when the timer thread took it, aborted otherwise, and a cancel that
    /// says it cancelled it is the one that completed it.
    #[test]
    fn s33_a_timer_cancelled_and_shut_down_as_it_fires_completes_once() {
        loom::model(|| {
            let now = Instant::now();
            let key: Key = (now, 1);
            let t = Arc::new(Timers::new());
            let fires = Fires::new();
            t.state.lock().insert(key, Entry::Timer { owner: OWNER, fire: fires.fire() });

            let timer = {
                let t = t.clone();
                thread::spawn(move || timer_step(&t, now).is_some())
            };
            let shutdown = {
                let t = t.clone();
                thread::spawn(move || {
                    let taken = t.cancel_owner(OWNER);
                    let n = taken.len();
                    for fire in taken {
                        fire(false);
                    }
                    n
                })
            };
            let cancelled = match t.cancel(key) {
                Some(fire) => {
                    fire(false);
                    true
                }
                None => false,
            };
            let fired = timer.join().unwrap();
            let shut = shutdown.join().unwrap();

            assert_eq!(usize::from(fired) + usize::from(cancelled) + shut, 1, "one of them took it");
            assert_eq!(fires.counts(), if fired { (1, 0) } else { (0, 1) });
            assert!(is_empty(&t));
        });
    }

    /// S33: a timer set as the timer thread looks at the table fires
    /// once: either the thread took it, or the set tells it to look again
    /// (it found nothing and would otherwise sleep for ever).
    #[test]
    fn s33_a_timer_set_as_the_timer_thread_looks_fires_once() {
        loom::model(|| {
            let now = Instant::now();
            let t = Arc::new(Timers::new());
            let fires = Fires::new();

            let set = {
                let (t, fire) = (t.clone(), fires.fire());
                thread::spawn(move || t.state.lock().insert((now, 1), Entry::Timer { owner: OWNER, fire }))
            };
            let looked = timer_step(&t, now);
            let first = set.join().unwrap();
            if looked.is_none() {
                assert!(first, "the timer thread found nothing and was not told of the new timer");
                assert!(timer_step(&t, now).is_some());
            }
            assert_eq!(fires.counts(), (1, 0));
            assert!(is_empty(&t));
        });
    }

    /// S33: a deadline racing the completion of its request: the request
    /// is reported timed out exactly when the timer thread took the
    /// deadline (and cancelled it), and nothing of it is left behind.
    #[test]
    fn s33_a_deadline_racing_its_completion_reports_a_timeout_only_if_it_fired() {
        loom::model(|| {
            let (timed_out, took, t, _) = deadline_racing_the_timer_thread(|t, key| t.completed(key));
            assert_eq!(timed_out, took == Some(7));
            assert!(is_empty(&t));
        });
    }

    /// A deadline (key 7) in a table, and the timer thread's step at its
    /// instant racing `user`: what `user` gave, what the step took, the
    /// table and the deadline's key, once both are done.
    fn deadline_racing_the_timer_thread<R>(
        user: impl FnOnce(&Timers, Key) -> R,
    ) -> (R, Option<u64>, Arc<Timers>, Key) {
        let now = Instant::now();
        let key: Key = (now, 7);
        let t = Arc::new(Timers::new());
        t.state.lock().insert(key, Entry::Deadline(()));
        let timer = {
            let t = t.clone();
            thread::spawn(move || timer_step(&t, now))
        };
        let r = user(&t, key);
        let took = timer.join().unwrap();
        (r, took, t, key)
    }

    /// S33: a deadline that passed as its request started, racing the
    /// timer thread: the request is reported timed out either way, and
    /// nothing of it is left behind.
    #[test]
    fn s33_a_deadline_passed_at_start_reports_a_timeout_once() {
        loom::model(|| {
            let ((), _, t, key) = deadline_racing_the_timer_thread(|t, key| t.expire_now(key));
            assert!(t.completed(key), "the completion is reported timed out");
            assert!(is_empty(&t));
        });
    }
}
