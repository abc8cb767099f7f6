//! W4: random 4 KiB reads from a file in the page cache, queue depth 1 and 32.
//!
//! - iocompletion: `read_at` requests on a handle bound with
//!   `bind_io_completion_callback`; each completion starts the next read,
//!   so `depth` requests are always in flight; on Linux twice, on the
//!   default driver (io_uring) and on epoll, whose file reads run on the
//!   pool (S29, S36);
//! - std pread loop, the ceiling: `min(depth, CPUs)` threads each reading
//!   in a loop (a synchronous loop has no depth; the pool cannot use more
//!   CPUs than that either);
//! - tokio::fs: `depth` tasks, each with its own `tokio::fs::File`, seek + read_exact;
//! - tokio spawn_blocking + std: `depth` tasks, each read a `spawn_blocking` pread.
//!
//! A third case reads at depth 32 from a file evicted from the page cache
//! before every run (`POSIX_FADV_DONTNEED`), so each read goes to the disk:
//! the crate on each driver and the pread loop.

mod common;

#[cfg(unix)]
mod imp {
    use std::fs::File;
    use std::io::{SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::common::{self, Better, Case, Settings};
    use iocompletion::{Builder, Handle, Request, Runtime, Status};

    const BLOCK: usize = 4096;
    const FILE_SIZE: u64 = 64 << 20;
    const OFFSETS: usize = 1 << 16;

    fn cpus() -> usize {
        thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Random block-aligned offsets (xorshift, fixed seed).
    fn offsets() -> Arc<Vec<u64>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let blocks = FILE_SIZE / BLOCK as u64;
        Arc::new(
            (0..OFFSETS)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % blocks) * BLOCK as u64
                })
                .collect(),
        )
    }

    fn make_file() -> PathBuf {
        let path = std::env::temp_dir().join(format!("iocompletion-w4-{}.dat", std::process::id()));
        let mut f = File::create(&path).expect("create");
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for _ in 0..FILE_SIZE >> 20 {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("sync");
        // Read it once so every read below is served from the page cache.
        let f = File::open(&path).expect("open");
        let mut buf = vec![0; 1 << 20];
        let mut off = 0;
        while off < FILE_SIZE {
            off += f.read_at(&mut buf, off).expect("read") as u64;
        }
        path
    }

    struct Ours {
        rt: Runtime,
        h: Handle,
        done: Arc<AtomicU64>,
        next: Arc<AtomicU64>,
        target: Arc<AtomicU64>,
    }

    impl Ours {
        fn new(path: &PathBuf, offs: Arc<Vec<u64>>, builder: Builder) -> Ours {
            let rt = builder.min_threads(cpus()).max_threads(64).build().expect("runtime");
            let h = Handle::from(File::open(path).expect("open"));
            let slot: Arc<OnceLock<Handle>> = Arc::new(OnceLock::new());
            let done = Arc::new(AtomicU64::new(0));
            let next = Arc::new(AtomicU64::new(0));
            let target = Arc::new(AtomicU64::new(0));
            let (me, d, nx, t) = (slot.clone(), done.clone(), next.clone(), target.clone());
            rt.bind_io_completion_callback(
                &h,
                Arc::new(move |status: Status, bytes: usize, mut req: Request| {
                    assert!(status.is_success() && bytes == BLOCK, "read failed: {status:?} {bytes}");
                    d.fetch_add(1, Ordering::AcqRel);
                    let i = nx.fetch_add(1, Ordering::AcqRel);
                    if i < t.load(Ordering::Acquire) {
                        let off = offs[i as usize % OFFSETS];
                        let buf = req.take_buffer().into_vec();
                        me.get().expect("handle").read(buf).at(off).start().expect("read_at");
                    }
                }),
                0,
            )
            .expect("bind");
            let _ = slot.set(h.clone());
            Ours { rt, h, done, next, target }
        }

        fn run(&self, n: u64, depth: usize, offs: &[u64]) -> Duration {
            self.done.store(0, Ordering::Release);
            self.target.store(n, Ordering::Release);
            self.next.store(depth as u64, Ordering::Release);
            let start = Instant::now();
            for &off in &offs[..depth] {
                self.h.read(vec![0; BLOCK]).at(off).start().expect("read_at");
            }
            while self.done.load(Ordering::Acquire) < n {
                thread::sleep(Duration::from_micros(200));
            }
            start.elapsed()
        }
    }

    fn std_pread(f: &File, n: u64, depth: usize, offs: &[u64]) -> Duration {
        let t = depth.min(cpus()) as u64;
        let start = Instant::now();
        thread::scope(|s| {
            for k in 0..t {
                s.spawn(move || {
                    let mut buf = vec![0u8; BLOCK];
                    let share = n / t + u64::from(k < n % t);
                    for i in 0..share {
                        let off = offs[((i * t + k) as usize) % OFFSETS];
                        assert_eq!(f.read_at(&mut buf, off).expect("pread"), BLOCK);
                    }
                });
            }
        });
        start.elapsed()
    }

    fn tokio_fs(
        rt: &tokio::runtime::Runtime,
        path: &PathBuf,
        n: u64,
        depth: usize,
        offs: &Arc<Vec<u64>>,
    ) -> Duration {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        rt.block_on(async {
            let mut files = Vec::new();
            for _ in 0..depth {
                files.push(tokio::fs::File::open(path).await.expect("open"));
            }
            let start = Instant::now();
            let tasks: Vec<_> = files
                .into_iter()
                .enumerate()
                .map(|(k, mut f)| {
                    let offs = offs.clone();
                    let d = depth as u64;
                    let share = n / d + u64::from((k as u64) < n % d);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; BLOCK];
                        for i in 0..share {
                            let off = offs[((i * d + k as u64) as usize) % OFFSETS];
                            f.seek(SeekFrom::Start(off)).await.expect("seek");
                            f.read_exact(&mut buf).await.expect("read");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            start.elapsed()
        })
    }

    fn tokio_blocking(
        rt: &tokio::runtime::Runtime,
        f: &Arc<File>,
        n: u64,
        depth: usize,
        offs: &Arc<Vec<u64>>,
    ) -> Duration {
        rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..depth)
                .map(|k| {
                    let (offs, f) = (offs.clone(), f.clone());
                    let d = depth as u64;
                    let share = n / d + u64::from((k as u64) < n % d);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; BLOCK];
                        for i in 0..share {
                            let off = offs[((i * d + k as u64) as usize) % OFFSETS];
                            let f = f.clone();
                            let (b, r) = tokio::task::spawn_blocking(move || {
                                let r = f.read_at(&mut buf, off);
                                (buf, r)
                            })
                            .await
                            .expect("blocking");
                            assert_eq!(r.expect("pread"), BLOCK);
                            buf = b;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            start.elapsed()
        })
    }

    /// Drops the file's pages from the page cache: the next reads go to the
    /// disk. False where the OS offers no way to ask (macOS has no
    /// `posix_fadvise`), and the case is then skipped.
    fn evict(f: &File) -> bool {
        f.sync_all().expect("sync");
        #[cfg(not(target_vendor = "apple"))]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: an open descriptor; the advice changes no memory of ours.
            let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(r, 0, "posix_fadvise");
            true
        }
        #[cfg(target_vendor = "apple")]
        false
    }

    pub fn main() {
        if !common::benchmarking() {
            return;
        }
        let s = Settings::from_env();
        let path = make_file();
        let offs = offsets();
        let ours = Ours::new(&path, offs.clone(), Runtime::builder());
        // The same runtime on epoll, where file reads run on the pool.
        #[cfg(target_os = "linux")]
        let ours_epoll =
            Some(Ours::new(&path, offs.clone(), Runtime::builder().driver(iocompletion::DriverKind::Epoll)));
        #[cfg(not(target_os = "linux"))]
        let ours_epoll: Option<Ours> = None;
        eprintln!("W4: driver {}", ours.rt.driver().expect("driver"));
        let std_file = File::open(&path).expect("open");
        let shared = Arc::new(File::open(&path).expect("open"));
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus())
            .enable_all()
            .build()
            .expect("tokio");
        let mut names = vec!["iocompletion", "std pread", "tokio::fs", "tokio spawn_blocking"];
        let mut ids = vec![0, 1, 2, 3];
        if ours_epoll.is_some() {
            names.insert(1, "iocompletion epoll");
            ids.insert(1, 4);
        }
        let run = |c: usize, n: u64, depth: usize| -> Duration {
            match ids[c] {
                0 => ours.run(n, depth, &offs),
                1 => std_pread(&std_file, n, depth, &offs),
                2 => tokio_fs(&tokio, &path, n, depth, &offs),
                3 => tokio_blocking(&tokio, &shared, n, depth, &offs),
                _ => ours_epoll.as_ref().expect("epoll runtime").run(n, depth, &offs),
            }
        };
        let mut cases = Vec::new();
        if s.harness {
            let n: u64 = s.pick(50_000, 10_000);
            for depth in [1usize, 32] {
                for c in 0..names.len() {
                    run(c, n / 10, depth);
                }
                let mut case = Case::new(
                    "W4",
                    &format!("depth {depth}, {n} reads of 4 KiB"),
                    "reads/s",
                    Better::Higher,
                    &names,
                );
                case.run_rounds(s.rounds, |c| n as f64 / run(c, n, depth).as_secs_f64());
                cases.push(case);
            }
            // Reads that miss the page cache: the crate on each driver and
            // the pread loop (tokio's two forms are the pool again).
            if evict(&std_file) {
                let cold = &names[..names.len() - 2];
                let n: u64 = s.pick(4_000, 1_000);
                let mut case = Case::new(
                    "W4",
                    &format!("depth 32, {n} reads of 4 KiB missing the page cache"),
                    "reads/s",
                    Better::Higher,
                    cold,
                );
                case.run_rounds(s.rounds, |c| {
                    evict(&std_file);
                    n as f64 / run(c, n, 32).as_secs_f64()
                });
                cases.push(case);
            } else {
                eprintln!("W4: reads that miss the page cache skipped: this OS cannot evict a file's pages");
            }
            common::report("w4", &cases);
        }
        if s.criterion {
            let mut cr = common::criterion();
            for depth in [1usize, 32] {
                let mut g = cr.benchmark_group(format!("w4_file/depth_{depth}"));
                g.throughput(criterion::Throughput::Bytes(BLOCK as u64));
                for (c, name) in names.iter().enumerate() {
                    let id = name.replace("::", "_").replace(' ', "_");
                    g.bench_function(id, |b| b.iter_custom(|i| run(c, i.max(depth as u64), depth)));
                }
                g.finish();
            }
            cr.final_summary();
        }
        ours.rt.shutdown();
        if let Some(o) = &ours_epoll {
            o.rt.shutdown();
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(unix)]
fn main() {
    imp::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("w4_file uses positional reads (FileExt::read_at) and runs on Unix only");
}
