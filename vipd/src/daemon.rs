//! The daemon: one loop that feeds kernel-recorded peer state into [`Membership`], places
//! VIPs on the resulting view, and performs the actions (add/announce, release).
//!
//! Timeline log lines (target `vipd::timeline`, CLOCK_MONOTONIC nanoseconds, the clock of
//! the XDP program's timestamps): `peer_lost` (with the peer's last heartbeat),
//! `address_added`, `first_announce`.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::{MissedTickBehavior, sleep_until},
};
use tracing::{debug, info, warn};
use vipd_common::{
    heartbeat::{FLAG_LEAVING, FLAG_MATURE, Heartbeat},
    maps::{EventKind, PeerEvent, XdpConfig},
};

use crate::{
    announce::{self, Announcer},
    cli::Config,
    clock::{monotonic_ns, realtime_ns},
    heartbeat::Sender,
    membership::{LeftBecause, Membership, Transition},
    netlink::{Added, Link},
    placement,
    vip::Vip,
    xdp,
};

/// LEAVING heartbeats sent on a graceful stop (more than one, in case one is lost).
const LEAVING_BURST: usize = 3;

/// A VIP this node holds, with the task repeating its announcements.
struct Held {
    vip: Vip,
    repeats: JoinHandle<()>,
}

/// Runs until SIGTERM or SIGINT; then leaves the cluster cleanly.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    check_privileges()?;
    let link = Link::open(&cfg.interface).await?;
    remove_leftovers(&link, &cfg.vips).await?;

    let dead_ns = cfg.dead_interval.as_nanos() as u64;
    let (loaded, events) = xdp::load(&xdp::XdpSettings {
        interface: &cfg.interface,
        mode: cfg.xdp_mode,
        pin_dir: &cfg.pin_dir,
        config: XdpConfig {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            dead_ns,
            port: cfg.port,
            _pad: [0; 6],
        },
    })?;
    let announcer = Arc::new(
        Announcer::open(link.index, link.mac)
            .context("opening an AF_PACKET socket for gratuitous ARP (needs CAP_NET_RAW)")?,
    );
    let mut sender = Sender::open(
        &cfg.interface,
        link.index,
        cfg.port,
        &cfg.destinations,
        Heartbeat {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            incarnation: realtime_ns(),
            interval_us: cfg.interval.as_micros().min(u32::MAX as u128) as u32,
            weight: 1,
            ..Heartbeat::default()
        },
    )
    .with_context(|| {
        format!(
            "opening heartbeat sockets on {} port {}",
            cfg.interface, cfg.port
        )
    })?;

    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which outlives
    // every use of the registration.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("polling the XDP event ring buffer")?;
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    info!(
        node = cfg.node_id,
        interface = %cfg.interface,
        vips = ?cfg.vips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        destinations = ?cfg.destinations,
        interval = ?cfg.interval,
        dead_interval = ?cfg.dead_interval,
        hold_down = ?cfg.hold_down,
        "vipd started"
    );

    let mut state = State {
        cfg: &cfg,
        link: &link,
        announcer,
        membership: Membership::new(dead_ns),
        mature_at: monotonic_ns() + cfg.hold_down.as_nanos() as u64,
        mature: false,
        held: BTreeMap::new(),
    };
    let mut link_error_logged = false;
    let stop_reason = loop {
        let wake = state.next_wake();
        let reconcile = tokio::select! {
            biased;
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            guard = events.readable_mut() => {
                let mut guard = guard.context("waiting on the XDP event ring buffer")?;
                while let Some(item) = guard.get_inner_mut().next() {
                    log_event(&item);
                }
                guard.clear_ready();
                true
            }
            _ = ticker.tick() => {
                match sender.send(state.flags()) {
                    Ok(()) => link_error_logged = false,
                    Err(e) if !link_error_logged => {
                        warn!("sending heartbeats on {}: {e}", cfg.interface);
                        link_error_logged = true;
                    }
                    Err(_) => {}
                }
                false
            }
            _ = sleep_until(wake.into()) => true,
        };
        if reconcile {
            let now = monotonic_ns();
            if !state.mature && now >= state.mature_at {
                state.mature = true;
                info!(
                    node = cfg.node_id,
                    "hold-down over: this node now takes its share of VIPs"
                );
                // Tell peers at once, so they hand over this node's VIPs together with it.
                let _ = sender.send(state.flags());
            }
            let table = loaded.peer_table();
            state.update(table, now).await;
        }
    };

    info!(
        reason = stop_reason,
        "stopping: sending LEAVING and releasing VIPs"
    );
    for _ in 0..LEAVING_BURST {
        if let Err(e) = sender.send(FLAG_LEAVING) {
            warn!("sending LEAVING heartbeat: {e}");
        }
    }
    state.release_all().await;
    let counters: Vec<String> = loaded
        .counters()
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    info!(
        heartbeats_sent = sender.sent,
        heartbeats_failed = sender.failed,
        last_sequence = sender.sequence(),
        xdp_mode = loaded.mode,
        counters = counters.join(" "),
        "stopped"
    );
    xdp::remove_pins(&loaded.pin_dir);
    Ok(())
}

/// What the loop needs between wake-ups.
struct State<'a> {
    cfg: &'a Config,
    link: &'a Link,
    announcer: Arc<Announcer>,
    membership: Membership,
    mature_at: u64,
    mature: bool,
    held: BTreeMap<IpAddr, Held>,
}

impl State<'_> {
    fn flags(&self) -> u8 {
        if self.mature { FLAG_MATURE } else { 0 }
    }

    /// The next moment something can change without a packet: a peer's deadline, or the
    /// end of our hold-down.
    fn next_wake(&self) -> Instant {
        let mut at = self.membership.next_deadline();
        if !self.mature {
            at = Some(at.map_or(self.mature_at, |a| a.min(self.mature_at)));
        }
        let now_ns = monotonic_ns();
        match at {
            Some(at) => Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns)),
            None => Instant::now() + Duration::from_secs(3600),
        }
    }

    async fn update(&mut self, table: Vec<vipd_common::maps::PeerState>, now: u64) {
        let transitions = self.membership.observe(table, now);
        for t in &transitions {
            log_transition(t, now, &self.membership);
        }
        let mut view = self.membership.view_peers();
        if self.mature {
            view.push(self.cfg.node_id);
        }
        self.apply(&view).await;
    }

    /// Makes the held VIPs match the placement for `view`.
    async fn apply(&mut self, view: &[u32]) {
        let addrs: Vec<IpAddr> = self.cfg.vips.iter().map(|v| v.addr).collect();
        let assignment = placement::assign(&addrs, view);
        let mine: Vec<Vip> = self
            .cfg
            .vips
            .iter()
            .filter(|v| assignment.get(&v.addr) == Some(&self.cfg.node_id))
            .copied()
            .collect();
        // Take over first: that is the urgent half.
        let to_take: Vec<Vip> = mine
            .iter()
            .filter(|v| !self.held.contains_key(&v.addr))
            .copied()
            .collect();
        for vip in to_take {
            self.take(vip).await;
        }
        let to_release: Vec<IpAddr> = self
            .held
            .keys()
            .filter(|a| !mine.iter().any(|v| v.addr == **a))
            .copied()
            .collect();
        for addr in to_release {
            let owner = assignment.get(&addr).copied();
            self.release(addr, owner).await;
        }
    }

    async fn take(&mut self, vip: Vip) {
        match self.link.add(&vip).await {
            Ok(added) => {
                let mono_ns = monotonic_ns();
                info!(target: "vipd::timeline", event = "address_added", vip = %vip.addr, mono_ns,
                    already_present = added == Added::AlreadyPresent, "took over VIP");
            }
            Err(e) => {
                // Not held: the next reconcile tries again.
                warn!("taking over {vip}: {e}");
                return;
            }
        }
        let mut first = None;
        for _ in 0..announce::BURST {
            match self.announcer.announce(vip.addr) {
                Ok(()) => {
                    first.get_or_insert_with(monotonic_ns);
                }
                Err(e) => warn!("announcing {}: {e}", vip.addr),
            }
        }
        if let Some(mono_ns) = first {
            info!(target: "vipd::timeline", event = "first_announce", vip = %vip.addr, mono_ns,
                burst = announce::BURST, "announced VIP");
        }
        let announcer = Arc::clone(&self.announcer);
        let start = tokio::time::Instant::now();
        let repeats = tokio::spawn(async move {
            for after in announce::REPEATS {
                tokio::time::sleep_until(start + after).await;
                if let Err(e) = announcer.announce(vip.addr) {
                    debug!("repeating announcement of {}: {e}", vip.addr);
                }
            }
        });
        self.held.insert(vip.addr, Held { vip, repeats });
    }

    async fn release(&mut self, addr: IpAddr, new_owner: Option<u32>) {
        let Some(held) = self.held.remove(&addr) else {
            return;
        };
        held.repeats.abort();
        match self.link.remove(&held.vip).await {
            Ok(_) => info!(vip = %addr, new_owner, "released VIP"),
            Err(e) => warn!("releasing {}: {e}", held.vip),
        }
    }

    async fn release_all(&mut self) {
        let addrs: Vec<IpAddr> = self.held.keys().copied().collect();
        for addr in addrs {
            self.release(addr, None).await;
        }
    }
}

fn log_transition(t: &Transition, now: u64, membership: &Membership) {
    match *t {
        Transition::Joined { node_id } => {
            let weight = membership.peer(node_id).map(|p| p.weight);
            info!(peer = node_id, weight, "peer joined the view");
        }
        Transition::Left { node_id, because } => {
            let last_seen_ns = membership.peer(node_id).map_or(0, |p| p.last_seen_ns);
            let reason = match because {
                LeftBecause::Timeout { .. } => "timeout",
                LeftBecause::Leaving => "LEAVING",
                LeftBecause::Restarted => "restarted",
                LeftBecause::NotMature => "not mature",
            };
            info!(target: "vipd::timeline", event = "peer_lost", peer = node_id, reason,
                last_seen_mono_ns = last_seen_ns, mono_ns = now,
                silence_us = now.saturating_sub(last_seen_ns) / 1000,
                "peer left the view ({reason})");
        }
    }
}

fn log_event(item: &[u8]) {
    if item.len() < size_of::<PeerEvent>() {
        warn!(len = item.len(), "short event from the XDP program");
        return;
    }
    // SAFETY: PeerEvent is plain old data and the item holds at least that many bytes.
    let ev: PeerEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    let leaving = ev.flags & FLAG_LEAVING != 0;
    match EventKind::from_u8(ev.kind) {
        Some(EventKind::NewPeer) => info!(peer = ev.node_id, mono_ns = ev.ts_ns, "new peer heard"),
        Some(EventKind::FlagsChanged) if leaving => {
            info!(peer = ev.node_id, mono_ns = ev.ts_ns, "peer sent LEAVING")
        }
        Some(EventKind::FlagsChanged) => {
            debug!(
                peer = ev.node_id,
                flags = ev.flags,
                prev = ev.prev_flags,
                "peer flags changed"
            )
        }
        Some(EventKind::Restarted) => info!(
            peer = ev.node_id,
            incarnation = ev.incarnation,
            last_sequence = ev.prev_sequence,
            "peer restarted"
        ),
        Some(EventKind::Returned) => info!(peer = ev.node_id, "peer heard again after silence"),
        Some(EventKind::SequenceGap) => debug!(
            peer = ev.node_id,
            missed = ev.sequence.saturating_sub(ev.prev_sequence + 1),
            "heartbeats missed"
        ),
        None => warn!(kind = ev.kind, "unknown event from the XDP program"),
    }
}

/// Removes VIPs of this pool that a crashed earlier run left behind; refuses to touch an
/// address that is configured with another prefix (it is somebody's real address).
async fn remove_leftovers(link: &Link, vips: &[Vip]) -> anyhow::Result<()> {
    let present = link.addresses().await?;
    for vip in vips {
        for &(addr, len) in present.iter().filter(|(a, _)| *a == vip.addr) {
            if len != vip.prefix_len {
                bail!(
                    "{addr}/{len} is already configured on {} and is not a VIP of this pool \
                     (VIPs are added as /{}): remove it or fix the VIP list",
                    link.name,
                    vip.prefix_len
                );
            }
            link.remove(vip).await?;
            warn!(vip = %vip, "removed a VIP left on {} by an earlier run", link.name);
        }
    }
    Ok(())
}

/// Fails with a clear message unless we hold the capabilities vipd needs.
fn check_privileges() -> anyhow::Result<()> {
    const NEEDED: [(u32, &str); 3] = [(12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"), (39, "CAP_BPF")];
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
    let sys_admin = eff & (1 << 21) != 0;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, name)| eff & (1 << bit) == 0 && !(*name == "CAP_BPF" && sys_admin))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing privileges: {} (run vipd as root, or grant CAP_BPF, CAP_NET_ADMIN and \
             CAP_NET_RAW)",
            missing.join(", ")
        );
    }
    Ok(())
}
