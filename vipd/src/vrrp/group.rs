//! One VRRP group as the daemon runs it ([`Group`]): how it is made (advert source
//! address, virtual-MAC macvlan), the multicast memberships that let its adverts in, and
//! the address conversions between configuration, maps and the wire.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use tracing::info;
use vipd_common::maps::vrrp_key;

use super::{
    advert,
    fsm::{VirtualRouter, VrrpState},
    host::{self, HostChanges},
    unicast::UnicastSocket,
};
use crate::{
    announce::Announcer, config::Vrrp, fastpath::sends::SendWatch, netlink::Link, vip::Vip,
};

/// One group at run time, owned by the fast path.
pub struct Group {
    pub(super) cfg: Vrrp,
    pub(super) key: u32,
    pub(super) router: VirtualRouter,
    /// The adverts' source: primary IPv4 address or IPv6 link-local address.
    pub(super) source: IpAddr,
    pub(super) vips: Vec<IpAddr>,
    /// Index of the interface the group runs on.
    pub(super) ifindex: u32,
    /// Failing advert sends, said once per episode.
    pub(super) sends: SendWatch,
    /// Where the VIPs go: the interface, or the group's virtual-MAC macvlan (its index
    /// and name).
    pub(super) vip_ifindex: u32,
    pub(super) link_name: String,
    /// Sends adverts and announcements from `link`'s MAC.
    pub(super) announcer: Arc<Announcer>,
    /// VIPs the kernel would not add (while Master) or remove, tried again on a timer.
    pub(super) retry: Retry,
    /// With `unicast_peers`: the socket adverts go to the peers through.
    pub(super) unicast: Option<UnicastSocket>,
}

/// A group's address changes the kernel refused, tried again every [`Retry::EVERY_NS`]: a
/// Master must not advertise for a VIP it does not have, a Backup must not keep one.
#[derive(Debug, Default)]
pub(super) struct Retry {
    /// To add (Master only).
    pub(super) add: Vec<Vip>,
    /// To remove.
    pub(super) remove: Vec<Vip>,
    /// When to try next.
    pub(super) at: Option<u64>,
}

impl Retry {
    /// Between two tries.
    pub(super) const EVERY_NS: u64 = 100_000_000;

    /// Records the outcome of adding `tried` at `now`: `failed` are tried again.
    pub(super) fn added(&mut self, now: u64, tried: &[Vip], failed: &[Vip]) {
        self.add.retain(|v| !tried.contains(v));
        self.add.extend(failed);
        self.arm(now);
    }

    /// Records the outcome of removing `tried` at `now`: `failed` are tried again, and none
    /// of them is to be added any more.
    pub(super) fn removed(&mut self, now: u64, tried: &[Vip], failed: &[Vip]) {
        self.add.retain(|v| !tried.contains(v));
        self.remove.retain(|v| !tried.contains(v));
        self.remove.extend(failed);
        self.arm(now);
    }

    fn arm(&mut self, now: u64) {
        self.at = (!self.add.is_empty() || !self.remove.is_empty()).then_some(now + Self::EVERY_NS);
    }
}

/// What the slow path keeps of a group it handed to the fast path.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub(super) cfg: Vrrp,
    pub(super) key: u32,
    pub(super) ifindex: u32,
    pub(super) source: IpAddr,
    pub(super) link_name: String,
    /// Whether the slow path asked it to run.
    pub(super) started: bool,
}

impl Group {
    /// What the slow path keeps of it.
    pub(super) fn info(&self) -> GroupInfo {
        GroupInfo {
            cfg: self.cfg.clone(),
            key: self.key,
            ifindex: self.ifindex,
            source: self.source,
            link_name: self.link_name.clone(),
            started: false,
        }
    }
}

/// One interface groups run on.
pub(super) struct Port {
    pub(super) link: Link,
    pub(super) announcer: Arc<Announcer>,
}

/// Makes group `g` on `port` (in Initialize): its advert source and, with `vmac`, its
/// macvlan. `all` are every group's VIPs (never an advert source).
pub(super) async fn new_group(
    port: &Port,
    host: &mut HostChanges,
    g: &Vrrp,
    all: &[Vip],
) -> anyhow::Result<Group> {
    let addresses = port.link.addresses().await?;
    let source = source_address(&addresses, g, all)
        .with_context(|| format!("VRRP group {} on {}", g.vrid, g.interface()))?;
    let (link, announcer) = if g.vmac {
        if !g.ipv6() {
            host.arp_settings(g.interface())?;
        }
        let name = g.vmac_name(port.link.index);
        host.macvlan(&name);
        let vlink = port
            .link
            .add_macvlan(&name, g.virtual_mac(), || host::no_ipv6_autoconf(&name))
            .await
            .with_context(|| format!("VRRP group {}: the virtual MAC", g.vrid))?;
        let a = Announcer::open(vlink.index, vlink.mac)
            .with_context(|| format!("opening an AF_PACKET socket on {name}"))?;
        info!(vrid = g.vrid, interface = %name, "virtual MAC {}", crate::netlink::mac_text(vlink.mac));
        (vlink, Arc::new(a))
    } else {
        (port.link.clone(), Arc::clone(&port.announcer))
    };
    let unicast = match g.unicast() {
        true => Some(
            UnicastSocket::open(source, &port.link.name, port.link.index).with_context(|| {
                format!(
                    "VRRP group {}: a raw socket for unicast adverts from {source} (needs \
                     CAP_NET_RAW)",
                    g.vrid
                )
            })?,
        ),
        false => None,
    };
    Ok(Group {
        unicast,
        ifindex: port.link.index,
        vip_ifindex: link.index,
        link_name: link.name.clone(),
        announcer,
        key: vrrp_key(g.ipv6(), g.vrid),
        router: VirtualRouter::new(g.priority, g.interval_cs(), g.preempt, source)
            .with_version(g.version),
        source,
        vips: g.vips.iter().map(|v| v.addr).collect(),
        sends: SendWatch::default(),
        retry: Retry::default(),
        cfg: g.clone(),
    })
}

/// "51/ipv4 prio 150 on eth0", for logs.
pub(super) fn describe(g: &Vrrp) -> String {
    format!(
        "{}/{} prio {} on {}",
        g.vrid,
        g.family(),
        g.priority,
        g.interface()
    )
}

/// The address adverts of `group` are sent from: its `unicast_src`, which must be one of
/// the interface's addresses; else the interface's first IPv4 address that is not a VIP,
/// or its IPv6 link-local address (RFC 5798 section 5.1.2.1).
pub(super) fn source_address(
    addresses: &[(IpAddr, u8)],
    group: &Vrrp,
    vips: &[Vip],
) -> anyhow::Result<IpAddr> {
    if let Some(src) = group.unicast_src {
        if !addresses.iter().any(|(a, _)| *a == src) {
            bail!(
                "unicast_src {src} is not an address of {}",
                group.interface()
            );
        }
        return Ok(src);
    }
    let is_vip = |a: &IpAddr| vips.iter().any(|v| v.addr == *a);
    let found = if group.ipv6() {
        addresses
            .iter()
            .map(|(a, _)| *a)
            .find(|a| matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
    } else {
        addresses
            .iter()
            .map(|(a, _)| *a)
            .find(|a| a.is_ipv4() && !is_vip(a))
    };
    match found {
        Some(a) => Ok(a),
        None if group.ipv6() => {
            bail!("no IPv6 link-local address to send adverts from (is IPv6 enabled?)")
        }
        None => bail!("no IPv4 address (other than a VIP) to send adverts from"),
    }
}

/// Joins 224.0.0.18 / ff02::12 on each multicast group's interface where `joined` does not yet,
/// so its multicast filter lets adverts in (the sockets receive nothing: VRRP is not UDP).
/// Keep the sockets to stay joined. Tries every group; says which ones failed.
pub(super) fn join_groups(
    groups: &[GroupInfo],
    joined: &mut Vec<(u32, bool, std::net::UdpSocket)>,
) -> anyhow::Result<()> {
    let join = |g: &GroupInfo| -> std::io::Result<std::net::UdpSocket> {
        match g.source {
            IpAddr::V4(local) => {
                let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                s.join_multicast_v4(&advert::GROUP_V4, &local)?;
                Ok(s)
            }
            IpAddr::V6(_) => {
                let s = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
                s.join_multicast_v6(&advert::GROUP_V6, g.ifindex)?;
                Ok(s)
            }
        }
    };
    let mut failed = Vec::new();
    for g in groups.iter().filter(|g| !g.cfg.unicast()) {
        let ipv6 = g.cfg.ipv6();
        if joined
            .iter()
            .any(|(i, v6, _)| (*i, *v6) == (g.ifindex, ipv6))
        {
            continue;
        }
        match join(g) {
            Ok(socket) => joined.push((g.ifindex, ipv6, socket)),
            Err(e) => failed.push(format!("VRID {} on {}: {e}", g.cfg.vrid, g.link_name)),
        }
    }
    if !failed.is_empty() {
        bail!(
            "joining the VRRP multicast group (224.0.0.18 / ff02::12): {}",
            failed.join("; ")
        );
    }
    Ok(())
}

pub(super) fn state_name(s: VrrpState) -> &'static str {
    match s {
        VrrpState::Initialize => "initialize",
        VrrpState::Backup => "backup",
        VrrpState::Master => "master",
    }
}

pub(super) fn ip_of(bytes: &[u8; 16], ipv6: bool) -> IpAddr {
    if ipv6 {
        Ipv6Addr::from(*bytes).into()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    }
}

/// Addresses as an advert carries them: 4 or 16 bytes each, back to back.
pub(super) fn address_bytes(addrs: &[IpAddr]) -> Vec<u8> {
    addrs
        .iter()
        .flat_map(|a| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        })
        .collect()
}

pub(super) fn bytes_of(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str) -> Vip {
        s.parse().unwrap()
    }

    #[test]
    fn refused_changes_are_tried_again_until_they_succeed() {
        let (a, b) = (vip("192.0.2.1"), vip("192.0.2.2"));
        let mut r = Retry::default();
        r.added(0, &[a, b], &[b]);
        assert_eq!((r.add.clone(), r.at), (vec![b], Some(Retry::EVERY_NS)));
        // The retry succeeds: nothing left, no timer.
        r.added(Retry::EVERY_NS, &[b], &[]);
        assert!(r.add.is_empty());
        assert_eq!(r.at, None);
        // A removal the kernel refuses is tried again, and the VIP is no longer to add.
        r.added(1, &[a], &[a]);
        r.removed(2, &[a], &[a]);
        assert_eq!((r.add.clone(), r.remove.clone()), (vec![], vec![a]));
        assert_eq!(r.at, Some(2 + Retry::EVERY_NS));
        r.removed(3, &[a], &[]);
        assert!(r.remove.is_empty());
        assert_eq!(r.at, None);
    }
}
