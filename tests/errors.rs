//! S4-S6: the error type, poisoning, and no panics across the API.

mod util;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use iocompletion::{Error, Handle, IoCompletionManager, Runtime};
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
    server.read(vec![0; 16]).unwrap();
    server.read(vec![0; 16]).unwrap();
    // The third start gets Fatal, with its buffer back.
    let err = server.read(vec![7; 16]).unwrap_err();
    assert!(err.error.is_fatal(), "{err}");
    assert_eq!(err.buffer.into_vec(), vec![7; 16]);

    // Every later call: Unavailable (S5).
    assert!(matches!(rt.max_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.min_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.available_threads(), Err(Error::Unavailable)));
    assert!(matches!(rt.create_port(), Err(Error::Unavailable)));
    assert!(matches!(rt.set_max_threads(10), Err(Error::Unavailable)));
    assert!(matches!(rt.host_overlapped_size(), Err(Error::Unavailable)));
    let other = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    assert!(matches!(rt.bind(None, &other), Err(Error::Unavailable)));
    let e = server.read(vec![0; 16]).unwrap_err();
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
