//! The status a completion carries (S8): its portable part. What needs the
//! OS's codes (`ABORTED`, `from_io_error`, …) the core adds (`crate::status`).

use std::fmt;

/// The status a completion carries: success or an OS error code (S8).
///
/// On Windows the code is a Win32 error (`ERROR_OPERATION_ABORTED` = 995 for
/// an aborted request); elsewhere it is an errno (`ECANCELED` when aborted).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub(crate) u32);

impl Status {
    /// The request succeeded.
    pub const SUCCESS: Status = Status(0);

    /// A status from a raw OS error code.
    pub const fn from_raw(code: u32) -> Status {
        Status(code)
    }

    /// The raw code: 0 for success, else the OS error code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// True when the request succeeded.
    pub const fn is_success(self) -> bool {
        self.0 == 0
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
