//! A request in the kernel keeps its handle's descriptor (S24): closing the
//! handle aborts or completes it, and its bytes never reach whatever gets
//! the descriptor's number next.
//!
//! This file holds one test on purpose: it reuses a descriptor number, and
//! another test thread of the same process could take that number first.
#![cfg(unix)]

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Mutex;

use iocompletion::Vectored;
use iocompletion::{Handle, Runtime};
use util::{bind, listener, tcp_pair, DEADLINE};

/// In one callback, on the only pool thread: a vectored write of 2,000
/// parts on X, a write on Y, Y closed, a new connection accepted (it gets
/// Y's descriptor number). Y's bytes go to Y's peer or nowhere; the new
/// connection's peer sees only what is written on it.
#[test]
fn s24_a_closed_handles_write_never_reaches_the_connection_that_reuses_its_number() {
    let rt = Runtime::builder().min_threads(1).max_threads(1).build().unwrap();
    let (mut x_peer, x_conn) = tcp_pair();
    let (mut y_peer, y_conn) = tcp_pair();
    let x = Handle::from(x_conn);
    let y = Handle::from(y_conn);
    let cx = bind(&rt, &x);
    let cy = bind(&rt, &y);
    let l = listener();
    let mut z_peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();

    let parts: Vec<Vec<u8>> = (0..2000).map(|i| vec![(i % 251) as u8; 8]).collect();
    let expected_x: Vec<u8> = parts.concat();
    let scene = Mutex::new(Some((x.clone(), y.clone(), l, parts)));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| {
        let Some((x, y, l, parts)) = scene.lock().unwrap().take() else { return };
        let y_fd = y.as_raw_fd();
        let x_started = x.write(Vectored(parts)).start().is_ok();
        let y_started = y.write(b"for Y only".to_vec()).start().is_ok();
        y.close();
        let z = l.accept().map(|(s, _)| s);
        let _ = tx.lock().unwrap().send((x_started, y_started, y_fd, z));
    })
    .unwrap();

    let (x_started, y_started, y_fd, z) = rx.recv_timeout(DEADLINE).expect("the callback ran");
    let mut z = z.expect("accept");
    assert!(x_started && y_started, "both writes started");
    eprintln!("Y had fd {y_fd}, the new connection has fd {}", z.as_raw_fd());

    let dy = cy.recv_for("Y's write");
    let dx = cx.recv_for("X's write");
    // Whatever Y's write did is done: the new connection's first bytes are
    // the ones written on it.
    z.write_all(b"MARK").unwrap();
    z_peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut first = [0u8; 4];
    z_peer.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"MARK", "the new connection's peer got another connection's bytes first");

    if dy.status.is_success() {
        assert_eq!(dy.bytes, 10);
        y_peer.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = [0u8; 10];
        y_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"for Y only", "a write that reports success reached its own peer");
    } else {
        assert!(dy.status.is_aborted(), "Y's write: {dy:?}");
    }
    assert_eq!(dx.ok(), expected_x.len(), "X's write of 2,000 parts");
    x_peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = vec![0u8; expected_x.len()];
    x_peer.read_exact(&mut got).unwrap();
    assert!(got == expected_x, "X's parts arrive in order");
    rt.shutdown();
}
