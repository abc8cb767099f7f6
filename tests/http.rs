//! hyper 1.x on the crate alone (feature `hyper`): a server on the crate's
//! tasks, streams and timers answers a raw HTTP/1.1 client over a std
//! socket (two requests on one kept-alive connection) and a hyper client
//! that also runs on the crate.

mod util;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use iocompletion::hyper_rt::{HyperExecutor, HyperTimer};
use iocompletion::io::Stream;
use iocompletion::{Handle, Runtime};
use util::DEADLINE;

async fn echo_path(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("you asked for {}", req.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Starts the server on `rt`: an accept loop task, one task per
/// connection. Returns its address.
fn serve(rt: &Runtime) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = Handle::from(listener);
    rt.bind_async(&listener).unwrap();
    let rt2 = rt.clone();
    drop(rt.spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            rt2.bind_async(&conn).unwrap();
            let stream = Stream::new(conn).unwrap();
            drop(rt2.spawn(async move {
                let _ = http1::Builder::new()
                    .timer(HyperTimer)
                    .keep_alive(true)
                    .serve_connection(stream, service_fn(echo_path))
                    .await;
            }));
        }
    }));
    addr
}

/// Reads one response (status line, headers, a body of Content-Length).
fn read_response(r: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status.trim_end().to_owned(), body)
}

#[test]
fn a_hyper_server_on_the_crate_answers_two_requests_on_one_kept_alive_connection() {
    let rt = Runtime::builder().min_threads(2).max_threads(2).build().unwrap();
    let addr = serve(&rt);
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    for path in ["/first", "/second"] {
        write!(client, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, format!("you asked for {path}").as_bytes());
    }
    rt.shutdown();
}

#[test]
fn a_hyper_client_on_the_crate_round_trips_with_the_server() {
    let rt = Runtime::builder().min_threads(2).max_threads(4).build().unwrap();
    let addr = serve(&rt);
    let rt2 = rt.clone();
    let task = rt.spawn(async move {
        let sock = Handle::from(
            socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap(),
        );
        rt2.bind_async(&sock).unwrap();
        sock.connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(Stream::new(sock).unwrap())
            .await
            .unwrap();
        // The connection's future runs as a task through the executor.
        hyper::rt::Executor::execute(&HyperExecutor::new(rt2), async move {
            let _ = conn.await;
        });
        let mut bodies = Vec::new();
        for path in ["/a", "/b/c"] {
            let req = Request::get(path).header("host", "test").body(Full::new(Bytes::new())).unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            bodies.push(resp.into_body().collect().await.unwrap().to_bytes());
        }
        bodies
    });
    let (tx, rx) = mpsc::channel();
    let rt3 = rt.clone();
    std::thread::spawn(move || {
        let _ = tx.send(rt3.block_on(task));
    });
    let bodies = rx.recv_timeout(DEADLINE).expect("the client finished").unwrap();
    assert_eq!(bodies, [Bytes::from("you asked for /a"), Bytes::from("you asked for /b/c")]);
    rt.shutdown();
}

#[test]
fn hypers_sleep_is_send_and_sync() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<iocompletion::time::Sleep>();
    check::<HyperTimer>();
    check::<HyperExecutor>();
}
