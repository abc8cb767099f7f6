//! S36: the driver a port runs on, chosen by the builder or the
//! `IOCOMPLETION_DRIVER` setting, with a fallback to epoll (and its reason)
//! when io_uring is refused. Each case runs in a child process (this test
//! binary again) with the environment it needs, so the choice never
//! depends on how the suite itself was started; a refusal is simulated by
//! the crate's own seam, not left to the kernel's mood.

mod util;

use std::future::IntoFuture;
use std::io::{Read, Write};
use std::process::Command;

use iocompletion::{DriverKind, Handle, Runtime};
use util::tcp_pair;

const CHILD: &str = "IOCOMPLETION_DRIVERS_CHILD";
const DRIVER: &str = "IOCOMPLETION_DRIVER";
const REFUSE: &str = "IOCOMPLETION_IO_URING_REFUSE";
#[cfg(target_os = "linux")]
const RINGS: &str = "IOCOMPLETION_IO_URING_RINGS";

/// Runs `name` again in a child with `env` set (and the two settings
/// cleared otherwise); true in the parent, once the child passed.
fn in_child(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    cmd.env_remove(DRIVER).env_remove(REFUSE);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the test binary again");
    assert!(
        out.status.success(),
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
    true
}

/// One echo through a runtime on `rt`'s driver: every driver serves.
// Only the Linux and Windows cases run a runtime (kqueue is only compiled).
#[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
fn round_trip(rt: &Runtime) {
    let (mut peer, mine) = tcp_pair();
    let h = Handle::from(mine);
    rt.bind_async(&h).unwrap();
    let read = h.read(Vec::with_capacity(16)).into_future();
    peer.write_all(b"driver").unwrap();
    let (n, buf) = futures::executor::block_on(read);
    assert_eq!((n.unwrap(), &buf[..]), (6, &b"driver"[..]));
    let (n, _) = futures::executor::block_on(h.write(buf).into_future());
    assert_eq!(n.unwrap(), 6);
    let mut got = [0; 6];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"driver");
}

#[cfg(target_os = "linux")]
#[test]
fn s36_io_uring_is_the_default_where_the_kernel_allows_it() {
    if in_child("s36_io_uring_is_the_default_where_the_kernel_allows_it", &[]) {
        return;
    }
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    let d = rt.driver().unwrap();
    // A kernel that refuses io_uring (disabled, or a seccomp profile)
    // gives epoll with the kernel's reason; otherwise io_uring runs.
    match d.kind {
        DriverKind::IoUring => {
            assert_eq!(d.fallback, None);
            // The rings and the setup flags granted are reported.
            let setup = d.setup.as_deref().unwrap_or_default();
            assert!(setup.contains("ring") && setup.contains("setup flags"), "{d}");
            assert!(d.to_string().contains(setup), "{d}");
        }
        DriverKind::Epoll => {
            let why = d.fallback.as_deref().unwrap_or_default();
            assert!(why.contains("io_uring"), "a fallback names its reason: {d}");
            assert_eq!(d.setup, None);
        }
        other => panic!("unexpected driver {other:?}"),
    }
    round_trip(&rt);
    rt.shutdown();
}

#[cfg(target_os = "linux")]
#[test]
fn s36_a_refused_io_uring_falls_back_to_epoll_and_says_why() {
    if in_child("s36_a_refused_io_uring_falls_back_to_epoll_and_says_why", &[(REFUSE, "EPERM")]) {
        return;
    }
    for rt in [
        Runtime::builder().min_threads(1).build().unwrap(),
        Runtime::builder().min_threads(1).driver(DriverKind::IoUring).build().unwrap(),
    ] {
        let d = rt.driver().unwrap();
        assert_eq!(d.kind, DriverKind::Epoll, "{d}");
        let why = d.fallback.clone().expect("a fallback says why");
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM).to_string();
        assert!(why.contains(&eperm), "the reason is the refusal: {why}");
        assert!(d.to_string().starts_with("epoll (fallback: "), "{d}");
        round_trip(&rt);
        rt.shutdown();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn s36_epoll_is_used_when_asked_for() {
    if in_child("s36_epoll_is_used_when_asked_for", &[(DRIVER, "epoll")]) {
        return;
    }
    // By the setting.
    let port = iocompletion::Port::new(1).unwrap();
    let d = port.driver();
    assert_eq!(d.kind, DriverKind::Epoll);
    assert!(d.fallback.as_deref().unwrap_or_default().contains("IOCOMPLETION_DRIVER=epoll"), "{d}");
    port.close().unwrap();
    // By the builder, whatever the setting.
    let rt = Runtime::builder().min_threads(1).driver(DriverKind::Epoll).build().unwrap();
    let d = rt.driver().unwrap();
    assert_eq!(d.kind, DriverKind::Epoll);
    assert_eq!(d.fallback, None, "the program's own choice is no fallback: {d}");
    round_trip(&rt);
    rt.shutdown();
}

#[cfg(target_os = "linux")]
#[test]
fn s36_the_builder_asks_for_io_uring_over_the_setting() {
    if in_child("s36_the_builder_asks_for_io_uring_over_the_setting", &[(DRIVER, "epoll")]) {
        return;
    }
    let rt = Runtime::builder().min_threads(1).driver(DriverKind::IoUring).build().unwrap();
    let d = rt.driver().unwrap();
    assert!(
        d.kind == DriverKind::IoUring || d.fallback.as_deref().unwrap_or_default().contains("io_uring"),
        "io_uring, or a fallback that names the kernel's refusal: {d}"
    );
    round_trip(&rt);
    rt.shutdown();
}

/// `IOCOMPLETION_IO_URING_RINGS` picks a ring per pool worker (`worker`,
/// `worker-coop`) or the port's ring alone (`shared`, the default, with
/// `COOP_TASKRUN`; `shared-signal` without); each serves, and the driver
/// says which runs and with which setup flags. Another value is a clear
/// error.
#[cfg(target_os = "linux")]
#[test]
fn s36_the_rings_setting_picks_a_ring_per_worker_or_the_ports_ring() {
    const NAME: &str = "s36_the_rings_setting_picks_a_ring_per_worker_or_the_ports_ring";
    if std::env::var_os(CHILD).is_none() {
        for v in ["worker", "worker-coop", "shared", "shared-signal", "", "bogus"] {
            in_child(NAME, &[(RINGS, v)]);
        }
        return;
    }
    let says = match std::env::var(RINGS).unwrap().as_str() {
        "worker" => "a ring per pool worker and one for the port; setup flags: none",
        "worker-coop" => "a ring per pool worker and one for the port; setup flags: COOP_TASKRUN",
        "shared" | "" => "one ring for the port; setup flags: COOP_TASKRUN",
        "shared-signal" => "one ring for the port; setup flags: none",
        _ => {
            let e = iocompletion::Port::new(1).unwrap_err();
            assert!(matches!(e, iocompletion::Error::InvalidArgument(_)), "{e:?}");
            assert!(e.to_string().contains(RINGS), "{e}");
            return;
        }
    };
    // A kernel without COOP_TASKRUN (before Linux 5.19) serves with no flags.
    let coop_granted = io_uring::IoUring::<io_uring::squeue::Entry>::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(2)
        .is_ok();
    let says = if coop_granted { says.to_string() } else { says.replace("COOP_TASKRUN", "none") };
    let rt = Runtime::builder().min_threads(2).build().unwrap();
    let d = rt.driver().unwrap();
    if d.kind == DriverKind::IoUring {
        assert!(d.setup.as_deref().unwrap_or_default().starts_with(&says), "{d}");
    }
    round_trip(&rt);
    rt.shutdown();
}

#[test]
fn s36_a_driver_the_os_does_not_have_is_a_clear_error() {
    if in_child("s36_a_driver_the_os_does_not_have_is_a_clear_error", &[(DRIVER, "bogus")]) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // A setting that names no driver.
        let e = iocompletion::Port::new(1).unwrap_err();
        assert!(matches!(e, iocompletion::Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("IOCOMPLETION_DRIVER"), "{e}");
    }
    // Refused when the runtime is built, not at its first port.
    let other = if cfg!(windows) { DriverKind::IoUring } else { DriverKind::Iocp };
    let e = Runtime::builder().min_threads(1).driver(other).build().unwrap_err();
    assert!(matches!(e, iocompletion::Error::InvalidArgument(_)), "{e:?}");
    assert!(e.to_string().contains("driver"), "{e}");
}

#[cfg(windows)]
#[test]
fn s36_windows_runs_on_iocp() {
    let rt = Runtime::builder().min_threads(1).build().unwrap();
    assert_eq!(rt.driver().unwrap().kind, DriverKind::Iocp);
    round_trip(&rt);
    rt.shutdown();
}
