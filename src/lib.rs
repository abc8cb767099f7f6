//! # iocompletion
//!
//! A cross-platform I/O completion runtime. Programs bind sockets and files
//! to completion ports, start overlapped reads, writes, accepts and
//! connects, and get exactly one completion per request (status, bytes
//! transferred, the request with its buffer) on a thread pool whose minimum
//! and maximum can be read and changed while it runs.
//!
//! On Windows a port is the kernel's IOCP. On Linux, macOS and the BSDs,
//! mio's readiness (epoll/kqueue) is turned into completions, and regular
//! files are served by the pool with positional reads and writes.
//!
//! The shape follows the CLR hosting interface `IHostIoCompletionManager`
//! ([`IoCompletionManager`]), its runtime side `ICLRIoCompletionManager`
//! ([`CompletionSink`]) and Win32's `BindIoCompletionCallback`
//! ([`Runtime::bind_io_completion_callback`]).
//!
//! | seed method | Rust |
//! | --- | --- |
//! | `CreateIoCompletionPort` | [`IoCompletionManager::create_port`] |
//! | `CloseIoCompletionPort` | [`IoCompletionManager::close_port`] |
//! | `Bind` | [`IoCompletionManager::bind`] |
//! | `GetAvailableThreads` | [`IoCompletionManager::available_threads`] |
//! | `GetHostOverlappedSize` | [`IoCompletionManager::host_overlapped_size`] |
//! | `GetMaxThreads` / `SetMaxThreads` | [`IoCompletionManager::max_threads`] / [`IoCompletionManager::set_max_threads`] |
//! | `GetMinThreads` / `SetMinThreads` | [`IoCompletionManager::min_threads`] / [`IoCompletionManager::set_min_threads`] |
//! | `InitializeHostOverlapped` | [`IoCompletionManager::initialize_host_overlapped`] |
//! | `SetCLRIoCompletionManager` | [`IoCompletionManager::set_completion_sink`] |
//! | `ICLRIoCompletionManager::OnComplete` | [`CompletionSink::on_complete`] |
//! | `BindIoCompletionCallback` | [`Runtime::bind_io_completion_callback`] |
//! | `PostQueuedCompletionStatus` | [`Port::post`], [`Runtime::post`] |
//! | `GetQueuedCompletionStatus(Ex)` | [`Port::get`], [`Port::get_many`] |
//! | `CancelIoEx` | [`Handle::cancel`], [`Handle::cancel_all`] |
//!
//! ## Example
//! ```
//! use iocompletion::{IoCompletionManager, Handle, Request, Runtime, Status};
//! use std::io::Write;
//! use std::net::{TcpListener, TcpStream};
//! use std::sync::{mpsc, Arc, Mutex};
//!
//! let rt = Runtime::builder().min_threads(1).max_threads(4).build()?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! let (server, _) = listener.accept()?;
//!
//! let server = Handle::from(server);
//! let (tx, rx) = mpsc::channel();
//! let tx = Mutex::new(tx);
//! rt.bind_io_completion_callback(&server, Arc::new(move |status: Status, bytes: usize, req: Request| {
//!     let buf = req.into_buffer().into_vec();
//!     tx.lock().unwrap().send((status, buf[..bytes].to_vec())).unwrap();
//! }), 0)?;
//!
//! server.read(vec![0; 64]).start()?;  // the request owns the buffer now
//! client.write_all(b"ping")?;
//! let (status, data) = rx.recv()?;    // one completion, buffer handed back
//! assert!(status.is_success());
//! assert_eq!(data, b"ping");
//! rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]
// The library takes its locks, atomics and channels from `crate::sync`
// only (`clippy.toml` lists std's); tests, examples and benches may use
// std's (`Cargo.toml` allows the two lints for every target).
#![deny(clippy::disallowed_types, clippy::disallowed_methods)]

// Under `--cfg loom` only the synchronization protocols build (the port's
// queue in `sys::queue`, the pool's accounting in `census`, the tasks'
// state, io_uring's submit/wait handshake, the timers' table), with their
// models; everything else needs real threads and the OS.
macro_rules! not_loom {
    ($($item:item)*) => { $(#[cfg(not(loom))] $item)* };
}

mod census;
mod sync;
mod sys;
// The tasks' scheduling state and its models (the rest of `task` needs the OS).
#[cfg(loom)]
#[allow(dead_code)]
#[path = "task/state.rs"]
mod task_state;
// The io_uring driver's submit/wait handshake and its models.
#[cfg(loom)]
#[allow(dead_code)]
#[path = "sys/unix/uring/handshake.rs"]
mod uring_handshake;
// The timers' table and its models.
#[cfg(loom)]
#[allow(dead_code)]
#[path = "timer/table.rs"]
mod timer_table;

not_loom! {
    mod buf;
    mod error;
    mod future;
    mod handle;
    mod manager;
    mod start;
    mod op;
    mod pool;
    mod port;
    mod request;
    mod runtime;
    mod shared;
    mod sink;
    mod status;
    mod timer;
    pub mod task;
    pub mod time;
    pub mod io;
    pub mod metrics;
    #[cfg(feature = "hyper")]
    pub mod hyper_rt;

    /// The request kinds a [`Start`] is made for: what each hands back.
    pub mod kinds {
        pub use crate::start::{Accepted, Any, Bytes, Connected, Received, Sent};
    }

    /// What only Windows has: named pipes, and handles opened for
    /// overlapped I/O by other code.
    #[cfg(windows)]
    pub mod windows {
        pub use crate::handle::windows::{
            disconnect_named_pipe, from_overlapped_handle, named_pipe_client, named_pipe_server,
        };
        #[doc(hidden)]
        pub use crate::handle::windows::post_as_kernel;
    }

    pub use buf::{Buffer, IoBuf, IoBufMut, OtherBuf};
    pub use error::{Error, Result, StartError};
    pub use error::{
        E_FAIL, E_INVALIDARG, E_NOTIMPL, E_NOT_ENOUGH_QUOTA, E_OUTOFMEMORY, HOST_E_ABANDONED, HOST_E_CLRNOTAVAILABLE,
        HOST_E_NOT_OWNER, HOST_E_TIMEOUT,
    };
    pub use future::Completed;
    pub use start::{IoFuture, Kind, ReadBuf, Start, Vectored, WriteBuf};
    pub use handle::{Handle, HandleKind, WeakHandle};
    pub use manager::IoCompletionManager;
    pub use pool::PoolStats;
    pub use port::{DriverInfo, DriverKind, Packet, Port};
    pub use op::Op;
    pub use request::{Request, RequestId};
    pub use status::Status;
    pub use runtime::{Builder, Initializer, Runtime, TimerId, MAX_HOST_OVERLAPPED_SIZE};
    pub use sink::CompletionSink;
}

/// The README's example runs as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
