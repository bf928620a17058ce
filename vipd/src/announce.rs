//! Telling the segment where a VIP now lives: gratuitous ARP for IPv4 and unsolicited
//! neighbour advertisements (override flag set) for IPv6, sent from an AF_PACKET socket.
//!
//! Frame building is pure and host-tested; [`Announcer`] only sends.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Frames per `sendmmsg` call (the kernel takes at most UIO_MAXIOV = 1024).
const MMSG_CHUNK: usize = 256;

/// Length of a gratuitous ARP frame (Ethernet + ARP, without padding).
pub use vipd_common::neighbor::GARP_LEN;
/// Length of an unsolicited NA frame (Ethernet + IPv6 + NA + target link-layer option).
pub const NA_LEN: usize = 14 + 40 + 24 + 8;

/// A gratuitous ARP request: "who has `ip`? tell `ip`", from `mac`, broadcast.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_LEN] {
    vipd_common::neighbor::gratuitous_arp(mac, ip.octets())
}

/// An unsolicited neighbour advertisement for `ip` (override set, solicited clear), from
/// `ip` to all-nodes (ff02::1), with `mac` as the target link-layer address.
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; NA_LEN] {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; NA_LEN];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    let ip6 = &mut f[14..54];
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length
    ip6[6] = 58; // ICMPv6
    ip6[7] = 255; // hop limit, as RFC 4861 requires
    ip6[8..24].copy_from_slice(&ip.octets());
    ip6[24..40].copy_from_slice(&all_nodes.octets());
    let icmp = &mut f[54..NA_LEN];
    icmp[0] = 136; // neighbour advertisement
    icmp[4] = 0x20; // override
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // option: target link-layer address
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &all_nodes, &f[54..NA_LEN]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `msg` (checksum field zero).
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends announcement frames out of one interface.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

impl Announcer {
    /// Opens an AF_PACKET socket for `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32, mac: [u8; 6]) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
            mac,
        })
    }

    /// Sends one announcement for `ip`: a GARP (IPv4) or an unsolicited NA (IPv6).
    pub fn announce(&self, ip: IpAddr) -> io::Result<()> {
        match ip {
            IpAddr::V4(v4) => self.send(&garp_frame(self.mac, v4), 0x0806),
            IpAddr::V6(v6) => self.send(&unsolicited_na_frame(self.mac, v6), 0x86DD),
        }
    }

    /// Sends `rounds` announcements for each of `ips` with as few system calls as the
    /// kernel allows (`sendmmsg`): first one frame for every address, then the next round,
    /// so each address's first announcement leaves as early as possible. Returns the
    /// frames sent and the first error.
    pub fn announce_many(&self, ips: &[IpAddr], rounds: u16) -> (usize, Option<io::Error>) {
        let frames: Vec<(Vec<u8>, u16)> = ips
            .iter()
            .map(|ip| match *ip {
                IpAddr::V4(v4) => (garp_frame(self.mac, v4).to_vec(), 0x0806),
                IpAddr::V6(v6) => (unsolicited_na_frame(self.mac, v6).to_vec(), 0x86DD),
            })
            .collect();
        let mut sent = 0;
        let mut first_err = None;
        for _ in 0..rounds {
            for chunk in frames.chunks(MMSG_CHUNK) {
                match self.send_many(chunk) {
                    Ok(n) => sent += n,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        (sent, first_err)
    }

    /// Sends whole Ethernet frames (with their EtherTypes) in one `sendmmsg`; returns how
    /// many the kernel took.
    fn send_many(&self, frames: &[(Vec<u8>, u16)]) -> io::Result<usize> {
        let addrs: Vec<libc::sockaddr_ll> = frames
            .iter()
            .map(|(f, proto)| self.link_address(f, *proto))
            .collect();
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|(f, _)| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; every pointer set below outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..frames.len())
            .map(|i| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&addrs[i] as *const libc::sockaddr_ll) as *mut libc::c_void;
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: msgs[done..] are valid headers pointing at live buffers.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as u32,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if done > 0 { Ok(done) } else { Err(e) };
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }

    fn link_address(&self, frame: &[u8], protocol: u16) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[0..6]);
        addr
    }

    /// This interface's MAC address, the frames' source.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends one whole Ethernet frame with EtherType `protocol`.
    pub fn send(&self, frame: &[u8], protocol: u16) -> io::Result<()> {
        let addr = self.link_address(frame, protocol);
        // SAFETY: frame and addr outlive the call; lengths match the buffers.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    #[test]
    fn garp_is_a_broadcast_request_for_itself() {
        let f = garp_frame(MAC, Ipv4Addr::new(192, 0, 2, 201));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &MAC, "sender hardware address");
        assert_eq!(&f[28..32], &[192, 0, 2, 201], "sender protocol address");
        assert_eq!(&f[32..38], &[0; 6], "target hardware address");
        assert_eq!(&f[38..42], &[192, 0, 2, 201], "target protocol address");
    }

    #[test]
    fn na_has_override_and_valid_checksum() {
        let ip: Ipv6Addr = "2001:db8::201".parse().unwrap();
        let f = unsolicited_na_frame(MAC, ip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[14 + 7], 255);
        assert_eq!(f[54], 136);
        assert_eq!(f[58] & 0x20, 0x20, "override");
        assert_eq!(f[58] & 0x40, 0, "not solicited");
        assert_eq!(&f[62..78], &ip.octets());
        assert_eq!(&f[80..86], &MAC);
        // Verifying: the checksum over the message including its checksum is zero.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(&ip, &dst, &f[54..]), 0);
    }
}
