//! Echo servers for W2 and W3, one per implementation, each serving
//! connections the bench accepted (so accept is never measured), and the
//! client sides.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::thread;

use iocompletion::{Handle, Op, Request, Runtime, Status};

/// Bytes each server reads per call.
pub const READ_BUF: usize = 4096;

/// `n` connected pairs on loopback: (client side, server side).
pub fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = l.accept().expect("accept");
            c.set_nodelay(true).expect("nodelay");
            s.set_nodelay(true).expect("nodelay");
            (c, s)
        })
        .collect()
}

/// Echo on one connection with completions: a read completion starts a
/// write of what came in, a write completion starts the next read.
pub fn ours_serve(rt: &Runtime, s: TcpStream) -> Handle {
    let h = Handle::from(s);
    let slot: Arc<OnceLock<Handle>> = Arc::new(OnceLock::new());
    let me = slot.clone();
    rt.bind_io_completion_callback(
        &h,
        Arc::new(move |status: Status, bytes: usize, mut req: Request| {
            let Some(h) = me.get() else { return };
            if !status.is_success() || h.is_closed() {
                return;
            }
            let mut buf = req.take_buffer().into_vec();
            let _ = match req.op() {
                Op::Read if bytes == 0 => return,
                // The read set the length to the bytes read (S32).
                Op::Read => h.write(buf),
                Op::Write => {
                    // Room for the next read, without zeroing it.
                    buf.clear();
                    h.read(buf)
                }
                _ => return,
            };
        }),
        0,
    )
    .expect("bind");
    let _ = slot.set(h.clone());
    h.read(Vec::with_capacity(READ_BUF)).start().expect("first read");
    h
}

/// The same echo as a tokio task.
pub async fn tokio_echo(s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = s;
    let mut buf = vec![0u8; READ_BUF];
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
}

/// Hands a std stream to tokio; call inside the runtime's context.
pub fn to_tokio(s: TcpStream) -> tokio::net::TcpStream {
    s.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpStream::from_std(s).expect("from_std")
}

/// The same echo on a blocking std thread.
pub fn std_serve(mut s: TcpStream) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// One blocking round trip of `msg` on `c`, reading into `back`.
pub fn round_trip(c: &mut TcpStream, msg: &[u8], back: &mut [u8]) {
    c.write_all(msg).expect("write");
    c.read_exact(&mut back[..msg.len()]).expect("read");
}
