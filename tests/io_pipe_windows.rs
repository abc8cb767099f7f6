//! S24, S27 on Windows: named pipes as local streams.
#![cfg(windows)]

mod util;

use std::sync::Arc;

use iocompletion::{Handle, HandleKind, IoCompletionManager, Runtime};
use util::collector;

fn unique(name: &str) -> String {
    format!("iocompletion-test-{name}-{}", std::process::id())
}

fn runtime() -> Runtime {
    Runtime::builder().min_threads(1).max_threads(4).build().unwrap()
}

#[test]
fn s27_a_named_pipe_carries_reads_and_writes_both_ways() {
    let rt = runtime();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let name = unique("both-ways");
    let server = Handle::named_pipe_server(&name, true).unwrap();
    let client = Handle::named_pipe_client(&name).unwrap();
    assert_eq!(server.kind(), HandleKind::LocalStream);
    rt.bind(None, &server).unwrap();
    rt.bind(None, &client).unwrap();

    server.read(vec![0; 16]).unwrap();
    client.write(b"over the pipe".to_vec()).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = rx.recv_for("pipe read or write");
        assert!(d.status.is_success(), "{:?}", d.status);
        if d.request.op() == iocompletion::Op::Read {
            got = d.request.into_buffer().into_vec()[..d.bytes].to_vec();
        }
    }
    assert_eq!(got, b"over the pipe");

    client.read(vec![0; 4]).unwrap();
    server.write(b"back".to_vec()).unwrap();
    let mut back = Vec::new();
    for _ in 0..2 {
        let d = rx.recv_for("reply");
        assert!(d.status.is_success());
        if d.request.op() == iocompletion::Op::Read {
            back = d.request.into_buffer().into_vec()[..d.bytes].to_vec();
        }
    }
    assert_eq!(back, b"back");
}

#[test]
fn s24_closing_a_named_pipe_aborts_its_pending_reads() {
    let rt = runtime();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let name = unique("abort");
    let server2 = Handle::named_pipe_server(&name, true).unwrap();
    let client2 = Handle::named_pipe_client(&name).unwrap();
    rt.bind(None, &server2).unwrap();
    for _ in 0..3 {
        server2.read(vec![7; 8]).unwrap();
    }
    server2.close();
    for _ in 0..3 {
        let d = rx.recv_for("aborted pipe read");
        assert!(d.status.is_aborted(), "{:?}", d.status);
        assert_eq!(d.request.into_buffer().into_vec(), vec![7; 8], "the buffer comes back untouched");
    }
    drop(client2);
}

#[test]
fn s21_a_second_bind_of_a_pipe_is_invalid() {
    let rt = runtime();
    rt.set_completion_sink(Arc::new(|_, _, _| {})).unwrap();
    let name = unique("rebind");
    let server = Handle::named_pipe_server(&name, true).unwrap();
    rt.bind(None, &server).unwrap();
    assert!(matches!(rt.bind(None, &server), Err(iocompletion::Error::InvalidArgument(_))));
}
