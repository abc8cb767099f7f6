//! The file pool driver (S29): positional requests of regular files on a
//! readiness port, and the stream requests of a device epoll cannot watch
//! (S38: `/dev/zero`, `/dev/null`, always ready), performed blocking by
//! the port's pool threads. Each request is one work item in the port's
//! queue; the thread that takes the item performs the handle's oldest
//! request.

use std::collections::VecDeque;

use super::handle::{Driver, Io};
use super::op::{aborted, done, failed, perform_file};
use super::port::{Item, PortQueue};
use crate::port::Packet;
use crate::request::{Request, RequestId};
use crate::sync::Arc;

/// The file pool's part of a handle: its requests not yet performed.
#[derive(Default)]
pub(super) struct Work {
    queue: VecDeque<Request>,
}

impl Work {
    /// Queues `req` for a pool thread (S23: its completion comes through
    /// the port).
    pub(super) fn start(&mut self, io: &Arc<Io>, req: Request, queue: &PortQueue) {
        self.queue.push_back(req);
        queue.push(Item::Work(io.clone()));
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

/// Performs the oldest request of `io` on the calling pool thread (S29);
/// `None` when it was cancelled meanwhile. After the port began closing,
/// it completes aborted instead (S11).
pub(super) fn perform(io: &Io, port_closing: bool) -> Option<Packet> {
    let mut req = match &mut io.state.lock().driver {
        Driver::Pool(w) => w.queue.pop_front()?,
        _ => return None,
    };
    if port_closing {
        return Some(aborted(req));
    }
    let r = io.with_raw(|fd| perform_file(fd, &mut req));
    Some(match r {
        None => aborted(req),
        Some(Ok(n)) => done(req, n),
        Some(Err(e)) => failed(req, &e),
    })
}
