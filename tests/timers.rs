//! S33: deadlines on requests and timers. Each test waits for an event
//! that must come (a deadline with no data, a timer), bounded by the
//! suite's generous DEADLINE; none depends on how long anything takes.

mod util;

use std::collections::HashSet;
use std::future::IntoFuture;
use std::io::{ErrorKind, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iocompletion::{Error, Handle, Op, Runtime, Status};
use util::{bind, runtime, started, tcp_pair, DEADLINE};

fn timed_out(status: Status) -> bool {
    status.result(0).is_err_and(|e| e.kind() == ErrorKind::TimedOut)
}

#[test]
fn s33_a_deadline_that_passes_cancels_the_request_with_the_timed_out_status() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    let id = started(
        h.request(Op::Read, vec![5; 16].into()).deadline(Instant::now() + Duration::from_millis(20)).start(),
    );
    let done = c.recv();
    assert_eq!(done.id(), id);
    assert!(timed_out(done.status), "{:?}", done.status);
    assert!(!done.status.is_aborted());
    assert_eq!(done.request.into_buffer().into_vec(), vec![5; 16], "the buffer comes back as it was");
    c.expect_none(Duration::from_millis(50));
}

/// A write whose deadline passes after it sent part of its bytes
/// completes timed out with the bytes sent (as IOCP reports a cancelled
/// send): exactly what the peer receives, the start of the buffer.
#[test]
fn s33_a_write_cut_off_by_its_deadline_reports_the_bytes_sent() {
    let rt = runtime();
    let (mut peer, h) = util::stalled_pair();
    let c = bind(&rt, &h);
    let data = util::pattern(util::BIG_WRITE, 33);
    // The deadline only has to be ahead as the start checks it; a start
    // that comes too late is refused and tried again with a later one.
    let mut ahead = Duration::from_millis(100);
    let id = loop {
        match h.request(Op::Write, data.clone().into()).deadline(Instant::now() + ahead).start() {
            Ok(id) => break id,
            Err(e) if matches!(e.error, Error::Timeout) && ahead < DEADLINE => ahead *= 2,
            Err(e) => panic!("the write did not start: {e}"),
        }
    };
    let first = util::first_byte(&mut peer);
    let d = c.recv_for("the write past its deadline");
    assert_eq!(d.id(), id);
    assert!(timed_out(d.status), "expected a timed-out completion, got {d:?}");
    let got = util::drain_peer(&mut peer, &h, first);
    assert!(d.bytes > 0, "the peer received bytes, yet the completion says 0");
    assert_eq!(d.bytes, got.len(), "the completion reports what the peer received");
    assert!(got[..] == data[..got.len()], "the peer received the start of the buffer");
    assert_eq!(d.request.into_buffer().len(), util::BIG_WRITE, "the buffer comes back whole");
}

#[test]
fn s33_a_one_shot_request_past_its_deadline_runs_its_closure_timed_out() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let (tx, rx) = mpsc::channel();
    let deadline = Instant::now() + Duration::from_millis(20);
    h.request(Op::Read, vec![7; 8].into())
        .deadline(deadline)
        .then(move |c| tx.send((c.status, c.into_buffer().into_vec())).unwrap())
        .unwrap();
    let (status, buf) = rx.recv_timeout(DEADLINE).expect("the deadline ends the read");
    assert!(timed_out(status), "{status:?}");
    assert_eq!(buf, vec![7; 8], "the buffer comes back as it was");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "the closure ran once");
}

#[test]
fn s33_a_request_that_completes_before_its_deadline_is_reported_as_it_is() {
    let rt = runtime();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    started(
        h.request(Op::Read, Vec::<u8>::with_capacity(8).into())
            .deadline(Instant::now() + Duration::from_secs(3600))
            .start(),
    );
    peer.write_all(b"in time").unwrap();
    let done = c.recv();
    assert!(done.status.is_success(), "{:?}", done.status);
    assert_eq!(done.request.into_buffer().into_vec(), b"in time");
}

#[test]
fn s33_a_deadline_already_passed_refuses_the_start() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let _c = bind(&rt, &h);
    let e = h.request(Op::Read, vec![1; 4].into()).deadline(Instant::now()).start().unwrap_err();
    assert!(matches!(e.error, Error::Timeout), "{e}");
    assert_eq!(e.buffer.len(), 4);
}

#[test]
fn s33_an_awaited_read_with_a_timeout_resolves_timed_out_with_its_buffer() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let (r, buf) = futures::executor::block_on(
        h.read(Vec::with_capacity(32)).timeout(Duration::from_millis(20)).into_future(),
    );
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(buf.capacity(), 32);
    rt.shutdown();
}

/// A deadline takes user data like any start, whichever way the request
/// completes: the sink, a closure, a future.
#[test]
fn s33_a_deadline_start_carries_its_user_data_in_every_form() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    let soon = || Instant::now() + Duration::from_millis(20);
    started(h.read(vec![0; 4]).deadline(soon()).user_data(41).start());
    let done = c.recv();
    assert!(timed_out(done.status), "{:?}", done.status);
    assert_eq!(done.request.user_data(), 41);

    let (tx, rx) = mpsc::channel();
    h.request(Op::Read, vec![0; 4].into())
        .user_data(42)
        .deadline(soon())
        .then(move |c| tx.send((c.status, c.request.user_data())).unwrap())
        .unwrap();
    let (status, data) = rx.recv_timeout(DEADLINE).expect("the deadline ends the read");
    assert!(timed_out(status), "{status:?}");
    assert_eq!(data, 42);

    let done = futures::executor::block_on(
        h.request(Op::Read, vec![0; 4].into()).user_data(43).timeout(Duration::from_millis(20)).into_future(),
    )
    .expect("started");
    assert!(timed_out(done.status), "{:?}", done.status);
    assert_eq!(done.request.user_data(), 43);
    c.expect_none(Duration::from_millis(50));
}

/// `Duration::MAX` is no deadline, as for the timers: the request starts
/// and completes with its data, never timed out.
#[test]
fn s33_a_timeout_of_duration_max_is_no_deadline() {
    let rt = runtime();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    started(h.read(Vec::with_capacity(8)).timeout(Duration::MAX).start());
    peer.write_all(b"no rush").unwrap();
    let done = c.recv();
    assert!(done.status.is_success(), "{:?}", done.status);
    assert_eq!(done.request.into_buffer().into_vec(), b"no rush");
}

/// Deadlines racing completions: every request completes exactly once,
/// either with its byte or timed out, and no byte is lost or read twice.
#[test]
fn s33_a_deadline_racing_a_completion_yields_exactly_one_completion() {
    let rt = runtime();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);
    const N: usize = 200;
    let mut ids = HashSet::new();
    let mut got = Vec::new();
    let mut written = 0;
    let mut timeouts = 0;
    for _ in 0..N {
        // 1 to 451 us (a deadline already past when the start checks it
        // refuses the start: no request, no completion).
        let deadline = Instant::now() + Duration::from_micros(1 + (written % 10) as u64 * 50);
        let id = match h.request(Op::Read, Vec::<u8>::with_capacity(1).into()).deadline(deadline).start() {
            Ok(id) => id,
            Err(e) if matches!(e.error, Error::Timeout) => continue,
            Err(e) => panic!("{e}"),
        };
        ids.insert(id);
        // Sometimes the byte comes late, so that the deadline (which the
        // timer thread acts on some tens of microseconds after it passes)
        // wins too. The pauses only shape the mix; the checks hold for any.
        if written % 3 == 0 {
            std::thread::sleep(Duration::from_micros((written % 7) as u64 * 40));
        }
        peer.write_all(&[written as u8]).unwrap();
        written += 1;
        let done = c.recv();
        assert!(ids.remove(&done.id()), "one completion per request");
        if done.status.is_success() {
            got.extend(done.request.into_buffer().into_vec());
        } else {
            assert!(timed_out(done.status), "{:?}", done.status);
            timeouts += 1;
            // Its byte is still there: take it, so the next read starts
            // with nothing waiting.
            started(h.read(Vec::with_capacity(1)).start());
            got.extend(c.recv().request.into_buffer().into_vec());
        }
    }
    assert!(ids.is_empty());
    // Every byte was read once, in order, by the read it was written for
    // or by the one after a timeout.
    let _ = timeouts;
    assert_eq!(got, (0..written).map(|i| i as u8).collect::<Vec<_>>(), "no byte lost or read twice");
    c.expect_none(Duration::from_millis(50));
}

#[test]
fn s33_a_timer_fires_once_with_success() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let id = rt.timer_after(Duration::from_millis(5), move |s| tx.send(s).unwrap()).unwrap();
    assert!(rx.recv_timeout(DEADLINE).unwrap().is_success());
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "once");
    assert!(rt.cancel_timer(id).is_err(), "a fired timer is not found");
    rt.shutdown();
}

#[test]
fn s33_a_cancelled_timer_completes_once_aborted() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let id = rt.timer_after(Duration::from_secs(3600), move |s| tx.send(s).unwrap()).unwrap();
    rt.cancel_timer(id).unwrap();
    assert!(rx.recv_timeout(DEADLINE).unwrap().is_aborted());
    assert!(rt.cancel_timer(id).is_err(), "cancelled once");
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "once");
    rt.shutdown();
}

/// `Duration::MAX` is no deadline for a timer either, as for a request's
/// `.timeout`: the timer is set, and only a cancel (or a shutdown) ends it.
#[test]
fn s33_a_timer_of_duration_max_never_fires_on_its_own() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let id = rt.timer_after(Duration::MAX, move |s| tx.send(s).unwrap()).expect("no deadline is no error");
    let (at_end, ended) = mpsc::channel();
    rt.timer_after(Duration::MAX, move |s| at_end.send(s).unwrap()).unwrap();
    rt.cancel_timer(id).unwrap();
    assert!(rx.recv_timeout(DEADLINE).unwrap().is_aborted(), "cancelled, never due");
    rt.shutdown();
    assert!(ended.recv_timeout(DEADLINE).unwrap().is_aborted(), "ended by the shutdown, never due");
}

#[test]
fn s33_shutdown_completes_pending_timers_aborted() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        rt.timer_after(Duration::from_secs(3600), move |s| tx.send(s).unwrap()).unwrap();
    }
    drop(tx);
    rt.shutdown();
    let all: Vec<Status> = rx.iter().collect();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.is_aborted()), "{all:?}");
    assert!(rt.timer_after(Duration::from_millis(1), |_| {}).is_err(), "a shut-down runtime takes no timer");
}

/// A runtime whose one port is full (S35): two reads wait on a socket with
/// no data, and a post is refused.
fn full_runtime(name: &str) -> (Runtime, Handle, std::net::TcpStream) {
    let rt =
        Runtime::builder().min_threads(1).max_threads(2).max_pending(2).thread_name(name).build().unwrap();
    let (peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_io_completion_callback(&h, std::sync::Arc::new(|_, _, _| {}), 0).unwrap();
    started(h.read(Vec::with_capacity(1)).start());
    started(h.read(Vec::with_capacity(1)).start());
    let e = rt.post_callback(0, |_, _, _| {}).unwrap_err();
    assert!(matches!(e.error, Error::Full { bound: 2 }), "{e}");
    (rt, h, peer)
}

/// The name of the thread running the caller, and whether it is one of
/// the pool's workers (named `<thread_name>-<n>`).
fn on_pool(name: &str) -> (String, bool) {
    let t = std::thread::current().name().unwrap_or("").to_string();
    let worker =
        t.strip_prefix(name).and_then(|n| n.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok());
    (t, worker)
}

#[test]
fn s35_a_timer_due_on_a_full_port_runs_on_the_pool_with_success() {
    let (rt, _h, _peer) = full_runtime("s35-full");
    let (tx, rx) = mpsc::channel();
    rt.timer_after(Duration::from_millis(20), move |s| tx.send((s, on_pool("s35-full"))).unwrap()).unwrap();
    let (status, (thread, worker)) = rx.recv_timeout(DEADLINE).expect("the timer fires");
    assert!(
        status.is_success() && worker,
        "a timer is not refused by the bound, and runs on a pool worker: {status:?} on {thread:?}"
    );
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "once");
    // Taking its packet left the bound's count true: still full.
    assert!(matches!(rt.post_callback(0, |_, _, _| {}).unwrap_err().error, Error::Full { bound: 2 }));
    rt.shutdown();
}

#[test]
fn s33_a_cancelled_timer_runs_its_closure_on_the_pool_even_at_the_bound() {
    let (rt, _h, _peer) = full_runtime("s33-cancel");
    let (tx, rx) = mpsc::channel();
    let id = rt
        .timer_after(Duration::from_secs(3600), move |s| tx.send((s, on_pool("s33-cancel"))).unwrap())
        .unwrap();
    rt.cancel_timer(id).unwrap();
    let (status, (thread, worker)) = rx.recv_timeout(DEADLINE).expect("the cancelled timer completes");
    assert!(status.is_aborted(), "{status:?}");
    assert!(worker, "the closure ran on a pool worker, not on {thread:?}");
    rt.shutdown();
}

#[test]
fn s33_a_dropped_runtime_runs_its_pending_timers_aborted_on_its_pool() {
    let rt = Runtime::builder().min_threads(1).thread_name("s33-drop").build().unwrap();
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        rt.timer_after(Duration::from_secs(3600), move |s| tx.send((s, on_pool("s33-drop"))).unwrap())
            .unwrap();
    }
    drop(tx);
    drop(rt);
    for _ in 0..3 {
        let (status, (thread, worker)) = rx.recv_timeout(DEADLINE).expect("each pending timer completes");
        assert!(status.is_aborted() && worker, "aborted, on a pool worker: {status:?} on {thread:?}");
    }
    assert!(rx.recv_timeout(DEADLINE).is_err(), "once each: every sender is gone");
}
