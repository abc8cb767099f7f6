//! One-shot completions: a request's own `FnOnce` closure runs exactly once
//! (S2), with an `io::Result` and the buffer, on success, failure and abort.

mod util;

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc;

use iocompletion::{Handle, Runtime};
use util::{tcp_pair, DEADLINE};

#[test]
fn s2_read_then_runs_its_closure_once_with_the_result_and_the_buffer() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();

    // A one-shot sender moves into the closure: no Mutex, no Arc.
    let (tx, rx) = mpsc::channel();
    h.read(Vec::with_capacity(16)).then(move |(n, buf)| tx.send((n.unwrap(), buf)).unwrap()).unwrap();
    peer.write_all(b"one shot").unwrap();
    let (n, buf) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!((n, &buf[..]), (8, &b"one shot"[..]));
    assert!(rx.recv_timeout(std::time::Duration::from_millis(50)).is_err(), "ran once");

    let (tx, rx) = mpsc::channel();
    h.write(b"back".to_vec()).then(move |(n, buf)| tx.send((n.unwrap(), buf)).unwrap()).unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), (4, b"back".to_vec()));
    rt.shutdown();
}

#[test]
fn s24_a_one_shot_read_aborted_by_a_close_gets_the_aborted_error_and_its_buffer() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let (tx, rx) = mpsc::channel();
    h.read(vec![9; 32]).then(move |(n, buf)| tx.send((n, buf)).unwrap()).unwrap();
    h.close();
    let (n, buf) = rx.recv_timeout(DEADLINE).unwrap();
    let e = n.unwrap_err();
    assert!(iocompletion::Status::from_io_error(&e).is_aborted(), "{e}");
    assert_eq!(buf, vec![9; 32], "an aborted read leaves the buffer as it was");
}

#[test]
fn s2_accept_then_and_connect_then_hand_over_the_connection() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let listener = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    rt.bind_async(&listener).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Handle::from(
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap(),
    );
    rt.bind_async(&client).unwrap();

    let (atx, arx) = mpsc::channel();
    listener.accept().then(move |r| atx.send(r).unwrap()).unwrap();
    let (ctx, crx) = mpsc::channel();
    client.connect(addr).then(move |r| ctx.send(r).unwrap()).unwrap();
    crx.recv_timeout(DEADLINE).unwrap().unwrap();
    let (conn, peer) = arx.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(peer, Some(client.local_addr().unwrap()));
    assert_eq!(
        conn.with_socket(|s| s.peer_addr()).unwrap().as_socket().unwrap(),
        client.local_addr().unwrap()
    );
    rt.shutdown();
}

#[test]
fn s23_a_one_shot_request_that_cannot_start_drops_its_closure_unrun() {
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine); // not bound
    let (tx, rx) = mpsc::channel::<()>();
    let e = h.read(vec![1; 4]).then(move |(_, _)| tx.send(()).unwrap()).unwrap_err();
    assert_eq!(e.buffer.len(), 4);
    assert!(rx.recv().is_err(), "the closure was dropped without running");
}
