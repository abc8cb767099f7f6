//! The clock the metrics read: nanoseconds of a monotonic clock, as cheap
//! as the OS makes it (on Unix one `clock_gettime` through the vDSO, with
//! none of `Instant`'s arithmetic).

/// Nanoseconds of the monotonic clock, never 0 (0 means "not stamped").
#[cfg(unix)]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on
    // every Unix the crate supports, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64) | 1
}

/// Nanoseconds since the process's first reading, never 0.
#[cfg(not(unix))]
pub(crate) fn now_ns() -> u64 {
    use crate::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    (epoch.elapsed().as_nanos() as u64) | 1
}
