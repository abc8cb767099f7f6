//! S35: a bound on the requests and packets a port holds. At the bound a
//! start or a post fails with `Error::Full` naming the bound and hands the
//! request and its buffer back; nothing accepted before is lost.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use iocompletion::{Error, Handle, Port, Request, Runtime};
use util::{bind, started, tcp_pair, Gate};

#[test]
fn s35_a_bounded_port_refuses_posts_at_its_bound_and_hands_the_buffer_back() {
    assert!(matches!(Port::bounded(1, 0), Err(Error::InvalidArgument(_))));
    let port = Port::bounded(1, 3).unwrap();
    assert_eq!(port.bound(), Some(3));
    for key in 0..3 {
        port.post(0, key, None).unwrap();
    }
    let e = port.post(0, 9, Some(Request::new(vec![7u8; 5].into()))).unwrap_err();
    assert!(matches!(e.error, Error::Full { bound: 3 }), "{e}");
    assert!(e.to_string().contains('3'), "the error names the bound: {e}");
    assert_eq!(e.error.hresult(), iocompletion::E_NOT_ENOUGH_QUOTA);
    assert_eq!(e.buffer.into_vec(), vec![7; 5], "the buffer comes back");
    // Taking a packet makes room for one more.
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().key, 0);
    port.post(0, 3, None).unwrap();
    assert!(matches!(port.post(0, 10, None).map_err(|e| e.error), Err(Error::Full { bound: 3 })));
    // Everything accepted comes out, in order, once.
    let mut keys = Vec::new();
    let mut out = Vec::new();
    while port.get_many(&mut out, 8, Some(Duration::ZERO)).is_ok() {
        keys.extend(out.drain(..).map(|p| p.key));
    }
    assert_eq!(keys, vec![1, 2, 3]);
    assert!(Port::new(1).unwrap().bound().is_none(), "no bound by default, as IOCP");
}

#[test]
fn s35_a_bounded_runtime_refuses_starts_at_its_bound_and_loses_nothing() {
    let msg = Runtime::builder().max_pending(0).build().unwrap_err().to_string();
    assert!(msg.contains("max_pending"), "{msg}");
    let rt = Runtime::builder().min_threads(1).max_threads(1).max_pending(4).build().unwrap();
    let (_peer, server) = tcp_pair();
    let h = Handle::from(server);
    let c = bind(&rt, &h);
    // The only worker blocks in a callback, so nothing is taken meanwhile.
    let gate = Gate::default();
    let g = gate.clone();
    rt.post_callback(0, move |_, _, _| g.wait()).unwrap();
    util::wait_until("the blocking callback runs", || gate.arrived() == 1);

    let ids: HashSet<_> = (0..4).map(|_| started(h.read(vec![0; 32]).start())).collect();
    let e = h.read(vec![0; 32]).start().unwrap_err();
    assert!(matches!(e.error, Error::Full { bound: 4 }), "{e}");
    assert_eq!(e.buffer.len(), 32, "the buffer comes back");
    let e = rt.post_callback(0, |_, _, _| {}).unwrap_err();
    assert!(matches!(e.error, Error::Full { bound: 4 }), "{e}");

    // Closing the handle aborts the four reads; they complete once each
    // when the worker is free again, and then there is room again.
    drop(h);
    gate.open();
    let done: HashSet<_> = c
        .recv_n(4)
        .into_iter()
        .map(|d| {
            assert!(d.status.is_aborted(), "{:?}", d.status);
            d.id()
        })
        .collect();
    assert_eq!(done, ids);
    let (_peer2, server2) = tcp_pair();
    let h2 = Handle::from(server2);
    let _c2 = bind(&rt, &h2);
    for _ in 0..4 {
        started(h2.read(vec![0; 8]).start());
    }
    rt.shutdown();
}
