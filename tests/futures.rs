//! S34: every request can be awaited, on any executor; dropping the future
//! cancels the request, whose one completion still comes, with its buffer.

mod util;

use std::future::IntoFuture;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use iocompletion::{Error, Handle, Op, Runtime};
use util::{pattern, tcp_pair, TempFile, DEADLINE};

fn bound(rt: &Runtime, h: &Handle) {
    rt.bind_async(h).unwrap();
}

#[test]
fn s34_requests_resolve_under_a_minimal_executor() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    bound(&rt, &h);

    let read = h.read(Vec::with_capacity(64)).into_future();
    peer.write_all(b"ping").unwrap();
    let (n, buf) = futures::executor::block_on(read);
    assert_eq!(n.unwrap(), 4);
    assert_eq!(buf, b"ping");

    let data = pattern(100_000, 4);
    let (n, back) = futures::executor::block_on(h.write(data.clone()).into_future());
    assert_eq!(n.unwrap(), data.len());
    assert_eq!(back, data, "the written buffer comes back");
    let mut got = vec![0; data.len()];
    std::io::Read::read_exact(&mut peer, &mut got).unwrap();
    assert_eq!(got, data);

    // A file at an offset, both ways.
    let f = TempFile::new("s34-file");
    let file = util::file_handle(std::fs::OpenOptions::new().read(true).write(true).open(f.path()).unwrap());
    bound(&rt, &file);
    let (n, _) = futures::executor::block_on(file.write(b"offset".to_vec()).at(10).into_future());
    assert_eq!(n.unwrap(), 6);
    let (n, buf) = futures::executor::block_on(file.read(Vec::with_capacity(16)).at(10).into_future());
    assert_eq!(n.unwrap(), 6);
    assert_eq!(buf, b"offset");
    rt.shutdown();
}

#[test]
fn s34_requests_resolve_under_tokio() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let listener = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    bound(&rt, &listener);
    let addr = listener.local_addr().unwrap();
    let client = Handle::from(
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap(),
    );
    bound(&rt, &client);

    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let echoed = tokio_rt.block_on(async {
        let accept = listener.accept().into_future();
        client.connect(addr).await.unwrap();
        let (conn, _peer) = accept.await.unwrap();
        bound(&rt, &conn);
        let (n, _) = client.write(b"over tokio".to_vec()).await;
        assert_eq!(n.unwrap(), 10);
        let (n, buf) = conn.read(Vec::with_capacity(32)).await;
        assert_eq!(n.unwrap(), buf.len());
        buf
    });
    assert_eq!(echoed, b"over tokio");
    rt.shutdown();
}

#[test]
fn s34_a_request_that_cannot_start_resolves_with_its_error_and_buffer() {
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine); // not bound
    let (r, buf) = futures::executor::block_on(h.read(vec![7; 8]).into_future());
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(buf, vec![7; 8], "the buffer comes back");
    let f = h.request(Op::Read, vec![1u8].into()).into_future();
    assert_eq!(f.id(), None, "refused at start");
    match futures::executor::block_on(f) {
        Err(e) => assert!(matches!(e.error, Error::InvalidArgument(_)), "{e}"),
        Ok(c) => panic!("started unbound: {c:?}"),
    }
    // Bound for futures only: a request with no target of its own is
    // refused at start, with its buffer, rather than completed to no one.
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    rt.bind_async(&h).unwrap();
    let e = h.read(vec![3; 4]).start().unwrap_err();
    assert!(e.to_string().contains("bind_async"), "{e}");
    assert_eq!(e.buffer.len(), 4);
    rt.shutdown();
}

/// Dropping the future cancels the request; its completion still comes
/// (aborted, with its buffer). The handle is on a port no thread serves,
/// so the test takes that completion itself.
#[test]
fn s34_dropping_a_future_cancels_its_request_which_completes_once_with_its_buffer() {
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let (port, _rt) = util::on_own_port(&h);

    let fut = h.request(Op::Read, Vec::<u8>::with_capacity(64).into()).into_future();
    let id = fut.id().expect("started");
    match port.get(Some(Duration::ZERO)) {
        Err(Error::Timeout) => {}
        other => panic!("the read completed before any data: {other:?}"),
    }
    drop(fut);
    let p = port.get(Some(DEADLINE)).expect("the cancelled read's completion");
    assert!(p.status.is_aborted(), "{:?}", p.status);
    let mut req = p.request.expect("the request");
    assert_eq!(req.id(), id);
    assert!(req.take_callback().is_some(), "the future's slot is still the target");
    assert_eq!(req.into_buffer().capacity(), 64, "the buffer came back with it");
    match port.get(Some(Duration::ZERO)) {
        Err(Error::Timeout) => {}
        other => panic!("a second completion: {other:?}"),
    }
    // Cancelling again finds nothing.
    assert!(h.cancel(id).is_err());
}

/// A completion that arrives before the first poll is kept for it, and a
/// future dropped after its completion came frees the request once.
#[test]
fn s34_a_completion_before_the_first_poll_is_kept() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    bound(&rt, &h);
    peer.write_all(b"early").unwrap();
    let fut = h.request(Op::Read, Vec::<u8>::with_capacity(8).into()).into_future();
    assert!(fut.id().is_some(), "started");
    util::wait_until("the read completes", || rt.stats().completions >= 1);
    let done = futures::executor::block_on(fut).unwrap();
    assert_eq!(done.result().unwrap(), 5);
    assert_eq!(done.into_buffer().into_vec(), b"early");

    rt.shutdown();
}
