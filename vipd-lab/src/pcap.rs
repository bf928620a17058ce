//! Reading packet captures (`tcpdump -w`, the classic libpcap format, through the
//! `pcap-file` crate) and decoding the Ethernet, IPv4 and IPv6 headers of the frames in
//! them, so tests can check what was on the wire byte by byte.

use std::path::Path;

use anyhow::{Context as _, ensure};
use pcap_file::{PcapError, pcap::PcapParser};

/// Link type of Ethernet captures (`LINKTYPE_ETHERNET`).
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Timestamp, seconds.
    pub ts_sec: u32,
    /// Timestamp, nanoseconds within the second (microsecond captures are scaled).
    pub ts_nsec: u32,
    /// The packet's length on the wire (`data` may be shorter: the snap length).
    pub orig_len: u32,
    /// The captured bytes, from the link-layer header on.
    pub data: Vec<u8>,
}

/// A whole capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// The link type of every packet (1: Ethernet).
    pub link_type: u32,
    /// The packets, in capture order.
    pub packets: Vec<Packet>,
}

impl Capture {
    /// Parses a capture. A last record cut short (a capture tcpdump is still writing) is
    /// left out; anything else malformed is an error.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let (mut rest, parser) =
            PcapParser::new(bytes).context("not a classic pcap capture (or its header is cut)")?;
        let header = parser.header();
        ensure!(
            header.version_major == 2,
            "pcap version {}.{}, expected 2.x",
            header.version_major,
            header.version_minor
        );
        let mut packets = Vec::new();
        while !rest.is_empty() {
            match parser.next_packet(rest) {
                Ok((next, p)) => {
                    packets.push(Packet {
                        ts_sec: p.timestamp.as_secs() as u32,
                        ts_nsec: p.timestamp.subsec_nanos(),
                        orig_len: p.orig_len,
                        data: p.data.into_owned(),
                    });
                    rest = next;
                }
                Err(PcapError::IncompleteBuffer) => break,
                Err(e) => {
                    let at = bytes.len() - rest.len();
                    return Err(e).with_context(|| format!("record at byte {at}"));
                }
            }
        }
        Ok(Self {
            link_type: u32::from(header.datalink),
            packets,
        })
    }

    /// Reads and parses the capture at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// An Ethernet II frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
    /// Everything after the header (trailing padding included).
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Decodes the header; `None` if the frame is shorter than 14 bytes.
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        Some(Self {
            dst: frame.get(..6)?.try_into().ok()?,
            src: frame.get(6..12)?.try_into().ok()?,
            ethertype: u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?),
            payload: frame.get(14..)?,
        })
    }
}

/// An IPv4 packet (options skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4<'a> {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Whether the header checksum is right.
    pub header_checksum_ok: bool,
    /// The payload, as long as the total length says (link-layer padding cut off).
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Decodes an IPv4 packet; `None` if it is not version 4 or shorter than its header or
    /// its total length.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        let first = *packet.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 {
            return None;
        }
        let header = packet.get(..header_len)?;
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        Some(Self {
            src: header[12..16].try_into().ok()?,
            dst: header[16..20].try_into().ok()?,
            ttl: header[8],
            protocol: header[9],
            header_checksum_ok: internet_checksum(header) == 0,
            payload: packet.get(header_len..total)?,
        })
    }
}

/// An IPv6 packet (extension headers are not followed: `next_header` is the first one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6<'a> {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Hop limit.
    pub hop_limit: u8,
    /// Next header.
    pub next_header: u8,
    /// The payload, as long as the payload length says.
    pub payload: &'a [u8],
}

impl<'a> Ipv6<'a> {
    /// Decodes an IPv6 packet; `None` if it is not version 6 or shorter than it says.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        if packet.len() < 40 || packet[0] >> 4 != 6 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        Some(Self {
            src: packet[8..24].try_into().ok()?,
            dst: packet[24..40].try_into().ok()?,
            hop_limit: packet[7],
            next_header: packet[6],
            payload: packet.get(40..40 + len)?,
        })
    }
}

/// The Internet checksum (RFC 1071) of `bytes`: over a header with its checksum in place,
/// 0 when the checksum is right.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses a MAC written as `02:00:00:00:00:0b`.
pub fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {text:?}: not 6 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 46-byte Ethernet/IPv4 frame, protocol 112, from 192.0.2.11 to 224.0.0.18.
    fn frame() -> Vec<u8> {
        let mut f = vec![
            0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 2, 0, 0, 0, 0, 0x0b, 0x08, 0x00,
        ];
        let mut ip = vec![
            0x45, 0xc0, 0, 32, 0, 1, 0, 0, 255, 112, 0, 0, 192, 0, 2, 11, 224, 0, 0, 18,
        ];
        let c = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x31, 51, 200, 1, 0, 10, 0xab, 0xcd, 192, 0, 2, 200]);
        f
    }

    /// A capture as a big- or little-endian writer makes it, microsecond timestamps:
    /// records of (seconds, microseconds, bytes, length on the wire).
    fn capture(big_endian: bool, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        use pcap_file::{
            DataLink, Endianness,
            pcap::{PcapHeader, PcapPacket, PcapWriter},
        };
        let header = PcapHeader {
            endianness: if big_endian {
                Endianness::Big
            } else {
                Endianness::Little
            },
            datalink: DataLink::ETHERNET,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for &(sec, usec, data, orig) in records {
            let ts = std::time::Duration::new(u64::from(sec), usec * 1000);
            w.write_packet(&PcapPacket::new(ts, orig, data)).unwrap();
        }
        w.into_writer()
    }

    #[test]
    fn reads_both_byte_orders_and_decodes_the_frame() {
        let f = frame();
        for big_endian in [false, true] {
            let bytes = capture(
                big_endian,
                &[
                    (1_700_000_000, 250_000, &f, 46),
                    (1_700_000_001, 7, &f[..20], 46),
                ],
            );
            let c = Capture::parse(&bytes).unwrap();
            assert_eq!(c.link_type, LINKTYPE_ETHERNET);
            assert_eq!(c.packets.len(), 2);
            assert_eq!(
                (c.packets[0].ts_sec, c.packets[0].ts_nsec),
                (1_700_000_000, 250_000_000)
            );
            assert_eq!(c.packets[0].data, f);
            assert_eq!(c.packets[1].data.len(), 20, "snapped to 20 bytes");
            assert_eq!(c.packets[1].orig_len, 46);

            let eth = Ethernet::parse(&c.packets[0].data).unwrap();
            assert_eq!(eth.src, parse_mac("02:00:00:00:00:0b").unwrap());
            assert_eq!(eth.dst, [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
            assert_eq!(eth.ethertype, ETHERTYPE_IPV4);
            let ip = Ipv4::parse(eth.payload).unwrap();
            assert_eq!(
                (ip.src, ip.dst, ip.ttl, ip.protocol),
                ([192, 0, 2, 11], [224, 0, 0, 18], 255, 112)
            );
            assert!(ip.header_checksum_ok);
            assert_eq!(ip.payload.len(), 12);
            assert_eq!(ip.payload[1], 51);
        }
    }

    #[test]
    fn a_record_cut_short_ends_the_capture_and_garbage_is_an_error() {
        let f = frame();
        let mut bytes = capture(false, &[(1, 0, &f, 46), (2, 0, &f, 46)]);
        bytes.truncate(bytes.len() - 5);
        assert_eq!(Capture::parse(&bytes).unwrap().packets.len(), 1);
        bytes.truncate(24 + 3);
        assert!(Capture::parse(&bytes).unwrap().packets.is_empty());
        assert!(Capture::parse(&[0u8; 24]).is_err(), "bad magic");
        assert!(Capture::parse(&bytes[..10]).is_err(), "short header");
    }

    #[test]
    fn padding_is_cut_by_the_ip_length_and_short_packets_are_rejected() {
        let mut f = frame();
        f.resize(60, 0);
        let ip = Ipv4::parse(Ethernet::parse(&f).unwrap().payload).unwrap();
        assert_eq!(ip.payload.len(), 12, "Ethernet padding is not IP payload");
        assert!(Ipv4::parse(&f[14..30]).is_none(), "shorter than its header");
        assert!(
            Ipv4::parse(&f[14..40]).is_none(),
            "shorter than its total length"
        );
        let mut bad = f.clone();
        bad[14 + 8] = 254;
        assert!(!Ipv4::parse(&bad[14..]).unwrap().header_checksum_ok);
        assert!(Ipv6::parse(&f[14..]).is_none());
        assert!(Ethernet::parse(&f[..13]).is_none());
        assert!(parse_mac("02:00:00:00:00").is_err());
    }

    #[test]
    fn decodes_ipv6() {
        let mut p = vec![0x6c, 0, 0, 0, 0, 4, 112, 255];
        p.extend_from_slice(&[
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0xfe, 0, 0, 0, 0x0b,
        ]);
        p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12]);
        p.extend_from_slice(&[1, 2, 3, 4, 0, 0]);
        let ip = Ipv6::parse(&p).unwrap();
        assert_eq!((ip.hop_limit, ip.next_header), (255, 112));
        assert_eq!(ip.src[0..2], [0xfe, 0x80]);
        assert_eq!(ip.dst[15], 0x12);
        assert_eq!(ip.payload, [1, 2, 3, 4]);
    }
}
