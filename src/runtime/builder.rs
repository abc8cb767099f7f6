//! The runtime's settings, checked when it is built.

use std::fmt;
use crate::sync::OnceLock;
use std::time::Duration;

use super::sink::{dispatcher, Sink, SinkCell, NEXT_SINK};
use super::{Initializer, RuntimeState, Runtime};
use crate::error::{Error, Result};
use crate::pool::{Pool, PoolConfig};
use crate::port::DriverKind;
use crate::request::Request;
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, RwLock};

static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

/// Settings of a [`Runtime`]; see [`Runtime::builder`].
///
/// ```
/// use std::time::Duration;
/// use iocompletion::{IoCompletionManager, Runtime};
///
/// let rt = Runtime::builder()
///     .min_threads(2)
///     .max_threads(16)
///     .keep_alive(Duration::from_secs(30))
///     .host_overlapped_size(32) // extension bytes on every request (S18)
///     .thread_name("io")
///     .build()?;
/// assert_eq!((rt.min_threads()?, rt.max_threads()?), (2, 16));
/// assert!(Runtime::builder().min_threads(4).max_threads(2).build().is_err());
/// # rt.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder {
    min_threads: usize,
    max_threads: usize,
    keep_alive: Duration,
    gate_interval: Duration,
    host_overlapped_size: usize,
    initializer: Option<Arc<Initializer>>,
    port_concurrency: usize,
    thread_name: String,
    stack_size: Option<usize>,
    bound: Option<usize>,
    driver: Option<DriverKind>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("min_threads", &self.min_threads)
            .field("max_threads", &self.max_threads)
            .field("keep_alive", &self.keep_alive)
            .field("gate_interval", &self.gate_interval)
            .field("host_overlapped_size", &self.host_overlapped_size)
            .field("port_concurrency", &self.port_concurrency)
            .field("thread_name", &self.thread_name)
            .field("bound", &self.bound)
            .finish()
    }
}

/// The largest extension a request may carry: 1 MiB.
pub const MAX_HOST_OVERLAPPED_SIZE: usize = 1 << 20;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            min_threads: num_cpus::get().max(1),
            max_threads: 1000,
            keep_alive: Duration::from_secs(15),
            gate_interval: Duration::from_millis(500),
            host_overlapped_size: 0,
            initializer: None,
            port_concurrency: 0,
            thread_name: "iocompletion-worker".into(),
            stack_size: None,
            bound: None,
            driver: None,
        }
    }
}

impl Builder {
    /// Threads the pool keeps once started; default: the number of CPUs (S13).
    pub fn min_threads(mut self, n: usize) -> Self {
        self.min_threads = n;
        self
    }

    /// Threads the pool never exceeds; default 1000, the CLR's (S13).
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = n;
        self
    }

    /// How long an idle thread above the minimum lives; default 15 s (S15).
    /// Must be non-zero; a value too large to add to a clock reading means
    /// "for ever".
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }

    /// At most one new thread per interval above the minimum; default 500 ms (S14).
    /// Must be non-zero; `Duration::MAX` means no throttled growth at all.
    pub fn gate_interval(mut self, d: Duration) -> Self {
        self.gate_interval = d;
        self
    }

    /// Bytes of host extension appended to every request; default 0 (S18).
    pub fn host_overlapped_size(mut self, n: usize) -> Self {
        self.host_overlapped_size = n;
        self
    }

    /// Runs once for every request, on its zeroed extension, before the I/O
    /// starts (S19). An error stops the request; `Error::Fatal` also
    /// poisons the runtime (S5).
    pub fn initializer<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut Request) -> Result<()> + Send + Sync + 'static,
    {
        self.initializer = Some(Arc::new(f));
        self
    }

    /// Concurrency value of the ports the runtime creates; 0 = CPUs (S7).
    pub fn port_concurrency(mut self, n: usize) -> Self {
        self.port_concurrency = n;
        self
    }

    /// Prefix of the worker threads' names (`<prefix>-<n>`); must not
    /// contain a NUL byte.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// A bound on the requests and packets each of the runtime's ports
    /// holds at once (S35; see [`Port::bounded`](crate::Port::bounded)): at the bound, starting a
    /// request or posting fails with [`Error::Full`] and hands the request
    /// and its buffer back. Default: no bound, as IOCP. Must be at least 1.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.bound = Some(n);
        self
    }

    /// The driver of the runtime's ports (S36). Default: the platform's
    /// choice (on Linux io_uring where the kernel allows it, else epoll;
    /// the `IOCOMPLETION_DRIVER` setting, `io_uring`, `epoll` or `auto`,
    /// changes it). [`DriverKind::IoUring`] falls back to epoll when the
    /// kernel refuses, and [`Runtime::driver`] says why. A driver the
    /// target does not have (IOCP on Linux, io_uring on Windows) is refused
    /// by [`build`](Builder::build) with `InvalidArgument`.
    pub fn driver(mut self, kind: DriverKind) -> Self {
        self.driver = Some(kind);
        self
    }

    /// Stack size of the worker threads.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Builds the runtime. Bad settings give `InvalidArgument` naming the
    /// setting and its value.
    pub fn build(self) -> Result<Runtime> {
        if self.keep_alive.is_zero() {
            return Err(Error::invalid("keep_alive", format!("{:?}", self.keep_alive), "must be non-zero"));
        }
        if self.gate_interval.is_zero() {
            return Err(Error::invalid(
                "gate_interval",
                format!("{:?}", self.gate_interval),
                "must be non-zero",
            ));
        }
        if self.bound == Some(0) {
            return Err(Error::invalid("max_pending", 0, "must be at least 1"));
        }
        if self.thread_name.contains('\0') {
            return Err(Error::invalid(
                "thread_name",
                format!("{:?}", self.thread_name),
                "must not contain a NUL byte",
            ));
        }
        if let Some(k) = self.driver.filter(|&k| !<crate::sys::Port as crate::sys::PortDriver>::has_driver(k)) {
            return Err(Error::invalid("driver", format!("{k:?}"), "does not exist on this target"));
        }
        if self.host_overlapped_size > MAX_HOST_OVERLAPPED_SIZE {
            return Err(Error::invalid(
                "host_overlapped_size",
                self.host_overlapped_size,
                &format!("exceeds the maximum of {MAX_HOST_OVERLAPPED_SIZE}"),
            ));
        }
        let sink: SinkCell = Arc::new(Sink {
            id: NEXT_SINK.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            is_set: AtomicBool::new(false),
            slot: RwLock::new(None),
        });
        let sched = Arc::new(crate::task::Scheduler::new());
        let dispatch = dispatcher(sink.clone(), sched.clone());
        let pool = Pool::new(
            PoolConfig {
                name: self.thread_name,
                min: self.min_threads,
                max: self.max_threads,
                keep_alive: self.keep_alive,
                gate_interval: self.gate_interval,
                stack_size: self.stack_size,
            },
            dispatch,
        )?;
        let rt = Runtime {
            inner: Arc::new(RuntimeState {
                id: NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed),
                sched: sched.clone(),
                pool,
                sink,
                ext_size: self.host_overlapped_size,
                initializer: self.initializer,
                port_concurrency: self.port_concurrency,
                bound: self.bound,
                driver: self.driver,
                default_port: OnceLock::new(),
                default_lock: Mutex::new(()),
                ports: Mutex::new(Vec::new()),
                poisoned: AtomicBool::new(false),
                shut: AtomicBool::new(false),
            }),
        };
        let _ = sched.runtime.set(Arc::downgrade(&rt.inner));
        Ok(rt)
    }
}

