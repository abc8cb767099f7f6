//! `iocompletion::io::Stream`: the futures-io and tokio I/O traits on a
//! bound stream, against a std peer: short reads, a large write, a real
//! half-close, a reset peer, a write error that is reported, split halves
//! on two tasks (S24, S32, S34).

mod util;

use std::future::Future as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use iocompletion::io::Stream;
use iocompletion::{Handle, Runtime};
use util::{pattern, tcp_pair, DEADLINE};

fn runtime() -> Runtime {
    Runtime::builder().min_threads(2).max_threads(8).build().unwrap()
}

/// (std peer, our stream) over loopback TCP.
fn pair(rt: &Runtime) -> (TcpStream, Stream) {
    let (peer, mine) = tcp_pair();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    peer.set_write_timeout(Some(DEADLINE)).unwrap();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    (peer, Stream::new(h).unwrap())
}

/// Runs `f` on the runtime's pool as a task and waits for it, failing the
/// test after `DEADLINE` instead of hanging.
fn run<T: Send + 'static>(rt: &Runtime, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let task = rt.spawn(f);
    let (tx, rx) = mpsc::channel();
    let rt2 = rt.clone();
    std::thread::spawn(move || {
        let _ = tx.send(rt2.block_on(task));
    });
    rx.recv_timeout(DEADLINE).expect("the task did not finish in time").expect("the task ran")
}

#[test]
fn the_stream_and_its_halves_are_send_and_unpin() {
    fn check<T: Send + Unpin + 'static>() {}
    check::<Stream>();
    check::<iocompletion::io::ReadHalf>();
    check::<iocompletion::io::WriteHalf>();
}

#[test]
fn a_read_into_a_small_slice_keeps_the_rest_for_the_next_reads() {
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    peer.write_all(b"hello, world").unwrap();
    let got = run(&rt, async move {
        let mut out = Vec::new();
        let mut small = [0u8; 5];
        while out.len() < 12 {
            let n = s.read(&mut small).await.unwrap();
            assert!(n > 0 && n <= 5, "a short read gives at most the slice: {n}");
            out.extend_from_slice(&small[..n]);
        }
        out
    });
    assert_eq!(got, b"hello, world");
    rt.shutdown();
}

#[test]
fn a_large_write_reaches_the_peer_whole_and_in_order() {
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    let data = pattern(6 << 20, 7);
    let expected = data.clone();
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        peer.read_to_end(&mut back).unwrap();
        back
    });
    run(&rt, async move {
        s.write_all(&data).await.unwrap();
        s.close().await.unwrap();
    });
    let back = reader.join().unwrap();
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "the bytes came in order");
    rt.shutdown();
}

#[test]
fn close_half_closes_the_peer_sees_the_end_and_this_side_still_reads() {
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    let (tx, rx) = mpsc::channel();
    let peer_thread = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // returns only at the end of the stream
        tx.send(got).unwrap();
        peer.write_all(b"after the half-close").unwrap();
    });
    let got = run(&rt, async move {
        s.write_all(b"bye").await.unwrap();
        s.close().await.unwrap();
        assert!(s.write(b"more").await.is_err(), "no write after close");
        let mut back = vec![0u8; 20];
        s.read_exact(&mut back).await.unwrap();
        back
    });
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), b"bye");
    assert_eq!(got, b"after the half-close");
    peer_thread.join().unwrap();
    rt.shutdown();
}

#[test]
fn the_end_of_the_stream_reads_as_zero_bytes() {
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    peer.write_all(b"last").unwrap();
    drop(peer);
    let got = run(&rt, async move {
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        all
    });
    assert_eq!(got, b"last");
    rt.shutdown();
}

/// Makes the peer's close send a reset.
fn reset(peer: TcpStream) {
    socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
    drop(peer);
}

#[test]
fn a_reset_by_the_peer_is_an_error_of_the_pending_read() {
    let rt = runtime();
    let (peer, mut s) = pair(&rt);
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = started.clone();
    let task = rt.spawn(async move {
        let mut buf = [0u8; 16];
        let mut read = std::pin::pin!(s.read(&mut buf));
        // The first poll starts the read; the peer resets only then.
        std::future::poll_fn(|cx| {
            let r = read.as_mut().poll(cx);
            st.store(true, std::sync::atomic::Ordering::Release);
            r
        })
        .await
    });
    util::wait_until("the read is in flight", || started.load(std::sync::atomic::Ordering::Acquire));
    reset(peer);
    let (tx, rx) = mpsc::channel();
    let rt2 = rt.clone();
    std::thread::spawn(move || {
        let _ = tx.send(rt2.block_on(task));
    });
    let r = rx.recv_timeout(DEADLINE).expect("the read ended").expect("the task ran");
    let e = r.expect_err("a reset stream cannot read");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    rt.shutdown();
}

#[test]
fn a_write_to_a_peer_that_is_gone_reports_its_error_to_a_later_write_or_flush() {
    let rt = runtime();
    let (peer, mut s) = pair(&rt);
    reset(peer);
    let chunk = vec![1u8; 64 * 1024];
    let err = run(&rt, async move {
        // The first writes may be taken before the reset is known; the
        // error must come back from one of the calls, not be lost.
        for _ in 0..1000 {
            if let Err(e) = s.write_all(&chunk).await {
                return e;
            }
            if let Err(e) = s.flush().await {
                return e;
            }
        }
        panic!("1000 writes to a reset peer all succeeded");
    });
    assert!(
        matches!(err.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
        "{err}"
    );
    rt.shutdown();
}

/// A flush is ready once the bytes are in a write request the OS holds: it
/// does not wait for a peer that reads nothing (as a tokio `TcpStream`'s
/// flush does not), and the shutdown after it still delivers every byte.
#[test]
fn s34_a_flush_does_not_wait_for_the_write_in_flight_and_the_shutdown_delivers_it() {
    let rt = runtime();
    let (mut peer, mine) = {
        let (peer, mine) = tcp_pair();
        peer.set_read_timeout(Some(DEADLINE)).unwrap();
        let h = Handle::from(mine);
        rt.bind_async(&h).unwrap();
        // One write request for all of it: far more than the socket
        // buffers hold, so it stays in flight until the peer reads.
        (peer, Stream::with_capacity(h, 4096, 64 << 20).unwrap())
    };
    let mut s = mine;
    let data = pattern(64 << 20, 5);
    let expected = data.clone();
    let (flushed_tx, flushed_rx) = mpsc::channel();
    let task = rt.spawn(async move {
        s.write_all(&data).await.unwrap();
        s.flush().await.unwrap();
        flushed_tx.send(()).unwrap();
        s.shutdown().await.unwrap();
    });
    // The peer reads nothing until the flush returned: a flush that waited
    // for the write would never return.
    flushed_rx.recv_timeout(DEADLINE).expect("the flush waited for a write the peer does not read");
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    assert!(back == expected, "the peer got {} of {} bytes, or not in order", back.len(), expected.len());
    let (tx, rx) = mpsc::channel();
    let rt2 = rt.clone();
    std::thread::spawn(move || {
        let _ = tx.send(rt2.block_on(task));
    });
    rx.recv_timeout(DEADLINE).expect("the task ended").expect("the task ran");
    rt.shutdown();
}

#[test]
fn split_halves_echo_on_two_tasks() {
    let rt = runtime();
    let (mut peer, s) = pair(&rt);
    let (mut r, mut w) = s.into_split();
    let data = pattern(1 << 20, 3);
    let expected = data.clone();
    let (tx, rx) = futures_channel();
    let reader = rt.spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            tx.send(buf[..n].to_vec()).unwrap();
        }
        r
    });
    let writer = rt.spawn(async move {
        while let Some(chunk) = rx.recv().await {
            w.write_all(&chunk).await.unwrap();
        }
        w.close().await.unwrap();
        w
    });
    let mut p2 = peer.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        p2.write_all(&data).unwrap();
        p2.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    feeder.join().unwrap();
    assert!(back == expected, "the echo came back whole and in order");
    let r = run(&rt, async move { reader.await.unwrap() });
    let w = run(&rt, async move { writer.await.unwrap() });
    assert!(Stream::reunite(r, w).is_ok(), "the halves are of one stream");
    rt.shutdown();
}

/// A small unbounded channel whose receiver is a future (a mutex, a queue
/// and a waker), so the test needs no other crate's runtime.
fn futures_channel() -> (Sender, Receiver) {
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Chan::default()));
    (Sender(shared.clone()), Receiver(shared))
}

#[derive(Default)]
struct Chan {
    queue: std::collections::VecDeque<Vec<u8>>,
    closed: bool,
    waker: Option<std::task::Waker>,
}

struct Sender(std::sync::Arc<std::sync::Mutex<Chan>>);
struct Receiver(std::sync::Arc<std::sync::Mutex<Chan>>);

impl Sender {
    fn send(&self, v: Vec<u8>) -> Result<(), ()> {
        let w = {
            let mut c = self.0.lock().unwrap();
            c.queue.push_back(v);
            c.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let w = {
            let mut c = self.0.lock().unwrap();
            c.closed = true;
            c.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Receiver {
    async fn recv(&self) -> Option<Vec<u8>> {
        std::future::poll_fn(|cx| {
            let mut c = self.0.lock().unwrap();
            if let Some(v) = c.queue.pop_front() {
                return std::task::Poll::Ready(Some(v));
            }
            if c.closed {
                return std::task::Poll::Ready(None);
            }
            c.waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

#[test]
fn the_tokio_traits_read_and_write_the_same_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    peer.write_all(b"tokio traits").unwrap();
    let got = run(&rt, async move {
        let mut buf = [0u8; 12];
        AsyncReadExt::read_exact(&mut s, &mut buf).await.unwrap();
        AsyncWriteExt::write_all(&mut s, b"reply").await.unwrap();
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        buf
    });
    assert_eq!(&got, b"tokio traits");
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"reply");
    rt.shutdown();
}

#[test]
fn the_stream_works_under_another_executor() {
    let rt = runtime();
    let (mut peer, mut s) = pair(&rt);
    peer.write_all(b"abc").unwrap();
    let mut buf = [0u8; 3];
    futures::executor::block_on(s.read_exact(&mut buf)).unwrap();
    assert_eq!(&buf, b"abc");
    rt.shutdown();
}

#[test]
fn a_stream_needs_a_bound_connected_stream_handle() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let unbound = Handle::from(mine);
    assert!(Stream::new(unbound.clone()).is_err(), "not bound");
    let listener = Handle::from(util::listener());
    rt.bind_async(&listener).unwrap();
    assert!(Stream::new(listener).is_err(), "a listener is no stream");
    rt.bind_async(&unbound).unwrap();
    assert!(Stream::with_capacity(unbound, 0, 1).is_err(), "a capacity of 0");
    rt.shutdown();
}

#[cfg(unix)]
#[test]
fn a_unix_stream_reads_and_writes_through_the_traits() {
    let rt = runtime();
    let (mut peer, mine) = std::os::unix::net::UnixStream::pair().unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let mut s = Stream::new(h).unwrap();
    peer.write_all(b"unix").unwrap();
    let got = run(&rt, async move {
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"back").await.unwrap();
        s.close().await.unwrap();
        buf
    });
    assert_eq!(&got, b"unix");
    let mut back = Vec::new();
    peer.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"back");
    rt.shutdown();
}
