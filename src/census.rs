//! The pool's thread accounting (S12-S15): how many threads it has, its
//! minimum and maximum, and the decisions that change the count. Every
//! change happens under one lock; the count is also readable without it,
//! for the worker's per-packet "am I above the maximum?" check.

use crate::sync::{AtomicUsize, Mutex, Ordering};

/// Why a worker may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// The maximum was lowered below the thread count (S12): leave at once.
    AboveMax,
    /// Idle for the keep-alive (S15): leave if above the minimum.
    Idle,
}

/// Limits that were refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    MaxZero,
    MaxBelowMin(usize),
    MinAboveMax(usize),
}

#[derive(Debug)]
pub(crate) struct Census {
    threads: AtomicUsize,
    min: AtomicUsize,
    max: AtomicUsize,
    lock: Mutex<()>,
}

impl Census {
    pub(crate) fn new(min: usize, max: usize) -> Result<Census, Refused> {
        if max == 0 {
            return Err(Refused::MaxZero);
        }
        if min > max {
            return Err(Refused::MinAboveMax(max));
        }
        Ok(Census {
            threads: AtomicUsize::new(0),
            min: AtomicUsize::new(min),
            max: AtomicUsize::new(max),
            lock: Mutex::new(()),
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::SeqCst)
    }

    pub(crate) fn min(&self) -> usize {
        self.min.load(Ordering::SeqCst)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn set_min(&self, n: usize) -> Result<(), Refused> {
        let _g = self.lock.lock();
        let max = self.max();
        if n > max {
            return Err(Refused::MinAboveMax(max));
        }
        self.min.store(n, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn set_max(&self, n: usize) -> Result<(), Refused> {
        let _g = self.lock.lock();
        let min = self.min();
        if n == 0 {
            return Err(Refused::MaxZero);
        }
        if n < min {
            return Err(Refused::MaxBelowMin(min));
        }
        self.max.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// True when a worker should try to leave because of the maximum: a
    /// lock-free read, confirmed by [`Census::try_leave`].
    pub(crate) fn above_max(&self) -> bool {
        self.threads() > self.max()
    }

    /// Counts a new thread if the limit allows: below the minimum only
    /// (`below_min`), or below the maximum.
    pub(crate) fn try_grow(&self, below_min: bool) -> bool {
        let _g = self.lock.lock();
        let t = self.threads();
        let ok = t < self.max() && (!below_min || t < self.min());
        if ok {
            self.threads.store(t + 1, Ordering::SeqCst);
        }
        ok
    }

    /// Counts a thread out if it may leave for `why`; `last` says it is the
    /// last worker of its port, which never leaves while the port is open.
    pub(crate) fn try_leave(&self, why: Leave, last: bool) -> bool {
        let _g = self.lock.lock();
        let t = self.threads();
        let ok = !last
            && match why {
                Leave::AboveMax => t > self.max(),
                Leave::Idle => t > self.min(),
            };
        if ok {
            self.threads.store(t - 1, Ordering::SeqCst);
        }
        ok
    }

    /// Counts out a thread that exits for another reason (its port closed,
    /// or its spawn failed).
    // Unused in the loom build, which leaves the pool and the port out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn exit(&self) {
        let _g = self.lock.lock();
        self.threads.store(self.threads() - 1, Ordering::SeqCst);
    }
}

/// Takes one worker off a port's count (`threads`) unless it is the port's
/// last: true when taken. A compare-and-swap, so that two workers of one
/// port that go idle together cannot both see "not the last" and both
/// leave: every port keeps at least one worker (S7). The caller gives the
/// worker back ([`rejoin_port`]) when the census then refuses the departure.
pub(crate) fn leave_port(threads: &AtomicUsize) -> bool {
    let mut n = threads.load(Ordering::Acquire);
    loop {
        if n <= 1 {
            return false;
        }
        match threads.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
}

/// Undoes a [`leave_port`] the census refused.
// Unused in the loom build, which leaves the pool and the port out.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn rejoin_port(threads: &AtomicUsize) {
    threads.fetch_add(1, Ordering::AcqRel);
}

#[cfg(all(test, loom))]
mod models {
    use super::*;
    use crate::sync::Arc;

    /// Three idle workers of one port try to leave at once: two do, the
    /// last stays, whatever the interleaving. (Checking "am I the last?"
    /// and then leaving let all three go, 3-4 runs in 100 of a test.)
    #[test]
    fn a_port_keeps_its_last_worker() {
        loom::model(|| {
            let threads = Arc::new(AtomicUsize::new(3));
            let spawn = |t: Arc<AtomicUsize>| loom::thread::spawn(move || leave_port(&t));
            let a = spawn(threads.clone());
            let b = spawn(threads.clone());
            let mine = leave_port(&threads);
            let left = [a.join().unwrap(), b.join().unwrap(), mine].iter().filter(|&&l| l).count();
            assert_eq!(left, 2);
            assert_eq!(threads.load(Ordering::SeqCst), 1);
        });
    }

    /// Lowering the maximum while workers grow and leave: the count never
    /// passes the maximum in force, never drops below the minimum through a
    /// departure, and every departure was allowed when it happened.
    #[test]
    fn limits_hold_under_concurrent_changes() {
        loom::model(|| {
            let c = Arc::new(Census::new(1, 3).unwrap());
            assert!(c.try_grow(false));
            assert!(c.try_grow(false));
            assert!(c.try_grow(false));
            let c1 = c.clone();
            let lower = loom::thread::spawn(move || c1.set_max(1).unwrap());
            let c2 = c.clone();
            let leaver = loom::thread::spawn(move || {
                let mut left = 0;
                for _ in 0..2 {
                    if c2.above_max() && c2.try_leave(Leave::AboveMax, false) {
                        left += 1;
                    }
                }
                left
            });
            let c3 = c.clone();
            let grower = loom::thread::spawn(move || c3.try_grow(false));
            lower.join().unwrap();
            let left = leaver.join().unwrap();
            let grew = grower.join().unwrap();
            let t = c.threads();
            assert_eq!(t, 3 - left + usize::from(grew));
            assert!(t >= c.min());
            // Whatever is still above the new maximum leaves on its next check.
            while c.above_max() {
                assert!(c.try_leave(Leave::AboveMax, false));
            }
            assert!(c.threads() <= 1);
            assert!(!c.try_leave(Leave::Idle, false), "never below the minimum");
        });
    }
}
