//! The io_uring driver (Linux, S36): true completions.
//!
//! A ring per port, and with `IOCOMPLETION_IO_URING_RINGS=worker` one per
//! pool worker of the port: a request started by a worker
//! goes into the worker's ring ([`Ring::for_start`]), any other into the
//! port's. A request becomes one submission entry whose `user_data` is the
//! request's address; the kernel owns the request (and its buffer) until
//! its completion entry comes back, which is the request's one completion
//! (S2), whoever wins a cancel race.
//!
//! Who submits: entries are pushed under their ring's submission lock and
//! handed to the kernel by the next `io_uring_enter`. The thread that polls
//! the port's ring makes that call anyway (submit and wait in one call). A
//! pool worker hands its own ring's entries over when it comes back to the
//! port and finds nothing to take, every [`HOLD_RETURNS`] returns, or
//! before it sleeps ([`Ring::returned`], [`Ring::before_sleep`]); with the
//! shared ring it leaves them for its return ([`Ring::flush`]). Any other
//! thread submits at once when a thread is blocked in the port's ring.
//!
//! Who reaps: a worker its own ring, when it comes back; the thread that
//! polls the port's ring (one at a time, by the port's queue) that ring,
//! and a sleeping or exited worker's ring when its eventfd fires; the
//! pool's gate a ring whose owner is stuck in a callback
//! ([`Ring::maintain`]). Each completion entry becomes a packet in the
//! port's queue. docs/backends.md gives the design.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue::Entry, types, IoUring, Probe};
use rustc_hash::FxHashMap;
use socket2::SockAddr;

use super::op::{
    accepted, failed, is_write_side, read_iov, sent, status_of, write_iov, Completions, ABORTED,
};
use crate::request::Packet;
use crate::request::{Header, Request};
use crate::shared::status::Status;
use crate::shared::HandleKind;
use crate::shared::Op;
use crate::shared::RequestId;
use crate::sync::{fence, Arc, AtomicBool, AtomicUsize, Mutex, Ordering, Weak};

mod handshake;
use handshake::Handshake;

/// `user_data` of the entry that wakes a blocked poller.
const WAKE: u64 = 0;
/// `user_data` of cancel entries (their own completions carry nothing).
const CANCEL: u64 = 1;
/// Low bits of the `user_data` of a port ring's poll of a worker ring's
/// eventfd: the worker ring's address with this tag (requests and rings
/// are aligned to 8, so a request's address never carries it).
const WORKER_TAG: u64 = 2;

/// How long a port's close waits for the requests it cancelled before it
/// gives up on those the kernel still holds (as IOCP's backend does).
pub(crate) const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Submission queue entries; completion queue entries are four times as
/// many.
const ENTRIES: u32 = 1024;
/// Submission queue entries of a worker's ring (its completion queue has
/// four times as many): one thread's batch between two returns.
const WORKER_ENTRIES: u32 = 256;
/// A worker that keeps finding items in the port's queue hands its ring's
/// entries to the kernel at least every this many returns.
const HOLD_RETURNS: usize = 16;

/// How many times a push into a full submission queue tries a kernel that
/// takes nothing (`EBUSY`, `EAGAIN`) with no completion entry to take
/// before it fails the start with that error.
const BUSY_TRIES: usize = 64;

/// The environment variable that picks the Linux driver: `io_uring`,
/// `epoll`, or `auto` (the default: io_uring where it works).
pub(crate) const DRIVER_VAR: &str = "IOCOMPLETION_DRIVER";
/// Test seam: set to an errno (`EPERM`, `ENOSYS`, `ENOMEM` or a number),
/// the io_uring probe reports that refusal instead of asking the kernel.
pub(crate) const REFUSE_VAR: &str = "IOCOMPLETION_IO_URING_REFUSE";
/// The environment variable that picks the rings and their setup flags:
/// `shared` (the default: every request in the port's ring, set up with
/// `COOP_TASKRUN | TASKRUN_FLAG` where the kernel grants them),
/// `shared-signal` (the port's ring with the kernel's default task work,
/// which interrupts the submitting thread for each completion: the setup
/// before, kept to measure against), `worker` (each pool worker's requests
/// in a ring of its own, no flags) and `worker-coop` (the workers' rings
/// with `COOP_TASKRUN | TASKRUN_FLAG`).
pub(crate) const RINGS_VAR: &str = "IOCOMPLETION_IO_URING_RINGS";

/// The opcodes the driver uses; a kernel missing one is not used.
const NEEDED: [(u8, &str); 13] = [
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// Where a port's pool workers start their requests, and the rings' setup
/// flags (see [`RINGS_VAR`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Rings {
    /// In the port's ring, set up with `COOP_TASKRUN | TASKRUN_FLAG`.
    Shared,
    /// In the port's ring, set up with no flags.
    SharedSignal,
    /// In rings of their own, set up with no flags.
    Worker,
    /// In rings of their own, set up with `COOP_TASKRUN | TASKRUN_FLAG`.
    WorkerCoop,
}

/// The `IOCOMPLETION_IO_URING_RINGS` setting (see [`RINGS_VAR`]).
pub(crate) fn rings_setting() -> io::Result<Rings> {
    match std::env::var(RINGS_VAR).unwrap_or_default().as_str() {
        "" | "shared" => Ok(Rings::Shared),
        "shared-signal" => Ok(Rings::SharedSignal),
        "worker" => Ok(Rings::Worker),
        "worker-coop" => Ok(Rings::WorkerCoop),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{RINGS_VAR}={other:?}: expected shared, shared-signal, worker or worker-coop"),
        )),
    }
}

/// A port's ring.
pub(crate) struct Ring {
    ring: IoUring,
    /// Held to push entries (the submission queue has one writer at a time).
    sq: Mutex<()>,
    /// Held to take completion entries; the ones the last poll took, for
    /// its dispatch.
    cq: Mutex<Vec<(u64, i32)>>,
    /// Entries pushed and not yet taken by the kernel, and whether a
    /// thread waits in the ring (see `handshake`).
    hs: Handshake,
    /// Requests in the kernel (their completion entry not yet taken), in
    /// every ring of the port: a worker's ring shares its port ring's count.
    in_flight: Arc<AtomicUsize>,
    /// Requests still in the kernel when a close gave up waiting for them.
    leaked: AtomicUsize,
    /// A worker's ring: its eventfd and return count. `None`: the port's.
    worker: Option<WorkerPart>,
    /// The port's ring: its workers' rings (never dropped before it, so
    /// the address a request or a poll entry holds stays valid), and those
    /// free for a worker (their thread exited). Empty in a worker's ring.
    workers: Mutex<Vec<Arc<Ring>>>,
    free: Arc<Mutex<Vec<Arc<Ring>>>>,
    /// The port's ring: pool workers start requests in rings of their own.
    per_worker: bool,
    /// The port's ring: its workers' rings are set up with
    /// `COOP_TASKRUN | TASKRUN_FLAG` (the kernel granted them).
    coop: bool,
    /// Its `io_uring_enter` calls and what they returned (`metrics`).
    pub(crate) os: crate::shared::OsCounters,
}

/// What a worker's ring has beside the port's.
struct WorkerPart {
    /// Registered with the ring (the kernel counts its completions there
    /// while its owner lets it), watched by a poll in the port's ring.
    efd: OwnedFd,
    /// Bumped each time the owner comes back to the port (and reaps).
    returns: AtomicUsize,
    /// `returns` as the pool's gate last saw it.
    seen: AtomicUsize,
    /// Returns since the owner last handed its entries to the kernel.
    held: AtomicUsize,
    /// The kernel counts completions in `efd` (the owner sleeps, or left).
    efd_on: AtomicBool,
}

/// Where a request goes: the port's ring, or the calling worker's own.
pub(crate) enum Target<'a> {
    Port(&'a Ring),
    Mine(Arc<Ring>),
}

impl std::ops::Deref for Target<'_> {
    type Target = Ring;

    fn deref(&self) -> &Ring {
        match self {
            Target::Port(r) => r,
            Target::Mine(r) => r,
        }
    }
}

/// A pool worker's own ring, and the free list of its port's ring, where
/// it goes back when the thread exits.
struct Mine {
    ring: Arc<Ring>,
    free: Weak<Mutex<Vec<Arc<Ring>>>>,
}

impl Drop for Mine {
    fn drop(&mut self) {
        // The kernel cancels this thread's requests once it exits: their
        // entries must reach the port's poller, which restarts them.
        self.ring.set_eventfd(true);
        if let Some(free) = self.free.upgrade() {
            free.lock().push(self.ring.clone());
        }
    }
}

thread_local! {
    static MINE: std::cell::RefCell<Option<Mine>> = const { std::cell::RefCell::new(None) };
}

fn refused(errno: i32, why: &str) -> String {
    format!("{why}: {}", io::Error::from_raw_os_error(errno))
}

impl Ring {
    /// A ring, or why io_uring cannot serve (the reason the port falls
    /// back to epoll): the kernel refused (`ENOSYS`, `EPERM` as under a
    /// seccomp profile, `ENOMEM` from `RLIMIT_MEMLOCK`) or lacks a feature.
    ///
    /// `rings`: where pool workers start their requests (see
    /// [`rings_setting`]).
    pub(crate) fn open(rings: Rings) -> Result<Ring, String> {
        // Asked for only if the kernel grants the flags.
        let coop = matches!(rings, Rings::WorkerCoop | Rings::Shared)
            && IoUring::<Entry>::builder().setup_coop_taskrun().setup_taskrun_flag().build(2).is_ok();
        let mut ring =
            Ring::setup(ENTRIES, Arc::new(AtomicUsize::new(0)), None, coop && rings == Rings::Shared)?;
        ring.per_worker = matches!(rings, Rings::Worker | Rings::WorkerCoop);
        ring.coop = coop;
        Ok(ring)
    }

    /// A ring of `entries`, counting its requests in `in_flight`; with
    /// `efd`, a worker's ring whose completions `efd` counts.
    /// With `coop`, the ring is set up with `COOP_TASKRUN | TASKRUN_FLAG`.
    fn setup(
        entries: u32,
        in_flight: Arc<AtomicUsize>,
        efd: Option<OwnedFd>,
        coop: bool,
    ) -> Result<Ring, String> {
        if let Ok(v) = std::env::var(REFUSE_VAR) {
            let errno = match v.as_str() {
                "EPERM" => libc::EPERM,
                "ENOSYS" => libc::ENOSYS,
                "ENOMEM" => libc::ENOMEM,
                other => other.parse().unwrap_or(libc::EPERM),
            };
            return Err(refused(errno, &format!("io_uring_setup refused ({REFUSE_VAR} is set)")));
        }
        let mut builder = IoUring::builder();
        if coop {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        let ring = builder
            .setup_cqsize(entries * 4)
            .build(entries)
            .map_err(|e| format!("io_uring_setup refused: {e}"))?;
        if !ring.params().is_feature_ext_arg() {
            return Err("the kernel's io_uring has no timed wait (IORING_FEAT_EXT_ARG, Linux 5.11)".into());
        }
        if !ring.params().is_feature_nodrop() {
            return Err("the kernel's io_uring may drop completions (no IORING_FEAT_NODROP)".into());
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| format!("io_uring probe refused: {e}"))?;
        if let Some((_, name)) = NEEDED.iter().find(|(code, _)| !probe.is_supported(*code)) {
            return Err(format!("the kernel's io_uring lacks IORING_OP_{name}"));
        }
        if let Some(efd) = &efd {
            ring.submitter()
                .register_eventfd(efd.as_raw_fd())
                .map_err(|e| format!("eventfd refused: {e}"))?;
        }
        let worker = efd.map(|efd| WorkerPart {
            efd,
            returns: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            efd_on: AtomicBool::new(true),
        });
        Ok(Ring {
            ring,
            sq: Mutex::new(()),
            cq: Mutex::new(Vec::new()),
            hs: Handshake::new(),
            in_flight,
            leaked: AtomicUsize::new(0),
            worker,
            workers: Mutex::new(Vec::new()),
            free: Arc::new(Mutex::new(Vec::new())),
            per_worker: false,
            coop: false,
            os: Default::default(),
        })
    }

    /// The `io_uring_enter` calls of the port's ring and of every worker's
    /// ring it made, what they returned and the overflows (`metrics`).
    pub(crate) fn os_snapshot(&self) -> crate::shared::OsMetrics {
        let mut all = self.os.snapshot();
        for w in self.workers.lock().iter() {
            let m = w.os.snapshot();
            all.entries += m.entries;
            all.completions += m.completions;
            all.overflows += m.overflows;
        }
        all
    }

    /// How the port's rings are set up, for [`DriverInfo`](crate::shared::DriverInfo).
    pub(crate) fn describe(&self) -> String {
        match (self.per_worker, self.coop) {
            (false, false) => "one ring for the port; setup flags: none, the kernel's default task work".into(),
            (false, true) => "one ring for the port; setup flags: COOP_TASKRUN | TASKRUN_FLAG".into(),
            (true, false) => {
                "a ring per pool worker and one for the port; setup flags: none, the kernel's default task work"
                    .into()
            }
            (true, true) => "a ring per pool worker and one for the port; setup flags: \
                             COOP_TASKRUN | TASKRUN_FLAG on the workers' rings"
                .into(),
        }
    }

    /// The ring a request started by the calling thread goes into: a pool
    /// worker of this port its own (made at its first start, or a free one
    /// taken over), any other thread this port's ring. Called on the port's
    /// ring. A worker's ring that cannot be made leaves the worker on the
    /// port's ring.
    pub(crate) fn for_start(&self, queue: &impl Completions) -> Target<'_> {
        if !self.per_worker || !queue.returns_here() {
            return Target::Port(self);
        }
        match self.mine() {
            Some(r) => Target::Mine(r),
            None => self.adopt().map_or(Target::Port(self), Target::Mine),
        }
    }

    /// The calling thread's own ring of this port, if it has one.
    fn mine(&self) -> Option<Arc<Ring>> {
        // The free list's allocation outlives every `Mine` pointing to it
        // (they hold it weakly), so its address names this port's ring.
        let home = Arc::as_ptr(&self.free);
        MINE.with(|m| m.borrow().as_ref().filter(|m| Weak::as_ptr(&m.free) == home).map(|m| m.ring.clone()))
    }

    /// Gives the calling worker a ring: a free one, or a new one whose
    /// eventfd this ring polls.
    fn adopt(&self) -> Option<Arc<Ring>> {
        let ring = match self.free.lock().pop() {
            Some(r) => r,
            None => {
                // SAFETY: plain system call; the result is checked.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if fd < 0 {
                    return None;
                }
                // SAFETY: `fd` is a new descriptor nobody else owns.
                let efd = unsafe { OwnedFd::from_raw_fd(fd) };
                let r =
                    Arc::new(Ring::setup(WORKER_ENTRIES, self.in_flight.clone(), Some(efd), self.coop).ok()?);
                self.workers.lock().push(r.clone());
                self.watch(&r);
                r
            }
        };
        // Its owner reaps it when it comes back to the port.
        ring.set_eventfd(false);
        let mine = Mine { ring: ring.clone(), free: Arc::downgrade(&self.free) };
        MINE.with(|m| *m.borrow_mut() = Some(mine));
        Some(ring)
    }

    /// Polls the eventfd of the worker ring `w` in this ring (once; the
    /// dispatch of its completion polls again).
    fn watch(&self, w: &Ring) {
        let Some(part) = &w.worker else { return };
        let tag = (w as *const Ring as u64) | WORKER_TAG;
        let entry =
            opcode::PollAdd::new(types::Fd(part.efd.as_raw_fd()), libc::POLLIN as u32).build().user_data(tag);
        if self.push(&entry).is_ok() {
            self.flush();
        }
    }

    /// Lets (or stops) the kernel count this worker ring's completions in
    /// its eventfd, which wakes the port's poller.
    fn set_eventfd(&self, on: bool) {
        let Some(part) = &self.worker else { return };
        if part.efd_on.swap(on, Ordering::SeqCst) == on {
            return;
        }
        let _g = self.cq.lock();
        // SAFETY: the `cq` lock makes this the only user of the completion
        // queue while the guard lives; only its flags are written.
        let cq = unsafe { self.ring.completion_shared() };
        if on {
            cq.enable_eventfd();
        } else {
            cq.disable_eventfd();
        }
    }

    /// A worker's own ring's entries, taken by another thread (or by its
    /// owner), turned into packets; `self` is the port's ring. Its pushed
    /// entries are handed to the kernel first (`submit`), else only when
    /// completions overflowed.
    fn dispatch_worker(&self, w: &Ring, queue: &impl Completions, submit: bool) {
        if submit {
            let _ = w.poll_now();
        } else {
            w.reap_only();
        }
        let taken = std::mem::take(&mut *w.cq.lock());
        for (user_data, res) in taken {
            w.complete(self, queue, user_data, res);
        }
    }

    /// The port's poller got the poll of worker ring `w`'s eventfd: its
    /// owner sleeps or exited, so its entries are taken here.
    fn worker_ready(&self, w: &Ring, queue: &impl Completions) {
        if let Some(part) = &w.worker {
            let mut n = 0u64;
            // SAFETY: reads 8 bytes into `n` from an eventfd (non-blocking).
            let _ = unsafe { libc::read(part.efd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        }
        self.dispatch_worker(w, queue, true);
        self.watch(w);
    }

    /// A pool worker comes back to the port (`busy`: items wait in the
    /// port's queue): it takes its own ring's completions into the port's
    /// queue (it takes them from there itself, unless a sleeping sibling is
    /// free) and stops its eventfd while it does not sleep. Its pushed
    /// entries go to the kernel in one call once it finds the queue empty,
    /// or every [`HOLD_RETURNS`] returns, or when it sleeps: a run of
    /// callbacks costs one system call.
    pub(crate) fn returned(&self, queue: &impl Completions, busy: bool) {
        let Some(mine) = self.mine() else { return };
        let Some(part) = &mine.worker else { return };
        part.returns.fetch_add(1, Ordering::Relaxed);
        mine.set_eventfd(false);
        let pending = mine.hs.pending();
        let submit = pending && (!busy || part.held.fetch_add(1, Ordering::Relaxed) + 1 >= HOLD_RETURNS);
        if submit {
            part.held.store(0, Ordering::Relaxed);
        }
        self.dispatch_worker(&mine, queue, submit);
    }

    /// A pool worker is about to sleep: its ring's completions from now on
    /// wake the port's poller; those there are now go to the port's queue.
    pub(crate) fn before_sleep(&self, queue: &impl Completions) {
        let Some(mine) = self.mine() else { return };
        mine.set_eventfd(true);
        // Pairs with the kernel's look at the flag after it posts an entry.
        fence(Ordering::SeqCst);
        self.dispatch_worker(&mine, queue, true);
        // What those completions started (the next request of a stream)
        // would otherwise wait for this thread's return.
        if mine.hs.pending() {
            let _ = mine.submit_now();
        }
    }

    /// Every worker ring of this port (for the gate and the close).
    fn worker_rings(&self) -> Vec<Arc<Ring>> {
        self.workers.lock().clone()
    }

    /// Pushes one entry; a full queue is handed to the kernel first. When
    /// the kernel takes nothing because its completion queue has no room
    /// (`EBUSY` after an overflow), this thread takes the completion
    /// entries itself, into `cq`, and rings the ring afterwards so that
    /// they are dispatched (a poller blocked in the ring returns); it never
    /// spins waiting for a poller, which may itself wait for `sq`.
    fn push(&self, entry: &Entry) -> io::Result<()> {
        let mut reaped = false;
        let r = self.push_entry(entry, &mut reaped);
        if reaped {
            self.wake();
        }
        r
    }

    /// [`Ring::push`] without the ring afterwards; sets `reaped` when it
    /// took completion entries into `cq`. Gives up with `EBUSY` or
    /// `EAGAIN` after [`BUSY_TRIES`] tries that took nothing.
    fn push_entry(&self, entry: &Entry, reaped: &mut bool) -> io::Result<()> {
        let _g = self.sq.lock();
        let mut tries = 0;
        loop {
            // SAFETY: the `sq` lock makes this the only user of the
            // submission queue while the guard lives.
            let mut sq = unsafe { self.ring.submission_shared() };
            // Counted before the kernel can see it (`sync`).
            self.hs.pushing();
            // SAFETY: every pointer in the entry points into a request or
            // its buffer, which the kernel owns until the entry completes
            // (or into nothing, for WAKE and CANCEL).
            if unsafe { sq.push(entry) }.is_ok() {
                sq.sync();
                return Ok(());
            }
            self.hs.not_pushed();
            drop(sq);
            if let Err(busy) = self.try_submit()? {
                if self.reap_any() {
                    *reaped = true;
                } else {
                    tries += 1;
                    if tries >= BUSY_TRIES {
                        return Err(busy);
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// The kernel took `n` entries; how many are left.
    fn taken(&self, n: usize) -> usize {
        self.hs.taken(n)
    }

    /// Hands every pushed entry to the kernel (one `io_uring_enter`, or
    /// more when a batch stops early).
    ///
    /// The kernel takes entries in order and stops a batch after one whose
    /// preparation fails (that one is taken, and its completion entry
    /// carries the error); the entries after it stay in the submission
    /// queue, counted, and the next call hands them over.
    ///
    /// One thread at a time submits this way: while one does, another
    /// leaves its entries to it (it looks again when done, see
    /// [`Handshake::begin_submit`]) and goes on, instead of spinning on the
    /// ring's lock in the kernel. A thread that waits in the ring
    /// ([`Ring::poll`]) and a push into a full queue enter on their own.
    fn submit_now(&self) -> io::Result<()> {
        for _ in 0..handshake::SUBMIT_ROUNDS {
            if !self.hs.begin_submit() {
                return Ok(());
            }
            let r = self.try_submit();
            let again = self.hs.end_submit();
            match r {
                // Entries still counted: a thread that found this one
                // submitting left them (submitted again below), or a pusher
                // counted its entry and has not published it yet; it does
                // both holding `sq`, so once `sq` is free it is visible.
                Ok(Ok(())) if again => drop(self.sq.lock()),
                r => return r.map(drop),
            }
        }
        // Kept submitting for others by a stream of pushes: this thread
        // enters once more without the turn, so what was left to it is
        // handed over now (another thread holding the turn only shares the
        // kernel's lock with it, as every submit did before the turn).
        self.try_submit().map(drop)
    }

    /// [`Ring::submit_now`], telling a kernel that took nothing for now
    /// (`Ok(Err(EBUSY or EAGAIN))`): its completion queue has no room, so
    /// it takes entries again once completions are taken.
    fn try_submit(&self) -> io::Result<Result<(), io::Error>> {
        loop {
            #[cfg(test)]
            if tests::busy(self) {
                return Ok(Err(io::Error::from_raw_os_error(libc::EBUSY)));
            }
            self.os.entered();
            match self.ring.submitter().submit() {
                Ok(n) => {
                    if n == 0 || self.taken(n) == 0 {
                        return Ok(Ok(()));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => return Ok(Err(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// After a [`Ring::start`], once the caller let go of the handle's
    /// lock: a pool worker of this port leaves the entry for its return to
    /// the port (one call for all its callbacks' entries); any other thread
    /// hands it over at once when a thread is blocked in the ring, which
    /// would not see it otherwise.
    pub(crate) fn pushed(&self, queue: &impl Completions) {
        if queue.returns_here() {
            return;
        }
        self.flush();
    }

    /// Hands pushed entries to the kernel if a thread is blocked in the
    /// ring (a thread that polls next submits them itself).
    pub(crate) fn flush(&self) {
        // Either this thread sees the poller's flag, or the poller's
        // `io_uring_enter` sees the entry (`handshake`).
        if self.hs.must_submit() {
            let _ = self.submit_now();
        }
    }

    /// Hands over whatever is pushed, whoever waits (the pool calls this
    /// every few milliseconds, so an entry left by a worker stuck in a
    /// long callback still starts).
    ///
    /// A worker ring whose owner did not come back to the port since the
    /// last call (it runs a long callback, sleeps, or exited) is handed
    /// over here too: its pushed entries to the kernel and its completions
    /// to the port's queue, where the pool sees them waiting (S14).
    pub(crate) fn maintain(&self, queue: &impl Completions) {
        if self.hs.pending() {
            let _ = self.submit_now();
        }
        for w in self.worker_rings() {
            let Some(part) = &w.worker else { continue };
            let returns = part.returns.load(Ordering::Relaxed);
            if part.seen.swap(returns, Ordering::Relaxed) == returns {
                self.dispatch_worker(&w, queue, true);
            }
        }
    }

    /// Submits, then waits for a completion entry until `deadline`; takes
    /// the entries there are for [`Ring::dispatch`].
    pub(crate) fn poll(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.hs.waiting();
        #[cfg(test)]
        tests::before_wait(self);
        let submitter = self.ring.submitter();
        self.os.entered();
        let r = match deadline {
            None => submitter.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d.saturating_duration_since(Instant::now()));
                submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            }
        };
        self.hs.woke();
        // A batch that stopped early returns without waiting; the entries
        // left stay counted for the next call.
        match r {
            Ok(n) => {
                self.taken(n);
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap();
        Ok(())
    }

    /// Takes the completion entries there are now, for [`Ring::dispatch`],
    /// without waiting: entries pushed and not yet submitted are handed to
    /// the kernel first, and so are completions the kernel holds back
    /// after an overflow; otherwise no system call is made (the completion
    /// queue is shared memory).
    ///
    /// It never waits for `sq`: a thread that holds it is pushing (maybe
    /// into a full queue, taking completions itself); the flags are read
    /// only when the lock is free, and otherwise an overflow is assumed
    /// (one more `io_uring_enter`, which flushes it if there is one).
    pub(crate) fn poll_now(&self) -> io::Result<()> {
        let overflow = match self.sq.try_lock() {
            Some(_g) => {
                // SAFETY: the `sq` lock makes this the only user of the
                // submission queue while the guard lives; only its flags are
                // read.
                let sq = unsafe { self.ring.submission_shared() };
                sq.cq_overflow() || sq.taskrun()
            }
            None => true,
        };
        if overflow {
            // This thread's own enter: completions held back, or task work
            // that only the thread that started those requests runs when
            // it enters the kernel (another's submit would not run it).
            self.try_submit().map(drop)?;
        } else if self.hs.pending() {
            self.submit_now()?;
        }
        self.reap();
        Ok(())
    }

    /// Takes every completion entry there is, for `dispatch`; true when a
    /// wake-up entry ([`Ring::wake`]) was among them.
    fn reap(&self) -> bool {
        let mut taken = self.cq.lock();
        // SAFETY: the `cq` lock makes this the only user of the completion
        // queue while the guard lives.
        let cq = unsafe { self.ring.completion_shared() };
        let before = taken.len();
        self.os.overflowed_total(u64::from(cq.overflow()));
        taken.extend(cq.map(|c| (c.user_data(), c.result())));
        self.os.returned(taken.len() - before);
        taken[before..].iter().any(|&(user_data, _)| user_data == WAKE)
    }

    /// [`Ring::reap`] with no system call, unless completions overflowed
    /// or wait as task work (then [`Ring::poll_now`], which flushes them).
    fn reap_only(&self) {
        let overflow = match self.sq.try_lock() {
            Some(_g) => {
                // SAFETY: the `sq` lock makes this the only user of the
                // submission queue while the guard lives; only its flags
                // are read.
                let sq = unsafe { self.ring.submission_shared() };
                // With COOP_TASKRUN, completions may wait as task work
                // that only a system call of the owner runs.
                sq.cq_overflow() || sq.taskrun()
            }
            None => true,
        };
        if overflow {
            let _ = self.poll_now();
        } else {
            self.reap();
        }
    }

    /// [`Ring::reap`]; true when it took any entry.
    fn reap_any(&self) -> bool {
        let before = self.cq.lock().len();
        self.reap();
        self.cq.lock().len() > before
    }

    /// Turns the entries the last poll took into packets (called on the
    /// port's ring).
    pub(crate) fn dispatch(&self, queue: &impl Completions) {
        let taken = std::mem::take(&mut *self.cq.lock());
        for (user_data, res) in taken {
            if user_data & 7 == WORKER_TAG {
                // SAFETY: the address of a worker ring of this port, which
                // holds it (in `workers`) as long as it lives.
                let w = unsafe { &*((user_data & !7) as *const Ring) };
                self.worker_ready(w, queue);
                continue;
            }
            self.complete(self, queue, user_data, res);
        }
    }

    /// Makes a thread blocked in the ring return: a no-op entry completes
    /// (and the thread dispatches whatever its push took into `cq`).
    pub(crate) fn wake(&self) {
        if self.push_entry(&opcode::Nop::new().build().user_data(WAKE), &mut false).is_ok() {
            let _ = self.submit_now();
        }
    }

    /// Requests a close gave up waiting for (see [`Ring::drain`]).
    pub(crate) fn leaked(&self) -> usize {
        self.leaked.load(Ordering::SeqCst)
    }

    /// Requests in the kernel.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until every request in the kernel has completed (a port's
    /// close, after cancelling them all), turning their entries into
    /// packets. Another thread may be polling the ring and take an entry
    /// this one waits for, so each wait is short (10 ms) and the count is
    /// looked at again after it.
    ///
    /// The wait is bounded (S11, S17): a request the kernel does not give
    /// back, cancel or not (a read of a network or FUSE file system that
    /// never answers), would otherwise hold up the close, and the pool's
    /// shutdown, for ever. After [`GIVE_UP`] the close ends without those
    /// requests: they are counted in [`Ring::leaked`] and leaked with their
    /// buffers, never freed, since the kernel may still write to them
    /// (IOCP's backend gives up the same way).
    pub(crate) fn drain(&self, queue: &impl Completions) {
        let ts = types::Timespec::from(std::time::Duration::from_millis(10));
        let give_up = Instant::now() + GIVE_UP;
        let mut took_wake = false;
        while self.in_flight() > 0 {
            if Instant::now() >= give_up {
                self.leaked.fetch_add(self.in_flight(), Ordering::SeqCst);
                break;
            }
            let _ = self.submit_now();
            for w in self.worker_rings() {
                self.dispatch_worker(&w, queue, true);
            }
            if let Ok(n) = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            {
                self.taken(n);
            }
            took_wake |= self.reap();
            self.dispatch(queue);
        }
        // A wake-up entry taken here was meant for a thread blocked in the
        // ring, which the port's queue marked woken and will not wake
        // again: without a new one it would wait out its whole timeout
        // (a worker's keep-alive) and hold up the pool's shutdown (S17).
        if took_wake {
            self.wake();
        }
    }

    /// Starts `req` on `fd` (S23) in this ring (the one
    /// [`Ring::for_start`] gave): `Err` gives the request back, and no
    /// completion will come.
    ///
    /// The caller holds the handle's lock, has checked it is open, and
    /// records the request in the handle's in-flight table; then, with the
    /// lock let go, it calls [`Ring::pushed`] (no system call is made
    /// under the lock unless the submission queue is full).
    ///
    /// The request holds `fd` until its completion entry comes: a close of
    /// the handle meanwhile does not close the descriptor, so its number
    /// cannot be reused by another object while an entry names it (S24).
    pub(crate) fn start(
        &self,
        io: Arc<dyn Owner>,
        fd: &Arc<OwnedFd>,
        mut req: Request,
    ) -> Result<usize, (io::Error, Request)> {
        let entry = match prepare(io.kind(), fd.as_raw_fd(), &mut req) {
            Ok(e) => e,
            Err(e) => return Err((e, req)),
        };
        req.header_mut().os.uring.io = Some(io);
        req.header_mut().os.uring.fd = Some(fd.clone());
        let p = req.into_raw();
        let entry = entry.user_data(p as u64);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.push(&entry) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            // SAFETY: the entry was not pushed, so the kernel never saw
            // `p`; it is taken back exactly once, here.
            let mut req = unsafe { Request::from_raw(p) };
            req.header_mut().os.uring.io = None;
            req.header_mut().os.uring.fd = None;
            return Err((e, req));
        }
        Ok(p as usize)
    }

    /// Pushes a cancel entry for each request at these addresses (S25);
    /// each one's completion entry comes either way. True when any was
    /// pushed: the caller, once it let go of the handle's lock, hands them
    /// to the kernel with [`Ring::submit_if`].
    ///
    /// The caller holds the lock of the handle whose in-flight table holds
    /// these addresses (each marked cancelled there); only the address is
    /// used, as the key of the request to cancel.
    ///
    /// Called on the port's ring; each address comes with the address of
    /// the ring the request is in (this one or a worker's), where its cancel
    /// goes. What it gives is the rings a cancel was pushed into.
    pub(crate) fn cancel(&self, requests: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
        #[cfg(test)]
        if tests::ignores_cancel(self) {
            return Vec::new();
        }
        let mut pushed = Vec::new();
        for (ring, p) in requests {
            // SAFETY: the address of this ring or of one of its workers'
            // rings, which it holds as long as it lives.
            let r = unsafe { &*(ring as *const Ring) };
            let entry = opcode::AsyncCancel::new(p as u64).build().user_data(CANCEL);
            if r.push(&entry).is_ok() && !pushed.contains(&ring) {
                pushed.push(ring);
            }
        }
        pushed
    }

    /// Hands every entry pushed into these rings (of this port, as
    /// [`Ring::cancel`] gave them) to the kernel now.
    pub(crate) fn submit_if(&self, pushed: Vec<usize>) {
        for ring in pushed {
            // SAFETY: as in `cancel`.
            let _ = unsafe { &*(ring as *const Ring) }.submit_now();
        }
    }

    /// One completion entry of this ring: the request's result, or a write
    /// that goes on (in the ring `home`, the port's, gives the caller).
    fn complete(&self, home: &Ring, queue: &impl Completions, user_data: u64, res: i32) {
        if user_data == WAKE || user_data == CANCEL {
            return;
        }
        // SAFETY: every other entry's `user_data` is a request given up
        // with `into_raw` in `start`; its completion entry comes once, so
        // it is taken back once, here.
        let mut req = unsafe { Request::from_raw(user_data as *mut Header) };
        // Held to the end of this call: the descriptor closes here if the
        // handle was closed while the request was in the kernel.
        let _fd = req.header_mut().os.uring.fd.take();
        let Some(io) = req.header_mut().os.uring.io.take() else {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        if res == -libc::ECANCELED {
            // A cancel, a close, or the kernel cancelling the requests of a
            // thread that exited: `again` tells them apart under the
            // handle's lock. Only the last starts again, from this (live)
            // thread; nothing was transferred by this entry (a write's
            // earlier entries are counted in its progress).
            if matches!(req.op(), Op::Connect(_)) {
                req.header_mut().os.uring.reconnect = true;
            }
            return self.again(home, queue, io, req);
        }
        match finish(&*io, &mut req, res) {
            Finished::Done(status, bytes) => {
                let (id, write) = (req.id(), is_write_side(req.op()));
                done(home, &io, id, write, queue, Packet { status, bytes, key: 0, request: Some(req) });
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            // A write that wrote part, or a file read short before the
            // end of the file: the rest goes on, unless the handle or its
            // port closed meanwhile.
            Finished::More => self.again(home, queue, io, req),
        }
    }

    /// Starts `req` again (the rest of a write, or a request its thread's
    /// exit cancelled), unless a cancel, a close or the port's close came
    /// meanwhile: then it completes aborted.
    fn again(&self, home: &Ring, queue: &impl Completions, io: Arc<dyn Owner>, req: Request) {
        let (id, write) = (req.id(), is_write_side(req.op()));
        if let Err((e, mut req)) = again(home, &io, queue, req) {
            // Aborted, or failed to start again: either way a write says
            // how much of it was sent, and a file read what it read (S24,
            // as IOCP does).
            let status = match e.raw_os_error() {
                Some(libc::ECANCELED) => ABORTED,
                _ => status_of(&e),
            };
            let (status, bytes) = cut_short(&mut req, status);
            done(home, &io, id, write, queue, Packet { status, bytes, key: 0, request: Some(req) });
        }
        // Counted down once its packet is queued or it is in the kernel
        // again, so a port's close never sees it gone before either.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ring's part of a handle: its requests in the kernel and, for a
/// stream, those waiting for the one of their direction in the kernel.
#[derive(Default)]
pub(super) struct Streams {
    /// A stream's reads, accepts and receives (0), and its writes,
    /// connects and sends (1), waiting: a stream request of each direction
    /// is in the kernel at a time, so a socket's reads take the stream in
    /// start order and its writes never interleave.
    waiting: [VecDeque<Request>; 2],
    /// A stream request of that direction is in the kernel.
    busy: [bool; 2],
    /// Requests in the kernel, by id (for cancel and close).
    in_flight: FxHashMap<u64, InKernel>,
}

/// A request in the ring.
#[derive(Clone, Copy)]
struct InKernel {
    /// The request's address: its entry's `user_data`.
    addr: usize,
    /// The address of the ring it is in (its port's, or a worker's).
    ring: usize,
    /// A cancel, a close or a deadline asked for its end: an `ECANCELED`
    /// completion is then its abort, where otherwise it is the kernel
    /// cancelling the requests of a thread that exited, and the request
    /// starts again (S24).
    cancelled: bool,
}

impl InKernel {
    fn new(ring: &Ring, addr: usize) -> InKernel {
        InKernel { addr, ring: ring as *const Ring as usize, cancelled: false }
    }
}

impl Streams {
    /// Starts `req` on `fd`, or queues it behind the request of its
    /// direction in the kernel (a stream's). The caller holds the
    /// handle's lock, and once it let go of it calls [`Ring::pushed`].
    pub(super) fn start<O: Owner>(
        &mut self,
        ring: &Ring,
        io: &Arc<O>,
        fd: &Arc<OwnedFd>,
        req: Request,
    ) -> Result<(), (io::Error, Request)> {
        let dir = usize::from(is_write_side(req.op()));
        let ordered = io.kind() != HandleKind::File;
        if ordered && self.busy[dir] {
            self.waiting[dir].push_back(req);
            return Ok(());
        }
        let id = req.id().as_u64();
        let p = ring.start(io.clone(), fd, req)?;
        self.in_flight.insert(id, InKernel::new(ring, p));
        self.busy[dir] |= ordered;
        Ok(())
    }

    /// Marks the request `id` cancelled if it is in the kernel; its ring
    /// and address, for [`Ring::cancel`].
    pub(super) fn cancel(&mut self, id: RequestId) -> Option<(usize, usize)> {
        let k = self.in_flight.get_mut(&id.as_u64())?;
        k.cancelled = true;
        Some((k.ring, k.addr))
    }

    /// Takes the request `id` out, if it is still waiting.
    pub(super) fn remove(&mut self, id: RequestId) -> Option<Request> {
        self.waiting.iter_mut().find_map(|queue| {
            let i = queue.iter().position(|r| r.id() == id)?;
            queue.remove(i)
        })
    }

    /// Every request still waiting, in start order per direction.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Request> + '_ {
        let [reads, writes] = &mut self.waiting;
        reads.drain(..).chain(writes.drain(..))
    }

    /// Requests in the kernel.
    pub(super) fn in_kernel(&self) -> usize {
        self.in_flight.len()
    }

    /// Marks every request in the kernel cancelled; their rings and
    /// addresses, for [`Ring::cancel`].
    pub(super) fn cancel_in_kernel(&mut self) -> Vec<(usize, usize)> {
        self.in_flight
            .values_mut()
            .map(|k| {
                k.cancelled = true;
                (k.ring, k.addr)
            })
            .collect()
    }
}

/// What the ring needs of the handle of a request it completes: the
/// handle implements it (`io.rs`), so that this driver does not name it.
pub(super) trait Owner: Send + Sync + 'static {
    fn kind(&self) -> HandleKind;

    /// The socket's pending error (`SO_ERROR`), while the fd is open.
    fn take_error(&self) -> Option<io::Result<Option<io::Error>>>;

    /// Runs `f` under the handle's lock with the ring's part of it,
    /// whether the handle and its port are still open, and its fd (`None`
    /// once closed); `f` does not run when the handle is not on the ring.
    fn locked(&self, f: &mut Locked<'_>);
}

/// What [`Owner::locked`] runs: the ring's part of the handle, whether
/// it is open, its fd.
pub(super) type Locked<'a> = dyn FnMut(&mut Streams, bool, Option<&Arc<OwnedFd>>) + 'a;

/// A ring request of `io` completed: forget it and queue its packet, under
/// the handle's lock (so a close sees it done or pending); the next
/// waiting request of its direction goes to the kernel.
fn done(
    home: &Ring,
    io: &Arc<dyn Owner>,
    id: RequestId,
    write: bool,
    queue: &impl Completions,
    packet: Packet,
) {
    let file = io.kind() == HandleKind::File;
    let mut packet = Some(packet);
    let mut started = false;
    let ring = home.for_start(queue);
    io.locked(&mut |s, _, fd| {
        s.in_flight.remove(&id.as_u64());
        queue.complete(packet.take().expect("completed once"));
        if file {
            return;
        }
        // The next waiting request of this direction goes to the kernel;
        // one that cannot start completes with its error.
        let dir = usize::from(write);
        s.busy[dir] = false;
        let Some(fd) = fd else { return };
        while let Some(req) = s.waiting[dir].pop_front() {
            let id = req.id().as_u64();
            match ring.start(io.clone(), fd, req) {
                Ok(p) => {
                    s.in_flight.insert(id, InKernel::new(&ring, p));
                    s.busy[dir] = true;
                    started = true;
                    break;
                }
                Err((e, req)) => queue.complete(failed(req, &e)),
            }
        }
    });
    // Not on the ring (never): the packet still goes to the port.
    if let Some(p) = packet {
        queue.complete(p);
    }
    if started {
        ring.pushed(queue);
    }
}

/// Starts the rest of a partly done ring write of `io` (or a request its
/// thread's exit cancelled), unless the handle or its port closed, or a
/// cancel came, meanwhile (`ECANCELED`).
fn again(
    home: &Ring,
    io: &Arc<dyn Owner>,
    queue: &impl Completions,
    req: Request,
) -> Result<(), (io::Error, Request)> {
    let id = req.id().as_u64();
    let ring = home.for_start(queue);
    let mut req = Some(req);
    let mut r = Err(io::Error::from_raw_os_error(libc::ECANCELED));
    io.locked(&mut |s, open, fd| {
        let cancelled = s.in_flight.get(&id).is_some_and(|k| k.cancelled);
        let Some(fd) = fd.filter(|_| open && !cancelled) else {
            s.in_flight.remove(&id);
            return;
        };
        match ring.start(io.clone(), fd, req.take().expect("started once")) {
            Ok(p) => {
                s.in_flight.insert(id, InKernel::new(&ring, p));
                r = Ok(());
            }
            Err((e, back)) => {
                req = Some(back);
                r = Err(e);
            }
        }
    });
    match (r, req) {
        (Ok(()), _) => {
            ring.pushed(queue);
            Ok(())
        }
        (Err(e), Some(req)) => Err((e, req)),
        (Err(_), None) => unreachable!("a request not started is kept"),
    }
}

/// A positional read of a regular file whose bytes are in the page cache,
/// done at once with `preadv2(RWF_NOWAIT)`: `None` when it would block
/// (or the filesystem cannot say), and the ring then does it. A cached
/// read so costs one call on the starting thread, like `pread`, with no
/// trip through the ring; its completion still comes through the port
/// (S23).
///
/// `RWF_NOWAIT` stops at the first page not cached: what was read is kept
/// as the request's progress and the ring reads the rest (`None`), so the
/// read is short only at the end of the file (S27).
#[cfg(target_env = "gnu")]
pub(crate) fn read_cached(fd: RawFd, req: &mut Request) -> Option<io::Result<usize>> {
    let Op::ReadAt(off) = req.op() else { return None };
    #[cfg(test)]
    if tests::skips_cache(fd) {
        return None;
    }
    let h = req.header_mut();
    if h.buffer.part_count() != 1 || !h.buffer.is_writable() {
        return None;
    }
    let p = h.buffer.part(0);
    let end = loop {
        let done = h.os.progress;
        if done >= p.cap {
            break done;
        }
        let at = off.checked_add(done as u64).and_then(|at| libc::off_t::try_from(at).ok())?;
        // SAFETY: `done < p.cap` bytes were read into the room so far.
        let iov = libc::iovec { iov_base: unsafe { p.ptr.add(done) }.cast(), iov_len: p.cap - done };
        // SAFETY: one iovec over the rest of the part's room, writable
        // (checked above); the descriptor is open (the caller holds its
        // read guard).
        let n = unsafe { libc::preadv2(fd, &iov, 1, at, libc::RWF_NOWAIT) };
        match n {
            0 => break done,
            n if n > 0 => h.os.progress += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINTR) => None,
                    // The bytes read before the error are the result.
                    _ if done > 0 => {
                        // SAFETY: the reads wrote the first `done` bytes.
                        unsafe { h.buffer.set_filled(done) };
                        Some(Ok(done))
                    }
                    _ => Some(Err(e)),
                };
            }
        }
    };
    // SAFETY: the reads wrote the first `end` bytes of the room, in order.
    unsafe { h.buffer.set_filled(end) };
    Some(Ok(end))
}

/// Without glibc's `preadv2`, every file read goes through the ring.
#[cfg(not(target_env = "gnu"))]
pub(crate) fn read_cached(_fd: RawFd, _req: &mut Request) -> Option<io::Result<usize>> {
    None
}

/// Per-request state of the io_uring driver: what the kernel reads or
/// writes besides the buffer, in the request itself, which does not move.
pub(crate) struct OpState {
    /// The handle, while the request is in the kernel.
    io: Option<Arc<dyn Owner>>,
    /// The descriptor its entry names, kept open while it is in the kernel.
    fd: Option<Arc<OwnedFd>>,
    /// A connect started again after its thread exited waits for
    /// writability, then reads the socket's error.
    reconnect: bool,
    /// What the request's kind hands the kernel besides its buffer.
    scratch: Scratch,
}

/// The scratch space of one request, only what its kind needs: a plain
/// read or write (one part), a positional file request and a zero-byte
/// wait need none. No kind allocates more than it did when every request
/// carried all of it: vectored requests allocate their iovecs, a datagram
/// its message (it allocated its one iovec before).
enum Scratch {
    None,
    /// A vectored read or write (`readv`, `writev`): its iovecs.
    Iov(Vec<libc::iovec>),
    /// A vectored socket write (`sendmsg`, for `MSG_NOSIGNAL`): its iovecs
    /// and the message naming them.
    SendMsg(Vec<libc::iovec>, libc::msghdr),
    /// An accept's peer, a connect's destination.
    Addr(RawAddr),
    /// A datagram's message, its one iovec and its address.
    Datagram(Box<Datagram>),
}

/// A TCP or UDP socket address as the kernel reads or writes it: room for
/// the largest, IPv6's `sockaddr_in6`.
#[derive(Clone, Copy)]
struct RawAddr {
    sa: libc::sockaddr_in6,
    len: libc::socklen_t,
}

struct Datagram {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: RawAddr,
}

impl RawAddr {
    /// Room for an address the kernel writes.
    fn room() -> RawAddr {
        // SAFETY: all-zero bytes are a valid `sockaddr_in6`.
        let sa = unsafe { MaybeUninit::zeroed().assume_init() };
        RawAddr { sa, len: std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t }
    }

    /// `to`, as the kernel reads it.
    fn of(to: SocketAddr) -> RawAddr {
        let sa = SockAddr::from(to);
        let mut raw = RawAddr::room();
        let len = (sa.len() as usize).min(std::mem::size_of::<libc::sockaddr_in6>());
        // SAFETY: `SockAddr` holds a `sockaddr_storage` whose first
        // `sa.len()` bytes are the address (at most a `sockaddr_in6` for a
        // `SocketAddr`); `len` bytes fit in `raw.sa`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                (&mut raw.sa as *mut libc::sockaddr_in6).cast::<u8>(),
                len,
            )
        };
        raw.len = len as libc::socklen_t;
        raw
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.sa as *mut libc::sockaddr_in6).cast()
    }

    /// The address the kernel wrote, `len` bytes of it.
    fn load(&self, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len.min(std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t);
        // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
        let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: `len` bytes of `self.sa` (at most its size) are copied
        // into the larger storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&self.sa as *const libc::sockaddr_in6).cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        // SAFETY: the kernel wrote a socket address of `len` bytes, now at
        // the start of a whole `sockaddr_storage`.
        let sa = unsafe { SockAddr::new(storage, len) };
        sa.as_socket()
    }
}

impl Scratch {
    /// The iovec array, kept from an earlier turn of the same request (a
    /// write that goes on), else new.
    fn iov(&mut self) -> &mut Vec<libc::iovec> {
        if !matches!(self, Scratch::Iov(_)) {
            *self = Scratch::Iov(Vec::new());
        }
        match self {
            Scratch::Iov(v) => v,
            _ => unreachable!("set above"),
        }
    }

    /// The iovec array and message of a vectored socket write, kept from
    /// an earlier turn of the same request, else new.
    fn send_msg(&mut self) -> (&mut Vec<libc::iovec>, &mut libc::msghdr) {
        if !matches!(self, Scratch::SendMsg(..)) {
            // SAFETY: all-zero bytes are a valid (empty) `msghdr`.
            let msg = unsafe { MaybeUninit::zeroed().assume_init() };
            *self = Scratch::SendMsg(Vec::new(), msg);
        }
        match self {
            Scratch::SendMsg(v, m) => (v, m),
            _ => unreachable!("set above"),
        }
    }

    /// The datagram's message, kept from an earlier turn, else new.
    fn datagram(&mut self) -> &mut Datagram {
        if !matches!(self, Scratch::Datagram(_)) {
            // SAFETY: all-zero bytes are a valid (empty) `msghdr` and a
            // valid (empty) `iovec`.
            let (msg, iov) =
                unsafe { (MaybeUninit::zeroed().assume_init(), MaybeUninit::zeroed().assume_init()) };
            *self = Scratch::Datagram(Box::new(Datagram { msg, iov, addr: RawAddr::room() }));
        }
        match self {
            Scratch::Datagram(d) => d,
            _ => unreachable!("set above"),
        }
    }

    /// The address room of an accept or a connect.
    fn addr(&mut self, raw: RawAddr) -> &mut RawAddr {
        *self = Scratch::Addr(raw);
        match self {
            Scratch::Addr(a) => a,
            _ => unreachable!("set above"),
        }
    }
}

impl Default for OpState {
    fn default() -> OpState {
        OpState { io: None, fd: None, reconnect: false, scratch: Scratch::None }
    }
}

impl std::fmt::Debug for OpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpState").field("in_kernel", &self.io.is_some()).finish()
    }
}

// SAFETY: the raw pointers in the scratch space point into the request
// that holds it and into its buffer; they are only read by the kernel
// while the request is in flight, and the request moves between threads
// as a whole.
unsafe impl Send for OpState {}
// SAFETY: shared access never reads through the pointers.
unsafe impl Sync for OpState {}

/// The entry for `req` on `fd` (its `user_data` is set by the caller).
fn prepare(kind: HandleKind, fd: RawFd, req: &mut Request) -> io::Result<Entry> {
    let op = req.op();
    let h = req.header_mut();
    let fd = types::Fd(fd);
    let progress = h.os.progress;
    let socket = kind.is_socket();
    let len32 = |n: usize| n.min(u32::MAX as usize) as u32;
    let entry = match op {
        // S31: no room is a wait for readability, taking nothing.
        Op::Read if h.buffer.capacity() == 0 => opcode::PollAdd::new(fd, libc::POLLIN as u32).build(),
        Op::Read if h.buffer.part_count() == 1 => {
            let p = h.buffer.part(0);
            if socket {
                opcode::Recv::new(fd, p.ptr, len32(p.cap)).build()
            } else {
                opcode::Read::new(fd, p.ptr, len32(p.cap)).offset(u64::MAX).build()
            }
        }
        // The first IOV_MAX parts: a read may be short.
        Op::Read => {
            let iov = h.os.uring.scratch.iov();
            read_iov(iov, &mut h.buffer);
            opcode::Readv::new(fd, iov.as_ptr(), len32(iov.len())).offset(u64::MAX).build()
        }
        Op::Write | Op::WriteAt(_) => {
            let at = match op {
                Op::WriteAt(off) => {
                    let at = off.checked_add(progress as u64).filter(|&o| o <= i64::MAX as u64);
                    at.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
                }
                _ => u64::MAX,
            };
            if h.buffer.part_count() == 1 {
                // One part: what is left of it, with no scratch space.
                let p = h.buffer.part(0);
                let left = p.len.saturating_sub(progress);
                // SAFETY: `progress < p.len` while the write goes on: it
                // counts the part's bytes written so far.
                let rest = unsafe { p.ptr.add(progress.min(p.len)) };
                if socket && op == Op::Write {
                    opcode::Send::new(fd, rest, len32(left)).flags(libc::MSG_NOSIGNAL).build()
                } else {
                    opcode::Write::new(fd, rest, len32(left)).offset(at).build()
                }
            } else if socket && op == Op::Write {
                // The first IOV_MAX parts left; a write goes on to the rest.
                let (iov, msg) = h.os.uring.scratch.send_msg();
                write_iov(iov, &mut h.buffer, progress);
                match iov.as_slice() {
                    [one] => opcode::Send::new(fd, one.iov_base.cast(), len32(one.iov_len))
                        .flags(libc::MSG_NOSIGNAL)
                        .build(),
                    _ => {
                        msg.msg_iov = iov.as_mut_ptr();
                        msg.msg_iovlen = iov.len() as _;
                        opcode::SendMsg::new(fd, msg).flags(libc::MSG_NOSIGNAL as u32).build()
                    }
                }
            } else {
                let iov = h.os.uring.scratch.iov();
                write_iov(iov, &mut h.buffer, progress);
                opcode::Writev::new(fd, iov.as_ptr(), len32(iov.len())).offset(at).build()
            }
        }
        // The rest of the room after what was read (the cached part, or a
        // read short before the end of the file).
        Op::ReadAt(off) => {
            let at = off.checked_add(progress as u64).filter(|&o| o <= i64::MAX as u64);
            let at = at.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let p = h.buffer.part(0);
            // SAFETY: `progress <= p.cap`: it counts bytes read into the room.
            let rest = unsafe { p.ptr.add(progress) };
            opcode::Read::new(fd, rest, len32(p.cap - progress)).offset(at).build()
        }
        // A Unix-domain listener's peer has no address worth keeping.
        Op::Accept if kind != HandleKind::TcpListener => {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        }
        Op::Accept => {
            let a = h.os.uring.scratch.addr(RawAddr::room());
            opcode::Accept::new(fd, a.as_mut_ptr(), &mut a.len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        }
        // Its first connect goes on in the background: wait for its end.
        Op::Connect(_) if h.os.uring.reconnect => opcode::PollAdd::new(fd, libc::POLLOUT as u32).build(),
        Op::Connect(to) => {
            let a = h.os.uring.scratch.addr(RawAddr::of(to));
            opcode::Connect::new(fd, a.as_mut_ptr(), a.len).build()
        }
        Op::SendTo(_) | Op::RecvFrom => {
            let p = h.buffer.part(0);
            let len = if op == Op::RecvFrom { p.cap } else { p.len };
            let d = h.os.uring.scratch.datagram();
            d.iov = libc::iovec { iov_base: p.ptr.cast(), iov_len: len };
            d.addr = match op {
                Op::SendTo(to) => RawAddr::of(to),
                _ => RawAddr::room(),
            };
            d.msg.msg_name = d.addr.as_mut_ptr().cast();
            d.msg.msg_namelen = d.addr.len;
            d.msg.msg_iov = &mut d.iov;
            d.msg.msg_iovlen = 1;
            if op == Op::RecvFrom {
                opcode::RecvMsg::new(fd, &mut d.msg).build()
            } else {
                opcode::SendMsg::new(fd, &d.msg).flags(libc::MSG_NOSIGNAL as u32).build()
            }
        }
        Op::Post => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    Ok(entry)
}

/// The address the kernel wrote for a datagram (`RecvFrom`) or an accept.
fn peer_addr(st: &OpState) -> Option<SocketAddr> {
    match &st.scratch {
        Scratch::Datagram(d) => d.addr.load(d.msg.msg_namelen),
        Scratch::Addr(a) => a.load(a.len),
        _ => None,
    }
}

enum Finished {
    Done(Status, usize),
    /// A write wrote part of its bytes, or a file read read part of its
    /// room before the end of the file; the rest is to be done.
    More,
}

/// The result of a request that ends with `status` (an error, or the
/// aborted status) after its earlier entries, or the cached read, did
/// part of it. A write reports the bytes it sent with the status, as IOCP
/// does (S24). A file read keeps the bytes it read in its buffer: an
/// error after some bytes is a short read, as `pread` gives it (and the
/// epoll driver), and a cancel, a close or a deadline reports them with
/// the aborted status.
fn cut_short(req: &mut Request, status: Status) -> (Status, usize) {
    let op = req.op();
    let h = req.header_mut();
    match op {
        Op::Write | Op::WriteAt(_) => (status, sent(req)),
        Op::ReadAt(_) if h.os.progress > 0 => {
            let done = h.os.progress.min(h.buffer.capacity());
            // SAFETY: the earlier reads wrote the first `done` bytes of the
            // room, in order (`progress` counts them).
            unsafe { h.buffer.set_filled(done) };
            (if status == ABORTED { status } else { Status::SUCCESS }, done)
        }
        _ => (status, 0),
    }
}

/// The request's result from its completion entry's `res`.
fn finish(io: &dyn Owner, req: &mut Request, res: i32) -> Finished {
    let kind = io.kind();
    let op = req.op();
    if res < 0 {
        let (status, bytes) = cut_short(req, Status::from_raw((-res) as u32));
        return Finished::Done(status, bytes);
    }
    let h = req.header_mut();
    let n = res as usize;
    match op {
        Op::Read if h.buffer.capacity() == 0 => {
            // S31: readable (data, the end, or an error, which it completes
            // with). `res` is the poll's mask: the socket's error is asked
            // for (`getsockopt`) only when it says there is one, so a wait
            // costs no call of its own.
            let error = res & i32::from(libc::POLLERR) != 0;
            if error && matches!(kind, HandleKind::TcpStream | HandleKind::LocalStream) {
                if let Some(Ok(Some(e))) = io.take_error() {
                    return Finished::Done(status_of(&e), 0);
                }
            }
            Finished::Done(Status::SUCCESS, 0)
        }
        // A regular file's read is short only at its end (S27): a read
        // that took part of the room and not nothing goes on.
        Op::ReadAt(_) => {
            h.os.progress += n;
            let done = h.os.progress;
            if n == 0 || done >= h.buffer.capacity() {
                let done = done.min(h.buffer.capacity());
                // SAFETY: the reads wrote the first `done` bytes of the
                // room, in order.
                unsafe { h.buffer.set_filled(done) };
                Finished::Done(Status::SUCCESS, done)
            } else {
                Finished::More
            }
        }
        Op::Read | Op::RecvFrom => {
            let n = n.min(h.buffer.capacity());
            // SAFETY: the kernel wrote the first `n` bytes of the room it
            // was given, part by part in order.
            unsafe { h.buffer.set_filled(n) };
            if op == Op::RecvFrom {
                h.addr = peer_addr(&h.os.uring);
            }
            Finished::Done(Status::SUCCESS, n)
        }
        Op::Write | Op::WriteAt(_) => {
            h.os.progress += n;
            let total = h.buffer.len();
            if h.os.progress >= total {
                Finished::Done(Status::SUCCESS, total)
            } else if n == 0 {
                Finished::Done(Status::from_raw(libc::EIO as u32), h.os.progress)
            } else {
                Finished::More
            }
        }
        Op::Accept => {
            // SAFETY: a successful accept returns a new descriptor, owned by
            // nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            h.addr = match kind {
                HandleKind::TcpListener => peer_addr(&h.os.uring),
                _ => None,
            };
            h.accepted = Some(accepted(kind, fd));
            Finished::Done(Status::SUCCESS, 0)
        }
        Op::Connect(_) if h.os.uring.reconnect => match io.take_error() {
            Some(Ok(Some(e))) | Some(Err(e)) => Finished::Done(status_of(&e), 0),
            _ => Finished::Done(Status::SUCCESS, 0),
        },
        Op::Connect(_) => Finished::Done(Status::SUCCESS, 0),
        Op::SendTo(_) => Finished::Done(Status::SUCCESS, n),
        Op::Post => Finished::Done(Status::SUCCESS, n),
    }
}

#[cfg(test)]
// Tests keep std's primitives (`crate::sync` is for the library's own).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub(crate) mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::Duration;

    use super::*;
    use crate::buf::Buffer;
    use crate::shared::DriverKind;
    use crate::sys::unix::{Handle, Port};
    use crate::sys::{HandleDriver, PortDriver};

    /// Rings whose cancels are dropped (by address), as if their requests
    /// were stuck in a file system that never answers.
    static DEAF: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    /// Test seam: true when `ring`'s cancels are to be dropped, so that
    /// its requests stay in the kernel, as a request the kernel never
    /// gives back would (no FUSE needed).
    pub(super) fn ignores_cancel(ring: &Ring) -> bool {
        DEAF.lock().unwrap().contains(&(ring as *const Ring as usize))
    }

    /// Test seam for the core's tests: while it lives, the ring of an
    /// io_uring port drops its cancels (see [`ignores_cancel`]).
    pub(crate) struct DeafRing(usize);

    impl DeafRing {
        pub(crate) fn new(port: &Port) -> DeafRing {
            let key = port.inner.ring().expect("an io_uring port") as *const Ring as usize;
            DEAF.lock().unwrap().push(key);
            DeafRing(key)
        }
    }

    impl Drop for DeafRing {
        fn drop(&mut self) {
            DEAF.lock().unwrap().retain(|&r| r != self.0);
        }
    }

    /// Descriptors whose file reads skip the cached read and go to the
    /// ring, as a read of pages not in the page cache does.
    static UNCACHED: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

    /// Test seam: true when the file reads of `fd` are to go to the ring
    /// (`read_cached` does nothing).
    pub(super) fn skips_cache(fd: RawFd) -> bool {
        UNCACHED.lock().unwrap().contains(&fd)
    }

    /// Rings whose kernel is taken to refuse submissions with `EBUSY`
    /// while its completion queue is full (by address).
    static BUSY: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    /// Test seam: true when `ring`'s submit is to fail with `EBUSY`, as
    /// older kernels do while completions that overflowed cannot be
    /// flushed (the completion queue is full); newer kernels keep taking
    /// entries.
    pub(super) fn busy(ring: &Ring) -> bool {
        if !BUSY.lock().unwrap().contains(&(ring as *const Ring as usize)) {
            return false;
        }
        let _g = ring.cq.lock();
        // SAFETY: the `cq` lock makes this the only user of the completion
        // queue while the guard lives; only its length is read.
        unsafe { ring.ring.completion_shared() }.is_full()
    }

    /// A test's hold on one ring's poller: the poller tells `reached` it is
    /// about to block in the ring, then waits for `go`.
    struct Hold {
        ring: usize,
        reached: Sender<()>,
        go: Receiver<()>,
    }

    static HOLD: std::sync::Mutex<Option<Hold>> = std::sync::Mutex::new(None);

    /// Test seam: stops the poller of a ring a test holds between its
    /// registration (the port's queue sees it polling) and its entry into
    /// the kernel, the window in which a wake-up entry can be taken by
    /// another thread before the poller waits for it.
    pub(super) fn before_wait(ring: &Ring) {
        let mut hold = HOLD.lock().unwrap();
        if hold.as_ref().is_some_and(|h| h.ring == ring as *const Ring as usize) {
            let h = hold.take().unwrap();
            drop(hold);
            let _ = h.reached.send(());
            let _ = h.go.recv_timeout(Duration::from_secs(20));
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (c, l.accept().unwrap().0)
    }

    /// S17: the wake-up entry a close's drain takes from the ring, while
    /// the poller it was meant for has not yet entered the kernel, is given
    /// again; before, that poller waited out its whole timeout (a worker's
    /// keep-alive), and the pool's shutdown with it.
    #[test]
    fn s17_a_wake_up_taken_by_the_close_is_given_again() {
        let Ok(port) = Port::new(1, Some(DriverKind::IoUring), |f| f()) else {
            return; // no io_uring here: nothing to test
        };
        let ring = port.inner.ring().expect("an io_uring port");
        // A read in the kernel, for the close's drain to wait for.
        let (_client, server) = pair();
        let h = Handle::from(server);
        h.associate(&port).unwrap();
        let req = Request::alloc(Op::Read, Buffer::from(vec![0u8; 16]), 0).unwrap();
        h.submit(req, &port).map_err(|(e, _)| e).unwrap();
        let (reached_tx, reached_rx) = channel();
        let (go_tx, go_rx) = channel();
        *HOLD.lock().unwrap() =
            Some(Hold { ring: ring as *const Ring as usize, reached: reached_tx, go: go_rx });
        let port = Arc::new(port);
        let (p2, (got_tx, got_rx)) = (port.clone(), channel());
        let waiter = std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = p2.get_many(&mut out, 4, Some(Duration::from_secs(600)), None);
            let _ = got_tx.send(r.map(|_| out.len()));
        });
        reached_rx.recv_timeout(Duration::from_secs(20)).expect("the waiter polls");
        // The post marks the poller woken and rings it; the close's drain
        // takes that entry with its own.
        port.post(Packet { status: Status::SUCCESS, bytes: 1, key: 2, request: None })
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(port.close());
        go_tx.send(()).unwrap();
        let got = got_rx.recv_timeout(Duration::from_secs(20));
        assert!(matches!(got, Ok(Ok(n)) if n > 0), "the poller was not woken: {got:?}");
        waiter.join().unwrap();
    }

    /// S11, S17: a port's close waits a bounded time for a request the
    /// kernel never gives back (here: its cancel is dropped), then ends and
    /// counts it as leaked. Before, the close, and any shutdown, waited for
    /// ever.
    #[test]
    fn s11_a_close_gives_up_on_a_request_the_kernel_keeps() {
        let Ok(port) = Port::new(1, Some(DriverKind::IoUring), |f| f()) else {
            return; // no io_uring here: nothing to test
        };
        let ring = port.inner.ring().expect("an io_uring port");
        let (_client, server) = pair();
        let h = Handle::from(server);
        h.associate(&port).unwrap();
        let req = Request::alloc(Op::Read, Buffer::from(vec![0u8; 16]), 0).unwrap();
        h.submit(req, &port).map_err(|(e, _)| e).unwrap();
        let key = ring as *const Ring as usize;
        DEAF.lock().unwrap().push(key);
        let port = Arc::new(port);
        let (p2, (done_tx, done_rx)) = (port.clone(), channel());
        let closer = std::thread::spawn(move || {
            let _ = done_tx.send(p2.close());
        });
        let closed = done_rx.recv_timeout(Duration::from_secs(20));
        DEAF.lock().unwrap().retain(|&r| r != key);
        assert_eq!(closed, Ok(true), "the close did not return");
        closer.join().unwrap();
        assert_eq!(port.stats().leaked_requests, 1, "the read still in the kernel is counted as leaked");
        // The port's queue is closed and drained: a waiter hears so at once.
        let mut out = Vec::new();
        assert!(matches!(
            port.get_many(&mut out, 1, Some(Duration::from_secs(20)), None),
            Err(crate::shared::error::Error::Abandoned)
        ));
    }

    /// S2: a batch the kernel stops early (an entry whose preparation
    /// fails: a `sendmsg` of more than `UIO_MAXIOV` parts) leaves the
    /// entries after it counted, and the same submit hands them over; the
    /// refused entry completes through its completion entry with its error.
    #[test]
    fn s2_a_submit_hands_over_the_entries_after_one_the_kernel_refused() {
        let ring = match Ring::open(Rings::Shared) {
            Ok(r) => r,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let (a, _b) = UnixStream::pair().unwrap();
        let byte = [0u8; 1];
        let iov = vec![libc::iovec { iov_base: byte.as_ptr() as *mut _, iov_len: 1 }; 2000];
        // SAFETY: all-zero bytes are a valid (empty) `msghdr`.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_iov = iov.as_ptr() as *mut _;
        msg.msg_iovlen = iov.len() as _;
        let refused = opcode::SendMsg::new(types::Fd(a.as_raw_fd()), &msg).build().user_data(7);
        let after = opcode::Nop::new().build().user_data(8);
        ring.push(&refused).unwrap();
        ring.push(&after).unwrap();
        ring.submit_now().unwrap();
        let _g = ring.sq.lock();
        // SAFETY: the `sq` lock is held: this is the queue's only user.
        let left = unsafe { ring.ring.submission_shared() }.len();
        drop(_g);
        assert_eq!(left, 0, "the entry after the refused one is still in the submission queue");
        assert_eq!(ring.hs.unsubmitted(), 0, "every entry was taken");
        // Nothing is left to submit: polls only wait, a bounded number of
        // times, for the two completion entries.
        let mut got = Vec::new();
        for _ in 0..500 {
            ring.poll(Some(Instant::now() + std::time::Duration::from_millis(10))).unwrap();
            got.append(&mut ring.cq.lock());
            if got.len() >= 2 {
                break;
            }
        }
        got.sort();
        assert_eq!(
            got,
            vec![(7, -libc::EMSGSIZE), (8, 0)],
            "the refused entry's error, then the one after it"
        );
    }

    /// The one packet a port gives within a generous bound.
    fn one_packet(port: &Port) -> Packet {
        let mut out = Vec::new();
        port.get_many(&mut out, 4, Some(Duration::from_secs(20)), None).expect("a completion comes");
        assert_eq!(out.len(), 1, "one completion");
        out.pop().unwrap()
    }

    /// S8: a file read that fails after part of its buffer was read (by
    /// the cached read, or an earlier entry) completes as a short read
    /// with the bytes read, in its buffer, as `pread` gives them and as the
    /// epoll driver does. Before, it completed with the error and 0 bytes,
    /// and the buffer's length was never set.
    #[test]
    fn s8_a_file_read_failing_after_part_completes_with_the_bytes_read() {
        let Ok(port) = Port::new(1, Some(DriverKind::IoUring), |f| f()) else {
            return; // no io_uring here: nothing to test
        };
        // A directory served as a file: its cached read is refused
        // (`EOPNOTSUPP`), so the ring reads it, and that read fails (`EISDIR`).
        let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
        let h = Handle::new(dir.into(), HandleKind::File);
        h.associate(&port).unwrap();
        let mut req = Request::alloc(Op::ReadAt(0), Buffer::from(vec![7u8; 16]), 0).unwrap();
        // What a cached read leaves: 5 bytes read, the rest for the ring.
        req.header_mut().os.progress = 5;
        h.submit(req, &port).map_err(|(e, _)| e).unwrap();
        let p = one_packet(&port);
        assert_eq!((p.status, p.bytes), (Status::SUCCESS, 5), "a short read of the bytes read");
        assert_eq!(p.request.unwrap().into_buffer().into_vec(), vec![7u8; 5], "the buffer holds them");
    }

    /// S24: a file read cut by a cancel or a close after part of its
    /// buffer was read completes aborted with the bytes read, in its
    /// buffer. Before, it reported 0 bytes and the buffer's length was
    /// never set.
    #[test]
    fn s24_a_file_read_cut_off_after_part_reports_the_bytes_read() {
        for cut in ["cancel", "close"] {
            let Ok(port) = Port::new(1, Some(DriverKind::IoUring), |f| f()) else {
                return; // no io_uring here: nothing to test
            };
            // A pipe served as a file, its reads sent to the ring: a read
            // of it waits in the kernel until it is cut.
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: pipe2 returned two new descriptors, owned by nobody else.
            let (r, _w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            UNCACHED.lock().unwrap().push(fds[0]);
            let h = Handle::new(r, HandleKind::File);
            h.associate(&port).unwrap();
            let mut req = Request::alloc(Op::ReadAt(0), Buffer::from(vec![7u8; 16]), 0).unwrap();
            req.header_mut().os.progress = 5;
            let id = req.id();
            let started = h.submit(req, &port).map_err(|(e, _)| e);
            UNCACHED.lock().unwrap().retain(|&fd| fd != fds[0]);
            started.unwrap();
            match cut {
                "cancel" => h.cancel(id).unwrap(),
                _ => assert!(h.close()),
            }
            let p = one_packet(&port);
            assert_eq!((p.status, p.bytes), (ABORTED, 5), "{cut}: aborted, with the bytes read");
            let buf = p.request.unwrap().into_buffer().into_vec();
            assert_eq!(buf, vec![7u8; 5], "{cut}: the buffer holds them");
        }
    }

    /// S2, S14: a push into a full submission queue while the kernel takes
    /// nothing (`EBUSY`: its completion queue is full) takes the
    /// completion entries itself and goes on; before, it spun holding
    /// `sq` until a poller took them, and a collect waiting for `sq` while
    /// holding the poller's role froze the port.
    #[test]
    fn s14_a_push_into_a_full_queue_takes_completions_when_the_kernel_is_busy() {
        let ring = match Ring::open(Rings::Shared) {
            Ok(r) => Arc::new(r),
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let cq_size = ENTRIES as usize * 4;
        // Each full submission queue is handed over by the push after it:
        // the completion queue fills, and one more queue waits behind it.
        for i in 0..cq_size + ENTRIES as usize {
            ring.push(&opcode::Nop::new().build().user_data(100 + i as u64)).unwrap();
        }
        assert!(ring.cq.lock().is_empty());
        let key = Arc::as_ptr(&ring) as usize;
        BUSY.lock().unwrap().push(key);
        let (r2, (tx, rx)) = (ring.clone(), channel());
        let pusher = std::thread::spawn(move || {
            let _ = tx.send(r2.push(&opcode::Nop::new().build().user_data(99)).is_ok());
        });
        let pushed = rx.recv_timeout(Duration::from_secs(20));
        BUSY.lock().unwrap().retain(|&r| r != key);
        assert_eq!(pushed, Ok(true), "the push did not return");
        pusher.join().unwrap();
        let taken = ring.cq.lock().len();
        assert_eq!(taken, cq_size, "the push took the full completion queue for the next dispatch");
    }

    /// S14: a collect never waits for `sq` (a thread may hold it pushing
    /// into a full queue); before, it blocked there while holding the
    /// poller's role.
    #[test]
    fn s14_a_collect_does_not_wait_for_the_submission_lock() {
        let ring = match Ring::open(Rings::Shared) {
            Ok(r) => Arc::new(r),
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let held = ring.sq.lock();
        let (r2, (tx, rx)) = (ring.clone(), channel());
        let collector = std::thread::spawn(move || {
            let _ = tx.send(r2.poll_now().is_ok());
        });
        let r = rx.recv_timeout(Duration::from_secs(20));
        drop(held);
        assert_eq!(r, Ok(true), "poll_now waited for the submission lock");
        collector.join().unwrap();
    }
}
