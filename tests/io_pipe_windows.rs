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

/// The server end of a named pipe waits for its client with an accept
/// (ConnectNamedPipe), and after a disconnect the same instance serves the
/// next client. The server is on a port no thread serves: "not connected
/// yet" is read from the queue.
#[test]
fn s27_a_named_pipe_server_accepts_its_clients_one_after_the_other() {
    use std::time::Duration;
    use util::{next_packet, on_own_port};

    let name = unique("accept");
    let server = Handle::named_pipe_server(&name, true).unwrap();
    let (port, _rt) = on_own_port(&server);
    for round in 0..2u8 {
        let accept = server.accept().unwrap();
        match port.get(Some(Duration::ZERO)) {
            Err(iocompletion::Error::Timeout) => {}
            other => panic!("round {round}: the accept completed with no client: {other:?}"),
        }
        let client = Handle::named_pipe_client(&name).unwrap();
        let p = next_packet(&port);
        assert!(p.status.is_success(), "round {round}: {:?}", p.status);
        let mut req = p.request.expect("the accept");
        assert_eq!(req.id(), accept);
        assert!(req.take_accepted().is_none(), "the pipe itself is the connection");

        // The client writes (on a runtime port of its own), the server reads.
        let rt = runtime();
        let (sink, rx) = collector();
        rt.set_completion_sink(sink).unwrap();
        rt.bind(None, &client).unwrap();
        client.write(vec![round; 3]).unwrap();
        assert!(rx.recv_for("the client's write").status.is_success());
        server.read(Vec::with_capacity(8)).unwrap();
        let p = next_packet(&port);
        assert_eq!(p.request.unwrap().into_buffer().into_vec(), vec![round; 3]);

        drop(client);
        rt.shutdown();
        server.disconnect_named_pipe().unwrap();
    }
}

/// A client that finds every instance busy waits for one (ERROR_PIPE_BUSY,
/// then WaitNamedPipeW) instead of failing at once.
#[test]
fn s27_a_pipe_client_waits_for_a_busy_instance() {
    use util::{next_packet, on_own_port};

    let name = unique("busy");
    let server = Handle::named_pipe_server(&name, true).unwrap();
    let (port, _rt) = on_own_port(&server);
    server.accept().unwrap();
    let first = Handle::named_pipe_client(&name).unwrap();
    assert!(next_packet(&port).status.is_success());

    // The only instance is taken: a second client waits in another thread
    // until the instance is free again.
    let n = name.clone();
    let second = std::thread::spawn(move || Handle::named_pipe_client(&n));
    drop(first);
    server.disconnect_named_pipe().unwrap();
    server.accept().unwrap();
    let second = second.join().unwrap().expect("the second client connects once the instance is free");
    assert!(next_packet(&port).status.is_success());
    drop(second);
}
