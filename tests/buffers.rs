//! S32: any buffer type goes in (`IoBuf` for what the OS reads, `IoBufMut`
//! for what it fills) and the same type comes back; a read fills from the
//! start up to the capacity and sets the length.

mod util;

use std::future::IntoFuture;
use std::io::{Read, Write};
use std::net::UdpSocket;

use futures::executor::block_on;
use iocompletion::Vectored;
use iocompletion::{Buffer, Error, Handle, IoBuf, IoBufMut, Op, Runtime};
use util::{pattern, tcp_pair};

fn runtime() -> Runtime {
    Runtime::builder().min_threads(1).build().unwrap()
}

fn async_pair(rt: &Runtime) -> (std::net::TcpStream, Handle) {
    let (peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    (peer, h)
}

/// A caller's own buffer type: storage on the heap, a fill level of its own.
#[derive(Default)]
struct Frame {
    storage: Vec<u8>,
    filled: usize,
}

impl Frame {
    fn with_room(n: usize) -> Frame {
        Frame { storage: vec![0xEE; n], filled: 0 }
    }
}

// SAFETY: the storage is a heap allocation that does not move with the
// frame; `filled <= storage.len()` bytes hold data, all are initialized.
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

#[test]
fn s32_a_boxed_slice_is_filled_from_its_start_and_comes_back_boxed() {
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    let read = h.read(vec![0xAAu8; 16].into_boxed_slice()).into_future();
    peer.write_all(b"hello").unwrap();
    let (n, buf): (_, Box<[u8]>) = block_on(read);
    assert_eq!(n.unwrap(), 5);
    assert_eq!(buf.len(), 16, "a boxed slice keeps its length");
    assert_eq!(&buf[..5], b"hello");
    assert!(buf[5..].iter().all(|&b| b == 0xAA), "past the bytes read it is untouched");

    let data = pattern(50_000, 1).into_boxed_slice();
    let (n, back) = block_on(h.write(data.clone()).into_future());
    assert_eq!(n.unwrap(), data.len());
    assert_eq!(back, data, "the written box comes back");
    let mut got = vec![0; data.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got[..], &data[..]);
    rt.shutdown();
}

#[test]
fn s32_a_buffer_type_of_the_callers_own_reads_and_comes_back() {
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    let read = h.read(Frame::with_room(32)).into_future();
    peer.write_all(b"frame").unwrap();
    let (n, frame) = block_on(read);
    assert_eq!(n.unwrap(), 5);
    assert_eq!(frame.filled, 5, "the read set the fill level");
    assert_eq!(frame.as_slice(), b"frame");

    // The same frame, written back: its filled bytes only.
    let (n, frame) = block_on(h.write(frame).into_future());
    assert_eq!(n.unwrap(), 5);
    assert_eq!(frame.storage.len(), 32);
    let mut got = [0; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"frame");
    rt.shutdown();
}

#[test]
fn s32_static_bytes_are_written_without_a_copy() {
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    const GREETING: &[u8] = b"static greeting";
    let (n, back) = block_on(h.write(GREETING).into_future());
    assert_eq!(n.unwrap(), GREETING.len());
    assert_eq!(back.as_ptr(), GREETING.as_ptr(), "the same slice comes back");
    let (n, _) = block_on(h.write("and a str").into_future());
    assert_eq!(n.unwrap(), 9);
    let mut got = vec![0; GREETING.len() + 9];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, b"static greetingand a str");
    rt.shutdown();
}

#[test]
fn s32_vectored_requests_take_parts_of_any_buffer_type() {
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    let parts: Vec<Box<[u8]>> = vec![vec![0; 3].into_boxed_slice(), vec![0; 4].into_boxed_slice()];
    let read = h.read(Vectored(parts)).into_future();
    peer.write_all(b"abcdefg").unwrap();
    let (n, parts) = block_on(read);
    assert_eq!(n.unwrap(), 7);
    assert_eq!((&parts.0[0][..], &parts.0[1][..]), (&b"abc"[..], &b"defg"[..]), "filled in order");

    let out: Vec<&'static [u8]> = vec![b"one ", b"two ", b"three"];
    let (n, back) = block_on(h.write(Vectored(out)).into_future());
    assert_eq!(n.unwrap(), 13);
    assert_eq!(back.0.len(), 3);
    let mut got = [0; 13];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"one two three");
    rt.shutdown();
}

#[test]
fn s32_a_read_into_a_read_only_buffer_is_refused_with_the_buffer_back() {
    let rt = runtime();
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_io_completion_callback(&h, std::sync::Arc::new(|_, _, _| {}), 0).unwrap();
    let e = h.request(Op::Read, Buffer::from_buf(&b"read-only"[..])).start().unwrap_err();
    assert!(matches!(e.error, Error::InvalidArgument(_)), "{:?}", e.error);
    let back: &'static [u8] = e.buffer.into_buf().unwrap();
    assert_eq!(back, b"read-only");
    rt.shutdown();
}

#[test]
fn s32_a_one_shot_callback_gets_the_type_it_gave() {
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    let (tx, rx) = std::sync::mpsc::channel();
    h.read(vec![0u8; 8].into_boxed_slice()).then(move |(n, buf)| tx.send((n.ok(), buf)).unwrap()).unwrap();
    peer.write_all(b"box").unwrap();
    let (n, buf) = rx.recv().unwrap();
    assert_eq!(n, Some(3));
    assert_eq!(&buf[..3], b"box");
    rt.shutdown();
}

#[test]
fn s32_a_datagram_comes_with_its_source_and_the_buffer() {
    let rt = runtime();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sock.local_addr().unwrap();
    let h = Handle::from(sock);
    rt.bind_async(&h).unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let recv = h.recv_from(vec![0u8; 64].into_boxed_slice()).into_future();
    sender.send_to(b"dgram", to).unwrap();
    let (r, buf) = block_on(recv);
    let (n, from) = r.unwrap();
    assert_eq!((n, from), (5, sender.local_addr().unwrap()));
    assert_eq!(&buf[..5], b"dgram");

    let (n, _) = block_on(h.send_to(&b"back"[..], sender.local_addr().unwrap()).into_future());
    assert_eq!(n.unwrap(), 4);
    let mut got = [0; 16];
    assert_eq!(sender.recv(&mut got).unwrap(), 4);
    assert_eq!(&got[..4], b"back");
    rt.shutdown();
}

#[test]
fn s32_a_buffer_gives_back_the_type_it_holds_and_nothing_else() {
    // A vector is held as itself.
    let b = Buffer::from_buf_mut(vec![1u8, 2, 3]);
    assert!(matches!(b, Buffer::Single(_)));
    assert_eq!(b.into_buf::<Vec<u8>>().unwrap(), [1, 2, 3]);

    // Another type comes back only as itself.
    let b = Buffer::from_buf_mut(vec![4u8, 5].into_boxed_slice());
    assert_eq!((b.len(), b.capacity()), (2, 2));
    let b = b.into_buf::<Vec<u8>>().unwrap_err();
    let b = b.into_bufs::<Box<[u8]>>().unwrap_err();
    let copy = b.clone();
    assert_eq!(copy, b, "a clone holds the same bytes");
    assert_eq!(b.into_buf::<Box<[u8]>>().unwrap(), vec![4u8, 5].into_boxed_slice());
    assert_eq!(copy.into_vec(), [4, 5]);

    // Parts come back as a list, not as one buffer.
    let b = Buffer::from_bufs(vec![Box::<[u8]>::from(&b"ab"[..]), Box::from(&b"c"[..])]);
    assert_eq!(b.len(), 3);
    let b = b.into_buf::<Box<[u8]>>().unwrap_err();
    let parts = b.into_bufs::<Box<[u8]>>().unwrap();
    assert_eq!(parts.len(), 2);
}

#[cfg(feature = "bytes")]
#[test]
fn s32_bytes_mut_is_filled_up_to_its_capacity_and_bytes_are_written() {
    use bytes::{Bytes, BytesMut};
    let rt = runtime();
    let (mut peer, h) = async_pair(&rt);
    let read = h.read(BytesMut::with_capacity(64)).into_future();
    peer.write_all(b"bytes!").unwrap();
    let (n, buf) = block_on(read);
    assert_eq!(n.unwrap(), 6);
    assert_eq!(&buf[..], b"bytes!", "the length is the bytes read");
    let frozen: Bytes = buf.freeze();
    let (n, back) = block_on(h.write(frozen.clone()).into_future());
    assert_eq!(n.unwrap(), 6);
    assert_eq!(back, frozen);
    let mut got = [0; 6];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bytes!");
    rt.shutdown();
}

/// A buffer that counts the calls made through `&self`, the thread-safe
/// way the trait asks for (an atomic, not a `Cell`).
struct Counting {
    storage: Vec<u8>,
    reads: std::sync::atomic::AtomicUsize,
}

// SAFETY: the storage is a heap allocation that does not move with the
// value; all of it is initialized.
unsafe impl IoBuf for Counting {
    fn as_buf_ptr(&self) -> *const u8 {
        self.storage.as_ptr()
    }
    fn buf_len(&self) -> usize {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.storage.len()
    }
    fn buf_capacity(&self) -> usize {
        self.storage.len()
    }
}

#[test]
fn s32_a_request_shared_between_threads_shares_only_sync_buffers() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let req = iocompletion::Request::new(Buffer::from_buf(Counting {
        storage: vec![1, 2, 3],
        reads: Default::default(),
    }));
    // What `Request: Sync` rests on: the buffer it holds is Sync too (a
    // buffer type with a `Cell` does not implement `IoBuf`; see its docs).
    send_sync(&req);
    send_sync(req.buffer());
    let Buffer::Other(other) = req.buffer() else { panic!("held as Other") };
    send_sync(other);

    // Two threads read the buffer through the same `&Request` at once, as
    // `buffer().len()` and `Debug` do: no call is lost.
    const CALLS: usize = 10_000;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..CALLS {
                    if i % 2 == 0 {
                        assert_eq!(req.buffer().len(), 3);
                    } else {
                        assert!(format!("{req:?}").contains("buffer_len: 3"));
                    }
                }
            });
        }
    });
    let counted = req.into_buffer().into_buf::<Counting>().expect("the same type back");
    assert_eq!(counted.reads.into_inner(), 2 * CALLS, "every call counted once");
}

/// S32: a `Buffer::Other` lends its bytes, part by part, without its type.
#[test]
fn s32_an_other_buffer_lends_its_bytes() {
    let one = Buffer::from_buf(vec![1u8, 2, 3].into_boxed_slice());
    let Buffer::Other(o) = &one else { panic!("a boxed slice is held as Other: {one:?}") };
    assert_eq!(o.chunks().collect::<Vec<_>>(), [&[1u8, 2, 3][..]]);
    assert!(o.type_name().contains("Box"), "{}", o.type_name());
    assert_eq!(one.chunks().collect::<Vec<_>>(), [&[1u8, 2, 3][..]]);
    let parts = Buffer::from_bufs(vec!["ab", "c"]);
    assert_eq!(parts.chunks().collect::<Vec<_>>(), [&b"ab"[..], &b"c"[..]]);
    assert_eq!(Buffer::None.chunks().count(), 0);
}
