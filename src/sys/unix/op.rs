//! What each request kind does on Unix, shared by the drivers: one
//! non-blocking attempt at a stream, socket or datagram request when its
//! handle is ready (epoll), the positional file requests the pool performs,
//! the iovecs of vectored requests and how far a write got (epoll and
//! io_uring), and the packets a request completes with. The queues,
//! readiness and completions around them live in each driver (`epoll.rs`,
//! `uring.rs`, `filepool.rs`); adding a request kind touches this file,
//! `uring.rs` (and the portable `crate::shared::Op`).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};

use socket2::SockRef;

use crate::buf::Buffer;
use crate::request::Packet;
use crate::request::Request;
use crate::shared::status::Status;
use crate::shared::HandleKind;
use crate::shared::Op;

/// The most parts one system call (or io_uring entry) takes: Linux's
/// `UIO_MAXIOV`, and `IOV_MAX` on macOS and the BSDs. A request of more
/// parts moves them in turns of this many: a read takes what the first
/// turn holds (a short read), a write goes on until every part is sent.
pub(super) const IOV_MAX: usize = 1024;

/// The iovecs of a read's room: each part's whole room, from its start,
/// for the first [`IOV_MAX`] parts.
pub(super) fn read_iov(iov: &mut Vec<libc::iovec>, buf: &mut Buffer) {
    iov.clear();
    iov.extend((0..buf.part_count().min(IOV_MAX)).map(|i| {
        let p = buf.part(i);
        libc::iovec { iov_base: p.ptr.cast(), iov_len: p.cap }
    }));
}

/// The iovecs of what is left to write after `progress` bytes, at most
/// [`IOV_MAX`] of them (io_uring's writes).
#[cfg(target_os = "linux")]
pub(super) fn write_iov(iov: &mut Vec<libc::iovec>, buf: &mut Buffer, progress: usize) {
    iov.clear();
    let mut skip = progress;
    for i in 0..buf.part_count() {
        if iov.len() == IOV_MAX {
            break;
        }
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

/// True for the kinds that wait for writability (the handle's write queue).
pub(super) fn is_write_side(op: Op) -> bool {
    matches!(op, Op::Write | Op::Connect(_) | Op::SendTo(_))
}

/// The bytes a write has sent so far (0 for any other request): what it
/// reports when it ends before it sent them all.
pub(super) fn sent(req: &Request) -> usize {
    match req.op() {
        Op::Write | Op::WriteAt(_) => req.header().os.progress,
        _ => 0,
    }
}

/// Where the drivers put the completions they make: the port's queue
/// (implemented in `port.rs`, so no driver names the port).
pub(super) trait Completions {
    /// Queues a request's packet.
    fn complete(&self, p: Packet);

    /// True on a thread that hands what it pushed to the kernel when it
    /// returns to the port (a pool worker of this port).
    #[cfg(target_os = "linux")]
    fn returns_here(&self) -> bool;
}

/// The connection an accept on a listener of `kind` produced (its fd), on
/// either socket driver.
pub(super) fn accepted(kind: HandleKind, fd: OwnedFd) -> super::Handle {
    match kind {
        HandleKind::TcpListener => super::Handle::from(TcpStream::from(fd)),
        _ => super::Handle::new(fd, HandleKind::LocalStream),
    }
}

/// The status of an aborted request (S24): `ECANCELED`. The backend builds
/// its statuses from its own codes (`Status::from_raw`), never through the
/// core's `Status::ABORTED`, which asks this backend for the same code.
pub(super) const ABORTED: Status = Status::from_raw(libc::ECANCELED as u32);

/// The status of a request that failed with `e`: its errno, or `EIO`.
pub(super) fn status_of(e: &io::Error) -> Status {
    Status::from_raw(e.raw_os_error().unwrap_or(libc::EIO) as u32)
}

/// The completion of `req`, done with `n` bytes.
pub(super) fn done(req: Request, n: usize) -> Packet {
    Packet { status: Status::SUCCESS, bytes: n, key: 0, request: Some(req) }
}

/// The completion of `req`, failed with `e`; a write reports the bytes it
/// sent before the error with it, as IOCP does.
pub(super) fn failed(req: Request, e: &io::Error) -> Packet {
    let bytes = sent(&req);
    Packet { status: status_of(e), bytes, key: 0, request: Some(req) }
}

/// The aborted completion of `req` (S24), with the bytes a write cut off
/// had already sent (as IOCP reports them), so a retry sends only the rest.
pub(super) fn aborted(req: Request) -> Packet {
    let bytes = sent(&req);
    Packet { status: ABORTED, bytes, key: 0, request: Some(req) }
}

/// A positional file request, performed (blocking) on a pool thread (S29);
/// or a stream request of a device epoll cannot watch (S38: `/dev/zero`,
/// `/dev/null`, which are always ready), performed the same way.
pub(super) fn perform_file(fd: &OwnedFd, req: &mut Request) -> io::Result<usize> {
    let op = req.op();
    let h = req.header_mut();
    match (op, &mut h.buffer) {
        (Op::ReadAt(off), b) => pread_into(fd, b, off),
        (Op::WriteAt(off), b) if !b.is_vectored() => pwrite_from(fd, b.chunk(0), off, &mut h.os.progress),
        (Op::Read, b) => retry(|| read_into(fd, b)),
        (Op::Write, b) => write_stream(HandleKind::Stream, fd, b, &mut h.os.progress)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock)),
        _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

/// `pwrite`s all of `data` at `off`, keeping what was written in
/// `progress`, so a write that fails after part says how much it wrote.
fn pwrite_from(fd: &OwnedFd, data: &[u8], off: u64, progress: &mut usize) -> io::Result<usize> {
    let file = borrow::<File>(fd);
    while *progress < data.len() {
        let at =
            off.checked_add(*progress as u64).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        match file.write_at(&data[*progress..], at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => *progress += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(data.len())
}

/// A std object over `fd` that does not close it.
pub(super) fn borrow<T: FromRawFd>(fd: &OwnedFd) -> ManuallyDrop<T> {
    // SAFETY: `fd` is open for as long as the caller holds the borrow (the
    // handle's fd lock is held), and ManuallyDrop keeps T from closing it.
    ManuallyDrop::new(unsafe { T::from_raw_fd(fd.as_raw_fd()) })
}

pub(super) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// `Ok(None)` while the call would block.
pub(super) fn pending<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the readiness event behind an attempt said.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Event {
    /// No event vouches for this attempt (a start, or a request behind
    /// another): it finds out for itself.
    None,
    /// The handle became ready for this direction.
    Ready,
    /// Ready, with an error pending on the socket (epoll's `EPOLLERR`).
    Error,
}

/// One non-blocking attempt at `req`: `Ok(Some(bytes))` when it finished,
/// `Ok(None)` when it would block, `Err` when it failed. `event`: what a
/// readiness event for this direction that just arrived said.
pub(super) fn perform(
    kind: HandleKind,
    fd: &OwnedFd,
    req: &mut Request,
    event: Event,
) -> io::Result<Option<usize>> {
    let op = req.op();
    let h = req.header_mut();
    match op {
        Op::Read if h.buffer.capacity() == 0 => readable(kind, fd, event),
        Op::Read => pending(retry(|| read_into(fd, &mut h.buffer))),
        Op::Write => write_stream(kind, fd, &h.buffer, &mut h.os.progress),
        Op::Accept => {
            let conn = match kind {
                HandleKind::TcpListener => pending(retry(|| borrow::<TcpListener>(fd).accept()))?
                    .map(|(s, a)| (OwnedFd::from(s), Some(a))),
                _ => pending(retry(|| borrow::<UnixListener>(fd).accept()))?.map(|(s, _)| (s.into(), None)),
            };
            let accepted = conn.map(|(conn, addr)| (accepted(kind, conn), addr));
            Ok(accepted.map(|(h2, addr)| {
                h.accepted = Some(h2);
                h.addr = addr;
                0
            }))
        }
        Op::Connect(addr) => {
            let sock = SockRef::from(fd);
            if !h.os.started {
                h.os.started = true;
                return first_connect(sock.connect(&addr.into()));
            }
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            match sock.peer_addr() {
                Ok(_) => Ok(Some(0)),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Op::SendTo(addr) if !h.buffer.is_vectored() => {
            let data = h.buffer.chunk(0);
            pending(retry(|| borrow::<UdpSocket>(fd).send_to(data, addr)))
        }
        Op::RecvFrom if h.buffer.is_writable() && h.buffer.part_count() == 1 => {
            let p = h.buffer.part(0);
            // SAFETY: the part's whole room, writable (checked above), viewed
            // as possibly uninitialized bytes; the buffer is not touched
            // while the slice lives.
            let room = unsafe { std::slice::from_raw_parts_mut(p.ptr.cast::<MaybeUninit<u8>>(), p.cap) };
            Ok(pending(retry(|| SockRef::from(fd).recv_from(room)))?.map(|(n, a)| {
                // SAFETY: recv_from wrote the first `n` bytes of the room.
                unsafe { h.buffer.set_filled(n) };
                h.addr = a.as_socket();
                n
            }))
        }
        Op::SendTo(_) | Op::RecvFrom => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        Op::Post | Op::ReadAt(_) | Op::WriteAt(_) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

/// One `read` (or `readv`) into the buffer's room, from the start of each
/// part up to its capacity (S32); on success the lengths say what was read.
fn read_into(fd: &OwnedFd, buf: &mut Buffer) -> io::Result<usize> {
    if !buf.is_writable() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let n = match buf.part_count() {
        0 => return Ok(0),
        1 => {
            let p = buf.part(0);
            // SAFETY: the pointer and capacity describe the part's whole
            // room, writable (checked above), which the read may fill; `fd`
            // is open (the caller holds the fd lock).
            unsafe { libc::read(fd.as_raw_fd(), p.ptr.cast(), p.cap) }
        }
        _ => {
            let mut iov = Vec::new();
            read_iov(&mut iov, buf);
            // SAFETY: each iovec describes one part's whole room, writable;
            // there are at most IOV_MAX of them; the array lives for the
            // call; `fd` is open (fd lock held).
            unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) }
        }
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the read wrote its first `n` bytes into the room, in order.
    unsafe { buf.set_filled(n) };
    Ok(n)
}

/// `pread` at `off` into the buffer's room (S32) until it is full or the
/// file ends: a file read is short only at the end of the file (S27).
fn pread_into(fd: &OwnedFd, buf: &mut Buffer, off: u64) -> io::Result<usize> {
    if !buf.is_writable() || buf.part_count() != 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let p = buf.part(0);
    let mut done = 0;
    while done < p.cap {
        // An offset past off_t's range is the OS's EINVAL, as pread gives
        // for one whose end overflows.
        let at = off.checked_add(done as u64).and_then(|at| libc::off_t::try_from(at).ok());
        let Some(at) = at else {
            if done > 0 {
                break;
            }
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: the pointer and length describe the part's room after
        // the `done` bytes read so far, writable (checked above); `fd` is
        // open (the caller holds the fd lock).
        let n = unsafe { libc::pread(fd.as_raw_fd(), p.ptr.add(done).cast(), p.cap - done, at) };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    // The bytes read before the error are the result.
                    _ if done > 0 => break,
                    _ => return Err(e),
                }
            }
        }
    }
    // SAFETY: the preads wrote the first `done` bytes, in order.
    unsafe { buf.set_filled(done) };
    Ok(done)
}

/// A read with no room (S31): completes, with 0 bytes, once the stream is
/// readable (data waiting, its end, or an error, which it completes with),
/// without taking any data. Asked of the OS with a zero-timeout `poll`
/// unless a readiness event just said so. The socket's error is asked for
/// (`getsockopt`) only when the event or the poll says there is one
/// (`EPOLLERR`, `POLLERR`), so a wait costs no call of its own.
fn readable(kind: HandleKind, fd: &OwnedFd, event: Event) -> io::Result<Option<usize>> {
    let error = match event {
        Event::Ready => false,
        Event::Error => true,
        Event::None => {
            let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: `p` is one valid pollfd for the duration of the call;
            // `fd` is open (the caller holds the handle's fd lock).
            let n = retry(|| match unsafe { libc::poll(&mut p, 1, 0) } {
                -1 => Err(io::Error::last_os_error()),
                n => Ok(n),
            })?;
            if n == 0 {
                return Ok(None);
            }
            p.revents & libc::POLLERR != 0
        }
    };
    if error && matches!(kind, HandleKind::TcpStream | HandleKind::LocalStream) {
        if let Some(e) = SockRef::from(fd).take_error()? {
            return Err(e);
        }
    }
    Ok(Some(0))
}

/// What a non-blocking `connect` answered: connected, in progress (the
/// socket turns writable when it ends), or failed. `EAGAIN` is a failure:
/// for TCP it means no local port is free, nothing is in progress, and no
/// readiness would ever end the wait.
fn first_connect(r: io::Result<()>) -> io::Result<Option<usize>> {
    match r {
        Ok(()) => Ok(Some(0)),
        // EINTR: the connection goes on in the background, as EINPROGRESS.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the whole buffer, as IOCP does for a stream: progress is kept in
/// the request across readiness rounds; completes with the total.
fn write_stream(
    kind: HandleKind,
    fd: &OwnedFd,
    buf: &Buffer,
    progress: &mut usize,
) -> io::Result<Option<usize>> {
    let total = buf.len();
    while *progress < total {
        let r = match buf.part_count() {
            0 => Ok(0),
            1 => stream_write(kind, fd, &[IoSlice::new(&buf.chunk(0)[*progress..])]),
            parts => {
                let mut skip = *progress;
                let mut slices = Vec::with_capacity(parts.min(IOV_MAX));
                for b in (0..parts).map(|i| buf.chunk(i)) {
                    if slices.len() == IOV_MAX {
                        break;
                    }
                    if skip >= b.len() {
                        skip -= b.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&b[skip..]));
                    skip = 0;
                }
                stream_write(kind, fd, &slices)
            }
        };
        match r {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => *progress += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(total))
}

/// Sockets go through `send`/`sendmsg` with `MSG_NOSIGNAL` (std does that
/// for TCP and Unix streams), so a closed peer is an `EPIPE`, not a signal.
fn stream_write(kind: HandleKind, fd: &OwnedFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match kind {
        HandleKind::TcpStream => borrow::<TcpStream>(fd).write_vectored(slices),
        HandleKind::LocalStream => borrow::<UnixStream>(fd).write_vectored(slices),
        _ => borrow::<File>(fd).write_vectored(slices),
    }
}

#[cfg(test)]
mod tests {
    use super::first_connect;
    use std::io;

    /// A connect refused with `EAGAIN` completes with that error at once
    /// instead of waiting for a readiness that never comes.
    #[test]
    fn a_connect_refused_with_eagain_fails_instead_of_waiting() {
        let e = first_connect(Err(io::Error::from_raw_os_error(libc::EAGAIN))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        assert!(matches!(first_connect(Err(io::Error::from_raw_os_error(libc::EINPROGRESS))), Ok(None)));
        assert!(matches!(first_connect(Ok(())), Ok(Some(0))));
    }
}
