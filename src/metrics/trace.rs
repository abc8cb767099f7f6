//! The `tracing` feature's spans and events, at levels a production
//! service can leave on: nothing per request above `debug`, and `info`
//! only for what happens once per port or thread. Without the feature
//! each of these is an empty function.
//!
//! | what | level | target |
//! | --- | --- | --- |
//! | a pool thread's lifetime (span `worker`, field `thread`) | info | `iocompletion::pool` |
//! | the pool starts a thread (`reason`) | debug | `iocompletion::pool` |
//! | the pool loses a thread (`reason`) | debug | `iocompletion::pool` |
//! | a start or post refused at a port's bound (S35) | debug | `iocompletion::port` |
//! | a port falls back from io_uring to epoll (S36) | info | `iocompletion::port` |
//! | a request runs out of descriptors, buffers or memory (S37) | warn | `iocompletion::io` |
//!
//! A subscriber is user code: one that panics must not take a pool thread
//! or a lock of the crate with it (a worker lost outside its callback would
//! leave a shutdown waiting for it), so each call into it is guarded and
//! its panic dropped.

#[cfg(feature = "tracing")]
mod on {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use crate::metrics::{Growth, Shrink};

    /// Runs a call into the subscriber, dropping its panic.
    fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
        catch_unwind(AssertUnwindSafe(f)).ok()
    }

    pub(crate) struct Worker(Option<tracing::span::EnteredSpan>);

    impl Drop for Worker {
        fn drop(&mut self) {
            // Leaving the span calls the subscriber too.
            let span = self.0.take();
            guarded(move || drop(span));
        }
    }

    pub(crate) fn worker() -> Worker {
        Worker(guarded(|| {
            let t = std::thread::current();
            tracing::info_span!(target: "iocompletion::pool", "worker", thread = t.name().unwrap_or("")).entered()
        }))
    }

    pub(crate) fn grew(why: Growth) {
        guarded(|| tracing::debug!(target: "iocompletion::pool", reason = ?why, "pool thread starting"));
    }

    pub(crate) fn shrank(why: Shrink) {
        guarded(|| tracing::debug!(target: "iocompletion::pool", reason = ?why, "pool thread leaving"));
    }

    pub(crate) fn refused(bound: usize) {
        guarded(|| tracing::debug!(target: "iocompletion::port", bound, "refused at the port's bound"));
    }

    pub(crate) fn port_created(port: &crate::port::Port) {
        if let Some(why) = port.driver().fallback {
            guarded(|| {
                tracing::info!(target: "iocompletion::port", port = port.id(), driver = %port.driver(), reason = %why, "driver fallback")
            });
        }
    }

    pub(crate) fn out_of_resources(op: crate::op::Op, code: u32) {
        guarded(|| {
            tracing::warn!(
                target: "iocompletion::io",
                ?op,
                error = %std::io::Error::from_raw_os_error(code as i32),
                "request ran out of resources (S37)"
            )
        });
    }
}

#[cfg(not(feature = "tracing"))]
#[allow(dead_code)]
mod on {
    use crate::metrics::{Growth, Shrink};

    pub(crate) struct Worker;

    #[inline(always)]
    pub(crate) fn worker() -> Worker {
        Worker
    }

    #[inline(always)]
    pub(crate) fn grew(_: Growth) {}

    #[inline(always)]
    pub(crate) fn shrank(_: Shrink) {}

    #[inline(always)]
    pub(crate) fn refused(_: usize) {}

    #[inline(always)]
    pub(crate) fn port_created(_: &crate::port::Port) {}

    #[inline(always)]
    pub(crate) fn out_of_resources(_: crate::op::Op, _: u32) {}
}

pub(crate) use on::*;
