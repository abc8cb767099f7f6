//! Winsock helpers: socket addresses in the OS layout, the `AcceptEx` and
//! `ConnectEx` extension functions, and status conversion.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::OnceLock;

use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{
    RtlNtStatusToDosError, NTSTATUS, STATUS_CONNECTION_ABORTED, STATUS_CONNECTION_REFUSED,
    STATUS_CONNECTION_RESET, STATUS_HOST_UNREACHABLE, STATUS_LOCAL_DISCONNECT, STATUS_NETWORK_UNREACHABLE,
    STATUS_REMOTE_DISCONNECT,
};
use windows_sys::Win32::Networking::WinSock::{
    WSAGetLastError, WSAIoctl, AF_INET, AF_INET6, LPFN_ACCEPTEX, LPFN_CONNECTEX,
    SIO_GET_EXTENSION_FUNCTION_POINTER, SOCKET, SOCKET_ERROR, WSAECONNABORTED, WSAECONNREFUSED,
    WSAECONNRESET, WSAEHOSTUNREACH, WSAENETUNREACH, WSAID_ACCEPTEX, WSAID_CONNECTEX,
};

use super::ADDR_WORDS;

/// Size of `SOCKADDR_IN`.
const V4_LEN: i32 = 16;
/// Size of `SOCKADDR_IN6`.
const V6_LEN: i32 = 28;
/// The address length `AcceptEx` is given for each of its two addresses.
pub(super) const ACCEPT_ADDR_LEN: u32 = V6_LEN as u32 + 16;

/// Writes `addr` in the OS layout into `out`; returns its length.
pub(super) fn encode(addr: &SocketAddr, out: &mut [u64; ADDR_WORDS]) -> i32 {
    let mut b = [0u8; ADDR_WORDS * 8];
    let len = match addr {
        SocketAddr::V4(a) => {
            b[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            V4_LEN
        }
        SocketAddr::V6(a) => {
            b[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            V6_LEN
        }
    };
    for (w, chunk) in out.iter_mut().zip(b.chunks_exact(8)) {
        let mut c = [0u8; 8];
        c.copy_from_slice(chunk);
        *w = u64::from_ne_bytes(c);
    }
    len
}

/// Reads a socket address the OS wrote into `buf` (`len` bytes).
pub(super) fn decode(buf: &[u64; ADDR_WORDS], len: i32) -> Option<SocketAddr> {
    let mut b = [0u8; ADDR_WORDS * 8];
    for (chunk, w) in b.chunks_exact_mut(8).zip(buf.iter()) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if family == AF_INET && len >= V4_LEN {
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == AF_INET6 && len >= V6_LEN {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[8..24]);
        Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(o), port, u32_at(4), u32_at(24))))
    } else {
        None
    }
}

/// The last Winsock error.
pub(super) fn last_wsa_error() -> io::Error {
    // SAFETY: WSAGetLastError only reads the calling thread's error value.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

/// True when a Winsock call's return value means failure.
pub(super) fn failed(r: i32) -> bool {
    r == SOCKET_ERROR
}

/// The error code of a completed request from the `NTSTATUS` the kernel
/// left in its `OVERLAPPED`. For sockets, the statuses of common network
/// failures map to their Winsock codes, as `WSAGetOverlappedResult` does;
/// everything else goes through `RtlNtStatusToDosError`.
pub(super) fn error_of(status: NTSTATUS, socket: bool) -> u32 {
    if status >= 0 {
        // Success and informational/warning statuses carry data.
        return 0;
    }
    if socket {
        let wsa = match status {
            STATUS_CONNECTION_RESET | STATUS_REMOTE_DISCONNECT => Some(WSAECONNRESET),
            STATUS_CONNECTION_REFUSED => Some(WSAECONNREFUSED),
            STATUS_CONNECTION_ABORTED | STATUS_LOCAL_DISCONNECT => Some(WSAECONNABORTED),
            STATUS_NETWORK_UNREACHABLE => Some(WSAENETUNREACH),
            STATUS_HOST_UNREACHABLE => Some(WSAEHOSTUNREACH),
            _ => None,
        };
        if let Some(code) = wsa {
            return code as u32;
        }
    }
    // SAFETY: RtlNtStatusToDosError is a pure table lookup (it also sets
    // the thread's last-status value, which nothing here relies on).
    let code = unsafe { RtlNtStatusToDosError(status) };
    if code == 0 {
        super::ERROR_GEN_FAILURE
    } else {
        code
    }
}

/// The extension functions, loaded once through
/// `WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)`.
struct Ext {
    accept: LPFN_ACCEPTEX,
    connect: LPFN_CONNECTEX,
}

static EXT: OnceLock<Ext> = OnceLock::new();

fn load<F: Default>(s: SOCKET, guid: &GUID) -> io::Result<F> {
    let mut f = F::default();
    let mut bytes = 0u32;
    // SAFETY: `s` is an open socket; the in-buffer is a GUID and the
    // out-buffer an `Option<fn>` (one pointer, null when None), both with
    // their exact sizes; the call is synchronous (no OVERLAPPED).
    let r = unsafe {
        WSAIoctl(
            s,
            SIO_GET_EXTENSION_FUNCTION_POINTER,
            guid as *const GUID as *const _,
            std::mem::size_of::<GUID>() as u32,
            &mut f as *mut F as *mut _,
            std::mem::size_of::<F>() as u32,
            &mut bytes,
            std::ptr::null_mut(),
            None,
        )
    };
    if failed(r) {
        return Err(last_wsa_error());
    }
    Ok(f)
}

fn ext(s: SOCKET) -> io::Result<&'static Ext> {
    if let Some(e) = EXT.get() {
        return Ok(e);
    }
    let accept: LPFN_ACCEPTEX = load(s, &WSAID_ACCEPTEX)?;
    let connect: LPFN_CONNECTEX = load(s, &WSAID_CONNECTEX)?;
    Ok(EXT.get_or_init(|| Ext { accept, connect }))
}

fn missing(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("the socket provider has no {name}"))
}

/// `AcceptEx`, loaded on first use with the listener `s`; never `None`.
pub(super) fn accept_ex(s: SOCKET) -> io::Result<LPFN_ACCEPTEX> {
    ext(s)?.accept.map(Some).ok_or_else(|| missing("AcceptEx"))
}

/// `ConnectEx`, loaded on first use with the socket `s`; never `None`.
pub(super) fn connect_ex(s: SOCKET) -> io::Result<LPFN_CONNECTEX> {
    ext(s)?.connect.map(Some).ok_or_else(|| missing("ConnectEx"))
}
