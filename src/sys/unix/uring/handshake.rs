//! The handshake between the threads that push submission entries into a
//! ring and a thread that waits in it (checked by the loom models at the
//! end of this file).
//!
//! A thread blocked in `io_uring_enter` waiting for completions sees only
//! the entries that were in the submission queue when it entered: one
//! pushed later waits there until someone submits it, and if nobody does,
//! the waiter waits for ever on a request the kernel never got. So:
//!
//! - a pusher counts its entry (`unsubmitted`) before the kernel can see
//!   it, makes it visible (the queue's tail, a release store), then, after
//!   a `SeqCst` fence, submits it itself when a thread waits (`in_wait`);
//! - a waiter raises `in_wait`, then, after a `SeqCst` fence, enters the
//!   ring (the kernel reads the tail with an acquire load), submitting
//!   whatever is there.
//!
//! The two fences order each side's store before its load: either the
//! pusher sees the flag, or the waiter's enter sees the entry.

use crate::sync::{fence, AtomicBool, AtomicUsize, Ordering};

/// At most how many times a thread that submitted looks again for entries
/// left to it by threads that found it submitting (`Ring::submit_now`):
/// each time it submits what they pushed meanwhile, so this only bounds a
/// thread kept submitting for others by a stream of pushes (it then
/// submits once more without taking the turn, and goes back to its own
/// work).
///
/// The loom models use 1, so that they check the submit after the last
/// round too.
pub(crate) const SUBMIT_ROUNDS: usize = if cfg!(loom) { 1 } else { 64 };

/// What a ring's pushers and its waiter tell each other.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    /// A thread is (about to be) blocked in the ring waiting for entries.
    in_wait: AtomicBool,
    /// Entries pushed and not yet taken by the kernel: counted before an
    /// entry is visible to the kernel, counted down by what each
    /// `io_uring_enter` says it took, so it is never below the truth.
    unsubmitted: AtomicUsize,
    /// A thread is handing pushed entries to the kernel
    /// ([`Handshake::begin_submit`]): another that wants to leaves its
    /// entries to it instead of waiting for the ring's lock in the kernel.
    submitting: AtomicBool,
}

impl Handshake {
    pub(crate) fn new() -> Handshake {
        Handshake {
            in_wait: AtomicBool::new(false),
            unsubmitted: AtomicUsize::new(0),
            submitting: AtomicBool::new(false),
        }
    }

    /// An entry is about to be pushed: counted before the kernel can see
    /// it, so what a submit takes is never more than what was counted.
    pub(crate) fn pushing(&self) {
        self.unsubmitted.fetch_add(1, Ordering::SeqCst);
    }

    /// The entry [`Handshake::pushing`] counted did not go in (the queue
    /// was full).
    pub(crate) fn not_pushed(&self) {
        self.unsubmitted.fetch_sub(1, Ordering::SeqCst);
    }

    /// The kernel took `n` entries; how many are left.
    pub(crate) fn taken(&self, n: usize) -> usize {
        // Never below zero: every entry is counted before the kernel can
        // take it, so this only guards the count against a kernel that
        // says more than it was given.
        let before =
            self.unsubmitted.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| Some(u.saturating_sub(n)));
        before.unwrap_or(0).saturating_sub(n)
    }

    /// Entries were pushed and not yet taken by the kernel.
    pub(crate) fn pending(&self) -> bool {
        self.unsubmitted() > 0
    }

    /// How many entries were pushed and not yet taken (at least).
    pub(crate) fn unsubmitted(&self) -> usize {
        self.unsubmitted.load(Ordering::SeqCst)
    }

    /// After pushed entries were made visible to the kernel: true when
    /// they are not taken yet and a thread waits in the ring, so the caller
    /// must submit them (the waiter's enter may have looked before they
    /// were there).
    pub(crate) fn must_submit(&self) -> bool {
        // Pairs with the fence in `waiting`: either this thread sees the
        // waiter's flag, or the waiter's `io_uring_enter` sees the entry.
        fence(Ordering::SeqCst);
        self.pending() && self.in_wait.load(Ordering::SeqCst)
    }

    /// A thread is about to wait in the ring (its `io_uring_enter`
    /// submits what is in the queue, then waits).
    pub(crate) fn waiting(&self) {
        self.in_wait.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// This thread is to hand the pushed entries to the kernel; false when
    /// another one is doing it now, which looks at the queue again when it
    /// is done ([`Handshake::end_submit`]), so what this thread pushed
    /// before is handed over all the same. Two threads entering one ring to
    /// submit at once only wait for each other on the ring's lock in the
    /// kernel, spinning while the other issues its entries.
    pub(crate) fn begin_submit(&self) -> bool {
        // Pairs with the fence in `end_submit` (this thread's entries were
        // counted before it).
        fence(Ordering::SeqCst);
        self.submitting.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// The submit [`Handshake::begin_submit`] allowed is done: true when
    /// entries are still not taken, which a thread whose `begin_submit`
    /// failed meanwhile may have left to this one, so it must submit again.
    pub(crate) fn end_submit(&self) -> bool {
        // Pairs with the fence of a `begin_submit` that failed:
        // either that thread's exchange comes after this store (and it submits
        // itself), or its entry, counted before its exchange, is seen here.
        self.submitting.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.pending()
    }

    /// The waiting thread is back from the ring.
    pub(crate) fn woke(&self) {
        self.in_wait.store(false, Ordering::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod models {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release models`.
    //!
    //! The kernel's side is a stand-in: the submission queue's tail, which
    //! a pusher publishes with a release store (`SubmissionQueue::sync`),
    //! and the kernel's head, which `io_uring_enter` moves up to the tail
    //! it reads with an acquire load. A waiter whose enter took nothing
    //! stays blocked in the model (in the ring it waits for a completion):
    //! then every entry pushed must have been submitted by its pusher.

    use super::Handshake;
    use crate::sync::{thread, Arc, AtomicUsize, Mutex, Ordering};

    struct Kernel {
        /// The submission queue's tail (pushers write it under `sq`).
        tail: AtomicUsize,
        /// The kernel's head: entries taken so far.
        head: Mutex<usize>,
    }

    struct Ring {
        hs: Handshake,
        sq: Mutex<()>,
        kernel: Kernel,
    }

    impl Ring {
        fn new() -> Arc<Ring> {
            Arc::new(Ring {
                hs: Handshake::new(),
                sq: Mutex::new(()),
                kernel: Kernel { tail: AtomicUsize::new(0), head: Mutex::new(0) },
            })
        }

        /// `Ring::push_entry`: counted, then made visible, under `sq`.
        fn push(&self) {
            let _g = self.sq.lock();
            self.hs.pushing();
            let t = self.kernel.tail.load(Ordering::Relaxed);
            self.kernel.tail.store(t + 1, Ordering::Release);
        }

        /// `Ring::push` then `Ring::pushed` from a thread that is not the
        /// ring's waiter, entering the ring on its own.
        fn push_and_flush(&self) {
            self.push();
            if self.hs.must_submit() {
                self.enter();
            }
        }

        /// `Ring::push` then `Ring::flush` with `Ring::submit_now`'s rule:
        /// one thread submits at a time, another leaves its entries to it.
        fn push_and_flush_combined(&self) {
            self.push();
            if self.hs.must_submit() {
                self.submit_now();
            }
        }

        /// `Ring::submit_now`.
        fn submit_now(&self) {
            for _ in 0..super::SUBMIT_ROUNDS {
                if !self.hs.begin_submit() {
                    return;
                }
                self.enter();
                if !self.hs.end_submit() {
                    return;
                }
                drop(self.sq.lock());
            }
            self.enter();
        }

        /// `io_uring_enter`'s submission: takes what the tail shows.
        fn enter(&self) -> usize {
            let n = {
                let mut head = self.kernel.head.lock();
                let tail = self.kernel.tail.load(Ordering::Acquire);
                let n = tail - *head;
                *head = tail;
                n
            };
            self.hs.taken(n);
            n
        }

        /// `Ring::poll` without a deadline: true when it stayed blocked
        /// (its enter took nothing, so it waits for a completion).
        fn poll(&self) -> bool {
            self.hs.waiting();
            let took = self.enter();
            if took == 0 {
                return true;
            }
            self.hs.woke();
            false
        }

        fn taken(&self) -> usize {
            *self.kernel.head.lock()
        }
    }

    fn pushers_and_a_waiter(pushers: usize) {
        pushers_and_a_waiter_with(pushers, Ring::push_and_flush);
    }

    fn pushers_and_a_waiter_with(pushers: usize, push: fn(&Ring)) {
        loom::model(move || {
            let ring = Ring::new();
            let threads: Vec<_> = (0..pushers)
                .map(|_| {
                    let ring = ring.clone();
                    thread::spawn(move || push(&ring))
                })
                .collect();
            let blocked = ring.poll();
            for t in threads {
                t.join().unwrap();
            }
            if blocked {
                assert_eq!(
                    ring.taken(),
                    pushers,
                    "an entry waits in the queue while a thread waits in the ring"
                );
            }
            assert_eq!(ring.hs.unsubmitted(), pushers - ring.taken(), "the count is the entries not taken");
        });
    }

    /// S36 (io_uring runs every request the tests start): an entry pushed
    /// while a thread blocks in the ring reaches the kernel.
    #[test]
    fn s36_an_entry_pushed_as_a_thread_waits_in_the_ring_is_submitted() {
        pushers_and_a_waiter(1);
    }

    /// The same with two pushers racing for the submission queue.
    #[test]
    fn s36_entries_pushed_by_two_threads_as_one_waits_are_all_submitted() {
        pushers_and_a_waiter(2);
    }

    /// The same when pushers submit one at a time (`Ring::submit_now`): a
    /// pusher that finds another submitting leaves its entry to it, and
    /// that one looks again when it is done, so nothing waits in the queue
    /// while a thread waits in the ring.
    #[test]
    fn s36_entries_left_to_the_thread_submitting_are_submitted() {
        pushers_and_a_waiter_with(2, Ring::push_and_flush_combined);
    }
}
