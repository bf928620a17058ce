//! Deterministic simulation of the pool: the real state machine ([`crate::pool::decide`])
//! on N nodes, virtual time, a simulated link, and fault schedules drawn from a seed —
//! partitions of every shape, cuts past the forget time, loss, reordering, duplication,
//! crashes, graceful restarts, pauses, carrier and health flaps, refused adds, takeovers
//! blocked in the kernel, wall-clock steps, reloads of the weight — composed
//! freely. The invariants ([`check`]) are checked after every step; a failing seed replays
//! exactly and shrinks to the few faults that break it.
//!
//! Purpose-built rather than a framework's: the state machine is already pure behind
//! [`Edges`](crate::pool::decide::Edges), so a small event queue is the whole simulator;
//! `turmoil` or `madsim` simulate sockets and async runtimes the fast path does not use,
//! and a model checker (`stateright`) would explore the state machine's own state, which
//! is large (maps of peers and holdings), where random schedules over long virtual time
//! find what matters here: long and overlapping faults.

pub mod check;
pub mod faults;
pub mod rng;
pub mod world;

use check::{Bounds, Checker, Violation};
use faults::Fault;
use rng::Rng;
pub use world::LONGER_DEAD;
use world::{Params, World};

const MS: u64 = 1_000_000;

/// What a seed draws from.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes, at least and at most.
    pub nodes: (usize, usize),
    /// Faults per run, at least and at most.
    pub faults: (usize, usize),
    /// Virtual time the faults fall in (ms); the run goes on for the quiet time after.
    pub run_ms: u64,
    pub interval_ms: u64,
    pub dead_ms: u64,
    pub hold_down_ms: u64,
    /// Whether some seeds catch a rolling change of the dead interval halfway (some
    /// nodes on a longer one). Drawn from a stream of its own, so turning it off replays
    /// the schedules of the builds before it.
    pub rolling_dead: bool,
    /// Whether seeds also draw the later fault kinds (takeovers blocked in the kernel,
    /// clock steps, reloads): from a stream of their own, so turning it off replays the
    /// schedules of the builds before them.
    pub more_faults: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: (2, 7),
            faults: (1, 6),
            run_ms: 150_000,
            interval_ms: 50,
            dead_ms: 250,
            hold_down_ms: 1000,
            rolling_dead: true,
            more_faults: true,
        }
    }
}

/// One run: its cluster and schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub params: Params,
    pub faults: Vec<Fault>,
    pub run_ms: u64,
}

impl Scenario {
    /// The scenario seed `seed` draws.
    pub fn draw(seed: u64, o: &Options) -> Self {
        let mut rng = Rng::new(seed);
        let nodes = rng.range(o.nodes.0 as u64, o.nodes.1 as u64 + 1) as usize;
        let vips = rng.range(1, 2 * nodes as u64 + 2) as usize;
        let count = rng.range(o.faults.0 as u64, o.faults.1 as u64 + 1) as usize;
        let mut faults = faults::draw(&mut rng, nodes, count, o.run_ms);
        if o.more_faults {
            let mut more = Rng::new(seed ^ 0x005e_ed0f_fa17_0002);
            faults.extend(faults::draw_more(&mut more, nodes, o.run_ms));
            faults.sort_by_key(|f| f.start_ms);
        }
        // One seed in four: a rolling change of the dead interval, each node on the old
        // or the new one.
        let mut rolling = Rng::new(seed ^ 0x5eed_dead_1e55_0001);
        let longer_dead = if o.rolling_dead && rolling.chance(0.25) {
            (0..nodes).filter(|_| rolling.chance(0.5)).collect()
        } else {
            Vec::new()
        };
        Self {
            seed,
            params: Params {
                nodes,
                vips,
                interval_ms: o.interval_ms,
                dead_ms: o.dead_ms,
                hold_down_ms: o.hold_down_ms,
                longer_dead,
            },
            faults,
            run_ms: o.run_ms,
        }
    }

    /// Runs it: the faults, then everything healed and a quiet time.
    pub fn run(&self, trace: bool) -> Outcome {
        let bounds = Bounds::for_params(&self.params);
        let mut world = World::new(self.params.clone(), self.faults.clone(), self.seed);
        if trace {
            world.trace = Some(Vec::new());
        }
        let mut checker = Checker::new(bounds);
        let end = self.run_ms * MS;
        let mut result = world.run_until(end, |w| checker.check(w));
        if result.is_ok() {
            world.heal_all();
            result = world.run_until(end + bounds.quiet_ns, |w| checker.check(w));
        }
        if result.is_ok() {
            result = checker.converged(&world);
        }
        if result.is_err() {
            let described = world.describe();
            if let Some(t) = &mut world.trace {
                t.extend(described);
            }
        }
        Outcome {
            steps: world.steps,
            virtual_ns: world.now,
            violation: result.err(),
            trace: world.trace.take().unwrap_or_default(),
        }
    }

    /// The fewest of its faults, each as short as it can be, that still break an
    /// invariant (the scenario itself if it breaks none).
    pub fn shrink(&self) -> Self {
        let mut best = self.clone();
        if best.run(false).violation.is_none() {
            return best;
        }
        let mut changed = true;
        while changed {
            changed = false;
            for i in (0..best.faults.len()).rev() {
                let mut fewer = best.clone();
                fewer.faults.remove(i);
                if fewer.run(false).violation.is_some() {
                    best = fewer;
                    changed = true;
                }
            }
            for i in 0..best.faults.len() {
                let mut shorter = best.clone();
                shorter.faults[i].len_ms /= 2;
                if shorter.faults[i].len_ms >= 10 && shorter.run(false).violation.is_some() {
                    best = shorter;
                    changed = true;
                }
            }
        }
        best
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    /// Events handled.
    pub steps: u64,
    /// Virtual time at the end.
    pub virtual_ns: u64,
    pub violation: Option<Violation>,
    /// The notable moments, when traced.
    pub trace: Vec<String>,
}
