//! Platform backends, behind one contract: [`PortDriver`] and
//! [`HandleDriver`]. The portable core (ports, handles, the pool, the
//! runtime) only ever calls these traits, through `sys::Port`,
//! `sys::Handle` and `sys::RequestOs`; it never sees an OS type, and what
//! differs between the OSes (codes, which kinds are sockets) it asks of
//! the traits' associated items.
//!
//! The backends name only `crate::shared` (the kinds and ids both sides
//! use), the request, the buffer and `crate::sync`.
//!
//! | OS | port | readiness / completion |
//! | --- | --- | --- |
//! | Linux, Android | [`queue::Queue`] | mio over epoll |
//! | macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly | [`queue::Queue`] | mio over kqueue |
//! | Windows | IOCP handle | the kernel (IOCP) |
//! | any other target | none: `shell.rs` stops the build with one message | |
//!
//! A further driver (io_uring on Linux) implements the same two traits; the
//! user-space queue in [`queue`] is there for any driver that needs one.

#[cfg(not(loom))]
use std::io;
#[cfg(not(loom))]
use std::time::Duration;

#[cfg(not(loom))]
use crate::{
    request::{Packet, Request},
    shared::error::{Error, Result},
    shared::{DriverInfo, DriverKind, DriverStats, HandleKind, OsMetrics, RequestId},
};

#[cfg(not(loom))]
pub(crate) mod clock;

/// [`PortDriver::QUEUE_LEN_KNOWN`] of this target's port.
#[cfg(not(loom))]
pub(crate) const QUEUE_LEN_KNOWN: bool = <Port as PortDriver>::QUEUE_LEN_KNOWN;

/// How the core runs a call that may block in the OS for as long as a file
/// system takes: a pool worker is marked blocked meanwhile, so a shutdown
/// or a close that waits for it knows where it is (S11, S17).
#[cfg(not(loom))]
pub(crate) type BlockingCall = fn(&mut dyn FnMut());
#[cfg(any(unix, loom))]
pub(crate) mod queue;

#[cfg(any(windows, loom, test))]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod inflight;

#[cfg(any(windows, loom, test))]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) mod ready;

#[cfg(all(unix, not(loom)))]
mod unix;
#[cfg(all(unix, not(loom)))]
pub(crate) use unix::*;

#[cfg(all(windows, not(loom)))]
mod windows;
#[cfg(all(windows, not(loom)))]
pub(crate) use windows::*;

// A target with no backend stops the build with one message.
#[cfg(not(any(unix, windows, loom)))]
mod shell;
#[cfg(not(any(unix, windows, loom)))]
pub(crate) use shell::*;

/// A completion port as a backend provides it.
///
/// # The exactly-once rule
///
/// Every request a [`HandleDriver::submit`] accepted (`Ok`) produces exactly
/// one packet on its port, with its request and buffer: its result, or the
/// aborted status after a cancel, a handle close or a port close (S24). A
/// submit that fails (`Err`) produces no packet and hands the request back.
/// Packets queued before or during [`PortDriver::close`] are all handed out
/// before any waiter gets `Abandoned`.
#[cfg(not(loom))]
pub(crate) trait PortDriver: Sized + Send + Sync + 'static {
    /// A thread's claim on a concurrency slot (S7).
    type Slot: SlotOps;

    /// The status code of an aborted request (S24).
    const ABORTED_CODE: u32;

    /// Codes of running out of a resource (S37): descriptors, buffers,
    /// memory.
    const OUT_OF_RESOURCES: &'static [u32];

    /// True where the port's queue can be counted ([`PortDriver::queued`]),
    /// so the metrics need not count posts in and out to know its depth.
    const QUEUE_LEN_KNOWN: bool;

    /// The OS code of `e`, or a generic failure code when it carries none.
    fn status_code_of(e: &io::Error) -> u32;

    /// The "not found" error of a cancel that found nothing (S25).
    fn not_found() -> io::Error;

    /// True for the drivers this target has (S36).
    fn has_driver(kind: DriverKind) -> bool;

    /// A port on the driver `want` asks for (`None`: the platform's
    /// choice, which on Linux the `IOCOMPLETION_DRIVER` setting can change).
    /// The port runs each call that may block in the OS through `blocking`.
    fn new(concurrency: usize, want: Option<DriverKind>, blocking: BlockingCall) -> io::Result<Self>;

    fn concurrency(&self) -> usize;

    /// True once the close began.
    fn is_closed(&self) -> bool;

    /// Threads registered to be woken by the next packet.
    fn waiting(&self) -> usize;

    /// True when packets wait to be taken.
    fn has_backlog(&self) -> bool;

    /// Queues a user packet (S9); on a closed port gives it back.
    fn post(&self, p: Packet) -> std::result::Result<(), (Error, Packet)>;

    /// Takes up to `max` packets, waiting up to `timeout` for the first
    /// (S10). With `interrupts` (a value of [`PortDriver::interrupts`] the
    /// caller read before it last looked at its limits), an interrupt after
    /// that read ends the wait with `Ok(0)`; `Timeout` then always means
    /// the whole timeout passed.
    fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
        interrupts: Option<usize>,
    ) -> Result<usize>;

    /// How many interrupts there were.
    fn interrupts(&self) -> usize;

    /// Closes the port (S11): aborts every request pending on its handles,
    /// then wakes waiters with `Abandoned` once the queue is drained. False
    /// when it was closed before.
    fn close(&self) -> bool;

    /// The port's last reference is gone, so nobody can take its packets:
    /// closes it as [`PortDriver::close`] does (a no-op when it was closed
    /// before) and appends every packet still queued, each request still
    /// pending having completed aborted (S11, S24), for the core to hand
    /// to their requests' own targets.
    ///
    fn close_dropped(&self, out: &mut Vec<Packet>);

    /// Ends every interruptible wait in progress (the pool's limits changed).
    fn interrupt(&self);

    /// Called by the pool every few milliseconds.
    fn maintain(&self);

    /// What the port's OS queue did (`metrics::OsMetrics`).
    fn os_metrics(&self) -> OsMetrics {
        OsMetrics::default()
    }

    /// Items on the port's queue, where the backend can count them.
    fn queued(&self) -> Option<usize> {
        None
    }

    /// What only some drivers count (`shared::DriverStats`).
    fn stats(&self) -> DriverStats {
        DriverStats::default()
    }

    /// The slot the calling thread holds, if any.
    fn current_slot() -> Option<Self::Slot>;

    /// The driver the port runs on.
    fn driver(&self) -> DriverInfo;
}

/// A concurrency slot held by a thread.
pub(crate) trait SlotOps: Clone + Send + Sync + 'static {
    /// Gives the slot back (a thread stuck in a long callback counts as
    /// blocked, S7); harmless when already given back.
    fn release(&self);
}

/// An OS handle as a backend provides it. See [`PortDriver`] for the
/// exactly-once rule its requests follow.
#[cfg(not(loom))]
pub(crate) trait HandleDriver: Sized + Send + Sync + 'static {
    type Port: PortDriver;

    /// True when a handle of `kind` is a socket.
    fn is_socket(kind: HandleKind) -> bool;

    /// True when a handle of `kind` takes an accept.
    fn accepts(kind: HandleKind) -> bool;

    /// The status of a request whose deadline passed (S33), started on a
    /// handle of `kind` (`None`: on no handle).
    fn timed_out_code(kind: Option<HandleKind>) -> u32;

    fn kind(&self) -> HandleKind;

    fn is_closed(&self) -> bool;

    /// A short description for errors and `Debug`.
    fn describe(&self) -> String;

    /// Runs `f` on the socket behind the handle.
    #[cfg(any(unix, windows))]
    fn with_sock<T>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<T>) -> Result<T>;

    /// Asks the OS to queue no packet for a request that completes at
    /// once (the backend then delivers it itself, exactly once); true when
    /// the handle is set so. Called before the handle is bound.
    fn skip_completion_port_on_success(&self) -> Result<bool>;

    /// Binds the handle to `port`, once.
    fn associate(&self, port: &Self::Port) -> Result<()>;

    /// Starts a request on `port` (see the exactly-once rule).
    fn submit(&self, req: Request, port: &Self::Port) -> std::result::Result<(), (Error, Request)>;

    /// Aborts one pending request (S25).
    fn cancel(&self, id: RequestId) -> Result<()>;

    /// Aborts every pending request; how many (S25).
    fn cancel_all(&self) -> usize;

    /// Aborts what is pending and closes the OS handle; false when closed
    /// before.
    fn close(&self) -> bool;
}
