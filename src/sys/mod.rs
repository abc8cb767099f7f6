//! Platform backends. The backend is chosen here, once; the portable core
//! only ever names `sys::Port`, `sys::Handle`, `sys::RequestOs`,
//! `sys::Slot`, `sys::ABORTED_CODE` and `sys::status_code_of`.
//!
//! | OS | port | readiness / completion |
//! | --- | --- | --- |
//! | Linux, Android | portable queue | mio over epoll |
//! | macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly | portable queue | mio over kqueue |
//! | Windows | IOCP handle | the kernel (IOCP) |

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(windows)]
impl windows::Port {
    /// The kernel decides which waiting thread an IOCP packet releases, so
    /// the pool's "this thread comes back to the port" hint has nothing to do.
    pub(crate) fn serve_from_this_thread(&self, _serving: bool) {}

    /// The kernel watches every handle bound to an IOCP; nothing to rescue.
    pub(crate) fn watchdog(&self) {}
}
