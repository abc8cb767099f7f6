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

pub(crate) use handle::Handle;
#[cfg(all(test, target_os = "linux"))]
pub(crate) use port::stuck;
pub(crate) use port::Port;
#[cfg(all(test, target_os = "linux"))]
pub(crate) use uring::tests::DeafRing;

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

/// The "not found" error of a cancel that found nothing (S25): `ENOENT`.
fn not_found() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOENT)
}
