//! hyper 1.x on the crate alone (feature `hyper`): an executor that spawns
//! on a runtime's pool, a timer on the crate's timers, and (in
//! [`io`](crate::io)) `hyper::rt::Read`/`Write` for [`Stream`](crate::io::Stream).
//!
//! ```no_run
//! # async fn serve(rt: iocompletion::Runtime, stream: iocompletion::io::Stream) {
//! use iocompletion::hyper_rt::{HyperExecutor, HyperTimer};
//! let svc = hyper::service::service_fn(|_req| async {
//!     Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
//! });
//! let _ = hyper::server::conn::http1::Builder::new()
//!     .timer(HyperTimer)
//!     .serve_connection(stream, svc)
//!     .await;
//! # let _ = HyperExecutor::new(rt);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::runtime::Runtime;
use crate::time::Sleep;

/// `hyper::rt::Executor`: spawns hyper's background futures (HTTP/2
/// streams, client connections) as tasks of a runtime
/// ([`Runtime::spawn`]).
#[derive(Debug, Clone)]
pub struct HyperExecutor(Runtime);

impl HyperExecutor {
    /// An executor that spawns on `rt`.
    pub fn new(rt: Runtime) -> HyperExecutor {
        HyperExecutor(rt)
    }
}

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // Detached: hyper does not join its background futures.
        drop(self.0.spawn(future));
    }
}

/// `hyper::rt::Timer` on the crate's timers ([`crate::time`]): its sleeps
/// are [`Sleep`]s, `Send` and `Sync`, and need no runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperTimer;

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(crate::time::sleep(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(crate::time::sleep_until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Sleep>() {
            Some(s) => s.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}
