//! Timer futures on the crate's timers (S33): [`sleep`], [`sleep_until`]
//! and [`timeout`], shaped like `tokio::time`'s.
//!
//! They need no runtime: one thread of the process serves every timer of
//! every runtime (the one behind [`Runtime::timer_at`](crate::Runtime::timer_at)),
//! so they work in the crate's tasks, in [`Runtime::block_on`](crate::Runtime::block_on)
//! and on any other executor alike. When a sleep is due, that thread wakes
//! its task; a pending sleep holds no thread of the pool. Dropping a sleep
//! cancels its timer.
//!
//! ```
//! use std::time::Duration;
//! use iocompletion::time::{sleep, timeout};
//!
//! let rt = iocompletion::Runtime::builder().build()?;
//! rt.block_on(async {
//!     sleep(Duration::from_millis(5)).await;
//!     let slow = sleep(Duration::from_secs(60));
//!     assert!(timeout(Duration::from_millis(5), slow).await.is_err());
//!     let fast = async { 7 };
//!     assert_eq!(timeout(Duration::from_secs(60), fast).await, Ok(7));
//! });
//! # rt.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::status::Status;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};

/// The owner of the timers of sleeps: no runtime (runtime ids start at 1),
/// so a runtime's shutdown leaves them alone.
const NO_RUNTIME: u64 = 0;

/// What a sleep and its timer share.
#[derive(Default)]
struct Shared {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A future that ends at an instant; made by [`sleep`] and [`sleep_until`].
///
/// It is `Send`, `Sync` and `Unpin`. Its timer is set at its first poll
/// and cancelled when it is dropped or [reset](Sleep::reset).
pub struct Sleep {
    deadline: Instant,
    armed: Option<(crate::timer::Key, Arc<Shared>)>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep").field("deadline", &self.deadline).finish()
    }
}

/// A future that ends after `duration`. A duration too long to add to now
/// sleeps for ever (in practice).
pub fn sleep(duration: Duration) -> Sleep {
    let now = Instant::now();
    // About 30 years: far enough for "never", near enough to add.
    let deadline = now.checked_add(duration).unwrap_or_else(|| now + Duration::from_secs(1 << 30));
    sleep_until(deadline)
}

/// A future that ends at `deadline` (at once when it has passed).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, armed: None }
}

impl Sleep {
    /// The instant it ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// True once the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        self.armed.as_ref().is_some_and(|(_, s)| s.fired.load(Ordering::Acquire)) || Instant::now() >= self.deadline
    }

    /// Moves the deadline (earlier or later); the next poll sets the timer
    /// anew.
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
    }

    fn disarm(&mut self) {
        if let Some((key, shared)) = self.armed.take() {
            if !shared.fired.load(Ordering::Acquire) {
                // Runs the timer's closure now, aborted: it only clears.
                crate::timer::cancel(key);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, shared)) = &self.armed {
            if shared.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            {
                let mut w = shared.waker.lock();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            // It may have fired before the waker was stored.
            if shared.fired.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let shared = Arc::new(Shared { fired: AtomicBool::new(false), waker: Mutex::new(Some(cx.waker().clone())) });
        let s = shared.clone();
        let fire = Box::new(move |status: Status| {
            s.fired.store(true, Ordering::Release);
            let w = s.waker.lock().take();
            // A cancel (aborted) comes from the sleep itself: no one to wake.
            if status.is_success() {
                if let Some(w) = w {
                    w.wake();
                }
            }
        });
        match crate::timer::schedule(self.deadline, NO_RUNTIME, fire) {
            Ok(key) => {
                self.armed = Some((key, shared));
                Poll::Pending
            }
            // No timer thread could be started (the OS refused a thread):
            // ending now is the one answer that cannot hang the caller.
            Err(_) => Poll::Ready(()),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The error of a [`timeout`] whose time ran out first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::ErrorKind::TimedOut.into()
    }
}

pin_project_lite::pin_project! {
    /// A future with a time limit; made by [`timeout`] and [`timeout_at`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] (and
/// `future` is dropped with the `Timeout`).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout { future, sleep: sleep(duration) }
}

/// Runs `future` until `deadline` at most; see [`timeout`].
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout { future, sleep: sleep_until(deadline) }
}

impl<F> Timeout<F> {
    /// The future it runs.
    pub fn get_ref(&self) -> &F {
        &self.future
    }

    /// The future it runs, when it is `Unpin`.
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}
