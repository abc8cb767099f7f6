//! W3: echo with many connections, {1, 64, 512} connections x {64, 4096} B,
//! closed loop (each connection has one message in flight), a fixed time
//! per round.
//!
//! One load client for every server: a single mio thread driving all the
//! connections of one server. Servers: iocompletion (completions on the
//! pool, minimum = CPUs) and a tokio multi-thread echo server with as many
//! workers. Both servers and their connections stay up for the whole case;
//! the client alternates between them round by round.

mod common;

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::echo;
use common::{Better, Case, Settings};
use iocompletion::{DriverKind, Handle, Runtime};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Conn {
    s: TcpStream,
    sent: usize,
    got: usize,
    busy: bool,
}

/// The client side of one server's connections.
struct Load {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
}

impl Load {
    fn new(streams: Vec<std::net::TcpStream>) -> Load {
        let poll = Poll::new().expect("poll");
        let mut conns = Vec::with_capacity(streams.len());
        for (i, s) in streams.into_iter().enumerate() {
            s.set_nonblocking(true).expect("nonblocking");
            let mut s = TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                .expect("register");
            conns.push(Conn { s, sent: 0, got: 0, busy: false });
        }
        Load { poll, events: Events::with_capacity(1024), conns, scratch: vec![0; 64 * 1024] }
    }

    /// Advances connection `i`; true when it finished a round trip.
    fn step(&mut self, i: usize, msg: &[u8]) -> bool {
        let c = &mut self.conns[i];
        if !c.busy {
            return false;
        }
        while c.sent < msg.len() {
            match c.s.write(&msg[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("client write: {e}"),
            }
        }
        loop {
            match c.s.read(&mut self.scratch) {
                Ok(0) => panic!("server closed"),
                Ok(n) => c.got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert!(c.got <= msg.len(), "more echoed than sent");
        if c.got == msg.len() {
            c.busy = false;
            return true;
        }
        false
    }

    /// Sends the next message on connection `i`; true when its echo
    /// already came back.
    fn start(&mut self, i: usize, msg: &[u8]) -> bool {
        let c = &mut self.conns[i];
        c.sent = 0;
        c.got = 0;
        c.busy = true;
        self.step(i, msg)
    }

    /// Runs for `dur`: returns (round trips, elapsed) including the drain
    /// of the messages in flight at the deadline.
    fn run(&mut self, msg: &[u8], dur: Duration) -> (u64, Duration) {
        let start = Instant::now();
        let deadline = start + dur;
        let mut done = 0u64;
        let mut busy = self.conns.len();
        let mut again: Vec<usize> = (0..self.conns.len()).filter(|&i| self.start(i, msg)).collect();
        let mut open = true;
        while busy > 0 {
            // Connections whose echo came back while sending.
            while let Some(i) = again.pop() {
                done += 1;
                if open && Instant::now() < deadline {
                    if self.start(i, msg) {
                        again.push(i);
                    }
                } else {
                    busy -= 1;
                }
            }
            if busy == 0 {
                break;
            }
            self.poll.poll(&mut self.events, Some(Duration::from_secs(5))).expect("poll");
            assert!(!self.events.is_empty(), "no progress in 5 s ({busy} connections waiting)");
            let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
            if open && Instant::now() >= deadline {
                open = false;
            }
            for i in ready {
                if self.step(i, msg) {
                    done += 1;
                    if open {
                        if self.start(i, msg) {
                            again.push(i);
                        }
                    } else {
                        busy -= 1;
                    }
                }
            }
        }
        (done, start.elapsed())
    }
}

struct Setup {
    rt: Runtime,
    /// The same server on the epoll driver (S36), beside the default one
    /// (io_uring where the kernel allows it).
    rt_epoll: Runtime,
    tokio: tokio::runtime::Runtime,
    ours: Load,
    ours_epoll: Load,
    theirs: Load,
    handles: Vec<Handle>,
}

fn setup(conns: usize) -> Setup {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let rt = Runtime::builder().min_threads(cpus).max_threads(64).build().expect("runtime");
    let rt_epoll = Runtime::builder()
        .min_threads(cpus)
        .max_threads(64)
        .driver(DriverKind::Epoll)
        .build()
        .expect("runtime");
    eprintln!("W3: drivers {} and {}", rt.driver().expect("driver"), rt_epoll.driver().expect("driver"));
    let tokio =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build().expect("tokio");
    let (oc, os): (Vec<_>, Vec<_>) = echo::pairs(conns).into_iter().unzip();
    let (ec, es): (Vec<_>, Vec<_>) = echo::pairs(conns).into_iter().unzip();
    let (tc, ts): (Vec<_>, Vec<_>) = echo::pairs(conns).into_iter().unzip();
    let mut handles: Vec<Handle> = os.into_iter().map(|s| echo::ours_serve(&rt, s)).collect();
    handles.extend(es.into_iter().map(|s| echo::ours_serve(&rt_epoll, s)));
    {
        let _g = tokio.enter();
        for s in ts {
            tokio.spawn(echo::tokio_echo(echo::to_tokio(s)));
        }
    }
    Setup {
        rt,
        rt_epoll,
        tokio,
        ours: Load::new(oc),
        ours_epoll: Load::new(ec),
        theirs: Load::new(tc),
        handles,
    }
}

impl Setup {
    fn load(&mut self, c: usize) -> &mut Load {
        match c {
            0 => &mut self.ours,
            1 => &mut self.ours_epoll,
            _ => &mut self.theirs,
        }
    }

    fn stop(self) {
        for h in &self.handles {
            h.close();
        }
        drop(self.ours);
        drop(self.ours_epoll);
        drop(self.theirs);
        self.tokio.shutdown_timeout(Duration::from_secs(1));
        self.rt.shutdown();
        self.rt_epoll.shutdown();
    }
}

const CONNS: [usize; 3] = [1, 64, 512];
const SIZES: [usize; 2] = [64, 4096];

fn main() {
    if !common::benchmarking() {
        return;
    }
    let s = Settings::from_env();
    let limit = common::raise_fd_limit();
    let need = 4 * CONNS.iter().max().unwrap() + 64;
    if (limit as usize) < need {
        eprintln!("W3: open-file limit {limit} < {need}; cases with more connections may fail");
    }
    let dur = Duration::from_millis(s.pick(500, 150));
    let names = ["iocompletion", "iocompletion epoll", "tokio multi-thread"];
    let mut cases = Vec::new();
    let mut crit = if s.criterion { Some(common::criterion()) } else { None };
    for &n in &CONNS {
        let mut st = setup(n);
        for &size in &SIZES {
            let msg = vec![0x5au8; size];
            if s.harness {
                st.ours.run(&msg, dur / 5);
                st.ours_epoll.run(&msg, dur / 5);
                st.theirs.run(&msg, dur / 5);
                let mut case = Case::new(
                    "W3",
                    &format!("{n} conns x {size} B"),
                    "round trips/s",
                    Better::Higher,
                    &names,
                );
                case.run_rounds(s.rounds, |c| {
                    let (k, d) = st.load(c).run(&msg, dur);
                    k as f64 / d.as_secs_f64()
                });
                cases.push(case);
            }
            if let Some(cr) = crit.as_mut() {
                let mut g = cr.benchmark_group(format!("w3_echo/{n}_conns_{size}B"));
                g.throughput(criterion::Throughput::Bytes(size as u64));
                for (c, name) in
                    ["iocompletion", "iocompletion_epoll", "tokio_multi_thread"].iter().enumerate()
                {
                    // One iteration = one round trip; a call runs the
                    // connections until `iters` round trips are done.
                    g.bench_function(*name, |b| {
                        b.iter_custom(|iters| {
                            let mut total = 0u64;
                            let mut time = Duration::ZERO;
                            while total < iters {
                                let (k, d) = st.load(c).run(&msg, Duration::from_millis(20));
                                total += k;
                                time += d;
                            }
                            time.mul_f64(iters as f64 / total as f64)
                        })
                    });
                }
                g.finish();
            }
        }
        st.stop();
    }
    if s.harness {
        common::report("w3", &cases);
    }
    if let Some(cr) = crit {
        cr.final_summary();
    }
}
