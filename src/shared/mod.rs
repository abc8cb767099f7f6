//! The types the portable core and the backends (`sys`) both name: request
//! kinds, handle kinds, request ids, driver kinds and the OS counters a
//! backend fills. A leaf: it imports nothing of the crate but its
//! synchronization primitives (`crate::sync`, itself a leaf), so neither
//! side reaches the other through it. Each type is re-exported from its public
//! path (`iocompletion::Op`, `iocompletion::metrics::OsMetrics`, …).
//! The crate's error type is here too ([`error`]): both sides return it.

use std::fmt;
use std::net::SocketAddr;
use crate::sync::{AtomicU64, Ordering};

pub(crate) mod error;
pub(crate) mod status;

/// What a request does. Platform-neutral: each backend performs it its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// A completion posted by the user; no I/O.
    Post,
    /// Stream read into the buffer (vectored when the buffer is).
    Read,
    /// Stream write of the buffer (vectored when the buffer is).
    Write,
    /// Positional read of a regular file.
    ReadAt(u64),
    /// Positional write of a regular file.
    WriteAt(u64),
    /// Accept one connection on a listener.
    Accept,
    /// Connect a stream socket.
    Connect(SocketAddr),
    /// Send a datagram.
    SendTo(SocketAddr),
    /// Receive a datagram and its source address.
    RecvFrom,
}

impl Op {
    /// True for the kinds that move bytes, so take a buffer.
    pub(crate) fn needs_buffer(self) -> bool {
        matches!(self, Op::Read | Op::Write | Op::ReadAt(_) | Op::WriteAt(_) | Op::SendTo(_) | Op::RecvFrom)
    }

    /// True for the kinds that take one buffer, not a vectored one.
    pub(crate) fn takes_one_buffer(self) -> bool {
        matches!(self, Op::ReadAt(_) | Op::WriteAt(_) | Op::SendTo(_) | Op::RecvFrom)
    }

    /// True for the kinds the OS fills the buffer of (S32).
    pub(crate) fn fills_buffer(self) -> bool {
        matches!(self, Op::Read | Op::ReadAt(_) | Op::RecvFrom)
    }
}

/// What kind of OS object a [`Handle`](crate::Handle) is; it decides which requests the
/// handle takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandleKind {
    /// A regular file: positional requests, served by the pool on Unix.
    File,
    /// A connected (or connectable) TCP socket.
    TcpStream,
    /// A listening TCP socket.
    TcpListener,
    /// A UDP socket.
    Udp,
    /// A local stream: a Unix domain socket, or a named pipe on Windows.
    LocalStream,
    /// A local listener: a Unix domain listener.
    LocalListener,
    /// Any other stream-like object (pipes, ttys, devices).
    Stream,
}

/// Identifies a started request, for [`Handle::cancel`](crate::Handle::cancel).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The numeric id, unique within the process.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// The OS mechanism a port runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverKind {
    /// Windows I/O completion ports.
    Iocp,
    /// Linux io_uring: true completions (S36).
    IoUring,
    /// Linux epoll readiness, turned into completions.
    Epoll,
    /// kqueue readiness (macOS, the BSDs), turned into completions.
    Kqueue,
}

/// Which driver a port runs on, and why not io_uring when Linux fell back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DriverInfo {
    /// The driver.
    pub kind: DriverKind,
    /// Why the preferred driver was not used: the kernel refused io_uring
    /// (`ENOSYS`, `EPERM` under a seccomp profile, `ENOMEM`), lacks what
    /// the driver needs, or the `IOCOMPLETION_DRIVER` setting asked for
    /// epoll. `None` when the preferred driver runs, and when the program
    /// chose the driver that runs (`Builder::driver`).
    pub fallback: Option<String>,
    /// How the driver was set up, where it has a choice: on io_uring,
    /// whether each pool worker has a ring of its own beside the port's
    /// (the `IOCOMPLETION_IO_URING_RINGS` setting) and the ring setup flags
    /// the kernel granted. `None` on the other drivers.
    pub setup: Option<String>,
}

impl fmt::Display for DriverInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            DriverKind::Iocp => "IOCP",
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
            DriverKind::Kqueue => "kqueue",
        };
        match (&self.fallback, &self.setup) {
            (Some(why), _) => write!(f, "{name} (fallback: {why})"),
            (None, Some(setup)) => write!(f, "{name} ({setup})"),
            (None, None) => f.write_str(name),
        }
    }
}

/// What a port counts that only some drivers have; 0 where a driver has
/// no such figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DriverStats {
    /// Packets dropped because the crate did not make them (S39); only
    /// IOCP can receive such packets.
    pub(crate) foreign_packets: usize,
    /// Completions of requests the OS queued no packet for, which the
    /// backend delivered through the port's own queue; only IOCP has a
    /// kernel queue to skip.
    pub(crate) direct_completions: usize,
    /// Requests the port's close gave up waiting for: still held by the
    /// OS after the close's bound, leaked with their buffers (never freed
    /// while the OS may still write to them); only io_uring leaks so.
    pub(crate) leaked_requests: usize,
}

/// What the OS side of a port did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OsMetrics {
    /// Calls into the OS's queue: `io_uring_enter`, `epoll_wait` or
    /// `kevent`, `GetQueuedCompletionStatusEx`.
    pub entries: u64,
    /// What those calls returned: completion entries (io_uring, IOCP) or
    /// readiness events (epoll, kqueue; the crate turns each into zero or
    /// more completions).
    pub completions: u64,
    /// Completion-queue overflows the kernel reports (io_uring's
    /// `cq.overflow`: entries it could not post at once). Always 0 where
    /// the OS has no such figure (epoll, kqueue, IOCP).
    pub overflows: u64,
}

/// A port's counters, the crate's side.
pub(crate) struct OsCounters {
    entries: AtomicU64,
    completions: AtomicU64,
    overflows: AtomicU64,
}

impl Default for OsCounters {
    fn default() -> Self {
        OsCounters { entries: AtomicU64::new(0), completions: AtomicU64::new(0), overflows: AtomicU64::new(0) }
    }
}

impl OsCounters {
    /// One call into the OS's queue.
    pub(crate) fn entered(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// A call into the OS returned `n` completions or events.
    pub(crate) fn returned(&self, n: usize) {
        if n > 0 {
            self.completions.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// The kernel's count of completion-queue overflows.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn overflowed_total(&self, n: u64) {
        self.overflows.fetch_max(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> OsMetrics {
        OsMetrics {
            entries: self.entries.load(Ordering::Relaxed),
            completions: self.completions.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
        }
    }
}

