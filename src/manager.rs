//! The host side of the interface: `IHostIoCompletionManager` (S1, S3).

use crate::error::Result;
use crate::handle::Handle;
use crate::port::Port;
use crate::request::Request;
use crate::sink::CompletionSink;
use crate::sync::Arc;

/// The host's I/O completion manager, one method per method of the CLR's
/// `IHostIoCompletionManager` (S1).
///
/// The trait is object-safe and `Send + Sync` (S3): a program can implement
/// its own host (its own threads, its own extension data) and the crate's
/// request path drives it through `Arc<dyn IoCompletionManager>`. The crate's
/// default host is [`Runtime`](crate::Runtime).
///
/// Every method returns a [`Result`]: after a call returned
/// [`Error::Fatal`](crate::Error::Fatal), a conforming host answers every
/// later call with [`Error::Unavailable`](crate::Error::Unavailable) (S5).
///
/// ## Implementing a host
/// A host creates [`Port`]s (`Port::new`), runs its own threads that take
/// packets with [`Port::get`] or [`Port::get_many`], and hands each packet's
/// request to the sink it was given. Its `bind` attaches the handle with
/// [`Handle::attach`], passing itself (as `Arc<dyn IoCompletionManager>`) so
/// that every request on the handle gets the host's extension data.
///
/// The default host, [`Runtime`](crate::Runtime), used through this trait
/// as a hosting layer would:
///
/// ```
/// use std::sync::Arc;
/// use iocompletion::{Handle, IoCompletionManager, Runtime};
///
/// let host: Arc<dyn IoCompletionManager> = Arc::new(Runtime::builder().build()?);
/// host.set_max_threads(8)?;
/// host.set_min_threads(1)?;
/// assert!(host.available_threads()? <= 8);
/// host.set_completion_sink(Arc::new(|_status, _bytes, _request| {}))?; // before a bind
/// let port = host.create_port()?;
/// let socket = Handle::from(std::net::UdpSocket::bind("127.0.0.1:0")?);
/// host.bind(Some(&port), &socket)?;    // its completions now come through `port`
/// host.close_port(&port)?;             // pending requests complete aborted
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IoCompletionManager: Send + Sync {
    /// `CreateIoCompletionPort`: a new port (S7).
    fn create_port(&self) -> Result<Port>;

    /// `CloseIoCompletionPort`: closes a port this manager created (S11).
    /// An unknown or already closed port gives `InvalidArgument`.
    fn close_port(&self, port: &Port) -> Result<()>;

    /// `Bind`: binds `handle` to `port`, or to the default port when `port`
    /// is `None` (S21).
    fn bind(&self, port: Option<&Port>, handle: &Handle) -> Result<()>;

    /// `GetAvailableThreads`: `max_threads()` minus the threads busy running
    /// a completion (S16).
    fn available_threads(&self) -> Result<usize>;

    /// `GetHostOverlappedSize`: the size of the extension appended to every
    /// request; fixed for the manager's lifetime (S18).
    fn host_overlapped_size(&self) -> Result<usize>;

    /// `GetMaxThreads`.
    fn max_threads(&self) -> Result<usize>;

    /// `SetMaxThreads`: `InvalidArgument` when `n == 0` or `n < min_threads()` (S12).
    fn set_max_threads(&self, n: usize) -> Result<()>;

    /// `GetMinThreads`.
    fn min_threads(&self) -> Result<usize>;

    /// `SetMinThreads`: `InvalidArgument` when `n > max_threads()` (S12).
    fn set_min_threads(&self, n: usize) -> Result<()>;

    /// `InitializeHostOverlapped`: called once for every request before its
    /// I/O starts, with the extension zeroed (S19). An error stops the request.
    fn initialize_host_overlapped(&self, request: &mut Request) -> Result<()>;

    /// `SetCLRIoCompletionManager`: the sink that receives `on_complete` (S2).
    fn set_completion_sink(&self, sink: Arc<dyn CompletionSink>) -> Result<()>;
}

// Object safety is part of the contract (S3): this fails to compile if broken.
const _: Option<&dyn IoCompletionManager> = None;
