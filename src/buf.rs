//! Buffers (S26, S32): the traits a request's buffer implements, and
//! [`Buffer`], the form every request carries whatever type the caller gave.

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::{Hash, Hasher};

/// A buffer a request can own while the OS reads from it: a write's data.
///
/// Implemented for `Vec<u8>`, `Box<[u8]>`, `&'static [u8]`, `&'static str`
/// and, with the `bytes` feature, `bytes::Bytes` and `bytes::BytesMut`.
/// The typed requests ([`Handle::write`](crate::Handle::write) and the
/// others) hand back the type they were given: to a failed start, to a
/// closure, and to an awaiting task.
///
/// # Safety
/// [`as_buf_ptr`](IoBuf::as_buf_ptr) must point to
/// [`buf_capacity`](IoBuf::buf_capacity) bytes of which the first
/// [`buf_len`](IoBuf::buf_len) are initialized, and the pointer must stay
/// valid, and the bytes where they are, while the value is moved: until it
/// is dropped or used through `&mut`. Heap storage (a vector, a box) has
/// that property; an array held by value does not. `buf_len() <=
/// buf_capacity()`.
///
/// The type is `Sync` (S26): a [`Request`](crate::Request) and a
/// [`StartError`](crate::StartError) hold the buffer and are shared between
/// threads, which then call `buf_len`, `buf_capacity` and `as_slice`
/// through `&self` at the same time. State that changes behind `&self` (a
/// `Cell`, a `RefCell`) must use a thread-safe form instead (an atomic, a
/// lock). Such a type is refused at compile time:
///
/// ```compile_fail
/// use std::cell::Cell;
/// use iocompletion::IoBuf;
///
/// struct Counting { storage: Vec<u8>, reads: Cell<usize> }
///
/// // SAFETY: the storage is on the heap; all of it is initialized.
/// unsafe impl IoBuf for Counting { // error: `Cell<usize>` is not `Sync`
///     fn as_buf_ptr(&self) -> *const u8 { self.storage.as_ptr() }
///     fn buf_len(&self) -> usize { self.reads.set(self.reads.get() + 1); self.storage.len() }
///     fn buf_capacity(&self) -> usize { self.storage.len() }
/// }
/// ```
///
/// A type of the caller's own:
///
/// ```
/// use iocompletion::{IoBuf, IoBufMut};
///
/// /// A frame with a fill level of its own, its storage on the heap.
/// struct Frame { storage: Box<[u8]>, filled: usize }
///
/// // SAFETY: the storage is a heap allocation that does not move with the
/// // frame; all of it is initialized, `filled <= storage.len()`.
/// unsafe impl IoBuf for Frame {
///     fn as_buf_ptr(&self) -> *const u8 { self.storage.as_ptr() }
///     fn buf_len(&self) -> usize { self.filled }
///     fn buf_capacity(&self) -> usize { self.storage.len() }
/// }
/// // SAFETY: as above, writable through `&mut`.
/// unsafe impl IoBufMut for Frame {
///     fn as_buf_mut_ptr(&mut self) -> *mut u8 { self.storage.as_mut_ptr() }
///     unsafe fn set_buf_len(&mut self, len: usize) { self.filled = len }
/// }
///
/// let f = Frame { storage: vec![0; 4].into_boxed_slice(), filled: 2 };
/// assert_eq!(f.as_slice(), [0, 0]);
/// ```
pub unsafe trait IoBuf: Send + Sync + 'static {
    /// The start of the buffer.
    fn as_buf_ptr(&self) -> *const u8;

    /// The initialized bytes: what a write sends.
    fn buf_len(&self) -> usize;

    /// The room: what a read may fill.
    fn buf_capacity(&self) -> usize;

    /// The initialized bytes as a slice.
    fn as_slice(&self) -> &[u8] {
        // SAFETY: the trait's contract: `buf_len` initialized bytes at
        // `as_buf_ptr`, valid while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.as_buf_ptr(), self.buf_len()) }
    }
}

/// A buffer a request can own while the OS writes into it: a read's room.
///
/// A read fills it from its start, up to [`IoBuf::buf_capacity`], and then
/// sets its length to the bytes read (S32). A `Box<[u8]>` keeps its length:
/// its room is the whole slice, and the byte count says what was filled.
///
/// # Safety
/// As for [`IoBuf`], and [`as_buf_mut_ptr`](IoBufMut::as_buf_mut_ptr)
/// points to the same `buf_capacity()` bytes, writable.
pub unsafe trait IoBufMut: IoBuf {
    /// The start of the buffer, writable.
    fn as_buf_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `len` bytes now hold data.
    ///
    /// # Safety
    /// `len <= buf_capacity()`, and the first `len` bytes are initialized.
    unsafe fn set_buf_len(&mut self, len: usize);
}

/// `IoBuf` and `IoBufMut` for buffers with a length and a capacity of
/// their own (a read sets the length).
macro_rules! growable_buf {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {$(
        $(#[$m])*
        // SAFETY: the storage is one heap allocation that does not move
        // with the value; `len` bytes of it are initialized, `capacity`
        // allocated.
        unsafe impl IoBuf for $t {
            fn as_buf_ptr(&self) -> *const u8 {
                self.as_ptr()
            }
            fn buf_len(&self) -> usize {
                self.len()
            }
            fn buf_capacity(&self) -> usize {
                self.capacity()
            }
        }

        $(#[$m])*
        // SAFETY: as for `IoBuf`; the storage is uniquely owned through
        // `&mut`, so the pointer is writable.
        unsafe impl IoBufMut for $t {
            fn as_buf_mut_ptr(&mut self) -> *mut u8 {
                self.as_mut_ptr()
            }
            unsafe fn set_buf_len(&mut self, len: usize) {
                // SAFETY: the caller promises `len <= capacity` initialized bytes.
                unsafe { self.set_len(len) }
            }
        }
    )*};
}

/// `IoBuf` for buffers whose room is their length, all of it initialized.
macro_rules! fixed_buf {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {$(
        $(#[$m])*
        // SAFETY: the bytes are on the heap (shared or owned) or static, so
        // they do not move with the value; all `len` are initialized.
        unsafe impl IoBuf for $t {
            fn as_buf_ptr(&self) -> *const u8 {
                self.as_ptr()
            }
            fn buf_len(&self) -> usize {
                self.len()
            }
            fn buf_capacity(&self) -> usize {
                self.len()
            }
        }
    )*};
}

growable_buf!(Vec<u8>, #[cfg(feature = "bytes")] bytes::BytesMut);
fixed_buf!(Box<[u8]>, &'static [u8], &'static str, #[cfg(feature = "bytes")] bytes::Bytes);

// SAFETY: as for `IoBuf`, writable through `&mut`.
unsafe impl IoBufMut for Box<[u8]> {
    fn as_buf_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_buf_len(&mut self, _len: usize) {
        // A boxed slice has no separate length: all of it stays.
    }
}

/// One part as the OS sees it: where it starts, its initialized bytes and
/// its room.
#[derive(Clone, Copy)]
pub(crate) struct Part {
    pub(crate) ptr: *mut u8,
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) len: usize,
    pub(crate) cap: usize,
}

/// A buffer of a type the enum does not name, behind one allocation.
/// `Sync` because the buffer is: a `&Buffer` may be shared between threads.
trait Erased: Send + Sync + 'static {
    fn parts(&self) -> usize;
    fn part(&mut self, i: usize) -> Part;
    fn chunk(&self, i: usize) -> &[u8];
    fn capacity(&self, i: usize) -> usize;
    /// False when the buffer was given as read-only ([`IoBuf`] only).
    fn writable(&self) -> bool;
    fn vectored(&self) -> bool;
    /// # Safety
    /// The first `len` bytes of part `i`'s room are initialized.
    unsafe fn set_part_len(&mut self, i: usize, len: usize);
    fn wrapper_type(&self) -> TypeId;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    fn type_name(&self) -> &'static str;
}

/// The writable side of a buffer given as [`IoBufMut`], kept as plain
/// function pointers so one wrapper serves both kinds.
struct MutOps<B> {
    ptr: fn(&mut B) -> *mut u8,
    set_len: unsafe fn(&mut B, usize),
}

impl<B: IoBufMut> MutOps<B> {
    fn of() -> Option<MutOps<B>> {
        Some(MutOps { ptr: B::as_buf_mut_ptr, set_len: B::set_buf_len })
    }
}

/// One buffer or several, of type `B`.
struct Held<B> {
    bufs: Vec<B>,
    vectored: bool,
    ops: Option<MutOps<B>>,
}

impl<B: IoBuf> Held<B> {
    fn erased(bufs: Vec<B>, vectored: bool, ops: Option<MutOps<B>>) -> Box<dyn Erased> {
        Box::new(Held { bufs, vectored, ops })
    }
}

impl<B: IoBuf> Erased for Held<B> {
    fn parts(&self) -> usize {
        self.bufs.len()
    }
    fn part(&mut self, i: usize) -> Part {
        let b = &mut self.bufs[i];
        let ptr = match &self.ops {
            Some(ops) => (ops.ptr)(b),
            // Only ever read through (a write's data): `check` refuses a
            // read into a buffer given without `IoBufMut`.
            None => b.as_buf_ptr().cast_mut(),
        };
        Part { ptr, len: b.buf_len(), cap: b.buf_capacity() }
    }
    fn chunk(&self, i: usize) -> &[u8] {
        self.bufs[i].as_slice()
    }
    fn capacity(&self, i: usize) -> usize {
        self.bufs[i].buf_capacity()
    }
    fn writable(&self) -> bool {
        self.ops.is_some()
    }
    fn vectored(&self) -> bool {
        self.vectored
    }
    unsafe fn set_part_len(&mut self, i: usize, len: usize) {
        if let Some(ops) = &self.ops {
            // SAFETY: the caller promises `len` initialized bytes of room.
            unsafe { (ops.set_len)(&mut self.bufs[i], len) }
        }
    }
    fn wrapper_type(&self) -> TypeId {
        TypeId::of::<Held<B>>()
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<B>()
    }
}

/// A buffer of any [`IoBuf`] type, held by a [`Buffer::Other`].
pub struct OtherBuf(Box<dyn Erased>);

impl OtherBuf {
    fn take<B: IoBuf>(self, vectored: bool) -> Result<Vec<B>, OtherBuf> {
        if self.0.wrapper_type() != TypeId::of::<Held<B>>() || self.0.vectored() != vectored {
            return Err(self);
        }
        match self.0.into_any().downcast::<Held<B>>() {
            Ok(held) => Ok(held.bufs),
            // Unreachable: the type was checked above. Nothing to give back
            // but an empty list.
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The initialized bytes of each part, in order (one part unless the
    /// buffer is vectored).
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.0.parts()).map(|i| self.0.chunk(i))
    }

    /// The name of the type the buffer was given as.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
}

impl fmt::Debug for OtherBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtherBuf")
            .field("type", &self.0.type_name())
            .field("parts", &self.0.parts())
            .field("len", &self.chunks().map(<[u8]>::len).sum::<usize>())
            .finish()
    }
}

/// A clone holds a copy of the bytes, in vectors.
impl Clone for OtherBuf {
    fn clone(&self) -> OtherBuf {
        let bufs: Vec<Vec<u8>> = self.chunks().map(<[u8]>::to_vec).collect();
        OtherBuf(Held::erased(bufs, self.0.vectored(), MutOps::of()))
    }
}

/// Equal when the parts hold the same bytes.
impl PartialEq for OtherBuf {
    fn eq(&self, other: &OtherBuf) -> bool {
        self.0.vectored() == other.0.vectored() && self.chunks().eq(other.chunks())
    }
}

impl Eq for OtherBuf {}

impl Hash for OtherBuf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.vectored().hash(state);
        for c in self.chunks() {
            c.hash(state);
        }
    }
}

/// Moves `t` into a `U` when they are the same type.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    if let Some(u) = (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>().and_then(Option::take) {
        return Ok(u);
    }
    match slot {
        Some(t) => Err(t),
        // The downcast failed, so the slot was not taken.
        None => unreachable!("a failed downcast leaves its value"),
    }
}

/// The buffer a request owns while it is in flight (S26).
///
/// A read fills the buffer from its start up to its capacity and sets its
/// length to the bytes read (S32), so `vec![0; n]` and
/// `Vec::with_capacity(n)` both read up to `n` bytes, and a vector with no
/// capacity at all is a zero-byte read (S31). A vectored read fills the
/// parts in order, each up to its capacity. A write sends the initialized
/// bytes (`len()`). The completion hands the buffer back; a read that
/// failed or was aborted leaves its length as it was.
///
/// Vectors are held as they are; any other [`IoBuf`] type (a boxed slice,
/// `BytesMut`, your own) is held by [`Buffer::Other`] and comes back as
/// itself through [`Buffer::into_buf`].
///
/// ```
/// use iocompletion::Buffer;
///
/// let b = Buffer::from_buf_mut(vec![0u8; 4].into_boxed_slice());
/// assert_eq!((b.len(), b.capacity()), (4, 4));
/// let b = b.into_buf::<Vec<u8>>().unwrap_err();        // not a vector: handed back
/// let boxed: Box<[u8]> = b.into_buf().unwrap();         // as the type it was given
/// assert_eq!(boxed.len(), 4);
/// assert!(matches!(Buffer::from(vec![1, 2]), Buffer::Single(_)));
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Buffer {
    /// No buffer (accept, connect, user posts without data).
    #[default]
    None,
    /// One contiguous buffer.
    Single(Vec<u8>),
    /// A list of buffers for vectored reads and writes.
    Vectored(Vec<Vec<u8>>),
    /// A buffer, or a list of them, of another [`IoBuf`] type.
    Other(OtherBuf),
}

impl Buffer {
    /// Holds `buf` for a request that reads from it (a write); the OS never
    /// writes into it. A `Vec<u8>` becomes [`Buffer::Single`].
    pub fn from_buf<B: IoBuf>(buf: B) -> Buffer {
        match cast::<B, Vec<u8>>(buf) {
            Ok(v) => Buffer::Single(v),
            Err(buf) => Buffer::Other(OtherBuf(Held::erased(vec![buf], false, None))),
        }
    }

    /// Holds `buf` for a request of any kind, a read included. A `Vec<u8>`
    /// becomes [`Buffer::Single`].
    pub fn from_buf_mut<B: IoBufMut>(buf: B) -> Buffer {
        match cast::<B, Vec<u8>>(buf) {
            Ok(v) => Buffer::Single(v),
            Err(buf) => Buffer::Other(OtherBuf(Held::erased(vec![buf], false, MutOps::of()))),
        }
    }

    /// Holds `bufs` as the parts of a vectored write. A `Vec<Vec<u8>>`
    /// becomes [`Buffer::Vectored`].
    pub fn from_bufs<B: IoBuf>(bufs: Vec<B>) -> Buffer {
        match cast::<Vec<B>, Vec<Vec<u8>>>(bufs) {
            Ok(v) => Buffer::Vectored(v),
            Err(bufs) => Buffer::Other(OtherBuf(Held::erased(bufs, true, None))),
        }
    }

    /// Holds `bufs` as the parts of a vectored request of any kind.
    pub fn from_bufs_mut<B: IoBufMut>(bufs: Vec<B>) -> Buffer {
        match cast::<Vec<B>, Vec<Vec<u8>>>(bufs) {
            Ok(v) => Buffer::Vectored(v),
            Err(bufs) => Buffer::Other(OtherBuf(Held::erased(bufs, true, MutOps::of()))),
        }
    }

    /// The buffer as the type it was given as, or the buffer back when it
    /// holds something else (another type, or several parts).
    pub fn into_buf<B: IoBuf>(self) -> Result<B, Buffer> {
        match self {
            Buffer::Single(v) => cast::<Vec<u8>, B>(v).map_err(Buffer::Single),
            Buffer::Other(o) => match o.take::<B>(false) {
                Ok(mut v) if v.len() == 1 => v.pop().ok_or(Buffer::None),
                Ok(v) => Err(Buffer::Other(OtherBuf(Held::erased(v, false, None)))),
                Err(o) => Err(Buffer::Other(o)),
            },
            other => Err(other),
        }
    }

    /// The parts of a vectored buffer as the type they were given as, or
    /// the buffer back when it holds something else.
    pub fn into_bufs<B: IoBuf>(self) -> Result<Vec<B>, Buffer> {
        match self {
            Buffer::Vectored(v) => cast::<Vec<Vec<u8>>, Vec<B>>(v).map_err(Buffer::Vectored),
            Buffer::Other(o) => o.take::<B>(true).map_err(Buffer::Other),
            other => Err(other),
        }
    }

    /// Total number of bytes over all parts.
    pub fn len(&self) -> usize {
        match self {
            Buffer::None => 0,
            Buffer::Single(b) => b.len(),
            Buffer::Vectored(v) => v.iter().map(Vec::len).sum(),
            Buffer::Other(o) => o.chunks().map(<[u8]>::len).sum(),
        }
    }

    /// The initialized bytes of each part, in order, whatever the buffer
    /// holds (none for [`Buffer::None`]): how to read a
    /// [`Buffer::Other`] without knowing its type.
    ///
    /// ```
    /// use iocompletion::Buffer;
    /// let b = Buffer::from_buf(vec![1u8, 2, 3].into_boxed_slice()); // a `Buffer::Other`
    /// assert_eq!(b.chunks().collect::<Vec<_>>(), [&[1u8, 2, 3][..]]);
    /// ```
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.part_count()).map(|i| self.chunk(i))
    }

    /// True when [`Buffer::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for a read: the capacity over all parts.
    pub fn capacity(&self) -> usize {
        match self {
            Buffer::None => 0,
            Buffer::Single(b) => b.capacity(),
            Buffer::Vectored(v) => v.iter().map(Vec::capacity).sum(),
            Buffer::Other(o) => (0..o.0.parts()).map(|i| o.0.capacity(i)).sum(),
        }
    }

    /// The single buffer, or the parts concatenated, or an empty vector.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Buffer::None => Vec::new(),
            Buffer::Single(b) => b,
            Buffer::Vectored(v) => v.concat(),
            Buffer::Other(o) => o.chunks().collect::<Vec<_>>().concat(),
        }
    }

    /// True for a list of parts (a vectored request), even of one part.
    pub(crate) fn is_vectored(&self) -> bool {
        match self {
            Buffer::Vectored(_) => true,
            Buffer::Other(o) => o.0.vectored(),
            Buffer::None | Buffer::Single(_) => false,
        }
    }

    /// False when a read may not fill it: it was given as [`IoBuf`] only.
    pub(crate) fn is_writable(&self) -> bool {
        match self {
            Buffer::Other(o) => o.0.writable(),
            _ => true,
        }
    }

    /// How many parts the OS sees (0 for [`Buffer::None`]).
    pub(crate) fn part_count(&self) -> usize {
        match self {
            Buffer::None => 0,
            Buffer::Single(_) => 1,
            Buffer::Vectored(v) => v.len(),
            Buffer::Other(o) => o.0.parts(),
        }
    }

    /// Part `i` as the OS sees it (an empty one past the last). Its pointer may be
    /// written through only when [`Buffer::is_writable`].
    pub(crate) fn part(&mut self, i: usize) -> Part {
        let vec = |b: &mut Vec<u8>| Part { ptr: b.as_mut_ptr(), len: b.len(), cap: b.capacity() };
        let none = Part { ptr: std::ptr::NonNull::dangling().as_ptr(), len: 0, cap: 0 };
        match self {
            Buffer::None => none,
            Buffer::Single(b) => vec(b),
            Buffer::Vectored(v) => v.get_mut(i).map_or(none, vec),
            Buffer::Other(o) if i < o.0.parts() => o.0.part(i),
            Buffer::Other(_) => none,
        }
    }

    /// The initialized bytes of part `i` (none past the last).
    pub(crate) fn chunk(&self, i: usize) -> &[u8] {
        match self {
            Buffer::None => &[],
            Buffer::Single(b) => b,
            Buffer::Vectored(v) => v.get(i).map_or(&[], Vec::as_slice),
            Buffer::Other(o) if i < o.0.parts() => o.0.chunk(i),
            Buffer::Other(_) => &[],
        }
    }

    /// Sets the lengths after a read of `n` bytes: the parts in order, each
    /// up to its capacity (S32).
    ///
    /// # Safety
    /// The first `n` bytes of room (the first part up to its capacity, then
    /// the next, …) were written by the read, and `n <= self.capacity()`.
    pub(crate) unsafe fn set_filled(&mut self, mut n: usize) {
        let mut fill = |b: &mut Vec<u8>| {
            let k = n.min(b.capacity());
            // SAFETY: the caller promises these `k` bytes were written.
            unsafe { b.set_len(k) };
            n -= k;
        };
        match self {
            Buffer::None => {}
            Buffer::Single(b) => fill(b),
            Buffer::Vectored(v) => v.iter_mut().for_each(fill),
            Buffer::Other(o) => {
                for i in 0..o.0.parts() {
                    let k = n.min(o.0.capacity(i));
                    // SAFETY: as above, for this part's first `k` bytes.
                    unsafe { o.0.set_part_len(i, k) };
                    n -= k;
                }
            }
        }
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Buffer {
        Buffer::Single(v)
    }
}

impl From<Vec<Vec<u8>>> for Buffer {
    fn from(v: Vec<Vec<u8>>) -> Buffer {
        Buffer::Vectored(v)
    }
}

// Run under Miri too (`.ci/run`): the raw pointers a read writes through
// and the erased box of `Buffer::Other`.
#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's type: heap storage and a fill level of its own.
    #[derive(Debug, Default, PartialEq)]
    struct Frame {
        storage: Box<[u8]>,
        filled: usize,
    }

    // SAFETY: the storage is a heap allocation that does not move with the
    // frame; all of it is initialized, `filled <= storage.len()`.
    unsafe impl IoBuf for Frame {
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
    unsafe impl IoBufMut for Frame {
        fn as_buf_mut_ptr(&mut self) -> *mut u8 {
            self.storage.as_mut_ptr()
        }
        unsafe fn set_buf_len(&mut self, len: usize) {
            self.filled = len;
        }
    }

    /// What a read does: writes `data` through the parts' pointers, in
    /// order, each up to its room, then sets the lengths.
    fn read_into(b: &mut Buffer, data: &[u8]) -> usize {
        assert!(b.is_writable());
        let mut done = 0;
        for i in 0..b.part_count() {
            let p = b.part(i);
            let k = (data.len() - done).min(p.cap);
            // SAFETY: `p.ptr` points to `p.cap` writable bytes of part `i`
            // (a writable buffer), and `k <= p.cap`.
            unsafe { std::ptr::copy_nonoverlapping(data[done..].as_ptr(), p.ptr, k) };
            done += k;
        }
        // SAFETY: the first `done` bytes of room were written just above.
        unsafe { b.set_filled(done) };
        done
    }

    #[test]
    fn s32_a_read_fills_each_kind_of_buffer_from_its_start_and_it_comes_back_as_given() {
        let mut b = Buffer::from_buf_mut(Vec::with_capacity(8));
        assert_eq!(read_into(&mut b, b"hello"), 5);
        assert_eq!(b.into_buf::<Vec<u8>>().unwrap(), b"hello");

        let mut b = Buffer::from_buf_mut(vec![0u8; 4].into_boxed_slice());
        assert_eq!(read_into(&mut b, b"abcdef"), 4);
        assert_eq!(&*b.into_buf::<Box<[u8]>>().unwrap(), b"abcd");

        let mut b = Buffer::from_buf_mut(Frame { storage: vec![0xEE; 6].into(), filled: 0 });
        assert_eq!(read_into(&mut b, b"xyz"), 3);
        assert_eq!(b.chunk(0), b"xyz");
        let f: Frame = b.into_buf().unwrap();
        assert_eq!((&f.storage[..3], f.filled), (&b"xyz"[..], 3));

        // Vectored: the parts in order, each up to its capacity.
        let mut b = Buffer::from_bufs_mut(vec![Vec::with_capacity(2), Vec::with_capacity(3), Vec::with_capacity(4)]);
        assert_eq!(read_into(&mut b, b"123456"), 6);
        assert_eq!(b.into_bufs::<Vec<u8>>().unwrap(), vec![b"12".to_vec(), b"345".to_vec(), b"6".to_vec()]);

        let parts = vec![Frame { storage: vec![0; 2].into(), filled: 0 }, Frame { storage: vec![0; 2].into(), filled: 0 }];
        let mut b = Buffer::from_bufs_mut(parts);
        assert_eq!(read_into(&mut b, b"abc"), 3);
        let back: Vec<Frame> = b.into_bufs().unwrap();
        assert_eq!((back[0].filled, back[1].filled, &back[1].storage[..1]), (2, 1, &b"c"[..]));
    }

    #[test]
    fn s32_a_write_reads_the_initialized_bytes_of_any_buffer() {
        for (b, want) in [
            (Buffer::from_buf(b"static".as_slice()), &b"static"[..]),
            (Buffer::from_buf("str"), b"str"),
            (Buffer::from_buf(vec![1u8, 2].into_boxed_slice()), &[1, 2]),
            (Buffer::from_buf(Frame { storage: vec![7; 5].into(), filled: 2 }), &[7, 7]),
            (Buffer::from_bufs(vec!["ab", "cd"]), b"abcd"),
        ] {
            assert!(!b.is_writable() || matches!(b, Buffer::Single(_)));
            let seen: Vec<u8> = (0..b.part_count()).flat_map(|i| b.chunk(i).to_vec()).collect();
            assert_eq!(seen, want);
            assert_eq!(b.len(), want.len());
            // Clone, equality and hashing read the same bytes.
            let c = b.clone();
            assert_eq!(c, b);
            assert_eq!(c.into_vec(), want);
        }
        // The wrong type is handed back, never lost.
        let b = Buffer::from_buf("kept");
        let b = b.into_buf::<Frame>().unwrap_err();
        assert_eq!(b.into_buf::<&'static str>().unwrap(), "kept");
    }

    #[test]
    fn s32_an_erased_buffer_is_shared_between_threads() {
        let b = Buffer::from_buf_mut(Frame { storage: vec![3; 3].into(), filled: 3 });
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert_eq!((b.len(), b.capacity(), format!("{b:?}").contains("Frame")), (3, 3, true)));
            }
        });
        let moved = std::thread::spawn(move || b.into_vec()).join().unwrap();
        assert_eq!(moved, vec![3; 3]);
    }
}
