//! The monotonic clock the XDP program stamps with (`bpf_ktime_get_ns` is CLOCK_MONOTONIC),
//! and a log timer on the same clock, so every log line sits on the failover timeline.

use std::fmt;

use tracing_subscriber::fmt::{format::Writer, time::FormatTime};

/// Nanoseconds on CLOCK_MONOTONIC, comparable with the XDP program's timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds since the Unix epoch: unique enough to serve as an incarnation number.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Formats log timestamps as CLOCK_MONOTONIC seconds with microseconds.
pub struct MonotonicTimer;

impl FormatTime for MonotonicTimer {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let ns = monotonic_ns();
        write!(
            w,
            "{}.{:06}",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1_000
        )
    }
}
