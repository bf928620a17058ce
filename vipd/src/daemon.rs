//! The daemon: one loop that feeds kernel-recorded peer state into [`Membership`], places
//! the pool on the resulting view, and performs the actions (add and announce, release).
//!
//! Wake-ups: an XDP event (new peer, LEAVING, restart, return), this node's heartbeat
//! tick, the earliest peer deadline, a heartbeat with a state section (what a peer holds),
//! a carrier change, the announce refresh, or a signal.
//!
//! Timeline log lines (target `vipd::timeline`, CLOCK_MONOTONIC nanoseconds, the clock of
//! the XDP program's timestamps): `peer_lost` (with the peer's last heartbeat),
//! `address_added`, `first_announce`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::{MissedTickBehavior, sleep_until},
};
use tracing::{debug, info, warn};
use vipd_common::{
    auth,
    heartbeat::{
        FLAG_LEAVING, FLAG_MATURE, HEADER_LEN, Heartbeat, State as WireState, fnv1a64, view_digest,
    },
    maps::{EventKind, PeerEvent, PeerState, XdpConfig},
};

use crate::{
    announce::Announcer,
    cli::RunArgs,
    clock::{monotonic_ns, realtime_ns},
    config::Config,
    control::{self, CheckStatus, PeerStatus, Status, VipStatus},
    health,
    heartbeat::{Heartbeats, MAX_DATAGRAM},
    hooks::Hooks,
    membership::{LeftBecause, Membership, Transition},
    metrics::{self, Metrics, PeerLabel, ReasonLabel, VipLabel},
    netlink::{Added, CarrierWatch, Link},
    placement::{self, Member},
    vip::Vip,
    xdp,
};

/// LEAVING heartbeats sent on a graceful stop (more than one, in case one is lost).
const LEAVING_BURST: usize = 3;
/// Heartbeats that carry the state section after it changes (in case one is lost).
const STATE_BURST: u8 = 3;
/// A period long enough to mean "never" without overflowing `Instant`.
const DAY: Duration = Duration::from_secs(86_400);
/// How often the state section is sent anyway.
const STATE_REFRESH: Duration = Duration::from_secs(2);

/// A VIP this node holds, with the task repeating its announcements.
struct Held {
    vip: Vip,
    repeats: JoinHandle<()>,
}

/// What a peer last said it holds.
struct PeerHoldings {
    vips: BTreeSet<IpAddr>,
}

/// Runs until SIGTERM or SIGINT; then leaves the cluster cleanly. `args` are re-applied
/// to the configuration file on SIGHUP.
pub async fn run(cfg: Config, args: RunArgs) -> anyhow::Result<()> {
    check_privileges()?;
    // First: a second daemon of the same instance must stop before it touches anything.
    let control = control::bind(&cfg.instance)?;
    let link = Link::open(&cfg.interface).await?;
    remove_leftovers(&link, &cfg.vips).await?;

    let dead_ns = cfg.dead_interval.as_nanos() as u64;
    let (loaded, rings) = xdp::load(&xdp::XdpSettings {
        interface: &cfg.interface,
        also: &[],
        mode: cfg.xdp_mode,
        pin_dir: &cfg.pin_dir(),
        config: XdpConfig {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            dead_ns,
            port: cfg.port,
            auth: u8::from(cfg.auth_key.is_some()),
            _pad: [0; 5],
            auth_key: cfg.auth_key.map_or([0; 2], |k| [k.k0, k.k1]),
        },
    })?;
    let announcer = Arc::new(
        Announcer::open(link.index, link.mac)
            .context("opening an AF_PACKET socket for gratuitous ARP (needs CAP_NET_RAW)")?,
    );
    let mut heartbeats = Heartbeats::open(
        &cfg.interface,
        link.index,
        cfg.port,
        &cfg.destinations(),
        Heartbeat {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            incarnation: realtime_ns(),
            interval_us: cfg.interval.as_micros().min(u32::MAX as u128) as u32,
            weight: cfg.weight,
            ..Heartbeat::default()
        },
        cfg.auth_key,
    )
    .with_context(|| {
        format!(
            "opening heartbeat sockets on {} port {}",
            cfg.interface, cfg.port
        )
    })?;
    let mut carrier = CarrierWatch::open(link.index)?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = cfg.metrics {
        let counters = Arc::clone(&loaded.counters);
        let m = Arc::clone(&metrics);
        metrics::serve(addr, Arc::clone(&metrics), move || {
            m.sync_xdp(&xdp::sum_counters(&counters))
        })
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    }
    let (health_tx, mut health_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut health_generation = 0u64;
    let mut health_tasks = health::spawn(&cfg.checks, health_generation, health_tx.clone());

    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which outlives every
    // use of the registration.
    let mut events = unsafe { AsyncFd::register_with_interest(rings.events, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("polling the XDP event ring buffer")?;
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut refresh_on = cfg.announce_refresh.is_some();
    let mut refresh = tokio::time::interval(cfg.announce_refresh.unwrap_or(DAY));
    refresh.reset();

    info!(
        node = cfg.node_id,
        interface = %cfg.interface,
        vips = ?cfg.vips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        destinations = ?cfg.destinations(),
        interval = ?cfg.interval,
        dead_interval = ?cfg.dead_interval,
        hold_down = ?cfg.hold_down,
        weight = cfg.weight,
        preempt = cfg.preempt,
        carrier = link.carrier,
        auth = cfg.auth_key.is_some(),
        "vipd started"
    );

    let pool: Vec<IpAddr> = cfg.vips.iter().map(|v| v.addr).collect();
    let mut state = State {
        pool_digest: pool_digest(&cfg.vips),
        pool,
        hooks: Hooks::new(
            cfg.hook.clone(),
            cfg.hook_timeout,
            cfg.node_id,
            &cfg.instance,
            &cfg.interface,
        ),
        health: health::Tracker::new(&cfg.checks),
        metrics: Arc::clone(&metrics),
        node_state: "",
        last_loss_ns: None,
        cfg: cfg.clone(),
        link: &link,
        announcer,
        membership: Membership::new(dead_ns),
        mature_at: monotonic_ns() + cfg.hold_down.as_nanos() as u64,
        mature: false,
        carrier: link.carrier,
        held: BTreeMap::new(),
        peers: BTreeMap::new(),
        conflicts: BTreeSet::new(),
        view_digest: 0,
        views_agree: true,
        state_burst: STATE_BURST,
        last_state_sent: Instant::now(),
        pool_mismatch_logged: BTreeSet::new(),
        state_seen: BTreeMap::new(),
        rejected: Rejected::default(),
    };
    let mut send_error_logged = false;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let stop_reason = loop {
        let wake = state.next_wake();
        let reconcile = tokio::select! {
            biased;
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            // Heartbeats before anything a peer (or a flood) could keep busy.
            _ = ticker.tick() => {
                let section = state.state_section_due();
                match heartbeats.send(state.flags(), state.view_digest, &section) {
                    Ok(()) => send_error_logged = false,
                    Err(e) if !send_error_logged => {
                        warn!("sending heartbeats on {}: {e}", state.cfg.interface);
                        send_error_logged = true;
                    }
                    Err(_) => {}
                }
                false
            }
            guard = events.readable_mut() => {
                let Ok(mut guard) = guard else {
                    break "the XDP event ring buffer failed";
                };
                while let Some(item) = guard.get_inner_mut().next() {
                    state.on_event(&item);
                }
                guard.clear_ready();
                true
            }
            up = carrier.next() => {
                let Some(up) = up else {
                    break "the kernel closed the link notification socket";
                };
                state.on_carrier(up).await
            }
            Some((generation, check, passed)) = health_rx.recv() => {
                generation == health_generation && state.on_check(check, passed)
            }
            _ = sighup.recv() => {
                let old_checks = state.cfg.checks.clone();
                if let Some(new) = state.reload(&args) {
                    heartbeats.set_weight(new.weight);
                    refresh_on = new.announce_refresh.is_some();
                    refresh = tokio::time::interval(new.announce_refresh.unwrap_or(DAY));
                    refresh.reset();
                    if new.checks != old_checks {
                        health_generation += 1;
                        health_tasks.iter().for_each(JoinHandle::abort);
                        health_tasks = health::spawn(&new.checks, health_generation, health_tx.clone());
                    }
                }
                true
            }
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    let status = state.status(&loaded);
                    tokio::spawn(answer(stream, status));
                }
                false
            }
            received = heartbeats.recv(&mut buf) => {
                match received {
                    Ok(n) => state.on_datagram(&buf[..n], |id| {
                        loaded.peers.get(&id, 0).ok().map(|p| p.incarnation)
                    }),
                    Err(e) => { debug!("receiving heartbeats: {e}"); false }
                }
            }
            _ = refresh.tick(), if refresh_on => {
                state.refresh_announcements();
                false
            }
            _ = sleep_until(wake.into()) => true,
        };
        if reconcile {
            let now = monotonic_ns();
            if state.carrier && !state.mature && now >= state.mature_at {
                state.mature = true;
                info!(
                    node = cfg.node_id,
                    "hold-down over: this node now takes its share of VIPs"
                );
                // Tell peers at once, so they hand over this node's share together with it.
                state.state_burst = STATE_BURST;
                let section = state.state_section_due();
                let _ = heartbeats.send(state.flags(), state.view_digest, &section);
            }
            let table = loaded.peer_table();
            if state.update(table, now, &mut heartbeats).await {
                // What we hold changed: say so now rather than at the next tick.
                let section = state.state_section_due();
                let _ = heartbeats.send(state.flags(), state.view_digest, &section);
            }
        }
    };

    info!(
        reason = stop_reason,
        "stopping: sending LEAVING and releasing VIPs"
    );
    for _ in 0..LEAVING_BURST {
        if let Err(e) = heartbeats.send(FLAG_LEAVING, state.view_digest, &[]) {
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
        heartbeats_sent = heartbeats.sent,
        heartbeats_failed = heartbeats.failed,
        last_sequence = heartbeats.sequence(),
        xdp_mode = loaded.mode,
        counters = counters.join(" "),
        "stopped"
    );
    xdp::remove_pins(&loaded.pin_dir);
    let _ = std::fs::remove_file(control::socket_path(&state.cfg.instance));
    // Give hooks of the last events a moment to start (they run detached).
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Answers one control connection with the status, as JSON.
pub(crate) async fn answer(mut stream: tokio::net::UnixStream, status: Status) {
    let mut request = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
    if let Ok(json) = serde_json::to_vec(&status) {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&json)).await;
    }
}

/// Digest of the pool (addresses and prefixes, sorted), so nodes with different VIP lists
/// do not misread each other's state sections.
fn pool_digest(vips: &[Vip]) -> u32 {
    let text: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let bytes: Vec<&[u8]> = text.iter().map(String::as_bytes).collect();
    fnv1a64(&bytes) as u32
}

/// What the loop needs between wake-ups.
struct State<'a> {
    cfg: Config,
    hooks: Hooks,
    health: health::Tracker,
    metrics: Arc<Metrics>,
    /// Last node state reported (active, holding-down, withdrawn, fault).
    node_state: &'static str,
    /// When the last peer loss was declared, for the takeover latency.
    last_loss_ns: Option<u64>,
    link: &'a Link,
    announcer: Arc<Announcer>,
    /// The pool, sorted (bit i of a state section is `pool[i]`).
    pool: Vec<IpAddr>,
    pool_digest: u32,
    membership: Membership,
    mature_at: u64,
    mature: bool,
    carrier: bool,
    held: BTreeMap<IpAddr, Held>,
    peers: BTreeMap<u32, PeerHoldings>,
    /// Held VIPs that a peer claims too.
    conflicts: BTreeSet<IpAddr>,
    view_digest: u64,
    views_agree: bool,
    state_burst: u8,
    last_state_sent: Instant,
    pool_mismatch_logged: BTreeSet<u32>,
    /// With authentication: (incarnation, sequence) of the last state section accepted
    /// from each peer, so a replayed one is refused.
    state_seen: BTreeMap<u32, (u64, u64)>,
    rejected: Rejected,
}

/// State sections ignored because they failed authentication, for a rate-limited warning.
#[derive(Default)]
struct Rejected {
    last_warning: Option<Instant>,
    since_warning: u64,
}

/// At most one warning about rejected state sections this often.
const REJECTED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Whether a state section authenticated as (`incarnation`, `sequence`) may be used: it is
/// from the incarnation the XDP program last recorded for that peer (`current`), and newer
/// than the last one accepted (`last`). The XDP program refuses replayed heartbeats, but it
/// passes refused frames up, so the daemon checks the state sections it reads itself.
fn fresh_state(
    last: Option<(u64, u64)>,
    current: Option<u64>,
    incarnation: u64,
    sequence: u64,
) -> bool {
    current == Some(incarnation) && last.is_none_or(|last| (incarnation, sequence) > last)
}

impl State<'_> {
    /// Whether this node takes VIPs: past its hold-down, with carrier, and healthy.
    fn active(&self) -> bool {
        self.mature && self.carrier && self.health.healthy()
    }

    fn flags(&self) -> u8 {
        if self.active() { FLAG_MATURE } else { 0 }
    }

    /// The node state for logs, hooks and status.
    fn state_name(&self) -> &'static str {
        if !self.carrier {
            "fault"
        } else if !self.health.healthy() {
            "withdrawn"
        } else if !self.mature {
            "holding-down"
        } else {
            "active"
        }
    }

    /// A health check result; returns whether to reconcile.
    fn on_check(&mut self, index: usize, passed: bool) -> bool {
        let Some(now_healthy) = self.health.record(index, passed) else {
            return false;
        };
        let name = self.cfg.checks.get(index).map_or("?", |c| c.name.as_str());
        if now_healthy {
            info!(check = name, "health check passing");
        } else {
            warn!(check = name, "health check failing");
        }
        self.state_burst = STATE_BURST;
        true
    }

    /// Re-reads the configuration for SIGHUP; returns the new one if it was applied.
    fn reload(&mut self, args: &RunArgs) -> Option<Config> {
        let new = match args.load() {
            Ok(new) => new,
            Err(e) => {
                warn!("reload rejected, keeping the running configuration: {e}");
                return None;
            }
        };
        if let Some(what) = self.cfg.needs_restart(&new) {
            warn!(
                "reload rejected, keeping the running configuration: changing {what} needs a restart"
            );
            return None;
        }
        if new == self.cfg {
            info!("reload: configuration unchanged");
            return None;
        }
        info!("configuration reloaded");
        self.pool = new.vips.iter().map(|v| v.addr).collect();
        self.pool_digest = pool_digest(&new.vips);
        self.hooks = Hooks::new(
            new.hook.clone(),
            new.hook_timeout,
            new.node_id,
            &new.instance,
            &new.interface,
        );
        if new.checks != self.cfg.checks {
            self.health = self.health.carry_over(&self.cfg.checks, &new.checks);
        }
        self.cfg = new.clone();
        self.pool_mismatch_logged.clear();
        self.state_burst = STATE_BURST;
        Some(new)
    }

    /// A snapshot for `vipd status`.
    fn status(&self, loaded: &xdp::LoadedXdp) -> Status {
        let now = monotonic_ns();
        let view = self.view_ids();
        let peers = self
            .membership
            .peers()
            .map(|(p, in_view)| PeerStatus {
                id: p.node_id,
                last_seen_ms_ago: now.saturating_sub(p.last_seen_ns) as f64 / 1e6,
                in_view,
                state: peer_state(p, now, self.cfg.dead_interval).into(),
                weight: p.weight,
                same_view: p.view_digest == self.view_digest,
                received: p.received,
                missed: p.missed,
            })
            .collect();
        let vips = self
            .cfg
            .vips
            .iter()
            .map(|v| {
                let owner = if self.held.contains_key(&v.addr) {
                    Some(self.cfg.node_id)
                } else {
                    self.peers
                        .iter()
                        .filter(|(id, _)| view.contains(id))
                        .find(|(_, p)| p.vips.contains(&v.addr))
                        .map(|(id, _)| *id)
                };
                VipStatus {
                    vip: v.to_string(),
                    owner,
                }
            })
            .collect();
        let checks = self
            .cfg
            .checks
            .iter()
            .zip(self.health.states())
            .map(|(c, (healthy, _))| CheckStatus {
                name: c.name.clone(),
                healthy,
            })
            .collect();
        Status {
            node_id: self.cfg.node_id,
            instance: self.cfg.instance.clone(),
            interface: self.cfg.interface.clone(),
            xdp_mode: loaded.mode.into(),
            state: self.state_name().into(),
            view,
            views_agree: self.views_agree,
            peers,
            vips,
            checks,
            counters: loaded
                .counters()
                .iter()
                .map(|(c, v)| (c.name().to_string(), *v))
                .collect(),
            vrrp: Vec::new(),
        }
    }

    fn view_ids(&self) -> Vec<u32> {
        let mut ids = self.membership.view_peers();
        if self.active() {
            ids.push(self.cfg.node_id);
        }
        ids.sort_unstable();
        ids
    }

    /// The state section to put in the next heartbeat, if one is due.
    fn state_section_due(&mut self) -> Vec<u8> {
        if self.state_burst == 0 && self.last_state_sent.elapsed() < STATE_REFRESH {
            return Vec::new();
        }
        self.state_burst = self.state_burst.saturating_sub(1);
        self.last_state_sent = Instant::now();
        let count = self.pool.len() as u16;
        let mut out = vec![0u8; WireState::len_for(count)];
        WireState::write(&mut out, self.pool_digest, count, |i| {
            self.held.contains_key(&self.pool[i])
        });
        out
    }

    /// The next moment something can change without a packet: a peer's deadline, or the
    /// end of our hold-down.
    fn next_wake(&self) -> Instant {
        let mut at = self.membership.next_deadline();
        if self.carrier && !self.mature {
            at = Some(at.map_or(self.mature_at, |a| a.min(self.mature_at)));
        }
        let now_ns = monotonic_ns();
        match at {
            Some(at) => Instant::now() + Duration::from_nanos(at.saturating_sub(now_ns)),
            None => Instant::now() + Duration::from_secs(3600),
        }
    }

    /// An event from the XDP program.
    fn on_event(&mut self, item: &[u8]) {
        if item.len() < size_of::<PeerEvent>() {
            warn!(len = item.len(), "short event from the XDP program");
            return;
        }
        // SAFETY: PeerEvent is plain old data and the item holds at least that many bytes.
        let ev: PeerEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        let kind = EventKind::from_u8(ev.kind);
        match kind {
            Some(EventKind::NewPeer) => {
                info!(peer = ev.node_id, mono_ns = ev.ts_ns, "new peer heard")
            }
            Some(EventKind::FlagsChanged) if ev.flags & FLAG_LEAVING != 0 => {
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
            Some(EventKind::Restarted) => {
                self.peers.remove(&ev.node_id);
                info!(
                    peer = ev.node_id,
                    incarnation = ev.incarnation,
                    last_sequence = ev.prev_sequence,
                    "peer restarted"
                )
            }
            Some(EventKind::Returned) => info!(peer = ev.node_id, "peer heard again after silence"),
            Some(EventKind::SequenceGap) => debug!(
                peer = ev.node_id,
                missed = ev
                    .sequence
                    .saturating_sub(ev.prev_sequence.saturating_add(1)),
                "heartbeats missed"
            ),
            None => warn!(kind = ev.kind, "unknown event from the XDP program"),
        }
        if matches!(
            kind,
            Some(EventKind::NewPeer | EventKind::Restarted | EventKind::Returned)
        ) {
            // It needs to learn what we hold.
            self.state_burst = STATE_BURST;
        }
    }

    /// A datagram on the heartbeat port that the XDP program passed up; returns whether
    /// to reconcile. `incarnation_of` reads a peer's incarnation from the peer table.
    fn on_datagram(&mut self, payload: &[u8], incarnation_of: impl Fn(u32) -> Option<u64>) -> bool {
        let Ok(hb) = Heartbeat::parse(payload, self.cfg.cluster_id) else {
            return false;
        };
        if hb.node_id == self.cfg.node_id || hb.state_len == 0 {
            return false;
        }
        if let Some(key) = self.cfg.auth_key {
            let reason = if auth::verify(key, payload, hb.state_len.into(), hb.auth_len).is_err() {
                Some("bad_auth")
            } else if !fresh_state(
                self.state_seen.get(&hb.node_id).copied(),
                incarnation_of(hb.node_id),
                hb.incarnation,
                hb.sequence,
            ) {
                Some("replayed")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reject_state(hb.node_id, reason);
                return false;
            }
            self.state_seen
                .insert(hb.node_id, (hb.incarnation, hb.sequence));
        }
        if self.membership.peer(hb.node_id).is_none() {
            // Not (yet) in the peer table: a spoofed or brand-new id; its state arrives
            // again in the next heartbeats that carry it.
            return false;
        }
        let section = &payload[HEADER_LEN..HEADER_LEN + hb.state_len as usize];
        let Ok(state) = WireState::parse(section) else {
            debug!(peer = hb.node_id, "malformed state section");
            return false;
        };
        if state.pool_digest != self.pool_digest || state.vip_count as usize != self.pool.len() {
            if self.pool_mismatch_logged.insert(hb.node_id) {
                warn!(
                    peer = hb.node_id,
                    "peer has a different VIP list: its holdings are ignored \
                    (every node of a pool must list the same VIPs)"
                );
            }
            return false;
        }
        let vips: BTreeSet<IpAddr> = self
            .pool
            .iter()
            .enumerate()
            .filter(|(i, _)| state.holds(*i))
            .map(|(_, v)| *v)
            .collect();
        let changed = self.peers.get(&hb.node_id).is_none_or(|p| p.vips != vips);
        self.peers.insert(hb.node_id, PeerHoldings { vips });
        changed
    }

    /// Counts a state section that failed authentication; warns now and then.
    fn reject_state(&mut self, claimed_peer: u32, reason: &'static str) {
        self.metrics
            .state_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        let r = &mut self.rejected;
        r.since_warning += 1;
        if r.last_warning
            .is_none_or(|t| t.elapsed() >= REJECTED_WARNING_EVERY)
        {
            warn!(
                claimed_peer,
                reason,
                rejected = r.since_warning,
                "ignored state section(s) that failed authentication (wrong key, forged or \
                 replayed); counted in vipd_state_sections_rejected_total"
            );
            r.last_warning = Some(Instant::now());
            r.since_warning = 0;
        }
    }

    /// Carrier changed; returns whether to reconcile.
    async fn on_carrier(&mut self, up: bool) -> bool {
        if up == self.carrier {
            return false;
        }
        self.carrier = up;
        if up {
            // Start the hold-down again: a flapping link must not drag VIPs around.
            self.mature_at = monotonic_ns() + self.cfg.hold_down.as_nanos() as u64;
            info!(interface = %self.link.name, hold_down = ?self.cfg.hold_down,
                "carrier back: taking VIPs again after the hold-down");
        } else {
            self.mature = false;
            warn!(interface = %self.link.name, "carrier lost: releasing all VIPs");
            self.release_all().await;
        }
        true
    }

    /// Sends a heartbeat if one is due: a long batch of address changes must not make the
    /// peers declare this node dead.
    fn heartbeat_if_due(&mut self, heartbeats: &mut Heartbeats) {
        if heartbeats.since_last_send() >= self.cfg.interval {
            let section = self.state_section_due();
            let _ = heartbeats.send(self.flags(), self.view_digest, &section);
        }
    }

    /// Reports a node state change (logs, hook, metric).
    fn report_state(&mut self) {
        let state = self.state_name();
        if state != self.node_state {
            info!(state, "node state");
            self.node_state = state;
            self.hooks.node_state(state);
            self.metrics.active.set(i64::from(state == "active"));
        }
    }

    /// Feeds a peer table snapshot; places and acts. Returns whether what we hold changed.
    /// `heartbeats` is used to keep heartbeats going while many VIPs are added or removed.
    async fn update(
        &mut self,
        table: Vec<PeerState>,
        now: u64,
        heartbeats: &mut Heartbeats,
    ) -> bool {
        let transitions = self.membership.observe(table, now);
        for t in &transitions {
            log_transition(t, now, &self.membership);
            self.count_transition(t, now);
        }
        self.report_state();
        let mut members: Vec<Member> = self
            .membership
            .view_peers()
            .into_iter()
            .map(|id| Member {
                id,
                weight: self
                    .membership
                    .peer(id)
                    .map_or(1, |p| u32::from(p.weight.max(1))),
            })
            .collect();
        if self.active() {
            members.push(Member {
                id: self.cfg.node_id,
                weight: u32::from(self.cfg.weight),
            });
        }
        members.sort();
        self.check_views(&members);

        // Who holds what now: our own addresses and what members said in their heartbeats;
        // a VIP claimed twice counts as the lower id's.
        let mut holders: BTreeMap<IpAddr, u32> = BTreeMap::new();
        let claims = self.held.keys().map(|v| (*v, self.cfg.node_id)).chain(
            self.peers
                .iter()
                .filter(|(id, _)| members.iter().any(|m| m.id == **id))
                .flat_map(|(id, p)| p.vips.iter().map(move |v| (*v, *id))),
        );
        for (vip, id) in claims {
            holders
                .entry(vip)
                .and_modify(|h| *h = (*h).min(id))
                .or_insert(id);
        }
        self.track_conflicts(&members);

        if !self.carrier {
            // Nothing to place on a dead link (everything was released on carrier loss).
            return false;
        }
        // Not active (holding down, or withdrawn by a failing check): we are not a member,
        // so placement gives us nothing and whatever we hold is released below.
        let assignment = placement::place_preferring(
            &self.pool,
            &members,
            &holders,
            &self.cfg.preferred,
            self.cfg.preempt,
        );
        let mine: Vec<Vip> = self
            .cfg
            .vips
            .iter()
            .filter(|v| assignment.get(&v.addr) == Some(&self.cfg.node_id))
            .copied()
            .collect();
        let mut changed = false;
        // Take over first: that is the urgent half.
        let to_take: Vec<Vip> = mine
            .iter()
            .filter(|v| !self.held.contains_key(&v.addr))
            .copied()
            .collect();
        for vip in to_take {
            changed |= self.take(vip).await;
            self.heartbeat_if_due(heartbeats);
        }
        let to_release: Vec<IpAddr> = self
            .held
            .keys()
            .filter(|a| !mine.iter().any(|v| v.addr == **a))
            .copied()
            .collect();
        for addr in to_release {
            self.release(addr, assignment.get(&addr).copied()).await;
            self.heartbeat_if_due(heartbeats);
            changed = true;
        }
        if changed {
            self.state_burst = STATE_BURST;
        }
        changed
    }

    /// Logs when the members' view digests stop or start agreeing with ours.
    fn check_views(&mut self, members: &[Member]) {
        let ids: Vec<u32> = members.iter().map(|m| m.id).collect();
        self.view_digest = view_digest(&ids);
        let differing: Vec<u32> = ids
            .iter()
            .filter(|id| **id != self.cfg.node_id)
            .filter(|id| {
                self.membership
                    .peer(**id)
                    .is_some_and(|p| p.view_digest != self.view_digest)
            })
            .copied()
            .collect();
        let agree = differing.is_empty();
        if agree != self.views_agree {
            self.views_agree = agree;
            if agree {
                info!(view = ?ids, "membership views agree");
            } else {
                info!(view = ?ids, differing = ?differing, "membership views differ");
            }
        }
    }

    /// Re-announces held VIPs that stopped being claimed by a peer: after a split brain the
    /// segment must learn our MAC again.
    fn track_conflicts(&mut self, members: &[Member]) {
        let claimed_by_peers: BTreeSet<IpAddr> = self
            .peers
            .iter()
            .filter(|(id, _)| members.iter().any(|m| m.id == **id))
            .flat_map(|(_, p)| p.vips.iter().copied())
            .collect();
        let now: BTreeSet<IpAddr> = self
            .held
            .keys()
            .filter(|v| claimed_by_peers.contains(v))
            .copied()
            .collect();
        for vip in now.difference(&self.conflicts) {
            warn!(vip = %vip, "VIP claimed by another node too (split brain?)");
            self.state_burst = STATE_BURST;
        }
        let resolved: Vec<IpAddr> = self
            .conflicts
            .difference(&now)
            .filter(|v| self.held.contains_key(v))
            .copied()
            .collect();
        for vip in resolved {
            info!(vip = %vip, "conflict resolved: announcing again");
            self.announce(vip);
        }
        self.conflicts = now;
    }

    /// Sends the burst for `vip` and schedules its repeats; returns the first send's time.
    fn announce(&mut self, vip: IpAddr) -> Option<u64> {
        let mut first = None;
        for _ in 0..self.cfg.announce_burst {
            match self.announcer.announce(vip) {
                Ok(()) => {
                    first.get_or_insert_with(monotonic_ns);
                    self.metrics.announcements.inc();
                }
                Err(e) => warn!("announcing {vip}: {e}"),
            }
        }
        let announcer = Arc::clone(&self.announcer);
        let metrics = Arc::clone(&self.metrics);
        let repeats = self.cfg.announce_repeats.clone();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            for after in repeats {
                tokio::time::sleep_until(start + after).await;
                match announcer.announce(vip) {
                    Ok(()) => {
                        metrics.announcements.inc();
                    }
                    Err(e) => debug!("repeating announcement of {vip}: {e}"),
                }
            }
        });
        match self.held.get_mut(&vip) {
            Some(held) => std::mem::replace(&mut held.repeats, task).abort(),
            None => task.abort(),
        }
        first
    }

    fn refresh_announcements(&self) {
        for vip in self.held.keys() {
            match self.announcer.announce(*vip) {
                Ok(()) => {
                    self.metrics.announcements.inc();
                }
                Err(e) => debug!("refreshing the announcement of {vip}: {e}"),
            }
        }
    }

    /// Metrics for one view change.
    fn count_transition(&mut self, t: &Transition, now: u64) {
        match *t {
            Transition::Joined { node_id } => {
                self.metrics
                    .peer_up
                    .get_or_create(&PeerLabel {
                        peer: node_id.to_string(),
                    })
                    .set(1);
            }
            Transition::Left { node_id, because } => {
                self.metrics
                    .peer_up
                    .get_or_create(&PeerLabel {
                        peer: node_id.to_string(),
                    })
                    .set(0);
                let reason = match because {
                    LeftBecause::Timeout { last_seen_ns } => {
                        self.metrics
                            .detection_seconds
                            .observe(now.saturating_sub(last_seen_ns) as f64 / 1e9);
                        "timeout"
                    }
                    LeftBecause::Leaving => "leaving",
                    LeftBecause::Restarted => "restarted",
                    LeftBecause::NotMature => "withdrawn",
                };
                self.metrics
                    .failovers
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc();
                self.last_loss_ns = Some(now);
            }
        }
    }

    /// Adds and announces a VIP; returns whether it is now held.
    async fn take(&mut self, vip: Vip) -> bool {
        match self.link.add(&vip).await {
            Ok(added) => {
                let mono_ns = monotonic_ns();
                info!(target: "vipd::timeline", event = "address_added", vip = %vip.addr, mono_ns,
                    already_present = added == Added::AlreadyPresent, "took over VIP");
            }
            Err(e) => {
                // Not held: the next reconcile tries again.
                warn!("taking over {vip}: {e}");
                return false;
            }
        }
        self.held.insert(
            vip.addr,
            Held {
                vip,
                repeats: tokio::spawn(async {}),
            },
        );
        if let Some(mono_ns) = self.announce(vip.addr) {
            info!(target: "vipd::timeline", event = "first_announce", vip = %vip.addr, mono_ns,
                burst = self.cfg.announce_burst, "announced VIP");
            if let Some(loss) = self
                .last_loss_ns
                .filter(|l| mono_ns.saturating_sub(*l) < 1_000_000_000)
            {
                self.metrics
                    .takeover_seconds
                    .observe((mono_ns - loss) as f64 / 1e9);
            }
        }
        self.metrics
            .vip_owned
            .get_or_create(&VipLabel {
                vip: vip.addr.to_string(),
            })
            .set(1);
        self.hooks.vip_acquired(vip.addr);
        true
    }

    async fn release(&mut self, addr: IpAddr, new_owner: Option<u32>) {
        let Some(held) = self.held.remove(&addr) else {
            return;
        };
        held.repeats.abort();
        self.metrics
            .vip_owned
            .get_or_create(&VipLabel {
                vip: addr.to_string(),
            })
            .set(0);
        self.hooks.vip_released(addr);
        match self.link.remove(&held.vip).await {
            Ok(true) => info!(vip = %addr, new_owner, "released VIP"),
            Ok(false) => {
                warn!(vip = %held.vip, "released VIP, which was no longer on the interface")
            }
            Err(e) => {
                // Still on the interface: keep it as held, so the next reconcile retries
                // and peers are not told it is free while it is not.
                warn!("releasing {}: {e}; will retry", held.vip);
                self.held.insert(addr, held);
            }
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

/// Removes VIPs of this pool that a crashed earlier run left behind; refuses to touch an
/// address that is configured with another prefix (it is somebody's real address).
pub(crate) async fn remove_leftovers(link: &Link, vips: &[Vip]) -> anyhow::Result<()> {
    let present = link.addresses().await?;
    for vip in vips {
        for &(addr, len) in present.iter().filter(|(a, _)| *a == vip.addr) {
            if len != vip.prefix_len {
                bail!(
                    "{addr}/{len} is already configured on {} and is not one of our VIPs \
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
pub(crate) fn check_privileges() -> anyhow::Result<()> {
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

/// A peer's state for status: up, holding-down, leaving or down.
fn peer_state(p: &PeerState, now: u64, dead: Duration) -> &'static str {
    if now.saturating_sub(p.last_seen_ns) >= dead.as_nanos() as u64 {
        "down"
    } else if p.flags & FLAG_LEAVING != 0 {
        "leaving"
    } else if p.flags & FLAG_MATURE != 0 {
        "up"
    } else {
        "holding-down"
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_state;

    #[test]
    fn state_sections_must_be_newer_and_of_the_current_incarnation() {
        // The first one of the incarnation the XDP program recorded.
        assert!(fresh_state(None, Some(10), 10, 1));
        // Not of the recorded incarnation (an old one replayed, or a peer not recorded).
        assert!(!fresh_state(None, Some(10), 9, 100));
        assert!(!fresh_state(None, None, 10, 1));
        // Newer than the last accepted, or not.
        assert!(fresh_state(Some((10, 5)), Some(10), 10, 6));
        assert!(!fresh_state(Some((10, 5)), Some(10), 10, 5));
        assert!(!fresh_state(Some((10, 5)), Some(10), 10, 4));
        // A restart: the new incarnation, whatever its sequence.
        assert!(fresh_state(Some((10, 5)), Some(11), 11, 1));
        assert!(!fresh_state(Some((11, 1)), Some(11), 10, 6));
    }
}
