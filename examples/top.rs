//! A live view of a runtime, in the same process: an echo server and its
//! load clients run on one runtime, and every second the terminal shows
//! its threads, queue depth, requests in flight, rates and latency
//! percentiles over the last second (`Runtime::metrics`).
//!
//! ```text
//! cargo run --release --example top -- [CONNECTIONS] [SECONDS] [MESSAGE_BYTES] [--plain]
//! ```
//!
//! Defaults: 64 connections, run until Ctrl-C (`SECONDS` 0), 64-byte
//! messages. `--plain` prints each frame after the last instead of
//! redrawing the screen (for a log or a capture).

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use iocompletion::metrics::{LatencyHistogram, PortMetrics, RuntimeMetrics};
use iocompletion::{Handle, Runtime};

/// The server side of one connection: echoes until the peer closes.
async fn echo(conn: Handle) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (n, data) = conn.read(buf).await;
        if !matches!(n, Ok(n) if n > 0) {
            return;
        }
        let (w, data) = conn.write(data).await;
        if w.is_err() {
            return;
        }
        buf = data;
        buf.clear();
    }
}

/// One load client: sends `size` bytes and reads the echo back, for ever.
async fn client(rt: Runtime, addr: SocketAddr, size: usize) -> std::io::Result<()> {
    let conn =
        Handle::from(socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?);
    rt.bind_async(&conn)?;
    conn.connect(addr).await?;
    let mut msg = vec![7u8; size];
    let mut buf = Vec::with_capacity(size);
    loop {
        let (w, m) = conn.write(msg).await;
        w?;
        msg = m;
        let mut got = 0;
        while got < size {
            buf.clear();
            let (n, b) = conn.read(buf).await;
            buf = b;
            match n? {
                0 => return Ok(()),
                n => got += n,
            }
        }
    }
}

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6))
}

fn latency_row(out: &mut String, name: &str, h: &LatencyHistogram) {
    let p = |q| micros(h.percentile(q));
    let _ = writeln!(
        out,
        "  {name:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0),
        h.count()
    );
}

/// One frame: the figures now, rates and latencies since `before`.
fn frame(m: &RuntimeMetrics, before: &RuntimeMetrics, secs: f64, title: &str) -> String {
    let mut out = String::new();
    let p = &m.pool;
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "threads {} (min {}, max {})  busy {}  idle {}  peak {}  started {}  retired {}",
        p.threads, p.min, p.max, p.busy, p.idle, p.peak, p.started, p.retired
    );
    let why = |g: Option<String>| g.unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "last growth {}  last shrink {}",
        why(p.last_growth.map(|g| format!("{g:?}"))),
        why(p.last_shrink.map(|s| format!("{s:?}")))
    );
    for port in &m.ports {
        let old = before.ports.iter().find(|o| o.port == port.port).cloned().unwrap_or_default();
        port_rows(&mut out, port, &old, secs);
    }
    out
}

fn port_rows(out: &mut String, now: &PortMetrics, old: &PortMetrics, secs: f64) {
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
    let in_flight: Vec<String> =
        now.in_flight.by_kind().iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "\nport {} ({:?})  queued {}  in flight: {}",
        now.port,
        now.driver.unwrap(),
        now.queued,
        if in_flight.is_empty() { "none".into() } else { in_flight.join(", ") }
    );
    let (c, o) = (&now.completions, &old.completions);
    let entries = rate(now.os.entries, old.os.entries);
    let os_done = rate(now.os.completions, old.os.completions);
    let _ = writeln!(
        out,
        "  per second: completions {:.0} (error {:.0}, cancelled {:.0}, aborted {:.0}, timed out {:.0})  posts {:.0}",
        rate(c.total(), o.total()),
        rate(c.error, o.error),
        rate(c.cancelled, o.cancelled),
        rate(c.aborted, o.aborted),
        rate(c.timed_out, o.timed_out),
        rate(now.posts, old.posts),
    );
    let _ = writeln!(
        out,
        "  OS: entries {entries:.0}/s returning {:.1} each  overflows {}",
        if entries > 0.0 { os_done / entries } else { 0.0 },
        now.os.overflows
    );
    let _ = writeln!(out, "  latency, last interval (us)    p50       p90       p99       max     count");
    latency_row(out, "start -> OS completion", &now.start_to_completion.since(&old.start_to_completion));
    latency_row(
        out,
        "completion -> callback",
        &now.completion_to_callback.since(&old.completion_to_callback),
    );
    latency_row(out, "callback", &now.callback.since(&old.callback));
}

fn main() -> Result<(), Box<dyn Error>> {
    let plain = std::env::args().any(|a| a == "--plain");
    let mut args = std::env::args().skip(1).filter(|a| a != "--plain");
    let connections: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let seconds: u64 = args.next().map_or(Ok(0), |s| s.parse())?;
    let size: usize = args.next().map_or(Ok(64), |s| s.parse())?;

    let rt = Runtime::builder().build()?;
    let listener = Handle::from(TcpListener::bind("127.0.0.1:0")?);
    let addr = listener.local_addr()?;
    rt.bind_async(&listener)?;
    let rt2 = rt.clone();
    drop(rt.spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            if rt2.bind_async(&conn).is_ok() {
                drop(rt2.spawn(echo(conn)));
            }
        }
    }));
    for _ in 0..connections {
        drop(rt.spawn(client(rt.clone(), addr, size)));
    }

    let start = Instant::now();
    let mut before = rt.metrics();
    let mut at = Instant::now();
    while seconds == 0 || start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let now = rt.metrics();
        let secs = at.elapsed().as_secs_f64();
        let title = format!(
            "iocompletion top: {connections} connections echoing {size} B on {addr}, driver {}, {:.0} s",
            rt.driver()?,
            start.elapsed().as_secs_f64()
        );
        let text = frame(&now, &before, secs, &title);
        let mut stdout = std::io::stdout().lock();
        if plain {
            writeln!(stdout, "{text}")?;
        } else {
            write!(stdout, "\x1b[2J\x1b[H{text}")?;
        }
        stdout.flush()?;
        before = now;
        at = Instant::now();
    }
    rt.shutdown();
    Ok(())
}
