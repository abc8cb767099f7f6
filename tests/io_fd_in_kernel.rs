//! On io_uring a request in the kernel holds its handle's descriptor until
//! its completion entry comes (S24): a close aborts it, but the number is
//! not free for another object before then. (On epoll no request is in the
//! kernel: the close closes the descriptor at once.)
//!
//! This file holds one test on purpose: it watches a descriptor number,
//! and another test thread of the same process could take that number.
#![cfg(unix)]

mod util;

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::Mutex;

use iocompletion::{DriverKind, Handle, Runtime};
use util::{bind, tcp_pair, DEADLINE};

#[test]
fn s24_a_request_in_the_kernel_keeps_its_descriptor_until_it_completes() {
    // One pool thread, in the callback below: nobody takes the read's
    // completion entry while the callback looks at the descriptor.
    let rt = Runtime::builder().min_threads(1).max_threads(1).build().unwrap();
    let on_ring = rt.driver().unwrap().kind == DriverKind::IoUring;
    let (_peer, conn) = tcp_pair();
    let y = Handle::from(conn);
    let c = bind(&rt, &y);
    let scene = Mutex::new(Some(y.clone()));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| {
        let Some(y) = scene.lock().unwrap().take() else { return };
        let fd = y.as_raw_fd();
        let started = y.read(Vec::with_capacity(16)).start().is_ok();
        y.close();
        // SAFETY: F_GETFD on a number only asks whether it is open.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        let _ = tx.lock().unwrap().send((started, open));
    })
    .unwrap();
    let (started, open) = rx.recv_timeout(DEADLINE).expect("the callback ran");
    assert!(started, "the read started");
    if on_ring {
        assert!(open, "the descriptor closed while its read was in the kernel");
    }
    let d = c.recv_for("the read");
    assert!(d.status.is_aborted(), "the closed handle's read is aborted: {d:?}");
    rt.shutdown();
}
