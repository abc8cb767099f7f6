//! Unix-only requests: Unix domain stream sockets, pipes and other fds
//! through `Handle::from_fd` (S27, S29).
#![cfg(unix)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use iocompletion::Vectored;
use iocompletion::{Handle, HandleKind, Op};
use util::{bind, pattern, runtime, started};

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new fds into the array on success.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn s27_unix_stream_read_and_write() {
    let rt = runtime();
    let (mine, mut peer) = UnixStream::pair().unwrap();
    let h = Handle::from(mine);
    assert_eq!(h.kind(), HandleKind::LocalStream);
    let c = bind(&rt, &h);

    started(h.read(vec![0; 64]).start());
    peer.write_all(b"over a unix socket").unwrap();
    assert_eq!(c.recv().data(), b"over a unix socket");

    let data = pattern(1 << 20, 3);
    let expect = data.clone();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; 1 << 20];
        peer.read_exact(&mut got).unwrap();
        got == expect
    });
    started(h.write(data).start());
    assert_eq!(c.recv().ok(), 1 << 20);
    assert!(reader.join().unwrap(), "the peer read other bytes than were written");
}

#[test]
fn s27_unix_stream_vectored_requests() {
    let rt = runtime();
    let (mine, mut peer) = UnixStream::pair().unwrap();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);

    started(h.write(Vectored(vec![b"ab".to_vec(), b"cde".to_vec()])).start());
    assert_eq!(c.recv().ok(), 5);
    let mut got = [0; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcde");

    // The read takes what has arrived when it runs: all of it or a prefix.
    peer.write_all(b"12345").unwrap();
    started(h.read(Vectored(vec![vec![0; 2], vec![0; 3]])).start());
    let done = c.recv();
    let n = done.ok();
    assert_eq!(&done.request.into_buffer().into_vec()[..n], &b"12345"[..n]);
}

#[test]
fn s27_unix_listener_accept_hands_back_a_local_stream() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("iocompletion-uds-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let path = dir.join("accept.sock");
    let _ = std::fs::remove_file(&path);
    let l = Handle::from(UnixListener::bind(&path).unwrap());
    assert_eq!(l.kind(), HandleKind::LocalListener);
    let c = bind(&rt, &l);

    started(l.accept().start());
    let mut client = UnixStream::connect(&path).unwrap();
    let mut done = c.recv();
    assert_eq!(done.request.op(), Op::Accept);
    done.ok();
    assert_eq!(done.request.addr(), None, "a unix peer has no IP address");
    let conn = done.request.take_accepted().expect("the accepted connection");
    assert_eq!(conn.kind(), HandleKind::LocalStream);

    let cc = bind(&rt, &conn);
    started(conn.read(vec![0; 8]).start());
    client.write_all(b"hi").unwrap();
    assert_eq!(cc.recv().data(), b"hi");
    drop(client);
    started(conn.read(vec![0; 8]).start());
    assert_eq!(cc.recv().ok(), 0, "peer close reads 0 bytes");

    l.close();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn s24_unix_stream_close_aborts_pending_reads() {
    let rt = runtime();
    let (mine, _peer) = UnixStream::pair().unwrap();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    for _ in 0..10 {
        started(h.read(vec![0; 32]).start());
    }
    h.close();
    for d in c.recv_n(10) {
        assert!(d.status.is_aborted(), "{d:?}");
        assert_eq!(d.status.code(), libc::ECANCELED as u32);
        assert_eq!(d.request.into_buffer().len(), 32);
    }
}

#[test]
fn s27_a_pipe_from_fd_is_a_stream() {
    let rt = runtime();
    let (r, w) = pipe();
    let (r, w) = (Handle::from(r), Handle::from(w));
    assert_eq!((r.kind(), w.kind()), (HandleKind::Stream, HandleKind::Stream));
    let cr = bind(&rt, &r);
    let cw = bind(&rt, &w);

    // More than a pipe holds (64 KiB on Linux): the write stays pending
    // until the reads make room.
    let data = pattern(300_000, 4);
    started(w.write(data.clone()).start());
    let mut got = Vec::new();
    while got.len() < data.len() {
        started(r.read(vec![0; 50_000]).start());
        let d = cr.recv();
        assert!(d.ok() > 0);
        got.extend(d.data());
    }
    assert_eq!(cw.recv().ok(), data.len());
    assert!(got == data);

    // The write end closes: the reader sees the end.
    w.close();
    started(r.read(vec![0; 16]).start());
    assert_eq!(cr.recv().ok(), 0);
}

#[test]
fn s23_write_to_a_pipe_with_no_reader_fails_exactly_once() {
    let rt = runtime();
    let (r, w) = pipe();
    drop(r);
    let w = Handle::from(w);
    let c = bind(&rt, &w);
    // Rust programs ignore SIGPIPE, so the write fails with EPIPE.
    let err = match w.write(b"nobody reads".to_vec()).start() {
        Ok(_) => {
            let d = c.recv();
            assert!(!d.status.is_success());
            d.status.result(0).unwrap_err()
        }
        Err(e) => {
            assert_eq!(e.buffer.len(), 12);
            std::io::Error::from(e.error)
        }
    };
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    c.expect_none(Duration::from_millis(100));
}

#[test]
fn s27_from_fd_of_a_regular_file_takes_positional_requests() {
    let rt = runtime();
    let f = util::TempFile::with_contents("from-fd", b"positional");
    let fd: OwnedFd = std::fs::File::open(f.path()).unwrap().into();
    let h = Handle::from(fd);
    assert_eq!(h.kind(), HandleKind::File);
    let c = bind(&rt, &h);
    started(h.read(vec![0; 6]).at(4).start());
    assert_eq!(c.recv().data(), b"tional");
}

/// S31 on a Unix domain socket and on a pipe: a read with no room waits
/// for data, completes with 0 bytes, and leaves the data for the next read.
#[test]
fn s31_zero_byte_reads_wait_for_data_on_local_sockets_and_pipes() {
    let rt = runtime();
    let (mine, peer) = UnixStream::pair().unwrap();
    let (r, w) = pipe();
    let ends: [(Handle, Box<dyn Write>); 2] =
        [(Handle::from(mine), Box::new(peer)), (Handle::from(r), Box::new(std::fs::File::from(w)))];
    for (h, mut writer) in ends {
        let c = bind(&rt, &h);
        started(h.read(Vec::new()).start());
        c.expect_quiet("a zero-byte read with nothing to read");
        writer.write_all(b"xyz").unwrap();
        assert_eq!(c.recv().ok(), 0);
        started(h.read(vec![0; 8]).start());
        assert_eq!(&c.recv().data()[..3], b"xyz");
    }
}
