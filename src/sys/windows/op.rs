//! What each request kind does on Windows: the overlapped call that starts
//! it, and what its packet settles (the accept and connect contexts, a
//! datagram's source, the bytes read). The handle's state, cancel and close
//! live in `handle.rs`; adding a request kind touches this file (and the
//! portable `crate::shared::Op`).

use super::handle::{Io, Raw};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::windows::io::{AsRawSocket, OwnedSocket};

use socket2::{Protocol, SockRef, Socket, Type};
use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_BROKEN_PIPE, ERROR_HANDLE_EOF, ERROR_IO_PENDING, ERROR_MORE_DATA,
    ERROR_PIPE_CONNECTED, STATUS_ALERTED, STATUS_PENDING,
};
use windows_sys::Win32::Networking::WinSock::{
    setsockopt, WSARecv, WSARecvFrom, WSASend, WSASendTo, SOCKADDR, SOCKET, SOL_SOCKET,
    SO_UPDATE_ACCEPT_CONTEXT, SO_UPDATE_CONNECT_CONTEXT, WSABUF, WSAEMSGSIZE, WSA_IO_PENDING,
};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::Pipes::ConnectNamedPipe;
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::net;
use crate::buf::{Buffer, Part};
use crate::request::Packet;
use crate::request::{Header, Request};
use crate::shared::error::{Error, Result};
use crate::shared::status::Status;
use crate::shared::HandleKind;
use crate::shared::Op;

/// What the OS did with a request it took.
pub(super) enum Started {
    /// A packet will reach the port: the request is pending, or it
    /// completed at once on a handle whose immediate results are queued.
    Queued,
    /// It completed at once, with success and this many bytes, and no
    /// packet will come: the crate delivers it (`port::IocpPortState::deliver`).
    Done(u32),
}

/// An immediate success: the kernel queues its packet unless the handle
/// skips the port on success.
fn at_once(n: u32, skip: bool) -> Started {
    if skip {
        Started::Done(n)
    } else {
        Started::Queued
    }
}

/// The outcome of a Win32 call that returned `ok` and, on immediate
/// success, `n` bytes; an error is anything but `ERROR_IO_PENDING`.
fn win32_started(ok: i32, n: u32, skip: bool) -> io::Result<Started> {
    if ok != 0 {
        return Ok(at_once(n, skip));
    }
    // SAFETY: GetLastError only reads the calling thread's error value.
    match unsafe { GetLastError() } {
        ERROR_IO_PENDING => Ok(Started::Queued),
        code => Err(io::Error::from_raw_os_error(code as i32)),
    }
}

/// As [`win32_started`], for a Winsock call that returned `r`.
fn wsa_started(r: i32, n: u32, skip: bool) -> io::Result<Started> {
    if !net::failed(r) {
        return Ok(at_once(n, skip));
    }
    let e = net::last_wsa_error();
    match e.raw_os_error() {
        Some(WSA_IO_PENDING) => Ok(Started::Queued),
        _ => Err(e),
    }
}

/// A receive into a buffer shorter than the datagram or message waiting
/// fails at once with `WSAEMSGSIZE` or `ERROR_MORE_DATA`, yet the kernel
/// queues its packet: the status, `STATUS_BUFFER_OVERFLOW`, is a warning,
/// and a completion port gets a packet for every immediate result that is
/// not an error. So that result counts as started (S23); the packet
/// completes the request with the bytes that fit (S27). (Handles that skip
/// the port on success are never ones that can see it: see
/// `skip_completion_port_on_success`.)
fn overflow_started(r: io::Result<Started>) -> io::Result<Started> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == WSAEMSGSIZE || c as u32 == ERROR_MORE_DATA) => {
            Ok(Started::Queued)
        }
        r => r,
    }
}

/// Parts gathered without allocating; more go to the heap.
const INLINE_PARTS: usize = 4;

/// The `WSABUF` array of one request: on the stack for up to
/// [`INLINE_PARTS`] parts (a single buffer always), else on the heap.
/// Winsock copies the array during the call, so it lives only that long.
enum WsaBufs {
    Inline([WSABUF; INLINE_PARTS], usize),
    Heap(Vec<WSABUF>),
}

impl WsaBufs {
    fn as_ptr(&self) -> *const WSABUF {
        match self {
            WsaBufs::Inline(a, _) => a.as_ptr(),
            WsaBufs::Heap(v) => v.as_ptr(),
        }
    }

    fn len(&self) -> u32 {
        match self {
            WsaBufs::Inline(_, n) => *n as u32,
            WsaBufs::Heap(v) => v.len() as u32,
        }
    }
}

/// `WSABUF`s over the buffer's parts (each at most 4 GiB - 1): for a read
/// each part's room, its capacity (S32); for a write its bytes. A request
/// with no room is one zero-length buffer (S31): Winsock refuses an empty
/// array.
fn wsabufs(buf: &mut Buffer, read: bool) -> WsaBufs {
    let parts = buf.part_count();
    let mut one = |i: usize| {
        let p = buf.part(i);
        let n = if read { p.cap } else { p.len };
        WSABUF { len: n.min(u32::MAX as usize) as u32, buf: p.ptr }
    };
    let empty = WSABUF { len: 0, buf: std::ptr::NonNull::<u8>::dangling().as_ptr() };
    let mut inline = [empty; INLINE_PARTS];
    match parts {
        0 => WsaBufs::Inline(inline, 1),
        n if n <= INLINE_PARTS => {
            for (i, slot) in inline.iter_mut().take(n).enumerate() {
                *slot = one(i);
            }
            WsaBufs::Inline(inline, n)
        }
        n => WsaBufs::Heap((0..n).map(one).collect()),
    }
}

/// The one part a file-handle request transfers: the single buffer, or the
/// first part of a vectored one with room (a read: capacity, S32) or bytes
/// (a write).
fn first_part(buf: &mut Buffer, read: bool) -> (*mut u8, u32) {
    let size = |p: &Part| if read { p.cap } else { p.len };
    let part = (0..buf.part_count()).map(|i| buf.part(i)).find(|p| size(p) > 0);
    match part {
        Some(p) => (p.ptr, size(&p).min(u32::MAX as usize) as u32),
        // No room: a zero-byte ReadFile or WriteFile (S31).
        None => (std::ptr::NonNull::<u8>::dangling().as_ptr(), 0),
    }
}

/// Puts a file offset in the `OVERLAPPED`. Windows takes signed 64-bit
/// offsets (negative ones mean "append" or "current position") and fails a
/// transfer that would end past 2^63 - 1, so such requests are refused
/// before they start. (Wine also queues a packet for that immediate
/// failure, which Windows does not; refusing first keeps both exact.)
fn set_offset(ov: &mut OVERLAPPED, off: u64, len: usize) -> Result<()> {
    if off.checked_add(len as u64).map_or(true, |end| end > i64::MAX as u64) {
        return Err(Error::invalid(
            "offset",
            off,
            "plus the length is beyond the largest file offset (2^63 - 1)",
        ));
    }
    ov.Anonymous.Anonymous.Offset = off as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (off >> 32) as u32;
    Ok(())
}

/// Issues the OS call for the request at `p`. `Ok` means the OS took it:
/// a packet will come ([`Started::Queued`]), or it completed at once with
/// none to come ([`Started::Done`]: on a handle that skips the port on
/// success, and reads that met the end of a file or pipe at once).
///
/// # Safety
/// `p` is a live request given up with into_raw, with `os.io` set, and
/// `raw` is open for the duration of the call. `skip` is true only when
/// the OS object skips the port on success.
pub(super) unsafe fn start(kind: HandleKind, raw: &Raw, p: *mut Header, skip: bool) -> Result<Started> {
    // SAFETY: the caller gives up `p`; until the OS call below returns,
    // nothing else can reach it. After the call `h` is not used.
    let h = unsafe { &mut *p };
    // This use's own place for the OVERLAPPED (S39).
    let ov: *mut OVERLAPPED = super::overlapped_of(h);
    let op = h.op;
    let invalid = || Error::invalid("op", format!("{op:?}"), &format!("is not supported on {kind:?}"));
    match (op, raw.socket()) {
        // A read with no room is the real zero-byte WSARecv or ReadFile
        // (S31): it completes when the stream is readable, taking nothing.
        (Op::Read, Some(s)) => {
            let bufs = wsabufs(&mut h.buffer, true);
            let mut n = 0u32;
            // SAFETY: the WSABUFs point into the request's buffer, which
            // lives until the packet is taken; Winsock copies the array
            // itself; flags and OVERLAPPED live in the request.
            let r = unsafe { WSARecv(s, bufs.as_ptr(), bufs.len(), &mut n, &mut h.os.flags, ov, None) };
            Ok(wsa_started(r, n, skip)?)
        }
        (Op::Write, Some(s)) => {
            let bufs = wsabufs(&mut h.buffer, false);
            let mut n = 0u32;
            // SAFETY: as for WSARecv; the data is only read.
            let r = unsafe { WSASend(s, bufs.as_ptr(), bufs.len(), &mut n, 0, ov, None) };
            Ok(wsa_started(r, n, skip)?)
        }
        (Op::Read | Op::ReadAt(_), None) => {
            if let Op::ReadAt(off) = op {
                set_offset(h.os.overlapped(h.generation), off, h.buffer.capacity())?;
            }
            let (ptr, len) = first_part(&mut h.buffer, true);
            let mut n = 0u32;
            // SAFETY: the buffer and OVERLAPPED live in the request until
            // its packet is taken.
            let ok = unsafe { ReadFile(raw.handle(), ptr, len, &mut n, ov) };
            match overflow_started(win32_started(ok, n, skip)) {
                Ok(started) => Ok(started),
                // End of file, or of a pipe whose writer closed: a read of
                // 0 bytes, as on Unix. No packet was queued: the crate
                // delivers it.
                Err(e)
                    if matches!(
                        e.raw_os_error().map(|c| c as u32),
                        Some(ERROR_HANDLE_EOF | ERROR_BROKEN_PIPE)
                    ) =>
                {
                    Ok(Started::Done(0))
                }
                Err(e) => Err(Error::Io(e)),
            }
        }
        (Op::Write | Op::WriteAt(_), None) => {
            if let Op::WriteAt(off) = op {
                set_offset(h.os.overlapped(h.generation), off, h.buffer.len())?;
            }
            let filled = (0..h.buffer.part_count()).filter(|&i| !h.buffer.chunk(i).is_empty()).count();
            if h.buffer.is_vectored() && filled > 1 {
                return Err(Error::NotImplemented(
                    "vectored writes on a pipe or file handle (only sockets gather)".into(),
                ));
            }
            let (ptr, len) = first_part(&mut h.buffer, false);
            let mut n = 0u32;
            // SAFETY: as for ReadFile; the data is only read.
            let ok = unsafe { WriteFile(raw.handle(), ptr, len, &mut n, ov) };
            Ok(win32_started(ok, n, skip)?)
        }
        (Op::Accept, Some(s)) => {
            let local = SockRef::from(match raw {
                Raw::Socket(o) => o,
                Raw::File(_) => return Err(invalid()),
            })
            .local_addr()?;
            let domain = local.domain();
            let accept: OwnedSocket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?.into();
            let a = accept.as_raw_socket() as SOCKET;
            h.os.accept = Some(accept);
            let Some(accept_ex) = net::accept_ex(s)? else { return Err(invalid()) };
            let mut got = 0u32;
            // SAFETY: both sockets are open; the output buffer (two
            // addresses of ACCEPT_ADDR_LEN, no data) and the OVERLAPPED
            // live in the request, which also keeps the accept socket.
            let ok = unsafe {
                accept_ex(
                    s,
                    a,
                    h.os.addr.as_mut_ptr() as *mut _,
                    0,
                    net::ACCEPT_ADDR_LEN,
                    net::ACCEPT_ADDR_LEN,
                    &mut got,
                    ov,
                )
            };
            Ok(wsa_started(if ok != 0 { 0 } else { -1 }, got, skip)?)
        }
        // The server end of a named pipe waits for a client. A client that
        // connected before the call is a success with no packet queued:
        // the crate delivers it.
        (Op::Accept, None) if kind == HandleKind::LocalStream => {
            // SAFETY: the pipe handle is open; the OVERLAPPED lives in the
            // request until its packet is taken.
            let ok = unsafe { ConnectNamedPipe(raw.handle(), ov) };
            match win32_started(ok, 0, skip) {
                Ok(started) => Ok(started),
                Err(e) if e.raw_os_error().map(|c| c as u32) == Some(ERROR_PIPE_CONNECTED) => {
                    Ok(Started::Done(0))
                }
                Err(e) => Err(Error::Io(e)),
            }
        }
        (Op::Connect(addr), Some(s)) => {
            let sock = SockRef::from(match raw {
                Raw::Socket(o) => o,
                Raw::File(_) => return Err(invalid()),
            });
            // ConnectEx needs a bound socket.
            if sock.local_addr().is_err() {
                let any: SocketAddr = match addr {
                    SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                sock.bind(&any.into())?;
            }
            let len = net::encode(&addr, &mut h.os.addr);
            let Some(connect_ex) = net::connect_ex(s)? else { return Err(invalid()) };
            let mut n = 0u32;
            // SAFETY: the socket is open and bound; the address and the
            // OVERLAPPED live in the request; no data is sent.
            let ok = unsafe {
                connect_ex(s, h.os.addr.as_ptr() as *const SOCKADDR, len, std::ptr::null(), 0, &mut n, ov)
            };
            Ok(wsa_started(if ok != 0 { 0 } else { -1 }, n, skip)?)
        }
        (Op::SendTo(addr), Some(s)) => {
            let len = net::encode(&addr, &mut h.os.addr);
            let bufs = wsabufs(&mut h.buffer, false);
            let mut n = 0u32;
            // SAFETY: as for WSASend; the address lives in the request.
            let r = unsafe {
                WSASendTo(
                    s,
                    bufs.as_ptr(),
                    bufs.len(),
                    &mut n,
                    0,
                    h.os.addr.as_ptr() as *const SOCKADDR,
                    len,
                    ov,
                    None,
                )
            };
            Ok(wsa_started(r, n, skip)?)
        }
        (Op::RecvFrom, Some(s)) => {
            h.os.addr_len = (super::ADDR_WORDS * 8) as i32;
            let bufs = wsabufs(&mut h.buffer, true);
            let mut n = 0u32;
            // SAFETY: as for WSARecv; the source address and its length are
            // written at completion into the request, which lives until then.
            let r = unsafe {
                WSARecvFrom(
                    s,
                    bufs.as_ptr(),
                    bufs.len(),
                    &mut n,
                    &mut h.os.flags,
                    h.os.addr.as_mut_ptr() as *mut SOCKADDR,
                    &mut h.os.addr_len,
                    ov,
                    None,
                )
            };
            Ok(overflow_started(wsa_started(r, n, skip))?)
        }
        _ => Err(invalid()),
    }
}

/// The packet of a started request, taken from the port, with the
/// `NTSTATUS` and byte count the packet carried; does what the op must
/// do on completion (update the accept/connect context, read the source).
pub(super) fn complete(io: &Io, is_socket: bool, mut req: Request, nt: i32, bytes: u32) -> Packet {
    let h = req.header_mut();
    let mut code = net::error_of(nt, is_socket);
    if nt == STATUS_PENDING || nt == STATUS_ALERTED {
        // An interim status is never a completion on Windows; Wine has
        // been seen to queue one for a send and then drop the send.
        // Report a failure rather than a success of 0 bytes.
        code = super::ERROR_GEN_FAILURE;
    }
    let mut bytes = bytes as usize;
    match h.op {
        Op::Read | Op::ReadAt(_) if code == ERROR_HANDLE_EOF || (code == ERROR_BROKEN_PIPE && !is_socket) => {
            code = 0;
            bytes = 0;
        }
        Op::Accept => {
            let accepted = h.os.accept.take();
            if let (0, Some(sock)) = (code, accepted) {
                io.with_raw(|raw| {
                    if let Some(listen) = raw.socket() {
                        // SAFETY: both sockets are open (the listener's
                        // while this closure runs); the option value is the
                        // listening socket, with its exact size.
                        unsafe {
                            setsockopt(
                                sock.as_raw_socket() as SOCKET,
                                SOL_SOCKET,
                                SO_UPDATE_ACCEPT_CONTEXT,
                                &listen as *const SOCKET as *const u8,
                                std::mem::size_of::<SOCKET>() as i32,
                            )
                        };
                    }
                });
                h.addr = SockRef::from(&sock).peer_addr().ok().and_then(|a| a.as_socket());
                h.accepted = Some(super::Handle::from(TcpStream::from(sock)));
            }
        }
        Op::Connect(_) if code == 0 => {
            io.with_raw(|raw| {
                if let Some(s) = raw.socket() {
                    // SAFETY: the socket is open (a user of the gate);
                    // this option takes no value.
                    unsafe { setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, std::ptr::null(), 0) };
                }
            });
        }
        Op::RecvFrom if code == 0 => {
            h.addr = net::decode(&h.os.addr, h.os.addr_len);
        }
        _ => {}
    }
    if code == 0 && matches!(h.op, Op::Read | Op::ReadAt(_) | Op::RecvFrom) {
        // S32: the length is the bytes read (the kernel never transfers
        // more than the room it was given; clamped all the same).
        let n = bytes.min(h.buffer.capacity());
        // SAFETY: the kernel wrote the first `n` bytes of the room the
        // request gave it, part by part in order.
        unsafe { h.buffer.set_filled(n) };
    }
    Packet { status: Status::from_raw(code), bytes, key: 0, request: Some(req) }
}
