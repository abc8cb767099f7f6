//! Wine's one difference that would lose I/O: it ties socket requests to
//! the thread that issued them.
//!
//! Windows never ties I/O on a handle bound to a completion port to the
//! thread that issued it. Wine does, for sockets: a receive, send, accept
//! or connect that does not complete at once is finished later by an APC
//! to the issuing thread, and when that thread has exited Wine completes it
//! without the transfer (a send or accept with the interim `STATUS_ALERTED`,
//! a receive as a success of 0 bytes, which looks like the end of the
//! stream). Seen with Wine 8: writes from threads that exit at once lost 6
//! of 25 runs of 400 sends, pending reads and accepts of retired pool
//! workers were lost too.
//!
//! So under Wine, and only there, socket requests are issued by one thread
//! of the crate's that never exits; the starting thread hands the call over
//! and waits for its result (a thread hop per start, under Wine only). No
//! thread of the pool or of the user then has to outlive its requests.

use super::handle::Raw;
use super::op::{start, Started};
use crate::request::Header;
use crate::shared::error::{Error, Result};
use crate::shared::HandleKind;
use crate::sync::{mpsc, OnceLock};

/// True when the process runs under Wine (its ntdll exports
/// `wine_get_version`); asked once.
pub(crate) fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    static WINE: OnceLock<bool> = OnceLock::new();
    *WINE.get_or_init(|| {
        // SAFETY: both names are NUL-terminated; ntdll is always loaded, and
        // the procedure's address is only tested, never called.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    })
}

/// One start handed to the issuing thread, with the channel for its result.
struct Job {
    kind: HandleKind,
    raw: *const Raw,
    p: *mut Header,
    skip: bool,
    done: mpsc::SyncSender<Result<Started>>,
}

// SAFETY: the pointers are only used by the issuing thread while the thread
// that sent the job blocks, holding the borrows they come from (see
// `issue`); nothing else is shared.
unsafe impl Send for Job {}

fn issuer() -> Option<&'static mpsc::Sender<Job>> {
    static ISSUER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    ISSUER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned =
                std::thread::Builder::new().name("iocompletion-wine-issuer".into()).spawn(move || {
                    for job in rx {
                        // SAFETY: as `issue` promises: the sender blocks until
                        // the result is sent, so every pointer is live.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                            start(job.kind, &*job.raw, job.p, job.skip)
                        }));
                        let r = r.unwrap_or_else(|_| Err(gone()));
                        let _ = job.done.send(r);
                    }
                });
            spawned.ok().map(|_| tx)
        })
        .as_ref()
}

/// Issues the start of a socket request on the crate's issuing thread and
/// returns its result; when that thread cannot be had, issues it here.
///
/// # Safety
/// As for `start`: `p` is a live request given up with into_raw, with
/// `os.io` set, and `raw` is open for the duration of the call.
pub(super) unsafe fn issue(kind: HandleKind, raw: &Raw, p: *mut Header, skip: bool) -> Result<Started> {
    let Some(tx) = issuer() else {
        // SAFETY: the caller's promise.
        return unsafe { start(kind, raw, p, skip) };
    };
    thread_local! {
        /// Where the issuing thread sends this thread's results: made once
        /// per thread, so a start allocates nothing.
        static RESULT: (mpsc::SyncSender<Result<Started>>, mpsc::Receiver<Result<Started>>) =
            mpsc::sync_channel(1);
    }
    let run = |done: &mpsc::SyncSender<Result<Started>>, result: &mpsc::Receiver<Result<Started>>| {
        let job = Job { kind, raw, p, skip, done: done.clone() };
        if tx.send(job).is_err() {
            return Err(gone());
        }
        // Blocks until the issuing thread has finished with the borrows.
        result.recv().unwrap_or_else(|_| Err(gone()))
    };
    // A start from a thread-local destructor, after RESULT is gone, makes
    // a channel of its own.
    RESULT.try_with(|(done, result)| run(done, result)).unwrap_or_else(|_| {
        let (done, result) = mpsc::sync_channel(1);
        run(&done, &result)
    })
}

fn gone() -> Error {
    Error::Io(std::io::Error::other("the thread that issues socket requests under Wine failed"))
}
