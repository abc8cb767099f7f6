//! Windows handles: an owned socket or file handle opened for overlapped
//! I/O, the port it is associated with, and its started requests.

use crate::sync::OnceLock;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::{
    AsHandle, AsRawHandle, AsRawSocket, FromRawHandle, OwnedHandle, OwnedSocket, RawHandle,
};

use socket2::{SockRef, Type};
use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, LocalFree, ERROR_NOT_FOUND, ERROR_PIPE_BUSY, GENERIC_READ, GENERIC_WRITE,
    HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Networking::WinSock::{closesocket, getsockopt, SOCKET, SOL_SOCKET, SO_ACCEPTCONN};
use windows_sys::Win32::Networking::WinSock::{SO_PROTOCOL_INFOW, WSAPROTOCOL_INFOW, XP1_IFS_HANDLES};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::SetFileCompletionNotificationModes;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, GetFileType, ReOpenFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_TYPE_DISK, FILE_TYPE_PIPE, OPEN_EXISTING,
    PIPE_ACCESS_DUPLEX, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, DisconnectNamedPipe, WaitNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeInfo, PIPE_TYPE_MESSAGE};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
use windows_sys::Win32::System::WindowsProgramming::FILE_SKIP_COMPLETION_PORT_ON_SUCCESS;
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;
use windows_sys::Win32::System::IO::{CancelIoEx, CreateIoCompletionPort, OVERLAPPED};

use super::op::{start, Started};
use super::port::IocpPortState;
use super::port::Port;
use crate::request::Packet;
use crate::request::Request;
use crate::shared::error::{Error, Result};
use crate::shared::HandleKind;
use crate::shared::RequestId;
use crate::sync::{Arc, AtomicBool, AtomicUsize, Ordering, Weak};
use crate::sys::inflight::{Gate, Pending};
use crate::sys::HandleDriver;

/// The OS object behind a handle.
pub(super) enum Raw {
    Socket(OwnedSocket),
    File(OwnedHandle),
}

impl Raw {
    pub(super) fn handle(&self) -> HANDLE {
        match self {
            Raw::Socket(s) => s.as_raw_socket() as HANDLE,
            Raw::File(h) => h.as_raw_handle() as HANDLE,
        }
    }

    pub(super) fn socket(&self) -> Option<SOCKET> {
        match self {
            Raw::Socket(s) => Some(s.as_raw_socket() as SOCKET),
            Raw::File(_) => None,
        }
    }

    /// Closes the OS object, leaving the value (which must then never be
    /// dropped: the `Io` keeps it in a `ManuallyDrop`).
    ///
    /// # Safety
    /// Called once, by the thread whose [`Gate::close`] returned true: no
    /// user of the object is left and none can come.
    unsafe fn close_os(&self) {
        match self {
            // SAFETY: the caller's promise; the socket is open until here.
            Raw::Socket(s) => unsafe {
                closesocket(s.as_raw_socket() as SOCKET);
            },
            // SAFETY: as above, for the handle.
            Raw::File(h) => unsafe {
                CloseHandle(h.as_raw_handle() as HANDLE);
            },
        }
    }
}

/// The I/O state of one handle, shared with its requests while they run.
///
/// Nothing on a request's path takes a lock: the gate is one atomic word
/// (a start enters it to use `raw`, a close waits for the users to leave),
/// and the request's address goes into the handle's entry of its port's
/// table, found by index (`sys::inflight`).
pub(crate) struct Io {
    kind: HandleKind,
    socket: bool,
    /// Who uses `raw`; the handle's and its port's closed bits; the epoch
    /// of `cancel_all`.
    gate: Gate,
    /// The OS object. Used only by a user of `gate`; closed by the first
    /// `close` once no user is left, else dropped with the `Io`.
    raw: ManuallyDrop<Raw>,
    port: OnceLock<Weak<IocpPortState>>,
    /// The completion key the handle was associated with: `1 +` its index
    /// in the port's table (0 until associated).
    key: AtomicUsize,
    /// The OS object skips the port on success (set before the handle is
    /// bound, never cleared).
    skip: AtomicBool,
}

impl Io {
    /// The handle's pending requests in `port`'s table (`None` before it is
    /// associated).
    fn pending_in<'a>(&self, port: &'a IocpPortState) -> Option<&'a Pending> {
        self.key.load(Ordering::Acquire).checked_sub(1).and_then(|i| port.table.get(i))
    }

    /// Runs `f` on the OS object, unless the handle is closed; a close
    /// waits until `f` returns.
    pub(super) fn with_raw<T>(&self, f: impl FnOnce(&Raw) -> T) -> Option<T> {
        let _user = self.gate.enter()?;
        Some(f(&self.raw))
    }
}

/// The backend's handle.
pub(crate) struct Handle {
    io: Arc<Io>,
}

fn closed() -> Error {
    Error::invalid("handle", "closed", "is closed")
}

impl Handle {
    fn new(raw: Raw, kind: HandleKind) -> Handle {
        Handle {
            io: Arc::new(Io {
                kind,
                socket: matches!(raw, Raw::Socket(_)),
                gate: Gate::new(),
                raw: ManuallyDrop::new(raw),
                port: OnceLock::new(),
                key: AtomicUsize::new(0),
                skip: AtomicBool::new(false),
            }),
        }
    }

    fn describe_kind(&self) -> String {
        format!("{:?}", self.io.kind)
    }
}

impl HandleDriver for Handle {
    type Port = Port;

    /// The socket kinds; a local stream is a named pipe, not a socket.
    fn is_socket(kind: HandleKind) -> bool {
        use HandleKind as K;
        matches!(kind, K::TcpStream | K::TcpListener | K::Udp | K::LocalListener)
    }

    /// The listeners, and the server end of a named pipe
    /// (`ConnectNamedPipe`).
    fn accepts(kind: HandleKind) -> bool {
        matches!(kind, HandleKind::TcpListener | HandleKind::LocalListener | HandleKind::LocalStream)
    }

    /// `WSAETIMEDOUT` for a socket, as Winsock reports a timeout, else
    /// `ERROR_TIMEOUT`.
    fn timed_out_code(kind: Option<HandleKind>) -> u32 {
        if kind.is_some_and(Self::is_socket) {
            windows_sys::Win32::Networking::WinSock::WSAETIMEDOUT as u32
        } else {
            windows_sys::Win32::Foundation::ERROR_TIMEOUT
        }
    }

    fn kind(&self) -> HandleKind {
        self.io.kind
    }

    fn is_closed(&self) -> bool {
        self.io.gate.is_closed()
    }

    fn describe(&self) -> String {
        let kind = self.io.kind;
        self.io
            .with_raw(|raw| match raw {
                Raw::Socket(s) => format!("socket {} ({kind:?})", s.as_raw_socket()),
                Raw::File(h) => format!("handle {:?} ({kind:?})", h.as_raw_handle()),
            })
            .unwrap_or_else(|| format!("closed handle ({kind:?})"))
    }

    /// Runs `f` on the socket behind the handle (closed: `InvalidArgument`).
    fn with_sock<T>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> Result<T> {
        match self.io.with_raw(|raw| match raw {
            Raw::Socket(s) => Some(f(SockRef::from(s))),
            Raw::File(_) => None,
        }) {
            Some(Some(r)) => Ok(r?),
            Some(None) => Err(Error::invalid("handle", self.describe_kind(), "is not a socket")),
            None => Err(closed()),
        }
    }

    /// Sets `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` on the OS object, for
    /// the kinds whose immediate results are all unambiguous (a TCP socket
    /// of an IFS provider, a disk file, a byte-type pipe); false for the
    /// others, which keep their packets (see the module documentation).
    /// The caller makes sure no request was started on the handle yet.
    fn skip_completion_port_on_success(&self) -> Result<bool> {
        let io = &self.io;
        let Some(_user) = io.gate.enter() else { return Err(closed()) };
        let raw: &Raw = &io.raw;
        let usable = match (io.kind, raw) {
            (HandleKind::TcpStream | HandleKind::TcpListener, Raw::Socket(s)) => ifs_socket(s),
            (HandleKind::File, Raw::File(_)) => true,
            (HandleKind::LocalStream, Raw::File(h)) => byte_pipe(h),
            _ => false,
        };
        if !usable {
            return Ok(false);
        }
        // SAFETY: the handle is open (a user of the gate); the call takes
        // only the handle and the flags.
        let ok = unsafe {
            SetFileCompletionNotificationModes(raw.handle(), FILE_SKIP_COMPLETION_PORT_ON_SUCCESS as u8)
        };
        if ok == 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        io.skip.store(true, Ordering::Release);
        Ok(true)
    }

    /// `CreateIoCompletionPort(handle, port, key, 0)`, once, with a key of
    /// the handle's own (its place in the port's handle table).
    fn associate(&self, port: &Port) -> Result<()> {
        let inner = &port.inner;
        let io = &self.io;
        let _user = io.gate.enter().ok_or_else(closed)?;
        // Claimed under the table's lock, which the port's close takes to
        // list its handles: a close that began first refuses the bind, a
        // later one finds the handle and aborts it.
        let refused = || Error::invalid("port", "bound", "is closed");
        let index = inner
            .table
            .claim(Arc::downgrade(io), || if inner.is_closing() { Err(refused()) } else { Ok(()) })?
            .ok_or_else(|| Error::invalid("port", "bound", "has no room for another handle"))?;
        let key = index + 1;
        // SAFETY: both handles are open (the gate and the port's Arc keep
        // them so); concurrency is the port's.
        let r = unsafe { CreateIoCompletionPort(io.raw.handle(), inner.handle(), key, 0) };
        if r.is_null() {
            let e = io::Error::last_os_error();
            inner.table.release(index);
            return Err(Error::Io(e));
        }
        io.key.store(key, Ordering::Release);
        let _ = io.port.set(Arc::downgrade(inner));
        Ok(())
    }

    /// Starts `req`. When the OS takes the request (at once or pending),
    /// exactly one packet will reach the port; when it fails at once,
    /// nothing is posted and the request comes back with the error (S23).
    fn submit(&self, mut req: Request, port: &Port) -> std::result::Result<(), (Error, Request)> {
        let inner = &port.inner;
        let io = &self.io;
        // A user of the OS object until the OS has the request: a close
        // waits for it, and a cancel_all sees the epoch it entered in.
        let Some(user) = io.gate.enter() else {
            return Err((closed(), req));
        };
        if user.port_closed() || inner.is_closing() {
            return Err((Error::invalid("port", "bound", "is closed"), req));
        }
        let Some(pending) = io.pending_in(inner) else {
            return Err((Error::invalid("handle", self.describe_kind(), "is not bound to this port"), req));
        };
        if !inner.begin() {
            return Err((Error::invalid("port", "bound", "is closed"), req));
        }
        let id = req.header().id;
        req.header_mut().os.io = Some(io.clone());
        let skip = io.skip.load(Ordering::Acquire);
        // The address the OS gets and its packet carries: this use's own
        // (S39), so a late packet for an earlier use of the block is not
        // taken for this request.
        let ov = super::overlapped_of(req.header_mut()) as usize;
        let p = req.into_raw();
        // Before the OS sees the request, so that its packet is known.
        pending.insert(ov, id, user.epoch());
        // SAFETY: `p` is a request given up with into_raw; it is not used
        // again here unless the start fails (then no packet comes) or it
        // completed with no packet to come; `raw` stays open while this
        // thread is a user of the gate; `skip` is the OS object's mode,
        // set before the handle was bound.
        let r = unsafe {
            if io.socket && super::wine::under_wine() {
                // Wine ties socket requests to their thread (see `wine`).
                super::wine::issue(io.kind, &io.raw, p, skip)
            } else {
                start(io.kind, &io.raw, p, skip)
            }
        };
        match r {
            Ok(Started::Queued) => Ok(()),
            Ok(Started::Done(bytes)) => {
                // No packet will come: off the pending requests (a cancel
                // may hold the entry for the length of its call), then to
                // the port's own queue, with the result in the OVERLAPPED.
                let taken = pending.take(ov);
                debug_assert!(taken, "a request that completed at once was in its handle's table");
                // SAFETY: the OS holds no reference to the request any more
                // and queues no packet for it: this thread owns it again and
                // hands it to the port, which completes it once.
                unsafe {
                    let ov = super::overlapped_of(&mut *p);
                    (*ov).Internal = 0; // STATUS_SUCCESS
                    (*ov).InternalHigh = bytes as usize;
                    inner.deliver(p);
                }
                Ok(())
            }
            Err(e) => {
                // No packet will come: only a cancel can hold the entry,
                // for the length of its call.
                let taken = pending.take(ov);
                debug_assert!(taken, "a request that failed to start was in its handle's table");
                // SAFETY: the start failed, so the OS holds no reference to
                // the request and no packet carries it.
                let mut req = unsafe { Request::from_raw(p) };
                let os = &mut req.header_mut().os;
                os.io = None;
                os.accept = None;
                inner.end(1);
                Err((e, req))
            }
        }
    }

    fn cancel(&self, id: RequestId) -> Result<()> {
        let io = &self.io;
        let not_found = || Err(Error::Io(super::not_found()));
        let Some(_user) = io.gate.enter() else { return not_found() };
        let Some(port) = io.port.get().and_then(Weak::upgrade) else { return not_found() };
        let Some(pending) = io.pending_in(&port) else { return not_found() };
        let r = pending.with_id(id.0, |ov| {
            // SAFETY: the handle is open (this thread is a user of the
            // gate); `ov` is the OVERLAPPED of request `id`, whose packet
            // cannot be taken (nor its address reused) while `with_id` holds
            // it; the kernel only compares it with the requests it holds.
            if unsafe { CancelIoEx(io.raw.handle(), ov as *const OVERLAPPED) } != 0 {
                return Ok(());
            }
            // SAFETY: reads the calling thread's error value.
            Err(match unsafe { GetLastError() } {
                ERROR_NOT_FOUND => super::not_found(),
                code => io::Error::from_raw_os_error(code as i32),
            })
        });
        match r {
            None => not_found(),
            Some(r) => Ok(r?),
        }
    }

    /// Cancels each request of this handle that started before the call
    /// and that the OS still has pending, and returns how many it
    /// cancelled (S25). The gate's epoch tells a request that started
    /// before (cancelled) from one that began after (left alone), with no
    /// lock that keeps starts out. Requests that already completed (their
    /// packets queued, not yet taken) are not counted: `CancelIoEx` on each
    /// address tells which the OS still holds.
    fn cancel_all(&self) -> usize {
        let io = &self.io;
        let Some(_user) = io.gate.enter() else { return 0 };
        let Some(port) = io.port.get().and_then(Weak::upgrade) else { return 0 };
        let Some(pending) = io.pending_in(&port) else { return 0 };
        let epoch = io.gate.next_epoch();
        pending.each_until(epoch, |ov| {
            // SAFETY: the handle is open (this thread is a user of the
            // gate). `ov` is held by `each_until`: its request's packet
            // cannot be taken and its address cannot name a newer request
            // meanwhile; the kernel only compares it with what it holds.
            unsafe { CancelIoEx(io.raw.handle(), ov as *const OVERLAPPED) != 0 }
        })
    }

    /// Cancels what is pending (each completes aborted, S24) and closes
    /// the socket or handle. False when it was closed before.
    fn close(&self) -> bool {
        if !self.io.gate.close() {
            return false;
        }
        // SAFETY: the gate is closed and no user is left, so this thread
        // alone uses the OS object; NULL cancels all its requests. It is
        // closed once, here, and never dropped (see `Drop for Io`).
        unsafe {
            CancelIoEx(self.io.raw.handle(), std::ptr::null());
            self.io.raw.close_os();
        }
        true
    }
}

impl Io {
    /// The port is closing: refuse new requests and cancel the pending
    /// ones, including those whose start is between its check and its OS
    /// call (the gate waits for them).
    pub(super) fn abort_for_port_close(&self) {
        self.gate.close_port();
        self.with_raw(|raw| {
            // SAFETY: the handle is open (a user of the gate); NULL
            // cancels all its requests.
            unsafe { CancelIoEx(raw.handle(), std::ptr::null()) };
        });
    }

    /// The packet of a started request, taken from the port, with the
    /// `NTSTATUS` and byte count the packet carried (see `op::complete`).
    pub(super) fn complete(&self, req: Request, nt: i32, bytes: u32) -> Packet {
        super::op::complete(self, self.socket, req, nt, bytes)
    }
}

impl Drop for Io {
    /// Frees the handle's place in its port's table (a later handle may
    /// take its key; a late foreign packet with it then finds its address
    /// in no pending table; every request of this handle has been taken,
    /// since each holds the `Io`), and closes the OS object unless `close`
    /// did.
    fn drop(&mut self) {
        let key = self.key.load(Ordering::Acquire);
        if let Some(port) = self.port.get().and_then(Weak::upgrade) {
            if key > 0 {
                port.table.release(key - 1);
            }
        }
        if !self.gate.is_closed() {
            // SAFETY: not closed by `close` (which sets the gate's closed
            // bit first), and dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.raw) };
        }
    }
}

impl From<TcpStream> for Handle {
    fn from(s: TcpStream) -> Handle {
        Handle::new(Raw::Socket(s.into()), HandleKind::TcpStream)
    }
}

impl From<TcpListener> for Handle {
    fn from(s: TcpListener) -> Handle {
        Handle::new(Raw::Socket(s.into()), HandleKind::TcpListener)
    }
}

impl From<UdpSocket> for Handle {
    fn from(s: UdpSocket) -> Handle {
        Handle::new(Raw::Socket(s.into()), HandleKind::Udp)
    }
}

/// The kind of a file handle: a disk file takes positional requests, a
/// pipe is a local stream, anything else (console, device) a stream.
fn kind_of(h: RawHandle) -> HandleKind {
    // SAFETY: GetFileType only queries the handle; an invalid one gives
    // FILE_TYPE_UNKNOWN.
    match unsafe { GetFileType(h as HANDLE) } {
        FILE_TYPE_DISK => HandleKind::File,
        FILE_TYPE_PIPE => HandleKind::LocalStream,
        _ => HandleKind::Stream,
    }
}

/// The access rights the handle was opened with, if the OS tells.
fn granted_access(h: RawHandle) -> Option<u32> {
    let mut info = PUBLIC_OBJECT_BASIC_INFORMATION::default();
    let mut len = 0u32;
    // SAFETY: the out-buffer is a PUBLIC_OBJECT_BASIC_INFORMATION of the
    // size given; the handle is open (owned by the caller).
    let status = unsafe {
        NtQueryObject(
            h as HANDLE,
            ObjectBasicInformation,
            &mut info as *mut _ as *mut _,
            std::mem::size_of::<PUBLIC_OBJECT_BASIC_INFORMATION>() as u32,
            &mut len,
        )
    };
    (status >= 0 && info.GrantedAccess != 0).then_some(info.GrantedAccess)
}

/// `ReOpenFile` with `FILE_FLAG_OVERLAPPED` and the access the original
/// handle had (read and write when that cannot be asked, then read only).
fn reopen_overlapped(h: RawHandle) -> Option<OwnedHandle> {
    let share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    let tries: Vec<u32> = match granted_access(h) {
        Some(a) => vec![a],
        None => vec![GENERIC_READ | GENERIC_WRITE, GENERIC_READ],
    };
    for access in tries {
        // SAFETY: `h` is open; ReOpenFile returns a new handle or
        // INVALID_HANDLE_VALUE.
        let new = unsafe { ReOpenFile(h as HANDLE, access, share, FILE_FLAG_OVERLAPPED) };
        if new != INVALID_HANDLE_VALUE && !new.is_null() {
            // SAFETY: `new` is a fresh handle that nothing else owns.
            return Some(unsafe { OwnedHandle::from_raw_handle(new as RawHandle) });
        }
    }
    None
}

/// A std `File` is opened for synchronous I/O, which IOCP cannot drive: it
/// is reopened with `ReOpenFile(…, FILE_FLAG_OVERLAPPED)` with the same
/// access, and the original handle is closed. When that fails (a pipe or
/// device that cannot be reopened) the conversion fails with
/// `NotImplemented` (S38).
impl TryFrom<File> for Handle {
    type Error = Error;

    fn try_from(f: File) -> Result<Handle> {
        let raw = f.as_raw_handle();
        let kind = kind_of(raw);
        match reopen_overlapped(raw) {
            Some(h) => Ok(Handle::new(Raw::File(h), kind)),
            None => Err(Error::NotImplemented(format!(
                "this {kind:?} handle is open for synchronous I/O and could not be reopened for overlapped I/O; \
                 open it with FILE_FLAG_OVERLAPPED and use windows::from_overlapped_handle"
            ))),
        }
    }
}

impl Handle {
    /// The socket, or `INVALID_SOCKET` for a file handle or once closed.
    pub(crate) fn raw_socket(&self) -> std::os::windows::io::RawSocket {
        self.io.with_raw(Raw::socket).flatten().map_or(!0, |s| s as _)
    }

    /// The OS handle (a socket's too), or null once closed.
    pub(crate) fn raw_handle(&self) -> RawHandle {
        self.io.with_raw(|r| r.handle() as RawHandle).unwrap_or_default()
    }

    /// Runs `f` with the file or pipe handle borrowed; a close waits until
    /// it returns.
    pub(crate) fn with_handle<T>(
        &self,
        f: impl FnOnce(std::os::windows::io::BorrowedHandle<'_>) -> T,
    ) -> Result<T> {
        match self.io.with_raw(|raw| match raw {
            Raw::File(h) => Some(f(h.as_handle())),
            Raw::Socket(_) => None,
        }) {
            Some(Some(r)) => Ok(r),
            Some(None) => {
                Err(Error::invalid("handle", self.describe_kind(), "is a socket (use with_socket)"))
            }
            None => Err(closed()),
        }
    }
}

/// True when the socket's provider is an IFS one (`XP1_IFS_HANDLES`): a
/// layered provider that is not may complete a request at once and still
/// queue its packet, so such sockets never skip the port on success.
fn ifs_socket(s: &OwnedSocket) -> bool {
    let mut info = WSAPROTOCOL_INFOW::default();
    let mut len = std::mem::size_of::<WSAPROTOCOL_INFOW>() as i32;
    // SAFETY: the socket is open (borrowed); the option value is a
    // WSAPROTOCOL_INFOW with its exact length.
    let r = unsafe {
        getsockopt(
            s.as_raw_socket() as SOCKET,
            SOL_SOCKET,
            SO_PROTOCOL_INFOW,
            &mut info as *mut WSAPROTOCOL_INFOW as *mut u8,
            &mut len,
        )
    };
    r == 0 && info.dwServiceFlags1 & XP1_IFS_HANDLES != 0
}

/// True for a pipe of byte type: a message-type pipe can fail a short read
/// at once with `ERROR_MORE_DATA` while the kernel queues its packet, which
/// a handle that skips the port on success could not tell apart.
fn byte_pipe(h: &OwnedHandle) -> bool {
    let mut flags = 0u32;
    // SAFETY: the handle is open (borrowed); only the flags are asked for.
    let ok = unsafe {
        GetNamedPipeInfo(
            h.as_raw_handle() as HANDLE,
            &mut flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    ok != 0 && flags & PIPE_TYPE_MESSAGE == 0
}

/// What a socket is: its type, and whether it listens (`SO_ACCEPTCONN`).
fn socket_kind(s: &OwnedSocket) -> HandleKind {
    match SockRef::from(s).r#type() {
        Ok(Type::DGRAM) => HandleKind::Udp,
        Ok(Type::STREAM) => {
            let mut v: i32 = 0;
            let mut len = std::mem::size_of::<i32>() as i32;
            // SAFETY: the socket is open (borrowed); the option value is an
            // i32 with its exact length.
            let r = unsafe {
                getsockopt(
                    s.as_raw_socket() as SOCKET,
                    SOL_SOCKET,
                    SO_ACCEPTCONN,
                    &mut v as *mut i32 as *mut u8,
                    &mut len,
                )
            };
            if r == 0 && v != 0 {
                HandleKind::TcpListener
            } else {
                HandleKind::TcpStream
            }
        }
        _ => HandleKind::Stream,
    }
}

/// An owned socket, of the kind its type and `SO_ACCEPTCONN` tell.
impl From<OwnedSocket> for Handle {
    fn from(s: OwnedSocket) -> Handle {
        let kind = socket_kind(&s);
        Handle::new(Raw::Socket(s), kind)
    }
}

/// A self-relative security descriptor made by
/// `ConvertStringSecurityDescriptorToSecurityDescriptorW`, freed with
/// `LocalFree`.
struct PipeSecurity(PSECURITY_DESCRIPTOR);

impl PipeSecurity {
    /// The descriptor of a pipe server: `D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;<user>)`,
    /// a protected DACL (nothing inherited) that grants full access to
    /// LocalSystem, the Administrators and the process's user, and so
    /// nothing to Everyone, Anonymous or anyone else.
    fn new() -> io::Result<PipeSecurity> {
        let user = process_user_sid()?;
        let sddl = wide(&format!("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{user})"));
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is a NUL-terminated UTF-16 string; the function
        // allocates the descriptor (freed in Drop) and writes its address.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || sd.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(PipeSecurity(sd))
    }
}

impl Drop for PipeSecurity {
    fn drop(&mut self) {
        // SAFETY: the descriptor was allocated by the conversion above and
        // is freed once, here.
        unsafe { LocalFree(self.0) };
    }
}

/// The SID of the user the process runs as (its token's `TokenUser`), in
/// its string form (`S-1-5-21-…`).
fn process_user_sid() -> io::Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of the current process; the token handle
    // is written on success and owned below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    let token = unsafe { OwnedHandle::from_raw_handle(token as RawHandle) };
    let mut len = 0u32;
    // SAFETY: asks for the size only (no buffer); fails with
    // ERROR_INSUFFICIENT_BUFFER and sets `len`.
    unsafe {
        GetTokenInformation(token.as_raw_handle() as HANDLE, TokenUser, std::ptr::null_mut(), 0, &mut len)
    };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // 8-byte aligned, as the TOKEN_USER (two pointers' worth) needs.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: the buffer has `len` bytes, suitably aligned.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call filled the buffer with a TOKEN_USER, whose SID
    // pointer points into the same buffer.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID (in `buf`, alive); the function
    // allocates the string, freed below.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is a NUL-terminated UTF-16 string; it is read up to
    // its terminator and then freed once.
    let s = unsafe {
        let n = (0..).take_while(|&i| *text.add(i) != 0).count();
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
        LocalFree(text.cast());
        s
    };
    Ok(s)
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn pipe_name(name: &str) -> Result<Vec<u16>> {
    if name.contains('\0') {
        return Err(Error::invalid("name", name.escape_debug(), "contains a NUL character"));
    }
    let full = if name.starts_with(r"\\") { name.to_string() } else { format!(r"\\.\pipe\{name}") };
    Ok(wide(&full))
}

impl Handle {
    /// Queues on the handle's port the packet the kernel would queue for
    /// overlapped I/O on this handle whose `OVERLAPPED` is at `overlapped`
    /// (the public `windows::post_as_kernel`, a seam for the tests).
    ///
    /// # Safety
    /// `overlapped` is not the `OVERLAPPED` of a request of this handle
    /// that is in flight now: that request would complete while the OS
    /// still holds its buffer.
    pub(crate) unsafe fn post_as_kernel(&self, overlapped: usize, bytes: u32) -> Result<()> {
        let io = &self.io;
        let key = io.key.load(Ordering::Acquire);
        let port = io.port.get().and_then(Weak::upgrade);
        let Some(port) = port.filter(|_| key > 0) else {
            return Err(Error::invalid("handle", self.describe_kind(), "is not bound to a port"));
        };
        // SAFETY: the port handle is open while `port` is held; the kernel
        // only queues the pointer, and the port compares it before it reads
        // anything (the caller's promise covers the one request it may name).
        let ok = unsafe {
            windows_sys::Win32::System::IO::PostQueuedCompletionStatus(
                port.handle(),
                bytes,
                key,
                overlapped as *const OVERLAPPED,
            )
        };
        if ok == 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Disconnects the server end of a named pipe from its client
    /// (`DisconnectNamedPipe`). `InvalidArgument` on a socket or a closed
    /// handle.
    pub(crate) fn disconnect_named_pipe(&self) -> Result<()> {
        self.with_handle(|h| {
            // SAFETY: the pipe handle is open while it is lent
            // (with_handle); the call takes only the handle.
            if unsafe { DisconnectNamedPipe(h.as_raw_handle() as HANDLE) } == 0 {
                Err(Error::Io(io::Error::last_os_error()))
            } else {
                Ok(())
            }
        })?
    }
}

/// A handle over an OS file, pipe or device handle opened for overlapped
/// I/O, used as it is.
pub(crate) fn from_overlapped_handle(h: OwnedHandle) -> Handle {
    let kind = kind_of(h.as_raw_handle());
    Handle::new(Raw::File(h), kind)
}

/// The server end of the named pipe `name` (the public
/// `windows::named_pipe_server`): a protected DACL, local clients only.
pub(crate) fn named_pipe_server(name: &str, first: bool) -> Result<Handle> {
    let w = pipe_name(name)?;
    let mut mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
    if first {
        mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
    }
    let security = PipeSecurity::new().map_err(Error::Io)?;
    let attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: security.0,
        bInheritHandle: 0,
    };
    // SAFETY: `w` is a NUL-terminated UTF-16 name; the attributes and
    // the descriptor they point to live until the call returns.
    let h = unsafe {
        CreateNamedPipeW(
            w.as_ptr(),
            mode,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            65536,
            65536,
            0,
            &attributes,
        )
    };
    drop(security);
    if h == INVALID_HANDLE_VALUE {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    // SAFETY: `h` is a fresh handle that nothing else owns.
    let h = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    Ok(Handle::new(Raw::File(h), HandleKind::LocalStream))
}

/// The client end of the named pipe `name` (the public
/// `windows::named_pipe_client`), waiting for a busy pipe a few times.
pub(crate) fn named_pipe_client(name: &str) -> Result<Handle> {
    let w = pipe_name(name)?;
    let mut tries = 0;
    let h = loop {
        // SAFETY: `w` is a NUL-terminated UTF-16 name; no template.
        let h = unsafe {
            CreateFileW(
                w.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if h != INVALID_HANDLE_VALUE {
            break h;
        }
        let e = io::Error::last_os_error();
        tries += 1;
        if e.raw_os_error().map(|c| c as u32) != Some(ERROR_PIPE_BUSY) || tries > 3 {
            return Err(Error::Io(e));
        }
        // SAFETY: `w` is a NUL-terminated UTF-16 name. A failed wait
        // (timeout) is followed by one more try, which reports it.
        unsafe { WaitNamedPipeW(w.as_ptr(), 5000) };
    };
    // SAFETY: `h` is a fresh handle that nothing else owns.
    let h = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    Ok(Handle::new(Raw::File(h), HandleKind::LocalStream))
}
