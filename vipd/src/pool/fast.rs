//! The pool's fast path: the loop on the real-time thread that sends this node's
//! heartbeats on their absolute schedule and wakes for deadlines, events and commands.
//! What to do is [`Decide`]'s (pure); this file is its I/O: the XDP maps, the heartbeat
//! sockets, rtnetlink and the announcer behind [`Edges`], on this thread, synchronously.
//!
//! Every wake-up serves the heartbeat first, then the slow path's latest carrier and
//! health verdicts, then a bounded number of commands and XDP events, then deadlines.
//! Nothing here waits on the slow path: reports go out with `try_send`.

use std::{
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{Arc, atomic::Ordering},
};

use aya::maps::{Array, HashMap, MapData, RingBuf};
use vipd_common::{
    heartbeat::FLAG_LEAVING,
    maps::{EventKind, FENCE_POOL, PeerEvent, PeerState},
};

use super::{
    decide::{Decide, Edges, Outgoing, Scan},
    messages::{Command, Report, Verdicts},
};
use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    config::Config,
    fastpath::{
        STALL_NS,
        channel::FastEnd,
        schedule::{Periodic, earliest},
        shadow::{self, Vouch},
    },
    heartbeat::Heartbeats,
    holder::{self, Released, Taken},
    ifaddr::IfAddrs,
    vip::Vip,
};

/// LEAVING heartbeats sent on a graceful stop (more than one, in case one is lost).
const LEAVING_BURST: usize = 3;
/// XDP events handled per wake-up (a flood must not delay the next heartbeat).
const EVENTS_PER_WAKE: usize = 256;

/// The descriptors and maps the fast path acts with.
pub struct Io {
    /// Heartbeat sockets (sending).
    pub heartbeats: Heartbeats,
    /// The XDP program's peer table (its own handle on the pinned map).
    pub peers: HashMap<MapData, u32, PeerState>,
    /// The XDP program's event ring.
    pub events: RingBuf<MapData>,
    /// The self-fencing clock: when this node last sent a heartbeat.
    pub fence: Array<MapData, u64>,
    /// Address changes on the cluster interface.
    pub addrs: IfAddrs,
    /// The cluster interface's index.
    pub ifindex: u32,
    /// Gratuitous ARP / unsolicited NA.
    pub announcer: Arc<Announcer>,
    /// What the shadow senders send when this thread misses a slot.
    pub vouch: Arc<Vouch>,
    /// The shadow senders (stopped before LEAVING goes out).
    pub shadows: Vec<std::thread::JoinHandle<()>>,
    /// The slow path's carrier and health verdicts.
    pub verdicts: Arc<Verdicts>,
}

/// The fast path's end of the channels, for the pool.
pub type Channels = FastEnd<Command, Report>;

/// The pool's fast path: the state machine and what it acts with.
struct Pool {
    decide: Decide,
    io: Io,
    ch: Channels,
    /// This node's heartbeat slots.
    send: Periodic,
}

/// [`Edges`] over the real maps, sockets and rtnetlink, borrowed for one call.
struct Edge<'a> {
    io: &'a mut Io,
    ch: &'a Channels,
    send: &'a mut Periodic,
    /// A heartbeat more than this after its slot counts as late (half an interval).
    tolerance_ns: u64,
    /// Frames per announcement.
    burst: u16,
    /// The dead interval (ns): past it, a keepalive inside a takeover is not sent.
    dead_ns: u64,
}

/// Runs the pool's fast path until `shared.stop`, its heartbeat slots starting at
/// `start_ns` (the shadows check half an interval after each); then sends LEAVING and
/// releases every VIP. This is the body of the fast-path thread.
pub fn run(cfg: Config, io: Io, ch: Channels, start_ns: u64) {
    let now = monotonic_ns().max(start_ns);
    let send = Periodic::new(start_ns, cfg.pool.interval.as_nanos() as u64);
    let carrier = io.verdicts.carrier.load(Ordering::Relaxed);
    let healthy = io.verdicts.healthy.load(Ordering::Relaxed);
    let pool = Pool {
        decide: Decide::new(cfg, now, carrier, healthy),
        io,
        ch,
        send,
    };
    pool.run();
}

impl Pool {
    /// The state machine and its edges, for one call.
    fn split(&mut self) -> (&mut Decide, Edge<'_>) {
        let cfg = self.decide.cfg();
        let tolerance_ns = cfg.pool.interval.as_nanos() as u64 / 2;
        let burst = cfg.common.announce_burst;
        let dead_ns = cfg.pool.dead_interval.as_nanos() as u64;
        (
            &mut self.decide,
            Edge {
                io: &mut self.io,
                ch: &self.ch,
                send: &mut self.send,
                tolerance_ns,
                burst,
                dead_ns,
            },
        )
    }

    fn run(mut self) {
        // Say at once where we stand (holding down), and hear the peers already there.
        let (d, mut fx) = self.split();
        d.reconcile(&mut fx, Scan::All);
        loop {
            let now = monotonic_ns();
            self.io.vouch.progress_ns.store(now, Ordering::Relaxed);
            let (d, mut fx) = self.split();
            d.yield_after_silence(&mut fx);
            d.send_if_due(&mut fx);
            if fx.ch.stopping() {
                break;
            }
            let carrier = fx.io.verdicts.carrier.load(Ordering::Relaxed);
            let healthy = fx.io.verdicts.healthy.load(Ordering::Relaxed);
            let commands: Vec<Command> = std::iter::from_fn(|| fx.ch.next_command())
                .take(super::messages::COMMANDS)
                .collect();
            let mut events = Vec::new();
            for _ in 0..EVENTS_PER_WAKE {
                let Some(ev) = fx.io.events.next().map(|item| read_event(&item)) else {
                    break;
                };
                if let Some(ev) = ev {
                    events.push((EventKind::from_u8(ev.kind), ev.node_id));
                    fx.report(Report::XdpEvent(ev));
                }
            }
            excuse_cpu_stalls(d, fx.io, monotonic_ns());
            let timer = d.turn(&mut fx, carrier, healthy, commands, &events);
            let wake = earliest([Some(fx.send.next()), timer]);
            let fd = self.io.events.as_raw_fd();
            if self.ch.sleeper.wait(wake, &[fd]).is_err() {
                // poll/timerfd failing is not expected; never spin on it.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.ch.shared.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            self.excuse_own_stall(wake);
        }
        self.stop();
    }

    /// After waking later than asked (this thread, or the whole machine, could not run),
    /// excuses the peers' silence during the stall: their heartbeats may have been held up
    /// by the same stop.
    fn excuse_own_stall(&mut self, asked: Option<u64>) {
        let Some(asked) = asked else { return };
        let now = monotonic_ns();
        let late = now.saturating_sub(asked);
        if late > STALL_NS {
            self.decide.excuse_stall(0, now, late);
            self.ch.shared.stats.record_stall(late);
        }
    }

    /// Leaves the cluster: LEAVING heartbeats, then every VIP released.
    fn stop(mut self) {
        // No shadow may send an ordinary heartbeat after LEAVING.
        self.io.vouch.stop.store(true, Ordering::Relaxed);
        for shadow in std::mem::take(&mut self.io.shadows) {
            let _ = shadow.join();
        }
        let digest = self.decide.view_digest();
        for _ in 0..LEAVING_BURST {
            let _ = self.io.heartbeats.send(FLAG_LEAVING, digest, &[]);
        }
        let (d, mut fx) = self.split();
        d.release_all(&mut fx);
        let h = &self.io.heartbeats;
        self.ch.report(Report::Stopped {
            sent: h.sent,
            failed: h.failed,
            sequence: h.sequence(),
        });
    }
}

/// Excuses the peers' silence during the stalls of this node's CPUs, as the shadows saw
/// them (a stall still going on counts until now): a heartbeat that reached a stopped CPU
/// waits with it.
fn excuse_cpu_stalls(d: &mut Decide, io: &Io, now: u64) {
    let pool = &d.cfg().pool;
    let interval = pool.interval.as_nanos() as u64;
    let period = shadow::check_period(interval, pool.dead_interval.as_nanos() as u64);
    let n = usize::from(io.vouch.shadows.load(Ordering::Acquire));
    for (i, cpu) in io.vouch.cpus.iter().take(n).enumerate() {
        if let Some((end, len)) = cpu.stall(now, period, STALL_NS) {
            d.excuse_stall(1 + i, end, len);
        }
    }
}

impl Edges for Edge<'_> {
    fn now(&self) -> u64 {
        monotonic_ns()
    }

    fn peer(&self, id: u32) -> Option<PeerState> {
        self.io.peers.get(&id, 0).ok()
    }

    fn peer_ids(&self) -> Vec<u32> {
        self.io.peers.keys().filter_map(Result::ok).collect()
    }

    fn heartbeat_due(&mut self) -> bool {
        let now = monotonic_ns();
        if !self.send.due(now) {
            return false;
        }
        let late = self.send.advance(now);
        self.ch.shared.stats.record_send(late, self.tolerance_ns);
        true
    }

    fn send(&mut self, hb: &Outgoing) -> Result<(), String> {
        self.io.heartbeats.set_hears(hb.hears);
        let sent = self
            .io
            .heartbeats
            .send(hb.flags, hb.view_digest, &hb.section);
        let now = monotonic_ns();
        self.io.vouch.sent(now, hb.flags, hb.view_digest);
        // Alive as the peers see it: the XDP program answers for our VIPs until a dead
        // interval after this heartbeat, when they would take them over (see
        // `maps::FENCE_MAP`).
        let _ = self
            .io
            .fence
            .set(u32::from(FENCE_POOL), now + self.dead_ns, 0);
        sent.map_err(|e| e.to_string())
    }

    fn last_sent(&self) -> u64 {
        self.io.vouch.sent_ns.load(Ordering::Acquire)
    }

    fn add(
        &mut self,
        vips: &[Vip],
        keepalive: &Outgoing,
        loss_ns: Option<u64>,
    ) -> (Vec<Taken>, Vec<(Vip, String)>) {
        let Io {
            addrs,
            announcer,
            heartbeats,
            vouch,
            fence,
            ifindex,
            ..
        } = &mut *self.io;
        let (send, stats, tolerance) = (&mut *self.send, &self.ch.shared.stats, self.tolerance_ns);
        let dead_ns = self.dead_ns;
        let (taken, failed) = holder::take(
            addrs,
            announcer,
            *ifindex,
            vips,
            self.burst,
            loss_ns,
            || {
                // A long batch must not make the peers declare this node dead; but once a
                // netlink call blocked past the dead interval they have, and a heartbeat
                // now would hide the silence from `Decide::yield_after_silence`.
                let now = monotonic_ns();
                let silent = now.saturating_sub(vouch.sent_ns.load(Ordering::Acquire));
                if send.due(now) && silent < dead_ns {
                    let late = send.advance(now);
                    let (flags, digest) = (keepalive.flags, keepalive.view_digest);
                    heartbeats.set_hears(keepalive.hears);
                    let _ = heartbeats.send(flags, digest, &[]);
                    let now = monotonic_ns();
                    vouch.sent(now, flags, digest);
                    let _ = fence.set(u32::from(FENCE_POOL), now + dead_ns, 0);
                    stats.record_send(late, tolerance);
                }
            },
        );
        let failed = failed
            .into_iter()
            .map(|(v, e)| (v, e.to_string()))
            .collect();
        (taken, failed)
    }

    fn remove(&mut self, vips: &[(Vip, Option<u32>)]) -> Vec<Released> {
        holder::release(&mut self.io.addrs, self.io.ifindex, vips)
    }

    fn announce(&mut self, addrs: &[IpAddr]) {
        self.io.announcer.announce_many(addrs, self.burst);
    }

    fn reconfigure(&mut self, old: &Config, new: &Config) {
        let heartbeats = &mut self.io.heartbeats;
        heartbeats.set_weight(new.pool.weight);
        if new.pool.peers != old.pool.peers {
            heartbeats.set_destinations(&new.pool.destinations());
        }
        if let Some(key) = new.pool.auth_key {
            heartbeats.set_key(key);
        }
        self.io
            .vouch
            .weight
            .store(new.pool.weight, Ordering::Relaxed);
    }

    fn report(&mut self, report: Report) {
        self.ch.report(report);
    }
}

/// A record of the event ring, if whole.
fn read_event(item: &[u8]) -> Option<PeerEvent> {
    (item.len() >= size_of::<PeerEvent>()).then(|| {
        // SAFETY: PeerEvent is plain old data and the item holds at least that many bytes.
        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) }
    })
}
