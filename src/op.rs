//! The request kinds (S27, S31), and what each asks of its handle and its
//! buffer, the same on every backend. What a kind does on an OS lives in
//! that backend's `op.rs` (`sys/unix/op.rs`, `sys/windows/op.rs`): adding
//! a kind touches this file and one file per backend.

use std::net::SocketAddr;

use crate::handle::HandleKind;
use crate::sys;

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

    /// `Ok` when a handle of `kind` runs this kind, else why not.
    pub(crate) fn suits(self, kind: HandleKind) -> Result<(), &'static str> {
        use HandleKind as K;
        let ok = match self {
            Op::Read | Op::Write => matches!(kind, K::TcpStream | K::LocalStream | K::Stream),
            Op::ReadAt(_) | Op::WriteAt(_) => kind == K::File,
            // Where local streams are named pipes, a pipe's server end
            // accepts too: it waits for a client (ConnectNamedPipe).
            Op::Accept => {
                matches!(kind, K::TcpListener | K::LocalListener)
                    || (sys::LOCAL_STREAM_ACCEPTS && kind == K::LocalStream)
            }
            Op::Connect(_) => kind == K::TcpStream,
            Op::SendTo(_) | Op::RecvFrom => kind == K::Udp,
            Op::Post => return Err("user posts go to a port, not a handle"),
        };
        match ok {
            true => Ok(()),
            false if kind == K::File => Err("a regular file takes positional requests (read_at, write_at)"),
            false => Err("this handle does not support this request"),
        }
    }
}
