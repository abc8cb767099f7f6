//! The io_uring driver (Linux, S36): true completions.
//!
//! One ring per port, shared by the port's threads. A request becomes one
//! submission entry whose `user_data` is the request's address; the kernel
//! owns the request (and its buffer) until its completion entry comes back,
//! which is the request's one completion (S2), whoever wins a cancel race.
//!
//! Who submits: entries are pushed under the submission lock and handed to
//! the kernel by the next `io_uring_enter`. The thread that polls makes
//! that call anyway (submit and wait in one call). A pool worker that
//! pushes entries from its callbacks leaves them for its return to the
//! port ([`Ring::flush`]), so a batch of callbacks costs one call; any
//! other thread submits at once when a thread is blocked in the ring.
//!
//! Who reaps: the thread that polls (one at a time, by the port's queue)
//! takes every completion entry there is and turns each into a packet.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use io_uring::{opcode, squeue::Entry, types, IoUring, Probe};
use socket2::{SockAddr, SockRef};

use super::handle::Io;
use super::op::{is_write_side, sent};
use super::port::PortQueue;
use crate::buf::Buffer;
use crate::handle::HandleKind;
use crate::op::Op;
use crate::port::Packet;
use crate::request::{Header, Request};
use crate::status::Status;
use crate::sync::{Arc, Mutex};

/// `user_data` of the entry that wakes a blocked poller.
const WAKE: u64 = 0;
/// `user_data` of cancel entries (their own completions carry nothing).
const CANCEL: u64 = 1;

/// Submission queue entries; completion queue entries are twice as many.
const ENTRIES: u32 = 1024;

/// The environment variable that picks the Linux driver: `io_uring`,
/// `epoll`, or `auto` (the default: io_uring where it works).
pub(crate) const DRIVER_VAR: &str = "IOCOMPLETION_DRIVER";
/// Test seam: set to an errno (`EPERM`, `ENOSYS`, `ENOMEM` or a number),
/// the io_uring probe reports that refusal instead of asking the kernel.
pub(crate) const REFUSE_VAR: &str = "IOCOMPLETION_IO_URING_REFUSE";

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

/// A port's ring.
pub(crate) struct Ring {
    ring: IoUring,
    /// Held to push entries (the submission queue has one writer at a time).
    sq: Mutex<()>,
    /// Held to take completion entries; the ones the last poll took, for
    /// its dispatch.
    cq: Mutex<Vec<(u64, i32)>>,
    /// A thread is (about to be) blocked in the ring waiting for entries.
    in_wait: AtomicBool,
    /// Entries pushed and maybe not yet handed to the kernel.
    unsubmitted: AtomicUsize,
    /// Requests in the kernel (their completion entry not yet taken).
    in_flight: AtomicUsize,
}

fn refused(errno: i32, why: &str) -> String {
    format!("{why}: {}", io::Error::from_raw_os_error(errno))
}

impl Ring {
    /// A ring, or why io_uring cannot serve (the reason the port falls
    /// back to epoll): the kernel refused (`ENOSYS`, `EPERM` as under a
    /// seccomp profile, `ENOMEM` from `RLIMIT_MEMLOCK`) or lacks a feature.
    pub(crate) fn open() -> Result<Ring, String> {
        if let Ok(v) = std::env::var(REFUSE_VAR) {
            let errno = match v.as_str() {
                "EPERM" => libc::EPERM,
                "ENOSYS" => libc::ENOSYS,
                "ENOMEM" => libc::ENOMEM,
                other => other.parse().unwrap_or(libc::EPERM),
            };
            return Err(refused(errno, &format!("io_uring_setup refused ({REFUSE_VAR} is set)")));
        }
        let ring = IoUring::builder()
            .setup_cqsize(ENTRIES * 4)
            .build(ENTRIES)
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
        Ok(Ring {
            ring,
            sq: Mutex::new(()),
            cq: Mutex::new(Vec::new()),
            in_wait: AtomicBool::new(false),
            unsubmitted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Pushes one entry; a full queue is handed to the kernel first.
    fn push(&self, entry: &Entry) -> io::Result<()> {
        let _g = self.sq.lock();
        loop {
            // SAFETY: the `sq` lock makes this the only user of the
            // submission queue while the guard lives.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: every pointer in the entry points into a request or
            // its buffer, which the kernel owns until the entry completes
            // (or into nothing, for WAKE and CANCEL).
            if unsafe { sq.push(entry) }.is_ok() {
                sq.sync();
                self.unsubmitted.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            drop(sq);
            self.submit_now()?;
        }
    }

    /// Hands every pushed entry to the kernel (one `io_uring_enter`).
    fn submit_now(&self) -> io::Result<()> {
        self.unsubmitted.store(0, Ordering::SeqCst);
        loop {
            match self.ring.submitter().submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // The completion queue is full: the kernel takes the
                // entries once completions are taken; the poller does that.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// After a [`Ring::start`], once the caller let go of the handle's
    /// lock: a pool worker of this port leaves the entry for its return to
    /// the port (one call for all its callbacks' entries); any other thread
    /// hands it over at once when a thread is blocked in the ring, which
    /// would not see it otherwise.
    pub(crate) fn pushed(&self, queue: &PortQueue) {
        if queue.returns_here() {
            return;
        }
        self.flush();
    }

    /// Hands pushed entries to the kernel if a thread is blocked in the
    /// ring (a thread that polls next submits them itself).
    pub(crate) fn flush(&self) {
        // Pairs with the fence in `poll`: either this thread sees the
        // poller's flag, or the poller's `io_uring_enter` sees the entry.
        fence(Ordering::SeqCst);
        if self.unsubmitted.load(Ordering::SeqCst) > 0 && self.in_wait.load(Ordering::SeqCst) {
            let _ = self.submit_now();
        }
    }

    /// Hands over whatever is pushed, whoever waits (the pool calls this
    /// every few milliseconds, so an entry left by a worker stuck in a
    /// long callback still starts).
    pub(crate) fn maintain(&self) {
        if self.unsubmitted.load(Ordering::SeqCst) > 0 {
            let _ = self.submit_now();
        }
    }

    /// Submits, then waits for a completion entry until `deadline`; takes
    /// the entries there are for [`Ring::dispatch`].
    pub(crate) fn poll(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.in_wait.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.unsubmitted.store(0, Ordering::SeqCst);
        let submitter = self.ring.submitter();
        let r = match deadline {
            None => submitter.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d.saturating_duration_since(Instant::now()));
                submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            }
        };
        self.in_wait.store(false, Ordering::SeqCst);
        match r {
            Ok(_) => {}
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

    /// Takes every completion entry there is, for `dispatch`.
    fn reap(&self) {
        let mut taken = self.cq.lock();
        // SAFETY: the `cq` lock makes this the only user of the completion
        // queue while the guard lives.
        let cq = unsafe { self.ring.completion_shared() };
        taken.extend(cq.map(|c| (c.user_data(), c.result())));
    }

    /// Turns the entries the last poll took into packets.
    pub(crate) fn dispatch(&self, queue: &PortQueue) {
        let taken = std::mem::take(&mut *self.cq.lock());
        for (user_data, res) in taken {
            self.complete(queue, user_data, res);
        }
    }

    /// Makes a thread blocked in the ring return: a no-op entry completes.
    pub(crate) fn wake(&self) {
        if self.push(&opcode::Nop::new().build().user_data(WAKE)).is_ok() {
            let _ = self.submit_now();
        }
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
    pub(crate) fn drain(&self, queue: &PortQueue) {
        let ts = types::Timespec::from(std::time::Duration::from_millis(10));
        while self.in_flight() > 0 {
            let _ = self.submit_now();
            let _ = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
            self.reap();
            self.dispatch(queue);
        }
    }

    /// Starts `req` on `fd` (S23): `Err` gives the request back, and no
    /// completion will come.
    ///
    /// The caller holds the handle's lock, has checked it is open, and
    /// records the request in the handle's in-flight table; then, with the
    /// lock let go, it calls [`Ring::pushed`] (no system call is made
    /// under the lock unless the submission queue is full).
    pub(crate) fn start(
        &self,
        io: &Arc<Io>,
        fd: RawFd,
        mut req: Request,
    ) -> Result<usize, (io::Error, Request)> {
        let entry = match prepare(io.kind(), fd, &mut req) {
            Ok(e) => e,
            Err(e) => return Err((e, req)),
        };
        req.header_mut().os.uring.io = Some(io.clone());
        let p = req.into_raw();
        let entry = entry.user_data(p as u64);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.push(&entry) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            // SAFETY: the entry was not pushed, so the kernel never saw
            // `p`; it is taken back exactly once, here.
            let mut req = unsafe { Request::from_raw(p) };
            req.header_mut().os.uring.io = None;
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
    pub(crate) fn cancel(&self, requests: impl IntoIterator<Item = usize>) -> bool {
        let mut any = false;
        for p in requests {
            let entry = opcode::AsyncCancel::new(p as u64).build().user_data(CANCEL);
            any |= self.push(&entry).is_ok();
        }
        any
    }

    /// Hands every pushed entry to the kernel now, when `pushed`.
    pub(crate) fn submit_if(&self, pushed: bool) {
        if pushed {
            let _ = self.submit_now();
        }
    }

    /// One completion entry: the request's result, or a write that goes on.
    fn complete(&self, queue: &PortQueue, user_data: u64, res: i32) {
        if user_data == WAKE || user_data == CANCEL {
            return;
        }
        // SAFETY: every other entry's `user_data` is a request given up
        // with `into_raw` in `start`; its completion entry comes once, so
        // it is taken back once, here.
        let mut req = unsafe { Request::from_raw(user_data as *mut Header) };
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
            return self.again(queue, io, req);
        }
        match finish(&io, &mut req, res) {
            Finished::Done(status, bytes) => {
                let (id, write) = (req.id(), is_write_side(req.op()));
                io.ring_done(self, id, write, queue, Packet { status, bytes, key: 0, request: Some(req) });
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            // A write that wrote part: the rest goes on, unless the handle
            // or its port closed meanwhile.
            Finished::More => self.again(queue, io, req),
        }
    }

    /// Starts `req` again (the rest of a write, or a request its thread's
    /// exit cancelled), unless a cancel, a close or the port's close came
    /// meanwhile: then it completes aborted.
    fn again(&self, queue: &PortQueue, io: Arc<Io>, req: Request) {
        let (id, write) = (req.id(), is_write_side(req.op()));
        if let Err((e, req)) = io.ring_again(self, queue, req) {
            // Aborted, or failed to start again: either way a write says
            // how much of it was sent (S24, as IOCP does).
            let status = match e.raw_os_error() {
                Some(libc::ECANCELED) => Status::ABORTED,
                _ => Status::from_io_error(&e),
            };
            let bytes = sent(&req);
            io.ring_done(self, id, write, queue, Packet { status, bytes, key: 0, request: Some(req) });
        }
        // Counted down once its packet is queued or it is in the kernel
        // again, so a port's close never sees it gone before either.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A positional read of a regular file whose bytes are in the page cache,
/// done at once with `preadv2(RWF_NOWAIT)`: `None` when it would block
/// (or the filesystem cannot say), and the ring then does it. A cached
/// read so costs one call on the starting thread, like `pread`, with no
/// trip through the ring; its completion still comes through the port
/// (S23).
#[cfg(target_env = "gnu")]
pub(crate) fn read_cached(fd: RawFd, req: &mut Request) -> Option<io::Result<usize>> {
    let Op::ReadAt(off) = req.op() else { return None };
    let off = libc::off_t::try_from(off).ok()?;
    let h = req.header_mut();
    if h.buffer.part_count() != 1 || !h.buffer.is_writable() {
        return None;
    }
    let p = h.buffer.part(0);
    let iov = libc::iovec { iov_base: p.ptr.cast(), iov_len: p.cap };
    // SAFETY: one iovec over the part's whole room, writable (checked
    // above); the descriptor is open (the caller holds its read guard).
    let n = unsafe { libc::preadv2(fd, &iov, 1, off, libc::RWF_NOWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINTR) => None,
            _ => Some(Err(e)),
        };
    }
    // SAFETY: the read wrote the first `n` bytes of the room.
    unsafe { h.buffer.set_filled(n as usize) };
    Some(Ok(n as usize))
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
    pub(crate) io: Option<Arc<Io>>,
    /// A connect started again after its thread exited waits for
    /// writability, then reads the socket's error.
    reconnect: bool,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    msg: libc::msghdr,
    iov: Vec<libc::iovec>,
}

impl Default for OpState {
    fn default() -> OpState {
        // SAFETY: all-zero bytes are a valid `sockaddr_storage` and a valid
        // (empty) `msghdr`.
        let (addr, msg) =
            unsafe { (MaybeUninit::zeroed().assume_init(), MaybeUninit::zeroed().assume_init()) };
        OpState { io: None, reconnect: false, addr, addr_len: 0, msg, iov: Vec::new() }
    }
}

impl std::fmt::Debug for OpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpState").field("in_kernel", &self.io.is_some()).finish()
    }
}

// SAFETY: the raw pointers in `msg` and `iov` point into the request that
// holds this state and into its buffer; they are only read by the kernel
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
        Op::Read => {
            let parts = h.buffer.part_count();
            h.os.uring.iov = (0..parts)
                .map(|i| {
                    let p = h.buffer.part(i);
                    libc::iovec { iov_base: p.ptr.cast(), iov_len: p.cap }
                })
                .collect();
            let iov = &h.os.uring.iov;
            opcode::Readv::new(fd, iov.as_ptr(), len32(iov.len())).offset(u64::MAX).build()
        }
        Op::Write | Op::WriteAt(_) => {
            set_iov(&mut h.os.uring.iov, &mut h.buffer, progress);
            let iov = &h.os.uring.iov;
            match (op, iov.as_slice()) {
                (Op::WriteAt(off), _) => {
                    let at = off.checked_add(progress as u64).filter(|&o| o <= i64::MAX as u64);
                    let at = at.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                    opcode::Writev::new(fd, iov.as_ptr(), len32(iov.len())).offset(at).build()
                }
                (_, [one]) if socket => opcode::Send::new(fd, one.iov_base.cast(), len32(one.iov_len))
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                (_, _) if socket => {
                    let msg = &mut h.os.uring.msg;
                    msg.msg_iov = h.os.uring.iov.as_mut_ptr();
                    msg.msg_iovlen = h.os.uring.iov.len() as _;
                    opcode::SendMsg::new(fd, msg).flags(libc::MSG_NOSIGNAL as u32).build()
                }
                (_, _) => opcode::Writev::new(fd, iov.as_ptr(), len32(iov.len())).offset(u64::MAX).build(),
            }
        }
        Op::ReadAt(off) => {
            if off > i64::MAX as u64 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let p = h.buffer.part(0);
            opcode::Read::new(fd, p.ptr, len32(p.cap)).offset(off).build()
        }
        Op::Accept => {
            let st = &mut h.os.uring;
            st.addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let addr = (&mut st.addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
            opcode::Accept::new(fd, addr, &mut st.addr_len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        }
        // Its first connect goes on in the background: wait for its end.
        Op::Connect(_) if h.os.uring.reconnect => opcode::PollAdd::new(fd, libc::POLLOUT as u32).build(),
        Op::Connect(to) => {
            let st = &mut h.os.uring;
            st.addr_len = store_addr(&mut st.addr, to);
            opcode::Connect::new(fd, (&st.addr as *const libc::sockaddr_storage).cast(), st.addr_len).build()
        }
        Op::SendTo(_) | Op::RecvFrom => {
            let st = &mut h.os.uring;
            let p = h.buffer.part(0);
            let len = if op == Op::RecvFrom { p.cap } else { p.len };
            st.iov = vec![libc::iovec { iov_base: p.ptr.cast(), iov_len: len }];
            st.addr_len = match op {
                Op::SendTo(to) => store_addr(&mut st.addr, to),
                _ => std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            };
            st.msg.msg_name = (&mut st.addr as *mut libc::sockaddr_storage).cast();
            st.msg.msg_namelen = st.addr_len;
            st.msg.msg_iov = st.iov.as_mut_ptr();
            st.msg.msg_iovlen = 1;
            if op == Op::RecvFrom {
                opcode::RecvMsg::new(fd, &mut st.msg).build()
            } else {
                opcode::SendMsg::new(fd, &st.msg).flags(libc::MSG_NOSIGNAL as u32).build()
            }
        }
        Op::Post => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    Ok(entry)
}

/// The iovecs of what is left to write after `progress` bytes.
fn set_iov(iov: &mut Vec<libc::iovec>, buf: &mut Buffer, progress: usize) {
    iov.clear();
    let mut skip = progress;
    for i in 0..buf.part_count() {
        let p = buf.part(i);
        if skip >= p.len {
            skip -= p.len;
            continue;
        }
        // SAFETY: `skip < p.len`, inside the part's initialized bytes.
        let base = unsafe { p.ptr.add(skip) };
        iov.push(libc::iovec { iov_base: base.cast(), iov_len: p.len - skip });
        skip = 0;
    }
}

/// Writes `to` into `addr`; its length.
fn store_addr(addr: &mut libc::sockaddr_storage, to: SocketAddr) -> libc::socklen_t {
    let sa = SockAddr::from(to);
    let len = sa.len();
    // SAFETY: `SockAddr` holds a `sockaddr_storage`; `len` bytes of it are
    // the address, and `addr` is a whole `sockaddr_storage`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (addr as *mut libc::sockaddr_storage).cast(),
            len as usize,
        )
    };
    len
}

/// The address the kernel wrote into `st.addr`.
fn load_addr(st: &OpState, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: the kernel wrote a socket address of `len` bytes into the
    // storage, which is a whole `sockaddr_storage`.
    let sa = unsafe { SockAddr::new(std::ptr::read(&st.addr), len) };
    sa.as_socket()
}

enum Finished {
    Done(Status, usize),
    /// A write wrote part of its bytes; the rest is to be written.
    More,
}

/// The request's result from its completion entry's `res`.
fn finish(io: &Io, req: &mut Request, res: i32) -> Finished {
    let kind = io.kind();
    let op = req.op();
    let h = req.header_mut();
    if res < 0 {
        return Finished::Done(Status::from_raw((-res) as u32), 0);
    }
    let n = res as usize;
    match op {
        Op::Read if h.buffer.capacity() == 0 => {
            // S31: readable (data, the end, or an error, which it completes
            // with). `res` is the poll's mask: the socket's error is asked
            // for (`getsockopt`) only when it says there is one, so a wait
            // costs no call of its own.
            let error = res & i32::from(libc::POLLERR) != 0;
            if error && matches!(kind, HandleKind::TcpStream | HandleKind::LocalStream) {
                let err = io.with_raw(|fd| SockRef::from(fd).take_error());
                if let Some(Ok(Some(e))) = err {
                    return Finished::Done(Status::from_io_error(&e), 0);
                }
            }
            Finished::Done(Status::SUCCESS, 0)
        }
        Op::Read | Op::ReadAt(_) | Op::RecvFrom => {
            let n = n.min(h.buffer.capacity());
            // SAFETY: the kernel wrote the first `n` bytes of the room it
            // was given, part by part in order.
            unsafe { h.buffer.set_filled(n) };
            if op == Op::RecvFrom {
                h.addr = load_addr(&h.os.uring, h.os.uring.msg.msg_namelen);
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
            let (conn_kind, addr) = match kind {
                HandleKind::TcpListener => {
                    (HandleKind::TcpStream, load_addr(&h.os.uring, h.os.uring.addr_len))
                }
                _ => (HandleKind::LocalStream, None),
            };
            h.accepted = Some(crate::Handle::from_sys(super::Handle::new(fd, conn_kind)));
            h.addr = addr;
            Finished::Done(Status::SUCCESS, 0)
        }
        Op::Connect(_) if h.os.uring.reconnect => {
            let err = io.with_raw(|fd| SockRef::from(fd).take_error());
            match err {
                Some(Ok(Some(e))) | Some(Err(e)) => Finished::Done(Status::from_io_error(&e), 0),
                _ => Finished::Done(Status::SUCCESS, 0),
            }
        }
        Op::Connect(_) => Finished::Done(Status::SUCCESS, 0),
        Op::SendTo(_) => Finished::Done(Status::SUCCESS, n),
        Op::Post => Finished::Done(Status::SUCCESS, n),
    }
}
