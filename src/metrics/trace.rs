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

#[cfg(feature = "tracing")]
mod on {
    use crate::metrics::{Growth, Shrink};

    pub(crate) struct Worker(#[allow(dead_code)] tracing::span::EnteredSpan);

    pub(crate) fn worker() -> Worker {
        let t = std::thread::current();
        let span = tracing::info_span!(target: "iocompletion::pool", "worker", thread = t.name().unwrap_or(""));
        Worker(span.entered())
    }

    pub(crate) fn grew(why: Growth) {
        tracing::debug!(target: "iocompletion::pool", reason = ?why, "pool thread starting");
    }

    pub(crate) fn shrank(why: Shrink) {
        tracing::debug!(target: "iocompletion::pool", reason = ?why, "pool thread leaving");
    }

    pub(crate) fn refused(bound: usize) {
        tracing::debug!(target: "iocompletion::port", bound, "refused at the port's bound");
    }

    pub(crate) fn port_created(port: &crate::port::Port) {
        if let Some(why) = port.driver().fallback {
            tracing::info!(target: "iocompletion::port", port = port.id(), driver = %port.driver(), reason = %why, "driver fallback");
        }
    }

    pub(crate) fn out_of_resources(op: crate::op::Op, code: u32) {
        tracing::warn!(
            target: "iocompletion::io",
            ?op,
            error = %std::io::Error::from_raw_os_error(code as i32),
            "request ran out of resources (S37)"
        );
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
