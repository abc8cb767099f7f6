//! UDP requests on loopback sockets: send_to and recv_from (S26, S27).

mod util;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::time::Duration;

use iocompletion::{Error, Handle, Op};
use util::{bind, pattern, runtime, started};

fn udp() -> (Handle, std::net::SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    (Handle::from(s), addr)
}

#[test]
fn s27_udp_send_to_and_recv_from_carry_a_datagram_and_its_source() {
    let rt = runtime();
    let (a, a_addr) = udp();
    let (b, b_addr) = udp();
    let ca = bind(&rt, &a);
    let cb = bind(&rt, &b);

    let rid = started(b.recv_from(vec![0; 1500]).start());
    let sid = started(a.send_to(b"datagram".to_vec(), b_addr).start());

    let sent = ca.recv();
    assert_eq!(sent.id(), sid);
    assert_eq!(sent.request.op(), Op::SendTo(b_addr));
    assert_eq!(sent.ok(), 8);

    let got = cb.recv();
    assert_eq!(got.id(), rid);
    assert_eq!(got.request.addr(), Some(a_addr), "recv_from gives the source address");
    assert_eq!(got.ok(), 8);
    let buf = got.request.into_buffer().into_vec();
    assert_eq!(buf, b"datagram", "the length is the datagram's (S32)");
    assert_eq!(buf.capacity(), 1500, "the same allocation comes back");
}

/// One behaviour on every backend: a datagram larger than the buffer
/// completes with success, the bytes that fit and its source address (the
/// rest of the datagram is dropped, as `recvfrom` does on Unix).
#[test]
fn s27_a_datagram_larger_than_the_buffer_completes_with_the_bytes_that_fit_and_its_source() {
    let rt = runtime();
    let (a, a_addr) = udp();
    let (b, b_addr) = udp();
    let ca = bind(&rt, &a);
    let cb = bind(&rt, &b);

    let rid = started(b.recv_from(vec![0; 10]).start());
    started(a.send_to(pattern(100, 3), b_addr).start());
    assert_eq!(ca.recv().ok(), 100);

    let got = cb.recv();
    assert_eq!(got.id(), rid);
    assert_eq!(got.ok(), 10, "the bytes that fit");
    assert_eq!(got.request.addr(), Some(a_addr), "the source address is there too");
    assert_eq!(got.request.into_buffer().into_vec(), pattern(100, 3)[..10]);

    // The next datagram is read whole: the rest of the first was dropped.
    let rid = started(b.recv_from(vec![0; 64]).start());
    started(a.send_to(b"next".to_vec(), b_addr).start());
    assert_eq!(ca.recv().ok(), 4);
    let got = cb.recv();
    assert_eq!(got.id(), rid);
    assert_eq!(got.ok(), 4);
}

#[test]
fn s27_udp_datagrams_arrive_whole_and_once() {
    let rt = runtime();
    let (a, _) = udp();
    let rs = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Loopback drops datagrams only when the receiver's buffer overflows:
    // make it hold everything sent even if the receives fall behind.
    socket2::SockRef::from(&rs).set_recv_buffer_size(4 << 20).unwrap();
    let b_addr = rs.local_addr().unwrap();
    let b = Handle::from(rs);
    let ca = bind(&rt, &a);
    let cb = bind(&rt, &b);

    const N: usize = 200;
    for _ in 0..N {
        started(b.recv_from(vec![0; 2048]).start());
    }
    for i in 0..N {
        started(a.send_to(pattern(1 + i * 7, i as u64), b_addr).start());
    }
    for d in ca.recv_n(N) {
        d.ok();
    }
    let mut seen = HashSet::new();
    for d in cb.recv_n(N) {
        let n = d.ok();
        let i = (n - 1) / 7;
        assert_eq!(d.data(), pattern(1 + i * 7, i as u64), "datagram {i} arrived whole");
        assert!(seen.insert(i), "datagram {i} arrived twice");
    }
}

#[test]
fn s26_zero_length_datagram_is_sent_and_received() {
    let rt = runtime();
    let (a, a_addr) = udp();
    let (b, b_addr) = udp();
    let ca = bind(&rt, &a);
    let cb = bind(&rt, &b);

    started(b.recv_from(vec![0; 64]).start());
    started(a.send_to(Vec::new(), b_addr).start());
    assert_eq!(ca.recv().ok(), 0);
    let got = cb.recv();
    assert_eq!(got.ok(), 0);
    assert_eq!(got.request.addr(), Some(a_addr));
}

#[test]
fn s23_stream_and_file_requests_on_udp_fail_at_start() {
    let rt = runtime();
    let (a, _) = udp();
    let c = bind(&rt, &a);
    for (what, r) in [
        ("read", a.read(vec![0; 4]).start().map_err(|e| e.map_buffer(|b| b.len()))),
        ("write", a.write(vec![0; 4]).start().map_err(|e| e.map_buffer(|b| b.len()))),
        ("read_at", a.read(vec![0; 4]).at(0).start().map_err(|e| e.map_buffer(|b| b.len()))),
        (
            "vectored recv_from",
            a.request(Op::RecvFrom, iocompletion::Buffer::Vectored(vec![vec![0; 4]]))
                .start()
                .map_err(|e| e.map_buffer(|b| b.len())),
        ),
    ] {
        let e = r.expect_err(what);
        assert!(matches!(e.error, Error::InvalidArgument(_)), "{what}: {e:?}");
        assert_eq!(e.buffer, 4, "{what} hands its buffer back");
    }
    c.expect_none(Duration::from_millis(100));
}

#[test]
fn s24_close_aborts_pending_receives() {
    let rt = runtime();
    let (a, _) = udp();
    let c = bind(&rt, &a);
    let ids: HashSet<_> = (0..20).map(|_| started(a.recv_from(vec![0; 100]).start())).collect();
    a.close();
    let done: HashSet<_> = c
        .recv_n(20)
        .into_iter()
        .map(|d| {
            assert!(d.status.is_aborted(), "{d:?}");
            let id = d.id();
            assert_eq!(d.request.into_buffer().len(), 100);
            id
        })
        .collect();
    assert_eq!(done, ids);
}

/// A datagram to an address of the other family fails exactly once, and
/// the buffer comes back either way.
#[test]
fn s23_send_to_an_address_of_the_wrong_family_fails_exactly_once() {
    let rt = runtime();
    let (a, _) = udp();
    let c = bind(&rt, &a);
    let v6: std::net::SocketAddr = "[::1]:9".parse().unwrap();
    match a.send_to(b"nowhere".to_vec(), v6).start() {
        Ok(id) => {
            let d = c.recv();
            assert_eq!(d.id(), id);
            assert!(!d.status.is_success(), "{d:?}");
            assert_eq!(d.request.into_buffer().into_vec(), b"nowhere");
        }
        Err(e) => {
            assert!(matches!(e.error, Error::Io(_)), "{e:?}");
            assert_eq!(e.buffer, b"nowhere");
        }
    }
    c.expect_none(Duration::from_millis(100));
}
