//! Tasks on the pool: `Runtime::spawn`, `JoinHandle` (join, detach, abort,
//! panics), `Runtime::block_on`, the timer futures of `iocompletion::time`,
//! and what happens to tasks at shutdown (S17, S24, S34).

mod util;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use iocompletion::time::{sleep, sleep_until, timeout};
use iocompletion::{Buffer, Handle, IoBuf, IoBufMut, Op, Runtime};
use util::{tcp_pair, wait_until, DEADLINE};

fn runtime(min: usize, max: usize) -> Runtime {
    Runtime::builder().min_threads(min).max_threads(max).thread_name("tasks-pool").build().unwrap()
}

/// Waits for a join handle (or any future) on a helper thread, failing the
/// test after `DEADLINE` instead of hanging.
fn join_within<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(f));
    });
    rx.recv_timeout(DEADLINE).expect("the future did not resolve in time")
}

/// A flag a future waits for, set (and its waker woken) from any thread.
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);

impl Gate {
    fn open(&self) {
        let w = {
            let mut g = self.0.lock().unwrap();
            g.0 = true;
            g.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    fn has_waiter(&self) -> bool {
        self.0.lock().unwrap().1.is_some()
    }

    fn wait(&self) -> GateWait {
        GateWait(self.clone())
    }
}

struct GateWait(Gate);

impl Future for GateWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = (self.0).0.lock().unwrap();
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn spawn_runs_the_task_on_a_pool_thread_and_join_gives_its_output() {
    let rt = runtime(1, 4);
    let task = rt.spawn(async { (6 * 7, std::thread::current().name().map(str::to_owned)) });
    let (v, thread) = rt.block_on(task).unwrap();
    assert_eq!(v, 42);
    assert!(thread.unwrap_or_default().starts_with("tasks-pool"), "the task ran on the pool");
    assert_eq!(rt.live_tasks(), 0);
    rt.shutdown();
}

#[test]
fn a_task_woken_from_another_thread_runs_to_its_end() {
    let rt = runtime(1, 4);
    let gate = Gate::default();
    let g = gate.clone();
    let task = rt.spawn(async move {
        g.wait().await;
        "woken"
    });
    wait_until("the task waits on the gate", || gate.has_waiter());
    assert!(!task.is_finished());
    let opener = std::thread::spawn(move || gate.open());
    assert_eq!(join_within(task).unwrap(), "woken");
    opener.join().unwrap();
    rt.shutdown();
}

#[test]
fn dropping_the_join_handle_detaches_the_task_which_runs_on() {
    let rt = runtime(1, 4);
    let gate = Gate::default();
    let (tx, rx) = mpsc::channel();
    let g = gate.clone();
    drop(rt.spawn(async move {
        g.wait().await;
        tx.send("ran").unwrap();
    }));
    wait_until("the task waits on the gate", || gate.has_waiter());
    gate.open();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), "ran");
    rt.shutdown();
}

#[test]
fn abort_drops_a_waiting_task_and_its_join_handle_resolves_cancelled() {
    let rt = runtime(1, 4);
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let (g, flag) = (gate.clone(), DropFlag(dropped.clone()));
    let task = rt.spawn(async move {
        let _flag = flag;
        g.wait().await;
        "not reached"
    });
    wait_until("the task waits on the gate", || gate.has_waiter());
    task.abort();
    let err = join_within(task).unwrap_err();
    assert!(err.is_cancelled() && !err.is_panic(), "{err}");
    assert!(dropped.load(Ordering::Acquire), "the future was dropped");
    assert_eq!(rt.live_tasks(), 0);
    rt.shutdown();
}

#[test]
fn a_panic_in_a_task_is_caught_counted_and_returned_through_its_join_handle() {
    let rt = runtime(1, 2);
    let before = rt.stats().panics;
    let task = rt.spawn(async {
        if std::hint::black_box(true) {
            panic!("boom in a task");
        }
        1
    });
    let err = rt.block_on(task).unwrap_err();
    assert!(err.is_panic());
    let payload = err.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in a task"));
    assert_eq!(rt.stats().panics, before + 1);
    // The pool goes on running tasks.
    assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
    rt.shutdown();
}

/// A future that checks no two threads poll it at once, and on each poll
/// wakes itself twice: once from this thread and once from another, so
/// wakes land before, during and after polls.
struct Busy {
    polls: usize,
    left: usize,
    polling: Arc<AtomicBool>,
    wakers: mpsc::Sender<Waker>,
}

impl Future for Busy {
    type Output = usize;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        assert!(!self.polling.swap(true, Ordering::AcqRel), "two threads poll one task");
        self.polls += 1;
        let out = if self.left == 0 {
            Poll::Ready(self.polls)
        } else {
            self.left -= 1;
            self.wakers.send(cx.waker().clone()).unwrap();
            cx.waker().wake_by_ref();
            Poll::Pending
        };
        self.polling.store(false, Ordering::Release);
        out
    }
}

#[test]
fn a_task_is_polled_by_one_thread_at_a_time_and_wakes_during_a_poll_are_not_lost() {
    let rt = runtime(4, 4);
    let (tx, rx) = mpsc::channel::<Waker>();
    let waker_thread = std::thread::spawn(move || {
        for w in rx {
            w.wake();
        }
    });
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            rt.spawn(Busy {
                polls: 0,
                left: 500,
                polling: Arc::new(AtomicBool::new(false)),
                wakers: tx.clone(),
            })
        })
        .collect();
    drop(tx);
    for t in tasks {
        let polls = join_within(t).unwrap();
        assert!(polls > 500, "every wake was seen: {polls} polls");
    }
    waker_thread.join().unwrap();
    rt.shutdown();
}

#[test]
fn yield_now_lets_the_task_run_again_later() {
    let rt = runtime(1, 1);
    let n = rt.block_on(rt.spawn(async {
        let mut n = 0;
        for _ in 0..100 {
            iocompletion::task::yield_now().await;
            n += 1;
        }
        n
    }));
    assert_eq!(n.unwrap(), 100);
    rt.shutdown();
}

#[test]
fn a_task_waiting_on_io_or_a_timer_holds_no_thread() {
    // One thread only: if a waiting task held it, nothing else could run.
    let rt = runtime(1, 1);
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let reader = h.clone();
    let io_task = rt.spawn(async move { reader.read(Vec::with_capacity(16)).await.0 });
    let sleeper = rt.spawn(sleep(Duration::from_secs(3600)));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    rt.post_callback(0, move |_, _, _| tx.lock().unwrap().send(()).unwrap()).unwrap();
    rx.recv_timeout(DEADLINE).expect("a callback ran beside the waiting tasks");
    assert_eq!(rt.block_on(rt.spawn(async { 3 })).unwrap(), 3);
    assert!(!io_task.is_finished() && !sleeper.is_finished());
    io_task.abort();
    sleeper.abort();
    assert!(join_within(io_task).unwrap_err().is_cancelled());
    assert!(join_within(sleeper).unwrap_err().is_cancelled());
    rt.shutdown();
}

/// A read buffer that counts its drops (each buffer must be dropped once:
/// its request completed and handed it back).
struct Counted {
    storage: Vec<u8>,
    filled: usize,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::AcqRel);
    }
}

// SAFETY: the storage is a heap allocation that does not move with the
// value; `filled <= storage.len()` bytes hold data, all are initialized.
unsafe impl IoBuf for Counted {
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
unsafe impl IoBufMut for Counted {
    fn as_buf_mut_ptr(&mut self) -> *mut u8 {
        self.storage.as_mut_ptr()
    }
    unsafe fn set_buf_len(&mut self, len: usize) {
        self.filled = len;
    }
}

#[test]
fn s17_shutdown_drops_tasks_waiting_on_io_whose_requests_complete_aborted_with_their_buffers() {
    const TASKS: usize = 16;
    let rt = runtime(2, 4);
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (h, drops, started) = (h.clone(), drops.clone(), started.clone());
            rt.spawn(async move {
                let buf = Counted { storage: vec![0; 64], filled: 0, drops };
                let read = h.request(Op::Read, Buffer::from_buf_mut(buf)).into_future();
                assert!(read.id().is_some(), "the read starts");
                started.fetch_add(1, Ordering::AcqRel);
                read.await.expect("the read starts").result()
            })
        })
        .collect();
    wait_until("every task started its read", || started.load(Ordering::Acquire) == TASKS);
    rt.shutdown();
    for t in tasks {
        match join_within(t) {
            Err(e) => assert!(e.is_cancelled(), "{e}"),
            // A task that ran once more after the port closed saw its read
            // aborted (S24).
            Ok(r) => assert!(r.is_err(), "a read of a silent peer cannot succeed"),
        }
    }
    wait_until("every buffer came back and was freed, once", || drops.load(Ordering::Acquire) == TASKS);
    assert_eq!(rt.live_tasks(), 0);
    assert_eq!(drops.load(Ordering::Acquire), TASKS);
}

#[test]
fn s17_a_spawn_after_shutdown_resolves_cancelled_and_drops_the_future() {
    let rt = runtime(1, 2);
    rt.shutdown();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let task = rt.spawn(async move {
        let _flag = flag;
    });
    assert!(dropped.load(Ordering::Acquire));
    assert!(join_within(task).unwrap_err().is_cancelled());
}

#[test]
fn block_on_runs_on_the_calling_thread_with_the_runtime_current() {
    let rt = runtime(1, 2);
    assert!(Runtime::current().is_err(), "no runtime outside a task");
    let me = std::thread::current().id();
    let (same_thread, current) =
        rt.block_on(async move { (std::thread::current().id() == me, Runtime::current()) });
    assert!(same_thread);
    assert!(current.is_ok());
    // Inside a task too, and a task can spawn through it.
    let nested = rt.block_on(rt.spawn(async {
        let rt = Runtime::current().expect("the task's runtime");
        rt.spawn(async { 9 }).await.unwrap()
    }));
    assert_eq!(nested.unwrap(), 9);
    rt.shutdown();
}

#[test]
fn sleep_sleep_until_and_timeout_end_on_the_crates_timers() {
    let rt = runtime(1, 2);
    rt.block_on(async {
        sleep(Duration::from_millis(5)).await;
        // An instant already past is ready at once.
        sleep_until(Instant::now() - Duration::from_millis(1)).await;
        let never = sleep(Duration::from_secs(3600));
        assert!(timeout(Duration::from_millis(5), never).await.is_err(), "the timeout ends first");
        assert_eq!(timeout(Duration::from_secs(3600), async { 1 }).await, Ok(1));
    });
    // In a task, and woken from the timer thread.
    let t = rt.spawn(async {
        sleep(Duration::from_millis(2)).await;
        "slept"
    });
    assert_eq!(join_within(t).unwrap(), "slept");
    rt.shutdown();
}

#[test]
fn sleeps_work_on_another_executor_and_reset_moves_the_deadline() {
    futures::executor::block_on(async {
        let mut s = sleep(Duration::from_secs(3600));
        // Polled once (the timer is set), then moved to now.
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll(cx))).await;
        assert!(first.is_pending());
        s.reset(Instant::now());
        (&mut s).await;
        assert!(s.is_elapsed());
    });
}

#[test]
fn a_task_woken_by_its_io_completion_runs_in_that_completion_not_in_a_second_packet() {
    const READS: u64 = 20;
    // One pool thread: each read's completion is delivered after the task
    // paused, on the thread that then runs the task at once.
    let rt = runtime(1, 1);
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    std::io::Write::write_all(&mut peer, &[7u8; READS as usize]).unwrap();
    let before = rt.stats().completions;
    let task = rt.spawn(async move {
        for _ in 0..READS {
            // One byte per read: twenty reads, twenty completions.
            let (n, _) = h.read(Vec::with_capacity(1)).await;
            assert_eq!(n.unwrap(), 1);
        }
    });
    join_within(task).unwrap();
    // The spawn's packet, then one per read; a task posted again for each
    // wake would double the reads' share.
    let expected = 1 + READS;
    wait_until("every completion is counted", || rt.stats().completions - before >= expected);
    let ran = rt.stats().completions - before;
    assert!(ran < expected + READS / 2, "{ran} packets for {READS} reads: the wakes were posted, not run");
    rt.shutdown();
}
