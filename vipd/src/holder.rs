//! A VIP held, for both modes: the fast path adds and announces ([`take`]) or removes
//! ([`release`]) VIPs in batches; the slow path reports what it did — timeline log lines,
//! metrics, hooks — and repeats the announcements ([`Announcements`]).
//!
//! Timeline log lines (target `vipd::timeline`, CLOCK_MONOTONIC ns taken on the fast
//! path): `address_added` and `first_announce`, per VIP.

use std::{collections::BTreeMap, io, net::IpAddr, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    hooks::Hooks,
    ifaddr::{IfAddrs, Outcome},
    metrics::{Metrics, VipLabel},
    vip::Vip,
};

/// A VIP added and announced by the fast path.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    /// The VIP.
    pub vip: Vip,
    /// When its address was in (CLOCK_MONOTONIC ns).
    pub added_ns: u64,
    /// It was on the interface already.
    pub already_present: bool,
    /// When its first announcement was sent, if one was.
    pub first_announce_ns: Option<u64>,
    /// When the loss that caused the takeover was declared, if one did.
    pub loss_ns: Option<u64>,
}

/// A VIP the fast path gave up.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    /// The VIP.
    pub vip: Vip,
    /// Who it goes to, if known (pool mode).
    pub new_owner: Option<u32>,
    /// What the kernel said.
    pub outcome: Outcome,
}

/// Adds `vips` on interface `ifindex` in batches and announces each batch (`burst` frames
/// per VIP) as soon as its addresses are in; `between` runs after each batch (to keep
/// heartbeats or adverts on time). Returns the VIPs taken, in order, and those the kernel
/// refused. `loss_ns` is when the loss that caused the takeover was declared.
pub fn take(
    addrs: &mut IfAddrs,
    announcer: &Announcer,
    ifindex: u32,
    vips: &[Vip],
    burst: u16,
    loss_ns: Option<u64>,
    mut between: impl FnMut(),
) -> (Vec<Taken>, Vec<(Vip, io::Error)>) {
    #[cfg(debug_assertions)]
    crate::fault::stall_before_adding(vips);
    let mut taken = Vec::with_capacity(vips.len());
    let mut failed = Vec::new();
    let result = addrs.add(ifindex, vips, |chunk, outcomes| {
        let added_ns = monotonic_ns();
        let ok: Vec<(Vip, bool)> = chunk
            .iter()
            .zip(outcomes)
            .filter_map(|(vip, o)| match o {
                Outcome::Done => Some((*vip, false)),
                Outcome::Unchanged => Some((*vip, true)),
                Outcome::Failed(errno) => {
                    failed.push((*vip, io::Error::from_raw_os_error(*errno)));
                    None
                }
            })
            .collect();
        let addrs: Vec<IpAddr> = ok.iter().map(|(v, _)| v.addr).collect();
        let (frames, _) = announcer.announce_many(&addrs, burst);
        let first_announce_ns = (frames > 0).then(monotonic_ns);
        taken.extend(ok.into_iter().map(|(vip, already_present)| Taken {
            vip,
            added_ns,
            already_present,
            first_announce_ns,
            loss_ns,
        }));
        between();
    });
    if let Err(e) = result {
        for vip in vips.iter().filter(|v| !taken.iter().any(|t| t.vip == **v)) {
            if !failed.iter().any(|(f, _)| f == vip) {
                failed.push((*vip, io::Error::new(e.kind(), e.to_string())));
            }
        }
    }
    (taken, failed)
}

/// Removes `vips` (each with who it goes to) from interface `ifindex`.
pub fn release(addrs: &mut IfAddrs, ifindex: u32, vips: &[(Vip, Option<u32>)]) -> Vec<Released> {
    let list: Vec<Vip> = vips.iter().map(|(v, _)| *v).collect();
    let mut released = Vec::with_capacity(vips.len());
    let result = addrs.remove(ifindex, &list, |chunk, outcomes| {
        for (vip, outcome) in chunk.iter().zip(outcomes) {
            let new_owner = vips.iter().find(|(v, _)| v == vip).and_then(|(_, o)| *o);
            released.push(Released {
                vip: *vip,
                new_owner,
                outcome: *outcome,
            });
        }
    });
    if let Err(e) = result {
        for (vip, new_owner) in vips.iter().skip(released.len()) {
            released.push(Released {
                vip: *vip,
                new_owner: *new_owner,
                outcome: Outcome::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
            });
        }
    }
    released
}

/// The slow path's side of held VIPs: reports takes and releases (logs, metrics, hooks)
/// and repeats announcements on the configured schedule.
pub struct Announcements {
    metrics: Arc<Metrics>,
    /// Frames sent at once per VIP (what the fast path sent).
    burst: u16,
    repeats: Vec<Duration>,
    /// Held VIPs, each with its announcer and the task repeating its announcements.
    held: BTreeMap<IpAddr, (Arc<Announcer>, JoinHandle<()>)>,
}

impl Announcements {
    /// Nothing held yet; `burst` and `repeats` as configured.
    pub fn new(metrics: Arc<Metrics>, burst: u16, repeats: Vec<Duration>) -> Self {
        Self {
            metrics,
            burst,
            repeats,
            held: BTreeMap::new(),
        }
    }

    /// Takes a new announcement schedule (reload).
    pub fn reconfigure(&mut self, burst: u16, repeats: Vec<Duration>) {
        self.burst = burst;
        self.repeats = repeats;
    }

    /// The VIPs held, as reported.
    pub fn held(&self) -> impl Iterator<Item = &IpAddr> {
        self.held.keys()
    }

    /// Whether `vip` is held, as reported.
    pub fn holds(&self, vip: &IpAddr) -> bool {
        self.held.contains_key(vip)
    }

    /// Reports VIPs the fast path took (`vrid` in VRRP mode) and repeats their
    /// announcements from `announcer`.
    pub fn taken(
        &mut self,
        list: &[Taken],
        vrid: Option<u8>,
        announcer: &Arc<Announcer>,
        hooks: &Hooks,
    ) {
        for t in list {
            info!(target: "vipd::timeline", event = "address_added", vip = %t.vip.addr,
                mono_ns = t.added_ns, already_present = t.already_present, vrid, "took over VIP");
            if let Some(mono_ns) = t.first_announce_ns {
                info!(target: "vipd::timeline", event = "first_announce", vip = %t.vip.addr,
                    mono_ns, burst = self.burst, "announced VIP");
                self.metrics.announcements.inc_by(u64::from(self.burst));
                if let Some(loss) = t.loss_ns {
                    self.metrics
                        .takeover_seconds
                        .observe(mono_ns.saturating_sub(loss) as f64 / 1e9);
                }
            }
            self.set_owned(t.vip.addr, true);
            hooks.vip_acquired(t.vip.addr);
            self.repeat(t.vip.addr, announcer);
        }
    }

    /// Reports held VIPs that were removed from outside and that the fast path added and
    /// announced again; repeats their announcements.
    pub fn restored(&mut self, vips: &[Vip], announcer: &Arc<Announcer>) {
        const SHOWN: usize = 8;
        let shown: Vec<String> = vips.iter().take(SHOWN).map(Vip::to_string).collect();
        warn!(
            count = vips.len(),
            "held VIPs were removed from the interface from outside (ip addr flush, a \
             network manager?): added and announced again: {}{}",
            shown.join(", "),
            if vips.len() > SHOWN { ", …" } else { "" }
        );
        self.metrics.vips_restored.inc_by(vips.len() as u64);
        self.metrics
            .announcements
            .inc_by(u64::from(self.burst) * vips.len() as u64);
        for v in vips {
            self.repeat(v.addr, announcer);
        }
    }

    /// Reports VIPs the fast path released (`vrid` in VRRP mode); those the kernel kept
    /// stay held.
    pub fn released(&mut self, list: &[Released], vrid: Option<u8>, hooks: &Hooks) {
        for r in list {
            match r.outcome {
                Outcome::Done => {
                    info!(vip = %r.vip.addr, new_owner = r.new_owner, vrid, "released VIP")
                }
                Outcome::Unchanged => {
                    warn!(vip = %r.vip, vrid, "released VIP, which was no longer on the interface")
                }
                Outcome::Failed(errno) => {
                    let e = io::Error::from_raw_os_error(errno);
                    warn!("releasing {}: {e}; will retry", r.vip);
                    continue;
                }
            }
            if let Some((_, task)) = self.held.remove(&r.vip.addr) {
                task.abort();
            }
            self.set_owned(r.vip.addr, false);
            hooks.vip_released(r.vip.addr);
        }
    }

    /// A held VIP was announced again at once (a conflict resolved): count it and restart
    /// its repeats.
    pub fn announced_again(&mut self, vip: IpAddr) {
        self.metrics.announcements.inc_by(u64::from(self.burst));
        if let Some(announcer) = self.held.get(&vip).map(|(a, _)| Arc::clone(a)) {
            self.repeat(vip, &announcer);
        }
    }

    /// Announces a held VIP again now (a burst) and restarts its repeats: another host
    /// claimed it.
    pub fn defend(&mut self, vip: IpAddr) {
        let Some(announcer) = self.held.get(&vip).map(|(a, _)| Arc::clone(a)) else {
            return;
        };
        let (sent, error) = announcer.announce_many(&[vip], self.burst);
        self.metrics.announcements.inc_by(sent as u64);
        if let Some(e) = error {
            debug!("announcing {vip} again: {e}");
        }
        self.repeat(vip, &announcer);
    }

    /// Announces every held VIP once (the periodic refresh).
    pub fn refresh(&self) {
        for (vip, (announcer, _)) in &self.held {
            match announcer.announce(*vip) {
                Ok(()) => {
                    self.metrics.announcements.inc();
                }
                Err(e) => debug!("refreshing the announcement of {vip}: {e}"),
            }
        }
    }

    fn set_owned(&self, vip: IpAddr, owned: bool) {
        self.metrics
            .vip_owned
            .get_or_create(&VipLabel {
                vip: vip.to_string(),
            })
            .set(i64::from(owned));
    }

    /// Repeats the announcement of `vip` on the schedule (the fast path sent the first
    /// burst), replacing an earlier schedule.
    fn repeat(&mut self, vip: IpAddr, announcer: &Arc<Announcer>) {
        let a = Arc::clone(announcer);
        let metrics = Arc::clone(&self.metrics);
        let repeats = self.repeats.clone();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            for after in repeats {
                tokio::time::sleep_until(start + after).await;
                match a.announce(vip) {
                    Ok(()) => {
                        metrics.announcements.inc();
                    }
                    Err(e) => debug!("repeating announcement of {vip}: {e}"),
                }
            }
        });
        if let Some((_, old)) = self.held.insert(vip, (Arc::clone(announcer), task)) {
            old.abort();
        }
    }
}
