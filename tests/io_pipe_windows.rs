//! S24, S27 on Windows: named pipes as local streams.
#![cfg(windows)]

mod util;

use std::sync::Arc;

use iocompletion::{HandleKind, IoCompletionManager, Runtime};
use util::collector;

fn unique(name: &str) -> String {
    format!("iocompletion-test-{name}-{}", std::process::id())
}

fn runtime() -> Runtime {
    Runtime::builder().min_threads(1).max_threads(4).build().unwrap()
}

#[test]
fn s27_a_named_pipe_carries_reads_and_writes_both_ways() {
    let rt = runtime();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let name = unique("both-ways");
    let server = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    let client = iocompletion::windows::named_pipe_client(&name).unwrap();
    assert_eq!(server.kind(), HandleKind::LocalStream);
    rt.bind(None, &server).unwrap();
    rt.bind(None, &client).unwrap();

    server.read(vec![0; 16]).start().unwrap();
    client.write(b"over the pipe".to_vec()).start().unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = rx.recv_for("pipe read or write");
        assert!(d.status.is_success(), "{:?}", d.status);
        if d.request.op() == iocompletion::Op::Read {
            got = d.request.into_buffer().into_vec()[..d.bytes].to_vec();
        }
    }
    assert_eq!(got, b"over the pipe");

    client.read(vec![0; 4]).start().unwrap();
    server.write(b"back".to_vec()).start().unwrap();
    let mut back = Vec::new();
    for _ in 0..2 {
        let d = rx.recv_for("reply");
        assert!(d.status.is_success());
        if d.request.op() == iocompletion::Op::Read {
            back = d.request.into_buffer().into_vec()[..d.bytes].to_vec();
        }
    }
    assert_eq!(back, b"back");
}

#[test]
fn s24_closing_a_named_pipe_aborts_its_pending_reads() {
    let rt = runtime();
    let (sink, rx) = collector();
    rt.set_completion_sink(sink).unwrap();
    let name = unique("abort");
    let server2 = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    let client2 = iocompletion::windows::named_pipe_client(&name).unwrap();
    rt.bind(None, &server2).unwrap();
    for _ in 0..3 {
        server2.read(vec![7; 8]).start().unwrap();
    }
    server2.close();
    for _ in 0..3 {
        let d = rx.recv_for("aborted pipe read");
        assert!(d.status.is_aborted(), "{:?}", d.status);
        assert_eq!(d.request.into_buffer().into_vec(), vec![7; 8], "the buffer comes back untouched");
    }
    drop(client2);
}

#[test]
fn s21_a_second_bind_of_a_pipe_is_invalid() {
    let rt = runtime();
    rt.set_completion_sink(Arc::new(|_, _, _| {})).unwrap();
    let name = unique("rebind");
    let server = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    rt.bind(None, &server).unwrap();
    assert!(matches!(rt.bind(None, &server), Err(iocompletion::Error::InvalidArgument(_))));
}

/// The server end of a named pipe waits for its client with an accept
/// (ConnectNamedPipe), and after a disconnect the same instance serves the
/// next client. The server is on a port no thread serves: "not connected
/// yet" is read from the queue.
#[test]
fn s27_a_named_pipe_server_accepts_its_clients_one_after_the_other() {
    use std::time::Duration;
    use util::{next_packet, on_own_port};

    let name = unique("accept");
    let server = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    let (port, _rt) = on_own_port(&server);
    for round in 0..2u8 {
        let accept = server.accept().start().unwrap();
        match port.get(Some(Duration::ZERO)) {
            Err(iocompletion::Error::Timeout) => {}
            other => panic!("round {round}: the accept completed with no client: {other:?}"),
        }
        let client = iocompletion::windows::named_pipe_client(&name).unwrap();
        let p = next_packet(&port);
        assert!(p.status.is_success(), "round {round}: {:?}", p.status);
        let mut req = p.request.expect("the accept");
        assert_eq!(req.id(), accept);
        assert!(req.take_accepted().is_none(), "the pipe itself is the connection");

        // The client writes (on a runtime port of its own), the server reads.
        let rt = runtime();
        let (sink, rx) = collector();
        rt.set_completion_sink(sink).unwrap();
        rt.bind(None, &client).unwrap();
        client.write(vec![round; 3]).start().unwrap();
        assert!(rx.recv_for("the client's write").status.is_success());
        server.read(Vec::with_capacity(8)).start().unwrap();
        let p = next_packet(&port);
        assert_eq!(p.request.unwrap().into_buffer().into_vec(), vec![round; 3]);

        drop(client);
        rt.shutdown();
        iocompletion::windows::disconnect_named_pipe(&server).unwrap();
    }
}

/// A client that finds every instance busy waits for one (ERROR_PIPE_BUSY,
/// then WaitNamedPipeW) instead of failing at once.
#[test]
fn s27_a_pipe_client_waits_for_a_busy_instance() {
    use util::{next_packet, on_own_port};

    let name = unique("busy");
    let server = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    let (port, _rt) = on_own_port(&server);
    server.accept().start().unwrap();
    let first = iocompletion::windows::named_pipe_client(&name).unwrap();
    assert!(next_packet(&port).status.is_success());

    // The only instance is taken: a second client waits in another thread
    // until the instance is free again.
    let n = name.clone();
    let second = std::thread::spawn(move || iocompletion::windows::named_pipe_client(&n));
    drop(first);
    iocompletion::windows::disconnect_named_pipe(&server).unwrap();
    server.accept().start().unwrap();
    let second = second.join().unwrap().expect("the second client connects once the instance is free");
    assert!(next_packet(&port).status.is_success());
    drop(second);
}

/// The server end of a named pipe the crate creates grants nothing to
/// Everyone (S-1-1-0) or Anonymous (S-1-5-7): its DACL, read back from the
/// pipe, is present (a NULL DACL would grant everyone everything) and none
/// of its allow entries names either of them.
#[test]
fn s27_a_named_pipe_server_grants_nothing_to_everyone_or_anonymous() {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
    use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
    use windows_sys::Win32::Security::{
        CreateWellKnownSid, EqualSid, GetAce, WinAnonymousSid, WinWorldSid, ACCESS_ALLOWED_ACE, ACE_HEADER,
        ACL, DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_MAX_SID_SIZE,
        WELL_KNOWN_SID_TYPE,
    };
    /// `ACCESS_ALLOWED_ACE_TYPE`
    const ALLOWED: u8 = 0;

    fn well_known(kind: WELL_KNOWN_SID_TYPE) -> Vec<u64> {
        let mut sid = vec![0u64; SECURITY_MAX_SID_SIZE as usize / 8 + 1];
        let mut len = (sid.len() * 8) as u32;
        // SAFETY: the buffer holds `len` bytes; no domain SID is needed.
        let ok = unsafe { CreateWellKnownSid(kind, std::ptr::null_mut(), sid.as_mut_ptr().cast(), &mut len) };
        assert_ne!(ok, 0, "CreateWellKnownSid: {}", std::io::Error::last_os_error());
        sid
    }
    let everyone = well_known(WinWorldSid);
    let anonymous = well_known(WinAnonymousSid);

    let name = unique("dacl");
    let server = iocompletion::windows::named_pipe_server(&name, true).unwrap();
    // The restrictive descriptor does not keep the process's own client out.
    let _client = iocompletion::windows::named_pipe_client(&name).unwrap();
    let allowed: Vec<(bool, bool)> = server
        .with_handle(|h| {
            let mut dacl: *mut ACL = std::ptr::null_mut();
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: the pipe handle is open (lent by with_handle); the
            // function allocates the descriptor, freed below, and points
            // `dacl` into it.
            let r = unsafe {
                GetSecurityInfo(
                    h.as_raw_handle() as HANDLE,
                    SE_KERNEL_OBJECT,
                    DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut dacl,
                    std::ptr::null_mut(),
                    &mut sd,
                )
            };
            assert_eq!(r, 0, "GetSecurityInfo");
            assert!(!dacl.is_null(), "a NULL DACL grants Everyone full access");
            // SAFETY: `dacl` points into `sd`, alive until LocalFree.
            let count = unsafe { (*dacl).AceCount };
            let mut out = Vec::new();
            for i in 0..u32::from(count) {
                let mut ace: *mut std::ffi::c_void = std::ptr::null_mut();
                // SAFETY: `i` is below the ACL's count; `ace` points into it.
                assert_ne!(unsafe { GetAce(dacl, i, &mut ace) }, 0);
                // SAFETY: every ACE starts with its header.
                if unsafe { (*ace.cast::<ACE_HEADER>()).AceType } != ALLOWED {
                    continue;
                }
                // SAFETY: an allow ACE: its SID starts at SidStart.
                let sid = unsafe { std::ptr::addr_of!((*ace.cast::<ACCESS_ALLOWED_ACE>()).SidStart) } as PSID;
                // SAFETY: both are valid SIDs.
                let is = |known: &Vec<u64>| unsafe { EqualSid(sid, known.as_ptr() as PSID) } != 0;
                out.push((is(&everyone), is(&anonymous)));
            }
            // SAFETY: allocated by GetSecurityInfo, freed once.
            unsafe { LocalFree(sd) };
            out
        })
        .unwrap();
    assert!(!allowed.is_empty(), "someone may open the pipe");
    assert!(!allowed.iter().any(|&(e, _)| e), "Everyone has an allow entry");
    assert!(!allowed.iter().any(|&(_, a)| a), "Anonymous has an allow entry");
}
