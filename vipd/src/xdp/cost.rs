//! The XDP program's cost per packet (`cargo xtask bench xdp`): the program loaded
//! unattached and run with BPF_PROG_TEST_RUN on typical frames, against an empty program.

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap},
    programs::Xdp,
};
use vipd_common::maps::{CONFIG_MAP, VRRP_GROUPS_MAP, VrrpGroup, XdpConfig};

use super::{PROGRAM, load_program};

/// Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, `repeat` runs per frame), for a
/// heartbeat, a VRRP advert, an ARP request and a TCP segment, and of an empty XDP_PASS
/// program as the baseline. Loads the programs without attaching them. Returns
/// (frame, verdict, ns per packet).
pub fn bench(repeat: u32) -> anyhow::Result<Vec<(&'static str, u32, f64)>> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let key = vipd_common::auth::Key::from_bytes(*b"vipd-bench-key!!");
    let load = |auth: bool| -> anyhow::Result<Ebpf> {
        let mut ebpf = Ebpf::load(PROGRAM).context("loading the XDP object (needs CAP_BPF)")?;
        {
            let map = ebpf.map_mut(CONFIG_MAP).context("CONFIG map missing")?;
            let mut config: Array<_, XdpConfig> = Array::try_from(map)?;
            config.set(0, node_1_config(auth.then_some(key)), 0)?;
            // A Backup of VRID 51 (IPv4) at priority 100: the bench's advert, at priority
            // 200, holds it back (validated, checksummed, recorded, no notice after the
            // first).
            let map = ebpf
                .map_mut(VRRP_GROUPS_MAP)
                .context("VRRP_GROUPS map missing")?;
            let mut groups: HashMap<_, u32, VrrpGroup> = HashMap::try_from(map)?;
            let group = VrrpGroup {
                version: vipd_common::vrrp::VERSION_3,
                priority: 100,
                preempt: 1,
                state: vipd_common::maps::VRRP_BACKUP,
                ..VrrpGroup::default()
            };
            groups.insert(vipd_common::maps::vrrp_key(false, 51), group, 0)?;
        }
        for name in ["vipd", "vipd_pass"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name}"))?
                .try_into()?;
            load_program(p).with_context(|| format!("loading {name}"))?;
        }
        Ok(ebpf)
    };
    let plain = load(false)?;
    let authenticated = load(true)?;
    let frames = bench_frames();
    let [signed, bad_mac] = bench_auth_frames(key);
    let mut out = Vec::new();
    for (ebpf, program, label, frame) in [
        (
            &plain,
            "vipd_pass",
            "baseline: empty XDP_PASS program",
            &frames[0],
        ),
        (
            &plain,
            "vipd",
            "vipd heartbeat (recorded, dropped)",
            &frames[0],
        ),
        (
            &plain,
            "vipd",
            "VRRP advert of our group (checked, recorded, passed)",
            &frames[1],
        ),
        (
            &plain,
            "vipd",
            "VRRP advert, other VRID (passed)",
            &frames[4],
        ),
        (&plain, "vipd", "ARP request (passed)", &frames[2]),
        (&plain, "vipd", "unrelated TCP segment (passed)", &frames[3]),
        (
            &authenticated,
            "vipd",
            "with auth: heartbeat, MAC checked, then refused as a replay (dropped)",
            &signed,
        ),
        (
            &authenticated,
            "vipd",
            "with auth: heartbeat with a wrong MAC (dropped)",
            &bad_mac,
        ),
    ] {
        let p: &Xdp = ebpf.program(program).context("program")?.try_into()?;
        // One warm-up run (it creates the peer entry), then the measured runs.
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })?;
        out.push((label, r.return_value, r.duration.as_nanos() as f64));
    }
    Ok(out)
}

/// The configuration of node 1 of cluster 1 (300 ms dead interval, heartbeats on the
/// default port), checking heartbeats with `key` if given.
pub(super) fn node_1_config(key: Option<vipd_common::auth::Key>) -> XdpConfig {
    XdpConfig {
        cluster_id: 1,
        node_id: 1,
        dead_ns: 300_000_000,
        port: vipd_common::heartbeat::DEFAULT_PORT,
        heartbeats: 1,
        auth: u8::from(key.is_some()),
        auth_key: key.map_or([0; 2], |k| [k.k0, k.k1]),
        ..XdpConfig::default()
    }
}

/// The heartbeat of the benchmark: node 2 of cluster 1.
fn bench_heartbeat(auth_len: u16) -> vipd_common::heartbeat::Heartbeat {
    vipd_common::heartbeat::Heartbeat {
        cluster_id: 1,
        node_id: 2,
        incarnation: 7,
        sequence: 1,
        interval_us: 100_000,
        weight: 1,
        auth_len,
        ..Default::default()
    }
}

/// An Ethernet/IPv4/UDP frame to the heartbeat port carrying `payload`, padded to
/// Ethernet's minimum.
pub(super) fn heartbeat_frame(payload: &[u8]) -> Vec<u8> {
    use vipd_common::heartbeat::DEFAULT_PORT;
    let udp_len = (8 + payload.len()) as u16;
    let mut f = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x00,
    ];
    // TTL 255: sent on the link (GTSM).
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 255, 17, 0, 0]);
    f[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
    f.extend_from_slice(&[192, 0, 2, 12, 224, 0, 0, 199]);
    f.extend_from_slice(&DEFAULT_PORT.to_be_bytes());
    f.extend_from_slice(&DEFAULT_PORT.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An authenticated heartbeat frame signed with `key`, and the same with a wrong MAC.
fn bench_auth_frames(key: vipd_common::auth::Key) -> [Vec<u8>; 2] {
    use vipd_common::auth::{AUTH_LEN, sign};
    let header = bench_heartbeat(AUTH_LEN as u16).to_bytes();
    let mut payload = header.to_vec();
    payload.extend_from_slice(&sign(key, &header));
    let good = heartbeat_frame(&payload);
    let last = payload.len() - 1;
    payload[last - 8] ^= 1;
    [good, heartbeat_frame(&payload)]
}

/// Test frames: a heartbeat from node 2 of cluster 1, a VRRPv3 advert for VRID 51, an ARP
/// request, a TCP SYN, an advert for VRID 52 (all padded to Ethernet's minimum).
fn bench_frames() -> [Vec<u8>; 5] {
    let eth = |ethertype: u16| {
        let mut f = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    };
    let ipv4 = |proto: u8, payload_len: usize| {
        let total = (20 + payload_len) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 12, 224, 0, 0, 199,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h
    };
    let heartbeat = heartbeat_frame(&bench_heartbeat(0).to_bytes());
    let vrrp_frame = |vrid: u8| {
        let vips = ["192.0.2.200".parse().expect("address")];
        crate::vrrp::advert::frame(
            [2, 0, 0, 0, 0, 2],
            &crate::vrrp::advert::AdvertSpec {
                version: vipd_common::vrrp::VERSION_3,
                auth: (0, [0; 8]),
                vrid,
                priority: 200,
                interval_cs: 100,
                source: "192.0.2.12".parse().expect("address"),
                vips: &vips,
            },
        )
        .0
    };
    let (vrrp, other_vrid) = (vrrp_frame(51), vrrp_frame(52));
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 192, 0, 2, 12, 0, 0, 0, 0, 0, 0, 192, 0, 2, 200,
    ]);
    let mut tcp = eth(0x0800);
    tcp.extend(ipv4(6, 20));
    tcp.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    [heartbeat, vrrp, arp, tcp, other_vrid].map(|mut f| {
        f.resize(f.len().max(60), 0);
        f
    })
}
