//! The scheduling state of a task: who may poll it, and whether a wake
//! must post it to the port.
//!
//! ```text
//!            wake: post               start                pause
//!   IDLE ──────────────▶ SCHEDULED ─────────▶ RUNNING ────────────▶ IDLE
//!    ▲                      ▲                  │   │  finish
//!    │ claim (shutdown)     │ pause: post      │   └─────────▶ DONE
//!    └─▶ RUNNING            └──── NOTIFIED ◀───┘ wake
//! ```
//!
//! Only the thread that moved a task to RUNNING polls it (or drops its
//! future), so a task is polled by one thread at a time. A wake while it
//! runs marks it NOTIFIED, and the end of that poll posts it once more:
//! no wake is lost and none posts it twice.

use crate::sync::{AtomicUsize, Ordering};

const IDLE: usize = 0;
const SCHEDULED: usize = 1;
const RUNNING: usize = 2;
const NOTIFIED: usize = 3;
const DONE: usize = 4;

pub(crate) struct TaskState(AtomicUsize);

impl TaskState {
    /// A new task: scheduled, since its spawner posts it.
    pub(crate) fn new_scheduled() -> TaskState {
        TaskState(AtomicUsize::new(SCHEDULED))
    }

    /// A wake. True when the caller must post the task (it was idle and is
    /// scheduled now); false when it is already scheduled, running (then
    /// it is marked to run again) or done.
    pub(crate) fn wake(&self) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let next = match cur {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                // Written back unchanged: the write (a release) orders what
                // the waker did before the wake before the next poll, which
                // starts with an acquire of this state. A mere load would
                // not (the model `a_wake_during_a_poll_reschedules_the_task_once`
                // finds the poll missing the data without it).
                SCHEDULED | NOTIFIED => cur,
                _ => return false,
            };
            match self.0.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return cur == IDLE,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A posted run begins. True when the caller now owns the task
    /// (SCHEDULED to RUNNING); false when it is done already.
    pub(crate) fn start(&self) -> bool {
        self.0.compare_exchange(SCHEDULED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The owner's poll returned pending. True when the task was woken
    /// during the poll: it is scheduled again and the caller must post it.
    pub(crate) fn pause(&self) -> bool {
        match self.0.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(actual) => {
                debug_assert_eq!(actual, NOTIFIED);
                // Only the owner leaves NOTIFIED: a wake leaves it as is.
                self.0.store(SCHEDULED, Ordering::Release);
                true
            }
        }
    }

    /// Takes an idle task (to drop it at shutdown): IDLE to RUNNING.
    pub(crate) fn claim_idle(&self) -> bool {
        self.0.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The owner finished the task (its future is dropped): DONE for good.
    pub(crate) fn finish(&self) {
        self.0.store(DONE, Ordering::Release);
    }
}

#[cfg(all(test, loom))]
mod models {
    use super::TaskState;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::sync::Arc;

    /// The task of a model: its state, a flag that catches two polls at
    /// once, the posts made, and the data version the last poll saw.
    struct Model {
        state: TaskState,
        polling: AtomicBool,
        posts: AtomicUsize,
        data: AtomicUsize,
        seen: AtomicUsize,
    }

    impl Model {
        /// One poll by the owner: checks it is alone, reads the data.
        fn poll(&self) {
            assert!(!self.polling.swap(true, Ordering::AcqRel), "two threads poll the task at once");
            self.seen.store(self.data.load(Ordering::Acquire), Ordering::Release);
            self.polling.store(false, Ordering::Release);
        }

        /// Runs one post: start, poll, pause; true when it posted again.
        fn run_once(&self) -> bool {
            if !self.state.start() {
                return false;
            }
            self.poll();
            if self.state.pause() {
                self.posts.fetch_add(1, Ordering::AcqRel);
                return true;
            }
            false
        }

        fn wake(&self) -> bool {
            self.data.fetch_add(1, Ordering::AcqRel);
            let post = self.state.wake();
            if post {
                self.posts.fetch_add(1, Ordering::AcqRel);
            }
            post
        }
    }

    fn model() -> Arc<Model> {
        Arc::new(Model {
            state: TaskState::new_scheduled(),
            polling: AtomicBool::new(false),
            posts: AtomicUsize::new(1),
            data: AtomicUsize::new(0),
            seen: AtomicUsize::new(usize::MAX),
        })
    }

    /// A wake racing a poll: the task is never polled by two threads, a
    /// wake is never lost (the last poll saw the last data), and every
    /// post is run (posts = runs).
    #[test]
    fn a_wake_during_a_poll_reschedules_the_task_once() {
        loom::model(|| {
            let m = model();
            let m2 = m.clone();
            let waker = loom::thread::spawn(move || {
                // The waker runs what it posts, as a second pool thread would.
                let mut runs = 0;
                if m2.wake() {
                    runs += 1;
                    while m2.run_once() {
                        runs += 1;
                    }
                }
                runs
            });
            let mut runs = 1;
            while m.run_once() {
                runs += 1;
            }
            runs += waker.join().unwrap();
            assert_eq!(m.posts.load(Ordering::Acquire), runs, "every post ran once");
            assert_eq!(m.seen.load(Ordering::Acquire), 1, "the last poll saw the wake's data");
        });
    }

    /// Two wakes from two threads while the task is idle post it once.
    #[test]
    fn two_wakes_of_an_idle_task_post_it_once() {
        loom::model(|| {
            let m = model();
            assert!(m.state.start());
            assert!(!m.state.pause());
            let (a, b) = (m.clone(), m.clone());
            let ta = loom::thread::spawn(move || a.state.wake());
            let tb = loom::thread::spawn(move || b.state.wake());
            let posted = usize::from(ta.join().unwrap()) + usize::from(tb.join().unwrap());
            assert_eq!(posted, 1);
        });
    }
}
