//! What a port hands out: a request's completion, or a user post.

use super::Request;
use crate::shared::status::Status;

/// One completion packet (S8): status, bytes transferred, the completion
/// key and the request, if the packet carries one.
#[derive(Debug)]
#[non_exhaustive]
pub struct Packet {
    /// Success or the OS error of the request.
    pub status: Status,
    /// Bytes transferred (for a user post: the value posted).
    pub bytes: usize,
    /// The completion key (for a user post: the value posted).
    pub key: usize,
    /// The request, handed back with its buffer.
    pub request: Option<Request>,
}
