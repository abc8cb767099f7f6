//! One stream read, from its start to its callback, between two marker
//! functions: `scripts/read_path.sh` runs it under gdb with a breakpoint on
//! every function of the crate and lists the source files the read's path
//! runs code in (docs/architecture.md, "The path of one request").
//!
//! Alone it prints the driver and the completions:
//! `cargo run --example trace_one_read`.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use iocompletion::{Handle, Request, Runtime, Status};

/// Called just before the traced read starts.
#[inline(never)]
#[no_mangle]
pub extern "C" fn trace_begin() {
    std::hint::black_box(());
}

/// Called once the traced read's callback has run.
#[inline(never)]
#[no_mangle]
pub extern "C" fn trace_end() {
    std::hint::black_box(());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One worker: the read's completion is run by the thread that polls.
    let rt = Runtime::builder().min_threads(1).max_threads(1).build()?;
    eprintln!("{:?}", rt.driver()?);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let server = Handle::from(listener.accept()?.0);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let callback = move |status: Status, bytes: usize, req: Request| {
        let buf = req.into_buffer().into_vec();
        let _ = tx.lock().map(|tx| tx.send((status, buf[..bytes].to_vec())));
    };
    rt.bind_io_completion_callback(&server, Arc::new(callback), 0)?;
    // The first reads warm up what runs once (the worker's first wait, the
    // thread-local state); the last one is traced.
    const READS: usize = 4;
    for i in 0..READS {
        let traced = i == READS - 1;
        if traced {
            trace_begin();
        }
        server.read(vec![0u8; 64]).start()?;
        // Let the read reach its wait before the data comes, so it takes
        // the path of a read that waits (not one done at its start).
        std::thread::sleep(Duration::from_millis(30));
        client.write_all(b"ping")?;
        let (status, data) = rx.recv()?;
        if traced {
            trace_end();
        }
        eprintln!("read {i}: {status:?} {:?}", String::from_utf8_lossy(&data));
    }
    rt.shutdown();
    Ok(())
}
