//! Binding an fd number that is already closed must be an error, not a
//! panic and not a silent success (S6, S21).
//!
//! This file holds one test on purpose: between closing the fd and binding
//! it, another test thread of the same process could open a file and get the
//! same number, and the handle would then own someone else's fd.
#![cfg(unix)]

mod util;

use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use iocompletion::{Error, Handle, IoCompletionManager};

#[test]
fn s21_binding_a_closed_raw_fd_is_an_error() {
    let rt = util::runtime();
    let c = util::Collector::new();
    rt.set_completion_sink(c.sink()).unwrap();
    // Create the default port (and its epoll fd) now: created during the
    // bind below, it would take the lowest free number, the closed one.
    rt.default_port().unwrap();

    let f = util::TempFile::with_contents("closed-fd", b"x");
    let file = std::fs::File::open(f.path()).unwrap();
    // SAFETY: dup of an open fd; the new fd is closed right away below.
    let raw = unsafe { libc::dup(file.as_raw_fd()) };
    assert!(raw >= 0);
    // SAFETY: `raw` is ours, from dup, and closed once here.
    assert_eq!(unsafe { libc::close(raw) }, 0);

    // An OwnedFd over a closed number: what a buggy caller could hand in.
    // SAFETY: deliberately breaks OwnedFd's "open fd" invariant to check
    // that the crate copes. The handle is never dropped, even if an assert
    // fails, so the number is not closed a second time: by then it may
    // belong to someone else (and std aborts on closing a closed OwnedFd).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let h = ManuallyDrop::new(Handle::from(fd));
    assert_eq!(h.kind(), iocompletion::HandleKind::Stream, "no metadata: treated as a stream");

    let e = rt.bind(None, &h).expect_err("binding a closed fd must fail");
    match &e {
        Error::Io(io) => assert_eq!(io.raw_os_error(), Some(libc::EBADF), "{io}"),
        Error::InvalidArgument(_) => {}
        other => panic!("expected Io(EBADF) or InvalidArgument, got {other:?}"),
    }
    assert!(h.port().is_none());

    // Requests on it fail at start and hand the buffer back.
    let se = h.read(vec![1; 8]).start().unwrap_err();
    assert_eq!(se.buffer.len(), 8);
    drop(file);
}
