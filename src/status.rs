//! The status a completion carries (S8).

use std::fmt;

use crate::sys::{self, PortDriver};

/// The target's port, whose driver knows the OS's codes.
type Os = sys::Port;

/// The status a completion carries: success or an OS error code (S8).
///
/// On Windows the code is a Win32 error (`ERROR_OPERATION_ABORTED` = 995 for
/// an aborted request); elsewhere it is an errno (`ECANCELED` when aborted).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(u32);

impl Status {
    /// The request succeeded.
    pub const SUCCESS: Status = Status(0);

    /// The status of a cancelled or aborted request (S24).
    pub const ABORTED: Status = Status(Os::ABORTED_CODE);

    /// A status from a raw OS error code.
    pub const fn from_raw(code: u32) -> Status {
        Status(code)
    }

    /// The status of an I/O error: its OS code, or a generic code when the
    /// error carries none.
    pub fn from_io_error(e: &std::io::Error) -> Status {
        Status(Os::status_code_of(e))
    }

    /// The raw code: 0 for success, else the OS error code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// True when the request succeeded.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// True when the request was cancelled or aborted by a close.
    pub const fn is_aborted(self) -> bool {
        self.0 == Os::ABORTED_CODE
    }

    /// True when the request failed for lack of a resource (S37): no
    /// descriptor left (`EMFILE`, `ENFILE`; `WSAEMFILE`), no buffer space
    /// (`ENOBUFS`; `WSAENOBUFS`) or no memory. Such a request is worth
    /// starting again once something was freed (a connection closed), not
    /// at once.
    pub fn is_out_of_resources(self) -> bool {
        Os::OUT_OF_RESOURCES.contains(&self.0)
    }

    /// `Ok(bytes)` on success, else the OS error.
    pub fn result(self, bytes: usize) -> std::io::Result<usize> {
        match self.0 {
            0 => Ok(bytes),
            code => Err(std::io::Error::from_raw_os_error(code as i32)),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("Status(SUCCESS)")
        } else {
            let e = std::io::Error::from_raw_os_error(self.0 as i32);
            write!(f, "Status({}: {e})", self.0)
        }
    }
}
