//! What only Windows has of a [`Handle`]: conversions from files, owned
//! sockets, `socket2` sockets and overlapped OS handles, the socket or
//! handle lent or shown, and named pipes (`iocompletion::windows`).

use std::fs::File;
use std::os::windows::io::{
    AsRawHandle, AsRawSocket, BorrowedHandle, OwnedHandle, OwnedSocket, RawHandle, RawSocket,
};

use super::Handle;
use crate::error::{Error, Result};
use crate::sys;

/// An owned socket (S38): a TCP stream or listener (told by
/// `SO_ACCEPTCONN`) or a UDP socket, by its type.
impl From<OwnedSocket> for Handle {
    fn from(s: OwnedSocket) -> Handle {
        Handle::from_sys(sys::Handle::from(s))
    }
}

/// A file, pipe or device opened by the standard library (S38).
///
/// On Unix this always succeeds: a regular file is served by the pool with
/// positional requests, anything else is driven by readiness. On Windows a
/// std `File` is opened for synchronous I/O, which a completion port cannot
/// drive, so it is reopened with `ReOpenFile(FILE_FLAG_OVERLAPPED)` with the
/// same access rights and the original handle is closed; when that fails
/// (a pipe or device that cannot be reopened) the conversion fails with
/// `NotImplemented` and no handle is made. Open such objects overlapped
/// yourself and use `windows::from_overlapped_handle`.
impl TryFrom<File> for Handle {
    type Error = Error;

    fn try_from(f: File) -> Result<Handle> {
        Ok(Handle::from_sys(sys::Handle::try_from(f)?))
    }
}

/// An unconnected (or any) socket made with `socket2`: its kind is told
/// from the socket, as for an owned fd or socket. An unconnected TCP
/// socket takes [`Handle::connect`] once bound.
impl From<socket2::Socket> for Handle {
    fn from(s: socket2::Socket) -> Handle {
        Handle::from(OwnedSocket::from(s))
    }
}

/// The socket, or `INVALID_SOCKET` for a file or pipe handle or once the
/// handle is closed. Valid only while the handle is open; use
/// [`Handle::with_socket`](crate::Handle::with_socket) to hold it open.
impl AsRawSocket for Handle {
    fn as_raw_socket(&self) -> RawSocket {
        self.sys().raw_socket()
    }
}

/// The OS handle (for a socket, the socket's value), or null once the
/// handle is closed. Valid only while the handle is open; use
/// [`Handle::with_handle`](crate::Handle::with_handle) to hold it open.
impl AsRawHandle for Handle {
    fn as_raw_handle(&self) -> RawHandle {
        self.sys().raw_handle()
    }
}

impl Handle {
    /// Lends the file or pipe handle to `f` for what the crate does not
    /// wrap (S38), without undoing the binding. The handle cannot be closed
    /// while `f` runs (a close waits for it). Fails with `InvalidArgument`
    /// for a socket (see [`Handle::with_socket`](crate::Handle::with_socket))
    /// or once closed.
    ///
    /// A handle can be closed through any of its clones, so it lends its
    /// OS handle for a call rather than implementing `AsHandle`, whose
    /// borrow would outlive a close; [`AsRawHandle`] gives the raw value.
    pub fn with_handle<T>(&self, f: impl FnOnce(BorrowedHandle<'_>) -> T) -> Result<T> {
        self.sys().with_handle(f)
    }
}

/// Creates the server end of a named pipe (S27): a byte-mode, duplex,
/// overlapped instance of `name` (`\\.\pipe\name` unless `name`
/// already starts with `\\`), local clients only. A client that
/// opens the name with [`named_pipe_client`] connects to it;
/// the two are then [`HandleKind::LocalStream`](crate::HandleKind::LocalStream)s that take reads and
/// writes.
///
/// Only LocalSystem, the Administrators group and the user the process
/// runs as may open the pipe: its security descriptor is a protected
/// DACL that grants those three full access and no one else (Windows'
/// default descriptor for a pipe lets Everyone and Anonymous read it).
/// Remote clients are rejected (`PIPE_REJECT_REMOTE_CLIENTS`).
///
/// With `first` set, the call fails (`ERROR_ACCESS_DENIED`) when a pipe
/// of that name exists already (`FILE_FLAG_FIRST_PIPE_INSTANCE`). Set it
/// for a server's first instance: a pipe of the same name that another
/// process made first keeps that process's security descriptor, and
/// joining it would serve clients the crate did not choose. Later
/// instances of the server's own pipe pass `false`.
pub fn named_pipe_server(name: &str, first: bool) -> Result<Handle> {
    Ok(Handle::from_sys(sys::named_pipe_server(name, first)?))
}

/// Opens the client end of the named pipe `name` (see
/// [`named_pipe_server`]) for overlapped reads and writes.
///
/// The client allows the server to identify it but not to act as it
/// (`SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`: no impersonation).
/// When every instance of the pipe is busy (`ERROR_PIPE_BUSY`) it waits
/// for one (`WaitNamedPipeW`, up to 5 s at a time, 3 times) before it
/// gives up with that error.
pub fn named_pipe_client(name: &str) -> Result<Handle> {
    Ok(Handle::from_sys(sys::named_pipe_client(name)?))
}

/// Disconnects the server end of a named pipe from its client
/// (`DisconnectNamedPipe`), so that the instance can
/// [`accept`](crate::Handle::accept) the next client. The client's
/// pending requests fail; the server's end their own way (a pending
/// read completes with an error). `InvalidArgument` on a socket or a
/// closed handle.
pub fn disconnect_named_pipe(handle: &Handle) -> Result<()> {
    handle.sys().disconnect_named_pipe()
}

/// A handle over an OS file, pipe or device handle that was opened for
/// overlapped I/O (`FILE_FLAG_OVERLAPPED`); it is used as it is. A
/// handle opened without that flag cannot be driven by a completion
/// port: binding it fails with `ERROR_INVALID_PARAMETER` (87) from
/// `CreateIoCompletionPort`, and nothing is started on it. Use
/// `Handle::try_from(File)` for a std `File`, which reopens it.
///
/// Overlapped I/O that other code issues on a duplicate of the handle
/// completes to the same port; the crate tells those packets apart and
/// drops them (S39, [`Port::foreign_packets`](crate::Port::foreign_packets)).
pub fn from_overlapped_handle(h: OwnedHandle) -> Handle {
    Handle::from_sys(sys::from_overlapped_handle(h))
}

/// Not part of the API: a seam for the crate's tests. Queues on the
/// handle's port the packet the kernel would queue for overlapped I/O
/// on this handle whose `OVERLAPPED` is at `overlapped`: the handle's
/// completion key, that address, `bytes` and success. The port must
/// tell it from its requests as it tells any packet (S39).
///
/// # Safety
/// `overlapped` is not the `OVERLAPPED` of a request of this handle
/// that is in flight now: that request would complete while the OS
/// still holds its buffer. (An address of an earlier request, one whose
/// completion was taken, is what the tests pass.)
#[doc(hidden)]
pub unsafe fn post_as_kernel(handle: &Handle, overlapped: usize, bytes: u32) -> Result<()> {
    // SAFETY: the caller's promise above is the one the backend asks for.
    unsafe { handle.sys().post_as_kernel(overlapped, bytes) }
}
