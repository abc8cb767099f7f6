//! The portable completion port: the shared queue of `sys::queue` with mio
//! (epoll/kqueue) as its poller.
//!
//! The thread that polls performs the non-blocking calls of the handles that
//! became ready, under each handle's own lock, and pushes their completions
//! to the queue; the event's token is the handle's address, so no global
//! lock is taken per event. Handles closed while an event may still name
//! them are kept alive in `retired` until the next poll begins.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use super::io::{Driver, Io};
use super::op::Completions;
use crate::request::Packet;
use crate::shared::error::{Error, Result};
use crate::shared::DriverStats;
use crate::shared::{DriverInfo, DriverKind};
use crate::sync::{Arc, Mutex, Ordering};
use crate::sys::queue::{Ended, Poller, Queue, Slot};
use crate::sys::{BlockingCall, PortDriver, SlotOps};

const WAKER: Token = Token(0);
const EVENTS: usize = 256;

/// What the queue holds: a completion, or a file request of that handle
/// which the thread taking it performs first (S29).
pub(super) enum Item {
    Packet(Packet),
    Work(Arc<Io>),
}

pub(super) type PortQueue = Queue<Item, UnixPoller>;

impl Completions for PortQueue {
    fn complete(&self, mut p: Packet) {
        if let Some(r) = p.request.as_mut() {
            r.stamp_completion();
        }
        self.push(Item::Packet(p));
    }

    #[cfg(target_os = "linux")]
    fn returns_here(&self) -> bool {
        Queue::returns_here(self)
    }
}

/// mio's poller, shared by the port's threads one at a time.
pub(crate) struct MioPoller {
    poll: Mutex<(Poll, Events)>,
    pub(super) registry: Registry,
    waker: Waker,
    /// Handles closed since the last poll began: an event of the poll in
    /// progress may still carry their address.
    retired: Mutex<Vec<Arc<Io>>>,
    /// Its `epoll_wait` (`kevent`) calls and the events they returned.
    os: crate::shared::OsCounters,
}

impl MioPoller {
    fn poll(&self, deadline: Option<Instant>) -> io::Result<()> {
        let mut g = self.poll.lock();
        // No event of an earlier poll is left to dispatch, and a handle in
        // `retired` was deregistered before it got there, so no event of the
        // poll below can carry its address.
        drop(std::mem::take(&mut *self.retired.lock()));
        let (poll, events) = &mut *g;
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        self.os.entered();
        let r = poll.poll(events, timeout);
        self.os.returned(events.iter().count());
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            r => r,
        }
    }

    fn dispatch(&self, queue: &PortQueue) {
        let mut g = self.poll.lock();
        let (_, events) = &mut *g;
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            // SAFETY: the token is the address of an `Io` registered with
            // this poller. It stays alive until it has been retired and the
            // next poll began (see `poll`), which cannot happen while this
            // thread dispatches the events of this one.
            let io = unsafe { &*(ev.token().0 as *const Io) };
            // Pairs with the release store made before the registration:
            // everything written to the handle before it is visible here.
            io.registered.load(Ordering::Acquire);
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            io.on_ready(queue, readable, writable, ev.is_error());
        }
        events.clear();
    }

    fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// The port's driver: mio's readiness, or on Linux io_uring's completions.
/// One per port, made once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum UnixPoller {
    Mio(MioPoller),
    #[cfg(target_os = "linux")]
    Ring(super::uring::Ring),
}

impl Poller<Item> for UnixPoller {
    fn poll(&self, deadline: Option<Instant>) -> io::Result<()> {
        match self {
            UnixPoller::Mio(m) => m.poll(deadline),
            #[cfg(target_os = "linux")]
            UnixPoller::Ring(r) => r.poll(deadline),
        }
    }

    fn dispatch(&self, queue: &PortQueue) {
        match self {
            UnixPoller::Mio(m) => m.dispatch(queue),
            #[cfg(target_os = "linux")]
            UnixPoller::Ring(r) => r.dispatch(queue),
        }
    }

    fn poll_now(&self) -> io::Result<()> {
        match self {
            UnixPoller::Mio(m) => m.poll(Some(Instant::now())),
            #[cfg(target_os = "linux")]
            UnixPoller::Ring(r) => r.poll_now(),
        }
    }

    fn wake(&self) {
        match self {
            UnixPoller::Mio(m) => m.wake(),
            #[cfg(target_os = "linux")]
            UnixPoller::Ring(r) => r.wake(),
        }
    }

    fn flush(&self, queue: &PortQueue) {
        #[cfg(target_os = "linux")]
        if let UnixPoller::Ring(r) = self {
            r.returned(queue, queue.has_items());
            r.flush();
        }
        let _ = queue;
    }

    fn before_sleep(&self, queue: &PortQueue) {
        #[cfg(target_os = "linux")]
        if let UnixPoller::Ring(r) = self {
            r.before_sleep(queue);
        }
        let _ = queue;
    }
}

/// Picks the port's driver (S36): on Linux io_uring unless `want` (or,
/// without one, the `IOCOMPLETION_DRIVER` setting) says epoll or the
/// kernel refuses, in which case epoll, with the reason.
fn choose_driver(want: Option<DriverKind>) -> io::Result<(UnixPoller, DriverInfo)> {
    let unsupported = |k: DriverKind| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("driver {k:?}: not available on this OS"))
    };
    #[cfg(target_os = "linux")]
    {
        use super::uring::{Ring, DRIVER_VAR};
        // `Err(why)`: epoll is asked for, and why.
        let ring_wanted: std::result::Result<(), String> = match want {
            // The program's own choice: no fallback to report.
            Some(DriverKind::Epoll) => {
                return Ok((
                    UnixPoller::Mio(MioPoller::new()?),
                    DriverInfo { kind: DriverKind::Epoll, fallback: None, setup: None },
                ))
            }
            Some(DriverKind::IoUring) => Ok(()),
            Some(k) => return Err(unsupported(k)),
            None => match std::env::var(DRIVER_VAR).unwrap_or_default().as_str() {
                "epoll" => Err(format!("{DRIVER_VAR}=epoll")),
                "" | "auto" | "io_uring" => Ok(()),
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{DRIVER_VAR}={other:?}: expected io_uring, epoll or auto"),
                    ))
                }
            },
        };
        let per_worker = super::uring::rings_setting()?;
        let why = match ring_wanted.and_then(|()| Ring::open(per_worker)) {
            Ok(ring) => {
                let setup = Some(ring.describe());
                return Ok((
                    UnixPoller::Ring(ring),
                    DriverInfo { kind: DriverKind::IoUring, fallback: None, setup },
                ));
            }
            Err(why) => why,
        };
        Ok((
            UnixPoller::Mio(MioPoller::new()?),
            DriverInfo { kind: DriverKind::Epoll, fallback: Some(why), setup: None },
        ))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let kind = if cfg!(target_os = "android") { DriverKind::Epoll } else { DriverKind::Kqueue };
        if let Some(k) = want.filter(|&k| k != kind) {
            return Err(unsupported(k));
        }
        Ok((UnixPoller::Mio(MioPoller::new()?), DriverInfo { kind, fallback: None, setup: None }))
    }
}

impl MioPoller {
    fn new() -> io::Result<MioPoller> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, WAKER)?;
        Ok(MioPoller {
            poll: Mutex::new((poll, Events::with_capacity(EVENTS))),
            registry,
            waker,
            retired: Mutex::new(Vec::new()),
            os: Default::default(),
        })
    }
}

pub(crate) struct UnixPortState {
    pub(super) queue: Arc<PortQueue>,
    /// The handles bound to this port, for its close (S11).
    sources: Mutex<Slab<Arc<Io>>>,
    driver: DriverInfo,
    /// How a file request, which may block, is performed (S11, S17).
    blocking: BlockingCall,
}

/// What a waiting thread keeps between its waits: the concurrency slot it
/// holds, on whichever port (given back when the thread exits), and the
/// buffer its items are taken into, so a wait allocates nothing.
struct Held {
    slot: Option<Slot>,
    items: Vec<Item>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            s.release();
        }
    }
}

thread_local! {
    static HELD: RefCell<Held> = const { RefCell::new(Held { slot: None, items: Vec::new() }) };
}

/// The port. Cheap to share; the core holds it in an `Arc`.
#[derive(Clone)]
pub(crate) struct Port {
    pub(super) inner: Arc<UnixPortState>,
}

impl PortDriver for Port {
    type Slot = Slot;

    /// `ECANCELED`.
    const ABORTED_CODE: u32 = super::op::ABORTED.code();

    const OUT_OF_RESOURCES: &'static [u32] =
        &[libc::EMFILE as u32, libc::ENFILE as u32, libc::ENOBUFS as u32, libc::ENOMEM as u32];

    const QUEUE_LEN_KNOWN: bool = true;

    /// The errno of `e`, or `EIO`.
    fn status_code_of(e: &io::Error) -> u32 {
        super::op::status_of(e).code()
    }

    fn not_found() -> io::Error {
        super::not_found()
    }

    /// io_uring and epoll on Linux, epoll on Android, kqueue on the BSDs
    /// and Apple's systems.
    fn has_driver(kind: DriverKind) -> bool {
        use DriverKind as K;
        match kind {
            K::IoUring => cfg!(target_os = "linux"),
            K::Epoll => cfg!(any(target_os = "linux", target_os = "android")),
            K::Kqueue => !cfg!(any(target_os = "linux", target_os = "android")),
            K::Iocp => false,
        }
    }

    fn new(concurrency: usize, want: Option<DriverKind>, blocking: BlockingCall) -> io::Result<Port> {
        let (poller, driver) = choose_driver(want)?;
        Ok(Port {
            inner: Arc::new(UnixPortState {
                queue: Queue::new(concurrency, Some(poller)),
                sources: Mutex::new(Slab::new()),
                driver,
                blocking,
            }),
        })
    }

    fn driver(&self) -> DriverInfo {
        self.inner.driver.clone()
    }

    fn concurrency(&self) -> usize {
        self.inner.queue.concurrency()
    }

    fn is_closed(&self) -> bool {
        self.inner.queue.is_closing()
    }

    fn waiting(&self) -> usize {
        self.inner.queue.sleepers()
    }

    fn stats(&self) -> DriverStats {
        #[cfg(target_os = "linux")]
        if let Some(ring) = self.inner.ring() {
            return DriverStats { leaked_requests: ring.leaked(), ..DriverStats::default() };
        }
        DriverStats::default()
    }

    fn has_backlog(&self) -> bool {
        self.inner.queue.has_items()
    }

    fn queued(&self) -> Option<usize> {
        Some(self.inner.queue.len())
    }

    fn os_metrics(&self) -> crate::shared::OsMetrics {
        match self.inner.queue.poller() {
            Some(UnixPoller::Mio(m)) => m.os.snapshot(),
            #[cfg(target_os = "linux")]
            Some(UnixPoller::Ring(r)) => r.os_snapshot(),
            None => Default::default(),
        }
    }

    fn maintain(&self) {
        #[cfg(target_os = "linux")]
        if let Some(ring) = self.inner.ring() {
            ring.maintain(&*self.inner.queue);
        }
        self.inner.queue.maintain();
    }

    fn interrupt(&self) {
        self.inner.queue.interrupt();
    }

    /// Closes the port, which waits for the ring's requests to come back,
    /// then takes what is queued; a file request not yet performed
    /// completes aborted.
    fn close_dropped(&self, out: &mut Vec<Packet>) {
        self.close();
        let mut items = Vec::new();
        self.inner.queue.take_left(&mut items);
        for item in items {
            match item {
                Item::Packet(p) => out.push(p),
                Item::Work(io) => out.extend(io.perform_work(true)),
            }
        }
    }

    fn interrupts(&self) -> usize {
        self.inner.queue.interrupts()
    }

    fn current_slot() -> Option<Slot> {
        HELD.with(|h| h.borrow().slot.clone())
    }

    fn post(&self, p: Packet) -> std::result::Result<(), (Error, Packet)> {
        self.inner.queue.post(Item::Packet(p)).map_err(|item| match item {
            Item::Packet(p) => (Error::invalid("port", "<closed>", "is closed"), p),
            Item::Work(_) => unreachable!("only packets are posted"),
        })
    }

    fn get_many(
        &self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Option<Duration>,
        interrupts: Option<usize>,
    ) -> Result<usize> {
        HELD.with(|h| {
            let mut held = h.borrow_mut();
            let Held { slot, items } = &mut *held;
            loop {
                let r = self.inner.queue.take(slot, items, max, timeout, interrupts);
                match r {
                    Ok(_) => {}
                    Err(Ended::Timeout) => return Err(Error::Timeout),
                    Err(Ended::Interrupted) => return Ok(0),
                    Err(Ended::Abandoned) => return Err(Error::Abandoned),
                    Err(Ended::Io(e)) => return Err(Error::Io(e)),
                }
                let before = out.len();
                for item in items.drain(..) {
                    match item {
                        Item::Packet(p) => out.push(p),
                        Item::Work(io) => {
                            // May block as long as the file system takes:
                            // the pool knows (S11, S17).
                            let mut p = None;
                            (self.inner.blocking)(&mut || {
                                #[cfg(all(test, target_os = "linux"))]
                                stuck::before_work(&io);
                                p = io.perform_work(self.inner.queue.is_closing());
                            });
                            if let Some(p) = p {
                                out.push(p);
                            }
                        }
                    }
                }
                if out.len() > before {
                    return Ok(out.len() - before);
                }
                // Only work tokens of requests cancelled meanwhile: wait on.
            }
        })
    }

    /// Closes the port: aborts what is pending on its handles, then marks it
    /// closed and wakes every waiter. False when it was already closed.
    fn close(&self) -> bool {
        let q = &self.inner.queue;
        // Under the sources lock, so a handle binding now either is in the
        // list taken below or sees the port closing.
        {
            let _g = self.inner.sources.lock();
            if !q.begin_close() {
                return false;
            }
        }
        let ios: Vec<Arc<Io>> = self.inner.sources.lock().drain().collect();
        for io in ios {
            self.inner.abort_for_close(&io);
            self.inner.retire(io);
        }
        // The ring's requests complete once the kernel hands them back
        // (aborted, or done if they won the race): wait for every one.
        #[cfg(target_os = "linux")]
        if let Some(ring) = self.inner.ring() {
            ring.drain(&**q);
        }
        q.finish_close();
        true
    }
}

impl UnixPortState {
    /// Adds `io` to the port; `register` watches its fd (sockets, pipes).
    pub(super) fn add(
        &self,
        io: &Arc<Io>,
        register: Option<&mut dyn mio::event::Source>,
    ) -> io::Result<usize> {
        let mut sources = self.sources.lock();
        if self.queue.is_closing() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the port is closed"));
        }
        let entry = sources.vacant_entry();
        if let (Some(source), Some(mio)) = (register, self.mio()) {
            io.registered.store(true, Ordering::Release);
            let token = Token(Arc::as_ptr(io) as usize);
            mio.registry.register(source, token, Interest::READABLE | Interest::WRITABLE)?;
        }
        let key = entry.key();
        entry.insert(io.clone());
        Ok(key)
    }

    /// The port is closing: abort what `io` has queued, cancel what it has
    /// in the kernel and stop watching its fd.
    fn abort_for_close(&self, io: &Io) {
        let mut st = io.state.lock();
        st.port_closed = true;
        st.driver.abort_waiting(&*self.queue);
        // The port's close submits the cancels as it drains the ring.
        self.cancel_in_kernel(&mut st.driver);
        if let (Driver::Epoll(_), Some(fd)) = (&st.driver, io.fd.read().as_ref()) {
            self.deregister(fd);
        }
    }

    /// Marks the requests of a handle (`driver`, under its lock) in the
    /// kernel cancelled and pushes their cancels (S24, S25): how many, and
    /// the rings a cancel was pushed into, for [`UnixPortState::submit_cancels`]
    /// once the handle's lock is let go. Only the ring has requests in the
    /// kernel.
    pub(super) fn cancel_in_kernel(&self, driver: &mut Driver) -> (usize, Vec<usize>) {
        #[cfg(target_os = "linux")]
        if let (Driver::Ring(s), Some(ring)) = (driver, self.ring()) {
            return (s.in_kernel(), ring.cancel(s.cancel_in_kernel()));
        }
        #[cfg(not(target_os = "linux"))]
        let _ = driver;
        (0, Vec::new())
    }

    /// Hands the cancels a handle pushed (into the rings `pushed`) to the
    /// kernel now; nothing on a readiness port.
    pub(super) fn submit_cancels(&self, pushed: Vec<usize>) {
        #[cfg(target_os = "linux")]
        if let Some(ring) = self.ring() {
            ring.submit_if(pushed);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = pushed;
    }

    /// Stops watching `fd` (a handle on the readiness driver).
    pub(super) fn deregister(&self, fd: &std::os::fd::OwnedFd) {
        if let Some(mio) = self.mio() {
            let _ = mio.registry.deregister(&mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(fd)));
        }
    }

    /// Removes a closed handle from the port.
    pub(super) fn remove(&self, key: usize) {
        let io = self.sources.lock().try_remove(key);
        if let Some(io) = io {
            self.retire(io);
        }
    }

    fn retire(&self, io: Arc<Io>) {
        if let Some(mio) = self.mio() {
            mio.retired.lock().push(io);
        }
    }

    /// mio's poller, when the port runs on readiness.
    pub(super) fn mio(&self) -> Option<&MioPoller> {
        match self.queue.poller()? {
            UnixPoller::Mio(m) => Some(m),
            #[cfg(target_os = "linux")]
            UnixPoller::Ring(_) => None,
        }
    }

    /// The ring, when the port runs on io_uring.
    #[cfg(target_os = "linux")]
    pub(super) fn ring(&self) -> Option<&super::uring::Ring> {
        match self.queue.poller()? {
            UnixPoller::Ring(r) => Some(r),
            UnixPoller::Mio(_) => None,
        }
    }
}

/// Test seam: holds the pool thread about to perform a file request of a
/// handle a test names, as a read the file system never answers would
/// (no FUSE needed), until the test lets it go.
#[cfg(all(test, target_os = "linux"))]
// Tests keep std's primitives (`crate::sync` is for the library's own).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
pub(crate) mod stuck {
    use std::sync::mpsc::{Receiver, Sender};
    use std::time::Duration;

    use super::Io;

    struct Hold {
        fd: std::os::fd::RawFd,
        reached: Sender<()>,
        go: Receiver<()>,
    }

    static HOLD: std::sync::Mutex<Option<Hold>> = std::sync::Mutex::new(None);

    /// Holds the next thread that performs a file request on `fd`: it
    /// tells `reached`, then waits for `go` (at most a minute).
    pub(crate) fn hold(fd: std::os::fd::RawFd, reached: Sender<()>, go: Receiver<()>) {
        *HOLD.lock().unwrap() = Some(Hold { fd, reached, go });
    }

    pub(super) fn before_work(io: &Io) {
        let mut hold = HOLD.lock().unwrap();
        let fd = io.fd.read().as_deref().map(std::os::fd::AsRawFd::as_raw_fd);
        if hold.as_ref().is_some_and(|h| Some(h.fd) == fd) {
            let h = hold.take().unwrap();
            drop(hold);
            let _ = h.reached.send(());
            let _ = h.go.recv_timeout(Duration::from_secs(60));
        }
    }
}
