//! S1-S3: a host written here, with its own threads and extension data,
//! driven by the crate's request path through `dyn IoCompletionManager`.

mod util;

use std::future::IntoFuture;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use iocompletion::{
    Buffer, CompletionSink, Error, Handle, IoCompletionManager, Port, Request, Result, Status,
};

/// A host that runs exactly one thread per port and stamps a magic value
/// and a sequence number into a 16-byte extension.
struct OneThreadHost {
    me: Weak<OneThreadHost>,
    sink: Mutex<Option<Arc<dyn CompletionSink>>>,
    ports: Mutex<Vec<(Port, thread::JoinHandle<()>)>>,
    seq: AtomicUsize,
    busy: Arc<AtomicUsize>,
    max: AtomicUsize,
}

const MAGIC: &[u8; 8] = b"MYHOST!!";

impl OneThreadHost {
    fn new() -> Arc<OneThreadHost> {
        Arc::new_cyclic(|me| OneThreadHost {
            me: me.clone(),
            sink: Mutex::new(None),
            ports: Mutex::new(Vec::new()),
            seq: AtomicUsize::new(0),
            busy: Arc::new(AtomicUsize::new(0)),
            max: AtomicUsize::new(1),
        })
    }
}

impl IoCompletionManager for OneThreadHost {
    fn create_port(&self) -> Result<Port> {
        let port = Port::new(1)?;
        let sink =
            self.sink.lock().unwrap().clone().ok_or_else(|| Error::InvalidArgument("no sink".into()))?;
        let (p, busy) = (port.clone(), self.busy.clone());
        let t = thread::Builder::new()
            .name("one-thread-host".into())
            .spawn(move || {
                // The host's own thread policy: one thread, packets one by one.
                while let Ok(pk) = p.get(None) {
                    if let Some(req) = pk.request {
                        busy.fetch_add(1, Ordering::SeqCst);
                        sink.on_complete(pk.status, pk.bytes, req);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
            .map_err(Error::Io)?;
        self.ports.lock().unwrap().push((port.clone(), t));
        Ok(port)
    }

    fn close_port(&self, port: &Port) -> Result<()> {
        let mut ports = self.ports.lock().unwrap();
        let i = ports
            .iter()
            .position(|(p, _)| p.same(port))
            .ok_or_else(|| Error::InvalidArgument(format!("port = {}: unknown", port.id())))?;
        let (p, t) = ports.remove(i);
        p.close()?;
        t.join().map_err(|_| Error::Fatal("host thread panicked".into()))
    }

    fn bind(&self, port: Option<&Port>, handle: &Handle) -> Result<()> {
        let port =
            port.cloned().ok_or_else(|| Error::NotImplemented("this host has no default port".into()))?;
        let me: Arc<dyn IoCompletionManager> = self.me.upgrade().ok_or(Error::Unavailable)?;
        handle.attach(&port, me, None)
    }

    fn available_threads(&self) -> Result<usize> {
        Ok(self.max.load(Ordering::SeqCst) - self.busy.load(Ordering::SeqCst))
    }

    fn host_overlapped_size(&self) -> Result<usize> {
        Ok(16)
    }

    fn max_threads(&self) -> Result<usize> {
        Ok(self.max.load(Ordering::SeqCst))
    }

    fn set_max_threads(&self, n: usize) -> Result<()> {
        if n != 1 {
            return Err(Error::InvalidArgument(format!("max_threads = {n}: this host runs one thread")));
        }
        Ok(())
    }

    fn min_threads(&self) -> Result<usize> {
        Ok(1)
    }

    fn set_min_threads(&self, n: usize) -> Result<()> {
        self.set_max_threads(n)
    }

    fn initialize_host_overlapped(&self, request: &mut Request) -> Result<()> {
        let ext = request.extension_mut();
        ext[..8].copy_from_slice(MAGIC);
        let n = self.seq.fetch_add(1, Ordering::SeqCst) as u64;
        ext[8..].copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    fn set_completion_sink(&self, sink: Arc<dyn CompletionSink>) -> Result<()> {
        *self.sink.lock().unwrap() = Some(sink);
        Ok(())
    }
}

#[test]
fn s3_a_custom_host_is_driven_through_dyn_io_completion_manager() {
    let host = OneThreadHost::new();
    let manager: Arc<dyn IoCompletionManager> = host.clone();
    let (sink, rx) = util::collector();
    manager.set_completion_sink(sink).unwrap();
    let port = manager.create_port().unwrap();

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let server = Handle::from(l.accept().unwrap().0);
    assert!(matches!(manager.bind(None, &server), Err(Error::NotImplemented(_))));
    manager.bind(Some(&port), &server).unwrap();

    for _ in 0..3 {
        server.read(vec![0; 2]).start().unwrap();
    }
    client.write_all(b"aabbcc").unwrap();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let d = rx.recv_for("read through the custom host");
        assert!(d.status.is_success());
        assert_eq!(d.thread, "one-thread-host", "the host's own thread ran it");
        assert_eq!(&d.request.extension()[..8], MAGIC, "the host's extension data");
        seqs.push(u64::from_le_bytes(d.request.extension()[8..].try_into().unwrap()));
        assert_eq!(d.bytes, 2);
    }
    assert_eq!(seqs, vec![0, 1, 2]);
    // Its own thread policy answers through the trait.
    assert!(matches!(manager.set_max_threads(4), Err(Error::InvalidArgument(_))));
    assert_eq!(manager.max_threads().unwrap(), 1);

    // Closing the host's port aborts what is pending there, through its thread.
    server.read(vec![0; 2]).start().unwrap();
    manager.close_port(&port).unwrap();
    let d = rx.recv_for("aborted read");
    assert!(d.status.is_aborted());
    assert_eq!(d.status, Status::ABORTED);
    rx.expect_none(Duration::from_millis(100));
}

#[test]
fn s3_the_traits_are_object_safe_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn IoCompletionManager>();
    assert_send_sync::<dyn CompletionSink>();
    assert_send_sync::<iocompletion::Runtime>();
    assert_send_sync::<Handle>();
    assert_send_sync::<Port>();
    assert_send_sync::<Request>();
}

#[test]
fn s1_the_default_host_answers_all_eleven_methods_through_dyn() {
    let rt = iocompletion::Runtime::builder()
        .min_threads(1)
        .max_threads(8)
        .host_overlapped_size(32)
        .build()
        .unwrap();
    let m: &dyn IoCompletionManager = &rt;
    let (sink, rx) = util::collector();
    m.set_completion_sink(sink).unwrap(); // SetCLRIoCompletionManager
    let port = m.create_port().unwrap(); // CreateIoCompletionPort
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let server = Handle::from(l.accept().unwrap().0);
    m.bind(Some(&port), &server).unwrap(); // Bind
    assert_eq!(m.host_overlapped_size().unwrap(), 32); // GetHostOverlappedSize
    assert_eq!(m.max_threads().unwrap(), 8); // GetMaxThreads
    m.set_max_threads(6).unwrap(); // SetMaxThreads
    assert_eq!(m.min_threads().unwrap(), 1); // GetMinThreads
    m.set_min_threads(2).unwrap(); // SetMinThreads
    assert_eq!((m.min_threads().unwrap(), m.max_threads().unwrap()), (2, 6));
    assert_eq!(m.available_threads().unwrap(), 6); // GetAvailableThreads
    let mut req = rt.new_request(iocompletion::Buffer::None).unwrap();
    m.initialize_host_overlapped(&mut req).unwrap(); // InitializeHostOverlapped
    assert_eq!(req.extension().len(), 32);
    server.read(vec![0; 2]).start().unwrap();
    client.write_all(b"ok").unwrap();
    assert_eq!(rx.recv_for("read").bytes, 2);
    m.close_port(&port).unwrap(); // CloseIoCompletionPort
    rt.shutdown();
}

#[test]
fn s2_a_host_delivering_twice_is_counted_and_ignored() {
    // The host's loop is this thread: it takes each packet, then calls the
    // request's own target twice, the second time with a request of its
    // own. The first result stands for every kind of target.
    let host = OneThreadHost::new();
    let me: Arc<dyn IoCompletionManager> = host.clone();
    let port = Port::new(1).unwrap();
    let (callback, calls) = util::collector();
    let attach = |callback: Option<Arc<dyn CompletionSink>>| {
        let (peer, mine) = util::tcp_pair();
        let h = Handle::from(mine);
        h.attach(&port, me.clone(), callback).unwrap();
        (peer, h)
    };
    let (mut p1, with_callback) = attach(Some(callback));
    let (mut p2, for_closure) = attach(None);
    let (mut p3, for_future) = attach(None);

    with_callback.read(Vec::with_capacity(8)).start().unwrap();
    let (tx, closure) = std::sync::mpsc::channel();
    for_closure
        .read(Vec::with_capacity(8))
        .then(move |(n, buf): (_, Vec<u8>)| tx.send((n.ok(), buf)).unwrap())
        .unwrap();
    let future = for_future.read(Vec::with_capacity(8)).into_future();
    p1.write_all(b"sink").unwrap();
    p2.write_all(b"closure").unwrap();
    p3.write_all(b"future").unwrap();

    for _ in 0..3 {
        let pk = port.get(Some(util::DEADLINE)).expect("each read completes");
        let mut req = pk.request.expect("a request's packet");
        let target = req.take_callback().expect("each request has a target of its own");
        target.on_complete(pk.status, pk.bytes, req);
        target.on_complete(Status::ABORTED, 0, Request::new(Buffer::from(vec![0xEE; 4])));
    }
    assert_eq!(port.duplicate_deliveries(), 3, "each second delivery is counted");

    // The handle's callback: once, with the read.
    let d = calls.recv_for("the callback's one completion");
    assert_eq!(d.ok(), 4);
    assert_eq!(d.data(), b"sink");
    assert!(calls.try_recv().is_none(), "the second delivery did not reach the callback");
    // The closure: once, with the read.
    assert_eq!(closure.try_recv().unwrap(), (Some(7), b"closure".to_vec()));
    assert!(closure.try_recv().is_err(), "the closure ran once");
    // The future: resolves with the read, and does not panic.
    let (n, buf) = futures::executor::block_on(future);
    assert_eq!((n.unwrap(), &buf[..]), (6, &b"future"[..]));
}
