//! User-posted completions as requests: buffers and counts (S2, S9, S26).

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iocompletion::{Buffer, Error, IoCompletionManager, Op, Request, Status};
use util::{runtime, Collector};

#[test]
fn s9_a_posted_request_comes_back_with_its_buffer_and_bytes() {
    let rt = runtime();
    let c = Collector::new();
    let mut req = rt.new_request(Buffer::Single(b"payload".to_vec())).unwrap();
    req.set_user_data(0xC0FFEE);
    req.set_callback(c.sink());
    let id = req.id();
    rt.post(None, 1234, req).unwrap();

    let d = c.recv();
    assert_eq!(d.id(), id);
    assert_eq!(d.status, Status::SUCCESS);
    assert_eq!(d.bytes, 1234, "the posted value, verbatim");
    assert_eq!(d.request.op(), Op::Post);
    assert_eq!(d.request.user_data(), 0xC0FFEE);
    assert_eq!(d.request.into_buffer().into_vec(), b"payload");
}

#[test]
fn s9_posts_without_their_own_callback_go_to_the_sink() {
    let rt = runtime();
    let c = Collector::new();
    rt.set_completion_sink(c.sink()).unwrap();
    for i in 0..100 {
        rt.post(None, i, rt.new_request(Buffer::Vectored(vec![vec![i as u8; 3]; 2])).unwrap()).unwrap();
    }
    let mut seen: Vec<usize> = c
        .recv_n(100)
        .into_iter()
        .map(|d| {
            let i = d.bytes;
            assert_eq!(d.request.into_buffer().into_vec(), vec![i as u8; 6]);
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

#[test]
fn s2_every_post_runs_its_callback_exactly_once() {
    let rt = iocompletion::Runtime::builder().min_threads(2).max_threads(8).build().unwrap();
    const N: usize = 20_000;
    let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..N {
        let (hits, done) = (hits.clone(), done.clone());
        rt.post_callback(i, move |status, bytes, _req| {
            assert!(status.is_success());
            hits[bytes].fetch_add(1, Ordering::Relaxed);
            done.fetch_add(1, Ordering::Release);
        })
        .unwrap();
    }
    util::wait_until("every posted callback ran", || done.load(Ordering::Acquire) == N);
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h.load(Ordering::Relaxed), 1, "post {i}");
    }
}

#[test]
fn s23_a_post_to_a_closed_port_fails_and_returns_the_buffer() {
    let rt = runtime();
    let c = Collector::new();
    rt.set_completion_sink(c.sink()).unwrap();
    let port = rt.create_port().unwrap();
    rt.close_port(&port).unwrap();
    let e = rt.post(Some(&port), 1, rt.new_request(b"back".to_vec().into()).unwrap()).unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(e.buffer.into_vec(), b"back");
    c.expect_none(Duration::from_millis(100));
}

#[test]
fn s23_a_post_with_nowhere_to_go_fails_and_returns_the_buffer() {
    let rt = runtime();
    let e = rt.post(None, 1, rt.new_request(b"orphan".to_vec().into()).unwrap()).unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(e.buffer.into_vec(), b"orphan");
}

#[test]
fn s23_posting_after_shutdown_is_unavailable_and_returns_the_buffer() {
    let rt = runtime();
    let mut req: Request = rt.new_request(b"late".to_vec().into()).unwrap();
    req.set_callback(Collector::new().sink());
    rt.shutdown();
    let e = rt.post(None, 0, req).unwrap_err();
    assert!(matches!(e.error, Error::Unavailable), "{e:?}");
    assert_eq!(e.buffer.into_vec(), b"late");
}
