//! S38: a bound handle lends its OS object (socket options, `shutdown`,
//! the raw fd, socket or handle) without undoing its binding, and handles
//! come in from owned OS objects as well as from the standard library's
//! types.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use iocompletion::{Error, Handle, HandleKind};
use util::{bind, pattern, runtime, started, tcp_pair};

#[test]
fn s38_nodelay_on_an_accepted_connection() {
    let rt = runtime();
    let listener = Handle::from(TcpListener::bind("127.0.0.1:0").unwrap());
    let c = bind(&rt, &listener);
    let addr = listener.local_addr().unwrap();
    started(listener.accept().start());
    let _peer = TcpStream::connect(addr).unwrap();
    let mut done = c.recv();
    assert_eq!(done.ok(), 0);
    let conn = done.request.take_accepted().expect("the accepted connection");

    conn.with_socket(|s| s.set_nodelay(true)).unwrap();
    assert!(conn.with_socket(|s| s.nodelay()).unwrap());
    assert!(conn.with_socket(|s| s.nodelay()).unwrap(), "the same socket option through socket2");
    conn.with_socket(|s| s.set_nodelay(false)).unwrap();
    assert!(!conn.with_socket(|s| s.nodelay()).unwrap());
}

#[test]
fn s38_shutdown_of_the_write_side_ends_the_peers_stream_and_keeps_the_binding() {
    let rt = runtime();
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    let c = bind(&rt, &h);

    h.with_socket(|s| s.shutdown(Shutdown::Write)).unwrap();
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the peer read the end of the stream");

    // Still bound, still reading.
    let data = pattern(64, 1);
    started(h.read(vec![0; 64]).start());
    peer.write_all(&data).unwrap();
    let got = c.recv();
    assert_eq!(got.ok(), 64);
    assert_eq!(got.request.into_buffer().into_vec(), data);
}

#[test]
fn s38_a_closed_handle_lends_nothing() {
    let (_peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    h.close();
    assert!(matches!(h.with_socket(|s| s.nodelay()), Err(Error::InvalidArgument { .. })));
    assert!(matches!(h.with_socket(|s| s.set_nodelay(true)), Err(Error::InvalidArgument { .. })));
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        assert_eq!(h.as_raw_fd(), -1);
        assert!(h.with_fd(|_| ()).is_err());
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::{AsRawHandle, AsRawSocket};
        assert_eq!(h.as_raw_socket(), !0, "INVALID_SOCKET");
        assert!(h.as_raw_handle().is_null());
    }
}

#[test]
fn s38_a_file_lends_no_socket() {
    let f = util::TempFile::with_contents("s38-file", b"data");
    let h = util::file_handle(std::fs::File::open(f.path()).unwrap());
    assert_eq!(h.kind(), HandleKind::File);
    assert!(matches!(h.with_socket(|s| s.nodelay()), Err(Error::InvalidArgument { .. })));
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        assert!(h.as_raw_fd() >= 0);
        let len =
            h.with_fd(|fd| std::fs::File::from(fd.try_clone_to_owned().unwrap()).metadata().unwrap().len());
        assert_eq!(len.unwrap(), 4);
    }
    #[cfg(windows)]
    {
        let len =
            h.with_handle(|b| std::fs::File::from(b.try_clone_to_owned().unwrap()).metadata().unwrap().len());
        assert_eq!(len.unwrap(), 4);
    }
}

/// Owned OS objects come in with their kind: a listener still accepts, a
/// stream still reads.
#[test]
fn s38_handles_from_owned_os_objects_keep_their_kind() {
    #[cfg(unix)]
    fn owned<T: Into<std::os::fd::OwnedFd>>(t: T) -> Handle {
        Handle::from(t.into())
    }
    #[cfg(windows)]
    fn owned<T: Into<std::os::windows::io::OwnedSocket>>(t: T) -> Handle {
        Handle::from(t.into())
    }
    let rt = runtime();
    let listener = owned(TcpListener::bind("127.0.0.1:0").unwrap());
    assert_eq!(listener.kind(), HandleKind::TcpListener);
    let udp = owned(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    assert_eq!(udp.kind(), HandleKind::Udp);

    let c = bind(&rt, &listener);
    started(listener.accept().start());
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut done = c.recv();
    assert_eq!(done.ok(), 0);
    drop(done.request.take_accepted());

    let (mut peer2, mine) = tcp_pair();
    let stream = owned(mine);
    assert_eq!(stream.kind(), HandleKind::TcpStream);
    let c = bind(&rt, &stream);
    started(stream.read(vec![0; 3]).start());
    peer2.write_all(b"abc").unwrap();
    assert_eq!(c.recv().ok(), 3);
    peer.flush().unwrap();
}
