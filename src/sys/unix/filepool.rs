//! The file pool driver (S29): positional requests of regular files on a
//! readiness port, and the stream requests of a device epoll cannot watch
//! (S38: `/dev/zero`, `/dev/null`, always ready), performed blocking by
//! the port's pool threads. Each request is one work item in the port's
//! queue; the thread that takes the item performs the handle's oldest
//! request.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::op::{aborted, done, failed, perform_file};
use crate::request::Packet;
use crate::request::Request;
use crate::shared::RequestId;

/// The file pool's part of a handle: its requests not yet performed.
#[derive(Default)]
pub(super) struct Work {
    queue: VecDeque<Request>,
}

impl Work {
    /// Queues `req` for a pool thread; the caller puts a work item naming
    /// the handle on the port's queue (S23: its completion comes through
    /// the port).
    pub(super) fn start(&mut self, req: Request) {
        self.queue.push_back(req);
    }

    /// The oldest request not performed yet, for the thread that took a
    /// work item of the handle.
    pub(super) fn next(&mut self) -> Option<Request> {
        self.queue.pop_front()
    }

    /// Takes the request `id` out, if it was not performed yet.
    pub(super) fn remove(&mut self, id: RequestId) -> Option<Request> {
        let i = self.queue.iter().position(|r| r.id() == id)?;
        self.queue.remove(i)
    }

    /// Every request not performed yet, in start order.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.queue.drain(..)
    }
}

/// Performs `req` on `fd`, blocking, on the calling pool thread (S29); a
/// handle closed meanwhile (`None`) aborts it.
pub(super) fn perform(fd: Option<&OwnedFd>, mut req: Request) -> Packet {
    let Some(fd) = fd else { return aborted(req) };
    match perform_file(fd, &mut req) {
        Ok(n) => done(req, n),
        Err(e) => failed(req, &e),
    }
}
