//! Winsock helpers: socket addresses in the OS layout, the `AcceptEx` and
//! `ConnectEx` extension functions, and status conversion.

use crate::sync::OnceLock;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{
    RtlNtStatusToDosError, NTSTATUS, STATUS_ACCESS_DENIED, STATUS_ACCESS_VIOLATION,
    STATUS_ADDRESS_ALREADY_EXISTS, STATUS_BAD_NETWORK_PATH, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL,
    STATUS_CANCELLED, STATUS_COMMITMENT_LIMIT, STATUS_CONFLICTING_ADDRESSES, STATUS_CONNECTION_ABORTED,
    STATUS_CONNECTION_DISCONNECTED, STATUS_CONNECTION_REFUSED, STATUS_CONNECTION_RESET,
    STATUS_DEVICE_NOT_READY, STATUS_GRACEFUL_DISCONNECT, STATUS_HOPLIMIT_EXCEEDED, STATUS_HOST_UNREACHABLE,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_ADDRESS, STATUS_INVALID_ADDRESS_COMPONENT,
    STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_CONNECTION, STATUS_INVALID_HANDLE,
    STATUS_INVALID_NETWORK_RESPONSE, STATUS_IO_TIMEOUT, STATUS_LINK_FAILED, STATUS_LINK_TIMEOUT,
    STATUS_LOCAL_DISCONNECT, STATUS_NETWORK_BUSY, STATUS_NETWORK_UNREACHABLE, STATUS_NOT_IMPLEMENTED,
    STATUS_NOT_SUPPORTED, STATUS_NO_MEMORY, STATUS_NO_SUCH_DEVICE, STATUS_NO_SUCH_FILE,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_OBJECT_PATH_NOT_FOUND, STATUS_OBJECT_TYPE_MISMATCH,
    STATUS_PAGEFILE_QUOTA, STATUS_PIPE_DISCONNECTED, STATUS_PORT_UNREACHABLE, STATUS_PROTOCOL_UNREACHABLE,
    STATUS_QUOTA_EXCEEDED, STATUS_REMOTE_DISCONNECT, STATUS_REMOTE_NOT_LISTENING, STATUS_REMOTE_RESOURCES,
    STATUS_REQUEST_ABORTED, STATUS_REQUEST_NOT_ACCEPTED, STATUS_SHARING_VIOLATION, STATUS_TIMEOUT,
    STATUS_TOO_MANY_ADDRESSES, STATUS_TOO_MANY_PAGING_FILES, STATUS_TRANSACTION_ABORTED,
    STATUS_UNEXPECTED_NETWORK_ERROR, STATUS_WORKING_SET_QUOTA,
};
use windows_sys::Win32::Networking::WinSock::{
    WSAGetLastError, WSAIoctl, AF_INET, AF_INET6, LPFN_ACCEPTEX, LPFN_CONNECTEX,
    SIO_GET_EXTENSION_FUNCTION_POINTER, SOCKET, SOCKET_ERROR, WSAEACCES, WSAEADDRINUSE, WSAEADDRNOTAVAIL,
    WSAECONNABORTED, WSAECONNREFUSED, WSAECONNRESET, WSAEDISCON, WSAEFAULT, WSAEHOSTUNREACH, WSAEMSGSIZE,
    WSAENETDOWN, WSAENETUNREACH, WSAENOBUFS, WSAENOTCONN, WSAENOTSOCK, WSAEOPNOTSUPP, WSAESHUTDOWN,
    WSAETIMEDOUT, WSAEWOULDBLOCK, WSAID_ACCEPTEX, WSAID_CONNECTEX, WSA_OPERATION_ABORTED,
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

/// Winsock's code for each `NTSTATUS` a socket request can end with, as
/// the Windows socket layer (msafd) reports them to overlapped callers
/// through `WSAGetOverlappedResult`; the same table libuv and Wine use.
const WSA_OF_NT: &[(NTSTATUS, i32)] = &[
    (STATUS_INVALID_HANDLE, WSAENOTSOCK),
    (STATUS_OBJECT_TYPE_MISMATCH, WSAENOTSOCK),
    (STATUS_INSUFFICIENT_RESOURCES, WSAENOBUFS),
    (STATUS_PAGEFILE_QUOTA, WSAENOBUFS),
    (STATUS_COMMITMENT_LIMIT, WSAENOBUFS),
    (STATUS_WORKING_SET_QUOTA, WSAENOBUFS),
    (STATUS_NO_MEMORY, WSAENOBUFS),
    (STATUS_QUOTA_EXCEEDED, WSAENOBUFS),
    (STATUS_TOO_MANY_PAGING_FILES, WSAENOBUFS),
    (STATUS_REMOTE_RESOURCES, WSAENOBUFS),
    (STATUS_CONFLICTING_ADDRESSES, WSAEADDRINUSE),
    (STATUS_TOO_MANY_ADDRESSES, WSAEADDRINUSE),
    (STATUS_SHARING_VIOLATION, WSAEADDRINUSE),
    (STATUS_ADDRESS_ALREADY_EXISTS, WSAEADDRINUSE),
    (STATUS_LINK_TIMEOUT, WSAETIMEDOUT),
    (STATUS_IO_TIMEOUT, WSAETIMEDOUT),
    (STATUS_TIMEOUT, WSAETIMEDOUT),
    (STATUS_GRACEFUL_DISCONNECT, WSAEDISCON),
    (STATUS_REMOTE_DISCONNECT, WSAECONNRESET),
    (STATUS_CONNECTION_RESET, WSAECONNRESET),
    (STATUS_LINK_FAILED, WSAECONNRESET),
    (STATUS_CONNECTION_DISCONNECTED, WSAECONNRESET),
    (STATUS_PORT_UNREACHABLE, WSAECONNRESET),
    (STATUS_HOPLIMIT_EXCEEDED, WSAECONNRESET),
    (STATUS_LOCAL_DISCONNECT, WSAECONNABORTED),
    (STATUS_TRANSACTION_ABORTED, WSAECONNABORTED),
    (STATUS_CONNECTION_ABORTED, WSAECONNABORTED),
    (STATUS_BAD_NETWORK_PATH, WSAENETUNREACH),
    (STATUS_NETWORK_UNREACHABLE, WSAENETUNREACH),
    (STATUS_PROTOCOL_UNREACHABLE, WSAENETUNREACH),
    (STATUS_HOST_UNREACHABLE, WSAEHOSTUNREACH),
    (STATUS_CANCELLED, WSA_OPERATION_ABORTED),
    (STATUS_REQUEST_ABORTED, WSA_OPERATION_ABORTED),
    (STATUS_BUFFER_OVERFLOW, WSAEMSGSIZE),
    (STATUS_INVALID_BUFFER_SIZE, WSAEMSGSIZE),
    (STATUS_BUFFER_TOO_SMALL, WSAEFAULT),
    (STATUS_ACCESS_VIOLATION, WSAEFAULT),
    (STATUS_DEVICE_NOT_READY, WSAEWOULDBLOCK),
    (STATUS_REQUEST_NOT_ACCEPTED, WSAEWOULDBLOCK),
    (STATUS_INVALID_NETWORK_RESPONSE, WSAENETDOWN),
    (STATUS_NETWORK_BUSY, WSAENETDOWN),
    (STATUS_NO_SUCH_DEVICE, WSAENETDOWN),
    (STATUS_NO_SUCH_FILE, WSAENETDOWN),
    (STATUS_OBJECT_PATH_NOT_FOUND, WSAENETDOWN),
    (STATUS_OBJECT_NAME_NOT_FOUND, WSAENETDOWN),
    (STATUS_UNEXPECTED_NETWORK_ERROR, WSAENETDOWN),
    (STATUS_INVALID_CONNECTION, WSAENOTCONN),
    (STATUS_REMOTE_NOT_LISTENING, WSAECONNREFUSED),
    (STATUS_CONNECTION_REFUSED, WSAECONNREFUSED),
    (STATUS_PIPE_DISCONNECTED, WSAESHUTDOWN),
    (STATUS_INVALID_ADDRESS, WSAEADDRNOTAVAIL),
    (STATUS_INVALID_ADDRESS_COMPONENT, WSAEADDRNOTAVAIL),
    (STATUS_NOT_SUPPORTED, WSAEOPNOTSUPP),
    (STATUS_NOT_IMPLEMENTED, WSAEOPNOTSUPP),
    (STATUS_ACCESS_DENIED, WSAEACCES),
];

/// The error code of a completed request from the `NTSTATUS` its packet
/// carried: 0 when the request transferred data, else a Win32 code, or for
/// sockets the Winsock code of [`WSA_OF_NT`].
///
/// Success and informational statuses (severity 0 and 1) are successes.
/// Of the warnings (severity 2, negative as an `i32`), one carries data
/// the caller wants: `STATUS_BUFFER_OVERFLOW`, a datagram or message larger
/// than the buffer. It is a success with the bytes that fit (S27: a
/// truncated datagram completes as on Unix, with the bytes that fit and
/// its source address). Every other warning or error maps to its code.
pub(super) fn error_of(status: NTSTATUS, socket: bool) -> u32 {
    let severity = (status as u32) >> 30;
    if severity < 2 || status == STATUS_BUFFER_OVERFLOW {
        return 0;
    }
    if socket {
        if let Some(&(_, wsa)) = WSA_OF_NT.iter().find(|&&(nt, _)| nt == status) {
            return wsa as u32;
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

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::Foundation::{ERROR_OPERATION_ABORTED, STATUS_NO_MORE_FILES, STATUS_SUCCESS};

    #[test]
    fn s27_socket_statuses_map_to_the_winsock_codes_overlapped_callers_see() {
        let cases: &[(NTSTATUS, i32)] = &[
            (STATUS_IO_TIMEOUT, WSAETIMEDOUT),
            (STATUS_PORT_UNREACHABLE, WSAECONNRESET),
            (STATUS_INVALID_CONNECTION, WSAENOTCONN),
            (STATUS_CONNECTION_RESET, WSAECONNRESET),
            (STATUS_CONNECTION_REFUSED, WSAECONNREFUSED),
            (STATUS_REMOTE_NOT_LISTENING, WSAECONNREFUSED),
            (STATUS_HOST_UNREACHABLE, WSAEHOSTUNREACH),
            (STATUS_INSUFFICIENT_RESOURCES, WSAENOBUFS),
            (STATUS_ADDRESS_ALREADY_EXISTS, WSAEADDRINUSE),
            (STATUS_LOCAL_DISCONNECT, WSAECONNABORTED),
        ];
        for &(nt, wsa) in cases {
            assert_eq!(error_of(nt, true), wsa as u32, "NTSTATUS {:#x}", nt as u32);
        }
        // Each status is in the table once.
        for (i, (nt, _)) in WSA_OF_NT.iter().enumerate() {
            assert!(!WSA_OF_NT[i + 1..].iter().any(|(o, _)| o == nt), "{:#x} twice", *nt as u32);
        }
        // A cancel is ERROR_OPERATION_ABORTED for every kind of handle (S24).
        assert_eq!(error_of(STATUS_CANCELLED, true), ERROR_OPERATION_ABORTED);
        assert_eq!(error_of(STATUS_CANCELLED, false), ERROR_OPERATION_ABORTED);
    }

    #[test]
    fn s27_success_and_a_truncated_datagram_carry_data_other_warnings_do_not() {
        assert_eq!(error_of(STATUS_SUCCESS, true), 0);
        // STATUS_BUFFER_OVERFLOW is a warning (0x80000005): negative as an
        // i32, and a success with the bytes that fit.
        const { assert!(STATUS_BUFFER_OVERFLOW < 0) };
        assert_eq!(error_of(STATUS_BUFFER_OVERFLOW, true), 0);
        assert_eq!(error_of(STATUS_BUFFER_OVERFLOW, false), 0);
        // Another warning is not a success.
        assert_ne!(error_of(STATUS_NO_MORE_FILES, false), 0);
        // Files and pipes go through RtlNtStatusToDosError: the timeout of a
        // pipe is ERROR_SEM_TIMEOUT (121), not a Winsock code.
        assert_eq!(error_of(STATUS_IO_TIMEOUT, false), 121);
    }
}
