//! Copies a file with positional (overlapped) requests, several in flight,
//! and checks the copy byte for byte.
//!
//! ```text
//! cargo run --release --example file_copy -- [SRC DST] [IN_FLIGHT] [CHUNK_KIB]
//! ```
//!
//! With no paths it creates an 8 MiB file of pseudo-random bytes in the
//! temp dir, copies it, checks it, and removes both. Defaults: 16 requests
//! in flight, 256 KiB chunks.
//!
//! The loop runs on the main thread: completions come through a channel
//! sink. Each read that completes starts the write of its chunk at the same
//! offset, and the next read, so `IN_FLIGHT` reads are always pending.

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use iocompletion::{Handle, IoCompletionManager, Op, Request, Runtime, Status};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, dst, temp, rest) = match args.as_slice() {
        [src, dst, rest @ ..] if src.parse::<usize>().is_err() => {
            (PathBuf::from(src), PathBuf::from(dst), false, rest)
        }
        rest => {
            let dir = std::env::temp_dir();
            let src = dir.join(format!("file_copy-src-{}", std::process::id()));
            let dst = dir.join(format!("file_copy-dst-{}", std::process::id()));
            fs::write(&src, pseudo_random(8 << 20))?;
            (src, dst, true, rest)
        }
    };
    let in_flight: usize = rest.first().map_or(Ok(16), |s| s.parse())?;
    let chunk: usize = rest.get(1).map_or(Ok(256), |s| s.parse::<usize>())? * 1024;
    if in_flight == 0 || chunk == 0 {
        return Err("IN_FLIGHT and CHUNK_KIB must be at least 1".into());
    }

    let rt = Runtime::builder().max_threads(32).build()?;
    let (tx, completions) = mpsc::channel::<(Status, usize, Request)>();
    let tx = Mutex::new(tx);
    rt.set_completion_sink(Arc::new(move |status: Status, bytes: usize, req: Request| {
        let _ = tx.lock().unwrap().send((status, bytes, req));
    }))?;

    let input = file_handle(File::open(&src)?)?;
    let output = file_handle(OpenOptions::new().write(true).create(true).truncate(true).open(&dst)?)?;
    rt.bind(None, &input)?;
    rt.bind(None, &output)?;
    let len = fs::metadata(&src)?.len();

    let start = Instant::now();
    let mut next = 0u64; // offset of the next read
    let mut pending = 0; // reads and writes in flight
    let mut copied = 0u64;
    while next < len && pending < in_flight {
        input.read(vec![0; chunk]).at(next).start()?;
        next += chunk as u64;
        pending += 1;
    }
    while pending > 0 {
        let (status, bytes, req) = completions.recv()?;
        pending -= 1;
        status.result(bytes).map_err(|e| format!("{:?}: {e}", req.op()))?;
        match req.op() {
            // The request says where it read; the chunk goes to the same offset.
            Op::ReadAt(offset) => {
                let mut buf = req.into_buffer().into_vec();
                buf.truncate(bytes);
                if bytes > 0 {
                    output.write(buf).at(offset).start()?;
                    pending += 1;
                }
                if next < len {
                    input.read(vec![0; chunk]).at(next).start()?;
                    next += chunk as u64;
                    pending += 1;
                }
            }
            Op::WriteAt(_) => copied += bytes as u64,
            other => unreachable!("no {other:?} was started"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    output.close();

    let same = same_contents(&src, &dst)?;
    println!(
        "copied {} bytes from {} to {} in {:.3} s ({:.1} MiB/s), {in_flight} requests of {} KiB in flight",
        copied,
        src.display(),
        dst.display(),
        elapsed,
        copied as f64 / elapsed / (1 << 20) as f64,
        chunk / 1024
    );
    println!("  copy checked byte for byte: {}", if same { "identical" } else { "DIFFERENT" });
    rt.shutdown();
    if temp {
        let _ = fs::remove_file(&src);
        let _ = fs::remove_file(&dst);
    }
    if copied != len || !same {
        return Err("the copy differs from the source".into());
    }
    Ok(())
}

/// Compares two files in chunks.
fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A handle over a std `File`: `From` on Unix, where it cannot fail.
#[cfg(unix)]
fn file_handle(f: std::fs::File) -> iocompletion::Result<Handle> {
    Ok(Handle::from(f))
}

/// A handle over a std `File`: `TryFrom` on Windows, which reopens the
/// file for overlapped I/O (and can fail).
#[cfg(windows)]
fn file_handle(f: std::fs::File) -> iocompletion::Result<Handle> {
    Handle::try_from(f)
}
