//! S4-S6: the error type, poisoning, and no panics across the API.

mod util;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocompletion::{Error, Handle, IoCompletionManager, Port, Runtime};
use util::{collector, wait_until};

#[test]
fn s4_hresult_codes_are_exact() {
    assert_eq!(Error::Unavailable.hresult(), 0x8013_1023);
    assert_eq!(Error::Timeout.hresult(), 0x8013_1024);
    assert_eq!(Error::NotOwner("x".into()).hresult(), 0x8013_1025);
    assert_eq!(Error::Abandoned.hresult(), 0x8013_1026);
    assert_eq!(Error::Fatal("x".into()).hresult(), 0x8000_4005);
    assert_eq!(Error::OutOfMemory.hresult(), 0x8007_000E);
    assert_eq!(Error::InvalidArgument("x".into()).hresult(), 0x8007_0057);
    assert_eq!(Error::NotImplemented("x".into()).hresult(), 0x8000_4001);
}

#[test]
fn s4_os_errors_map_like_hresult_from_win32() {
    let e = Error::Io(io::Error::from_raw_os_error(5));
    assert_eq!(e.hresult(), 0x8007_0005);
    // An I/O error with no OS code is a plain failure.
    assert_eq!(Error::Io(io::Error::other("no code")).hresult(), 0x8000_4005);
}

#[test]
fn s4_converts_into_io_error_with_fitting_kind() {
    let cases = [
        (Error::Timeout, io::ErrorKind::TimedOut),
        (Error::InvalidArgument("a = 1".into()), io::ErrorKind::InvalidInput),
        (Error::OutOfMemory, io::ErrorKind::OutOfMemory),
        (Error::NotImplemented("x".into()), io::ErrorKind::Unsupported),
        (Error::Abandoned, io::ErrorKind::ConnectionAborted),
    ];
    for (e, kind) in cases {
        let msg = e.to_string();
        let io: io::Error = e.into();
        assert_eq!(io.kind(), kind, "{msg}");
        assert!(io.to_string().contains(&msg));
    }
    let raw: io::Error = Error::Io(io::Error::from_raw_os_error(2)).into();
    assert_eq!(raw.raw_os_error(), Some(2), "an OS error passes through unchanged");
}

/// S35: a full port is no `EAGAIN` (nothing wakes a caller that retries on
/// `WouldBlock`): `Other`, with the `Error::Full` inside.
#[test]
fn s35_a_full_port_is_not_would_block_as_an_io_error() {
    let io: io::Error = Error::Full { bound: 3 }.into();
    assert_ne!(io.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(io.kind(), io::ErrorKind::Other);
    let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Full { bound: 3 })), "{io:?}");
}

#[test]
fn s4_error_fits_question_mark_in_io_code() {
    fn f() -> io::Result<()> {
        let rt = Runtime::builder().min_threads(1).build()?;
        rt.set_max_threads(0)?;
        Ok(())
    }
    assert_eq!(f().unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

fn fatal_runtime(calls: Arc<AtomicUsize>) -> Runtime {
    Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .host_overlapped_size(8)
        .initializer(move |_req| {
            // The third request's initializer fails catastrophically.
            if calls.fetch_add(1, Ordering::SeqCst) == 2 {
                Err(Error::Fatal("host lost its state".into()))
            } else {
                Ok(())
            }
        })
        .build()
        .unwrap()
}

#[test]
fn s5_fatal_poisons_every_later_call_and_aborts_pending() {
    let calls = Arc::new(AtomicUsize::new(0));
    let rt = fatal_runtime(calls.clone());
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let server = Handle::from(server);
    rt.bind(None, &server).unwrap();

    // Two reads pend (nobody writes).
    server.read(vec![0; 16]).start().unwrap();
    server.read(vec![0; 16]).start().unwrap();
    // The third start gets Fatal, with its buffer back.
    let err = server.read(vec![7; 16]).start().unwrap_err();
    assert!(err.error.is_fatal(), "{err}");
    assert_eq!(err.buffer, vec![7; 16]);

    // Every later call: Unavailable (S5).
    assert!(matches!(rt.max_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.min_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.available_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.create_port(), Err(Error::Unavailable)));
    assert!(matches!(rt.set_max_threads(10), Err(Error::Unavailable)));
    assert!(matches!(rt.host_overlapped_size(), Err(Error::Unavailable)));
    let other = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    assert!(matches!(rt.bind(None, &other), Err(Error::Unavailable)));
    let e = server.read(vec![0; 16]).start().unwrap_err();
    assert!(matches!(e.error, Error::Unavailable), "{e}");

    // The two pending reads complete aborted, buffers back; nothing hangs.
    for i in 0..2 {
        let d = rx.recv_for("a read pending at poisoning");
        assert!(d.status.is_aborted(), "read {i}: {:?}", d.status);
        assert_eq!(d.request.into_buffer().len(), 16);
    }
    rt.shutdown();
}

#[test]
fn s6_invalid_arguments_name_the_argument_and_value() {
    let rt = Runtime::builder().min_threads(2).max_threads(8).build().unwrap();
    let msg = rt.set_max_threads(0).unwrap_err().to_string();
    assert!(msg.contains("max_threads") && msg.contains('0'), "{msg}");
    let msg = rt.set_min_threads(9).unwrap_err().to_string();
    assert!(msg.contains("min_threads") && msg.contains('9'), "{msg}");
    let msg = Runtime::builder().min_threads(5).max_threads(3).build().unwrap_err().to_string();
    assert!(msg.contains("min_threads") && msg.contains('5'), "{msg}");
    let msg = Runtime::builder().keep_alive(std::time::Duration::ZERO).build().unwrap_err().to_string();
    assert!(msg.contains("keep_alive"), "{msg}");
    let msg = rt
        .bind_io_completion_callback(
            &Handle::from(TcpListener::bind("127.0.0.1:0").unwrap()),
            Arc::new(|_, _, _| {}),
            3,
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("flags") && msg.contains('3'), "{msg}");
}

/// S6: every builder value is checked in `build()`, never by a panic later.
#[test]
fn s6_builder_values_are_validated_in_build() {
    let msg = Runtime::builder().thread_name("a\0b").build().unwrap_err().to_string();
    assert!(msg.contains("thread_name"), "{msg}");
    let msg = Runtime::builder().gate_interval(Duration::ZERO).build().unwrap_err().to_string();
    assert!(msg.contains("gate_interval"), "{msg}");
    let msg = Runtime::builder().max_threads(0).build().unwrap_err().to_string();
    assert!(msg.contains("max_threads"), "{msg}");
    let msg = Runtime::builder().host_overlapped_size(usize::MAX).build().unwrap_err().to_string();
    assert!(msg.contains("host_overlapped_size"), "{msg}");
}

/// S18: a request without the runtime's host extension is refused by
/// `Runtime::post`, with its buffer, so the sink never sees one.
#[test]
fn s18_a_post_without_the_hosts_extension_is_refused() {
    let rt = Runtime::builder().min_threads(1).host_overlapped_size(16).build().unwrap();
    let e = rt.post(None, 0, iocompletion::Request::new(vec![1u8, 2, 3].into())).unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("host extension"), "{e}");
    assert_eq!(e.buffer.into_vec(), vec![1, 2, 3]);
    // Without an extension, `Request::new` is what `new_request` makes.
    let plain = Runtime::builder().min_threads(1).build().unwrap();
    let (sink, rx) = collector();
    let mut req = iocompletion::Request::new(vec![4u8].into());
    req.set_callback(sink);
    plain.post(None, 1, req).unwrap();
    assert_eq!(rx.recv_for("a plain request on a runtime without extension").bytes, 1);
    rt.shutdown();
    plain.shutdown();
}

/// S6: a duration too large to add to a clock reading means "no limit":
/// it never panics, and a runtime built with one runs its work.
#[test]
fn s6_huge_durations_saturate() {
    let p = Port::new(1).unwrap();
    p.post(1, 2, None).unwrap();
    let got = p.get(Some(Duration::MAX)).unwrap();
    assert_eq!((got.bytes, got.key), (1, 2));
    p.post(3, 4, None).unwrap();
    let mut out = Vec::new();
    assert_eq!(p.get_many(&mut out, 8, Some(Duration::MAX)).unwrap(), 1);
    // A waiter with no limit still hears the close.
    let p2 = p.clone();
    let waiter = std::thread::spawn(move || p2.get(Some(Duration::MAX)).map(|_| ()));
    wait_until("the waiter waits", || p.waiting_threads() == 1);
    p.close().unwrap();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Abandoned)));

    let rt = Runtime::builder()
        .min_threads(1)
        .max_threads(2)
        .keep_alive(Duration::MAX)
        .gate_interval(Duration::MAX)
        .build()
        .unwrap();
    let (sink, rx) = collector();
    let mut req = rt.new_request(iocompletion::Buffer::None).unwrap();
    req.set_callback(sink);
    rt.post(None, 7, req).unwrap();
    assert_eq!(rx.recv_for("a post on a runtime with huge durations").bytes, 7);
    assert_eq!(rt.stats().threads, 1);
    rt.shutdown();
}

#[test]
fn s6_a_panicking_callback_is_caught_counted_and_the_pool_goes_on() {
    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let ran = ran.clone();
        rt.post_callback(i, move |_, bytes, _| {
            ran.fetch_add(1, Ordering::SeqCst);
            if bytes % 2 == 0 {
                panic!("callback {bytes} fails on purpose");
            }
        })
        .unwrap();
    }
    wait_until("all 10 callbacks ran", || ran.load(Ordering::SeqCst) == 10);
    wait_until("5 panics counted", || rt.stats().panics == 5);
    // The pool still runs completions afterwards.
    let after = Arc::new(AtomicUsize::new(0));
    let a = after.clone();
    rt.post_callback(1, move |_, _, _| {
        a.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    wait_until("a completion after the panics", || after.load(Ordering::SeqCst) == 1);
    assert!(rt.stats().threads >= 1);
    rt.shutdown();
}

/// Runs `f` on a thread of its own and fails the test if it has not
/// returned within the deadline (a deadlock shows as a failure, not a hang).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(util::DEADLINE).unwrap_or_else(|_| panic!("{what} did not return: deadlock"))
}

/// A sink whose `Drop` sets another sink on the same runtime.
struct SetsASinkWhenDropped(Runtime);

impl iocompletion::CompletionSink for SetsASinkWhenDropped {
    fn on_complete(&self, _: iocompletion::Status, _: usize, _: iocompletion::Request) {}
}

impl Drop for SetsASinkWhenDropped {
    fn drop(&mut self) {
        let noop: Arc<dyn iocompletion::CompletionSink> = Arc::new(|_, _, _| {});
        self.0.set_completion_sink(noop).unwrap();
    }
}

/// S1: the sink a new one replaces is user code and is dropped with no lock
/// of the crate held, so its `Drop` may call the runtime back.
#[test]
fn s1_a_replaced_sink_may_call_the_runtime_from_its_drop() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    rt.set_completion_sink(Arc::new(SetsASinkWhenDropped(rt.clone()))).unwrap();
    let rt2 = rt.clone();
    returns("set_completion_sink replacing a re-entrant sink", move || {
        let noop: Arc<dyn iocompletion::CompletionSink> = Arc::new(|_, _, _| {});
        rt2.set_completion_sink(noop).unwrap();
    });
    rt.shutdown();
}

/// A host that delegates to a runtime, except that asking its extension
/// size binds a handle it was given (user code calling back into the crate).
struct Nosy {
    rt: Runtime,
    handle: std::sync::Mutex<Option<Handle>>,
}

impl IoCompletionManager for Nosy {
    fn create_port(&self) -> iocompletion::Result<iocompletion::Port> {
        self.rt.create_port()
    }
    fn close_port(&self, port: &iocompletion::Port) -> iocompletion::Result<()> {
        self.rt.close_port(port)
    }
    fn bind(&self, port: Option<&iocompletion::Port>, handle: &Handle) -> iocompletion::Result<()> {
        self.rt.bind(port, handle)
    }
    fn available_threads(&self) -> iocompletion::Result<usize> {
        self.rt.available_threads()
    }
    fn host_overlapped_size(&self) -> iocompletion::Result<usize> {
        let h = self.handle.lock().unwrap().take();
        if let Some(h) = h {
            let _ = self.rt.bind(None, &h);
        }
        self.rt.host_overlapped_size()
    }
    fn max_threads(&self) -> iocompletion::Result<usize> {
        self.rt.max_threads()
    }
    fn set_max_threads(&self, n: usize) -> iocompletion::Result<()> {
        self.rt.set_max_threads(n)
    }
    fn min_threads(&self) -> iocompletion::Result<usize> {
        self.rt.min_threads()
    }
    fn set_min_threads(&self, n: usize) -> iocompletion::Result<()> {
        self.rt.set_min_threads(n)
    }
    fn initialize_host_overlapped(&self, request: &mut iocompletion::Request) -> iocompletion::Result<()> {
        self.rt.initialize_host_overlapped(request)
    }
    fn set_completion_sink(&self, sink: Arc<dyn iocompletion::CompletionSink>) -> iocompletion::Result<()> {
        self.rt.set_completion_sink(sink)
    }
}

/// S18, S21: `Handle::attach` asks the host for its extension size before
/// it takes the handle's bind lock, so a host that binds that very handle
/// from there gets an answer, not a deadlock.
#[test]
fn s21_attach_asks_the_host_before_it_locks_the_handle() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    rt.set_completion_sink(Arc::new(|_, _, _| {})).unwrap();
    let handle = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    let nosy = Arc::new(Nosy { rt: rt.clone(), handle: std::sync::Mutex::new(Some(handle.clone())) });
    let port = rt.default_port().unwrap();
    let h2 = handle.clone();
    let r = returns("attach with a re-entrant host", move || h2.attach(&port, nosy, None));
    // The host bound the handle first; the outer attach finds it bound.
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("already bound"), "{msg}");
    assert!(handle.port().is_some());
    rt.shutdown();
}

/// A refusal after the request was made tells which request it was; one
/// before (an unbound handle) has no request to name.
#[test]
fn s19_a_start_refused_by_the_initializer_names_its_request_and_user_data() {
    use iocompletion::{Handle, Op, Request};
    let rt = iocompletion::Runtime::builder()
        .host_overlapped_size(8)
        .initializer(|_req: &mut Request| Err(iocompletion::Error::NotOwner("refused here".into())))
        .build()
        .unwrap();
    let (_peer, mine) = util::tcp_pair();
    let h = Handle::from(mine);
    let e = h.request(Op::Read, vec![0; 4].into()).user_data(77).start().unwrap_err();
    assert!(e.request.is_none(), "not bound: refused before a request was made");
    rt.bind_io_completion_callback(&h, std::sync::Arc::new(|_, _, _| {}), 0).unwrap();
    let e = h.request(Op::Read, vec![0; 4].into()).user_data(77).start().unwrap_err();
    assert!(matches!(e.error, iocompletion::Error::NotOwner(_)), "{e}");
    assert!(e.request.is_some(), "the refused request is named");
    assert_eq!(e.user_data, 77);
    assert_eq!(e.buffer.len(), 4);
    rt.shutdown();
}

/// S37 on every OS: the statuses of running out are told apart from other
/// failures. (The end-to-end test, `tests/exhaustion.rs`, lowers the
/// process's descriptor limit, which Unix has and Windows does not.)
#[test]
fn s37_the_statuses_of_running_out_are_recognised() {
    use iocompletion::Status;
    #[cfg(unix)]
    let (out, other) = (
        [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].map(|c| c as u32),
        [libc::ECONNRESET, libc::EBADF].map(|c| c as u32),
    );
    // WSAEMFILE, WSAENOBUFS, ERROR_TOO_MANY_OPEN_FILES, ERROR_NOT_ENOUGH_MEMORY,
    // ERROR_OUTOFMEMORY, ERROR_NO_SYSTEM_RESOURCES; WSAECONNRESET, ERROR_INVALID_HANDLE.
    #[cfg(windows)]
    let (out, other) = ([10024u32, 10055, 4, 8, 14, 1450], [10054u32, 6]);
    for code in out {
        assert!(Status::from_raw(code).is_out_of_resources(), "{code} is running out");
        let e = io::Error::from_raw_os_error(code as i32);
        assert!(Status::from_io_error(&e).is_out_of_resources(), "{code} through io::Error");
    }
    for code in other {
        assert!(!Status::from_raw(code).is_out_of_resources(), "{code} is not running out");
    }
    assert!(!Status::SUCCESS.is_out_of_resources() && !Status::ABORTED.is_out_of_resources());
}

#[test]
fn s4_start_error_is_send_and_sync() {
    fn send_sync_static<T: Send + Sync + 'static>(_: &T) {}
    // A real refusal: a handle that is not bound, with a buffer of the
    // caller's own type held behind `Buffer::Other`.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_c, s) = (TcpStream::connect(l.local_addr().unwrap()).unwrap(), l.accept().unwrap().0);
    let h = Handle::from(s);
    let e = h.write(vec![7u8; 3].into_boxed_slice()).start().unwrap_err();
    send_sync_static(&e);
    send_sync_static(&e.error);
    // Shared with another thread by reference, as `anyhow` and error
    // reporters do.
    let len = std::thread::scope(|s| s.spawn(|| e.buffer.len()).join().unwrap());
    assert_eq!(len, 3);
    // Into the boxed error of `?` in a `main` or a task, with its source.
    fn start(h: &Handle) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        h.write(vec![1u8; 2].into_boxed_slice()).start()?;
        Ok(())
    }
    let boxed = start(&h).unwrap_err();
    assert!(boxed.to_string().starts_with("request not started"), "{boxed}");
    assert!(boxed.source().is_some_and(|s| s.is::<Error>()));
    let back = boxed.downcast::<iocompletion::StartError<Box<[u8]>>>().unwrap();
    assert_eq!(back.buffer.len(), 2, "the buffer comes back as given");
}
