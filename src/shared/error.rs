//! The crate's one error type (S4-S6), which the core and the backends
//! both return. Part of the leaf: it imports nothing of the crate.

use std::fmt;
use std::io;

/// Result alias used by every fallible call in the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the crate returns.
///
/// Each variant stands for one HRESULT of the CLR hosting interface, and
/// [`Error::hresult`] gives that exact code so a hosting layer can hand it on
/// unchanged. The conversion into [`std::io::Error`] keeps `?` working in
/// ordinary I/O code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
///
/// ```
/// use iocompletion::{Error, Runtime, E_INVALIDARG};
///
/// let e = Runtime::builder().min_threads(8).max_threads(2).build().unwrap_err();
/// assert!(matches!(e, Error::InvalidArgument(_)));
/// assert_eq!(e.hresult(), E_INVALIDARG);          // the hosting interface's code
/// let io: std::io::Error = e.into();               // `?` works in I/O code
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// ```
pub enum Error {
    /// `HOST_E_CLRNOTAVAILABLE`: the manager is shut down or was poisoned by
    /// an earlier [`Error::Fatal`] (S5).
    #[error("the completion manager is not available (shut down or poisoned)")]
    Unavailable,
    /// `HOST_E_TIMEOUT`: a wait ran out of time.
    #[error("the call timed out")]
    Timeout,
    /// `HOST_E_NOT_OWNER`: the caller does not own the object.
    #[error("the caller does not own the object: {0}")]
    NotOwner(String),
    /// `HOST_E_ABANDONED`: the port was closed while the caller waited on it.
    #[error("the wait was abandoned: the port was closed")]
    Abandoned,
    /// `E_FAIL`: a catastrophic failure. The manager that returned it is
    /// unusable afterwards: every later call returns [`Error::Unavailable`].
    #[error("catastrophic failure: {0}")]
    Fatal(String),
    /// `E_OUTOFMEMORY`: an allocation failed.
    #[error("out of memory")]
    OutOfMemory,
    /// `E_INVALIDARG`: an argument was rejected; the message names it and its value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `E_NOTIMPL`: the operation is not supported on this handle or backend.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// `HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_QUOTA)`: the port already holds
    /// as many requests and packets as its bound allows (S35); the refused
    /// request is handed back with its buffer. Retry once completions were
    /// taken.
    #[error("the port is at its bound of {bound} requests and packets held")]
    Full {
        /// The bound in force.
        bound: usize,
    },
    /// An operating-system error (`HRESULT_FROM_WIN32` / errno).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `HOST_E_CLRNOTAVAILABLE`
pub const HOST_E_CLRNOTAVAILABLE: u32 = 0x8013_1023;
/// `HOST_E_TIMEOUT`
pub const HOST_E_TIMEOUT: u32 = 0x8013_1024;
/// `HOST_E_NOT_OWNER`
pub const HOST_E_NOT_OWNER: u32 = 0x8013_1025;
/// `HOST_E_ABANDONED`
pub const HOST_E_ABANDONED: u32 = 0x8013_1026;
/// `E_FAIL`
pub const E_FAIL: u32 = 0x8000_4005;
/// `E_OUTOFMEMORY`
pub const E_OUTOFMEMORY: u32 = 0x8007_000E;
/// `E_INVALIDARG`
pub const E_INVALIDARG: u32 = 0x8007_0057;
/// `E_NOTIMPL`
pub const E_NOTIMPL: u32 = 0x8000_4001;
/// `HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_QUOTA)`, for [`Error::Full`]
pub const E_NOT_ENOUGH_QUOTA: u32 = 0x8007_0718;

impl Error {
    /// Builds an [`Error::InvalidArgument`] naming the argument and its value.
    pub(crate) fn invalid(arg: &str, value: impl fmt::Display, why: &str) -> Error {
        Error::InvalidArgument(format!("{arg} = {value}: {why}"))
    }

    /// The HRESULT this error stands for.
    ///
    /// OS errors map like `HRESULT_FROM_WIN32`: `0x8007_0000 | (code & 0xFFFF)`
    /// with the OS error code (a Win32 error on Windows, an errno elsewhere);
    /// an I/O error with no OS code maps to `E_FAIL`.
    pub fn hresult(&self) -> u32 {
        match self {
            Error::Unavailable => HOST_E_CLRNOTAVAILABLE,
            Error::Timeout => HOST_E_TIMEOUT,
            Error::NotOwner(_) => HOST_E_NOT_OWNER,
            Error::Abandoned => HOST_E_ABANDONED,
            Error::Fatal(_) => E_FAIL,
            Error::OutOfMemory => E_OUTOFMEMORY,
            Error::InvalidArgument(_) => E_INVALIDARG,
            Error::NotImplemented(_) => E_NOTIMPL,
            Error::Full { .. } => E_NOT_ENOUGH_QUOTA,
            Error::Io(e) => match e.raw_os_error() {
                Some(0) => 0,
                Some(code) => 0x8007_0000 | (code as u32 & 0xFFFF),
                None => E_FAIL,
            },
        }
    }

    /// True for [`Error::Fatal`], the one error that poisons a manager.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal(_))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        use io::ErrorKind as K;
        let kind = match &e {
            Error::Io(_) => {
                let Error::Io(inner) = e else { unreachable!() };
                return inner;
            }
            Error::Unavailable => K::NotConnected,
            Error::Timeout => K::TimedOut,
            Error::NotOwner(_) => K::PermissionDenied,
            Error::Abandoned => K::ConnectionAborted,
            Error::Fatal(_) => K::Other,
            Error::OutOfMemory => K::OutOfMemory,
            Error::InvalidArgument(_) => K::InvalidInput,
            Error::NotImplemented(_) => K::Unsupported,
            // A full bounded port is no `EAGAIN`: nothing wakes the caller
            // when room frees, and code that retries on `WouldBlock` would
            // spin. `Other`, with the `Error::Full` inside (`get_ref`).
            Error::Full { .. } => K::Other,
        };
        io::Error::new(kind, e)
    }
}
