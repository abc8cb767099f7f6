//! The crate's one error type (S4-S6), defined with the types the core and
//! the backends share (`shared::error`), and the error of a request that
//! could not start.

use std::fmt;
use std::io;

pub use crate::shared::error::*;
use crate::sys::{self, PortDriver};

impl Error {
    /// True for the "not found" of a cancel that found nothing (S25):
    /// `ENOENT` on Unix, `ERROR_NOT_FOUND` on Windows.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Io(e) => {
                e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == <sys::Port as PortDriver>::not_found().raw_os_error()
            }
            _ => false,
        }
    }

}

/// The error of a request that could not be started: the reason, and the
/// buffer handed back to the caller (S23, S26), as the type it was given:
/// a typed start ([`Handle::read`](crate::Handle::read), ...) hands back
/// the caller's own buffer type, [`Handle::request`](crate::Handle::request)
/// the [`Buffer`](crate::Buffer) it was given, an accept or a connect `()`.
///
/// A request either starts (and later completes exactly once) or fails with
/// this error and produces no completion; never both, never neither.
#[non_exhaustive]
pub struct StartError<B = crate::Buffer> {
    /// Why the request was not started.
    pub error: Error,
    /// The buffer the caller gave, returned untouched.
    pub buffer: B,
    /// The request that was refused, when it had been made (a refusal by
    /// the host's initializer or the backend); `None` when the start was
    /// refused before (unbound handle, wrong op, a full port).
    pub request: Option<crate::RequestId>,
    /// The user data the request carried (0 when it was not made).
    pub user_data: usize,
}

// S4: both errors go into `Box<dyn Error + Send + Sync>` and `anyhow`:
// `Send + Sync + 'static`, as the buffer a `StartError` hands back is
// (`IoBuf: Send + Sync`). This fails to compile if one stops being so.
const _: () = {
    const fn send_sync<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync::<Error>();
    send_sync::<StartError>();
    send_sync::<StartError<Vec<u8>>>();
};

impl StartError {
    pub(crate) fn new(error: Error, buffer: crate::Buffer) -> StartError {
        StartError { error, buffer, request: None, user_data: 0 }
    }

    /// The refusal of a request that was made: its id and user data are
    /// kept, its buffer handed back.
    pub(crate) fn of(error: Error, request: crate::Request) -> StartError {
        let (id, user_data) = (request.id(), request.user_data());
        StartError { error, buffer: request.into_buffer(), request: Some(id), user_data }
    }
}

impl<B> StartError<B> {
    /// The same error with the buffer turned into another type.
    pub fn map_buffer<C>(self, f: impl FnOnce(B) -> C) -> StartError<C> {
        StartError { error: self.error, buffer: f(self.buffer), request: self.request, user_data: self.user_data }
    }
}

impl<B> fmt::Debug for StartError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartError")
            .field("error", &self.error)
            .field("buffer", &std::any::type_name::<B>())
            .field("request", &self.request)
            .field("user_data", &self.user_data)
            .finish()
    }
}

impl<B> fmt::Display for StartError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not started: {}", self.error)
    }
}

impl<B> std::error::Error for StartError<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<B> From<StartError<B>> for Error {
    fn from(e: StartError<B>) -> Error {
        e.error
    }
}

impl<B> From<StartError<B>> for io::Error {
    fn from(e: StartError<B>) -> io::Error {
        e.error.into()
    }
}
