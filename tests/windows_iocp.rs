//! IOCP specifics: foreign packets (S39), the exact count of `cancel_all`
//! (S25), results the kernel queues although the call reported an error
//! (S23), and handles that skip the port on success, whose immediate
//! results the crate delivers itself (S23), mostly on handles bound to a
//! port no thread serves, so the test takes every packet itself.
#![cfg(windows)]

mod util;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::Arc;
use std::time::Duration;

use iocompletion::{Error, Handle, IoCompletionManager, Port, Runtime};
use util::{collector, next_packet, on_own_port, started, tcp_pair, wait_until, DEADLINE};
use windows_sys::Win32::Foundation::{GetLastError, ERROR_IO_PENDING, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, FILE_FLAG_OVERLAPPED, PIPE_ACCESS_DUPLEX};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_READMODE_MESSAGE, PIPE_TYPE_BYTE, PIPE_TYPE_MESSAGE, PIPE_WAIT,
};
use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

fn pipe_name(what: &str) -> String {
    format!(r"\\.\pipe\iocompletion-{what}-{}", std::process::id())
}

/// The server end of a new named pipe, opened for overlapped I/O, and a
/// client end opened for ordinary (blocking) I/O by the standard library.
fn pipe(what: &str) -> (OwnedHandle, File) {
    pipe_of(what, PIPE_TYPE_BYTE | PIPE_READMODE_BYTE)
}

/// [`pipe`] of the given type and read mode.
fn pipe_of(what: &str, mode: u32) -> (OwnedHandle, File) {
    let name = pipe_name(what);
    let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated name; default security; no other pointer.
    let h = unsafe {
        CreateNamedPipeW(
            wide.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
            mode | PIPE_WAIT,
            1,
            4096,
            4096,
            0,
            std::ptr::null(),
        )
    };
    assert_ne!(h, INVALID_HANDLE_VALUE, "CreateNamedPipeW: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh handle nothing else owns.
    let server = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
    let client = OpenOptions::new().read(true).write(true).open(&name).unwrap();
    (server, client)
}

fn nothing_queued(port: &Port) {
    match port.get(Some(Duration::ZERO)) {
        Err(Error::Timeout) => {}
        Ok(p) => panic!("an unexpected packet: {:?}, {} bytes", p.status, p.bytes),
        Err(e) => panic!("{e}"),
    }
}

/// Overlapped I/O that other code issues through a duplicate of a bound
/// handle completes to the same port with the same key. The port tells its
/// packet apart by address, before reading anything from it, and drops it;
/// the crate's own request on the handle completes as usual.
#[test]
fn s39_a_foreign_packet_on_a_bound_handle_is_dropped_unread() {
    let (server, mut client) = pipe("foreign");
    let duplicate = server.try_clone().unwrap();
    let h = iocompletion::windows::from_overlapped_handle(server);
    let (port, _rt) = on_own_port(&h);

    // The foreign read, with an OVERLAPPED and a buffer of its own.
    let mut ov = Box::new(OVERLAPPED::default());
    let mut buf = Box::new([0u8; 4]);
    // SAFETY: the buffer and the OVERLAPPED are boxed and outlive the I/O
    // (GetOverlappedResult below waits for it to finish).
    let ok = unsafe {
        ReadFile(duplicate.as_raw_handle() as HANDLE, buf.as_mut_ptr(), 4, std::ptr::null_mut(), &mut *ov)
    };
    // SAFETY: reads the calling thread's error value.
    assert!(ok == 0 && unsafe { GetLastError() } == ERROR_IO_PENDING, "the foreign read is pending");
    client.write_all(b"abcd").unwrap();
    let mut n = 0u32;
    // SAFETY: the OVERLAPPED of the read issued above on this handle.
    let ok = unsafe { GetOverlappedResult(duplicate.as_raw_handle() as HANDLE, &*ov, &mut n, 1) };
    assert!(ok != 0 && n == 4 && &*buf == b"abcd", "the foreign read got its data");

    // The crate's read comes after the foreign packet in the queue.
    let id = started(h.read(vec![0; 4]).start());
    client.write_all(b"efgh").unwrap();
    let p = next_packet(&port);
    let req = p.request.expect("the crate's read");
    assert_eq!(req.id(), id);
    assert_eq!(p.bytes, 4);
    assert_eq!(req.into_buffer().into_vec(), b"efgh");
    assert_eq!(port.foreign_packets(), 1, "the foreign packet was counted and dropped");
    nothing_queued(&port);
}

/// `cancel_all` counts the requests it cancels: not one whose packet is
/// already queued (S25).
#[test]
fn s25_cancel_all_does_not_count_a_request_that_already_completed() {
    let (server, mut client) = pipe("cancel-all");
    let h = iocompletion::windows::from_overlapped_handle(server);
    let (port, _rt) = on_own_port(&h);

    let first = started(h.read(vec![0; 4]).start());
    let second = started(h.read(vec![0; 4]).start());
    // A blocking write to a pipe returns once the pending read it satisfies
    // has its data: the first read has completed, its packet untaken.
    client.write_all(b"data").unwrap();
    assert_eq!(h.cancel_all().unwrap(), 1, "only the second read was still pending");

    let a = next_packet(&port);
    assert_eq!(a.request.as_ref().unwrap().id(), first);
    assert!(a.status.is_success(), "{:?}", a.status);
    assert_eq!(a.bytes, 4);
    let b = next_packet(&port);
    assert_eq!(b.request.as_ref().unwrap().id(), second);
    assert!(b.status.is_aborted(), "{:?}", b.status);
    nothing_queued(&port);
}

/// A std `File` that cannot be reopened for overlapped I/O (the client end
/// of a pipe, opened synchronously) is refused when converted, not
/// accepted and then failing every request (S38).
#[test]
fn s38_a_synchronous_file_that_cannot_be_reopened_is_refused() {
    let (_server, client) = pipe("sync-client");
    match Handle::try_from(client) {
        Err(Error::NotImplemented(msg)) => assert!(msg.contains("from_overlapped_handle"), "{msg}"),
        Err(e) => panic!("another error: {e}"),
        Ok(h) => panic!("accepted: {h:?}"),
    }
}

/// A handle opened without `FILE_FLAG_OVERLAPPED` given to
/// `from_overlapped_handle` is refused when bound, with error 87.
#[test]
fn s38_a_synchronous_handle_is_refused_at_bind() {
    let (_server, client) = pipe("sync-bind");
    let h = iocompletion::windows::from_overlapped_handle(OwnedHandle::from(client));
    let port = Port::new(1).unwrap();
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let host: Arc<dyn IoCompletionManager> = Arc::new(rt.clone());
    match h.attach(&port, host, None) {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(87), "{e}"),
        other => panic!("expected error 87, got {other:?}"),
    }
}

/// A datagram larger than the buffer, already waiting when `recv_from`
/// starts: `WSARecvFrom` fails at once with `WSAEMSGSIZE`, yet the kernel
/// queues a packet for it (its status, `STATUS_BUFFER_OVERFLOW`, is a
/// warning, not an error). So the start does not fail: the request
/// completes once, with success, the bytes that fit and the source (S23,
/// S27), and no packet is left over.
#[test]
fn s23_a_truncated_datagram_waiting_at_start_completes_once() {
    use std::net::UdpSocket;
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"more than four bytes", receiver.local_addr().unwrap()).unwrap();
    // Blocks until the datagram is there (and leaves it there).
    let mut peek = [0u8; 64];
    assert_eq!(receiver.peek_from(&mut peek).unwrap().0, 20);
    let h = Handle::from(receiver);
    let (port, _rt) = on_own_port(&h);

    let id = started(h.recv_from(Vec::with_capacity(4)).start());
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 4);
    let req = p.request.expect("the receive");
    assert_eq!(req.id(), id);
    assert_eq!(req.addr(), Some(sender.local_addr().unwrap()));
    assert_eq!(req.into_buffer().into_vec(), b"more");
    nothing_queued(&port);
    assert_eq!(port.foreign_packets(), 0, "the kernel's packet was the request's");
}

/// The same on a message-mode pipe: a read shorter than the message
/// waiting fails at once with `ERROR_MORE_DATA` while the kernel queues its
/// packet. It completes once with the bytes that fit; the next read gets
/// the rest of the message.
#[test]
fn s23_a_message_longer_than_the_read_waiting_at_start_completes_once() {
    let (server, mut client) = pipe_of("message", PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE);
    let h = iocompletion::windows::from_overlapped_handle(server);
    let (port, _rt) = on_own_port(&h);
    // A blocking write to a pipe returns once the message is in the pipe.
    client.write_all(b"abcdefgh").unwrap();

    let first = started(h.read(Vec::with_capacity(4)).start());
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    let req = p.request.expect("the first read");
    assert_eq!(req.id(), first);
    assert_eq!(req.into_buffer().into_vec(), b"abcd");
    let second = started(h.read(Vec::with_capacity(4)).start());
    let p = next_packet(&port);
    let req = p.request.expect("the second read");
    assert_eq!(req.id(), second);
    assert_eq!(req.into_buffer().into_vec(), b"efgh");
    nothing_queued(&port);
    assert_eq!(port.foreign_packets(), 0);
}

/// `cancel_all` racing starts on two other threads, with more requests in
/// flight than a handle keeps inline: the count it returns is exactly the
/// number of requests that complete aborted, the others complete with
/// data once it is written, and each completes once (S25, with no lock
/// keeping the starts out).
#[test]
fn s25_cancel_all_racing_starts_counts_exactly_the_requests_it_aborted() {
    const PER_THREAD: usize = 6;
    let (server, mut client) = pipe("cancel-all-race");
    let h = iocompletion::windows::from_overlapped_handle(server);
    let (port, _rt) = on_own_port(&h);
    let go = Arc::new(std::sync::Barrier::new(3));
    let starters: Vec<_> = (0..2)
        .map(|_| {
            let (h, go) = (h.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                (0..PER_THREAD).map(|_| started(h.read(vec![0; 4]).start())).collect::<Vec<_>>()
            })
        })
        .collect();
    go.wait();
    let cancelled = h.cancel_all().unwrap();
    let mut ids: Vec<_> = starters.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let total = ids.len();
    assert!(cancelled <= total);
    // What is still pending reads these bytes, 4 each.
    client.write_all(&vec![7; 4 * (total - cancelled)]).unwrap();
    let (mut aborted, mut read) = (0, 0);
    for _ in 0..total {
        let p = next_packet(&port);
        let id = p.request.as_ref().expect("a read").id();
        let at = ids.iter().position(|&i| i == id).expect("a read started here, completed once");
        ids.swap_remove(at);
        if p.status.is_aborted() {
            aborted += 1;
        } else {
            assert!(p.status.is_success(), "{:?}", p.status);
            assert_eq!(p.bytes, 4);
            read += 1;
        }
    }
    assert_eq!(aborted, cancelled, "cancel_all counted exactly what it aborted");
    assert_eq!(read, total - cancelled);
    nothing_queued(&port);
    assert_eq!(port.foreign_packets(), 0);
}

/// The server side of a loopback TCP pair with `data` already waiting in
/// its receive buffer (peeked until all of it is there), and the client.
fn with_waiting(data: &[u8]) -> (std::net::TcpStream, std::net::TcpStream) {
    let (mut client, server) = tcp_pair();
    client.write_all(data).unwrap();
    let mut peek = vec![0u8; data.len()];
    // Blocks until the first bytes are there; loopback delivers the rest
    // in order.
    while server.peek(&mut peek).unwrap() < data.len() {}
    (client, server)
}

/// A handle that skips the port on success: a read of data already
/// waiting completes at once, so the OS queues no packet; the crate
/// delivers it once, through the port, with its bytes, and nothing else
/// comes (S23).
#[test]
fn s23_skip_on_success_a_read_of_waiting_data_completes_once_with_its_bytes() {
    let (_client, server) = with_waiting(b"hello");
    let h = Handle::from(server);
    assert!(h.skip_completion_port_on_success().unwrap(), "a TCP stream skips the port on success");
    let (port, _rt) = on_own_port(&h);

    let id = started(h.read(Vec::with_capacity(16)).start());
    assert_eq!(port.direct_completions(), 1, "completed at once, with no packet");
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 5);
    let req = p.request.expect("the read");
    assert_eq!(req.id(), id);
    assert_eq!(req.into_buffer().into_vec(), b"hello");
    nothing_queued(&port);
    assert_eq!(port.foreign_packets(), 0, "no packet of the OS's came as well");
}

/// Many reads and writes from several threads on a handle that skips the
/// port on success, served by a runtime's pool: each completes exactly
/// once, with its bytes in order, whether it completed at once (delivered
/// by the crate) or later (the kernel's packet).
#[test]
fn s23_skip_on_success_many_requests_complete_once_each() {
    const THREADS: usize = 4;
    const WRITES: usize = 50;
    const SIZE: usize = 64;
    let rt = Runtime::builder().min_threads(2).max_threads(4).build().unwrap();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let (mut peer, server) = tcp_pair();
    let h = Handle::from(server);
    assert!(h.skip_completion_port_on_success().unwrap());
    rt.bind(None, &h).unwrap();
    let port = h.port().unwrap();

    // Writes from several threads, each a block of its own byte.
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                (0..WRITES).map(|_| started(h.write(vec![t as u8; SIZE]).start())).collect::<Vec<_>>()
            })
        })
        .collect();
    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; THREADS * WRITES * SIZE];
        peer.read_exact(&mut all).unwrap();
        (peer, all)
    });
    let mut ids: Vec<_> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    for _ in 0..THREADS * WRITES {
        let c = rx.recv_for("a write");
        assert_eq!(c.ok(), SIZE);
        let at = ids.iter().position(|&i| i == c.id()).expect("a write started here, completed once");
        ids.swap_remove(at);
    }
    let (mut peer, all) = reader.join().unwrap();
    // Writes do not interleave: every block is one thread's byte.
    assert!(all.chunks(SIZE).all(|b| b.iter().all(|&x| x == b[0])));
    for t in 0..THREADS as u8 {
        assert_eq!(all.iter().filter(|&&x| x == t).count(), WRITES * SIZE);
    }

    // Reads of what the peer sent, one at a time: each finds data waiting
    // or waits for it.
    let sent: Vec<u8> = (0..THREADS * WRITES * SIZE).map(|i| (i % 251) as u8).collect();
    peer.write_all(&sent).unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let id = started(h.read(Vec::with_capacity(SIZE)).start());
        let c = rx.recv_for("a read");
        assert_eq!(c.id(), id);
        assert!(c.ok() > 0);
        got.extend(c.data());
    }
    assert_eq!(got, sent);
    rx.expect_none(std::time::Duration::from_millis(100));
    assert!(port.direct_completions() > 0, "some requests completed at once");
    assert_eq!(port.foreign_packets(), 0);
    rt.shutdown();
}

/// A thread blocked on the port gets a completion the crate delivers
/// itself: the port's own queue wakes it with one packet.
#[test]
fn s10_a_thread_blocked_on_the_port_gets_a_completion_delivered_without_a_packet() {
    let (_client, server) = with_waiting(b"wake");
    let h = Handle::from(server);
    assert!(h.skip_completion_port_on_success().unwrap());
    let (port, _rt) = on_own_port(&h);
    let p2 = port.clone();
    let getter = std::thread::spawn(move || p2.get(Some(DEADLINE)));
    wait_until("the getter waits on the port", || port.waiting_threads() == 1);

    let id = started(h.read(Vec::with_capacity(8)).start());
    let p = getter.join().unwrap().expect("the read's completion");
    assert_eq!(p.request.expect("the read").id(), id);
    assert_eq!(p.bytes, 4);
    assert_eq!(port.direct_completions(), 1);
    nothing_queued(&port);
}

/// A port closed with completions in its own queue hands them out before
/// any thread hears `Abandoned` (S11).
#[test]
fn s11_a_closed_port_hands_out_its_direct_completions_first() {
    let (_client, server) = with_waiting(b"before the close");
    let h = Handle::from(server);
    assert!(h.skip_completion_port_on_success().unwrap());
    let (port, _rt) = on_own_port(&h);
    let id = started(h.read(Vec::with_capacity(64)).start());
    assert_eq!(port.direct_completions(), 1);
    port.close().unwrap();
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.request.expect("the read").id(), id);
    assert!(matches!(port.get(Some(DEADLINE)), Err(Error::Abandoned)));
}

/// A read of a pipe whose writer closed fails at once with
/// `ERROR_BROKEN_PIPE`, and no packet is queued: the crate delivers the
/// end of stream (0 bytes, success) itself, as on Unix.
#[test]
fn s27_a_pipe_read_after_the_writer_closed_completes_once_with_0_bytes() {
    let (server, client) = pipe("broken");
    let h = iocompletion::windows::from_overlapped_handle(server);
    let (port, _rt) = on_own_port(&h);
    drop(client);
    let id = started(h.read(Vec::with_capacity(8)).start());
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(p.bytes, 0);
    assert_eq!(p.request.expect("the read").id(), id);
    assert_eq!(port.direct_completions(), 1);
    nothing_queued(&port);
}

/// Skipping the port is refused (`false`, the handle unchanged) where an
/// immediate "buffer too small" result comes with a packet although the
/// call reports an error: a UDP socket and a message-type pipe. It is
/// granted for a byte-type pipe, and must come before the bind.
#[test]
fn s23_skip_on_success_is_refused_where_an_immediate_result_would_be_ambiguous() {
    let udp = Handle::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    assert!(!udp.skip_completion_port_on_success().unwrap());
    let (message, _client) = pipe_of("skip-message", PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE);
    let message = iocompletion::windows::from_overlapped_handle(message);
    assert!(!message.skip_completion_port_on_success().unwrap());
    let (bytes, mut client) = pipe("skip-bytes");
    let bytes = iocompletion::windows::from_overlapped_handle(bytes);
    assert!(bytes.skip_completion_port_on_success().unwrap());

    // The byte pipe: a read of waiting data is delivered by the crate.
    client.write_all(b"pipe").unwrap();
    let (port, _rt) = on_own_port(&bytes);
    let id = started(bytes.read(Vec::with_capacity(8)).start());
    assert_eq!(port.direct_completions(), 1);
    let p = next_packet(&port);
    assert_eq!(p.request.expect("the read").id(), id);
    assert_eq!(p.bytes, 4);
    nothing_queued(&port);
    match bytes.skip_completion_port_on_success() {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("before binding"), "{msg}"),
        other => panic!("a bound handle: {other:?}"),
    }
}

/// A request block is reused, most recently freed first, by the next
/// request made on the same thread. Should the OS queue a packet for a
/// request the crate took as done at once (a provider that ignores
/// skip-on-success, an end of file that gets a packet after all), that
/// packet comes after the block went to the next request. It is not that
/// request's completion: the port tells it apart (each use of a block has
/// its own `OVERLAPPED` address) and drops it, and the request completes
/// with its own packet, its buffer no longer in the kernel's hands (S39).
#[test]
fn s39_a_late_packet_for_a_reused_request_block_is_not_delivered() {
    let (server, mut client) = pipe("late-packet");
    let h = iocompletion::windows::from_overlapped_handle(server);
    assert!(h.skip_completion_port_on_success().unwrap(), "a byte pipe skips the port on success");
    let (port, _rt) = on_own_port(&h);

    // A read of waiting data completes at once: the crate delivers it.
    client.write_all(b"old").unwrap();
    let first = started(h.read(Vec::with_capacity(8)).start());
    assert_eq!(port.direct_completions(), 1, "the first read was taken as done at once");
    let p = next_packet(&port);
    let old = p.request.expect("the first read");
    assert_eq!(old.id(), first);
    let (old_block, old_overlapped) = (old.block_address(), old.overlapped_address());
    // Its block goes back to this thread's cache, for the next request.
    drop(old);

    // The next read, in that block, waits for data.
    let second = started(h.read(Vec::with_capacity(8)).start());
    // The packet of the first read comes late (forged here, as the kernel
    // would queue it: the handle's key and the first read's OVERLAPPED).
    // SAFETY: the address is the first read's, whose completion was taken.
    unsafe { iocompletion::windows::post_as_kernel(&h, old_overlapped, 3) }.unwrap();
    // The port takes it and drops it: the second read is still pending.
    nothing_queued(&port);
    assert_eq!(port.foreign_packets(), 1, "the late packet was counted and dropped");

    client.write_all(b"new").unwrap();
    let p = next_packet(&port);
    assert!(p.status.is_success(), "{:?}", p.status);
    let req = p.request.expect("the second read");
    assert_eq!(req.id(), second);
    assert_eq!(req.block_address(), old_block, "the second read reused the first one's block");
    assert_ne!(req.overlapped_address(), old_overlapped, "each use of a block has its own OVERLAPPED");
    assert_eq!(p.bytes, 3);
    assert_eq!(req.into_buffer().into_vec(), b"new");
    nothing_queued(&port);
}
