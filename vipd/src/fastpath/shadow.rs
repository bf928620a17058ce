//! Shadow senders: one thread pinned to each CPU (up to [`MAX_SHADOWS`]) that sends this
//! node's heartbeat when the fast path missed its slot, so a node stays alive to its
//! peers while *any* of its CPUs runs.
//!
//! Why: a real-time priority protects the fast path from other tasks, not from its CPU
//! being stopped under it. On virtual machines the hypervisor deschedules one vCPU at a
//! time for milliseconds (measured here: 7–9 ms, a few times a minute under load, while
//! the other vCPU ran on) — longer than a 4 ms dead interval. A shadow on another CPU
//! covers such a stall; a frozen fast path (a hang, not a stall) is covered for at most
//! [`COVER_NS`], after which the node stops vouching for itself and its peers take over.
//!
//! In normal operation a shadow only wakes, half an interval after each slot, and finds
//! the heartbeat sent.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use aya::maps::{Array, MapData};
use vipd_common::maps::FENCE_POOL;

use super::{Priority, STALL_NS, Sleeper, schedule::Periodic};
use crate::{clock::monotonic_ns, heartbeat::Heartbeats};

/// At most this many shadows (one per CPU).
pub const MAX_SHADOWS: usize = 4;
/// How long shadows keep a frozen fast path's node alive (ns): longer than any stall
/// of a vCPU seen, far shorter than a hang matters.
pub const COVER_NS: u64 = 100_000_000;

/// What the fast path publishes for its shadows: the heartbeat's contents and its own
/// progress.
#[derive(Debug, Default)]
pub struct Vouch {
    /// Flags of the last heartbeat sent.
    pub flags: AtomicU8,
    /// View digest of the last heartbeat sent.
    pub view_digest: AtomicU64,
    /// Placement weight.
    pub weight: AtomicU16,
    /// When the last heartbeat left, from any thread (CLOCK_MONOTONIC ns).
    pub sent_ns: AtomicU64,
    /// When the fast path last ran its loop.
    pub progress_ns: AtomicU64,
    /// Heartbeat datagrams shadows sent because the fast path was late.
    pub covered: AtomicU64,
    /// Stop the shadows (before LEAVING goes out).
    pub stop: AtomicBool,
    /// What each shadow saw of its CPU.
    pub cpus: [CpuWatch; MAX_SHADOWS],
    /// How many shadows run (the first entries of `cpus`).
    pub shadows: AtomicU8,
    /// The peers' dead interval (ns; 0: unknown): after a silence that long the peers have
    /// declared this node lost, and only the fast path may speak again (it first gives its
    /// VIPs back), never a shadow with the old flags.
    pub dead_ns: AtomicU64,
}

/// One CPU as its shadow saw it: the shadow wakes every interval, so a CPU that is stopped
/// (by a hypervisor, or hogged) shows as a late or missing wake-up.
#[derive(Debug, Default)]
pub struct CpuWatch {
    /// The shadow's last wake-up (CLOCK_MONOTONIC ns; 0 before the first).
    pub seen_ns: AtomicU64,
    /// When its last late wake-up was, and how late (the CPU's last stall).
    pub stall_end_ns: AtomicU64,
    /// See `stall_end_ns`.
    pub stall_len_ns: AtomicU64,
}

impl CpuWatch {
    /// The stall this CPU had or is in at `now`: (end, length), if any. A shadow overdue by
    /// more than `tolerance_ns` after its next wake-up (`interval_ns` after the last) is a
    /// stall still going on, until now; it is never said to be longer than [`COVER_NS`].
    pub fn stall(&self, now: u64, interval_ns: u64, tolerance_ns: u64) -> Option<(u64, u64)> {
        let seen = self.seen_ns.load(Ordering::Acquire);
        if seen == 0 {
            return None;
        }
        let due = seen + interval_ns;
        if now > due + tolerance_ns {
            return Some((now, (now - due).min(COVER_NS)));
        }
        let len = self.stall_len_ns.load(Ordering::Acquire);
        (len > 0).then(|| (self.stall_end_ns.load(Ordering::Acquire), len.min(COVER_NS)))
    }
}

impl Vouch {
    /// The fast path records a heartbeat it sent at `now`.
    pub fn sent(&self, now: u64, flags: u8, view_digest: u64) {
        self.flags.store(flags, Ordering::Relaxed);
        self.view_digest.store(view_digest, Ordering::Relaxed);
        self.sent_ns.fetch_max(now, Ordering::AcqRel);
    }

    /// Whether a shadow waking at `now` should send, for heartbeats due every
    /// `interval_ns`: nothing went out for more than an interval, and the fast path ran
    /// within [`COVER_NS`]. Claims the send, so one shadow sends per gap.
    fn claim(&self, now: u64, interval_ns: u64) -> bool {
        let last = self.sent_ns.load(Ordering::Acquire);
        let progress = self.progress_ns.load(Ordering::Relaxed);
        let dead = self.dead_ns.load(Ordering::Relaxed);
        now.saturating_sub(last) > interval_ns
            && (dead == 0 || now.saturating_sub(last) < dead)
            && now.saturating_sub(progress) < COVER_NS
            && self
                .sent_ns
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// How often a shadow checks, for heartbeats every `interval_ns` and peers that wait
/// `dead_ns`: as seldom as still lets it send before the peers' deadline with half the
/// remaining time to spare (a missed heartbeat is covered at most an interval plus a
/// period after the last one), and never more often than the heartbeats go.
pub fn check_period(interval_ns: u64, dead_ns: u64) -> u64 {
    interval_ns.max(dead_ns.saturating_sub(interval_ns) / 2)
}

/// Starts a shadow on each CPU this process may run on (up to [`MAX_SHADOWS`]), each
/// with its own copy of `heartbeats` (sent every `interval_ns`), checking every `period_ns`
/// (see [`check_period`]) from half an interval after the fast path's first slot
/// (`start_ns`), and its own handle on the XDP program's fencing deadlines
/// (`open_fence`): a heartbeat a shadow sends moves the pool's deadline as the fast
/// path's does (the peers wait from it too; else the node would stop answering for its
/// VIPs while its peers still wait, and nobody would).
pub fn spawn(
    heartbeats: &Heartbeats,
    vouch: &Arc<Vouch>,
    start_ns: u64,
    (interval_ns, period_ns): (u64, u64),
    priority: Priority,
    open_fence: &dyn Fn() -> anyhow::Result<Array<MapData, u64>>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (slot, cpu) in allowed_cpus().into_iter().take(MAX_SHADOWS).enumerate() {
        let mut hb = heartbeats.shadow()?;
        let mut fence = open_fence()?;
        let vouch = Arc::clone(vouch);
        let (mut sleeper, _waker) = Sleeper::new()?;
        let body = move || {
            pin_to(cpu);
            let mut check = Periodic::new(start_ns + interval_ns / 2, period_ns);
            let watch = &vouch.cpus[slot];
            while !vouch.stop.load(Ordering::Relaxed) {
                let _ = sleeper.wait(Some(check.next()), &[]);
                let now = monotonic_ns();
                if !check.due(now) {
                    continue;
                }
                let late = check.advance(now);
                if late > STALL_NS {
                    watch.stall_len_ns.store(late, Ordering::Release);
                    watch.stall_end_ns.store(now, Ordering::Release);
                }
                watch.seen_ns.store(now, Ordering::Release);
                if vouch.stop.load(Ordering::Relaxed) || !vouch.claim(now, interval_ns) {
                    continue;
                }
                hb.set_weight(vouch.weight.load(Ordering::Relaxed));
                let flags = vouch.flags.load(Ordering::Relaxed);
                let digest = vouch.view_digest.load(Ordering::Relaxed);
                let before = hb.sent;
                let _ = hb.send(flags, digest, &[]);
                vouch.covered.fetch_add(hb.sent - before, Ordering::Relaxed);
                if hb.sent > before {
                    let dead = vouch.dead_ns.load(Ordering::Relaxed);
                    let deadline = monotonic_ns().saturating_add(dead);
                    let _ = fence.set(u32::from(FENCE_POOL), deadline, 0);
                }
            }
        };
        let (_, handle) = super::spawn(&format!("vipd-shadow{cpu}"), priority, body)?;
        handles.push(handle);
    }
    vouch.shadows.store(handles.len() as u8, Ordering::Release);
    Ok(handles)
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: reads a bit of a valid set.
        .filter(|&c| ok && unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: unpinned, it still covers).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the set is valid for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_shadow_sends_only_when_the_fast_path_missed_a_slot() {
        let v = Vouch::default();
        v.progress_ns.store(100 * MS, Ordering::Relaxed);
        v.sent(100 * MS, 0, 0);
        // Half an interval after a slot served on time: nothing to do.
        assert!(!v.claim(100 * MS + MS / 2, MS));
        // The fast path missed the next slot: a shadow sends, and only one.
        assert!(v.claim(101 * MS + MS / 2, MS));
        assert!(!v.claim(101 * MS + MS / 2 + 1, MS));
    }

    #[test]
    fn shadows_check_as_seldom_as_the_dead_interval_allows() {
        assert_eq!(check_period(MS, 4 * MS), 3 * MS / 2);
        assert_eq!(check_period(MS, 3 * MS), MS);
        assert_eq!(check_period(2 * MS, 8 * MS), 3 * MS);
        // Never more often than the heartbeats.
        assert_eq!(check_period(100 * MS, 150 * MS), 100 * MS);
        // A missed heartbeat is covered before the deadline: last + interval + period.
        for (i, d) in [
            (MS, 3 * MS),
            (MS, 4 * MS),
            (2 * MS, 8 * MS),
            (100 * MS, 300 * MS),
        ] {
            assert!(i + check_period(i, d) < d, "{i} {d}");
        }
    }

    #[test]
    fn a_cpu_whose_shadow_is_overdue_is_stalled_until_now() {
        let w = CpuWatch::default();
        assert_eq!(w.stall(5 * MS, MS, MS / 2), None, "no wake-up yet");
        w.seen_ns.store(100 * MS, Ordering::Relaxed);
        assert_eq!(w.stall(101 * MS + MS / 4, MS, MS / 2), None, "on time");
        // Overdue: stopped since its wake-up was due.
        assert_eq!(w.stall(108 * MS, MS, MS / 2), Some((108 * MS, 7 * MS)));
        // It woke 7 ms late and said so: the stall is over.
        w.stall_len_ns.store(7 * MS, Ordering::Relaxed);
        w.stall_end_ns.store(108 * MS, Ordering::Relaxed);
        w.seen_ns.store(108 * MS, Ordering::Relaxed);
        assert_eq!(w.stall(108 * MS + 1, MS, MS / 2), Some((108 * MS, 7 * MS)));
    }

    #[test]
    fn a_frozen_fast_path_is_covered_for_a_while_only() {
        let v = Vouch::default();
        v.progress_ns.store(100 * MS, Ordering::Relaxed);
        v.sent(100 * MS, 0, 0);
        assert!(v.claim(100 * MS + COVER_NS - 1, MS));
        assert!(!v.claim(100 * MS + COVER_NS + 10 * MS, MS));
    }

    #[test]
    fn after_a_silence_of_the_dead_interval_no_shadow_speaks() {
        // The whole process was stopped (SIGSTOP): nothing went out for 5 ms, the peers'
        // dead interval; on waking, a shadow must not send the old flags before the fast
        // path has given its VIPs back.
        let v = Vouch::default();
        v.dead_ns.store(5 * MS, Ordering::Relaxed);
        v.progress_ns.store(100 * MS, Ordering::Relaxed);
        v.sent(100 * MS, 0, 0);
        assert!(v.claim(104 * MS, MS));
        // (The claim moved the last send to 104 ms; say nothing went out after 100.)
        v.sent_ns.store(100 * MS, Ordering::Relaxed);
        assert!(!v.claim(105 * MS, MS));
    }
}
