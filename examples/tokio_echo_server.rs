//! The comparator for `scripts/syscalls.sh` and W3: a plain tokio echo
//! server with a multi-thread runtime of `THREADS` workers.
//!
//! ```text
//! cargo run --release --example tokio_echo_server -- [ADDR] [THREADS]
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7879".into());
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("tokio echo server on {addr} ({threads} threads)");
        loop {
            let (mut s, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
