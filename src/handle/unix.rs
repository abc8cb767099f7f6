//! What only Unix has of a [`Handle`]: conversions from files, Unix-domain
//! sockets, owned fds and `socket2` sockets, and the fd lent or shown.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use super::Handle;
use crate::error::Result;
use crate::sys;

impl From<UnixStream> for Handle {
    fn from(s: UnixStream) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

impl From<UnixListener> for Handle {
    fn from(s: UnixListener) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

impl Handle {
    /// Lends the fd to `f` for what the crate does not wrap (S38), without
    /// undoing the binding. The handle cannot be closed while `f` runs (a
    /// close waits for it). Fails with `InvalidArgument` once closed.
    ///
    /// A handle can be closed through any of its clones, so it lends its
    /// fd for a call rather than implementing `AsFd`, whose borrow would
    /// outlive a close; [`AsRawFd`] gives the raw number.
    pub fn with_fd<T>(&self, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> T) -> Result<T> {
        self.sys().with_fd(f)
    }
}

/// An owned fd of any kind (S38): a socket keeps its kind (TCP stream or
/// listener, UDP, Unix-domain stream or listener, told by its type, address
/// and `SO_ACCEPTCONN`); a regular file is served by the pool with positional
/// requests; anything else (pipe, tty, character device) is a stream driven
/// by readiness. One that cannot be read or written as a stream (a
/// directory, an `O_PATH` fd) is refused when bound, on every driver; a
/// device that epoll cannot watch (`/dev/zero`, `/dev/null`) is served by
/// the pool on epoll.
impl From<OwnedFd> for Handle {
    fn from(fd: OwnedFd) -> Handle {
        Handle::from_sys(sys::Handle::from(fd))
    }
}

/// The fd number, or -1 once the handle is closed. The number is only
/// valid while the handle is open; use [`Handle::with_fd`] to hold it open
/// meanwhile.
impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sys().raw_fd()
    }
}

/// A file, pipe or device opened by the standard library (S38): a regular
/// file is served by the pool with positional requests, anything else is
/// driven by readiness. (On Windows the conversion can fail: `TryFrom`.)
impl From<File> for Handle {
    fn from(f: File) -> Handle {
        Handle::from_sys(sys::Handle::from(f))
    }
}

/// An unconnected (or any) socket made with `socket2`: its kind is told
/// from the socket, as for an owned fd or socket. An unconnected TCP
/// socket takes [`Handle::connect`] once bound.
impl From<socket2::Socket> for Handle {
    fn from(s: socket2::Socket) -> Handle {
        Handle::from(OwnedFd::from(s))
    }
}
