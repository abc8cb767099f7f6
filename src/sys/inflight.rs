//! Who may use a handle's OS object, and which of its requests are in
//! flight, with no lock and no allocation on a request's path: the
//! bookkeeping of the IOCP backend (`sys::windows`), kept free of OS types
//! so that the loom models at the end of this file check it on any OS.
//!
//! # The gate: one atomic word per handle
//!
//! [`Gate`] holds the handle's CLOSED and PORT_CLOSED bits, the number of
//! users of its OS object (a start from its checks until its OS call
//! returned, a cancel, a borrow lent to the user's code), and an epoch.
//!
//! - A user enters with one `fetch_add`, which also tells it the flags and
//!   the epoch, and leaves with one `fetch_sub`. A user that finds CLOSED
//!   leaves at once; a start that finds PORT_CLOSED gives up.
//! - [`Gate::close`] sets CLOSED and waits until no user is left. No user
//!   can enter after that, so the closer alone may then close the OS
//!   object, and nothing can start on a closed (or reused) OS handle.
//!   [`Gate::close_port`] does the same with PORT_CLOSED, so that every
//!   start that passed its check has handed its request to the OS before
//!   the port's close cancels what the OS holds. A waiter registers its
//!   thread, then sets WAITING; the user whose leave takes the count to
//!   zero with WAITING set unparks the waiters (both sides are sequentially
//!   consistent read-modify-writes of the one word, so one sees the other).
//! - `cancel_all` advances the epoch ([`Gate::next_epoch`]). A start
//!   records the epoch it entered with beside its request, and `cancel_all`
//!   cancels only requests of its own epoch or earlier: the ones whose start
//!   entered before it, never one that began after it.
//!
//! # Pending requests: [`Pending`]
//!
//! A handle's requests from just before their OS call until their packet
//! is taken, by the address of their `OVERLAPPED`: the port tells the
//! crate's packets from foreign ones by that address (S39), and `cancel`
//! finds a request's address by its id. [`INLINE`] slots of atomics hold
//! them, each claimed by a compare-and-swap; more requests in flight at
//! once go to an overflow list under a lock, which the taker of a packet
//! looks at only when the list is not empty.
//!
//! A slot holds 0 (free), `FILLING` (claimed, being written), or an
//! address (a multiple of 8), with the `PIN` bit set while a cancel holds
//! it. The taker of a packet frees a slot only when it holds exactly the
//! packet's address, unpinned; a pinned slot is waited for. So while a
//! cancel holds a slot, the request in it cannot be taken, completed and
//! freed, its address cannot be reused by a newer request, and the id and
//! epoch beside it are the request's own: `CancelIoEx` on that address can
//! only name that request.
//!
//! # The handles of a port: [`Table`]
//!
//! A packet's completion key names the handle (`1 +` its index in the
//! port's table). The table's entries (each a [`Pending`]) live in
//! segments that are allocated once and freed only with the table, so a
//! packet's key is turned into its entry with two loads and no lock, even
//! while handles come and go. An index whose handle is gone is recycled
//! for the next handle; a late packet with the old key then finds its
//! address in no entry and is foreign, as before.

use crate::sync::{thread, AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering};

const CLOSED: u64 = 1;
const PORT_CLOSED: u64 = 1 << 1;
const WAITING: u64 = 1 << 2;
const USER: u64 = 1 << 3;
/// The users' count: bits 3 to 47.
const USERS: u64 = ((1 << 48) - 1) & !(USER - 1);
/// One `cancel_all`: the epoch is the top 16 bits.
const EPOCH_ONE: u64 = 1 << 48;

/// The epoch in a gate word.
fn epoch_of(word: u64) -> u64 {
    word >> 48
}

/// True when a request of epoch `request` started before the `cancel_all`
/// that advanced the epoch from `cancel` (16-bit epochs that wrap: a
/// request is "before" when it is at most 2^15 epochs older).
fn not_after(request: u64, cancel: u64) -> bool {
    cancel.wrapping_sub(request) & 0xffff < 0x8000
}

/// The gate of one handle (see the module documentation).
pub(crate) struct Gate {
    word: AtomicU64,
    /// Threads waiting in `close` or `close_port` for the users to leave.
    waiters: Mutex<Vec<thread::Thread>>,
}

/// One user of a handle's OS object; leaves the gate when dropped.
pub(crate) struct User<'a> {
    gate: &'a Gate,
    word: u64,
}

impl User<'_> {
    /// True when the handle's port was closed before this user entered.
    pub(crate) fn port_closed(&self) -> bool {
        self.word & PORT_CLOSED != 0
    }

    /// The epoch this user entered in (for [`Pending::insert`]).
    pub(crate) fn epoch(&self) -> u64 {
        epoch_of(self.word)
    }
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let before = self.gate.word.fetch_sub(USER, Ordering::SeqCst);
        if before & WAITING != 0 && before & USERS == USER {
            for t in self.gate.waiters.lock().drain(..) {
                t.unpark();
            }
        }
    }
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate { word: AtomicU64::new(0), waiters: Mutex::new(Vec::new()) }
    }

    /// Enters as a user of the OS object; `None` once the handle is closed.
    pub(crate) fn enter(&self) -> Option<User<'_>> {
        let word = self.word.fetch_add(USER, Ordering::SeqCst);
        let user = User { gate: self, word };
        (word & CLOSED == 0).then_some(user)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Closes the gate: no user enters from now on. Returns once every user
    /// has left, true for the first close (whose caller then owns the OS
    /// object alone), false when it was closed before.
    pub(crate) fn close(&self) -> bool {
        if self.word.fetch_or(CLOSED, Ordering::SeqCst) & CLOSED != 0 {
            return false;
        }
        self.wait_unused();
        true
    }

    /// Marks the port closed (starts give up from now on) and returns once
    /// every user that entered before has left.
    pub(crate) fn close_port(&self) {
        self.word.fetch_or(PORT_CLOSED, Ordering::SeqCst);
        self.wait_unused();
    }

    /// Advances the epoch for a `cancel_all`; returns the epoch it ends
    /// (requests of that epoch or earlier started before the call).
    pub(crate) fn next_epoch(&self) -> u64 {
        epoch_of(self.word.fetch_add(EPOCH_ONE, Ordering::SeqCst))
    }

    fn wait_unused(&self) {
        let me = thread::current();
        while self.word.load(Ordering::SeqCst) & USERS != 0 {
            self.waiters.lock().push(me.clone());
            if self.word.fetch_or(WAITING, Ordering::SeqCst) & USERS == 0 {
                break;
            }
            thread::park();
        }
        self.waiters.lock().retain(|t| t.id() != me.id());
    }
}

/// Requests in flight in the inline slots of one handle; more go to the
/// overflow list.
pub(crate) const INLINE: usize = 4;

const FREE: usize = 0;
const PIN: usize = 1;
const FILLING: usize = 2;

struct InlineEntry {
    addr: AtomicUsize,
    id: AtomicU64,
    epoch: AtomicU64,
}

/// One pending request in the overflow list: address, id, epoch.
type Spilled = (usize, u64, u64);

/// The requests of one handle in flight (see the module documentation).
pub(crate) struct Pending {
    slots: [InlineEntry; INLINE],
    /// Entries in `more`, so that a taker looks at it only when needed.
    spilled: AtomicUsize,
    more: Mutex<Vec<Spilled>>,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            slots: std::array::from_fn(|_| InlineEntry {
                addr: AtomicUsize::new(FREE),
                id: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
            }),
            spilled: AtomicUsize::new(0),
            more: Mutex::new(Vec::new()),
        }
    }
}

impl Pending {
    /// Records a request about to be handed to the OS: its address (a
    /// nonzero multiple of 8, unique among live requests), id and epoch.
    pub(crate) fn insert(&self, addr: usize, id: u64, epoch: u64) {
        debug_assert!(addr != 0 && addr % 8 == 0, "an OVERLAPPED address");
        for s in &self.slots {
            if s.addr.load(Ordering::Relaxed) == FREE
                && s.addr.compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                s.id.store(id, Ordering::Relaxed);
                s.epoch.store(epoch, Ordering::Relaxed);
                s.addr.store(addr, Ordering::Release);
                return;
            }
        }
        let mut more = self.more.lock();
        more.push((addr, id, epoch));
        self.spilled.store(more.len(), Ordering::Release);
    }

    /// Takes the request at `addr` out; false when no request of this
    /// handle has that address. Waits while a cancel holds it.
    pub(crate) fn take(&self, addr: usize) -> bool {
        for s in &self.slots {
            loop {
                let v = s.addr.load(Ordering::Acquire);
                if v & !PIN != addr {
                    break;
                }
                if v & PIN == 0
                    && s.addr.compare_exchange(addr, FREE, Ordering::AcqRel, Ordering::Acquire).is_ok()
                {
                    return true;
                }
                // Held by a cancel for the length of one OS call.
                thread::yield_now();
            }
        }
        if self.spilled.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut more = self.more.lock();
        let Some(i) = more.iter().position(|e| e.0 == addr) else { return false };
        more.swap_remove(i);
        self.spilled.store(more.len(), Ordering::Release);
        true
    }

    /// Pins the slot `s` unless it is free or being filled; waits while
    /// another cancel holds it. Returns the address pinned.
    fn pin(s: &InlineEntry) -> Option<usize> {
        loop {
            let v = s.addr.load(Ordering::Acquire);
            if v == FREE || v == FILLING {
                return None;
            }
            if v & PIN == 0
                && s.addr.compare_exchange(v, v | PIN, Ordering::Acquire, Ordering::Acquire).is_ok()
            {
                return Some(v);
            }
            thread::yield_now();
        }
    }

    fn unpin(s: &InlineEntry, addr: usize) {
        s.addr.store(addr, Ordering::Release);
    }

    /// Runs `f` on the address of the request `id` while its packet cannot
    /// be taken (so the address names that request until `f` returns);
    /// `None` when no request of this handle has that id.
    pub(crate) fn with_id<R>(&self, id: u64, f: impl FnOnce(usize) -> R) -> Option<R> {
        for s in &self.slots {
            let Some(addr) = Pending::pin(s) else { continue };
            if s.id.load(Ordering::Relaxed) == id {
                let r = f(addr);
                Pending::unpin(s, addr);
                return Some(r);
            }
            Pending::unpin(s, addr);
        }
        let more = self.more.lock();
        more.iter().find(|e| e.1 == id).map(|e| f(e.0))
    }

    /// Runs `f` on the address of each request of epoch `epoch` or earlier,
    /// each while its packet cannot be taken; returns how many times `f`
    /// returned true.
    pub(crate) fn each_until(&self, epoch: u64, mut f: impl FnMut(usize) -> bool) -> usize {
        let mut n = 0;
        for s in &self.slots {
            let Some(addr) = Pending::pin(s) else { continue };
            if not_after(s.epoch.load(Ordering::Relaxed), epoch) && f(addr) {
                n += 1;
            }
            Pending::unpin(s, addr);
        }
        let more = self.more.lock();
        n + more.iter().filter(|e| not_after(e.2, epoch) && f(e.0)).count()
    }

    /// True when no request is recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.addr.load(Ordering::Acquire) == FREE)
            && self.spilled.load(Ordering::Acquire) == 0
    }
}

/// Entries in the first segment of a [`Table`]; segment `k` has
/// `FIRST << k`.
#[cfg(not(loom))]
const FIRST: usize = 16;
#[cfg(loom)]
const FIRST: usize = 2;
const SEGMENTS: usize = 32;

/// The segment and the place in it of entry `i`.
fn locate(i: usize) -> (usize, usize) {
    let n = i / FIRST + 1;
    let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (k, i - FIRST * ((1 << k) - 1))
}

struct Owners<W> {
    /// The owner of each entry in use.
    used: Vec<Option<W>>,
    /// Entries free for the next claim.
    free: Vec<usize>,
}

/// The handles of one port: a [`Pending`] per handle, found by index with
/// no lock (see the module documentation), and each entry's owner `W`,
/// under a lock, for whoever needs them all (the port's close).
pub(crate) struct Table<W> {
    segments: [AtomicPtr<Pending>; SEGMENTS],
    owners: Mutex<Owners<W>>,
}

impl<W> Table<W> {
    pub(crate) fn new() -> Table<W> {
        Table {
            segments: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            owners: Mutex::new(Owners { used: Vec::new(), free: Vec::new() }),
        }
    }

    /// An entry for `owner`, with its pending requests empty; `None` when
    /// the table is full. `check` runs first under the table's lock, and
    /// nothing is claimed when it fails (the port uses it to refuse a bind
    /// once its close began, ordered against [`Table::owners`]).
    pub(crate) fn claim<E>(
        &self,
        owner: W,
        check: impl FnOnce() -> Result<(), E>,
    ) -> Result<Option<usize>, E> {
        let mut o = self.owners.lock();
        check()?;
        let i = match o.free.pop() {
            Some(i) => i,
            None => o.used.len(),
        };
        let (k, _) = locate(i);
        if k >= SEGMENTS {
            return Ok(None);
        }
        if self.segments[k].load(Ordering::Acquire).is_null() {
            let segment: Box<[Pending]> = (0..FIRST << k).map(|_| Pending::default()).collect();
            self.segments[k].store(Box::into_raw(segment).cast::<Pending>(), Ordering::Release);
        }
        if i == o.used.len() {
            o.used.push(Some(owner));
        } else {
            o.used[i] = Some(owner);
        }
        Ok(Some(i))
    }

    /// Gives entry `i` back; its pending requests must all have been taken.
    pub(crate) fn release(&self, i: usize) {
        debug_assert!(
            self.get(i).is_some_and(Pending::is_empty),
            "an entry released with requests in flight"
        );
        let mut o = self.owners.lock();
        if let Some(slot @ Some(_)) = o.used.get_mut(i) {
            *slot = None;
            o.free.push(i);
        }
    }

    /// The pending requests of entry `i`, if that entry was ever claimed.
    pub(crate) fn get(&self, i: usize) -> Option<&Pending> {
        let (k, at) = locate(i);
        let segment = self.segments.get(k)?.load(Ordering::Acquire);
        if segment.is_null() {
            return None;
        }
        // SAFETY: a non-null segment `k` is an allocation of `FIRST << k`
        // entries (`at` is below that by `locate`), published with release
        // after it was made and freed only when the table is dropped, which
        // no shared borrow outlives.
        Some(unsafe { &*segment.add(at) })
    }

    /// `f` of the owner of every entry in use, under the table's lock.
    pub(crate) fn owners<R>(&self, mut f: impl FnMut(&W) -> Option<R>) -> Vec<R> {
        self.owners.lock().used.iter().flatten().filter_map(&mut f).collect()
    }
}

impl<W> Drop for Table<W> {
    fn drop(&mut self) {
        for (k, s) in self.segments.iter().enumerate() {
            let p = s.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: made in `claim` from a boxed slice of exactly
                // `FIRST << k` entries, freed once, here.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, FIRST << k)) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    #[test]
    fn entries_are_found_in_their_segments() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(FIRST - 1), (0, FIRST - 1));
        assert_eq!(locate(FIRST), (1, 0));
        assert_eq!(locate(3 * FIRST - 1), (1, 2 * FIRST - 1));
        assert_eq!(locate(3 * FIRST), (2, 0));
        let t: Table<u32> = Table::new();
        let ids: Vec<usize> = (0..100).map(|n| t.claim(n, || Ok::<(), ()>(())).unwrap().unwrap()).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(t.get(99).is_some());
        t.release(42);
        assert_eq!(t.claim(7, || Ok::<(), ()>(())).unwrap(), Some(42), "a freed entry is reused");
        assert_eq!(t.owners(|&w| Some(w)).len(), 100);
        assert_eq!(t.claim(0, || Err::<(), _>("refused")), Err("refused"));
    }

    #[test]
    fn requests_past_the_inline_slots_spill_and_come_back() {
        let p = Pending::default();
        let addrs: Vec<usize> = (1..=10).map(|i| i * 8).collect();
        for (i, &a) in addrs.iter().enumerate() {
            p.insert(a, i as u64, 0);
        }
        assert_eq!(p.with_id(7, |a| a), Some(64));
        assert_eq!(p.with_id(2, |a| a), Some(24));
        assert_eq!(p.with_id(99, |a| a), None);
        assert_eq!(p.each_until(0, |_| true), 10);
        for &a in addrs.iter().rev() {
            assert!(p.take(a));
            assert!(!p.take(a), "taken once");
        }
        assert!(p.is_empty());
        assert!(!p.take(8), "an address never inserted is foreign");
    }

    #[test]
    fn epochs_wrap() {
        assert!(not_after(5, 5));
        assert!(not_after(4, 5));
        assert!(!not_after(6, 5));
        assert!(not_after(0xffff, 0x0001), "an epoch from before the wrap");
        assert!(!not_after(0x0002, 0xffff));
    }

    /// Many threads insert and take their own requests while another
    /// cancels by id: every request is taken exactly once.
    #[test]
    fn concurrent_inserts_takes_and_cancels_lose_nothing() {
        let p = Arc::new(Pending::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let addr = ((t * 10_000 + i + 1) * 8) as usize;
                        p.insert(addr, addr as u64, 0);
                        let _ = p.with_id(addr as u64 - 8, |a| a);
                        assert!(p.take(addr));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(p.is_empty());
    }

    #[test]
    fn a_closed_gate_waits_for_its_users_and_admits_none() {
        let g = Arc::new(Gate::new());
        let u = g.enter().unwrap();
        assert_eq!(u.epoch(), 0);
        let g2 = g.clone();
        let closer = std::thread::spawn(move || g2.close());
        // The closer cannot finish while `u` is inside; it finishes once
        // `u` leaves (no timing: the join below would hang otherwise).
        drop(u);
        assert!(closer.join().unwrap());
        assert!(g.enter().is_none());
        assert!(g.is_closed());
        assert!(!g.close(), "closed once");
    }
}

#[cfg(all(test, loom))]
mod models {
    //! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release models`.

    use super::*;
    use crate::sync::{Arc, AtomicBool};

    /// A start racing a close: a start that entered uses the OS object
    /// while it is open, and the close closes it only after every such
    /// start left; a start after the close is refused.
    #[test]
    fn a_close_never_closes_under_a_start() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let open = Arc::new(AtomicBool::new(true));
            let (g, o) = (gate.clone(), open.clone());
            let start = loom::thread::spawn(move || match g.enter() {
                Some(_user) => {
                    assert!(o.load(Ordering::SeqCst), "used after the close");
                    true
                }
                None => false,
            });
            if gate.close() {
                open.store(false, Ordering::SeqCst);
            }
            start.join().unwrap();
            assert!(gate.enter().is_none());
        });
    }

    /// The port's close racing two starts: a start either sees PORT_CLOSED
    /// and gives up, or has handed its request over (`issued`) before the
    /// close goes on to cancel.
    #[test]
    fn a_port_close_waits_for_the_starts_that_passed() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let issued = Arc::new(AtomicUsize::new(0));
            let starts: Vec<_> = (0..2)
                .map(|_| {
                    let (g, n) = (gate.clone(), issued.clone());
                    loom::thread::spawn(move || {
                        let user = g.enter().unwrap();
                        if !user.port_closed() {
                            n.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            gate.close_port();
            let seen = issued.load(Ordering::SeqCst);
            for s in starts {
                s.join().unwrap();
            }
            assert_eq!(issued.load(Ordering::SeqCst), seen, "a start issued after the port's close");
        });
    }

    /// A cancel racing the take of the same request: while the cancel holds
    /// the address, the request is not taken (so not freed); the take
    /// happens exactly once; the cancel finds the request or nothing.
    #[test]
    fn a_cancel_holds_its_request_against_the_taker() {
        loom::model(|| {
            let p = Arc::new(Pending::default());
            let freed = Arc::new(AtomicBool::new(false));
            p.insert(8, 1, 0);
            let (p2, f2) = (p.clone(), freed.clone());
            let taker = loom::thread::spawn(move || {
                assert!(p2.take(8));
                f2.store(true, Ordering::SeqCst);
            });
            let found = p.with_id(1, |a| {
                assert_eq!(a, 8);
                assert!(!freed.load(Ordering::SeqCst), "the request was freed under the cancel");
            });
            taker.join().unwrap();
            assert!(!p.take(8));
            let _ = found;
        });
    }

    /// A slot freed by a take and refilled by a newer request at the same
    /// address while a cancel looks for the older id: the cancel never
    /// takes the newer request for the older one.
    #[test]
    fn a_reused_address_is_not_cancelled_for_the_old_id() {
        loom::model(|| {
            let p = Arc::new(Pending::default());
            p.insert(8, 1, 0);
            let p2 = p.clone();
            let reuse = loom::thread::spawn(move || {
                assert!(p2.take(8));
                p2.insert(8, 2, 0);
            });
            if let Some(addr) = p.with_id(1, |a| a) {
                assert_eq!(addr, 8);
            }
            reuse.join().unwrap();
            assert_eq!(p.with_id(1, |a| a), None);
            assert_eq!(p.with_id(2, |a| a), Some(8));
        });
    }

    /// `cancel_all` racing a start: a request whose start finished before
    /// is cancelled; the racing one only if it entered before the epoch
    /// moved, never one that entered after.
    #[test]
    fn cancel_all_cancels_what_started_before_it() {
        loom::model(|| {
            let gate = Arc::new(Gate::new());
            let p = Arc::new(Pending::default());
            // Started before cancel_all is called.
            {
                let u = gate.enter().unwrap();
                p.insert(8, 1, u.epoch());
            }
            let (g, p2) = (gate.clone(), p.clone());
            let start = loom::thread::spawn(move || {
                let u = g.enter().unwrap();
                p2.insert(16, 2, u.epoch());
                u.epoch()
            });
            let e = gate.next_epoch();
            let mut cancelled = Vec::new();
            p.each_until(e, |a| {
                cancelled.push(a);
                true
            });
            let racing = start.join().unwrap();
            assert!(cancelled.contains(&8), "a request started before was not cancelled");
            if cancelled.contains(&16) {
                assert!(not_after(racing, e), "a request started after was cancelled");
            }
        });
    }
}
