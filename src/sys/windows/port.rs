//! The port: a kernel I/O completion port.

use std::io;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ABANDONED_WAIT_0, ERROR_INVALID_HANDLE, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::IO::{
    CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus, OVERLAPPED,
    OVERLAPPED_ENTRY,
};

use super::handle::Io;
use crate::request::Packet;
use crate::request::{Header, Request};
use crate::shared::error::{Error, Result};
use crate::shared::status::Status;
use crate::shared::{DriverInfo, DriverKind, DriverStats, OsMetrics};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Ordering, Weak};
use crate::sys::inflight::Table;
use crate::sys::ready::Ready;
use crate::sys::{BlockingCall, PortDriver, SlotOps};

/// Entries taken from the kernel in one `GetQueuedCompletionStatusEx`.
const BATCH: usize = 64;

/// `INFINITE`
const INFINITE: u32 = u32::MAX;

/// The completion key of a packet posted with one of the crate's requests
/// (the user's key travels in the request). A handle's packets carry its
/// own key, `1 +` its index in the port's handle table, so this value is
/// never a handle's.
const POST_KEY: usize = usize::MAX;

/// The address whose packet means "closed and drained". No request can
/// have it: requests live on the heap.
static SENTINEL: u8 = 0;

fn sentinel() -> *mut OVERLAPPED {
    &SENTINEL as *const u8 as *mut OVERLAPPED
}

static INTERRUPT: u8 = 0;

static WAKE: u8 = 0;

/// The packet that wakes a waiter for the port's own queue (`sys::ready`);
/// never dereferenced.
fn wake_packet() -> *mut OVERLAPPED {
    &WAKE as *const u8 as *mut OVERLAPPED
}

/// After this many takes in a row from the port's own queue, a take looks
/// at the kernel's queue first (without waiting), so that the kernel's
/// packets are not starved by completions that keep finishing at once.
const KERNEL_EVERY: usize = 16;

thread_local! {
    /// The port the calling pool worker comes back to after its callback,
    /// and whether it already deferred a wake-up for it (as `sys::queue`
    /// does on Unix).
    #[allow(clippy::missing_const_for_thread_local)] // it is const; clippy flags it on this target all the same
    static RETURNS_TO: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

/// A started request that completed with no packet to come, on its way
/// through the port's own queue.
struct Direct(*mut Header);

// SAFETY: the request it points to is owned by whoever holds the `Direct`
// (nothing else references it), and requests are `Send`.
unsafe impl Send for Direct {}

/// The packet that ends a pool wait when the pool's limits change; never
/// dereferenced, like the close sentinel.
fn interrupt_packet() -> *mut OVERLAPPED {
    &INTERRUPT as *const u8 as *mut OVERLAPPED
}

/// The kernel port handle, owned.
struct Raw(HANDLE);

// SAFETY: a completion port handle may be used from any thread; every call
// made on it (post, get, associate, close) is thread-safe in the kernel.
unsafe impl Send for Raw {}
// SAFETY: as above; shared use only passes the handle value to the kernel.
unsafe impl Sync for Raw {}

pub(crate) struct IocpPortState {
    raw: Raw,
    concurrency: usize,
    /// Set by `close`: posts and new requests are refused from then on.
    closing: AtomicBool,
    /// Set once the sentinel is posted: the port is closed and drained.
    finished: AtomicBool,
    /// Packets that will reach the port and have not been taken yet: user
    /// posts, and started requests (pending or already completed).
    outstanding: AtomicUsize,
    /// Set by the first `take_left`: what it left behind is not waited for
    /// a second time.
    took_left: AtomicBool,
    /// Threads inside `get_many` (see `Port::waiting_threads`).
    waiting: AtomicUsize,
    /// Interrupts so far (see `PortDriver::interrupt`).
    interrupts: AtomicUsize,
    /// The handles associated with the port: for each, its requests in
    /// flight (read with no lock, to tell the crate's packets from foreign
    /// ones, see [`IocpPortState::claim`]) and the handle itself (for `close` to
    /// cancel). A handle's completion key is `1 +` its index here.
    pub(super) table: Table<Weak<Io>>,
    /// Packets dropped because no request of the crate's made them (S39).
    foreign: AtomicUsize,
    /// The port's own queue: completions the kernel queues no packet for
    /// (`IocpPortState::deliver`), taken before the kernel's.
    ready: Ready<Direct>,
    /// How many went through it (`Port::direct_completions`).
    direct: AtomicUsize,
    /// Takes from the own queue since a take last looked at the kernel's
    /// (a hint for fairness: races only move the next look a little).
    own_run: AtomicUsize,
    /// Its `GetQueuedCompletionStatusEx` calls and the entries they
    /// returned (`metrics`).
    os: crate::shared::OsCounters,
}

/// The port. Cheap to share; the core holds it in an `Arc`.
#[derive(Clone)]
pub(crate) struct Port {
    pub(super) inner: Arc<IocpPortState>,
}

/// The kernel tracks concurrency on Windows, so a thread never holds a
/// slot of the crate's own; this type has no values.
#[derive(Clone)]
pub(crate) enum Slot {}

impl SlotOps for Slot {
    /// Nothing to give back: the kernel counts running threads itself.
    fn release(&self) {
        match *self {}
    }
}

impl PortDriver for Port {
    type Slot = Slot;

    /// `ERROR_OPERATION_ABORTED`.
    const ABORTED_CODE: u32 = windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED;

    const OUT_OF_RESOURCES: &'static [u32] = {
        use windows_sys::Win32::Foundation::{
            ERROR_NOT_ENOUGH_MEMORY, ERROR_NO_SYSTEM_RESOURCES, ERROR_OUTOFMEMORY, ERROR_TOO_MANY_OPEN_FILES,
        };
        use windows_sys::Win32::Networking::WinSock::{WSAEMFILE, WSAENOBUFS};
        &[
            WSAEMFILE as u32,
            WSAENOBUFS as u32,
            ERROR_TOO_MANY_OPEN_FILES,
            ERROR_NOT_ENOUGH_MEMORY,
            ERROR_OUTOFMEMORY,
            ERROR_NO_SYSTEM_RESOURCES,
        ]
    };

    /// The kernel's queue cannot be counted.
    const QUEUE_LEN_KNOWN: bool = false;

    /// The Win32 (or Winsock) error code of `e`, or `ERROR_GEN_FAILURE`.
    fn status_code_of(e: &io::Error) -> u32 {
        e.raw_os_error().map_or(super::ERROR_GEN_FAILURE, |c| c as u32)
    }

    fn not_found() -> io::Error {
        super::not_found()
    }

    /// IOCP only.
    fn has_driver(kind: DriverKind) -> bool {
        kind == DriverKind::Iocp
    }

    fn driver(&self) -> DriverInfo {
        DriverInfo { kind: DriverKind::Iocp, fallback: None, setup: None }
    }

    /// IOCP has no call of the port's own that blocks on a file system.
    fn new(concurrency: usize, want: Option<DriverKind>, _blocking: BlockingCall) -> io::Result<Port> {
        if want.is_some_and(|k| k != DriverKind::Iocp) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("driver {want:?}: only IOCP runs on Windows"),
            ));
        }
        let n = u32::try_from(concurrency).unwrap_or(u32::MAX);
        // SAFETY: creating a new port: no file handle, no existing port.
        let h = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, n) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Port {
            inner: Arc::new(IocpPortState {
                raw: Raw(h),
                concurrency,
                closing: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                took_left: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                interrupts: AtomicUsize::new(0),
                table: Table::new(),
                foreign: AtomicUsize::new(0),
                ready: Ready::new(),
                direct: AtomicUsize::new(0),
                own_run: AtomicUsize::new(0),
                os: Default::default(),
            }),
        })
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closing()
    }

    /// Threads inside `get_many`, counted just before the kernel wait.
    fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    fn has_backlog(&self) -> bool {
        self.inner.outstanding.load(Ordering::Acquire) > 0
    }

    /// Always `None`: the kernel limits the threads running a port's
    /// completions to its concurrency value by itself.
    fn current_slot() -> Option<Slot> {
        None
    }

    /// `PostQueuedCompletionStatus`. The request, if any, travels as its
    /// `OVERLAPPED` pointer, and then carries the byte count too (the
    /// kernel's count is 32 bits wide); without a request the byte count
    /// must fit in 32 bits.
    fn post(&self, p: Packet) -> std::result::Result<(), (Error, Packet)> {
        if p.request.is_none() && u32::try_from(p.bytes).is_err() {
            return Err((
                Error::invalid("bytes", p.bytes, "must fit in 32 bits on Windows when no request is posted"),
                p,
            ));
        }
        let bytes = p.bytes as u32;
        let inner = &self.inner;
        if !inner.begin() {
            return Err((Error::invalid("port", "<closed>", "is closed"), p));
        }
        let Packet { status, key, request, bytes: full } = p;
        let (raw, kernel_key) = match request {
            Some(mut r) => {
                let h = r.header_mut();
                h.os.io = None;
                h.os.key = key;
                let ov = h.os.overlapped(h.generation);
                *ov = OVERLAPPED::default();
                ov.InternalHigh = full;
                let ov: *mut OVERLAPPED = ov;
                let p = r.into_raw();
                debug_assert_eq!(super::header_of(ov), p, "an OVERLAPPED leads back to its request");
                (ov, POST_KEY)
            }
            None => (std::ptr::null_mut(), key),
        };
        // SAFETY: the port handle is open (closed only on drop); `raw` is
        // null or the OVERLAPPED of a request given up with into_raw, which
        // the packet carries until get_many takes it back.
        let ok = unsafe { PostQueuedCompletionStatus(inner.raw.0, bytes, kernel_key, raw) };
        if ok == 0 {
            let e = io::Error::last_os_error();
            // SAFETY: the post failed, so nothing else holds the request
            // whose OVERLAPPED `raw` is.
            let request = (!raw.is_null()).then(|| unsafe { Request::from_raw(super::header_of(raw)) });
            inner.end(1);
            return Err((Error::Io(e), Packet { status, bytes: full, key, request }));
        }
        Ok(())
    }

    fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
        interrupts: Option<usize>,
    ) -> Result<usize> {
        self.inner.waiting.fetch_add(1, Ordering::AcqRel);
        let r = self.inner.get_many(out, max, timeout, interrupts);
        self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Marks the port closing, cancels what is pending on its handles, and
    /// arranges for waiters to get `Abandoned` once every expected packet
    /// has been taken. False when it was already closed.
    fn close(&self) -> bool {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::SeqCst) {
            return false;
        }
        inner.cancel_handles();
        // A completion a worker deferred may wait in the own queue.
        if inner.ready.more(inner.waiting.load(Ordering::SeqCst)) {
            inner.post_wake();
        }
        if inner.outstanding.load(Ordering::SeqCst) == 0 {
            inner.finish();
        }
        true
    }

    /// The last reference is gone: every request still pending is
    /// cancelled and its packet taken (a bounded wait, 2 s), for the core
    /// to hand to the request's own target (S11, S24).
    fn close_dropped(&self, out: &mut Vec<Packet>) {
        self.inner.take_left(out);
    }

    /// Posts one interrupt packet per thread waiting now. A wait that began
    /// before the interrupt ends with `Ok(0)` when it takes one; a later
    /// wait drops it.
    fn interrupt(&self) {
        self.inner.interrupts.fetch_add(1, Ordering::SeqCst);
        for _ in 0..self.waiting() {
            // SAFETY: the port handle is open; the interrupt pointer is
            // never dereferenced.
            unsafe { PostQueuedCompletionStatus(self.inner.raw.0, 0, 0, interrupt_packet()) };
        }
    }

    fn interrupts(&self) -> usize {
        self.inner.interrupts.load(Ordering::SeqCst)
    }

    /// The kernel watches every handle bound to an IOCP. The one duty: a
    /// completion left in the port's own queue while threads wait in the
    /// kernel (one a worker deferred and then did not come back for, as
    /// its callback blocks, or one whose wake-up could not be posted) gets
    /// a wake-up.
    fn maintain(&self) {
        let inner = &self.inner;
        if !inner.ready.is_empty() && inner.ready.more(inner.waiting.load(Ordering::SeqCst)) {
            inner.post_wake();
        }
    }

    fn stats(&self) -> DriverStats {
        DriverStats {
            foreign_packets: self.inner.foreign.load(Ordering::Relaxed),
            direct_completions: self.inner.direct.load(Ordering::Relaxed),
            leaked_requests: 0,
        }
    }

    fn os_metrics(&self) -> OsMetrics {
        self.inner.os.snapshot()
    }
}

impl IocpPortState {
    pub(super) fn handle(&self) -> HANDLE {
        self.raw.0
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Counts one packet to come; false (counting nothing) when closing.
    pub(super) fn begin(&self) -> bool {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.is_closing() {
            self.end(1);
            return false;
        }
        true
    }

    /// `n` expected packets were taken (or will never come).
    pub(super) fn end(&self, n: usize) {
        if n > 0 && self.outstanding.fetch_sub(n, Ordering::SeqCst) == n && self.is_closing() {
            self.finish();
        }
    }

    /// Closed and drained: post the sentinel, once.
    fn finish(&self) {
        if !self.finished.swap(true, Ordering::SeqCst) {
            self.post_sentinel();
        }
    }

    fn post_sentinel(&self) {
        // SAFETY: the port handle is open; the sentinel pointer is never
        // dereferenced by the kernel or by get_many.
        unsafe { PostQueuedCompletionStatus(self.raw.0, 0, 0, sentinel()) };
    }

    /// Hands the completion of a started request for which the kernel
    /// queues no packet (it completed at once) to the port's own queue,
    /// where the next take finds it without a kernel call; a thread
    /// blocked in the kernel meanwhile is woken with one packet
    /// (`sys::ready`). Its result is in its `OVERLAPPED` (`Internal`: the
    /// status, `InternalHigh`: the bytes).
    ///
    /// # Safety
    /// `p` is a started request (its `os.io` set) given up with into_raw,
    /// taken off its handle's pending requests, that the OS holds no more.
    pub(super) unsafe fn deliver(&self, p: *mut Header) {
        self.direct.fetch_add(1, Ordering::Relaxed);
        // A pool worker of this port will take it itself when its callback
        // returns (once per packet it took): no wake-up, so a callback's
        // next completion costs no kernel call at all.
        let me = self as *const IocpPortState as usize;
        let defer = RETURNS_TO.with(|r| {
            let (port, used) = r.get();
            let defer = port == me && !used;
            if defer {
                r.set((port, true));
            }
            defer
        });
        if defer {
            self.ready.push_deferred(Direct(p));
        } else if self.ready.push(Direct(p), &self.waiting) {
            self.post_wake();
        }
    }

    fn post_wake(&self) {
        // SAFETY: the port handle is open; the wake-up pointer is never
        // dereferenced.
        if unsafe { PostQueuedCompletionStatus(self.raw.0, 0, 0, wake_packet()) } == 0 {
            // The next push, take or `maintain` posts one again.
            self.ready.woken();
        }
    }

    /// After a take: wakes another waiter when items of the port's own
    /// queue are left behind.
    fn pass_on(&self) {
        if self.ready.more(self.waiting.load(Ordering::SeqCst).saturating_sub(1)) {
            self.post_wake();
        }
    }

    /// The packet of a completion from the port's own queue.
    fn direct_packet(&self, d: Direct) -> Packet {
        // SAFETY: `deliver` queued it: a started request given up with
        // into_raw that the OS holds no more, taken from the queue once.
        let mut req = unsafe { Request::from_raw(d.0) };
        let h = req.header_mut();
        let ov = h.os.overlapped(h.generation);
        let (nt, bytes) = (ov.Internal as u32 as i32, ov.InternalHigh as u32);
        finish(req, nt, bytes)
    }

    fn cancel_handles(&self) {
        // Upgraded under the table's lock, aborted (and maybe dropped: an
        // `Io`'s drop takes that lock) after it.
        let handles: Vec<Arc<Io>> = self.table.owners(Weak::upgrade);
        for io in handles {
            io.abort_for_port_close();
        }
    }

    /// True when the packet with `key` and `ov` is one of the crate's
    /// requests, which is then taken out of its handle's pending requests;
    /// false for a foreign packet (S39): overlapped I/O that someone else
    /// issued on a handle bound here, through a duplicate of it, or a
    /// packet that comes late for an earlier use of a request's block. `ov`
    /// is only compared, never read: a request counts as the crate's when
    /// the `OVERLAPPED` address of its current use (each use of a block has
    /// its own, `RequestOs::overlapped`) is pending on the handle the key
    /// names. No lock: the key leads to the handle's entry in the table
    /// with two loads.
    fn claim(&self, key: usize, ov: *mut OVERLAPPED) -> bool {
        key.checked_sub(1).and_then(|i| self.table.get(i)).is_some_and(|p| p.take(ov as usize))
    }

    /// The packet of one kernel entry that is neither the sentinel nor an
    /// interrupt; `None` for a foreign packet, which is counted and dropped.
    fn packet_of(&self, e: &OVERLAPPED_ENTRY) -> Option<Packet> {
        let raw = e.lpOverlapped;
        if raw.is_null() {
            // A user post without a request: nothing to read.
            return Some(Packet {
                status: Status::SUCCESS,
                bytes: e.dwNumberOfBytesTransferred as usize,
                key: e.lpCompletionKey,
                request: None,
            });
        }
        if e.lpCompletionKey == POST_KEY {
            // SAFETY: only `post` queues packets with this key and a
            // pointer (the port's handle is never lent out, and no handle's
            // key is POST_KEY); the pointer is the OVERLAPPED of a request
            // given up with into_raw, and the kernel hands each packet out
            // once.
            let req = unsafe { Request::from_raw(super::header_of(raw)) };
            return Some(user_post(req));
        }
        if !self.claim(e.lpCompletionKey, raw) {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // The status is the `NTSTATUS` the packet carries (the entry's
        // `Internal`), which on Windows is also what the kernel wrote into
        // the request's `OVERLAPPED`; the packet is read rather than the
        // `OVERLAPPED` because Wine may queue the packet before it writes
        // the `OVERLAPPED`.
        //
        // SAFETY: `claim` found the pointer among its handle's pending
        // requests: it is the OVERLAPPED of the current use of a request of
        // that handle given up with into_raw, whose packet this is (the
        // kernel hands each out once, and the entry is removed now; a
        // packet for an earlier use of the block carries another address).
        let req = unsafe { Request::from_raw(super::header_of(raw)) };
        Some(finish(req, e.Internal as u32 as i32, e.dwNumberOfBytesTransferred))
    }

    /// One `GetQueuedCompletionStatusEx`, retried until a packet, the
    /// deadline or the sentinel.
    fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
        interrupts: Option<usize>,
    ) -> Result<usize> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut entries = [OVERLAPPED_ENTRY::default(); BATCH];
        let want = max.clamp(1, BATCH);
        // Only the pool's workers (the interruptible waits) always come
        // back to the port after a callback.
        let me = if interrupts.is_some() { self as *const IocpPortState as usize } else { 0 };
        RETURNS_TO.with(|r| r.set((me, false)));
        loop {
            if self.finished.load(Ordering::SeqCst) {
                return Err(Error::Abandoned);
            }
            // The port's own queue first (the caller is counted in
            // `waiting` already), but every KERNEL_EVERY-th time in a row
            // the kernel's, without waiting when the own queue has more.
            let kernel_turn = self.own_run.load(Ordering::Relaxed) >= KERNEL_EVERY;
            if !kernel_turn {
                let before = out.len();
                while out.len() - before < want {
                    let Some(d) = self.ready.pop() else { break };
                    out.push(self.direct_packet(d));
                }
                let taken = out.len() - before;
                if taken > 0 {
                    self.own_run.fetch_add(1, Ordering::Relaxed);
                    self.pass_on();
                    self.end(taken);
                    return Ok(taken);
                }
            }
            if kernel_turn || self.own_run.load(Ordering::Relaxed) != 0 {
                self.own_run.store(0, Ordering::Relaxed);
            }
            let poll = kernel_turn && !self.ready.is_empty();
            let ms = match deadline {
                _ if poll => 0,
                None => INFINITE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up so that a short wait is not a busy poll.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    u32::try_from(ms).unwrap_or(INFINITE - 1).min(INFINITE - 1)
                }
            };
            let mut removed = 0u32;
            self.os.entered();
            // SAFETY: the port handle is open; `entries` has room for
            // `want` entries; not alertable.
            let ok = unsafe {
                GetQueuedCompletionStatusEx(
                    self.raw.0,
                    entries.as_mut_ptr(),
                    want as u32,
                    &mut removed,
                    ms,
                    0,
                )
            };
            if ok == 0 {
                let e = io::Error::last_os_error();
                let code = e.raw_os_error().map(|c| c as u32);
                if poll && code == Some(WAIT_TIMEOUT) {
                    // Nothing in the kernel's queue: back to the own one.
                    continue;
                }
                return Err(match code {
                    Some(WAIT_TIMEOUT) => Error::Timeout,
                    Some(ERROR_ABANDONED_WAIT_0 | ERROR_INVALID_HANDLE) => Error::Abandoned,
                    _ => Error::Io(e),
                });
            }
            self.os.returned(removed as usize);
            let before = out.len();
            let mut saw_sentinel = false;
            let mut interrupted = false;
            let mut woken = false;
            for e in &entries[..(removed as usize).min(BATCH)] {
                if e.lpOverlapped == sentinel() {
                    saw_sentinel = true;
                } else if e.lpOverlapped == interrupt_packet() {
                    interrupted |=
                        interrupts.is_some_and(|seen| seen != self.interrupts.load(Ordering::SeqCst));
                } else if e.lpOverlapped == wake_packet() {
                    self.ready.woken();
                    woken = true;
                } else if let Some(p) = self.packet_of(e) {
                    out.push(p);
                }
            }
            let taken = out.len() - before;
            if saw_sentinel {
                // Put it back for the next waiter.
                self.post_sentinel();
            }
            self.end(taken);
            if taken > 0 {
                self.pass_on();
                return Ok(taken);
            }
            if saw_sentinel {
                return Err(Error::Abandoned);
            }
            if interrupted {
                return Ok(0);
            }
            if woken || poll {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout);
            }
        }
    }
}

/// The packet of a completed request of the crate's, with the `NTSTATUS`
/// and byte count of its result. Every started request holds its handle
/// (set before it was made pending), so `os.io` is always there.
fn finish(mut req: Request, nt: i32, bytes: u32) -> Packet {
    match req.header_mut().os.io.take() {
        Some(io) => io.complete(req, nt, bytes),
        None => Packet {
            status: Status::from_raw(super::net::error_of(nt, false)),
            bytes: bytes as usize,
            key: 0,
            request: Some(req),
        },
    }
}

/// The packet of a user post that carried a request: the full byte count
/// and the user's key travel in the request.
fn user_post(mut req: Request) -> Packet {
    let h = req.header_mut();
    let (bytes, key) = (h.os.overlapped(h.generation).InternalHigh, h.os.key);
    Packet { status: Status::SUCCESS, bytes, key, request: Some(req) }
}

impl IocpPortState {
    /// Cancels what is still pending on the port's handles and takes the
    /// packets still expected into `out`, waiting a bounded time (2 s):
    /// nothing can take them from the port any more (that takes a
    /// reference to it). Packets that do not arrive in time are leaked with
    /// their requests, never freed while the kernel may still write to them.
    ///
    /// Done once: the drop of a port whose `close_dropped` took what was
    /// left does not wait again for what that left behind.
    fn take_left(&self, out: &mut Vec<Packet>) {
        if self.took_left.swap(true, Ordering::SeqCst) {
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        self.cancel_handles();
        while let Some(d) = self.ready.pop() {
            out.push(self.direct_packet(d));
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut entries = [OVERLAPPED_ENTRY::default(); BATCH];
        while self.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            let mut removed = 0u32;
            // SAFETY: as in get_many; the port is still open here.
            let ok = unsafe {
                GetQueuedCompletionStatusEx(
                    self.raw.0,
                    entries.as_mut_ptr(),
                    BATCH as u32,
                    &mut removed,
                    50,
                    0,
                )
            };
            if ok == 0 {
                continue;
            }
            for e in &entries[..(removed as usize).min(BATCH)] {
                if ![sentinel(), interrupt_packet(), wake_packet()].contains(&e.lpOverlapped) {
                    if let Some(p) = self.packet_of(e) {
                        out.push(p);
                        self.outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

impl Drop for IocpPortState {
    /// Takes what is left (nothing after `PortDriver::close_dropped`) and
    /// frees those requests and buffers, then closes the kernel port.
    fn drop(&mut self) {
        let mut left = Vec::new();
        self.take_left(&mut left);
        drop(left);
        // SAFETY: the handle is owned and closed once, here. Packets that
        // did not arrive in time are leaked with their requests, never freed
        // while the kernel may still write to them.
        unsafe { CloseHandle(self.raw.0) };
    }
}
