//! A TCP echo server written with `async`/`await` over the crate's
//! completions (S34): the runtime's pool does the I/O, tokio only runs the
//! tasks (any executor would do).
//!
//! ```text
//! cargo run --release --example async_echo -- [ADDR]
//! ```
//!
//! Default address `127.0.0.1:7879`; try it with
//! `cargo run --release --example echo_client -- 127.0.0.1:7879 16 1024 3`.

use std::error::Error;
use std::net::TcpListener;

use iocompletion::{Handle, Runtime};

fn main() -> Result<(), Box<dyn Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7879".into());
    let io = Runtime::builder().build()?;
    let listener = Handle::from(TcpListener::bind(&addr)?);
    io.bind_async(&listener)?;
    println!("async echo server on {addr}, driver {}; Ctrl-C to stop", io.driver()?);

    let tasks = tokio::runtime::Builder::new_multi_thread().build()?;
    tasks.block_on(async move {
        loop {
            let (conn, _peer) = listener.accept().await?;
            io.bind_async(&conn)?;
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(16 * 1024);
                loop {
                    // The read fills the capacity and sets the length (S32).
                    let (n, data) = conn.read(buf).await;
                    if !matches!(n, Ok(n) if n > 0) {
                        return; // the peer closed, or an error
                    }
                    let (w, data) = conn.write(data).await;
                    if w.is_err() {
                        return;
                    }
                    buf = data;
                    buf.clear();
                }
            });
        }
    })
}
