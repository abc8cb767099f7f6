//! The Unix backend: a portable completion queue per port (`port.rs`),
//! with three drivers, each owning its part of a handle and chosen once
//! when the handle is bound (`handle.rs`, `io.rs`): readiness through mio,
//! epoll or kqueue, turned into completions (`epoll.rs`, S29); io_uring on
//! Linux (`uring.rs`, S36); and the pool for regular files (`filepool.rs`).
//! What the socket drivers share is in `op.rs`, which imports none of
//! them; the drivers import only it.

mod epoll;
mod filepool;
mod handle;
mod io;
mod op;
mod port;
#[cfg(target_os = "linux")]
mod uring;

pub(crate) use super::queue::Slot;
pub(crate) use handle::Handle;
#[cfg(all(test, target_os = "linux"))]
pub(crate) use port::stuck;
pub(crate) use port::Port;

/// `ECANCELED`: the status of an aborted request (S24).
pub(crate) const ABORTED_CODE: u32 = libc::ECANCELED as u32;

/// Codes of running out of a resource (S37): descriptors, buffers, memory.
pub(crate) const OUT_OF_RESOURCES: [u32; 4] =
    [libc::EMFILE as u32, libc::ENFILE as u32, libc::ENOBUFS as u32, libc::ENOMEM as u32];

/// The errno of `e`, or `EIO` when it carries none.
pub(crate) fn status_code_of(e: &std::io::Error) -> u32 {
    e.raw_os_error().unwrap_or(libc::EIO) as u32
}

/// Per-request OS state: how far a write got, whether a connect was issued,
/// and on Linux the io_uring driver's part.
#[derive(Debug, Default)]
pub(crate) struct RequestOs {
    pub(crate) progress: usize,
    pub(crate) started: bool,
    /// What the io_uring driver hands the kernel besides the buffer.
    #[cfg(target_os = "linux")]
    pub(crate) uring: uring::OpState,
}

/// The "not found" error of a cancel that found nothing (S25).
pub(crate) fn not_found() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOENT)
}

/// The status of a request whose deadline passed (S33): `ETIMEDOUT`.
pub(crate) fn timed_out_code(_socket: bool) -> u32 {
    libc::ETIMEDOUT as u32
}

/// A local stream is a Unix-domain socket.
pub(crate) const LOCAL_STREAM_IS_SOCKET: bool = true;

/// A Unix-domain stream does not accept (its listener does).
pub(crate) const LOCAL_STREAM_ACCEPTS: bool = false;

/// True for the drivers this target has (S36): io_uring and epoll on
/// Linux, epoll on Android, kqueue on the BSDs and Apple's systems.
pub(crate) fn has_driver(kind: crate::shared::DriverKind) -> bool {
    use crate::shared::DriverKind as K;
    match kind {
        K::IoUring => cfg!(target_os = "linux"),
        K::Epoll => cfg!(any(target_os = "linux", target_os = "android")),
        K::Kqueue => !cfg!(any(target_os = "linux", target_os = "android")),
        K::Iocp => false,
    }
}
