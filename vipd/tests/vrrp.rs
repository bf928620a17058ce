//! VRRP mode in network namespaces, against keepalived and FRRouting's vrrpd as the
//! reference implementations: VRRPv3 and VRRPv2, multicast and unicast, takeover on a
//! hard failure (IPv4 and IPv6), graceful handover with priority-0 adverts checked byte by
//! byte on the wire, preemption both ways and its absence, crafted bad adverts counted by
//! the XDP program and ignored, adverts listing other addresses logged, groups on two
//! interfaces, SIGHUP reloads, another host claiming a Master's VIP (a conflict,
//! defended), and a frozen Master fenced.
//!
//! These need root: they are ignored unless run with `--include-ignored` (as CI does).
//! They take turns (one lab at a time): with 100 ms adverts a starved scheduler could fake
//! a master failure.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use common::{VIPD, counter, status, stop};
use vipd_common::vrrp::{self, Advert, Family};
use vipd_lab::{
    lab::{Host, Lab, require_root, wait_until},
    pcap::{Capture, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ethernet, Ipv4, Ipv6, parse_mac},
};

/// Generous bound for anything that takes a fraction of a second (CI machines are slow).
const WAIT: Duration = Duration::from_secs(20);
const VRID: u8 = 51;
const VIP4: &str = "192.0.2.200";
const VIP4_CIDR: &str = "192.0.2.200/24";
const VIP6: &str = "2001:db8::200";
const VIP6_CIDR: &str = "2001:db8::200/64";
const GROUP4: [u8; 4] = [224, 0, 0, 18];
const GROUP4_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
const GROUP6_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x12];
/// The advert interval of every router in these tests, in centiseconds (100 ms).
const INTERVAL_CS: u16 = 10;
/// The VRRPv2 tests' password (keepalived's `auth_pass`), zero-padded.
const V2_PASS: [u8; 8] = *b"vipdtest";
/// keepalived's log lines on entering a state.
const KA_MASTER: &str = "Entering MASTER STATE";
const KA_BACKUP: &str = "Entering BACKUP STATE";

static SERIAL: Mutex<()> = Mutex::new(());

/// One namespace lab at a time (a failed test does not stop the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// keepalived on `k`, vipd on `v`, and a client.
struct Routers {
    lab: Lab,
    k: Host,
    v: Host,
    client: Host,
}

fn routers(tag: &str, ipv6: bool) -> anyhow::Result<Routers> {
    let mut lab = Lab::new(tag)?;
    let k = lab.add_host("k", "192.0.2.11/24", "02:00:00:00:00:0b")?;
    let v = lab.add_host("v", "192.0.2.12/24", "02:00:00:00:00:0c")?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    if ipv6 {
        lab.add_address(&k, "2001:db8::11/64")?;
        lab.add_address(&v, "2001:db8::12/64")?;
        lab.add_address(&client, "2001:db8::100/64")?;
    }
    Ok(Routers { lab, k, v, client })
}

/// A keepalived instance of the tests: VRID 51, one VIP on eth0, starting as backup.
#[derive(Clone, Copy)]
struct KaConf<'a> {
    /// `vrrp_version`: 3 (100 ms adverts) or 2 (1 s adverts, `auth_type PASS` with
    /// [`V2_PASS`]).
    version: u8,
    priority: u8,
    vip_cidr: &'a str,
    nopreempt: bool,
    /// Unicast: (`unicast_src_ip`, the one `unicast_peer`).
    unicast: Option<(&'a str, &'a str)>,
}

impl KaConf<'_> {
    fn text(&self, host: &Host) -> String {
        let v2 = self.version == vrrp::VERSION_2;
        let mut options = String::new();
        if self.nopreempt {
            options += "    nopreempt\n";
        }
        if v2 {
            options += &format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {}\n    }}\n",
                String::from_utf8_lossy(&V2_PASS)
            );
        }
        if let Some((src, peer)) = self.unicast {
            options +=
                &format!("    unicast_src_ip {src}\n    unicast_peer {{\n        {peer}\n    }}\n");
        }
        format!(
            "global_defs {{\n    vrrp_version {}\n    router_id {}\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {VRID}\n\
             \x20   priority {}\n    advert_int {}\n{options}    virtual_ipaddress {{\n        {} dev eth0\n    }}\n}}\n",
            self.version,
            host.name,
            self.priority,
            if v2 { "1" } else { "0.1" },
            self.vip_cidr,
        )
    }
}

/// A keepalived configuration: VRRPv3, 100 ms adverts, multicast.
fn keepalived_conf(host: &Host, priority: u8, vip_cidr: &str, nopreempt: bool) -> String {
    KaConf {
        version: vrrp::VERSION_3,
        priority,
        vip_cidr,
        nopreempt,
        unicast: None,
    }
    .text(host)
}

/// Starts keepalived and waits until it runs its VRRP instance (in BACKUP, init).
fn start_keepalived(lab: &mut Lab, host: &Host, log: &str, conf: &str) -> anyhow::Result<usize> {
    let p = lab.spawn_keepalived(host, log, conf)?;
    lab.proc(p).wait_for_line(&["Startup complete"], WAIT)?;
    Ok(p)
}

/// Starts `vipd run --vrrp 51,priority=…,vip=…,interval=100ms<extra>` and waits for its
/// first transition (out of initialize, at start-up).
fn start_vipd(
    lab: &mut Lab,
    host: &Host,
    log: &str,
    priority: u8,
    vip_cidr: &str,
    extra: &str,
) -> anyhow::Result<usize> {
    let spec = format!("{VRID},priority={priority},vip={vip_cidr},interval=100ms{extra}");
    let p = lab.spawn_vipd(host, 1, log, Path::new(VIPD), &["--vrrp", &spec])?;
    lab.proc(p)
        .wait_for_line(&["vrrp state", "vrid=51", "reason=startup"], WAIT)?;
    Ok(p)
}

/// Needles of vipd's transition lines for VRID 51 in `family` into state `to`.
fn vipd_to<'a>(family: &'a str, to: &'a str) -> [&'a str; 4] {
    ["vrrp state", "vrid=51", family, to]
}

/// The status of VRID 51 in `family` ("ipv4", "ipv6").
fn group<'a>(status: &'a serde_json::Value, family: &str) -> anyhow::Result<&'a serde_json::Value> {
    status["vrrp"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["vrid"] == u64::from(VRID) && g["family"] == family)
        .with_context(|| format!("no VRID {VRID} {family} in the status: {status:#}"))
}

/// Every `vrrp_*` counter of the status.
fn vrrp_counters(
    status: &serde_json::Value,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let counters = status["counters"]
        .as_object()
        .with_context(|| format!("no counters in the status: {status:#}"))?;
    Ok(counters
        .iter()
        .filter(|(k, _)| k.starts_with("vrrp_"))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(u64::MAX)))
        .collect())
}

/// Waits until VRID 51 of vipd on `host` is in `state` with `master` as the master.
fn wait_group(
    lab: &Lab,
    host: &Host,
    family: &str,
    state: &str,
    master: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    wait_until(
        &format!("vipd's VRID {VRID} {family} in {state}, master {master:?}"),
        WAIT,
        || {
            last = status(lab, host)?;
            let g = group(&last, family)?;
            Ok(g["state"] == state && master.is_none_or(|m| g["master"] == m))
        },
    )
    .with_context(|| format!("last status: {last:#}"))?;
    Ok(last)
}

/// Waits until `vip` is on `owner` and on none of `others`.
fn wait_vip_only_on(lab: &Lab, vip: &str, owner: &Host, others: &[&Host]) -> anyhow::Result<()> {
    wait_until(&format!("{vip} on {} only", owner.name), WAIT, || {
        Ok(lab.has_address(owner, vip)?
            && others
                .iter()
                .all(|h| !lab.has_address(h, vip).unwrap_or(true)))
    })
    .with_context(|| {
        format!(
            "{} has {:?}; {:?}",
            owner.name,
            lab.addresses(owner).unwrap_or_default(),
            others
                .iter()
                .map(|h| (h.name.clone(), lab.addresses(h).unwrap_or_default()))
                .collect::<Vec<_>>()
        )
    })
}

fn assert_vip_only_on(lab: &Lab, vip: &str, owner: &Host, others: &[&Host]) -> anyhow::Result<()> {
    ensure!(
        lab.has_address(owner, vip)?,
        "{vip} is not on {}: {:?}",
        owner.name,
        lab.addresses(owner)?
    );
    for h in others {
        ensure!(
            !lab.has_address(h, vip)?,
            "{vip} is on {} too: {:?}",
            h.name,
            lab.addresses(h)?
        );
    }
    Ok(())
}

/// Waits until the client's ping to `vip` is answered and its neighbour entry for `vip`
/// holds `owner`'s MAC. (Gratuitous ARP / unsolicited NA only update an entry the client
/// already has: the ping makes one the first time.)
fn wait_client_reaches(c: &Routers, vip: &str, owner: &Host) -> anyhow::Result<()> {
    wait_until(&format!("{vip} answering the client"), WAIT, || {
        c.lab.ping(&c.client, vip)
    })?;
    wait_client_entry(c, vip, owner)
}

/// After a takeover: waits until the client's existing neighbour entry for `vip` holds
/// the new `owner`'s MAC before the client sends anything (so the new owner's gratuitous
/// ARP / unsolicited NA did it, not a new resolution), then for its ping to be answered.
fn wait_client_follows(c: &Routers, vip: &str, owner: &Host) -> anyhow::Result<()> {
    wait_client_entry(c, vip, owner)?;
    wait_client_reaches(c, vip, owner)
}

fn wait_client_entry(c: &Routers, vip: &str, owner: &Host) -> anyhow::Result<()> {
    let mut mac = None;
    wait_until(
        &format!(
            "the client's neighbour entry for {vip} to hold {}'s MAC",
            owner.name
        ),
        WAIT,
        || {
            mac = c.lab.neighbour_mac(&c.client, vip)?;
            Ok(mac.as_deref() == Some(owner.mac.as_str()))
        },
    )
    .with_context(|| format!("it holds {mac:?}"))
}

/// The first link-local address of `host`'s eth0.
fn link_local(lab: &Lab, host: &Host) -> anyhow::Result<Ipv6Addr> {
    lab.addresses(host)?
        .iter()
        .filter_map(|a| a.split('/').next()?.parse::<Ipv6Addr>().ok())
        .find(|a| a.segments()[0] == 0xfe80)
        .with_context(|| format!("no link-local address on {}", host.name))
}

/// The name vipd gives the IPv4 macvlan of `vrid` on `host`'s eth0: `vrrp4.<vrid>.<ifindex>`.
fn vmac_link(lab: &Lab, host: &Host, vrid: u8) -> anyhow::Result<String> {
    let out = lab.exec(host, "cat", &["/sys/class/net/eth0/ifindex"])?;
    let index: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(format!("vrrp4.{vrid}.{index}"))
}

/// A VRRP advert seen on the wire, with the headers it came in.
#[derive(Clone, Debug)]
struct Seen {
    /// Index of the packet in the capture.
    index: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// TTL or hop limit.
    ttl: u8,
    src: IpAddr,
    dst: IpAddr,
    advert: Advert,
    addrs: Vec<IpAddr>,
    /// VRRPv2: the authentication data.
    auth_data: Option<[u8; 8]>,
}

/// Every VRRP advert in the capture at `path`, each checked as a receiver must: an
/// advert that does not parse with [`Advert::parse`], whose VRRP checksum (VRRPv3: over
/// the pseudo-header from its IP header) is not zero, or whose IPv4 header checksum is
/// wrong is an error that shows the frame.
fn adverts(path: &Path) -> anyhow::Result<Vec<Seen>> {
    let capture = Capture::read(path)?;
    ensure!(capture.link_type == vipd_lab::pcap::LINKTYPE_ETHERNET);
    let mut out = Vec::new();
    for (index, p) in capture.packets.iter().enumerate() {
        let bad = |why: String| {
            anyhow::anyhow!(
                "packet {index} of {}: {why}: {:02x?}",
                path.display(),
                p.data
            )
        };
        let eth = Ethernet::parse(&p.data).ok_or_else(|| bad("short frame".into()))?;
        let (family, ttl, src, dst, msg, checksum) = match eth.ethertype {
            ETHERTYPE_IPV4 => {
                let ip = Ipv4::parse(eth.payload).ok_or_else(|| bad("bad IPv4".into()))?;
                if ip.protocol != vrrp::IPPROTO_VRRP {
                    continue;
                }
                if !ip.header_checksum_ok {
                    return Err(bad("wrong IPv4 header checksum".into()));
                }
                let v2 = ip
                    .payload
                    .first()
                    .is_some_and(|b| b >> 4 == vrrp::VERSION_2);
                (
                    Family::V4,
                    ip.ttl,
                    IpAddr::from(ip.src),
                    IpAddr::from(ip.dst),
                    ip.payload,
                    if v2 {
                        vrrp::checksum_v2(ip.payload)
                    } else {
                        vrrp::checksum_v4(ip.src, ip.dst, ip.payload)
                    },
                )
            }
            ETHERTYPE_IPV6 => {
                let ip = Ipv6::parse(eth.payload).ok_or_else(|| bad("bad IPv6".into()))?;
                if ip.next_header != vrrp::IPPROTO_VRRP {
                    continue;
                }
                (
                    Family::V6,
                    ip.hop_limit,
                    IpAddr::from(ip.src),
                    IpAddr::from(ip.dst),
                    ip.payload,
                    vrrp::checksum_v6(ip.src, ip.dst, ip.payload),
                )
            }
            _ => continue,
        };
        let advert = Advert::parse(msg, family).map_err(|e| bad(format!("{e:?}")))?;
        if checksum != 0 {
            return Err(bad(format!("VRRP checksum off by {checksum:#06x}")));
        }
        let addrs = msg[vrrp::HEADER_LEN..]
            .chunks_exact(family.addr_len())
            .take(usize::from(advert.count))
            .map(|a| match family {
                Family::V4 => IpAddr::from(<[u8; 4]>::try_from(a).unwrap_or_default()),
                Family::V6 => IpAddr::from(<[u8; 16]>::try_from(a).unwrap_or_default()),
            })
            .collect();
        let auth_data = (advert.version == vrrp::VERSION_2)
            .then(|| msg.get(advert.auth_data_offset()..advert.auth_data_offset() + 8))
            .flatten()
            .map(|d| d.try_into().unwrap_or_default());
        out.push(Seen {
            index,
            src_mac: eth.src,
            dst_mac: eth.dst,
            ttl,
            src,
            dst,
            advert,
            addrs,
            auth_data,
        });
    }
    Ok(out)
}

/// The adverts in the capture at `path` sent by `host` (by its MAC).
fn adverts_from(path: &Path, host: &Host) -> anyhow::Result<Vec<Seen>> {
    let mac = parse_mac(&host.mac)?;
    Ok(adverts(path)?
        .into_iter()
        .filter(|s| s.src_mac == mac)
        .collect())
}

/// Checks what every advert of VRID 51 from `host` must be: to the VRRP group at its
/// multicast MAC, TTL / hop limit 255, from `src`, the one VIP, VRRPv3 every 100 ms, and a
/// priority of `priority` or 0.
fn check_adverts(seen: &[Seen], src: IpAddr, vip: &str, priority: u8) -> anyhow::Result<()> {
    check_adverts_of(seen, (vrrp::VERSION_3, INTERVAL_CS), src, vip, priority)
}

/// [`check_adverts`] for adverts of `(version, interval_cs)`; VRRPv2 ones carry
/// [`V2_PASS`] (Auth Type 1).
fn check_adverts_of(
    seen: &[Seen],
    version: (u8, u16),
    src: IpAddr,
    vip: &str,
    priority: u8,
) -> anyhow::Result<()> {
    let to = match src {
        IpAddr::V4(_) => (IpAddr::from(GROUP4), GROUP4_MAC),
        IpAddr::V6(_) => (IpAddr::from(advert_group_v6()), GROUP6_MAC),
    };
    check_adverts_to(seen, (version, Some(V2_PASS)), (src, to), vip, priority)
}

/// [`check_adverts_of`] for adverts from `src` to `to` (an address and its MAC: the
/// multicast group, or a unicast peer); VRRPv2 ones carry `password` (Auth Type 1), or
/// none (Auth Type 0, zeros).
fn check_adverts_to(
    seen: &[Seen],
    ((version, interval_cs), password): ((u8, u16), Option<[u8; 8]>),
    (src, (dst, dst_mac)): (IpAddr, (IpAddr, [u8; 6])),
    vip: &str,
    priority: u8,
) -> anyhow::Result<()> {
    let vip: IpAddr = vip.parse()?;
    for s in seen {
        let a = &s.advert;
        ensure!(
            s.dst_mac == dst_mac
                && s.dst == dst
                && s.src == src
                && s.ttl == 255
                && a.vrid == VRID
                && (a.priority == priority || a.priority == vrrp::PRIORITY_STOP)
                && a.count == 1
                && s.addrs == [vip]
                && a.version == version
                && a.max_adver_int_cs == interval_cs
                && (version == vrrp::VERSION_3
                    || (a.auth_type == password.map_or(vrrp::AUTH_NONE, |_| vrrp::AUTH_PASS)
                        && s.auth_data == Some(password.unwrap_or_default()))),
            "advert (packet {}) is not what was configured: {s:?}",
            s.index
        );
    }
    Ok(())
}

/// An Ethernet frame carrying `vrrp_msg` in IPv4 from `src` (`src_mac`) to 224.0.0.18
/// with `ttl`, padded to the 60-byte minimum as a NIC would.
fn ipv4_frame(src_mac: [u8; 6], src: [u8; 4], ttl: u8, vrrp_msg: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&GROUP4_MAC);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + vrrp_msg.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = 0xc0; // DSCP CS6, as routers send their protocols
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[8] = ttl;
    ip[9] = vrrp::IPPROTO_VRRP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&GROUP4);
    let c = vipd_lab::pcap::internet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(vrrp_msg);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A VRRP message (`advert` and `addrs`, for VRRPv2 then [`V2_PASS`]) from `src` to
/// 224.0.0.18, with `edit` applied before its checksum (of `advert`'s version) is computed
/// and stored (when it still has room for one).
fn vrrp_msg(
    advert: Advert,
    addrs: &[[u8; 4]],
    src: [u8; 4],
    edit: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut header = [0u8; vrrp::HEADER_LEN];
    advert.write_header(&mut header);
    let mut m = header.to_vec();
    for a in addrs {
        m.extend_from_slice(a);
    }
    let v2 = advert.version == vrrp::VERSION_2;
    if v2 {
        m.extend_from_slice(&V2_PASS);
    }
    edit(&mut m);
    if m.len() >= vrrp::HEADER_LEN {
        m[6..8].copy_from_slice(&[0, 0]);
        let c = if v2 {
            vrrp::checksum_v2(&m)
        } else {
            vrrp::checksum_v4(src, GROUP4, &m)
        };
        m[6..8].copy_from_slice(&c.to_be_bytes());
    }
    m
}

fn v4(addr: &str) -> anyhow::Result<[u8; 4]> {
    Ok(addr.parse::<Ipv4Addr>()?.octets())
}

/// What a VRID 51 advert of the tests carries: 100 ms, one address.
fn advert(vrid: u8, priority: u8) -> Advert {
    Advert {
        version: vrrp::VERSION_3,
        auth_type: 0,
        vrid,
        priority,
        count: 1,
        max_adver_int_cs: INTERVAL_CS,
        checksum: 0,
    }
}

/// The reference side on its own (no vipd): keepalived's adverts, IPv4 and IPv6, parse
/// with vipd_common's decoder and their checksums verify, including the priority-0 adverts
/// of its shutdown; and frames sent with [`Lab::send_frames`] reach another host byte for
/// byte. The other tests rely on all of this.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn keepalived_adverts_decode_and_injected_frames_arrive_intact() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrk", true)?;
    let (k, client) = (c.k.clone(), c.client.clone());
    let injector = c
        .lab
        .add_host("inj", "192.0.2.50/24", "02:00:00:00:00:32")?;

    let (capture, pcap) = c.lab.spawn_capture(
        &client,
        "capture",
        "ip proto 112 or ip6 proto 112",
        5000,
        Duration::from_secs(120),
    )?;
    let mut conf = keepalived_conf(&k, 200, VIP4_CIDR, false);
    conf += &keepalived_conf(&k, 200, VIP6_CIDR, false)
        .split_once("vrrp_instance VI_1")
        .map(|(_, instance)| format!("vrrp_instance VI_6{instance}"))
        .context("instance")?;
    let ka = start_keepalived(&mut c.lab, &k, "keepalived", &conf)?;
    c.lab.proc(ka).wait_for_lines(&[KA_MASTER], 2, WAIT)?;
    wait_until("5 adverts of each family from k", WAIT, || {
        let seen = adverts_from(&pcap, &k)?;
        Ok(seen.iter().filter(|s| s.src.is_ipv4()).count() >= 5
            && seen.iter().filter(|s| s.src.is_ipv6()).count() >= 5)
    })?;
    stop(&mut c.lab, ka)?;
    wait_until("priority-0 adverts of both families from k", WAIT, || {
        let seen = adverts_from(&pcap, &k)?;
        Ok([true, false].iter().all(|&v4| {
            seen.iter()
                .any(|s| s.src.is_ipv4() == v4 && s.advert.priority == vrrp::PRIORITY_STOP)
        }))
    })?;
    let seen = adverts_from(&pcap, &k)?;
    let (v4s, v6s): (Vec<Seen>, Vec<Seen>) = seen.into_iter().partition(|s| s.src.is_ipv4());
    check_adverts(&v4s, IpAddr::from(v4(&k.addr)?), VIP4, 200)?;
    check_adverts(&v6s, IpAddr::from(link_local(&c.lab, &k)?), VIP6, 200)?;
    c.lab.proc(capture).signal(libc::SIGTERM)?;
    c.lab.proc(capture).wait_exit(WAIT)?;

    // Injected frames: a right advert and one with its checksum broken arrive as sent.
    let (capture, pcap) = c.lab.spawn_capture(
        &client,
        "injected",
        &format!("ether src {}", injector.mac),
        10,
        Duration::from_secs(60),
    )?;
    let src = v4(&injector.addr)?;
    let mac = parse_mac(&injector.mac)?;
    let vip = v4(VIP4)?;
    let good = ipv4_frame(
        mac,
        src,
        255,
        &vrrp_msg(advert(VRID, 254), &[vip], src, |_| {}),
    );
    let mut broken = good.clone();
    broken[14 + 20 + 7] ^= 0x5a;
    let frames = vec![good, broken];
    c.lab.send_frames(&injector, "eth0", &frames)?;
    let mut captured = Vec::new();
    wait_until("the injected frames on the client", WAIT, || {
        captured = Capture::read(&pcap)?.packets;
        Ok(captured.len() >= frames.len())
    })?;
    let got: Vec<&[u8]> = captured.iter().map(|p| p.data.as_slice()).collect();
    ensure!(
        got == frames.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        "sent {frames:02x?}, captured {got:02x?}"
    );
    let seen = adverts(&pcap);
    let err = seen
        .expect_err("the broken frame must fail the checksum")
        .to_string();
    ensure!(
        err.contains("packet 1") && err.contains("VRRP checksum"),
        "{err}"
    );
    let first = Ipv4::parse(Ethernet::parse(&frames[0]).context("eth")?.payload).context("ip")?;
    ensure!(vrrp::checksum_v4(first.src, first.dst, first.payload) == 0);
    c.lab.proc(capture).signal(libc::SIGTERM)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn keepalived_master_vipd_backup_takes_over_on_hard_failure() -> anyhow::Result<()> {
    require_root();
    keepalived_master_vipd_backup("vrh", false)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn ipv6_keepalived_master_vipd_backup_takes_over() -> anyhow::Result<()> {
    require_root();
    keepalived_master_vipd_backup("vrsix", true)
}

/// keepalived Master (VRRPv3, 100 ms, multicast), vipd Backup, over IPv4 or IPv6: vipd
/// follows keepalived's adverts without taking over, then takes over on a hard failure
/// (link cut, keepalived killed); the client follows; vipd's adverts go to the group from
/// its primary IPv4 or link-local IPv6 address with TTL / hop limit 255.
fn keepalived_master_vipd_backup(tag: &str, ipv6: bool) -> anyhow::Result<()> {
    let _serial = serial();
    let mut c = routers(tag, ipv6)?;
    let (k, v, client) = (c.k.clone(), c.v.clone(), c.client.clone());
    let (family, vip, vip_cidr) = if ipv6 {
        ("ipv6", VIP6, VIP6_CIDR)
    } else {
        ("ipv4", VIP4, VIP4_CIDR)
    };
    let (_capture, pcap) = c.lab.spawn_capture(
        &client,
        "capture",
        "ip proto 112 or ip6 proto 112",
        5000,
        Duration::from_secs(120),
    )?;
    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 200, vip_cidr, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(&c.lab, vip, &k, &[&v])?;

    let vipd = start_vipd(&mut c.lab, &v, "vipd", 100, vip_cidr, "")?;
    // Adverts come from the primary IPv4 address, or the link-local IPv6 one.
    let source = |lab: &Lab, h: &Host| -> anyhow::Result<IpAddr> {
        Ok(if ipv6 {
            IpAddr::from(link_local(lab, h)?)
        } else {
            h.addr.parse()?
        })
    };
    let k_source = source(&c.lab, &k)?.to_string();
    let st = wait_group(&c.lab, &v, family, "backup", Some(&k_source))?;
    let g = group(&st, family)?;
    assert_eq!(g["priority"], 100, "{st:#}");
    assert_eq!(g["vips"], serde_json::json!([vip_cidr]), "{st:#}");
    wait_until("vipd counting keepalived's adverts", WAIT, || {
        Ok(counter(&status(&c.lab, &v)?, "vrrp_accepted") >= 5)
    })?;
    let st = status(&c.lab, &v)?;
    assert_eq!(counter(&st, "vrrp_addr_mismatch"), 0, "same list: {st:#}");
    assert_vip_only_on(&c.lab, vip, &k, &[&v])?;
    wait_client_reaches(&c, vip, &k)?;
    let to_master = vipd_to(
        if ipv6 { "family=ipv6" } else { "family=ipv4" },
        "to=master",
    );
    assert_eq!(
        c.lab.proc(vipd).count_lines(&to_master),
        0,
        "vipd took over from a live master:\n{}",
        c.lab.proc(vipd).output()
    );

    // Hard failure of the master: link cut, keepalived (and its VRRP child) killed.
    c.lab.set_link(&k, false)?;
    c.lab.proc(ka).signal(libc::SIGKILL)?;
    let line = c.lab.proc(vipd).wait_for_line(&to_master, WAIT)?;
    assert!(
        line.contains("from=backup") && line.contains("reason=master_down"),
        "{line}"
    );
    wait_until("the VIP on v", WAIT, || c.lab.has_address(&v, vip))?;
    wait_client_follows(&c, vip, &v)?;
    wait_group(&c.lab, &v, family, "master", None)?;

    wait_until("5 adverts from v", WAIT, || {
        Ok(adverts_from(&pcap, &v)?.len() >= 5)
    })?;
    check_adverts(&adverts_from(&pcap, &v)?, source(&c.lab, &v)?, vip, 100)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vipd_master_keepalived_backup_and_graceful_handover() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrg", false)?;
    let (k, v, client) = (c.k.clone(), c.v.clone(), c.client.clone());
    let (capture, pcap) = c.lab.spawn_capture(
        &client,
        "capture",
        "ip proto 112",
        5000,
        Duration::from_secs(120),
    )?;
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 200, VIP4_CIDR, "")?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    wait_vip_only_on(&c.lab, VIP4, &v, &[&k])?;

    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 100, VIP4_CIDR, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    // Time passes, measured in vipd's adverts: 20 more of them.
    let before = adverts_from(&pcap, &v)?.len();
    wait_until("20 more adverts from vipd", WAIT, || {
        Ok(adverts_from(&pcap, &v)?.len() >= before + 20)
    })?;
    let ka_log = c.lab.proc(ka).output();
    assert!(
        !ka_log.contains(KA_MASTER),
        "keepalived took over:\n{ka_log}"
    );
    assert_vip_only_on(&c.lab, VIP4, &v, &[&k])?;
    wait_client_reaches(&c, VIP4, &v)?;
    wait_group(&c.lab, &v, "ipv4", "master", None)?;

    // The VIP removed from outside: the Master adds and announces it again.
    c.lab
        .ip(&v.netns, &["addr", "del", VIP4_CIDR, "dev", "eth0"])?;
    c.lab
        .proc(vipd)
        .wait_for_line(&["removed from the interface from outside", VIP4], WAIT)?;
    wait_until("the VIP back on v", WAIT, || c.lab.has_address(&v, VIP4))?;
    assert_vip_only_on(&c.lab, VIP4, &v, &[&k])?;
    wait_client_reaches(&c, VIP4, &v)?;

    // Graceful stop: priority 0 goes out, keepalived takes over at once.
    stop(&mut c.lab, vipd)?;
    let log = c.lab.proc(vipd).output();
    assert!(
        log.lines().any(|l| {
            l.contains("vrrp state") && l.contains("from=master") && l.contains("reason=shutdown")
        }),
        "{log}"
    );
    assert!(!c.lab.has_address(&v, VIP4)?, "vipd left its VIP behind");
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(&c.lab, VIP4, &k, &[&v])?;
    wait_client_follows(&c, VIP4, &k)?;
    wait_until("a priority-0 advert from v on the wire", WAIT, || {
        Ok(adverts_from(&pcap, &v)?
            .iter()
            .any(|s| s.advert.priority == vrrp::PRIORITY_STOP))
    })?;
    c.lab.proc(capture).signal(libc::SIGTERM)?;
    c.lab.proc(capture).wait_exit(WAIT)?;

    // Every advert vipd sent, byte by byte; keepalived's are decoded and checked as well.
    let from_v = adverts_from(&pcap, &v)?;
    ensure!(from_v.len() >= 20, "{} adverts from v", from_v.len());
    check_adverts(&from_v, IpAddr::from(v4(&v.addr)?), VIP4, 200)?;
    let first_stop = from_v
        .iter()
        .position(|s| s.advert.priority == vrrp::PRIORITY_STOP)
        .context("no priority-0 advert")?;
    ensure!(
        from_v[first_stop..]
            .iter()
            .all(|s| s.advert.priority == vrrp::PRIORITY_STOP),
        "vipd advertised priority 200 after priority 0"
    );
    check_adverts(
        &adverts_from(&pcap, &k)?,
        IpAddr::from(v4(&k.addr)?),
        VIP4,
        100,
    )?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn preemption_both_ways_and_no_preempt() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrp", false)?;
    let (k, v, client) = (c.k.clone(), c.v.clone(), c.client.clone());
    let lab = &mut c.lab;

    // (a) vipd at 200 preempts keepalived at 100.
    let ka = start_keepalived(
        lab,
        &k,
        "ka-100",
        &keepalived_conf(&k, 100, VIP4_CIDR, false),
    )?;
    lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(lab, VIP4, &k, &[&v])?;
    let vipd = start_vipd(lab, &v, "vipd-200", 200, VIP4_CIDR, "")?;
    lab.proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    // The first BACKUP line is keepalived's start-up ("(init)"), the second its preemption.
    lab.proc(ka).wait_for_lines(&[KA_BACKUP], 2, WAIT)?;
    wait_vip_only_on(lab, VIP4, &v, &[&k])?;

    // (b) keepalived at 250 preempts vipd at 200.
    stop(lab, ka)?;
    let ka = start_keepalived(
        lab,
        &k,
        "ka-250",
        &keepalived_conf(&k, 250, VIP4_CIDR, false),
    )?;
    lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    // The first transition to backup is vipd's start-up.
    let line = lab
        .proc(vipd)
        .wait_for_lines(&vipd_to("family=ipv4", "to=backup"), 2, WAIT)?;
    assert!(
        line.contains("from=master") && line.contains("reason=preempted"),
        "{line}"
    );
    wait_vip_only_on(lab, VIP4, &k, &[&v])?;
    wait_group(lab, &v, "ipv4", "backup", Some(&k.addr))?;
    stop(lab, vipd)?;
    stop(lab, ka)?;

    // (c) vipd at 200 with preempt=no leaves keepalived at 100 the master.
    let ka = start_keepalived(
        lab,
        &k,
        "ka-100-again",
        &keepalived_conf(&k, 100, VIP4_CIDR, false),
    )?;
    lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(lab, VIP4, &k, &[&v])?;
    let vipd = start_vipd(lab, &v, "vipd-200-nopreempt", 200, VIP4_CIDR, ",preempt=no")?;
    let st = wait_group(lab, &v, "ipv4", "backup", Some(&k.addr))?;
    let before = counter(&st, "vrrp_accepted");
    wait_until("vipd accepting 20 more adverts", WAIT, || {
        Ok(counter(&status(lab, &v)?, "vrrp_accepted") >= before + 20)
    })?;
    let log = lab.proc(vipd).output();
    assert_eq!(
        lab.proc(vipd).count_lines(&["vrrp state", "to=master"]),
        0,
        "vipd preempted with preempt=no:\n{log}"
    );
    assert_vip_only_on(lab, VIP4, &k, &[&v])?;
    wait_group(lab, &v, "ipv4", "backup", Some(&k.addr))?;
    stop(lab, vipd)?;
    stop(lab, ka)?;

    // (d) keepalived at 200 with nopreempt leaves vipd at 100 the master.
    let vipd = start_vipd(lab, &v, "vipd-100", 100, VIP4_CIDR, "")?;
    lab.proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    wait_vip_only_on(lab, VIP4, &v, &[&k])?;
    let (capture, pcap) = lab.spawn_capture(
        &client,
        "capture-d",
        "ip proto 112",
        5000,
        Duration::from_secs(120),
    )?;
    let ka = start_keepalived(
        lab,
        &k,
        "ka-200-nopreempt",
        &keepalived_conf(&k, 200, VIP4_CIDR, true),
    )?;
    lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    let before = adverts_from(&pcap, &v)?.len();
    wait_until("20 more adverts from vipd", WAIT, || {
        Ok(adverts_from(&pcap, &v)?.len() >= before + 20)
    })?;
    let ka_log = lab.proc(ka).output();
    assert!(
        !ka_log.contains(KA_MASTER),
        "keepalived preempted with nopreempt:\n{ka_log}"
    );
    assert_eq!(
        lab.proc(vipd).count_lines(&["vrrp state", "to=backup"]),
        1,
        "{}",
        lab.proc(vipd).output()
    );
    assert_eq!(
        lab.proc(vipd).count_lines(&["vrrp state", "to=master"]),
        1,
        "{}",
        lab.proc(vipd).output()
    );
    assert_vip_only_on(lab, VIP4, &v, &[&k])?;
    check_adverts(
        &adverts_from(&pcap, &v)?,
        IpAddr::from(v4(&v.addr)?),
        VIP4,
        100,
    )?;
    lab.proc(capture).signal(libc::SIGTERM)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn bad_vrrp_adverts_are_counted_and_ignored() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut lab = Lab::new("vrb")?;
    let v = lab.add_host("v", "192.0.2.12/24", "02:00:00:00:00:0c")?;
    let injector = lab.add_host("inj", "192.0.2.50/24", "02:00:00:00:00:32")?;
    let vipd = start_vipd(&mut lab, &v, "vipd", 100, VIP4_CIDR, "")?;
    lab.proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    wait_until("the VIP on v", WAIT, || lab.has_address(&v, VIP4))?;

    let src = v4(&injector.addr)?;
    let mac = parse_mac(&injector.mac)?;
    let vip = v4(VIP4)?;
    // Each would make vipd step down (priority 254 > 100) if it were accepted.
    let frame = |ttl: u8, a: Advert, addrs: &[[u8; 4]], edit: &dyn Fn(&mut Vec<u8>)| {
        ipv4_frame(mac, src, ttl, &vrrp_msg(a, addrs, src, edit))
    };
    let ok = advert(VRID, 254);
    // The right checksum plus one.
    let mut bad_checksum = frame(255, ok, &[vip], &|_| {});
    let at = 14 + 20 + 6;
    let sum = u16::from_be_bytes([bad_checksum[at], bad_checksum[at + 1]]).wrapping_add(1);
    bad_checksum[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("TTL 254", "vrrp_bad_ttl", frame(254, ok, &[vip], &|_| {})),
        (
            "VRRPv2 to a VRRPv3 group",
            "vrrp_bad_version",
            frame(
                255,
                Advert {
                    version: vrrp::VERSION_2,
                    auth_type: vrrp::AUTH_PASS,
                    max_adver_int_cs: 100,
                    ..ok
                },
                &[vip],
                &|_| {},
            ),
        ),
        (
            "version 1",
            "vrrp_bad_version",
            frame(255, ok, &[vip], &|m| m[0] = 0x11),
        ),
        (
            "type 2",
            "vrrp_bad_version",
            frame(255, ok, &[vip], &|m| m[0] = 0x32),
        ),
        (
            "6-byte message",
            "vrrp_malformed",
            frame(255, ok, &[vip], &|m| m.truncate(6)),
        ),
        (
            "count 2, one address",
            "vrrp_malformed",
            frame(255, Advert { count: 2, ..ok }, &[vip], &|_| {}),
        ),
        (
            "count 0",
            "vrrp_malformed",
            frame(255, Advert { count: 0, ..ok }, &[vip], &|_| {}),
        ),
        (
            "interval 0",
            "vrrp_malformed",
            frame(
                255,
                Advert {
                    max_adver_int_cs: 0,
                    ..ok
                },
                &[vip],
                &|_| {},
            ),
        ),
        ("checksum off by one", "vrrp_bad_checksum", bad_checksum),
        (
            "VRID 52",
            "vrrp_unknown_vrid",
            frame(255, advert(52, 254), &[vip], &|_| {}),
        ),
    ];
    each_counted_once(&lab, &v, &injector, &bad)?;
    let st = status(&lab, &v)?;
    assert_eq!(counter(&st, "vrrp_accepted"), 0, "{st:#}");
    let g = group(&st, "ipv4")?;
    assert_eq!(g["state"], "master", "{st:#}");
    let log = lab.proc(vipd).output();
    assert_eq!(
        lab.proc(vipd).count_lines(&["vrrp state", "to=backup"]),
        1,
        "only the start-up transition to backup:\n{log}"
    );
    assert!(lab.has_address(&v, VIP4)?);

    // Positive control: the same advert without a defect makes vipd step down, and once
    // the injector is silent vipd takes over again.
    let good = frame(255, ok, &[vip], &|_| {});
    lab.send_frames(&injector, "eth0", &[good])?;
    let line = lab
        .proc(vipd)
        .wait_for_lines(&vipd_to("family=ipv4", "to=backup"), 2, WAIT)?;
    assert!(
        line.contains("from=master") && line.contains("reason=preempted"),
        "{line}"
    );
    let line = lab
        .proc(vipd)
        .wait_for_lines(&vipd_to("family=ipv4", "to=master"), 2, WAIT)?;
    assert!(line.contains("reason=master_down"), "{line}");
    assert_eq!(counter(&status(&lab, &v)?, "vrrp_accepted"), 1);
    wait_until("the VIP back on v", WAIT, || lab.has_address(&v, VIP4))?;

    // A valid advert that lists other addresses (another cluster on VRID 51) is counted
    // and logged, once per 10 s, and processed as usual: at priority 50 it changes nothing.
    let other = frame(255, advert(VRID, 50), &[v4("192.0.2.99")?], &|_| {});
    for n in 1..=2 {
        lab.send_frames(&injector, "eth0", std::slice::from_ref(&other))?;
        wait_until(&format!("mismatch number {n} counted"), WAIT, || {
            Ok(counter(&status(&lab, &v)?, "vrrp_addr_mismatch") == n)
        })?;
    }
    let line = lab
        .proc(vipd)
        .wait_for_line(&["lists other addresses than ours"], WAIT)?;
    assert!(
        line.contains("from=192.0.2.50") && line.contains("192.0.2.200/24"),
        "{line}"
    );
    let st = status(&lab, &v)?;
    // Counted as mismatches, not also as accepted: each frame counts once.
    assert_eq!(counter(&st, "vrrp_accepted"), 1, "{st:#}");
    assert_eq!(group(&st, "ipv4")?["state"], "master", "{st:#}");
    assert_eq!(
        lab.proc(vipd)
            .count_lines(&["lists other addresses than ours"]),
        1,
        "said once:\n{}",
        lab.proc(vipd).output()
    );
    Ok(())
}

/// Sends each frame of `bad` (what it is, the one counter it must add 1 to, the frame)
/// from `injector`, and checks that this counter, and no other VRRP counter, of vipd on
/// `v` went up by one.
fn each_counted_once(
    lab: &Lab,
    v: &Host,
    injector: &Host,
    bad: &[(&str, &str, Vec<u8>)],
) -> anyhow::Result<()> {
    for (what, expected, f) in bad {
        let before = vrrp_counters(&status(lab, v)?)?;
        ensure!(
            before.contains_key(*expected),
            "no {expected} in {before:?}"
        );
        lab.send_frames(injector, "eth0", std::slice::from_ref(f))?;
        let mut after = before.clone();
        wait_until(&format!("the {what} advert counted"), WAIT, || {
            after = vrrp_counters(&status(lab, v)?)?;
            Ok(after != before)
        })
        .with_context(|| format!("frame {f:02x?}"))?;
        let changed: Vec<(&String, u64, u64)> = after
            .iter()
            .filter(|(k, n)| before.get(*k) != Some(n))
            .map(|(k, n)| (k, before.get(k).copied().unwrap_or(0), *n))
            .collect();
        ensure!(
            changed
                == [(
                    &expected.to_string(),
                    before[*expected],
                    before[*expected] + 1
                )],
            "the {what} advert should count once in {expected}; counters that changed \
             (name, before, after): {changed:?}; frame {f:02x?}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn virtual_mac_moves_with_the_master_and_accept_mode_off_drops_vip_traffic() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrm", false)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    const VMAC: &str = "00:00:5e:00:01:33";
    let sysctl = |lab: &Lab, key: &str| -> anyhow::Result<String> {
        let out = lab.exec(&v, "sysctl", &["-n", &format!("net.ipv4.conf.eth0.{key}")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 200, VIP4_CIDR, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 100, VIP4_CIDR, ",vmac=yes")?;
    wait_group(&c.lab, &v, "ipv4", "backup", Some(&k.addr))?;
    let macvlan = vmac_link(&c.lab, &v, VRID)?;
    let link = c.lab.exec(&v, "ip", &["-br", "link", "show", &macvlan])?;
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    ensure!(
        link.contains(VMAC),
        "the macvlan carries the virtual MAC: {link}"
    );
    ensure!(sysctl(&c.lab, "arp_ignore")? == "1" && sysctl(&c.lab, "arp_announce")? == "2");
    wait_client_reaches(&c, VIP4, &k)?;

    // The master fails: vipd adds the VIP on its macvlan and announces the virtual MAC.
    c.lab.set_link(&k, false)?;
    c.lab.proc(ka).signal(libc::SIGKILL)?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    let mut mac = None;
    wait_until("the client's entry to hold the virtual MAC", WAIT, || {
        mac = c.lab.neighbour_mac(&c.client, VIP4)?;
        Ok(mac.as_deref() == Some(VMAC))
    })
    .with_context(|| format!("it holds {mac:?}"))?;
    wait_until("the VIP answering from the virtual MAC", WAIT, || {
        c.lab.ping(&c.client, VIP4)
    })?;
    let on = c.lab.exec(&v, "ip", &["-br", "addr", "show", &macvlan])?;
    ensure!(
        String::from_utf8_lossy(&on.stdout).contains(VIP4),
        "the VIP is on the macvlan"
    );
    ensure!(
        c.lab.neighbour_mac(&c.client, VIP4)?.as_deref() == Some(VMAC),
        "answering did not teach the client the interface's own MAC"
    );

    // A graceful stop removes the macvlan and puts the sysctls back.
    stop(&mut c.lab, vipd)?;
    let gone = c.lab.exec(&v, "ip", &["link", "show", &macvlan])?;
    ensure!(!gone.status.success(), "the macvlan is removed on stop");
    ensure!(sysctl(&c.lab, "arp_ignore")? == "0" && sysctl(&c.lab, "arp_announce")? == "0");

    // Accept_Mode off: as Master, vipd holds the VIP and answers ARP for it, but drops
    // what is addressed to it.
    let vipd = start_vipd(
        &mut c.lab,
        &v,
        "vipd-noaccept",
        100,
        VIP4_CIDR,
        ",accept=no",
    )?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    wait_until("the VIP on v", WAIT, || c.lab.has_address(&v, VIP4))?;
    ensure!(
        !c.lab.ping(&c.client, VIP4)?,
        "accept = false drops the ping"
    );
    ensure!(
        c.lab.neighbour_mac(&c.client, VIP4)?.as_deref() == Some(v.mac.as_str()),
        "ARP for the VIP is still answered"
    );
    ensure!(
        c.lab.ping(&c.client, &v.addr)?,
        "the node's own address still answers"
    );
    stop(&mut c.lab, vipd)?;
    let rules = c.lab.exec(&v, "nft", &["list", "ruleset"])?;
    ensure!(
        !String::from_utf8_lossy(&rules.stdout).contains("vipd_"),
        "the nftables table is removed on stop"
    );

    // A crash leaves the sysctls changed. The unit removes /run/vipd on every stop, crashes
    // included; the originals are kept in the state directory, so the next run restores them.
    let vipd = start_vipd(&mut c.lab, &v, "vipd-crash", 100, VIP4_CIDR, ",vmac=yes")?;
    ensure!(sysctl(&c.lab, "arp_ignore")? == "1" && sysctl(&c.lab, "arp_announce")? == "2");
    c.lab.proc(vipd).signal(libc::SIGKILL)?;
    c.lab.proc(vipd).wait_exit(WAIT)?;
    ensure!(
        sysctl(&c.lab, "arp_ignore")? == "1",
        "a crash cannot restore them"
    );
    let instance = format!("{}-{}", c.lab.prefix(), v.name);
    for entry in std::fs::read_dir("/run/vipd")?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&instance) {
            std::fs::remove_file(entry.path())?;
        }
    }
    let vipd = start_vipd(&mut c.lab, &v, "vipd-after-crash", 100, VIP4_CIDR, "")?;
    stop(&mut c.lab, vipd)?;
    ensure!(
        sysctl(&c.lab, "arp_ignore")? == "0" && sysctl(&c.lab, "arp_announce")? == "0",
        "the originals are back after the crash"
    );
    Ok(())
}

/// Groups on two segments: VRID 51 on eth0 (keepalived outranks vipd there) and VRID 52 on
/// a second cable, eth1 (vipd outranks keepalived). Each group's VIP goes on its own
/// interface, an advert for VRID 52 arriving on eth0 is another segment's group (counted
/// as an unknown VRID, ignored), and losing carrier on eth1 stops only VRID 52.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn groups_run_on_their_own_interfaces() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vri", false)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    c.lab
        .connect(&k, &v, "eth1", "198.51.100.11/24", "198.51.100.12/24")?;
    const VIP_B: &str = "198.51.100.200";
    let instance = |name: &str, ifname: &str, vrid: u8, priority: u8, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n    state BACKUP\n    interface {ifname}\n    virtual_router_id {vrid}\n\
             \x20   priority {priority}\n    advert_int 0.1\n    virtual_ipaddress {{\n        {vip} dev {ifname}\n    }}\n}}\n"
        )
    };
    let conf = format!(
        "global_defs {{\n    vrrp_version 3\n    router_id k\n}}\n{}{}",
        instance("A", "eth0", 51, 200, VIP4_CIDR),
        instance("B", "eth1", 52, 50, "198.51.100.200/24"),
    );
    let ka = start_keepalived(&mut c.lab, &k, "keepalived", &conf)?;
    c.lab
        .proc(ka)
        .wait_for_line(&["(A) Entering MASTER STATE"], WAIT)?;

    let spec_a = format!("{VRID},priority=100,vip={VIP4_CIDR},interval=100ms");
    let spec_b = "52,priority=100,vip=198.51.100.200/24,interval=100ms,interface=eth1";
    let vipd = c.lab.spawn_vipd(
        &v,
        1,
        "vipd",
        Path::new(VIPD),
        &["--vrrp", &spec_a, "--vrrp", spec_b],
    )?;
    c.lab
        .proc(vipd)
        .wait_for_lines(&["vrrp state", "reason=startup"], 2, WAIT)?;
    let by_vrid = |st: &serde_json::Value, vrid: u64| -> anyhow::Result<serde_json::Value> {
        st["vrrp"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["vrid"] == vrid)
            .cloned()
            .with_context(|| format!("no VRID {vrid} in {st:#}"))
    };
    let mut st = serde_json::Value::Null;
    wait_until(
        "VRID 51 backup on eth0, VRID 52 master on eth1",
        WAIT,
        || {
            st = status(&c.lab, &v)?;
            let (a, b) = (by_vrid(&st, 51)?, by_vrid(&st, 52)?);
            Ok(a["state"] == "backup" && a["master"] == k.addr.as_str() && b["state"] == "master")
        },
    )
    .with_context(|| format!("last status: {st:#}"))?;
    assert_eq!(by_vrid(&st, 51)?["interface"], "eth0", "{st:#}");
    assert_eq!(by_vrid(&st, 52)?["interface"], "eth1", "{st:#}");
    c.lab
        .proc(ka)
        .wait_for_line(&["(B) Entering BACKUP STATE"], WAIT)?;
    wait_until("VRID 52's VIP on v's eth1", WAIT, || {
        Ok(c.lab
            .addresses_on(&v, "eth1")?
            .iter()
            .any(|a| a == "198.51.100.200/24"))
    })?;
    ensure!(
        !c.lab.has_address(&v, VIP_B)? && !c.lab.has_address(&v, VIP4)?,
        "nothing of vipd's on v's eth0: {:?}",
        c.lab.addresses(&v)?
    );
    assert_vip_only_on(&c.lab, VIP4, &k, &[&v])?;

    // VRID 52 at priority 254 on eth0: were it taken for eth1's group, vipd would step down.
    let before = counter(&status(&c.lab, &v)?, "vrrp_unknown_vrid");
    let src = v4(&k.addr)?;
    let msg = vrrp_msg(advert(52, 254), &[v4(VIP_B)?], src, |_| {});
    let frame = ipv4_frame(parse_mac(&k.mac)?, src, 255, &msg);
    c.lab.send_frames(&k, "eth0", &[frame])?;
    wait_until("the advert counted as an unknown VRID", WAIT, || {
        Ok(counter(&status(&c.lab, &v)?, "vrrp_unknown_vrid") > before)
    })?;
    ensure!(
        by_vrid(&status(&c.lab, &v)?, 52)?["state"] == "master",
        "VRID 52 stepped down for an advert from another segment:\n{}",
        c.lab.proc(vipd).output()
    );

    // eth1 loses carrier (its far end goes down): VRID 52 stops, VRID 51 carries on.
    c.lab.set_link_of(&k, "eth1", false)?;
    wait_until("VRID 52 in initialize", WAIT, || {
        Ok(by_vrid(&status(&c.lab, &v)?, 52)?["state"] == "initialize")
    })?;
    ensure!(
        !c.lab
            .addresses_on(&v, "eth1")?
            .iter()
            .any(|a| a.starts_with(VIP_B)),
        "VRID 52's VIP released"
    );
    let st = status(&c.lab, &v)?;
    assert_eq!(by_vrid(&st, 51)?["state"], "backup", "{st:#}");
    // The node says which interface is out, not that it is all in fault.
    assert_eq!(st["state"], "degraded", "{st:#}");
    assert_eq!(
        st["carrier"],
        serde_json::json!({"eth0": true, "eth1": false}),
        "{st:#}"
    );
    // Carrier back: VRID 52 starts again and, outranking keepalived, is Master once more.
    c.lab.set_link_of(&k, "eth1", true)?;
    wait_until("VRID 52 master again", WAIT, || {
        Ok(by_vrid(&status(&c.lab, &v)?, 52)?["state"] == "master")
    })?;
    let log = c.lab.proc(vipd).output();
    assert_eq!(
        c.lab.proc(vipd).count_lines(&["vrrp state", "vrid=51 "]),
        1,
        "VRID 51 only left initialize at start-up:\n{log}"
    );
    stop(&mut c.lab, vipd)?;
    Ok(())
}

/// SIGHUP in VRRP mode, beside keepalived (VRID 51 at priority 150): raising vipd's
/// priority above keepalived's makes it preempt without restarting the group; a VIP added
/// to a group is added while the group's other VIP is not touched; a new group starts and
/// a removed one stops; a broken file, or a group on an interface vipd does not run on, is
/// rejected and everything keeps running as it was.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn sighup_reloads_vrrp_groups_in_place() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrl", false)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 150, VIP4_CIDR, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;

    let conf = c.lab.dir().join("vipd.toml");
    let group = |vrid: u8, priority: u8, vips: &[&str]| {
        let vips: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
        format!(
            "[[vrrp]]\nvrid = {vrid}\npriority = {priority}\nvips = [{}]\nadvert_interval = \"100ms\"\n",
            vips.join(", ")
        )
    };
    let write = |groups: &[String]| std::fs::write(&conf, groups.concat());
    write(&[
        group(51, 100, &[VIP4_CIDR]),
        group(52, 100, &["192.0.2.210/24"]),
    ])?;
    let conf_arg = conf.to_str().context("UTF-8 path")?;
    let vipd = c
        .lab
        .spawn_vipd(&v, 1, "vipd", Path::new(VIPD), &["--config", conf_arg])?;
    c.lab
        .proc(vipd)
        .wait_for_lines(&["vrrp state", "reason=startup"], 2, WAIT)?;
    wait_group(&c.lab, &v, "ipv4", "backup", Some(&k.addr))?;
    wait_until("192.0.2.210 on v", WAIT, || {
        c.lab.has_address(&v, "192.0.2.210")
    })?;
    let vrids = |lab: &Lab| -> anyhow::Result<Vec<(u64, String)>> {
        let st = status(lab, &v)?;
        Ok(st["vrrp"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["vrid"].as_u64().unwrap_or(0), g["state"].to_string()))
            .collect())
    };
    let reloads = |lab: &mut Lab, n: usize| -> anyhow::Result<()> {
        lab.proc(vipd).signal(libc::SIGHUP)?;
        lab.proc(vipd)
            .wait_for_lines(&["configuration reloaded"], n, WAIT)?;
        Ok(())
    };

    let arp_ignore = |lab: &Lab| -> anyhow::Result<String> {
        let out = lab.exec(&v, "sysctl", &["-n", "net.ipv4.conf.eth0.arp_ignore"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(arp_ignore(&c.lab)?, "0", "no virtual MAC yet");

    // 51 outranks keepalived now, 52 gets a second VIP, 53 is new (with a virtual MAC),
    // and a health check appears (which must not stop the groups before its first result).
    write(&[
        group(51, 200, &[VIP4_CIDR]),
        group(52, 100, &["192.0.2.210/24", "192.0.2.211/24"]),
        group(53, 100, &["192.0.2.220/24"]) + "vmac = true\n",
        "[[check]]\nname = \"ok\"\ntype = \"command\"\ncommand = [\"true\"]\n".into(),
    ])?;
    reloads(&mut c.lab, 1)?;
    assert_eq!(arp_ignore(&c.lab)?, "1", "set for 53's virtual MAC");
    let line = c
        .lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    assert!(line.contains("from=backup"), "{line}");
    c.lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    wait_vip_only_on(&c.lab, VIP4, &v, &[&k])?;
    wait_client_reaches(&c, VIP4, &v)?;
    wait_until("192.0.2.211 on v", WAIT, || {
        c.lab.has_address(&v, "192.0.2.211")
    })?;
    let vmac53 = vmac_link(&c.lab, &v, 53)?;
    wait_until("192.0.2.220 on v's macvlan for VRID 53", WAIT, || {
        Ok(c.lab
            .addresses_on(&v, &vmac53)
            .unwrap_or_default()
            .iter()
            .any(|a| a.starts_with("192.0.2.220/")))
    })?;
    let log = c.lab.proc(vipd).output();
    assert_eq!(
        c.lab
            .proc(vipd)
            .count_lines(&["took over VIP", "192.0.2.210"]),
        1,
        "192.0.2.210 was added once, at start-up:\n{log}"
    );
    assert_eq!(
        c.lab.proc(vipd).count_lines(&["released VIP"]),
        0,
        "nothing released:\n{log}"
    );
    assert_eq!(
        c.lab
            .proc(vipd)
            .count_lines(&["vrrp state", "reason=reload"]),
        1,
        "only VRID 53 changed state for the reload (it started):\n{log}"
    );

    // Rejected: a broken file, and a group on an interface vipd does not run on.
    std::fs::write(&conf, "[[vrrp]]\nvrid = 51\npriority = \"high\"\n")?;
    c.lab.proc(vipd).signal(libc::SIGHUP)?;
    c.lab.proc(vipd).wait_for_lines(
        &["reload rejected, keeping the running configuration"],
        1,
        WAIT,
    )?;
    let mut other = group(54, 100, &["192.0.2.230/24"]);
    other.push_str("interface = \"lo\"\n");
    write(&[group(51, 200, &[VIP4_CIDR]), other])?;
    c.lab.proc(vipd).signal(libc::SIGHUP)?;
    let line = c.lab.proc(vipd).wait_for_lines(
        &["reload rejected, keeping the running configuration"],
        2,
        WAIT,
    )?;
    assert!(line.contains("new interface needs a restart"), "{line}");
    let now = vrids(&c.lab)?;
    assert_eq!(
        now.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [51, 52, 53],
        "{now:?}"
    );

    // 53 removed: its VIP goes, the others stay where they are.
    write(&[
        group(51, 200, &[VIP4_CIDR]),
        group(52, 100, &["192.0.2.210/24", "192.0.2.211/24"]),
    ])?;
    reloads(&mut c.lab, 2)?;
    wait_until(
        "VRID 53's macvlan (and 192.0.2.220 on it) removed",
        WAIT,
        || {
            let link = c.lab.exec(&v, "ip", &["link", "show", &vmac53])?;
            Ok(!link.status.success())
        },
    )?;
    assert_eq!(
        arp_ignore(&c.lab)?,
        "0",
        "restored with 53's virtual MAC gone"
    );
    let now = vrids(&c.lab)?;
    assert_eq!(
        now,
        [(51, "\"master\"".into()), (52, "\"master\"".into())],
        "{now:?}"
    );
    for vip in [VIP4, "192.0.2.210", "192.0.2.211"] {
        ensure!(c.lab.has_address(&v, vip)?, "{vip} still on v");
    }
    assert_eq!(c.lab.proc(vipd).count_lines(&["released VIP"]), 1);
    stop(&mut c.lab, vipd)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn another_host_claiming_a_masters_vip_is_a_conflict_defended() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrc", false)?;
    let (v, client) = (c.v.clone(), c.client.clone());
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 200, VIP4_CIDR, "")?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    wait_client_reaches(&c, VIP4, &v)?;
    // The client announces the VIP as its own (a host configured with it by mistake).
    let mac = parse_mac(&client.mac)?;
    let garp = vipd::announce::garp_frame(mac, VIP4.parse()?).to_vec();
    c.lab.send_frames(&client, "eth0", &[garp.clone(), garp])?;
    let listed = |s: &serde_json::Value, vip: &str| {
        s["conflicts"].as_array().and_then(|list| {
            list.iter()
                .find(|x| x["vip"] == vip && x["defences"].as_u64() >= Some(1))
                .cloned()
        })
    };
    wait_until("the conflict reported and defended", WAIT, || {
        Ok(listed(&status(&c.lab, &v)?, VIP4).is_some())
    })?;
    let s = status(&c.lab, &v)?;
    let four = listed(&s, VIP4).context("IPv4 conflict")?;
    assert_eq!(four["mac"], client.mac, "{four:#}");
    assert_eq!(four["claimer"], "unknown host", "{four:#}");
    assert_eq!(four["kind"], "gratuitous-arp", "{four:#}");
    assert!(counter(&s, "neighbor_claims") >= 1, "{s:#}");
    // Still the Master, holding it; the client follows the Master again.
    wait_group(&c.lab, &v, "ipv4", "master", None)?;
    ensure!(c.lab.has_address(&v, VIP4)?);
    wait_client_entry(&c, VIP4, &v)?;
    stop(&mut c.lab, vipd)
}

/// Freezes vipd (`vipd`, Master of VRID 51) until keepalived (`ka`, its Backup) takes
/// over, then thaws it: meanwhile the frozen node keeps the VIP on its interface but only
/// keepalived answers ARP for it (the frozen Master's node is fenced).
fn frozen_while_keepalived_takes_over(
    c: &mut Routers,
    vipd: usize,
    ka: usize,
) -> anyhow::Result<()> {
    let (k, v, client) = (c.k.clone(), c.v.clone(), c.client.clone());
    c.lab.proc(vipd).signal(libc::SIGSTOP)?;
    let frozen = (|| -> anyhow::Result<()> {
        c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
        ensure!(
            c.lab.has_address(&v, VIP4)?,
            "a frozen daemon cannot remove the VIP"
        );
        let out = c.lab.exec(
            &client,
            "arping",
            &["-c", "3", "-w", "3", "-I", "eth0", VIP4],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
        ensure!(
            text.contains(&k.mac.to_uppercase()),
            "keepalived answers:\n{text}"
        );
        ensure!(
            !text.contains(&v.mac.to_uppercase()),
            "the frozen Master's node answered:\n{text}"
        );
        Ok(())
    })();
    c.lab.proc(vipd).signal(libc::SIGCONT)?;
    frozen
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_frozen_vipd_master_fences_itself_while_keepalived_takes_over() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrf", false)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 200, VIP4_CIDR, "")?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 100, VIP4_CIDR, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    wait_client_reaches(&c, VIP4, &v)?;

    frozen_while_keepalived_takes_over(&mut c, vipd, ka)?;
    // Thawed, the higher priority preempts again and answers for the VIP.
    c.lab.proc(ka).wait_for_lines(&[KA_BACKUP], 2, WAIT)?;
    wait_group(&c.lab, &v, "ipv4", "master", None)?;
    wait_client_follows(&c, VIP4, &v)?;
    let s = status(&c.lab, &v)?;
    ensure!(
        counter(&s, "neighbor_fenced") > 0,
        "the fence is counted: {s:#}"
    );
    stop(&mut c.lab, vipd)
}

/// A vipd node Master of two groups, one advertising every 100 ms (keepalived its
/// Backup), one every 5 s, frozen: each group's VIPs are fenced on its own time, so only
/// keepalived answers for the fast group's VIP once it took over (one fence for all, the
/// slowest group's, would leave the frozen node answering for 15 s).
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_frozen_two_group_master_is_fenced_per_group() -> anyhow::Result<()> {
    require_root();
    let _serial = serial();
    let mut c = routers("vrt", false)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    let fast = format!("{VRID},priority=200,vip={VIP4_CIDR},interval=100ms");
    let slow = "52,priority=200,vip=192.0.2.152/24,interval=5s";
    let vipd = c.lab.spawn_vipd(
        &v,
        1,
        "vipd",
        Path::new(VIPD),
        &["--vrrp", &fast, "--vrrp", slow],
    )?;
    c.lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    // (Master once three of its 5 s intervals passed with no other Master.)
    c.lab.proc(vipd).wait_for_line(
        &["vrrp state", "vrid=52", "to=master"],
        Duration::from_secs(40),
    )?;
    let ka = start_keepalived(
        &mut c.lab,
        &k,
        "keepalived",
        &keepalived_conf(&k, 100, VIP4_CIDR, false),
    )?;
    c.lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    wait_client_reaches(&c, VIP4, &v)?;

    frozen_while_keepalived_takes_over(&mut c, vipd, ka)?;
    stop(&mut c.lab, vipd)
}

/// VRRPv2 (keepalived's default `vrrp_version`) with its `auth_type PASS`, vipd in both
/// roles: Backup that takes over on the Master's hard failure, then Master that
/// keepalived follows as Backup and hands over to on a graceful stop (priority 0), then a
/// higher-priority Backup that preempts keepalived; every advert sent checked on the wire
/// (version 2, password, 1 s, plain checksum); forged or misconfigured VRRPv2 adverts
/// counted and ignored.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vrrpv2_with_keepalived_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_keepalived("vrv", vrrp::VERSION_2, false, false)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vrrpv2_unicast_with_keepalived_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_keepalived("vua", vrrp::VERSION_2, false, true)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vrrpv3_unicast_with_keepalived_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_keepalived("vub", vrrp::VERSION_3, false, true)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn ipv6_vrrpv3_unicast_with_keepalived_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_keepalived("vuc", vrrp::VERSION_3, true, true)
}

/// vipd and keepalived as the two routers of VRID 51, VRRP `version` over IPv4 or IPv6
/// (VRRPv3), multicast or `unicast` (keepalived's `unicast_src_ip` / `unicast_peer`,
/// vipd's `unicast_src` / `unicast_peers`); VRRPv2 with keepalived's `PASS` password.
/// vipd as Backup follows keepalived's adverts and takes over on a hard failure; as
/// Master its adverts (checked on the wire: to the group, or to keepalived's address)
/// hold keepalived back; a graceful stop hands over at once (priority 0); started again
/// at a higher priority it preempts. Over IPv4, adverts that would preempt vipd if
/// accepted are counted and ignored: for VRRPv2 a wrong password, Auth Type, interval,
/// version or checksum; TTL 64; in unicast, a sender that is not a peer.
fn with_keepalived(tag: &str, version: u8, ipv6: bool, unicast: bool) -> anyhow::Result<()> {
    let _serial = serial();
    let mut c = routers(tag, ipv6)?;
    let (k, v) = (c.k.clone(), c.v.clone());
    let v2 = version == vrrp::VERSION_2;
    let (family, vip, vip_cidr, k_addr, v_addr) = if ipv6 {
        ("ipv6", VIP6, VIP6_CIDR, "2001:db8::11", "2001:db8::12")
    } else {
        ("ipv4", VIP4, VIP4_CIDR, k.addr.as_str(), v.addr.as_str())
    };
    // At v: unicast adverts between k and v do not reach the client's bridge port. Not
    // the injector's forged adverts, which are checked by their counters.
    let (capture, pcap) = c.lab.spawn_capture(
        &v,
        "capture",
        "(ip proto 112 or ip6 proto 112) and not ether src 02:00:00:00:00:32",
        5000,
        Duration::from_secs(180),
    )?;
    let ka_conf = |priority| {
        KaConf {
            version,
            priority,
            vip_cidr,
            nopreempt: false,
            unicast: unicast.then_some((k_addr, v_addr)),
        }
        .text(&k)
    };
    let ka = start_keepalived(&mut c.lab, &k, "keepalived", &ka_conf(200))?;
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(&c.lab, vip, &k, &[&v])?;
    // The interval given again overrides start_vipd's 100 ms. keepalived sends IPv4
    // unicast adverts with TTL 255, so vipd may ask for it.
    let (interval, interval_cs) = if v2 {
        ("1s", 100)
    } else {
        ("100ms", INTERVAL_CS)
    };
    let mut opts = format!(",interval={interval},version={version}");
    if v2 {
        opts += ",auth_pass=vipdtest";
    }
    if unicast {
        opts += &format!(",unicast_peer={k_addr},unicast_src={v_addr}");
        if !ipv6 {
            opts += ",unicast_min_ttl=255";
        }
    }
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 100, vip_cidr, &opts)?;
    wait_group(&c.lab, &v, family, "backup", Some(k_addr))?;
    wait_until("vipd counting keepalived's adverts", WAIT, || {
        Ok(counter(&status(&c.lab, &v)?, "vrrp_accepted") >= 2)
    })?;
    let st = status(&c.lab, &v)?;
    let g = group(&st, family)?;
    assert_eq!(g["version"], version, "{st:#}");
    let peers = if unicast { vec![k_addr] } else { vec![] };
    assert_eq!(
        g["unicast_peers"].as_array().map_or(0, Vec::len),
        peers.len(),
        "{st:#}"
    );
    for refused in [
        "vrrp_not_peer",
        "vrrp_bad_ttl",
        "vrrp_bad_auth",
        "vrrp_bad_interval",
        "vrrp_bad_checksum",
        "vrrp_bad_version",
        "vrrp_not_link_local",
    ] {
        assert_eq!(counter(&st, refused), 0, "{refused}: {st:#}");
    }
    wait_client_reaches(&c, vip, &k)?;

    // Hard failure of keepalived: vipd takes over.
    c.lab.set_link(&k, false)?;
    c.lab.proc(ka).signal(libc::SIGKILL)?;
    let line = c
        .lab
        .proc(vipd)
        .wait_for_line(&vipd_to(&format!("family={family}"), "to=master"), WAIT)?;
    assert!(line.contains("reason=master_down"), "{line}");
    wait_until("the VIP on v", WAIT, || c.lab.has_address(&v, vip))?;
    wait_client_follows(&c, vip, &v)?;

    if !ipv6 {
        // Adverts at priority 254, which would preempt vipd if accepted.
        let injector = c
            .lab
            .add_host("inj", "192.0.2.50/24", "02:00:00:00:00:32")?;
        let bad = bad_adverts(&injector, version, unicast.then_some(k_addr))?;
        each_counted_once(&c.lab, &v, &injector, &bad)?;
        assert_eq!(group(&status(&c.lab, &v)?, family)?["state"], "master");
    }

    // keepalived back, as Backup: vipd's adverts hold it back (it would take over after
    // 3 intervals without them) and vipd stays Master.
    c.lab.set_link(&k, true)?;
    let ka = start_keepalived(&mut c.lab, &k, "keepalived2", &ka_conf(50))?;
    c.lab.proc(ka).wait_for_line(&[KA_BACKUP], WAIT)?;
    let before = adverts_from(&pcap, &v)?.len();
    wait_until("5 more adverts from vipd", WAIT, || {
        Ok(adverts_from(&pcap, &v)?.len() >= before + 5)
    })?;
    let ka_log = c.lab.proc(ka).output();
    assert!(
        !ka_log.contains(KA_MASTER),
        "keepalived took over:\n{ka_log}"
    );
    assert_vip_only_on(&c.lab, vip, &v, &[&k])?;

    // Graceful stop: priority 0, keepalived takes over at once.
    stop(&mut c.lab, vipd)?;
    c.lab.proc(ka).wait_for_line(&[KA_MASTER], WAIT)?;
    wait_vip_only_on(&c.lab, vip, &k, &[&v])?;
    wait_client_follows(&c, vip, &k)?;
    wait_until("a priority-0 advert from v on the wire", WAIT, || {
        Ok(adverts_from(&pcap, &v)?
            .iter()
            .any(|s| s.advert.priority == vrrp::PRIORITY_STOP))
    })?;
    c.lab.proc(capture).signal(libc::SIGTERM)?;
    c.lab.proc(capture).wait_exit(WAIT)?;
    let from_v = adverts_from(&pcap, &v)?;
    ensure!(from_v.len() >= 5, "{} adverts from v", from_v.len());
    let (k_ip, v_ip): (IpAddr, IpAddr) = (k_addr.parse()?, v_addr.parse()?);
    let password = v2.then_some(V2_PASS);
    let to = match (unicast, ipv6) {
        (true, _) => (k_ip, parse_mac(&k.mac)?),
        (false, false) => (IpAddr::from(GROUP4), GROUP4_MAC),
        (false, true) => (IpAddr::from(advert_group_v6()), GROUP6_MAC),
    };
    check_adverts_to(
        &from_v,
        ((version, interval_cs), password),
        (v_ip, to),
        vip,
        100,
    )?;
    // keepalived's, at 200 before its failure and 50 after, to v's address in unicast.
    let from_k = adverts_from(&pcap, &k)?;
    ensure!(!from_k.is_empty(), "no advert from k at v");
    let to_v = if unicast { Some(v_ip) } else { None };
    for s in &from_k {
        let a = &s.advert;
        ensure!(
            s.src == k_ip
                && to_v.is_none_or(|v| s.dst == v)
                && a.version == version
                && a.max_adver_int_cs == interval_cs
                && [200, 50, vrrp::PRIORITY_STOP].contains(&a.priority)
                && s.addrs == [vip.parse::<IpAddr>()?],
            "keepalived's advert (packet {}): {s:?}",
            s.index
        );
    }

    // vipd back at a higher priority: it preempts keepalived (its Master_Down_Timer runs
    // out while it discards the lower-priority adverts), and keepalived yields.
    let vipd = start_vipd(&mut c.lab, &v, "vipd2", 150, vip_cidr, &opts)?;
    let line = c
        .lab
        .proc(vipd)
        .wait_for_line(&vipd_to(&format!("family={family}"), "to=master"), WAIT)?;
    assert!(line.contains("reason=master_down"), "{line}");
    c.lab.proc(ka).wait_for_lines(&[KA_BACKUP], 2, WAIT)?;
    wait_vip_only_on(&c.lab, vip, &v, &[&k])?;
    wait_client_follows(&c, vip, &v)?;
    Ok(())
}

/// ff02::12.
fn advert_group_v6() -> Ipv6Addr {
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)
}

/// IPv4 adverts for VRID 51 at priority 254 from `injector` that a group of `version`
/// must count and ignore, each with the counter it must count in; with `peer` (a unicast
/// group's peer), also one from the injector's own address (not a peer), and the others
/// forged from the peer's address so that only their flaw refuses them.
fn bad_adverts(
    injector: &Host,
    version: u8,
    peer: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    let v2 = version == vrrp::VERSION_2;
    let (own, mac, vip) = (v4(&injector.addr)?, parse_mac(&injector.mac)?, v4(VIP4)?);
    let src = peer.map_or(Ok(own), v4)?;
    let ok = Advert {
        version,
        auth_type: if v2 { vrrp::AUTH_PASS } else { vrrp::AUTH_NONE },
        max_adver_int_cs: if v2 { 100 } else { INTERVAL_CS },
        ..advert(VRID, 254)
    };
    let frame = |src: [u8; 4], ttl: u8, a: Advert, edit: &dyn Fn(&mut Vec<u8>)| {
        ipv4_frame(mac, src, ttl, &vrrp_msg(a, &[vip], src, edit))
    };
    let mut bad_checksum = frame(src, 255, ok, &|_| {});
    bad_checksum[14 + 20 + 7] ^= 1;
    let mut bad = vec![
        ("checksum off", "vrrp_bad_checksum", bad_checksum),
        ("TTL 64", "vrrp_bad_ttl", frame(src, 64, ok, &|_| {})),
    ];
    if peer.is_some() {
        bad.push(("stranger's", "vrrp_not_peer", frame(own, 255, ok, &|_| {})));
    }
    if v2 {
        let none = Advert {
            auth_type: vrrp::AUTH_NONE,
            ..ok
        };
        let slower = Advert {
            max_adver_int_cs: 200,
            ..ok
        };
        bad.extend([
            (
                "wrong password",
                "vrrp_bad_auth",
                frame(src, 255, ok, &|m| m[12] ^= 1),
            ),
            (
                "no authentication",
                "vrrp_bad_auth",
                frame(src, 255, none, &|m| m[12..].fill(0)),
            ),
            (
                "2 s interval",
                "vrrp_bad_interval",
                frame(src, 255, slower, &|_| {}),
            ),
            (
                "VRRPv3 to a VRRPv2 group",
                "vrrp_bad_version",
                frame(src, 255, advert(VRID, 254), &|_| {}),
            ),
        ]);
    }
    Ok(bad)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vrrpv3_with_frr_vrrpd_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_frr("vfa", vrrp::VERSION_3)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn vrrpv2_with_frr_vrrpd_in_both_roles() -> anyhow::Result<()> {
    require_root();
    with_frr("vfb", vrrp::VERSION_2)
}

/// The IPv4 virtual MAC of VRID 51, which FRR's Master answers and advertises from.
const VMAC4: &str = "00:00:5e:00:01:33";

/// The state ("Master", "Backup", …) and received-advert count of VRID 51 over IPv4 in
/// FRR's `show vrrp json`.
fn frr_state(lab: &Lab, host: &Host, name: &str) -> anyhow::Result<(String, u64)> {
    let shown = lab.frr_vrrp(host, name)?;
    let v4 = shown
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["vrid"] == u64::from(VRID))
        .map(|r| &r["v4"])
        .with_context(|| format!("no VRID {VRID} in FRR's show vrrp: {shown:#}"))?;
    Ok((
        v4["status"].as_str().unwrap_or_default().to_string(),
        v4["stats"]["adverRx"].as_u64().unwrap_or_default(),
    ))
}

fn wait_frr_state(lab: &Lab, host: &Host, name: &str, state: &str) -> anyhow::Result<()> {
    let mut last = Default::default();
    wait_until(&format!("FRR's VRID {VRID} in {state}"), WAIT, || {
        last = frr_state(lab, host, name)?;
        Ok(last.0 == state)
    })
    .with_context(|| format!("FRR: {last:?}"))
}

/// FRRouting's vrrpd (with zebra, on the macvlan `vrrp4-2-51` FRR expects) as the other
/// router of VRID 51, VRRP `version` over IPv4: vipd as Backup follows FRR's adverts and
/// takes over on a hard failure; as Master it holds FRR (restarted at a lower priority)
/// back; its graceful stop (priority 0) makes FRR Master at once; started again at a
/// higher priority it preempts FRR. The client follows each Master (FRR answers from the
/// virtual MAC, vipd from its own), and both routers' adverts are checked on the wire.
fn with_frr(tag: &str, version: u8) -> anyhow::Result<()> {
    let _serial = serial();
    let mut c = routers(tag, false)?;
    let (f, v, client) = (c.k.clone(), c.v.clone(), c.client.clone());
    let (capture, pcap) = c.lab.spawn_capture(
        &client,
        "capture",
        "ip proto 112",
        5000,
        Duration::from_secs(180),
    )?;
    // FRR's macvlan, made as its documentation says: the virtual MAC, mode bridge, the VIP
    // on it; vrrpd keeps it protodown while Backup. eth0 must not answer ARP for the VIP
    // with its own MAC (Linux answers for any local address on any interface).
    for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        c.lab
            .sysctl(&f, &format!("net.ipv4.conf.eth0.{key}"), value)?;
    }
    let macvlan = "vrrp4-2-51";
    c.lab.ip(
        &f.netns,
        &[
            "link", "add", macvlan, "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
    )?;
    c.lab
        .ip(&f.netns, &["link", "set", macvlan, "address", VMAC4])?;
    c.lab
        .ip(&f.netns, &["addr", "add", VIP4_CIDR, "dev", macvlan])?;
    c.lab.ip(&f.netns, &["link", "set", macvlan, "up"])?;
    let v2 = version == vrrp::VERSION_2;
    let (interval_ms, interval_cs) = if v2 { (1000, 100) } else { (100, INTERVAL_CS) };
    let frr_conf = |priority: u8| {
        format!(
            "interface eth0\n vrrp {VRID} version {version}\n vrrp {VRID} priority {priority}\n\
             \x20vrrp {VRID} advertisement-interval {interval_ms}\n vrrp {VRID} ip {VIP4}\n"
        )
    };
    let (zebra, vrrpd) = c.lab.spawn_frr(&f, "frr", &frr_conf(200))?;
    wait_frr_state(&c.lab, &f, "frr", "Master")?;
    wait_until("the VIP answering the client from FRR", WAIT, || {
        Ok(c.lab.ping(&client, VIP4)?
            && c.lab.neighbour_mac(&client, VIP4)?.as_deref() == Some(VMAC4))
    })?;

    // The interval given again overrides start_vipd's 100 ms.
    let opts = format!(",interval={}ms,version={version}", interval_ms);
    let vipd = start_vipd(&mut c.lab, &v, "vipd", 100, VIP4_CIDR, &opts)?;
    wait_group(&c.lab, &v, "ipv4", "backup", Some(&f.addr))?;
    wait_until("vipd counting FRR's adverts", WAIT, || {
        Ok(counter(&status(&c.lab, &v)?, "vrrp_accepted") >= 2)
    })?;
    let st = status(&c.lab, &v)?;
    let refused: u64 = vrrp_counters(&st)?
        .iter()
        .filter(|(k, _)| !["vrrp_accepted", "vrrp_unknown_vrid"].contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 0, "vipd refused some of FRR's adverts: {st:#}");
    assert!(!c.lab.has_address(&v, VIP4)?, "a Backup holds the VIP");

    // Hard failure of FRR: vipd takes over.
    c.lab.set_link(&f, false)?;
    for p in [vrrpd, zebra] {
        c.lab.proc(p).signal(libc::SIGKILL)?;
    }
    let line = c
        .lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    assert!(line.contains("reason=master_down"), "{line}");
    wait_client_follows(&c, VIP4, &v)?;

    // FRR back at a lower priority, as after a reboot (its macvlan down to the protocol
    // until vrrpd says otherwise): it stays Backup, counting vipd's adverts.
    c.lab
        .ip(&f.netns, &["link", "set", macvlan, "protodown", "on"])?;
    c.lab.set_link(&f, true)?;
    let (_, _) = c.lab.spawn_frr(&f, "frr2", &frr_conf(50))?;
    wait_frr_state(&c.lab, &f, "frr2", "Backup")?;
    let before = adverts_from(&pcap, &v)?.len();
    wait_until("5 more adverts from vipd", WAIT, || {
        Ok(adverts_from(&pcap, &v)?.len() >= before + 5)
    })?;
    let mut last = Default::default();
    wait_until("FRR counting 5 of vipd's adverts", WAIT, || {
        last = frr_state(&c.lab, &f, "frr2")?;
        Ok(last.1 >= 5)
    })
    .with_context(|| format!("FRR: {last:?}"))?;
    assert_eq!(last.0, "Backup", "FRR took over from vipd");
    assert_eq!(group(&status(&c.lab, &v)?, "ipv4")?["state"], "master");
    assert_eq!(
        c.lab.neighbour_mac(&client, VIP4)?.as_deref(),
        Some(v.mac.as_str())
    );

    // Graceful stop: priority 0, FRR takes over at once and the client follows its
    // gratuitous ARP to the virtual MAC.
    stop(&mut c.lab, vipd)?;
    wait_frr_state(&c.lab, &f, "frr2", "Master")?;
    wait_until(
        "the client's entry for the VIP on FRR's virtual MAC",
        WAIT,
        || Ok(c.lab.neighbour_mac(&client, VIP4)?.as_deref() == Some(VMAC4)),
    )?;
    wait_until("the VIP answering the client from FRR", WAIT, || {
        c.lab.ping(&client, VIP4)
    })?;
    assert!(!c.lab.has_address(&v, VIP4)?, "vipd left the VIP behind");

    // vipd back at a higher priority: it preempts FRR.
    let vipd = start_vipd(&mut c.lab, &v, "vipd2", 150, VIP4_CIDR, &opts)?;
    let line = c
        .lab
        .proc(vipd)
        .wait_for_line(&vipd_to("family=ipv4", "to=master"), WAIT)?;
    assert!(line.contains("reason=master_down"), "{line}");
    wait_frr_state(&c.lab, &f, "frr2", "Backup")?;
    wait_client_follows(&c, VIP4, &v)?;

    c.lab.proc(capture).signal(libc::SIGTERM)?;
    c.lab.proc(capture).wait_exit(WAIT)?;
    // Every advert parsed and summed right (`adverts`); vipd's as configured, FRR's from
    // the virtual MAC and its primary address at its two priorities.
    let all = adverts(&pcap)?;
    let from_v = adverts_from(&pcap, &v)?;
    ensure!(from_v.len() >= 5, "{} adverts from v", from_v.len());
    let v_ip = IpAddr::from(v4(&v.addr)?);
    for (priority, other) in [(100, 150), (150, 100)] {
        let these: Vec<Seen> = from_v
            .iter()
            .filter(|s| s.advert.priority != other)
            .cloned()
            .collect();
        // FRR's VRRPv2 has no authentication: Auth Type 0.
        let group = (IpAddr::from(GROUP4), GROUP4_MAC);
        check_adverts_to(
            &these,
            ((version, interval_cs), None),
            (v_ip, group),
            VIP4,
            priority,
        )?;
    }
    let vmac = parse_mac(VMAC4)?;
    let from_f: Vec<Seen> = all.into_iter().filter(|s| s.src_mac == vmac).collect();
    ensure!(from_f.len() >= 5, "{} adverts from FRR", from_f.len());
    for s in &from_f {
        let a = &s.advert;
        ensure!(
            s.src == IpAddr::from(v4(&f.addr)?)
                && s.dst == IpAddr::from(GROUP4)
                && s.ttl == 255
                && a.version == version
                && a.max_adver_int_cs == interval_cs
                && [200, 50, vrrp::PRIORITY_STOP].contains(&a.priority)
                && s.addrs == [VIP4.parse::<IpAddr>()?],
            "FRR's advert (packet {}): {s:?}",
            s.index
        );
    }
    Ok(())
}
