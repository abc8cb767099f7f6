//! S7-S11: ports, packets, waiting, closing.

mod util;

use std::future::IntoFuture;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use iocompletion::{Buffer, Error, IoCompletionManager, Port, Request, Runtime};
use util::{wait_until, DEADLINE};

#[test]
fn s7_concurrency_defaults_to_cpu_count() {
    let p = Port::new(0).unwrap();
    assert_eq!(p.concurrency(), num_cpus());
    assert_eq!(Port::new(3).unwrap().concurrency(), 3);
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    assert_eq!(rt.create_port().unwrap().concurrency(), num_cpus());
    let rt2 = Runtime::builder().min_threads(1).port_concurrency(5).build().unwrap();
    assert_eq!(rt2.create_port().unwrap().concurrency(), 5);
}

fn num_cpus() -> usize {
    thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[test]
fn s7_each_created_port_is_a_distinct_open_port() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let a = rt.create_port().unwrap();
    let b = rt.create_port().unwrap();
    assert!(!a.same(&b));
    assert_ne!(a.id(), b.id());
    assert!(!a.is_closed() && !b.is_closed());
}

#[test]
fn s8_packets_come_out_fifo() {
    let p = Port::new(1).unwrap();
    for i in 0..100 {
        p.post(i, 1000 + i, None).unwrap();
    }
    for i in 0..100 {
        let pk = p.get(Some(DEADLINE)).unwrap();
        assert_eq!((pk.bytes, pk.key), (i, 1000 + i));
        assert!(pk.status.is_success());
        assert!(pk.request.is_none());
    }
}

/// LIFO is promised among threads blocked on the port, once each is
/// registered (`waiting_threads` counts it) and while no other thread takes
/// packets: each post goes to the most recently blocked thread still
/// waiting. On the portable backend the first of them polls for readiness;
/// a post wakes the poller only when no parked thread is left, so here it is
/// also the last one woken. A thread leaving the port (thread 2 exits after
/// its packet, giving back its concurrency slot) must not steal the packet
/// a post already promised to the next thread.
#[test]
fn s8_waiting_threads_are_woken_lifo() {
    if util::skip_on_wine("Wine wakes threads waiting on a port first-in-first-out") {
        return;
    }
    let p = Port::new(8).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut joins = Vec::new();
    for t in 0..3 {
        let (p2, tx) = (p.clone(), tx.clone());
        joins.push(thread::spawn(move || {
            let pk = p2.get(Some(DEADLINE)).unwrap();
            tx.send((t, pk.key)).unwrap();
        }));
        wait_until("the thread is blocked on the port", || p.waiting_threads() == t + 1);
    }
    let mut order = Vec::new();
    for k in 0..3 {
        p.post(0, k, None).unwrap();
        let (t, key) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(key, k);
        order.push(t);
    }
    assert_eq!(order, vec![2, 1, 0], "the most recently idle thread goes first");
    for j in joins {
        j.join().unwrap();
    }
}

#[test]
fn s9_posted_values_come_back_verbatim() {
    let p = Port::new(0).unwrap();
    let mut req = Request::new(Buffer::Single(b"payload".to_vec()));
    req.set_user_data(0xDEAD_BEEF);
    let id = req.id();
    p.post(usize::MAX, usize::MAX - 1, Some(req)).unwrap();
    let pk = p.get(Some(DEADLINE)).unwrap();
    assert_eq!(pk.bytes, usize::MAX);
    assert_eq!(pk.key, usize::MAX - 1);
    let req = pk.request.expect("the request comes back");
    assert_eq!(req.id(), id);
    assert_eq!(req.user_data(), 0xDEAD_BEEF);
    assert_eq!(req.into_buffer().into_vec(), b"payload");
}

#[test]
fn s10_get_gives_timeout_when_nothing_comes() {
    let p = Port::new(0).unwrap();
    assert!(matches!(p.get(Some(Duration::from_millis(20))), Err(Error::Timeout)));
    assert!(matches!(p.get(Some(Duration::ZERO)), Err(Error::Timeout)));
    let mut v = Vec::new();
    assert!(matches!(p.get_many(&mut v, 8, Some(Duration::from_millis(10))), Err(Error::Timeout)));
    assert!(v.is_empty());
}

#[test]
fn s10_get_many_takes_a_batch_in_one_call() {
    let p = Port::new(1).unwrap();
    for i in 0..10 {
        p.post(i, 0, None).unwrap();
    }
    let mut v = Vec::new();
    assert_eq!(p.get_many(&mut v, 4, Some(DEADLINE)).unwrap(), 4);
    assert_eq!(v.iter().map(|p| p.bytes).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(p.get_many(&mut v, 100, Some(DEADLINE)).unwrap(), 6);
    assert_eq!(v.len(), 10, "get_many appends");
    assert!(matches!(p.get_many(&mut v, 0, None), Err(Error::InvalidArgument(_))));
}

#[test]
fn s10_close_wakes_a_waiter_with_abandoned() {
    let p = Port::new(0).unwrap();
    let p2 = p.clone();
    let t = thread::spawn(move || p2.get(None));
    wait_until("the thread waits", || p.waiting_threads() == 1);
    p.close().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Abandoned)));
    assert!(matches!(p.get(Some(Duration::ZERO)), Err(Error::Abandoned)));
}

#[test]
fn s11_closing_twice_or_an_unknown_port_is_invalid() {
    let p = Port::new(0).unwrap();
    p.close().unwrap();
    assert!(matches!(p.close(), Err(Error::InvalidArgument(_))));

    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let other = Runtime::builder().min_threads(1).build().unwrap();
    let mine = rt.create_port().unwrap();
    // A port of another manager, or a standalone one, is unknown here.
    assert!(matches!(rt.close_port(&other.create_port().unwrap()), Err(Error::InvalidArgument(_))));
    assert!(matches!(rt.close_port(&Port::new(0).unwrap()), Err(Error::InvalidArgument(_))));
    rt.close_port(&mine).unwrap();
    assert!(matches!(rt.close_port(&mine), Err(Error::InvalidArgument(_))));
}

#[test]
fn s11_posting_to_a_closed_port_fails_and_returns_the_buffer() {
    let p = Port::new(0).unwrap();
    p.close().unwrap();
    let e = p.post(1, 2, Some(Request::new(Buffer::Single(vec![9; 3])))).unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)));
    assert_eq!(e.buffer.into_vec(), vec![9; 3]);
}

#[test]
fn s11_packets_queued_before_close_are_still_delivered_then_abandoned() {
    let p = Port::new(0).unwrap();
    p.post(1, 0, None).unwrap();
    p.post(2, 0, None).unwrap();
    p.close().unwrap();
    assert_eq!(p.get(Some(DEADLINE)).unwrap().bytes, 1);
    assert_eq!(p.get(Some(DEADLINE)).unwrap().bytes, 2);
    assert!(matches!(p.get(Some(DEADLINE)), Err(Error::Abandoned)));
}

/// Wine ignores a port's concurrency value, so this runs where the value is
/// honoured: the portable backend, and Windows itself.
#[test]
fn s7_concurrency_value_limits_threads_released_at_once() {
    if util::skip_on_wine("Wine ignores the concurrency value of a completion port") {
        return;
    }
    let p = Port::new(1).unwrap();
    p.post(1, 0, None).unwrap();
    p.post(2, 0, None).unwrap();
    // The holder takes a packet and, until it waits again or exits, holds
    // the only slot.
    let (took, took_rx) = mpsc::channel::<usize>();
    let (release, released) = mpsc::channel::<()>();
    let p1 = p.clone();
    let holder = thread::spawn(move || {
        took.send(p1.get(Some(DEADLINE)).unwrap().bytes).unwrap();
        released.recv_timeout(DEADLINE).unwrap();
    });
    assert_eq!(took_rx.recv_timeout(DEADLINE).unwrap(), 1);
    let p2 = p.clone();
    let other = thread::spawn(move || p2.get(Some(Duration::from_millis(300))).map(|pk| pk.bytes));
    assert!(
        matches!(other.join().unwrap(), Err(Error::Timeout)),
        "a second thread must not run a completion while the holder has the only slot"
    );
    // The holder exits: its slot is free and the second packet flows.
    let p3 = p.clone();
    let other = thread::spawn(move || p3.get(Some(DEADLINE)).map(|pk| pk.bytes));
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(other.join().unwrap().unwrap(), 2);
}

/// A buffer that counts its drops, its storage on the heap.
struct Counted {
    storage: Box<[u8]>,
    filled: usize,
    drops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

// SAFETY: the storage is a heap allocation that does not move with the
// value; all of it is initialized, `filled <= storage.len()`.
unsafe impl iocompletion::IoBuf for Counted {
    fn as_buf_ptr(&self) -> *const u8 {
        self.storage.as_ptr()
    }
    fn buf_len(&self) -> usize {
        self.filled
    }
    fn buf_capacity(&self) -> usize {
        self.storage.len()
    }
}

// SAFETY: as above, writable through `&mut`.
unsafe impl iocompletion::IoBufMut for Counted {
    fn as_buf_mut_ptr(&mut self) -> *mut u8 {
        self.storage.as_mut_ptr()
    }
    unsafe fn set_buf_len(&mut self, len: usize) {
        self.filled = len;
    }
}

/// The future's output once it has resolved, polled with no executor.
fn resolved<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A port whose last reference goes without a `close` (its user's clone
/// and the handle bound to it, in either order) closes as `close` does:
/// a read in flight completes aborted and its future resolves with its
/// buffer; a read nobody waits for is dropped with its buffer. Nothing is
/// left in the kernel or leaked (S11, S24).
#[test]
fn s11_dropping_the_last_reference_of_a_port_closes_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    for port_first in [true, false] {
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = || Counted { storage: vec![0; 64].into_boxed_slice(), filled: 0, drops: drops.clone() };
        let (_peer, mine) = util::tcp_pair();
        let h = iocompletion::Handle::from(mine);
        let (port, _rt) = util::on_own_port(&h);

        let mut read = h.request(iocompletion::Op::Read, Buffer::from_buf_mut(counted())).into_future();
        assert!(read.id().is_some(), "the read starts");
        util::started(h.read(counted()).start());
        assert!(resolved(&mut read).is_none(), "nothing to read yet");
        if port_first {
            drop(port);
            drop(h); // its binding held the port's last reference
        } else {
            drop(h);
            drop(port);
        }
        let mut done = None;
        wait_until("the read's future resolves", || {
            done = resolved(&mut read);
            done.is_some()
        });
        let done = done.unwrap().expect("started");
        assert!(done.status.is_aborted(), "expected an aborted read, got {:?}", done.status);
        assert_eq!(done.bytes, 0);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the read nobody waits for is dropped with its buffer");
        drop(done);
        assert_eq!(drops.load(Ordering::SeqCst), 2, "the future's read hands its buffer back");
    }
}

/// The last reference of a port may go on a pool thread, inside a
/// callback: the port closes there, and a read in flight on it completes
/// aborted, its future resolved (S11), with no wait on the pool.
#[test]
fn s11_the_last_reference_of_a_port_may_go_in_a_pool_callback() {
    let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
    let (_peer, mine) = util::tcp_pair();
    let h = iocompletion::Handle::from(mine);
    let (port, _host) = util::on_own_port(&h);
    let mut read = h.request(iocompletion::Op::Read, Buffer::from(vec![7u8; 16])).into_future();
    assert!(read.id().is_some(), "the read starts");
    let owned = std::sync::Mutex::new(Some((port, h)));
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| {
        let pair = owned.lock().unwrap().take();
        drop(pair);
        let _ = tx.lock().unwrap().send(thread::current().name().map(str::to_owned));
    })
    .unwrap();
    let on = rx.recv_timeout(DEADLINE).expect("the callback ran and returned");
    assert!(on.is_some_and(|n| n.contains("iocompletion")), "the drop ran on a pool thread");
    let mut done = None;
    wait_until("the read's future resolves", || {
        done = resolved(&mut read);
        done.is_some()
    });
    let done = done.unwrap().expect("started");
    assert!(done.status.is_aborted(), "expected an aborted read, got {:?}", done.status);
    assert_eq!(done.into_buffer().into_vec(), vec![7u8; 16], "the buffer comes back as it was");
    rt.shutdown();
}
