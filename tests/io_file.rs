//! Positional requests on regular files (S27; on Unix they run on the pool,
//! S29): offsets, end of file, read-only files, many requests in flight.

mod util;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::time::Duration;

use iocompletion::Vectored;
use iocompletion::{Error, Handle, HandleKind, Op};
use util::{bind, pattern, runtime, started, TempFile};

fn open_rw(f: &TempFile) -> Handle {
    util::file_handle(OpenOptions::new().read(true).write(true).open(f.path()).unwrap())
}

#[test]
fn s27_a_regular_file_is_a_file_handle() {
    let f = TempFile::new("kind");
    assert_eq!(open_rw(&f).kind(), HandleKind::File);
}

#[test]
fn s27_write_at_then_read_at_round_trips() {
    let rt = runtime();
    let f = TempFile::new("roundtrip");
    let h = open_rw(&f);
    let c = bind(&rt, &h);

    let data = pattern(100_000, 5);
    let id = started(h.write(data.clone()).at(0).start());
    let done = c.recv();
    assert_eq!(done.id(), id);
    assert_eq!(done.request.op(), Op::WriteAt(0));
    assert_eq!(done.ok(), data.len());
    assert_eq!(done.request.into_buffer().into_vec(), data, "the written buffer comes back");

    started(h.read(vec![0; 100_000]).at(0).start());
    let done = c.recv();
    assert_eq!(done.ok(), data.len());
    assert!(done.data() == data);
    assert!(std::fs::read(f.path()).unwrap() == data, "the bytes are in the file");
}

#[test]
fn s27_read_at_reads_from_the_offset() {
    let rt = runtime();
    let data = pattern(10_000, 6);
    let f = TempFile::with_contents("offset", &data);
    let h = util::file_handle(File::open(f.path()).unwrap());
    let c = bind(&rt, &h);

    for off in [0u64, 1, 4095, 4096, 9_990] {
        started(h.read(vec![0; 10]).at(off).start());
        let done = c.recv();
        assert_eq!(done.request.op(), Op::ReadAt(off));
        let n = done.ok();
        assert_eq!(n, 10.min(10_000 - off as usize));
        assert_eq!(done.data(), &data[off as usize..off as usize + n], "at offset {off}");
    }
}

/// A read of bytes that are not in the page cache: on io_uring the kernel
/// does it in the background (a cached read is done at once), on epoll the
/// pool does it. The pages are dropped first (advisory, but clean pages of
/// a synced file go).
#[cfg(target_os = "linux")]
#[test]
fn s27_read_at_of_bytes_not_in_the_page_cache_reads_them() {
    use std::os::fd::AsRawFd;
    let rt = runtime();
    let data = pattern(256 * 1024, 8);
    let f = TempFile::with_contents("uncached", &data);
    let file = File::open(f.path()).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a valid descriptor and range; the call only advises the kernel.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    let h = util::file_handle(file);
    let c = bind(&rt, &h);
    let offsets = [200_000u64, 4096, 100_003, 0];
    let ids: Vec<_> =
        offsets.iter().map(|&off| started(h.read(Vec::with_capacity(5000)).at(off).start())).collect();
    let mut got: HashMap<_, _> = c.recv_n(offsets.len()).into_iter().map(|d| (d.id(), d)).collect();
    for (id, off) in ids.into_iter().zip(offsets) {
        let d = got.remove(&id).expect("each read completes once");
        let n = d.ok();
        assert_eq!(n, 5000, "at offset {off}");
        assert_eq!(d.data(), &data[off as usize..off as usize + n], "at offset {off}");
    }
}

#[test]
fn s27_read_at_or_past_the_end_reads_zero_bytes() {
    let rt = runtime();
    let f = TempFile::with_contents("eof", b"0123456789");
    let h = util::file_handle(File::open(f.path()).unwrap());
    let c = bind(&rt, &h);

    for off in [10u64, 11, 4096, 1 << 40] {
        started(h.read(vec![0xEE; 16]).at(off).start());
        let done = c.recv();
        assert_eq!(done.ok(), 0, "read at {off} of a 10-byte file");
        // S32: the length is the bytes read; the allocation comes back.
        let buf = done.request.into_buffer().into_vec();
        assert!(buf.is_empty() && buf.capacity() == 16, "{} bytes, capacity {}", buf.len(), buf.capacity());
    }
    // Straddling the end: the bytes that are there.
    started(h.read(vec![0; 16]).at(8).start());
    assert_eq!(c.recv().data(), b"89");
}

#[test]
fn s27_write_at_past_the_end_extends_the_file_with_zeros() {
    let rt = runtime();
    let f = TempFile::with_contents("extend", b"head");
    let h = open_rw(&f);
    let c = bind(&rt, &h);

    started(h.write(b"tail".to_vec()).at(10).start());
    assert_eq!(c.recv().ok(), 4);
    assert_eq!(std::fs::read(f.path()).unwrap(), b"head\0\0\0\0\0\0tail");
}

#[test]
fn s26_zero_length_requests_on_a_file_complete_with_zero_bytes() {
    let rt = runtime();
    let f = TempFile::with_contents("zero", b"abc");
    let h = open_rw(&f);
    let c = bind(&rt, &h);

    started(h.read(Vec::new()).at(0).start());
    assert_eq!(c.recv().ok(), 0);
    started(h.write(Vec::new()).at(1).start());
    assert_eq!(c.recv().ok(), 0);
    assert_eq!(std::fs::read(f.path()).unwrap(), b"abc");
}

/// Offsets beyond what the OS can address fail or read nothing, once; they
/// never panic. (Linux: `pread` at an offset that does not fit `off_t`, or
/// whose end overflows it, is `EINVAL`.)
#[test]
fn s23_read_at_an_offset_beyond_the_os_range_completes_once() {
    let rt = runtime();
    let f = TempFile::with_contents("huge-offset", b"0123456789");
    let h = util::file_handle(File::open(f.path()).unwrap());
    let c = bind(&rt, &h);

    for off in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        match h.read(vec![0; 16]).at(off).start() {
            Ok(_) => {
                let done = c.recv();
                assert!(!done.status.is_success() || done.bytes == 0, "read at {off}: {done:?}");
                #[cfg(target_os = "linux")]
                assert_eq!(done.status.code(), libc::EINVAL as u32, "read at {off}: {done:?}");
                assert_eq!(done.request.into_buffer().len(), 16);
            }
            Err(e) => assert_eq!(e.buffer.len(), 16, "read at {off}: {e}"),
        }
    }
    c.expect_none(Duration::from_millis(100));
}

/// A write to a file opened read-only fails once: an error completion (the
/// mio backend runs the `pwrite` on the pool, which reports `EBADF`) or an
/// immediate error (IOCP's `WriteFile` fails before it is pending).
#[test]
fn s23_write_to_a_file_opened_read_only_fails_exactly_once() {
    let rt = runtime();
    let f = TempFile::with_contents("readonly", b"keep me");
    let h = util::file_handle(File::open(f.path()).unwrap());
    let c = bind(&rt, &h);

    match h.write(b"overwrite".to_vec()).at(0).start() {
        Ok(id) => {
            let done = c.recv();
            assert_eq!(done.id(), id);
            assert!(!done.status.is_success(), "{done:?}");
            assert!(!done.status.is_aborted(), "{done:?}");
            assert_eq!(done.bytes, 0);
            #[cfg(unix)]
            assert_eq!(done.status.code(), libc::EBADF as u32, "{done:?}");
            assert_eq!(done.request.into_buffer().into_vec(), b"overwrite", "the buffer comes back");
        }
        Err(e) => {
            if cfg!(unix) {
                panic!("the mio backend reports this as a completion, got {e}");
            }
            assert_eq!(e.buffer, b"overwrite");
        }
    }
    c.expect_none(Duration::from_millis(100));
    assert_eq!(std::fs::read(f.path()).unwrap(), b"keep me");
}

#[test]
fn s23_stream_requests_on_a_file_fail_at_start() {
    let rt = runtime();
    let f = TempFile::with_contents("stream-op", b"abc");
    let h = open_rw(&f);
    let c = bind(&rt, &h);

    for (what, r) in [
        ("read", h.read(vec![0; 4]).start().map_err(|e| e.map_buffer(|b| b.len()))),
        ("write", h.write(vec![0; 4]).start().map_err(|e| e.map_buffer(|b| b.len()))),
        (
            "read_vectored",
            h.read(Vectored(vec![vec![0; 2], vec![0; 2]]))
                .start()
                .map_err(|e| e.map_buffer(|v| v.0.iter().map(Vec::len).sum())),
        ),
        ("recv_from", h.recv_from(vec![0; 4]).start().map_err(|e| e.map_buffer(|b| b.len()))),
    ] {
        let e = r.expect_err(what);
        assert!(matches!(e.error, Error::InvalidArgument(_)), "{what}: {e:?}");
        assert_eq!(e.buffer, 4, "{what} hands its buffer back");
    }
    c.expect_none(Duration::from_millis(100));
}

/// Copies a file with 16 reads in flight, each followed by its write, and
/// checks the copy byte for byte.
#[test]
fn s27_file_copy_with_16_requests_in_flight() {
    const CHUNK: usize = 64 * 1024;
    const IN_FLIGHT: usize = 16;
    let rt = runtime();
    let data = pattern(3 * 1024 * 1024 + 12_345, 7);
    let src = TempFile::with_contents("copy-src", &data);
    let dst = TempFile::new("copy-dst");
    let input = util::file_handle(File::open(src.path()).unwrap());
    let output = open_rw(&dst);
    let cin = bind(&rt, &input);
    let cout = bind(&rt, &output);

    let mut next = 0u64;
    let mut reads: HashMap<_, u64> = HashMap::new();
    let mut writes = 0;
    let mut copied = 0;
    while next < data.len() as u64 && reads.len() < IN_FLIGHT {
        reads.insert(started(input.read(vec![0; CHUNK]).at(next).start()), next);
        next += CHUNK as u64;
    }
    while !reads.is_empty() {
        let done = cin.recv();
        let off = reads.remove(&done.id()).expect("a read that was started");
        let n = done.ok();
        let buf = done.data();
        started(output.write(buf).at(off).start());
        writes += 1;
        copied += n;
        if next < data.len() as u64 {
            reads.insert(started(input.read(vec![0; CHUNK]).at(next).start()), next);
            next += CHUNK as u64;
        }
    }
    for d in cout.recv_n(writes) {
        d.ok();
    }
    assert_eq!(copied, data.len());
    assert!(std::fs::read(dst.path()).unwrap() == data, "the copy differs from the source");
}

/// Closing a file with requests queued for the pool: each completes exactly
/// once, with data if it ran before the close, aborted if not.
#[test]
fn s24_close_with_file_requests_queued_completes_each_once() {
    let rt = iocompletion::Runtime::builder().min_threads(1).max_threads(1).build().unwrap();
    let data = pattern(1 << 20, 8);
    let f = TempFile::with_contents("close-queued", &data);
    let h = util::file_handle(File::open(f.path()).unwrap());
    let c = bind(&rt, &h);

    let ids: Vec<_> = (0..200u64).map(|i| started(h.read(vec![0; 4096]).at(i * 4096).start())).collect();
    h.close();
    let mut seen = std::collections::HashSet::new();
    for d in c.recv_n(ids.len()) {
        assert!(seen.insert(d.id()), "{:?} completed twice", d.id());
        let i = ids.iter().position(|&id| id == d.id()).unwrap();
        if d.status.is_aborted() {
            assert_eq!(d.request.into_buffer().len(), 4096);
        } else {
            assert_eq!(d.ok(), 4096);
            assert!(d.data() == data[i * 4096..(i + 1) * 4096]);
        }
    }
    c.expect_none(Duration::from_millis(100));
}
