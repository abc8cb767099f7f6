//! S18-S20: the host extension appended to every request.

mod util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use iocompletion::{
    Buffer, Error, Handle, IoCompletionManager, Request, Runtime, Status, MAX_HOST_OVERLAPPED_SIZE,
};
use util::collector;

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    (c, l.accept().unwrap().0)
}

#[test]
fn s18_host_overlapped_size_is_fixed_and_every_request_carries_it() {
    let rt = Runtime::builder().min_threads(1).host_overlapped_size(24).build().unwrap();
    for _ in 0..3 {
        assert_eq!(rt.host_overlapped_size().unwrap(), 24);
    }
    let req = rt.new_request(Buffer::None).unwrap();
    assert_eq!(req.extension().len(), 24);
    assert_eq!(req.extension().as_ptr() as usize % 16, 0, "the extension is 16-byte aligned");
    let zero = Runtime::builder().min_threads(1).build().unwrap();
    assert_eq!(zero.new_request(Buffer::None).unwrap().extension().len(), 0);
}

#[test]
fn s18_an_oversized_extension_is_rejected() {
    let e = Runtime::builder().host_overlapped_size(MAX_HOST_OVERLAPPED_SIZE + 1).build().unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("host_overlapped_size")), "{e}");
}

#[test]
fn s19_initializer_runs_once_per_request_on_zeroed_bytes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let dirty = Arc::new(AtomicUsize::new(0));
    let (c, d) = (calls.clone(), dirty.clone());
    let rt = Runtime::builder()
        .min_threads(1)
        .host_overlapped_size(16)
        .initializer(move |req: &mut Request| {
            if req.extension().iter().any(|&b| b != 0) {
                d.fetch_add(1, Ordering::SeqCst);
            }
            let n = c.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            req.extension_mut()[..8].copy_from_slice(&n.to_le_bytes());
            Ok(())
        })
        .build()
        .unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let (mut client, server) = pair();
    let server = Handle::from(server);
    rt.bind(None, &server).unwrap();
    for _ in 0..5 {
        server.read(vec![0; 1]).start().unwrap();
    }
    for _ in 0..5 {
        rt.post(None, 0, rt.new_request(Buffer::None).unwrap()).unwrap();
    }
    client.write_all(b"abcde").unwrap();
    let mut stamps = Vec::new();
    for _ in 0..10 {
        let d = rx.recv_for("request");
        stamps.push(u64::from_le_bytes(d.request.extension()[..8].try_into().unwrap()));
    }
    stamps.sort();
    assert_eq!(stamps, (1..=10).collect::<Vec<u64>>(), "one initializer call per request");
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(dirty.load(Ordering::SeqCst), 0, "the extension was zeroed every time");
    rt.shutdown();
}

#[test]
fn s19_initializer_error_stops_the_request_and_reaches_the_caller() {
    let rt = Runtime::builder()
        .min_threads(1)
        .host_overlapped_size(4)
        .initializer(|_req: &mut Request| Err(Error::NotOwner("test host refuses".into())))
        .build()
        .unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let (mut client, server) = pair();
    let server = Handle::from(server);
    rt.bind(None, &server).unwrap();
    let e = server.read(vec![1, 2, 3]).start().unwrap_err();
    assert!(matches!(e.error, Error::NotOwner(_)), "{e}");
    assert_eq!(e.buffer, vec![1, 2, 3], "the buffer comes back");
    // The request never started: data written now is not consumed by it.
    client.write_all(b"z").unwrap();
    rx.expect_quiet("a request whose initializer failed");
    // Not Fatal, so the runtime is still usable.
    assert_eq!(rt.max_threads().unwrap(), 1000);
    rt.shutdown();
}

#[test]
fn s20_the_callback_reads_and_writes_the_extension() {
    let rt = Runtime::builder()
        .min_threads(1)
        .host_overlapped_size(8)
        .initializer(|req: &mut Request| {
            req.extension_mut().copy_from_slice(b"hostdata");
            Ok(())
        })
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let (mut client, server) = pair();
    let server = Handle::from(server);
    let cb = move |status: Status, bytes: usize, mut req: Request| {
        s.lock().unwrap().push(req.extension().to_vec());
        req.extension_mut()[..4].copy_from_slice(b"DONE");
        tx.lock().unwrap().send((status, bytes, req)).unwrap();
    };
    rt.bind_io_completion_callback(&server, Arc::new(cb), 0).unwrap();
    server.read(vec![0; 4]).start().unwrap();
    client.write_all(b"ping").unwrap();
    let (status, bytes, req) = rx.recv_timeout(util::DEADLINE).unwrap();
    assert!(status.is_success());
    assert_eq!(bytes, 4);
    assert_eq!(seen.lock().unwrap()[0], b"hostdata", "the callback sees what the initializer left");
    assert_eq!(req.extension(), b"DONEdata", "and its writes stay with the request");
    rt.shutdown();
}

#[test]
fn s19_recycled_requests_start_zeroed_at_every_size() {
    // Sizes on both sides of the allocator's size classes.
    for size in [0, 1, 16, 17, 64, 65, 255, 256, 1024, 1025, 4096] {
        let rt = Runtime::builder().min_threads(1).host_overlapped_size(size).build().unwrap();
        for round in 0..3 {
            let mut reqs: Vec<Request> = (0..100).map(|_| rt.new_request(Buffer::None).unwrap()).collect();
            for r in &mut reqs {
                assert_eq!(r.extension().len(), size);
                assert!(r.extension().iter().all(|&b| b == 0), "size {size}, round {round}: not zeroed");
                r.extension_mut().fill(0xA5);
                r.set_user_data(7);
            }
            drop(reqs); // back to the recycler, dirty
        }
        let r = rt.new_request(Buffer::Single(vec![1, 2, 3])).unwrap();
        assert_eq!(r.user_data(), 0, "a recycled request starts with fresh fields");
        assert_eq!(r.buffer().len(), 3);
    }
}
