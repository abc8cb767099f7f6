//! I/O keeps moving whatever the pool does: completions from the OS are
//! collected while callbacks block or keep the port's queue full (S8, S14),
//! and a shutdown never waits for a worker's idle keep-alive (S17).
//!
//! Every wait here has a hang guard; no test asserts a time. Each runs on
//! whichever Linux driver the environment picks (io_uring or epoll).

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocompletion::{Handle, Request, Runtime, Status};
use util::{started, tcp_pair, DEADLINE};

/// S14: a callback that starts a read and then blocks in user code does
/// not strand that read while the pool has room below its maximum. The
/// callback blocks until the read's completion has run on another thread;
/// the pool starts with one worker (it grows towards its minimum on
/// demand), so before the fix nobody looked at the OS while that worker
/// blocked, and the read waited for the hang guard.
#[test]
fn s14_a_blocking_callback_strands_no_io() {
    for round in 0..40 {
        let (seen_tx, seen_rx) = mpsc::channel::<usize>();
        let seen_tx = Mutex::new(seen_tx);
        let seen_rx = Mutex::new(seen_rx);
        read_in_a_callback_that_waits(
            round,
            move |bytes| {
                let _ = seen_tx.lock().unwrap().send(bytes);
            },
            // Blocks until another thread ran the read's completion.
            move || seen_rx.lock().unwrap().recv_timeout(DEADLINE).unwrap_or(usize::MAX),
        );
    }
}

/// S14, with a callback that spins in user code instead of sleeping: it
/// starts a read, then waits for the read's completion without a system
/// call (a loop on an atomic; the clock it reads for its bound is the
/// vDSO's). With `COOP_TASKRUN` (io_uring's default setup here) the kernel
/// does not interrupt a running thread to post a completion whose task
/// work is its own; the thread posts it at its next return to user mode
/// (a system call, an interrupt, at the latest the scheduler's tick), and
/// another thread runs it.
#[test]
fn s14_a_callback_spinning_in_user_code_strands_no_io() {
    for round in 0..20 {
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let seen2 = seen.clone();
        read_in_a_callback_that_waits(
            round,
            move |bytes| seen2.store(bytes, Ordering::SeqCst),
            // Spins until another thread ran the read's completion.
            move || {
                let end = Instant::now() + DEADLINE;
                loop {
                    let n = seen.load(Ordering::SeqCst);
                    if n != usize::MAX || Instant::now() > end {
                        break n;
                    }
                    std::hint::spin_loop();
                }
            },
        );
    }
}

/// One round of the S14 tests above: a pool of 2 to 4 threads; a callback
/// starts a 16-byte read on a socket, then runs `wait` (which gives what
/// the read's completion handed to `deliver`, on another thread); 4 bytes
/// arrive after the read started; the round passes when `wait` saw them.
fn read_in_a_callback_that_waits(
    round: usize,
    deliver: impl Fn(usize) + Send + Sync + 'static,
    wait: impl FnOnce() -> usize + Send + 'static,
) {
    let rt = Runtime::builder().min_threads(2).max_threads(4).build().unwrap();
    let (mut client, server) = tcp_pair();
    let h = Handle::from(server);
    rt.bind_io_completion_callback(
        &h,
        Arc::new(move |_: Status, bytes: usize, _: Request| deliver(bytes)),
        0,
    )
    .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let (started_tx, result_tx) = (Mutex::new(started_tx), Mutex::new(result_tx));
    let wait = Mutex::new(Some(wait));
    let h2 = h.clone();
    rt.post_callback(0, move |_, _, _| {
        let r = h2.read(vec![0; 16]);
        let _ = started_tx.lock().unwrap().send(r.start().is_ok());
        let got = wait.lock().unwrap().take().map_or(usize::MAX, |w| w());
        let _ = result_tx.lock().unwrap().send(got);
    })
    .unwrap();
    assert_eq!(started_rx.recv_timeout(DEADLINE), Ok(true), "round {round}: the read started");
    client.write_all(b"ping").unwrap();
    let got = result_rx.recv_timeout(DEADLINE + DEADLINE).expect("the callback returned");
    assert_eq!(
        got,
        4,
        "round {round}: the read's completion never ran while the callback waited: {:?}",
        rt.stats()
    );
    h.close();
    rt.shutdown();
}

/// S14, with a ring per worker: one callback starts a read and returns (its
/// worker hands the read to the kernel from its own ring before it
/// sleeps); the next callback, on that same worker, blocks in user code
/// until the read's completion has run. The data arrives while the
/// owner of the read's ring is blocked: the kernel still posts the
/// completion, and another thread runs it.
#[test]
fn s14_a_worker_blocked_after_it_submitted_a_read_strands_no_io() {
    for round in 0..10 {
        let rt = Runtime::builder().min_threads(1).max_threads(2).build().unwrap();
        let (mut client, server) = tcp_pair();
        let h = Handle::from(server);
        let (seen_tx, seen_rx) = mpsc::channel::<usize>();
        let seen_tx = Mutex::new(seen_tx);
        rt.bind_io_completion_callback(
            &h,
            Arc::new(move |_: Status, bytes: usize, _: Request| {
                let _ = seen_tx.lock().unwrap().send(bytes);
            }),
            0,
        )
        .unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        let h2 = h.clone();
        rt.post_callback(0, move |_, _, _| {
            let _ = started_tx.lock().unwrap().send(h2.read(vec![0; 16]).start().is_ok());
        })
        .unwrap();
        assert_eq!(started_rx.recv_timeout(DEADLINE), Ok(true), "round {round}: the read started");
        util::wait_until("the first callback returned", || rt.stats().busy == 0);
        let (result_tx, result_rx) = mpsc::channel();
        let (result_tx, seen_rx) = (Mutex::new(result_tx), Mutex::new(seen_rx));
        let (blocked_tx, blocked_rx) = mpsc::channel();
        let blocked_tx = Mutex::new(blocked_tx);
        rt.post_callback(0, move |_, _, _| {
            let _ = blocked_tx.lock().unwrap().send(());
            // Blocks until another thread ran the read's completion.
            let seen = seen_rx.lock().unwrap().recv_timeout(DEADLINE);
            let _ = result_tx.lock().unwrap().send(seen);
        })
        .unwrap();
        blocked_rx.recv_timeout(DEADLINE).expect("the second callback runs");
        client.write_all(b"ping").unwrap();
        let got = result_rx.recv_timeout(DEADLINE + DEADLINE).expect("the callback returned");
        assert_eq!(
            got,
            Ok(4),
            "round {round}: the read's completion never ran while its worker blocked: {:?}",
            rt.stats()
        );
        h.close();
        rt.shutdown();
    }
}

/// How long a chain of posts may run before it stops by itself (a hang
/// guard: the test fails long before).
const CHAIN_GUARD: Duration = Duration::from_secs(30);

/// Most posts the chains may run after the data's arrival and before the
/// read's completion (a count, not a time: the port collects the OS's
/// completions every few dozen packets taken).
const MOST_POSTS: u64 = 2_000;

/// One link of a chain: counts itself and posts the next, until `stop`.
fn link(rt: Runtime, posts: Arc<AtomicU64>, stop: Arc<AtomicBool>, since: Instant) {
    let rt2 = rt.clone();
    rt.post_callback(0, move |_, _, _| {
        posts.fetch_add(1, Ordering::SeqCst);
        if !stop.load(Ordering::SeqCst) && since.elapsed() < CHAIN_GUARD {
            link(rt2.clone(), posts.clone(), stop.clone(), since);
        }
    })
    .unwrap();
}

/// S8: callbacks that keep re-posting themselves (so the port's queue is
/// never empty) do not keep a read whose data has arrived from completing:
/// the read completes while the chains still run, within a bounded number
/// of posts.
#[test]
fn s8_posts_do_not_starve_io() {
    for (threads, chains) in [(1, 1), (2, 4)] {
        let rt = Runtime::builder().min_threads(1).max_threads(threads).build().unwrap();
        let (mut client, server) = tcp_pair();
        let h = Handle::from(server);
        let posts = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel();
        let done_tx = Mutex::new(done_tx);
        let (posts2, stop2) = (posts.clone(), stop.clone());
        rt.bind_io_completion_callback(
            &h,
            Arc::new(move |_: Status, bytes: usize, _: Request| {
                let at = posts2.load(Ordering::SeqCst);
                let running = !stop2.swap(true, Ordering::SeqCst);
                let _ = done_tx.lock().unwrap().send((bytes, at, running));
            }),
            0,
        )
        .unwrap();
        let since = Instant::now();
        for _ in 0..chains {
            link(rt.clone(), posts.clone(), stop.clone(), since);
        }
        util::wait_until("the chains run", || posts.load(Ordering::SeqCst) > 1_000);
        started(h.read(vec![0; 16]).start());
        // The data arrives during the write: the posts run between its
        // arrival and the read's completion are at most `at - before` and
        // at least `at - after`. The chains run on while this thread is
        // descheduled, so the first also counts posts of this thread's
        // own delays, without bound; the second counts only posts the
        // port ran after the data had arrived, and none at all (the read's
        // callback may run before `after` is read) when the read completed
        // while this thread was still writing. The bound is on the second:
        // whatever the scheduling it never counts too many, and a port that
        // holds the read back behind the chains exceeds it by far.
        let before = posts.load(Ordering::SeqCst);
        client.write_all(b"data").unwrap();
        let after = posts.load(Ordering::SeqCst);
        let (bytes, at, running) = done_rx.recv_timeout(CHAIN_GUARD + DEADLINE).expect("the read completed");
        stop.store(true, Ordering::SeqCst);
        assert_eq!(bytes, 4);
        assert!(
            running,
            "{threads} thread(s), {chains} chain(s): the read completed only once the chains stopped"
        );
        assert!(at >= before, "the read's callback ran before the data was sent");
        let counted = at.saturating_sub(after);
        assert!(
            counted <= MOST_POSTS,
            "{threads} thread(s), {chains} chain(s): {counted} posts (at most {}) ran between the data's arrival and the read's completion",
            at - before
        );
        h.close();
        rt.shutdown();
    }
}

/// S17: a shutdown right after requests were started returns once they
/// are done or aborted; it never waits for a worker blocked in the OS until
/// its idle keep-alive (600 s here, so a lost wake-up misses the guard).
#[test]
fn s17_shutdown_never_waits_for_the_keep_alive() {
    for round in 0..200 {
        let rt = Runtime::builder()
            .min_threads(1)
            .max_threads(4)
            .keep_alive(Duration::from_secs(600))
            .build()
            .unwrap();
        let (_client, server) = tcp_pair();
        let h = Handle::from(server);
        rt.bind_io_completion_callback(&h, Arc::new(|_: Status, _: usize, _: Request| {}), 0).unwrap();
        // One read goes to the OS, the next two wait behind it: the close
        // cancels the first and queues the aborts of the others.
        for _ in 0..3 {
            started(h.read(vec![0; 16]).start());
        }
        for _ in 0..4 {
            rt.post_callback(0, |_, _, _| {}).unwrap();
        }
        let (tx, rx) = mpsc::channel();
        let rt2 = rt.clone();
        let t = std::thread::spawn(move || {
            rt2.shutdown();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(DEADLINE).is_ok(),
            "round {round}: shutdown did not return within {DEADLINE:?} (a worker waits for its keep-alive)"
        );
        t.join().unwrap();
    }
}
