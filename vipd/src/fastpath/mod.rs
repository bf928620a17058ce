//! The fast path: a dedicated OS thread, at a real-time priority with its memory locked,
//! that owns what decides failover speed — sending heartbeats at absolute times, watching
//! peer deadlines against the kernel's timestamps, and taking VIPs over — with no async
//! runtime and no lock shared with the slow path.
//!
//! This module is the machinery shared by the modes: starting the thread
//! ([`spawn`]), sleeping until an absolute CLOCK_MONOTONIC time or until a descriptor is
//! readable ([`Sleeper`]), being woken by the slow path ([`Waker`]), and counting how
//! late the thread ran ([`Stats`]). What it does when awake is the mode's (`pool::fast`).

pub mod channel;
pub mod schedule;
pub mod sends;
pub mod shadow;

/// A thread waking more than this after the time it asked for was stopped (ns): its CPU,
/// or the whole machine, did not run it.
pub const STALL_NS: u64 = 500_000;

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

/// Stack of each fast-path thread (nothing on it is large; locked memory is resident).
const STACK_SIZE: usize = 512 * 1024;

/// How the fast path's thread is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// SCHED_FIFO at this priority (1–99), memory locked.
    RealTime(u8),
    /// Ordinary scheduling (configured `rt_priority = 0`).
    Normal,
}

/// What the thread got, reported once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Granted {
    /// SCHED_FIFO at the priority asked for, memory locked.
    RealTime(u8),
    /// Ordinary scheduling, as configured.
    Normal,
    /// Ordinary scheduling because real-time was refused (the reason, e.g. no CAP_SYS_NICE).
    Refused(String),
}

/// Starts `body` on its own thread named `name`, first switching the thread to `priority`
/// (and locking the process's memory); returns what it got and the thread's handle.
pub fn spawn<T: Send + 'static>(
    name: &str,
    priority: Priority,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<(Granted, JoinHandle<T>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(name.into())
        // With memory locked, a thread's whole stack is resident: keep it small.
        .stack_size(STACK_SIZE)
        .spawn(move || {
            let _ = tx.send(apply(priority));
            body()
        })?;
    let granted = rx.recv().unwrap_or(Granted::Normal);
    Ok((granted, handle))
}

fn apply(priority: Priority) -> Granted {
    let Priority::RealTime(prio) = priority else {
        return Granted::Normal;
    };
    // SAFETY: sched_param is plain data; the call changes only this thread (tid 0).
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        let e = io::Error::last_os_error();
        return Granted::Refused(format!("SCHED_FIFO {prio}: {e}"));
    }
    // Page faults on the fast path would cost milliseconds: lock what is mapped and
    // whatever is mapped later.
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        let e = io::Error::last_os_error();
        return Granted::Refused(format!(
            "SCHED_FIFO {prio} granted, but mlockall failed: {e}"
        ));
    }
    Granted::RealTime(prio)
}

/// Wakes the fast path's [`Sleeper`] from another thread (an eventfd).
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the thread's current or next wait return.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd; a full counter is harmless.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

/// What ended a wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// The [`Waker`] was used.
    pub by_waker: bool,
    /// Bit `i` is set when the `i`th watched descriptor is readable.
    pub readable: u64,
}

/// Sleeps until an absolute CLOCK_MONOTONIC time (a timerfd armed with
/// TFD_TIMER_ABSTIME: µs precision, no drift, no timer slack at a real-time priority) or
/// until a watched descriptor is readable or the [`Waker`] is used.
pub struct Sleeper {
    timer: OwnedFd,
    wake: Arc<OwnedFd>,
}

impl Sleeper {
    /// A sleeper and the waker that interrupts it.
    pub fn new() -> io::Result<(Self, Waker)> {
        // SAFETY: plain syscalls; results checked before use.
        let timer = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(timer) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        Ok((
            Self {
                timer,
                wake: Arc::clone(&wake),
            },
            Waker(wake),
        ))
    }

    /// Waits until `at_ns` (CLOCK_MONOTONIC; `None`: no deadline) or until one of `fds`
    /// is readable or the waker is used, whichever comes first.
    pub fn wait(&mut self, at_ns: Option<u64>, fds: &[RawFd]) -> io::Result<Woken> {
        let value = at_ns.map_or(
            // Disarmed.
            libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            |at| {
                // A zero it_value would disarm the timer; 1 ns is already past anyway.
                let at = at.max(1);
                libc::timespec {
                    tv_sec: (at / 1_000_000_000) as libc::time_t,
                    tv_nsec: (at % 1_000_000_000) as _,
                }
            },
        );
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: valid itimerspec; no old value wanted.
        if unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut polls: Vec<libc::pollfd> = [self.timer.as_raw_fd(), self.wake.as_raw_fd()]
            .into_iter()
            .chain(fds.iter().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        loop {
            // SAFETY: polls is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut buf = 0u64;
        for fd in [self.timer.as_raw_fd(), self.wake.as_raw_fd()] {
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking timerfd/eventfd.
            unsafe { libc::read(fd, (&mut buf as *mut u64).cast(), 8) };
        }
        let mut readable = 0u64;
        for (i, p) in polls[2..].iter().enumerate().take(64) {
            if p.revents != 0 {
                readable |= 1 << i;
            }
        }
        Ok(Woken {
            by_waker: polls[1].revents != 0,
            readable,
        })
    }
}

/// How punctual the fast path has been, readable from any thread (metrics, status, the
/// stop log line).
#[derive(Debug, Default)]
pub struct Stats {
    /// Heartbeats (or adverts) sent.
    pub sent: AtomicU64,
    /// Of those, sent more than half an interval after their slot.
    pub late: AtomicU64,
    /// The latest any was sent after its slot (ns).
    pub max_late_ns: AtomicU64,
    /// Times the thread woke up.
    pub wakeups: AtomicU64,
    /// Times it woke more than half a millisecond after the time it asked for.
    pub stalls: AtomicU64,
    /// The longest such delay (ns).
    pub max_stall_ns: AtomicU64,
}

impl Stats {
    /// Records one send `late_ns` after its slot, counted late beyond `tolerance_ns`.
    pub fn record_send(&self, late_ns: u64, tolerance_ns: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if late_ns > tolerance_ns {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        self.max_late_ns.fetch_max(late_ns, Ordering::Relaxed);
    }

    /// Records a wake-up `late_ns` after the time asked for.
    pub fn record_stall(&self, late_ns: u64) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.max_stall_ns.fetch_max(late_ns, Ordering::Relaxed);
    }
}
