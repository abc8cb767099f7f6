//! The comparator of `examples/http_server.rs`: the same hyper 1.x
//! HTTP/1.1 server (keep-alive, the same small body, hyper's timer set) on
//! tokio's multi-thread runtime and its sockets.
//!
//! ```text
//! cargo run --release --example hyper_tokio_server -- [ADDR] [THREADS]
//! ```
//!
//! Default address `127.0.0.1:8081` and 2 worker threads.

use std::convert::Infallible;
use std::error::Error;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

const BODY: &[u8] = b"Hello, World!";

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("hyper + tokio server on {addr}, {threads} threads; Ctrl-C to stop");
        loop {
            let (conn, _peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            tokio::spawn(async move {
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(conn), service_fn(hello))
                    .await;
                if let Err(e) = served {
                    if !e.is_incomplete_message() {
                        eprintln!("connection: {e}");
                    }
                }
            });
        }
    })
}
