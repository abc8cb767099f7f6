//! Requests at the edges of what one system call takes, and what can be
//! bound, the same on every Unix driver (S27, S38).
#![cfg(unix)]

mod util;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use iocompletion::Handle;
use iocompletion::Vectored;
#[cfg(target_os = "linux")]
use util::TempFile;
use util::{bind, pattern, runtime, started, tcp_pair, DEADLINE};

/// A positional read of a file whose first half is in the page cache and
/// whose second half is not completes with all of it: a file read is short
/// only at the end of the file.
#[cfg(target_os = "linux")]
#[test]
fn s27_a_file_read_is_short_only_at_the_end_of_the_file() {
    use std::os::fd::AsRawFd;
    const LEN: usize = 8 << 20;
    let rt = runtime();
    let data = pattern(LEN, 27);
    let f = TempFile::with_contents("partly-cached", &data);
    let file = File::open(f.path()).unwrap();
    file.sync_all().unwrap();
    let (half, rest) = ((LEN / 2) as libc::off_t, (LEN - LEN / 2) as libc::off_t);
    // SAFETY: a valid descriptor and range; the calls only advise the kernel.
    unsafe {
        assert_eq!(libc::posix_fadvise(file.as_raw_fd(), half, rest, libc::POSIX_FADV_DONTNEED), 0);
        assert_eq!(libc::posix_fadvise(file.as_raw_fd(), 0, half, libc::POSIX_FADV_WILLNEED), 0);
    }
    let h = Handle::from(file);
    let c = bind(&rt, &h);

    // All of it, with room to spare: short at the end only.
    started(h.read(Vec::with_capacity(LEN + 4096)).at(0).start());
    let d = c.recv();
    assert_eq!(d.ok(), LEN, "a read of the whole file");
    assert!(d.data() == data, "the bytes are the file's");

    // Again from the middle of the cached half, after dropping the rest.
    // SAFETY: as above.
    h.with_fd(|fd| unsafe { libc::posix_fadvise(fd.as_raw_fd(), half, rest, libc::POSIX_FADV_DONTNEED) })
        .unwrap();
    let off = LEN / 4;
    started(h.read(Vec::with_capacity(LEN / 2)).at(off as u64).start());
    let d = c.recv();
    assert_eq!(d.ok(), LEN / 2, "a read across the cached and uncached halves");
    assert!(d.data() == data[off..off + LEN / 2], "the bytes at the offset");
}

/// A vectored write of 3,000 parts (more than `IOV_MAX`, 1024 on Linux)
/// sends every part, in order; a vectored read of 3,000 parts takes what
/// is there, in order (short as a read may be).
#[test]
fn s27_vectored_requests_beyond_iov_max() {
    const PARTS: usize = 3000;
    let rt = runtime();
    let (mut peer, conn) = tcp_pair();
    let h = Handle::from(conn);
    let c = bind(&rt, &h);

    // Write: 3,000 parts of 64 bytes, more than the socket's buffers.
    let data = pattern(PARTS * 64, 9);
    let parts: Vec<Vec<u8>> = data.chunks(64).map(<[u8]>::to_vec).collect();
    started(h.write(Vectored(parts)).start());
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; PARTS * 64];
        peer.set_read_timeout(Some(DEADLINE)).unwrap();
        peer.read_exact(&mut got).unwrap();
        (peer, got)
    });
    let d = c.recv_for("the write of 3,000 parts");
    assert_eq!(d.ok(), data.len(), "every part is written");
    let (mut peer, got) = reader.join().unwrap();
    assert!(got == data, "the parts arrive in order");

    // Read: 3,000 parts of 4 bytes each, until all the peer sent is in.
    let sent = pattern(PARTS * 4, 10);
    peer.write_all(&sent).unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        started(h.read(Vectored((0..PARTS).map(|_| Vec::with_capacity(4)).collect())).start());
        let d = c.recv_for("a read of 3,000 parts");
        let n = d.ok();
        assert!(n > 0, "a read with data waiting takes some");
        let bufs = d.request.into_buffer().into_bufs::<Vec<u8>>().expect("the parts come back");
        assert_eq!(bufs.len(), PARTS, "every part comes back");
        let filled: Vec<u8> = bufs.concat();
        assert_eq!(filled.len(), n, "the parts' lengths add up to the bytes read");
        got.extend_from_slice(&filled);
    }
    assert!(got == sent, "the bytes arrive in order");
    rt.shutdown();
}

/// S38: a handle that cannot be driven (a directory) is refused at bind on
/// every driver; character devices that can be read or written are served
/// on every driver (epoll cannot watch `/dev/zero` or `/dev/null`).
#[test]
fn s38_the_drivers_agree_on_what_can_be_bound() {
    let rt = runtime();
    let dir = Handle::from(File::open(std::env::temp_dir()).unwrap());
    let e = rt
        .bind_io_completion_callback(&dir, util::Collector::new().sink(), 0)
        .expect_err("a directory cannot be driven");
    eprintln!("binding a directory: {e}");
    assert!(dir.port().is_none());
    assert!(dir.read(Vec::with_capacity(16)).start().is_err(), "an unbound handle starts nothing");

    let zero = Handle::from(File::open("/dev/zero").unwrap());
    let c = bind(&rt, &zero);
    started(zero.read(vec![0xEE; 4096]).start());
    let d = c.recv();
    let n = d.ok();
    assert!(n > 0, "/dev/zero gives bytes");
    assert!(d.data().iter().all(|&b| b == 0), "zeros");

    let null = Handle::from(OpenOptions::new().read(true).write(true).open("/dev/null").unwrap());
    let c = bind(&rt, &null);
    started(null.write(vec![7u8; 10_000]).start());
    assert_eq!(c.recv().ok(), 10_000, "/dev/null takes every byte");
    started(null.read(Vec::with_capacity(16)).start());
    assert_eq!(c.recv().ok(), 0, "/dev/null is at its end");
    rt.shutdown();
}

/// Writes to a pipe of more parts than `IOV_MAX` too (not a socket: no
/// `sendmsg`).
#[test]
fn s27_a_pipe_write_beyond_iov_max_sends_every_part() {
    let rt = runtime();
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors for pipe to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are new and owned here, once each.
    let (mut rd, wr) = unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    };
    let h = Handle::from(wr);
    let c = bind(&rt, &h);
    let data = pattern(2500 * 32, 11);
    started(h.write(Vectored(data.chunks(32).map(<[u8]>::to_vec).collect())).start());
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 2500 * 32];
        rd.read_exact(&mut got).unwrap();
        got
    });
    assert_eq!(c.recv().ok(), data.len());
    assert!(reader.join().unwrap() == data, "the parts arrive in order");
    rt.shutdown();
}
