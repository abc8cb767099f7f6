//! The readiness driver (epoll on Linux, kqueue on macOS and the BSDs,
//! through mio; S29): a handle's requests wait in its queues, one per
//! direction, and are performed, non-blocking, when a start finds nothing
//! queued before it or when the poller says the handle became ready.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use super::op::{done, failed, is_write_side, perform, sent, Completions, Event};
use crate::request::Request;
use crate::shared::HandleKind;
use crate::shared::RequestId;

/// The readiness driver's part of a handle: its requests waiting for the
/// handle to become ready, in start order.
#[derive(Default)]
pub(super) struct Streams {
    /// Stream reads, accepts and receives.
    reads: VecDeque<Request>,
    /// Stream writes, connects and sends.
    writes: VecDeque<Request>,
}

impl Streams {
    /// Starts `req` (S23, S29): tried at once when nothing is queued before
    /// it (the edge may already have passed), queued when the call would
    /// block; `Err` gives the request back, and no completion will come. A
    /// write that fails after it sent part is under way: it completes, with
    /// the error and the bytes it sent.
    pub(super) fn start(
        &mut self,
        kind: HandleKind,
        fd: &OwnedFd,
        mut req: Request,
        queue: &impl Completions,
    ) -> Result<(), (io::Error, Request)> {
        let pending = if is_write_side(req.op()) { &mut self.writes } else { &mut self.reads };
        if !pending.is_empty() {
            pending.push_back(req);
            return Ok(());
        }
        match perform(kind, fd, &mut req, Event::None) {
            Ok(Some(n)) => {
                queue.complete(done(req, n));
                Ok(())
            }
            Ok(None) => {
                pending.push_back(req);
                Ok(())
            }
            // A write that sent part before its error is under way: it
            // completes, with what it sent.
            Err(e) if sent(&req) > 0 => {
                queue.complete(failed(req, &e));
                Ok(())
            }
            Err(e) => Err((e, req)),
        }
    }

    /// The handle became ready (`error`: with an error pending on it):
    /// performs queued requests until one would block, pushing their
    /// completions (the caller holds the handle's lock).
    pub(super) fn on_ready(
        &mut self,
        kind: HandleKind,
        fd: &OwnedFd,
        queue: &impl Completions,
        readable: bool,
        writable: bool,
        error: bool,
    ) {
        let event = if error { Event::Error } else { Event::Ready };
        if readable {
            drain(kind, fd, &mut self.reads, queue, event);
        }
        if writable {
            drain(kind, fd, &mut self.writes, queue, event);
        }
    }

    /// Takes the request `id` out, if it is still waiting.
    pub(super) fn remove(&mut self, id: RequestId) -> Option<Request> {
        [&mut self.reads, &mut self.writes].into_iter().find_map(|queue| {
            let i = queue.iter().position(|r| r.id() == id)?;
            queue.remove(i)
        })
    }

    /// Every request still waiting, in start order per direction.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.reads.drain(..).chain(self.writes.drain(..))
    }
}

/// Performs the queued requests of one direction until one would block.
/// The `event` that called it vouches for the first request's readiness.
fn drain(
    kind: HandleKind,
    fd: &OwnedFd,
    pending: &mut VecDeque<Request>,
    queue: &impl Completions,
    event: Event,
) {
    let mut event = event;
    while let Some(req) = pending.front_mut() {
        let r = perform(kind, fd, req, std::mem::replace(&mut event, Event::None));
        let p = match r {
            Ok(None) => break,
            Ok(Some(n)) => done(pending.pop_front().expect("front exists"), n),
            Err(e) => failed(pending.pop_front().expect("front exists"), &e),
        };
        queue.complete(p);
    }
}
