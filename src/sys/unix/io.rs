//! A handle's I/O state, shared by the handle, its port's poller and its
//! requests in the kernel: the fd, the handle's lock, and under it the
//! state of the driver chosen for it at bind. Below the port and the
//! handle, above the drivers: it names each driver's part of a handle and
//! no port.

use std::os::fd::OwnedFd;

use super::epoll::Streams;
use super::filepool::{self, Work};
use super::op::{aborted, Completions};
use crate::request::Packet;
use crate::shared::HandleKind;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, RwLock};

/// What a handle's lock guards: whether it (or its port) closed, and the
/// state of the driver chosen for it at bind.
pub(super) struct State {
    pub(super) closed: bool,
    pub(super) port_closed: bool,
    pub(super) driver: Driver,
}

/// The driver of one handle, chosen once, when it is bound: every request
/// of the handle goes through it, with no other branch on the driver.
pub(super) enum Driver {
    /// Not bound yet: no request can start.
    Unbound,
    /// Readiness (epoll, kqueue): sockets, pipes, terminals.
    Epoll(Streams),
    /// io_uring: every handle of a ring's port.
    #[cfg(target_os = "linux")]
    Ring(super::uring::Streams),
    /// The pool: regular files, and devices epoll cannot watch, on a
    /// readiness port.
    Pool(Work),
}

impl Driver {
    /// The ring's part of a handle bound to a port without mio, which
    /// runs a ring: only on Linux.
    pub(super) fn ring() -> Driver {
        #[cfg(target_os = "linux")]
        {
            Driver::Ring(Default::default())
        }
        #[cfg(not(target_os = "linux"))]
        {
            unreachable!("a port runs a ring on Linux only")
        }
    }

    /// Completes every request still waiting in user space aborted (S24);
    /// how many.
    pub(super) fn abort_waiting(&mut self, queue: &impl Completions) -> usize {
        let mut n = 0;
        let mut abort = |req| {
            queue.complete(aborted(req));
            n += 1;
        };
        match self {
            Driver::Unbound => {}
            Driver::Epoll(s) => s.take_all().for_each(&mut abort),
            #[cfg(target_os = "linux")]
            Driver::Ring(s) => s.take_all().for_each(&mut abort),
            Driver::Pool(w) => w.take_all().for_each(&mut abort),
        }
        n
    }
}

/// The I/O state of one handle, shared with its port's poller.
///
/// Every completion of this handle is pushed to the port while `state` is
/// locked: a start that completes at once, the poller's transfers, a cancel,
/// a close. The port's close aborts each handle under the same lock, so a
/// handle's completions are all queued before its abort or never started
/// (the close argument of `sys::queue`).
pub(crate) struct Io {
    kind: HandleKind,
    /// Taken by `close`; read-locked by every call on it. Shared with the
    /// io_uring requests in the kernel, which keep it open until their
    /// completion entries come (the last one out closes it).
    pub(super) fd: RwLock<Option<Arc<OwnedFd>>>,
    pub(super) state: Mutex<State>,
    /// Mirror of `State::closed`, readable without the lock.
    pub(super) closed: AtomicBool,
    /// Set (release) just before the fd is registered with the poller; the
    /// poller reads it (acquire) before it touches the handle for an event.
    /// The kernel orders the registration before the event, but only this
    /// pair says so in the language's memory model (and to ThreadSanitizer).
    pub(super) registered: AtomicBool,
}

impl Io {
    pub(super) fn new(fd: OwnedFd, kind: HandleKind) -> Io {
        Io {
            kind,
            fd: RwLock::new(Some(Arc::new(fd))),
            state: Mutex::new(State { closed: false, port_closed: false, driver: Driver::Unbound }),
            closed: AtomicBool::new(false),
            registered: AtomicBool::new(false),
        }
    }

    pub(super) fn kind(&self) -> HandleKind {
        self.kind
    }

    /// True once the handle is closed (without its lock).
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The handle became ready (`error`: with an error pending on it):
    /// perform queued requests until one would block, pushing their
    /// completions under the handle's lock.
    pub(super) fn on_ready(&self, queue: &impl Completions, readable: bool, writable: bool, error: bool) {
        let mut st = self.state.lock();
        let fd = self.fd.read();
        let (Some(fd), Driver::Epoll(s)) = (fd.as_ref(), &mut st.driver) else { return };
        s.on_ready(self.kind, fd, queue, readable, writable, error);
    }

    /// Performs the oldest pool request of this handle on the calling pool
    /// thread (S29); `None` when it was cancelled meanwhile. After the port
    /// began closing, it completes aborted instead (S11).
    pub(super) fn perform_work(&self, port_closing: bool) -> Option<Packet> {
        let req = match &mut self.state.lock().driver {
            Driver::Pool(w) => w.next()?,
            _ => return None,
        };
        if port_closing {
            return Some(aborted(req));
        }
        let guard = self.fd.read();
        Some(filepool::perform(guard.as_deref(), req))
    }
}

/// The ring reaches the handle of a request it completes through this.
#[cfg(target_os = "linux")]
impl super::uring::Owner for Io {
    fn kind(&self) -> HandleKind {
        self.kind
    }

    fn take_error(&self) -> Option<std::io::Result<Option<std::io::Error>>> {
        self.fd.read().as_deref().map(|fd| socket2::SockRef::from(fd).take_error())
    }

    fn locked(&self, f: &mut super::uring::Locked<'_>) {
        let mut st = self.state.lock();
        let fd = self.fd.read();
        let open = !st.closed && !st.port_closed;
        if let Driver::Ring(s) = &mut st.driver {
            f(s, open, fd.as_ref());
        }
    }
}
