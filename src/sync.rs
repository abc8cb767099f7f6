//! The one place the port and the pool take their synchronization
//! primitives from. Under `--cfg loom` every atomic, lock, queue and park
//! below is loom's, so the models (in `sys::queue`, `census`, the io_uring
//! handshake, the timers' table...) explore the interleavings of the real
//! code.
//!
//! Naming a `std::sync` primitive anywhere else in the library is a clippy
//! error (`clippy.toml`, denied in `lib.rs`): so that nothing the models
//! should see slips past them. The atomics and `OnceLock` are thin wrappers
//! of std's here (they deref to them), since clippy tells types apart by
//! their definition, not by the path that names them.
//!
//! `Arc` and `Weak` stay std's in both builds (loom has no `Weak`); only
//! reference counts go unpermuted, never an ordering the protocols rely on.
//! `OnceLock` is std's in both builds too: loom has none, and what it
//! guards is set up once per process (statics), outside any model.
//! `Ordering` is std's in both (loom's is a re-export of it).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub(crate) use std::sync::atomic::Ordering;
pub(crate) use std::sync::{Arc, Weak};

// Unused under loom, where no code that holds one builds.
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use once::OnceLock;

#[cfg(not(loom))]
pub(crate) use imp::*;

#[cfg(loom)]
pub(crate) use model::*;

#[cfg(not(loom))]
mod imp {
    // Not every platform uses every one (`AtomicPtr`: Windows and tests).
    #[allow(unused_imports)]
    pub(crate) use super::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    };
    pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
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

/// Channels between threads with `std::sync::mpsc`'s names (crossbeam's,
/// which are also `Sync`). Never used by the protocols the models check.
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) mod mpsc {
    pub(crate) use crossbeam_channel::{
        bounded as sync_channel, unbounded as channel, Receiver, RecvError, SendError, Sender,
        Sender as SyncSender,
    };
}

/// std's atomics behind wrappers of the same name and methods (they deref
/// to std's), so that `clippy.toml` can tell them from std's own.
#[cfg(not(loom))]
#[allow(dead_code)]
mod atomic {
    use std::fmt;
    use std::ops::{Deref, DerefMut};
    use std::sync::atomic::{self as std_atomic, Ordering};

    /// A memory fence (std's).
    #[inline]
    pub(crate) fn fence(order: Ordering) {
        std_atomic::fence(order);
    }

    macro_rules! wrap {
        ($(#[$m:meta])* $name:ident $(<$t:ident>)?, $value:ty) => {
            $(#[$m])*
            #[repr(transparent)]
            pub(crate) struct $name$(<$t>)?(std_atomic::$name$(<$t>)?);

            impl$(<$t>)? $name$(<$t>)? {
                #[inline]
                pub(crate) const fn new(v: $value) -> Self {
                    Self(std_atomic::$name::new(v))
                }

                #[inline]
                pub(crate) fn into_inner(self) -> $value {
                    self.0.into_inner()
                }
            }

            impl$(<$t>)? Deref for $name$(<$t>)? {
                type Target = std_atomic::$name$(<$t>)?;

                #[inline]
                fn deref(&self) -> &Self::Target {
                    &self.0
                }
            }

            impl$(<$t>)? DerefMut for $name$(<$t>)? {
                #[inline]
                fn deref_mut(&mut self) -> &mut Self::Target {
                    &mut self.0
                }
            }

            impl$(<$t>)? Default for $name$(<$t>)? {
                #[inline]
                fn default() -> Self {
                    Self(Default::default())
                }
            }

            impl$(<$t>)? fmt::Debug for $name$(<$t>)? {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    fmt::Debug::fmt(&self.0, f)
                }
            }
        };
    }

    wrap!(/// std's `AtomicBool`.
        AtomicBool, bool);
    wrap!(/// std's `AtomicU8`.
        AtomicU8, u8);
    wrap!(/// std's `AtomicU32`.
        AtomicU32, u32);
    wrap!(/// std's `AtomicU64`.
        AtomicU64, u64);
    wrap!(/// std's `AtomicUsize`.
        AtomicUsize, usize);
    wrap!(/// std's `AtomicPtr`.
        AtomicPtr<T>, *mut T);
}

/// std's `OnceLock` behind a wrapper (it derefs to it), in both builds:
/// loom has no `OnceLock`, and the values it holds are made once per
/// process, by statics no model touches.
#[cfg_attr(loom, allow(dead_code))]
mod once {
    use std::fmt;
    use std::ops::Deref;

    /// std's `OnceLock`.
    pub(crate) struct OnceLock<T>(std::sync::OnceLock<T>);

    impl<T> OnceLock<T> {
        #[inline]
        pub(crate) const fn new() -> OnceLock<T> {
            OnceLock(std::sync::OnceLock::new())
        }
    }

    impl<T> Deref for OnceLock<T> {
        type Target = std::sync::OnceLock<T>;

        #[inline]
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    impl<T> Default for OnceLock<T> {
        fn default() -> OnceLock<T> {
            OnceLock::new()
        }
    }

    impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&self.0, f)
        }
    }
}

#[cfg(loom)]
mod model {
    #[allow(unused_imports)]
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    };
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

        // Unused in the loom build, which leaves the pool and the port out.
        #[cfg_attr(loom, allow(dead_code))]
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
