//! Faults a server meets, one after another on one runtime: a peer that
//! resets mid-transfer, a half-close, a client that connects and vanishes,
//! a burst of connects, a slow reader. Each request completes exactly once
//! with its buffer (S2, S23, S24, S26), and at the end the process holds
//! exactly the descriptors it held before the runtime existed.
//!
//! One test in this file on purpose: the descriptor count is the whole
//! process's, so no other test may open files meanwhile.

mod util;

use std::collections::HashSet;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use iocompletion::{Handle, Op, Runtime};
use util::{bind, started, tcp_pair, Collector};

/// Open descriptors of this process, where the OS lists them (Linux; under
/// Wine `/proc` lists Wine's own descriptors, not the program's handles).
fn open_fds() -> Option<usize> {
    if cfg!(target_os = "linux") {
        std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
    } else {
        None
    }
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// The next `n` completions are exactly `ids`, once each; returns them.
#[track_caller]
fn exactly(c: &Collector, ids: &[iocompletion::RequestId]) -> Vec<util::Completion> {
    let done = c.recv_n(ids.len());
    let seen: HashSet<_> = done.iter().map(|d| d.id()).collect();
    assert_eq!(seen.len(), done.len(), "a request completed twice: {done:?}");
    assert_eq!(seen, ids.iter().copied().collect::<HashSet<_>>());
    c.expect_none(Duration::from_millis(100));
    done
}

fn reset_mid_transfer(rt: &Runtime) {
    let (client, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(rt, &h);
    // A write far larger than the socket buffers stays pending while the
    // peer does not read; a read waits for data that never comes.
    let big = 8 << 20;
    let w = started(h.write(vec![5; big]).start());
    let r = started(h.read(vec![0; 64]).start());
    reset(client);
    for d in exactly(&c, &[w, r]) {
        match d.request.op() {
            Op::Write => {
                assert!(!d.status.is_success() || d.bytes == big, "a cut write fails: {d:?}");
                assert_eq!(d.request.into_buffer().len(), big, "the write's buffer comes back");
            }
            _ => {
                // The reset fails the read, or (when the write took the
                // error first) the read sees the end of the stream: 0
                // bytes, and the length says so (S32).
                assert!(!d.status.is_success() || d.bytes == 0, "{d:?}");
                let want = if d.status.is_success() { 0 } else { 64 };
                assert_eq!(d.request.into_buffer().len(), want, "{:?}", d.status);
            }
        }
    }
}

fn half_close(rt: &Runtime) {
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(rt, &h);
    let r = started(h.read(vec![0; 64]).start());
    client.shutdown(Shutdown::Write).unwrap();
    let d = exactly(&c, &[r]).pop().unwrap();
    assert_eq!(d.ok(), 0, "the peer's end of stream");
    // The other direction still works.
    let w = started(h.write(b"still here".to_vec()).start());
    assert_eq!(exactly(&c, &[w]).pop().unwrap().ok(), 10);
    let mut got = [0u8; 10];
    client.set_read_timeout(Some(util::DEADLINE)).unwrap();
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
}

fn connect_and_vanish(rt: &Runtime) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let lh = Handle::from(l);
    let c = bind(rt, &lh);
    let a = started(lh.accept().start());
    reset(TcpStream::connect(addr).unwrap());
    let mut d = exactly(&c, &[a]).pop().unwrap();
    if d.status.is_success() {
        // Accepted before the reset was seen: the connection reports it.
        let conn = d.request.take_accepted().expect("the accepted connection");
        let cc = bind(rt, &conn);
        match conn.read(vec![0; 8]).start() {
            // Either the reset is known at start (S23: an error, the
            // buffer back, nothing posted) ...
            Err(e) => {
                assert_eq!(e.buffer.len(), 8);
                cc.expect_none(Duration::from_millis(100));
            }
            // ... or the read completes once with it.
            Ok(r) => {
                let d = exactly(&cc, &[r]).pop().unwrap();
                assert!(!d.status.is_success() || d.bytes == 0, "{d:?}");
            }
        }
    }
}

fn burst_of_connects(rt: &Runtime) {
    const CLIENTS: usize = 200;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let lh = Handle::from(l);
    let c = bind(rt, &lh);
    let mut pending: HashSet<_> = (0..16).map(|_| started(lh.accept().start())).collect();
    // The clients connect from a thread of their own, all at once, while
    // this thread takes the accepts and starts new ones (more clients than
    // the listener's backlog holds).
    let connecting = std::thread::spawn(move || {
        (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect::<Vec<_>>()
    });
    let mut conns = Vec::new();
    while conns.len() < CLIENTS {
        let mut d = c.recv_for("an accept of the burst");
        assert!(pending.remove(&d.id()), "an accept completed twice or unasked: {d:?}");
        d.ok();
        conns.push(d.request.take_accepted().expect("the connection"));
        if conns.len() + pending.len() < CLIENTS {
            pending.insert(started(lh.accept().start()));
        }
    }
    assert!(pending.is_empty());
    c.expect_none(Duration::from_millis(100));
    drop(connecting.join().unwrap());
}

fn slow_reader(rt: &Runtime) {
    let (client, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(rt, &h);
    let len = 4 << 20;
    let w = started(h.write(vec![9; len]).start());
    // The reader takes 1 KiB at a time; the write completes once, whole.
    let reader = std::thread::spawn(move || {
        let mut client = client;
        client.set_read_timeout(Some(util::DEADLINE)).unwrap();
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while total < len {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early at {total}");
            assert!(buf[..n].iter().all(|&b| b == 9));
            total += n;
        }
        total
    });
    assert_eq!(exactly(&c, &[w]).pop().unwrap().ok(), len);
    assert_eq!(reader.join().unwrap(), len);
}

#[test]
fn s2_faults_complete_every_request_once_and_leak_no_descriptor() {
    let before = open_fds();
    {
        let rt = Runtime::builder().min_threads(2).max_threads(8).build().unwrap();
        reset_mid_transfer(&rt);
        half_close(&rt);
        connect_and_vanish(&rt);
        burst_of_connects(&rt);
        slow_reader(&rt);
        rt.shutdown();
    }
    if let Some(before) = before {
        assert_eq!(open_fds(), Some(before), "every descriptor the faults opened is closed");
    }
}
