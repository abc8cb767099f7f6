//! Requests: one allocation holding the header and the host extension (S18).

use std::alloc::{self, Layout};
use std::fmt;
use std::net::SocketAddr;
use std::ptr::NonNull;

use crate::buf::Buffer;
use crate::handle::Handle;
pub(crate) use crate::op::Op;
use crate::sink::CompletionSink;
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::sys;

pub use crate::shared::RequestId;


static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The header every request starts with. `repr(C)` with the OS part first,
/// so that on Windows the `OVERLAPPED` is at the request's start (see
/// `sys::windows::RequestOs`).
#[repr(C)]
pub(crate) struct Header {
    /// OS state; on Windows this starts with the `OVERLAPPED`.
    pub(crate) os: sys::RequestOs,
    pub(crate) ext_len: usize,
    /// Bytes reserved for the extension (its size class).
    ext_cap: usize,
    pub(crate) id: u64,
    /// Which use of its block this request is: one more than the request
    /// that had the block before it (blocks are reused, most recently
    /// freed first). On Windows it picks the request's `OVERLAPPED`
    /// address, so that a packet for an earlier use is told apart (S39).
    pub(crate) generation: u32,
    pub(crate) op: Op,
    pub(crate) buffer: Buffer,
    /// Where the completion goes when the host does not decide otherwise.
    pub(crate) target: Option<Arc<dyn CompletionSink>>,
    /// The source address of `RecvFrom`, the peer of `Accept`.
    pub(crate) addr: Option<SocketAddr>,
    /// The connection an `Accept` produced.
    pub(crate) accepted: Option<sys::Handle>,
    /// User data travelling with the request.
    pub(crate) user_data: usize,
    /// The handle the request was started on, held weakly so an in-flight
    /// request never keeps its handle open.
    pub(crate) handle: Option<crate::sync::Weak<crate::handle::HandleState>>,
    /// The deadline the request was started with (S33), until its
    /// completion is taken.
    pub(crate) deadline: Option<std::time::Instant>,
    /// When it started (0: not started on a handle, 1: started, not
    /// timed) and when the OS completed it (0: not stamped), for the
    /// port's metrics (`metrics::start_stamp`).
    pub(crate) started_ns: u64,
    pub(crate) completed_ns: u64,
}

const EXT_ALIGN: usize = 16;

// S18: the OS part comes first, so on Windows the `OVERLAPPED` is at the
// start of the request and a completion maps back to the request without a
// lookup. Checked at compile time on every target.
const _: () = assert!(std::mem::offset_of!(Header, os) == 0);

fn layout(ext_cap: usize) -> Option<(Layout, usize)> {
    let header = Layout::new::<Header>();
    let ext = Layout::from_size_align(ext_cap, EXT_ALIGN).ok()?;
    let (l, off) = header.extend(ext).ok()?;
    Some((l.pad_to_align(), off))
}

mod packet;
mod recycle;

pub use packet::Packet;

/// One I/O request: a header followed by the host extension of
/// `host_overlapped_size()` bytes, in a single allocation (S18).
///
/// The request owns its buffer while in flight and is handed back, with the
/// buffer, in the completion (S26).
pub struct Request {
    ptr: NonNull<Header>,
}

// SAFETY: a Request owns its allocation exclusively (no aliasing pointer is
// kept once it is handed out), and every field of the header but the OS
// part is Send (checked below); the OS part is plain data and handles the
// request owns, used only by the thread that owns the request.
unsafe impl Send for Request {}
// SAFETY: shared access reads the header through `&self` only. Every field
// a `&Request` reaches is Sync, checked below at compile time: the buffer is
// (`IoBuf: Sync`, so a user buffer read through `buffer().len()` or `Debug`
// from two threads at once is not raced on), and so are the target, the
// address, the accepted handle, the handle link and the deadline. The OS
// part is read through `&self` by no method and no shared reference.
unsafe impl Sync for Request {}

/// What the `unsafe impl`s above rely on: the fields a request shares are
/// `Send + Sync` on every target (S26). This fails to compile if one stops
/// being so, such as a buffer trait that no longer asks for `Sync`.
const _: () = {
    const fn send_sync<T: Send + Sync + ?Sized>() {}
    send_sync::<Buffer>();
    send_sync::<Op>();
    send_sync::<Option<Arc<dyn CompletionSink>>>();
    send_sync::<Option<SocketAddr>>();
    send_sync::<Option<sys::Handle>>();
    send_sync::<Option<crate::sync::Weak<crate::handle::HandleState>>>();
    send_sync::<Option<std::time::Instant>>();
};

impl Request {
    /// Allocates a request with `ext_len` zeroed extension bytes.
    pub(crate) fn alloc(op: Op, buffer: Buffer, ext_len: usize) -> Result<Request, Buffer> {
        let (raw, ext_cap) = match recycle::class_of(ext_len) {
            Some((class, cap)) => (recycle::take(class), cap),
            None => {
                let Some((layout, _)) = layout(ext_len) else {
                    return Err(buffer);
                };
                // SAFETY: the layout has a non-zero size (the header is not a ZST).
                (NonNull::new(unsafe { alloc::alloc(layout) }).map(|p| (p, false)), ext_len)
            }
        };
        let Some((raw, recycled)) = raw else {
            return Err(buffer);
        };
        let raw = raw.as_ptr() as *mut Header;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let generation = if recycled {
            // SAFETY: a recycled block holds the header of the request that
            // used it last, dropped in place; its generation, a plain
            // integer with no drop, is still there, and nothing else
            // references the block.
            unsafe { std::ptr::addr_of!((*raw).generation).read() }.wrapping_add(1)
        } else {
            // A new block (maybe one the allocator had before): its id's low
            // bits, so that such blocks do not all start alike.
            id as u32
        };
        let header = Header {
            os: sys::RequestOs::default(),
            ext_len,
            ext_cap,
            id,
            generation,
            op,
            buffer,
            target: None,
            addr: None,
            accepted: None,
            user_data: 0,
            handle: None,
            deadline: None,
            started_ns: 0,
            completed_ns: 0,
        };
        // SAFETY: `raw` is a block of layout(ext_cap): big enough and aligned
        // for a Header at offset 0 and `ext_cap >= ext_len` bytes after it.
        unsafe {
            raw.write(header);
            std::ptr::write_bytes((raw as *mut u8).add(Self::ext_offset()), 0, ext_len);
        }
        Ok(Request {
            // SAFETY: raw came from a NonNull above.
            ptr: unsafe { NonNull::new_unchecked(raw) },
        })
    }

    /// Creates a request for a user post ([`Op::Post`]) with no host
    /// extension. Managers make requests with their extension through
    /// their own constructors (for the default host, `Runtime::new_request`).
    pub fn new(buffer: Buffer) -> Request {
        match Request::alloc(Op::Post, buffer, 0) {
            Ok(r) => r,
            Err(_) => alloc::handle_alloc_error(Layout::new::<Header>()),
        }
    }

    fn ext_offset() -> usize {
        let header = Layout::new::<Header>();
        header.size().next_multiple_of(EXT_ALIGN.max(header.align()))
    }

    /// Stamps the OS completion of a request whose start was timed, for
    /// the port's metrics (where the backend pushes completions itself; on
    /// Windows the take stamps them).
    #[cfg(unix)]
    #[inline]
    pub(crate) fn stamp_completion(&mut self) {
        let h = self.header_mut();
        if h.started_ns > 1 {
            h.completed_ns = crate::metrics::now_ns();
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: ptr is a live, initialized Header owned by self.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn header_mut(&mut self) -> &mut Header {
        // SAFETY: ptr is a live, initialized Header owned exclusively by self.
        unsafe { self.ptr.as_mut() }
    }

    /// Gives up ownership; the pointer is the request's address (on Windows
    /// its `OVERLAPPED` is near it). Must come back through [`Request::from_raw`].
    #[allow(dead_code)]
    pub(crate) fn into_raw(self) -> *mut Header {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Takes back a request given up with [`Request::into_raw`].
    ///
    /// # Safety
    /// `p` must come from `into_raw` and not have been taken back before.
    #[allow(dead_code)]
    pub(crate) unsafe fn from_raw(p: *mut Header) -> Request {
        Request {
            // SAFETY: the caller passes a pointer from into_raw, never null.
            ptr: unsafe { NonNull::new_unchecked(p) },
        }
    }

    /// The request's id, the one its start returned.
    pub fn id(&self) -> RequestId {
        RequestId(self.header().id)
    }

    /// What the request did.
    pub fn op(&self) -> Op {
        self.header().op
    }

    /// The host extension: `host_overlapped_size()` bytes, as the host's
    /// initializer left them (S20).
    pub fn extension(&self) -> &[u8] {
        let len = self.header().ext_len;
        // SAFETY: the extension lies right after the header in the same
        // allocation, initialized (zeroed at allocation), `len` bytes long.
        unsafe { std::slice::from_raw_parts((self.ptr.as_ptr() as *const u8).add(Self::ext_offset()), len) }
    }

    /// The host extension, writable (S20).
    pub fn extension_mut(&mut self) -> &mut [u8] {
        let len = self.header().ext_len;
        // SAFETY: as in `extension`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut((self.ptr.as_ptr() as *mut u8).add(Self::ext_offset()), len) }
    }

    /// The buffer, readable while the request is in the caller's hands.
    pub fn buffer(&self) -> &Buffer {
        &self.header().buffer
    }

    /// The buffer, writable.
    pub fn buffer_mut(&mut self) -> &mut Buffer {
        &mut self.header_mut().buffer
    }

    /// Takes the buffer out, leaving [`Buffer::None`].
    pub fn take_buffer(&mut self) -> Buffer {
        std::mem::take(&mut self.header_mut().buffer)
    }

    /// Consumes the request and returns its buffer.
    pub fn into_buffer(mut self) -> Buffer {
        self.take_buffer()
    }

    /// The source address of a `RecvFrom`, or the peer of an `Accept`.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.header().addr
    }

    /// Takes the connection an `Accept` produced; it is not yet bound.
    pub fn take_accepted(&mut self) -> Option<Handle> {
        self.header_mut().accepted.take().map(Handle::from_sys)
    }

    /// The handle the request was started on, while it is still open
    /// somewhere (`None` for user posts, or once every clone is dropped).
    pub fn handle(&self) -> Option<Handle> {
        self.header().handle.as_ref()?.upgrade().map(|inner| Handle { inner })
    }

    /// User data carried by the request.
    pub fn user_data(&self) -> usize {
        self.header().user_data
    }

    /// Sets the user data carried by the request.
    pub fn set_user_data(&mut self, data: usize) {
        self.header_mut().user_data = data;
    }

    /// Sets where this request's completion goes, overriding the handle's
    /// callback and the manager's sink.
    pub fn set_callback(&mut self, callback: Arc<dyn CompletionSink>) {
        self.header_mut().target = Some(callback);
    }

    /// Takes the request's own completion target: a callback set with
    /// [`Request::set_callback`], a handle's callback, or an awaiting
    /// future (a [`Start`](crate::Start) awaited). A
    /// custom host that takes packets itself calls it, when there is one,
    /// instead of its sink, so that every target gets its completion.
    ///
    /// The target receives one completion (S2, S34): a host that calls
    /// the returned callback again gets the later calls ignored and
    /// counted in [`Port::duplicate_deliveries`](crate::Port::duplicate_deliveries)
    /// of the request's port; the first result stands.
    pub fn take_callback(&mut self) -> Option<Arc<dyn CompletionSink>> {
        let target = self.header_mut().target.take()?;
        // The handle, held weakly; its port is looked up only to count a
        // second delivery, never on the way of the first.
        let handle = self.header().handle.clone();
        Some(Arc::new(crate::sink::DeliverOnce::new(target, handle)))
    }

    pub(crate) fn target(&self) -> Option<&Arc<dyn CompletionSink>> {
        self.header().target.as_ref()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let ext_cap = self.header().ext_cap;
        // SAFETY: ptr owns an initialized Header; it is dropped once, here,
        // and the block is not touched through `self` afterwards.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        let block = self.ptr.cast::<u8>();
        match recycle::class_of(ext_cap) {
            Some((class, cap)) if cap == ext_cap => recycle::give(class, block),
            _ => {
                let (layout, _) = layout(ext_cap).expect("layout was valid at allocation");
                // SAFETY: the block was allocated with exactly this layout.
                unsafe { alloc::dealloc(block.as_ptr(), layout) }
            }
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.header();
        f.debug_struct("Request")
            .field("id", &h.id)
            .field("op", &h.op)
            .field("buffer_len", &h.buffer.len())
            .field("extension_len", &h.ext_len)
            .field("addr", &h.addr)
            .finish()
    }
}

// Run under Miri too (`.ci/run`): no I/O, only the request's memory.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::IoBuf;
    use crate::sync::AtomicUsize;

    #[test]
    fn s18_a_request_is_one_block_with_its_extension_zeroed_and_recycled() {
        // Every size class, a size between two classes, and one past the
        // largest (allocated and freed without the recycler).
        for ext in [0, 1, 16, 17, 64, 200, 1024, 1025, 3000] {
            for round in 0..3u8 {
                let mut r = Request::alloc(Op::Post, vec![round; 3].into(), ext).unwrap();
                assert_eq!(r.extension().len(), ext);
                assert!(r.extension().iter().all(|&b| b == 0), "zeroed, also when the block is reused");
                r.extension_mut().fill(0xA5);
                r.set_user_data(ext);
                assert_eq!((r.user_data(), r.buffer().len(), r.op()), (ext, 3, Op::Post));
                assert_eq!(r.into_buffer().into_vec(), vec![round; 3]);
            }
        }
    }

    #[test]
    fn s18_into_raw_and_from_raw_give_back_the_same_request() {
        let mut r = Request::alloc(Op::Post, vec![1, 2, 3].into(), 16).unwrap();
        r.extension_mut()[15] = 9;
        r.set_user_data(77);
        let id = r.id();
        let p = r.into_raw();
        // SAFETY: `p` came from `into_raw` just above and is taken back once.
        let mut r = unsafe { Request::from_raw(p) };
        assert_eq!((r.id(), r.user_data(), r.extension()[15]), (id, 77, 9));
        assert_eq!(r.take_buffer().into_vec(), vec![1, 2, 3]);
        assert!(r.buffer().is_empty());
    }

    #[test]
    fn s18_requests_made_on_one_thread_are_freed_on_another() {
        // As a pool worker does: the block goes to that thread's stash, and
        // past a batch to the shared channel, and is reused from there.
        let made: Vec<Request> = (0..80).map(|i| Request::alloc(Op::Post, vec![i as u8].into(), 16).unwrap()).collect();
        std::thread::spawn(move || drop(made)).join().unwrap();
        let again: Vec<Request> = (0..80).map(|_| Request::alloc(Op::Post, Buffer::None, 16).unwrap()).collect();
        assert!(again.iter().all(|r| r.extension().iter().all(|&b| b == 0)));
    }

    /// Counts the calls made through `&self` (an atomic: `IoBuf: Sync`).
    struct Counting {
        storage: Vec<u8>,
        reads: AtomicUsize,
    }

    // SAFETY: the storage is a heap allocation that does not move with the
    // value; all of it is initialized.
    unsafe impl IoBuf for Counting {
        fn as_buf_ptr(&self) -> *const u8 {
            self.storage.as_ptr()
        }
        fn buf_len(&self) -> usize {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.storage.len()
        }
        fn buf_capacity(&self) -> usize {
            self.storage.len()
        }
    }

    #[test]
    fn s32_two_threads_read_a_shared_request_without_a_data_race() {
        let r = Request::new(Buffer::from_buf(Counting { storage: vec![4; 4], reads: AtomicUsize::new(0) }));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20 {
                        assert_eq!(r.buffer().len(), 4);
                        assert!(format!("{r:?}").contains("buffer_len: 4"));
                    }
                });
            }
        });
        let c = r.into_buffer().into_buf::<Counting>().ok().unwrap();
        assert_eq!(c.reads.into_inner(), 2 * 20 * 2);
    }

    /// The next request made on a thread reuses the block the last one
    /// freed, and is the block's next use: its generation is one more
    /// (on Windows it picks another `OVERLAPPED` address, S39).
    #[test]
    #[cfg(not(loom))]
    fn s39_a_reused_block_is_its_next_generation() {
        let first = Request::new(Buffer::from_buf_mut(Vec::<u8>::new()));
        let (block, generation) = (first.header() as *const Header, first.header().generation);
        drop(first);
        let second = Request::new(Buffer::from_buf_mut(Vec::<u8>::new()));
        assert_eq!(second.header() as *const Header, block, "the block was reused");
        assert_eq!(second.header().generation, generation.wrapping_add(1));
    }
}
