//! The one place the port and the pool take their synchronization
//! primitives from. Under `--cfg loom` every atomic, lock, queue and park
//! below is loom's, so the models in `sys::queue` and `census` explore the
//! interleavings of the real code.
//!
//! `Arc` and `Weak` stay std's in both builds (loom has no `Weak`); only
//! reference counts go unpermuted, never an ordering the protocols rely on.

pub(crate) use std::sync::{Arc, Weak};

#[cfg(not(loom))]
pub(crate) use imp::*;

#[cfg(loom)]
pub(crate) use model::*;

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
    #[cfg(any(unix, windows))]
    pub(crate) use std::sync::atomic::fence;
    #[cfg(any(windows, test))]
    pub(crate) use std::sync::atomic::AtomicPtr;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use std::thread;

    /// The lock-free multi-producer, multi-consumer FIFO behind a port
    /// (the port's own queue beside the kernel's, on Windows).
    #[cfg(any(unix, windows))]
    pub(crate) type Injector<T> = crossbeam_queue::SegQueue<T>;

    /// Parks the calling thread until it is unparked, `deadline` passes, or
    /// spuriously.
    #[cfg(unix)]
    pub(crate) fn park(deadline: Option<std::time::Instant>) {
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = std::time::Instant::now();
                if d > now {
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }
}

#[cfg(loom)]
mod model {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::thread;
    use std::collections::VecDeque;

    /// loom's mutex with parking_lot's signature (no poisoning).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("loom mutexes are not poisoned in models")
        }
    }

    /// The injector as a locked deque: the model checks the port's
    /// protocol, not crossbeam's queue (which has its own tests).
    #[derive(Debug, Default)]
    pub(crate) struct Injector<T>(Mutex<VecDeque<T>>);

    impl<T> Injector<T> {
        pub(crate) fn new() -> Injector<T> {
            Injector(Mutex::new(VecDeque::new()))
        }

        pub(crate) fn push(&self, v: T) {
            self.0.lock().push_back(v);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().pop_front()
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().is_empty()
        }

        pub(crate) fn len(&self) -> usize {
            self.0.lock().len()
        }
    }

    /// Models never pass a deadline: a timed park would be a real sleep.
    pub(crate) fn park(deadline: Option<std::time::Instant>) {
        assert!(deadline.is_none(), "loom models wait without deadlines");
        loom::thread::park();
    }
}
