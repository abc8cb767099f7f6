//! W2: ping-pong of 64 B on one loopback TCP connection.
//!
//! The client is the same for every server: a blocking std socket on the
//! measuring thread writes 64 B and reads the echo back, so each figure is
//! the round-trip time through one server:
//! - iocompletion: read/write completions on the pool (the default runtime
//!   with the number of CPUs as minimum);
//! - std: a blocking thread serving the connection (the ceiling);
//! - tokio current-thread: one runtime thread serving it.

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::echo;
use common::{Better, Case, Settings};
use iocompletion::{Handle, Runtime};

const MSG: usize = 64;

struct Servers {
    rt: Runtime,
    ours: (TcpStream, Handle),
    std: (TcpStream, thread::JoinHandle<()>),
    tokio: (TcpStream, thread::JoinHandle<()>),
}

impl Servers {
    fn start() -> Servers {
        let cpus = thread::available_parallelism().map_or(2, |n| n.get());
        let rt = Runtime::builder().min_threads(cpus).max_threads(64).build().expect("runtime");
        let mut p = echo::pairs(3);
        let (tc, ts) = p.pop().unwrap();
        let (sc, ss) = p.pop().unwrap();
        let (oc, os) = p.pop().unwrap();
        let oh = echo::ours_serve(&rt, os);
        let sj = echo::std_serve(ss);
        let tj = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
            rt.block_on(async move { echo::tokio_echo(echo::to_tokio(ts)).await });
        });
        Servers { rt, ours: (oc, oh), std: (sc, sj), tokio: (tc, tj) }
    }

    fn client(&mut self, c: usize) -> &mut TcpStream {
        match c {
            0 => &mut self.ours.0,
            1 => &mut self.std.0,
            _ => &mut self.tokio.0,
        }
    }

    /// `n` round trips through server `c`; total time.
    fn run(&mut self, c: usize, n: u64) -> Duration {
        let msg = [7u8; MSG];
        let mut back = [0u8; MSG];
        let client = self.client(c);
        let start = Instant::now();
        for _ in 0..n {
            echo::round_trip(client, &msg, &mut back);
        }
        start.elapsed()
    }

    fn stop(self) {
        self.ours.1.close();
        drop(self.ours.0);
        drop(self.std.0);
        drop(self.tokio.0);
        let _ = self.std.1.join();
        let _ = self.tokio.1.join();
        self.rt.shutdown();
    }
}

fn main() {
    if !common::benchmarking() {
        return;
    }
    let s = Settings::from_env();
    let mut srv = Servers::start();
    let names = ["iocompletion", "std blocking", "tokio current-thread"];
    if s.harness {
        let n: u64 = s.pick(20_000, 2_000);
        for c in 0..3 {
            srv.run(c, n / 10);
        }
        let mut case =
            Case::new("W2", &format!("64 B ping-pong, {n} round trips"), "us", Better::Lower, &names);
        case.run_rounds(s.rounds, |c| srv.run(c, n).as_secs_f64() * 1e6 / n as f64);
        common::report("w2", &[case]);
    }
    if s.criterion {
        let mut cr = common::criterion();
        let mut g = cr.benchmark_group("w2_pingpong/64B");
        for (c, name) in ["iocompletion", "std_blocking", "tokio_current_thread"].iter().enumerate() {
            g.bench_function(*name, |b| b.iter_custom(|i| srv.run(c, i)));
        }
        g.finish();
        cr.final_summary();
    }
    srv.stop();
}
