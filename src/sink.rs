//! The runtime side of the interface: `ICLRIoCompletionManager` (S2).

use crate::request::Request;
use crate::status::Status;
use crate::sync::{Arc, AtomicBool, Ordering, Weak};

/// Receives one call for every request that was started, whether it
/// succeeded, failed, was cancelled or was aborted by a close (S2).
///
/// This is `ICLRIoCompletionManager::OnComplete`. The default host calls it
/// on a pool worker thread; the request comes back owning its buffer and its
/// host extension. A closure `Fn(Status, usize, Request)` is a sink too.
///
/// A panic in `on_complete` is caught by the default host's pool, counted,
/// and the pool goes on (S6).
///
/// ```
/// use std::sync::{mpsc, Arc, Mutex};
/// use iocompletion::{CompletionSink, IoCompletionManager, Request, Runtime, Status};
///
/// struct Counting(Mutex<mpsc::Sender<usize>>);
/// impl CompletionSink for Counting {
///     fn on_complete(&self, status: Status, bytes: usize, _request: Request) {
///         assert!(status.is_success());
///         self.0.lock().unwrap().send(bytes).unwrap();
///     }
/// }
///
/// let rt = Runtime::builder().build()?;
/// let (tx, rx) = mpsc::channel();
/// rt.set_completion_sink(Arc::new(Counting(Mutex::new(tx))))?;
/// rt.post(None, 3, rt.new_request(vec![1, 2, 3].into())?)?;
/// assert_eq!(rx.recv()?, 3);
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait CompletionSink: Send + Sync {
    /// `OnComplete(dwErrorCode, NumberOfBytesTransferred, pvOverlapped)`.
    fn on_complete(&self, status: Status, bytes_transferred: usize, request: Request);
}

impl<F> CompletionSink for F
where
    F: Fn(Status, usize, Request) + Send + Sync,
{
    fn on_complete(&self, status: Status, bytes_transferred: usize, request: Request) {
        self(status, bytes_transferred, request)
    }
}

// Object safety is part of the contract (S3): this fails to compile if broken.
const _: Option<&dyn CompletionSink> = None;

/// A request's own target as a custom host takes it
/// ([`Request::take_callback`]): it passes the first delivery on and
/// ignores every later one (S2, S34), counting it on the request's port.
pub(crate) struct DeliverOnce {
    target: Arc<dyn CompletionSink>,
    delivered: AtomicBool,
    /// The handle the request was started on: its port keeps the count.
    handle: Option<Weak<crate::handle::HandleState>>,
}

impl DeliverOnce {
    pub(crate) fn new(
        target: Arc<dyn CompletionSink>,
        handle: Option<Weak<crate::handle::HandleState>>,
    ) -> DeliverOnce {
        DeliverOnce { target, delivered: AtomicBool::new(false), handle }
    }
}

impl CompletionSink for DeliverOnce {
    fn on_complete(&self, status: Status, bytes_transferred: usize, request: Request) {
        if self.delivered.swap(true, Ordering::AcqRel) {
            // The host's bug: the first result stands. The request it
            // carried is its own and is dropped here.
            if let Some(handle) = self.handle.as_ref().and_then(Weak::upgrade) {
                if let Some(port) = handle.bound_port() {
                    port.inner.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(request);
            return;
        }
        self.target.on_complete(status, bytes_transferred, request)
    }
}
