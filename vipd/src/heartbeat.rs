//! Sending heartbeats: unicast to each configured peer and/or to a link-local multicast
//! group, out of the cluster interface only.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket},
};

use socket2::{Domain, Protocol, Socket, Type};
use vipd_common::heartbeat::Heartbeat;

/// The default IPv4 multicast group (link-local, unassigned by IANA).
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 199);

/// Sends this node's heartbeats.
pub struct Sender {
    v4: Option<(UdpSocket, Vec<SocketAddr>)>,
    v6: Option<(UdpSocket, Vec<SocketAddr>)>,
    template: Heartbeat,
    /// Heartbeats handed to the kernel so far.
    pub sent: u64,
    /// Sends that failed (link down, no route, ...).
    pub failed: u64,
}

impl Sender {
    /// Opens sockets bound to `port` on `interface` for the given destinations.
    pub fn open(
        interface: &str,
        ifindex: u32,
        port: u16,
        destinations: &[IpAddr],
        template: Heartbeat,
    ) -> io::Result<Self> {
        let dest = |pred: fn(&IpAddr) -> bool| -> Vec<SocketAddr> {
            destinations
                .iter()
                .filter(|a| pred(a))
                .map(|&a| match a {
                    IpAddr::V6(v6) if is_link_local_v6(&v6) => {
                        SocketAddr::V6(SocketAddrV6::new(v6, port, 0, ifindex))
                    }
                    a => SocketAddr::new(a, port),
                })
                .collect()
        };
        let v4_dest = dest(IpAddr::is_ipv4);
        let v6_dest = dest(IpAddr::is_ipv6);
        let v4 = if v4_dest.is_empty() {
            None
        } else {
            Some((
                socket(
                    interface,
                    ifindex,
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                )?,
                v4_dest,
            ))
        };
        let v6 = if v6_dest.is_empty() {
            None
        } else {
            Some((
                socket(
                    interface,
                    ifindex,
                    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
                )?,
                v6_dest,
            ))
        };
        Ok(Self {
            v4,
            v6,
            template,
            sent: 0,
            failed: 0,
        })
    }

    /// Sends the next heartbeat with `flags` to every destination; returns the first error.
    pub fn send(&mut self, flags: u8) -> io::Result<()> {
        self.template.sequence += 1;
        self.template.flags = flags;
        let bytes = self.template.to_bytes();
        let mut first_err = None;
        for (sock, dests) in self.v4.iter().chain(self.v6.iter()) {
            for d in dests {
                match sock.send_to(&bytes, d) {
                    Ok(_) => self.sent += 1,
                    Err(e) => {
                        self.failed += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The sequence number of the last heartbeat sent.
    pub fn sequence(&self) -> u64 {
        self.template.sequence
    }
}

fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80 || (a.is_multicast() && a.segments()[0] & 0x000f == 2)
}

fn socket(interface: &str, ifindex: u32, bind: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_hops_v6(1)?;
    } else {
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(1)?;
    }
    s.bind_device(Some(interface.as_bytes()))?;
    // Heartbeats are consumed by XDP; this socket only owns the port (no ICMP unreachable).
    s.set_recv_buffer_size(4096)?;
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}
