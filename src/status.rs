//! The status a completion carries (S8): defined with the types the core
//! and the backends share (`shared::status`); what needs the OS's codes is
//! here, asked of the backend.

use crate::sys::{self, PortDriver};

pub use crate::shared::status::Status;

/// The target's port, whose driver knows the OS's codes.
type Os = sys::Port;

impl Status {
    /// The status of a cancelled or aborted request (S24).
    pub const ABORTED: Status = Status(Os::ABORTED_CODE);

    /// The status of an I/O error: its OS code, or a generic code when the
    /// error carries none.
    pub fn from_io_error(e: &std::io::Error) -> Status {
        Status(Os::status_code_of(e))
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
}
