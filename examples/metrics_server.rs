//! The echo server with a Prometheus page: the runtime's figures
//! (`Runtime::metrics`, as `RuntimeMetrics::to_prometheus` writes them)
//! served as plain text at `/metrics` on a second address.
//!
//! ```text
//! cargo run --release --example metrics_server -- [ECHO_ADDR] [METRICS_ADDR]
//! curl http://127.0.0.1:9464/metrics
//! ```
//!
//! Defaults: echo on `127.0.0.1:7878`, metrics on `127.0.0.1:9464`. Load
//! it with `cargo run --release --example echo_client`.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use iocompletion::{Handle, Runtime};

/// One connection: reads and echoes until the peer closes.
async fn echo(conn: Handle) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (n, data) = conn.read(buf).await;
        if !matches!(n, Ok(n) if n > 0) {
            return;
        }
        let (w, data) = conn.write(data).await;
        if w.is_err() {
            return;
        }
        buf = data;
        buf.clear();
    }
}

/// Serves `GET /metrics` on a thread of its own, one request at a time.
fn serve_metrics(rt: Runtime, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request_line = String::new();
        if BufReader::new(&stream).read_line(&mut request_line).is_err() {
            continue;
        }
        let reply = if request_line.starts_with("GET /metrics ") {
            let body = rt.metrics().to_prometheus();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        };
        let _ = stream.write_all(reply.as_bytes());
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    let metrics_addr = args.next().unwrap_or_else(|| "127.0.0.1:9464".into());
    let rt = Runtime::builder().build()?;
    let listener = Handle::from(TcpListener::bind(&addr)?);
    rt.bind_async(&listener)?;
    let page = TcpListener::bind(&metrics_addr)?;
    println!(
        "echo on {addr}, driver {}; metrics at http://{metrics_addr}/metrics; Ctrl-C to stop",
        rt.driver()?
    );
    let rt2 = rt.clone();
    std::thread::spawn(move || serve_metrics(rt2, page));

    let rt2 = rt.clone();
    rt.block_on(async move {
        loop {
            let (conn, _peer) = listener.accept().await?;
            rt2.bind_async(&conn)?;
            drop(rt2.spawn(echo(conn)));
        }
    })
}
