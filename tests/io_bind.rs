//! Binding real sockets and files, and where their completions go
//! (S2, S21, S22).

mod util;

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use iocompletion::{Error, Handle, IoCompletionManager, Request, Status};
use util::{runtime, started, tcp_pair, Collector};

#[track_caller]
fn assert_invalid(r: iocompletion::Result<()>, what: &str, because: &str) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains(because), "{what}: {msg:?} does not say {because:?}")
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn s21_binding_a_closed_handle_is_invalid_argument() {
    let rt = runtime();
    rt.set_completion_sink(Collector::new().sink()).unwrap();
    let (_client, server) = tcp_pair();
    let h = Handle::from(server);
    h.close();
    assert_invalid(rt.bind(None, &h), "bind", "closed");
    assert_invalid(
        rt.bind_io_completion_callback(&h, Collector::new().sink(), 0),
        "bind_io_completion_callback",
        "closed",
    );
    assert!(h.port().is_none());

    let f = util::TempFile::new("closed-bind");
    let fh = util::file_handle(File::open(f.path()).unwrap());
    fh.close();
    assert_invalid(rt.bind(None, &fh), "bind of a closed file", "closed");
}

#[test]
fn s21_a_socket_binds_to_one_port_only() {
    let rt = runtime();
    rt.set_completion_sink(Collector::new().sink()).unwrap();
    let other = rt.create_port().unwrap();
    let (_client, server) = tcp_pair();
    let h = Handle::from(server);
    rt.bind(None, &h).unwrap();
    assert_invalid(rt.bind(None, &h), "second bind, same port", "already bound");
    assert_invalid(rt.bind(Some(&other), &h), "second bind, another port", "already bound");
    assert_invalid(
        rt.bind_io_completion_callback(&h, Collector::new().sink(), 0),
        "callback bind after bind",
        "already bound",
    );
    assert!(h.port().unwrap().same(&rt.default_port().unwrap()));
}

#[test]
fn s21_binding_to_a_closed_port_is_invalid_argument() {
    let rt = runtime();
    rt.set_completion_sink(Collector::new().sink()).unwrap();
    let port = rt.create_port().unwrap();
    rt.close_port(&port).unwrap();
    let (_client, server) = tcp_pair();
    let h = Handle::from(server);
    assert_invalid(rt.bind(Some(&port), &h), "bind to a closed port", "closed");
    // The handle is still free to bind elsewhere.
    rt.bind(None, &h).unwrap();
}

#[test]
fn s22_callback_runs_on_a_pool_worker_with_status_bytes_and_request() {
    let rt = runtime();
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    let (tx, rx) = std::sync::mpsc::channel();
    let cb = move |status: Status, bytes: usize, req: Request| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let _ = tx.send((status, bytes, req.id(), name));
    };
    rt.bind_io_completion_callback(&h, Arc::new(cb), 0).unwrap();

    let id = started(h.read(vec![0; 16]).start());
    client.write_all(b"abc").unwrap();
    let (status, bytes, got, thread) = rx.recv_timeout(util::DEADLINE).expect("a completion");
    assert!(status.is_success());
    assert_eq!((bytes, got), (3, id));
    assert!(thread.starts_with("iocompletion-worker"), "ran on {thread:?}");
}

/// Handles bound with `bind` (no callback of their own) complete through
/// the sink set with `set_completion_sink` (S2).
#[test]
fn s2_handles_bound_without_a_callback_complete_through_the_sink() {
    let rt = runtime();
    let c = Collector::new();
    rt.set_completion_sink(c.sink()).unwrap();
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    rt.bind(None, &h).unwrap();
    let f = util::TempFile::with_contents("sink", b"file bytes");
    let fh = util::file_handle(File::open(f.path()).unwrap());
    rt.bind(None, &fh).unwrap();

    let r = started(h.read(vec![0; 16]).start());
    let fr = started(fh.read(vec![0; 16]).at(5).start());
    client.write_all(b"socket").unwrap();
    let (mut sock, mut file): (Vec<_>, Vec<_>) = c.recv_n(2).into_iter().partition(|d| d.id() == r);
    let (sock, file) = (sock.pop().expect("the socket read"), file.pop().expect("the file read"));
    assert_eq!(file.id(), fr);
    assert_eq!(sock.data(), b"socket");
    assert_eq!(file.data(), b"bytes");
    c.expect_none(Duration::from_millis(100));
}

/// A host extension set by the initializer travels with I/O requests too
/// (S18-S20 on the real request path).
#[test]
fn s2_io_requests_carry_the_host_extension() {
    let rt = iocompletion::Runtime::builder()
        .min_threads(1)
        .max_threads(4)
        .host_overlapped_size(24)
        .initializer(|req: &mut Request| {
            let id = req.id().as_u64();
            req.extension_mut()[..8].copy_from_slice(&id.to_le_bytes());
            Ok(())
        })
        .build()
        .unwrap();
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    let c = util::bind(&rt, &h);
    let id = started(h.read(vec![0; 4]).start());
    client.write_all(b"x").unwrap();
    let d = c.recv();
    assert_eq!(d.request.extension().len(), 24);
    assert_eq!(&d.request.extension()[..8], &id.as_u64().to_le_bytes());
    assert!(d.request.extension()[8..].iter().all(|&b| b == 0));
}

/// An initializer that refuses stops the request before any I/O: the error
/// comes back with the buffer, and nothing is posted (S19, S23).
#[test]
fn s23_an_initializer_error_stops_the_request_and_posts_nothing() {
    let rt = iocompletion::Runtime::builder()
        .min_threads(1)
        .max_threads(2)
        .host_overlapped_size(8)
        .initializer(|_: &mut Request| Err(Error::OutOfMemory))
        .build()
        .unwrap();
    let (mut client, server) = tcp_pair();
    client.write_all(b"waiting").unwrap();
    let h = Handle::from(server);
    let c = util::bind(&rt, &h);
    let e = h.read(vec![3; 64]).start().unwrap_err();
    assert!(matches!(e.error, Error::OutOfMemory), "{e:?}");
    assert_eq!(e.buffer, vec![3; 64]);
    c.expect_none(Duration::from_millis(100));
}
