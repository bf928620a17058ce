//! Fault schedules: drawn from a seed, composed freely (they overlap as their times fall),
//! and small enough to print and shrink.

use std::fmt;

use super::rng::Rng;

/// What goes wrong, and to whom (node indexes from 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Frames between `a` and `b` are dropped, both ways (the others still hear both).
    Cut { a: usize, b: usize },
    /// Frames from `from` to `to` are dropped; the other way works.
    OneWay { from: usize, to: usize },
    /// `a` hears nobody and nobody hears it, though its link has carrier (a switch fault).
    Isolate { a: usize },
    /// `a`'s cable is pulled: no carrier, nothing in or out.
    Carrier { a: usize },
    /// `a`'s daemon is killed (SIGKILL: its addresses stay, its XDP program fences them);
    /// it is started again when the fault ends.
    Crash { a: usize },
    /// `a`'s daemon is stopped (SIGTERM: LEAVING, everything released) and started again
    /// when the fault ends.
    Stop { a: usize },
    /// `a`'s daemon does not run (SIGSTOP, a hung thread); its kernel does.
    Pause { a: usize },
    /// `a`'s health checks fail.
    Unhealthy { a: usize },
    /// `a`'s kernel refuses to add addresses.
    AddFails { a: usize },
    /// An address add on `a` blocks until the fault ends (a netlink call that hangs): its
    /// daemon is stuck in the middle of a takeover, its kernel and XDP program run.
    SlowAdd { a: usize },
    /// `a`'s wall clock is stepped an hour back (or forward), and its daemon restarted
    /// when the fault ends, under the stepped clock.
    ClockStep { a: usize, back: bool },
    /// `a`'s configuration is reloaded with this weight, and back when the fault ends.
    Reload { a: usize, weight: u16 },
    /// Frames between `a` and `b` are lost with probability `percent` / 100, delayed by up
    /// to `jitter_us` more (reordered), and duplicated with the same probability.
    Lossy {
        a: usize,
        b: usize,
        percent: u8,
        jitter_us: u32,
    },
}

/// One fault: what, from when, for how long (virtual ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: Kind,
    pub start_ms: u64,
    pub len_ms: u64,
}

impl Fault {
    /// Whether the fault is on at `ms`.
    pub fn on(&self, ms: u64) -> bool {
        ms >= self.start_ms && ms < self.start_ms + self.len_ms
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.3}s +{:>8.3}s  {:?}",
            self.start_ms as f64 / 1e3,
            self.len_ms as f64 / 1e3,
            self.kind
        )
    }
}

/// Draws `count` faults over `run_ms` on `nodes` nodes. Lengths are short (a few dead
/// intervals), medium (seconds) or long (past the 60 s after which a silent peer is
/// forgotten), so faults overlap and outlast every timer.
pub fn draw(rng: &mut Rng, nodes: usize, count: usize, run_ms: u64) -> Vec<Fault> {
    let mut faults = Vec::with_capacity(count);
    for _ in 0..count {
        let a = rng.range(0, nodes as u64) as usize;
        let mut b = rng.range(0, nodes as u64 - 1) as usize;
        if b >= a {
            b += 1;
        }
        let kind = match rng.range(0, 11) {
            0 | 1 => Kind::Cut { a, b },
            2 => Kind::OneWay { from: a, to: b },
            3 => Kind::Isolate { a },
            4 => Kind::Carrier { a },
            5 => Kind::Crash { a },
            6 => Kind::Stop { a },
            7 => Kind::Pause { a },
            8 => Kind::Unhealthy { a },
            9 => Kind::AddFails { a },
            _ => Kind::Lossy {
                a,
                b,
                percent: rng.pick(&[5, 20, 50, 90]),
                jitter_us: rng.pick(&[0, 500, 5_000, 50_000]) as u32,
            },
        };
        faults.push(when(rng, kind, run_ms));
    }
    faults.sort_by_key(|f| f.start_ms);
    faults
}

/// Draws up to two faults of the kinds added after [`draw`]'s (a takeover blocked in the
/// kernel, a clock step, a reload), from a stream of their own: the schedules [`draw`]
/// made before them stay as they were.
pub fn draw_more(rng: &mut Rng, nodes: usize, run_ms: u64) -> Vec<Fault> {
    let count = rng.range(0, 3);
    (0..count)
        .map(|_| {
            let a = rng.range(0, nodes as u64) as usize;
            let kind = match rng.range(0, 4) {
                0 | 1 => Kind::SlowAdd { a },
                2 => Kind::ClockStep {
                    a,
                    back: rng.chance(0.5),
                },
                _ => Kind::Reload {
                    a,
                    weight: rng.range(2, 4) as u16,
                },
            };
            when(rng, kind, run_ms)
        })
        .collect()
}

/// `kind` over a drawn time: short (a few dead intervals), medium (seconds) or long (past
/// the forget time).
fn when(rng: &mut Rng, kind: Kind, run_ms: u64) -> Fault {
    let len_ms = match rng.range(0, 10) {
        0..=3 => rng.range(10, 2_000),
        4..=7 => rng.range(2_000, 30_000),
        _ => rng.range(60_000, 130_000),
    };
    let start_ms = rng.range(2_000, run_ms.saturating_sub(len_ms / 2).max(2_001));
    Fault {
        kind,
        start_ms,
        len_ms,
    }
}
