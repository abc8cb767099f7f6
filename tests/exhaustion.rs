//! S37: running out of descriptors; and a file write stopped by the file
//! size limit. Each test runs in a child process of its own (this test
//! binary, started again), since it lowers one of the process's limits.
#![cfg(unix)]

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use iocompletion::{Handle, Op, Runtime, Status};
use util::{collector, started, DEADLINE};

const CHILD: &str = "IOCOMPLETION_EXHAUSTION_CHILD";

/// Runs `name` again in a child process with the marker set; fails with
/// the child's output if the child fails.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    assert!(
        out.status.success(),
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn set_fd_limit(n: u64) {
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a
    // local rlimit.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = n as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0, "{}", std::io::Error::last_os_error());
    }
}

/// Opens files until the process has no descriptor left; returns them.
fn fill() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
}

/// S37: with no descriptor left, pending accepts complete once each with
/// `EMFILE` and a new one fails at start; the runtime keeps serving (a
/// post runs), does not spin (no completion repeats), and once descriptors
/// are freed a new accept takes the waiting connection, which then works.
#[test]
fn s37_accepts_fail_once_with_emfile_and_recover_when_descriptors_free_up() {
    if in_child("s37_accepts_fail_once_with_emfile_and_recover_when_descriptors_free_up") {
        return;
    }
    let rt = Runtime::builder().min_threads(1).max_threads(4).build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let lh = Handle::from(listener);
    let (sink, accepts) = collector();
    rt.bind_io_completion_callback(&lh, sink, 0).unwrap();
    // The clients' sockets exist before the descriptors run out; connecting
    // needs no new descriptor, and the kernel completes the handshakes
    // into the listener's backlog.
    let clients: Vec<socket2::Socket> = (0..2)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();

    // The accepts start under the lowered limit: io_uring takes the limit
    // in force when an accept is submitted.
    set_fd_limit(256);
    let pending: Vec<_> = (0..4).map(|_| started(lh.accept().start())).collect();
    let mut spare = fill();
    assert!(spare.len() > 2, "the limit left room for the test: {}", spare.len());
    for c in &clients {
        c.connect(&addr.into()).unwrap();
    }

    // Each pending accept completes exactly once, with EMFILE.
    let mut failed = Vec::new();
    for _ in 0..pending.len() {
        let d = accepts.recv_for("a pending accept with no descriptor left");
        assert_eq!(d.request.op(), Op::Accept);
        assert_eq!(d.status, Status::from_raw(libc::EMFILE as u32), "{:?}", d.status);
        assert!(d.status.is_out_of_resources());
        failed.push(d.id());
    }
    failed.sort();
    let mut want = pending.clone();
    want.sort();
    assert_eq!(failed, want, "every pending accept, once");
    // A new accept fails with its error: at start on a readiness driver
    // (it tries at once, and posts nothing), or on io_uring by its one
    // completion.
    match lh.accept().start() {
        Err(e) => match &e.error {
            iocompletion::Error::Io(io) => assert_eq!(io.raw_os_error(), Some(libc::EMFILE), "{e}"),
            other => panic!("expected EMFILE at start, got {other}"),
        },
        Ok(id) => {
            let d = accepts.recv_for("an accept started with no descriptor left");
            assert_eq!((d.id(), d.status), (id, Status::from_raw(libc::EMFILE as u32)));
        }
    }
    // The runtime serves other work meanwhile.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    rx.recv_timeout(DEADLINE).expect("a post runs while descriptors are exhausted");
    // Nothing repeats: no completion comes that was not asked for.
    accepts.expect_quiet("after every accept failed");

    // Descriptors free up: a new accept takes a waiting connection.
    spare.truncate(spare.len() - 2);
    let id = started(lh.accept().start());
    let mut d = accepts.recv_for("an accept after descriptors freed up");
    assert_eq!(d.id(), id);
    assert!(d.status.is_success(), "{:?}", d.status);
    let conn = d.request.take_accepted().expect("the accepted connection");
    let (csink, reads) = collector();
    rt.bind_io_completion_callback(&conn, csink, 0).unwrap();
    started(conn.read(vec![0; 8]).start());
    let mut client: TcpStream = clients.into_iter().next().unwrap().into();
    client.write_all(b"alive").unwrap();
    assert_eq!(&reads.recv_for("a read on the recovered connection").data()[..5], b"alive");
    started(conn.write(b"yes".to_vec()).start());
    let mut back = [0u8; 3];
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"yes");
    drop(spare);
    rt.shutdown();
}

/// S8: a file write that fails after it wrote part of its buffer (here at
/// the process's file size limit: the first write is cut short at the
/// limit, the next fails with `EFBIG`) completes with the error and the
/// bytes it wrote, as IOCP reports them, instead of 0.
#[test]
fn s8_a_file_write_failing_after_part_reports_the_bytes_written() {
    if in_child("s8_a_file_write_failing_after_part_reports_the_bytes_written") {
        return;
    }
    const LIMIT: usize = 64 << 10;
    // SAFETY: ignoring a signal installs no handler; getrlimit/setrlimit
    // take a valid resource and a pointer to a local rlimit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut r), 0);
        r.rlim_cur = LIMIT as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &r), 0, "{}", std::io::Error::last_os_error());
    }
    let rt = Runtime::builder().min_threads(1).max_threads(4).build().unwrap();
    let file = util::TempFile::new("fsize");
    let f = File::options().write(true).open(file.path()).unwrap();
    let h = Handle::from(f);
    let (sink, done) = collector();
    rt.bind_io_completion_callback(&h, sink, 0).unwrap();
    let data = util::pattern(4 * LIMIT, 27);
    let id = started(h.write(data.clone()).at(0).start());
    let d = done.recv_for("the write stopped by the file size limit");
    assert_eq!(d.id(), id);
    assert_eq!(d.status, Status::from_raw(libc::EFBIG as u32), "{:?}", d.status);
    assert_eq!(d.bytes, LIMIT, "the completion reports the bytes written");
    assert_eq!(d.request.into_buffer().len(), data.len(), "the buffer comes back whole");
    assert!(std::fs::read(file.path()).unwrap() == data[..LIMIT], "the file holds them");
    rt.shutdown();
}
