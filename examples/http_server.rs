//! An HTTP/1.1 server (hyper 1.x, keep-alive) on the crate alone: the
//! crate's tasks run the connections, its completions do the I/O, its
//! timers serve hyper's timeouts. No tokio runtime is in the process.
//!
//! ```text
//! cargo run --release --features hyper --example http_server -- [ADDR] [THREADS]
//! ```
//!
//! Default address `127.0.0.1:8080` and 2 pool threads; every request gets
//! the same small body. Try it with `curl http://127.0.0.1:8080/` or
//! `wrk -t2 -c64 -d5s --latency http://127.0.0.1:8080/`. Its comparator on
//! hyper + tokio is `examples/hyper_tokio_server.rs`.

use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use iocompletion::hyper_rt::HyperTimer;
use iocompletion::io::Stream;
use iocompletion::{Handle, Runtime};

#[path = "common/listen.rs"]
mod listen;

const BODY: &[u8] = b"Hello, World!";

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let rt = Runtime::builder().min_threads(threads).max_threads(threads).build()?;
    let listener = Handle::from(listen::listen(addr.parse()?)?);
    rt.bind_async(&listener)?;
    println!("http server on {addr}, {threads} threads, driver {}; Ctrl-C to stop", rt.driver()?);

    // The accept loop is a task too: an accept's completion runs it at
    // once on the pool thread that takes it, which starts the next accept.
    let server = rt.clone();
    let accept_loop = rt.spawn(async move {
        let rt = server;
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _peer)) => conn,
                // Out of descriptors, a connection reset before the
                // accept: this connection is lost, the server goes on.
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let stream = match rt.bind_async(&conn).and_then(|()| {
                let _ = conn.with_socket(|s| s.set_nodelay(true));
                Stream::new(conn)
            }) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("bind: {e}");
                    continue;
                }
            };
            drop(rt.spawn(async move {
                let served = http1::Builder::new()
                    .timer(HyperTimer)
                    .keep_alive(true)
                    .serve_connection(stream, service_fn(hello))
                    .await;
                if let Err(e) = served {
                    if !e.is_incomplete_message() {
                        eprintln!("connection: {e}");
                    }
                }
            }));
        }
    });
    rt.block_on(accept_loop)?;
    Ok(())
}
