//! Helpers shared by the rule tests: deadlines instead of sleeps, and a
//! collector that turns completions into channel messages.
#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iocompletion::{CompletionSink, Request, Status};

/// How long any test waits for a state before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it is true; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One completion as a sink saw it.
pub struct Done {
    pub status: Status,
    pub bytes: usize,
    pub request: Request,
    pub thread: String,
}

/// A sink that forwards every completion to a channel.
pub fn collector() -> (Arc<dyn CompletionSink>, mpsc::Receiver<Done>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sink = move |status: Status, bytes: usize, request: Request| {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let _ = tx.lock().unwrap().send(Done { status, bytes, request, thread });
    };
    (Arc::new(sink), rx)
}

/// The next completion, or a panic naming `what` after [`DEADLINE`].
pub fn next(rx: &mpsc::Receiver<Done>, what: &str) -> Done {
    rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("no completion for {what} within {DEADLINE:?}"))
}

/// Asserts that nothing arrives for a short while (used to show that a
/// request that failed at start posted nothing).
pub fn assert_quiet(rx: &mpsc::Receiver<Done>, what: &str) {
    if let Ok(d) = rx.recv_timeout(Duration::from_millis(200)) {
        panic!("unexpected completion ({what}): {:?} {} bytes", d.status, d.bytes);
    }
}

/// A gate that blocking callbacks wait on until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<(bool, usize)>, std::sync::Condvar)>);

impl Gate {
    /// Called inside a callback: counts the arrival and blocks until open
    /// (or the deadline, so a broken test still ends).
    pub fn wait(&self) {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        g.1 += 1;
        cv.notify_all();
        let end = Instant::now() + DEADLINE;
        while !g.0 && Instant::now() < end {
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }

    /// How many callbacks are blocked in [`Gate::wait`] or passed it.
    pub fn arrived(&self) -> usize {
        self.0 .0.lock().unwrap().1
    }

    /// Lets every waiting callback go.
    pub fn open(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().0 = true;
        cv.notify_all();
    }
}

/// True when the tests run under Wine, whose IOCP differs from Windows in
/// a few documented ways (see docs/backends.md). Tests that Wine cannot
/// exercise skip themselves there, by name, and still run on Windows.
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: both names are NUL-terminated; ntdll is always loaded.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
    #[cfg(not(windows))]
    false
}

/// Skips the calling test under Wine, saying why; true when skipped.
pub fn skip_on_wine(why: &str) -> bool {
    let skip = under_wine();
    if skip {
        eprintln!("skip_on_wine: {why}");
    }
    skip
}
