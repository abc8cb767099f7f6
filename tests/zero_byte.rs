//! S31: a read with no room waits until the stream is readable (data, its
//! end, or an error), completes with 0 bytes, and takes no data: the IOCP
//! idiom for holding idle connections without a buffer each.
//!
//! The handles are bound to a port no thread serves, so the test itself
//! takes the packets: "not completed yet" is then a fact of the queue
//! (`get` with a zero timeout), not a guess about timing.

mod util;

use std::io::Write;
use std::time::Duration;

use iocompletion::Vectored;
use iocompletion::{Error, Handle, Op, Port};
use util::{next_packet, on_own_port, started, tcp_pair};

fn nothing_yet(port: &Port, what: &str) {
    match port.get(Some(Duration::ZERO)) {
        Err(Error::Timeout) => {}
        Ok(p) => panic!("{what}: completed before the stream was readable: {:?}", p.status),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn s31_a_zero_byte_read_completes_when_data_arrives_and_takes_none() {
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    let (port, _rt) = on_own_port(&h);

    let id = started(h.read(Vec::new()).start());
    nothing_yet(&port, "a zero-byte read on an idle connection");
    client.write_all(b"ping").unwrap();
    let p = next_packet(&port);
    let req = p.request.expect("the read's request");
    assert_eq!(req.id(), id);
    assert_eq!(req.op(), Op::Read);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 0);

    // The data is still there for the real read, which completes at once.
    started(h.read(vec![0; 16]).start());
    let p = next_packet(&port);
    assert_eq!(p.bytes, 4);
    assert_eq!(&p.request.unwrap().into_buffer().into_vec()[..4], b"ping");
}

#[test]
fn s31_a_zero_byte_read_with_data_already_waiting_completes_at_once() {
    let (mut client, server) = tcp_pair();
    client.write_all(b"early").unwrap();
    // The data may still be on its way through loopback: wait for it with
    // a blocking peek first, so "already waiting" is true.
    let mut one = [0u8; 1];
    server.peek(&mut one).unwrap();
    let h = Handle::from(server);
    let (port, _rt) = on_own_port(&h);

    started(h.read(Vec::new()).start());
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 0);
}

#[test]
fn s31_a_zero_byte_read_completes_at_the_end_of_the_stream() {
    let (client, server) = tcp_pair();
    let h = Handle::from(server);
    let (port, _rt) = on_own_port(&h);

    started(h.read(Vec::new()).start());
    nothing_yet(&port, "a zero-byte read before the peer closed");
    drop(client);
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 0);
}

#[test]
fn s31_a_zero_byte_read_completes_with_the_error_of_a_reset() {
    let (client, server) = tcp_pair();
    let h = Handle::from(server);
    let (port, _rt) = on_own_port(&h);

    started(h.read(Vectored(vec![Vec::new(), Vec::new()])).start());
    nothing_yet(&port, "a vectored zero-byte read before the reset");
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    let p = next_packet(&port);
    assert!(!p.status.is_success(), "a reset is an error, got {:?}", p.status);
    assert_eq!(p.bytes, 0);
}

/// A zero-byte read started after the peer's reset has arrived reports the
/// reset's error at once, on every driver: the start's own look at the
/// socket (a poll) sees the error. It fails at start or completes with
/// it (S23: either, never both).
#[cfg(unix)]
#[test]
fn s31_a_zero_byte_read_started_after_a_reset_completes_with_its_error() {
    use std::os::fd::AsRawFd;

    let (client, server) = tcp_pair();
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    // Wait until the reset is there (a poll, which leaves the error on the
    // socket for the read to find).
    let mut p = libc::pollfd { fd: server.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout_ms = util::DEADLINE.as_millis() as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call, on an open fd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert_eq!(n, 1, "the reset arrives");
    assert_ne!(p.revents & libc::POLLERR, 0, "the reset leaves an error on the socket");
    let h = Handle::from(server);
    let (port, _rt) = on_own_port(&h);

    let e: std::io::Error = match h.read(Vec::new()).start() {
        Err(e) => {
            nothing_yet(&port, "a zero-byte read that failed at start");
            e.error.into()
        }
        Ok(_) => {
            let p = next_packet(&port);
            assert_eq!(p.bytes, 0);
            p.status.result(p.bytes).expect_err("a reset is an error")
        }
    };
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}
