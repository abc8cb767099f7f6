//! The runtime's sink and the dispatch of a packet to its target.

use crate::pool::Dispatch;
use crate::port::Packet;
use crate::request::Request;
use crate::sink::CompletionSink;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, RwLock};

/// The runtime's sink. Workers read it through a per-thread cache keyed by
/// (id, version), so running a completion takes no lock and touches no
/// shared reference count.
pub(super) struct Sink {
    pub(super) id: u64,
    pub(super) version: AtomicU64,
    pub(super) is_set: AtomicBool,
    pub(super) slot: RwLock<Option<Arc<dyn CompletionSink>>>,
}

pub(super) type SinkCell = Arc<Sink>;

pub(super) static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

type CachedSink = Option<(u64, u64, Arc<dyn CompletionSink>)>;

thread_local! {
    static SINK_CACHE: std::cell::RefCell<CachedSink> = const { std::cell::RefCell::new(None) };
}

impl Sink {
    pub(super) fn set(&self, sink: Arc<dyn CompletionSink>) {
        let old = {
            let mut slot = self.slot.write();
            let old = slot.replace(sink);
            self.version.fetch_add(1, Ordering::AcqRel);
            self.is_set.store(true, Ordering::Release);
            old
        };
        // The old sink is user code: dropped with no lock held, so its
        // `Drop` may call back into the runtime (even set another sink).
        drop(old);
    }

    /// Hands the completion to the sink; false when none is set. The call
    /// goes through a shared borrow of the thread's cache: no lock, no
    /// reference count.
    pub(super) fn deliver(&self, status: crate::Status, bytes: usize, req: Request) -> bool {
        let version = self.version.load(Ordering::Acquire);
        SINK_CACHE.with(|cache| {
            let fresh = matches!(&*cache.borrow(), Some((id, v, _)) if *id == self.id && *v == version);
            if !fresh {
                let Some(s) = self.slot.read().clone() else { return false };
                match cache.try_borrow_mut() {
                    Ok(mut m) => {
                        // The sink this replaces is dropped after the
                        // borrow ends (its `Drop` is user code).
                        let old = m.replace((self.id, version, s));
                        drop(m);
                        drop(old);
                    }
                    Err(_) => {
                        // Called from inside a sink on this thread: go direct.
                        s.on_complete(status, bytes, req);
                        return true;
                    }
                }
            }
            match &*cache.borrow() {
                Some((_, _, s)) => {
                    s.on_complete(status, bytes, req);
                    true
                }
                None => false,
            }
        })
    }
}

/// Runs one packet: the request's own target, else the sink. While a
/// target runs, a task of `sched` that it wakes may run at once on this
/// thread (see `task::Delivering`).
pub(super) fn dispatcher(sink: SinkCell, sched: Arc<crate::task::Scheduler>) -> Box<Dispatch> {
    Box::new(move |p: Packet| {
        let Some(mut req) = p.request else { return false };
        // Moved out, not cloned: no shared reference count is touched.
        if let Some(t) = req.header_mut().target.take() {
            let _delivering = crate::task::Delivering::new(&sched);
            t.on_complete(p.status, p.bytes, req);
            return true;
        }
        sink.deliver(p.status, p.bytes, req)
    })
}

