//! The Windows backend: the kernel's I/O completion ports (S28).
//!
//! A [`Port`] is an IOCP handle. A request's header starts with room for
//! the `OVERLAPPED` (see [`RequestOs`]), so the pointer the kernel hands
//! back in a completion packet, rounded down, is the request itself: no
//! lookup, no copy. Each use of a block puts its `OVERLAPPED` at its own
//! place in that room, so that a packet that comes late for an earlier use
//! is told apart from the block's current request (S39).
//!
//! # Completion on immediate success
//!
//! By default a handle is associated with its port without
//! `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: a request that the OS starts
//! (the call succeeds at once or returns `ERROR_IO_PENDING`) gets exactly
//! one packet from the kernel; a request that fails at once gets none and
//! its start returns the error with the buffer (S23). A handle may opt in
//! to the flag before it is bound (`Handle::skip_completion_port_on_success`);
//! a request on it that succeeds at once then gets no packet, and its
//! start hands it to the port's own queue (`sys::ready`), which every take
//! looks at before the kernel's, so it completes once, through the port,
//! with no kernel call while a thread is on its way back. The few
//! immediate results that never get a packet (end of file or pipe, a pipe
//! client already connected) go the same way on every handle.
//!
//! # Close and cancel
//!
//! `CancelIoEx` is the one cancellation primitive: a cancelled request is
//! completed by the kernel with `STATUS_CANCELLED`, which arrives as
//! `ERROR_OPERATION_ABORTED` (995) with its buffer (S24, S25). Closing a
//! handle cancels its requests, then closes the socket or file handle.
//! Closing a port marks it closing (new posts and requests are refused),
//! cancels every request on every handle associated with it, and leaves the
//! kernel port open so that those aborted packets, and packets already
//! queued, can still be taken. When the last expected packet has been taken
//! a sentinel packet is posted; whoever takes it puts it back and returns
//! `Abandoned`, so every waiter, present or future, wakes. The kernel handle
//! is closed when the last reference to the port is dropped.

mod handle;
mod net;
mod op;
mod port;
mod wine;

pub(crate) use handle::Handle;
pub(crate) use handle::{from_overlapped_handle, named_pipe_client, named_pipe_server};
pub(crate) use port::Port;

use crate::sync::Arc;

use crate::request::{Header, Request};

use windows_sys::Win32::Foundation::ERROR_NOT_FOUND;
use windows_sys::Win32::System::IO::OVERLAPPED;

/// `ERROR_GEN_FAILURE`, for errors that carry no OS code.
pub(super) const ERROR_GEN_FAILURE: u32 = 31;

/// The "not found" error of a cancel that found nothing (S25).
fn not_found() -> std::io::Error {
    std::io::Error::from_raw_os_error(ERROR_NOT_FOUND as i32)
}

/// Bytes of address space a request keeps for the OS: one IPv6 socket
/// address for `WSARecvFrom`/`WSASendTo`/`ConnectEx`, or the two addresses
/// (each `sizeof(SOCKADDR_IN6) + 16`) that `AcceptEx` writes.
pub(super) const ADDR_WORDS: usize = 11;

/// Places a request's `OVERLAPPED` can take at its start, 8 bytes apart:
/// each use of a block ([`Header::generation`]) takes the next, so that a
/// packet the OS queues late for an earlier use of the block carries an
/// address that is not the new request's (S39).
pub(super) const CELLS: usize = 8;

/// The alignment of a request (a cache line): every place of its
/// `OVERLAPPED` lies in its first [`REQUEST_ALIGN`] bytes, so the request
/// of an `OVERLAPPED` pointer is that pointer rounded down (S18: no lookup).
pub(super) const REQUEST_ALIGN: usize = 64;

/// Words of room for the `OVERLAPPED` at any of its [`CELLS`] places (its
/// size rounded up to whole words: 20 bytes on 32-bit targets).
const CELL_WORDS: usize = std::mem::size_of::<OVERLAPPED>().div_ceil(8) + CELLS - 1;

/// Per-request OS state. It starts with the room for the `OVERLAPPED`, and
/// the request header starts with it, so an `OVERLAPPED` pointer rounded
/// down to [`REQUEST_ALIGN`] is a request pointer.
#[repr(C, align(64))]
pub(crate) struct RequestOs {
    /// The `OVERLAPPED` of the request, at the place its generation picks
    /// (see [`RequestOs::overlapped`]); zeroed when the request is made.
    cells: [u64; CELL_WORDS],
    /// The handle a started I/O request runs on; `None` for a user post.
    /// Set before the OS sees the request, taken when its packet is taken.
    pub(super) io: Option<Arc<handle::Io>>,
    /// The socket `AcceptEx` accepts into.
    pub(super) accept: Option<std::os::windows::io::OwnedSocket>,
    /// Socket address space (see [`ADDR_WORDS`]), 8-byte aligned.
    pub(super) addr: [u64; ADDR_WORDS],
    /// The length of the address in `addr` (in-out for `WSARecvFrom`).
    pub(super) addr_len: i32,
    /// `WSARecv`/`WSARecvFrom` flags.
    pub(super) flags: u32,
    /// The user's completion key of a posted request (the kernel packet
    /// carries the crate's own key).
    pub(super) key: usize,
}

// S18: the room for the `OVERLAPPED` comes first, and every place in it
// lies within the first REQUEST_ALIGN bytes of the request, which is
// aligned to that, so rounding down an `OVERLAPPED` pointer gives the
// request's address.
const _: () = {
    assert!(std::mem::offset_of!(RequestOs, cells) == 0);
    assert!(std::mem::align_of::<RequestOs>() == REQUEST_ALIGN);
    assert!(std::mem::align_of::<OVERLAPPED>() <= 8);
    assert!((CELLS - 1) * 8 < REQUEST_ALIGN);
    // The last place's `OVERLAPPED` ends within the room.
    assert!(CELL_WORDS * 8 >= (CELLS - 1) * 8 + std::mem::size_of::<OVERLAPPED>());
};

impl RequestOs {
    /// The `OVERLAPPED` of the use `generation` of the request's block: at
    /// its own place among [`CELLS`], 8 bytes from the last use's.
    pub(super) fn overlapped(&mut self, generation: u32) -> &mut OVERLAPPED {
        let at = generation as usize % CELLS;
        // SAFETY: `cells` has room for an OVERLAPPED (32 bytes, 8-aligned,
        // as u64s are) at each of its first CELLS words; it is borrowed
        // mutably for the reference's lifetime; any bytes are a valid
        // OVERLAPPED (integers and raw pointers only).
        unsafe { &mut *self.cells.as_mut_ptr().add(at).cast::<OVERLAPPED>() }
    }
}

/// The `OVERLAPPED` of the request at `h`, for its current use: the
/// pointer the OS gets, and its packet carries.
pub(super) fn overlapped_of(h: &mut Header) -> *mut OVERLAPPED {
    let generation = h.generation;
    h.os.overlapped(generation)
}

/// The request whose `OVERLAPPED` (of any use) is at `ov`: `ov` rounded
/// down to [`REQUEST_ALIGN`]. Only address arithmetic: nothing is read.
pub(super) fn header_of(ov: *mut OVERLAPPED) -> *mut Header {
    let off = ov as usize % REQUEST_ALIGN;
    ov.cast::<u8>().wrapping_sub(off).cast::<Header>()
}

impl Default for RequestOs {
    fn default() -> RequestOs {
        RequestOs {
            cells: [0; CELL_WORDS],
            io: None,
            accept: None,
            addr: [0; ADDR_WORDS],
            addr_len: 0,
            flags: 0,
            key: 0,
        }
    }
}

impl std::fmt::Debug for RequestOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestOs").field("started", &self.io.is_some()).finish()
    }
}

impl Request {
    /// Not part of the API: a seam for the crate's tests. The address of
    /// the `OVERLAPPED` the request was last started with (S39).
    #[doc(hidden)]
    pub fn overlapped_address(&self) -> usize {
        let h = self.header();
        h as *const Header as usize + (h.generation as usize % CELLS) * 8
    }

    /// Not part of the API: a seam for the crate's tests. The address of
    /// the request's block, which the next request made on this thread
    /// may reuse.
    #[doc(hidden)]
    pub fn block_address(&self) -> usize {
        self.header() as *const Header as usize
    }
}
