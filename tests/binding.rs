//! S21-S22: binding handles to ports and BindIoCompletionCallback.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use iocompletion::{Error, Handle, IoCompletionManager, Runtime};
use util::collector;

fn pair() -> (TcpStream, Handle) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    (c, Handle::from(l.accept().unwrap().0))
}

fn runtime() -> Runtime {
    let rt = Runtime::builder().min_threads(1).max_threads(4).build().unwrap();
    rt.set_completion_sink(Arc::new(|_, _, _| {})).unwrap();
    rt
}

#[test]
fn s2_bind_without_a_sink_is_refused_so_no_completion_is_lost() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (_c, h) = pair();
    let e = rt.bind(None, &h).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("sink")), "{e}");
    assert!(h.port().is_none());
    rt.set_completion_sink(Arc::new(|_, _, _| {})).unwrap();
    rt.bind(None, &h).unwrap();
}

#[test]
fn s21_bind_none_uses_the_default_port_created_on_first_use() {
    let rt = runtime();
    let (_c, h) = pair();
    rt.bind(None, &h).unwrap();
    let port = h.port().expect("bound");
    assert!(port.same(&rt.default_port().unwrap()));
    let (_c2, h2) = pair();
    rt.bind(None, &h2).unwrap();
    assert!(h2.port().unwrap().same(&port), "one default port");
}

#[test]
fn s21_bind_to_a_created_port_delivers_there() {
    let rt = runtime();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let port = rt.create_port().unwrap();
    let (mut c, h) = pair();
    rt.bind(Some(&port), &h).unwrap();
    assert!(h.port().unwrap().same(&port));
    h.read(vec![0; 3]).start().unwrap();
    c.write_all(b"abc").unwrap();
    let d = rx.recv_for("read on a created port");
    assert_eq!(d.bytes, 3);
    assert_eq!(&d.request.into_buffer().into_vec(), b"abc");
}

#[test]
fn s21_a_second_bind_of_the_same_handle_is_invalid() {
    let rt = runtime();
    let (_c, h) = pair();
    rt.bind(None, &h).unwrap();
    assert!(matches!(rt.bind(None, &h), Err(Error::InvalidArgument(_))));
    let other = rt.create_port().unwrap();
    assert!(matches!(rt.bind(Some(&other), &h.clone()), Err(Error::InvalidArgument(_))));
    let rt2 = runtime();
    assert!(matches!(rt2.bind(None, &h), Err(Error::InvalidArgument(_))), "not even by another manager");
}

#[test]
fn s21_a_closed_handle_or_port_is_refused() {
    let rt = runtime();
    let (_c, h) = pair();
    h.close();
    assert!(matches!(rt.bind(None, &h), Err(Error::InvalidArgument(_))));
    let port = rt.create_port().unwrap();
    rt.close_port(&port).unwrap();
    let (_c2, h2) = pair();
    assert!(matches!(rt.bind(Some(&port), &h2), Err(Error::InvalidArgument(_))));
    let foreign = runtime().create_port().unwrap();
    assert!(matches!(rt.bind(Some(&foreign), &h2), Err(Error::InvalidArgument(_))));
    rt.bind(None, &h2).unwrap();
}

#[test]
fn s21_requests_on_an_unbound_handle_fail_at_start() {
    let (_c, h) = pair();
    let e = h.read(vec![5; 2]).start().unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)), "{e}");
    assert_eq!(e.buffer, vec![5; 2]);
}

#[test]
fn s22_flags_must_be_zero() {
    let rt = runtime();
    let (_c, h) = pair();
    for flags in [1, 0x8000_0000, u32::MAX] {
        let e = rt.bind_io_completion_callback(&h, Arc::new(|_, _, _| {}), flags).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)));
    }
    assert!(h.port().is_none(), "a refused bind binds nothing");
    rt.bind_io_completion_callback(&h, Arc::new(|_, _, _| {}), 0).unwrap();
}

#[test]
fn s22_the_callback_runs_on_a_pool_worker_with_status_bytes_and_request() {
    let rt = Runtime::builder().min_threads(1).thread_name("cbpool").build().unwrap();
    let (cb, rx) = collector();
    let (mut c, h) = pair();
    rt.bind_io_completion_callback(&h, cb, 0).unwrap();
    let id = h.read(vec![0; 16]).start().unwrap();
    c.write_all(b"hello").unwrap();
    let d = rx.recv_for("read");
    assert!(d.status.is_success());
    assert_eq!(d.bytes, 5);
    assert_eq!(d.request.id(), id);
    assert!(d.thread.starts_with("cbpool-"), "ran on {:?}", d.thread);
    assert_eq!(&d.request.into_buffer().into_vec()[..5], b"hello");
}

#[test]
fn s22_the_callback_wins_over_the_sink() {
    let rt = runtime();
    let (sink, sink_rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let (cb, cb_rx) = collector();
    let (mut c, h) = pair();
    rt.bind_io_completion_callback(&h, cb, 0).unwrap();
    h.read(vec![0; 1]).start().unwrap();
    c.write_all(b"x").unwrap();
    cb_rx.recv_for("callback");
    sink_rx.expect_quiet("the sink, for a handle bound with a callback");
}

#[test]
fn s22_a_second_bind_is_invalid() {
    let rt = runtime();
    let (_c, h) = pair();
    rt.bind_io_completion_callback(&h, Arc::new(|_, _, _| {}), 0).unwrap();
    let e = rt.bind_io_completion_callback(&h, Arc::new(|_, _, _| {}), 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(matches!(rt.bind(None, &h), Err(Error::InvalidArgument(_))));
}

#[test]
fn s26_a_completion_names_its_handle_and_carries_user_data_from_the_start() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let (mut c, h) = pair();
    rt.bind(None, &h).unwrap();
    h.request(iocompletion::Op::Read, vec![0; 4].into()).user_data(77).start().unwrap();
    c.write_all(b"data").unwrap();
    let d = rx.recv_for("read");
    assert_eq!(d.request.user_data(), 77);
    assert!(d.request.handle().expect("the handle is open") == h);

    // A request never keeps its handle alive: dropping the last clone
    // aborts the read, and the completion no longer reaches the handle.
    h.read(vec![0; 4]).start().unwrap();
    drop(h);
    let d = rx.recv_for("aborted read");
    assert!(d.status.is_aborted());
    assert!(d.request.handle().is_none());
    let req = rt.new_request(iocompletion::Buffer::None).unwrap();
    assert!(req.handle().is_none(), "a user post has no handle");
}

#[test]
fn s25_cancel_of_an_unknown_request_is_not_found() {
    let rt = runtime();
    let (mut c, h) = pair();
    rt.bind(None, &h).unwrap();
    let id = h.read(vec![0; 1]).start().unwrap();
    c.write_all(b"x").unwrap();
    util::wait_until("the read completed", || h.cancel(id).is_err());
    let e = h.cancel(id).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(!Error::Timeout.is_not_found());
}
