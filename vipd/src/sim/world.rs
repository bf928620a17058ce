//! The simulated cluster: nodes running the pool's real state machine ([`Decide`]), the
//! XDP program's real peer-table rule ([`peer::record`]) and the slow path's real
//! bookkeeping ([`Told`]), over a simulated link and a virtual clock. The loop of each
//! node's wake-up is the fast path's ([`crate::pool::fast`]): verdicts, commands, events,
//! deadlines, reconcile.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use vipd_common::{
    heartbeat::{FLAG_LEAVING, Heartbeat, State as WireState},
    maps::{EventKind, PeerState, XdpConfig, fenced},
    peer,
};

use super::{
    check::Violation,
    faults::{Fault, Kind},
    rng::Rng,
};
use crate::{
    config::{Config, File},
    fastpath::{
        STALL_NS,
        schedule::{Periodic, earliest},
    },
    holder::{Released, Taken},
    ifaddr::Outcome,
    incarnation,
    pool::{
        decide::{Decide, Edges, FULL_SCAN_NS, Outgoing},
        heartbeat_template,
        messages::{Command, Report},
        pool_digest,
        told::Told,
    },
    vip::Vip,
};

/// One-way delay of a frame on the simulated link.
const DELAY_NS: u64 = 100_000;
/// Datagrams and events a stopped process's socket and ring keep.
const BACKLOG: usize = 4096;
const MS: u64 = 1_000_000;
/// Events at one moment beyond which the nodes are busy-looping.
const STORM: u32 = 100_000;
/// Wake-ups of one node in 10 ms of virtual time beyond which it is busy-looping (it
/// wakes for each heartbeat heard, at most a few hundred).
const BUSY: u32 = 2_000;

/// The cluster's shape and timers.
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub vips: usize,
    pub interval_ms: u64,
    pub dead_ms: u64,
    pub hold_down_ms: u64,
    /// Nodes (indexes from 0) whose dead interval is [`LONGER_DEAD`] times `dead_ms`: a
    /// rolling change of the dead interval caught halfway.
    pub longer_dead: Vec<usize>,
}

/// The wall clock at virtual time 0 (ns since the epoch, in 2026).
const REALTIME_AT_0: u64 = 1_790_000_000_000_000_000;
/// A wall-clock step ([`Kind::ClockStep`]).
const CLOCK_STEP_NS: u64 = 3_600_000_000_000;

/// How much longer the dead interval of a node in [`Params::longer_dead`] is.
pub const LONGER_DEAD: u64 = 3;

impl Params {
    /// The dead interval of node `i` (index from 0), ms.
    pub fn dead_ms_of(&self, i: usize) -> u64 {
        if self.longer_dead.contains(&i) {
            self.dead_ms * LONGER_DEAD
        } else {
            self.dead_ms
        }
    }

    /// The longest dead interval of any node, ms.
    pub fn longest_dead_ms(&self) -> u64 {
        (0..self.nodes)
            .map(|i| self.dead_ms_of(i))
            .max()
            .unwrap_or(self.dead_ms)
    }

    /// The configuration of node `id` (1-based), with `weight`.
    pub fn config(&self, id: u32, weight: u16) -> Config {
        let vips: Vec<String> = (0..self.vips)
            .map(|i| {
                if i % 3 == 2 {
                    format!("\"2001:db8::{:x}\"", 0x201 + i)
                } else {
                    format!("\"192.0.2.{}\"", 201 + i)
                }
            })
            .collect();
        let text = format!(
            "[node]\nid = {id}\ninterface = \"sim0\"\nweight = {weight}\n\
             [heartbeat]\ninterval = \"{}ms\"\ndead_interval = \"{}ms\"\nhold_down = \"{}ms\"\nauth = \"off\"\n\
             [pool]\nvips = [{}]\n",
            self.interval_ms,
            self.dead_ms_of(id as usize - 1),
            self.hold_down_ms,
            vips.join(", ")
        );
        let file = File::parse(&text).expect("the simulator's config parses");
        Config::from_file(file).expect("the simulator's config is valid")
    }
}

/// The daemon on a node, while it runs.
struct Proc {
    decide: Decide,
    told: Told,
    incarnation: u64,
    send: Periodic,
    /// What the slow path asked, not yet served.
    commands: Vec<Command>,
    /// What the XDP program reported, not yet read.
    events: Vec<(Option<EventKind>, u32)>,
    /// State sections waiting in the socket (while the process is stopped).
    sections: Vec<(Heartbeat, Vec<u8>)>,
    /// The wake-up it asked for.
    asked: Option<u64>,
    /// Heartbeats decided in the turn an address add blocked, sent when it returns.
    blocked_out: Vec<Outgoing>,
}

/// One simulated node: its kernel (peer table, addresses, fence clock) and its daemon.
struct Node {
    id: u32,
    cfg: Config,
    pool: Vec<IpAddr>,
    proc: Option<Proc>,
    /// The XDP program's peer table.
    table: BTreeMap<u32, PeerState>,
    /// The VIPs on the interface.
    addrs: BTreeSet<IpAddr>,
    /// The self-fencing clock: the last heartbeat sent.
    fence_ns: u64,
    sequence: u64,
    /// The last incarnation used (kept on disk, as `incarnation::next` does).
    incarnation: Option<u64>,
    /// Its wall clock minus virtual time (ns; stepped by [`Kind::ClockStep`]).
    clock_offset: i64,
    /// Until when its daemon is stuck in an address add ([`Kind::SlowAdd`]), the
    /// addresses the call adds when it returns, and those it removes then (decided in the
    /// same turn).
    blocked_until: u64,
    added_after_block: Vec<IpAddr>,
    removed_after_block: Vec<IpAddr>,
    /// Bumped on each wake-up scheduled, so older ones are void.
    wake_gen: u64,
    /// Wake-ups in the current 10 ms of virtual time, and when those began.
    wakes: (u64, u32),
}

impl Node {
    /// Its daemon is no longer stuck in an add (it was killed or stopped: what it was
    /// still to do is not done).
    fn unblock(&mut self) {
        self.blocked_until = 0;
        self.added_after_block.clear();
        self.removed_after_block.clear();
    }
}

/// Something that happens at a moment of virtual time.
enum Event {
    Deliver {
        to: usize,
        hb: Heartbeat,
        section: Vec<u8>,
    },
    Wake {
        node: usize,
        generation: u64,
    },
    /// Fault `i` starts (true) or ends.
    Fault(usize, bool),
    /// Node `i`'s daemon is started for the first time.
    Start(usize),
}

/// What a node's kernel and daemon see of the faults on at some moment.
#[derive(Clone, Copy, Default)]
pub struct Health {
    pub carrier: bool,
    pub running: bool,
    pub paused: bool,
    pub healthy: bool,
    pub add_fails: bool,
    /// Until when an address add blocks ([`Kind::SlowAdd`]).
    pub slow_add: Option<u64>,
    pub isolated: bool,
}

/// The simulated cluster.
pub struct World {
    pub params: Params,
    pub now: u64,
    nodes: Vec<Node>,
    faults: Vec<Fault>,
    /// The faults on now.
    on: Vec<bool>,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    rng: Rng,
    /// When the faults last changed (a start or an end).
    pub last_change: u64,
    /// Events handled.
    pub steps: u64,
    /// A line per notable moment, when tracing.
    pub trace: Option<Vec<String>>,
}

impl World {
    /// `params.nodes` nodes started at time 0, with `faults` to come; `seed` draws losses
    /// and delays.
    pub fn new(params: Params, faults: Vec<Fault>, seed: u64) -> Self {
        let nodes = (1..=params.nodes as u32)
            .map(|id| {
                let cfg = params.config(id, 1);
                let mut pool: Vec<IpAddr> = cfg.pool.vips.iter().map(|v| v.addr).collect();
                pool.sort();
                Node {
                    id,
                    cfg,
                    pool,
                    proc: None,
                    table: BTreeMap::new(),
                    addrs: BTreeSet::new(),
                    fence_ns: 0,
                    sequence: 0,
                    incarnation: None,
                    clock_offset: 0,
                    blocked_until: 0,
                    added_after_block: Vec::new(),
                    removed_after_block: Vec::new(),
                    wake_gen: 0,
                    wakes: (0, 0),
                }
            })
            .collect();
        let on = vec![false; faults.len()];
        let mut world = Self {
            params,
            now: 0,
            nodes,
            faults,
            on,
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed ^ 0x5eed),
            last_change: 0,
            steps: 0,
            trace: None,
        };
        for i in 0..world.faults.len() {
            let f = world.faults[i];
            world.push(f.start_ms * MS, Event::Fault(i, true));
            world.push((f.start_ms + f.len_ms) * MS, Event::Fault(i, false));
        }
        for i in 0..world.nodes.len() {
            // Started a little apart, as nodes are.
            let at = world.rng.range(0, 50) * MS;
            world.push(at, Event::Start(i));
        }
        world
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>10.3}s {}", self.now as f64 / 1e9, line()));
        }
    }

    /// The faults' effect on node `i` now.
    pub fn health(&self, i: usize) -> Health {
        let mut h = Health {
            carrier: true,
            running: self.nodes[i].proc.is_some(),
            // A daemon stuck in an add is as stopped as a paused one.
            paused: self.now < self.nodes[i].blocked_until,
            healthy: true,
            ..Health::default()
        };
        for (f, on) in self.faults.iter().zip(&self.on) {
            if !on {
                continue;
            }
            match f.kind {
                Kind::Carrier { a } if a == i => h.carrier = false,
                Kind::Pause { a } if a == i => h.paused = true,
                Kind::Unhealthy { a } if a == i => h.healthy = false,
                Kind::AddFails { a } if a == i => h.add_fails = true,
                Kind::SlowAdd { a } if a == i => {
                    let end = (f.start_ms + f.len_ms) * MS;
                    h.slow_add = h.slow_add.max(Some(end));
                }
                Kind::Isolate { a } if a == i => h.isolated = true,
                _ => {}
            }
        }
        h
    }

    /// Whether a frame from `a` to `b` is dropped for good now, and the loss ratio and
    /// jitter of the link otherwise.
    fn link(&self, a: usize, b: usize) -> Option<(f64, u64)> {
        let (ha, hb) = (self.health(a), self.health(b));
        if !ha.carrier || !hb.carrier || ha.isolated || hb.isolated {
            return None;
        }
        let (mut loss, mut jitter) = (0.0, 0);
        for (f, on) in self.faults.iter().zip(&self.on) {
            if !on {
                continue;
            }
            match f.kind {
                Kind::Cut { a: x, b: y } if (x, y) == (a, b) || (x, y) == (b, a) => return None,
                Kind::OneWay { from, to } if (from, to) == (a, b) => return None,
                Kind::Lossy {
                    a: x,
                    b: y,
                    percent,
                    jitter_us,
                } if (x, y) == (a, b) || (x, y) == (b, a) => {
                    loss = f64::from(percent) / 100.0;
                    jitter = u64::from(jitter_us) * 1000;
                }
                _ => {}
            }
        }
        Some((loss, jitter))
    }

    /// Whether node `b` counts on node `a`'s heartbeats now: `a` is in its view and `b`
    /// heard the last heartbeat `a` sent. (Not so, its silence toward `b` began before
    /// any pause of `a` — lost frames, a cut — or `b` never took `a`'s claims into
    /// account: an unverified peer's claims do not count, so a recording cannot hold a VIP.)
    pub fn counts_on(&self, b: usize, a: usize) -> bool {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        a != b
            && na.fence_ns > 0
            && nb.proc.as_ref().is_some_and(|p| p.decide.in_view(na.id))
            && nb
                .table
                .get(&na.id)
                .is_some_and(|s| s.last_seen_ns >= na.fence_ns)
    }

    /// Whether `a` and `b` hear each other cleanly now (both ways, no loss): where two
    /// owners of a VIP are a fault.
    pub fn hear_each_other(&self, a: usize, b: usize) -> bool {
        let up = |i: usize| {
            let h = self.health(i);
            h.running && !h.paused
        };
        up(a)
            && up(b)
            && matches!(self.link(a, b), Some((l, _)) if l == 0.0)
            && matches!(self.link(b, a), Some((l, _)) if l == 0.0)
    }

    /// Whether `a` is paused (its daemon stopped, its kernel running) and `b` runs, on a
    /// link that works both ways: a client there sees both answer if both do.
    pub fn paused_beside(&self, a: usize, b: usize) -> bool {
        let (ha, hb) = (self.health(a), self.health(b));
        ha.running
            && ha.paused
            && hb.running
            && !hb.paused
            && matches!(self.link(a, b), Some((l, _)) if l == 0.0)
            && matches!(self.link(b, a), Some((l, _)) if l == 0.0)
    }

    /// Whether node `i` answers for `vip` now: the address is on its interface, it has
    /// carrier, and its XDP program does not fence it.
    pub fn answers(&self, i: usize, vip: &IpAddr) -> bool {
        let n = &self.nodes[i];
        n.addrs.contains(vip)
            && self.health(i).carrier
            && !fenced(
                fence_deadline(n.fence_ns, self.params.dead_ms_of(i) * MS),
                self.now,
            )
    }

    /// Each node as its status shows it (what it holds, its view, who it thinks owns each
    /// VIP), for a failing run's report.
    pub fn describe(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let h = self.health(i);
                let status = n.proc.as_ref().map(|p| p.decide.status(self.now));
                let mut owners: Vec<String> = status
                    .iter()
                    .flat_map(|s| &s.vips)
                    .map(|v| format!("{}->{:?}", v.vip, v.owner))
                    .collect();
                owners.extend(
                    status
                        .iter()
                        .flat_map(|s| &s.peers)
                        .map(|p| format!("peer {}: {} in_view {}", p.id, p.state, p.in_view)),
                );
                format!(
                    "n{}: flags {:?} running {} paused {} carrier {} addrs {:?} fenced {} state {:?} view {:?} owners {:?}",
                    n.id,
                    n.proc.as_ref().map(|p| p.decide.flags()),
                    h.running,
                    h.paused,
                    h.carrier,
                    n.addrs,
                    fenced(fence_deadline(n.fence_ns, self.params.dead_ms_of(i) * MS), self.now),
                    status.as_ref().map(|s| s.state.clone()),
                    status.as_ref().map(|s| s.view.clone()),
                    owners
                )
            })
            .collect()
    }

    /// The pool (the same on every node).
    pub fn pool(&self) -> &[IpAddr] {
        &self.nodes[0].pool
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> u32 {
        self.nodes[i].id
    }

    /// The nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Ends every fault now (the network heals, stopped daemons start again).
    pub fn heal_all(&mut self) {
        for i in 0..self.faults.len() {
            if self.on[i] {
                self.fault(i, false);
            }
            let end = self.faults[i].start_ms + self.faults[i].len_ms;
            if end * MS > self.now {
                // Not to come any more.
                self.faults[i].len_ms = (self.now / MS).saturating_sub(self.faults[i].start_ms);
            }
        }
        self.queue.retain(|_, e| !matches!(e, Event::Fault(..)));
        for i in 0..self.nodes.len() {
            if self.nodes[i].proc.is_none() {
                self.start(i);
            }
        }
    }

    /// Handles the events up to `until` (ns), calling `check` after each that changed
    /// something a node holds or hears. Stops at the first `Err` of `check`.
    pub fn run_until(
        &mut self,
        until: u64,
        mut check: impl FnMut(&World) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        let mut same_time = 0u32;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            same_time = if at == self.now { same_time + 1 } else { 0 };
            if same_time > STORM {
                return Err(Violation {
                    at_ns: at,
                    what: format!("{STORM} events without time passing (a busy loop)"),
                });
            }
            self.now = at;
            self.steps += 1;
            match ev {
                Event::Deliver { to, hb, section } => self.deliver(to, hb, section),
                Event::Wake { node, generation } => {
                    if self.nodes[node].wake_gen == generation {
                        self.busy(node)?;
                        self.wake(node);
                        check(self)?;
                    }
                }
                Event::Fault(i, start) => {
                    self.fault(i, start);
                    check(self)?;
                }
                Event::Start(i) => {
                    if self.nodes[i].proc.is_none() {
                        self.start(i);
                    }
                }
            }
        }
        self.now = until;
        check(self)
    }

    /// Counts a wake-up of node `i`: more than [`BUSY`] in 10 ms of virtual time is a
    /// loop that never sleeps (a timer in the past), which would spin a real-time thread.
    fn busy(&mut self, i: usize) -> Result<(), Violation> {
        let (since, count) = &mut self.nodes[i].wakes;
        if self.now.saturating_sub(*since) >= 10 * MS {
            (*since, *count) = (self.now, 0);
        }
        *count += 1;
        if *count > BUSY {
            return Err(Violation {
                at_ns: self.now,
                what: format!("n{} woke {BUSY} times in 10 ms (a busy loop)", i + 1),
            });
        }
        Ok(())
    }

    /// Fault `i` starts or ends.
    fn fault(&mut self, i: usize, start: bool) {
        self.on[i] = start;
        self.last_change = self.now;
        let f = self.faults[i];
        self.note(|| format!("{} {:?}", if start { "start" } else { "end  " }, f.kind));
        let node = match f.kind {
            Kind::Crash { a } | Kind::Stop { a } | Kind::Pause { a } => a,
            Kind::Carrier { a } | Kind::Unhealthy { a } | Kind::AddFails { a } => a,
            Kind::Isolate { a } | Kind::SlowAdd { a } => a,
            Kind::ClockStep { a, .. } | Kind::Reload { a, .. } => a,
            Kind::Cut { .. } | Kind::OneWay { .. } | Kind::Lossy { .. } => return,
        };
        match (f.kind, start) {
            (Kind::Crash { .. }, true) => {
                self.nodes[node].proc = None;
                self.nodes[node].unblock();
            }
            (Kind::Stop { .. }, true) => self.stop(node),
            (Kind::ClockStep { back, .. }, true) => {
                let step = CLOCK_STEP_NS as i64;
                self.nodes[node].clock_offset += if back { -step } else { step };
            }
            // A restart under the stepped clock (it is never stepped back: NTP slews).
            (Kind::ClockStep { .. }, false) if self.nodes[node].proc.is_some() => {
                self.stop(node);
                self.start(node);
            }
            (Kind::Reload { .. }, _) => self.reload(node),
            // A blocked add returns when the fault ends (or when the healing does).
            (Kind::SlowAdd { .. }, false) => {
                let until = self.health(node).slow_add.unwrap_or(self.now);
                let n = &mut self.nodes[node];
                n.blocked_until = n.blocked_until.min(until.max(self.now));
            }
            // Another fault may have started it already (or keep it stopped).
            (Kind::Crash { .. } | Kind::Stop { .. }, false)
                if self.nodes[node].proc.is_none() && !self.stopped_by_another(node, i) =>
            {
                self.start(node);
            }
            _ => {}
        }
        // The verdicts changed, or it woke up: it runs now.
        self.schedule(node, self.now);
    }

    /// Gives node `i` the weight its reload faults on now say (the largest; 1 without
    /// any), as a reload of its configuration, if that changes it.
    fn reload(&mut self, i: usize) {
        let weight = self
            .faults
            .iter()
            .zip(&self.on)
            .filter_map(|(f, on)| match f.kind {
                Kind::Reload { a, weight } if *on && a == i => Some(weight),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        let n = &mut self.nodes[i];
        if n.cfg.pool.weight == weight {
            return;
        }
        n.cfg = self.params.config(n.id, weight);
        if let Some(p) = &mut n.proc {
            p.commands.push(Command::Reload(Box::new(n.cfg.clone())));
        }
        let (id, now) = (n.id, self.now);
        if let Some(t) = &mut self.trace {
            t.push(format!(
                "{:>10.3}s n{id} reloaded, weight {weight}",
                now as f64 / 1e9
            ));
        }
    }

    /// Whether another crash or stop fault still keeps node `a` down.
    fn stopped_by_another(&self, a: usize, except: usize) -> bool {
        self.faults
            .iter()
            .zip(&self.on)
            .enumerate()
            .any(|(j, (f, on))| {
                *on && j != except
                    && matches!(f.kind, Kind::Crash { a: x } | Kind::Stop { a: x } if x == a)
            })
    }

    /// Starts the daemon on node `i` (a new incarnation): a restart first removes what a
    /// crashed run left on the interface.
    fn start(&mut self, i: usize) {
        let now = self.now;
        let h = self.health(i);
        let n = &mut self.nodes[i];
        let realtime = (REALTIME_AT_0 + now).saturating_add_signed(n.clock_offset);
        let incarnation = incarnation::choose(realtime, n.incarnation);
        n.incarnation = Some(incarnation);
        n.unblock();
        n.addrs.clear();
        n.table.clear();
        n.sequence = 0;
        let interval = n.cfg.pool.interval.as_nanos() as u64;
        n.proc = Some(Proc {
            decide: Decide::new(n.cfg.clone(), now, h.carrier, h.healthy),
            told: Told::default(),
            incarnation,
            send: Periodic::new(now, interval),
            commands: Vec::new(),
            events: Vec::new(),
            sections: Vec::new(),
            asked: None,
            blocked_out: Vec::new(),
        });
        let id = n.id;
        self.note(|| format!("n{id} starts"));
        self.schedule(i, now);
    }

    /// A graceful stop of node `i`'s daemon: LEAVING, then every VIP released.
    fn stop(&mut self, i: usize) {
        self.nodes[i].unblock();
        let Some(mut p) = self.nodes[i].proc.take() else {
            return;
        };
        let leaving = Outgoing {
            flags: FLAG_LEAVING,
            view_digest: p.decide.view_digest(),
            ..Outgoing::default()
        };
        for _ in 0..3 {
            self.broadcast(i, p.incarnation, &leaving);
        }
        let (mut out, mut reports) = (Vec::new(), Vec::new());
        let h = self.health(i);
        let now = self.now;
        let n = &mut self.nodes[i];
        let mut fx = Fx {
            now,
            node: n,
            send: &mut p.send,
            out: &mut out,
            reports: &mut reports,
            add_fails: h.add_fails,
            slow_add: None,
        };
        p.decide.release_all(&mut fx);
    }

    /// Wakes node `i`'s daemon at `at` (earlier than its timer: an event, a command),
    /// replacing the wake-up scheduled before; its timer stays what it asked.
    fn schedule(&mut self, i: usize, at: u64) {
        let n = &mut self.nodes[i];
        n.wake_gen += 1;
        let generation = n.wake_gen;
        self.push(
            at,
            Event::Wake {
                node: i,
                generation,
            },
        );
    }

    /// Sends `hb` from node `i` to every other node its link reaches.
    fn broadcast(&mut self, i: usize, incarnation: u64, out: &Outgoing) {
        self.nodes[i].sequence += 1;
        let n = &self.nodes[i];
        let hb = Heartbeat {
            flags: out.flags,
            sequence: n.sequence,
            state_len: out.section.len() as u16,
            view_digest: out.view_digest,
            hears: out.hears,
            ..heartbeat_template(&n.cfg, incarnation)
        };
        for to in 0..self.nodes.len() {
            if to == i {
                continue;
            }
            let Some((loss, jitter)) = self.link(i, to) else {
                continue;
            };
            if loss > 0.0 && self.rng.chance(loss) {
                continue;
            }
            let copies = if loss > 0.0 && self.rng.chance(loss / 4.0) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + DELAY_NS + self.rng.range(0, jitter.max(1));
                let section = out.section.clone();
                self.push(at, Event::Deliver { to, hb, section });
            }
        }
    }

    /// A heartbeat reaches node `to`: its XDP program records it; a state section goes up
    /// to the slow path.
    fn deliver(&mut self, to: usize, hb: Heartbeat, section: Vec<u8>) {
        let h = self.health(to);
        if !h.carrier || h.isolated {
            return;
        }
        let now = self.now;
        let n = &mut self.nodes[to];
        let config = XdpConfig {
            cluster_id: 1,
            node_id: n.id,
            dead_ns: n.cfg.pool.dead_interval.as_nanos() as u64,
            // As by default: an earlier incarnation or sequence is a replay, refused (the
            // signatures themselves are not simulated).
            auth: 1,
            ..XdpConfig::default()
        };
        let mac = [2, 0, 0, 0, 0, hb.node_id as u8];
        let Ok((state, kind)) = peer::record(n.table.get(&hb.node_id), &hb, mac, now, &config)
        else {
            return;
        };
        n.table.insert(hb.node_id, state);
        let Some(p) = &mut n.proc else {
            return;
        };
        let mut wake = false;
        if let Some(kind) = kind
            && p.events.len() < BACKLOG
        {
            p.events.push((Some(kind), hb.node_id));
            wake = true;
        }
        if !section.is_empty() && p.sections.len() < BACKLOG {
            p.sections.push((hb, section));
            wake = true;
        }
        if wake && !h.paused {
            self.schedule(to, now);
        }
    }

    /// Node `i`'s daemon wakes: its slow path reads the waiting state sections, then its
    /// fast path runs one turn of its loop.
    fn wake(&mut self, i: usize) {
        let h = self.health(i);
        let now = self.now;
        if h.paused {
            let until = self.nodes[i].blocked_until;
            if until > now {
                // Stuck in an add: it runs again when the call returns.
                self.schedule(i, until);
            }
            return;
        }
        self.unblocked(i);
        let n = &mut self.nodes[i];
        let Some(mut p) = n.proc.take() else {
            return;
        };
        // The slow path: verified peers and holdings, told once (as `pool::slow` does).
        for (hb, section) in std::mem::take(&mut p.sections) {
            read_section(&*n, &mut p, &hb, &section);
        }
        let (mut out, mut reports) = (Vec::new(), Vec::new());
        let d = &mut p.decide;
        let late = p.asked.map_or(0, |a| now.saturating_sub(a));
        let mut fx = Fx {
            now,
            node: n,
            send: &mut p.send,
            out: &mut out,
            reports: &mut reports,
            add_fails: h.add_fails,
            slow_add: h.slow_add,
        };
        if late > STALL_NS {
            // Woken late (or back from an add that blocked): as the fast path's own
            // stall, excused.
            d.excuse_stall(0, now, late);
        }
        d.yield_after_silence(&mut fx);
        d.send_if_due(&mut fx);
        let (sent_before, fence_before) = (fx.out.len(), fx.node.fence_ns);
        let events = std::mem::take(&mut p.events);
        let timer = d.turn(
            &mut fx,
            h.carrier,
            h.healthy,
            std::mem::take(&mut p.commands),
            &events,
        );
        let next = earliest([Some(fx.send.next()), timer]);
        let blocked = fx.node.blocked_until;
        if blocked > now {
            // An add blocked in this turn: what the turn sent after it goes out when the
            // call returns — unless that is a dead interval after the last heartbeat, as
            // the fast path's keepalive rule and `yield_after_silence` hold it back.
            let after = fx.out.split_off(sent_before);
            fx.node.fence_ns = fence_before;
            let dead = fx.node.cfg.pool.dead_interval.as_nanos() as u64;
            if blocked.saturating_sub(fence_before) < dead {
                p.blocked_out = after;
            }
        }
        for r in reports {
            match r {
                Report::Forgotten(ids) => {
                    for id in ids {
                        p.told.forget(id);
                    }
                }
                Report::Taken(t) => {
                    let id = n.id;
                    let list: Vec<String> = t.iter().map(|t| t.vip.to_string()).collect();
                    if let Some(tr) = &mut self.trace {
                        tr.push(format!("{:>10.3}s n{id} takes {list:?}", now as f64 / 1e9));
                    }
                }
                Report::Released(r) => {
                    let id = n.id;
                    let list: Vec<String> = r.iter().map(|r| r.vip.to_string()).collect();
                    if let Some(tr) = &mut self.trace {
                        tr.push(format!(
                            "{:>10.3}s n{id} releases {list:?}",
                            now as f64 / 1e9
                        ));
                    }
                }
                Report::Transition { transition, .. } => {
                    let id = n.id;
                    if let Some(tr) = &mut self.trace {
                        tr.push(format!("{:>10.3}s n{id} {transition:?}", now as f64 / 1e9));
                    }
                }
                _ => {}
            }
        }
        if blocked > now {
            let id = n.id;
            self.note(|| format!("n{id} blocked in an add until {:.3}s", blocked as f64 / 1e9));
        }
        let incarnation = p.incarnation;
        let next = next.unwrap_or(now + FULL_SCAN_NS).max(now + 1);
        p.asked = Some(next);
        self.nodes[i].proc = Some(p);
        for hb in out {
            self.broadcast(i, incarnation, &hb);
        }
        self.schedule(i, next.max(blocked));
    }

    /// Node `i`'s daemon is back from an add that blocked: the addresses it removed and
    /// the heartbeats it sent after the add, in that turn, take effect now.
    fn unblocked(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.blocked_until == 0 {
            return;
        }
        n.blocked_until = 0;
        let id = n.id;
        if let Some(t) = &mut self.trace {
            t.push(format!(
                "{:>10.3}s n{id} back from the add",
                self.now as f64 / 1e9
            ));
        }
        let n = &mut self.nodes[i];
        n.addrs.extend(std::mem::take(&mut n.added_after_block));
        for v in std::mem::take(&mut n.removed_after_block) {
            n.addrs.remove(&v);
        }
        let Some(p) = &mut n.proc else {
            return;
        };
        let (out, incarnation) = (std::mem::take(&mut p.blocked_out), p.incarnation);
        if !out.is_empty() {
            n.fence_ns = self.now;
        }
        for hb in out {
            self.broadcast(i, incarnation, &hb);
        }
    }
}

/// The slow path's reading of a state section (one VIP list in the simulator): a peer
/// that echoes this daemon's incarnation is verified, what it holds is passed on.
fn read_section(n: &Node, p: &mut Proc, hb: &Heartbeat, section: &[u8]) {
    if n.table.get(&hb.node_id).map(|s| s.incarnation) != Some(hb.incarnation) {
        return;
    }
    let Ok(state) = WireState::parse(section) else {
        return;
    };
    if state.pool_digest != pool_digest(&n.cfg.pool.vips) {
        return;
    }
    if state.echoes_for(n.id, p.incarnation)
        && let Some(c) = p.told.verify(hb.node_id, hb.incarnation)
    {
        p.commands.push(c);
        p.told.verified(hb.node_id, hb.incarnation);
    }
    if usize::from(state.vip_count) != n.pool.len() {
        return;
    }
    let vips: BTreeSet<IpAddr> = n
        .pool
        .iter()
        .enumerate()
        .filter(|(i, _)| state.holds(*i))
        .map(|(_, v)| *v)
        .collect();
    if let Some(c) = p.told.holdings(hb.node_id, hb.incarnation, &vips) {
        p.commands.push(c);
        p.told.held(hb.node_id, hb.incarnation, vips);
    }
}

/// [`Edges`] over a simulated node.
struct Fx<'a> {
    now: u64,
    node: &'a mut Node,
    send: &'a mut Periodic,
    out: &'a mut Vec<Outgoing>,
    reports: &'a mut Vec<Report>,
    add_fails: bool,
    /// Until when an add blocks, if it does.
    slow_add: Option<u64>,
}

impl Edges for Fx<'_> {
    fn now(&self) -> u64 {
        self.now
    }

    fn peer(&self, id: u32) -> Option<PeerState> {
        self.node.table.get(&id).copied()
    }

    fn peer_ids(&self) -> Vec<u32> {
        self.node.table.keys().copied().collect()
    }

    fn heartbeat_due(&mut self) -> bool {
        if !self.send.due(self.now) {
            return false;
        }
        self.send.advance(self.now);
        true
    }

    fn send(&mut self, hb: &Outgoing) -> Result<(), String> {
        self.out.push(hb.clone());
        self.node.fence_ns = self.now;
        Ok(())
    }

    fn last_sent(&self) -> u64 {
        self.node.fence_ns
    }

    fn add(
        &mut self,
        vips: &[Vip],
        _keepalive: &Outgoing,
        loss_ns: Option<u64>,
    ) -> (Vec<Taken>, Vec<(Vip, String)>) {
        if self.add_fails {
            let failed = vips.iter().map(|v| (*v, "refused (simulated)".into()));
            return (Vec::new(), failed.collect());
        }
        if let Some(until) = self.slow_add.filter(|t| *t > self.now) {
            // The call blocks (waiting for the kernel, as `fault::stall_before_adding`
            // does): the addresses come when it returns.
            self.node.blocked_until = self.node.blocked_until.max(until);
        }
        let blocked = self.node.blocked_until > self.now;
        let taken = vips
            .iter()
            .map(|v| Taken {
                vip: *v,
                added_ns: self.now,
                already_present: if blocked {
                    self.node.added_after_block.push(v.addr);
                    self.node.addrs.contains(&v.addr)
                } else {
                    !self.node.addrs.insert(v.addr)
                },
                first_announce_ns: Some(self.now),
                loss_ns,
            })
            .collect();
        (taken, Vec::new())
    }

    fn remove(&mut self, vips: &[(Vip, Option<u32>)]) -> Vec<Released> {
        let blocked = self.node.blocked_until > self.now;
        vips.iter()
            .map(|(v, to)| Released {
                vip: *v,
                new_owner: *to,
                outcome: if !self.node.addrs.contains(&v.addr)
                    && !self.node.added_after_block.contains(&v.addr)
                {
                    Outcome::Unchanged
                } else if blocked {
                    // Decided after an add that blocked: done when it returns.
                    self.node.removed_after_block.push(v.addr);
                    Outcome::Done
                } else {
                    self.node.addrs.remove(&v.addr);
                    Outcome::Done
                },
            })
            .collect()
    }

    fn announce(&mut self, _addrs: &[IpAddr]) {}

    fn reconfigure(&mut self, _old: &Config, _new: &Config) {}

    fn report(&mut self, report: Report) {
        self.reports.push(report);
    }
}

/// The XDP program's fencing deadline for a node whose last heartbeat went out at `last`
/// (0: none yet, never fenced).
fn fence_deadline(last: u64, dead_ns: u64) -> u64 {
    if last == 0 { 0 } else { last + dead_ns }
}
