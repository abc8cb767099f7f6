//! The port's own queue beside a kernel queue: completions of the crate's
//! requests for which the kernel queues no packet, because the request
//! completed at once on a handle set to skip the port on success, or met
//! the end of a file or pipe at once. The IOCP backend (`sys::windows`)
//! hands them to its waiters without a kernel call while any waiter is
//! busy; the protocol is kept free of OS types so that the loom models at
//! the end of this file check it on any OS.
//!
//! # The protocol
//!
//! The port counts the threads inside a take (`waiting`: from before they
//! first look here until they return, blocked in the kernel or not).
//!
//! - **Push** ([`Ready::push`]): the item goes into the lock-free queue;
//!   then, only if some thread is waiting and no wake-up packet is queued
//!   in the kernel already (`wake_queued`), the pusher posts one. A waiter
//!   counts itself in `waiting` *before* it looks here a last time and
//!   blocks in the kernel, and a push reads `waiting` *after* inserting,
//!   with a sequentially consistent fence on both sides: one of them sees
//!   the other (Dekker), so an item is never left while every waiter is
//!   blocked. A push while every thread is busy costs no kernel call.
//! - **Take**: a waiter looks here ([`Ready::pop`]) before it blocks in the
//!   kernel. One that takes the wake-up packet calls [`Ready::woken`] and
//!   looks here again.
//! - **Deferred push** ([`Ready::push_deferred`]): a pool worker of the
//!   port, inside the callback of a packet it took there, comes back to
//!   take from the port when the callback returns; the first completion it
//!   delivers meanwhile wakes nobody (as on Unix, `sys::queue`), so a
//!   callback whose next request completes at once costs no kernel call.
//!   Should that callback block, the port's periodic duty (every 10 ms)
//!   wakes a waiter for what is left.
//! - **Pass it on** ([`Ready::more`]): a waiter that took what it takes and
//!   leaves items behind while other threads wait posts one more wake-up
//!   (unless one is queued already), so a burst wakes one blocked thread
//!   at a time, each waking the next, and nothing waits behind a busy
//!   thread while another sleeps.
//!
//! The models drive a stand-in for the kernel's queue (a locked deque that
//! blocks its takers) through these calls, in the order the port makes
//! them.

use crate::sync::{fence, AtomicBool, AtomicUsize, Injector, Ordering};

/// The port's own queue of completions (see the module documentation).
pub(crate) struct Ready<T> {
    items: Injector<T>,
    /// A wake-up packet is queued in the kernel and not taken yet.
    wake_queued: AtomicBool,
}

impl<T> Ready<T> {
    pub(crate) fn new() -> Ready<T> {
        Ready { items: Injector::new(), wake_queued: AtomicBool::new(false) }
    }

    /// Queues `item`. True when the caller must post one wake-up packet to
    /// the kernel's queue: a thread counted in `waiting` may be blocked
    /// there, and no wake-up is queued already.
    pub(crate) fn push(&self, item: T, waiting: &AtomicUsize) -> bool {
        self.items.push(item);
        fence(Ordering::SeqCst);
        waiting.load(Ordering::SeqCst) > 0 && self.claim_wake()
    }

    /// Queues `item` with no wake-up: for a thread that will come back to
    /// take from this queue before it waits (a pool worker in a callback
    /// of this port), once per packet it took; the port's periodic duty
    /// wakes a thread for it should that callback block.
    pub(crate) fn push_deferred(&self, item: T) {
        self.items.push(item);
    }

    /// A waiter's look at the queue; the waiter counted itself in `waiting`
    /// first.
    pub(crate) fn pop(&self) -> Option<T> {
        fence(Ordering::SeqCst);
        self.items.pop()
    }

    /// The wake-up packet was taken from the kernel's queue, or could not
    /// be posted: the next push or [`Ready::more`] posts one again.
    pub(crate) fn woken(&self) {
        self.wake_queued.store(false, Ordering::SeqCst);
    }

    /// Called by a waiter after it took its packets, with the number of
    /// other threads waiting: true when it must post a wake-up packet for
    /// one of them (items are left and none is queued already).
    pub(crate) fn more(&self, others: usize) -> bool {
        others > 0 && !self.items.is_empty() && self.claim_wake()
    }

    /// True when no item waits (a hint: a push may be under way).
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the right to post the wake-up packet. The plain load first
    /// skips the write when one is queued already, and is the read the
    /// fences order against [`Ready::woken`] (loom, which models
    /// sequentially consistent read-modify-writes as acquire-release, finds
    /// a lost wake-up without it).
    fn claim_wake(&self) -> bool {
        !self.wake_queued.load(Ordering::SeqCst) && !self.wake_queued.swap(true, Ordering::SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_push_asks_for_one_wake_up_while_someone_waits() {
        let r = Ready::new();
        let waiting = AtomicUsize::new(0);
        assert!(!r.push(1, &waiting), "nobody waits: no kernel call");
        waiting.store(2, Ordering::SeqCst);
        assert!(r.push(2, &waiting), "a waiter may be blocked: one wake-up");
        assert!(!r.push(3, &waiting), "one is queued already");
        r.woken();
        assert_eq!(r.pop(), Some(1));
        assert!(r.more(1), "items left and another waiter: pass it on");
        assert!(!r.more(1));
        r.woken();
        assert!(!r.more(0), "nobody else waits");
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(2), Some(3), None));
        assert!(r.is_empty());
        assert!(!r.more(1), "nothing left");
    }
}

#[cfg(all(test, loom))]
mod models {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release models`.

    use super::*;
    use crate::sync::Arc;
    use std::collections::VecDeque;

    /// What the kernel's queue hands out: a wake-up, or a packet the kernel
    /// queued itself.
    #[derive(Debug, PartialEq)]
    enum Entry {
        Wake,
        Packet(usize),
    }

    /// A stand-in for the kernel's completion queue: takers block until an
    /// entry is there.
    struct Kernel {
        q: loom::sync::Mutex<VecDeque<Entry>>,
        cv: loom::sync::Condvar,
    }

    impl Kernel {
        fn post(&self, e: Entry) {
            self.q.lock().unwrap().push_back(e);
            self.cv.notify_one();
        }

        fn get(&self) -> Entry {
            let mut q = self.q.lock().unwrap();
            loop {
                if let Some(e) = q.pop_front() {
                    return e;
                }
                q = self.cv.wait(q).unwrap();
            }
        }
    }

    struct Port {
        ready: Ready<usize>,
        kernel: Kernel,
        waiting: AtomicUsize,
    }

    impl Port {
        fn new() -> Arc<Port> {
            Arc::new(Port {
                ready: Ready::new(),
                kernel: Kernel { q: loom::sync::Mutex::new(VecDeque::new()), cv: loom::sync::Condvar::new() },
                waiting: AtomicUsize::new(0),
            })
        }

        /// A completion the crate delivers itself.
        fn deliver(&self, v: usize) {
            if self.ready.push(v, &self.waiting) {
                self.kernel.post(Entry::Wake);
            }
        }

        /// One packet, as the port's take gets it: its own queue first,
        /// then the kernel's, passing a wake-up on when it leaves items.
        fn take(&self) -> usize {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let v = loop {
                if let Some(v) = self.ready.pop() {
                    break v;
                }
                match self.kernel.get() {
                    Entry::Wake => self.ready.woken(),
                    Entry::Packet(v) => break v,
                }
            };
            if self.ready.more(self.waiting.load(Ordering::SeqCst) - 1) {
                self.kernel.post(Entry::Wake);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            v
        }
    }

    /// Two completions delivered while two threads take: each is taken
    /// once and nobody stays blocked (loom reports a thread blocked for
    /// ever as a deadlock).
    #[test]
    fn deliveries_reach_blocked_waiters() {
        loom::model(|| {
            let port = Port::new();
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let p = port.clone();
                    loom::thread::spawn(move || p.take())
                })
                .collect();
            port.deliver(1);
            port.deliver(2);
            let mut got: Vec<usize> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
        });
    }

    /// A delivery and a kernel packet with two takers: both are taken,
    /// whichever queue each comes from; a wake-up left over is harmless.
    #[test]
    fn deliveries_and_kernel_packets_are_both_taken() {
        loom::model(|| {
            let port = Port::new();
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let p = port.clone();
                    loom::thread::spawn(move || p.take())
                })
                .collect();
            port.kernel.post(Entry::Packet(7));
            port.deliver(1);
            let mut got: Vec<usize> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            got.sort_unstable();
            assert_eq!(got, [1, 7]);
            assert!(port.ready.is_empty());
        });
    }

    /// A worker defers the wake-up for its own delivery and comes back to
    /// take, while another thread takes and a third delivers: both items
    /// are taken, whoever finds which, and nobody stays blocked.
    #[test]
    fn a_deferred_delivery_is_taken_by_the_worker_that_comes_back() {
        loom::model(|| {
            let port = Port::new();
            let p = port.clone();
            let other = loom::thread::spawn(move || p.take());
            let p = port.clone();
            let deliverer = loom::thread::spawn(move || p.deliver(2));
            port.ready.push_deferred(1);
            let mine = port.take();
            let theirs = other.join().unwrap();
            deliverer.join().unwrap();
            assert_eq!(mine + theirs, 3);
        });
    }

    /// Deliveries from two threads while one thread takes twice: nothing
    /// is lost between its two looks.
    #[test]
    fn one_taker_gets_deliveries_from_two_threads() {
        loom::model(|| {
            let port = Port::new();
            let pushers: Vec<_> = (1..=2)
                .map(|v| {
                    let p = port.clone();
                    loom::thread::spawn(move || p.deliver(v))
                })
                .collect();
            let a = port.take();
            let b = port.take();
            for p in pushers {
                p.join().unwrap();
            }
            assert_eq!(a + b, 3);
        });
    }
}
